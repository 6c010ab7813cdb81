//! The admin API's OpenAPI 3.1 document, derived (utoipa) from the handlers' annotations and
//! the response types, so it cannot drift from the code; a test keeps the shipped copy
//! `docs/admin-api.openapi.json` equal to it. Served at `GET /api/admin/openapi.json`.

use super::{error, mesh, rooms};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kaskade admin API",
        description = "Operators' and tenant admins' view of a Kaskade mesh: sites, nodes, relay links, rooms and participants; drain a node, end a room, remove a participant. Any node answers for the whole mesh. Bearer credential: the node's --admin-token, or an access token from POST /api/login (operators: everything; tenant admins: their tenant's rooms)."
    ),
    paths(
        mesh::mesh,
        mesh::drain,
        rooms::list,
        rooms::detail,
        rooms::end,
        rooms::remove,
    ),
    components(schemas(error::ApiErrorBody)),
    modifiers(&BearerSecurity),
    tags(
        (name = "mesh", description = "Sites, nodes, links; drain"),
        (name = "rooms", description = "Rooms and participants; end, remove"),
    )
)]
pub struct AdminApiDoc;

struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as shipped: pretty JSON with a final newline.
pub fn document() -> String {
    let mut doc = AdminApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut text = doc.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

pub async fn serve() -> Json<serde_json::Value> {
    Json(serde_json::from_str(&document()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/admin-api.openapi.json` is the document the code describes. To update it after a
    /// change: `KASKADE_WRITE_OPENAPI=1 cargo test -p kaskade-node openapi`.
    #[test]
    fn the_shipped_document_matches_the_code() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/admin-api.openapi.json"
        );
        let generated = document();
        if std::env::var_os("KASKADE_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("writing the document");
        }
        let shipped = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            shipped == generated,
            "docs/admin-api.openapi.json is out of date: run KASKADE_WRITE_OPENAPI=1 cargo test -p kaskade-node openapi"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/admin/mesh", "get"),
            ("/api/admin/nodes/{node}/drain", "post"),
            ("/api/admin/rooms", "get"),
            ("/api/admin/rooms/{room}", "get"),
            ("/api/admin/rooms/{room}", "delete"),
            (
                "/api/admin/rooms/{room}/participants/{participant}",
                "delete",
            ),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
        assert!(doc["components"]["schemas"]["MeshView"].is_object());
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
