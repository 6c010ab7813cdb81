//! The Kaskade node: wires signalling (axum), the WebRTC edge, the mesh actors and the control plane
//! together. `main.rs` and the end-to-end test binary both call [`run_cli`].

pub mod certs;
pub mod config;
pub mod edge;
pub mod http;
pub mod metrics;
pub mod relay;

use anyhow::Context;
use clap::Parser;
use config::{Cli, Command, LogFormat, NodeConfig};
use std::sync::Arc;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Parses the command line and runs the chosen subcommand.
pub fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => {
            let config = args.resolve()?;
            init_logging(config.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(run_node(config))
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
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KASKADE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How long open connections get to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs one node until Ctrl-C or SIGTERM.
pub async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    use kaskade_control::memory::MemoryControlPlane;
    let metrics = metrics::Metrics::new();
    let control = Arc::new(MemoryControlPlane::default());
    for peer in &config.peers {
        control.add_static_node(kaskade_control::NodeRecord {
            id: peer.id.clone(),
            site: peer.site.clone(),
            http_url: String::new(),
            media_addr: String::new(),
            relay_addr: peer.addr.to_string(),
            sessions: 0,
            draining: false,
        });
    }
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
            if !config.peers.is_empty() {
                anyhow::bail!("--peer needs --certs: relay links are mutually authenticated");
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
    let state = http::AppState::new(config.node_id.clone(), engine, rooms, metrics)
        .with_relay(relay_handle);
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP {}", config.http))?;
    let http_addr = listener.local_addr()?;
    spawn_registration(
        &config,
        control,
        http_addr,
        media_addr,
        relay_addr,
        state.engine.clone(),
    )
    .await?;
    info!(node = %config.node_id, site = %config.site, http = %http_addr, media = %media_addr, relay = ?relay_addr, "node started");
    if let Some(relay) = relay_addr {
        println!("Kaskade node {} relay on {}", config.node_id, relay);
    }
    println!(
        "Kaskade node {} ready: open http://{}/ (media udp {})",
        config.node_id, http_addr, media_addr
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(async move {
        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result.context("HTTP server")?,
        _ = shutdown_signal() => {
            info!(node = %config.node_id, "stopping");
            let _ = stop_tx.send(true);
            // Open WebSockets would hold a graceful shutdown forever: give them a moment.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                info!(node = %config.node_id, "connections still open after the grace period; closing");
            }
        }
    }
    info!(node = %config.node_id, "node stopped");
    Ok(())
}

/// Registers this node with the control plane (in memory for a single node) and keeps its lease
/// alive with its current load.
async fn spawn_registration(
    config: &NodeConfig,
    control: Arc<kaskade_control::memory::MemoryControlPlane>,
    http: std::net::SocketAddr,
    media: std::net::SocketAddr,
    relay: Option<std::net::SocketAddr>,
    engine: edge::EngineHandle,
) -> anyhow::Result<()> {
    use kaskade_control::{ControlPlane, NodeRecord};
    const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(3);
    let mut record = NodeRecord {
        id: config.node_id.clone(),
        site: config.site.clone(),
        http_url: format!("http://{http}/"),
        media_addr: media.to_string(),
        relay_addr: relay.map(|r| r.to_string()).unwrap_or_default(),
        sessions: 0,
        draining: false,
    };
    let lease = control.register_node(record.clone(), LEASE_TTL).await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LEASE_TTL / 3);
        loop {
            tick.tick().await;
            record.sessions = engine.stats().await.sessions as u64;
            if let Err(e) = control.keep_alive(&lease, record.clone()).await {
                tracing::warn!(node = %record.id, error = %e, "lease keep-alive failed");
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
