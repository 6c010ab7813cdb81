//! What a node reports about itself in the registry: its load (sessions and tracks from the
//! engine and the room directory, packets per second from the send counter, CPU from
//! `/proc/self/stat`, forwarding latency quantiles since the last sample, its configured
//! capacity) and the state of its relay links.

use crate::edge::EngineHandle;
use crate::metrics::Metrics;
use crate::metrics::latency::LatencyCounts;
use kaskade_control::{LinkReport, NodeLoad};
use kaskade_mesh::RoomDirectory;
use std::sync::Arc;
use std::time::Instant;

/// Samples the load; rates are over the time since the previous sample.
pub struct LoadSampler {
    engine: EngineHandle,
    rooms: Arc<RoomDirectory>,
    metrics: Arc<Metrics>,
    capacity_sessions: u64,
    last: Option<(Instant, u64, Option<u64>)>,
    latency: LatencyCounts,
}

impl LoadSampler {
    pub fn new(
        engine: EngineHandle,
        rooms: Arc<RoomDirectory>,
        metrics: Arc<Metrics>,
        capacity_sessions: u64,
    ) -> Self {
        let latency = metrics.forward_latency.counts();
        Self {
            engine,
            rooms,
            metrics,
            capacity_sessions,
            last: None,
            latency,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The relay links as they are now.
    pub fn links(&self) -> Vec<LinkReport> {
        self.metrics.relay.links()
    }

    pub async fn sample(&mut self) -> NodeLoad {
        let stats = self.engine.stats().await;
        let tracks = self.rooms.list().iter().map(|(_, c)| c.tracks as u64).sum();
        let now = Instant::now();
        let packets = self.metrics.packets_out.get();
        let cpu_ticks = crate::metrics::process::cpu_ticks();
        let (mut pps, mut cpu) = (0, 0);
        if let Some((then, last_packets, last_ticks)) = self.last {
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            pps = (packets.saturating_sub(last_packets) as f64 / secs) as u64;
            if let (Some(a), Some(b)) = (last_ticks, cpu_ticks) {
                let ticks_per_percent = crate::metrics::process::CLOCK_TICKS_PER_SECOND / 100.0;
                cpu = ((b.saturating_sub(a)) as f64 / ticks_per_percent / secs) as u32;
            }
        }
        self.last = Some((now, packets, cpu_ticks));
        let latency = self.metrics.forward_latency.counts();
        let quantiles = latency.quantiles_since(&self.latency);
        self.latency = latency;
        NodeLoad {
            sessions: stats.sessions as u64,
            tracks,
            packets_per_sec: pps,
            cpu_percent: cpu,
            forward_latency_p50_us: quantiles.p50_us,
            forward_latency_p99_us: quantiles.p99_us,
            capacity_sessions: self.capacity_sessions,
        }
    }
}
