//! HTTP surface of the Retailys simulator. Errors are the API's `ErrorModel`
//! (`{"message", "detail"}`); paths are case-sensitive like the real ones.
// Helpers return the error response itself for handlers to send at once;
// boxing it would only add noise to a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::DateTime;
use serde_json::{Value, json};

use super::{RetailysSim, SimOrder, SimStatus, Write};
use crate::sandbox::faults::inject;

type Params = Query<HashMap<String, String>>;

pub(super) fn router(sim: RetailysSim) -> Router {
    let faults = sim.inner.faults.clone();
    Router::new()
        .route("/System/Orders", get(list))
        .route("/System/Orders/Statuses", get(statuses))
        .route("/System/Orders/{id}", get(detail))
        .route("/System/Orders/{id}/status", patch(set_status))
        .route("/System/Orders/{id}/{flag}", patch(set_flag))
        .route("/System/Orders/{id}/tracking", post(add_tracking))
        .route("/System/Orders/{id}/history", post(add_history))
        .route("/System/Channels/Shippings", get(shippings))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not found", "no such endpoint") })
        .layer(from_fn_with_state(faults, inject))
        .with_state(sim)
}

fn error(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "detail": detail})),
    )
        .into_response()
}

fn bad_request(detail: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "Bad request", &detail.into())
}

fn authorised(sim: &RetailysSim, headers: &HeaderMap) -> Result<(), Response> {
    match headers.get("token").and_then(|v| v.to_str().ok()) {
        Some(t) if t == sim.inner.opts.token => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or invalid API key in the token header",
        )),
    }
}

/// `page` and `per_page` as the API checks them (per_page 10..=250, default 10).
fn paging(q: &HashMap<String, String>) -> Result<(usize, usize), Response> {
    let per_page = match q.get("per_page") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (10..=250).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
                    "per_page must be between 10 and 250, got {v:?}"
                )));
            }
        },
    };
    let page = match q.get("page") {
        None => 1,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(bad_request(format!("page must be 1 or more, got {v:?}"))),
        },
    };
    Ok((page, per_page))
}

fn paginate<T: Clone>(items: &[T], page: usize, per_page: usize) -> (Value, Vec<T>) {
    let total = items.len();
    let pages = total.div_ceil(per_page);
    let slice = items
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    (
        json!({"page": page, "per_page": per_page, "pages": pages, "total": total}),
        slice,
    )
}

fn flag(q: &HashMap<String, String>, key: &str) -> Result<Option<bool>, Response> {
    match q.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(v) => Err(bad_request(format!(
            "{key} must be true or false, got {v:?}"
        ))),
    }
}

/// `expanded=false` shows related objects as `{id, api_link}` stubs.
/// An order as an answer shows it: stubs for related records unless
/// `expanded`, and no status where the options say orders carry none.
fn shown(sim: &RetailysSim, order: &Value, expanded: bool) -> Value {
    let mut v = order.clone();
    if sim.inner.opts.orders_without_status
        && let Some(o) = v.as_object_mut()
    {
        o.remove("status_id");
        o.remove("status");
    }
    if expanded {
        return v;
    }
    for (field, path) in [
        ("customer", "System/Customers"),
        ("company", "System/Companies"),
        ("channel", "System/Channels"),
        ("shipping", "System/Channels/Shippings"),
        ("payment", "System/Channels/Payments"),
        ("status", "System/Orders/Statuses"),
    ] {
        if let Some(id) = v[field]["id"].as_i64() {
            v[field] =
                json!({"id": id, "api_link": format!("https://api.retailys.com/v1/{path}/{id}")});
        }
    }
    v
}

async fn list(State(sim): State<RetailysSim>, headers: HeaderMap, Query(q): Params) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let (page, per_page) = match paging(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let repeat = sim.inner.faults.get().repeat_page_forever;
    let page = if repeat { 1 } else { page };
    let mut bounds = Vec::new();
    for key in ["from", "to"] {
        match q.get(key).map(|v| DateTime::parse_from_rfc3339(v)) {
            None => bounds.push(None),
            Some(Ok(t)) => bounds.push(Some(t)),
            Some(Err(_)) => {
                return bad_request(format!(
                    "{key} must be a date-time with offset like 2019-12-01T08:15:30+01:00, got {:?}",
                    q[key]
                ));
            }
        }
    }
    let (expanded, done, canceled) =
        match (flag(&q, "expanded"), flag(&q, "done"), flag(&q, "canceled")) {
            (Ok(e), Ok(d), Ok(c)) => (e.unwrap_or(false), d, c),
            (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
        };
    let int = |key: &str| q.get(key).and_then(|v| v.parse::<i64>().ok());
    let (channel, status) = (int("channel_id"), int("status_id"));
    let st = sim.state();
    let matching: Vec<&Value> = st
        .orders
        .values()
        .map(|o| &o.json)
        .filter(|o| {
            let when = o["date_order"]
                .as_str()
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok());
            bounds[0].is_none_or(|f| when.is_some_and(|w| w >= f))
                && bounds[1].is_none_or(|t| when.is_some_and(|w| w <= t))
                && channel.is_none_or(|c| o["channel"]["id"].as_i64() == Some(c))
                && status.is_none_or(|s| o["status_id"].as_i64() == Some(s))
                && done.is_none_or(|d| o["done"].as_bool() == Some(d))
                && canceled.is_none_or(|c| o["canceled"].as_bool() == Some(c))
        })
        .collect();
    let (mut paginator, orders) = paginate(&matching, page, per_page);
    if repeat {
        paginator["pages"] = json!(u32::MAX);
    }
    let orders: Vec<Value> = orders
        .into_iter()
        .map(|o| shown(&sim, o, expanded))
        .collect();
    axum::Json(json!({"paginator": paginator, "orders": orders})).into_response()
}

async fn statuses(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let (page, per_page) = match paging(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all: Vec<Value> = sim
        .state()
        .statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": s.id, "name": s.name, "icon": "circle", "color": "#888888", "sort": i,
                   "complete_order": s.complete_order, "cancel_order": s.cancel_order})
        })
        .collect();
    let (paginator, statuses) = paginate(&all, page, per_page);
    axum::Json(json!({"paginator": paginator, "statuses": statuses})).into_response()
}

async fn shippings(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let (page, per_page) = match paging(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all: Vec<Value> = sim
        .inner
        .opts
        .shippings
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    let (paginator, shippings) = paginate(&all, page, per_page);
    axum::Json(json!({"paginator": paginator, "shippings": shippings})).into_response()
}

fn order_id(raw: &str) -> Result<i64, Response> {
    raw.parse()
        .map_err(|_| bad_request(format!("order id {raw:?} is not a number")))
}

fn not_found(id: i64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("order {id} does not exist"),
    )
}

async fn detail(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let id = match order_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let expanded = match flag(&q, "expanded") {
        Ok(e) => e.unwrap_or(false),
        Err(r) => return r,
    };
    match sim.state().orders.get_mut(&id) {
        Some(o) => {
            o.detail_reads += 1;
            axum::Json(shown(&sim, &o.json, expanded)).into_response()
        }
        None => not_found(id),
    }
}

/// Sets a status and what it implies, and records it in the order's history
/// the way the shop does (type `status`).
pub(super) fn apply_status(order: &mut SimOrder, status: &SimStatus) {
    order.json["status_id"] = json!(status.id);
    order.json["status"] = json!({"id": status.id, "name": status.name});
    if status.cancel_order {
        order.json["canceled"] = json!(true);
    }
    if status.complete_order {
        order.json["done"] = json!(true);
    }
    let n = order.history.len() as i64 + 1;
    order.history.push(
        json!({"id": order.json["id"].as_i64().unwrap_or(0) * 100 + n, "type": "status",
                              "record": {"name": "status", "status": status.name}}),
    );
}

fn body_json(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("body is not JSON: {e}")))
}

async fn set_status(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let (id, body) = match (order_id(&id), body_json(&body)) {
        (Ok(i), Ok(b)) => (i, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Some(status_id) = body["status_id"].as_i64() else {
        return bad_request("status_id (integer) is required");
    };
    let mut st = sim.state();
    let Some(status) = st.statuses.iter().find(|s| s.id == status_id).cloned() else {
        return bad_request(format!(
            "status {status_id} does not exist in this instance"
        ));
    };
    let Some(order) = st.orders.get_mut(&id) else {
        return not_found(id);
    };
    apply_status(order, &status);
    order.writes.push(Write {
        what: "PATCH status".into(),
        body,
    });
    axum::Json(shown(&sim, &order.json, true)).into_response()
}

async fn set_flag(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Path((id, which)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let id = match order_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let field = match which.as_str() {
        "sent" => "sent",
        "done" => "done",
        "cancel" => "canceled",
        "delivered" => "delivered",
        _ => return error(StatusCode::NOT_FOUND, "Not found", "no such endpoint"),
    };
    let mut st = sim.state();
    let Some(order) = st.orders.get_mut(&id) else {
        return not_found(id);
    };
    order.json[field] = json!(true);
    order.writes.push(Write {
        what: format!("PATCH {which}"),
        body: Value::Null,
    });
    axum::Json(shown(&sim, &order.json, true)).into_response()
}

async fn add_tracking(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let (id, body) = match (order_id(&id), body_json(&body)) {
        (Ok(i), Ok(b)) => (i, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Some(shipper_id) = body["shipper_id"].as_i64() else {
        return bad_request("shipper_id (integer) is required");
    };
    let number = match body["tracking_number"].as_str() {
        Some(n) if !n.trim().is_empty() => n.to_string(),
        _ => return bad_request("tracking_number (string) is required"),
    };
    if !sim
        .inner
        .opts
        .shippings
        .iter()
        .any(|(s, _)| *s == shipper_id)
    {
        return bad_request(format!("shipper {shipper_id} does not exist"));
    }
    let mut st = sim.state();
    let record = st.next_record;
    st.next_record += 1;
    let Some(order) = st.orders.get_mut(&id) else {
        return not_found(id);
    };
    // The API appends: the same number twice is two trackings.
    if let Some(list) = order.json["trackings"].as_array_mut() {
        list.push(json!({"shipper_id": shipper_id, "tracking_number": number,
                         "tracking_url": format!("https://track.example.cz/{number}")}));
    }
    order.writes.push(Write {
        what: "POST tracking".into(),
        body,
    });
    (StatusCode::OK, axum::Json(json!({"id": record}))).into_response()
}

async fn add_history(
    State(sim): State<RetailysSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorised(&sim, &headers) {
        return r;
    }
    let (id, body) = match (order_id(&id), body_json(&body)) {
        (Ok(i), Ok(b)) => (i, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let kind = body["type"].as_str().unwrap_or_default();
    if !matches!(kind, "order" | "email" | "apps" | "status") {
        return bad_request(format!(
            "type must be one of order, email, apps, status; got {:?}",
            body["type"]
        ));
    }
    if !body["record"].is_object() || body["record"]["name"].as_str().is_none() {
        return bad_request("record {name, status} is required");
    }
    let mut st = sim.state();
    if st.refuse_history > 0 {
        st.refuse_history -= 1;
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            "history is not available right now",
        );
    }
    let record = st.next_record;
    st.next_record += 1;
    let Some(order) = st.orders.get_mut(&id) else {
        return not_found(id);
    };
    let mut entry = body.clone();
    entry["id"] = json!(record);
    order.history.push(entry);
    order.writes.push(Write {
        what: "POST history".into(),
        body,
    });
    (StatusCode::OK, axum::Json(json!({"id": record}))).into_response()
}
