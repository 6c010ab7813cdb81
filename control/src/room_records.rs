//! Room records: which tenant a room belongs to, who opened it and when, kept as durable records
//! (`rooms/{room}`) so every node of the mesh resolves a room to the same tenant. A room name is
//! unique across the installation; a user of another tenant is told the room does not exist for
//! it, never who owns it. The room's protection lives here too, so every node checks the same:
//! its password (argon2id hash) and the accounts (or invites) banned from it.

use crate::records::{Expect, Record};
use crate::{ControlError, ControlPlane};
use kaskade_proto::RoomName;
use serde::{Deserialize, Serialize};

/// The durable part of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub tenant: String,
    /// The user who opened it.
    pub created_by: String,
    pub created_at_ms: u64,
    /// Argon2id PHC string of the room password; participants who may not host must give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// User ids (accounts, or `guest-…` invites) that may not join again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned: Vec<String>,
    /// Nobody new who may not host gets in (the host's setting, kept here so every node
    /// enforces it from the first join on).
    #[serde(default)]
    pub locked: bool,
    /// Newcomers who may not host wait in the lobby.
    #[serde(default)]
    pub lobby: bool,
}

impl RoomRecord {
    pub fn new(tenant: String, created_by: String, created_at_ms: u64) -> Self {
        Self {
            tenant,
            created_by,
            created_at_ms,
            password_hash: None,
            banned: Vec::new(),
            locked: false,
            lobby: false,
        }
    }
}

/// How often a conditional update of a room record is tried.
const UPDATE_TRIES: usize = 8;

/// Applies `change` to `room`'s record with a conditional write, retrying on conflicts; `false`
/// if the room has no record.
pub async fn update_room<C: ControlPlane>(
    control: &C,
    room: &RoomName,
    change: impl Fn(&mut RoomRecord),
) -> Result<bool, ControlError> {
    let key = room_key(room);
    for _ in 0..UPDATE_TRIES {
        let Some(stored) = control.get_record(&key).await? else {
            return Ok(false);
        };
        let mut record = decode(&stored)?;
        change(&mut record);
        let value = serde_json::to_vec(&record)
            .map_err(|e| ControlError::Malformed(format!("room record: {e}")))?;
        match control
            .put_record(&key, value, Expect::Version(stored.version))
            .await
        {
            Ok(_) => return Ok(true),
            Err(ControlError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ControlError::Unavailable(format!(
        "room {room} kept changing; try again"
    )))
}

/// Key of a room's record.
pub fn room_key(room: &RoomName) -> String {
    format!("rooms/{room}")
}

/// Prefix of every room record.
pub const ROOMS_PREFIX: &str = "rooms/";

fn decode(record: &Record) -> Result<RoomRecord, ControlError> {
    serde_json::from_slice(&record.value)
        .map_err(|e| ControlError::Malformed(format!("room record {}: {e}", record.key)))
}

/// The room's record, if it was opened.
pub async fn get_room<C: ControlPlane>(
    control: &C,
    room: &RoomName,
) -> Result<Option<RoomRecord>, ControlError> {
    match control.get_record(&room_key(room)).await? {
        Some(record) => decode(&record).map(Some),
        None => Ok(None),
    }
}

/// Opens `room` for `record.tenant` unless it exists; returns the record that holds afterwards
/// (the existing one if another request opened it first).
pub async fn open_room<C: ControlPlane>(
    control: &C,
    room: &RoomName,
    record: RoomRecord,
) -> Result<RoomRecord, ControlError> {
    let value = serde_json::to_vec(&record)
        .map_err(|e| ControlError::Malformed(format!("room record: {e}")))?;
    match control
        .put_record(&room_key(room), value, Expect::Absent)
        .await
    {
        Ok(_) => Ok(record),
        Err(ControlError::Conflict(_)) => get_room(control, room)
            .await?
            .ok_or_else(|| ControlError::Unavailable(format!("room {room} vanished"))),
        Err(e) => Err(e),
    }
}

/// Every room of `tenant`, by name.
pub async fn rooms_of<C: ControlPlane>(
    control: &C,
    tenant: &str,
) -> Result<Vec<(String, RoomRecord)>, ControlError> {
    let mut rooms = Vec::new();
    for record in control.list_records(ROOMS_PREFIX).await? {
        let room = decode(&record)?;
        if room.tenant == tenant {
            let name = record.key[ROOMS_PREFIX.len()..].to_owned();
            rooms.push((name, room));
        }
    }
    Ok(rooms)
}

/// Forgets `room` (deleting a room deletes its record).
pub async fn delete_room<C: ControlPlane>(
    control: &C,
    room: &RoomName,
) -> Result<bool, ControlError> {
    control.delete_record(&room_key(room), Expect::Any).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryControlPlane;

    fn record(tenant: &str) -> RoomRecord {
        RoomRecord::new(tenant.into(), "ada".into(), 1)
    }

    #[tokio::test]
    async fn the_first_opener_owns_the_room() {
        let control = MemoryControlPlane::default();
        let maths = RoomName::parse("maths").unwrap();
        assert_eq!(get_room(&control, &maths).await.unwrap(), None);
        assert_eq!(
            open_room(&control, &maths, record("school")).await.unwrap(),
            record("school")
        );
        // Another tenant opening the same name gets the existing owner back.
        let again = open_room(&control, &maths, record("other")).await.unwrap();
        assert_eq!(again.tenant, "school");
        let physics = RoomName::parse("physics").unwrap();
        open_room(&control, &physics, record("other"))
            .await
            .unwrap();
        let names: Vec<String> = rooms_of(&control, "school")
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["maths"]);
        assert!(
            update_room(&control, &maths, |r| r.banned.push("eve".into()))
                .await
                .unwrap()
        );
        assert_eq!(
            get_room(&control, &maths).await.unwrap().unwrap().banned,
            ["eve"]
        );
        let nowhere = RoomName::parse("nowhere").unwrap();
        assert!(!update_room(&control, &nowhere, |_| {}).await.unwrap());
        assert!(delete_room(&control, &maths).await.unwrap());
        assert_eq!(get_room(&control, &maths).await.unwrap(), None);
    }
}
