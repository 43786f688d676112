//! HTTP surface of the Vinou simulator. Everything is a POST with a JSON
//! body under `/service/`; errors are `{"errors": [CODE]}` with a 4xx, a
//! missing or expired JWT is a 401.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use super::{Change, VinouSim, base64url_encode, insert, seed};
use crate::sandbox::faults::inject;

const MAX_PAGE_SIZE: u64 = 100;

pub(super) fn router(sim: VinouSim) -> Router {
    let faults = sim.inner.faults.clone();
    Router::new()
        .route("/service/login", any(login))
        .route("/service/orders/getAll", any(get_all))
        .route("/service/orders/get", any(get_one))
        .route("/service/orders/touch", any(touch))
        .route("/service/orders/checkout/cancel", any(checkout_cancel))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "ERROR_ROUTE_NOT_FOUND") })
        .layer(from_fn_with_state(faults, inject))
        .with_state(sim)
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({ "errors": [code] }))).into_response()
}

/// Why a request is refused: status and Vinou-style error code.
type Refusal = (StatusCode, &'static str);

/// The JSON body of a POST, or the refusal to answer.
fn post_body(method: &Method, body: &Bytes) -> Result<Value, Refusal> {
    if method != Method::POST {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "ERROR_METHOD_NOT_ALLOWED"));
    }
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "ERROR_INVALID_JSON"))
}

fn authorize(sim: &VinouSim, headers: &HeaderMap) -> Result<(), Refusal> {
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or((StatusCode::UNAUTHORIZED, "ERROR_NO_TOKEN"))?;
    let max_uses = sim.inner.opts.jwt_max_uses;
    let mut st = sim.state();
    let Some((until, uses)) = st.tokens.get_mut(jwt) else {
        return Err((StatusCode::UNAUTHORIZED, "ERROR_TOKEN_INVALID"));
    };
    *uses += 1;
    if *until <= Instant::now() || max_uses.is_some_and(|m| *uses > m) {
        return Err((StatusCode::UNAUTHORIZED, "ERROR_TOKEN_EXPIRED"));
    }
    Ok(())
}

async fn login(State(sim): State<VinouSim>, method: Method, body: Bytes) -> Response {
    let body = match post_body(&method, &body) {
        Ok(b) => b,
        Err((status, code)) => return error(status, code),
    };
    let opts = &sim.inner.opts;
    if body["token"].as_str() != Some(opts.api_token.as_str())
        || body["authid"].as_str() != Some(opts.auth_id.as_str())
    {
        return error(StatusCode::UNAUTHORIZED, "ERROR_AUTHENTICATION_FAILED");
    }
    let now = chrono::Utc::now().timestamp();
    let ttl = opts.jwt_ttl.max(Duration::from_millis(1));
    let exp = now + ttl.as_secs_f64().ceil() as i64;
    let claims = json!({ "iat": now, "exp": exp, "authid": opts.auth_id, "scope": "service" });
    let sig: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{sig}",
        base64url_encode(claims.to_string().as_bytes())
    );
    let mut st = sim.state();
    st.logins += 1;
    st.tokens.insert(jwt.clone(), (Instant::now() + ttl, 0));
    st.issued.push(jwt.clone());
    let refresh: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    axum::Json(json!({ "token": jwt, "refreshToken": refresh })).into_response()
}

/// `include` as an array or a comma-separated string.
fn includes(body: &Value, default: &str) -> Vec<String> {
    match &body["include"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        _ => default.split(',').map(str::to_string).collect(),
    }
}

/// The record with only the relations that were asked for.
fn shaped(order: &Value, include: &[String]) -> Value {
    let mut v = order.clone();
    let has = |k: &str| include.iter().any(|i| i == k);
    if let Some(map) = v.as_object_mut() {
        for (rel, keys) in [
            ("client", &["client"][..]),
            ("billing", &["billing"][..]),
            ("delivery", &["delivery"][..]),
            ("items", &["positions", "package", "rebates"][..]),
        ] {
            if !has(rel) {
                for k in keys {
                    map.remove(*k);
                }
            }
        }
    }
    v
}

async fn get_all(
    State(sim): State<VinouSim>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match post_body(&method, &body).and_then(|b| authorize(&sim, &headers).map(|_| b)) {
        Ok(b) => b,
        Err((status, code)) => return error(status, code),
    };
    let repeat = sim.inner.faults.get().repeat_page_forever;
    // Fault: every page is the first one again, and more are claimed.
    let page = if repeat {
        1
    } else {
        body["page"].as_u64().unwrap_or(1).max(1)
    };
    let asked = body["pageSize"].as_u64().unwrap_or(16);
    // The docs give 100 as the maximum; what Vinou does above it is not
    // documented, so the simulator clamps (and records what was asked).
    let size = asked.clamp(1, MAX_PAGE_SIZE);
    let include = includes(&body, "billing,delivery");
    let now = sim.now_local();
    let mut st = sim.state();
    st.list_requests += 1;
    if st.failing_list_page == Some(page) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "ERROR_INTERNAL");
    }
    st.max_page_size_asked = st.max_page_size_asked.max(asked);
    if page > 1 {
        // Customers keep ordering while a client walks the pages: each new
        // order at the top pushes every page down by one.
        for _ in 0..st.arrivals_per_page {
            let super::State { rng, ids, .. } = &mut *st;
            let o = seed::order(rng, ids, now, "payed");
            insert(&mut st, o);
        }
    }
    let mut all: Vec<&Value> = st.orders.values().map(|o| &o.json).collect();
    // Newest first: by crstamp, then id (several orders share a second).
    all.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["crstamp"].as_str().unwrap_or_default().to_string(),
                v["id"].as_i64(),
            )
        };
        key(b).cmp(&key(a))
    });
    let total = all.len() as u64;
    let data: Vec<Value> = all
        .iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
        .map(|o| shaped(o, &include))
        .collect();
    axum::Json(json!({
        "info": "success",
        "data": data,
        "totalCount": total,
        "pages": if repeat { u64::from(u32::MAX) } else { total.div_ceil(size) },
    }))
    .into_response()
}

/// The order a `get`/`touch` body names by `id` or `uuid`.
fn find(st: &super::State, body: &Value) -> Option<i64> {
    let id = body["id"]
        .as_i64()
        .or_else(|| body["id"].as_str().and_then(|s| s.parse().ok()));
    match (id, body["uuid"].as_str()) {
        (Some(id), _) => st.orders.contains_key(&id).then_some(id),
        (None, Some(uuid)) => st
            .orders
            .iter()
            .find(|(_, o)| o.json["uuid"].as_str() == Some(uuid))
            .map(|(id, _)| *id),
        _ => None,
    }
}

async fn get_one(
    State(sim): State<VinouSim>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match post_body(&method, &body).and_then(|b| authorize(&sim, &headers).map(|_| b)) {
        Ok(b) => b,
        Err((status, code)) => return error(status, code),
    };
    let include = includes(&body, "client,billing,delivery,documents,items");
    let mut st = sim.state();
    let Some(id) = find(&st, &body) else {
        return error(StatusCode::NOT_FOUND, "ERROR_ORDER_NOT_FOUND");
    };
    let Some(o) = st.orders.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "ERROR_ORDER_NOT_FOUND");
    };
    o.get_requests += 1;
    axum::Json(json!({ "info": "success", "data": shaped(&o.json, &include) })).into_response()
}

/// "Mark order as read" (older route docs). Does not move `chstamp`.
async fn touch(
    State(sim): State<VinouSim>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match post_body(&method, &body).and_then(|b| authorize(&sim, &headers).map(|_| b)) {
        Ok(b) => b,
        Err((status, code)) => return error(status, code),
    };
    let mut st = sim.state();
    let Some(id) = find(&st, &body) else {
        return error(StatusCode::NOT_FOUND, "ERROR_ORDER_NOT_FOUND");
    };
    let Some(o) = st.orders.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "ERROR_ORDER_NOT_FOUND");
    };
    o.touch_requests += 1;
    if o.json["touched"] != json!(1) {
        o.json["touched"] = 1.into();
        o.history.push(Change {
            field: "touched".into(),
            from: "0".into(),
            to: "1".into(),
        });
    }
    axum::Json(json!({ "info": "success", "data": true })).into_response()
}

/// `orders/checkout/cancel` ("Cancel specific order", by `id` or `uuid`).
/// Vinou documents no answer for an order that cannot be cancelled; the
/// simulator refuses one that is `closed` or `in_delivery` with a 400 and
/// an error code, and answers a cancelled order's repeat with success.
async fn checkout_cancel(
    State(sim): State<VinouSim>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match post_body(&method, &body).and_then(|b| authorize(&sim, &headers).map(|_| b)) {
        Ok(b) => b,
        Err((status, code)) => return error(status, code),
    };
    let now = sim.now_local().format(super::seed::STAMP).to_string();
    let mut st = sim.state();
    let Some(id) = find(&st, &body) else {
        return error(StatusCode::NOT_FOUND, "ERROR_ORDER_NOT_FOUND");
    };
    let Some(o) = st.orders.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "ERROR_ORDER_NOT_FOUND");
    };
    o.cancel_requests += 1;
    let status = o.json["status"].as_str().unwrap_or_default().to_string();
    if matches!(status.as_str(), "closed" | "in_delivery") {
        return error(StatusCode::BAD_REQUEST, "ERROR_ORDER_NOT_CANCELLABLE");
    }
    if status != "cancelled" {
        o.json["status"] = "cancelled".into();
        o.json["chstamp"] = now.into();
        o.history.push(Change {
            field: "status".into(),
            from: status,
            to: "cancelled".into(),
        });
    }
    axum::Json(json!({ "info": "success", "data": true })).into_response()
}
