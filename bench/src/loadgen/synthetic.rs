//! `loadgen::synthetic`: the media a synthetic publisher sends — pure, no I/O, no WebRTC.
//!
//! Owns the payload marker every load-generator packet carries ([`Marker`], [`find_marker`]),
//! the process-wide clock its send time is read from ([`MediaClock`]), and the two sources:
//!
//! - [`AudioSource`]: Opus-sized payloads (bitrate / 50 bytes) every 20 ms, RTP clock 48 kHz;
//! - [`VideoSource`]: VP8 at a set bitrate and frame rate, one or more simulcast layers. Each
//!   frame is split into packets of at most `max_payload` bytes whose sends are spread over a few
//!   milliseconds after the frame's time (no bursts). Every packet starts with a VP8 payload
//!   descriptor (RFC 7741 §4.2: X = 1, 15-bit picture id, TL0PICIDX, TID = 0), S = 1 and PID = 0
//!   on a frame's first packet, which also carries the VP8 payload header (RFC 7741 §4.3 /
//!   RFC 6386 §9.1): P = 0 and the keyframe start code and size on keyframes, P = 1 otherwise. So
//!   an SFU's keyframe detection and layer switching work on it. A keyframe starts every
//!   `keyframe_interval`, and at the next frame after [`VideoSource::request_keyframe`] (PLI/FIR).
//!
//! The marker sits right after the VP8 headers (at offset 0 for audio): magic, stream id,
//! per-stream packet counter and the send time in ns on the [`MediaClock`] shared by the
//! publishers and subscribers of one process. Sources hand out packets through `poll(now)`, which
//! stamps the send time as `now`: call it right before the packet goes to the WebRTC stack.

use std::time::{Duration, Instant};

/// First bytes of every marker.
pub const MARKER_MAGIC: [u8; 4] = *b"KSKL";
/// Marker size: magic, stream id (u32), packet counter (u64), send time ns (u64), big-endian.
pub const MARKER_LEN: usize = 4 + 4 + 8 + 8;
/// RTP clock rate of Opus.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
/// RTP clock rate of VP8.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Audio packet interval (Opus 20 ms frames, 50 packets/s).
pub const AUDIO_PTIME: Duration = Duration::from_millis(20);
/// Largest RTP payload a video packet gets by default (fits a 1500-byte MTU with SRTP).
pub const DEFAULT_MAX_PAYLOAD: usize = 1200;
/// A frame's packets are spread over at most this long after the frame's time.
pub const PACING_WINDOW: Duration = Duration::from_millis(8);
/// A keyframe is this many times the size of a delta frame.
const KEYFRAME_SIZE_FACTOR: u32 = 4;
/// VP8 payload descriptor of this generator: X, then I + L + T, 15-bit picture id, TL0PICIDX,
/// TID/Y/KEYIDX byte.
const VP8_DESCRIPTOR_LEN: usize = 6;
/// VP8 payload header of a keyframe: 3-byte frame tag, start code, 2-byte width, 2-byte height.
const VP8_KEYFRAME_HEADER_LEN: usize = 10;
/// VP8 payload header of an interframe: the 3-byte frame tag.
const VP8_INTERFRAME_HEADER_LEN: usize = 3;

/// Nanoseconds since one process-wide instant: publishers stamp with it, subscribers compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaClock {
    epoch: Instant,
}

impl MediaClock {
    /// A clock whose zero is `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self { epoch }
    }

    /// `at` in ns since the epoch (0 for instants before it).
    pub fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The instant `ns` after the epoch.
    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

/// What every load-generator payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Which stream (publisher and layer) the packet belongs to.
    pub stream: u32,
    /// Per-stream packet counter, from 0, one per packet sent.
    pub counter: u64,
    /// Send time, ns on the [`MediaClock`].
    pub sent_ns: u64,
}

impl Marker {
    /// Writes the marker into the first [`MARKER_LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`MARKER_LEN`] (the sources always leave room).
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MARKER_MAGIC);
        out[4..8].copy_from_slice(&self.stream.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
        out[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// The marker at the start of `data`, if it is one.
    pub fn read(data: &[u8]) -> Option<Self> {
        let m = data.get(..MARKER_LEN)?;
        if m[..4] != MARKER_MAGIC {
            return None;
        }
        Some(Self {
            stream: u32::from_be_bytes(m[4..8].try_into().ok()?),
            counter: u64::from_be_bytes(m[8..16].try_into().ok()?),
            sent_ns: u64::from_be_bytes(m[16..24].try_into().ok()?),
        })
    }
}

/// Length of the VP8 payload descriptor at the start of `payload` and whether the packet starts
/// a frame (S = 1, PID = 0); `None` if it is truncated.
pub fn vp8_descriptor_len(payload: &[u8]) -> Option<(usize, bool)> {
    let first = *payload.first()?;
    let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
    let mut len = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        len += 1;
        if ext & 0x80 != 0 {
            len += if *payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            len += 1;
        }
        if ext & 0x30 != 0 {
            len += 1;
        }
    }
    (payload.len() >= len).then_some((len, starts_frame))
}

/// The marker of a load-generator payload: at offset 0 (audio), or after the VP8 payload
/// descriptor and, on a frame's first packet, the VP8 payload header (10 bytes on a keyframe,
/// 3 otherwise). `None` for anything else.
pub fn find_marker(payload: &[u8]) -> Option<Marker> {
    if let Some(m) = Marker::read(payload) {
        return Some(m);
    }
    let (len, starts_frame) = vp8_descriptor_len(payload)?;
    let mut at = len;
    if starts_frame {
        let tag = *payload.get(at)?;
        at += if tag & 0x01 == 0 {
            VP8_KEYFRAME_HEADER_LEN
        } else {
            VP8_INTERFRAME_HEADER_LEN
        };
    }
    Marker::read(payload.get(at..)?)
}

/// One packet ready to send: the session turns it into RTP (SSRC, payload type, extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// Index of the layer within its source (0 for audio and single-layer video).
    pub layer: usize,
    pub sequence: u16,
    pub timestamp: u32,
    /// RTP marker bit: last packet of a video frame (always set for audio).
    pub marker: bool,
    pub payload: Vec<u8>,
    /// First packet of a keyframe.
    pub keyframe: bool,
}

/// Opus-sized audio: one packet every 20 ms.
#[derive(Debug)]
pub struct AudioSource {
    clock: MediaClock,
    stream: u32,
    payload_len: usize,
    next_at: Instant,
    counter: u64,
    sequence: u16,
    timestamp: u32,
}

impl AudioSource {
    /// `bitrate_bps` sets the payload size (bitrate × 20 ms, at least the marker); the first
    /// packet is due at `start`.
    pub fn new(clock: MediaClock, stream: u32, bitrate_bps: u32, start: Instant) -> Self {
        let payload_len = (bitrate_bps as usize / 8 / 50).max(MARKER_LEN);
        Self {
            clock,
            stream,
            payload_len,
            next_at: start,
            counter: 0,
            sequence: rand::random(),
            timestamp: rand::random(),
        }
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        self.next_at
    }

    /// Appends the packets due at `now` (at most a few if the caller was late; the schedule does
    /// not drift), stamped with `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<MediaPacket>) {
        let step = AUDIO_CLOCK_RATE / 50;
        while self.next_at <= now {
            let mut payload = vec![0u8; self.payload_len];
            Marker {
                stream: self.stream,
                counter: self.counter,
                sent_ns: self.clock.ns(now),
            }
            .write(&mut payload);
            out.push(MediaPacket {
                layer: 0,
                sequence: self.sequence,
                timestamp: self.timestamp,
                marker: true,
                payload,
                keyframe: false,
            });
            self.counter += 1;
            self.sequence = self.sequence.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(step);
            self.next_at += AUDIO_PTIME;
        }
    }
}

/// One video layer of a [`VideoSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoLayerSpec {
    /// RID (`q`, `h`, `f`) for simulcast; `None` for a single-layer track.
    pub rid: Option<String>,
    pub bitrate_bps: u32,
    /// Advertised frame size in the keyframe header.
    pub width: u16,
    pub height: u16,
}

impl VideoLayerSpec {
    /// One layer without RID.
    pub fn single(bitrate_bps: u32) -> Vec<Self> {
        vec![Self {
            rid: None,
            bitrate_bps,
            width: 1280,
            height: 720,
        }]
    }

    /// Three simulcast layers `q`, `h`, `f` (lowest first), as browsers send them.
    pub fn simulcast(q_bps: u32, h_bps: u32, f_bps: u32) -> Vec<Self> {
        [
            ("q", q_bps, 320, 180),
            ("h", h_bps, 640, 360),
            ("f", f_bps, 1280, 720),
        ]
        .into_iter()
        .map(|(rid, bitrate_bps, width, height)| Self {
            rid: Some(rid.to_owned()),
            bitrate_bps,
            width,
            height,
        })
        .collect()
    }
}

/// Video source settings.
#[derive(Debug, Clone)]
pub struct VideoConfig {
    pub layers: Vec<VideoLayerSpec>,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub max_payload: usize,
}

impl VideoConfig {
    /// One layer at `bitrate_bps`, 30 fps, a keyframe every 3 s.
    pub fn single(bitrate_bps: u32) -> Self {
        Self {
            layers: VideoLayerSpec::single(bitrate_bps),
            fps: 30,
            keyframe_interval: Duration::from_secs(3),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

#[derive(Debug)]
struct LayerState {
    spec: VideoLayerSpec,
    stream: u32,
    counter: u64,
    sequence: u16,
    picture_id: u16,
    tl0picidx: u8,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
}

/// A packet built at frame time and sent at its paced time.
#[derive(Debug)]
struct Queued {
    due: Instant,
    layer: usize,
    packet: MediaPacket,
    /// Where the marker goes in the payload.
    marker_at: usize,
}

/// VP8 video, one or more simulcast layers, paced.
#[derive(Debug)]
pub struct VideoSource {
    clock: MediaClock,
    layers: Vec<LayerState>,
    fps: u32,
    keyframe_interval: Duration,
    max_payload: usize,
    frame_no: u64,
    start: Instant,
    timestamp_base: u32,
    /// Packets of the frames built so far, in due order.
    queue: std::collections::VecDeque<Queued>,
}

impl VideoSource {
    /// Layer `i` gets stream id `first_stream + i`; the first frame is due at `start`.
    pub fn new(clock: MediaClock, first_stream: u32, config: &VideoConfig, start: Instant) -> Self {
        let layers = config
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| LayerState {
                spec: spec.clone(),
                stream: first_stream + i as u32,
                counter: 0,
                sequence: rand::random(),
                picture_id: rand::random::<u16>() & 0x7fff,
                tl0picidx: rand::random(),
                keyframe_wanted: true,
                last_keyframe: None,
            })
            .collect();
        Self {
            clock,
            layers,
            fps: config.fps.max(1),
            keyframe_interval: config.keyframe_interval,
            max_payload: config
                .max_payload
                .max(VP8_DESCRIPTOR_LEN + VP8_KEYFRAME_HEADER_LEN + MARKER_LEN + 1),
            frame_no: 0,
            start,
            timestamp_base: rand::random(),
            queue: std::collections::VecDeque::new(),
        }
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The stream id of layer `layer`.
    pub fn stream_of(&self, layer: usize) -> Option<u32> {
        self.layers.get(layer).map(|l| l.stream)
    }

    /// The next frame of `layer` (every layer when `None`) is a keyframe.
    pub fn request_keyframe(&mut self, layer: Option<usize>) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            if layer.is_none_or(|want| want == i) {
                l.keyframe_wanted = true;
            }
        }
    }

    fn frame_time(&self, n: u64) -> Instant {
        self.start + Duration::from_nanos(n * 1_000_000_000 / u64::from(self.fps))
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        match self.queue.front() {
            Some(q) => q.due,
            None => self.frame_time(self.frame_no),
        }
    }

    /// Appends the packets due at `now`, stamped with `now`: frames whose time has come are
    /// built and their packets queued at paced times first.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<MediaPacket>) {
        while self.frame_time(self.frame_no) <= now {
            let at = self.frame_time(self.frame_no);
            self.build_frame(at);
            self.frame_no += 1;
        }
        let sent_ns = self.clock.ns(now);
        while self.queue.front().is_some_and(|q| q.due <= now) {
            let Some(mut q) = self.queue.pop_front() else {
                break;
            };
            let layer = &mut self.layers[q.layer];
            Marker {
                stream: layer.stream,
                counter: layer.counter,
                sent_ns,
            }
            .write(&mut q.packet.payload[q.marker_at..]);
            layer.counter += 1;
            out.push(q.packet);
        }
    }

    /// Bytes of a delta frame and of a keyframe of `layer` such that, over one keyframe
    /// interval, the layer averages its bitrate.
    fn frame_sizes(&self, layer: &LayerState) -> (usize, usize) {
        let per_frame = f64::from(layer.spec.bitrate_bps) / 8.0 / f64::from(self.fps);
        let frames = (self.keyframe_interval.as_secs_f64() * f64::from(self.fps)).max(1.0);
        let k = f64::from(KEYFRAME_SIZE_FACTOR);
        let delta = frames * per_frame / (k + frames - 1.0);
        (delta.max(1.0) as usize, (delta * k).max(1.0) as usize)
    }

    fn build_frame(&mut self, at: Instant) {
        let timestamp = self.timestamp_base.wrapping_add(
            (self.frame_no * u64::from(VIDEO_CLOCK_RATE) / u64::from(self.fps)) as u32,
        );
        let mut built: Vec<Queued> = Vec::new();
        for index in 0..self.layers.len() {
            let (delta_len, key_len) = self.frame_sizes(&self.layers[index]);
            let layer = &mut self.layers[index];
            let keyframe = layer.keyframe_wanted
                || layer
                    .last_keyframe
                    .is_none_or(|t| at.saturating_duration_since(t) >= self.keyframe_interval);
            if keyframe {
                layer.keyframe_wanted = false;
                layer.last_keyframe = Some(at);
            }
            layer.picture_id = (layer.picture_id + 1) & 0x7fff;
            layer.tl0picidx = layer.tl0picidx.wrapping_add(1);
            let frame_len = if keyframe { key_len } else { delta_len };
            let header_len = if keyframe {
                VP8_KEYFRAME_HEADER_LEN
            } else {
                VP8_INTERFRAME_HEADER_LEN
            };
            // Room for the VP8 frame bytes in one packet after descriptor and marker.
            let room = self.max_payload - VP8_DESCRIPTOR_LEN - MARKER_LEN;
            let body = frame_len.max(header_len + 1);
            let count = body.div_ceil(room).max(1);
            let mut left = body;
            for i in 0..count {
                let first = i == 0;
                // Frame bytes in this packet; the first packet's include the VP8 payload header.
                let chunk = left.min(room);
                left -= chunk;
                let mut payload = vec![0u8; VP8_DESCRIPTOR_LEN + MARKER_LEN + chunk];
                write_vp8_descriptor(&mut payload, first, layer.picture_id, layer.tl0picidx);
                let mut marker_at = VP8_DESCRIPTOR_LEN;
                if first {
                    write_vp8_header(
                        &mut payload[VP8_DESCRIPTOR_LEN..],
                        keyframe,
                        frame_len,
                        layer.spec.width,
                        layer.spec.height,
                    );
                    marker_at += header_len;
                }
                built.push(Queued {
                    due: at,
                    layer: index,
                    packet: MediaPacket {
                        layer: index,
                        sequence: layer.sequence,
                        timestamp,
                        marker: i + 1 == count,
                        payload,
                        keyframe: keyframe && first,
                    },
                    marker_at,
                });
                layer.sequence = layer.sequence.wrapping_add(1);
            }
        }
        // Interleave the layers' packets and spread them evenly over the pacing window (at most
        // the frame interval); each layer keeps its own order.
        let n = built.len() as u32;
        let window = PACING_WINDOW.min(Duration::from_secs(1) / self.fps);
        let gap = if n > 1 { window / n } else { Duration::ZERO };
        let mut per_layer: Vec<std::collections::VecDeque<Queued>> =
            (0..self.layers.len()).map(|_| Default::default()).collect();
        for q in built {
            per_layer[q.layer].push_back(q);
        }
        let mut slot = 0u32;
        while per_layer.iter().any(|l| !l.is_empty()) {
            for layer in per_layer.iter_mut() {
                if let Some(mut q) = layer.pop_front() {
                    q.due = at + gap * slot;
                    slot += 1;
                    self.queue.push_back(q);
                }
            }
        }
    }
}

/// VP8 payload descriptor: X = 1, S and PID = 0 on a frame's first packet; I (M = 1, 15-bit
/// picture id), L (TL0PICIDX), T (TID = 0, Y = 1).
fn write_vp8_descriptor(out: &mut [u8], first: bool, picture_id: u16, tl0picidx: u8) {
    out[0] = 0x80 | if first { 0x10 } else { 0 };
    out[1] = 0x80 | 0x40 | 0x20;
    out[2] = 0x80 | (picture_id >> 8) as u8;
    out[3] = picture_id as u8;
    out[4] = tl0picidx;
    out[5] = 0x20; // TID 0, Y = 1, KEYIDX 0
}

/// VP8 payload header (RFC 6386 §9.1): frame tag (P = 0 keyframe / 1 interframe, version 0,
/// show_frame = 1, first partition size), and on keyframes the start code and the frame size.
fn write_vp8_header(out: &mut [u8], keyframe: bool, frame_len: usize, width: u16, height: u16) {
    let partition = (frame_len as u32 / 4).min((1 << 19) - 1);
    let tag = u32::from(!keyframe) | (1 << 4) | (partition << 5);
    out[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        out[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        out[6..8].copy_from_slice(&(width & 0x3fff).to_le_bytes());
        out[8..10].copy_from_slice(&(height & 0x3fff).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaskade_mesh::core::vp8_descriptor;
    use std::collections::HashMap;

    /// Runs `poll` every `step` for `seconds` and returns what came out, with the poll instant.
    fn run_video(
        source: &mut VideoSource,
        start: Instant,
        seconds: u64,
        step: Duration,
    ) -> Vec<(Instant, MediaPacket)> {
        let mut all = Vec::new();
        let mut out = Vec::new();
        let mut now = start;
        while now < start + Duration::from_secs(seconds) {
            source.poll(now, &mut out);
            all.extend(out.drain(..).map(|p| (now, p)));
            now += step;
        }
        all
    }

    #[test]
    fn markers_round_trip_and_reject_foreign_bytes() {
        let m = Marker {
            stream: 7,
            counter: 1 << 40,
            sent_ns: 123_456_789,
        };
        let mut buf = [0u8; MARKER_LEN + 3];
        m.write(&mut buf);
        assert_eq!(Marker::read(&buf), Some(m));
        assert_eq!(find_marker(&buf), Some(m), "audio: marker at offset 0");
        assert_eq!(Marker::read(&buf[..MARKER_LEN - 1]), None);
        buf[0] = b'X';
        assert_eq!(Marker::read(&buf), None);
        assert_eq!(find_marker(&[]), None);
        assert_eq!(find_marker(&[0x90, 0x80]), None, "truncated descriptor");
    }

    #[test]
    fn the_clock_converts_both_ways() {
        let epoch = Instant::now();
        let clock = MediaClock::new(epoch);
        let at = epoch + Duration::from_micros(1500);
        assert_eq!(clock.ns(at), 1_500_000);
        assert_eq!(clock.instant(1_500_000), at);
        assert_eq!(
            clock.ns(epoch - Duration::from_millis(1).min(epoch.elapsed())),
            0
        );
    }

    #[test]
    fn audio_is_fifty_opus_sized_packets_a_second() {
        let start = Instant::now();
        let clock = MediaClock::new(start);
        let mut audio = AudioSource::new(clock, 3, 48_000, start);
        let mut out = Vec::new();
        // Polled late: the schedule catches up without drifting.
        audio.poll(start + Duration::from_millis(1000), &mut out);
        assert_eq!(out.len(), 51, "packets at 0, 20, …, 1000 ms");
        assert!(out.iter().all(|p| p.payload.len() == 120 && p.marker));
        for (i, pair) in out.windows(2).enumerate() {
            assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
            assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(960));
            assert_eq!(find_marker(&pair[1].payload).unwrap().counter, i as u64 + 1);
        }
        let m = find_marker(&out[0].payload).unwrap();
        assert_eq!((m.stream, m.counter, m.sent_ns), (3, 0, 1_000_000_000));
        assert_eq!(audio.next_due(), start + Duration::from_millis(1020));
    }

    #[test]
    fn video_hits_its_bitrate_with_bounded_packets_and_sfu_readable_headers() {
        let start = Instant::now();
        let clock = MediaClock::new(start);
        let config = VideoConfig::single(1_000_000);
        let mut video = VideoSource::new(clock, 10, &config, start);
        let sent = run_video(&mut video, start, 9, Duration::from_micros(250));
        let bytes: usize = sent.iter().map(|(_, p)| p.payload.len()).sum();
        let bps = bytes as f64 * 8.0 / 9.0;
        assert!((0.95e6..1.1e6).contains(&bps), "{bps} bit/s");
        assert!(
            sent.iter()
                .all(|(_, p)| p.payload.len() <= DEFAULT_MAX_PAYLOAD)
        );
        let frames = sent.iter().filter(|(_, p)| p.marker).count();
        assert_eq!(frames, 270, "30 fps");
        let keyframes: Vec<Instant> = sent
            .iter()
            .filter(|(_, p)| p.keyframe)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(keyframes.len(), 3, "one at start, then every 3 s");
        let mut last_picture = None;
        for (i, (at, p)) in sent.iter().enumerate() {
            // The SFU's own parser agrees on keyframes and finds the picture id.
            let d = vp8_descriptor(&p.payload).expect("descriptor parses");
            assert_eq!(d.is_keyframe, p.keyframe, "packet {i}");
            assert_eq!(d.header_len, VP8_DESCRIPTOR_LEN);
            assert_eq!(d.temporal_id, Some(0));
            if d.start_of_partition {
                if let Some(prev) = last_picture {
                    assert_eq!(d.picture_id, Some((prev + 1) & 0x7fff));
                }
                last_picture = d.picture_id;
            }
            let m = find_marker(&p.payload).expect("marker after the VP8 headers");
            assert_eq!((m.stream, m.counter), (10, i as u64));
            assert_eq!(m.sent_ns, clock.ns(*at), "stamped when polled");
        }
        let first = &sent[0].1.payload;
        assert_eq!(
            &first[VP8_DESCRIPTOR_LEN + 3..VP8_DESCRIPTOR_LEN + 6],
            &[0x9d, 0x01, 0x2a]
        );
    }

    #[test]
    fn a_frame_is_paced_not_burst() {
        let start = Instant::now();
        let mut video = VideoSource::new(
            MediaClock::new(start),
            0,
            &VideoConfig::single(2_000_000),
            start,
        );
        let mut out = Vec::new();
        video.poll(start, &mut out);
        assert_eq!(
            out.len(),
            1,
            "only the first packet of the keyframe is due at frame time"
        );
        let next = video.next_due();
        assert!(
            next > start && next <= start + PACING_WINDOW,
            "{:?}",
            next - start
        );
        video.poll(start + PACING_WINDOW, &mut out);
        assert!(
            out.len() > 5 && out.last().unwrap().marker,
            "the whole keyframe went out within the window"
        );
        let sent = run_video(
            &mut video,
            start + Duration::from_millis(10),
            2,
            Duration::from_micros(100),
        );
        // Packets of one frame leave at distinct instants.
        let mut by_time: HashMap<Instant, usize> = HashMap::new();
        for (t, _) in &sent {
            *by_time.entry(*t).or_default() += 1;
        }
        assert!(
            by_time.values().all(|n| *n == 1),
            "two packets in the same poll"
        );
    }

    #[test]
    fn a_keyframe_request_is_answered_at_the_next_frame_of_that_layer() {
        let start = Instant::now();
        let config = VideoConfig {
            layers: VideoLayerSpec::simulcast(150_000, 500_000, 1_500_000),
            ..VideoConfig::single(0)
        };
        let mut video = VideoSource::new(MediaClock::new(start), 20, &config, start);
        assert_eq!((video.layer_count(), video.stream_of(2)), (3, Some(22)));
        let sent = run_video(&mut video, start, 1, Duration::from_millis(1));
        assert_eq!(
            sent.iter().filter(|(_, p)| p.keyframe).count(),
            3,
            "each layer starts with one"
        );
        video.request_keyframe(Some(1));
        let sent = run_video(
            &mut video,
            start + Duration::from_secs(1),
            1,
            Duration::from_millis(1),
        );
        let keys: Vec<usize> = sent
            .iter()
            .filter(|(_, p)| p.keyframe)
            .map(|(_, p)| p.layer)
            .collect();
        assert_eq!(keys, vec![1]);
        // Each layer has its own stream, sequence and counter, and ends every frame with the marker bit.
        for layer in 0..3 {
            let mine: Vec<&MediaPacket> = sent
                .iter()
                .map(|(_, p)| p)
                .filter(|p| p.layer == layer)
                .collect();
            assert_eq!(mine.iter().filter(|p| p.marker).count(), 30);
            for pair in mine.windows(2) {
                assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
                let (a, b) = (
                    find_marker(&pair[0].payload).unwrap(),
                    find_marker(&pair[1].payload).unwrap(),
                );
                assert_eq!((b.stream, b.counter), (20 + layer as u32, a.counter + 1));
            }
        }
        let high: usize = sent
            .iter()
            .filter(|(_, p)| p.layer == 2)
            .map(|(_, p)| p.payload.len())
            .sum();
        let low: usize = sent
            .iter()
            .filter(|(_, p)| p.layer == 0)
            .map(|(_, p)| p.payload.len())
            .sum();
        assert!(high > 5 * low, "f carries about 10× q: {high} vs {low}");
    }
}
