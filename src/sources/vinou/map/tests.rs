//! Mapping tests built on the order sample of Vinou's `orders/get` docs.

use serde_json::{Value, json};

use super::*;

/// The docs' sample (trimmed), with totals made to add up: the sample's own
/// `net`/`gross` (79.01 / 93.78) do not match its positions.
fn sample() -> Value {
    json!({
        "id": 6931, "uuid": "7eb91504-a363-54d3-9fd0-04202a0e36b6", "number": "BE0000000142",
        "billing_type": "client", "billing_id": 1370, "delivery_type": "client", "delivery_id": 1370,
        "payment_type": "invoice", "status": "need_package",
        "net": "12.50", "tax": "2.14", "gross": "14.64",
        "taxrates": {"19": {"net": "10.50", "tax": "2.00", "gross": "12.50"},
                     "7": {"net": "2.00", "tax": "0.14", "gross": "2.14"}},
        "invoice_type": "gross", "crstamp": "2020-05-04 12:57:45", "chstamp": "2020-05-04 12:57:52",
        "client_id": 1370, "touched": 1, "paid": false,
        "client": {"id": 1370, "company": null, "taxid": null, "address": "Musterstr. 6", "address_supplement": null,
                   "zip": "12345", "city": "Feld", "countrycode": "de", "mail": null, "phone": "0123456789",
                   "first_name": "Hans", "last_name": "Hamster"},
        "positions": [
            {"id": 26941, "item_type": "wine", "name": "Weißburgunder Frühlingserwachen", "quantity": 1,
             "net": "5.88", "tax": "1.12", "taxrate": 19, "gross": "7.00",
             "item": {"articlenumber": "002", "vintage": 2019, "bottlesize": "0.750", "gtin": null}},
            {"id": 26944, "item_type": "product", "name": "Haribo", "quantity": 1,
             "net": "2.00", "tax": "0.14", "taxrate": 7, "gross": "2.14",
             "item": {"articlenumber": "H12345"}}],
        "package": {"id": 26945, "item_type": "package", "name": "Packaging", "quantity": 1,
                    "net": "4.62", "tax": "0.88", "taxrate": 19, "gross": "5.50"},
        "rebates": []
    })
}

fn ctx(statuses: &[String]) -> MapContext<'_> {
    MapContext {
        countries: CountryMap::none(),
        source: "weingut",
        import_statuses: statuses,
        already_pushed: false,
        watching: true,
    }
}

fn statuses() -> Vec<String> {
    vec!["payed".into(), "need_package".into()]
}

#[test]
fn maps_the_documented_sample() {
    let st = statuses();
    let inc = incoming(&ctx(&st), &sample()).unwrap();
    assert_eq!(
        inc.version.as_deref(),
        Some("2020-05-04 12:57:52|need_package")
    );
    let m = inc.mapped.unwrap();
    assert_eq!(m.disposition, Disposition::Push);
    let o = &m.order;
    assert_eq!(o.order_key, "weingut:6931");
    assert_eq!(o.reference.as_deref(), Some("BE0000000142"));
    assert!(o.prices_include_tax, "invoice_type gross");
    // Berlin summer time: UTC+2.
    assert_eq!(o.ordered_at.to_rfc3339(), "2020-05-04T10:57:45+00:00");
    assert_eq!(o.lines.len(), 2);
    assert_eq!(o.lines[0].sku.as_deref(), Some("002"));
    assert_eq!(
        o.lines[0].description.as_deref(),
        Some("Weißburgunder Frühlingserwachen 2019, 0.75 l")
    );
    assert_eq!(o.lines[0].line_total.to_string(), "7.00");
    assert_eq!(o.lines[1].tax_rate.unwrap().to_string(), "7");
    let ship = o.shipping.as_ref().unwrap();
    assert_eq!(
        (ship.method.as_deref(), ship.amount.to_string().as_str()),
        (Some("Packaging"), "5.50")
    );
    let bill = o.billing_address.as_ref().unwrap();
    assert_eq!(bill.country.as_deref(), Some("DE"));
    assert_eq!(bill.name.as_deref(), Some("Hans Hamster"));
    assert_eq!(
        o.shipping_address, o.billing_address,
        "delivery_type client"
    );
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("1370"));
}

#[test]
fn the_docs_own_totals_do_not_add_up_and_are_refused() {
    let mut v = sample();
    v["net"] = json!("79.01");
    v["gross"] = json!("93.78");
    let st = statuses();
    let err = incoming(&ctx(&st), &v).unwrap().mapped.unwrap_err();
    assert!(err.contains("6931") && err.contains("taxrates"), "{err}");
}

#[test]
fn net_invoices_rebates_and_quantities() {
    let mut v = sample();
    v["invoice_type"] = json!("net");
    v["positions"][0]["quantity"] = json!(3);
    v["positions"][0]["net"] = json!("17.64");
    v["positions"][0]["tax"] = json!("3.35");
    v["positions"][0]["gross"] = json!("20.99");
    v["rebates"] = json!([{"id": 26950, "item_type": "rebate", "name": "Pauschaler Rabatt", "quantity": 1,
                           "net": "-4.95", "tax": "-0.94", "gross": "-5.89", "taxrate": 19}]);
    // 17.64 + 2.00 + 4.62 - 4.95 = 19.31 net
    v["net"] = json!("19.31");
    v["tax"] = json!("3.43");
    v["gross"] = json!("22.74");
    v["taxrates"] = json!({"19": {"net": "17.31", "tax": "3.29", "gross": "20.60"},
                          "7": {"net": "2.00", "tax": "0.14", "gross": "2.14"}});
    v["delivery_type"] = json!("none");
    let st = statuses();
    let o = incoming(&ctx(&st), &v).unwrap().mapped.unwrap().order;
    assert!(!o.prices_include_tax);
    assert_eq!(o.lines[0].quantity.to_string(), "3");
    assert_eq!(o.lines[0].unit_price.to_string(), "5.88");
    assert_eq!(o.lines[0].line_total.to_string(), "17.64");
    assert_eq!(o.discounts[0].amount.to_string(), "4.95");
    assert_eq!(o.shipping.as_ref().unwrap().amount.to_string(), "4.62");
    assert!(o.shipping_address.is_none(), "delivery_type none");
}

/// The docs' only sample has quantity 1: a position's amounts may be one
/// unit's price rather than the line's total. Read as line totals first;
/// as unit prices only when the order's totals add up that way; neither:
/// the line-total reading's error, naming the difference.
#[test]
fn position_amounts_per_unit_are_read_when_only_they_add_up() {
    let st = statuses();
    // Three bottles at 7.00 gross: the order's totals count 21.00.
    let mut v = sample();
    v["positions"][0]["quantity"] = json!(3);
    v["net"] = json!("24.26");
    v["tax"] = json!("4.38");
    v["gross"] = json!("28.64");
    v["taxrates"] = json!({"19": {"net": "22.26", "tax": "4.24", "gross": "26.50"},
                          "7": {"net": "2.00", "tax": "0.14", "gross": "2.14"}});
    let three_bottles = v.clone();
    let o = incoming(&ctx(&st), &v).unwrap().mapped.unwrap().order;
    assert_eq!(o.lines[0].quantity.to_string(), "3");
    assert_eq!(o.lines[0].unit_price.to_string(), "7.00");
    assert_eq!(o.lines[0].line_total.to_string(), "21.00");
    assert_eq!(
        o.lines[1].line_total.to_string(),
        "2.14",
        "quantity 1: as read"
    );

    // The same position as a line total (7.00 for three): read as such.
    let mut v = sample();
    v["positions"][0]["quantity"] = json!(3);
    let o = incoming(&ctx(&st), &v).unwrap().mapped.unwrap().order;
    assert_eq!(o.lines[0].line_total.to_string(), "7.00");
    assert_eq!(o.lines[0].unit_price.to_string(), "2.3333");

    // Neither reading adds up (totals for three, two on the line): parked
    // with the line-total reading's numbers.
    v = three_bottles;
    v["positions"][0]["quantity"] = json!(2);
    let err = incoming(&ctx(&st), &v).unwrap().mapped.unwrap_err();
    assert!(
        err.contains("totals do not add up") && err.contains("lines 9.14"),
        "{err}"
    );
}

/// No document shows an id on a rebate beside the positions (`orders/add`'s
/// rebate item has none), nor says whether a rebate is only stated in the
/// header (`rebate_gross`): both shapes map to one discount.
#[test]
fn a_rebate_without_an_id_or_only_in_the_header_is_a_discount() {
    let mut v = sample();
    // 7.00 + 2.14 + 5.50 - 5.89 = 8.75 gross
    v["gross"] = json!("8.75");
    v["net"] = json!("7.55");
    v["tax"] = json!("1.20");
    v["taxrates"] = json!({"19": {"net": "5.55", "tax": "1.06", "gross": "6.61"},
                          "7": {"net": "2.00", "tax": "0.14", "gross": "2.14"}});
    let st = statuses();
    let mut beside = v.clone();
    beside["rebates"] = json!([{"item_type": "rebate", "name": "Pauschaler Rabatt",
                                "net": "-4.95", "tax": "-0.94", "gross": "-5.89", "quantity": 1}]);
    let mut header = v.clone();
    header["rebate_net"] = json!("4.95");
    header["rebate_tax"] = json!("0.94");
    header["rebate_gross"] = json!("5.89");
    for v in [beside, header] {
        let o = incoming(&ctx(&st), &v).unwrap().mapped.unwrap().order;
        assert_eq!(o.discounts.len(), 1, "{v}");
        assert_eq!(o.discounts[0].amount.to_string(), "5.89");
        assert_eq!(o.lines.len(), 2);
    }
    // A line position still needs its id (its ERP line number is keyed by it).
    let mut v = sample();
    v["positions"][0].as_object_mut().unwrap().remove("id");
    assert!(
        incoming(&ctx(&st), &v)
            .unwrap()
            .mapped
            .unwrap_err()
            .contains("has no id")
    );
}

#[test]
fn the_status_decides() {
    let st = statuses();
    let disp = |status: &str, c: MapContext<'_>| {
        let mut v = sample();
        v["status"] = json!(status);
        incoming(&c, &v).unwrap().mapped.unwrap().disposition
    };
    assert!(
        matches!(disp("need_payment", ctx(&st)), Disposition::Hold(r) if r.contains("need_payment"))
    );
    assert_eq!(disp("payed", ctx(&st)), Disposition::Push);
    assert!(matches!(
        disp("cancelled", ctx(&st)),
        Disposition::Cancel(_)
    ));
    // Past the import point while we watched: pushed; on the first poll: history.
    assert_eq!(disp("in_delivery", ctx(&st)), Disposition::Push);
    let first = MapContext {
        watching: false,
        ..ctx(&st)
    };
    assert!(matches!(disp("closed", first), Disposition::Cancel(r) if r.contains("backfill")));
    // Already in the ERP: moving on is not a change.
    let pushed = MapContext {
        already_pushed: true,
        ..ctx(&st)
    };
    assert_eq!(disp("closed", pushed), Disposition::Push);
}

#[test]
fn bad_data_names_the_position() {
    let mut v = sample();
    v["positions"][1]["quantity"] = json!("zwei");
    let st = statuses();
    let err = incoming(&ctx(&st), &v).unwrap().mapped.unwrap_err();
    assert!(
        err.contains("position 26944") && err.contains("zwei"),
        "{err}"
    );
    let mut v = sample();
    v["positions"][0]["item_type"] = json!("voucher");
    let err = incoming(&ctx(&st), &v).unwrap().mapped.unwrap_err();
    assert!(err.contains("voucher"), "{err}");
    assert!(incoming(&ctx(&st), &json!({})).is_err(), "no id, no key");
}

/// Found by `fuzz_tests`: a total near `Decimal::MIN` against what its
/// `taxrates` add up to overflowed the subtraction of the check.
#[test]
fn a_total_beyond_its_taxrates_by_more_than_decimal_holds_parks() {
    let st = statuses();
    let mut v = sample();
    v["net"] = json!("-79228162514264337593543950335");
    let err = incoming(&ctx(&st), &v).unwrap().mapped.unwrap_err();
    assert!(
        err.contains("taxrates net") && err.contains("out of range"),
        "{err}"
    );
}
