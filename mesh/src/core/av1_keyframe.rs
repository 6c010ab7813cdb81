//! Keyframe-start detection for AV1 RTP payloads (AV1 RTP specification §4.4).
//!
//! Owns [`is_av1_keyframe_start`]. Only the aggregation header is trusted: the N bit marks the
//! first packet of a new coded video sequence, which starts with a keyframe. Anything else is
//! reported as "not a keyframe start" rather than guessed from OBU contents.

const Z_BIT: u8 = 0x80;
const N_BIT: u8 = 0x08;

/// True iff the AV1 aggregation header has N = 1 (new coded video sequence) and Z = 0 (the first
/// OBU element is not a continuation), and at least one byte of OBU data follows. Never panics.
pub fn is_av1_keyframe_start(payload: &[u8]) -> bool {
    match payload {
        [header, _, ..] => header & N_BIT != 0 && header & Z_BIT == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::XorShift;
    use super::*;

    #[test]
    fn new_coded_video_sequence_is_keyframe_start() {
        // N=1, W=1, followed by a sequence header OBU.
        assert!(is_av1_keyframe_start(&[0x18, 0x0a, 0x0b]));
    }

    #[test]
    fn other_packets_are_not() {
        assert!(!is_av1_keyframe_start(&[0x10, 0x32, 0x00])); // N=0
        assert!(!is_av1_keyframe_start(&[0x88, 0x32, 0x00])); // Z=1 with N=1 is invalid
        assert!(!is_av1_keyframe_start(&[0x08])); // no OBU data
        assert!(!is_av1_keyframe_start(&[]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift::new(11);
        for _ in 0..10_000 {
            let _ = is_av1_keyframe_start(&rng.bytes(4));
        }
    }
}
