//! Owns: the end-to-end test harness shared by `tests/tests/*.rs` — starting the real node binary,
//! the Python aiortc clients and headless Chromium as guarded child processes, network namespaces,
//! and small blocking HTTP / WebSocket / Prometheus helpers. Everything cleans up on drop, so a
//! failing (panicking) test still kills its processes and deletes its namespaces.
//!
//! Integration tests get the node binary with [`node_bin!`] (only they see
//! `CARGO_BIN_EXE_kaskade-e2e-node`).

pub mod access;
pub mod browser;
pub mod clients;
pub mod control_suite;
pub mod deploy;
pub mod etcd;
pub mod failover_browser;
pub mod failover_relay;
pub mod http;
pub mod impair;
pub mod mesh;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod proc;
pub mod wait;
pub mod ws;

pub use clients::{PyClient, python};
pub use metrics::metric;
pub use netns::NetNs;
pub use node::NodeProcess;
pub use proc::Spawned;
pub use wait::poll_until;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Path of the node binary as built by `cargo test`; usable in integration tests only.
#[macro_export]
macro_rules! node_bin {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_kaskade-e2e-node"))
    };
}

/// Path of the impairment proxy as built by `cargo test`; usable in integration tests only.
#[macro_export]
macro_rules! impair_bin {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_kaskade-e2e-impair"))
    };
}

/// The `tests/` package directory (clients/, browser/, artifacts/ live under it).
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests put screenshots and logs (gitignored); created on demand.
pub fn artifacts_dir() -> PathBuf {
    let dir = tests_dir().join("artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

static HEAVY: Mutex<()> = Mutex::new(());

/// Serialises the media-heavy tests of one test binary: several aiortc encoders and decoders
/// at once on a 2-core machine would make frame-rate assertions measure the CPU, not the node.
pub fn heavy_test_lock() -> MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
