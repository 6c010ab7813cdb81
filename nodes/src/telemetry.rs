//! The node's `tracing` subscriber: log lines on stderr (text or JSON, levels from `KASKADE_LOG`)
//! and, with `--otlp URL`, an OpenTelemetry layer that exports this node's spans (join, placement,
//! negotiation, cascade setup, failover, drain) over OTLP/gRPC through a batch processor. The
//! [`Telemetry`] guard flushes the last spans and shuts the exporter down when the node stops.
//!
//! Every exported span carries the resource `service.name=kaskade`,
//! `service.instance.id=<node id>`, `kaskade.site=<site>` and `service.version`. Only spans of
//! Kaskade's own crates at INFO or above leave the node — no log events (they may carry client
//! addresses), no spans of the libraries underneath.
//!
//! The exporter's gRPC channel lives on a tokio runtime: [`init`] must run inside one (its
//! `enter()` guard is enough) and [`Telemetry::shutdown`] before that runtime is dropped.

use crate::config::LogFormat;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How long spans wait in the batch before they are sent, unless `OTEL_BSP_SCHEDULE_DELAY`
/// (milliseconds, the OpenTelemetry SDK's own variable) says otherwise. Spans are few (control
/// events, never packets), so a short delay costs nothing and shows them promptly.
pub const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// How long one export to the receiver may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the exit may wait for the last spans to be sent.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The SDK's environment variable for the batch delay, honoured when set.
const BATCH_DELAY_ENV: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// `service.name` of every exported span.
pub const SERVICE_NAME: &str = "kaskade";
/// The resource attribute naming the node's site.
pub const SITE_ATTRIBUTE: &str = "kaskade.site";

/// Where traces go and who sends them.
#[derive(Debug, Clone, Copy)]
pub struct TraceExport<'a> {
    /// `http://host:port` of an OTLP/gRPC receiver.
    pub endpoint: &'a str,
    pub node: &'a str,
    pub site: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "--otlp {0:?}: expected the http:// URL of an OTLP/gRPC receiver, e.g. \
         http://127.0.0.1:4317 (TLS to the receiver is not built in: send to a local \
         OpenTelemetry collector)"
    )]
    BadEndpoint(String),
    #[error("--otlp: cannot set up the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] (or dropping it) sends what is left.
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still in the batch and stops the exporter (at most [`SHUTDOWN_TIMEOUT`]).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(error = %e, "the last spans could not be sent to the OTLP receiver");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber: logs as `format`, plus the OTLP layer when `traces` is given.
/// Call it inside the tokio runtime the node runs on when `traces` is given.
pub fn init(
    format: LogFormat,
    traces: Option<TraceExport<'_>>,
) -> Result<Telemetry, TelemetryError> {
    let logs = EnvFilter::try_from_env("KASKADE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
    .with_filter(logs);
    let provider = traces.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(filter_fn(exported).with_max_level_hint(LevelFilter::INFO))
    });
    // A second call (a process that runs two nodes) keeps the first subscriber.
    let _ = Registry::default().with(fmt).with(otel).try_init();
    if let Some(traces) = traces {
        tracing::info!(node = %traces.node, endpoint = %traces.endpoint, "exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

/// The spans that leave the node: Kaskade's own, at INFO or above. Events stay in the logs.
fn exported(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && *meta.level() <= Level::INFO
        && ["kaskade_node", "kaskade_mesh"]
            .iter()
            .any(|krate| meta.target().starts_with(krate))
}

fn tracer_provider(traces: TraceExport<'_>) -> Result<SdkTracerProvider, TelemetryError> {
    check_endpoint(traces.endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(traces.endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os(BATCH_DELAY_ENV).is_none() {
        batch = batch.with_scheduled_delay(EXPORT_DELAY);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let resource = Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attributes([
            KeyValue::new("service.instance.id", traces.node.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(SITE_ATTRIBUTE, traces.site.to_owned()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// Plain `http://host[:port][/]` only: the exporter is built without TLS.
fn check_endpoint(endpoint: &str) -> Result<(), TelemetryError> {
    let bad = || TelemetryError::BadEndpoint(endpoint.to_owned());
    let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_receiver_urls_are_taken() {
        for good in [
            "http://127.0.0.1:4317",
            "http://collector:4317/",
            "http://[::1]:4317",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "https://collector:4317",
            "127.0.0.1:4317",
            "http://",
            "http://collector:4318/v1/traces",
            "http://user@collector:4317",
        ] {
            assert!(
                matches!(check_endpoint(bad), Err(TelemetryError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_kaskade_spans_at_info_are_exported() {
        // The filter is judged on the metadata the macros build, seen through a local subscriber.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let subscriber = Registry::default().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(filter_fn(move |meta| {
                    let verdict = (meta.name().to_owned(), exported(meta));
                    record.lock().unwrap().push(verdict);
                    true
                })),
        );
        tracing::subscriber::with_default(subscriber, || {
            let _join = tracing::info_span!("probe").entered();
            tracing::info!("an event");
            let _verbose = tracing::debug_span!("verbose").entered();
        });
        let seen = seen.lock().unwrap().clone();
        let verdict = |name: &str| {
            seen.iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| *e)
                .unwrap_or_else(|| panic!("{name} not seen in {seen:?}"))
        };
        assert!(verdict("probe"), "{seen:?}");
        assert!(!verdict("verbose"), "{seen:?}");
        assert!(
            seen.iter().any(|(n, e)| n.starts_with("event ") && !e),
            "{seen:?}"
        );
    }
}
