//! CloudSuite orders become Tryton sales with the right lines and amounts,
//! the answers are written back, an unknown product parks only its order,
//! and a shipment done in Tryton comes back as `shipment_state=sent`.

use ordersync::sandbox::{CloudSuiteLineSpec as LineSpec, CloudSuiteOrderSpec as OrderSpec};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::*;
use crate::common::{key, status_json};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn tryton_dec(v: &Value) -> Decimal {
    assert_eq!(v["__class__"], "Decimal", "{v}");
    dec(v["decimal"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_become_sales_and_tryton_shipments_come_back() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "confirm = true").await;
    let cs = &app.sandbox.cloudsuite;
    let mixed = cs.add_order(OrderSpec {
        lines: vec![
            LineSpec::new("124_STUK", dec("2")),
            LineSpec::new("301_KG", dec("0.530")),
        ],
        discount: Some(dec("5.00")),
        ..Default::default()
    });
    let boxed = cs.add_order(OrderSpec {
        lines: vec![LineSpec::new("215_DOOS", dec("3"))],
        shipping_costs: Some(dec("4.95")),
        ..Default::default()
    });
    let mut unknown = LineSpec::new("999_STUK", dec("1"));
    unknown.unit_price = Some(dec("7.50"));
    let poison = cs.add_order(OrderSpec {
        lines: vec![LineSpec::new("201_STUK", dec("1")), unknown],
        ..Default::default()
    });
    let engine = engine(&app);
    sync(&engine).await;

    for id in [mixed, boxed] {
        let k = key(id);
        let sales = sales_for(&rpc, &k).await;
        assert_eq!(sales.len(), 1, "{k}: one sale in Tryton: {sales:?}");
        let sale = &sales[0];
        assert_eq!(sale["state"], "processing", "{k}: confirmed");
        let canonical = engine
            .store
            .order_detail(&k)
            .unwrap()
            .unwrap()
            .canonical
            .unwrap();
        let lines = canonical["lines"].as_array().unwrap();
        let sum = |v: &Value, f: &str| {
            v.as_array().map_or(Decimal::ZERO, |a| {
                a.iter().map(|x| dec(x[f].as_str().unwrap())).sum()
            })
        };
        let expected = sum(&canonical["lines"], "line_total")
            + canonical["shipping"]["amount"]
                .as_str()
                .map_or(Decimal::ZERO, dec)
            - sum(&canonical["discounts"], "amount");
        // The order states no tax rates: the lines get their products'
        // (the fixture's categories); what the source charged is the net.
        assert_eq!(
            tryton_dec(&sale["untaxed_amount"]),
            expected,
            "{k}: sale total without tax"
        );
        let tlines = rpc
            .model(
                "sale.line",
                "search_read",
                vec![
                    json!([["sale", "=", sale["id"]], ["product", "!=", null]]),
                    json!(0),
                    json!(null),
                    json!([["id", "ASC"]]),
                    json!(["product.code", "quantity", "unit_price"]),
                ],
            )
            .await
            .unwrap();
        let tlines = tlines.as_array().unwrap();
        assert_eq!(tlines.len(), lines.len(), "{k}: product lines");
        let source = cs.order(id).unwrap();
        assert_eq!(source["state"], "processing", "{k}: accepted written back");
        assert_eq!(
            source["erp_order_number"], sale["number"],
            "{k}: sale number written back"
        );
        let source_lines: Vec<&Value> = source["order_lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "line")
            .collect();
        for ((line, tl), sl) in lines.iter().zip(tlines).zip(&source_lines) {
            assert_eq!(tl["product."]["code"], line["sku"], "{k}: product by SKU");
            assert_eq!(
                Decimal::try_from(tl["quantity"].as_f64().unwrap())
                    .unwrap()
                    .normalize(),
                dec(line["quantity"].as_str().unwrap()).normalize(),
                "{k}: quantity"
            );
            assert_eq!(
                tryton_dec(&tl["unit_price"]),
                dec(line["unit_price"].as_str().unwrap())
            );
            assert_eq!(sl["erp_line_number"], tl["id"], "{k}: line id written back");
        }
    }

    // The unknown product parks only its own order, with the product named.
    assert!(sales_for(&rpc, &key(poison)).await.is_empty());
    let status = status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{status}");
    assert_eq!(parked[0]["order_key"], key(poison).as_str());
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("product 999_STUK") && reason.contains("not found in Tryton"),
        "{reason}"
    );

    // The warehouse ships one order in Tryton; only that one is reported sent.
    let carrier = make_carrier(&rpc, "PostNL").await;
    let sale = sales_for(&rpc, &key(mixed)).await.remove(0);
    ship(&rpc, &sale, carrier, "3SABCD1234567").await;
    sync(&engine).await;
    assert_eq!(cs.order(mixed).unwrap()["shipment_state"], "sent");
    assert_ne!(cs.order(boxed).unwrap()["shipment_state"], "sent");
    let detail = engine.store.order_detail(&key(mixed)).unwrap().unwrap();
    assert!(
        detail
            .events
            .iter()
            .any(|e| format!("{e:?}").contains("3SABCD1234567")
                && format!("{e:?}").contains("PostNL")),
        "tracking number and carrier in the ledger: {:?}",
        detail.events
    );

    // Running again (the shipment re-read inside the overlap window) doubles nothing.
    sync(&engine).await;
    for id in [mixed, boxed] {
        assert_eq!(sales_for(&rpc, &key(id)).await.len(), 1);
        let history = cs.history(id);
        for field in ["state", "erp_order_number"] {
            assert_eq!(
                history.iter().filter(|c| c.field == field).count(),
                1,
                "{history:?}"
            );
        }
    }
    let sent = cs
        .history(mixed)
        .iter()
        .filter(|c| c.field == "shipment_state")
        .count();
    assert_eq!(sent, 1);
    // The ledger, not only the source's own guard, kept it to one write-back.
    let detail = engine.store.order_detail(&key(mixed)).unwrap().unwrap();
    let jobs = detail
        .jobs
        .iter()
        .filter(|j| j.kind == "write_shipped")
        .count();
    assert_eq!(jobs, 1, "{:?}", detail.jobs);
    // The shipment is known by Tryton's own id, and carries what it shipped
    // per source line (from its outgoing moves), not "the whole order".
    let shipped = detail
        .jobs
        .iter()
        .find(|j| j.kind == "write_shipped")
        .unwrap();
    assert!(
        shipped.job_ref.starts_with("erp:stock.shipment.out,"),
        "{}",
        shipped.job_ref
    );
    let lines = engine.store.shipped_before(&key(mixed), i64::MAX).unwrap();
    let canonical = detail.canonical.unwrap();
    let mut expected: Vec<(String, Decimal)> = canonical["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["source_line_id"].as_str().unwrap().to_string(),
                dec(l["quantity"].as_str().unwrap()).normalize(),
            )
        })
        .collect();
    let mut got: Vec<(String, Decimal)> = lines
        .iter()
        .map(|l| (l.source_line_id.clone(), l.quantity.normalize()))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "shipped quantities per source line");

    // A new label on the done shipment (Tryton lets the warehouse write
    // shipping_reference then): the feed sees the shipment again and the
    // ledger records the number. CloudSuite without DESADV takes no
    // tracking number, so nobody needs telling, and it is not written to a
    // second time.
    let shipment = sale["shipments"][0].as_i64().unwrap();
    rpc.model(
        "stock.shipment.out",
        "write",
        vec![
            json!([shipment]),
            json!({"shipping_reference": "3SNEW7654321"}),
        ],
    )
    .await
    .unwrap();
    sync(&engine).await;
    let detail = engine.store.order_detail(&key(mixed)).unwrap().unwrap();
    assert!(
        detail
            .events
            .iter()
            .any(|e| e.detail.as_deref().is_some_and(|d| {
                d.contains("tracking 3SNEW7654321 came later")
                    && d.contains("was tracking 3SABCD1234567")
                    && d.contains("takes no tracking number")
            })),
        "{:?}",
        detail.events
    );
    assert_eq!(
        detail
            .jobs
            .iter()
            .filter(|j| j.kind == "write_shipped")
            .count(),
        1,
        "{:?}",
        detail.jobs
    );
    assert_eq!(
        cs.history(mixed)
            .iter()
            .filter(|c| c.field == "shipment_state")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_product_is_created_when_configured() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "unknown_product = \"create\"").await;
    let mut unknown = LineSpec::new("998_STUK", dec("2"));
    unknown.unit_price = Some(dec("7.50"));
    unknown.description = Some("Nieuw artikel".into());
    let id = app.sandbox.cloudsuite.add_order(OrderSpec {
        lines: vec![unknown],
        ..Default::default()
    });
    let engine = engine(&app);
    sync(&engine).await;
    let sales = sales_for(&rpc, &key(id)).await;
    assert_eq!(sales.len(), 1, "{sales:?}");
    // The price lives on the template (a company-dependent value).
    let templates = rpc
        .model(
            "product.template",
            "search_read",
            vec![
                json!([["products.code", "=", "998_STUK"]]),
                json!(0),
                json!(null),
                json!(null),
                json!(["list_price", "name"]),
            ],
        )
        .await
        .unwrap();
    let templates = templates.as_array().unwrap();
    assert_eq!(templates.len(), 1, "created once: {templates:?}");
    assert_eq!(tryton_dec(&templates[0]["list_price"]), dec("7.50"));
    assert_eq!(templates[0]["name"], "Nieuw artikel");
    assert_eq!(
        app.sandbox.cloudsuite.order(id).unwrap()["state"],
        "processing"
    );
}

/// Issue 11: a B2B shop knows its customer by id only (CloudSuite's
/// documented `"customer": 1324`, addresses as ids, no totals). Such an
/// order becomes a sale, never parked; the party is found by the identifier
/// `SOURCE:ID`, created once and named from what is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_known_only_by_id_is_one_party_found_by_its_identifier() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "confirm = false").await;
    let engine = engine(&app);
    let order = |id: &str, customer: Value| {
        json!({
            "order_key": format!("{SOURCE}:{id}"), "source": SOURCE, "source_kind": "cloudsuite",
            "external_id": id, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
            "prices_include_tax": false, "customer": customer,
            "lines": [{"source_line_id": "1", "sku": "124_STUK", "quantity": "2",
                       "unit_price": "19.99", "line_total": "39.98"}],
            "totals": {"net": "39.98"}
        })
        .to_string()
    };
    let by_id = json!({"source_customer_id": "4711"});
    for id in ["9001", "9002"] {
        let accepted = engine
            .erp
            .push(&format!("{SOURCE}:{id}"), &order(id, by_id.clone()))
            .await
            .unwrap_or_else(|e| panic!("order {id} refused: {e}"));
        assert!(!accepted.erp_order_number.is_empty());
    }
    // A named customer with an id: the party carries the company's name.
    engine
        .erp
        .push(
            &format!("{SOURCE}:9003"),
            &order(
                "9003",
                json!({"source_customer_id": "4712", "company": "Bakkerij De Korf BV"}),
            ),
        )
        .await
        .unwrap();
    let parties = parties_by_identifier(&rpc, "webshop-nl:4711").await;
    assert_eq!(parties.len(), 1, "one party for one customer: {parties:?}");
    assert_eq!(parties[0]["name"], "webshop-nl customer 4711");
    let party = parties[0]["id"].clone();
    for id in ["9001", "9002"] {
        let sale = sales_of(&rpc, id, "party").await;
        assert_eq!(sale[0]["party"], party, "order {id}: {sale}");
    }
    let named = parties_by_identifier(&rpc, "webshop-nl:4712").await;
    assert_eq!(named.len(), 1);
    assert_eq!(named[0]["name"], "Bakkerij De Korf BV");
}

/// A sale's date is the day the order was placed where the company is
/// (the fixture's company: Europe/Amsterdam): an order at 22:30 UTC on a
/// summer evening is the next day's sale there. (Before, the UTC date.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sale_date_is_the_order_day_in_the_company_time_zone() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "confirm = false").await;
    let engine = engine(&app);
    for (id, at) in [
        ("9101", "2024-06-29T22:30:00Z"),
        ("9102", "2024-06-29T08:15:00Z"),
    ] {
        let order = json!({
            "order_key": format!("{SOURCE}:{id}"), "source": SOURCE, "source_kind": "cloudsuite",
            "external_id": id, "ordered_at": at, "currency": "EUR",
            "prices_include_tax": false, "customer": {"source_customer_id": "4801"},
            "lines": [{"source_line_id": "1", "sku": "124_STUK", "quantity": "1",
                       "unit_price": "19.99", "line_total": "19.99"}],
            "totals": {"net": "19.99"}
        });
        engine
            .erp
            .push(&format!("{SOURCE}:{id}"), &order.to_string())
            .await
            .unwrap_or_else(|e| panic!("order {id} refused: {e}"));
    }
    for (id, day) in [("9101", 30), ("9102", 29)] {
        let sale = sales_of(&rpc, id, "sale_date").await;
        assert_eq!(
            ordersync::erp::tryton::rpc::parse_date(&sale[0]["sale_date"]),
            chrono::NaiveDate::from_ymd_opt(2024, 6, day),
            "order {id}: {sale}"
        );
    }
}

/// The sales of order `id` of `SOURCE`, with one field read.
async fn sales_of(rpc: &Rpc, id: &str, field: &str) -> Value {
    rpc.model(
        "sale.sale",
        "search_read",
        vec![
            json!([["reference", "=", format!("{SOURCE}:{id}")]]),
            json!(0),
            json!(null),
            json!(null),
            json!([field]),
        ],
    )
    .await
    .unwrap()
}

async fn parties_by_identifier(rpc: &Rpc, code: &str) -> Vec<Value> {
    rpc.model(
        "party.party",
        "search_read",
        vec![
            json!([["identifiers.code", "=", code]]),
            json!(0),
            json!(null),
            json!(null),
            json!(["name"]),
        ],
    )
    .await
    .unwrap()
    .as_array()
    .unwrap()
    .clone()
}
