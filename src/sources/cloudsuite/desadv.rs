//! A shipment as a CloudSuite DESADV message (`POST
//! /proxy/des_adv_xml/delivery/?shop=&user=`, api-notes SOURCES.md): a
//! packing slip naming the ERP order (`OrderNum`), each shipped line by the
//! line number ordersync wrote back (`ItemNum`) with its shipped quantity,
//! the carrier and the track & trace code.
//!
//! Once, even across a crash: the `DesadvNumber` is derived from the order
//! key and the ERP shipment's identity, so a retry sends the same number,
//! and the job row marks "sending" before the POST and "sent" after it.
//! CloudSuite takes each number once ("each delivery message may be sent
//! only once"); how it refuses a repeat is not documented, so a refusal
//! (4xx) after an attempt whose answer was lost is taken as "already
//! received". A refusal on a first attempt parks the shipment.

use chrono::NaiveDate;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::Digest;

use super::CloudSuite;
use crate::config::DesadvTarget;
use crate::http::Failure;
use crate::model::convert::json_text;
use crate::sources::WriteBack;
use crate::store::ErpShipment;

const SENDING: &str = "desadv sending";
const SENT: &str = "desadv sent";

/// One `Item` of the message.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The order line's `erp_line_number`.
    pub item_num: String,
    pub quantity: Decimal,
    /// The product key (part number), when the order line names one.
    pub seller_item_id: Option<String>,
}

/// The message's number: the order's CloudSuite id plus a digest of the
/// order key and the shipment's identity, the same on every attempt.
pub fn desadv_number(wb: &WriteBack, shipment: &ErpShipment) -> String {
    let digest =
        sha2::Sha256::digest(format!("{}\n{}", wb.order_key, shipment.job_ref()).as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02X}")).collect();
    format!("{}-{hex}", wb.external_id)
}

/// The shipped lines as items: the shipment's own per-line quantities, or
/// for an ERP that reports none, what is left of each line of `current`
/// (the order as CloudSuite has it) after earlier shipments.
pub fn items(
    wb: &WriteBack,
    shipment: &ErpShipment,
    current: &Value,
) -> Result<Vec<Item>, Failure> {
    let lines: Vec<&Value> = current["order_lines"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let line_of = |source_line_id: &str| {
        lines
            .iter()
            .find(|l| json_text(&l["id"]).as_deref() == Some(source_line_id))
            .copied()
    };
    let number_of = |source_line_id: &str, erp: Option<&str>| -> Result<String, Failure> {
        wb.lines
            .iter()
            .find(|n| n.source_line_id == source_line_id)
            .map(|n| n.erp_line_number.clone())
            .or_else(|| erp.map(str::to_string))
            .ok_or_else(|| {
                Failure::permanent(format!(
                    "DESADV: order line {source_line_id} has no ERP line number to send as ItemNum"
                ))
            })
    };
    let seller = |l: Option<&Value>| {
        l.and_then(|l| l["product"]["key"].as_str())
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    };
    let mut items = Vec::new();
    if !shipment.lines.is_empty() {
        for sl in shipment.lines.iter().filter(|l| l.quantity > Decimal::ZERO) {
            items.push(Item {
                item_num: number_of(&sl.source_line_id, sl.erp_line_number.as_deref())?,
                quantity: sl.quantity,
                seller_item_id: seller(line_of(&sl.source_line_id)),
            });
        }
        return Ok(items);
    }
    for line in lines
        .iter()
        .filter(|l| l["type"].as_str().unwrap_or("line") == "line")
    {
        let Some(id) = json_text(&line["id"]) else {
            continue;
        };
        let ordered = decimal_of(&line["quantity"]).ok_or_else(|| {
            Failure::permanent(format!(
                "DESADV: order line {id} has no readable quantity ({})",
                line["quantity"]
            ))
        })?;
        let before: Decimal = wb
            .shipped_before
            .iter()
            .filter(|s| s.source_line_id == id)
            .map(|s| s.quantity)
            .fold(Decimal::ZERO, |a, q| a.saturating_add(q));
        let left = ordered.saturating_sub(before);
        if left > Decimal::ZERO {
            items.push(Item {
                item_num: number_of(&id, None)?,
                quantity: left,
                seller_item_id: seller(Some(line)),
            });
        }
    }
    Ok(items)
}

fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The XML message. Every value goes through quick-xml's text escaping.
pub fn build_xml(
    number: &str,
    date: NaiveDate,
    erp_order_number: &str,
    shipment: &ErpShipment,
    items: &[Item],
) -> Result<String, Failure> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let fail = |e: std::io::Error| Failure::permanent(format!("DESADV: cannot write the XML: {e}"));
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(fail)?;
    open(&mut w, "Desadv").map_err(fail)?;
    open(&mut w, "DesadvHeader").map_err(fail)?;
    leaf(&mut w, "DesadvNumber", number).map_err(fail)?;
    let day = date.format("%Y-%m-%d").to_string();
    leaf(&mut w, "DesadvDate", &day).map_err(fail)?;
    leaf(&mut w, "PlannedDeliveryDate", &day).map_err(fail)?;
    let carrier = shipment.carrier.as_deref().filter(|c| !c.trim().is_empty());
    let tracking = shipment
        .tracking_number
        .as_deref()
        .filter(|t| !t.trim().is_empty());
    if carrier.is_some() || tracking.is_some() {
        open(&mut w, "TransportDetails").map_err(fail)?;
        if let Some(c) = carrier {
            leaf(&mut w, "TransportModeCode", c).map_err(fail)?;
        }
        if let Some(t) = tracking {
            open(&mut w, "MeansOfTransport").map_err(fail)?;
            leaf(&mut w, "Identification", t).map_err(fail)?;
            close(&mut w, "MeansOfTransport").map_err(fail)?;
        }
        close(&mut w, "TransportDetails").map_err(fail)?;
    }
    close(&mut w, "DesadvHeader").map_err(fail)?;
    open(&mut w, "DesadvDetail").map_err(fail)?;
    open(&mut w, "Packaging").map_err(fail)?;
    open(&mut w, "LineItems").map_err(fail)?;
    for item in items {
        open(&mut w, "Item").map_err(fail)?;
        leaf(&mut w, "ItemNum", &item.item_num).map_err(fail)?;
        leaf(&mut w, "OrderNum", erp_order_number).map_err(fail)?;
        // decimal(12,4)
        let quantity = item.quantity.round_dp(4).normalize().to_string();
        leaf(&mut w, "QuantityValue", &quantity).map_err(fail)?;
        if let Some(s) = &item.seller_item_id {
            leaf(&mut w, "SellerItemID", s).map_err(fail)?;
        }
        close(&mut w, "Item").map_err(fail)?;
    }
    close(&mut w, "LineItems").map_err(fail)?;
    close(&mut w, "Packaging").map_err(fail)?;
    close(&mut w, "DesadvDetail").map_err(fail)?;
    close(&mut w, "Desadv").map_err(fail)?;
    String::from_utf8(w.into_inner())
        .map_err(|e| Failure::permanent(format!("DESADV: the XML is not UTF-8: {e}")))
}

fn open(w: &mut Writer<Vec<u8>>, name: &str) -> std::io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))
}

fn close(w: &mut Writer<Vec<u8>>, name: &str) -> std::io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}

fn leaf(w: &mut Writer<Vec<u8>>, name: &str, text: &str) -> std::io::Result<()> {
    open(w, name)?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    close(w, name)
}

impl CloudSuite {
    /// Sends the shipment's DESADV once (see the module doc).
    pub(super) async fn send_desadv(
        &self,
        target: &DesadvTarget,
        wb: &WriteBack,
        shipment: &ErpShipment,
        current: &Value,
    ) -> Result<String, Failure> {
        let number = desadv_number(wb, shipment);
        let step = wb.step.get();
        if step.as_deref() == Some(SENT) {
            return Ok(format!("DESADV {number} already sent"));
        }
        let items = items(wb, shipment, current)?;
        // The DESADV matches the order by its ERP number and the lines by
        // their line numbers: those write-backs must be in place first.
        let written: Vec<String> = current["order_lines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| json_text(&l["erp_line_number"]))
                    .collect()
            })
            .unwrap_or_default();
        if current["erp_order_number"].as_str() != Some(wb.erp_order_number.as_str())
            || items.iter().any(|i| !written.contains(&i.item_num))
        {
            return Err(Failure::retry(format!(
                "DESADV {number} waits: CloudSuite does not show ERP order {} with its line numbers yet",
                wb.erp_order_number
            )));
        }
        if items.is_empty() {
            return Ok(format!(
                "DESADV {number} not sent: the shipment has no quantity left to announce"
            ));
        }
        let date = shipment
            .shipped_at
            .map(|t| t.with_timezone(&self.timezone).date_naive())
            .unwrap_or_else(|| {
                chrono::Utc::now()
                    .with_timezone(&self.timezone)
                    .date_naive()
            });
        let xml = build_xml(&number, date, &wb.erp_order_number, shipment, &items)?;
        let url = format!("{}/proxy/des_adv_xml/delivery/", self.base);
        let query = [
            ("shop", target.shop.to_string()),
            ("user", target.user.to_string()),
        ];
        let earlier_unknown = step.as_deref() == Some(SENDING);
        wb.step.set(Some(SENDING)).await?;
        let sent = self
            .send(|| {
                self.endpoint
                    .client()
                    .post(&url)
                    .query(&query)
                    .header(reqwest::header::CONTENT_TYPE, "application/xml")
                    .body(xml.clone())
            })
            .await;
        match sent {
            Ok(_) => {
                let _ = wb.step.set(Some(SENT)).await;
                Ok(format!(
                    "DESADV {number} sent ({} line(s), tracking {})",
                    items.len(),
                    shipment.tracking_number.as_deref().unwrap_or("-")
                ))
            }
            // A refusal of the number an earlier attempt may already have
            // delivered: CloudSuite has it.
            Err(f) if earlier_unknown && f.status().is_some_and(refuses_a_repeat) => {
                let _ = wb.step.set(Some(SENT)).await;
                tracing::warn!(source = %self.name, order_key = %wb.order_key, desadv = %number, answer = %f,
                    "DESADV refused after an attempt whose answer was lost; taken as already received");
                Ok(format!(
                    "DESADV {number} already received (an earlier attempt's answer was lost)"
                ))
            }
            // Refused, or never connected: not received, safe to send again.
            Err(f)
                if f.status().is_some_and(|s| s < 500)
                    || f.message().contains("could not connect") =>
            {
                if !earlier_unknown {
                    wb.step.set(None).await?;
                }
                Err(f.context(&format!("DESADV {number}")))
            }
            // A 5xx, a timeout, a broken connection: it may have arrived; the
            // marker stays, the retry sends the same number.
            Err(f) => Err(f.context(&format!("DESADV {number}"))),
        }
    }
}

/// Whether an answer to a DESADV can be CloudSuite refusing a number it has
/// already received (how it refuses a repeat is not documented): a
/// validation or conflict answer. Not one about the request's way in
/// (401/403: the token or the IP allow-list; 404/405: the path; 413/415:
/// the body) nor 408/429: after those nothing says the earlier one arrived.
fn refuses_a_repeat(status: u16) -> bool {
    matches!(status, 400 | 409 | 422)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LineNumber, ShippedLine};
    use serde_json::json;

    fn wb() -> WriteBack {
        WriteBack {
            order_key: "webshop-nl:48193".into(),
            external_id: "48193".into(),
            erp_order_number: "SO<1>&\"2\"".into(),
            in_doubt: false,
            progress: Default::default(),
            lines: vec![
                LineNumber {
                    source_line_id: "11".into(),
                    erp_line_number: "10".into(),
                },
                LineNumber {
                    source_line_id: "12".into(),
                    erp_line_number: "20".into(),
                },
            ],
            shipped_before: vec![ShippedLine {
                source_line_id: "12".into(),
                quantity: Decimal::ONE,
                erp_line_number: None,
            }],
            step: Default::default(),
        }
    }

    fn shipment(lines: Vec<ShippedLine>) -> ErpShipment {
        ErpShipment {
            order_key: "webshop-nl:48193".into(),
            erp_order_number: None,
            shipped_at: None,
            carrier: Some("PostNL & Co <NL>".into()),
            tracking_number: Some("3S]]>TRACK".into()),
            tracking_url: None,
            lines,
            erp_shipment_id: Some("stock.shipment.out,7".into()),
        }
    }

    fn current() -> Value {
        json!({"order_lines": [
            {"id": 11, "type": "line", "quantity": "2.0000", "product": {"key": "124_STUK", "origin": "x"}},
            {"id": 12, "type": "line", "quantity": 3.0, "product": {"key": "123_KG"}},
            {"id": 13, "type": "discount", "quantity": "1"}]})
    }

    #[test]
    fn only_a_validation_or_conflict_answer_reads_as_already_received() {
        for s in [400, 409, 422] {
            assert!(refuses_a_repeat(s), "{s}");
        }
        for s in [401, 403, 404, 405, 408, 413, 415, 429, 500, 503] {
            assert!(!refuses_a_repeat(s), "{s}");
        }
    }

    #[test]
    fn the_number_is_the_same_for_a_retry_and_differs_per_shipment() {
        let s = shipment(Vec::new());
        assert_eq!(desadv_number(&wb(), &s), desadv_number(&wb(), &s));
        assert!(desadv_number(&wb(), &s).starts_with("48193-"));
        let mut other = s.clone();
        other.erp_shipment_id = Some("stock.shipment.out,8".into());
        assert_ne!(desadv_number(&wb(), &s), desadv_number(&wb(), &other));
    }

    #[test]
    fn items_carry_the_shipped_quantities_or_what_is_left() {
        let partial = shipment(vec![
            ShippedLine {
                source_line_id: "11".into(),
                quantity: Decimal::ONE,
                erp_line_number: None,
            },
            ShippedLine {
                source_line_id: "12".into(),
                quantity: Decimal::ZERO,
                erp_line_number: None,
            },
        ]);
        assert_eq!(
            items(&wb(), &partial, &current()).unwrap(),
            vec![Item {
                item_num: "10".into(),
                quantity: Decimal::ONE,
                seller_item_id: Some("124_STUK".into())
            }]
        );
        let whole = items(&wb(), &shipment(Vec::new()), &current()).unwrap();
        assert_eq!(
            whole
                .iter()
                .map(|i| (i.item_num.as_str(), i.quantity))
                .collect::<Vec<_>>(),
            vec![("10", Decimal::TWO), ("20", Decimal::TWO)]
        );
        let unknown = shipment(vec![ShippedLine {
            source_line_id: "99".into(),
            quantity: Decimal::ONE,
            erp_line_number: None,
        }]);
        assert!(
            items(&wb(), &unknown, &current())
                .unwrap_err()
                .to_string()
                .contains("99")
        );
    }

    #[cfg(feature = "sandbox")]
    /// Element paths of an XML document, in order, without repeats.
    fn paths(xml: &str) -> Vec<String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let (mut path, mut out) = (Vec::<String>::new(), Vec::<String>::new());
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => {
                    path.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                    let p = path.join("/");
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
                Event::End(_) => {
                    path.pop();
                }
                Event::Eof => return out,
                _ => {}
            }
        }
    }

    #[cfg(feature = "sandbox")]
    #[test]
    fn the_documented_structure_is_what_is_sent() {
        let documented =
            include_str!("../../../tests/fixtures/vendor/cloudsuite/desadv-assembled.xml");
        let d = crate::sandbox::cloudsuite::parse_desadv(documented.as_bytes()).unwrap();
        assert_eq!(
            (d.number.as_str(), d.date.as_str()),
            ("DESADV-0001", "2024-06-29")
        );
        assert_eq!(d.tracking.as_deref(), Some("3SABCD1234567"));
        assert_eq!(d.items[0].item_num, "11");
        assert_eq!(d.items[0].quantity, Decimal::ONE);
        let ours = build_xml(
            "48193-X",
            NaiveDate::from_ymd_opt(2024, 6, 29).unwrap(),
            "123456789",
            &shipment(Vec::new()),
            &[Item {
                item_num: "11".into(),
                quantity: Decimal::ONE,
                seller_item_id: Some("124_STUK".into()),
            }],
        )
        .unwrap();
        let expected: Vec<String> = paths(documented)
            .into_iter()
            .filter(|p| !p.contains("Comment") && !p.contains("DesadvParty"))
            .collect();
        assert_eq!(paths(&ours), expected);
    }

    #[cfg(feature = "sandbox")]
    #[test]
    fn the_xml_escapes_every_value_and_reads_back() {
        let s = shipment(Vec::new());
        let its = vec![Item {
            item_num: "10".into(),
            quantity: "1.50000".parse().unwrap(),
            seller_item_id: Some("A&B".into()),
        }];
        let xml = build_xml(
            "48193-X",
            NaiveDate::from_ymd_opt(2024, 6, 29).unwrap(),
            &wb().erp_order_number,
            &s,
            &its,
        )
        .unwrap();
        assert!(
            xml.contains("<OrderNum>SO&lt;1&gt;&amp;&quot;2&quot;</OrderNum>"),
            "{xml}"
        );
        assert!(
            xml.contains("<TransportModeCode>PostNL &amp; Co &lt;NL&gt;</TransportModeCode>"),
            "{xml}"
        );
        assert!(xml.contains("<QuantityValue>1.5</QuantityValue>"), "{xml}");
        assert!(xml.contains("<DesadvDate>2024-06-29</DesadvDate>"), "{xml}");
        // The simulator's parser reads back exactly what was meant.
        let parsed = crate::sandbox::cloudsuite::parse_desadv(xml.as_bytes()).unwrap();
        assert_eq!(parsed.number, "48193-X");
        assert_eq!(parsed.tracking.as_deref(), Some("3S]]>TRACK"));
        assert_eq!(parsed.carrier.as_deref(), Some("PostNL & Co <NL>"));
        assert_eq!(parsed.items[0].order_num, "SO<1>&\"2\"");
    }
}
