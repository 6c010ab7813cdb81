//! Owns: the control-plane behaviour tests — every scenario of `kaskade_tests::control_suite`
//! once per backend (`<scenario>::memory`, `<scenario>::etcd`), plus the etcd-only scenarios.
//! Each etcd test starts its own etcd on its own address in 127.0.0.60–127.0.0.79, so they run
//! in parallel without sharing state. (The 3-member cluster tests, `etcd_cluster.rs`, use
//! 127.0.0.80–127.0.0.89.)
//!
//! Needs `/usr/bin/etcd` (Debian `etcd-server`, installed by `.ci/setup`).

use kaskade_tests::control_suite::{self, EtcdBackend, MemoryBackend};

/// One module per scenario with a `memory` and an `etcd` test; `$ip` is the etcd test's own
/// loopback address.
macro_rules! on_both_backends {
    ($scenario:ident, $ip:literal) => {
        mod $scenario {
            use super::*;

            #[tokio::test]
            async fn memory() {
                control_suite::$scenario(&MemoryBackend::default()).await;
            }

            #[tokio::test]
            async fn etcd() {
                control_suite::$scenario(&EtcdBackend::start($ip).await).await;
            }
        }
    };
}

on_both_backends!(register_and_update, "127.0.0.60");
on_both_backends!(lease_expiry_removes_node, "127.0.0.61");
on_both_backends!(keep_alive_after_expiry_fails, "127.0.0.62");
on_both_backends!(registering_again_replaces_the_lease, "127.0.0.63");
on_both_backends!(placement_least_loaded_and_sticky, "127.0.0.64");
on_both_backends!(placement_leaves_draining_node, "127.0.0.65");
on_both_backends!(placement_leaves_dead_node, "127.0.0.66");
on_both_backends!(placement_falls_back_to_nearest_site, "127.0.0.67");
on_both_backends!(concurrent_placement_agrees, "127.0.0.68");
on_both_backends!(room_shares_publish_replace_withdraw, "127.0.0.69");
on_both_backends!(room_shares_vanish_with_lease, "127.0.0.70");
on_both_backends!(watch_sees_join_update_leave, "127.0.0.71");
on_both_backends!(mesh_secret_is_shared, "127.0.0.78");
on_both_backends!(revoke_ends_registration_at_once, "127.0.0.79");

on_both_backends!(placement_dies_with_lease, "127.0.0.72");

#[tokio::test]
async fn etcd_refuses_slashes_in_key_parts() {
    control_suite::etcd_refuses_slashes_in_key_parts(&EtcdBackend::start("127.0.0.73").await).await;
}

#[tokio::test]
async fn etcd_skips_malformed_data() {
    control_suite::etcd_skips_malformed_data(&EtcdBackend::start("127.0.0.74").await).await;
}

#[tokio::test]
async fn etcd_outage_keeps_last_view_and_recovers() {
    let mut backend = EtcdBackend::start("127.0.0.75").await;
    control_suite::etcd_outage_keeps_last_view_and_recovers(&mut backend).await;
}

#[tokio::test]
async fn etcd_hung_store_is_unreachable_not_a_hang() {
    control_suite::etcd_hung_store_is_unreachable_not_a_hang(
        &EtcdBackend::start("127.0.0.76").await,
    )
    .await;
}

#[tokio::test]
async fn etcd_idle_view_stays_reachable() {
    control_suite::etcd_idle_view_stays_reachable(&EtcdBackend::start("127.0.0.77").await).await;
}
