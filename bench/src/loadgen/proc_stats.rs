//! `loadgen::proc_stats`: what a process costs — user + system CPU time (all threads; read with
//! [`crate::janus::process::process_cpu_time`], shared with the Janus harness), resident and peak
//! resident memory from `/proc/<pid>/status`, and the CPU time of the calling thread from
//! `/proc/thread-self/schedstat`, [`child_pids`] to find a process this one started, and the
//! kernel's UDP counters ([`udp_counters`], `/proc/net/snmp`) and per-socket drops
//! ([`udp_socket_drops`], `/proc/net/udp`): where datagrams were dropped.

use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system time of all its threads.
    pub cpu: Duration,
    /// Resident set (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Peak resident set (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
}

/// Reads process `pid`.
pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let cpu = crate::janus::process::process_cpu_time(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (rss, peak) = parse_rss(&status)
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS/VmHWM in /proc/{pid}/status")))?;
    Ok(ProcSample {
        cpu,
        rss_bytes: rss,
        peak_rss_bytes: peak,
    })
}

/// `VmRSS` and `VmHWM` of a `/proc/<pid>/status` text, in bytes.
fn parse_rss(status: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let value = line[key.len()..].trim().trim_end_matches("kB").trim();
        value.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// CPU time the calling thread has run (`/proc/thread-self/schedstat`, ns resolution).
pub fn thread_cpu() -> std::io::Result<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other(format!("unparsable schedstat: {text}")))?;
    Ok(Duration::from_nanos(ns))
}

/// Pids of the live children of this process whose command name (`comm`, at most 15 bytes) is
/// `comm`.
pub fn child_pids(comm: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_comm_ppid(&stat).map(|(c, p)| c == comm && p == me))
                .unwrap_or(false)
        })
        .collect()
}

/// Command name (field 2, without parentheses) and parent pid (field 4) of a `/proc/<pid>/stat`
/// line.
fn parse_comm_ppid(stat: &str) -> Option<(&str, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let ppid = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((comm, ppid))
}

/// The kernel's UDP counters (all sockets of the network namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub in_datagrams: u64,
    pub out_datagrams: u64,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Sends refused because a socket's send buffer was full.
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// `self − earlier`, counter by counter.
    pub fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            out_datagrams: self.out_datagrams.saturating_sub(earlier.out_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
        }
    }
}

/// Reads `/proc/net/snmp`.
pub fn udp_counters() -> std::io::Result<UdpCounters> {
    let text = std::fs::read_to_string("/proc/net/snmp")?;
    parse_udp(&text).ok_or_else(|| std::io::Error::other("no Udp: lines in /proc/net/snmp"))
}

/// The `Udp:` header and value lines of `/proc/net/snmp`.
fn parse_udp(text: &str) -> Option<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let field = |name: &str| -> Option<u64> {
        let i = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(i)?.parse().ok()
    };
    Some(UdpCounters {
        in_datagrams: field("InDatagrams")?,
        out_datagrams: field("OutDatagrams")?,
        rcvbuf_errors: field("RcvbufErrors")?,
        sndbuf_errors: field("SndbufErrors")?,
    })
}

/// `(local port, datagrams dropped)` of every IPv4 UDP socket of the network namespace.
pub fn udp_socket_drops() -> std::io::Result<Vec<(u16, u64)>> {
    Ok(parse_udp_sockets(&std::fs::read_to_string(
        "/proc/net/udp",
    )?))
}

/// The local port (hex after the `:` of `local_address`) and the last column (`drops`) of each
/// socket line of `/proc/net/udp`.
fn parse_udp_sockets(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            let drops = fields.last()?.parse().ok()?;
            Some((port, drops))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resident_memory_in_bytes() {
        let status = "Name:\tkaskade\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n";
        assert_eq!(parse_rss(status), Some((100 << 20, 200 << 20)));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_the_udp_counters() {
        let text = "Ip: Forwarding\nIp: 1\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 2 7 90 5 1\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let c = parse_udp(text).unwrap();
        assert_eq!(
            (
                c.in_datagrams,
                c.out_datagrams,
                c.rcvbuf_errors,
                c.sndbuf_errors
            ),
            (100, 90, 5, 1)
        );
        let later = UdpCounters {
            rcvbuf_errors: 9,
            ..c
        };
        assert_eq!(later.since(&c).rcvbuf_errors, 4);
        assert_eq!(parse_udp("Udp: InDatagrams\n"), None);
        assert!(udp_counters().is_ok());
    }

    #[test]
    fn reads_per_socket_drops() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            12: 0100007F:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 17\n\
            13: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1235 2 0000000000000000 0\n";
        assert_eq!(parse_udp_sockets(text), vec![(7000, 17), (0xA1B2, 0)]);
        assert!(udp_socket_drops().is_ok());
    }

    #[test]
    fn finds_children_by_command_name() {
        let stat = "4242 (kaskade (x)) S 17 4242 4242 0 -1 4194560 2264 0 0 0 150 37";
        assert_eq!(parse_comm_ppid(stat), Some(("kaskade (x)", 17)));
        assert_eq!(parse_comm_ppid("garbage"), None);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = child_pids("sleep");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![child.id()]);
    }

    #[test]
    fn samples_this_process_and_thread() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes, "{s:?}");
        let before = thread_cpu().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu().unwrap() > before);
    }
}
