//! The admin API's error answers: a status and `{"error": "..."}`, from the access refusals
//! and from the API's own checks.

use crate::auth::access::Refusal;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong, for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn operators_only() -> Self {
        Self::new(StatusCode::FORBIDDEN, "only operators may do this")
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated(m) => Self::new(StatusCode::UNAUTHORIZED, m),
            Refusal::UnknownRoom => Self::not_found("unknown room (or not one of yours)"),
            Refusal::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, m),
            Refusal::Forbidden(m) | Refusal::LimitReached(m) | Refusal::PasswordRequired(m) => {
                Self::new(StatusCode::FORBIDDEN, m)
            }
            Refusal::Banned => Self::new(StatusCode::FORBIDDEN, "banned from this room"),
            Refusal::Locked => Self::new(StatusCode::FORBIDDEN, "the room is locked"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ApiErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"kaskade\""),
            );
        }
        response
    }
}
