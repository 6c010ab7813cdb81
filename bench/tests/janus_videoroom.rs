//! End-to-end check of the Janus side of the load generator: in a fresh network namespace, start
//! Janus (`kaskade_bench::janus::JanusProcess`), create a VideoRoom room, publish a VP8 track
//! from a webrtc-rs publisher, subscribe to it with a second webrtc-rs peer, and check that the
//! subscriber receives the publisher's packets with their payloads intact. Two more check that
//! a session's pump keeps it alive past Janus's `session_timeout` (and reports the end of one
//! that is not kept alive), and that no Janus outlives a panicking test.
//!
//! Needs root and iproute2 (network namespaces; skipped with a message otherwise) and Janus
//! (`apt-get install -y janus`; fails without it).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kaskade_bench::janus::{
    HandleEvent, JanusConfig, JanusError, JanusProcess, RoomOptions, VideoRoomHandle,
};
use kaskade_tests::NetNs;
use kaskade_tests::netns::in_named_netns;

#[path = "../src/janus/peer.rs"]
mod peer;
#[path = "../src/webrtc_peer.rs"]
mod webrtc_peer;
use peer::{JanusPublisher, JanusSubscriber};

/// Packets whose arrival is checked one by one (after the warm-up).
const BATCH: u64 = 200;
/// First id of the checked batch; warm-up packets count up from 0.
const BATCH_BASE: u64 = 1_000_000;
const PAYLOAD_LEN: usize = 600;
/// Deadline for the subscriber's first packet, and for the whole batch.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this machine can run the test: false (with a message) without namespace tooling; a
/// panic saying how to install Janus without it.
fn preflight(test: &str) -> bool {
    if let Err(e) = NetNs::check_tooling() {
        eprintln!("SKIPPED {test}: cannot create network namespaces: {e}");
        return false;
    }
    if let Err(e) = JanusConfig::default()
        .find_binary()
        .and_then(|_| JanusConfig::default().find_modules_dir())
    {
        panic!("{test}: {e}");
    }
    true
}

/// Runs `f` on a multi-thread tokio runtime whose threads (and so every socket) live in `ns`.
fn run_in<T: Send>(ns: &NetNs, f: impl AsyncFnOnce() -> T + Send) -> T {
    in_named_netns(&ns.name, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn janus_relays_a_webrtc_rs_publisher_to_a_subscriber() {
    if !preflight("janus_relays_a_webrtc_rs_publisher_to_a_subscriber") {
        return;
    }
    let started = Instant::now();
    let ns = NetNs::create().expect("network namespace");
    let ip: IpAddr = ns.ns_ip.parse().expect("namespace address");
    let janus_pid = run_in(&ns, async || {
        let config = JanusConfig {
            event_loops: 2,
            ..Default::default()
        };
        let janus = JanusProcess::start(&ns, &config)
            .await
            .expect("start janus");
        let pid = janus.pid();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "janus",
            "pid() must be janus itself, not a wrapper"
        );
        let client = janus.client();
        let info = client.info().await.expect("GET /janus/info");
        assert!(info.ice_lite, "Janus runs ICE-lite");
        assert_eq!(info.local_ip, ns.ns_ip, "Janus uses the veth address");
        assert_eq!(info.static_event_loops, 2, "handles share 2 event loops");
        assert_eq!(
            (info.plugins.len(), info.transports.len()),
            (1, 1),
            "only VideoRoom and HTTP are loaded: {:?} {:?}",
            info.plugins.keys().collect::<Vec<_>>(),
            info.transports.keys().collect::<Vec<_>>()
        );

        let session = client.create_session().await.expect("create session");
        let admin = VideoRoomHandle::attach(&session).await.expect("attach");
        let room = admin
            .create_room(&RoomOptions {
                bitrate: 1_000_000,
                ..Default::default()
            })
            .await
            .expect("create room");

        let mut publisher = JanusPublisher::connect(&session, room, ip, "pub")
            .await
            .unwrap_or_else(|e| panic!("publish: {e:#}\n{}", janus.diagnostics()));
        assert!(
            publisher.answer.contains("a=ice-lite"),
            "Janus's answer:\n{}",
            publisher.answer
        );
        let subscriber = JanusSubscriber::connect(&session, room, publisher.feed, ip)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e:#}\n{}", janus.diagnostics()));

        // Warm-up: send until the subscriber has seen a packet, so the checked batch does not
        // race the last steps of Janus's subscriber setup.
        let mut id = 0;
        let seen = {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let first = subscriber.wait_until(ARRIVAL_TIMEOUT, |a| !a.is_empty());
            tokio::pin!(first);
            loop {
                tokio::select! {
                    seen = &mut first => break seen,
                    _ = tick.tick() => {
                        publisher.send(id, id as u32 * 3000, PAYLOAD_LEN).await.expect("send");
                        id += 1;
                    }
                }
            }
        };
        assert!(
            seen,
            "the subscriber received nothing of {id} warm-up packets\n{}",
            janus.diagnostics()
        );

        // The checked batch, paced at 1 packet/ms.
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for n in 0..BATCH {
            tick.tick().await;
            let id = BATCH_BASE + n;
            publisher
                .send(id, id as u32 * 3000, PAYLOAD_LEN)
                .await
                .expect("send");
        }
        let batch = |arrivals: &[peer::Arrival]| -> BTreeSet<u64> {
            arrivals
                .iter()
                .filter_map(|a| a.id)
                .filter(|id| *id >= BATCH_BASE)
                .collect()
        };
        let complete = subscriber
            .wait_until(ARRIVAL_TIMEOUT, |a| batch(a).len() as u64 == BATCH)
            .await;
        let arrivals = subscriber.arrivals.lock().unwrap().clone();
        let got = batch(&arrivals);
        assert!(
            complete,
            "the subscriber received {} of {BATCH} packets; missing e.g. {:?}",
            got.len(),
            (BATCH_BASE..BATCH_BASE + BATCH)
                .filter(|id| !got.contains(id))
                .take(10)
                .collect::<Vec<_>>()
        );
        let altered = arrivals.iter().filter(|a| a.id.is_none()).count();
        assert_eq!(
            altered, 0,
            "packets without our marker or with altered payloads"
        );
        assert!(
            arrivals
                .iter()
                .all(|a| a.payload_type == peer::VP8_PAYLOAD_TYPE),
            "every packet is VP8"
        );

        // The event pump delivers unsolicited events too: Janus reports receiving our video.
        let media = publisher
            .handle
            .handle_mut()
            .wait_event("media receiving", Duration::from_secs(5), |e| {
                matches!(e, HandleEvent::Media { kind, receiving: true, .. } if kind == "video")
            })
            .await;
        assert!(
            media.is_ok(),
            "no `media` event for the publisher: {media:?}"
        );
        let cpu = janus.cpu_time().expect("janus cpu time");
        assert!(cpu > Duration::ZERO, "Janus used no CPU?");

        subscriber.close().await.expect("close subscriber");
        publisher.close().await.expect("close publisher");
        admin.destroy_room(room).await.expect("destroy room");
        session.destroy().await.expect("destroy session");
        eprintln!(
            "janus relayed {BATCH} packets (+{} warm-up, {} received in all); janus cpu {cpu:?}",
            id,
            arrivals.len()
        );
        pid
    });
    assert!(
        !process_alive(janus_pid),
        "janus {janus_pid} survived its JanusProcess"
    );
    let took = started.elapsed();
    eprintln!("janus_relays_a_webrtc_rs_publisher_to_a_subscriber took {took:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn sessions_outlive_session_timeout_only_with_keepalives() {
    if !preflight("sessions_outlive_session_timeout_only_with_keepalives") {
        return;
    }
    let ns = NetNs::create().expect("network namespace");
    run_in(&ns, async || {
        let config = JanusConfig {
            session_timeout_secs: 2,
            ..Default::default()
        };
        let janus = JanusProcess::start(&ns, &config)
            .await
            .expect("start janus");
        let kept = janus
            .client()
            .with_keepalive(Some(Duration::from_millis(500)))
            .create_session()
            .await
            .expect("create session");
        let idle = janus
            .client()
            .with_keepalive(None)
            .create_session()
            .await
            .expect("create session");
        let kept_room = VideoRoomHandle::attach(&kept).await.expect("attach");
        let mut idle_room = VideoRoomHandle::attach(&idle).await.expect("attach");
        // Janus's watchdog drops the idle session 2–4 s after the start of its (30 s) long poll;
        // the pump hears `timeout` and closes the handle's queue. Janus may first report the
        // handle `detached` (it detaches a timed-out session's handles), in either order.
        let started = Instant::now();
        let end = loop {
            match idle_room
                .handle_mut()
                .next_event(Duration::from_secs(15))
                .await
            {
                Ok(HandleEvent::Detached) => continue,
                other => break other,
            }
        };
        assert!(
            matches!(end, Err(JanusError::SessionEnded { ref reason, .. }) if reason.contains("timed")),
            "the idle session should have timed out: {end:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "ended after {:?}, before session_timeout",
            started.elapsed()
        );
        let refused = idle_room.create_room(&RoomOptions::default()).await;
        assert!(
            matches!(refused, Err(JanusError::SessionEnded { .. })),
            "{refused:?}"
        );
        assert_eq!(kept.ended(), None, "the session with keepalives ended");
        kept_room
            .create_room(&RoomOptions::default())
            .await
            .expect("the session with keepalives still works");
        kept.destroy().await.expect("destroy session");
    });
}

#[test]
fn no_janus_survives_a_panic() {
    if !preflight("no_janus_survives_a_panic") {
        return;
    }
    let ns = NetNs::create().expect("network namespace");
    let pid = AtomicU32::new(0);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_in(&ns, async || {
            let janus = JanusProcess::start(&ns, &JanusConfig::default())
                .await
                .expect("start janus");
            pid.store(janus.pid(), Ordering::SeqCst);
            panic!("deliberate panic with janus running");
        })
    }));
    assert!(outcome.is_err(), "the closure should have panicked");
    let pid = pid.load(Ordering::SeqCst);
    assert_ne!(pid, 0, "janus never started");
    assert!(!process_alive(pid), "janus {pid} survived the panic");
}
