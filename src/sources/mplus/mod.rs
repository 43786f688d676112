//! MplusKASSA (Dutch POS), SOAP 1.1 over HTTP, `ident`/`secret` in the URL.
//! Read: `getOrders` from `syncMarker = stored + 1` (inclusive lower bound),
//! `syncMarkerLimit = page_size`, answers unsorted, so the cursor is the
//! largest marker of the batch; read until an empty list, or a short batch
//! of nothing but echoes ([`Walk::at_head`]), or until [`WalkGuard`] stops
//! a batch that repeats. Each `<order>` is parsed on
//! its own: a bad one is parked, the batch flows. Every change bumps
//! an order's marker, our own write-backs included: the echo comes back and
//! the ledger's content hash tells it from a real change.
//! Write-back: the ERP number into `reference` (getOrder → updateOrder with
//! the counters just read, again on ORDER-HAS-CHANGED) and `deliverOrderV2`
//! for shipped lines. The secret is in every URL, so no URL of this source is
//! ever put in a message: errors name the operation and the source.

pub(crate) mod config;
#[cfg(test)]
mod fuzz_tests;
mod map;
pub mod soap;
#[cfg(test)]
mod vendor_examples;
pub mod wire;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::walk::WalkGuard;
use super::{Page, Window, WriteBack};
use crate::config::{Config, ConfigError, MplusSettings, MplusStart, SourceConfig};
use crate::http::{Endpoint, Failure};
use crate::model::CountryMap;
use crate::model::convert::from_scaled;
use crate::poll::Known;
use crate::secret::Secret;
use crate::store::{ErpShipment, IncomingOrder};
use map::MapContext;
use wire::NAMESPACE;

/// How many times a reference write reads and writes again when the till
/// keeps editing the order in between.
const UPDATE_ATTEMPTS: u32 = 5;

pub struct Mplus {
    name: String,
    base: String,
    ident: String,
    secret: Secret,
    pub(super) endpoint: Endpoint,
    start: MplusStart,
    write_reference: bool,
    page_size: u32,
    countries: CountryMap,
}

/// Where a walk is: the marker of the last order recorded (or to be
/// recorded with the page just returned).
pub struct Walk {
    cursor: Option<i64>,
    live: bool,
    from: Option<wire::SoapDate>,
    through: Option<wire::SoapDate>,
    /// Ends a walk whose batches repeat or never end; counts orders that
    /// cannot be keyed.
    pub(super) guard: WalkGuard,
    done: bool,
    /// A live walk whose last batch was short of `syncMarkerLimit`: the till
    /// held no more orders above the marker when it answered (see
    /// [`Walk::at_head`]).
    at_head: bool,
}

impl Walk {
    /// Whether the batch just returned was a live walk's short batch (fewer
    /// orders than `syncMarkerLimit`): the till held no more above the
    /// marker when it answered, so a further `getOrders` can only return
    /// changes made since. The poll ends the walk there when the batch held
    /// nothing new to the ledger, the echoes of our own write-backs (every
    /// write bumps the marker), instead of chasing the next echoes until a
    /// batch comes back empty; the next poll reads on from the cursor.
    /// (A till that capped its answers below `syncMarkerLimit` would make a
    /// batch of echoes end a walk with more behind it: nothing is lost, the
    /// cursor is stored with the batch and the rest waits for the next poll;
    /// a batch with anything new goes on either way.)
    pub fn at_head(&self) -> bool {
        self.at_head
    }
}

/// One getOrders answer read order by order.
#[derive(Debug)]
pub struct Batch {
    pub orders: Vec<IncomingOrder>,
    /// The largest marker among `orders`.
    pub max: i64,
    /// Orders that cannot be keyed: their marker when readable, and why.
    pub unkeyed: Vec<(Option<i64>, String)>,
}

impl Mplus {
    pub fn new(
        config: &Config,
        source: &SourceConfig,
        settings: &MplusSettings,
    ) -> Result<Mplus, ConfigError> {
        let prefix = format!("source {}", source.name);
        let secret = settings.secret.load(&format!("{prefix}: secret"))?;
        let endpoint = Endpoint::for_source(config, source)?;
        Ok(Mplus {
            name: source.name.clone(),
            base: source.base_url.clone(),
            ident: settings.ident.clone(),
            secret,
            endpoint,
            start: settings.start,
            write_reference: settings.write_reference,
            page_size: source.page_size,
            countries: source.country_map.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn writes_accepted(&self) -> bool {
        self.write_reference
    }

    /// One SOAP call; the answer's body text. The URL (with the secret) is
    /// built here and handed to the Endpoint, whose messages drop the query.
    async fn call(&self, operation: &str, envelope: String) -> Result<String, Failure> {
        let mut url = reqwest::Url::parse(&format!("{}/", self.base))
            .map_err(|_| Failure::permanent("base_url is not a valid URL"))?;
        url.query_pairs_mut()
            .append_pair("ident", &self.ident)
            .append_pair("secret", self.secret.expose());
        let request = self
            .endpoint
            .client()
            .post(url)
            .header("SOAPAction", operation)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(envelope);
        let reply = self
            .endpoint
            .exchange(request)
            .await
            .map_err(|f| f.context(&format!("MplusKASSA {operation}")))?;
        // Lossless: a byte that is not UTF-8 keeps its own mark, so two ids
        // that differ only there stay two orders (and such an order parks).
        let (body, _) = crate::sources::list::decode_text(&reply.body);
        if (200..300).contains(&reply.status) {
            return Ok(body);
        }
        // SOAP 1.1 sends faults with HTTP 500: the fault says more than the status.
        if matches!(reply.status, 401 | 403) {
            return Err(Failure::Retryable {
                message: format!(
                    "MplusKASSA refused ident {:?} and the secret ({operation} answered {}); check ident and secret_file/secret_env",
                    self.ident, reply.status
                ),
                retry_after: None,
                status: Some(reply.status),
            });
        }
        if let Some(fault) = soap::parse_fault(&body) {
            return Err(soap::fault_failure(operation, &fault));
        }
        Err(crate::http::status_failure(&reply).context(&format!("MplusKASSA {operation}")))
    }

    async fn get_order(&self, order_id: &str) -> Result<(String, wire::Order), Failure> {
        let op = wire::GetOrder {
            xmlns: NAMESPACE.into(),
            order_id: order_id.to_string(),
        };
        let body = self
            .call("getOrder", soap::envelope("getOrder", &op)?)
            .await?;
        let answer: wire::GetOrderResponse = soap::parse_answer("getOrder", &body)?;
        match (answer.result.as_str(), answer.order) {
            ("GET-ORDER-RESULT-OK", Some(order)) => Ok((body, order)),
            ("GET-ORDER-RESULT-NOT-FOUND", _) => Err(Failure::permanent(format!(
                "MplusKASSA has no order {order_id} (GET-ORDER-RESULT-NOT-FOUND)"
            ))),
            (other, _) => Err(Failure::retry(format!(
                "MplusKASSA getOrder {order_id} answered {other} without an order"
            ))),
        }
    }

    async fn current_order_marker(&self) -> Result<i64, Failure> {
        let op = wire::GetCurrentSyncMarkersV2 {
            xmlns: NAMESPACE.into(),
        };
        let body = self
            .call(
                "getCurrentSyncMarkersV2",
                soap::envelope("getCurrentSyncMarkersV2", &op)?,
            )
            .await?;
        let answer: wire::GetCurrentSyncMarkersV2Response =
            soap::parse_answer("getCurrentSyncMarkersV2", &body)?;
        Ok(answer.order_sync_marker)
    }

    // --- reading ----------------------------------------------------------

    pub fn begin(&self, window: Window) -> Walk {
        let parse = |c: Option<String>| c.and_then(|c| c.parse::<i64>().ok());
        let guard = WalkGuard::new(&self.name, self.page_size);
        match window {
            Window::Live { cursor, .. } => Walk {
                cursor: parse(cursor),
                live: true,
                from: None,
                through: None,
                guard,
                done: false,
                at_head: false,
            },
            // Backfill reads all history from marker 1 within the financial
            // dates, with its own cursor so an interrupted run resumes.
            Window::Backfill {
                since,
                until,
                cursor,
            } => Walk {
                cursor: Some(parse(cursor).unwrap_or(0)),
                live: false,
                from: Some(financial_date(since)),
                through: until.map(financial_date),
                guard,
                done: false,
                at_head: false,
            },
            // Every order of the window, from the first marker: the till
            // lists them all, the ledger filters nothing out.
            Window::Listing { since, until } => Walk {
                cursor: Some(0),
                live: false,
                from: Some(financial_date(since)),
                through: until.map(financial_date),
                guard,
                done: false,
                at_head: false,
            },
        }
    }

    pub async fn next_page(
        &self,
        walk: &mut Walk,
        _known: &Known,
    ) -> Result<Option<Page>, Failure> {
        if walk.done {
            return Ok(None);
        }
        let cursor = match walk.cursor {
            Some(c) => c,
            None if walk.live && self.start == MplusStart::Now => {
                // First poll of a new source with start = "now": begin at
                // the head, recorded at once so history is never replayed.
                let head = self.current_order_marker().await?;
                walk.cursor = Some(head);
                return Ok(Some(Page {
                    orders: Vec::new(),
                    cursor: Some(head.to_string()),
                    unchanged: Vec::new(),
                }));
            }
            None => 0,
        };
        let body = self
            .call(
                "getOrders",
                get_orders_envelope(cursor, self.page_size, walk)?,
            )
            .await?;
        let Batch {
            orders,
            max,
            unkeyed,
        } = self.parse_orders(&body)?;
        if orders.is_empty() && unkeyed.is_empty() {
            walk.done = true;
            return Ok(None);
        }
        // An order changed during the walk comes back with a new marker:
        // the marker is part of what makes a batch the same one again.
        let listed: Vec<String> = orders
            .iter()
            .map(|o| format!("{}@{}", o.external_id, o.version.as_deref().unwrap_or("")))
            .chain(unkeyed.iter().map(|(_, why)| why.clone()))
            .collect();
        let batch = format!("the batch from syncMarker {}", cursor + 1);
        if !walk
            .guard
            .admit_page(&batch, listed.iter().map(String::as_str))
        {
            walk.done = true;
            return Ok(None);
        }
        if max <= cursor && unkeyed.is_empty() {
            // Nothing above the bound we asked for: asking again would
            // return the same batch forever.
            tracing::warn!(source = %self.name, cursor, "getOrders returned only orders at or below the requested syncMarker; stopping this walk");
            walk.done = true;
        }
        let mut next = max.max(cursor);
        if !unkeyed.is_empty() {
            // The cursor stops just below the first order that cannot be
            // keyed (or stays, when not even its marker can be read) and the
            // walk ends: every poll reads that order again until it is fixed.
            for (marker, why) in &unkeyed {
                next = next.min(marker.map_or(cursor, |m| (m - 1).max(cursor)));
                walk.guard.unkeyed(why.clone());
            }
            walk.done = true;
        }
        walk.cursor = Some(next);
        walk.at_head = walk.live && orders.len() + unkeyed.len() < self.page_size as usize;
        Ok(Some(Page {
            orders,
            cursor: Some(next.to_string()),
            unchanged: Vec::new(),
        }))
    }

    pub fn parse_orders(&self, body: &str) -> Result<Batch, Failure> {
        read_orders(&self.map_context(), body)
    }

    fn map_context(&self) -> MapContext<'_> {
        MapContext {
            source: &self.name,
            countries: &self.countries,
        }
    }

    pub async fn recheck(&self, external_id: &str) -> Result<IncomingOrder, Failure> {
        let (body, _) = self.get_order(external_id).await?;
        let slices = soap::order_elements(&body, "getOrderResponse")
            .map_err(|e| Failure::retry(format!("MplusKASSA getOrder {external_id}: {e}")))?;
        let raw = slices
            .first()
            .ok_or_else(|| Failure::retry(format!("getOrder {external_id} holds no order")))?;
        map_one(&self.map_context(), raw)
            .map(|(_, o)| o)
            .map_err(|(_, why)| Failure::retry(why))
    }

    // --- writing back -------------------------------------------------------

    /// The ERP number into `reference`: getOrder, then updateOrder with the
    /// whole order as just read (counters included). When the till changed
    /// the order in between (ORDER-HAS-CHANGED), read and apply again.
    pub async fn write_accepted(&self, wb: &WriteBack) -> Result<String, Failure> {
        for attempt in 1..=UPDATE_ATTEMPTS {
            let (body, order) = self.get_order(&wb.external_id).await?;
            if order.reference.as_deref().map(str::trim) == Some(wb.erp_order_number.as_str()) {
                return Ok(format!("reference already {}", wb.erp_order_number));
            }
            let update = soap::update_order_body(&body, &wb.erp_order_number).map_err(|e| {
                Failure::permanent(format!(
                    "cannot build updateOrder for {}: {e}",
                    wb.external_id
                ))
            })?;
            let answer = self.call("updateOrder", soap::wrap(&update)).await?;
            let result: wire::ResultResponse = soap::parse_answer("updateOrder", &answer)?;
            match result.result.as_str() {
                "UPDATE-ORDER-RESULT-OK" => {
                    return Ok(format!(
                        "reference = {} (attempt {attempt})",
                        wb.erp_order_number
                    ));
                }
                "UPDATE-ORDER-RESULT-NO-CHANGES" => {
                    return Ok(format!("reference already {}", wb.erp_order_number));
                }
                "UPDATE-ORDER-RESULT-ORDER-HAS-CHANGED" => {
                    tracing::debug!(source = %self.name, order_key = %wb.order_key, attempt, "order changed at the till between read and write; reading again");
                }
                other => return Err(result_failure("updateOrder", other, &result)),
            }
        }
        Err(Failure::retry(format!(
            "the till kept changing the order between our read and write ({UPDATE_ATTEMPTS} attempts, UPDATE-ORDER-RESULT-ORDER-HAS-CHANGED)"
        )))
    }

    /// A sale cancelled in the ERP: `cancelOrder` for the whole order.
    /// After an attempt that may have written, `getOrder` first: an order
    /// whose `cancelState` is COMPLETE is left alone; ALREADY-CANCELLED is
    /// done too. PENDING (the till has not settled it) is asked again later.
    pub async fn write_cancelled(&self, wb: &WriteBack) -> Result<String, Failure> {
        if wb.in_doubt {
            let (_, order) = self.get_order(&wb.external_id).await?;
            if order.cancel_state.as_deref() == Some("ORDER-CANCEL-STATE-COMPLETE") {
                return Ok("already cancelled at the till".into());
            }
        }
        let op = wire::CancelOrder {
            xmlns: NAMESPACE.into(),
            order_id: wb.external_id.clone(),
        };
        let answer = self
            .call("cancelOrder", soap::envelope("cancelOrder", &op)?)
            .await?;
        let result: wire::CancelOrderResponse = soap::parse_answer("cancelOrder", &answer)?;
        let message = result
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        match result.result.as_str() {
            "CANCEL-ORDER-RESULT-OK" => Ok("cancelled at the till (cancelOrder)".into()),
            "CANCEL-ORDER-RESULT-ALREADY-CANCELLED" => Ok("already cancelled at the till".into()),
            "CANCEL-ORDER-RESULT-PENDING" => Err(Failure::retry(format!(
                "MplusKASSA cancelOrder answered CANCEL-ORDER-RESULT-PENDING{message}; asking again"
            ))),
            other => Err(Failure::permanent(format!(
                "MplusKASSA cancelOrder answered {other}{message}: ERP order {} was cancelled, cancel order {} at the till by hand",
                wb.erp_order_number, wb.external_id
            ))),
        }
    }

    /// `deliverOrderV2` for what the ERP shipped and the till does not show
    /// as delivered yet (read first: a repeat after a crash delivers nothing
    /// twice); a shipment without lines delivers the whole order.
    pub async fn write_shipped(
        &self,
        wb: &WriteBack,
        shipment: &ErpShipment,
    ) -> Result<String, Failure> {
        let (_, order) = self.get_order(&wb.external_id).await?;
        if shipment.lines.is_empty() {
            let op = wire::DeliverOrder {
                xmlns: NAMESPACE.into(),
                request: wire::DeliverOrderRequest {
                    order_id: wb.external_id.clone(),
                },
            };
            let answer = self
                .call("deliverOrder", soap::envelope("deliverOrder", &op)?)
                .await?;
            let result: wire::ResultResponse = soap::parse_answer("deliverOrder", &answer)?;
            return match result.result.as_str() {
                "DELIVER-ORDER-RESULT-OK" => Ok("whole order delivered (deliverOrder)".into()),
                "DELIVER-ORDER-RESULT-ALREADY-DELIVERED" => Ok("already delivered".into()),
                other => Err(result_failure("deliverOrder", other, &result)),
            };
        }
        let lines = lines_to_deliver(&order, shipment, &wb.shipped_before)?;
        if lines.is_empty() {
            return Ok("already delivered".into());
        }
        let count = lines.len();
        let op = wire::DeliverOrderV2 {
            xmlns: NAMESPACE.into(),
            order_delivery: wire::OrderDelivery {
                order_id: wb.external_id.clone(),
                line_list: wire::DeliveryLineList { line: lines },
            },
        };
        let answer = self
            .call("deliverOrderV2", soap::envelope("deliverOrderV2", &op)?)
            .await?;
        let result: wire::ResultResponse = soap::parse_answer("deliverOrderV2", &answer)?;
        match result.result.as_str() {
            "DELIVER-ORDER-V2-RESULT-OK" => Ok(format!(
                "{count} line(s) delivered (deliverOrderV2{})",
                result
                    .packing_slip_id
                    .map(|p| format!(", packing slip {p}"))
                    .unwrap_or_default()
            )),
            "DELIVER-ORDER-V2-RESULT-ALREADY-DELIVERED" => Ok("already delivered".into()),
            other => Err(result_failure("deliverOrderV2", other, &result)),
        }
    }

    pub async fn check(&self) -> Result<String, Failure> {
        let marker = self.current_order_marker().await?;
        let host = reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        Ok(format!(
            "MplusKASSA at {host} answered; order sync marker {marker}"
        ))
    }
}

/// The `getOrders` request of one page: orders from `cursor + 1` (the
/// marker is an inclusive lower bound), at most `page_size`, with lines.
fn get_orders_envelope(cursor: i64, page_size: u32, walk: &Walk) -> Result<String, Failure> {
    let op = wire::GetOrders {
        xmlns: NAMESPACE.into(),
        request: wire::GetOrdersRequest {
            sync_marker: cursor + 1,
            sync_marker_limit: Some(page_size),
            from_financial_date: walk.from.clone(),
            through_financial_date: walk.through.clone(),
            article_plu_numbers: Some(wire::Empty {}),
            article_barcodes: Some(wire::Empty {}),
            include_line_list: Some(true),
        },
    };
    soap::envelope("getOrders", &op)
}

/// The orders of a getOrders answer, each `<order>` read on its own, with
/// two-letter countries only (no `country_map`; clients outside the engine).
pub fn parse_orders(source: &str, body: &str) -> Result<Batch, Failure> {
    read_orders(
        &MapContext {
            source,
            countries: CountryMap::none(),
        },
        body,
    )
}

fn read_orders(ctx: &MapContext<'_>, body: &str) -> Result<Batch, Failure> {
    if let Some(fault) = soap::parse_fault(body) {
        return Err(soap::fault_failure("getOrders", &fault).context(ctx.source));
    }
    let slices = soap::order_elements(body, "getOrdersResponse")
        .map_err(|e| Failure::retry(format!("MplusKASSA getOrders: {e}")))?;
    let mut batch = Batch {
        orders: Vec::with_capacity(slices.len()),
        max: 0,
        unkeyed: Vec::new(),
    };
    for raw in slices {
        match map_one(ctx, raw) {
            Ok((marker, order)) => {
                batch.max = batch.max.max(marker);
                batch.orders.push(order);
            }
            Err((marker, why)) => batch
                .unkeyed
                .push((marker, format!("getOrders returned {why}"))),
        }
    }
    Ok(batch)
}

/// Maps one `<order>` element as [`map::incoming`] does, a panic in it
/// contained by [`super::list::isolated`]: the order is parked under the id
/// and marker its text shows, or set apart as unkeyed when it shows none.
fn map_one(ctx: &MapContext<'_>, raw: &str) -> Result<(i64, IncomingOrder), (Option<i64>, String)> {
    super::list::isolated(
        || map::incoming(ctx, raw),
        |why| {
            let who = soap::identity(raw);
            match (who.order_id, who.sync_marker) {
                (Some(id), Some(marker)) => Ok((marker, super::list::parked(&id, raw, why))),
                (_, marker) => Err((marker, why)),
            }
        },
    )
}

fn result_failure(operation: &str, result: &str, answer: &wire::ResultResponse) -> Failure {
    let message = format!(
        "MplusKASSA {operation} answered {result}{}",
        answer
            .error_message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    // FAILED and NOT-FOUND are the till's answer to this request: asking
    // again will not change it.
    Failure::permanent(message)
}

/// Per shipped line: what the ERP shipped, capped by what the till still
/// has open (ordered − cancelled − delivered).
/// What this shipment still has to deliver per line. Earlier shipments of
/// the order ran before it (`before`), so after this one the till should
/// show `before + shipped` delivered; whatever it already shows (a repeat
/// after a crash, or a delivery by hand) is not delivered again.
fn lines_to_deliver(
    order: &wire::Order,
    shipment: &ErpShipment,
    before: &[crate::store::ShippedLine],
) -> Result<Vec<wire::DeliveryLine>, Failure> {
    let mut out = Vec::new();
    for shipped in &shipment.lines {
        let Some(line) = find_line(&order.line_list, &shipped.source_line_id) else {
            return Err(Failure::permanent(format!(
                "the ERP shipped line {} which the till's order does not have",
                shipped.source_line_id
            )));
        };
        let d = &line.data;
        let scaled = |v, p| from_scaled(v, p).map_err(Failure::permanent);
        let delivered = scaled(d.delivered_quantity, d.delivered_decimal_places)?;
        let open = scaled(d.quantity, d.decimal_places)?
            - scaled(d.cancelled_quantity, d.cancelled_decimal_places)?
            - delivered;
        let earlier = before
            .iter()
            .filter(|b| b.source_line_id == shipped.source_line_id)
            .map(|b| b.quantity)
            .sum::<Decimal>();
        let owed = (earlier + shipped.quantity - delivered).min(shipped.quantity);
        let quantity = owed.min(open);
        if quantity <= Decimal::ZERO {
            continue;
        }
        let (value, places) = to_scaled(quantity)?;
        out.push(wire::DeliveryLine {
            line_id: line.line_id.clone(),
            quantity: value,
            decimal_places: places,
        });
    }
    Ok(out)
}

fn find_line<'a>(list: &'a wire::LineList, id: &str) -> Option<&'a wire::Line> {
    list.line.iter().find_map(|l| {
        if l.line_id == id {
            Some(l)
        } else {
            l.preparation_list.as_ref().and_then(|p| find_line(p, id))
        }
    })
}

/// A decimal as MplusKASSA's integer + `decimalPlaces` (0.530 → 530, 3).
pub fn to_scaled(q: Decimal) -> Result<(i64, u32), Failure> {
    let n = q.normalize();
    let value = i64::try_from(n.mantissa())
        .map_err(|_| Failure::permanent(format!("quantity {q} is too large for MplusKASSA")))?;
    Ok((value, n.scale()))
}

/// The financial day of a UTC instant at the till (Europe/Amsterdam).
fn financial_date(t: DateTime<Utc>) -> wire::SoapDate {
    use chrono::Datelike;
    let local = t.with_timezone(&chrono_tz::Europe::Amsterdam).date_naive();
    wire::SoapDate {
        day: local.day(),
        mon: local.month(),
        year: local.year(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_scale_both_ways() {
        let q: Decimal = "0.530".parse().unwrap();
        assert_eq!(to_scaled(q).unwrap(), (53, 2));
        assert_eq!(to_scaled(Decimal::from(2)).unwrap(), (2, 0));
        assert_eq!(from_scaled(53, 2).unwrap(), q.normalize());
    }

    #[test]
    fn financial_dates_are_amsterdam_days() {
        let t: DateTime<Utc> = "2024-06-29T22:30:00Z".parse().unwrap();
        let d = financial_date(t);
        assert_eq!((d.year, d.mon, d.day), (2024, 6, 30));
    }

    fn answer(orders: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="urn:mplusqapi"><SOAP-ENV:Body><ns1:getOrdersResponse><ns1:orderList>{orders}</ns1:orderList></ns1:getOrdersResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        )
    }

    fn order(id: &str, marker: i64) -> String {
        format!(
            "<ns1:order><ns1:orderId>{id}</ns1:orderId><ns1:syncMarker>{marker}</ns1:syncMarker><ns1:financialDate><ns1:day>1</ns1:day><ns1:mon>7</ns1:mon><ns1:year>2024</ns1:year></ns1:financialDate><ns1:totalInclAmount>100</ns1:totalInclAmount><ns1:totalExclAmount>83</ns1:totalExclAmount><ns1:lineList><ns1:line><ns1:lineId>{id}-1</ns1:lineId><ns1:articleNumber>1</ns1:articleNumber><ns1:data><ns1:quantity>1</ns1:quantity><ns1:price>100</ns1:price></ns1:data></ns1:line></ns1:lineList></ns1:order>"
        )
    }

    #[test]
    fn unsorted_batch_gives_the_largest_marker() {
        let body = answer(&format!(
            "{}{}{}",
            order("A", 1),
            order("B", 4),
            order("C", 3)
        ));
        let Batch { orders, max, .. } = parse_orders("till", &body).unwrap();
        assert_eq!(max, 4);
        let ids: Vec<_> = orders.iter().map(|o| o.external_id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "C"]);
        assert!(orders.iter().all(|o| o.mapped.is_ok()));
        assert!(parse_orders("till", &answer("")).unwrap().orders.is_empty());
    }

    #[test]
    fn bad_orders_are_parked_and_unkeyable_ones_set_apart() {
        let bad = order("B", 4).replace("<ns1:quantity>1<", "<ns1:quantity>x<");
        let entity = order("D", 6).replace("<ns1:lineId>D-1<", "<ns1:lineId>D&foo;1<");
        let body = answer(&format!("{}{bad}{entity}", order("A", 1)));
        let Batch {
            orders,
            max,
            unkeyed,
        } = parse_orders("till", &body).unwrap();
        assert_eq!(max, 6);
        assert!(unkeyed.is_empty());
        assert!(orders[0].mapped.is_ok() && orders[1].mapped.is_err());
        let reason = orders[2].mapped.as_ref().unwrap_err();
        assert_eq!(orders[2].external_id, "D");
        assert!(
            reason.contains("lineList.line.lineId: undefined entity &foo;"),
            "{reason}"
        );
        let nokey = order("C", 5).replace("<ns1:orderId>C</ns1:orderId>", "");
        let batch = parse_orders("till", &answer(&format!("{}{nokey}", order("A", 1)))).unwrap();
        assert_eq!(batch.orders.len(), 1);
        assert_eq!(batch.unkeyed.len(), 1);
        assert_eq!(batch.unkeyed[0].0, Some(5), "its marker is still known");
        // A truncated answer is retried, not read as "no orders".
        let cut = answer(&order("A", 1));
        let e = parse_orders("till", &cut[..cut.len() / 2]).unwrap_err();
        assert!(matches!(e, Failure::Retryable { .. }), "{e:?}");
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::*;
    use crate::store::ShippedLine;

    /// One line of 5 pieces, `delivered` of them delivered at the till.
    fn order(delivered: i64) -> wire::Order {
        wire::Order {
            order_id: "o1".into(),
            line_list: wire::LineList {
                line: vec![wire::Line {
                    line_id: "L1".into(),
                    article_number: 301,
                    data: wire::LineData {
                        quantity: 5,
                        delivered_quantity: delivered,
                        ..Default::default()
                    },
                    ..Default::default()
                }],
            },
            ..Default::default()
        }
    }

    fn shipment(qty: i64) -> ErpShipment {
        ErpShipment {
            order_key: "till:o1".into(),
            erp_order_number: None,
            shipped_at: None,
            carrier: None,
            tracking_number: Some(format!("T{qty}")),
            tracking_url: None,
            erp_shipment_id: None,
            lines: vec![ShippedLine {
                source_line_id: "L1".into(),
                quantity: Decimal::from(qty),
                erp_line_number: None,
            }],
        }
    }

    fn earlier(qty: i64) -> Vec<ShippedLine> {
        vec![ShippedLine {
            source_line_id: "L1".into(),
            quantity: Decimal::from(qty),
            erp_line_number: None,
        }]
    }

    fn owed(delivered: i64, before: &[ShippedLine], qty: i64) -> i64 {
        lines_to_deliver(&order(delivered), &shipment(qty), before)
            .unwrap()
            .iter()
            .map(|l| l.quantity)
            .sum()
    }

    #[test]
    fn a_second_partial_shipment_delivers_its_own_quantity() {
        // 2 of 5 went with the first shipment; the second ships 1.
        assert_eq!(owed(2, &earlier(2), 1), 1);
    }

    #[test]
    fn a_repeat_after_a_crash_delivers_nothing_again() {
        // The second shipment's delivery was applied (3 delivered), then the
        // process died before recording it: the retry owes nothing, although
        // the line still has 2 open.
        assert_eq!(owed(3, &earlier(2), 1), 0);
        // Same for the first shipment.
        assert_eq!(owed(2, &[], 2), 0);
    }

    #[test]
    fn never_more_than_the_line_has_open() {
        assert_eq!(owed(4, &earlier(4), 3), 1);
    }
}
