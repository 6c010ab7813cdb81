//! The node's HTTP surface (axum): the web page, `/ws` signalling, WHIP and WHEP, the admin API,
//! `/healthz` and `/metrics`. Handlers translate HTTP into engine and room operations; they hold
//! no media state themselves.

mod accounts_api;
pub mod admin;
pub mod admin_api;
mod api;
mod audit_api;
pub mod guard;
mod invites;
mod login;
pub mod node_client;
mod page;
pub mod rate_limits;
mod state;
mod whip;
mod ws;

pub use state::{AdminSettings, AppState};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use kaskade_proto::signal::MAX_SIGNAL_MESSAGE_BYTES;

/// The node's whole router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::app_js))
        .route("/style.css", get(page::style_css))
        .route("/operator", get(page::operator))
        .route("/operator.js", get(page::operator_js))
        .route("/ws", get(ws::upgrade))
        .route("/whip/{room}", post(whip::publish))
        .route("/whep/{room}", post(whip::subscribe_first))
        .route("/whep/{room}/{publisher}", post(whip::subscribe_to))
        .route("/sessions/{id}", delete(whip::end_session))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/login", post(login::login))
        .route("/api/audit", get(audit_api::query))
        .route(
            "/api/tenants",
            get(accounts_api::list_tenants).post(accounts_api::create_tenant),
        )
        .route("/api/tenants/{tenant}", delete(accounts_api::delete_tenant))
        .route(
            "/api/tenants/{tenant}/users",
            get(accounts_api::list_users).post(accounts_api::create_user),
        )
        .route(
            "/api/tenants/{tenant}/users/{user}",
            delete(accounts_api::delete_user),
        )
        .route(
            "/api/tenants/{tenant}/users/{user}/unlock",
            post(accounts_api::unlock_user),
        )
        .route("/api/rooms", get(api::rooms))
        .route(
            "/api/rooms/{room}",
            get(api::room).delete(accounts_api::delete_room_record),
        )
        .route("/api/rooms/{room}/invites", post(invites::create))
        .route("/admin/drain", post(admin::drain))
        .route("/admin/status", get(admin::status))
        .merge(admin_api::routes())
        .layer(DefaultBodyLimit::max(MAX_SIGNAL_MESSAGE_BYTES))
        .with_state(state)
}
