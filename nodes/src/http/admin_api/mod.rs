//! The admin API: JSON over HTTP for operators (the mesh, drain of any node) and tenant admins
//! (their rooms: list, detail, end, remove a participant). Credentials as for every admin
//! endpoint ([`super::guard::admin_caller`]): the node's `--admin-token`, an operator's access
//! token, a tenant admin's (rooms only), or a loopback caller in `--insecure-dev`. Described by
//! the OpenAPI document of [`openapi`], shipped as `docs/admin-api.openapi.json`.

mod error;
mod forward;
pub mod mesh;
pub mod openapi;
pub mod rooms;

use super::AppState;
use axum::Router;
use axum::routing::{delete, get, post};

/// The admin API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/openapi.json", get(openapi::serve))
        .route("/api/admin/mesh", get(mesh::mesh))
        .route("/api/admin/nodes/{node}/drain", post(mesh::drain))
        .route("/api/admin/rooms", get(rooms::list))
        .route(
            "/api/admin/rooms/{room}",
            get(rooms::detail).delete(rooms::end),
        )
        .route(
            "/api/admin/rooms/{room}/participants/{participant}",
            delete(rooms::remove),
        )
}
