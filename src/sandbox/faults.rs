//! Fault injection shared by both simulators: latency, 5xx, 429, dropped and
//! malformed responses, slow bodies and a per-second request cap, all switchable
//! at run time. Also counts every request that reaches a server (faulted or not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::conn::ConnCtl;
use super::lock;

#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added to every request before handling.
    pub latency: Duration,
    /// 0..1: answer 500/502/503 before the handler runs (nothing applied).
    pub error_5xx_rate: f64,
    /// Answer 500/502/503 to the next this many requests after these
    /// faults are set, whatever `error_5xx_rate` says: a fault a test can
    /// count on.
    pub error_5xx_next: u32,
    /// 0..1: answer 429 with `Retry-After` before the handler runs.
    pub rate_429: f64,
    /// `Retry-After` seconds for `rate_429`; 0 means 1.
    pub retry_after_secs: u64,
    /// 0..1: run the handler (the change IS applied), then cut the connection
    /// mid-response.
    pub drop_rate: f64,
    /// 0..1: run the handler, then answer 200 with a body that is not valid JSON.
    pub malformed_rate: f64,
    /// Deliver the body in small chunks spread over this duration.
    pub slow_body: Option<Duration>,
    /// Beyond this many requests in the current whole second since start,
    /// answer 429 with `Retry-After: 1`.
    pub max_requests_per_sec: Option<u32>,
    /// A remote whose order list never ends: every page is the first one
    /// again, with more pages claimed (a page number or sync marker that is
    /// ignored, a `next` link back to itself). Each simulator's list
    /// endpoint honours it in its own shape.
    pub repeat_page_forever: bool,
    /// Byte patches applied to every answer body, each `(from, to)` to every
    /// occurrence: a remote whose serializer emits one bad value (`1e400`,
    /// a Latin-1 byte, a lone surrogate, an undefined XML entity) in an
    /// otherwise documented answer.
    pub corrupt: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Faults {
    pub fn none() -> Self {
        Self::default()
    }

    fn retry_after(&self) -> u64 {
        self.retry_after_secs.max(1)
    }
}

/// How a server words the errors it injects, so a fault looks like it came
/// from that product (DRF `{"detail": ..}` vs. the ERP's `{"error": ..}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorStyle {
    Drf,
    Plain,
    /// Retailys `ErrorModel`: `{"message", "detail"}`.
    Retailys,
}

/// Per-server fault settings plus counters; one instance per simulator.
pub(crate) struct FaultState {
    faults: RwLock<Faults>,
    /// What is left of `Faults::error_5xx_next`.
    fail_next: AtomicU64,
    style: ErrorStyle,
    started: Instant,
    requests: AtomicU64,
    faulted: AtomicU64,
    window: Mutex<Window>,
    /// The pause the last `Retry-After` asked for: requests that arrive
    /// inside it (past a grace for those already on their way) were sent
    /// by a client that did not wait.
    pause: Mutex<Option<(Instant, Instant)>>,
    early: AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// Counts a request as in flight until its answer (headers) leaves.
struct InFlight<'a>(&'a FaultState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a FaultState) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Requests already sent when a 429 went out arrive just after it; one that
/// arrives later than this was sent after the client had the answer.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Window {
    second: u64,
    count: u32,
    peak: u32,
}

impl FaultState {
    pub(crate) fn new(faults: Faults, style: ErrorStyle) -> Arc<Self> {
        Arc::new(FaultState {
            fail_next: AtomicU64::new(u64::from(faults.error_5xx_next)),
            faults: RwLock::new(faults),
            style,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
            pause: Mutex::new(None),
            early: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        })
    }

    pub(crate) fn set(&self, faults: Faults) {
        self.fail_next
            .store(u64::from(faults.error_5xx_next), Ordering::Relaxed);
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub(crate) fn get(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn fault_count(&self) -> u64 {
        self.faulted.load(Ordering::Relaxed)
    }

    pub(crate) fn peak_requests_per_sec(&self) -> u32 {
        lock(&self.window).peak
    }

    /// The most requests this server was answering at one time.
    pub(crate) fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Counts the peak from now on (from the requests under way now).
    pub(crate) fn restart_peak_in_flight(&self) {
        let now = self.in_flight.load(Ordering::SeqCst);
        self.peak_in_flight.store(now, Ordering::SeqCst);
    }

    /// Requests that arrived while a `Retry-After` this server gave was
    /// still running (beyond [`IN_FLIGHT_GRACE`] after it was given).
    pub(crate) fn early_count(&self) -> u64 {
        self.early.load(Ordering::Relaxed)
    }

    /// Remembers the pause a `Retry-After` asks for, from now.
    fn paused(&self, retry_after: u64) {
        let now = Instant::now();
        let end = now + Duration::from_secs(retry_after);
        let mut slot = lock(&self.pause);
        if slot.is_none_or(|(_, until)| until < end) {
            *slot = Some((now, end));
        }
    }

    /// Records an arriving request; returns how many arrived in its second so far.
    fn arrive(&self) -> u32 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if let Some((given, until)) = *lock(&self.pause)
            && now > given + IN_FLIGHT_GRACE
            && now < until
        {
            self.early.fetch_add(1, Ordering::Relaxed);
        }
        let second = self.started.elapsed().as_secs();
        let mut w = lock(&self.window);
        if w.second != second {
            w.second = second;
            w.count = 0;
        }
        w.count += 1;
        w.peak = w.peak.max(w.count);
        w.count
    }

    fn faulted(&self) {
        self.faulted.fetch_add(1, Ordering::Relaxed);
    }
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

pub(crate) async fn inject(
    State(state): State<Arc<FaultState>>,
    req: Request,
    next: Next,
) -> Response {
    let in_window = state.arrive();
    let _in_flight = InFlight::enter(&state);
    let faults = state.get();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults
        .max_requests_per_sec
        .is_some_and(|max| in_window > max)
    {
        state.faulted();
        state.paused(1);
        return too_many_requests(state.style, 1);
    }
    let fail_next = state
        .fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if fail_next || roll(faults.error_5xx_rate) {
        state.faulted();
        return server_error(state.style);
    }
    if roll(faults.rate_429) {
        state.faulted();
        state.paused(faults.retry_after());
        return too_many_requests(state.style, faults.retry_after());
    }

    let conn = req
        .extensions()
        .get::<ConnectInfo<ConnCtl>>()
        .map(|c| c.0.clone());
    let response = next.run(req).await;

    let drop = roll(faults.drop_rate);
    let malformed = !drop && roll(faults.malformed_rate);
    if !drop && !malformed && faults.slow_body.is_none() && faults.corrupt.is_empty() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "sandbox: could not buffer response body");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);

    if drop {
        state.faulted();
        // A body shorter than its Content-Length makes hyper abort the
        // connection after the handler's effect is already committed.
        let claimed = bytes.len().max(64);
        let partial = bytes.slice(..bytes.len() / 2);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(claimed));
        let body = Body::from_stream(Body::from(partial).into_data_stream());
        return Response::from_parts(parts, body);
    }
    if malformed {
        state.faulted();
        parts.status = StatusCode::OK;
        return Response::from_parts(parts, Body::from(mangle(&bytes)));
    }
    let bytes = corrupt(bytes, &faults.corrupt);
    if let (Some(duration), Some(conn)) = (faults.slow_body, conn) {
        conn.throttle_next_body(bytes.len(), duration);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Applies [`Faults::corrupt`].
fn corrupt(bytes: axum::body::Bytes, patches: &[(Vec<u8>, Vec<u8>)]) -> axum::body::Bytes {
    let mut out = bytes.to_vec();
    for (from, to) in patches.iter().filter(|(from, _)| !from.is_empty()) {
        let mut patched = Vec::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(at) = rest.windows(from.len()).position(|w| w == from.as_slice()) {
            patched.extend_from_slice(&rest[..at]);
            patched.extend_from_slice(to);
            rest = &rest[at + from.len()..];
        }
        patched.extend_from_slice(rest);
        out = patched;
    }
    out.into()
}

/// Truncated JSON most of the time, sometimes a proxy's HTML page: both are
/// things real clients have received with a 200.
fn mangle(bytes: &[u8]) -> Vec<u8> {
    if rand::random::<f64>() < 0.25 {
        return b"<!DOCTYPE html><html><head><title>Onderhoud</title></head><body><h1>We zijn zo terug</h1>"
            .to_vec();
    }
    if bytes.len() < 4 {
        return b"{\"detail\": \"".to_vec();
    }
    let cut = (bytes.len() * 3 / 5).clamp(1, bytes.len() - 1);
    bytes[..cut].to_vec()
}

fn server_error(style: ErrorStyle) -> Response {
    let html = |code: StatusCode, text: &str| {
        let page = format!(
            "<html>\r\n<head><title>{c} {text}</title></head>\r\n<body>\r\n<center><h1>{c} {text}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
            c = code.as_u16()
        );
        (code, [(header::CONTENT_TYPE, "text/html")], page).into_response()
    };
    match rand::random_range(0..3u8) {
        0 => match style {
            ErrorStyle::Drf => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html")],
                "<h1>Server Error (500)</h1>",
            )
                .into_response(),
            ErrorStyle::Plain => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"error": "internal server error"})),
            )
                .into_response(),
            ErrorStyle::Retailys => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"message": "Internal server error", "detail": ""})),
            )
                .into_response(),
        },
        1 => html(StatusCode::BAD_GATEWAY, "Bad Gateway"),
        _ => html(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Temporarily Unavailable",
        ),
    }
}

fn too_many_requests(style: ErrorStyle, retry_after: u64) -> Response {
    let body = match style {
        ErrorStyle::Drf => {
            let unit = if retry_after == 1 {
                "second"
            } else {
                "seconds"
            };
            serde_json::json!({
                "detail": format!("Request was throttled. Expected available in {retry_after} {unit}.")
            })
        }
        ErrorStyle::Plain => serde_json::json!({"error": "rate limited"}),
        ErrorStyle::Retailys => serde_json::json!({
            "message": "Too many requests",
            "detail": format!("limit is 100 requests per second; retry after {retry_after} s")
        }),
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, HeaderValue::from(retry_after))],
        axum::Json(body),
    )
        .into_response()
}
