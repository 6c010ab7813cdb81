//! Picture-id and TL0PICIDX continuity for forwarded VP8 streams.
//!
//! Owns [`Vp8PictureIdRewriter`]: one per (subscriber, outgoing VP8 track). When the forwarded
//! source changes (a simulcast layer switch), the new source's picture ids and TL0PICIDX values
//! are shifted so they continue from the last forwarded values, and the receiver's decoder sees
//! no jump. The rewrite patches the payload descriptor in place and keeps each packet's
//! picture-id width (7 or 15 bits).

use std::collections::VecDeque;

use super::vp8_descriptor::{PictureIdWidth, Vp8Descriptor, vp8_descriptor};

/// All picture-id arithmetic happens modulo 2^15; 7-bit ids are the low 7 bits of that space.
const PICTURE_ID_SPACE_MASK: u16 = 0x7fff;
const M_BIT: u8 = 0x80;
/// How many source epochs (the current one included) are remembered for retransmissions.
pub const VP8_EPOCH_HISTORY: usize = 4;

/// One run of forwarded packets from a single source, with the shifts applied to it.
#[derive(Debug, Clone)]
struct SourceEpoch {
    source_ssrc: u32,
    /// Added to the source's picture ids (mod 2^15); fixed at its first picture id.
    picture_id_offset: Option<u16>,
    /// The source picture id the offset was fixed at.
    first_picture_id: Option<u16>,
    /// Added to the source's TL0PICIDX (mod 2^8); fixed at its first TL0PICIDX.
    tl0picidx_offset: Option<u8>,
    /// The source TL0PICIDX the offset was fixed at.
    first_tl0picidx: Option<u8>,
}

impl SourceEpoch {
    fn new(source_ssrc: u32) -> Self {
        Self {
            source_ssrc,
            picture_id_offset: None,
            first_picture_id: None,
            tl0picidx_offset: None,
            first_tl0picidx: None,
        }
    }

    /// Whether a packet with these ids can belong to this epoch (its ids are not older than the
    /// ones the epoch started with).
    fn may_contain(&self, descriptor: &Vp8Descriptor) -> bool {
        let picture_id_ok = match (
            descriptor.picture_id,
            descriptor.picture_id_width,
            self.first_picture_id,
        ) {
            (Some(id), Some(width), Some(first)) => {
                id.wrapping_sub(first) & width.mask() < width.modulus() / 2
            }
            _ => true,
        };
        // TL0PICIDX is 8 bits and wraps within seconds: it decides only without a picture id
        // (which wraps after minutes), else an epoch older than ~128 base frames would look
        // as if it could not hold its own packets.
        if descriptor.picture_id.is_some() && self.first_picture_id.is_some() {
            return picture_id_ok;
        }
        let tl0picidx_ok = match (descriptor.tl0picidx, self.first_tl0picidx) {
            (Some(tl0), Some(first)) => tl0.wrapping_sub(first) as i8 >= 0,
            _ => true,
        };
        picture_id_ok && tl0picidx_ok
    }
}

/// Rewrites VP8 picture ids and TL0PICIDX so they stay continuous across source switches.
#[derive(Debug, Clone, Default)]
pub struct Vp8PictureIdRewriter {
    /// Newest epoch last; the back is the source currently being rewritten.
    epochs: VecDeque<SourceEpoch>,
    /// Newest picture id forwarded so far, in the 15-bit space.
    last_picture_id: Option<u16>,
    /// Newest TL0PICIDX forwarded so far.
    last_tl0picidx: Option<u8>,
}

impl Vp8PictureIdRewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewrites the picture id and TL0PICIDX of `payload` (a VP8 RTP payload of `source_ssrc`)
    /// in place. A source different from the previous call's starts a new epoch whose ids
    /// continue from the last forwarded ones (+1). Returns `false`, leaving the payload
    /// untouched, if the payload descriptor could not be parsed.
    pub fn rewrite(&mut self, source_ssrc: u32, payload: &mut [u8]) -> bool {
        let Some(descriptor) = vp8_descriptor(payload) else {
            return false;
        };
        let is_current = self
            .epochs
            .back()
            .is_some_and(|epoch| epoch.source_ssrc == source_ssrc);
        if !is_current {
            self.epochs.push_back(SourceEpoch::new(source_ssrc));
            while self.epochs.len() > VP8_EPOCH_HISTORY {
                self.epochs.pop_front();
            }
        }
        let (last_picture_id, last_tl0picidx) = (self.last_picture_id, self.last_tl0picidx);
        let Some(epoch) = self.epochs.back_mut() else {
            return false;
        };
        if let (Some(picture_id), Some(width), Some(offset)) = (
            descriptor.picture_id,
            descriptor.picture_id_width,
            descriptor.picture_id_offset,
        ) {
            let shift = *epoch.picture_id_offset.get_or_insert_with(|| {
                last_picture_id.map_or(0, |last| last.wrapping_add(1).wrapping_sub(picture_id))
                    & PICTURE_ID_SPACE_MASK
            });
            epoch.first_picture_id.get_or_insert(picture_id);
            let rewritten = picture_id.wrapping_add(shift) & width.mask();
            write_picture_id(payload, offset, rewritten, width);
            self.last_picture_id = Some(match last_picture_id {
                None => rewritten,
                Some(last) => newer_picture_id(last, rewritten, width),
            });
        }
        if let (Some(tl0picidx), Some(offset)) = (descriptor.tl0picidx, descriptor.tl0picidx_offset)
        {
            let shift = *epoch.tl0picidx_offset.get_or_insert_with(|| {
                last_tl0picidx.map_or(0, |last| last.wrapping_add(1).wrapping_sub(tl0picidx))
            });
            epoch.first_tl0picidx.get_or_insert(tl0picidx);
            let rewritten = tl0picidx.wrapping_add(shift);
            if let Some(byte) = payload.get_mut(offset) {
                *byte = rewritten;
            }
            let is_newer =
                last_tl0picidx.is_none_or(|last| (rewritten.wrapping_sub(last) as i8) > 0);
            if is_newer {
                self.last_tl0picidx = Some(rewritten);
            }
        }
        true
    }

    /// Rewrites a packet being *retransmitted* (answering a NACK) with the same ids it was first
    /// forwarded with, without changing any state. The epoch is the newest remembered one of
    /// `source_ssrc` whose first ids are not newer than the packet's. Returns `false`, leaving the
    /// payload untouched, if the descriptor cannot be parsed or no remembered epoch knows the
    /// shift for the ids this packet carries (then the packet must not be retransmitted).
    pub fn rewrite_retransmission(&self, source_ssrc: u32, payload: &mut [u8]) -> bool {
        let Some(descriptor) = vp8_descriptor(payload) else {
            return false;
        };
        let Some(epoch) = self
            .epochs
            .iter()
            .rev()
            .filter(|epoch| epoch.source_ssrc == source_ssrc)
            .find(|epoch| epoch.may_contain(&descriptor))
        else {
            return false;
        };
        let picture_id = match (
            descriptor.picture_id,
            descriptor.picture_id_width,
            descriptor.picture_id_offset,
        ) {
            (Some(id), Some(width), Some(offset)) => match epoch.picture_id_offset {
                Some(shift) => Some((id.wrapping_add(shift) & width.mask(), width, offset)),
                None => return false,
            },
            _ => None,
        };
        let tl0picidx = match (descriptor.tl0picidx, descriptor.tl0picidx_offset) {
            (Some(tl0), Some(offset)) => match epoch.tl0picidx_offset {
                Some(shift) => Some((tl0.wrapping_add(shift), offset)),
                None => return false,
            },
            _ => None,
        };
        if let Some((id, width, offset)) = picture_id {
            write_picture_id(payload, offset, id, width);
        }
        if let Some((tl0, offset)) = tl0picidx
            && let Some(byte) = payload.get_mut(offset)
        {
            *byte = tl0;
        }
        true
    }

    /// The newest picture id forwarded so far (15-bit space), if any.
    pub fn last_picture_id(&self) -> Option<u16> {
        self.last_picture_id
    }

    /// The newest TL0PICIDX forwarded so far, if any.
    pub fn last_tl0picidx(&self) -> Option<u8> {
        self.last_tl0picidx
    }
}

/// Returns whichever of `last` (15-bit space) and `candidate` (a `width`-bit id) is newer, as a
/// value in the 15-bit space. `candidate` is unwrapped relative to `last` within its own width.
fn newer_picture_id(last: u16, candidate: u16, width: PictureIdWidth) -> u16 {
    let modulus = i32::from(width.modulus());
    let mut delta = i32::from(candidate.wrapping_sub(last) & width.mask());
    if delta >= modulus / 2 {
        delta -= modulus;
    }
    if delta > 0 {
        // delta < 2^14, so the sum fits; the mask wraps it into the 15-bit space.
        (i32::from(last) + delta) as u16 & PICTURE_ID_SPACE_MASK
    } else {
        last
    }
}

fn write_picture_id(payload: &mut [u8], offset: usize, picture_id: u16, width: PictureIdWidth) {
    match width {
        PictureIdWidth::Bits7 => {
            if let Some(byte) = payload.get_mut(offset) {
                *byte = (picture_id & width.mask()) as u8;
            }
        }
        PictureIdWidth::Bits15 => {
            if let Some([high, low]) = payload
                .get_mut(offset..offset + 2)
                .and_then(|field| <&mut [u8; 2]>::try_from(field).ok())
            {
                *high = M_BIT | (picture_id >> 8) as u8;
                *low = picture_id as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Vp8Packet, XorShift};
    use super::*;

    fn ids(payload: &[u8]) -> (Option<u16>, Option<u8>) {
        let d = vp8_descriptor(payload).expect("parses");
        (d.picture_id, d.tl0picidx)
    }

    fn rewritten(rewriter: &mut Vp8PictureIdRewriter, ssrc: u32, packet: Vp8Packet) -> Vec<u8> {
        let mut bytes = packet.build();
        assert!(rewriter.rewrite(ssrc, &mut bytes));
        bytes
    }

    #[test]
    fn first_source_passes_through() {
        let mut r = Vp8PictureIdRewriter::new();
        let packet = Vp8Packet::keyframe_start().picture_id15(1000).tl0picidx(50);
        let out = rewritten(&mut r, 1, packet.clone());
        assert_eq!(out, packet.build());
        let out = rewritten(
            &mut r,
            1,
            packet.interframe().picture_id15(1001).tl0picidx(51),
        );
        assert_eq!(ids(&out), (Some(1001), Some(51)));
    }

    #[test]
    fn switch_continues_from_last_forwarded_values() {
        let mut r = Vp8PictureIdRewriter::new();
        for pid in 100..110u16 {
            let p = Vp8Packet::keyframe_start()
                .interframe()
                .picture_id15(pid)
                .tl0picidx(pid as u8);
            rewritten(&mut r, 1, p);
        }
        assert_eq!(r.last_picture_id(), Some(109));
        assert_eq!(r.last_tl0picidx(), Some(109));
        // New source with unrelated ids.
        let out = rewritten(
            &mut r,
            2,
            Vp8Packet::keyframe_start()
                .picture_id15(30_000)
                .tl0picidx(7),
        );
        assert_eq!(ids(&out), (Some(110), Some(110)));
        // Second packet of the same picture keeps the same ids.
        let out = rewritten(
            &mut r,
            2,
            Vp8Packet::keyframe_start()
                .start(false)
                .picture_id15(30_000)
                .tl0picidx(7),
        );
        assert_eq!(ids(&out), (Some(110), Some(110)));
        let out = rewritten(
            &mut r,
            2,
            Vp8Packet::keyframe_start()
                .interframe()
                .picture_id15(30_001)
                .tl0picidx(8),
        );
        assert_eq!(ids(&out), (Some(111), Some(111)));
    }

    #[test]
    fn fifteen_bit_ids_wrap_at_32768() {
        let mut r = Vp8PictureIdRewriter::new();
        rewritten(&mut r, 1, Vp8Packet::keyframe_start().picture_id15(0x7fff));
        let out = rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id15(5));
        assert_eq!(ids(&out).0, Some(0));
        let out = rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id15(6));
        assert_eq!(ids(&out).0, Some(1));
        assert_eq!(r.last_picture_id(), Some(1));
    }

    #[test]
    fn seven_bit_ids_keep_width_and_wrap_at_128() {
        let mut r = Vp8PictureIdRewriter::new();
        rewritten(&mut r, 1, Vp8Packet::keyframe_start().picture_id7(126));
        rewritten(&mut r, 1, Vp8Packet::keyframe_start().picture_id7(127));
        let out = rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id7(40));
        let d = vp8_descriptor(&out).expect("parses");
        assert_eq!(d.picture_id, Some(0));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits7));
        assert_eq!(d.header_len, 3);
        let out = rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id7(41));
        assert_eq!(ids(&out).0, Some(1));
        // The source's own 7-bit wrap maps through.
        for pid in 42..=127u16 {
            rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id7(pid));
        }
        let out = rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id7(0));
        assert_eq!(ids(&out).0, Some(88)); // 0 + offset (88) mod 128
    }

    #[test]
    fn tl0picidx_wraps_at_256() {
        let mut r = Vp8PictureIdRewriter::new();
        rewritten(&mut r, 1, Vp8Packet::keyframe_start().tl0picidx(255));
        let out = rewritten(&mut r, 2, Vp8Packet::keyframe_start().tl0picidx(10));
        assert_eq!(ids(&out).1, Some(0));
        assert_eq!(r.last_tl0picidx(), Some(0));
    }

    #[test]
    fn reordered_packets_do_not_move_last_backwards() {
        let mut r = Vp8PictureIdRewriter::new();
        rewritten(
            &mut r,
            1,
            Vp8Packet::keyframe_start().picture_id15(10).tl0picidx(3),
        );
        rewritten(
            &mut r,
            1,
            Vp8Packet::keyframe_start().picture_id15(12).tl0picidx(5),
        );
        rewritten(
            &mut r,
            1,
            Vp8Packet::keyframe_start().picture_id15(11).tl0picidx(4),
        );
        assert_eq!(r.last_picture_id(), Some(12));
        assert_eq!(r.last_tl0picidx(), Some(5));
    }

    #[test]
    fn switching_back_to_an_earlier_source_recomputes_the_offset() {
        let mut r = Vp8PictureIdRewriter::new();
        rewritten(&mut r, 1, Vp8Packet::keyframe_start().picture_id15(500));
        rewritten(&mut r, 2, Vp8Packet::keyframe_start().picture_id15(9000));
        let out = rewritten(&mut r, 1, Vp8Packet::keyframe_start().picture_id15(520));
        assert_eq!(ids(&out).0, Some(502));
    }

    #[test]
    fn retransmission_reuses_the_original_ids() {
        let mut r = Vp8PictureIdRewriter::new();
        let a = |pid: u16| {
            Vp8Packet::keyframe_start()
                .picture_id15(pid)
                .tl0picidx(pid as u8)
        };
        let mut sent = Vec::new();
        for pid in [10u16, 11, 12] {
            sent.push((1, a(pid).build(), rewritten(&mut r, 1, a(pid))));
        }
        for pid in [5000u16, 5001] {
            sent.push((2, a(pid).build(), rewritten(&mut r, 2, a(pid))));
        }
        // Back to source 1, later in its stream.
        for pid in [40u16, 41] {
            sent.push((1, a(pid).build(), rewritten(&mut r, 1, a(pid))));
        }
        let last = (r.last_picture_id(), r.last_tl0picidx());
        for (ssrc, original, forwarded) in sent {
            let mut copy = original.clone();
            assert!(r.rewrite_retransmission(ssrc, &mut copy));
            assert_eq!(copy, forwarded, "ssrc {ssrc}, original {original:?}");
        }
        assert_eq!(
            (r.last_picture_id(), r.last_tl0picidx()),
            last,
            "no state change"
        );
    }

    /// TL0PICIDX wraps every 256 base frames (seconds of video): a long epoch must still answer
    /// retransmissions of its packets after that.
    #[test]
    fn retransmission_works_after_tl0picidx_wraps() {
        let mut r = Vp8PictureIdRewriter::new();
        let p = |pid: u16| {
            Vp8Packet::keyframe_start()
                .picture_id15(pid)
                .tl0picidx(pid as u8)
        };
        let mut last = None;
        for pid in 100u16..500 {
            last = Some((p(pid).build(), rewritten(&mut r, 1, p(pid))));
        }
        let (original, forwarded) = last.unwrap();
        let mut copy = original;
        assert!(r.rewrite_retransmission(1, &mut copy));
        assert_eq!(copy, forwarded);
    }

    #[test]
    fn retransmission_of_unknown_source_is_refused() {
        let mut r = Vp8PictureIdRewriter::new();
        rewritten(&mut r, 1, Vp8Packet::keyframe_start().picture_id15(10));
        let original = Vp8Packet::keyframe_start().picture_id15(10).build();
        let mut copy = original.clone();
        assert!(!r.rewrite_retransmission(2, &mut copy));
        assert_eq!(copy, original);
        // Carries a TL0PICIDX but the epoch never saw one: shift unknown.
        let mut with_tl0 = Vp8Packet::keyframe_start()
            .picture_id15(10)
            .tl0picidx(3)
            .build();
        assert!(!r.rewrite_retransmission(1, &mut with_tl0));
        let mut garbage = [0x80];
        assert!(!r.rewrite_retransmission(1, &mut garbage));
    }

    #[test]
    fn packets_without_ids_are_accepted_unchanged() {
        let mut r = Vp8PictureIdRewriter::new();
        let packet = Vp8Packet::keyframe_start();
        assert_eq!(rewritten(&mut r, 1, packet.clone()), packet.build());
    }

    #[test]
    fn unparseable_payload_is_left_untouched() {
        let mut r = Vp8PictureIdRewriter::new();
        let mut empty: [u8; 0] = [];
        assert!(!r.rewrite(1, &mut empty));
        // X=1, I=1, M=1 but the second picture-id byte is missing.
        let mut truncated = [0x90, 0x80, 0x81];
        assert!(!r.rewrite(1, &mut truncated));
        assert_eq!(truncated, [0x90, 0x80, 0x81]);
    }

    #[test]
    fn garbage_never_panics_and_keeps_length() {
        let mut r = Vp8PictureIdRewriter::new();
        let mut rng = XorShift::new(3);
        for i in 0..50_000u32 {
            let mut bytes = rng.bytes(10);
            let before = bytes.len();
            let _ = r.rewrite(i % 3, &mut bytes);
            let _ = r.rewrite_retransmission(i % 5, &mut bytes);
            assert_eq!(bytes.len(), before);
        }
    }
}
