//! Test-only helpers for the forwarding core: a tiny deterministic PRNG for garbage-input tests
//! and builders that craft real VP8 and H.264 RTP payload bytes.

/// Deterministic xorshift64 generator; good enough to produce garbage payloads.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Builder for a VP8 RTP payload: descriptor (RFC 7741 §4.2) followed by a VP8 frame header.
#[derive(Clone)]
pub struct Vp8Packet {
    start: bool,
    partition: u8,
    non_reference: bool,
    picture_id: Option<(u16, bool)>,
    tl0picidx: Option<u8>,
    temporal: Option<(u8, bool)>,
    key_index: Option<u8>,
    keyframe: bool,
}

impl Vp8Packet {
    /// The first packet of a keyframe with no descriptor extensions.
    pub fn keyframe_start() -> Self {
        Self {
            start: true,
            partition: 0,
            non_reference: false,
            picture_id: None,
            tl0picidx: None,
            temporal: None,
            key_index: None,
            keyframe: true,
        }
    }

    pub fn interframe(mut self) -> Self {
        self.keyframe = false;
        self
    }

    pub fn start(mut self, start: bool) -> Self {
        self.start = start;
        self
    }

    pub fn partition(mut self, partition: u8) -> Self {
        self.partition = partition;
        self
    }

    pub fn non_reference(mut self) -> Self {
        self.non_reference = true;
        self
    }

    pub fn picture_id7(mut self, id: u16) -> Self {
        self.picture_id = Some((id & 0x7f, false));
        self
    }

    pub fn picture_id15(mut self, id: u16) -> Self {
        self.picture_id = Some((id & 0x7fff, true));
        self
    }

    pub fn tl0picidx(mut self, value: u8) -> Self {
        self.tl0picidx = Some(value);
        self
    }

    pub fn temporal(mut self, tid: u8, layer_sync: bool) -> Self {
        self.temporal = Some((tid, layer_sync));
        self
    }

    pub fn key_index(mut self, key_index: u8) -> Self {
        self.key_index = Some(key_index);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let has_extensions = self.picture_id.is_some()
            || self.tl0picidx.is_some()
            || self.temporal.is_some()
            || self.key_index.is_some();
        let mut first = self.partition & 0x07;
        if has_extensions {
            first |= 0x80;
        }
        if self.non_reference {
            first |= 0x20;
        }
        if self.start {
            first |= 0x10;
        }
        let mut out = vec![first];
        if has_extensions {
            let mut ext = 0u8;
            if self.picture_id.is_some() {
                ext |= 0x80;
            }
            if self.tl0picidx.is_some() {
                ext |= 0x40;
            }
            if self.temporal.is_some() {
                ext |= 0x20;
            }
            if self.key_index.is_some() {
                ext |= 0x10;
            }
            out.push(ext);
            match self.picture_id {
                Some((id, true)) => {
                    out.push(0x80 | (id >> 8) as u8);
                    out.push(id as u8);
                }
                Some((id, false)) => out.push(id as u8),
                None => {}
            }
            if let Some(tl0) = self.tl0picidx {
                out.push(tl0);
            }
            if self.temporal.is_some() || self.key_index.is_some() {
                let mut byte = 0u8;
                if let Some((tid, sync)) = self.temporal {
                    byte |= tid << 6;
                    if sync {
                        byte |= 0x20;
                    }
                }
                if let Some(key_index) = self.key_index {
                    byte |= key_index & 0x1f;
                }
                out.push(byte);
            }
        }
        if self.keyframe {
            // Frame tag (P=0, version 0, show_frame=1), start code, 640x480.
            out.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        } else {
            // Frame tag with P=1, then some compressed data.
            out.extend_from_slice(&[0x11, 0x02, 0x00, 0xaa, 0xbb]);
        }
        out
    }
}

/// An H.264 NAL unit header byte with NRI = 3 and the given type.
pub fn h264_nal_header(nal_type: u8) -> u8 {
    0x60 | (nal_type & 0x1f)
}

/// A single-NAL-unit packet of the given type with a few bytes of body.
pub fn h264_single(nal_type: u8) -> Vec<u8> {
    vec![h264_nal_header(nal_type), 0x88, 0x84, 0x00]
}

/// A STAP-A packet aggregating one small NAL unit per given type.
pub fn h264_stap_a(nal_types: &[u8]) -> Vec<u8> {
    let mut out = vec![h264_nal_header(24)];
    for &nal_type in nal_types {
        let nal = [h264_nal_header(nal_type), 0x42, 0x00, 0x1f];
        out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        out.extend_from_slice(&nal);
    }
    out
}

/// An FU-A fragment of a NAL unit of `inner_type`.
pub fn h264_fu_a(start: bool, end: bool, inner_type: u8) -> Vec<u8> {
    let mut fu_header = inner_type & 0x1f;
    if start {
        fu_header |= 0x80;
    }
    if end {
        fu_header |= 0x40;
    }
    vec![h264_nal_header(28), fu_header, 0x88, 0x84]
}
