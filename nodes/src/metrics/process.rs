//! The process's own resource use in the conventional `process_*` names (CPU seconds, resident
//! memory, open descriptors, start time) plus the CPUs it may use, read from `/proc` when
//! `/metrics` is scraped. Elsewhere than Linux the values stay at zero.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct ProcessMetrics {
    cpu_seconds: FloatCounter,
    resident_memory: Gauge,
    open_fds: Gauge,
    start_time: FloatGauge,
    cpu_cores: Gauge,
}

impl ProcessMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let m = Self {
            cpu_seconds: FloatCounter::default(),
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
            start_time: FloatGauge::default(),
            cpu_cores: Gauge::default(),
        };
        r.register(
            "process_cpu_seconds",
            "User and system CPU time of the node process, in seconds",
            m.cpu_seconds.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the node process",
            m.resident_memory.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors (sockets included) of the node process",
            m.open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When the node process started, in seconds since the Unix epoch",
            m.start_time.clone(),
        );
        r.register(
            "kaskade_cpu_cores",
            "CPUs the node process may run on",
            m.cpu_cores.clone(),
        );
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        m.start_time.set(started);
        m
    }

    /// Reads the current figures; called before each exposition.
    pub fn refresh(&self) {
        if let Some(ticks) = cpu_ticks() {
            let seconds = ticks as f64 / CLOCK_TICKS_PER_SECOND;
            let delta = seconds - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
        }
        if let Some(bytes) = resident_bytes() {
            self.resident_memory.set(bytes as i64);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.cpu_cores.set(cores as i64);
    }
}

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ, fixed for user space).
pub const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of this process in clock ticks, if `/proc` tells.
pub fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may contain spaces and parentheses) start after the
    // last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in bytes, from `/proc/self/status` (`VmRSS`, in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (kaskade (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 9 0 123 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x)"), None);
    }

    #[test]
    fn resident_memory_comes_from_vm_rss() {
        let status = "Name:\tkaskade\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn refresh_reads_this_process() {
        let mut r = Registry::default();
        let m = ProcessMetrics::register(&mut r);
        m.refresh();
        assert!(m.resident_memory.get() > 0);
        assert!(m.open_fds.get() > 0);
        assert!(m.cpu_cores.get() >= 1);
    }
}
