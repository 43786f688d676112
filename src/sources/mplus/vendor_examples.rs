//! MplusKASSA as the documents show it. Seed 000 (the vendor's Orders
//! tutorial) has no payload at all, and SOURCES.md shows no `getOrders`
//! answer and no `<order>`: only the field list (read from the WSDL) and
//! one request, "Minimal request shape" for `getOrders`, kept in
//! `tests/fixtures/vendor/mplus/getOrders-request.xml` (see the README
//! there). So the only example here is that request, compared with the one
//! this connector sends; order mapping is covered by `map_tests.rs`.

use serde::Deserialize;

use super::Walk;
use super::wire::{self, Empty, GetOrdersRequest};

const GET_ORDERS_REQUEST: &str =
    include_str!("../../../tests/fixtures/vendor/mplus/getOrders-request.xml");

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Body")]
    body: Body,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "getOrders")]
    get_orders: wire::GetOrders,
}

fn request_of(xml: &str) -> GetOrdersRequest {
    quick_xml::de::from_str::<Envelope>(xml)
        .unwrap()
        .body
        .get_orders
        .request
}

#[test]
fn documented_get_orders_request_reads_as_our_wire_type() {
    assert_eq!(
        request_of(GET_ORDERS_REQUEST),
        GetOrdersRequest {
            sync_marker: 1234,
            sync_marker_limit: Some(100),
            article_plu_numbers: Some(Empty {}),
            article_barcodes: Some(Empty {}),
            ..GetOrdersRequest::default()
        }
    );
}

/// The request a live poll sends after marker 1233 with page_size 100 is
/// the documented one, element for element and in the same order, plus
/// `includeLineList` (a documented filter: without lines an order cannot
/// be mapped).
#[test]
fn the_get_orders_request_we_send_has_the_documented_shape() {
    let walk = Walk {
        cursor: Some(1233),
        live: true,
        from: None,
        through: None,
        guard: crate::sources::walk::WalkGuard::new("till", 100),
        done: false,
        at_head: false,
    };
    let sent = super::get_orders_envelope(1233, 100, &walk).unwrap();
    let ours = request_of(&sent);
    assert_eq!(ours.include_line_list, Some(true));
    assert_eq!(
        GetOrdersRequest {
            include_line_list: None,
            ..ours
        },
        request_of(GET_ORDERS_REQUEST)
    );
    let at = |element: &str| {
        sent.find(element)
            .unwrap_or_else(|| panic!("{element} missing from {sent}"))
    };
    let order = [
        at("<syncMarker>"),
        at("<syncMarkerLimit>"),
        at("<articlePluNumbers"),
        at("<articleBarcodes"),
        at("<includeLineList>"),
    ];
    assert!(order.is_sorted(), "{sent}");
    assert!(
        sent.contains(r#"xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/""#),
        "{sent}"
    );
    assert!(
        sent.contains(r#"<getOrders xmlns="urn:mplusqapi">"#),
        "{sent}"
    );
}
