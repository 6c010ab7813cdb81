//! Owns: `EtcdControlPlane`, the mesh backend of [`ControlPlane`] on etcd v3 (`etcd-client`).
//! Nodes register under etcd leases, so a node that stops keeping its lease alive disappears —
//! with its room placements and room shares — without anyone cleaning up after it, and a node
//! that exits cleanly revokes its lease so they disappear at once.
//!
//! Key layout, all under [`EtcdOptions::prefix`] (default [`DEFAULT_PREFIX`], `/kaskade/`):
//!
//! | key                              | value                  | attached to lease of      |
//! |----------------------------------|------------------------|---------------------------|
//! | `nodes/<node>`                   | JSON [`NodeRecord`]    | that node                 |
//! | `rooms/<room>/placement/<site>`  | node id (UTF-8 text)   | the node placed there     |
//! | `rooms/<room>/shares/<node>`     | JSON [`RoomShare`]     | the publishing node       |
//! | `records/<key>`                  | the record's bytes     | none: permanent           |
//!
//! `<room>` is a validated [`RoomName`] (`[A-Za-z0-9._-]{1,64}`); node ids and sites are opaque
//! but may not contain `/` (refused with [`ControlError::Malformed`]), so every key parses back.
//! `<key>` is a durable record's key as checked by [`check_record_key`]; a record's version is
//! the etcd key's mod revision, so a conditional write is one transaction comparing the key's
//! create revision (`Expect::Absent`: 0) or mod revision (`Expect::Version`).
//!
//! Several endpoints (the members of one etcd cluster) are used one at a time with failover
//! (`members`: a request that meets a dead, hung or leaderless member moves on to the next one).
//! Every request is bounded by [`EtcdOptions::request_timeout`] and fails with
//! [`ControlError::Unavailable`] when no member answers in time. [`ControlPlane::watch_nodes`]
//! is fed by one background task per `EtcdControlPlane` (a get of `nodes/` followed by a watch
//! from the next revision on the member in use, probed with progress requests); when that member
//! fails the task re-syncs on the next one, while etcd as a whole is unreachable the view keeps
//! its last nodes with `reachable: false`, and the task re-syncs once etcd answers again. The
//! task stops when the `EtcdControlPlane` is dropped.

mod members;

use crate::placement::{accepts_placements, choose_node};
use crate::records::{Expect, Record, check_record_key, check_record_prefix, check_record_value};
use crate::{ControlError, ControlPlane, Lease, NodeId, NodeRecord, NodeView, RoomShare};
use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use kaskade_proto::RoomName;
use members::{CallError, Failure, Members, bounded};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/kaskade/";

/// Pause of the node watcher after a round in which no member could be followed.
const WATCH_RETRY: Duration = Duration::from_millis(300);
/// How often the node watcher asks etcd to prove its watch stream is alive.
const WATCH_PROBE_EVERY: Duration = Duration::from_secs(1);
/// How many times `place_room` re-reads after losing a placement race before giving up.
const PLACEMENT_ATTEMPTS: usize = 5;
/// Records per range request of `list_records`: at most ~2 MiB of values (64 KiB each), well
/// under gRPC's default 4 MiB message limit.
const RECORDS_PAGE: i64 = 32;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members of one etcd cluster, e.g. `http://127.0.0.1:2379`. Used one
    /// at a time: the first until a request fails on it, then the next (see `members`).
    pub endpoints: Vec<String>,
    /// Key prefix of this mesh (several meshes may share one etcd). A missing trailing `/` is
    /// added; an empty prefix means [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// How long one request may take before it fails with `Unavailable`.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: DEFAULT_PREFIX.into(),
            request_timeout: Duration::from_secs(3),
        }
    }
}

impl CallError {
    fn unavailable(self) -> ControlError {
        ControlError::Unavailable(self.to_string())
    }

    /// For a request made under `lease`: `LeaseExpired` when etcd does not know the lease.
    fn under_lease(self, lease: u64) -> ControlError {
        if self.is_lease_not_found() {
            ControlError::LeaseExpired(lease)
        } else {
            self.unavailable()
        }
    }
}

/// Builds the keys of the layout in the module docs.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let mut prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            prefix.to_string()
        };
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    fn node(&self, id: &str) -> String {
        format!("{}nodes/{id}", self.prefix)
    }

    fn placements(&self, room: &RoomName) -> String {
        format!("{}rooms/{}/placement/", self.prefix, room.as_str())
    }

    fn placement(&self, room: &RoomName, site: &str) -> String {
        format!("{}{site}", self.placements(room))
    }

    /// Where every room's placements and shares live.
    fn all_rooms(&self) -> String {
        format!("{}rooms/", self.prefix)
    }

    fn shares(&self, room: &RoomName) -> String {
        format!("{}rooms/{}/shares/", self.prefix, room.as_str())
    }

    fn share(&self, room: &RoomName, node: &str) -> String {
        format!("{}{node}", self.shares(room))
    }

    /// Where durable records live; `records() + p` is the etcd prefix of records' prefix `p`.
    fn records(&self) -> String {
        format!("{}records/", self.prefix)
    }

    fn record(&self, key: &str) -> String {
        format!("{}{key}", self.records())
    }

    /// Parses a `records/<key>` entry; `None` (with a warning) when it is not one this store
    /// could have written.
    fn parse_record(&self, kv: &KeyValue) -> Option<Record> {
        self.record_of(kv.key(), kv.value(), kv.mod_revision())
    }

    fn record_of(&self, full_key: &[u8], value: &[u8], mod_revision: i64) -> Option<Record> {
        let records = self.records();
        let key = std::str::from_utf8(full_key)
            .ok()
            .and_then(|k| k.strip_prefix(&records))
            .filter(|k| check_record_key(k).is_ok());
        let Some(key) = key else {
            warn!(key = %String::from_utf8_lossy(full_key), "ignoring record under a malformed key");
            return None;
        };
        match version_of(full_key, mod_revision) {
            Ok(version) => Some(Record {
                key: key.to_string(),
                value: value.to_vec(),
                version,
            }),
            Err(e) => {
                warn!(key = %key, error = %e, "ignoring record");
                None
            }
        }
    }

    /// Parses a `nodes/<id>` entry; `None` (with a warning) when it is malformed.
    fn parse_node(&self, kv: &KeyValue) -> Option<NodeRecord> {
        let id = node_id_of(&self.nodes(), kv.key())?;
        match serde_json::from_slice::<NodeRecord>(kv.value()) {
            Ok(record) if record.id == id => Some(record),
            Ok(record) => {
                warn!(node = %id, record_id = %record.id, "ignoring node record stored under another id");
                None
            }
            Err(e) => {
                warn!(node = %id, error = %e, "ignoring malformed node record");
                None
            }
        }
    }
}

/// The `<id>` of a `nodes/<id>` key, if the key is one.
fn node_id_of(nodes_prefix: &str, key: &[u8]) -> Option<NodeId> {
    let key = std::str::from_utf8(key).ok()?;
    let id = key.strip_prefix(nodes_prefix)?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

/// Refuses ids and sites that would not round-trip through the key layout.
fn check_key_part(what: &str, value: &str) -> Result<(), ControlError> {
    if value.is_empty() || value.contains('/') {
        return Err(ControlError::Malformed(format!(
            "{what} {value:?} must be non-empty and must not contain '/'"
        )));
    }
    Ok(())
}

fn check_node(node: &NodeRecord) -> Result<(), ControlError> {
    check_key_part("node id", &node.id)?;
    check_key_part("site", &node.site)
}

/// A record's version: its key's mod revision (always positive for a stored key).
fn record_version(kv: &KeyValue) -> Result<u64, ControlError> {
    version_of(kv.key(), kv.mod_revision())
}

fn version_of(full_key: &[u8], mod_revision: i64) -> Result<u64, ControlError> {
    u64::try_from(mod_revision)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            ControlError::Malformed(format!(
                "key {} has mod revision {mod_revision}",
                String::from_utf8_lossy(full_key)
            ))
        })
}

/// The comparisons under which a record at `full_key` meets `expect`.
fn record_compares(full_key: &str, expect: Expect) -> Vec<Compare> {
    match expect {
        Expect::Any => vec![],
        Expect::Absent => vec![Compare::create_revision(full_key, CompareOp::Equal, 0)],
        // A missing key has mod revision 0, hence the existence check; a version no etcd
        // revision can equal (0, or beyond i64) compares with -1, which never matches.
        Expect::Version(v) => vec![
            Compare::create_revision(full_key, CompareOp::Greater, 0),
            Compare::mod_revision(
                full_key,
                CompareOp::Equal,
                i64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(-1),
            ),
        ],
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` of a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or nothing): every key from `prefix` on.
    vec![0]
}

fn lease_id(lease: &Lease) -> Result<i64, ControlError> {
    i64::try_from(lease.id).map_err(|_| ControlError::LeaseExpired(lease.id))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(value).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// The key-values of the `index`th (get) operation of a transaction response.
fn txn_get(responses: &[TxnOpResponse], index: usize) -> &[KeyValue] {
    match responses.get(index) {
        Some(TxnOpResponse::Get(get)) => get.kvs(),
        _ => &[],
    }
}

pub struct EtcdControlPlane {
    /// One client per member, the member in use, failover. Shared with the node watcher.
    members: Arc<Members>,
    keys: Keys,
    view: watch::Receiver<NodeView>,
    watcher: JoinHandle<()>,
    /// The record last written under each lease, so an unchanged keep-alive writes nothing.
    written: Mutex<HashMap<u64, NodeRecord>>,
}

impl Drop for EtcdControlPlane {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl EtcdControlPlane {
    /// Connects to etcd and starts following the node list. Fails with
    /// [`ControlError::Unavailable`] when no endpoint is given or no member answers within the
    /// request timeout.
    pub async fn connect(options: EtcdOptions) -> Result<Self, ControlError> {
        if options.endpoints.is_empty() {
            return Err(ControlError::Unavailable(
                "no etcd endpoint configured".into(),
            ));
        }
        let keys = Keys::new(&options.prefix);
        let limit = options.request_timeout;
        let members = Arc::new(
            Members::new(&options.endpoints, limit)
                .await
                .map_err(CallError::unavailable)?,
        );
        // One round trip now, so wrong addresses fail at start-up rather than on first use.
        let probe = keys.nodes();
        members
            .call("probe", |mut client| {
                let key = probe.clone();
                async move {
                    client
                        .get(key, Some(GetOptions::new().with_prefix().with_limit(1)))
                        .await
                }
            })
            .await
            .map_err(CallError::unavailable)?;

        let (tx, view) = watch::channel(NodeView::default());
        let watcher = tokio::spawn(follow_nodes(members.clone(), keys.clone(), tx));
        // Built before any further await, so the watcher is aborted even if this future is
        // dropped midway.
        let mut cp = Self {
            members,
            keys,
            view,
            watcher,
            written: Mutex::new(HashMap::new()),
        };
        // Give the watcher a chance to deliver a full view before callers look at it; if it is
        // slower than that, the view simply starts out unreachable.
        let _ = timeout(limit, cp.view.wait_for(|v| v.reachable)).await;
        cp.view.mark_unchanged();
        info!(endpoints = ?options.endpoints, in_use = %cp.endpoint_in_use(), prefix = %cp.keys.prefix, "connected to etcd");
        Ok(cp)
    }

    /// The key prefix in use (normalised to end with `/`).
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// The endpoint requests go to now: the first one given, until it fails a request.
    pub fn endpoint_in_use(&self) -> &str {
        self.members.url(self.members.current())
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<u64, NodeRecord>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(
        &self,
        what: &'static str,
        key: String,
        prefix: bool,
    ) -> Result<Vec<KeyValue>, ControlError> {
        let options = prefix.then(|| GetOptions::new().with_prefix());
        let mut resp = self
            .members
            .call(what, |mut client| {
                let (key, options) = (key.clone(), options.clone());
                async move { client.get(key, options).await }
            })
            .await
            .map_err(CallError::unavailable)?;
        Ok(resp.take_kvs())
    }

    async fn put(
        &self,
        what: &'static str,
        key: String,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<(), CallError> {
        self.members
            .call(what, |mut client| {
                let (key, value) = (key.clone(), value.clone());
                let options = PutOptions::new().with_lease(lease);
                async move { client.put(key, value, Some(options)).await }
            })
            .await
            .map(drop)
    }

    async fn txn(
        &self,
        what: &'static str,
        txn: Txn,
    ) -> Result<etcd_client::TxnResponse, CallError> {
        self.members
            .call(what, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await
    }

    async fn revoke(&self, what: &'static str, lease: i64) -> Result<(), CallError> {
        self.members
            .call(what, |mut client| async move {
                client.lease_revoke(lease).await
            })
            .await
            .map(drop)
    }

    /// Writes `node`'s record under `lease` unless it was registered again under another lease
    /// since (then the lease counts as expired, as in the memory backend).
    async fn put_under_lease(
        &self,
        lease: &Lease,
        id: i64,
        node: &NodeRecord,
    ) -> Result<(), ControlError> {
        let key = self.keys.node(&node.id);
        let value = to_json(node)?;
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, id)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self
            .txn("update node record", txn)
            .await
            .map_err(|e| e.under_lease(lease.id))?;
        if !resp.succeeded() {
            if let Some(current) = txn_get(&resp.op_responses(), 0).first() {
                debug!(node = %node.id, lease = id, current_lease = current.lease(), "record belongs to another lease");
                return Err(ControlError::LeaseExpired(lease.id));
            }
            // The record was deleted behind our back while the lease lives: write it again.
            self.put("recreate node record", key, value, id)
                .await
                .map_err(|e| e.under_lease(lease.id))?;
        }
        self.written().insert(lease.id, node.clone());
        Ok(())
    }
}

impl ControlPlane for EtcdControlPlane {
    async fn register_node(&self, node: NodeRecord, ttl: Duration) -> Result<Lease, ControlError> {
        check_node(&node)?;
        let key = self.keys.node(&node.id);
        let value = to_json(&node)?;
        let previous = self
            .get("read node record", key.clone(), false)
            .await?
            .first()
            .map(KeyValue::lease)
            .unwrap_or(0);
        let secs = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .clamp(1, i64::MAX as u64) as i64;
        let grant = self
            .members
            .call("grant lease", |mut client| async move {
                client.lease_grant(secs, None).await
            })
            .await
            .map_err(CallError::unavailable)?;
        let id = grant.id();
        self.put("put node record", key, value, id)
            .await
            .map_err(|e| e.under_lease(id as u64))?;
        if previous != 0 && previous != id {
            // An earlier registration of this id (e.g. before a restart): its shares and
            // placements describe a process that is gone, so let them go with its lease.
            match self.revoke("revoke previous lease", previous).await {
                Ok(()) => debug!(node = %node.id, lease = previous, "revoked previous lease"),
                Err(e) if e.is_lease_not_found() => {}
                Err(e) => {
                    warn!(node = %node.id, lease = previous, error = %e, "could not revoke previous lease")
                }
            }
        }
        let lease = Lease {
            id: id as u64,
            ttl: Duration::from_secs(grant.ttl().max(1) as u64),
        };
        {
            let mut written = self.written();
            written.retain(|_, n| n.id != node.id);
            written.insert(lease.id, node.clone());
        }
        info!(node = %node.id, site = %node.site, lease = id, ttl_secs = grant.ttl(), "registered node");
        Ok(lease)
    }

    async fn keep_alive(&self, lease: &Lease, node: NodeRecord) -> Result<(), ControlError> {
        check_node(&node)?;
        let id = lease_id(lease)?;
        // One keep-alive exchange per call, on whichever member answers: the stream is opened,
        // its first answer awaited (etcd-client does that), and dropped with the keeper.
        let kept = self
            .members
            .call("keep lease alive", |mut client| async move {
                client.lease_keep_alive(id).await.map(drop)
            })
            .await;
        match kept {
            Ok(()) => {}
            Err(e) if e.is_lease_not_found() => {
                self.written().remove(&lease.id);
                info!(node = %node.id, lease = id, "lease expired");
                return Err(ControlError::LeaseExpired(lease.id));
            }
            Err(e) => return Err(e.unavailable()),
        }
        if self.written().get(&lease.id) == Some(&node) {
            return Ok(());
        }
        let result = self.put_under_lease(lease, id, &node).await;
        if result == Err(ControlError::LeaseExpired(lease.id)) {
            self.written().remove(&lease.id);
        }
        result
    }

    async fn revoke_lease(&self, lease: &Lease) -> Result<(), ControlError> {
        let Ok(id) = i64::try_from(lease.id) else {
            // Not a lease etcd could have granted: nothing to end.
            return Ok(());
        };
        let node = self.written().remove(&lease.id).map(|n| n.id);
        let node = node.as_deref().unwrap_or("-");
        match self.revoke("revoke lease", id).await {
            Ok(()) => {
                info!(node = %node, lease = id, "revoked lease: the node's record, placements and room shares are gone");
                Ok(())
            }
            Err(e) if e.is_lease_not_found() => {
                debug!(node = %node, lease = id, "lease to revoke was already gone");
                Ok(())
            }
            Err(e) => Err(e.unavailable()),
        }
    }

    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, ControlError> {
        let kvs = self.get("list nodes", self.keys.nodes(), true).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| self.keys.parse_node(kv))
            .collect())
    }

    fn watch_nodes(&self) -> watch::Receiver<NodeView> {
        self.view.clone()
    }

    async fn place_room(
        &self,
        room: &RoomName,
        sites: &[String],
    ) -> Result<NodeRecord, ControlError> {
        let Some(home) = sites.first() else {
            return Err(ControlError::NoNodeAvailable(room.to_string()));
        };
        check_key_part("site", home)?;
        let key = self.keys.placement(room, home);
        for attempt in 0..PLACEMENT_ATTEMPTS {
            // The placement and the nodes, read at one revision.
            let read = Txn::new().and_then([
                TxnOp::get(key.clone(), None),
                TxnOp::get(self.keys.nodes(), Some(GetOptions::new().with_prefix())),
            ]);
            let resp = self
                .txn("read placement", read)
                .await
                .map_err(CallError::unavailable)?;
            let responses = resp.op_responses();
            let current = txn_get(&responses, 0).first();
            let nodes: BTreeMap<NodeId, (NodeRecord, i64)> = txn_get(&responses, 1)
                .iter()
                .filter_map(|kv| Some((self.keys.parse_node(kv)?, kv.lease())))
                .map(|(record, lease)| (record.id.clone(), (record, lease)))
                .collect();
            if let Some((record, _)) = current
                .and_then(|kv| kv.value_str().ok())
                .and_then(|id| nodes.get(id))
                .filter(|(record, _)| accepts_placements(record))
            {
                return Ok(record.clone());
            }
            let Some(pick) = choose_node(nodes.values().map(|(record, _)| record), sites) else {
                return Err(ControlError::NoNodeAvailable(room.to_string()));
            };
            let (pick, node_lease) = nodes[&pick.id].clone();
            // Write only if nobody placed the room meanwhile and the node is still registered
            // under the lease the placement will hang on.
            let unchanged = match current {
                Some(kv) => Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
            };
            let write = Txn::new()
                .when([
                    unchanged,
                    Compare::lease(self.keys.node(&pick.id), CompareOp::Equal, node_lease),
                ])
                .and_then([TxnOp::put(
                    key.clone(),
                    pick.id.clone(),
                    Some(PutOptions::new().with_lease(node_lease)),
                )]);
            match self.txn("write placement", write).await {
                Ok(resp) if resp.succeeded() => {
                    info!(room = %room.as_str(), site = %home, node = %pick.id, "placed room");
                    return Ok(pick);
                }
                Ok(_) => {
                    debug!(room = %room.as_str(), site = %home, attempt, "placement changed meanwhile; reading again")
                }
                // The chosen node's lease ended between the read and the write.
                Err(e) if e.is_lease_not_found() => {
                    debug!(room = %room.as_str(), node = %pick.id, "chosen node's lease ended; reading again")
                }
                Err(e) => return Err(e.unavailable()),
            }
        }
        Err(ControlError::Unavailable(format!(
            "placement of room {} kept changing; gave up after {PLACEMENT_ATTEMPTS} attempts",
            room.as_str()
        )))
    }

    async fn release_room(&self, room: &RoomName, node: &str) -> Result<(), ControlError> {
        let kvs = self
            .get("list placements", self.keys.placements(room), true)
            .await?;
        for kv in kvs.iter().filter(|kv| kv.value() == node.as_bytes()) {
            let release = Txn::new()
                .when([Compare::value(kv.key(), CompareOp::Equal, node)])
                .and_then([TxnOp::delete(kv.key(), None)]);
            let resp = self
                .txn("release placement", release)
                .await
                .map_err(CallError::unavailable)?;
            if resp.succeeded() {
                debug!(room = %room.as_str(), node = %node, key = %String::from_utf8_lossy(kv.key()), "released placement");
            }
        }
        Ok(())
    }

    async fn mesh_secret(&self) -> Result<Vec<u8>, ControlError> {
        // Create-if-absent: the first node's random secret wins; everyone reads the winner.
        let key = format!("{}secret", self.keys.prefix);
        let fresh: [u8; 32] = rand::random();
        let create = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), fresh.to_vec(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self
            .txn("mesh secret", create)
            .await
            .map_err(CallError::unavailable)?;
        if resp.succeeded() {
            info!("created the mesh's shared secret");
            return Ok(fresh.to_vec());
        }
        let stored = txn_get(resp.op_responses().as_slice(), 0)
            .first()
            .map(|kv| kv.value().to_vec())
            .unwrap_or_default();
        if stored.len() < 16 {
            return Err(ControlError::Malformed(
                "the mesh secret in etcd is shorter than 16 bytes".into(),
            ));
        }
        Ok(stored)
    }

    async fn publish_room_share(
        &self,
        lease: &Lease,
        room: &RoomName,
        share: RoomShare,
    ) -> Result<(), ControlError> {
        check_key_part("node id", &share.node)?;
        let id = lease_id(lease)?;
        let value = to_json(&share)?;
        self.put(
            "publish room share",
            self.keys.share(room, &share.node),
            value,
            id,
        )
        .await
        .map_err(|e| e.under_lease(lease.id))?;
        debug!(room = %room.as_str(), node = %share.node, "published room share");
        Ok(())
    }

    async fn withdraw_room_share(&self, room: &RoomName, node: &str) -> Result<(), ControlError> {
        check_key_part("node id", node)?;
        let key = self.keys.share(room, node);
        self.members
            .call("withdraw room share", |mut client| {
                let key = key.clone();
                async move { client.delete(key, None).await }
            })
            .await
            .map_err(CallError::unavailable)?;
        debug!(room = %room.as_str(), node = %node, "withdrew room share");
        Ok(())
    }

    async fn room_shares(&self, room: &RoomName) -> Result<Vec<RoomShare>, ControlError> {
        let prefix = self.keys.shares(room);
        let kvs = self.get("list room shares", prefix.clone(), true).await?;
        let mut shares: Vec<RoomShare> = kvs
            .iter()
            .filter_map(|kv| {
                let node = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)).unwrap_or_default();
                match serde_json::from_slice::<RoomShare>(kv.value()) {
                    Ok(share) if share.node == node => Some(share),
                    Ok(share) => {
                        warn!(room = %room.as_str(), node = %node, share_node = %share.node, "ignoring room share stored under another node");
                        None
                    }
                    Err(e) => {
                        warn!(room = %room.as_str(), node = %node, error = %e, "ignoring malformed room share");
                        None
                    }
                }
            })
            .collect();
        shares.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(shares)
    }

    async fn all_room_shares(&self) -> Result<Vec<(RoomName, RoomShare)>, ControlError> {
        let prefix = self.keys.all_rooms();
        let kvs = self
            .get("list all room shares", prefix.clone(), true)
            .await?;
        let mut all: Vec<(RoomName, RoomShare)> = kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(&prefix)?;
                let (room, node) = key.split_once("/shares/")?;
                let room = RoomName::parse(room).ok()?;
                match serde_json::from_slice::<RoomShare>(kv.value()) {
                    Ok(share) if share.node == node => Some((room, share)),
                    Ok(_) | Err(_) => {
                        warn!(room = %room.as_str(), node = %node, "ignoring a malformed or misplaced room share");
                        None
                    }
                }
            })
            .collect();
        all.sort_by(|a, b| (a.0.as_str(), &a.1.node).cmp(&(b.0.as_str(), &b.1.node)));
        Ok(all)
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, ControlError> {
        check_record_key(key)?;
        let kvs = self.get("get record", self.keys.record(key), false).await?;
        let Some(kv) = kvs.first() else {
            return Ok(None);
        };
        Ok(Some(Record {
            key: key.to_string(),
            value: kv.value().to_vec(),
            version: record_version(kv)?,
        }))
    }

    async fn put_record(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<u64, ControlError> {
        check_record_key(key)?;
        check_record_value(key, &value)?;
        let full = self.keys.record(key);
        let txn = Txn::new()
            .when(record_compares(&full, expect))
            .and_then([TxnOp::put(full.clone(), value, None)])
            .or_else([TxnOp::get(full.clone(), None)]);
        let resp = self
            .txn("put record", txn)
            .await
            .map_err(CallError::unavailable)?;
        if !resp.succeeded() {
            let found = txn_get(&resp.op_responses(), 0)
                .first()
                .map(record_version)
                .transpose()?;
            debug!(key = %key, ?expect, ?found, "record write refused");
            return Err(expect.conflict(key, found));
        }
        // One transaction is one revision: the put's mod revision is the revision it produced.
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        u64::try_from(revision)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                ControlError::Malformed(format!(
                    "put of record {key:?} answered revision {revision}"
                ))
            })
    }

    async fn delete_record(&self, key: &str, expect: Expect) -> Result<bool, ControlError> {
        check_record_key(key)?;
        let full = self.keys.record(key);
        let txn = Txn::new()
            .when(record_compares(&full, expect))
            .and_then([TxnOp::delete(full.clone(), None)])
            .or_else([TxnOp::get(full.clone(), None)]);
        let resp = self
            .txn("delete record", txn)
            .await
            .map_err(CallError::unavailable)?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            let found = txn_get(&responses, 0)
                .first()
                .map(record_version)
                .transpose()?;
            debug!(key = %key, ?expect, ?found, "record delete refused");
            return Err(expect.conflict(key, found));
        }
        Ok(matches!(responses.first(), Some(TxnOpResponse::Delete(d)) if d.deleted() > 0))
    }

    async fn list_records(&self, prefix: &str) -> Result<Vec<Record>, ControlError> {
        check_record_prefix(prefix, true)?;
        let start = format!("{}{prefix}", self.keys.records());
        let end = prefix_end(start.as_bytes());
        let mut from = start.into_bytes();
        // Every page is read at the first page's revision: one consistent list.
        let mut revision = 0;
        let mut records = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(RECORDS_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let resp = self
                .members
                .call("list records", |mut client| {
                    let (key, options) = (from.clone(), options.clone());
                    async move { client.get(key, Some(options)).await }
                })
                .await
                .map_err(CallError::unavailable)?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            records.extend(
                resp.kvs()
                    .iter()
                    .filter_map(|kv| self.keys.parse_record(kv)),
            );
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts right after the last key of this one.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(records)
    }

    async fn delete_records(&self, prefix: &str) -> Result<u64, ControlError> {
        check_record_prefix(prefix, false)?;
        let start = format!("{}{prefix}", self.keys.records());
        let resp = self
            .members
            .call("delete records", |mut client| {
                let key = start.clone();
                async move {
                    client
                        .delete(key, Some(DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(CallError::unavailable)?;
        let deleted = u64::try_from(resp.deleted()).unwrap_or(0);
        if deleted > 0 {
            info!(prefix = %prefix, deleted, "deleted records");
        }
        Ok(deleted)
    }
}

/// The node watcher: keeps `view` equal to the `nodes/` keys by following one member — the
/// member in use when it starts, and for as long as that member keeps answering (its own stream
/// and progress probes decide, not other requests: a follower serves the watch even while the
/// cluster elects a leader). When that member fails, it re-syncs on the member in use then (the
/// next one) without touching the view; only when a whole round of members fails without any of
/// them answering, or no member could be followed for a request timeout, is the view marked
/// unreachable (keeping its nodes) — it is re-synced when a member can be followed again. Runs
/// until aborted.
async fn follow_nodes(members: Arc<Members>, keys: Keys, view: watch::Sender<NodeView>) {
    let mut failed_in_round = 0;
    let mut answered_in_round = false;
    let mut down_since: Option<Instant> = None;
    loop {
        let index = members.current();
        let (error, established) = follow_nodes_once(&members, index, &keys, &view).await;
        if established {
            failed_in_round = 0;
            answered_in_round = false;
            down_since = None;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        members.failed(index, &error);
        failed_in_round += 1;
        answered_in_round |= error.failure() == Failure::Busy;
        let round_over = failed_in_round >= members.len();
        if (round_over && !answered_in_round) || since.elapsed() >= members.request_limit() {
            let was_reachable =
                view.send_if_modified(|v| std::mem::replace(&mut v.reachable, false));
            if was_reachable {
                warn!(error = %error, "lost etcd; keeping the last known nodes until it is back");
            } else {
                debug!(error = %error, "etcd still unreachable");
            }
        } else if established {
            info!(member = %members.url(index), error = %error, "node watch lost its etcd member; re-syncing on another");
        } else {
            debug!(member = %members.url(index), error = %error, "node watch could not follow this etcd member; trying the next");
        }
        if round_over {
            failed_in_round = 0;
            answered_in_round = false;
            sleep(WATCH_RETRY).await;
        }
    }
}

/// One get-then-watch session on member `index`; returns why it ended and whether it had been
/// following (so a failure starts a new outage rather than continuing one).
async fn follow_nodes_once(
    members: &Members,
    index: usize,
    keys: &Keys,
    view: &watch::Sender<NodeView>,
) -> (CallError, bool) {
    let failed = |error| (error, false);
    let mut client = members.client(index);
    let limit = members.attempt_limit();
    let prefix = keys.nodes();
    // Serializable: read from this member's own state, which the watch below continues from, so
    // a follower can be followed while the cluster elects a leader.
    let listed = bounded(
        "list nodes",
        limit,
        client.get(
            prefix.clone(),
            Some(GetOptions::new().with_prefix().with_serializable()),
        ),
    )
    .await;
    let listed = match listed {
        Ok(listed) => listed,
        Err(e) => return failed(e),
    };
    let revision = listed.header().map(|h| h.revision()).unwrap_or(0);
    let mut nodes: BTreeMap<NodeId, NodeRecord> = listed
        .kvs()
        .iter()
        .filter_map(|kv| keys.parse_node(kv))
        .map(|n| (n.id.clone(), n))
        .collect();

    let watch = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let stream = bounded(
        "watch nodes",
        limit,
        client.watch(prefix.clone(), Some(watch)),
    )
    .await;
    let (mut requests, mut responses) = match stream {
        Ok(stream) => stream.split(),
        Err(e) => return failed(e),
    };
    match bounded("watch nodes", limit, responses.message()).await {
        Ok(Some(first)) if first.created() && !first.canceled() => {}
        Ok(Some(first)) => {
            return failed(CallError::Stream(format!(
                "node watch not created: {}",
                first.cancel_reason()
            )));
        }
        Ok(None) => return failed(CallError::Stream("node watch closed at creation".into())),
        Err(e) => return failed(e),
    }
    let failed = |error| (error, true);

    let count = nodes.len();
    let came_back = view.send_if_modified(|v| {
        let changed = v.nodes != nodes || !v.reachable;
        v.nodes.clone_from(&nodes);
        v.reachable = true;
        changed
    });
    if came_back {
        info!(nodes = count, revision, member = %members.url(index), "following etcd node list");
    } else {
        debug!(nodes = count, revision, member = %members.url(index), "following etcd node list");
    }

    // A progress request must be answered within the attempt limit, so a silent (half-open or
    // hung) member is noticed even when no node changes.
    let mut next_probe = Instant::now() + WATCH_PROBE_EVERY;
    let mut probe_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            message = responses.message() => {
                probe_sent = None;
                next_probe = Instant::now() + WATCH_PROBE_EVERY;
                let resp = match message {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return failed(CallError::Stream("node watch stream ended".into())),
                    Err(source) => return failed(CallError::Etcd { what: "watch nodes", source }),
                };
                if resp.canceled() {
                    return failed(CallError::Stream(format!(
                        "node watch canceled (compacted at {}): {}",
                        resp.compact_revision(),
                        resp.cancel_reason()
                    )));
                }
                if resp.events().is_empty() {
                    continue;
                }
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Some(id) = node_id_of(&prefix, kv.key()) else { continue };
                    match event.event_type() {
                        EventType::Put => match keys.parse_node(kv) {
                            Some(record) => {
                                if !nodes.contains_key(&id) {
                                    info!(node = %id, site = %record.site, "node joined");
                                }
                                nodes.insert(id, record);
                            }
                            // Unreadable now: do not route to it.
                            None => {
                                nodes.remove(&id);
                            }
                        },
                        EventType::Delete => {
                            if nodes.remove(&id).is_some() {
                                info!(node = %id, "node left (lease ended or deregistered)");
                            }
                        }
                    }
                }
                view.send_if_modified(|v| {
                    if v.nodes == nodes {
                        return false;
                    }
                    v.nodes.clone_from(&nodes);
                    true
                });
            }
            _ = sleep_until(next_probe) => {
                match probe_sent {
                    Some(sent) if sent.elapsed() >= limit => {
                        return failed(CallError::Timeout { what: "node watch progress", limit });
                    }
                    Some(sent) => next_probe = sent + limit,
                    None => {
                        if let Err(source) = requests.request_progress().await {
                            return failed(CallError::Etcd { what: "node watch progress", source });
                        }
                        let now = Instant::now();
                        probe_sent = Some(now);
                        next_probe = now + limit;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let keys = Keys::new("/mesh");
        let room = RoomName::parse("class-1").unwrap();
        assert_eq!(keys.node("n1"), "/mesh/nodes/n1");
        assert_eq!(
            keys.placement(&room, "eu"),
            "/mesh/rooms/class-1/placement/eu"
        );
        assert_eq!(keys.share(&room, "n1"), "/mesh/rooms/class-1/shares/n1");
        assert_eq!(
            keys.record("accounts/alice"),
            "/mesh/records/accounts/alice"
        );
        assert_eq!(keys.records(), "/mesh/records/");
        assert_eq!(Keys::new("").prefix, DEFAULT_PREFIX);
        assert_eq!(
            node_id_of("/mesh/nodes/", b"/mesh/nodes/n1").as_deref(),
            Some("n1")
        );
        assert_eq!(node_id_of("/mesh/nodes/", b"/mesh/nodes/a/b"), None);
        assert_eq!(node_id_of("/mesh/nodes/", b"/other/n1"), None);
        assert_eq!(node_id_of("/mesh/nodes/", &[0xff, 0xfe]), None);
    }

    #[test]
    fn records_parse_back_and_foreign_keys_are_skipped() {
        let keys = Keys::new("/mesh/");
        let parse = |key: &[u8], mod_revision| keys.record_of(key, b"v", mod_revision);
        assert_eq!(
            parse(b"/mesh/records/a/b", 7),
            Some(Record {
                key: "a/b".into(),
                value: b"v".to_vec(),
                version: 7
            })
        );
        assert_eq!(parse(b"/mesh/records/a//b", 7), None);
        assert_eq!(parse(b"/mesh/records/\xff", 7), None);
        assert_eq!(parse(b"/other/records/a", 7), None);
        assert_eq!(parse(b"/mesh/records/a", 0), None);
    }

    #[test]
    fn prefix_ends_bound_exactly_the_prefix() {
        assert_eq!(prefix_end(b"/k/records/a/"), b"/k/records/a0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn ids_with_slashes_are_refused() {
        assert!(matches!(
            check_key_part("node id", "a/b"),
            Err(ControlError::Malformed(_))
        ));
        assert!(matches!(
            check_key_part("node id", ""),
            Err(ControlError::Malformed(_))
        ));
        assert!(check_key_part("site", "eu-west.1").is_ok());
    }

    #[tokio::test]
    async fn connect_fails_fast_when_etcd_is_not_there() {
        // Nothing listens on the discard port of this loopback address.
        let options = EtcdOptions {
            endpoints: vec!["http://127.0.0.79:9".into()],
            prefix: "/t/".into(),
            request_timeout: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        let result = EtcdControlPlane::connect(options).await;
        assert!(matches!(result, Err(ControlError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
