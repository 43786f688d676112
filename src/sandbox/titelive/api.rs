//! HTTP surface of the Titelive simulator. Every answer is HTTP 200 with
//! the `{"response": {...}}` envelope (only the fault layer and unknown
//! paths give other statuses), with the codes of the vendor's code lists.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use super::{TIMEZONE, TiteliveSim, Token};
use crate::sandbox::faults::inject;
use crate::sandbox::lock;

/// The documented statuses: carts 0-2, orders 5-10, 98 error, 99 cancelled.
const STATUSES: [i64; 9] = [0, 1, 2, 5, 7, 8, 10, 98, 99];

pub(super) fn router(sim: TiteliveSim) -> Router {
    let faults = sim.inner.faults.clone();
    Router::new()
        .route("/api/json/{domain}/customer/token", any(token))
        .route("/api/json/{domain}/customer/login", any(login))
        .route("/api/json/{domain}/customer/order", any(list))
        .route("/api/json/{domain}/customer/order/{id}", any(detail))
        .route(
            "/api/json/{domain}/admin/order/{id}/status",
            any(set_status),
        )
        .fallback(not_found)
        .layer(from_fn_with_state(sim.clone(), error_status))
        .layer(from_fn_with_state(faults, inject))
        .with_state(sim)
}

/// With `error_statuses`, a failure envelope gets an HTTP status to match
/// its code (see [`super::TiteliveOptions::error_statuses`]).
async fn error_status(
    State(sim): State<TiteliveSim>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    if !sim.inner.opts.error_statuses || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if answer["response"]["success"] == Value::Bool(false) {
        parts.status = match answer["response"]["code"].as_i64() {
            Some(3..=5) => StatusCode::UNAUTHORIZED,
            Some(10) => StatusCode::NOT_FOUND,
            Some(2 | 99) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn envelope(body: Value) -> Response {
    (StatusCode::OK, axum::Json(json!({ "response": body }))).into_response()
}

fn ok(message: &str, object: Value) -> Response {
    envelope(json!({"success": true, "code": 0, "message": message, "object": object}))
}

fn fail(code: i64, message: &str) -> Response {
    envelope(json!({"success": false, "code": code, "message": message}))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body><h1>404 Not Found</h1></body></html>",
    )
        .into_response()
}

fn new_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(26)
        .map(char::from)
        .collect()
}

/// The checks every call starts with: the domain code, then an injected
/// code 2 / 99 answer when the knob says so.
fn preamble(sim: &TiteliveSim, domain: &str) -> Option<Response> {
    if domain != sim.inner.opts.domain_code {
        return Some(fail(1, "domaincode malformed"));
    }
    let rate = *lock(&sim.inner.code_fault_rate);
    if rate > 0.0 && rand::random::<f64>() < rate {
        sim.state().code_faults += 1;
        return Some(if rand::random::<bool>() {
            fail(2, "connexion error")
        } else {
            fail(99, "uncatched exception")
        });
    }
    None
}

/// A refusal: the code and message of a success=false answer.
type Refusal = (i64, &'static str);

/// The user the `token` header is bound to (None: a valid but anonymous token).
fn token_user(sim: &TiteliveSim, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let value = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if value.is_empty() {
        return Err((3, "token empty"));
    }
    let st = sim.state();
    match st.tokens.get(value) {
        None => Err((4, "no token with that key")),
        Some(t) if t.expires.is_some_and(|e| e <= Instant::now()) => Err((5, "invalid token")),
        Some(t) => Ok(t.user.clone()),
    }
}

/// Order calls need a token bound to a user; admin calls the SYSTEM user.
fn require_user(sim: &TiteliveSim, headers: &HeaderMap, system: bool) -> Result<(), Refusal> {
    match token_user(sim, headers)? {
        Some(u) if !system || u == sim.inner.opts.system_login => Ok(()),
        _ => Err((5, "invalid token")),
    }
}

fn token_object(sim: &TiteliveSim, value: &str, user: Option<&str>) -> Value {
    let ttl = chrono::Duration::from_std(sim.inner.opts.token_ttl).unwrap_or_default();
    let expires = (chrono::Utc::now() + ttl)
        .with_timezone(&TIMEZONE)
        .naive_local();
    let mut t = json!({
        "value": value,
        "expirationDate": expires.format("%Y-%m-%d %H:%M:%S").to_string(),
        "refresh": new_token(),
    });
    if let Some(u) = user {
        t["customer"] = json!(u);
    }
    t
}

async fn token(State(sim): State<TiteliveSim>, Path(domain): Path<String>) -> Response {
    if let Some(r) = preamble(&sim, &domain) {
        return r;
    }
    let value = new_token();
    {
        let mut st = sim.state();
        st.token_requests += 1;
        st.issued.push(value.clone());
        st.tokens.insert(
            value.clone(),
            Token {
                expires: Some(Instant::now() + sim.inner.opts.token_ttl),
                user: None,
            },
        );
    }
    ok(
        "token created",
        json!({ "token": token_object(&sim, &value, None) }),
    )
}

fn form_or_query(headers: &HeaderMap, body: &[u8], query: Option<&str>) -> Vec<(String, String)> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let mut pairs = if is_form {
        crate::sandbox::form_pairs(body)
    } else {
        Vec::new()
    };
    pairs.extend(crate::sandbox::form_pairs(
        query.unwrap_or_default().as_bytes(),
    ));
    pairs
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn login(
    State(sim): State<TiteliveSim>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(r) = preamble(&sim, &domain) {
        return r;
    }
    sim.state().login_requests += 1;
    if let Err((code, message)) = token_user(&sim, &headers) {
        return fail(code, message);
    }
    let opts = &sim.inner.opts;
    let body: &[u8] = if opts.login_query_only { b"" } else { &body };
    let params = form_or_query(&headers, body, query.as_deref());
    let (Some(login), Some(password)) = (field(&params, "login"), field(&params, "password"))
    else {
        return fail(9, "login not string (or undefined)");
    };
    if login != opts.system_login || password != opts.system_password {
        return fail(10, "login or password incorrect");
    }
    let value = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    {
        let mut st = sim.state();
        st.logins += 1;
        if let Some(t) = st.tokens.get_mut(&value) {
            t.user = Some(login.to_string());
        }
    }
    // Titelive's login sample has no "code" on success.
    envelope(json!({
        "success": true, "message": "customer logged",
        "object": {"customer": {"id": 1, "role": "SYSTEM"}, "token": token_object(&sim, &value, Some(login))}
    }))
}

async fn list(
    State(sim): State<TiteliveSim>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = preamble(&sim, &domain) {
        return r;
    }
    if let Err((code, message)) = require_user(&sim, &headers, false) {
        return fail(code, message);
    }
    let mut orders: Vec<Value> = sim.state().orders.values().map(|o| o.json()).collect();
    let inner = match orders.len() {
        0 => return fail(10, "no orders"),
        1 => orders.remove(0),
        _ => Value::Array(orders),
    };
    ok("get orders", json!({"orders": {"order": inner}}))
}

async fn detail(
    State(sim): State<TiteliveSim>,
    Path((domain, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = preamble(&sim, &domain) {
        return r;
    }
    if let Err((code, message)) = require_user(&sim, &headers, false) {
        return fail(code, message);
    }
    let Ok(id) = id.parse::<i64>() else {
        return fail(9, "order not long");
    };
    match sim.order(id) {
        Some(o) => ok("get order", json!({ "order": o })),
        None => fail(10, "order not exist"),
    }
}

/// Which status changes the simulator allows (Titelive documents none; see
/// README): forward along confirmed → processing → processed → done,
/// cancelling before done, error from anywhere, and the same status again.
fn allowed(from: i64, to: i64) -> bool {
    from == to || to == 98 || matches!((from, to), (5, 7) | (7, 8) | (8, 10) | (5 | 7 | 8, 99))
}

async fn set_status(
    State(sim): State<TiteliveSim>,
    Path((domain, id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = preamble(&sim, &domain) {
        return r;
    }
    if method != Method::POST && method != Method::PUT {
        return fail(9, "method not allowed");
    }
    if let Err((code, message)) = require_user(&sim, &headers, true) {
        return fail(code, message);
    }
    let Ok(id) = id.parse::<i64>() else {
        return fail(9, "order not long");
    };
    // Form parameters only (not the query string), as documented.
    let params = form_or_query(&headers, &body, None);
    let Some(status) = field(&params, "status").and_then(|s| s.trim().parse::<i64>().ok()) else {
        return fail(9, "status not int (or undefined)");
    };
    let message = field(&params, "message").unwrap_or_default().to_string();
    let now = sim.now_local();
    let mut st = sim.state();
    let Some(order) = st.orders.get_mut(&id) else {
        return fail(10, "order not exist");
    };
    order.status_posts += 1;
    if !STATUSES.contains(&status) {
        return fail(12, "status not exist");
    }
    if order.status < 5 && status != 5 {
        return fail(11, "not an order but still a cart");
    }
    if order.status >= 5 && (status == 5 || sim.inner.opts.closed_status_writes) {
        return fail(13, "order already confirmed");
    }
    if !allowed(order.status, status) {
        return fail(
            14,
            &format!(
                "status transition not allowed ({} to {status})",
                order.status
            ),
        );
    }
    order.change_status(status, &message, now, "API");
    let json = order.json();
    ok(
        &format!("order has ben set to status {status}"),
        json!({ "order": json }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let p = crate::sandbox::form_pairs(b"status=7&message=ERP+order+SO%2D1%25&x");
        assert_eq!(field(&p, "status"), Some("7"));
        assert_eq!(field(&p, "message"), Some("ERP order SO-1%"));
        assert_eq!(field(&p, "x"), Some(""));
    }

    #[test]
    fn transitions() {
        assert!(allowed(5, 7) && allowed(7, 8) && allowed(8, 10) && allowed(7, 7));
        assert!(allowed(5, 99) && allowed(10, 98));
        assert!(!allowed(8, 7) && !allowed(99, 7) && !allowed(5, 8) && !allowed(10, 99));
    }
}
