//! `GET /api/admin/mesh` (sites, nodes with their load, relay links with RTT and loss, the
//! control plane's state — from the registry, so any node answers for the whole mesh) and
//! `POST /api/admin/nodes/{node}/drain` (this node, or forwarded to the node named). Operators
//! only.

use super::error::{ApiError, ApiErrorBody};
use super::forward;
use crate::http::AppState;
use crate::http::guard::admin_caller;
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use kaskade_control::{LinkReport, NodeRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct MeshView {
    /// The node that answered.
    pub node: String,
    pub site: String,
    pub version: String,
    pub control_plane: ControlPlaneState,
    pub nodes: Vec<MeshNode>,
    pub sites: Vec<MeshSite>,
    pub links: Vec<MeshLink>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ControlPlaneState {
    /// `memory` (one node) or `etcd`.
    pub kind: String,
    /// False while the answering node cannot reach its store: the lists are then its last view.
    pub reachable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeshNode {
    pub id: String,
    pub site: String,
    pub http_url: String,
    pub draining: bool,
    /// True for the node that answered.
    #[serde(rename = "self")]
    pub is_self: bool,
    pub load: NodeLoadView,
}

/// A node's load as it last reported it (every third of its lease TTL).
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeLoadView {
    pub sessions: u64,
    pub tracks: u64,
    pub packets_per_sec: u64,
    pub cpu_percent: u32,
    pub forward_latency_p50_us: u64,
    pub forward_latency_p99_us: u64,
    /// 0 when the node has no `--capacity-sessions`.
    pub capacity_sessions: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeshSite {
    pub name: String,
    /// Live nodes in the registry (0: the site is down, as far as this node has seen it).
    pub nodes: usize,
    pub draining_nodes: usize,
    pub sessions: u64,
}

/// One relay link as the node at `from` measures it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeshLink {
    pub from: String,
    pub to: String,
    pub from_site: String,
    pub to_site: String,
    pub up: bool,
    pub rtt_ms: f64,
    pub loss_ratio: f64,
    pub receive_bps: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DrainAnswer {
    pub node: String,
    /// `draining` or `already draining`.
    pub status: String,
}

fn node_view(record: &NodeRecord, me: &str) -> MeshNode {
    let l = &record.load;
    MeshNode {
        id: record.id.clone(),
        site: record.site.clone(),
        http_url: record.http_url.clone(),
        draining: record.draining,
        is_self: record.id == me,
        load: NodeLoadView {
            sessions: l.sessions,
            tracks: l.tracks,
            packets_per_sec: l.packets_per_sec,
            cpu_percent: l.cpu_percent,
            forward_latency_p50_us: l.forward_latency_p50_us,
            forward_latency_p99_us: l.forward_latency_p99_us,
            capacity_sessions: l.capacity_sessions,
        },
    }
}

fn link_view(from: &NodeRecord, link: &LinkReport) -> MeshLink {
    MeshLink {
        from: from.id.clone(),
        to: link.peer.clone(),
        from_site: from.site.clone(),
        to_site: link.peer_site.clone(),
        up: link.up,
        rtt_ms: link.rtt_us as f64 / 1000.0,
        loss_ratio: f64::from(link.loss_ppm) / 1e6,
        receive_bps: link.receive_bps,
    }
}

/// The mesh as `records` (the registry, this node's own record fresh) describe it; sites seen
/// earlier and empty now are listed with no nodes.
pub fn describe(
    me: &NodeRecord,
    records: impl IntoIterator<Item = NodeRecord>,
    sites_seen: impl IntoIterator<Item = String>,
) -> (Vec<MeshNode>, Vec<MeshSite>, Vec<MeshLink>) {
    let mut by_id: BTreeMap<String, NodeRecord> =
        records.into_iter().map(|r| (r.id.clone(), r)).collect();
    by_id.insert(me.id.clone(), me.clone());
    let mut sites: BTreeMap<String, MeshSite> = sites_seen
        .into_iter()
        .map(|name| {
            let site = MeshSite {
                name: name.clone(),
                nodes: 0,
                draining_nodes: 0,
                sessions: 0,
            };
            (name, site)
        })
        .collect();
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    for record in by_id.values() {
        let site = sites
            .entry(record.site.clone())
            .or_insert_with(|| MeshSite {
                name: record.site.clone(),
                nodes: 0,
                draining_nodes: 0,
                sessions: 0,
            });
        site.nodes += 1;
        site.draining_nodes += usize::from(record.draining);
        site.sessions += record.load.sessions;
        nodes.push(node_view(record, &me.id));
        links.extend(record.links.iter().map(|l| link_view(record, l)));
    }
    (nodes, sites.into_values().collect(), links)
}

#[utoipa::path(
    get,
    path = "/api/admin/mesh",
    tag = "mesh",
    responses(
        (status = 200, description = "Sites, nodes, links and the control plane", body = MeshView),
        (status = 401, description = "No admin credential", body = ApiErrorBody),
        (status = 403, description = "Not an operator", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn mesh(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<MeshView>, ApiError> {
    if !admin_caller(&state, peer, &headers)?.is_operator() {
        return Err(ApiError::operators_only());
    }
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::not_found("this node has no control plane"));
    };
    let mut me = cluster.record();
    me.links = state.metrics.relay.links();
    me.draining = cluster.is_draining();
    let view = cluster.view();
    let (nodes, sites, links) = describe(
        &me,
        view.nodes.into_values(),
        state.metrics.mesh.sites_seen(),
    );
    Ok(Json(MeshView {
        node: state.node_id.clone(),
        site: cluster.site.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        control_plane: ControlPlaneState {
            kind: cluster.control.kind().to_owned(),
            reachable: view.reachable,
        },
        nodes,
        sites,
        links,
    }))
}

#[utoipa::path(
    post,
    path = "/api/admin/nodes/{node}/drain",
    tag = "mesh",
    params(("node" = String, Path, description = "The node to drain (any live node of the mesh)")),
    responses(
        (status = 202, description = "The node drains (or did already)", body = DrainAnswer),
        (status = 401, description = "No admin credential", body = ApiErrorBody),
        (status = 403, description = "Not an operator", body = ApiErrorBody),
        (status = 404, description = "No such live node", body = ApiErrorBody),
        (status = 502, description = "The node could not be reached", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn drain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<DrainAnswer>), ApiError> {
    let caller = admin_caller(&state, peer, &headers)?;
    if !caller.is_operator() {
        return Err(ApiError::operators_only());
    }
    if node == state.node_id {
        let started = crate::http::admin::start_drain(&state, caller.actor(), peer)
            .ok_or_else(|| ApiError::not_found("this node has no control plane"))?;
        let status = if started {
            "draining"
        } else {
            "already draining"
        };
        return Ok((
            StatusCode::ACCEPTED,
            Json(DrainAnswer {
                node,
                status: status.to_owned(),
            }),
        ));
    }
    let target = forward::live_node(&state, &headers, &node)?;
    let path = format!("api/admin/nodes/{node}/drain");
    let answer = forward::call(&state, &headers, &target, hyper::Method::POST, &path).await?;
    let status = answer["status"].as_str().unwrap_or("draining").to_owned();
    Ok((StatusCode::ACCEPTED, Json(DrainAnswer { node, status })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaskade_control::NodeLoad;

    fn record(id: &str, site: &str, sessions: u64, links: Vec<LinkReport>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            site: site.into(),
            http_url: format!("http://{id}/"),
            media_addr: String::new(),
            relay_addr: String::new(),
            load: NodeLoad {
                sessions,
                ..NodeLoad::default()
            },
            draining: false,
            links,
        }
    }

    #[test]
    fn the_mesh_lists_sites_nodes_and_each_reported_link() {
        let link = LinkReport {
            peer: "n2".into(),
            peer_site: "b".into(),
            up: true,
            rtt_us: 1500,
            loss_ppm: 30_000,
            receive_bps: 64_000,
        };
        let stale_me = record("n1", "a", 0, vec![]);
        let me = record("n1", "a", 3, vec![link]);
        let (nodes, sites, links) = describe(
            &me,
            [stale_me, record("n2", "b", 4, vec![])],
            ["a".to_owned(), "c".to_owned()],
        );
        assert_eq!(nodes.len(), 2);
        assert!(
            nodes[0].is_self && nodes[0].load.sessions == 3,
            "own record is the fresh one"
        );
        let names: Vec<(&str, usize, u64)> = sites
            .iter()
            .map(|s| (s.name.as_str(), s.nodes, s.sessions))
            .collect();
        assert_eq!(names, [("a", 1, 3), ("b", 1, 4), ("c", 0, 0)]);
        assert_eq!(links.len(), 1);
        assert_eq!(
            (links[0].from_site.as_str(), links[0].to_site.as_str()),
            ("a", "b")
        );
        assert!((links[0].rtt_ms - 1.5).abs() < 1e-9);
        assert!((links[0].loss_ratio - 0.03).abs() < 1e-9);
    }
}
