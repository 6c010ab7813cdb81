//! Resume tokens: an HS256 JWT (the `jsonwebtoken` crate) naming a room, a participant and its
//! display name, signed with the mesh's shared secret so any node of the mesh can check a token
//! another node issued. A client presents it in `join` to come back as the same participant
//! after its node died or asked it to reconnect.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kaskade_mesh::admission::ResumeClaim;
use kaskade_proto::signal::Role;
use kaskade_proto::{ParticipantId, RoomName};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a token stays valid after it was issued (a session's whole life, since a token
/// is issued at join only).
pub const RESUME_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// `aud` of every resume token: an access token (`kaskade-access`) never passes as one.
pub const RESUME_AUDIENCE: &str = "kaskade-resume";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    /// Room name.
    room: String,
    /// Participant id.
    sub: String,
    name: String,
    /// The role ceiling the first join was authorised with (`None`: no access control).
    #[serde(default)]
    ceiling: Option<Role>,
    exp: u64,
}

/// Issues and checks resume tokens with one key.
pub struct ResumeKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl ResumeKeys {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn issue(
        &self,
        room: &RoomName,
        participant: &ParticipantId,
        name: &str,
        ceiling: Option<Role>,
    ) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d + RESUME_TOKEN_LIFETIME)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            aud: RESUME_AUDIENCE.into(),
            room: room.to_string(),
            sub: participant.0.clone(),
            name: name.to_owned(),
            ceiling,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    pub fn verify(&self, room: &RoomName, token: &str) -> Result<ResumeClaim, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.set_audience(&[RESUME_AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| e.to_string())?;
        if data.claims.room != room.as_str() {
            return Err("token is for another room".into());
        }
        let id = data.claims.sub;
        if !ParticipantId::is_well_formed(&id) {
            return Err("token names an invalid participant".into());
        }
        Ok(ResumeClaim {
            participant: ParticipantId(id),
            name: data.claims.name,
            ceiling: data.claims.ceiling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_resumes_its_participant_in_its_room_only() {
        let keys = ResumeKeys::new(b"mesh secret");
        let room = RoomName::parse("class").unwrap();
        let token = keys.issue(
            &room,
            &ParticipantId("p0123".into()),
            "Ada",
            Some(Role::Audience),
        );
        let claim = keys.verify(&room, &token).unwrap();
        assert_eq!(claim.participant.0, "p0123");
        assert_eq!(claim.name, "Ada");
        assert_eq!(claim.ceiling, Some(Role::Audience));
        let other = RoomName::parse("other").unwrap();
        assert!(keys.verify(&other, &token).is_err());
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let keys = ResumeKeys::new(b"mesh secret");
        let room = RoomName::parse("class").unwrap();
        let foreign =
            ResumeKeys::new(b"another mesh").issue(&room, &ParticipantId("p1".into()), "x", None);
        assert!(keys.verify(&room, &foreign).is_err());
        assert!(keys.verify(&room, "not.a.token").is_err());
        assert!(keys.verify(&room, "").is_err());
    }
}
