//! Kaskade's benchmarks and load generator.

pub mod node_process;
