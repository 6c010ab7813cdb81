//! Keyframe-start detection for H.264 RTP payloads (RFC 6184).
//!
//! Owns [`is_h264_keyframe_start`]: a packet starts a keyframe if it carries (or begins) an IDR
//! slice or a sequence parameter set, as a single NAL unit, inside a STAP-A, or as the first
//! fragment of an FU-A.

const NAL_TYPE_MASK: u8 = 0x1f;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;
const FU_START_BIT: u8 = 0x80;
const STAP_A_SIZE_LEN: usize = 2;

fn starts_keyframe(nal_type: u8) -> bool {
    matches!(nal_type, NAL_IDR | NAL_SPS)
}

/// True iff the H.264 RTP payload is the first packet of a keyframe. Never panics.
pub fn is_h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & NAL_TYPE_MASK {
        NAL_STAP_A => stap_a_contains_keyframe_nal(payload.get(1..).unwrap_or_default()),
        NAL_FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & FU_START_BIT != 0 && starts_keyframe(fu & NAL_TYPE_MASK)),
        nal_type => starts_keyframe(nal_type),
    }
}

/// Walks the aggregated NAL units of a STAP-A body (everything after its NAL header). A NAL unit
/// that is empty or runs past the end stops the walk.
fn stap_a_contains_keyframe_nal(mut body: &[u8]) -> bool {
    while let Some((size_bytes, rest)) = body.split_first_chunk::<STAP_A_SIZE_LEN>() {
        let size = usize::from(u16::from_be_bytes(*size_bytes));
        let Some(nal) = rest.get(..size) else {
            return false;
        };
        let Some(&nal_header) = nal.first() else {
            return false;
        };
        if starts_keyframe(nal_header & NAL_TYPE_MASK) {
            return true;
        }
        body = rest.get(size..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{XorShift, h264_fu_a, h264_single, h264_stap_a};
    use super::*;

    #[test]
    fn single_idr_and_sps_are_keyframe_starts() {
        assert!(is_h264_keyframe_start(&h264_single(5)));
        assert!(is_h264_keyframe_start(&h264_single(7)));
    }

    #[test]
    fn single_non_idr_slice_pps_and_sei_are_not() {
        assert!(!is_h264_keyframe_start(&h264_single(1)));
        assert!(!is_h264_keyframe_start(&h264_single(8)));
        assert!(!is_h264_keyframe_start(&h264_single(6)));
    }

    #[test]
    fn stap_a_with_sps_pps_is_keyframe_start() {
        assert!(is_h264_keyframe_start(&h264_stap_a(&[7, 8])));
        assert!(is_h264_keyframe_start(&h264_stap_a(&[6, 5])));
    }

    #[test]
    fn stap_a_without_keyframe_nal_is_not() {
        assert!(!is_h264_keyframe_start(&h264_stap_a(&[6, 8, 1])));
        assert!(!is_h264_keyframe_start(&h264_stap_a(&[])));
    }

    #[test]
    fn stap_a_with_overlong_size_is_not() {
        // Size says 100 bytes but only 4 follow; the SPS header must not be trusted.
        let bytes = [0x78, 0x00, 100, 0x67, 0x42, 0x00, 0x1f];
        assert!(!is_h264_keyframe_start(&bytes));
    }

    #[test]
    fn stap_a_with_zero_size_is_not() {
        assert!(!is_h264_keyframe_start(&[0x78, 0x00, 0x00, 0x67]));
    }

    #[test]
    fn fu_a_start_of_idr_or_sps_is_keyframe_start() {
        assert!(is_h264_keyframe_start(&h264_fu_a(true, false, 5)));
        assert!(is_h264_keyframe_start(&h264_fu_a(true, false, 7)));
    }

    #[test]
    fn fu_a_middle_end_or_non_idr_is_not() {
        assert!(!is_h264_keyframe_start(&h264_fu_a(false, false, 5)));
        assert!(!is_h264_keyframe_start(&h264_fu_a(false, true, 5)));
        assert!(!is_h264_keyframe_start(&h264_fu_a(true, false, 1)));
    }

    #[test]
    fn truncated_inputs() {
        assert!(!is_h264_keyframe_start(&[]));
        assert!(!is_h264_keyframe_start(&[0x7c])); // FU-A without FU header
        assert!(!is_h264_keyframe_start(&[0x78])); // STAP-A without body
        assert!(!is_h264_keyframe_start(&[0x78, 0x00])); // half a size field
        let stap = h264_stap_a(&[7]);
        for len in 0..stap.len() {
            assert!(!is_h264_keyframe_start(&stap[..len]), "len {len}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift::new(42);
        for _ in 0..50_000 {
            let mut bytes = rng.bytes(16);
            if let Some(first) = bytes.first_mut() {
                // Bias towards the aggregation/fragmentation paths.
                if rng.next().is_multiple_of(2) {
                    *first = (*first & 0xe0) | [24, 28][(rng.next() % 2) as usize];
                }
            }
            let _ = is_h264_keyframe_start(&bytes);
        }
    }
}
