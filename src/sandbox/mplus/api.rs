//! The SOAP endpoint: `POST /?ident=…&secret=…` with `SOAPAction`, answers
//! in `SOAP-ENV:Envelope`s, faults with HTTP 500, business outcomes as
//! `result` enums in HTTP 200. A plain GET answers 405, as the real
//! endpoint does (clients use that as a liveness check).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rand::seq::SliceRandom;
use rust_decimal::Decimal;
use serde::Serialize;

use super::{MplusSim, State as SimState};
use crate::sandbox::faults::inject;
use crate::sources::mplus::{soap, wire};

pub(super) fn router(sim: MplusSim) -> Router {
    let faults = sim.inner.faults.clone();
    Router::new()
        .route("/", any(endpoint))
        .layer(from_fn_with_state(faults, inject))
        .with_state(sim)
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn answer<T: Serialize>(name: &str, value: &T) -> Response {
    match quick_xml::se::to_string_with_root(name, value) {
        Ok(body) => xml(StatusCode::OK, soap::wrap(&body)),
        Err(e) => fault("SOAP-ENV:Server", &format!("cannot serialize: {e}")),
    }
}

fn fault(code: &str, text: &str) -> Response {
    let body = format!(
        "<SOAP-ENV:Fault><faultcode>{}</faultcode><faultstring>{}</faultstring></SOAP-ENV:Fault>",
        quick_xml::escape::escape(code),
        quick_xml::escape::escape(text)
    );
    xml(StatusCode::INTERNAL_SERVER_ERROR, soap::wrap(&body))
}

fn client_fault(text: &str) -> Response {
    fault("SOAP-ENV:Client", text)
}

fn result(name: &str, result: &str, message: Option<String>) -> Response {
    answer(
        name,
        &wire::ResultResponse {
            xmlns: wire::NAMESPACE.into(),
            result: result.into(),
            error_message: message,
            packing_slip_id: None,
        },
    )
}

async fn endpoint(
    State(sim): State<MplusSim>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
    }
    let opts = sim.options();
    if query.get("ident") != Some(&opts.ident) || query.get("secret") != Some(&opts.secret) {
        return client_fault("Authentication failed: unknown ident or wrong secret");
    }
    let action = headers
        .get("SOAPAction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    match action.as_str() {
        "getOrders" => get_orders(&sim, &body),
        "getOrder" => get_order(&sim, &body),
        "getCurrentSyncMarkersV2" => answer(
            "getCurrentSyncMarkersV2Response",
            &wire::GetCurrentSyncMarkersV2Response {
                xmlns: wire::NAMESPACE.into(),
                order_sync_marker: sim.state().marker,
                packing_slip_sync_marker: Some(0),
                invoice_sync_marker: Some(0),
            },
        ),
        "updateOrder" => update_order(&sim, &body),
        "deliverOrderV2" => deliver_v2(&sim, &body),
        "deliverOrder" => deliver_all(&sim, &body),
        "cancelOrder" => cancel_order(&sim, &body),
        "" => client_fault("SOAPAction header missing"),
        other => client_fault(&format!("Method '{other}' not implemented")),
    }
}

/// The operation element of a request, or the text of the Client fault.
fn parse<T: serde::de::DeserializeOwned>(op: &str, body: &str) -> Result<T, String> {
    soap::parse_answer::<T>(op, body)
        .map_err(|e| format!("Validation constraint violation: {}", e.message()))
}

/// One `<order>` as the till writes it; a poisoned order gets a quantity
/// that is not an integer.
fn order_xml(o: &wire::Order) -> String {
    let text = quick_xml::se::to_string_with_root("order", o).unwrap_or_default();
    if o.order_type.as_deref() == Some("POISON") {
        text.replacen("<quantity>", "<quantity>2,", 1)
    } else {
        text
    }
}

fn get_orders(sim: &MplusSim, body: &str) -> Response {
    let op: wire::GetOrders = match parse("getOrders", body) {
        Ok(op) => op,
        Err(e) => return client_fault(&e),
    };
    let req = op.request;
    // Required by the XSD even when empty: a real gSOAP server refuses the
    // request without them.
    if req.article_plu_numbers.is_none() || req.article_barcodes.is_none() {
        return client_fault(
            "Validation constraint violation: missing element articlePluNumbers/articleBarcodes in GetOrdersRequest",
        );
    }
    let mut st = sim.state();
    st.get_orders_calls += 1;
    st.requested_markers.push(req.sync_marker);
    let in_dates = |o: &wire::Order| {
        let Some(d) = &o.financial_date else {
            return true;
        };
        let key = |d: &wire::SoapDate| (d.year, d.mon, d.day);
        req.from_financial_date
            .as_ref()
            .is_none_or(|f| key(d) >= key(f))
            && req
                .through_financial_date
                .as_ref()
                .is_none_or(|t| key(d) <= key(t))
    };
    // Fault: a till that ignores the marker answers the first batch forever.
    let from = if sim.inner.faults.get().repeat_page_forever {
        i64::MIN
    } else {
        req.sync_marker
    };
    let mut batch: Vec<wire::Order> = st
        .orders
        .values()
        .filter(|o| o.order.sync_marker >= from && in_dates(&o.order))
        .map(|o| o.order.clone())
        .collect();
    batch.sort_by_key(|o| o.sync_marker);
    batch.truncate(req.sync_marker_limit.unwrap_or(1000).max(1) as usize);
    // The vendor's own example answer is not sorted: neither are we.
    let SimState { rng, .. } = &mut *st;
    batch.shuffle(rng);
    drop(st);
    let mut orders = String::new();
    for mut o in batch {
        if req.include_line_list == Some(false) {
            o.line_list = wire::LineList::default();
        }
        orders.push_str(&order_xml(&o));
    }
    xml(
        StatusCode::OK,
        soap::wrap(&format!(
            "<getOrdersResponse xmlns=\"{}\"><orderList>{orders}</orderList></getOrdersResponse>",
            wire::NAMESPACE
        )),
    )
}

fn get_order(sim: &MplusSim, body: &str) -> Response {
    let op: wire::GetOrder = match parse("getOrder", body) {
        Ok(op) => op,
        Err(e) => return client_fault(&e),
    };
    let order = sim
        .state()
        .orders
        .get(&op.order_id)
        .map(|o| o.order.clone());
    match order {
        Some(o) => xml(
            StatusCode::OK,
            soap::wrap(&format!(
                "<getOrderResponse xmlns=\"{}\"><result>GET-ORDER-RESULT-OK</result>{}</getOrderResponse>",
                wire::NAMESPACE,
                order_xml(&o)
            )),
        ),
        None => answer(
            "getOrderResponse",
            &wire::GetOrderResponse {
                xmlns: wire::NAMESPACE.into(),
                result: "GET-ORDER-RESULT-NOT-FOUND".into(),
                order: None,
            },
        ),
    }
}

/// Whole-order replace under optimistic concurrency: the counters sent must
/// be the current ones. Fields the till manages itself (marker, counters,
/// delivery and cancel state, delivered quantities) are kept.
fn update_order(sim: &MplusSim, body: &str) -> Response {
    const NAME: &str = "updateOrderResponse";
    let op: wire::UpdateOrder = match parse("updateOrder", body) {
        Ok(op) => op,
        Err(e) => return client_fault(&e),
    };
    let incoming = op.order;
    let mut st = sim.state();
    let id = incoming.order_id.clone();
    if st.edits_before_update > 0 && st.orders.contains_key(&id) {
        st.edits_before_update -= 1;
        st.till_edit(&id);
    }
    let Some(current) = st.orders.get(&id).map(|o| o.order.clone()) else {
        return result(NAME, "UPDATE-ORDER-RESULT-NOT-FOUND", None);
    };
    if incoming.change_counter != current.change_counter
        || incoming.version_number != current.version_number
    {
        st.conflicts += 1;
        return result(
            NAME,
            "UPDATE-ORDER-RESULT-ORDER-HAS-CHANGED",
            Some("Order has changed, send up-to-date versionNumber and changeCounter".into()),
        );
    }
    let ids = |o: &wire::Order| -> Vec<String> {
        o.line_list.line.iter().map(|l| l.line_id.clone()).collect()
    };
    if ids(&incoming) != ids(&current) {
        return result(
            NAME,
            "UPDATE-ORDER-RESULT-FAILED",
            Some("lineList does not match the order's lines".into()),
        );
    }
    let mut next = incoming;
    next.sync_marker = current.sync_marker;
    next.change_counter = current.change_counter;
    next.version_number = current.version_number;
    next.delivery_state = current.delivery_state.clone();
    next.cancel_state = current.cancel_state.clone();
    for (n, c) in next.line_list.line.iter_mut().zip(&current.line_list.line) {
        n.data.delivered_quantity = c.data.delivered_quantity;
        n.data.delivered_decimal_places = c.data.delivered_decimal_places;
    }
    if next == current {
        return result(NAME, "UPDATE-ORDER-RESULT-NO-CHANGES", None);
    }
    next.version_number += 1;
    if let Some(o) = st.orders.get_mut(&id) {
        o.order = next;
        o.updates += 1;
    }
    st.bump(&id);
    result(NAME, "UPDATE-ORDER-RESULT-OK", None)
}

fn scaled(v: i64, p: u32) -> Decimal {
    Decimal::new(v, p)
}

/// Applies deliveries; `Ok(false)` when every requested line was already
/// fully delivered.
fn deliver(st: &mut SimState, id: &str, lines: &[(String, Decimal)]) -> Result<bool, String> {
    let Some(o) = st.orders.get_mut(id) else {
        return Err("order not found".into());
    };
    if o.order.cancel_state.as_deref() == Some("ORDER-CANCEL-STATE-COMPLETE") {
        return Err("order is cancelled".into());
    }
    let mut updated = o.order.clone();
    let mut delivered_any = false;
    for (line_id, qty) in lines {
        let Some(l) = updated
            .line_list
            .line
            .iter_mut()
            .find(|l| &l.line_id == line_id)
        else {
            return Err(format!("line {line_id} not found"));
        };
        let d = &mut l.data;
        let open = scaled(d.quantity, d.decimal_places)
            - scaled(d.cancelled_quantity, d.cancelled_decimal_places)
            - scaled(d.delivered_quantity, d.delivered_decimal_places);
        if open.is_zero() {
            continue;
        }
        if *qty > open {
            return Err(format!(
                "line {line_id}: {qty} is more than the {open} still open"
            ));
        }
        let total = (scaled(d.delivered_quantity, d.delivered_decimal_places) + qty).normalize();
        d.delivered_quantity = i64::try_from(total.mantissa()).unwrap_or(i64::MAX);
        d.delivered_decimal_places = total.scale();
        delivered_any = true;
    }
    if !delivered_any {
        return Ok(false);
    }
    let complete = updated.line_list.line.iter().all(|l| {
        let d = &l.data;
        scaled(d.delivered_quantity, d.delivered_decimal_places)
            + scaled(d.cancelled_quantity, d.cancelled_decimal_places)
            >= scaled(d.quantity, d.decimal_places)
    });
    updated.delivery_state = Some(
        if complete {
            "ORDER-DELIVERY-STATE-COMPLETE"
        } else {
            "ORDER-DELIVERY-STATE-PARTIAL"
        }
        .into(),
    );
    o.order = updated;
    o.deliveries += 1;
    st.bump(id);
    Ok(true)
}

fn deliver_v2(sim: &MplusSim, body: &str) -> Response {
    const NAME: &str = "deliverOrderV2Response";
    let op: wire::DeliverOrderV2 = match parse("deliverOrderV2", body) {
        Ok(op) => op,
        Err(e) => return client_fault(&e),
    };
    let d = op.order_delivery;
    let lines: Vec<(String, Decimal)> = d
        .line_list
        .line
        .iter()
        .map(|l| (l.line_id.clone(), scaled(l.quantity, l.decimal_places)))
        .collect();
    let mut st = sim.state();
    match deliver(&mut st, &d.order_id, &lines) {
        Ok(true) => answer(
            NAME,
            &wire::ResultResponse {
                xmlns: wire::NAMESPACE.into(),
                result: "DELIVER-ORDER-V2-RESULT-OK".into(),
                error_message: None,
                packing_slip_id: Some(format!("PS-{}", st.marker)),
            },
        ),
        Ok(false) => result(NAME, "DELIVER-ORDER-V2-RESULT-ALREADY-DELIVERED", None),
        Err(e) => result(NAME, "DELIVER-ORDER-V2-RESULT-FAILED", Some(e)),
    }
}

fn deliver_all(sim: &MplusSim, body: &str) -> Response {
    const NAME: &str = "deliverOrderResponse";
    let op: wire::DeliverOrder = match parse("deliverOrder", body) {
        Ok(op) => op,
        Err(e) => return client_fault(&e),
    };
    let id = op.request.order_id;
    let mut st = sim.state();
    let lines: Vec<(String, Decimal)> = match st.orders.get(&id) {
        Some(o) => o
            .order
            .line_list
            .line
            .iter()
            .map(|l| {
                let d = &l.data;
                let open = scaled(d.quantity, d.decimal_places)
                    - scaled(d.cancelled_quantity, d.cancelled_decimal_places)
                    - scaled(d.delivered_quantity, d.delivered_decimal_places);
                (l.line_id.clone(), open)
            })
            .collect(),
        None => {
            return result(
                NAME,
                "DELIVER-ORDER-RESULT-FAILED",
                Some("order not found".into()),
            );
        }
    };
    match deliver(&mut st, &id, &lines) {
        Ok(true) => result(NAME, "DELIVER-ORDER-RESULT-OK", None),
        Ok(false) => result(NAME, "DELIVER-ORDER-RESULT-ALREADY-DELIVERED", None),
        Err(e) => result(NAME, "DELIVER-ORDER-RESULT-FAILED", Some(e)),
    }
}

/// `cancelOrder`: the whole order. The WSDL's result enum says what comes
/// back; when the till refuses is not documented: the simulator refuses an
/// order with anything delivered (FAILED).
fn cancel_order(sim: &MplusSim, body: &str) -> Response {
    const NAME: &str = "cancelOrderResponse";
    let reply = |result: &str, message: Option<&str>| {
        answer(
            NAME,
            &wire::CancelOrderResponse {
                xmlns: wire::NAMESPACE.into(),
                result: result.into(),
                message: message.map(str::to_string),
            },
        )
    };
    let op: wire::CancelOrder = match parse("cancelOrder", body) {
        Ok(op) => op,
        Err(e) => return client_fault(&e),
    };
    let mut st = sim.state();
    st.cancel_requests += 1;
    let Some(o) = st.orders.get_mut(&op.order_id) else {
        return reply("CANCEL-ORDER-RESULT-NOT-FOUND", None);
    };
    if o.order.cancel_state.as_deref() == Some("ORDER-CANCEL-STATE-COMPLETE") {
        st.cancel_repeats += 1;
        return reply("CANCEL-ORDER-RESULT-ALREADY-CANCELLED", None);
    }
    let delivered = o
        .order
        .line_list
        .line
        .iter()
        .any(|l| l.data.delivered_quantity > 0);
    if delivered {
        return reply(
            "CANCEL-ORDER-RESULT-FAILED",
            Some("order has deliveries and cannot be cancelled"),
        );
    }
    o.order.cancel_state = Some("ORDER-CANCEL-STATE-COMPLETE".into());
    st.bump(&op.order_id);
    reply("CANCEL-ORDER-RESULT-OK", None)
}
