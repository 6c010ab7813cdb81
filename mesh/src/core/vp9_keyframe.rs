//! Keyframe-start detection for VP9 RTP payloads (RFC 9628 §4.2).
//!
//! Owns [`is_vp9_keyframe_start`]: a packet starts a keyframe if its payload descriptor has the
//! B (start of frame) bit set, the P (inter-picture predicted) bit clear and, when layer indices
//! are present, belongs to the base spatial layer (SID 0).

const I_BIT: u8 = 0x80;
const P_BIT: u8 = 0x40;
const L_BIT: u8 = 0x20;
const B_BIT: u8 = 0x08;
const M_BIT: u8 = 0x80;

/// True iff the VP9 RTP payload is the first packet of a keyframe. Never panics; a descriptor
/// truncated before the fields it announces yields `false`.
pub fn is_vp9_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    if first & B_BIT == 0 || first & P_BIT != 0 {
        return false;
    }
    let mut at = 1;
    if first & I_BIT != 0 {
        let Some(&picture_id_high) = payload.get(at) else {
            return false;
        };
        at += if picture_id_high & M_BIT != 0 { 2 } else { 1 };
    }
    if first & L_BIT != 0 {
        let Some(&layer_indices) = payload.get(at) else {
            return false;
        };
        let spatial_id = (layer_indices >> 1) & 0x07;
        return spatial_id == 0;
    }
    // Without layer indices the packet must at least hold the picture id it announced.
    at <= payload.len()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::XorShift;
    use super::*;

    #[test]
    fn start_of_intra_frame_is_keyframe_start() {
        assert!(is_vp9_keyframe_start(&[0x08, 0x00]));
        // I=1 with a 15-bit picture id, B=1.
        assert!(is_vp9_keyframe_start(&[0x88, 0x81, 0x23, 0x00]));
        // I=1, L=1 with SID 0, B=1.
        assert!(is_vp9_keyframe_start(&[0xa8, 0x05, 0x00, 0x00, 0x00]));
    }

    #[test]
    fn predicted_or_not_start_is_not() {
        assert!(!is_vp9_keyframe_start(&[0x48, 0x00])); // P=1
        assert!(!is_vp9_keyframe_start(&[0x00, 0x00])); // B=0
        assert!(!is_vp9_keyframe_start(&[0x04, 0x00])); // only E
    }

    #[test]
    fn upper_spatial_layer_is_not_keyframe_start() {
        // L=1, layer byte with SID=1.
        assert!(!is_vp9_keyframe_start(&[0x28, 0x02, 0x00]));
    }

    #[test]
    fn truncated_descriptor_is_not() {
        assert!(!is_vp9_keyframe_start(&[]));
        assert!(!is_vp9_keyframe_start(&[0x88])); // I without picture id
        assert!(!is_vp9_keyframe_start(&[0x88, 0x81])); // 15-bit picture id cut
        assert!(!is_vp9_keyframe_start(&[0xa8, 0x05])); // L without layer byte
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift::new(9);
        for _ in 0..50_000 {
            let _ = is_vp9_keyframe_start(&rng.bytes(8));
        }
    }
}
