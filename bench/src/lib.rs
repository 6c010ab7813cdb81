//! Kaskade's benchmarks and load generator.

pub mod impair;
