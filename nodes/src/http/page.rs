//! The web pages (the conference page and the operator page), compiled into the binary so a
//! node needs no files beside it.

use axum::http::header;
use axum::response::{Html, IntoResponse};

pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../static/index.html"))
}

pub async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/app.js"),
    )
}

pub async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/style.css"),
    )
}

/// The operator page: mesh map, rooms, load, latency, drain (data from `/api/admin/…`).
pub async fn operator() -> Html<&'static str> {
    Html(include_str!("../../static/operator.html"))
}

pub async fn operator_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/operator.js"),
    )
}
