//! Raw JSON-RPC to trytond over reqwest (through [`Endpoint`], so timeouts,
//! limits, capped bodies and the status table are the shared ones).
//!
//! Contract: `POST {url}/rpc/` with `{"id","method","params"}`, the context
//! dict always last in `params`; a session from `common.db.login`, sent as
//! `Authorization: Session base64(login:user_id:key)`. Sessions are tied to
//! the client IP and expire, so an HTTP 401 logs in again and repeats the
//! call once. The context carries the user's company, read once from
//! `res.user.get_preferences`: the server does not add it by itself.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::http::{Endpoint, Failure};
use crate::secret::Secret;

/// A logged-in session: the header value (a secret) and the context.
#[derive(Clone)]
struct Session {
    /// Which login this is, so concurrent 401s re-login only once.
    generation: u64,
    authorization: Secret,
    context: Value,
}

pub struct Rpc {
    /// `http://host:port/db`, for messages (no credentials in it).
    pub base: String,
    user: String,
    password: Secret,
    endpoint: Endpoint,
    session: Mutex<Option<Session>>,
    next_id: AtomicU64,
    logins: AtomicU64,
}

impl Rpc {
    pub fn new(base: &str, user: &str, password: Secret, endpoint: Endpoint) -> Rpc {
        Rpc {
            base: base.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password,
            endpoint,
            session: Mutex::new(None),
            next_id: AtomicU64::new(1),
            logins: AtomicU64::new(0),
        }
    }

    /// The context every model call carries (logs in if needed).
    pub async fn context(&self) -> Result<Value, Failure> {
        Ok(self.session(None).await?.context)
    }

    /// `model.<model>.<method>` with `params` followed by the context.
    pub async fn model(
        &self,
        model: &str,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Value, Failure> {
        let name = format!("model.{model}.{method}");
        let mut session = self.session(None).await?;
        for attempt in 0..2 {
            let mut full = params.clone();
            full.push(session.context.clone());
            let started = std::time::Instant::now();
            let answer = self.post(&name, full, Some(&session.authorization)).await;
            // Which call is slow, and on how many records (no values: they
            // may hold customer data).
            let records = params.first().and_then(Value::as_array).map_or(0, Vec::len);
            tracing::debug!(
                call = %name,
                records,
                elapsed_ms = started.elapsed().as_millis() as u64,
                ok = answer.is_ok(),
                "Tryton call"
            );
            match answer {
                Err(Failure::Retryable {
                    status: Some(401), ..
                }) if attempt == 0 => {
                    // Expired, or our address changed: log in again, once.
                    session = self.session(Some(session.generation)).await?;
                }
                other => return other,
            }
        }
        Err(Failure::retry(format!(
            "Tryton at {}: {name} still answered 401 after a fresh login",
            self.base
        )))
    }

    /// The current session, or a new one when there is none or when the one
    /// numbered `stale` was refused.
    async fn session(&self, stale: Option<u64>) -> Result<Session, Failure> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref()
            && Some(s.generation) != stale
        {
            return Ok(s.clone());
        }
        let fresh = self.login().await?;
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    async fn login(&self) -> Result<Session, Failure> {
        let params = vec![
            json!(self.user),
            json!({"password": self.password.expose()}),
            json!("en"),
        ];
        let answer = match self.post("common.db.login", params, None).await {
            Err(Failure::Retryable {
                status: Some(s @ (401 | 403)),
                ..
            }) => {
                // The password is never part of a message; the user and URL are.
                return Err(Failure::Retryable {
                    message: format!(
                        "Tryton at {} refused the login of user {:?} (HTTP {s}): wrong user or password in erp.password_file / erp.password_env",
                        self.base, self.user
                    ),
                    retry_after: None,
                    status: Some(s),
                });
            }
            // Tryton answers 429 to a login after too many failed ones
            // (TRYTON.md §6): say what usually causes that, keep the wait.
            Err(Failure::Retryable {
                status: Some(429),
                retry_after,
                message,
            }) => {
                return Err(Failure::Retryable {
                    message: format!(
                        "Tryton at {} refuses logins for now (HTTP 429: too many failed logins of user {:?}; check erp.password_file / erp.password_env): {message}",
                        self.base, self.user
                    ),
                    retry_after,
                    status: Some(429),
                });
            }
            Err(e) => return Err(e.context(&format!("Tryton at {}: login", self.base))),
            Ok(v) => v,
        };
        let (Some(user_id), Some(key)) = (answer[0].as_i64(), answer[1].as_str()) else {
            return Err(Failure::retry(format!(
                "Tryton at {}: the login answer is not [user_id, session, ...]",
                self.base
            )));
        };
        // Remembered for redaction: a remote error that echoes the session key.
        let _ = Secret::new(key);
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{user_id}:{key}", self.user));
        let authorization = Secret::new(format!("Session {token}"));
        let prefs = self
            .post(
                "model.res.user.get_preferences",
                vec![json!(true), json!({})],
                Some(&authorization),
            )
            .await
            .map_err(|e| e.context(&format!("Tryton at {}: reading preferences", self.base)))?;
        let Some(company) = prefs["company"].as_i64() else {
            return Err(Failure::permanent(format!(
                "Tryton at {}: user {:?} has no current company; set one in the user's preferences",
                self.base, self.user
            )));
        };
        let mut context = json!({"company": company});
        if let Some(lang) = prefs.get("language").filter(|l| l.is_string()) {
            context["language"] = lang.clone();
        }
        let generation = self.logins.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(erp = %self.base, user = %self.user, company, "logged in to Tryton");
        Ok(Session {
            generation,
            authorization,
            context,
        })
    }

    /// One JSON-RPC exchange; a Tryton error object becomes a [`Failure`].
    async fn post(
        &self,
        method: &str,
        params: Vec<Value>,
        authorization: Option<&Secret>,
    ) -> Result<Value, Failure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"id": id, "method": method, "params": params});
        let mut req = self
            .endpoint
            .client()
            .post(format!("{}/rpc/", self.base))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(auth) = authorization {
            req = req.header(AUTHORIZATION, auth.expose());
        }
        let reply = self.endpoint.send(req).await?;
        let mut answer: Value = reply.json()?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            return Err(classify(&self.base, method, error));
        }
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(Failure::retry(format!(
                "Tryton at {}: {method} answered without result or error",
                self.base
            ))),
        }
    }
}

/// Tryton's error array: `[ExceptionName, [args…]]` for exceptions meant for
/// users, `[message, traceback]` for unexpected server faults.
fn classify(base: &str, method: &str, error: &Value) -> Failure {
    let kind = error[0].as_str().unwrap_or("?");
    let args = &error[1];
    if !args.is_array() {
        // An unexpected server exception (e.g. "database is locked" under
        // load): the server's problem, usually passing.
        return Failure::retry(format!(
            "Tryton at {base}: {method} failed on the server: {kind}"
        ));
    }
    let text = |i: usize| args[i].as_str().unwrap_or_default().to_string();
    match kind {
        "ConcurrencyException" | "RateLimitException" => {
            Failure::retry(format!("Tryton at {base}: {method}: {kind} {}", text(0)))
        }
        // Tryton on SQLite hands out sequence numbers (party codes) without
        // locking, so two concurrent creates can collide: the loser retries,
        // and the retry looks the record up again before creating.
        "SQLConstraintError" | "UserError" if text(0).contains("must be unique") => {
            Failure::retry(format!("Tryton at {base}: {method}: {}", text(0)))
        }
        "UserWarning" => Failure::permanent(format!(
            "Tryton at {base}: {method} needs a person to acknowledge a warning: {} (warning {:?})",
            text(1),
            text(0)
        )),
        _ => {
            let detail = text(1);
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            };
            Failure::permanent(format!(
                "Tryton at {base} refused {method}: {}{detail}",
                text(0)
            ))
        }
    }
}

/// `{"__class__":"Decimal","decimal":"12.50"}`: money goes to Numeric fields.
pub fn decimal(d: Decimal) -> Value {
    json!({"__class__": "Decimal", "decimal": d.to_string()})
}

/// Reads a tagged `Decimal` value (a bare JSON number or string also
/// passes: some fields come back plain); `None` when it is neither.
pub fn parse_decimal(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Object(_) if v["__class__"] == "Decimal" => v["decimal"].as_str()?.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    crate::model::convert::parse_decimal(&text).ok()
}

pub fn date(d: NaiveDate) -> Value {
    json!({"__class__": "date", "year": d.year(), "month": d.month(), "day": d.day()})
}

pub fn datetime(t: NaiveDateTime) -> Value {
    json!({"__class__": "datetime", "year": t.year(), "month": t.month(), "day": t.day(),
        "hour": t.hour(), "minute": t.minute(), "second": t.second(),
        "microsecond": t.and_utc().timestamp_subsec_micros()})
}

/// Reads a tagged `date` value.
pub fn parse_date(v: &Value) -> Option<NaiveDate> {
    if v["__class__"] != "date" {
        return None;
    }
    let n = |k: &str| v[k].as_i64();
    NaiveDate::from_ymd_opt(
        i32::try_from(n("year")?).ok()?,
        u32::try_from(n("month")?).ok()?,
        u32::try_from(n("day")?).ok()?,
    )
}

/// Reads a tagged `datetime` value (Tryton's are naive UTC).
pub fn parse_datetime(v: &Value) -> Option<NaiveDateTime> {
    if v["__class__"] != "datetime" {
        return None;
    }
    let n = |k: &str| v[k].as_i64().and_then(|x| u32::try_from(x).ok());
    let day = NaiveDate::from_ymd_opt(
        i32::try_from(v["year"].as_i64()?).ok()?,
        n("month")?,
        n("day")?,
    )?;
    day.and_hms_micro_opt(
        n("hour")?,
        n("minute")?,
        n("second")?,
        n("microsecond").unwrap_or(0),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn decimals_read_back_from_tryton() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(parse_decimal(&decimal(d("12.50"))), Some(d("12.5")));
        assert_eq!(
            parse_decimal(&json!({"__class__": "Decimal", "decimal": "0.2100000000"})),
            Some(d("0.21"))
        );
        assert_eq!(parse_decimal(&json!(3)), Some(d("3")));
        assert_eq!(
            parse_decimal(&json!({"__class__": "Decimal", "decimal": "1e400"})),
            None
        );
        assert_eq!(parse_decimal(&json!({"__class__": "Decimal"})), None);
        assert_eq!(parse_decimal(&json!(null)), None);
    }

    #[test]
    fn tagged_values_round_trip() {
        let t = NaiveDate::from_ymd_opt(2026, 11, 22)
            .unwrap()
            .and_hms_micro_opt(11, 59, 14, 250)
            .unwrap();
        assert_eq!(parse_datetime(&datetime(t)), Some(t));
        assert_eq!(parse_date(&date(t.date())), Some(t.date()));
        assert_eq!(
            decimal(Decimal::new(1250, 2)),
            json!({"__class__": "Decimal", "decimal": "12.50"})
        );
        assert_eq!(parse_date(&json!({"__class__": "datetime"})), None);
    }

    #[test]
    fn errors_are_classified() {
        let user = classify("u", "m", &json!(["UserError", ["no party", "", null]]));
        assert!(matches!(user, Failure::Permanent { .. }), "{user}");
        assert!(user.to_string().contains("no party"));
        let warn = classify(
            "u",
            "m",
            &json!(["UserWarning", ["x.no_carrier", "no carrier", ""]]),
        );
        assert!(matches!(warn, Failure::Permanent { .. }));
        let fault = classify("u", "m", &json!(["database is locked", "Traceback ..."]));
        assert!(matches!(fault, Failure::Retryable { .. }));
        let conc = classify(
            "u",
            "m",
            &json!(["ConcurrencyException", ["Records were modified"]]),
        );
        assert!(matches!(conc, Failure::Retryable { .. }));
        let race = classify(
            "u",
            "m",
            &json!(["UserError", ["The code on party must be unique.", ""]]),
        );
        assert!(matches!(race, Failure::Retryable { .. }));
    }

    /// A stand-in trytond that expires the first session after one call:
    /// the client logs in again and repeats the refused call once.
    #[tokio::test]
    async fn a_401_logs_in_again_and_repeats_the_call() {
        use hyper::{HeaderMap, StatusCode};
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;

        let logins = Arc::new(AtomicUsize::new(0));
        let l = Arc::clone(&logins);
        let answer = Arc::new(move |headers: &HeaderMap, body: &str| {
            let req: Value = serde_json::from_str(body).unwrap();
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            let key1 = format!(
                "Session {}",
                base64::engine::general_purpose::STANDARD.encode("admin:1:key1")
            );
            let result = match req["method"].as_str().unwrap() {
                "common.db.login" => {
                    assert_eq!(req["params"][1]["password"], "pw");
                    let n = l.fetch_add(1, Ordering::SeqCst) + 1;
                    json!([1, format!("key{n}"), null])
                }
                "model.res.user.get_preferences" => json!({"company": 7}),
                // key1 has expired on the server.
                _ if auth.as_deref() == Some(key1.as_str()) => {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                _ => {
                    let params = req["params"].as_array().unwrap();
                    assert_eq!(params.last().unwrap()["company"], 7, "context last");
                    json!([42])
                }
            };
            (
                StatusCode::OK,
                json!({"id": req["id"], "result": result}).to_string(),
            )
        });
        let rpc = rpc_at(stand_in(answer).await, "pw");
        let ids = rpc
            .model("sale.sale", "search", vec![json!([])])
            .await
            .unwrap();
        assert_eq!(ids, json!([42]));
        assert_eq!(
            logins.load(Ordering::SeqCst),
            2,
            "one fresh login after the 401"
        );
        rpc.model("sale.sale", "search", vec![json!([])])
            .await
            .unwrap();
        assert_eq!(
            logins.load(Ordering::SeqCst),
            2,
            "the fresh session is kept"
        );
    }

    pub(in crate::erp::tryton) type Answer =
        dyn Fn(&hyper::HeaderMap, &str) -> (hyper::StatusCode, String) + Send + Sync;

    /// A bare hyper server: POST /db/rpc/ answers with `answer`, anything
    /// else is 404.
    pub(in crate::erp::tryton) async fn stand_in(
        answer: std::sync::Arc<Answer>,
    ) -> std::net::SocketAddr {
        use http_body_util::{BodyExt as _, Full};
        use hyper::StatusCode;
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let answer = Arc::clone(&answer);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body: hyper::body::Incoming = body;
                        let body = body.collect().await?.to_bytes();
                        let (status, text) = if parts.method == hyper::Method::POST
                            && parts.uri.path() == "/db/rpc/"
                        {
                            answer(&parts.headers, &String::from_utf8_lossy(&body))
                        } else {
                            (StatusCode::NOT_FOUND, String::new())
                        };
                        let mut reply = hyper::Response::new(Full::new(bytes::Bytes::from(text)));
                        *reply.status_mut() = status;
                        Ok::<_, hyper::Error>(reply)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service),
                );
            }
        });
        addr
    }

    /// A client of the stand-in at `addr`, logging in as admin.
    pub(in crate::erp::tryton) fn rpc_at(addr: std::net::SocketAddr, password: &str) -> Rpc {
        let ep = Endpoint::new("erp", std::time::Duration::from_secs(5), 2, None, 1 << 20).unwrap();
        Rpc::new(
            &format!("http://{addr}/db/"),
            "admin",
            Secret::new(password),
            ep,
        )
    }

    /// TRYTON.md §6: after too many failed logins Tryton answers 429. The
    /// error says what usually causes that, names the password's config
    /// key (never the password) and keeps the wait Tryton asks for.
    #[tokio::test]
    async fn a_login_refused_with_429_points_at_the_password() {
        let answer: std::sync::Arc<Answer> =
            std::sync::Arc::new(|_: &hyper::HeaderMap, _: &str| {
                (hyper::StatusCode::TOO_MANY_REQUESTS, String::new())
            });
        let rpc = rpc_at(stand_in(answer).await, "s3cret-pw");
        let err = rpc
            .model("sale.sale", "search", vec![json!([])])
            .await
            .unwrap_err();
        let text = err.message().to_string();
        assert!(
            matches!(
                err,
                Failure::Retryable {
                    status: Some(429),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(text.contains("too many failed logins"), "{text}");
        assert!(text.contains("erp.password_file"), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
    }
}
