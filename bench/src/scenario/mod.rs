//! `scenario`: the benchmark scenarios (`fanout-N`, `meeting-N`, `classroom`, `classroom-2sites`, `cascade-2`) run against
//! Kaskade and Janus with the load generator, and their report.
//!
//! - `spec`: scenario names and what each runs (pure);
//! - `target`: the server under test, started and measured ([`SfuUnderTest`]);
//! - `runner`: one run — publish, ramp, warm up, measure, close;
//! - `figures`: per-run figures, medians per server, Kaskade/Janus ratios (pure);
//! - `report`: the `RESULTS.md` section, JSON, latency CDF SVG.

pub mod figures;
pub mod report;
pub mod runner;
pub mod spec;
pub mod target;

pub use figures::{Comparison, RunFigures};
pub use runner::{RunOptions, run};
pub use spec::Scenario;
pub use target::{Placement, SfuKind, SfuUnderTest};
