//! Reads what a client's SDP offer publishes: one entry per audio/video m-line that sends media,
//! with its `mid` and simulcast RIDs (lowest quality first). Parsing is the SDP crate's; this file
//! only interprets the parsed attributes.

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
        let port_zero = media.media_name.port.value == 0;
        if !sends || port_zero {
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
}
