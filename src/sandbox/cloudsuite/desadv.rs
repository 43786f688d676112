//! `POST /proxy/des_adv_xml/delivery/?shop=<n>&user=<n>`: the DESADV
//! (packing slip) proxy, as api-notes/SOURCES.md describes it: an XML
//! `Desadv` with `DesadvHeader` {`DesadvNumber` (unique per message),
//! `DesadvDate` (yyyy-mm-dd), `PlannedDeliveryDate`, `Comment`?,
//! `TransportDetails` {`TransportModeCode` (carrier), `MeansOfTransport`
//! {`Identification` (track & trace)}}} and `DesadvDetail.Packaging.LineItems.Item`
//! {`ItemNum` (order line number), `OrderNum` (ERP order number, CloudSuite
//! reference as fallback), `QuantityValue` (decimal 12,4), `SellerItemID`}.
//! Each message may be sent once; the order's line numbers must be there
//! before it. What the documents leave open (the answer's body, how a repeat
//! or a bad message is refused) is answered DRF-style: 201, or 400
//! `{"detail": …}`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use quick_xml::Reader;
use quick_xml::events::Event;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;

use super::{Change, CloudSuiteSim};

/// A DESADV message as the simulator understood it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Desadv {
    pub number: String,
    pub date: String,
    pub planned_delivery_date: Option<String>,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub items: Vec<DesadvItem>,
    /// Which order it matched (filled in when accepted).
    pub order_id: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DesadvItem {
    pub item_num: String,
    pub order_num: String,
    pub quantity: Decimal,
    pub seller_item_id: Option<String>,
}

/// Reads the XML (quick-xml, entities unescaped) and checks the documented
/// fields: a message without a number, date or item, or with a quantity
/// that is not a decimal(12,4), is refused naming the element.
pub fn parse_desadv(body: &[u8]) -> Result<Desadv, String> {
    // Text is not trimmed while reading: an entity splits a value into
    // several events, and trimming each would eat the spaces around it.
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut text: std::collections::HashMap<String, String> = Default::default();
    let mut items: Vec<std::collections::HashMap<String, String>> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if path.is_empty() && name != "Desadv" {
                    return Err(format!("the root element is <{name}>, not <Desadv>"));
                }
                if name == "Item" {
                    items.push(Default::default());
                }
                path.push(name);
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Empty(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if path.is_empty() {
                    return Err(format!("the root element is <{name}/>, not <Desadv>"));
                }
            }
            Ok(Event::Text(t)) => {
                let value = t
                    .decode()
                    .map_err(|e| format!("unreadable text: {e}"))
                    .and_then(|s| {
                        quick_xml::escape::unescape(&s)
                            .map(|u| u.into_owned())
                            .map_err(|e| format!("bad entity: {e}"))
                    })?;
                append(&path, &mut text, &mut items, &value);
            }
            Ok(Event::CData(t)) => {
                let value = String::from_utf8_lossy(&t).into_owned();
                append(&path, &mut text, &mut items, &value);
            }
            Ok(Event::GeneralRef(r)) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let value = quick_xml::escape::unescape(&format!("&{name};"))
                    .map(|u| u.into_owned())
                    .map_err(|e| format!("bad entity &{name};: {e}"))?;
                append(&path, &mut text, &mut items, &value);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("not well-formed XML: {e}")),
        }
        buf.clear();
    }
    if !path.is_empty() {
        return Err(format!(
            "not well-formed XML: <{}> is not closed",
            path.join("/")
        ));
    }
    for v in text
        .values_mut()
        .chain(items.iter_mut().flat_map(|i| i.values_mut()))
    {
        *v = v.trim().to_string();
    }
    let header = |name: &str| text.get(&format!("Desadv/DesadvHeader/{name}")).cloned();
    let number = header("DesadvNumber")
        .filter(|n| !n.trim().is_empty())
        .ok_or("DesadvHeader/DesadvNumber is required")?;
    let date = header("DesadvDate").ok_or("DesadvHeader/DesadvDate is required")?;
    check_date("DesadvDate", &date)?;
    let planned = header("PlannedDeliveryDate");
    if let Some(p) = &planned {
        check_date("PlannedDeliveryDate", p)?;
    }
    let carrier = header("TransportDetails/TransportModeCode");
    let tracking = header("TransportDetails/MeansOfTransport/Identification");
    if items.is_empty() {
        return Err("DesadvDetail/Packaging/LineItems has no Item".into());
    }
    let mut parsed = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| {
            item.get(name)
                .filter(|v| !v.trim().is_empty())
                .cloned()
                .ok_or_else(|| format!("Item {}: {name} is required", i + 1))
        };
        let quantity = field("QuantityValue")?;
        parsed.push(DesadvItem {
            item_num: field("ItemNum")?,
            order_num: field("OrderNum")?,
            quantity: check_quantity(i + 1, &quantity)?,
            seller_item_id: item.get("SellerItemID").cloned(),
        });
    }
    Ok(Desadv {
        number,
        date,
        planned_delivery_date: planned,
        carrier,
        tracking,
        items: parsed,
        order_id: None,
    })
}

fn append(
    path: &[String],
    text: &mut std::collections::HashMap<String, String>,
    items: &mut [std::collections::HashMap<String, String>],
    value: &str,
) {
    let joined = path.join("/");
    if let Some(rest) = joined.strip_prefix("Desadv/DesadvDetail/Packaging/LineItems/Item/") {
        if let Some(item) = items.last_mut() {
            item.entry(rest.to_string()).or_default().push_str(value);
        }
    } else {
        text.entry(joined).or_default().push_str(value);
    }
}

fn check_date(name: &str, value: &str) -> Result<(), String> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| format!("DesadvHeader/{name}: {value:?} is not a date (yyyy-mm-dd)"))
}

/// decimal(12,4): at most 12 digits, 4 of them after the point; above zero.
fn check_quantity(item: usize, value: &str) -> Result<Decimal, String> {
    let bad = || format!("Item {item}: QuantityValue {value:?} is not a decimal(12,4) above zero");
    let d: Decimal = value.trim().parse().map_err(|_| bad())?;
    let d = d.normalize();
    let digits = d.abs().mantissa().to_string().len() as u32;
    if d <= Decimal::ZERO || d.scale() > 4 || digits.max(d.scale() + 1) > 12 {
        return Err(bad());
    }
    Ok(d)
}

fn refuse(detail: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"detail": detail})),
    )
        .into_response()
}

pub(super) async fn delivery(
    State(sim): State<CloudSuiteSim>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return super::api::method_not_allowed(&method);
    }
    if let Some(denied) = super::api::unauthenticated(&sim, &headers) {
        return denied;
    }
    let params = crate::sandbox::form_pairs(query.as_deref().unwrap_or("").as_bytes());
    let param = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    let opts = sim.options();
    for (name, expected) in [("shop", opts.proxy_shop), ("user", opts.proxy_user)] {
        match param(name).map(|v| v.parse::<u64>()) {
            Some(Ok(n)) if n == expected => {}
            Some(_) => return refuse(format!("{name}: not a {name} of this customer")),
            None => return refuse(format!("{name}: this query parameter is required")),
        }
    }
    let mut desadv = match parse_desadv(&body) {
        Ok(d) => d,
        Err(e) => return refuse(e),
    };
    let now = sim.now_local();
    let mut st = sim.state();
    if st.desadvs.iter().any(|d| d.number == desadv.number) {
        st.desadv_repeats += 1;
        return refuse(format!(
            "DesadvNumber {}: this delivery was already received",
            desadv.number
        ));
    }
    // Every item must name an order (ERP number, else reference) and one of
    // its lines by the line number the order confirmation gave it.
    let mut order_id = None;
    for (i, item) in desadv.items.iter().enumerate() {
        let found = st
            .orders
            .values()
            .find(|o| o.erp_order_number.as_deref() == Some(item.order_num.as_str()));
        let found = found.or_else(|| st.orders.values().find(|o| o.reference() == item.order_num));
        let Some(order) = found else {
            return refuse(format!(
                "Item {}: OrderNum {:?} matches no order",
                i + 1,
                item.order_num
            ));
        };
        if order_id.is_some_and(|id| id != order.id) {
            return refuse(format!("Item {}: one message, one order", i + 1));
        }
        order_id = Some(order.id);
        if !order.lines.iter().any(|l| {
            l.erp_line_number.map(|n| n.to_string()).as_deref() == Some(item.item_num.as_str())
        }) {
            return refuse(format!(
                "Item {}: ItemNum {:?} is not a line number of order {} (send the order confirmation with its line numbers first)",
                i + 1,
                item.item_num,
                order.reference()
            ));
        }
    }
    desadv.order_id = order_id;
    if let Some(order) = order_id.and_then(|id| st.orders.get_mut(&id)) {
        order.history.push(Change {
            at: now,
            field: "desadv".into(),
            from: None,
            to: Some(desadv.number.clone()),
            via: "DESADV".into(),
        });
    }
    st.desadvs.push(desadv);
    StatusCode::CREATED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Desadv>
  <DesadvHeader>
    <DesadvNumber>48193-1</DesadvNumber>
    <DesadvDate>2024-06-29</DesadvDate>
    <PlannedDeliveryDate>2024-07-01</PlannedDeliveryDate>
    <Comment>first box</Comment>
    <TransportDetails>
      <TransportModeCode>PostNL</TransportModeCode>
      <MeansOfTransport><Identification>3SABC&amp;1</Identification></MeansOfTransport>
    </TransportDetails>
  </DesadvHeader>
  <DesadvDetail><Packaging><LineItems>
    <Item><ItemNum>11</ItemNum><OrderNum>123456789</OrderNum>
          <QuantityValue>1.0000</QuantityValue><SellerItemID>124_STUK</SellerItemID></Item>
    <Item><ItemNum>22</ItemNum><OrderNum>123456789</OrderNum><QuantityValue>0.530</QuantityValue></Item>
  </LineItems></Packaging></DesadvDetail>
</Desadv>"#;

    #[test]
    fn a_documented_message_is_read() {
        let d = parse_desadv(GOOD.as_bytes()).unwrap();
        assert_eq!(d.number, "48193-1");
        assert_eq!(d.carrier.as_deref(), Some("PostNL"));
        assert_eq!(d.tracking.as_deref(), Some("3SABC&1"));
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items[1].quantity, "0.53".parse().unwrap());
        assert_eq!(d.items[0].seller_item_id.as_deref(), Some("124_STUK"));
    }

    #[test]
    fn what_the_documents_require_is_checked_by_name() {
        for (from, to, named) in [
            ("<DesadvNumber>48193-1</DesadvNumber>", "", "DesadvNumber"),
            ("2024-06-29", "29-06-2024", "DesadvDate"),
            ("<ItemNum>11</ItemNum>", "", "Item 1: ItemNum"),
            ("<OrderNum>123456789</OrderNum>\n", "", "Item 1: OrderNum"),
            ("1.0000", "1.00001", "QuantityValue"),
            ("0.530", "1234567890123", "QuantityValue"),
            ("1.0000", "-1", "QuantityValue"),
            ("<Desadv>", "<Order>", "<Order>"),
            ("</Desadv>", "", "not closed"),
        ] {
            let bad = GOOD.replacen(from, to, 1);
            let err = parse_desadv(bad.as_bytes()).unwrap_err();
            assert!(err.contains(named), "{from} -> {to}: {err}");
        }
    }
}
