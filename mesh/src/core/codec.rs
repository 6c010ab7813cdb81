//! Video codec identification and the codec-independent keyframe-start check.
//!
//! Owns [`VideoCodec`] (derived from the negotiated MIME type) and [`is_keyframe_start`], which
//! dispatches to the per-codec payload parsers. The VP8 descriptor parser and picture-id rewriter
//! live in their own files and are re-exported here.

pub use super::vp8_descriptor::{PictureIdWidth, Vp8Descriptor, vp8_descriptor};
pub use super::vp8_rewriter::Vp8PictureIdRewriter;

use super::{av1_keyframe, h264_keyframe, vp9_keyframe};

/// The video codec of an RTP stream, as far as the forwarding core cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Any codec whose payload the core does not parse.
    Other,
}

impl VideoCodec {
    /// Maps a MIME type such as `"video/VP8"` (case-insensitive, surrounding whitespace ignored)
    /// to a codec; anything unknown is [`VideoCodec::Other`].
    pub fn from_mime(mime: &str) -> Self {
        let mime = mime.trim();
        let known = [
            ("video/vp8", Self::Vp8),
            ("video/vp9", Self::Vp9),
            ("video/h264", Self::H264),
            ("video/av1", Self::Av1),
        ];
        known
            .into_iter()
            .find(|(name, _)| mime.eq_ignore_ascii_case(name))
            .map_or(Self::Other, |(_, codec)| codec)
    }
}

/// True iff `payload` (the RTP payload, after the RTP header and extensions) is the first packet
/// of a keyframe. Never panics; truncated or garbage payloads yield `false`.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_descriptor(payload).is_some_and(|d| d.is_keyframe),
        VideoCodec::Vp9 => vp9_keyframe::is_vp9_keyframe_start(payload),
        VideoCodec::H264 => h264_keyframe::is_h264_keyframe_start(payload),
        VideoCodec::Av1 => av1_keyframe::is_av1_keyframe_start(payload),
        VideoCodec::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_mime_is_case_insensitive() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("VIDEO/vp8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("video/vp9"), VideoCodec::Vp9);
        assert_eq!(VideoCodec::from_mime("video/H264"), VideoCodec::H264);
        assert_eq!(VideoCodec::from_mime(" video/AV1 "), VideoCodec::Av1);
    }

    #[test]
    fn from_mime_unknown_is_other() {
        assert_eq!(VideoCodec::from_mime("video/H265"), VideoCodec::Other);
        assert_eq!(VideoCodec::from_mime("audio/opus"), VideoCodec::Other);
        assert_eq!(VideoCodec::from_mime(""), VideoCodec::Other);
        assert_eq!(VideoCodec::from_mime("video/vp8x"), VideoCodec::Other);
    }

    #[test]
    fn dispatch_reaches_each_parser() {
        // VP8: S=1, PID=0, no extensions, payload header with P=0.
        assert!(is_keyframe_start(
            VideoCodec::Vp8,
            &[0x10, 0x00, 0x00, 0x00]
        ));
        // VP9: B=1, P=0.
        assert!(is_keyframe_start(VideoCodec::Vp9, &[0x08, 0x00]));
        // H264: single IDR NAL.
        assert!(is_keyframe_start(VideoCodec::H264, &[0x65, 0x88]));
        // AV1: N=1, Z=0.
        assert!(is_keyframe_start(VideoCodec::Av1, &[0x08, 0x12, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::Other, &[0x10, 0x00]));
    }

    #[test]
    fn empty_payload_is_never_a_keyframe() {
        for codec in [
            VideoCodec::Vp8,
            VideoCodec::Vp9,
            VideoCodec::H264,
            VideoCodec::Av1,
            VideoCodec::Other,
        ] {
            assert!(!is_keyframe_start(codec, &[]));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = super::super::test_support::XorShift::new(0x5eed);
        for _ in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            for codec in [
                VideoCodec::Vp8,
                VideoCodec::Vp9,
                VideoCodec::H264,
                VideoCodec::Av1,
                VideoCodec::Other,
            ] {
                let _ = is_keyframe_start(codec, &bytes);
            }
        }
    }
}
