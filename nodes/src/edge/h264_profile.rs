//! H.264 profiles from SDP's `profile-level-id` (RFC 6184 §8.1: profile_idc, profile-iop with
//! the constraint_set flags, level_idc), as far as forwarding needs them: whether a publisher's
//! stream can be decoded by a subscriber that offered another `profile-level-id`. Encoders spell
//! the same profile differently (x264's constrained baseline is `42c01f`, browsers' `42e01f`),
//! so comparing the hex digits is not enough; the level is not compared (a decoder's level is a
//! ceiling the stream rarely reaches, and browsers decode above what they announce).

/// The profiles RFC 6184 Table 5 names (plus any other profile_idc as is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    Extended,
    ConstrainedHigh,
    High,
    Other(u8),
}

/// The profile of a `profile-level-id` (six hex digits); `None` when it is not one.
pub fn profile_of(profile_level_id: &str) -> Option<H264Profile> {
    if profile_level_id.len() != 6 {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(profile_level_id.get(i..i + 2)?, 16).ok();
    let (idc, iop) = (byte(0)?, byte(2)?);
    let set0 = iop & 0x80 != 0;
    let set1 = iop & 0x40 != 0;
    // constraint_set4 and constraint_set5 (no B-slices, frame-only): High made constrained.
    let set45 = iop & 0x0c == 0x0c;
    Some(match idc {
        // Constraint set 1 makes a Baseline stream Constrained Baseline; so do set 0 (Main) and
        // sets 0+1 (Extended) when the other profile's constraints are announced.
        0x42 if set1 => H264Profile::ConstrainedBaseline,
        0x42 => H264Profile::Baseline,
        0x4d if set0 => H264Profile::ConstrainedBaseline,
        0x4d => H264Profile::Main,
        0x58 if set0 && set1 => H264Profile::ConstrainedBaseline,
        0x58 => H264Profile::Extended,
        0x64 if set45 => H264Profile::ConstrainedHigh,
        0x64 => H264Profile::High,
        other => H264Profile::Other(other),
    })
}

/// Whether a stream of `sent` can go to a decoder that offered `accepted`: the same profile, or
/// Constrained Baseline to a Baseline decoder (a subset of it).
pub fn decodable(sent: H264Profile, accepted: H264Profile) -> bool {
    sent == accepted
        || (sent == H264Profile::ConstrainedBaseline && accepted == H264Profile::Baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_spell_constrained_baseline_in_several_ways() {
        for id in ["42e01f", "42c01e", "42401f", "4de01f", "58c01f"] {
            assert_eq!(
                profile_of(id),
                Some(H264Profile::ConstrainedBaseline),
                "{id}"
            );
        }
        assert_eq!(profile_of("42001f"), Some(H264Profile::Baseline));
        assert_eq!(profile_of("4d001f"), Some(H264Profile::Main));
        assert_eq!(profile_of("640c1f"), Some(H264Profile::ConstrainedHigh));
        assert_eq!(profile_of("64001f"), Some(H264Profile::High));
        assert_eq!(profile_of("f4001f"), Some(H264Profile::Other(0xf4)));
    }

    #[test]
    fn malformed_ids_have_no_profile() {
        for id in ["", "42e0", "42e01f00", "zz001f", "42é01"] {
            assert_eq!(profile_of(id), None, "{id:?}");
        }
    }

    #[test]
    fn constrained_baseline_goes_to_baseline_decoders_only_one_way() {
        use H264Profile::*;
        assert!(decodable(ConstrainedBaseline, ConstrainedBaseline));
        assert!(decodable(ConstrainedBaseline, Baseline));
        assert!(!decodable(Baseline, ConstrainedBaseline));
        assert!(!decodable(High, ConstrainedBaseline));
        assert!(decodable(High, High));
    }
}
