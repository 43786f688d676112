//! The one HTTP client setup every connector and ERP adapter uses: request
//! timeout, per-host concurrency (`max_in_flight`), rate limit, capped bodies,
//! and the single table that turns an HTTP outcome into retry or park.
//! Error messages name method, host and path, never the query string (MplusKASSA
//! puts its secret there) and never a header.

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
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    max_body: usize,
}

/// Installs the ring crypto provider for rustls (once per process).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Endpoint {
    pub fn new(
        name: &str,
        timeout: Duration,
        max_in_flight: usize,
        rate_limit_per_sec: Option<u32>,
        max_body: usize,
    ) -> anyhow::Result<Endpoint> {
        install_crypto();
        let client = reqwest::Client::builder()
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
            limiter,
            max_body,
        })
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
            Failure::permanent(format!(
                "{}: cannot build request: {}",
                self.name,
                e.without_url()
            ))
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
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::retry("shutting down"))?;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let host = url.host_str().unwrap_or("?").to_string();
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
    // One line, short: error pages are often HTML spread over many lines.
    let text = String::from_utf8_lossy(&reply.body);
    let snippet: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect();
    let message = format!("{what} answered {status}: {snippet}");
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
