//! `loadgen::measure`: what subscribers measure — pure, no I/O.
//!
//! Owns [`StreamTracker`] (one received stream of one subscriber: loss from the marker's packet
//! counter with a reordering window, RFC 3550 interarrival jitter, packet and byte counts),
//! [`Recorder`] (the trackers of many subscribers plus one latency histogram per stream, as an
//! event loop keeps them), [`Window`] (which packets count, by send time) and [`Report`] /
//! [`StreamReport`], the mergeable result (sum over subscribers, over loops).
//!
//! Latency is receive time − the marker's send time, both on the process's
//! [`MediaClock`](super::synthetic::MediaClock), recorded in µs into an hdrhistogram. Jitter is
//! RFC 3550 §6.4.1's estimator with the transit time taken from the marker's send time (ns), not
//! the RTP timestamp, so a frame's paced packets do not count as jitter. Loss per stream is
//! `expected − received`, where expected spans the lowest to the highest counter seen in the
//! window; a packet that arrives after a later one is counted once (late, not lost) as long as it
//! is within [`REORDER_WINDOW`] counters of the highest; duplicates are counted apart.

use std::collections::HashMap;

use hdrhistogram::Histogram;

use super::synthetic::Marker;

/// How far behind the highest counter a packet may arrive and still count as received.
pub const REORDER_WINDOW: u64 = 1024;
/// Largest latency the histograms hold (µs); larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A new latency histogram (1 µs … 60 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Which packets count: those sent in `[start_ns, end_ns)` on the media clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    /// Every packet.
    pub const ALL: Window = Window {
        start_ns: 0,
        end_ns: u64::MAX,
    };

    pub fn contains(&self, sent_ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&sent_ns)
    }
}

/// One received stream of one subscriber.
#[derive(Debug, Clone)]
pub struct StreamTracker {
    first: Option<u64>,
    highest: u64,
    /// Bit i set: counter `highest - i` was received (i < REORDER_WINDOW).
    seen: [u64; (REORDER_WINDOW / 64) as usize],
    unique: u64,
    late: u64,
    duplicates: u64,
    too_old: u64,
    bytes: u64,
    /// RFC 3550 jitter in ns, and the previous packet's transit (arrival − send) in ns.
    jitter_ns: f64,
    last_transit: Option<i64>,
    first_arrival_ns: Option<u64>,
    last_arrival_ns: u64,
}

impl Default for StreamTracker {
    fn default() -> Self {
        Self {
            first: None,
            highest: 0,
            seen: [0; (REORDER_WINDOW / 64) as usize],
            unique: 0,
            late: 0,
            duplicates: 0,
            too_old: 0,
            bytes: 0,
            jitter_ns: 0.0,
            last_transit: None,
            first_arrival_ns: None,
            last_arrival_ns: 0,
        }
    }
}

impl StreamTracker {
    fn bit(&self, counter: u64) -> Option<(usize, u64)> {
        let back = self.highest.checked_sub(counter)?;
        (back < REORDER_WINDOW).then(|| ((back / 64) as usize, 1u64 << (back % 64)))
    }

    /// Shifts the seen-bitmap so that bit 0 is `highest + by`.
    fn advance(&mut self, by: u64) {
        if by >= REORDER_WINDOW {
            self.seen = [0; (REORDER_WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.seen[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.seen[s]);
            self.seen[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }

    /// Takes one packet that arrived at `arrival_ns` with `bytes` of payload. Returns the
    /// latency in ns if it counts (first arrival of its counter), `None` for a duplicate or a
    /// packet older than the reordering window.
    pub fn on_packet(&mut self, marker: &Marker, arrival_ns: u64, bytes: usize) -> Option<u64> {
        let counter = marker.counter;
        match self.first {
            None => {
                self.first = Some(counter);
                self.highest = counter;
                self.seen[0] = 1;
            }
            Some(first) => {
                if counter > self.highest {
                    self.advance(counter - self.highest);
                    self.highest = counter;
                    self.seen[0] |= 1;
                } else {
                    let Some((word, mask)) = self.bit(counter) else {
                        self.too_old += 1;
                        return None;
                    };
                    if self.seen[word] & mask != 0 {
                        self.duplicates += 1;
                        return None;
                    }
                    self.seen[word] |= mask;
                    self.late += 1;
                    if counter < first {
                        self.first = Some(counter);
                    }
                }
            }
        }
        self.unique += 1;
        self.bytes += bytes as u64;
        self.first_arrival_ns.get_or_insert(arrival_ns);
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);
        let transit = arrival_ns as i64 - marker.sent_ns as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit = Some(transit);
        Some(arrival_ns.saturating_sub(marker.sent_ns))
    }

    /// Packets received once.
    pub fn received(&self) -> u64 {
        self.unique
    }

    /// Counters between the lowest and the highest seen that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }

    /// Counters from the lowest to the highest seen.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |first| self.highest - first + 1)
    }

    /// The current RFC 3550 jitter estimate in µs.
    pub fn jitter_us(&self) -> f64 {
        self.jitter_ns / 1000.0
    }
}

/// Merged figures of one stream over any number of subscribers.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Subscribers that received the stream.
    pub subscribers: u64,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    pub too_old: u64,
    pub bytes: u64,
    /// Sum and maximum of the subscribers' final jitter estimates, µs.
    pub jitter_sum_us: f64,
    pub jitter_max_us: f64,
    /// Receive−send latency, µs.
    pub latency: Histogram<u64>,
}

impl Default for StreamReport {
    fn default() -> Self {
        Self {
            subscribers: 0,
            received: 0,
            expected: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            too_old: 0,
            bytes: 0,
            jitter_sum_us: 0.0,
            jitter_max_us: 0.0,
            latency: latency_histogram(),
        }
    }
}

impl StreamReport {
    fn add_tracker(&mut self, t: &StreamTracker) {
        if t.unique == 0 {
            return;
        }
        self.subscribers += 1;
        self.received += t.unique;
        self.expected += t.expected();
        self.lost += t.lost();
        self.late += t.late;
        self.duplicates += t.duplicates;
        self.too_old += t.too_old;
        self.bytes += t.bytes;
        self.jitter_sum_us += t.jitter_us();
        self.jitter_max_us = self.jitter_max_us.max(t.jitter_us());
    }

    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: &StreamReport) {
        self.subscribers += other.subscribers;
        self.received += other.received;
        self.expected += other.expected;
        self.lost += other.lost;
        self.late += other.late;
        self.duplicates += other.duplicates;
        self.too_old += other.too_old;
        self.bytes += other.bytes;
        self.jitter_sum_us += other.jitter_sum_us;
        self.jitter_max_us = self.jitter_max_us.max(other.jitter_max_us);
        // Same bounds on both sides, so adding cannot fail; clamp anyway rather than panic.
        let _ = self.latency.add(&other.latency);
    }

    /// Lost / expected (0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }

    /// Mean of the subscribers' jitter, µs.
    pub fn jitter_mean_us(&self) -> f64 {
        if self.subscribers == 0 {
            0.0
        } else {
            self.jitter_sum_us / self.subscribers as f64
        }
    }
}

/// Per-stream reports, keyed by the marker's stream id.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub streams: HashMap<u32, StreamReport>,
}

impl Report {
    /// Adds `other`'s streams to these.
    pub fn merge(&mut self, other: &Report) {
        for (id, s) in &other.streams {
            self.streams.entry(*id).or_default().merge(s);
        }
    }

    /// All streams merged into one.
    pub fn total(&self) -> StreamReport {
        let mut all = StreamReport::default();
        for s in self.streams.values() {
            all.merge(s);
        }
        all
    }
}

/// Key of one subscriber's stream in a [`Recorder`].
pub type TrackerKey = (u64, u32);

/// The measurements of all subscribers of one event loop: a tracker per (subscriber, stream)
/// and one latency histogram per stream shared by them (a histogram is ~100 KB; a tracker ~200 B).
#[derive(Debug)]
pub struct Recorder {
    window: Window,
    trackers: HashMap<TrackerKey, StreamTracker>,
    latency: HashMap<u32, Histogram<u64>>,
    /// Packets with a marker outside the window, and payloads without a marker.
    pub outside_window: u64,
    pub unmarked: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(Window::ALL)
    }
}

impl Recorder {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            trackers: HashMap::new(),
            latency: HashMap::new(),
            outside_window: 0,
            unmarked: 0,
        }
    }

    /// Starts over with `window`: every figure so far is dropped.
    pub fn reset(&mut self, window: Window) {
        *self = Self::new(window);
    }

    /// One packet that `subscriber` received at `arrival_ns` with `payload`.
    pub fn on_payload(&mut self, subscriber: u64, payload: &[u8], arrival_ns: u64) {
        let Some(marker) = super::synthetic::find_marker(payload) else {
            self.unmarked += 1;
            return;
        };
        self.on_marker(subscriber, &marker, payload.len(), arrival_ns);
    }

    /// One packet whose marker is already parsed.
    pub fn on_marker(&mut self, subscriber: u64, marker: &Marker, bytes: usize, arrival_ns: u64) {
        if !self.window.contains(marker.sent_ns) {
            self.outside_window += 1;
            return;
        }
        let tracker = self
            .trackers
            .entry((subscriber, marker.stream))
            .or_default();
        if let Some(ns) = tracker.on_packet(marker, arrival_ns, bytes) {
            let us = (ns / 1000).clamp(1, MAX_LATENCY_US);
            self.latency
                .entry(marker.stream)
                .or_insert_with(latency_histogram)
                .saturating_record(us);
        }
    }

    /// The figures so far.
    pub fn report(&self) -> Report {
        let mut report = Report::default();
        for ((_, stream), t) in &self.trackers {
            report.streams.entry(*stream).or_default().add_tracker(t);
        }
        for (stream, h) in &self.latency {
            let _ = report.streams.entry(*stream).or_default().latency.add(h);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(counter: u64, sent_ns: u64) -> Marker {
        Marker {
            stream: 1,
            counter,
            sent_ns,
        }
    }

    #[test]
    fn loss_counts_gaps_and_tolerates_reordering() {
        let mut t = StreamTracker::default();
        for c in [10, 11, 13, 12, 14, 17] {
            t.on_packet(&marker(c, 0), 1000, 100);
        }
        assert_eq!((t.received(), t.expected(), t.lost()), (6, 8, 2));
        assert_eq!(t.late, 1);
        // A duplicate and a late arrival of a "lost" one.
        assert_eq!(t.on_packet(&marker(13, 0), 1000, 100), None);
        assert!(t.on_packet(&marker(15, 0), 1000, 100).is_some());
        assert_eq!((t.duplicates, t.lost()), (1, 1));
        // Far ahead: the window moves; something older than the window is dropped, not counted.
        t.on_packet(&marker(17 + 5000, 0), 1000, 100);
        assert_eq!(t.on_packet(&marker(16, 0), 1000, 100), None);
        assert_eq!(t.too_old, 1);
        assert_eq!(t.expected(), 5008);
        assert_eq!(t.lost(), 5008 - 8);
    }

    #[test]
    fn the_reorder_window_shifts_bit_exactly() {
        let mut t = StreamTracker::default();
        // Every other counter, across several word boundaries, then fill the gaps late.
        for c in (0..600).step_by(2) {
            t.on_packet(&marker(c, 0), 0, 1);
        }
        for c in (1..600).step_by(2) {
            assert!(t.on_packet(&marker(c, 0), 0, 1).is_some(), "counter {c}");
        }
        for c in 0..600 {
            assert_eq!(t.on_packet(&marker(c, 0), 0, 1), None, "counter {c} twice");
        }
        assert_eq!((t.received(), t.lost(), t.duplicates), (600, 0, 600));
        // Steps across word boundaries keep exactly the right bits.
        let mut t = StreamTracker::default();
        let counters = [0, 63, 127, 192, 892, 893];
        for c in counters {
            t.on_packet(&marker(c, 0), 0, 1);
        }
        assert_eq!(t.lost(), 894 - 6);
        for c in counters {
            assert_eq!(t.on_packet(&marker(c, 0), 0, 1), None, "{c} is remembered");
        }
        for c in [1, 62, 64, 128, 191, 193, 891] {
            assert!(
                t.on_packet(&marker(c, 0), 0, 1).is_some(),
                "{c} was never seen"
            );
        }
        assert_eq!((t.duplicates, t.late, t.lost()), (6, 7, 894 - 13));
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut t = StreamTracker::default();
        // Constant transit: no jitter.
        for i in 0..100 {
            t.on_packet(&marker(i, i * 20_000_000), i * 20_000_000 + 500_000, 100);
        }
        assert_eq!(t.jitter_us(), 0.0);
        // Transit alternating 0.5 ms / 1.5 ms: |D| = 1 ms each time; J converges to 1000 µs.
        for i in 100..1000 {
            let extra = if i % 2 == 0 { 0 } else { 1_000_000 };
            t.on_packet(
                &marker(i, i * 20_000_000),
                i * 20_000_000 + 500_000 + extra,
                100,
            );
        }
        assert!((t.jitter_us() - 1000.0).abs() < 1.0, "{}", t.jitter_us());
    }

    #[test]
    fn the_recorder_windows_merges_and_resets() {
        let window = Window {
            start_ns: 1_000,
            end_ns: 2_000_000_000,
        };
        let mut a = Recorder::new(window);
        let mut b = Recorder::new(window);
        let mut payload = vec![0u8; 100];
        for sub in [1u64, 2, 3] {
            let rec = if sub == 3 { &mut b } else { &mut a };
            for i in 0..10u64 {
                if sub == 2 && i == 4 {
                    continue; // one loss for subscriber 2
                }
                marker(i, 1_000 + i * 1_000_000).write(&mut payload);
                rec.on_payload(sub, &payload, 1_000 + i * 1_000_000 + 250_000 * (sub));
            }
        }
        a.on_payload(1, b"no marker here, just bytes", 5);
        marker(99, 0).write(&mut payload);
        a.on_payload(1, &payload, 5);
        assert_eq!((a.unmarked, a.outside_window), (1, 1));
        let mut report = a.report();
        report.merge(&b.report());
        let s = &report.streams[&1];
        assert_eq!(
            (s.subscribers, s.received, s.expected, s.lost),
            (3, 29, 30, 1)
        );
        assert_eq!(s.bytes, 2900);
        assert_eq!(s.latency.len(), 29);
        assert_eq!(s.latency.min(), 250);
        assert!(s.latency.max() >= 749 && s.latency.max() <= 751);
        assert!((report.total().loss_ratio() - 1.0 / 30.0).abs() < 1e-9);
        a.reset(Window::ALL);
        assert!(a.report().streams.is_empty());
    }
}
