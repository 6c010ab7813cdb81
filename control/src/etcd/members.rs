//! Owns: [`Members`], the etcd cluster members an [`EtcdControlPlane`](super::EtcdControlPlane)
//! talks to — one `etcd-client` [`Client`] per configured endpoint, the member in use, and the
//! failover of a request to the next member — plus [`CallError`], why one request failed, and
//! [`Failure`], what that failure says about the member.
//!
//! Why not one `Client` over all endpoints: etcd-client 0.21 puts every endpoint into one tonic
//! balanced channel (tower's power-of-two-choices balancer over lazily connecting endpoints, each
//! reporting load 0). A lazy endpoint whose connection fails still reports itself ready and fails
//! the request it is handed with the connection error (`tcp connect error`), and nothing retries
//! it elsewhere: with one member of three killed, 13 of 60 gets failed here. Streams (watch, lease keep-alive)
//! stay on the member they were opened on, and a hung member (connection open, no answers) keeps
//! being picked and holds each request it gets until the caller's timeout.
//!
//! Here every request goes to the member in use (the first endpoint at start). When that member
//! cannot be reached, does not answer within the attempt limit, or answers that it cannot serve
//! now (no leader, leader changed), the request moves on to the next member, which becomes the
//! member in use for every later request. (The node watcher keeps its stream on the member it
//! follows while that member keeps answering, and moves to the member in use when it fails.)
//! A request keeps trying members until the request timeout, except that it gives up at once
//! when every member refused the connection (nothing to wait for). Leases are cluster-wide, so a
//! lease granted through one member is kept alive through any other.
//!
//! Every operation the control plane retries this way is idempotent or guarded by a comparison
//! (puts, deletes, compare-and-swap transactions, keep-alives, revokes); a lease grant that was
//! applied but whose answer was lost only leaves an unused lease that expires on its own.

use etcd_client::{Client, ConnectOptions};
use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info};

/// The shortest time one attempt on one member may take (with several members the request
/// timeout is split between them, but not finer than this).
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
/// Pause before another round over all members when some of them answered "not now" (e.g. an
/// election is under way).
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// Why one etcd request failed (mapped to [`crate::ControlError`] at the trait boundary).
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error("{what}: etcd did not answer within {limit:?}")]
    Timeout { what: &'static str, limit: Duration },
    #[error("{what}: {source}")]
    Etcd {
        what: &'static str,
        source: etcd_client::Error,
    },
    #[error("{0}")]
    Stream(String),
}

/// What a failed request says about the member that failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// An answer that holds on every member (e.g. "lease not found", a malformed request):
    /// asking another member would not change it.
    Final,
    /// The member answered that it cannot serve now (no leader, leader changed, overloaded):
    /// another member, or the same one a moment later, may.
    Busy,
    /// The member did not answer in time: hung, or waiting on a leader that is gone.
    Hung,
    /// The member could not be reached: connection refused, reset or broken.
    Unreachable,
}

impl CallError {
    /// Whether etcd said the lease is unknown (expired, revoked or never granted).
    pub(super) fn is_lease_not_found(&self) -> bool {
        match self {
            Self::Etcd { source, .. } => match source {
                etcd_client::Error::GRpcStatus(status) => {
                    status.message().contains("lease not found")
                }
                etcd_client::Error::LeaseKeepAliveError(msg) => msg.contains("lease not found"),
                _ => false,
            },
            _ => false,
        }
    }

    pub(super) fn failure(&self) -> Failure {
        match self {
            Self::Timeout { .. } => Failure::Hung,
            Self::Etcd { source, .. } => failure_of(source),
            // A watch the member ended: with its own reason (e.g. "etcdserver: no leader"), or
            // because the connection broke.
            Self::Stream(reason) if reason.contains("etcdserver:") => Failure::Busy,
            Self::Stream(_) => Failure::Unreachable,
        }
    }
}

/// gRPC status codes (by their numbers in the gRPC specification, which `tonic::Code` carries as
/// discriminants) that say "not now" rather than "no": CANCELLED 1, UNKNOWN 2, DEADLINE_EXCEEDED
/// 4, RESOURCE_EXHAUSTED 8, ABORTED 10, INTERNAL 13, UNAVAILABLE 14.
const TRANSIENT_CODES: [i32; 7] = [1, 2, 4, 8, 10, 13, 14];

/// Sorts an etcd-client error by what it says about the member. Errors etcd itself sends carry
/// messages starting with `etcdserver:` (or Go's `context deadline exceeded`); transport
/// failures surface as gRPC statuses too (`Unavailable "tcp connect error"`, `Unknown`,
/// `Cancelled`), but with the connection's error as their source.
fn failure_of(error: &etcd_client::Error) -> Failure {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) if TRANSIENT_CODES.contains(&(status.code() as i32)) => {
            // A status etcd sent has no source; one tonic made of a connection failure carries
            // that failure as its source.
            if status.message().starts_with("etcdserver:") || status.source().is_none() {
                Failure::Busy
            } else {
                Failure::Unreachable
            }
        }
        Error::GRpcStatus(_) => Failure::Final,
        Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => Failure::Final,
        // The keep-alive or watch stream could not be opened or ended at once.
        Error::LeaseKeepAliveError(_) | Error::WatchError(_) => Failure::Unreachable,
        Error::TransportError(_) | Error::IoError(_) => Failure::Unreachable,
        _ => Failure::Final,
    }
}

/// Runs one request on one member, bounded by `limit`.
pub(super) async fn bounded<T>(
    what: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CallError::Etcd { what, source }),
        Err(_) => Err(CallError::Timeout { what, limit }),
    }
}

struct Member {
    url: String,
    client: Client,
}

/// The configured members and the one in use.
pub(super) struct Members {
    members: Vec<Member>,
    /// Index of the member in use.
    current: AtomicUsize,
    request_limit: Duration,
    attempt_limit: Duration,
}

impl Members {
    /// One client per endpoint. Connecting is lazy (no network round trip), so members that are
    /// down at start-up are simply tried later; only malformed endpoints fail here.
    pub(super) async fn new(
        endpoints: &[String],
        request_limit: Duration,
    ) -> Result<Self, CallError> {
        let count = u32::try_from(endpoints.len().max(1)).unwrap_or(u32::MAX);
        let attempt_limit = (request_limit / count).max(MIN_ATTEMPT.min(request_limit));
        let options = ConnectOptions::new()
            .with_connect_timeout(attempt_limit)
            // A member that lost its leader refuses requests (and ends watches) instead of
            // serving stale data or waiting: the request moves on to a member that has one.
            .with_require_leader(true);
        let mut members = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            // Without credentials `connect` only builds the (lazy) channel; bounded all the same.
            let client = bounded(
                "connect",
                attempt_limit,
                Client::connect([url.as_str()], Some(options.clone())),
            )
            .await?;
            members.push(Member {
                url: url.clone(),
                client,
            });
        }
        if members.is_empty() {
            return Err(CallError::Stream("no etcd endpoint configured".into()));
        }
        Ok(Self {
            members,
            current: AtomicUsize::new(0),
            request_limit,
            attempt_limit,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    /// How long one request may take in all.
    pub(super) fn request_limit(&self) -> Duration {
        self.request_limit
    }

    /// How long one attempt on one member may take.
    pub(super) fn attempt_limit(&self) -> Duration {
        self.attempt_limit
    }

    /// Index of the member in use.
    pub(super) fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    pub(super) fn url(&self, index: usize) -> &str {
        &self.members[index].url
    }

    pub(super) fn client(&self, index: usize) -> Client {
        self.members[index].client.clone()
    }

    /// `index` failed a request: unless someone moved on already, the next member is the one in
    /// use from now on.
    pub(super) fn failed(&self, index: usize, error: &CallError) {
        let count = self.members.len();
        if count < 2 {
            return;
        }
        let next = (index + 1) % count;
        if self
            .current
            .compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            debug!(member = %self.members[index].url, next = %self.members[next].url, error = %error, "etcd member failed; moving on");
        }
    }

    /// Runs `attempt` with the member in use and, while it fails for a reason another member
    /// may not share, with the next members, within the request timeout (see the module docs).
    /// `attempt` gets a clone of the member's client and is called once per try.
    pub(super) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.request_limit;
        let first = self.current();
        let mut tried_in_round = 0;
        let mut may_recover = false;
        loop {
            let index = self.current();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = self.attempt_limit.min(remaining);
            let error = match bounded(what, limit, attempt(self.client(index))).await {
                Ok(v) => {
                    if index != first {
                        info!(request = what, failed = %self.url(first), now = %self.url(index), "etcd member failed; moved on to another member");
                    }
                    return Ok(v);
                }
                Err(error) => error,
            };
            let failure = error.failure();
            if failure == Failure::Final {
                return Err(error);
            }
            self.failed(index, &error);
            tried_in_round += 1;
            may_recover |= failure != Failure::Unreachable;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(error);
            }
            if tried_in_round >= self.members.len() {
                // Every member refused the connection: nobody to wait for.
                if !may_recover {
                    return Err(error);
                }
                tried_in_round = 0;
                may_recover = false;
                sleep(ROUND_PAUSE.min(remaining)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::GetOptions;

    async fn probe(members: &Members) -> Result<(), CallError> {
        members
            .call("probe", |mut client| async move {
                client
                    .get("/probe", Some(GetOptions::new().with_limit(1)))
                    .await
                    .map(drop)
            })
            .await
    }

    #[tokio::test]
    async fn gives_up_at_once_when_every_member_refuses() {
        // Nothing listens on these ports of this loopback address.
        let endpoints = ["http://127.0.0.79:9".into(), "http://127.0.0.79:19".into()];
        let members = Members::new(&endpoints, Duration::from_secs(2))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let error = probe(&members).await.unwrap_err();
        assert_eq!(error.failure(), Failure::Unreachable, "{error}");
        assert!(
            started.elapsed() < members.attempt_limit(),
            "took {:?} although nobody listens",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_hung_member_costs_one_attempt_and_is_left() {
        // Accepts connections (the kernel's backlog) and never answers: a hung member.
        let hung = std::net::TcpListener::bind("127.0.0.79:0").unwrap();
        let endpoints = [
            format!("http://{}", hung.local_addr().unwrap()),
            "http://127.0.0.79:9".into(),
        ];
        let limit = Duration::from_secs(1);
        let members = Members::new(&endpoints, limit).await.unwrap();
        let started = std::time::Instant::now();
        let error = probe(&members).await.unwrap_err();
        let took = started.elapsed();
        assert!(took < limit + Duration::from_millis(300), "took {took:?}");
        assert!(
            matches!(error, CallError::Timeout { .. } | CallError::Etcd { .. }),
            "{error}"
        );
        assert_eq!(members.current(), 1, "the hung member stayed in use");
    }
}
