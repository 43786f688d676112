//! Issue 15: sale lines carry the Tryton tax of their rate (by rate, or by
//! `erp.tax_map`), shipping and discounts too; gross prices become Tryton's
//! tax-exclusive unit prices, and Tryton's own `total_amount` and
//! `tax_amount` reproduce the source's figures. What Tryton cannot
//! reproduce is parked with both figures, and no sale is left behind.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::*;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn tryton_dec(v: &Value) -> Decimal {
    assert_eq!(v["__class__"], "Decimal", "{v}");
    dec(v["decimal"].as_str().unwrap())
}

fn order_json(id: &str, prices_include_tax: bool, rest: Value) -> String {
    let mut o = json!({
        "order_key": format!("{SOURCE}:{id}"), "source": SOURCE, "source_kind": "retailys",
        "external_id": id, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
        "prices_include_tax": prices_include_tax,
        "customer": {"name": "Jan de Vries", "email": format!("jan{id}@example.nl")},
        "billing_address": {"name": "Jan de Vries", "street": "Dorpsstraat 1",
                            "postcode": "1234 AB", "city": "Utrecht", "country": "NL"},
    });
    for (k, v) in rest.as_object().unwrap() {
        o[k] = v.clone();
    }
    o.to_string()
}

async fn tax_id(rpc: &Rpc, name: &str) -> i64 {
    search_read(
        rpc,
        "account.tax",
        json!([["name", "=", name]]),
        json!(["id"]),
    )
    .await[0]["id"]
        .as_i64()
        .unwrap()
}

/// The sale of an order key: (untaxed, tax, total) and per line (its
/// description, unit price, tax names), in creation order.
async fn sale_of(rpc: &Rpc, key: &str) -> (Value, Vec<(String, Decimal, Vec<String>)>) {
    let sales = search_read(
        rpc,
        "sale.sale",
        json!([["reference", "=", key]]),
        json!(["state", "untaxed_amount", "tax_amount", "total_amount"]),
    )
    .await;
    assert_eq!(sales.len(), 1, "{key}: one sale: {sales:?}");
    let lines = search_read(
        rpc,
        "sale.line",
        json!([["sale", "=", sales[0]["id"]]]),
        json!(["description", "unit_price", "taxes"]),
    )
    .await;
    let mut out = Vec::new();
    for l in lines {
        let ids = l["taxes"].clone();
        let names = search_read(
            rpc,
            "account.tax",
            json!([["id", "in", ids]]),
            json!(["name"]),
        )
        .await
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
        out.push((
            l["description"].as_str().unwrap_or_default().to_string(),
            tryton_dec(&l["unit_price"]),
            names,
        ));
    }
    (sales[0].clone(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_lines_get_the_tax_of_their_rate_and_tryton_reproduces_the_gross() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "confirm = true").await;
    let engine = engine(&app);

    // A product whose account category says 9%: a line without a rate gets it.
    let nine = tax_id(&rpc, "NL 9% verkoop").await;
    let category = rpc
        .model(
            "product.category",
            "create",
            vec![json!([{"name": "Boeken", "accounting": true,
                         "customer_taxes": [["add", [nine]]]}])],
        )
        .await
        .unwrap()[0]
        .clone();
    let book = search_read(
        &rpc,
        "product.product",
        json!([["code", "=", "215_DOOS"]]),
        json!(["template"]),
    )
    .await;
    rpc.model(
        "product.template",
        "write",
        vec![
            json!([book[0]["template"]]),
            json!({"account_category": category}),
        ],
    )
    .await
    .unwrap();

    // Gross prices (Retailys-like): 2 × 12.10 at 21%, 0.530 kg × 12.99 at
    // 9%, a box without a rate (its category: 9%), shipping 4.95 and a
    // discount of 2.00, both at the highest rate (21%).
    // Net: 20.00 + 6.31 + 9.17 + 4.09 − 1.65 = 37.92; tax 4.20 + 0.57 +
    // 0.83 + 0.86 − 0.35 = 6.11; gross 44.03.
    let gross = order_json(
        "7001",
        true,
        json!({
            "lines": [
                {"source_line_id": "1", "sku": "124_STUK", "quantity": "2", "unit_price": "12.10",
                 "tax_rate": "21", "line_total": "24.20"},
                {"source_line_id": "2", "sku": "301_KG", "quantity": "0.530", "unit_price": "12.99",
                 "tax_rate": "9", "line_total": "6.88"},
                {"source_line_id": "3", "sku": "215_DOOS", "quantity": "1", "unit_price": "10.00",
                 "line_total": "10.00"}],
            "shipping": {"method": "PostNL", "amount": "4.95"},
            "discounts": [{"description": "Welkomstkorting", "amount": "2.00"}],
            "totals": {"net": "37.92", "tax": "6.11", "gross": "44.03"}
        }),
    );
    // Net prices with rates (CloudSuite-like, a tenant that sends tax_rate).
    let net = order_json(
        "7002",
        false,
        json!({
            "lines": [{"source_line_id": "1", "sku": "124_STUK", "quantity": "3", "unit_price": "19.99",
                       "tax_rate": "21", "line_total": "59.97"},
                      {"source_line_id": "2", "sku": "201_STUK", "quantity": "1", "unit_price": "5.00",
                       "tax_rate": "0", "line_total": "5.00"}],
            "shipping": {"amount": "4.13"},
            "totals": {"net": "69.10"}
        }),
    );
    // A book at 9% and shipping the shop charged at 21% (net prices, a
    // stated gross): 19.99 × 1.09 + 5.00 × 1.21 = 27.84. The lines' rate
    // would make it 27.24; the stated gross says which rate shipping got.
    let shipped_at_21 = order_json(
        "7003",
        false,
        json!({
            "lines": [{"source_line_id": "1", "sku": "124_STUK", "quantity": "1", "unit_price": "19.99",
                       "tax_rate": "9", "line_total": "19.99"}],
            "shipping": {"amount": "5.00"},
            "totals": {"net": "24.99", "tax": "2.85", "gross": "27.84"}
        }),
    );
    for (key, order) in [("7001", &gross), ("7002", &net), ("7003", &shipped_at_21)] {
        engine
            .erp
            .push(&format!("{SOURCE}:{key}"), order)
            .await
            .unwrap_or_else(|e| panic!("order {key} refused: {e}"));
    }

    let (sale, lines) = sale_of(&rpc, &format!("{SOURCE}:7001")).await;
    assert_eq!(sale["state"], "processing", "{sale}");
    let taxes: Vec<(&str, Vec<String>)> = lines
        .iter()
        .map(|(d, _, t)| (d.as_str(), t.clone()))
        .collect();
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(taxes[0].1, names(&["NL 21% verkoop"]), "{taxes:?}");
    assert_eq!(taxes[1].1, names(&["NL 9% verkoop"]), "{taxes:?}");
    assert_eq!(
        taxes[2].1,
        names(&["NL 9% verkoop"]),
        "product default: {taxes:?}"
    );
    assert_eq!(
        taxes[3].1,
        names(&["NL 21% verkoop"]),
        "shipping: {taxes:?}"
    );
    assert_eq!(
        taxes[4].1,
        names(&["NL 21% verkoop"]),
        "discount: {taxes:?}"
    );
    let prices: Vec<Decimal> = lines.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(
        prices,
        vec![
            dec("10"),
            dec("11.9057"),
            dec("9.17"),
            dec("4.09"),
            dec("-1.65")
        ],
        "tax-exclusive unit prices"
    );
    // Tryton rounds tax per document (9%: 15.48 → 1.39, where the source
    // rounded per line, 0.57 + 0.83): within one cent per line, as promised.
    let (untaxed, tax, total) = (
        tryton_dec(&sale["untaxed_amount"]),
        tryton_dec(&sale["tax_amount"]),
        tryton_dec(&sale["total_amount"]),
    );
    let per_line = Decimal::new(lines.len() as i64, 2);
    assert_eq!(untaxed, dec("37.92"), "net as the source states it");
    assert!(
        (total - dec("44.03")).abs() <= per_line,
        "gross reproduced: {total}"
    );
    assert!(
        (tax - dec("6.11")).abs() <= per_line,
        "tax reproduced: {tax}"
    );
    assert_eq!(untaxed + tax, total);
    assert_eq!(
        (total, tax),
        (dec("44.02"), dec("6.10")),
        "Tryton's own figures"
    );

    let (sale, lines) = sale_of(&rpc, &format!("{SOURCE}:7002")).await;
    assert_eq!(
        lines.iter().map(|(_, _, t)| t.clone()).collect::<Vec<_>>(),
        vec![
            names(&["NL 21% verkoop"]),
            names(&["NL 0% verkoop"]),
            names(&["NL 21% verkoop"])
        ],
        "the highest rate for shipping"
    );
    assert_eq!(
        lines.iter().map(|(_, p, _)| *p).collect::<Vec<_>>(),
        vec![dec("19.99"), dec("5"), dec("4.13")],
        "net prices go in as the source sends them"
    );
    assert_eq!(tryton_dec(&sale["untaxed_amount"]), dec("69.10"));
    // 21% of 59.97 + 4.13 = 64.10 → 13.461 → 13.46.
    assert_eq!(tryton_dec(&sale["tax_amount"]), dec("13.46"));
    assert_eq!(tryton_dec(&sale["total_amount"]), dec("82.56"));

    let (sale, lines) = sale_of(&rpc, &format!("{SOURCE}:7003")).await;
    assert_eq!(
        lines.iter().map(|(_, _, t)| t.clone()).collect::<Vec<_>>(),
        vec![names(&["NL 9% verkoop"]), names(&["NL 21% verkoop"])],
        "shipping at the rate the stated gross was charged at"
    );
    assert_eq!(tryton_dec(&sale["total_amount"]), dec("27.84"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_tryton_cannot_reproduce_is_parked_naming_both_figures_and_leaves_no_sale() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "confirm = true").await;
    let engine = engine(&app);
    // A second sale tax at 21%, besides the template's.
    let accounts = search_read(
        &rpc,
        "account.account",
        json!([["code", "=", "1500"]]),
        json!(["company"]),
    )
    .await;
    rpc.model(
        "account.tax",
        "create",
        vec![
            json!([{"name": "NL 21% diensten", "description": "NL 21% diensten",
                     "type": "percentage", "rate": {"__class__": "Decimal", "decimal": "0.21"},
                     "company": accounts[0]["company"], "invoice_account": accounts[0]["id"],
                     "credit_note_account": accounts[0]["id"]}]),
        ],
    )
    .await
    .unwrap();
    let line = |rate: Option<&str>| {
        let mut l = json!({"source_line_id": "1", "sku": "124_STUK", "quantity": "2",
                           "unit_price": "19.99", "line_total": "39.98"});
        if let Some(r) = rate {
            l["tax_rate"] = json!(r);
        }
        l
    };
    // The source states a gross at 21%, but its lines have no rate and the
    // product's default tax (its category, in the fixture) is 9%: Tryton's
    // total would be 43.58.
    let no_tax = order_json(
        "7101",
        false,
        json!({"lines": [line(None)], "totals": {"net": "39.98", "gross": "48.38"}}),
    );
    let err = engine
        .erp
        .push(&format!("{SOURCE}:7101"), &no_tax)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Failure::Permanent { .. }), "{msg}");
    assert!(
        msg.contains("7101") && msg.contains("43.58") && msg.contains("48.38"),
        "both figures named: {msg}"
    );
    assert!(
        sales_for(&rpc, &format!("{SOURCE}:7101")).await.is_empty(),
        "the draft was removed"
    );

    // A rate the company has no sale tax for (the 21% purchase tax never counts).
    let six = order_json(
        "7102",
        false,
        json!({"lines": [line(Some("6"))], "totals": {"net": "39.98"}}),
    );
    let msg = engine
        .erp
        .push(&format!("{SOURCE}:7102"), &six)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("7102")
            && msg.contains("line 1")
            && msg.contains("6%")
            && msg.contains("NL 9% verkoop"),
        "{msg}"
    );
    assert!(
        !msg.contains("inkoop"),
        "a purchase tax is not a sale tax: {msg}"
    );
    assert!(sales_for(&rpc, &format!("{SOURCE}:7102")).await.is_empty());

    // Two sale taxes at 21% (made above): ambiguous until erp.tax_map names one.
    let twenty_one = order_json(
        "7103",
        false,
        json!({"lines": [line(Some("21"))], "totals": {"net": "39.98"}}),
    );
    let msg = engine
        .erp
        .push(&format!("{SOURCE}:7103"), &twenty_one)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2 Tryton sale taxes")
            && msg.contains("NL 21% diensten")
            && msg.contains("erp.tax_map"),
        "{msg}"
    );
    let mapped = spawn_tryton_app(
        &server,
        "confirm = true\ntax_map = { \"21\" = \"NL 21% diensten\" }",
    )
    .await;
    super::engine(&mapped)
        .erp
        .push(&format!("{SOURCE}:7103"), &twenty_one)
        .await
        .unwrap();
    let (sale, lines) = sale_of(&rpc, &format!("{SOURCE}:7103")).await;
    assert_eq!(lines[0].2, vec!["NL 21% diensten".to_string()]);
    // 39.98 × 21% = 8.3958 → 8.40.
    assert_eq!(tryton_dec(&sale["tax_amount"]), dec("8.40"));
    assert_eq!(tryton_dec(&sale["total_amount"]), dec("48.38"));
}
