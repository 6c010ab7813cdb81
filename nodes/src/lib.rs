//! The Kaskade node: wires signalling (axum), the WebRTC edge, the mesh actors and the control plane
//! together. `main.rs` and the end-to-end test binary both call [`run_cli`].

pub mod accounts_cli;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod edge;
pub mod fuzzing;
pub mod http;
pub mod logged_address;
pub mod metrics;
pub mod relay;
pub mod telemetry;
pub mod tls;
pub mod turn;

use anyhow::Context;
use clap::Parser;
use config::{Cli, Command, NodeConfig};
use kaskade_control::any::AnyControlPlane;
use kaskade_control::etcd::{EtcdControlPlane, EtcdOptions};
use kaskade_control::memory::MemoryControlPlane;
use kaskade_control::{ControlPlane, NodeLoad, NodeRecord};
use std::sync::Arc;
use tracing::info;

/// Parses the command line and runs the chosen subcommand.
pub fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => {
            let config = args.resolve()?;
            logged_address::set_mode(config.log_addresses);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            // The OTLP exporter's gRPC channel runs on this runtime: made inside it, and shut
            // down (its last spans sent) after the node stopped and before the runtime goes.
            let telemetry = {
                let _inside = runtime.enter();
                let traces = config
                    .otlp
                    .as_deref()
                    .map(|endpoint| telemetry::TraceExport {
                        endpoint,
                        node: &config.node_id,
                        site: &config.site,
                    });
                telemetry::init(config.log_format, traces)?
            };
            let result = runtime.block_on(run_node(config));
            telemetry.shutdown();
            result
        }
        Command::Certs(args) => {
            let files = certs::generate(&args.out, &args.nodes)?;
            println!(
                "cluster CA {} ({})",
                files.ca_cert.display(),
                if files.ca_reused { "reused" } else { "new" }
            );
            for n in files.nodes {
                println!(
                    "node {}: {} {}",
                    n.node_id,
                    n.cert.display(),
                    n.key.display()
                );
            }
            Ok(())
        }
        Command::Accounts(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(accounts_cli::run(args))
        }
        Command::Drain(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(drain_command(args))
        }
    }
}

/// `kaskade drain`: finds the node (in etcd, or by --url) and asks its admin endpoint to drain.
async fn drain_command(args: config::DrainArgs) -> anyhow::Result<()> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            if args.etcd.is_empty() {
                anyhow::bail!("give --etcd (to look the node up) or --url (the node's HTTP URL)");
            }
            let etcd = EtcdControlPlane::connect(EtcdOptions {
                endpoints: args.etcd.clone(),
                prefix: args.etcd_prefix.clone(),
                request_timeout: std::time::Duration::from_secs(3),
            })
            .await
            .context("connecting to etcd")?;
            let nodes = etcd.live_nodes().await.context("reading the registry")?;
            let node = nodes
                .into_iter()
                .find(|n| n.id == args.node)
                .with_context(|| format!("node {} is not in the registry", args.node))?;
            if node.http_url.is_empty() {
                anyhow::bail!("node {} has no HTTP endpoint in the registry", args.node);
            }
            node.http_url
        }
    };
    let status = http::admin::request_drain(
        &url,
        &args.node,
        args.admin_token.as_deref(),
        args.ca_cert.as_deref(),
    )
    .await?;
    println!("node {}: {status}", args.node);
    Ok(())
}

/// The access policy the configuration asks for.
fn access_control(
    config: &NodeConfig,
    control: &Arc<AnyControlPlane>,
    mesh_secret: &[u8],
    auditor: audit::Auditor,
) -> auth::access::AccessControl {
    use auth::access::{AccessControl, Enforcer};
    if config.insecure_dev {
        tracing::warn!(node = %config.node_id, "access control is OFF (--insecure-dev): anyone reaching this node may open rooms, publish and watch");
        return AccessControl::Open;
    }
    AccessControl::Enforced(Box::new(Enforcer {
        tokens: auth::tokens::TokenAuthority::new(mesh_secret),
        control: control.clone(),
        accounts: kaskade_control::accounts::AccountDirectory::new(control.clone()),
        metrics_token: config.metrics_token.clone(),
        login_token_lifetime: config.token_lifetime,
        audit: Some(auditor),
    }))
}

/// How long open connections get to finish after the node decided to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds the control plane the configuration asks for.
/// Builds the control plane the configuration asks for; with `--data-dir`, also the lock on
/// the directory, to be held while the node runs.
async fn control_plane(
    config: &NodeConfig,
) -> anyhow::Result<(AnyControlPlane, Option<data_dir::DataDirLock>)> {
    if config.etcd.is_empty() {
        let (memory, lock) = match &config.data_dir {
            Some(dir) => {
                let (store, lock) = data_dir::open(dir)?;
                (store, Some(lock))
            }
            None => (MemoryControlPlane::default(), None),
        };
        for peer in &config.peers {
            memory.add_static_node(static_peer_record(peer));
        }
        return Ok((AnyControlPlane::Memory(memory), lock));
    }
    let options = EtcdOptions {
        endpoints: config.etcd.clone(),
        prefix: config.etcd_prefix.clone(),
        request_timeout: std::time::Duration::from_secs(2),
    };
    let etcd = EtcdControlPlane::connect(options)
        .await
        .with_context(|| format!("connecting to etcd at {}", config.etcd.join(",")))?;
    Ok((AnyControlPlane::Etcd(etcd), None))
}

fn static_peer_record(peer: &config::PeerSpec) -> NodeRecord {
    NodeRecord {
        id: peer.id.clone(),
        site: peer.site.clone(),
        http_url: String::new(),
        media_addr: String::new(),
        relay_addr: peer.addr.to_string(),
        load: NodeLoad::default(),
        draining: false,
        links: Vec::new(),
    }
}

/// Runs one node until it is stopped (Ctrl-C twice, or SIGTERM / drain once the drain is done).
pub async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new();
    metrics.mesh.set_identity(&config.node_id, &config.site);
    metrics
        .mesh
        .capacity_sessions
        .set(config.capacity_sessions as i64);
    let (control, _data_dir_lock) = control_plane(&config).await?;
    let control = Arc::new(control);
    let mesh_secret = control
        .mesh_secret()
        .await
        .context("reading the mesh's shared secret from the control plane")?;
    let identity = match &config.certs {
        Some(dir) => Some(
            relay::tls::MeshIdentity::load(
                &dir.join(certs::CA_CERT_FILE),
                &dir.join(format!("{}.pem", config.node_id)),
                &dir.join(format!("{}.key", config.node_id)),
                &config.node_id,
            )
            .with_context(|| format!("loading the relay certificates from {}", dir.display()))?,
        ),
        None => {
            if !config.peers.is_empty() || !config.etcd.is_empty() {
                anyhow::bail!(
                    "--peer and --etcd need --certs: relay links are mutually authenticated"
                );
            }
            None
        }
    };
    let (engine_ports, relay_ports, demand) = relay::bridge::bridge();
    let pending = identity.as_ref().map(|_| relay::manager::prepare());
    let (engine, media_addr) = edge::engine::spawn(
        config.rtc,
        config.advertise,
        metrics.clone(),
        identity.as_ref().map(|_| engine_ports),
    )
    .with_context(|| format!("binding the media socket {}", config.rtc))?;
    let rooms = match &pending {
        Some(p) => kaskade_mesh::RoomDirectory::with_mesh(p.handle().mesh_sink()),
        None => kaskade_mesh::RoomDirectory::new(),
    };
    let mut relay_addr = None;
    let mut relay_handle = None;
    if let (Some(pending), Some(identity)) = (pending, identity) {
        relay_handle = Some(pending.handle());
        let settings = relay::manager::RelaySettings {
            node: config.node_id.clone(),
            site: config.site.clone(),
            bind: config.relay,
            identity,
        };
        relay_addr = Some(
            pending
                .start(
                    settings,
                    control.clone(),
                    metrics.clone(),
                    relay_ports,
                    demand,
                    rooms.clone(),
                )
                .with_context(|| format!("starting the relay on {}", config.relay))?,
        );
    }
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP {}", config.http))?;
    let http_addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some(tls) => Some(
            tls::acceptor(tls, config.public_url.as_deref(), http_addr.ip())
                .context("setting up TLS for --http")?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let record = NodeRecord {
        id: config.node_id.clone(),
        site: config.site.clone(),
        http_url: config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{http_addr}/")),
        media_addr: media_addr.to_string(),
        relay_addr: relay_addr.map(|r| r.to_string()).unwrap_or_default(),
        load: NodeLoad::default(),
        draining: false,
        links: Vec::new(),
    };
    let cluster = cluster::Cluster::new(
        control.clone(),
        record,
        rooms.clone(),
        config.site_distances.clone(),
        &mesh_secret,
        metrics.clone(),
    );
    let registration = cluster::registration::start(
        cluster.clone(),
        cluster::load::LoadSampler::new(
            engine.clone(),
            rooms.clone(),
            metrics.clone(),
            config.capacity_sessions,
        ),
        cluster::room_shares::RoomSharePublisher::default(),
        config.lease_ttl,
    )
    .await;
    let (drained_tx, mut drained_rx) = tokio::sync::watch::channel(false);
    let auditor = audit::Auditor::start(control.clone(), config.retention);
    rooms.set_action_log(Arc::new(audit::RoomActionLog {
        auditor: auditor.clone(),
        control: control.clone(),
    }));
    rooms.set_guard(Arc::new(audit::RoomBans {
        control: control.clone(),
    }));
    let access = Arc::new(access_control(
        &config,
        &control,
        &mesh_secret,
        auditor.clone(),
    ));
    let limits = Arc::new(http::rate_limits::RateLimits::new(config.rate_limits));
    {
        // Keys back at a full allowance need no state.
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                limits.forget_idle();
            }
        });
    }
    let state = http::AppState::new(config.node_id.clone(), engine, rooms, metrics)
        .with_access(access)
        .with_limits(limits)
        .with_audit(auditor)
        .with_turn(config.turn.clone())
        .with_relay(relay_handle)
        .with_cluster(
            cluster.clone(),
            http::AdminSettings {
                token: config.admin_token.clone(),
                drain_deadline: config.drain_deadline,
                drained: drained_tx.clone(),
                forward_ca: config.certs.as_ref().map(|d| d.join(certs::CA_CERT_FILE)),
            },
        );
    info!(node = %config.node_id, site = %config.site, http = %http_addr, tls = tls.is_some(), media = %media_addr, relay = ?relay_addr, control = control.kind(), "node started");
    if let Some(relay) = relay_addr {
        println!("Kaskade node {} relay on {}", config.node_id, relay);
    }
    println!(
        "Kaskade node {} ready: open {scheme}://{}/ (media udp {})",
        config.node_id, http_addr, media_addr
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app =
        http::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stopped = async move {
        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|stop| *stop).await;
    };
    // The same server and graceful shutdown either way; with TLS the listener hands over
    // connections once their handshake is done (`tap_io` gives them `ConnectInfo`).
    let mut server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls
    {
        Some(acceptor) => {
            use axum::serve::ListenerExt;
            let listener = tls::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
            Box::pin(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            )
        }
        None => Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
    };
    let mut signals = ShutdownSignals::new();
    tokio::select! {
        result = &mut server => result.context("HTTP server")?,
        _ = async {
            // The first SIGTERM or Ctrl-C drains; a second one stops at once.
            signals.next().await;
            info!(node = %config.node_id, "stop requested: draining first (signal again to stop now)");
            cluster::drain::start(cluster.clone(), state.engine.clone(), config.drain_deadline, drained_tx.clone());
            tokio::select! {
                _ = signals.next() => {}
                _ = drained_rx.wait_for(|d| *d) => {}
            }
        } => {}
        _ = async {
            let mut rx = drained_tx.subscribe();
            let _ = rx.wait_for(|d| *d).await;
        } => {}
    }
    info!(node = %config.node_id, "stopping");
    // A clean exit: leave the registry now rather than when the lease would run out.
    registration.deregister().await;
    let _ = stop_tx.send(true);
    // Open WebSockets would hold a graceful shutdown forever: give them a moment.
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        info!(node = %config.node_id, "connections still open after the grace period; closing");
    }
    info!(node = %config.node_id, "node stopped");
    Ok(())
}

/// SIGTERM and Ctrl-C, as a stream of "stop" requests.
struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
