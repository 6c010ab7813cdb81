//! Owns: the traces of issue 8 end to end — nodes started with `--otlp` send their spans over
//! OTLP/gRPC to a real trace receiver inside the test (OpenTelemetry's generated `TraceService`
//! on tonic, 127.0.0.1:0). One node: an aiortc client joins and publishes, the node is drained
//! and exits, and the join, placement, negotiation and drain spans arrive with their
//! attributes and the node's resource — all of them in the flush at exit, since the node runs
//! with a batch delay longer than the test. Two nodes in two sites: relay link dial and accept,
//! joins, negotiations, the upstream subscription of a cascaded track, a resumed participant
//! and the peer lost after a SIGKILL arrive while the nodes run.

use kaskade_tests::mesh::{MeshNodeSpec, TempDir, make_certs, start_node_with, wait_all_linked};
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NodeProcess, PyClient, heavy_test_lock, node_bin, poll_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STEP: Duration = Duration::from_secs(30);

/// One span as the receiver got it; attribute values as text.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

impl ReceivedSpan {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn node(&self) -> Option<&str> {
        self.resource.get("service.instance.id").map(String::as_str)
    }

    fn is_child_of(&self, parent: &ReceivedSpan) -> bool {
        self.trace_id == parent.trace_id && self.parent_span_id == parent.span_id
    }
}

fn text_of(attributes: Vec<KeyValue>) -> BTreeMap<String, String> {
    attributes
        .into_iter()
        .map(|kv| {
            let value = match kv.value.and_then(|v| v.value) {
                Some(AnyValue::StringValue(s)) => s,
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key, value)
        })
        .collect()
}

/// The receiving end of the gRPC service: keeps every span.
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = text_of(
                resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default(),
            );
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(ReceivedSpan {
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: text_of(span.attributes),
                    resource: resource.clone(),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A real OTLP/gRPC trace receiver on 127.0.0.1; stopped with its runtime on drop.
struct TraceReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TraceReceiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("receiver port");
        let addr = listener.local_addr().expect("receiver address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Collector {
            spans: spans.clone(),
        });
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        Self {
            addr,
            spans,
            _runtime: runtime,
        }
    }

    /// What `--otlp` takes.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans `node` sent that are named `name`.
    fn named(&self, node: &str, name: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.node() == Some(node) && s.name == name)
            .collect()
    }

    /// Waits for a span of `node` named `name` that `accept` takes.
    fn wait_for(
        &self,
        node: &str,
        name: &str,
        accept: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        poll_until(&format!("a {name} span from {node}"), STEP, || {
            let named = self.named(node, name);
            named.iter().find(|s| accept(s)).cloned().ok_or_else(|| {
                let all: Vec<(Option<String>, String)> = self
                    .spans()
                    .into_iter()
                    .map(|s| (s.node().map(str::to_owned), s.name))
                    .collect();
                format!(
                    "{} {name} spans: {:?}; all spans received: {all:?}",
                    named.len(),
                    named.iter().map(|s| &s.attributes).collect::<Vec<_>>()
                )
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The one span of `spans` that `accept` takes; fails with all of them otherwise.
fn the<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    accept: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| accept(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nall spans: {spans:#?}");
    found[0]
}

fn start_node_with_env(args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
    NodeProcess::start_with_env(node_bin!(), args, env).expect("node starts")
}

#[test]
fn join_placement_negotiation_and_drain_are_traced_and_flushed_at_exit() {
    let _heavy = heavy_test_lock();
    let receiver = TraceReceiver::start();
    let url = receiver.url();
    // A batch delay longer than the test: every span has to come with the flush at exit.
    let mut node = start_node_with_env(
        &[
            "--otlp",
            &url,
            "--node-id",
            "traced-1",
            "--site",
            "lab",
            "--drain-deadline-secs",
            "2",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let room = "traced-room";
    let client = PyClient::ws_client(
        "publisher",
        &node.ws_url(),
        room,
        "Ada",
        60.0,
        &["--publish"],
    )
    .expect("client starts");
    let joined = client
        .wait_event("joined", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.diagnostics(), node.proc.diagnostics()));
    let participant = joined["participant"]
        .as_str()
        .expect("participant id")
        .to_owned();
    client
        .wait_event("published", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", client.diagnostics()));
    assert!(
        receiver.spans().is_empty(),
        "spans were sent before the batch delay: {:#?}",
        receiver.spans()
    );

    let drain = kaskade_tests::http::post(&node.at("/admin/drain"), "application/json", b"{}")
        .expect("drain request");
    assert_eq!(drain.status, 202, "{}", drain.text());
    let status = node
        .proc
        .wait_exit(STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", node.proc.diagnostics()));
    assert!(status.success(), "{status}\n{}", node.proc.diagnostics());

    // The node flushed before it exited: nothing more is coming.
    let spans = receiver.spans();
    for span in &spans {
        assert_eq!(
            span.resource.get("service.name").map(String::as_str),
            Some("kaskade"),
            "{span:#?}"
        );
        assert_eq!(span.node(), Some("traced-1"), "{span:#?}");
        assert_eq!(
            span.resource.get("kaskade.site").map(String::as_str),
            Some("lab"),
            "{span:#?}"
        );
        for value in span.attributes.values() {
            assert!(
                !value.contains("127.0.0.1") && !value.contains("v=0"),
                "an address or SDP in a span attribute: {span:#?}"
            );
        }
    }
    let join = the(&spans, "the join", |s| {
        s.name == "join" && s.attr("participant") == Some(participant.as_str())
    });
    assert_eq!(join.attr("room"), Some(room), "{join:#?}");
    assert_eq!(join.attr("outcome"), Some("joined"), "{join:#?}");
    assert_eq!(join.attr("resuming"), Some("false"), "{join:#?}");
    let placement = the(&spans, "the join's placement", |s| {
        s.name == "placement" && s.is_child_of(join)
    });
    assert_eq!(placement.attr("room"), Some(room), "{placement:#?}");
    assert_eq!(placement.attr("outcome"), Some("here"), "{placement:#?}");
    assert_eq!(
        placement.attr("placed_node"),
        Some("traced-1"),
        "{placement:#?}"
    );
    assert_eq!(placement.attr("placed_site"), Some("lab"), "{placement:#?}");
    let publish = the(&spans, "the publish negotiation", |s| {
        s.name == "negotiation" && s.attr("kind") == Some("publish")
    });
    assert_eq!(
        publish.attr("participant"),
        Some(participant.as_str()),
        "{publish:#?}"
    );
    assert_eq!(publish.attr("outcome"), Some("ok"), "{publish:#?}");
    assert_eq!(publish.attr("tracks"), Some("2"), "{publish:#?}");
    let drain = the(&spans, "the drain", |s| s.name == "drain");
    assert_eq!(drain.attr("node"), Some("traced-1"), "{drain:#?}");
    assert_eq!(drain.attr("rooms"), Some("1"), "{drain:#?}");
    assert_eq!(drain.attr("rooms_moved"), Some("0"), "{drain:#?}");
    // No other node: the publisher stays until the deadline.
    assert_eq!(drain.attr("outcome"), Some("deadline"), "{drain:#?}");
    let replaced = the(&spans, "the drain's placement of the room", |s| {
        s.name == "placement" && s.is_child_of(drain)
    });
    assert_eq!(replaced.attr("room"), Some(room), "{replaced:#?}");
    assert_eq!(replaced.attr("resuming"), Some("true"), "{replaced:#?}");
    assert_eq!(replaced.attr("outcome"), Some("refused"), "{replaced:#?}");
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    println!("spans received from traced-1: {names:?}");
}

#[test]
fn relay_links_cascaded_tracks_resumes_and_a_lost_peer_are_traced() {
    let _heavy = heavy_test_lock();
    let receiver = TraceReceiver::start();
    let url = receiver.url();
    let certs = TempDir::new("certs-traces");
    make_certs(node_bin!(), &certs.0, &["trace-a", "trace-b"]).expect("certs");
    let a = MeshNodeSpec::new("trace-a", "site-a", "127.0.0.95");
    let b = MeshNodeSpec::new("trace-b", "site-b", "127.0.0.96");
    let otlp = vec!["--otlp".to_owned(), url.clone()];
    let mut nodes = vec![
        start_node_with(None, node_bin!(), &a, &certs.0, &[b.peer_arg(None)], &otlp)
            .expect("trace-a starts"),
        start_node_with(None, node_bin!(), &b, &certs.0, &[a.peer_arg(None)], &otlp)
            .expect("trace-b starts"),
    ];
    wait_all_linked(None, &nodes, &["trace-a", "trace-b"]);

    // trace-a dials (its id sorts first), trace-b accepts.
    let dial = receiver.wait_for("trace-a", "cascade.dial", |s| {
        s.attr("outcome") == Some("up")
    });
    assert_eq!(dial.attr("peer"), Some("trace-b"), "{dial:#?}");
    assert_eq!(dial.attr("peer_site"), Some("site-b"), "{dial:#?}");
    let accept = receiver.wait_for("trace-b", "cascade.accept", |s| {
        s.attr("outcome") == Some("up")
    });
    assert_eq!(accept.attr("peer"), Some("trace-a"), "{accept:#?}");
    assert_eq!(accept.attr("peer_site"), Some("site-a"), "{accept:#?}");
    assert_eq!(
        accept.resource.get("kaskade.site").map(String::as_str),
        Some("site-b")
    );

    // A track published on trace-a and watched on trace-b is subscribed upstream by trace-b.
    let room = "traced-cascade";
    let publisher = PyClient::ws_client(
        "publisher-a",
        &nodes[0].ws_url(),
        room,
        "Ada",
        60.0,
        &["--publish", "--audio-only"],
    )
    .expect("publisher starts");
    publisher
        .wait_event("published", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", publisher.diagnostics()));
    let watcher = PyClient::ws_client("watcher-b", &nodes[1].ws_url(), room, "Bob", 60.0, &[])
        .expect("watcher starts");
    watcher
        .wait_event("first_frame", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", watcher.diagnostics()));
    let subscribed = receiver.wait_for("trace-b", "cascade.subscribe", |s| {
        s.attr("room") == Some(room)
    });
    assert_eq!(
        subscribed.attr("origin"),
        Some("trace-a"),
        "{subscribed:#?}"
    );
    assert_eq!(
        subscribed.attr("upstream"),
        Some("trace-a"),
        "{subscribed:#?}"
    );
    assert_eq!(
        subscribed.attr("upstream_site"),
        Some("site-a"),
        "{subscribed:#?}"
    );
    // The first joiners of the room on each node (whose joins start the room's actor) and the
    // negotiations are sent while the nodes run, not held open.
    let join_b = receiver.wait_for("trace-b", "join", |s| s.attr("room") == Some(room));
    assert_eq!(join_b.attr("outcome"), Some("joined"), "{join_b:#?}");
    let placement_b = receiver.wait_for("trace-b", "placement", |s| s.is_child_of(&join_b));
    assert_eq!(
        placement_b.attr("placed_node"),
        Some("trace-b"),
        "{placement_b:#?}"
    );
    receiver.wait_for("trace-a", "join", |s| {
        s.attr("room") == Some(room) && s.attr("outcome") == Some("joined")
    });
    receiver.wait_for("trace-a", "negotiation", |s| {
        s.attr("kind") == Some("publish") && s.attr("outcome") == Some("ok")
    });
    for kind in ["subscribe_offer", "subscribe_answer"] {
        let negotiation =
            receiver.wait_for("trace-b", "negotiation", |s| s.attr("kind") == Some(kind));
        assert_eq!(negotiation.attr("outcome"), Some("ok"), "{negotiation:#?}");
        assert!(
            negotiation.attr("participant").is_some(),
            "{negotiation:#?}"
        );
    }

    // A participant coming back with its resume token (as after its node died or drained).
    let resume_room = "traced-resume";
    let (first, joined) =
        WsConn::join(&nodes[1].ws_url(), resume_room, "Cy", None, STEP).expect("joined");
    let participant = joined["participant"].as_str().expect("id").to_owned();
    let token = joined["resume_token"]
        .as_str()
        .expect("resume token")
        .to_owned();
    drop(first);
    let mut again = WsConn::connect(&nodes[1].ws_url()).expect("connects again");
    again
        .send_json(&json!({"type": "join", "room": resume_room, "name": "Cy", "resume": token}))
        .unwrap();
    let rejoined = again
        .recv_until("joined again", STEP, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(rejoined["participant"], participant.as_str(), "{rejoined}");
    let resumed = receiver.wait_for("trace-b", "failover.resume", |s| {
        s.attr("room") == Some(resume_room)
    });
    assert_eq!(resumed.attr("outcome"), Some("resumed"), "{resumed:#?}");
    assert_eq!(
        resumed.attr("participant"),
        Some(participant.as_str()),
        "{resumed:#?}"
    );
    let join = receiver.wait_for("trace-b", "join", |s| resumed.is_child_of(s));
    assert_eq!(join.attr("resuming"), Some("true"), "{join:#?}");
    assert_eq!(
        join.attr("participant"),
        Some(participant.as_str()),
        "{join:#?}"
    );
    assert_eq!(join.attr("outcome"), Some("joined"), "{join:#?}");
    drop(again);

    // trace-b dies: once its link's grace period is over, trace-a forgets it.
    drop(watcher);
    nodes[1].proc.kill9();
    let gone = receiver.wait_for("trace-a", "failover.peer_gone", |s| {
        s.attr("peer") == Some("trace-b")
    });
    assert_eq!(gone.attr("peer_site"), Some("site-b"), "{gone:#?}");
    assert_eq!(gone.attr("rooms"), Some("1"), "{gone:#?}");
    nodes[0].assert_alive();
    drop(publisher);
    for node in ["trace-a", "trace-b"] {
        let names: BTreeMap<String, usize> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.node() == Some(node))
            .fold(BTreeMap::new(), |mut counts, s| {
                *counts.entry(s.name).or_default() += 1;
                counts
            });
        println!("spans received from {node}: {names:?}");
    }
}
