//! Owns: the durable records of [`EtcdControlPlane`] against a real etcd — compare-and-swap
//! writes and deletes (`Expect::Absent`, `Expect::Version` = the key's mod revision), ordered
//! and paged prefix lists, prefix deletes, racing writers from two connections, input refused
//! before it reaches etcd, foreign data under `records/` skipped — the semantics the memory
//! backend's unit tests (`control/src/memory/store.rs`) pin down, held against etcd.
//!
//! Each test starts its own etcd (`/usr/bin/etcd`, Debian `etcd-server`, installed by
//! `.ci/setup`) on its own loopback address in 127.0.0.90–127.0.0.95 (127.0.0.60–89 belong to
//! the etcd tests of `tests/`), with free ports and a temporary data directory. Like those
//! tests, these fail rather than skip when etcd is missing. The test harness of `tests/` is not
//! reachable from this crate (it depends on it), so [`Etcd`] is a small launcher of its own.

use kaskade_control::etcd::{EtcdControlPlane, EtcdOptions};
use kaskade_control::records::{Expect, MAX_RECORD_VALUE_LEN, Record};
use kaskade_control::{ControlError, ControlPlane};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where Debian installs the server.
const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long etcd may take to answer after starting (a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Start attempts, for a picked port taken by someone else meanwhile.
const START_ATTEMPTS: usize = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const PREFIX: &str = "/kaskade/";

/// One etcd member: killed and waited for on drop (and by the kernel when the thread that
/// started it dies, should the test process be killed).
struct Etcd {
    child: Child,
    url: String,
    /// Declared after `child`: the data goes once etcd is dead.
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on `ip` and returns once it answers. Panics with its log when it does not.
    /// Call it on the test's own thread.
    fn start(ip: &str) -> Etcd {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(ip) {
                Ok(etcd) => return etcd,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "etcd on {ip} did not start after {START_ATTEMPTS} attempts (it needs {ETCD_BIN}, \
             Debian etcd-server):\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_start(ip: &str) -> Result<Etcd, String> {
        let (client_port, peer_port) = free_ports(ip)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("kaskade-etcd-{ip}-"))
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let url = format!("http://{ip}:{client_port}");
        let peer = format!("http://{ip}:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .args([
                "--initial-cluster-token",
                &format!("kaskade-records-{peer}"),
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {ETCD_BIN}: {e}"))?;
        Ok(Etcd { child, url, dir })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A control plane on this etcd under `prefix`, once etcd answers.
    async fn connect_under(&mut self, prefix: &str) -> Result<EtcdControlPlane, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}:\n{}", self.log()));
            }
            let options = EtcdOptions {
                endpoints: vec![self.url.clone()],
                prefix: prefix.into(),
                request_timeout: REQUEST_TIMEOUT,
            };
            match EtcdControlPlane::connect(options).await {
                Ok(cp) => return Ok(cp),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "etcd at {} never answered: {e}\n{}",
                        self.url,
                        self.log()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two ports nobody listens on at `ip` right now.
fn free_ports(ip: &str) -> Result<(u16, u16), String> {
    let bind = || TcpListener::bind((ip, 0)).map_err(|e| format!("cannot bind on {ip}: {e}"));
    // Both listeners live until both ports are known, so the two differ.
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
    Ok((port(&a)?, port(&b)?))
}

/// etcd on `ip` and a control plane on it (retrying with fresh ports if it does not come up).
async fn start(ip: &str) -> (Etcd, Arc<EtcdControlPlane>) {
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let mut etcd = Etcd::start(ip);
        match etcd.connect_under(PREFIX).await {
            Ok(cp) => return (etcd, Arc::new(cp)),
            Err(e) => failures.push(e),
        }
    }
    panic!("etcd on {ip} never served: {}", failures.join("\n---\n"));
}

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
    let (_etcd, cp) = start("127.0.0.90").await;
    assert_eq!(cp.get_record("a/k").await, Ok(None));
    let v1 = cp
        .put_record("a/k", b"one".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let message = conflict(cp.put_record("a/k", b"two".to_vec(), Expect::Absent).await);
    assert_eq!(
        message,
        format!("record \"a/k\": expected no record, found version {v1}")
    );
    assert_eq!(
        cp.get_record("a/k").await.unwrap(),
        Some(Record {
            key: "a/k".into(),
            value: b"one".to_vec(),
            version: v1,
        }),
        "the version put_record returns is the one get_record reads"
    );

    let v2 = cp
        .put_record("a/k", b"two".to_vec(), Expect::Version(v1))
        .await
        .unwrap();
    assert!(v2 > v1);
    conflict(
        cp.put_record("a/k", b"three".to_vec(), Expect::Version(v1))
            .await,
    );
    // A missing key has mod revision 0 in etcd: version 0 must still not match it.
    conflict(
        cp.put_record("a/none", b"x".to_vec(), Expect::Version(0))
            .await,
    );
    conflict(
        cp.put_record("a/none", b"x".to_vec(), Expect::Version(v2))
            .await,
    );
    conflict(
        cp.put_record("a/none", b"x".to_vec(), Expect::Version(u64::MAX))
            .await,
    );
    assert_eq!(cp.get_record("a/none").await, Ok(None));

    let v3 = cp
        .put_record("a/k", b"any".to_vec(), Expect::Any)
        .await
        .unwrap();
    assert!(v3 > v2);
    let record = cp.get_record("a/k").await.unwrap().unwrap();
    assert_eq!((record.value.as_slice(), record.version), (&b"any"[..], v3));

    // Values up to the limit, any bytes.
    let big: Vec<u8> = (0..MAX_RECORD_VALUE_LEN).map(|i| i as u8).collect();
    cp.put_record("a/big", big.clone(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(cp.get_record("a/big").await.unwrap().unwrap().value, big);
}

#[tokio::test]
async fn deletes_are_conditional_and_versions_never_repeat() {
    let (_etcd, cp) = start("127.0.0.91").await;
    assert_eq!(cp.delete_record("k", Expect::Any).await, Ok(false));
    assert_eq!(cp.delete_record("k", Expect::Absent).await, Ok(false));
    conflict(cp.delete_record("k", Expect::Version(1)).await);
    conflict(cp.delete_record("k", Expect::Version(0)).await);

    let v1 = cp.put_record("k", vec![1], Expect::Absent).await.unwrap();
    conflict(cp.delete_record("k", Expect::Absent).await);
    conflict(cp.delete_record("k", Expect::Version(v1 + 1)).await);
    assert_eq!(cp.delete_record("k", Expect::Version(v1)).await, Ok(true));
    assert_eq!(cp.get_record("k").await, Ok(None));

    let v2 = cp.put_record("k", vec![2], Expect::Absent).await.unwrap();
    assert!(v2 > v1, "a recreated key gets a new version");
    conflict(cp.delete_record("k", Expect::Version(v1)).await);
    assert_eq!(cp.delete_record("k", Expect::Any).await, Ok(true));
    assert_eq!(cp.delete_record("k", Expect::Any).await, Ok(false));
}

#[tokio::test]
async fn lists_are_ordered_paged_and_cut_by_prefix() {
    let (_etcd, cp) = start("127.0.0.92").await;
    for key in ["b/2", "a/1", "b/1", "b/10", "ba/1", "b"] {
        cp.put_record(key, key.as_bytes().to_vec(), Expect::Any)
            .await
            .unwrap();
    }
    let all = cp.list_records("").await.unwrap();
    assert_eq!(keys(&all), ["a/1", "b", "b/1", "b/10", "b/2", "ba/1"]);
    assert!(all.iter().all(|r| r.value == r.key.as_bytes()));
    for record in &all {
        assert_eq!(
            cp.get_record(&record.key).await.unwrap().as_ref(),
            Some(record)
        );
    }
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

    // More records than one page, and more bytes than one gRPC message may carry (4 MiB): the
    // list comes back whole, in order.
    let big = vec![7u8; MAX_RECORD_VALUE_LEN];
    let expected: Vec<String> = (0..80).map(|i| format!("p/{i:03}")).collect();
    for key in &expected {
        cp.put_record(key, big.clone(), Expect::Absent)
            .await
            .unwrap();
    }
    let listed = cp.list_records("p/").await.unwrap();
    assert_eq!(keys(&listed), expected);
    assert!(listed.iter().all(|r| r.value == big));
    assert_eq!(cp.list_records("").await.unwrap().len(), 86);
}

#[tokio::test]
async fn prefix_deletes_count_and_meshes_do_not_mix() {
    let (mut etcd, cp) = start("127.0.0.93").await;
    for key in ["t/1/a", "t/1/b", "t/1/c/d", "t/10/a", "t/2/a"] {
        cp.put_record(key, vec![], Expect::Any).await.unwrap();
    }
    // Another mesh on the same etcd has records of its own.
    let other = etcd.connect_under("/other-mesh/").await.unwrap();
    other
        .put_record("t/1/a", b"theirs".to_vec(), Expect::Absent)
        .await
        .unwrap();

    assert_eq!(cp.delete_records("t/1/").await, Ok(3));
    assert_eq!(
        keys(&cp.list_records("").await.unwrap()),
        ["t/10/a", "t/2/a"]
    );
    assert_eq!(cp.delete_records("t/1/").await, Ok(0));
    assert_eq!(cp.delete_records("t").await, Ok(2));
    assert!(cp.list_records("").await.unwrap().is_empty());
    assert_eq!(keys(&other.list_records("").await.unwrap()), ["t/1/a"]);
    assert_eq!(
        other.get_record("t/1/a").await.unwrap().unwrap().value,
        b"theirs"
    );

    // Keys this store would never write, put there by someone else, are skipped by lists.
    let mut raw = etcd_client::Client::connect([etcd.url.clone()], None)
        .await
        .unwrap();
    for key in [
        "/kaskade/records/x//y",
        "/kaskade/records/x/../y",
        "/kaskade/records/",
    ] {
        raw.put(key, "junk", None).await.unwrap();
    }
    raw.put(b"/kaskade/records/x/\xff".to_vec(), "junk", None)
        .await
        .unwrap();
    cp.put_record("x/ok", b"fine".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(keys(&cp.list_records("x/").await.unwrap()), ["x/ok"]);
    assert_eq!(keys(&cp.list_records("").await.unwrap()), ["x/ok"]);
}

#[tokio::test]
async fn bad_input_is_refused_before_etcd() {
    let (_etcd, cp) = start("127.0.0.94").await;
    let invalid = |r: Result<(), ControlError>| matches!(r, Err(ControlError::Invalid(_)));
    for key in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\0b", "a\tb"] {
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
    let long = "k".repeat(kaskade_control::records::MAX_RECORD_KEY_LEN + 1);
    assert!(invalid(
        cp.put_record(&long, vec![], Expect::Any).await.map(drop)
    ));
    let too_big = vec![0; MAX_RECORD_VALUE_LEN + 1];
    assert!(invalid(
        cp.put_record("k", too_big, Expect::Any).await.map(drop)
    ));
    assert!(
        invalid(cp.delete_records("").await.map(drop)),
        "never delete everything"
    );
    assert!(invalid(cp.list_records("/").await.map(drop)));
    assert!(invalid(cp.delete_records("a//").await.map(drop)));
    assert!(
        cp.list_records("").await.unwrap().is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn racing_writers_lose_no_update() {
    let (mut etcd, cp) = start("127.0.0.95").await;
    let peer = Arc::new(etcd.connect_under(PREFIX).await.unwrap());

    // Two nodes create the same record: exactly one wins.
    let (a, b) = tokio::join!(
        cp.put_record("race/created", b"a".to_vec(), Expect::Absent),
        peer.put_record("race/created", b"b".to_vec(), Expect::Absent),
    );
    assert!(a.is_ok() != b.is_ok(), "one winner: {a:?} {b:?}");
    let winner: &[u8] = if a.is_ok() { b"a" } else { b"b" };
    assert_eq!(
        peer.get_record("race/created")
            .await
            .unwrap()
            .unwrap()
            .value,
        winner
    );

    // Read-modify-write increments from both: every one lands.
    const EACH: u64 = 15;
    cp.put_record("race/counter", b"0".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let increment = |cp: Arc<EtcdControlPlane>| async move {
        let mut conflicts = 0;
        for _ in 0..EACH {
            loop {
                let current = cp.get_record("race/counter").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&current.value)
                    .unwrap()
                    .parse()
                    .unwrap();
                let next = (n + 1).to_string().into_bytes();
                match cp
                    .put_record("race/counter", next, Expect::Version(current.version))
                    .await
                {
                    Ok(_) => break,
                    Err(ControlError::Conflict(_)) => conflicts += 1,
                    Err(e) => panic!("increment: {e}"),
                }
            }
        }
        conflicts
    };
    let (ca, cb) = tokio::join!(
        tokio::spawn(increment(cp.clone())),
        tokio::spawn(increment(peer.clone()))
    );
    let conflicts = ca.unwrap() + cb.unwrap();
    let counter = cp.get_record("race/counter").await.unwrap().unwrap();
    assert_eq!(
        counter.value,
        (2 * EACH).to_string().into_bytes(),
        "after {conflicts} conflicts"
    );
}
