//! HTTP surface of the ERP simulator. Check order per request: bearer auth,
//! Idempotency-Key presence, idempotent replay, then contract validation, so a
//! replayed key always gets its first answer back.

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ErpOrder, ErpSim, Stored, validate};
use crate::sandbox::faults::inject;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

pub(super) fn router(sim: ErpSim) -> Router {
    let faults = sim.inner.faults.clone();
    Router::new()
        .route("/orders", get(find_orders).post(create_order))
        .route("/orders/cancel", post(cancel_order))
        .route("/shipments", get(shipments))
        .route("/cancellations", get(cancellations))
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(from_fn_with_state(faults, inject))
        .with_state(sim)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": msg.into()}))).into_response()
}

/// `Some(401 response)` unless the bearer token is right.
fn unauthorized(sim: &ErpSim, headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {}", sim.state().token);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (given != Some(expected.as_str())).then(|| error(StatusCode::UNAUTHORIZED, "unauthorized"))
}

async fn create_order(State(sim): State<ErpSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = unauthorized(&sim, &headers) {
        return denied;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(header_key) = key else {
        return error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key header is required",
        );
    };
    // The contract: a key that is not printable ASCII arrives percent-encoded
    // (UTF-8); the order is known by the decoded key, the body's `order_key`.
    let decoded = crate::sandbox::percent_decode(header_key, false);
    let key = decoded.as_str();

    let mut st = sim.state();
    *st.posts.entry(key.to_string()).or_default() += 1;
    if let Some(&i) = st.by_key.get(key) {
        return (
            StatusCode::OK,
            axum::Json(st.orders[i].order.response.clone()),
        )
            .into_response();
    }
    let order: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("body must be a JSON object ({e})"),
            );
        }
    };
    if let Err(msg) = validate::validate(&order, header_key, &st.unknown_skus) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, msg);
    }

    let erp_order_number = format!("SO{:06}", st.orders.len() + 1);
    let lines: Vec<Value> = order
        .get("lines")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    json!({"source_line_id": l.get("source_line_id"), "erp_line_number": (i + 1) * 10})
                })
                .collect()
        })
        .unwrap_or_default();
    let response = json!({"erp_order_number": erp_order_number, "lines": lines});
    let index = st.orders.len();
    st.orders.push(Stored {
        order: ErpOrder {
            order_key: key.to_string(),
            erp_order_number,
            body: order,
            created_at: Utc::now(),
            response: response.clone(),
        },
        created: Instant::now(),
        shipped: false,
        cancelled: None,
        shipped_lines: Vec::new(),
    });
    st.by_key.insert(key.to_string(), index);
    (StatusCode::CREATED, axum::Json(response)).into_response()
}

async fn find_orders(
    State(sim): State<ErpSim>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Some(denied) = unauthorized(&sim, &headers) {
        return denied;
    }
    let Some(key) = query.ok().and_then(|Query(q)| q.get("order_key").cloned()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "order_key query parameter is required",
        );
    };
    let orders: Vec<Value> = sim
        .erp_orders_for(&key)
        .into_iter()
        .map(|o| json!({"order_key": o.order_key, "erp_order_number": o.erp_order_number}))
        .collect();
    (StatusCode::OK, axum::Json(json!({"orders": orders}))).into_response()
}

/// `after` (parsed, and as sent: an unchanged feed echoes it) and `limit`
/// of a feed (`/shipments`, `/cancellations`), or the 400 the contract
/// gives for a bad one.
fn feed_query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<(Option<u64>, usize, Option<String>), Box<Response>> {
    let bad = |message: String| Box::new(error(StatusCode::BAD_REQUEST, message));
    let Ok(Query(query)) = query else {
        return Err(bad("invalid query string".into()));
    };
    let after = match query.get("after") {
        None => None,
        Some(a) => Some(
            a.parse::<u64>()
                .map_err(|_| bad(format!("invalid cursor \"{a}\"")))?,
        ),
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}, got \"{l}\""
                )));
            }
        },
    };
    Ok((after, limit, query.get("after").cloned()))
}

async fn shipments(
    State(sim): State<ErpSim>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Some(denied) = unauthorized(&sim, &headers) {
        return denied;
    }
    let (after, limit, after_text) = match feed_query(query) {
        Ok(q) => q,
        Err(denied) => return *denied,
    };

    let mut st = sim.state();
    st.release_due_shipments();
    let from = after.unwrap_or(0);
    let page: Vec<Value> = st
        .shipments
        .iter()
        .filter(|s| s.seq > from)
        .take(limit)
        .map(|s| {
            let mut v = json!({
                "order_key": s.order_key,
                "erp_order_number": s.erp_order_number,
                "shipped_at": s.shipped_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "carrier": s.carrier,
                "lines": s.lines,
            });
            // Optional fields: left out when the ERP has none.
            if !s.tracking_number.is_empty() {
                v["tracking_number"] = json!(s.tracking_number);
                v["tracking_url"] = json!(s.tracking_url);
            }
            if let Some(id) = &s.erp_shipment_id {
                v["erp_shipment_id"] = json!(id);
            }
            v
        })
        .collect();
    let last_seq = st
        .shipments
        .iter()
        .filter(|s| s.seq > from)
        .take(limit)
        .last()
        .map(|s| s.seq);
    // Echo the caller's cursor verbatim when nothing is new: it is opaque.
    let next = match (last_seq, after_text) {
        (Some(seq), _) => seq.to_string(),
        (None, Some(a)) => a,
        (None, None) => "0".to_string(),
    };
    (
        StatusCode::OK,
        axum::Json(json!({"shipments": page, "next": next})),
    )
        .into_response()
}

/// `POST /orders/cancel` with `{"order_key", "reason"}`: 200
/// `{"order_key", "cancelled": true}` (also for a repeat), 409 once the
/// order shipped, 404 for a key the ERP does not hold, 422 for a bad body.
async fn cancel_order(State(sim): State<ErpSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = unauthorized(&sim, &headers) {
        return denied;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "body must be a JSON object",
            );
        }
    };
    let Some(key) = body
        .get("order_key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "order_key: required, a non-empty string",
        );
    };
    let reason = match body.get("reason") {
        None => "",
        Some(Value::String(r)) => r.as_str(),
        Some(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "reason: must be a string"),
    };
    let mut st = sim.state();
    *st.cancel_posts.entry(key.to_string()).or_default() += 1;
    let Some(&i) = st.by_key.get(key) else {
        return error(StatusCode::NOT_FOUND, format!("no order with key {key}"));
    };
    match st.cancel(i, reason) {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(json!({"order_key": key, "cancelled": true})),
        )
            .into_response(),
        Err(why) => error(StatusCode::CONFLICT, why),
    }
}

/// `GET /cancellations?after=&limit=`: every cancelled order, ours or by
/// hand, paged like the shipments feed.
async fn cancellations(
    State(sim): State<ErpSim>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Some(denied) = unauthorized(&sim, &headers) {
        return denied;
    }
    let (after, limit, after_text) = match feed_query(query) {
        Ok(q) => q,
        Err(denied) => return *denied,
    };
    let st = sim.state();
    if !st.cancellations_feed {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let from = after.unwrap_or(0);
    let page: Vec<_> = st
        .cancellations
        .iter()
        .filter(|c| c.seq > from)
        .take(limit)
        .collect();
    let next = match (page.last(), after_text) {
        (Some(c), _) => c.seq.to_string(),
        (None, Some(a)) => a,
        (None, None) => "0".to_string(),
    };
    let items: Vec<Value> = page
        .iter()
        .map(|c| {
            json!({
                "order_key": c.order_key,
                "erp_order_number": c.erp_order_number,
                "cancelled_at": c.cancelled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "reason": c.reason,
            })
        })
        .collect();
    (
        StatusCode::OK,
        axum::Json(json!({"cancellations": items, "next": next})),
    )
        .into_response()
}
