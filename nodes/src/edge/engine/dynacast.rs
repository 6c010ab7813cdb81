//! Dynacast: on the engine's tick, each local simulcast track's `PublishedLayerGate` learns the
//! highest layer anyone may receive — the largest cap among this node's subscribers and the layers
//! other nodes ask for over the relay — and the publisher's owner is told when layers pause or
//! resume (`PublishLayers`; the web page applies it with `setParameters`).

use super::Engine;
use kaskade_mesh::engine_api::EdgeEvent;
use kaskade_proto::TrackId;
use std::collections::HashMap;
use std::time::Instant;

impl Engine {
    pub(super) fn gate_published_layers(&mut self, now: Instant) {
        let mut highest: HashMap<TrackId, u8> = HashMap::new();
        for session in self.sessions.values() {
            for (track, out) in &session.outbound {
                let top = highest.entry(track.clone()).or_insert(0);
                *top = (*top).max(out.wanted_layer);
            }
        }
        for (id, entry) in &mut self.tracks {
            if entry.layer_gate.is_none() {
                continue;
            }
            let needed = match (highest.get(id).copied(), entry.relay_top_layer()) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let Some(gate) = entry.layer_gate.as_mut() else {
                continue;
            };
            if let Some(active) = gate.update(needed, now)
                && let Some(key) = entry.publisher
                && let Some(session) = self.sessions.get(&key)
            {
                tracing::info!(track = %id, ?active, "publisher asked to send these layers");
                session.events.send(EdgeEvent::PublishLayers {
                    session: key,
                    track: id.clone(),
                    active,
                });
            }
        }
    }
}
