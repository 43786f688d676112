//! Each conversion checked against XML as the till sends it (prefixed
//! elements, one-element lists).

use super::*;

fn ctx() -> MapContext<'static> {
    MapContext {
        source: "till",
        countries: CountryMap::none(),
    }
}

/// An `<order>` element with the given lines and totals.
fn order_xml(extra: &str, lines: &str, incl: i64, excl: i64) -> String {
    format!(
        r#"<ns:order xmlns:ns="urn:mplusqapi">
  <ns:orderId>5F3A-0001</ns:orderId><ns:extOrderId>web-77</ns:extOrderId><ns:syncMarker>812</ns:syncMarker>
  <ns:entryTimestamp><ns:sec>5</ns:sec><ns:min>15</ns:min><ns:hour>10</ns:hour><ns:day>29</ns:day><ns:mon>6</ns:mon><ns:year>2024</ns:year><ns:isdst>true</ns:isdst><ns:timezone>120</ns:timezone></ns:entryTimestamp>
  <ns:relationNumber>1324</ns:relationNumber><ns:relationName>Bakkerij De Korf</ns:relationName>
  <ns:invoiceAddress><ns:name>De Korf</ns:name><ns:address>Dorpsstraat 1</ns:address><ns:zipcode>1234 AB</ns:zipcode><ns:city>Utrecht</ns:city><ns:country>nl</ns:country><ns:companyName>De Korf BV</ns:companyName></ns:invoiceAddress>
  <ns:reference>SO-OLD</ns:reference>
  <ns:totalInclAmount>{incl}</ns:totalInclAmount><ns:totalExclAmount>{excl}</ns:totalExclAmount>
  {extra}
  <ns:changeCounter>3</ns:changeCounter><ns:versionNumber>7</ns:versionNumber>
  <ns:orderNumber><ns:year>2024</ns:year><ns:number>311</ns:number></ns:orderNumber>
  <ns:lineList>{lines}</ns:lineList>
</ns:order>"#
    )
}

fn line_xml(id: &str, qty: i64, places: u32, price: i64, extra: &str) -> String {
    format!(
        r#"<ns:line><ns:lineId>{id}</ns:lineId><ns:articleNumber>301</ns:articleNumber><ns:text>Kaas {id}</ns:text>{extra}
  <ns:data><ns:quantity>{qty}</ns:quantity><ns:decimalPlaces>{places}</ns:decimalPlaces><ns:price>{price}</ns:price><ns:vatPercentage>9</ns:vatPercentage></ns:data></ns:line>"#
    )
}

fn map(xml: &str) -> MappedOrder {
    let (_, o) = incoming(&ctx(), xml).unwrap();
    o.mapped.unwrap()
}

#[test]
fn one_element_list_and_scaled_quantity_in_cents() {
    // 0.530 kg at 12.99 = 6.8847, the till rounds the total to 6.88.
    let xml = order_xml("", &line_xml("L1", 530, 3, 1299, ""), 688, 631);
    let (marker, inc) = incoming(&ctx(), &xml).unwrap();
    assert_eq!(marker, 812);
    assert_eq!(inc.external_id, "5F3A-0001");
    assert_eq!(inc.version.as_deref(), Some("812"));
    let m = inc.mapped.unwrap();
    assert_eq!(m.disposition, Disposition::Push);
    let o = &m.order;
    assert_eq!(o.lines.len(), 1);
    assert_eq!(o.lines[0].quantity.to_string(), "0.530");
    assert_eq!(o.lines[0].unit_price.to_string(), "12.99");
    assert_eq!(o.lines[0].tax_rate.unwrap().to_string(), "9");
    assert_eq!(o.lines[0].sku.as_deref(), Some("301"));
    assert_eq!(o.totals.gross.unwrap().to_string(), "6.88");
    assert_eq!(o.totals.net.unwrap().to_string(), "6.31");
    assert_eq!(o.totals.tax.unwrap().to_string(), "0.57");
    assert!(o.prices_include_tax, "no vatMethod: inclusive");
}

#[test]
fn order_number_relation_address_and_time() {
    let xml = order_xml("", &line_xml("L1", 2, 0, 500, ""), 1000, 917);
    let o = map(&xml).order;
    assert_eq!(
        o.reference.as_deref(),
        Some("2024-311"),
        "never the reference field"
    );
    assert_eq!(o.customer.name.as_deref(), Some("Bakkerij De Korf"));
    assert_eq!(o.customer.company.as_deref(), Some("De Korf BV"));
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("1324"));
    let a = o.billing_address.unwrap();
    assert_eq!(a.street.as_deref(), Some("Dorpsstraat 1"));
    assert_eq!(a.postcode.as_deref(), Some("1234 AB"));
    assert_eq!(a.country.as_deref(), Some("NL"));
    assert!(o.shipping_address.is_none());
    // 10:15:05 at UTC+120 minutes.
    assert_eq!(o.ordered_at.to_rfc3339(), "2024-06-29T08:15:05+00:00");
}

#[test]
fn time_without_timezone_is_amsterdam_wall_clock() {
    let t = wire::SoapDateTime {
        sec: 0,
        min: 0,
        hour: 9,
        day: 15,
        mon: 1,
        year: 2024,
        isdst: None,
        timezone: None,
    };
    assert_eq!(
        date_time(&t).unwrap().to_rfc3339(),
        "2024-01-15T08:00:00+00:00"
    );
    let bad = wire::SoapDateTime { mon: 13, ..t };
    assert!(date_time(&bad).unwrap_err().contains("not a valid time"));
}

/// Found by `fuzz_tests`: `<timezone>2147483647</timezone>` overflowed the
/// minutes-to-seconds multiplication (a panic in debug builds, a wrong
/// offset in release ones).
#[test]
fn a_timezone_beyond_any_offset_is_an_error() {
    let t = wire::SoapDateTime {
        sec: 0,
        min: 0,
        hour: 9,
        day: 15,
        mon: 1,
        year: 2024,
        isdst: None,
        timezone: Some(i32::MAX),
    };
    assert!(
        date_time(&t)
            .unwrap_err()
            .contains("timezone 2147483647 is out of range")
    );
    let t = wire::SoapDateTime {
        timezone: Some(i32::MIN),
        ..t
    };
    assert!(date_time(&t).is_err());
    // At the ends of chrono's calendar an offset cannot move the time past them.
    let end = wire::SoapDateTime {
        sec: 59,
        min: 59,
        hour: 23,
        day: 31,
        mon: 12,
        year: 262142,
        isdst: None,
        timezone: Some(-840),
    };
    assert!(date_time(&end).is_err());
    let start = wire::SoapDateTime {
        sec: 0,
        min: 0,
        hour: 0,
        day: 1,
        mon: 1,
        year: -262143,
        isdst: None,
        timezone: Some(840),
    };
    assert!(date_time(&start).is_err());
}

/// `timezone`'s unit is inference: minutes east of UTC (the community
/// client) or seconds (C's `tm_gmtoff`). Up to 840 either way is minutes,
/// a larger whole minute count in seconds is seconds; anything else is an
/// error naming the value. (Seconds parked every order: "out of range".)
#[test]
fn a_timezone_in_minutes_or_in_seconds_places_the_same_time() {
    let at = |zone: i32| {
        date_time(&wire::SoapDateTime {
            sec: 5,
            min: 15,
            hour: 10,
            day: 29,
            mon: 6,
            year: 2024,
            isdst: Some(true),
            timezone: Some(zone),
        })
    };
    let summer = "2024-06-29T08:15:05+00:00";
    assert_eq!(at(120).unwrap().to_rfc3339(), summer);
    assert_eq!(at(7200).unwrap().to_rfc3339(), summer);
    assert_eq!(at(-300).unwrap().to_rfc3339(), "2024-06-29T15:15:05+00:00");
    assert_eq!(
        at(-18000).unwrap().to_rfc3339(),
        "2024-06-29T15:15:05+00:00"
    );
    assert_eq!(at(0).unwrap().to_rfc3339(), "2024-06-29T10:15:05+00:00");
    assert!(at(7201).unwrap_err().contains("timezone 7201"));
    assert!(
        at(90_000).unwrap_err().contains("timezone 90000"),
        "past a day"
    );
}

#[test]
fn vat_method_exclusive_uses_prices_excl() {
    let line = r#"<ns:line><ns:lineId>L1</ns:lineId><ns:articleNumber>9</ns:articleNumber>
      <ns:data><ns:quantity>3</ns:quantity><ns:price>1210</ns:price><ns:priceExcl>1000</ns:priceExcl></ns:data></ns:line>"#;
    let xml = order_xml(
        "<ns:vatMethod>VAT-METHOD-EXCLUSIVE</ns:vatMethod>",
        line,
        3630,
        3000,
    );
    let o = map(&xml).order;
    assert!(!o.prices_include_tax);
    assert_eq!(o.lines[0].unit_price.to_string(), "10.00");
    assert_eq!(o.lines[0].line_total.to_string(), "30.00");
    let xml = order_xml(
        "<ns:vatMethod>VAT-METHOD-WHATEVER</ns:vatMethod>",
        line,
        3630,
        3000,
    );
    let (_, inc) = incoming(&ctx(), &xml).unwrap();
    assert!(inc.mapped.unwrap_err().contains("vatMethod"));
}

#[test]
fn preparations_fold_into_their_parent_and_priced_components_stay() {
    let lines = format!(
        "{}{}",
        line_xml(
            "L1",
            1,
            0,
            850,
            r#"<ns:preparationList><ns:line><ns:lineId>P1</ns:lineId><ns:articleNumber>0</ns:articleNumber><ns:text>zonder ui</ns:text><ns:data><ns:quantity>1</ns:quantity><ns:price>0</ns:price></ns:data></ns:line><ns:line><ns:lineId>P2</ns:lineId><ns:articleNumber>77</ns:articleNumber><ns:text>extra kaas</ns:text><ns:data><ns:quantity>1</ns:quantity><ns:price>150</ns:price></ns:data></ns:line></ns:preparationList>"#
        ),
        r#"<ns:line><ns:lineId>C1</ns:lineId><ns:articleNumber>5</ns:articleNumber><ns:text>saus</ns:text><ns:lineType>LINE-TYPE-COMPONENT</ns:lineType><ns:data><ns:quantity>1</ns:quantity><ns:price>0</ns:price></ns:data></ns:line>"#
    );
    let o = map(&order_xml("", &lines, 1000, 900)).order;
    let ids: Vec<_> = o.lines.iter().map(|l| l.source_line_id.as_str()).collect();
    assert_eq!(ids, ["L1", "P2"]);
    assert_eq!(
        o.lines[0].description.as_deref(),
        Some("Kaas L1 + zonder ui + saus")
    );
}

#[test]
fn line_discount_and_cancelled_quantity() {
    let discounted = r#"<ns:line><ns:lineId>L1</ns:lineId><ns:articleNumber>9</ns:articleNumber>
      <ns:data><ns:quantity>2</ns:quantity><ns:price>1000</ns:price><ns:totalInclAmount>1800</ns:totalInclAmount></ns:data></ns:line>"#;
    let m = map(&order_xml("", discounted, 1800, 1652));
    assert_eq!(m.order.discounts.len(), 1);
    assert_eq!(m.order.discounts[0].amount.to_string(), "2.00");
    let partly = r#"<ns:line><ns:lineId>L1</ns:lineId><ns:articleNumber>9</ns:articleNumber>
      <ns:data><ns:quantity>3</ns:quantity><ns:cancelledQuantity>1</ns:cancelledQuantity><ns:price>1000</ns:price></ns:data></ns:line>"#;
    let m = map(&order_xml(
        "<ns:cancelState>ORDER-CANCEL-STATE-PARTIAL</ns:cancelState>",
        partly,
        2000,
        1835,
    ));
    assert_eq!(m.order.lines[0].quantity.to_string(), "2");
    assert_eq!(m.disposition, Disposition::Push);
}

#[test]
fn complete_cancellation_is_a_cancel_disposition() {
    let xml = order_xml(
        "<ns:cancelState>ORDER-CANCEL-STATE-COMPLETE</ns:cancelState>",
        &line_xml("L1", 1, 0, 500, ""),
        500,
        459,
    );
    assert!(matches!(map(&xml).disposition, Disposition::Cancel(_)));
}

#[test]
fn totals_that_do_not_add_up_are_named() {
    let xml = order_xml("", &line_xml("L1", 2, 0, 500, ""), 1100, 1000);
    let (_, inc) = incoming(&ctx(), &xml).unwrap();
    let e = inc.mapped.unwrap_err();
    assert!(
        e.contains("5F3A-0001")
            && e.contains(
                "the order's totalInclAmount is 11.00, but its lines' totalInclAmount add up to 10.00 (difference 1.00)"
            ),
        "{e}"
    );
}

/// Issue 11: the reason quotes the till's own figures (the header total,
/// the sum of the lines' own `totalInclAmount`, their difference), not a
/// recomputation from quantity x price that is off by a cent.
#[test]
fn a_parked_reason_quotes_the_tills_own_figures() {
    let line = |id: &str, qty: i64, price: i64, own: i64| {
        format!(
            r#"<ns:line><ns:lineId>{id}</ns:lineId><ns:articleNumber>301</ns:articleNumber><ns:text>Brood</ns:text>
  <ns:data><ns:quantity>{qty}</ns:quantity><ns:decimalPlaces>0</ns:decimalPlaces><ns:price>{price}</ns:price><ns:totalInclAmount>{own}</ns:totalInclAmount><ns:vatPercentage>9</ns:vatPercentage></ns:data></ns:line>"#
        )
    };
    // 3 x 4.333 would recompute to 13.00 (rounded), the till says 12.99.
    let lines = format!("{}{}", line("L1", 3, 433, 1299), line("L2", 1, 2014, 2014));
    let xml = order_xml("", &lines, 3813, 3500);
    let (_, inc) = incoming(&ctx(), &xml).unwrap();
    let e = inc.mapped.unwrap_err();
    assert!(
        e.contains("the order's totalInclAmount is 38.13, but its lines' totalInclAmount add up to 33.13 (difference 5.00)"),
        "{e}"
    );
}

#[test]
fn echo_of_our_write_back_hashes_the_same() {
    let lines = line_xml("L1", 2, 0, 500, "");
    let before = map(&order_xml("", &lines, 1000, 917)).order;
    // What the till shows after updateOrder + deliverOrderV2.
    let after_lines = lines.replace(
        "<ns:price>",
        "<ns:deliveredQuantity>2</ns:deliveredQuantity><ns:price>",
    );
    let after_xml = order_xml(
        "<ns:deliveryState>ORDER-DELIVERY-STATE-COMPLETE</ns:deliveryState>",
        &after_lines,
        1000,
        917,
    )
    .replace("SO-OLD", "SO-10001")
    .replace("<ns:syncMarker>812", "<ns:syncMarker>990")
    .replace("<ns:changeCounter>3", "<ns:changeCounter>5");
    let after = map(&after_xml).order;
    assert_eq!(before.content_hash(), after.content_hash());
    // A real change does not.
    let changed = map(&order_xml("", &line_xml("L1", 3, 0, 500, ""), 1500, 1376)).order;
    assert_ne!(before.content_hash(), changed.content_hash());
}

#[test]
fn malformed_order_is_keyed_and_parked_not_dropped() {
    let xml = order_xml("", &line_xml("L1", 2, 0, 500, ""), 1000, 917).replace(
        "<ns:quantity>2</ns:quantity>",
        "<ns:quantity>2,5</ns:quantity>",
    );
    let (marker, inc) = incoming(&ctx(), &xml).unwrap();
    assert_eq!(marker, 812);
    assert_eq!(inc.external_id, "5F3A-0001");
    assert!(
        inc.mapped
            .unwrap_err()
            .contains("cannot read MplusKASSA order 5F3A-0001")
    );
    assert!(incoming(&ctx(), "<ns:order><ns:foo/></ns:order>").is_err());
}

/// Found by `fuzz_tests`: an empty `<lineId>` became a canonical line with
/// `"source_line_id": ""`.
#[test]
fn a_line_without_line_id_parks_the_order() {
    let xml = order_xml("", &line_xml("", 2, 0, 500, ""), 1000, 917);
    let (_, o) = incoming(&ctx(), &xml).unwrap();
    let err = o.mapped.unwrap_err();
    assert!(err.contains("a line of article 301 has no lineId"), "{err}");
    // An unpriced preparation without one folds into its parent as before.
    let prep = format!(
        "<ns:preparationList>{}</ns:preparationList>",
        line_xml(" ", 1, 0, 0, "")
    );
    let xml = order_xml("", &line_xml("L1", 2, 0, 500, &prep), 1000, 917);
    assert!(map(&xml).order.lines[0].description.is_some());
}

/// Found by `fuzz_tests`: an order with preparations nested 150 deep
/// overflowed the stack while being deserialized (the process aborted).
/// Refused before that, it is parked under the id its text shows.
#[test]
fn an_order_nested_too_deep_is_parked_not_a_stack_overflow() {
    let deep = format!(
        "{}{}",
        "<ns:line><ns:preparationList>".repeat(10_000),
        "</ns:preparationList></ns:line>".repeat(10_000)
    );
    let xml = order_xml("", &deep, 1000, 917);
    let (marker, o) = incoming(&ctx(), &xml).unwrap();
    assert_eq!((marker, o.external_id.as_str()), (812, "5F3A-0001"));
    let err = o.mapped.unwrap_err();
    assert!(err.contains("nest deeper than 64 levels"), "{err}");
}
