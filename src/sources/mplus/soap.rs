//! SOAP 1.1 framing for MplusQapi: envelopes around quick-xml-serialized
//! operation elements, answers unwrapped from `Envelope/Body`, faults and
//! `result` enums turned into [`Failure`]s. Nothing here sees a URL, so no
//! message built here can carry the secret in the query string.

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{Fault, NAMESPACE};
use crate::http::Failure;

const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// `<SOAP-ENV:Envelope><SOAP-ENV:Body>{operation}</…>` with the operation
/// element named `name` and `urn:mplusqapi` as its default namespace.
pub fn envelope<T: Serialize>(name: &str, operation: &T) -> Result<String, Failure> {
    let body = quick_xml::se::to_string_with_root(name, operation)
        .map_err(|e| Failure::permanent(format!("cannot build the {name} request: {e}")))?;
    Ok(wrap(&body))
}

/// Wraps an already serialized operation element.
pub fn wrap(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{ENVELOPE_NS}\">\
         <SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
}

#[derive(serde::Deserialize)]
struct Envelope<T> {
    #[serde(rename = "Body")]
    body: Body<T>,
}

#[derive(serde::Deserialize)]
struct Body<T> {
    #[serde(rename = "$value")]
    content: T,
}

/// What a SOAP fault means for us.
pub fn fault_failure(operation: &str, fault: &Fault) -> Failure {
    let code = fault.faultcode.rsplit(':').next().unwrap_or_default();
    let text = format!(
        "MplusKASSA {operation} answered with SOAP fault {}: {}",
        fault.faultcode, fault.faultstring
    );
    if is_auth_fault(fault) {
        // Credentials are fixed by an operator, not per order: keep trying
        // with backoff instead of parking every job (http.rs's 401 rule).
        return Failure::retry(format!("{text}; check ident and secret_file/secret_env"));
    }
    if code.starts_with("Client") {
        Failure::permanent(text)
    } else {
        // `Server…` and anything unexpected: the server's problem.
        Failure::retry(text)
    }
}

fn is_auth_fault(fault: &Fault) -> bool {
    let all = format!("{} {}", fault.faultcode, fault.faultstring).to_ascii_lowercase();
    ["auth", "ident", "secret", "credential"]
        .iter()
        .any(|w| all.contains(w))
}

/// How deep elements may nest in an answer (the SOAP envelope counts):
/// an order with preparations of preparations is about 12 deep. serde's
/// derived deserializers recurse once per level (a `line` in a
/// `preparationList` in a `line`...), and a thread's stack ends a few
/// hundred levels down; a stack overflow aborts the whole process, so an
/// answer nested deeper than this is refused before it is deserialized.
pub const MAX_DEPTH: usize = 64;

/// `Err` when elements in `xml` nest deeper than [`MAX_DEPTH`]. Anything
/// else (not XML at all) is left to the deserializer to name.
pub fn check_depth(xml: &str) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = false;
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("elements nest deeper than {MAX_DEPTH} levels"));
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// A fault in the body, if there is one.
pub fn parse_fault(body: &str) -> Option<Fault> {
    if !body.contains("Fault") || check_depth(body).is_err() {
        return None;
    }
    quick_xml::de::from_str::<Envelope<Fault>>(body)
        .ok()
        .map(|e| e.body.content)
}

/// The operation element of an answer. A fault becomes its [`Failure`]; a
/// body that is not the expected XML is retried (a truncated answer from a
/// proxy looks exactly like this).
pub fn parse_answer<T: DeserializeOwned>(operation: &str, body: &str) -> Result<T, Failure> {
    if let Some(fault) = parse_fault(body) {
        return Err(fault_failure(operation, &fault));
    }
    check_depth(body)
        .and_then(|()| {
            quick_xml::de::from_str::<Envelope<T>>(body)
                .map(|e| e.body.content)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            Failure::retry(format!(
                "MplusKASSA {operation} answered with XML that is not the expected answer: {e}"
            ))
        })
}

/// The `<order>` elements inside the `response` element, as the exact text
/// received (kept verbatim in the ledger and parsed one by one, so one bad
/// order does not take its batch down: end tags inside an order are not
/// checked here, and an undefined entity is only a reference to the
/// splitter). An answer that stops before `</response>` is an error, never
/// "no orders".
pub fn order_elements<'a>(body: &'a str, response: &str) -> Result<Vec<&'a str>, String> {
    let mut reader = Reader::from_str(body);
    reader.config_mut().check_end_names = false;
    let mut out = Vec::new();
    let mut in_response = false;
    let mut complete = false;
    let broken = |e: quick_xml::Error| format!("the answer is not well-formed XML: {e}");
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event().map_err(broken)? {
            Event::Start(s) => {
                let name = local(s.name().as_ref());
                if name == response {
                    in_response = true;
                } else if in_response && name == "order" {
                    reader.read_to_end(s.name()).map_err(broken)?;
                    let after = reader.buffer_position() as usize;
                    out.push(body.get(before..after).unwrap_or_default().trim());
                }
            }
            Event::Empty(s) if local(s.name().as_ref()) == response => {
                complete = true;
                break;
            }
            Event::End(e) if local(e.name().as_ref()) == response => {
                complete = true;
                break;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !complete {
        return Err(format!(
            "the answer holds no complete <{response}> (truncated?)"
        ));
    }
    Ok(out)
}

/// What can be read of an `<order>` element that does not deserialize:
/// its `orderId` and `syncMarker` (direct children), and the first entity
/// it uses that XML does not define, with the element holding it.
#[derive(Debug, Default, PartialEq)]
pub struct Identity {
    pub order_id: Option<String>,
    pub sync_marker: Option<i64>,
    pub undefined_entity: Option<String>,
}

pub fn identity(order: &str) -> Identity {
    let mut reader = Reader::from_str(order);
    reader.config_mut().check_end_names = false;
    let mut found = Identity::default();
    // The open elements, `order` first.
    let mut path: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(s)) => path.push(local(s.name().as_ref())),
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) if path.len() == 2 => {
                let text = String::from_utf8_lossy(&t).trim().to_string();
                match path[1].as_str() {
                    "orderId" if !text.is_empty() => found.order_id = Some(text),
                    "syncMarker" => found.sync_marker = text.parse().ok(),
                    _ => {}
                }
            }
            Ok(Event::GeneralRef(r)) if found.undefined_entity.is_none() => {
                let name = String::from_utf8_lossy(&r).to_string();
                let predefined = ["amp", "lt", "gt", "apos", "quot"].contains(&name.as_str());
                if !predefined && !name.starts_with('#') {
                    found.undefined_entity = Some(format!(
                        "{}: undefined entity &{name};",
                        path.get(1..).unwrap_or_default().join(".")
                    ));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    found
}

/// The `updateOrder` request for the order in a `getOrder` answer, with
/// `reference` set: every element of the order as read is copied, so the
/// whole-order replace changes nothing but the reference (fields this
/// connector does not model survive). `changeCounter`/`versionNumber` are
/// the ones just read, which is what the optimistic check compares.
pub fn update_order_body(get_order_answer: &str, reference: &str) -> Result<String, String> {
    let mut reader = Reader::from_str(get_order_answer);
    let mut out = Writer::new(Vec::new());
    let mut op = BytesStart::new("updateOrder");
    op.push_attribute(("xmlns", NAMESPACE));
    op.push_attribute(("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"));
    let write = |w: &mut Writer<Vec<u8>>, e: Event<'_>| {
        w.write_event(e)
            .map_err(|e| format!("cannot write XML: {e}"))
    };
    write(&mut out, Event::Start(op.borrow()))?;
    // depth 0: outside <order>; 1: directly inside it; >1 deeper.
    let mut depth = 0usize;
    let mut in_reference = false;
    let mut reference_written = false;
    let mut found = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("the getOrder answer is not XML: {e}"))?;
        match event {
            Event::Eof => break,
            Event::Start(s) => {
                let local = local(s.name().as_ref());
                if depth == 0 {
                    if local != "order" {
                        continue;
                    }
                    found = true;
                }
                if depth == 1 && local == "totalInclAmount" && !reference_written {
                    // The XSD places `reference` just before the totals.
                    write_reference(&mut out, reference)?;
                    reference_written = true;
                }
                if depth == 1 && local == "reference" {
                    if reference_written {
                        // A second (out of order) reference: drop it.
                        reader
                            .read_to_end(s.name())
                            .map_err(|e| format!("the getOrder answer is not XML: {e}"))?;
                        continue;
                    }
                    in_reference = true;
                }
                depth += 1;
                write(&mut out, Event::Start(renamed(&s, &local)))?;
                if in_reference {
                    write(&mut out, Event::Text(BytesText::new(reference)))?;
                    reference_written = true;
                }
            }
            Event::Empty(s) if depth > 0 => {
                let local = local(s.name().as_ref());
                if depth == 1 && local == "reference" {
                    if !reference_written {
                        write_reference(&mut out, reference)?;
                        reference_written = true;
                    }
                } else {
                    write(&mut out, Event::Empty(renamed(&s, &local)))?;
                }
            }
            Event::End(e) if depth > 0 => {
                let local = local(e.name().as_ref());
                depth -= 1;
                if depth == 0 && !reference_written {
                    write_reference(&mut out, reference)?;
                    reference_written = true;
                }
                in_reference = false;
                write(
                    &mut out,
                    Event::End(BytesStart::new(local).to_end().into_owned()),
                )?;
                if depth == 0 {
                    break;
                }
            }
            Event::Text(t) if depth > 0 && !in_reference => write(&mut out, Event::Text(t))?,
            Event::CData(t) if depth > 0 && !in_reference => write(&mut out, Event::CData(t))?,
            Event::GeneralRef(r) if depth > 0 && !in_reference => {
                write(&mut out, Event::GeneralRef(r))?
            }
            _ => {}
        }
    }
    if !found {
        return Err("the getOrder answer holds no <order>".into());
    }
    write(&mut out, Event::End(op.to_end()))?;
    String::from_utf8(out.into_inner()).map_err(|e| format!("not UTF-8: {e}"))
}

fn write_reference(out: &mut Writer<Vec<u8>>, reference: &str) -> Result<(), String> {
    out.create_element("reference")
        .write_text_content(BytesText::new(reference))
        .map(|_| ())
        .map_err(|e| format!("cannot write XML: {e}"))
}

fn local(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    text.rsplit(':').next().unwrap_or_default().to_string()
}

/// The element under its local name (the answer's prefixes are not bound in
/// our request), without namespace declarations; other attributes (such as
/// `xsi:nil`) are kept.
fn renamed(s: &BytesStart<'_>, local: &str) -> BytesStart<'static> {
    let mut e = BytesStart::new(local.to_string());
    for a in s.attributes().flatten() {
        let key = String::from_utf8_lossy(a.key.as_ref()).to_string();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = String::from_utf8_lossy(&a.value).to_string();
        e.push_attribute((key.as_str(), value.as_str()));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mplus::wire::{GetOrderResponse, GetOrders, GetOrdersRequest, UpdateOrder};

    #[test]
    fn get_orders_request_is_namespaced_and_keeps_empty_required_elements() {
        let op = GetOrders {
            xmlns: NAMESPACE.into(),
            request: GetOrdersRequest {
                sync_marker: 1235,
                sync_marker_limit: Some(100),
                article_plu_numbers: Some(Default::default()),
                article_barcodes: Some(Default::default()),
                include_line_list: Some(true),
                ..Default::default()
            },
        };
        let xml = envelope("getOrders", &op).unwrap();
        assert!(
            xml.contains("<getOrders xmlns=\"urn:mplusqapi\"><request><syncMarker>1235</syncMarker><syncMarkerLimit>100</syncMarkerLimit>"),
            "{xml}"
        );
        assert!(xml.contains("<articlePluNumbers/>"), "{xml}");
        assert!(xml.contains("<articleBarcodes/>"), "{xml}");
        // And the simulator reads it back the same.
        let back: GetOrders = parse_answer("getOrders", &xml).unwrap();
        assert_eq!(back.request.sync_marker, 1235);
        assert!(back.request.article_barcodes.is_some());
    }

    #[test]
    fn faults_are_classified() {
        let fault = |code: &str, text: &str| {
            format!(
                r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
            )
        };
        let e = parse_answer::<GetOrderResponse>(
            "getOrder",
            &fault(
                "SOAP-ENV:Client",
                "Validation constraint violation: tag name or namespace mismatch",
            ),
        )
        .unwrap_err();
        assert!(matches!(e, Failure::Permanent { .. }), "{e:?}");
        assert!(e.message().contains("getOrder") && e.message().contains("mismatch"));
        let e = parse_answer::<GetOrderResponse>(
            "getOrder",
            &fault("SOAP-ENV:Server", "Database busy"),
        )
        .unwrap_err();
        assert!(matches!(e, Failure::Retryable { .. }), "{e:?}");
        let e = parse_answer::<GetOrderResponse>(
            "getOrder",
            &fault("SOAP-ENV:Client", "Invalid ident or secret"),
        )
        .unwrap_err();
        assert!(matches!(e, Failure::Retryable { .. }), "{e:?}");
        assert!(e.message().contains("check ident and secret_file"), "{e:?}");
        // Truncated answer: retried.
        let e = parse_answer::<GetOrderResponse>("getOrder", "<SOAP-ENV:Envelope><SOAP-ENV:Bo")
            .unwrap_err();
        assert!(matches!(e, Failure::Retryable { .. }), "{e:?}");
    }

    const GET_ORDER_ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns="urn:mplusqapi">
 <SOAP-ENV:Body><ns:getOrderResponse><ns:result>GET-ORDER-RESULT-OK</ns:result>
  <ns:order><ns:orderId>0A1B-2C</ns:orderId><ns:syncMarker>77</ns:syncMarker>
   <ns:financialDate><ns:day>3</ns:day><ns:mon>7</ns:mon><ns:year>2024</ns:year></ns:financialDate>
   <ns:totalInclAmount>1210</ns:totalInclAmount><ns:totalExclAmount>1000</ns:totalExclAmount>
   <ns:changeCounter>4</ns:changeCounter><ns:versionNumber>9</ns:versionNumber>
   <ns:futureField>kept &amp; intact</ns:futureField>
   <ns:lineList><ns:line><ns:lineId>L1</ns:lineId><ns:articleNumber>5</ns:articleNumber>
    <ns:data><ns:quantity>1</ns:quantity><ns:price>1210</ns:price></ns:data></ns:line></ns:lineList>
  </ns:order></ns:getOrderResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    #[test]
    fn update_inserts_the_reference_and_keeps_every_field_and_counter() {
        let body = update_order_body(GET_ORDER_ANSWER, "SO-10042").unwrap();
        assert!(
            body.contains("<futureField>kept &amp; intact</futureField>"),
            "{body}"
        );
        assert!(
            body.contains("<reference>SO-10042</reference><totalInclAmount>1210"),
            "{body}"
        );
        let parsed: UpdateOrder = parse_answer("updateOrder", &wrap(&body)).unwrap();
        assert_eq!(parsed.order.reference.as_deref(), Some("SO-10042"));
        assert_eq!(parsed.order.change_counter, 4);
        assert_eq!(parsed.order.version_number, 9);
        assert_eq!(parsed.order.line_list.line.len(), 1);
    }

    #[test]
    fn one_broken_order_does_not_take_the_batch_down() {
        let good =
            "<ns:order><ns:orderId>A1</ns:orderId><ns:syncMarker>5</ns:syncMarker></ns:order>";
        let entity = "<ns:order><ns:orderId>B2</ns:orderId><ns:syncMarker>6</ns:syncMarker><ns:ref>x &foo; y</ns:ref></ns:order>";
        let unclosed = "<ns:order><ns:orderId>C3</ns:orderId><ns:syncMarker>7</ns:syncMarker><ns:a><ns:b></ns:a></ns:order>";
        let body = format!(
            r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns="urn:mplusqapi"><SOAP-ENV:Body><ns:getOrdersResponse><ns:orderList>{good}{entity}{unclosed}{good}</ns:orderList></ns:getOrdersResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        );
        let orders = order_elements(&body, "getOrdersResponse").unwrap();
        assert_eq!(orders, [good, entity, unclosed, good]);
        assert_eq!(
            identity(orders[1]),
            Identity {
                order_id: Some("B2".into()),
                sync_marker: Some(6),
                undefined_entity: Some("ref: undefined entity &foo;".into()),
            }
        );
        assert_eq!(identity(orders[2]).order_id.as_deref(), Some("C3"));
        assert_eq!(identity(orders[0]).undefined_entity, None);
    }

    /// Found by `fuzz_tests`: 150 `<line><preparationList>` levels (31 KB)
    /// overflowed a 2 MiB stack in the derived deserializer and aborted
    /// the process; an answer that deep is now refused before it is read.
    #[test]
    fn answers_nested_too_deep_are_refused_before_they_are_deserialized() {
        let deep = |levels: usize| {
            GET_ORDER_ANSWER.replace(
                "<ns:lineList>",
                &format!(
                    "<ns:lineList>{}{}",
                    "<ns:line><ns:preparationList>".repeat(levels),
                    "</ns:preparationList></ns:line>".repeat(levels)
                ),
            )
        };
        assert!(check_depth(GET_ORDER_ANSWER).is_ok());
        assert!(check_depth(&deep(25)).is_ok());
        let e = parse_answer::<GetOrderResponse>("getOrder", &deep(10_000)).unwrap_err();
        assert!(matches!(e, Failure::Retryable { .. }), "{e:?}");
        assert!(e.message().contains("nest deeper than 64 levels"), "{e:?}");
        let fault = format!(
            "<e:Envelope><e:Body><e:Fault>{}</e:Fault></e:Body></e:Envelope>",
            "<x>".repeat(10_000)
        );
        assert!(parse_fault(&fault).is_none());
    }

    #[test]
    fn update_replaces_an_existing_reference() {
        let with_ref = GET_ORDER_ANSWER.replace(
            "<ns:totalInclAmount>",
            "<ns:reference>table 4 &lt;old&gt;</ns:reference><ns:totalInclAmount>",
        );
        let body = update_order_body(&with_ref, "SO-1").unwrap();
        assert_eq!(body.matches("<reference>").count(), 1, "{body}");
        assert!(body.contains("<reference>SO-1</reference>"), "{body}");
        let empty_ref = GET_ORDER_ANSWER.replace(
            "<ns:totalInclAmount>",
            "<ns:reference/><ns:totalInclAmount>",
        );
        let body = update_order_body(&empty_ref, "SO-2").unwrap();
        assert_eq!(body.matches("<reference>").count(), 1, "{body}");
        assert!(update_order_body("<a/>", "x").is_err());
    }
}
