//! Parsing of the VP8 RTP payload descriptor (RFC 7741 §4.2) and the keyframe bit of the VP8
//! payload header (RFC 7741 §4.3).
//!
//! Owns [`Vp8Descriptor`] and [`vp8_descriptor`]. The parser is total: truncated or garbage
//! input returns `None`, never panics. Field byte offsets are kept (crate-internal) so the
//! picture-id rewriter can patch them in place.

/// Width of a VP8 picture id as carried in the packet (M bit of the descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PictureIdWidth {
    /// M = 0: one byte, wraps at 128.
    Bits7,
    /// M = 1: two bytes, wraps at 32768.
    Bits15,
}

impl PictureIdWidth {
    /// Number of distinct picture ids of this width (128 or 32768).
    pub fn modulus(self) -> u16 {
        match self {
            Self::Bits7 => 1 << 7,
            Self::Bits15 => 1 << 15,
        }
    }

    /// Bit mask selecting a picture id of this width.
    pub fn mask(self) -> u16 {
        self.modulus() - 1
    }
}

/// The parsed VP8 payload descriptor of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N bit: the frame can be discarded without affecting others.
    pub non_reference: bool,
    /// S bit: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID field: the partition index (0..=7).
    pub partition_id: u8,
    /// Picture id, if the I bit is set; its width is in `picture_id_width`.
    pub picture_id: Option<u16>,
    /// Width of `picture_id`; `Some` exactly when `picture_id` is.
    pub picture_id_width: Option<PictureIdWidth>,
    /// TL0PICIDX, if the L bit is set.
    pub tl0picidx: Option<u8>,
    /// Temporal layer index, if the T bit is set.
    pub temporal_id: Option<u8>,
    /// Y bit (layer sync); only meaningful when `temporal_id` is `Some`.
    pub layer_sync: bool,
    /// KEYIDX, if the K bit is set.
    pub key_index: Option<u8>,
    /// This packet is the first packet of a keyframe: S = 1, PID = 0 and the VP8 payload
    /// header that follows the descriptor has P = 0.
    pub is_keyframe: bool,
    /// Length of the payload descriptor in bytes; the VP8 payload starts at this offset.
    pub header_len: usize,
    /// Byte offset of the picture id field, if present.
    pub(crate) picture_id_offset: Option<usize>,
    /// Byte offset of the TL0PICIDX field, if present.
    pub(crate) tl0picidx_offset: Option<usize>,
}

const X_BIT: u8 = 0x80;
const N_BIT: u8 = 0x20;
const S_BIT: u8 = 0x10;
const PID_MASK: u8 = 0x07;
const I_BIT: u8 = 0x80;
const L_BIT: u8 = 0x40;
const T_BIT: u8 = 0x20;
const K_BIT: u8 = 0x10;
const M_BIT: u8 = 0x80;
/// P bit of the first VP8 payload header byte: 0 = keyframe, 1 = interframe.
const INTERFRAME_BIT: u8 = 0x01;

/// Parses the VP8 payload descriptor at the start of `payload`. Returns `None` if the
/// descriptor is truncated.
pub fn vp8_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let start_of_partition = first & S_BIT != 0;
    let partition_id = first & PID_MASK;
    let mut descriptor = Vp8Descriptor {
        non_reference: first & N_BIT != 0,
        start_of_partition,
        partition_id,
        picture_id: None,
        picture_id_width: None,
        tl0picidx: None,
        temporal_id: None,
        layer_sync: false,
        key_index: None,
        is_keyframe: false,
        header_len: 1,
        picture_id_offset: None,
        tl0picidx_offset: None,
    };
    let mut at = 1;
    if first & X_BIT != 0 {
        let extensions = *payload.get(at)?;
        at += 1;
        if extensions & I_BIT != 0 {
            let high = *payload.get(at)?;
            descriptor.picture_id_offset = Some(at);
            if high & M_BIT != 0 {
                let low = *payload.get(at + 1)?;
                descriptor.picture_id = Some(u16::from(high & !M_BIT) << 8 | u16::from(low));
                descriptor.picture_id_width = Some(PictureIdWidth::Bits15);
                at += 2;
            } else {
                descriptor.picture_id = Some(u16::from(high));
                descriptor.picture_id_width = Some(PictureIdWidth::Bits7);
                at += 1;
            }
        }
        if extensions & L_BIT != 0 {
            descriptor.tl0picidx = Some(*payload.get(at)?);
            descriptor.tl0picidx_offset = Some(at);
            at += 1;
        }
        let has_t = extensions & T_BIT != 0;
        let has_k = extensions & K_BIT != 0;
        if has_t || has_k {
            let byte = *payload.get(at)?;
            if has_t {
                descriptor.temporal_id = Some(byte >> 6);
                descriptor.layer_sync = byte & 0x20 != 0;
            }
            if has_k {
                descriptor.key_index = Some(byte & 0x1f);
            }
            at += 1;
        }
    }
    descriptor.header_len = at;
    descriptor.is_keyframe = start_of_partition
        && partition_id == 0
        && payload
            .get(at)
            .is_some_and(|header| header & INTERFRAME_BIT == 0);
    Some(descriptor)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Vp8Packet, XorShift};
    use super::*;

    #[test]
    fn minimal_keyframe_start() {
        let d = vp8_descriptor(&[0x10, 0x00, 0x00, 0x00]).expect("parses");
        assert!(d.start_of_partition);
        assert_eq!(d.partition_id, 0);
        assert!(d.is_keyframe);
        assert_eq!(d.header_len, 1);
        assert_eq!(d.picture_id, None);
        assert_eq!(d.tl0picidx, None);
    }

    #[test]
    fn interframe_is_not_keyframe() {
        let bytes = Vp8Packet::keyframe_start().interframe().build();
        let d = vp8_descriptor(&bytes).expect("parses");
        assert!(d.start_of_partition);
        assert!(!d.is_keyframe);
    }

    #[test]
    fn keyframe_requires_start_and_partition_zero() {
        let not_start = Vp8Packet::keyframe_start().start(false).build();
        assert!(!vp8_descriptor(&not_start).expect("parses").is_keyframe);
        let partition_one = Vp8Packet::keyframe_start().partition(1).build();
        let d = vp8_descriptor(&partition_one).expect("parses");
        assert_eq!(d.partition_id, 1);
        assert!(!d.is_keyframe);
    }

    #[test]
    fn keyframe_requires_payload_header_byte() {
        let d = vp8_descriptor(&[0x10]).expect("descriptor alone parses");
        assert!(!d.is_keyframe);
    }

    #[test]
    fn seven_bit_picture_id() {
        let bytes = Vp8Packet::keyframe_start().picture_id7(0x55).build();
        let d = vp8_descriptor(&bytes).expect("parses");
        assert_eq!(d.picture_id, Some(0x55));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits7));
        assert_eq!(d.header_len, 3);
        assert!(d.is_keyframe);
    }

    #[test]
    fn fifteen_bit_picture_id_with_all_extensions() {
        let bytes = Vp8Packet::keyframe_start()
            .picture_id15(0x1234)
            .tl0picidx(200)
            .temporal(2, true)
            .key_index(17)
            .build();
        let d = vp8_descriptor(&bytes).expect("parses");
        assert_eq!(d.picture_id, Some(0x1234));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits15));
        assert_eq!(d.tl0picidx, Some(200));
        assert_eq!(d.temporal_id, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.key_index, Some(17));
        assert_eq!(d.header_len, 6);
        assert_eq!(d.picture_id_offset, Some(2));
        assert_eq!(d.tl0picidx_offset, Some(4));
        assert!(d.is_keyframe);
    }

    #[test]
    fn key_index_without_temporal_id() {
        let bytes = Vp8Packet::keyframe_start().key_index(3).build();
        let d = vp8_descriptor(&bytes).expect("parses");
        assert_eq!(d.temporal_id, None);
        assert_eq!(d.key_index, Some(3));
        assert_eq!(d.header_len, 3);
    }

    #[test]
    fn non_reference_bit() {
        let bytes = Vp8Packet::keyframe_start().non_reference().build();
        assert!(vp8_descriptor(&bytes).expect("parses").non_reference);
    }

    #[test]
    fn every_truncation_of_a_full_descriptor_is_handled() {
        let bytes = Vp8Packet::keyframe_start()
            .picture_id15(0x7fff)
            .tl0picidx(1)
            .temporal(1, false)
            .key_index(1)
            .build();
        let header_len = 6;
        for len in 0..header_len {
            assert_eq!(vp8_descriptor(&bytes[..len]), None, "len {len}");
        }
        let d = vp8_descriptor(&bytes[..header_len]).expect("descriptor complete");
        assert!(!d.is_keyframe, "payload header missing");
        assert!(
            vp8_descriptor(&bytes)
                .expect("full packet parses")
                .is_keyframe
        );
    }

    #[test]
    fn garbage_never_panics_and_header_len_is_in_bounds() {
        let mut rng = XorShift::new(7);
        for _ in 0..50_000 {
            let len = (rng.next() % 10) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(d) = vp8_descriptor(&bytes) {
                assert!(d.header_len <= bytes.len());
            }
        }
    }
}
