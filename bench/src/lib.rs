//! Kaskade's benchmarks and load generator.

pub mod impair;
pub mod node_process;
