//! The two ways every micro-benchmark case runs, shared by `mesh/benches/forwarding_core.rs` and
//! `proto/benches/relay_frame.rs` (each includes this file with `#[path]`): criterion
//! (wall-clock time), or, when `KASKADE_BENCH_ITERS=N` is set, exactly N iterations per case
//! without timing (`KASKADE_BENCH_CASE=name` picks one) for `valgrind --tool=callgrind`
//! instruction counts that repeat exactly (`bench/callgrind.sh`). Both modes call the same
//! per-case closure.

use criterion::{Criterion, Throughput};
use std::hint::black_box;

/// Runs named cases; `elements` is what one iteration processes (downstreams for a fan-out).
pub trait Harness {
    /// Whether `name` will run (lets a case skip its setup).
    fn wants(&self, name: &str) -> bool;
    fn case<R>(&mut self, name: &str, elements: u64, step: impl FnMut() -> R);
}

impl Harness for Criterion {
    fn wants(&self, _name: &str) -> bool {
        true
    }

    fn case<R>(&mut self, name: &str, elements: u64, mut step: impl FnMut() -> R) {
        let (group, id) = name.split_once('/').unwrap_or((name, ""));
        let mut g = self.benchmark_group(group);
        g.throughput(Throughput::Elements(elements.max(1)));
        g.bench_function(id, |b| b.iter(&mut step));
        g.finish();
    }
}

/// A fixed number of iterations per case, no timing: for callgrind.
pub struct FixedIterations {
    iters: u64,
    only: Option<String>,
}

impl FixedIterations {
    /// From `KASKADE_BENCH_ITERS` (and `KASKADE_BENCH_CASE`); `None` when it is not set.
    pub fn from_env() -> Option<Self> {
        let iters = std::env::var("KASKADE_BENCH_ITERS").ok()?;
        Some(Self {
            iters: iters
                .trim()
                .parse()
                .expect("KASKADE_BENCH_ITERS is a number"),
            only: std::env::var("KASKADE_BENCH_CASE").ok(),
        })
    }
}

impl Harness for FixedIterations {
    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }

    fn case<R>(&mut self, name: &str, elements: u64, mut step: impl FnMut() -> R) {
        measured_loop(self.iters, &mut step);
        println!("case {name} iters={} elements={elements}", self.iters);
    }
}

#[inline(never)]
fn measured_loop<R>(iters: u64, step: &mut impl FnMut() -> R) {
    for _ in 0..iters {
        black_box(step());
    }
}

/// Criterion configured from the command line.
pub fn criterion() -> Criterion {
    Criterion::default().configure_from_args()
}
