//! The one HTTP client setup every connector and ERP adapter uses: request
//! timeout, per-host concurrency (`max_in_flight`), rate limit, capped bodies,
//! and the single table that turns an HTTP outcome into retry or park.
//! Error messages name method, host and path, never the query string (MplusKASSA
//! puts its secret there) and never a header.

pub mod session;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

/// How a remote call failed, decided once here at the boundary.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Failure {
    /// Worth trying again later (network, timeout, 408, 429, 5xx, auth).
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
        status: Option<u16>,
    },
    /// Trying again cannot help (other 4xx, data the ERP or source refuses).
    #[error("{message}")]
    Permanent {
        message: String,
        status: Option<u16>,
    },
}

impl Failure {
    pub fn retry(message: impl Into<String>) -> Failure {
        Failure::Retryable {
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure::Permanent {
            message: message.into(),
            status: None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Retryable { status, .. } | Failure::Permanent { status, .. } => *status,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable { message, .. } | Failure::Permanent { message, .. } => message,
        }
    }

    /// The same failure with every known secret scrubbed from its message.
    pub fn redacted(self) -> Failure {
        match self {
            Failure::Retryable {
                message,
                retry_after,
                status,
            } => Failure::Retryable {
                message: crate::secret::redact(&message),
                retry_after,
                status,
            },
            Failure::Permanent { message, status } => Failure::Permanent {
                message: crate::secret::redact(&message),
                status,
            },
        }
    }

    /// The same failure with context in front ("order webshop:1: ...").
    pub fn context(self, prefix: &str) -> Failure {
        match self {
            Failure::Retryable {
                message,
                retry_after,
                status,
            } => Failure::Retryable {
                message: format!("{prefix}: {message}"),
                retry_after,
                status,
            },
            Failure::Permanent { message, status } => Failure::Permanent {
                message: format!("{prefix}: {message}"),
                status,
            },
        }
    }
}

/// Whether an HTTP status is worth retrying. The whole policy in one place:
///
/// | status                 | decision  | why |
/// |------------------------|-----------|-----|
/// | 2xx                    | success   | |
/// | 401, 403               | retry     | credentials are fixed by an operator, not per order; the daemon keeps going with backoff |
/// | 408, 425, 429          | retry     | the server asks us to come back (429 honours `Retry-After`) |
/// | other 4xx              | park      | the request itself is wrong; repeating it cannot help |
/// | 5xx                    | retry     | the server's problem, usually passing (503 honours `Retry-After`) |
/// | connect error, timeout, broken body | retry | the network's problem |
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 401 | 403 | 408 | 425 | 429) || status >= 500
}

/// A finished HTTP exchange with a successful status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `GET host/path` for messages (no query string).
    pub what: String,
}

impl Reply {
    /// Parses the body; a body that is not the JSON we expect is retried (a
    /// truncated answer from a proxy looks exactly like this).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Failure::retry(format!(
                "{} answered with a body that is not the expected JSON: {e}",
                self.what
            ))
        })
    }
}

/// One remote system as seen by ordersync: a client plus its limits.
#[derive(Clone)]
pub struct Endpoint {
    /// Names the remote in messages: the source name or "erp".
    pub name: String,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    /// How many requests may be under way at once (`permits`' size).
    max_in_flight: usize,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    max_body: usize,
    /// Until when this remote asked us to stay away (429/503, `Retry-After`).
    /// Shared by every clone, so every job and poll to the remote waits, not
    /// only the request that was told.
    paused_until: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

/// How long a remote may pause us with one answer: a `Retry-After` of a day
/// is read as this, so a confused server cannot stop a source for good.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);
/// The pause after a 429 or 503 that names no `Retry-After`.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// Installs the ring crypto provider for rustls (once per process).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Endpoint {
    /// A source's endpoint: its `max_in_flight` and `rate_limit_per_sec`,
    /// the daemon's request timeout and body cap.
    pub fn for_source(
        config: &crate::config::Config,
        source: &crate::config::SourceConfig,
    ) -> Result<Endpoint, crate::config::ConfigError> {
        Endpoint::new(
            &source.name,
            config.daemon.request_timeout,
            source.max_in_flight,
            Some(source.rate_limit_per_sec),
            config.daemon.max_body_bytes,
        )
        .map_err(|e| {
            crate::config::ConfigError(format!(
                "source {}: cannot build HTTP client: {e}",
                source.name
            ))
        })
    }

    /// The ERP's endpoint (`erp.max_in_flight`, no rate limit of ours).
    pub fn for_erp(config: &crate::config::Config) -> Result<Endpoint, crate::config::ConfigError> {
        Endpoint::new(
            "erp",
            config.daemon.request_timeout,
            config.erp.max_in_flight,
            None,
            config.daemon.max_body_bytes,
        )
        .map_err(|e| crate::config::ConfigError(format!("erp: cannot build HTTP client: {e}")))
    }

    pub fn new(
        name: &str,
        timeout: Duration,
        max_in_flight: usize,
        rate_limit_per_sec: Option<u32>,
        max_body: usize,
    ) -> anyhow::Result<Endpoint> {
        install_crypto();
        // No redirects: a redirect would carry our credentials (a query
        // string, a token header, a login body on 307/308) to whatever host
        // the answer names. No Referer either. A 3xx is an error we report.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("ordersync/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(max_in_flight)
            .build()?;
        // Burst of one: requests are spread evenly, so no one-second window
        // ever sees more than the configured rate (plus the one at its edge).
        let limiter = rate_limit_per_sec.and_then(NonZeroU32::new).map(|r| {
            Arc::new(RateLimiter::direct(
                Quota::per_second(r).allow_burst(NonZeroU32::MIN),
            ))
        });
        Ok(Endpoint {
            name: name.to_string(),
            client,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            limiter,
            max_body,
            paused_until: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Waits out a pause the remote asked for (all requests to it share it).
    async fn wait_for_pause(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Records a pause the remote asked for; a longer one already in force wins.
    fn pause_for(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait.min(MAX_PAUSE);
        let mut slot = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
    }

    /// Until when the remote has paused us, if it has (for tests and status).
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().unwrap_or_else(|e| e.into_inner()))?;
        until.checked_duration_since(tokio::time::Instant::now())
    }

    /// How many requests to this remote may be under way at once: callers
    /// that read several things at a time read this many, no more.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request within the limits and reads the whole (capped) body.
    /// Any non-2xx status becomes a [`Failure`] per [`status_is_retryable`].
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, Failure> {
        let reply = self.exchange(request).await?;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(status_failure(&reply))
        }
    }

    /// Like [`Endpoint::send`], but hands back answers of any status: for
    /// protocols whose error bodies decide more than the status does (SOAP
    /// 1.1 sends `Client` and `Server` faults alike with HTTP 500).
    pub async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Reply, Failure> {
        let request = request.build().map_err(|e| {
            // No source name here: whoever reports a failure names it once.
            Failure::permanent(format!("cannot build the request: {}", e.without_url()))
        })?;
        let url = request.url();
        let what = format!(
            "{} {}{}",
            request.method(),
            url.host_str().unwrap_or("?"),
            match url.port() {
                Some(p) => format!(":{p}{}", url.path()),
                None => url.path().to_string(),
            }
        );
        self.wait_for_pause().await;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::retry("shutting down"))?;
        // A pause may have begun while we waited for the permit.
        self.wait_for_pause().await;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let host = url.host_str().unwrap_or("?").to_string();
        // Last thing before the wire: a job whose lease ran out while this
        // process stalled (here or in any wait above) sends nothing more.
        if let Err(why) = crate::outbox::lease::check() {
            return Err(Failure::retry(format!(
                "{what} not sent: {why}; whoever holds the job now does the work"
            )));
        }
        let sent = self.client.execute(request).await;
        crate::metrics::global()
            .http_request(&host, sent.as_ref().ok().map(|r| r.status().as_u16()));
        let mut response = sent.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            // without_url(): reqwest prints the URL, query string included.
            Failure::retry(format!("{what} {kind}: {}", error_chain(&e.without_url())))
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        match (status, retry_after(&headers)) {
            (429, wait) => self.pause_for(wait.unwrap_or(DEFAULT_PAUSE)),
            (503, Some(wait)) => self.pause_for(wait),
            _ => {}
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body {
                        return Err(Failure::retry(format!(
                            "{what}: response body larger than the {} byte cap",
                            self.max_body
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::retry(format!(
                        "{what}: connection broke while reading the answer: {}",
                        error_chain(&e.without_url())
                    )));
                }
            }
        }
        Ok(Reply {
            status,
            headers,
            body: Bytes::from(body),
            what,
        })
    }
}

/// The [`Failure`] for a non-2xx answer, per [`status_is_retryable`].
pub fn status_failure(reply: &Reply) -> Failure {
    let (status, what) = (reply.status, &reply.what);
    let message = match (status, reply.headers.get(reqwest::header::LOCATION)) {
        (300..=399, Some(_)) => format!(
            "{what} answered {status} (a redirect, not followed: check the configured URL; the target is not shown, it may carry credentials)"
        ),
        _ => match media_type(&reply.headers) {
            Some(media) => format!(
                "{what} answered {status} ({media}): {}",
                remote_snippet(&reply.body)
            ),
            None => format!("{what} answered {status}: {}", remote_snippet(&reply.body)),
        },
    };
    if status_is_retryable(status) {
        Failure::Retryable {
            message,
            retry_after: retry_after(&reply.headers),
            status: Some(status),
        }
    } else {
        Failure::Permanent {
            message,
            status: Some(status),
        }
    }
}

/// What a remote said, fit for a log line or the ledger: one line (error
/// pages are HTML over many lines), at most 200 characters, markup dropped,
/// and every known secret scrubbed (a remote may echo our token). An HTML
/// page is summed up by its `<title>` when it has one (a proxy's error page
/// says all it has to say there).
pub fn remote_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(64 * 1024).collect();
    let source = html_title(&text).unwrap_or(&text);
    let mut plain = String::with_capacity(source.len().min(4096));
    let mut in_tag = false;
    for c in source.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            _ if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let one_line = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    let redacted = crate::secret::redact(&one_line);
    let mut snippet: String = redacted.chars().take(200).collect();
    if redacted.chars().count() > 200 {
        snippet.push('…');
    }
    snippet
}

/// The text of an HTML page's `<title>`, if the body is a page with one.
fn html_title(text: &str) -> Option<&str> {
    let head = text.trim_start().get(..text.trim_start().len().min(15))?;
    let lower = head.to_ascii_lowercase();
    if !(lower.starts_with("<!doctype html") || lower.starts_with("<html")) {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = text.get(start..end)?.trim();
    (!title.is_empty()).then_some(title)
}

/// The media type of an answer (`text/html`), without its parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(reqwest::header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

/// `value` with every byte but the unreserved characters of RFC 3986
/// (letters, digits, `-._~`) and those `keep` also allows percent-encoded,
/// as UTF-8. The one percent-encoder of the connectors: path segments,
/// query values and header values all go through it.
fn percent_encode(value: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A remote's id as ONE URL path segment: everything but the unreserved
/// characters is percent-encoded, so an id like `../Orders/90006` cannot
/// steer a request to another order. `.` and `..` cannot be one segment at
/// all (URL parsers resolve them, encoded or not): such an id is refused.
pub fn path_segment(id: &str) -> Result<String, Failure> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(Failure::permanent(format!(
            "order id {id:?} cannot be put into a URL path"
        )));
    }
    Ok(percent_encode(id, |_| false))
}

/// A value for a URL's query string (`?k=<value>`): everything but the
/// unreserved characters percent-encoded, so `&`, `=`, `+`, `#` and spaces
/// in it stay part of the value.
pub fn query_value(value: &str) -> String {
    percent_encode(value, |_| false)
}

/// A value that is always a valid HTTP header: printable ASCII is kept as it
/// is; a value holding anything else (an order key with `é`, a control
/// character) is sent percent-encoded as UTF-8 in full, so two different
/// keys never become one header and a request is never refused locally.
pub fn header_safe(value: &str) -> String {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return value.to_string();
    }
    percent_encode(value, |b| b == b':')
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    delta.to_std().ok()
}

/// An error and its causes on one line (reqwest hides the useful part, such as
/// "connection refused", in the source chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_always_valid_and_distinct() {
        assert_eq!(header_safe("webshop-nl:48193"), "webshop-nl:48193");
        let a = header_safe("till:ORD-\u{FFFD}");
        let b = header_safe("till:ORD-é");
        assert_eq!(b, "till:ORD-%C3%A9");
        assert_ne!(a, b);
        for v in [a, b, header_safe("x\ny")] {
            assert!(reqwest::header::HeaderValue::from_str(&v).is_ok(), "{v}");
        }
    }

    #[test]
    fn a_query_value_keeps_its_separators_inside() {
        assert_eq!(
            query_value("2024-06-29T10:15:00.000000"),
            "2024-06-29T10%3A15%3A00.000000"
        );
        assert_eq!(query_value("a&b=c+d #é"), "a%26b%3Dc%2Bd%20%23%C3%A9");
    }

    #[test]
    fn an_id_is_one_path_segment() {
        assert_eq!(path_segment("48193").unwrap(), "48193");
        assert_eq!(
            path_segment("../Orders/90006").unwrap(),
            "..%2FOrders%2F90006"
        );
        assert_eq!(path_segment("a b?c#d").unwrap(), "a%20b%3Fc%23d");
        assert_eq!(path_segment("ORD-é").unwrap(), "ORD-%C3%A9");
        for bad in ["", ".", ".."] {
            assert!(matches!(path_segment(bad), Err(Failure::Permanent { .. })));
        }
        // The URL parser keeps it one segment: no dot-segment resolution.
        let url = reqwest::Url::parse(&format!(
            "http://shop/System/Orders/{}/status",
            path_segment("../Orders/90006").unwrap()
        ))
        .unwrap();
        assert_eq!(url.path(), "/System/Orders/..%2FOrders%2F90006/status");
    }

    #[test]
    fn the_table() {
        for s in [401, 403, 408, 429, 500, 502, 503, 504] {
            assert!(status_is_retryable(s), "{s} should retry");
        }
        for s in [400, 404, 405, 409, 410, 422] {
            assert!(!status_is_retryable(s), "{s} should park");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(25),
            "{d:?}"
        );
    }

    /// A tiny HTTP server on loopback: answers each request with `answer`
    /// and records the request line, headers and arrival time.
    async fn recording_server(
        answer: &'static str,
    ) -> (
        String,
        Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    log.lock()
                        .unwrap()
                        .push((request, std::time::Instant::now()));
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    /// Issue 12.6: a redirect is not followed, so the credentials in the
    /// query string and headers never reach the host it names.
    #[tokio::test]
    async fn redirects_are_not_followed_and_credentials_stay_home() {
        let (evil, evil_seen) =
            recording_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        let redirect: &'static str = Box::leak(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {evil}/steal?x=1\r\ncontent-length: 0\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (home, home_seen) = recording_server(redirect).await;
        let ep = Endpoint::new("shop", Duration::from_secs(5), 2, None, 1024).unwrap();
        let req = ep
            .client()
            .post(format!("{home}/soap?ident=me&secret=s3cr3t-query-value"))
            .header("token", "t0ken-header-value")
            .body("password=login-body-secret");
        let err = ep.send(req).await.unwrap_err();
        assert_eq!(home_seen.lock().unwrap().len(), 1);
        assert!(
            evil_seen.lock().unwrap().is_empty(),
            "the redirect was followed"
        );
        let text = err.to_string();
        assert!(
            text.contains("307") && text.contains("not followed"),
            "{text}"
        );
        for secret in ["s3cr3t-query-value", "t0ken-header-value", "steal"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            matches!(err, Failure::Permanent { .. }),
            "a redirect is a configuration problem"
        );
    }

    /// Issue 12.4: a Retry-After pauses every request to that remote, not
    /// only the one that was told.
    #[tokio::test]
    async fn retry_after_pauses_every_request_to_the_remote() {
        let (url, seen) = recording_server(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let ep = Endpoint::new("shop", Duration::from_secs(5), 8, None, 1024).unwrap();
        let first = ep
            .send(ep.client().get(format!("{url}/a")))
            .await
            .unwrap_err();
        assert!(matches!(
            first,
            Failure::Retryable {
                retry_after: Some(_),
                ..
            }
        ));
        let told = seen.lock().unwrap()[0].1;
        let others = (0..4).map(|i| {
            let ep = ep.clone();
            let url = url.clone();
            tokio::spawn(async move { ep.send(ep.client().get(format!("{url}/b{i}"))).await })
        });
        for o in others {
            let _ = o.await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        for (request, at) in seen.iter().skip(1) {
            assert!(
                at.duration_since(told) >= Duration::from_millis(990),
                "{} went out {:?} after a Retry-After of 1 s",
                request.lines().next().unwrap_or(""),
                at.duration_since(told)
            );
        }
    }

    #[test]
    fn remote_text_is_one_short_line_without_markup_or_secrets() {
        let token = crate::secret::Secret::new("Bearer-abc123-echoed-token");
        let page = format!(
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<p>{}</p>{}</body></html>",
            token.expose(),
            "x".repeat(500)
        );
        let s = remote_snippet(page.replace("<html>", "<p>").as_bytes());
        assert!(s.starts_with("502 Bad Gateway 502 Bad Gateway"), "{s}");
        assert!(!s.contains('<') && !s.contains('\n'), "{s}");
        assert!(
            !s.contains(token.expose()) && s.contains("[redacted]"),
            "{s}"
        );
        assert!(s.chars().count() <= 201, "{}", s.len());
    }

    /// Issue 16.3: a proxy's error page is summed up by its title, with the
    /// content type; a JSON error body stays as it was said.
    #[test]
    fn an_html_error_page_is_summed_up_by_its_title() {
        let page = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            "text/html; charset=utf-8".parse().unwrap(),
        );
        let reply = Reply {
            status: 503,
            headers,
            body: Bytes::from(page),
            what: "GET shop.example/orders".into(),
        };
        assert_eq!(
            status_failure(&reply).to_string(),
            "GET shop.example/orders answered 503 (text/html): 503 Service Temporarily Unavailable"
        );
        let json = Reply {
            status: 422,
            headers: HeaderMap::new(),
            body: Bytes::from(r#"{"error": "product X not found"}"#),
            what: "POST erp/orders".into(),
        };
        assert_eq!(
            status_failure(&json).to_string(),
            r#"POST erp/orders answered 422: {"error": "product X not found"}"#
        );
        assert_eq!(
            remote_snippet(b"<!DOCTYPE html><html><head><title> Onderhoud </title>"),
            "Onderhoud"
        );
        assert_eq!(
            remote_snippet(b"<html><body>no title</body></html>"),
            "no title"
        );
    }

    #[tokio::test]
    async fn errors_never_carry_the_query_string() {
        // Nothing listens on port 9 of loopback: a connect error.
        let ep = Endpoint::new("shop", Duration::from_secs(2), 1, None, 1024).unwrap();
        let req = ep
            .client()
            .post("http://127.0.0.1:9/soap?ident=me&secret=s3cr3t-value");
        let err = ep.send(req).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Failure::Retryable { .. }));
        assert!(text.contains("127.0.0.1:9/soap"), "{text}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
    }
}
