//! Kaskade's benchmarks and load generator.

pub mod janus;
pub mod loadgen;
pub mod node_process;
pub mod scenario;
