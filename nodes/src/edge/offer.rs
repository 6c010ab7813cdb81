//! Reads what a client's SDP offer publishes: one entry per audio/video m-line that sends media,
//! with its `mid` and simulcast RIDs (lowest quality first); and checks a client's answer to a
//! node offer before the peer connection applies it, because `rtc` changes the connection's state
//! before it notices what is wrong with an answer. Parsing is the SDP crate's; this file only
//! interprets the parsed attributes.

use kaskade_proto::signal::MediaKind;
use rtc::sdp::SessionDescription;
use std::io::Cursor;

/// Largest SDP a node accepts, for WHIP/WHEP bodies and signalling alike.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// One m-line of an offer that sends media to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    pub kind: MediaKind,
    /// Simulcast RIDs in the order lowest → highest quality; empty without simulcast.
    pub rids: Vec<String>,
}

/// Why an offer was refused before negotiation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP is larger than {MAX_SDP_BYTES} bytes")]
    TooLarge,
    #[error("SDP does not parse: {0}")]
    Unparsable(String),
    #[error("SDP has no audio or video m-line")]
    NoMedia,
    #[error("m-line {0} has no a=mid")]
    MissingMid(usize),
}

/// Why a client's answer to a node offer was refused before it was applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP is larger than {MAX_SDP_BYTES} bytes")]
    TooLarge,
    #[error("SDP does not parse: {0}")]
    Unparsable(String),
    #[error("the answer has {answer} m-lines, the offer {offer}")]
    MediaCount { offer: usize, answer: usize },
    #[error("m-line {index} has mid {answer:?}, the offer {offer:?}")]
    MidMismatch {
        index: usize,
        offer: String,
        answer: String,
    },
    #[error("the answer accepts no m-line (every one is rejected with port 0, or there is none)")]
    NothingAccepted,
    #[error("the answer has no ICE credentials (a=ice-ufrag and a=ice-pwd)")]
    MissingIceCredentials,
    #[error("the answer has conflicting ICE credentials")]
    ConflictingIceCredentials,
    #[error("the answer has no DTLS fingerprint")]
    MissingFingerprint,
}

/// Checks that `answer` can be applied as the answer to `offer` (the node's own offer): the same
/// m-lines in the same order, at least one of them accepted, and the ICE credentials and DTLS
/// fingerprint the connection needs. What it lets through, `set_remote_description` applies.
pub fn check_answer(offer: &str, answer: &str) -> Result<(), AnswerError> {
    if answer.trim().is_empty() {
        return Err(AnswerError::Empty);
    }
    if answer.len() > MAX_SDP_BYTES {
        return Err(AnswerError::TooLarge);
    }
    let offer = SessionDescription::unmarshal(&mut Cursor::new(offer.as_bytes()))
        .map_err(|e| AnswerError::Unparsable(format!("the node's own offer: {e}")))?;
    let answer = SessionDescription::unmarshal(&mut Cursor::new(answer.as_bytes()))
        .map_err(|e| AnswerError::Unparsable(e.to_string()))?;
    let (offered, answered) = (&offer.media_descriptions, &answer.media_descriptions);
    if offered.len() != answered.len() {
        return Err(AnswerError::MediaCount {
            offer: offered.len(),
            answer: answered.len(),
        });
    }
    for (index, (o, a)) in offered.iter().zip(answered).enumerate() {
        let mid = |m: &rtc::sdp::MediaDescription| {
            m.attribute("mid").flatten().unwrap_or_default().to_owned()
        };
        let (offer_mid, answer_mid) = (mid(o), mid(a));
        if offer_mid != answer_mid {
            return Err(AnswerError::MidMismatch {
                index,
                offer: offer_mid,
                answer: answer_mid,
            });
        }
    }
    if answered.iter().all(|m| m.media_name.port.value == 0) {
        return Err(AnswerError::NothingAccepted);
    }
    // The rules of `rtc`'s own extraction: session level first, then the m-lines; an inactive
    // m-line's credentials only count when nothing else has any, and only the others must agree.
    for key in ["ice-ufrag", "ice-pwd"] {
        let session = answer.attribute(key).map(String::as_str);
        let active: Vec<&str> = answered
            .iter()
            .filter(|m| !m.has_attribute("inactive"))
            .filter_map(|m| m.attribute(key).flatten())
            .collect();
        let first = session.or(active.first().copied());
        if active.iter().any(|v| Some(*v) != first) {
            return Err(AnswerError::ConflictingIceCredentials);
        }
        let backup = answered.iter().find_map(|m| m.attribute(key).flatten());
        if first.or(backup).is_none() {
            return Err(AnswerError::MissingIceCredentials);
        }
    }
    let fingerprint = answer.attribute("fingerprint").is_some()
        || answered
            .iter()
            .any(|m| m.attribute("fingerprint").flatten().is_some());
    if !fingerprint {
        return Err(AnswerError::MissingFingerprint);
    }
    Ok(())
}

/// Parses an offer and checks the basics every session needs.
pub fn parse_offer(sdp: &str) -> Result<Vec<OfferedTrack>, OfferError> {
    if sdp.trim().is_empty() {
        return Err(OfferError::Empty);
    }
    if sdp.len() > MAX_SDP_BYTES {
        return Err(OfferError::TooLarge);
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| OfferError::Unparsable(e.to_string()))?;
    let mut sending = Vec::new();
    let mut any_media = false;
    for (index, media) in parsed.media_descriptions.iter().enumerate() {
        let kind = match media.media_name.media.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => continue,
        };
        any_media = true;
        let mid = media
            .attribute("mid")
            .flatten()
            .ok_or(OfferError::MissingMid(index))?
            .to_owned();
        let sends = media.has_attribute("sendonly") || media.has_attribute("sendrecv");
        // Port 0 rejects an m-line, except under `a=bundle-only` (JSEP's max-bundle, as
        // GStreamer's webrtcbin offers): that one rides the BUNDLE transport.
        let rejected = media.media_name.port.value == 0 && !media.has_attribute("bundle-only");
        if !sends || rejected {
            continue;
        }
        sending.push(OfferedTrack {
            mid,
            kind,
            rids: simulcast_send_rids(media),
        });
    }
    if !any_media {
        return Err(OfferError::NoMedia);
    }
    Ok(sending)
}

/// The RIDs the offerer sends (`a=rid:<id> send`), ordered lowest quality first: by the usual
/// names (q/h/f, l/m/h, low/mid/high) where they are used, else in offer order.
fn simulcast_send_rids(media: &rtc::sdp::MediaDescription) -> Vec<String> {
    let mut rids: Vec<String> = media
        .attributes
        .iter()
        .filter(|a| a.key == "rid")
        .filter_map(|a| a.value.as_deref())
        .filter_map(|v| {
            let mut parts = v.split_whitespace();
            let id = parts.next()?;
            (parts.next() == Some("send")).then(|| id.to_owned())
        })
        .collect();
    if rids.iter().all(|r| rid_rank(r).is_some()) {
        rids.sort_by_key(|r| rid_rank(r));
    }
    rids
}

fn rid_rank(rid: &str) -> Option<u8> {
    match rid.to_ascii_lowercase().as_str() {
        "q" | "l" | "low" | "0" => Some(0),
        "h" | "m" | "mid" | "medium" | "1" => Some(1),
        "f" | "high" | "hi" | "2" => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n\
a=rid:f send\r\na=rid:q send\r\na=rid:h send\r\na=simulcast:send f;q;h\r\n";

    #[test]
    fn finds_sending_tracks_and_orders_rids() {
        let tracks = parse_offer(OFFER).unwrap();
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].kind, MediaKind::Audio);
        assert_eq!(tracks[0].mid, "0");
        assert!(tracks[0].rids.is_empty());
        assert_eq!(tracks[1].rids, vec!["q", "h", "f"]);
    }

    #[test]
    fn bundle_only_lines_with_port_zero_publish_but_rejected_ones_do_not() {
        let bundle_only = OFFER.replacen(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=mid:0\r\n",
            1,
        );
        assert!(bundle_only.contains("m=audio 0"));
        let tracks = parse_offer(&bundle_only).unwrap();
        assert_eq!(tracks.len(), 2, "the bundle-only audio is published");
        let rejected = OFFER.replacen("m=audio 9", "m=audio 0", 1);
        let tracks = parse_offer(&rejected).unwrap();
        assert_eq!(tracks.len(), 1, "a plain port-0 line is rejected");
        assert_eq!(tracks[0].kind, MediaKind::Video);
    }

    #[test]
    fn recvonly_lines_publish_nothing() {
        let offer = OFFER.replace("a=sendonly", "a=recvonly");
        let tracks = parse_offer(&offer).unwrap();
        assert!(tracks.is_empty());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(parse_offer("  "), Err(OfferError::Empty));
        assert!(matches!(
            parse_offer("hello world"),
            Err(OfferError::Unparsable(_))
        ));
        assert!(matches!(
            parse_offer("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"),
            Err(OfferError::NoMedia)
        ));
        let no_mid = OFFER.replace("a=mid:1\r\n", "");
        assert_eq!(parse_offer(&no_mid), Err(OfferError::MissingMid(1)));
        assert_eq!(
            parse_offer(&"x".repeat(MAX_SDP_BYTES + 1)),
            Err(OfferError::TooLarge)
        );
    }

    /// A node offer (two m-lines) and the kind of answer Chromium gives to it.
    const NODE_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
a=fingerprint:sha-256 0C:4E:4B:86\r\na=ice-lite\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=mid:0\r\n\
a=ice-ufrag:node\r\na=ice-pwd:nodepassword\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=mid:1\r\n\
a=ice-ufrag:node\r\na=ice-pwd:nodepassword\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n";

    const ANSWER: &str = "v=0\r\no=- 3 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:page\r\na=ice-pwd:pagepassword\r\n\
a=fingerprint:sha-256 AA:BB:CC:DD\r\na=setup:active\r\na=mid:0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:page\r\na=ice-pwd:pagepassword\r\n\
a=fingerprint:sha-256 AA:BB:CC:DD\r\na=setup:active\r\na=mid:1\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";

    /// What Chromium answers to an offer without m-lines (`rtc` then fails with "no ice-ufrag").
    const EMPTY_ANSWER: &str = "v=0\r\no=- 5 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n";

    #[test]
    fn a_matching_answer_passes() {
        assert_eq!(check_answer(NODE_OFFER, ANSWER), Ok(()));
        // Inactive m-lines still carry credentials and count.
        let inactive = ANSWER.replace("a=recvonly", "a=inactive");
        assert_eq!(check_answer(NODE_OFFER, &inactive), Ok(()));
        // One rejected m-line of two is a valid answer.
        let one_rejected = ANSWER.replacen("m=audio 9", "m=audio 0", 1);
        assert_eq!(check_answer(NODE_OFFER, &one_rejected), Ok(()));
    }

    #[test]
    fn an_answer_without_media_is_refused_with_a_reason() {
        let empty_offer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
a=fingerprint:sha-256 0C:4E\r\na=ice-lite\r\n";
        assert_eq!(
            check_answer(empty_offer, EMPTY_ANSWER),
            Err(AnswerError::NothingAccepted)
        );
        // Chromium's way of rejecting an m-line: port 0, no ICE attributes.
        let rejected = "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=inactive\r\n\
a=rtpmap:111 opus/48000/2\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
a=inactive\r\na=rtpmap:96 VP8/90000\r\n";
        let all_rejected = format!("{EMPTY_ANSWER}{rejected}");
        assert_eq!(
            check_answer(NODE_OFFER, &all_rejected),
            Err(AnswerError::NothingAccepted)
        );
    }

    #[test]
    fn answers_that_do_not_fit_the_offer_are_refused() {
        assert_eq!(
            check_answer(NODE_OFFER, EMPTY_ANSWER),
            Err(AnswerError::MediaCount {
                offer: 2,
                answer: 0
            })
        );
        let swapped = ANSWER
            .replace("a=mid:1", "a=mid:x")
            .replace("a=mid:0", "a=mid:1");
        assert_eq!(
            check_answer(NODE_OFFER, &swapped),
            Err(AnswerError::MidMismatch {
                index: 0,
                offer: "0".into(),
                answer: "1".into()
            })
        );
        let no_ufrag = ANSWER.replace("a=ice-ufrag:page\r\n", "");
        assert_eq!(
            check_answer(NODE_OFFER, &no_ufrag),
            Err(AnswerError::MissingIceCredentials)
        );
        let no_pwd = ANSWER.replace("a=ice-pwd:pagepassword\r\n", "");
        assert_eq!(
            check_answer(NODE_OFFER, &no_pwd),
            Err(AnswerError::MissingIceCredentials)
        );
        let conflicting = ANSWER.replacen("a=ice-ufrag:page", "a=ice-ufrag:other", 1);
        assert_eq!(
            check_answer(NODE_OFFER, &conflicting),
            Err(AnswerError::ConflictingIceCredentials)
        );
        let no_fingerprint = ANSWER.replace("a=fingerprint:sha-256 AA:BB:CC:DD\r\n", "");
        assert_eq!(
            check_answer(NODE_OFFER, &no_fingerprint),
            Err(AnswerError::MissingFingerprint)
        );
        assert_eq!(check_answer(NODE_OFFER, " "), Err(AnswerError::Empty));
        assert!(matches!(
            check_answer(NODE_OFFER, "hello"),
            Err(AnswerError::Unparsable(_))
        ));
    }
}
