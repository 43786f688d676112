//! `/metrics` (OpenMetrics text, through the Prometheus project's
//! `prometheus-client`) and `/healthz`, served on `daemon.metrics_listen`
//! when it is set. Counters that only the process knows (HTTP requests,
//! retries, ERP push latency) live in process-wide metric families;
//! everything the ledger knows is read from it at scrape time, so the numbers
//! agree with `status` and survive restarts. Each scrape builds a registry of
//! both and encodes it.
//!
//! The server is plain hyper HTTP/1.1 with per-connection timeouts (see
//! [`ServerLimits`]); two routes need no web framework.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::outbox::Engine;
use crate::store::now_ms;
use crate::throttle::FailureStreak;

/// Upper bounds (seconds) of the ERP push latency histogram.
const PUSH_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric family `/metrics` serves (counters with their `_total`), for
/// the dashboard and alert checks.
pub const METRIC_NAMES: [&str; 13] = [
    "ordersync_up",
    "ordersync_node_info",
    "ordersync_node_polls",
    "ordersync_orders_seen_total",
    "ordersync_orders_pushed_total",
    "ordersync_orders_parked",
    "ordersync_jobs_queued",
    "ordersync_oldest_due_job_age_seconds",
    "ordersync_last_poll_success_timestamp_seconds",
    "ordersync_cursor_lag_seconds",
    "ordersync_http_requests_total",
    "ordersync_job_retries_total",
    "ordersync_erp_push_duration_seconds",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
    ledger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostStatus {
    host: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceJob {
    source: String,
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// In-process metrics. Clones of a family share its values, so a scrape
/// registers clones next to the ledger's numbers.
pub struct ProcessMetrics {
    http: Family<HostStatus, Counter>,
    retries: Family<SourceJob, Counter>,
    push: Histogram,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        ProcessMetrics {
            http: Family::default(),
            retries: Family::default(),
            push: Histogram::new(PUSH_BUCKETS),
        }
    }
}

/// The process-wide metrics (the HTTP client records into them from anywhere).
pub fn global() -> &'static ProcessMetrics {
    static METRICS: OnceLock<ProcessMetrics> = OnceLock::new();
    METRICS.get_or_init(ProcessMetrics::default)
}

impl ProcessMetrics {
    /// One HTTP exchange; `status` None when no answer came (network error).
    pub fn http_request(&self, host: &str, status: Option<u16>) {
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "error".into());
        self.http
            .get_or_create(&HostStatus {
                host: host.to_string(),
                status,
            })
            .inc();
    }

    pub fn retry(&self, source: &str, job: &str) {
        self.retries
            .get_or_create(&SourceJob {
                source: source.to_string(),
                job: job.to_string(),
            })
            .inc();
    }

    pub fn erp_push(&self, took: Duration) {
        self.push.observe(took.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "ordersync_http_requests",
            "HTTP requests to sources and the ERP, by host and status (\"error\": no answer)",
            self.http.clone(),
        );
        registry.register(
            "ordersync_job_retries",
            "Failed job attempts that will be retried",
            self.retries.clone(),
        );
        registry.register(
            "ordersync_erp_push_duration_seconds",
            "Time for one ERP push call, successful or not",
            self.push.clone(),
        );
    }
}

/// The whole exposition: ledger numbers plus the in-process metrics.
pub fn render(engine: &Engine, config: &Config) -> anyhow::Result<String> {
    render_with(engine, config, global())
}

fn render_with(
    engine: &Engine,
    config: &Config,
    process: &ProcessMetrics,
) -> anyhow::Result<String> {
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let numbers = engine.store.source_numbers()?;
    // The sources' rows only: `status` also counts every order by state and
    // lists the parked jobs, which grows with the ledger (a scrape of 100,000
    // orders took 60-86 ms with it, 27-28 ms without: docs/BENCHMARKS.md);
    // `source_numbers` has the counts from indexes.
    let sources = engine.store.source_rows(&names)?;
    let now = now_ms();
    let mut registry = Registry::default();

    let up = Gauge::<i64>::default();
    up.set(1);
    registry.register("ordersync_up", "1 while the daemon serves metrics", up);

    // Which node this is (a fleet on PostgreSQL has several): its lease
    // identity, as `status` lists it, and the poll leases it holds now.
    let node = Family::<NodeLabel, Gauge>::default();
    node.get_or_create(&NodeLabel {
        node: engine.owner.clone(),
        ledger: if engine.store.is_shared() {
            "postgres".into()
        } else {
            "sqlite".into()
        },
    })
    .set(1);
    registry.register(
        "ordersync_node_info",
        "This node's id (host/pid/nonce) and ledger kind; always 1",
        node,
    );
    let polling = Family::<SourceLabel, Gauge>::default();
    for s in names
        .iter()
        .map(String::as_str)
        .chain([crate::store::fence::ERP_FEED])
    {
        if crate::fleet::may_poll(&engine.store, s) {
            polling
                .get_or_create(&SourceLabel {
                    source: s.to_string(),
                })
                .set(1);
        }
    }
    registry.register(
        "ordersync_node_polls",
        "1 for each source (and _erp, the ERP's feeds) this node polls; on a fleet, the poll leases it holds",
        polling,
    );

    let seen = Family::<SourceLabel, Counter>::default();
    let pushed = Family::<SourceLabel, Counter>::default();
    let parked = Family::<SourceLabel, Gauge>::default();
    let queued = Family::<SourceLabel, Gauge>::default();
    let oldest = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
    for (s, n) in &numbers {
        let source = SourceLabel { source: s.clone() };
        seen.get_or_create(&source)
            .inc_by(u64::try_from(n.seen).unwrap_or(0));
        pushed
            .get_or_create(&source)
            .inc_by(u64::try_from(n.pushed).unwrap_or(0));
        parked.get_or_create(&source).set(n.parked);
        queued.get_or_create(&source).set(n.queued_jobs);
        let age = n
            .oldest_due_ms
            .map(|t| (now - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        oldest.get_or_create(&source).set(age);
    }
    registry.register(
        "ordersync_orders_seen",
        "Orders recorded in the ledger",
        seen,
    );
    registry.register("ordersync_orders_pushed", "Orders the ERP accepted", pushed);
    registry.register(
        "ordersync_orders_parked",
        "Orders with a parked job (an operator must look)",
        parked,
    );
    registry.register(
        "ordersync_jobs_queued",
        "Jobs waiting to run (due now or later)",
        queued,
    );
    registry.register(
        "ordersync_oldest_due_job_age_seconds",
        "How long the oldest due job has been waiting",
        oldest,
    );

    let last_success = Family::<SourceLabel, Gauge>::default();
    let lag = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
    for row in &sources {
        let source = SourceLabel {
            source: row.name.clone(),
        };
        if let Some(t) = row
            .last_success_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            last_success.get_or_create(&source).set(t.timestamp());
        }
        if let Some(t) = row
            .cursor
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let secs = (now - t.timestamp_millis()).max(0) as f64 / 1000.0;
            lag.get_or_create(&source).set(secs);
        }
    }
    registry.register(
        "ordersync_last_poll_success_timestamp_seconds",
        "Unix time of the last successful poll",
        last_success,
    );
    registry.register(
        "ordersync_cursor_lag_seconds",
        "Now minus the source's cursor, for time cursors",
        lag,
    );
    process.register(&mut registry);

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    config: Arc<Config>,
    started_ms: i64,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: Option<&'static str>, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Some(t) = content_type {
        r.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(t));
    }
    r
}

/// GET (or HEAD) `/metrics` and `/healthz`; any other path is 404, any
/// other method 405.
async fn route(req: Request<Incoming>, st: AppState) -> Result<Reply, std::convert::Infallible> {
    let healthz = match req.uri().path() {
        "/metrics" => false,
        "/healthz" => true,
        _ => return Ok(reply(StatusCode::NOT_FOUND, None, String::new())),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, None, String::new());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET,HEAD"));
        return Ok(r);
    }
    Ok(if healthz {
        self::healthz(st).await
    } else {
        metrics(st).await
    })
}

async fn metrics(st: AppState) -> Reply {
    let r = tokio::task::spawn_blocking(move || render(&st.engine, &st.config)).await;
    match r {
        Ok(Ok(text)) => reply(StatusCode::OK, Some(CONTENT_TYPE), text),
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("text/plain"),
            format!("{e:#}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("text/plain"),
            format!("{e}\n"),
        ),
    }
}

async fn healthz(st: AppState) -> Reply {
    let r = tokio::task::spawn_blocking(move || {
        crate::health::report(
            &st.engine.heartbeat,
            &st.engine.store,
            &st.config,
            st.started_ms,
        )
    })
    .await
    .unwrap_or_else(|e| Err(format!("health check failed: {e}")));
    let (status, body) = match r {
        Ok(()) => (StatusCode::OK, serde_json::json!({"status": "ok"})),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unhealthy", "reason": reason}),
        ),
    };
    reply(status, Some("application/json"), body.to_string())
}

/// `"9184"` means loopback; `"0.0.0.0:9184"` must be written out on purpose.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.trim().parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an address like \"127.0.0.1:9184\" or a port"))
}

/// How the `/metrics` + `/healthz` server treats its connections, so that
/// clients that connect and send nothing (or half a request) cannot hold file
/// descriptors for ever.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// A request's headers must be complete within this time of the
    /// connection opening or of the previous response; otherwise the
    /// connection is closed. This is also the idle (keep-alive) timeout.
    pub header_timeout: Duration,
    /// No connection lives longer than this, whatever it does (e.g. a client
    /// that stops reading a response).
    pub connection_deadline: Duration,
    /// Connections served at once; further clients wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(5),
            connection_deadline: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// Serves until `shutdown` with the default [`ServerLimits`]; returns the
/// bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    engine: Arc<Engine>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, engine, config, shutdown, ServerLimits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    addr: SocketAddr,
    engine: Arc<Engine>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    limits: ServerLimits,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let state = AppState {
        engine,
        config,
        started_ms: now_ms(),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("daemon.metrics_listen: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(accept_loop(listener, state, shutdown, limits));
    Ok((bound, handle))
}

/// Accepts while a connection slot is free; an accept error (out of file
/// descriptors, say) backs off instead of spinning and is logged once per
/// interval. On shutdown: stop accepting, let open connections finish.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    limits: ServerLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut streak = FailureStreak::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                if let Some(failures) = streak.success() {
                    tracing::info!(failures, "metrics server accepts connections again");
                }
                connections.spawn(serve_connection(
                    stream,
                    state.clone(),
                    shutdown.clone(),
                    limits,
                    permit,
                ));
            }
            Err(e) => {
                drop(permit);
                let next = streak.failure();
                if next.log {
                    tracing::warn!(
                        error = %e,
                        suppressed = next.suppressed,
                        retry_in = %format_args!("{:.1}s", next.delay.as_secs_f32()),
                        "metrics server cannot accept a connection; will retry"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(next.delay) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One HTTP/1.1 connection, bounded by the header timeout (which also ends
/// an idle keep-alive connection) and by the connection deadline.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: AppState,
    shutdown: CancellationToken,
    limits: ServerLimits,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let service = hyper::service::service_fn(move |req| route(req, state.clone()));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let deadline = tokio::time::sleep(limits.connection_deadline);
    tokio::pin!(conn, deadline);
    let mut stopping = false;
    loop {
        tokio::select! {
            // Done, or an error (header timeout, reset): either way dropping
            // the connection closes the socket.
            _ = conn.as_mut() => break,
            _ = &mut deadline => break,
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9184").unwrap().to_string(), "127.0.0.1:9184");
        assert_eq!(
            parse_listen("[::1]:9184").unwrap().to_string(),
            "[::1]:9184"
        );
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn process_metrics_are_encoded_as_openmetrics() {
        let m = ProcessMetrics::default();
        m.erp_push(Duration::from_millis(30));
        m.erp_push(Duration::from_millis(700));
        m.http_request("erp.example", Some(503));
        m.http_request("erp.example", None);
        m.retry("webshop-nl", "push");
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for want in [
            "# TYPE ordersync_erp_push_duration_seconds histogram\n",
            "ordersync_erp_push_duration_seconds_bucket{le=\"0.05\"} 1\n",
            "ordersync_erp_push_duration_seconds_bucket{le=\"1.0\"} 2\n",
            "ordersync_erp_push_duration_seconds_bucket{le=\"+Inf\"} 2\n",
            "ordersync_erp_push_duration_seconds_count 2\n",
            "# TYPE ordersync_http_requests counter\n",
            "ordersync_http_requests_total{host=\"erp.example\",status=\"503\"} 1\n",
            "ordersync_http_requests_total{host=\"erp.example\",status=\"error\"} 1\n",
            "ordersync_job_retries_total{source=\"webshop-nl\",job=\"push\"} 1\n",
        ] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
