//! The inter-node relay protocol: what two nodes of a mesh say to each other over their QUIC
//! connection. Control messages ([`RelayMessage`]) travel as length-prefixed frames on one
//! bidirectional stream; media travels as QUIC datagrams ([`MediaDatagram`]), one RTP packet each.
//! Both are serde + bincode (2.x, standard config) behind a version byte, and both are decoded with
//! hard size limits, so a peer can never make a node allocate more than a frame's worth.
//!
//! # Framing
//! - Control frame: `u32` big-endian length `L`, then `L` bytes: the version byte, then the
//!   bincode encoding of one [`RelayMessage`]. `L` is at most [`MAX_CONTROL_FRAME`].
//! - Media datagram: the version byte, then the bincode encoding of one [`MediaDatagram`], whose
//!   RTP bytes are borrowed from the datagram on decode (no copy on the packet path). A packet
//!   that does not fit a datagram goes as [`RelayMessage::Media`] on the control stream instead.
//!
//! # Compatibility rule
//! The version byte names the whole wire format. Any change to a message — a new variant, a new
//! field, a reordered field — makes a new version. A node decodes only the versions it lists in
//! its [`RelayMessage::Hello`]; two nodes talk in the highest version both support, and a peer
//! with none in common is sent [`RelayMessage::Error`] and disconnected. That keeps a rolling
//! upgrade possible: a new node keeps speaking the old version until every peer knows the new one.

use crate::ids::{ParticipantId, RoomName, TrackId};
use crate::signal::{ModerationAction, ParticipantInfo, RoomSettings, TrackInfo};
use serde::{Deserialize, Serialize};

/// The wire-format version this build speaks.
pub const RELAY_VERSION: u8 = 2;
/// Versions this build can decode, oldest first.
pub const SUPPORTED_VERSIONS: &[u8] = &[2];
/// Largest control frame (version byte + message) a node accepts: room snapshots of a few
/// thousand participants fit; anything larger is a protocol violation.
pub const MAX_CONTROL_FRAME: usize = 4 * 1024 * 1024;
/// Largest RTP packet carried by the relay, over a datagram or the stream.
pub const MAX_RTP_PACKET: usize = 64 * 1024;
/// ALPN protocol id of the relay's QUIC connections.
pub const ALPN: &[u8] = b"kaskade-relay/1";

/// A node's id within the mesh.
pub type NodeName = String;

/// One codec a published track may carry, as negotiated with its publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCodec {
    pub payload_type: u8,
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
}

/// A track as the mesh knows it: what the room lists, where it comes from, and its codecs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTrack {
    pub info: TrackInfo,
    /// The node whose client publishes it.
    pub origin: NodeName,
    pub origin_site: String,
    pub codecs: Vec<RelayCodec>,
}

/// A set of simulcast layers (bit `n` = layer `n`, 0 lowest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerSet(pub u8);

impl LayerSet {
    pub const ALL: LayerSet = LayerSet(0b111);

    pub fn single(layer: u8) -> Self {
        Self(1u8.checked_shl(u32::from(layer)).unwrap_or(0))
    }

    /// Layers `0..=layer`: what a subscriber capped at `layer` may be switched between.
    pub fn up_to(layer: u8) -> Self {
        Self(
            1u8.checked_shl(u32::from(layer) + 1)
                .map_or(u8::MAX, |bit| bit - 1),
        )
    }

    pub fn contains(self, layer: u8) -> bool {
        layer < 8 && self.0 & (1 << layer) != 0
    }

    pub fn union(self, other: LayerSet) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Every control message. `channel` numbers are chosen by the subscribing side, unique per
/// connection and direction: media and replies for a subscription carry the subscriber's number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayMessage {
    /// First frame on a connection, from both sides.
    Hello {
        node: NodeName,
        site: String,
        /// Wire-format versions the sender decodes.
        versions: Vec<u8>,
        software: String,
    },
    /// The sender has (or no longer has) local members in `room` and wants to hear about it.
    RoomInterest {
        room: RoomName,
        interested: bool,
    },
    /// The sender's local part of a room: its members and the tracks they publish. Sent in answer
    /// to `RoomInterest { interested: true }` (possibly empty) and after a reconnect.
    RoomState {
        room: RoomName,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<RelayTrack>,
    },
    ParticipantJoined {
        room: RoomName,
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        room: RoomName,
        participant: ParticipantId,
    },
    TrackAnnounce {
        room: RoomName,
        track: RelayTrack,
    },
    TrackWithdraw {
        room: RoomName,
        track: TrackId,
    },
    TrackMuted {
        room: RoomName,
        track: TrackId,
        muted: bool,
    },
    Chat {
        room: RoomName,
        from: ParticipantId,
        name: String,
        text: String,
        ts: u64,
    },
    /// Send me `track`'s packets of `layers` on `channel`.
    Subscribe {
        room: RoomName,
        track: TrackId,
        channel: u32,
        layers: LayerSet,
    },
    /// The subscription on `channel` is served.
    Subscribed {
        channel: u32,
    },
    /// Not served here: subscribe at `via` instead (it already carries the track into your site).
    Redirect {
        channel: u32,
        via: NodeName,
    },
    /// Not served, and no point retrying here (the track is gone).
    SubscribeRefused {
        channel: u32,
        reason: String,
    },
    /// The subscriber changes which layers it wants.
    SetLayers {
        channel: u32,
        layers: LayerSet,
    },
    Unsubscribe {
        channel: u32,
    },
    /// A subscriber behind the sender needs a keyframe on `layer`.
    KeyframeRequest {
        channel: u32,
        layer: u8,
    },
    /// Source sequence numbers of `layer` the sender is missing; answer from the packet cache.
    Nack {
        channel: u32,
        layer: u8,
        seqs: Vec<u16>,
    },
    /// A media packet too large for a datagram (same meaning as [`MediaDatagram`]).
    Media {
        channel: u32,
        layer: u8,
        link_seq: u32,
        rtp: Vec<u8>,
    },
    /// Keepalive carrying the sender's current RTT estimate of the link, in microseconds.
    Ping {
        nonce: u64,
        rtt_us: u32,
    },
    Pong {
        nonce: u64,
    },
    /// The sender is closing the connection because of this.
    Error {
        reason: String,
    },
    /// A local participant's role or raised hand changed.
    ParticipantUpdated {
        room: RoomName,
        participant: ParticipantInfo,
    },
    /// A host connected to the sender acts on `target`, a participant connected to the receiver
    /// (the receiver checks that `by` is a host it knows from the sender).
    Moderate {
        room: RoomName,
        by: ParticipantId,
        target: ParticipantId,
        action: ModerationAction,
    },
    /// A host connected to the sender changed the room's settings; also sent after `RoomState`.
    RoomSettings {
        room: RoomName,
        settings: RoomSettings,
    },
    /// Audio levels (RFC 6464 dBov, 0 loudest) of the sender's local publishers that spoke in
    /// the last interval, for dominant-speaker detection across nodes.
    AudioLevels {
        room: RoomName,
        levels: Vec<(ParticipantId, u8)>,
    },
    /// Who waits in the room's lobby on the sender (its whole list, replacing the last one), so
    /// hosts on every node can admit them.
    RoomLobby {
        room: RoomName,
        waiting: Vec<(ParticipantId, String)>,
    },
}

/// One RTP packet of a subscription, as a QUIC datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaDatagram<'a> {
    /// The subscriber's channel number.
    pub channel: u32,
    pub layer: u8,
    /// Per-connection, per-direction sequence number of media frames (datagrams and
    /// [`RelayMessage::Media`]): the receiver estimates link loss from its gaps.
    pub link_seq: u32,
    /// The RTP packet (header without extensions, then payload), unencrypted: the link is.
    #[serde(borrow, with = "serde_bytes_borrowed")]
    pub rtp: &'a [u8],
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayDecodeError {
    #[error("empty frame")]
    Empty,
    #[error("unsupported relay version {0}")]
    Version(u8),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_CONTROL_FRAME>,
> {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_CONTROL_FRAME>()
}

fn check_version(frame: &[u8]) -> Result<&[u8], RelayDecodeError> {
    let (&version, body) = frame.split_first().ok_or(RelayDecodeError::Empty)?;
    if version != RELAY_VERSION {
        return Err(RelayDecodeError::Version(version));
    }
    Ok(body)
}

/// Encodes a control message as a whole frame, length prefix included.
pub fn encode_control(message: &RelayMessage) -> Result<Vec<u8>, RelayDecodeError> {
    let mut out = vec![0, 0, 0, 0, RELAY_VERSION];
    bincode::serde::encode_into_std_write(message, &mut out, config())
        .map_err(|e| RelayDecodeError::Malformed(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_CONTROL_FRAME {
        return Err(RelayDecodeError::TooLarge(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one control frame body (after the length prefix: version byte + message).
pub fn decode_control(frame: &[u8]) -> Result<RelayMessage, RelayDecodeError> {
    if frame.len() > MAX_CONTROL_FRAME {
        return Err(RelayDecodeError::TooLarge(frame.len()));
    }
    let body = check_version(frame)?;
    let (message, used): (RelayMessage, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| RelayDecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(RelayDecodeError::Trailing(body.len() - used));
    }
    if let RelayMessage::Media { rtp, .. } = &message
        && rtp.len() > MAX_RTP_PACKET
    {
        return Err(RelayDecodeError::TooLarge(rtp.len()));
    }
    Ok(message)
}

/// Reads the length prefix of a control frame: the body length, if acceptable.
pub fn control_frame_len(prefix: [u8; 4]) -> Result<usize, RelayDecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(RelayDecodeError::Empty);
    }
    if len > MAX_CONTROL_FRAME {
        return Err(RelayDecodeError::TooLarge(len));
    }
    Ok(len)
}

/// Encodes a media datagram into `out` (cleared first), reusing its capacity.
pub fn encode_datagram(
    datagram: &MediaDatagram<'_>,
    out: &mut Vec<u8>,
) -> Result<(), RelayDecodeError> {
    if datagram.rtp.len() > MAX_RTP_PACKET {
        return Err(RelayDecodeError::TooLarge(datagram.rtp.len()));
    }
    out.clear();
    out.push(RELAY_VERSION);
    bincode::serde::encode_into_std_write(datagram, out, config())
        .map_err(|e| RelayDecodeError::Malformed(e.to_string()))?;
    Ok(())
}

/// Decodes a media datagram; its RTP bytes borrow from `datagram`.
pub fn decode_datagram(datagram: &[u8]) -> Result<MediaDatagram<'_>, RelayDecodeError> {
    if datagram.len() > MAX_RTP_PACKET + 32 {
        return Err(RelayDecodeError::TooLarge(datagram.len()));
    }
    let body = check_version(datagram)?;
    let (decoded, used): (MediaDatagram<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(body, config())
            .map_err(|e| RelayDecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(RelayDecodeError::Trailing(body.len() - used));
    }
    Ok(decoded)
}

/// Serde glue so `&[u8]` is written as a byte string and borrowed back on decode.
mod serde_bytes_borrowed {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<&'a [u8], D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{MediaKind, Role, TrackSource};

    fn track() -> RelayTrack {
        RelayTrack {
            info: TrackInfo {
                id: TrackId("t1".into()),
                participant: ParticipantId("p1".into()),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                layers: vec!["q".into(), "h".into(), "f".into()],
                muted: false,
            },
            origin: "n1".into(),
            origin_site: "a".into(),
            codecs: vec![RelayCodec {
                payload_type: 96,
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
            }],
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        let len = control_frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    #[test]
    fn control_messages_round_trip() {
        let room = RoomName::parse("class").unwrap();
        let messages = vec![
            RelayMessage::Hello {
                node: "n1".into(),
                site: "a".into(),
                versions: SUPPORTED_VERSIONS.to_vec(),
                software: "kaskade".into(),
            },
            RelayMessage::RoomState {
                room: room.clone(),
                participants: vec![ParticipantInfo {
                    id: ParticipantId("p1".into()),
                    name: "Ada".into(),
                    role: Role::Host,
                    hand_raised_at: Some(1_700_000_000_000),
                }],
                tracks: vec![track()],
            },
            RelayMessage::Moderate {
                room: room.clone(),
                by: ParticipantId("p1".into()),
                target: ParticipantId("p2".into()),
                action: ModerationAction::SetRole {
                    role: Role::Speaker,
                },
            },
            RelayMessage::RoomSettings {
                room: room.clone(),
                settings: RoomSettings {
                    only_hosts_publish: true,
                    locked: true,
                    lobby: true,
                },
            },
            RelayMessage::AudioLevels {
                room: room.clone(),
                levels: vec![(ParticipantId("p1".into()), 30)],
            },
            RelayMessage::RoomLobby {
                room: room.clone(),
                waiting: vec![(ParticipantId("p2".into()), "Guest".into())],
            },
            RelayMessage::Subscribe {
                room,
                track: TrackId("t1".into()),
                channel: 7,
                layers: LayerSet::single(2),
            },
            RelayMessage::Nack {
                channel: 7,
                layer: 1,
                seqs: vec![1, 65535],
            },
            RelayMessage::Ping {
                nonce: u64::MAX,
                rtt_us: 1234,
            },
        ];
        for m in messages {
            let frame = encode_control(&m).unwrap();
            assert_eq!(decode_control(body(&frame)).unwrap(), m);
        }
    }

    #[test]
    fn datagrams_round_trip_without_copying() {
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0xaa, 0xbb];
        let d = MediaDatagram {
            channel: 3,
            layer: 2,
            link_seq: 99,
            rtp: &rtp,
        };
        let mut out = Vec::new();
        encode_datagram(&d, &mut out).unwrap();
        assert!(
            out.len() <= rtp.len() + 8,
            "header stays small: {}",
            out.len()
        );
        let back = decode_datagram(&out).unwrap();
        assert_eq!(back, d);
        let start = out.as_ptr() as usize;
        let inner = back.rtp.as_ptr() as usize;
        assert!(
            inner > start && inner < start + out.len(),
            "borrowed, not copied"
        );
    }

    #[test]
    fn wrong_version_truncated_and_trailing_frames_are_refused() {
        let frame = encode_control(&RelayMessage::Pong { nonce: 5 }).unwrap();
        let mut b = body(&frame).to_vec();
        b[0] = 9;
        assert_eq!(decode_control(&b), Err(RelayDecodeError::Version(9)));
        assert_eq!(decode_control(&[]), Err(RelayDecodeError::Empty));
        let full = body(&frame);
        for cut in 1..full.len() {
            assert!(decode_control(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = full.to_vec();
        long.push(0);
        assert_eq!(decode_control(&long), Err(RelayDecodeError::Trailing(1)));
        assert!(decode_datagram(&[RELAY_VERSION, 0xff]).is_err());
        assert!(decode_datagram(&[]).is_err());
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        assert!(matches!(
            control_frame_len(u32::MAX.to_be_bytes()),
            Err(RelayDecodeError::TooLarge(_))
        ));
        assert_eq!(control_frame_len([0; 4]), Err(RelayDecodeError::Empty));
        // A string length claiming 2^60 bytes inside a small frame must fail, not allocate.
        let mut evil = vec![RELAY_VERSION, 12]; // variant SubscribeRefused (index 12)
        evil.push(7); // channel 7
        evil.push(0xfd); // varint u64 marker
        evil.extend_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(decode_control(&evil).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = decode_control(&bytes);
            let _ = decode_datagram(&bytes);
            let mut versioned = bytes.clone();
            versioned.insert(0, RELAY_VERSION);
            let _ = decode_control(&versioned);
            let _ = decode_datagram(&versioned);
        }
    }

    #[test]
    fn layer_sets() {
        assert!(LayerSet::single(2).contains(2));
        assert!(!LayerSet::single(2).contains(1));
        assert_eq!(LayerSet::single(9), LayerSet(0));
        assert!(LayerSet::ALL.contains(0) && LayerSet::ALL.contains(2));
        assert!(LayerSet::single(0).union(LayerSet::single(1)).contains(1));
        assert_eq!(LayerSet::up_to(0), LayerSet(0b1));
        assert_eq!(LayerSet::up_to(2), LayerSet::ALL);
        assert_eq!(LayerSet::up_to(7), LayerSet(u8::MAX));
        assert_eq!(LayerSet::up_to(200), LayerSet(u8::MAX));
    }
}
