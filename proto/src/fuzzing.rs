//! Fuzz entry points: one function per decoder a peer or a client can reach with bytes of its
//! choosing. The `cargo fuzz` targets in `fuzz/` are one-line calls to these, and the stable
//! short fuzz smoke run (`tests/tests/fuzz_smoke.rs`, part of `cargo test --workspace`) feeds them
//! the seed corpora and mutations of it.
//!
//! Each function takes arbitrary bytes and must return normally whatever they are: a decoder that
//! panics is a bug. Where a decode succeeds, the message is encoded again and must decode to the
//! same value (a round-trip oracle), so the fuzzer also finds encodings the two halves disagree
//! on.

use crate::relay::{self, MediaDatagram};
use crate::signal::{ClientMessage, MAX_SIGNAL_MESSAGE_BYTES, ServerMessage};

/// A relay control frame body (after the length prefix), as a peer node sends it:
/// [`relay::decode_control`], then re-encoding what decoded.
pub fn relay_control(data: &[u8]) {
    if let Ok(prefix) = <[u8; 4]>::try_from(data.get(..4).unwrap_or_default()) {
        // The length prefix is read before the body: it must refuse, not panic, on any value.
        let _ = relay::control_frame_len(prefix);
    }
    let Ok(message) = relay::decode_control(data) else {
        return;
    };
    let frame = relay::encode_control(&message).expect("a decoded control message re-encodes");
    let again = relay::decode_control(&frame[4..]).expect("a re-encoded control frame decodes");
    assert_eq!(again, message, "control frame round trip");
}

/// A relay media datagram, as a peer node sends it: [`relay::decode_datagram`], then
/// re-encoding what decoded.
pub fn relay_datagram(data: &[u8]) {
    let Ok(decoded) = relay::decode_datagram(data) else {
        return;
    };
    let mut out = Vec::new();
    relay::encode_datagram(&decoded, &mut out).expect("a decoded datagram re-encodes");
    let again: MediaDatagram<'_> =
        relay::decode_datagram(&out).expect("a re-encoded datagram decodes");
    assert_eq!(again, decoded, "datagram round trip");
}

/// A signalling text frame: [`ClientMessage::decode`] as the node's WebSocket handler calls it
/// (the frame is text, so the bytes are taken as UTF-8, invalid sequences replaced), then
/// re-encoding what decoded; and the same text as a [`ServerMessage`], as clients decode it.
pub fn signalling_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(message) = ClientMessage::decode(&text) {
        let json = serde_json::to_string(&message).expect("a client message encodes");
        // Defaults written out can push a message near the size limit over it.
        if json.len() <= MAX_SIGNAL_MESSAGE_BYTES {
            let again = ClientMessage::decode(&json).expect("a re-encoded client message decodes");
            assert_eq!(again, message, "client message round trip");
        }
    }
    if let Ok(message) = serde_json::from_str::<ServerMessage>(&text) {
        let again: ServerMessage =
            serde_json::from_str(&message.encode()).expect("a re-encoded server message decodes");
        assert_eq!(again, message, "server message round trip");
    }
}
