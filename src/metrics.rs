//! `/metrics` (Prometheus text format) and `/healthz`, served on
//! `daemon.metrics_listen` when it is set. Counters that only the process
//! knows (HTTP requests, retries, ERP push latency) live in a small registry;
//! everything the ledger knows is read from it at scrape time, so the numbers
//! agree with `status` and survive restarts.
//!
//! The server is plain hyper HTTP/1.1 with per-connection timeouts (see
//! [`ServerLimits`]); two routes need no web framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::outbox::Engine;
use crate::store::now_ms;
use crate::throttle::FailureStreak;

/// Upper bounds (seconds) of the ERP push latency histogram.
const PUSH_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Histogram {
    buckets: [u64; PUSH_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// In-process counters.
#[derive(Default)]
pub struct Registry {
    http: Mutex<BTreeMap<(String, String), u64>>,
    retries: Mutex<BTreeMap<(String, String), u64>>,
    push: Mutex<Histogram>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process-wide registry (the HTTP client records into it from anywhere).
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    /// One HTTP exchange; `status` None when no answer came (network error).
    pub fn http_request(&self, host: &str, status: Option<u16>) {
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "error".into());
        *lock(&self.http)
            .entry((host.to_string(), status))
            .or_default() += 1;
    }

    pub fn retry(&self, source: &str, job: &str) {
        *lock(&self.retries)
            .entry((source.to_string(), job.to_string()))
            .or_default() += 1;
    }

    pub fn erp_push(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut h = lock(&self.push);
        for (i, bound) in PUSH_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ordersync_http_requests_total HTTP requests to sources and the ERP, by host and status (\"error\": no answer)."
        );
        let _ = writeln!(out, "# TYPE ordersync_http_requests_total counter");
        for ((host, status), n) in lock(&self.http).iter() {
            let _ = writeln!(
                out,
                "ordersync_http_requests_total{{host=\"{}\",status=\"{status}\"}} {n}",
                esc(host)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ordersync_job_retries_total Failed job attempts that will be retried."
        );
        let _ = writeln!(out, "# TYPE ordersync_job_retries_total counter");
        for ((source, job), n) in lock(&self.retries).iter() {
            let _ = writeln!(
                out,
                "ordersync_job_retries_total{{source=\"{}\",job=\"{job}\"}} {n}",
                esc(source)
            );
        }
        let h = lock(&self.push);
        let _ = writeln!(
            out,
            "# HELP ordersync_erp_push_duration_seconds Time for one ERP push call, successful or not."
        );
        let _ = writeln!(out, "# TYPE ordersync_erp_push_duration_seconds histogram");
        for (i, bound) in PUSH_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ordersync_erp_push_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "ordersync_erp_push_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "ordersync_erp_push_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "ordersync_erp_push_duration_seconds_count {}", h.count);
    }
}

/// Label values are ours (source names, hosts), but escape them anyway.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition: ledger gauges plus the in-process counters.
pub fn render(engine: &Engine, config: &Config) -> anyhow::Result<String> {
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let numbers = engine.store.source_numbers()?;
    let status = engine.store.status(&names)?;
    let now = now_ms();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ordersync_up 1 while the daemon serves metrics.\n# TYPE ordersync_up gauge\nordersync_up 1"
    );
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    gauge(
        &mut out,
        "ordersync_orders_seen_total",
        "Orders recorded in the ledger.",
        "counter",
    );
    for (s, n) in &numbers {
        let _ = writeln!(
            out,
            "ordersync_orders_seen_total{{source=\"{}\"}} {}",
            esc(s),
            n.seen
        );
    }
    gauge(
        &mut out,
        "ordersync_orders_pushed_total",
        "Orders the ERP accepted.",
        "counter",
    );
    for (s, n) in &numbers {
        let _ = writeln!(
            out,
            "ordersync_orders_pushed_total{{source=\"{}\"}} {}",
            esc(s),
            n.pushed
        );
    }
    gauge(
        &mut out,
        "ordersync_orders_parked",
        "Orders with a parked job (an operator must look).",
        "gauge",
    );
    for (s, n) in &numbers {
        let _ = writeln!(
            out,
            "ordersync_orders_parked{{source=\"{}\"}} {}",
            esc(s),
            n.parked
        );
    }
    gauge(
        &mut out,
        "ordersync_jobs_queued",
        "Jobs waiting to run (due now or later).",
        "gauge",
    );
    for (s, n) in &numbers {
        let _ = writeln!(
            out,
            "ordersync_jobs_queued{{source=\"{}\"}} {}",
            esc(s),
            n.queued_jobs
        );
    }
    gauge(
        &mut out,
        "ordersync_oldest_due_job_age_seconds",
        "How long the oldest due job has been waiting.",
        "gauge",
    );
    for (s, n) in &numbers {
        let age = n
            .oldest_due_ms
            .map(|t| (now - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "ordersync_oldest_due_job_age_seconds{{source=\"{}\"}} {age}",
            esc(s)
        );
    }
    gauge(
        &mut out,
        "ordersync_last_poll_success_timestamp_seconds",
        "Unix time of the last successful poll.",
        "gauge",
    );
    gauge(
        &mut out,
        "ordersync_cursor_lag_seconds",
        "Now minus the source's cursor, for time cursors.",
        "gauge",
    );
    for row in &status.sources {
        if let Some(t) = row
            .last_success_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let _ = writeln!(
                out,
                "ordersync_last_poll_success_timestamp_seconds{{source=\"{}\"}} {}",
                esc(&row.name),
                t.timestamp()
            );
        }
        if let Some(t) = row
            .cursor
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let lag = (now - t.timestamp_millis()).max(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "ordersync_cursor_lag_seconds{{source=\"{}\"}} {lag}",
                esc(&row.name)
            );
        }
    }
    global().render(&mut out);
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
            .insert(CONTENT_TYPE, HeaderValue::from_static(t));
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
        Ok(Ok(text)) => reply(StatusCode::OK, Some("text/plain; version=0.0.4"), text),
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
    fn histogram_is_cumulative() {
        let r = Registry::default();
        r.erp_push(Duration::from_millis(30));
        r.erp_push(Duration::from_millis(700));
        let mut out = String::new();
        r.render(&mut out);
        assert!(
            out.contains("ordersync_erp_push_duration_seconds_bucket{le=\"0.05\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("ordersync_erp_push_duration_seconds_bucket{le=\"1\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("ordersync_erp_push_duration_seconds_count 2"),
            "{out}"
        );
    }
}
