//! What a node reports as its load in the registry: sessions and tracks from the engine and the
//! room directory, packets per second from the send counter, CPU from `/proc/self/stat`.

use crate::edge::EngineHandle;
use crate::metrics::Metrics;
use kaskade_control::NodeLoad;
use kaskade_mesh::RoomDirectory;
use std::sync::Arc;
use std::time::Instant;

/// Samples the load; rates are over the time since the previous sample.
pub struct LoadSampler {
    engine: EngineHandle,
    rooms: Arc<RoomDirectory>,
    metrics: Arc<Metrics>,
    last: Option<(Instant, u64, Option<u64>)>,
}

impl LoadSampler {
    pub fn new(engine: EngineHandle, rooms: Arc<RoomDirectory>, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            rooms,
            metrics,
            last: None,
        }
    }

    pub async fn sample(&mut self) -> NodeLoad {
        let stats = self.engine.stats().await;
        let tracks = self.rooms.list().iter().map(|(_, c)| c.tracks as u64).sum();
        let now = Instant::now();
        let packets = self.metrics.packets_out.get();
        let cpu_ticks = cpu_ticks();
        let (mut pps, mut cpu) = (0, 0);
        if let Some((then, last_packets, last_ticks)) = self.last {
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            pps = (packets.saturating_sub(last_packets) as f64 / secs) as u64;
            if let (Some(a), Some(b)) = (last_ticks, cpu_ticks) {
                // Linux reports CPU time in clock ticks of 1/100 s.
                cpu = ((b.saturating_sub(a)) as f64 / secs) as u32;
            }
        }
        self.last = Some((now, packets, cpu_ticks));
        NodeLoad {
            sessions: stats.sessions as u64,
            tracks,
            packets_per_sec: pps,
            cpu_percent: cpu,
        }
    }
}

/// User + system CPU time of this process in clock ticks, if `/proc` tells.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}
