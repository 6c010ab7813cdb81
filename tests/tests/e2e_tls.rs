//! Owns: end-to-end tests of the node's HTTPS/WSS endpoint — a node started with
//! `--tls-cert/--tls-key` (a CA and a server certificate for 127.0.0.1 made here with rcgen)
//! answers HTTPS and WSS joins for clients that trust the CA, refuses plain HTTP on the same port,
//! and keeps serving others while untrusting, garbage-sending and stalled clients fail their
//! handshakes; it stops on SIGTERM as a plain node does; with access control, logins work over
//! HTTPS and invite links name the node's `https://` URL; a node started with
//! `--tls-self-signed` serves HTTPS to a client that skips verification.

use kaskade_tests::access::{Accounts, HOST, PASSWORD};
use kaskade_tests::http::{self, TlsClient};
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NodeProcess, node_bin};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_secs(20);

/// A CA and a server certificate for 127.0.0.1 and localhost, in a temporary directory.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn create(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("kaskade-e2e-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, issuer) = ca("Kaskade test CA");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "kaskade test node");
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params.signed_by(&key, &issuer).unwrap();
        let cert = dir.join("server.pem");
        let key_path = dir.join("server.key");
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_pem,
            cert,
            key: key_path,
        }
    }

    fn node_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            path_str(&self.cert),
            "--tls-key".into(),
            path_str(&self.key),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh CA: its certificate (PEM) and the issuer to sign leaves with.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 temp path").to_owned()
}

fn start(args: &[String]) -> NodeProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start(node_bin!(), &args).expect("node starts")
}

fn healthz(tls: &TlsClient, node: &NodeProcess) -> anyhow::Result<http::Response> {
    http::get_tls(tls, &node.at("/healthz"))
}

/// A WSS join of `name` into `room`; asserts the node answered `joined`.
fn wss_join(tls: &TlsClient, node: &NodeProcess, room: &str, name: &str) -> WsConn {
    let mut ws = WsConn::connect_tls(&node.ws_url(), tls).expect("WSS connect");
    let joined = ws.join_room(room, name, None, STEP).expect("joined");
    assert_eq!(joined["type"], "joined");
    ws
}

/// Error-level lines in the node's log (there should be none).
fn error_lines(node: &NodeProcess) -> Vec<String> {
    node.proc
        .stderr_tail(10_000)
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn configured_certificate_serves_https_and_wss_and_refuses_plain_http() {
    let pki = Pki::create("files");
    let mut node = start(&pki.node_args());
    assert!(
        node.url.starts_with("https://127.0.0.1:"),
        "ready line: {}",
        node.url
    );
    let trusted = http::tls_trusting(pki.ca_pem.as_bytes()).unwrap();

    let r = healthz(&trusted, &node).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    node.tls = Some(trusted.clone());
    assert_eq!(node.get("/api/rooms").unwrap().status, 200);

    // Plain HTTP on the HTTPS port gets no page: the handshake fails and the node hangs up.
    let plain = http::get(&format!("http://{}/healthz", node.ready.http_addr));
    assert!(
        !matches!(&plain, Ok(r) if r.status < 400),
        "plain HTTP got an answer: {plain:?}"
    );

    // A WSS join; a client offering h2 and http/1.1 (as browsers do) is given http/1.1.
    let mut like_a_browser = (*trusted).clone();
    like_a_browser.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let like_a_browser = std::sync::Arc::new(like_a_browser);
    let ws = wss_join(&like_a_browser, &node, "tls-room", "Ada");
    assert_eq!(
        ws.stream().alpn_protocol().as_deref(),
        Some(&b"http/1.1"[..])
    );
    let _second = wss_join(&trusted, &node, "tls-room", "Grace");
    node.assert_alive();
}

#[test]
fn failed_handshakes_do_not_disturb_other_clients() {
    let pki = Pki::create("strangers");
    let mut node = start(&pki.node_args());
    let trusted = http::tls_trusting(pki.ca_pem.as_bytes()).unwrap();
    let (other_ca, _) = ca("Some other CA");
    let stranger = http::tls_trusting(other_ca.as_bytes()).unwrap();

    let mut member = wss_join(&trusted, &node, "steady", "Member");

    // A client that trusts another CA refuses the node's certificate, for HTTPS and WSS.
    let refused = healthz(&stranger, &node).unwrap_err().to_string();
    assert!(refused.contains("TLS handshake"), "{refused}");
    assert!(WsConn::connect_tls(&node.ws_url(), &stranger).is_err());

    // A client that connects and sends nothing holds up nobody, nor does one sending garbage.
    let stalled = TcpStream::connect(node.ready.http_addr).unwrap();
    let mut garbage = TcpStream::connect(node.ready.http_addr).unwrap();
    let garbage_port = garbage.local_addr().unwrap().port();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink); // the node answers with an alert, or just closes

    let started = Instant::now();
    let r = healthz(&trusted, &node).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stalled handshake held up another client for {:?}",
        started.elapsed()
    );
    // The member still talks to the node: a newcomer's arrival reaches it.
    let _newcomer = wss_join(&trusted, &node, "steady", "Newcomer");
    let arrival = member
        .recv_until("participant_joined", STEP, |v| {
            v["type"] == "participant_joined"
        })
        .unwrap();
    assert_eq!(arrival["participant"]["name"], "Newcomer", "{arrival}");
    drop(stalled);

    node.assert_alive();
    assert_eq!(error_lines(&node), Vec::<String>::new());
    let log = node.proc.stderr_tail(10_000);
    assert!(
        !log.contains(&format!(":{garbage_port}")),
        "a client's address reached the log:\n{log}"
    );
}

#[test]
fn a_tls_node_stops_on_sigterm_with_a_websocket_open() {
    let pki = Pki::create("stop");
    let mut args = pki.node_args();
    args.extend(["--drain-deadline-secs".into(), "1".into()]);
    let mut node = start(&args);
    let trusted = http::tls_trusting(pki.ca_pem.as_bytes()).unwrap();
    let _ws = wss_join(&trusted, &node, "closing", "Last");
    node.proc.signal(libc::SIGTERM);
    let status = node
        .proc
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("node did not stop: {e}\n{}", node.proc.diagnostics()));
    assert!(status.success(), "{status}\n{}", node.proc.diagnostics());
    let log = node.proc.stderr_tail(10_000);
    assert!(log.contains("node stopped"), "{log}");
}

#[test]
fn kaskade_drain_reaches_a_node_over_https_with_the_ca_it_is_given() {
    let pki = Pki::create("drain");
    let mut args = pki.node_args();
    args.extend(
        [
            "--admin-token",
            "drain-secret",
            "--drain-deadline-secs",
            "1",
        ]
        .map(String::from),
    );
    let mut node = start(&args);
    let ca_path = pki.dir.join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    let drain = |extra: &[&str]| {
        std::process::Command::new(node_bin!())
            .args(["drain", "--node", &node.ready.node_id, "--url", &node.url])
            .args(["--admin-token", "drain-secret"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Without the CA the tool refuses (it never skips verification).
    let refused = drain(&[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--ca-cert"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let ok = drain(&["--ca-cert", &path_str(&ca_path)]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let status = node
        .proc
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("node did not stop: {e}\n{}", node.proc.diagnostics()));
    assert!(status.success(), "the drained node exits cleanly: {status}");
}

#[test]
fn self_signed_node_serves_https_to_a_client_that_skips_verification() {
    let node = start(&["--tls-self-signed".to_owned()]);
    assert!(node.url.starts_with("https://"), "ready line: {}", node.url);
    let lenient = http::tls_without_verification();
    let r = healthz(&lenient, &node).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let _ws = wss_join(&lenient, &node, "dev-room", "Dev");

    // Nobody's CA issued it: a verifying client refuses it.
    let (some_ca, _) = ca("Unrelated CA");
    let verifying = http::tls_trusting(some_ca.as_bytes()).unwrap();
    assert!(healthz(&verifying, &node).is_err());
}

#[test]
fn access_control_over_https_and_invite_links_name_the_https_url() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let pki = Pki::create("access");
    let mut args = accounts.node_args();
    args.extend(pki.node_args());
    let node = start(&args);
    let trusted = http::tls_trusting(pki.ca_pem.as_bytes()).unwrap();

    let body = serde_json::json!({"tenant": HOST.tenant, "user": HOST.user, "password": PASSWORD});
    let json = [("Content-Type", "application/json")];
    let login = http::request_tls(
        &trusted,
        "POST",
        &node.at("/api/login"),
        &json,
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(login.status, 200, "{}", login.text());
    let token = login.json().unwrap()["token"].as_str().unwrap().to_owned();

    let mut teacher = WsConn::connect_tls(&node.ws_url(), &trusted).unwrap();
    teacher
        .send_json(&serde_json::json!({
            "type": "join", "room": "history", "name": "T", "token": token
        }))
        .unwrap();
    let joined = teacher
        .recv_until("joined", STEP, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(joined["room"], "history", "{joined}");

    let bearer = format!("Bearer {token}");
    let invite = http::request_tls(
        &trusted,
        "POST",
        &node.at("/api/rooms/history/invites"),
        &[json[0], ("Authorization", &bearer)],
        b"{}",
    )
    .unwrap();
    assert_eq!(invite.status, 201, "{}", invite.text());
    let link = invite.json().unwrap()["url"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{}/?room=history&token=", node.url)),
        "the invite link should name the node's https URL: {link}"
    );
}
