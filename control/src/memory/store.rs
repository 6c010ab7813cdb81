//! Owns: [`RecordStore`], the durable records of the memory backend — a `BTreeMap` of key →
//! (value, version) with a store-wide version counter — and its optional persistence file.
//!
//! Versions come from one counter that only grows (also across reloads: the file keeps it), so a
//! key deleted and written again never gets a version it had before, as with etcd's revisions.
//!
//! With a file, every successful change rewrites the whole file before the call returns: the
//! new contents go to `<path>.tmp` (created with mode 0600), which is fsynced and renamed over
//! `<path>`, and the directory is fsynced. A change whose file could not be written is undone
//! in memory and fails with [`ControlError::Unavailable`]. The file also keeps the mesh secret,
//! so tokens signed before a restart still verify after it. The I/O happens while the store's
//! lock is held, on the calling task's thread: fine for the small, rarely written data records
//! hold (accounts, tenants, room settings).
//!
//! The format (JSON; byte strings as standard base64 with padding):
//!
//! ```json
//! {
//!   "format": 1,
//!   "secret": "<32 bytes>",
//!   "revision": 7,
//!   "records": [{ "key": "accounts/alice", "value": "<bytes>", "version": 7 }]
//! }
//! ```
//!
//! `revision` is the last version handed out; `records` are ordered by key.

use crate::ControlError;
use crate::records::{
    Expect, MAX_RECORD_VALUE_LEN, Record, check_record_key, check_record_prefix, check_record_value,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// The only file format this build reads and writes.
const FORMAT: u32 = 1;

/// The records, the version counter and, if persistent, where they are kept.
pub(super) struct RecordStore {
    records: BTreeMap<String, (Vec<u8>, u64)>,
    /// The last version handed out; the next write gets `revision + 1`.
    revision: u64,
    /// Written into the file with the records.
    secret: [u8; 32],
    file: Option<PathBuf>,
}

/// The file, as written.
#[derive(Serialize)]
struct FileOut<'a> {
    format: u32,
    secret: String,
    revision: u64,
    records: Vec<RecordOut<'a>>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    key: &'a str,
    value: String,
    version: u64,
}

/// Read first, so a file of another format is named as such rather than as a missing field.
#[derive(Deserialize)]
struct FileHeader {
    format: Option<u32>,
}

/// The file, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[allow(dead_code)]
    format: u32,
    secret: String,
    revision: u64,
    records: Vec<RecordIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    key: String,
    value: String,
    version: u64,
}

impl RecordStore {
    /// An empty store that lives in memory only, with a fresh secret.
    pub(super) fn in_memory() -> Self {
        Self {
            records: BTreeMap::new(),
            revision: 0,
            secret: rand::random(),
            file: None,
        }
    }

    /// The store kept in `path`: loaded from it when it exists, else created empty with a
    /// fresh secret and written there at once (so the secret survives a restart even before
    /// any record is written). Fails with [`ControlError::Malformed`] when the file is not a
    /// valid records file, [`ControlError::Unavailable`] when it cannot be read or written.
    pub(super) fn persistent(path: PathBuf) -> Result<Self, ControlError> {
        match fs::read(&path) {
            Ok(bytes) => {
                let mut store = parse(&bytes).map_err(|detail| {
                    ControlError::Malformed(format!("records file {}: {detail}", path.display()))
                })?;
                info!(path = %path.display(), records = store.records.len(), "loaded durable records");
                store.file = Some(path);
                Ok(store)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut store = Self::in_memory();
                store.file = Some(path);
                store.save()?;
                info!(path = %store.path_shown(), "created durable records file");
                Ok(store)
            }
            Err(e) => Err(ControlError::Unavailable(format!(
                "cannot read records file {}: {e}",
                path.display()
            ))),
        }
    }

    pub(super) fn secret(&self) -> [u8; 32] {
        self.secret
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Record>, ControlError> {
        check_record_key(key)?;
        Ok(self.records.get(key).map(|(value, version)| Record {
            key: key.to_string(),
            value: value.clone(),
            version: *version,
        }))
    }

    pub(super) fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<u64, ControlError> {
        check_record_key(key)?;
        check_record_value(key, &value)?;
        let current = self.version_of(key);
        if !expect.holds(current) {
            return Err(expect.conflict(key, current));
        }
        // Not given back on failure: a version that may have reached the disk is never reused.
        self.revision += 1;
        let version = self.revision;
        let previous = self.records.insert(key.to_string(), (value, version));
        if let Err(e) = self.save() {
            match previous {
                Some(previous) => self.records.insert(key.to_string(), previous),
                None => self.records.remove(key),
            };
            return Err(e);
        }
        Ok(version)
    }

    pub(super) fn delete(&mut self, key: &str, expect: Expect) -> Result<bool, ControlError> {
        check_record_key(key)?;
        let current = self.version_of(key);
        if !expect.holds(current) {
            return Err(expect.conflict(key, current));
        }
        let Some(previous) = self.records.remove(key) else {
            return Ok(false);
        };
        if let Err(e) = self.save() {
            self.records.insert(key.to_string(), previous);
            return Err(e);
        }
        Ok(true)
    }

    pub(super) fn list(&self, prefix: &str) -> Result<Vec<Record>, ControlError> {
        check_record_prefix(prefix, true)?;
        Ok(self
            .under(prefix)
            .map(|(key, (value, version))| Record {
                key: key.clone(),
                value: value.clone(),
                version: *version,
            })
            .collect())
    }

    pub(super) fn delete_prefix(&mut self, prefix: &str) -> Result<u64, ControlError> {
        check_record_prefix(prefix, false)?;
        let keys: Vec<String> = self.under(prefix).map(|(key, _)| key.clone()).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let removed: Vec<(String, (Vec<u8>, u64))> = keys
            .into_iter()
            .filter_map(|key| self.records.remove_entry(&key))
            .collect();
        if let Err(e) = self.save() {
            self.records.extend(removed);
            return Err(e);
        }
        Ok(removed.len() as u64)
    }

    fn version_of(&self, key: &str) -> Option<u64> {
        self.records.get(key).map(|(_, version)| *version)
    }

    /// The records whose key starts with `prefix`, in key order.
    fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a (Vec<u8>, u64))> + 'a {
        self.records
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    fn path_shown(&self) -> String {
        self.file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Writes the whole store to its file, if it has one.
    fn save(&self) -> Result<(), ControlError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let out = FileOut {
            format: FORMAT,
            secret: BASE64.encode(self.secret),
            revision: self.revision,
            records: self
                .records
                .iter()
                .map(|(key, (value, version))| RecordOut {
                    key,
                    value: BASE64.encode(value),
                    version: *version,
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&out).map_err(|e| {
            ControlError::Unavailable(format!(
                "cannot encode records file {}: {e}",
                path.display()
            ))
        })?;
        bytes.push(b'\n');
        replace_file(path, &bytes).map_err(|e| {
            ControlError::Unavailable(format!("cannot write records file {}: {e}", path.display()))
        })
    }
}

/// `<path>.tmp`, beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Replaces `path` with `bytes` atomically: a fresh `<path>.tmp` (mode 0600) is written,
/// fsynced and renamed over `path`, then the directory is fsynced. Once the rename is done the
/// new contents are in place, so a failure of the last fsync is only logged.
fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    // A leftover of a crash may have another owner or mode; start from nothing.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = write_new_private(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(path = %path.display(), error = %e, "could not fsync the records file's directory");
    }
    Ok(())
}

fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A store (without file) from the file's bytes, or what is wrong with them.
fn parse(bytes: &[u8]) -> Result<RecordStore, String> {
    let header: FileHeader =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    match header.format {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(format!(
                "has format {other}, this build reads format {FORMAT}"
            ));
        }
        None => return Err("has no \"format\" field: not a Kaskade records file".into()),
    }
    let file: FileIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let secret = BASE64
        .decode(&file.secret)
        .map_err(|e| format!("secret is not base64: {e}"))?;
    let secret: [u8; 32] = secret
        .try_into()
        .map_err(|s: Vec<u8>| format!("secret is {} bytes, not 32", s.len()))?;
    let mut records = BTreeMap::new();
    for record in file.records {
        let key = record.key;
        check_record_key(&key).map_err(|e| e.to_string())?;
        let value = BASE64
            .decode(&record.value)
            .map_err(|e| format!("value of record {key:?} is not base64: {e}"))?;
        if value.len() > MAX_RECORD_VALUE_LEN {
            return Err(format!(
                "value of record {key:?} is {} bytes, more than {MAX_RECORD_VALUE_LEN}",
                value.len()
            ));
        }
        if record.version == 0 || record.version > file.revision {
            return Err(format!(
                "record {key:?} has version {}, outside 1..={}",
                record.version, file.revision
            ));
        }
        if records
            .insert(key.clone(), (value, record.version))
            .is_some()
        {
            return Err(format!("record {key:?} appears twice"));
        }
    }
    Ok(RecordStore {
        records,
        revision: file.revision,
        secret,
        file: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::MemoryControlPlane;
    use super::*;
    use crate::ControlPlane;

    fn conflict<T: std::fmt::Debug>(result: Result<T, ControlError>) -> String {
        match result {
            Err(ControlError::Conflict(message)) => message,
            other => panic!("expected Conflict, got {other:?}"),
        }
    }

    fn keys(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.key.as_str()).collect()
    }

    #[tokio::test]
    async fn absent_writes_once_and_versions_guard_updates() {
        let cp = MemoryControlPlane::default();
        assert_eq!(cp.get_record("a/k").await, Ok(None));
        let v1 = cp
            .put_record("a/k", b"one".to_vec(), Expect::Absent)
            .await
            .unwrap();
        let message = conflict(cp.put_record("a/k", b"two".to_vec(), Expect::Absent).await);
        assert!(message.contains("\"a/k\""), "names the key: {message}");
        assert_eq!(
            cp.get_record("a/k").await.unwrap(),
            Some(Record {
                key: "a/k".into(),
                value: b"one".to_vec(),
                version: v1,
            })
        );

        let v2 = cp
            .put_record("a/k", b"two".to_vec(), Expect::Version(v1))
            .await
            .unwrap();
        assert!(v2 > v1);
        // The old version no longer matches: the lost-update case.
        conflict(
            cp.put_record("a/k", b"three".to_vec(), Expect::Version(v1))
                .await,
        );
        conflict(
            cp.put_record("a/none", b"x".to_vec(), Expect::Version(v2))
                .await,
        );
        assert_eq!(cp.get_record("a/none").await, Ok(None));

        let v3 = cp
            .put_record("a/k", b"any".to_vec(), Expect::Any)
            .await
            .unwrap();
        assert!(v3 > v2);
        assert_eq!(cp.get_record("a/k").await.unwrap().unwrap().value, b"any");
    }

    #[tokio::test]
    async fn deletes_are_conditional_and_versions_never_repeat() {
        let cp = MemoryControlPlane::default();
        assert_eq!(cp.delete_record("k", Expect::Any).await, Ok(false));
        assert_eq!(cp.delete_record("k", Expect::Absent).await, Ok(false));
        conflict(cp.delete_record("k", Expect::Version(1)).await);

        let v1 = cp.put_record("k", vec![1], Expect::Absent).await.unwrap();
        conflict(cp.delete_record("k", Expect::Absent).await);
        conflict(cp.delete_record("k", Expect::Version(v1 + 1)).await);
        assert_eq!(cp.delete_record("k", Expect::Version(v1)).await, Ok(true));
        assert_eq!(cp.get_record("k").await, Ok(None));

        let v2 = cp.put_record("k", vec![2], Expect::Absent).await.unwrap();
        assert!(v2 > v1, "a recreated key gets a new version");
        conflict(cp.delete_record("k", Expect::Version(v1)).await);
        assert_eq!(cp.delete_record("k", Expect::Any).await, Ok(true));
    }

    #[tokio::test]
    async fn lists_are_ordered_by_key_and_cut_by_prefix() {
        let cp = MemoryControlPlane::default();
        for key in ["b/2", "a/1", "b/1", "b/10", "ba/1", "b"] {
            cp.put_record(key, key.as_bytes().to_vec(), Expect::Any)
                .await
                .unwrap();
        }
        let all = cp.list_records("").await.unwrap();
        assert_eq!(keys(&all), ["a/1", "b", "b/1", "b/10", "b/2", "ba/1"]);
        assert!(all.iter().all(|r| r.value == r.key.as_bytes()));
        assert_eq!(
            keys(&cp.list_records("b/").await.unwrap()),
            ["b/1", "b/10", "b/2"]
        );
        assert_eq!(
            keys(&cp.list_records("b").await.unwrap()),
            ["b", "b/1", "b/10", "b/2", "ba/1"]
        );
        assert_eq!(
            keys(&cp.list_records("b/1").await.unwrap()),
            ["b/1", "b/10"]
        );
        assert!(cp.list_records("c/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn deleting_a_prefix_counts_what_went() {
        let cp = MemoryControlPlane::default();
        for key in ["t/1/a", "t/1/b", "t/1/c/d", "t/10/a", "t/2/a"] {
            cp.put_record(key, vec![], Expect::Any).await.unwrap();
        }
        assert_eq!(cp.delete_records("t/1/").await, Ok(3));
        assert_eq!(
            keys(&cp.list_records("").await.unwrap()),
            ["t/10/a", "t/2/a"]
        );
        assert_eq!(cp.delete_records("t/1/").await, Ok(0));
        assert_eq!(cp.delete_records("t").await, Ok(2));
        assert!(cp.list_records("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn bad_keys_prefixes_and_values_are_invalid() {
        let cp = MemoryControlPlane::default();
        let invalid = |r: Result<(), ControlError>| matches!(r, Err(ControlError::Invalid(_)));
        for key in ["", "/a", "a/", "a//b", "a/../b", "a\0b", "a\tb"] {
            assert!(invalid(cp.get_record(key).await.map(drop)), "get {key:?}");
            assert!(
                invalid(cp.put_record(key, vec![], Expect::Any).await.map(drop)),
                "put {key:?}"
            );
            assert!(
                invalid(cp.delete_record(key, Expect::Any).await.map(drop)),
                "delete {key:?}"
            );
        }
        let long = "k".repeat(crate::records::MAX_RECORD_KEY_LEN + 1);
        assert!(invalid(
            cp.put_record(&long, vec![], Expect::Any).await.map(drop)
        ));
        let big = vec![0; MAX_RECORD_VALUE_LEN + 1];
        assert!(invalid(
            cp.put_record("k", big, Expect::Any).await.map(drop)
        ));
        assert!(invalid(cp.delete_records("").await.map(drop)));
        assert!(invalid(cp.list_records("/a").await.map(drop)));
        assert!(invalid(cp.delete_records("a//").await.map(drop)));
        assert!(
            cp.list_records("").await.unwrap().is_empty(),
            "nothing was written"
        );
    }

    #[tokio::test]
    async fn records_and_secret_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        let (secret, v_alice, v_big) = {
            let cp = MemoryControlPlane::persistent(path.clone()).unwrap();
            assert!(path.exists(), "written at creation, to keep the secret");
            let secret = cp.mesh_secret().await.unwrap();
            let v_alice = cp
                .put_record("accounts/alice", b"{\"a\":1}".to_vec(), Expect::Absent)
                .await
                .unwrap();
            cp.put_record("accounts/bob", vec![0, 255, 10], Expect::Absent)
                .await
                .unwrap();
            let big: Vec<u8> = (0..MAX_RECORD_VALUE_LEN).map(|i| i as u8).collect();
            let v_big = cp.put_record("blobs/big", big, Expect::Any).await.unwrap();
            cp.put_record("gone", vec![], Expect::Any).await.unwrap();
            assert_eq!(cp.delete_record("gone", Expect::Any).await, Ok(true));
            assert_eq!(cp.delete_records("accounts/b").await, Ok(1));
            (secret, v_alice, v_big)
        };
        assert!(!temp_path(&path).exists(), "no temporary file left behind");

        let cp = MemoryControlPlane::persistent(path.clone()).unwrap();
        assert_eq!(cp.mesh_secret().await.unwrap(), secret);
        let records = cp.list_records("").await.unwrap();
        assert_eq!(keys(&records), ["accounts/alice", "blobs/big"]);
        assert_eq!(records[0].value, b"{\"a\":1}");
        assert_eq!(records[0].version, v_alice);
        assert_eq!(records[1].value.len(), MAX_RECORD_VALUE_LEN);
        assert_eq!(records[1].value[257], 1);
        assert_eq!(records[1].version, v_big);
        // The version counter was kept too: versions of the earlier run are not handed out again.
        let next = cp.put_record("gone", vec![], Expect::Absent).await.unwrap();
        assert!(next > v_big + 1, "{next} after {v_big} and a deleted write");
        conflict(
            cp.put_record("accounts/alice", vec![], Expect::Version(v_alice + 1))
                .await,
        );
        cp.put_record("accounts/alice", vec![], Expect::Version(v_alice))
            .await
            .unwrap();

        // A fresh file gets a fresh secret.
        let other = MemoryControlPlane::persistent(dir.path().join("other.json")).unwrap();
        assert_ne!(other.mesh_secret().await.unwrap(), secret);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_file_is_private_even_over_a_public_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let cp = MemoryControlPlane::persistent(path.clone()).unwrap();
        assert_eq!(mode(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        // A leftover temporary file (a crash mid-write) is replaced, not reused.
        fs::write(temp_path(&path), b"junk").unwrap();
        fs::set_permissions(temp_path(&path), fs::Permissions::from_mode(0o666)).unwrap();
        cp.put_record("k", b"v".to_vec(), Expect::Any)
            .await
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn corrupt_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        let good = {
            let cp = MemoryControlPlane::persistent(path.clone()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(cp.put_record("a", b"x".to_vec(), Expect::Any))
                .unwrap();
            fs::read_to_string(&path).unwrap()
        };
        let secret = serde_json::from_str::<serde_json::Value>(&good).unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let file = |revision: u64, records: &str| {
            format!(
                r#"{{"format":1,"secret":"{secret}","revision":{revision},"records":[{records}]}}"#
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "not valid JSON"),
            (good[..good.len() / 2].to_string(), "not valid JSON"),
            ("[1,2]".into(), "not valid JSON"),
            ("{}".into(), "no \"format\" field"),
            (good.replace("\"format\": 1", "\"format\": 2"), "format 2"),
            (good.replace(&secret, "AAAA"), "secret is 3 bytes"),
            (good.replace(&secret, "*"), "secret is not base64"),
            (
                file(1, r#"{"key":"a","value":"eA==","version":1,"x":0}"#),
                "unknown field",
            ),
            (
                file(1, r#"{"key":"/a","value":"eA==","version":1}"#),
                "starts with '/'",
            ),
            (
                file(1, r#"{"key":"a","value":"!","version":1}"#),
                "not base64",
            ),
            (
                file(1, r#"{"key":"a","value":"eA==","version":2}"#),
                "outside 1..=1",
            ),
            (
                file(1, r#"{"key":"a","value":"eA==","version":0}"#),
                "outside 1..=1",
            ),
            (
                file(
                    2,
                    r#"{"key":"a","value":"eA==","version":1},{"key":"a","value":"eA==","version":2}"#,
                ),
                "appears twice",
            ),
            (
                file(1, r#"{"key":"a","version":1}"#),
                "missing field `value`",
            ),
        ];
        for (contents, why) in cases {
            fs::write(&path, &contents).unwrap();
            match MemoryControlPlane::persistent(path.clone()) {
                Err(ControlError::Malformed(message)) => {
                    assert!(message.contains(why), "{contents:?}: {message}");
                    assert!(
                        message.contains("records.json"),
                        "names the file: {message}"
                    );
                }
                Err(other) => panic!("{contents:?}: expected Malformed, got {other:?}"),
                Ok(_) => panic!("{contents:?}: loaded"),
            }
        }
        // A well-formed file of the same shape still loads.
        fs::write(&path, file(1, r#"{"key":"a","value":"eA==","version":1}"#)).unwrap();
        assert!(MemoryControlPlane::persistent(path.clone()).is_ok());
    }

    #[test]
    fn unreadable_or_unwritable_places_are_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: cannot be read as a file.
        let result = MemoryControlPlane::persistent(dir.path().to_path_buf());
        assert!(
            matches!(result, Err(ControlError::Unavailable(_))),
            "{:?}",
            result.err()
        );
        // A missing parent directory: the first write fails.
        let result = MemoryControlPlane::persistent(dir.path().join("no/such/records.json"));
        assert!(
            matches!(result, Err(ControlError::Unavailable(_))),
            "{:?}",
            result.err()
        );
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("records.json");
        let cp = MemoryControlPlane::persistent(path.clone()).unwrap();
        let v1 = cp
            .put_record("a/1", b"1".to_vec(), Expect::Any)
            .await
            .unwrap();
        cp.put_record("a/2", b"2".to_vec(), Expect::Any)
            .await
            .unwrap();
        // Make the next writes fail: the temporary file's name is taken by a directory.
        fs::create_dir(temp_path(&path)).unwrap();
        let unavailable =
            |r: Result<(), ControlError>| matches!(r, Err(ControlError::Unavailable(_)));
        assert!(unavailable(
            cp.put_record("a/1", b"x".to_vec(), Expect::Any)
                .await
                .map(drop)
        ));
        assert!(unavailable(
            cp.put_record("a/3", b"3".to_vec(), Expect::Any)
                .await
                .map(drop)
        ));
        assert!(unavailable(
            cp.delete_record("a/1", Expect::Any).await.map(drop)
        ));
        assert!(unavailable(cp.delete_records("a/").await.map(drop)));
        let records = cp.list_records("").await.unwrap();
        assert_eq!(keys(&records), ["a/1", "a/2"]);
        assert_eq!(
            (records[0].value.as_slice(), records[0].version),
            (&b"1"[..], v1)
        );
        fs::remove_dir(temp_path(&path)).unwrap();
        assert_eq!(cp.delete_records("a/").await, Ok(2));
        drop(cp);
        let reloaded = MemoryControlPlane::persistent(path).unwrap();
        assert!(reloaded.list_records("").await.unwrap().is_empty());
    }
}
