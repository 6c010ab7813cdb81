//! Kaskade's benchmarks and load generator.
