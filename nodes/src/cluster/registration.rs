//! The registration loop: registers this node under a lease, keeps the lease alive with fresh
//! load figures every third of its TTL (at once when the draining flag changes), registers again
//! when the lease was lost (etcd restarted or was unreachable for longer than the TTL), and
//! republishes the node's room shares under the new lease. Control-plane errors are logged and
//! retried; they never stop the node. At a clean exit, [`Registration::deregister`] stops the
//! loop and revokes the lease, so the node's record, placements and room shares vanish at once.

use super::Cluster;
use super::load::LoadSampler;
use super::room_shares::RoomSharePublisher;
use crate::metrics::Metrics;
use kaskade_control::{ControlError, ControlPlane, NodeRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long a clean exit waits for the control plane to revoke the lease; past it the node exits
/// anyway and the lease runs out by its TTL.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The running registration loop.
pub struct Registration {
    cluster: Arc<Cluster>,
    task: JoinHandle<()>,
}

impl Registration {
    /// For a clean exit: stops the loop (so nothing registers again) and revokes the lease,
    /// waiting at most [`REVOKE_TIMEOUT`].
    pub async fn deregister(self) {
        self.task.abort();
        let _ = self.task.await;
        let Some(lease) = self.cluster.lease() else {
            return;
        };
        let node = &self.cluster.node;
        match tokio::time::timeout(REVOKE_TIMEOUT, self.cluster.control.revoke_lease(&lease)).await
        {
            Ok(Ok(())) => {
                self.cluster.set_lease(None);
                info!(node = %node, lease = lease.id, "left the control plane: lease revoked");
            }
            Ok(Err(e)) => {
                warn!(node = %node, lease = lease.id, error = %e, "could not revoke the lease; it runs out by its TTL")
            }
            Err(_) => {
                warn!(node = %node, lease = lease.id, timeout_ms = REVOKE_TIMEOUT.as_millis() as u64, "revoking the lease timed out; it runs out by its TTL")
            }
        }
    }
}

/// Registers once (so the node is listed before it says it is ready; failure is logged, not
/// fatal) and spawns the loop.
pub async fn start(
    cluster: Arc<Cluster>,
    mut load: LoadSampler,
    mut shares: RoomSharePublisher,
    ttl: Duration,
) -> Registration {
    let mut reachable = register(&cluster, &mut load, ttl).await;
    observe(&cluster, load.metrics(), reachable);
    let looping = cluster.clone();
    let task = tokio::spawn(async move {
        let cluster = looping;
        let period = (ttl / 3).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cluster.changed.notified() => {}
            }
            let ok = match cluster.lease() {
                None => register(&cluster, &mut load, ttl).await,
                Some(lease) => {
                    let record = fresh_record(&cluster, &mut load).await;
                    match cluster.control.keep_alive(&lease, record).await {
                        Ok(()) => true,
                        Err(ControlError::LeaseExpired(id)) => {
                            load.metrics().mesh.control_plane_errors.inc();
                            warn!(node = %cluster.node, lease = id, "registry lease lost; registering again");
                            cluster.set_lease(None);
                            register(&cluster, &mut load, ttl).await
                        }
                        Err(e) => {
                            load.metrics().mesh.control_plane_errors.inc();
                            if reachable {
                                warn!(node = %cluster.node, error = %e, "control plane unreachable; forwarding continues, new rooms are refused");
                            }
                            false
                        }
                    }
                }
            };
            if ok && !reachable {
                info!(node = %cluster.node, "control plane reachable again");
            }
            reachable = ok;
            observe(&cluster, load.metrics(), ok);
            if ok && let Some(lease) = cluster.lease() {
                shares.sync(&cluster, &lease).await;
            }
        }
    });
    Registration { cluster, task }
}

/// The node's record with its load and links as they are now.
async fn fresh_record(cluster: &Cluster, load: &mut LoadSampler) -> NodeRecord {
    let sample = load.sample().await;
    let links = load.links();
    cluster.update_record(|r| {
        r.load = sample;
        r.links = links;
    })
}

/// Mirrors the control plane's state in the metrics: reachable, lease, live nodes per site.
fn observe(cluster: &Cluster, metrics: &Metrics, reachable: bool) {
    let mesh = &metrics.mesh;
    mesh.control_plane_reachable.set(i64::from(reachable));
    mesh.control_plane_lease_held
        .set(i64::from(cluster.lease().is_some()));
    let view = cluster.view();
    if view.reachable {
        mesh.set_live_nodes(view.nodes.values().map(|n| n.site.as_str()));
    }
}

/// One registration attempt; true on success.
async fn register(cluster: &Cluster, load: &mut LoadSampler, ttl: Duration) -> bool {
    let record = fresh_record(cluster, load).await;
    match cluster.control.register_node(record, ttl).await {
        Ok(lease) => {
            load.metrics().mesh.control_plane_registrations.inc();
            info!(node = %cluster.node, site = %cluster.site, lease = lease.id, ttl_ms = ttl.as_millis() as u64, backend = cluster.control.kind(), "registered in the control plane");
            cluster.set_lease(Some(lease));
            true
        }
        Err(e) => {
            load.metrics().mesh.control_plane_errors.inc();
            warn!(node = %cluster.node, error = %e, "registration failed; retrying");
            false
        }
    }
}
