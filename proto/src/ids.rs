//! Identifiers that cross the wire: room names, participant ids and track ids, with their validation.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest room name accepted anywhere (WebSocket, WHIP/WHEP paths, admin API).
pub const MAX_ROOM_NAME_LEN: usize = 64;

/// A room's name as users type it: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

/// Why a room name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_NAME_LEN} characters")]
    TooLong,
    #[error("room name may only contain letters, digits, '.', '_' and '-'")]
    BadCharacter,
}

impl RoomName {
    pub fn parse(s: &str) -> Result<Self, RoomNameError> {
        if s.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if s.len() > MAX_ROOM_NAME_LEN {
            return Err(RoomNameError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(RoomNameError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomName {
    type Error = RoomNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RoomName> for String {
    fn from(r: RoomName) -> String {
        r.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A participant's id, unique within a node's lifetime (`p` + 16 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub String);

/// A published track's id, unique within a node's lifetime (`t` + 16 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub String);

impl ParticipantId {
    /// Whether `s` can be a participant id this software issued (`p` + letters and digits, at
    /// most 64 characters): ids from URLs and tokens are checked with it before use.
    pub fn is_well_formed(s: &str) -> bool {
        s.starts_with('p') && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_validated() {
        assert!(RoomName::parse("class-7b_2026.x").is_ok());
        assert_eq!(RoomName::parse(""), Err(RoomNameError::Empty));
        assert_eq!(
            RoomName::parse(&"a".repeat(65)),
            Err(RoomNameError::TooLong)
        );
        assert_eq!(RoomName::parse("a/b"), Err(RoomNameError::BadCharacter));
        assert_eq!(RoomName::parse("ä"), Err(RoomNameError::BadCharacter));
    }

    #[test]
    fn room_name_deserialisation_validates() {
        assert!(serde_json::from_str::<RoomName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<RoomName>("\"not ok\"").is_err());
    }
}
