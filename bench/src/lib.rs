//! Kaskade's benchmarks and load generator.

pub mod janus;
pub mod node_process;
