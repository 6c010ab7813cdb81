//! Measured bitrate of each simulcast layer of one published video track.
//!
//! Owns [`LayerBitrateMeter`]: it counts the bytes of each layer (0 = lowest ..= [`MAX_LAYER`])
//! in buckets of [`BUCKET_WIDTH`] and reads a layer's bitrate as the bytes of the current, partly
//! elapsed bucket and the [`BUCKETS`] before it, over the time they cover — a window sliding one
//! bucket at a time and spanning [`BITRATE_WINDOW`] plus the part of the current bucket.
//! Recording a packet is a few integer operations on fixed arrays: no allocation.
//!
//! A layer reads non-zero exactly while it had a packet within [`BITRATE_WINDOW`] — the same
//! second after which [`SimulcastLayerSelector`](super::SimulcastLayerSelector) takes a layer for
//! no longer live.
//! A layer that started (or resumed after such a pause) less than a window ago is measured over
//! the time it has flowed, not diluted over the whole window, but over at least one bucket: the
//! first keyframe burst of a new layer reads high rather than low, the safe side for a bandwidth
//! allocator. Packets of layers above [`MAX_LAYER`] are ignored.

use std::time::{Duration, Instant};

use super::layer_selector::{LAYER_TIMEOUT, MAX_LAYER};

/// Span over which a layer's bitrate is measured; a layer silent for this long reads 0.
pub const BITRATE_WINDOW: Duration = LAYER_TIMEOUT;
/// Granularity of the window: it slides one bucket at a time.
pub const BUCKET_WIDTH: Duration = Duration::from_millis(100);
/// Whole buckets per window (the current, partly elapsed bucket comes on top).
pub const BUCKETS: usize = 10;

const _: () = assert!(BUCKET_WIDTH.as_nanos() * BUCKETS as u128 == BITRATE_WINDOW.as_nanos());

const LAYER_COUNT: usize = MAX_LAYER as usize + 1;
const BUCKET_NANOS: u64 = BUCKET_WIDTH.as_nanos() as u64;
/// Ring slots per layer: the window's whole buckets and the current one.
const SLOTS: usize = BUCKETS + 1;

/// Bytes that arrived during one bucket-wide slice of time.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slice: buckets since the meter's first packet.
    number: u64,
    bytes: u64,
}

/// When a layer started flowing (again) and its latest packet.
#[derive(Debug, Clone, Copy)]
struct Flow {
    since: Instant,
    last_packet_at: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerWindow {
    /// Bucket number `n` lives in slot `n % SLOTS`.
    buckets: [Bucket; SLOTS],
    flow: Option<Flow>,
}

/// Per-layer bitrate of one published track (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct LayerBitrateMeter {
    /// Time of the first packet; bucket numbers count from here.
    origin: Option<Instant>,
    layers: [LayerWindow; LAYER_COUNT],
}

/// Nanoseconds from `origin` to `at` (0 if `at` is earlier).
fn nanos_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

impl LayerBitrateMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one packet of `bytes` on `layer`, arrived at `now`. Layers above [`MAX_LAYER`]
    /// are ignored; a packet too late for its bucket (the slot already holds a newer one) counts
    /// towards liveness only.
    pub fn on_packet(&mut self, layer: u8, bytes: usize, now: Instant) {
        if usize::from(layer) >= LAYER_COUNT {
            return;
        }
        let origin = *self.origin.get_or_insert(now);
        let window = &mut self.layers[usize::from(layer)];
        window.flow = match window.flow {
            Some(flow) if now.saturating_duration_since(flow.last_packet_at) < BITRATE_WINDOW => {
                Some(Flow {
                    since: flow.since,
                    last_packet_at: flow.last_packet_at.max(now),
                })
            }
            _ => Some(Flow {
                since: now,
                last_packet_at: now,
            }),
        };
        let number = nanos_since(origin, now) / BUCKET_NANOS;
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let bucket = &mut window.buckets[(number % SLOTS as u64) as usize];
        if bucket.number == number {
            bucket.bytes = bucket.bytes.saturating_add(bytes);
        } else if bucket.number < number {
            *bucket = Bucket { number, bytes };
        }
    }

    /// Bitrate of `layer` in bit/s at `now`: 0 for a layer above [`MAX_LAYER`], never seen, or
    /// silent for [`BITRATE_WINDOW`].
    pub fn bitrate(&self, layer: u8, now: Instant) -> u64 {
        let Some(window) = self.layers.get(usize::from(layer)) else {
            return 0;
        };
        let (Some(origin), Some(flow)) = (self.origin, window.flow) else {
            return 0;
        };
        if now.saturating_duration_since(flow.last_packet_at) >= BITRATE_WINDOW {
            return 0;
        }
        let now_nanos = nanos_since(origin, now);
        let newest = now_nanos / BUCKET_NANOS;
        let oldest = newest.saturating_sub(BUCKETS as u64);
        let bytes: u64 = window
            .buckets
            .iter()
            .filter(|bucket| (oldest..=newest).contains(&bucket.number))
            .map(|bucket| bucket.bytes)
            .sum();
        // The window runs from the oldest bucket's start (or the flow's start, if later) to now.
        let start_nanos = (oldest * BUCKET_NANOS).max(nanos_since(origin, flow.since));
        let span_nanos = now_nanos.saturating_sub(start_nanos).max(BUCKET_NANOS);
        let bits_per_second = u128::from(bytes) * 8 * 1_000_000_000 / u128::from(span_nanos);
        u64::try_from(bits_per_second).unwrap_or(u64::MAX)
    }

    /// [`Self::bitrate`] of every layer, lowest first.
    pub fn bitrates(&self, now: Instant) -> [u64; LAYER_COUNT] {
        std::array::from_fn(|layer| self.bitrate(layer as u8, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `bytes` on `layer` every `every_ms` in `[from_ms, to_ms)` (offsets from `t0`).
    fn stream(
        meter: &mut LayerBitrateMeter,
        t0: Instant,
        layer: u8,
        bytes: usize,
        every_ms: u64,
        (from_ms, to_ms): (u64, u64),
    ) {
        for at in (from_ms..to_ms).step_by(every_ms as usize) {
            meter.on_packet(layer, bytes, t0 + ms(at));
        }
    }

    #[test]
    fn a_steady_stream_reads_its_bitrate() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        // 1000 bytes every 10 ms: 800 kbit/s.
        stream(&mut m, t0, 0, 1000, 10, (0, 3000));
        assert_eq!(m.bitrate(0, t0 + ms(3000)), 800_000);
        // Mid-bucket the reading stays within one packet of the truth.
        let mid = m.bitrate(0, t0 + ms(2995));
        assert!(mid.abs_diff(800_000) <= 8_000, "{mid}");
    }

    #[test]
    fn layers_are_measured_separately() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        stream(&mut m, t0, 0, 500, 20, (0, 2000)); // 200 kbit/s
        stream(&mut m, t0, 1, 1000, 10, (0, 2000)); // 800 kbit/s
        stream(&mut m, t0, 2, 1200, 5, (0, 2000)); // 1.92 Mbit/s
        assert_eq!(m.bitrates(t0 + ms(2000)), [200_000, 800_000, 1_920_000]);
    }

    #[test]
    fn a_silent_layer_reads_zero_after_the_window() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        stream(&mut m, t0, 1, 1000, 10, (0, 1000));
        let last = t0 + ms(990);
        assert!(m.bitrate(1, last + ms(999)) > 0);
        assert_eq!(m.bitrate(1, last + BITRATE_WINDOW), 0);
        assert_eq!(m.bitrate(0, last), 0, "never seen");
        assert_eq!(m.bitrates(last + ms(5000)), [0, 0, 0]);
    }

    #[test]
    fn a_falling_rate_is_followed_within_one_window() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        stream(&mut m, t0, 0, 1000, 10, (0, 2000)); // 800 kbit/s
        stream(&mut m, t0, 0, 250, 10, (2000, 2500)); // then 200 kbit/s
        assert_eq!(
            m.bitrate(0, t0 + ms(2500)),
            500_000,
            "half a window of each"
        );
        stream(&mut m, t0, 0, 250, 10, (2500, 3000));
        assert_eq!(m.bitrate(0, t0 + ms(3000)), 200_000);
    }

    #[test]
    fn a_new_layer_is_measured_over_the_time_it_has_flowed() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        stream(&mut m, t0, 0, 500, 20, (0, 2000));
        // Layer 2 starts at 1.5 s: half a second later it is not read as half its rate.
        stream(&mut m, t0, 2, 1000, 10, (1500, 2000));
        assert_eq!(m.bitrate(2, t0 + ms(2000)), 800_000);
        // Its very first packet is measured over one bucket, not over nothing.
        let mut fresh = LayerBitrateMeter::new();
        fresh.on_packet(0, 1000, t0);
        assert_eq!(fresh.bitrate(0, t0), 80_000);
    }

    #[test]
    fn a_layer_that_resumes_is_not_diluted_by_its_pause() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        stream(&mut m, t0, 1, 1000, 10, (0, 1000));
        // Paused for 2 s, then resumes at 400 kbit/s.
        stream(&mut m, t0, 1, 500, 10, (3000, 3500));
        assert_eq!(m.bitrate(1, t0 + ms(3500)), 400_000);
        stream(&mut m, t0, 1, 500, 10, (3500, 4000));
        assert_eq!(m.bitrate(1, t0 + ms(4000)), 400_000);
    }

    #[test]
    fn layers_above_the_highest_are_ignored() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        m.on_packet(3, 1000, t0);
        m.on_packet(255, 1000, t0);
        assert_eq!(m.bitrate(3, t0), 0);
        assert_eq!(m.bitrate(255, t0), 0);
        assert_eq!(m.bitrates(t0), [0, 0, 0]);
    }

    #[test]
    fn out_of_order_times_do_not_panic_or_corrupt() {
        let t0 = Instant::now();
        let mut m = LayerBitrateMeter::new();
        let t1 = t0 + ms(5000);
        stream(&mut m, t1, 0, 1000, 10, (0, 1000));
        // A packet stamped before the first one, and a query from the past.
        m.on_packet(0, 1000, t0);
        assert!(m.bitrate(0, t0) > 0);
        stream(&mut m, t1, 0, 1000, 10, (1000, 1200));
        // A straggler whose bucket slot already holds a newer bucket is not counted.
        m.on_packet(0, 1_000_000, t1 + ms(10));
        let now = t1 + ms(1200);
        assert_eq!(m.bitrate(0, now), 800_000);
        assert_eq!(m.bitrates(now), [800_000, 0, 0]);
    }
}
