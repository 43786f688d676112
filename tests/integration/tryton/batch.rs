//! Batched pushes (`erp.batch_size`) against a real trytond, seen through a
//! recording proxy: orders pushed together share one `create`, `quote` and
//! `confirm`; a sale Tryton refuses inside a batch fails alone, the others
//! are pushed once each.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ordersync::sandbox::{CloudSuiteLineSpec as LineSpec, CloudSuiteOrderSpec as OrderSpec};
use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::common::key;

/// A JSON-RPC call that went through the proxy: method and how many
/// records (or ids) its first parameter held.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    records: usize,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    /// A `party.party` create whose request holds this text is answered
    /// with Tryton's refusal of an e-mail address (as its `party` module
    /// does when `email_validator` is installed, which the test venv is
    /// not), instead of being forwarded.
    refuse_party: Option<&'static str>,
}

/// Forwards every request to trytond unchanged and records what it was.
async fn forward(
    State(proxy): State<Proxy>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    if let Ok(call) = serde_json::from_slice::<Value>(&body) {
        let method = call["method"].as_str().unwrap_or_default().to_string();
        proxy.calls.lock().unwrap().push(Call {
            method: method.clone(),
            records: call["params"][0].as_array().map_or(0, Vec::len),
        });
        if let Some(marker) = proxy.refuse_party
            && method == "model.party.party.create"
            && String::from_utf8_lossy(&body).contains(marker)
        {
            let refusal = json!({"id": call["id"], "error": ["UserError", [
                format!("The e-mail address \"{marker}\" for party is not valid."),
                "The part after the @-sign is not valid.",
            ]]});
            return (StatusCode::OK, Bytes::from(refusal.to_string()));
        }
    }
    let mut request = proxy
        .client
        .post(format!("{}{}", proxy.upstream, uri.path()))
        .body(body);
    for name in ["authorization", "content-type"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.as_bytes());
        }
    }
    match request.send().await {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status().as_u16()).unwrap();
            (status, reply.bytes().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
    }
}

/// Starts the proxy in front of `server`; its URL (same database path).
async fn proxy(server: &TrytonServer) -> (String, Arc<Mutex<Vec<Call>>>) {
    proxy_refusing(server, None).await
}

/// [`proxy`], refusing each party create that holds `refuse_party`.
async fn proxy_refusing(
    server: &TrytonServer,
    refuse_party: Option<&'static str>,
) -> (String, Arc<Mutex<Vec<Call>>>) {
    let url = reqwest::Url::parse(&server.url).unwrap();
    let upstream = format!("http://{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let state = Proxy {
        upstream,
        client: reqwest::Client::new(),
        calls: Arc::clone(&calls),
        refuse_party,
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}{}", url.path()), calls)
}

/// The calls of `method` so far, as their record counts.
fn sizes(calls: &Mutex<Vec<Call>>, method: &str) -> Vec<usize> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == method)
        .map(|c| c.records)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_pushed_together_share_each_call_and_a_refused_sale_fails_alone() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let (url, calls) = proxy(&server).await;
    let app = spawn_tryton_app_via(&url, "confirm = true\nbatch_size = 4\nmax_in_flight = 1").await;
    let cs = &app.sandbox.cloudsuite;
    // No shipping costs: which rate a source's shipping carries is not what
    // this test is about (tests/integration/tryton/taxes.rs is).
    let spec = |sku: &str| OrderSpec {
        lines: vec![LineSpec::new(sku, Decimal::ONE)],
        shipping_costs: Some(Decimal::ZERO),
        ..Default::default()
    };
    let first: Vec<i64> = (0..8).map(|_| cs.add_order(spec("124_STUK"))).collect();
    let engine = engine(&app);
    sync(&engine).await;
    let creates = sizes(&calls, "model.sale.sale.create");
    let confirms = sizes(&calls, "model.sale.sale.confirm");
    assert!(
        creates.iter().all(|n| *n <= 4) && creates.iter().sum::<usize>() == 8,
        "8 sales created, at most 4 per call: {creates:?}"
    );
    assert!(
        creates.len() < 8 && confirms.len() < 8,
        "some sales shared a create and a confirm: creates {creates:?}, confirms {confirms:?}"
    );

    // Tryton refuses a sale of a product no longer salable (the line's
    // domain): the create that holds it is rolled back as a whole.
    let product = rpc
        .model(
            "product.product",
            "search_read",
            vec![
                json!([["code", "=", "201_STUK"]]),
                json!(0),
                json!(1),
                json!(null),
                json!(["template"]),
            ],
        )
        .await
        .unwrap();
    rpc.model(
        "product.template",
        "write",
        vec![json!([product[0]["template"]]), json!({"salable": false})],
    )
    .await
    .unwrap();
    let refused = cs.add_order(spec("201_STUK"));
    let second: Vec<i64> = (0..3).map(|_| cs.add_order(spec("124_STUK"))).collect();
    calls.lock().unwrap().clear();
    sync(&engine).await;
    let creates = sizes(&calls, "model.sale.sale.create");
    assert!(
        creates.iter().any(|n| *n > 1),
        "the refused sale was in a batched create: {creates:?}"
    );

    for id in first.iter().chain(&second) {
        let k = key(*id);
        let sales = sales_for(&rpc, &k).await;
        assert_eq!(
            sales.len(),
            1,
            "{k}: exactly one sale: {sales:?}; {}",
            crate::common::status_json(&app)
        );
        assert_eq!(sales[0]["state"], "processing", "{k}");
        let source = cs.order(*id).unwrap();
        assert_eq!(source["erp_order_number"], sales[0]["number"], "{k}");
    }
    let k = key(refused);
    assert!(sales_for(&rpc, &k).await.is_empty(), "{k}: no sale");
    let status = crate::common::status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(
        parked.len(),
        1,
        "only the refused order is parked: {status}"
    );
    assert_eq!(parked[0]["order_key"], k.as_str());
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(reason.contains("Tryton"), "{k}: Tryton's reason: {reason}");
}

/// Issue 13.6: a batch looks its customers up together (one search of the
/// identifiers, one of the e-mails), creates the new ones in one call with
/// their addresses, and reads the known parties' addresses once. The
/// result is what one order at a time gives: a customer is one party
/// whether known by id or by e-mail, each distinct address is created
/// once, a known party's known address is reused and its new addresses
/// are created together. A customer known by name only is looked up by
/// name and postcode with the others (found, or created in the batch's
/// one create), and without a postcode gets a new party of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_finds_and_creates_its_customers_together_one_party_each() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let (url, calls) = proxy(&server).await;
    let app =
        spawn_tryton_app_via(&url, "confirm = false\nbatch_size = 16\nmax_in_flight = 1").await;
    let engine = engine(&app);
    // Customers Tryton knows already, with one address each: one by id,
    // one by name only.
    let known = json!({"source_customer_id": "5003", "name": "Bakkerij De Korf"});
    let known_by_name = json!({"name": "Kaaswinkel Gouda"});
    push_all(
        &engine,
        vec![
            order("8000", known.clone(), address("Dorpsstraat 3"), None),
            order(
                "8100",
                known_by_name.clone(),
                address("Dorpsstraat 5"),
                None,
            ),
        ],
    )
    .await;
    calls.lock().unwrap().clear();

    let by_id = json!({"source_customer_id": "5001", "name": "Jan de Vries"});
    let by_email = json!({"name": "Els Jansen", "email": "els@example.nl"});
    let by_name = json!({"name": "Piet Puk"});
    let mut nowhere = address("Nergensweg 1");
    nowhere["country"] = json!("XX");
    let answers = push_all(
        &engine,
        vec![
            order("8001", by_id.clone(), address("Dorpsstraat 1"), None),
            order("8002", by_email.clone(), address("Kerkweg 2"), None),
            order(
                "8003",
                by_id.clone(),
                address(" Dorpsstraat 1 "),
                Some(address("Havenkade 9")),
            ),
            order("8004", by_email.clone(), address("Kerkweg 2"), None),
            order("8005", known.clone(), address("Dorpsstraat 3"), None),
            order("8006", by_name.clone(), address("Molenlaan 4"), None),
            order("8007", json!({"source_customer_id": "5004"}), nowhere, None),
            order(
                "8008",
                json!({"source_customer_id": "5005", "name": "Zonder Adres"}),
                Value::Null,
                None,
            ),
            // The known customer at a new address, twice, once with a new
            // shipping address too.
            order(
                "8009",
                known.clone(),
                address("Marktplein 7"),
                Some(address("Stationsweg 2")),
            ),
            order("8010", known.clone(), address("Marktplein 7"), None),
            // By name and postcode: the known one at a new street, the new
            // one again, and the new one's name with no postcode.
            order("8011", known_by_name, address("Kerkstraat 8"), None),
            order("8012", by_name.clone(), address("Molenlaan 4"), None),
            order(
                "8013",
                by_name,
                json!({"street": "Molenlaan 4", "city": "Utrecht", "country": "NL"}),
                None,
            ),
        ],
    )
    .await;
    // An address in a country Tryton does not know fails its order alone,
    // saying which.
    for (k, answer) in &answers {
        if k.ends_with(":8007") {
            let e = answer.as_ref().expect_err("an unknown country is refused");
            assert!(e.contains("country XX not found"), "{k}: {e}");
        } else {
            assert!(answer.is_ok(), "{k}: {answer:?}");
        }
    }

    let count = |method: &str| sizes(&calls, method).len();
    assert_eq!(
        sizes(&calls, "model.sale.sale.create"),
        vec![12],
        "one batch of twelve sales (the thirteenth refused before it)"
    );
    assert_eq!(
        count("model.party.identifier.search_read"),
        1,
        "identifiers in one search"
    );
    assert_eq!(
        count("model.party.contact_mechanism.search_read"),
        1,
        "e-mails in one search"
    );
    assert_eq!(
        count("model.party.party.search_read"),
        1,
        "names and postcodes in one search, no customer looked up on its own"
    );
    assert_eq!(
        count("model.party.address.search_read"),
        2,
        "the named parties' postcodes, then the known addresses, in one read each"
    );
    // Four new customers (by id, by e-mail, by name and postcode, one with
    // no address: it gets a blank one inline, as its sale needs an
    // address) in one create; the one with no postcode and the one in an
    // unknown country go the per-order way.
    let mut creates = sizes(&calls, "model.party.party.create");
    creates.sort_unstable();
    assert_eq!(creates, vec![1, 1, 4], "party creates: {creates:?}");
    // The known customers' three new addresses in one create; only the
    // address of the customer with no postcode is created on its own.
    let mut address_creates = sizes(&calls, "model.party.address.create");
    address_creates.sort_unstable();
    assert_eq!(address_creates, vec![1, 3], "address creates");

    // By id: one party, two addresses (the billing one given twice, once
    // with blanks around it), each order's own.
    let (s1, s3) = (sale(&rpc, "8001").await, sale(&rpc, "8003").await);
    assert_eq!(s1["party"], s3["party"], "one party for customer 5001");
    let parties = parties_by_code(&rpc, "webshop-nl:5001").await;
    assert_eq!(parties.len(), 1, "{parties:?}");
    assert_eq!(addresses_of(&rpc, s1["party"].clone()).await.len(), 2);
    assert_eq!(s1["invoice_address"], s3["invoice_address"]);
    assert_eq!(s1["shipment_address"], s1["invoice_address"]);
    assert_eq!(
        street(&rpc, s3["shipment_address"].clone()).await,
        "Havenkade 9"
    );
    assert_eq!(
        street(&rpc, s3["invoice_address"].clone()).await,
        "Dorpsstraat 1"
    );

    // By e-mail: one party, one address.
    let (s2, s4) = (sale(&rpc, "8002").await, sale(&rpc, "8004").await);
    assert_eq!(s2["party"], s4["party"], "one party for els@example.nl");
    let mechanisms = search_read(
        &rpc,
        "party.contact_mechanism",
        json!([["value", "=", "els@example.nl"]]),
        json!(["party"]),
    )
    .await;
    assert_eq!(mechanisms.len(), 1, "{mechanisms:?}");
    assert_eq!(s2["invoice_address"], s4["invoice_address"]);
    assert_eq!(addresses_of(&rpc, s2["party"].clone()).await.len(), 1);

    // Known before the batch: the same party and address as its first sale.
    let (s0, s5) = (sale(&rpc, "8000").await, sale(&rpc, "8005").await);
    assert_eq!(s0["party"], s5["party"]);
    assert_eq!(s0["invoice_address"], s5["invoice_address"]);
    // Its new addresses: each once, on the same party, each sale's own.
    let (s9, s10) = (sale(&rpc, "8009").await, sale(&rpc, "8010").await);
    assert_eq!(s9["party"], s0["party"]);
    assert_eq!(s10["party"], s0["party"]);
    assert_eq!(addresses_of(&rpc, s0["party"].clone()).await.len(), 3);
    assert_eq!(s9["invoice_address"], s10["invoice_address"]);
    assert_eq!(
        street(&rpc, s9["invoice_address"].clone()).await,
        "Marktplein 7"
    );
    assert_eq!(
        street(&rpc, s9["shipment_address"].clone()).await,
        "Stationsweg 2"
    );
    assert_eq!(s10["shipment_address"], s10["invoice_address"]);

    // By name only: a party of its own with its address.
    let s6 = sale(&rpc, "8006").await;
    assert_eq!(
        street(&rpc, s6["invoice_address"].clone()).await,
        "Molenlaan 4"
    );
    // Again: the same party and address. Without a postcode: a new party.
    let (s12, s13) = (sale(&rpc, "8012").await, sale(&rpc, "8013").await);
    assert_eq!(s12["party"], s6["party"]);
    assert_eq!(s12["invoice_address"], s6["invoice_address"]);
    assert_ne!(s13["party"], s6["party"]);
    // Known by name before the batch: found, its new street added.
    let (s100, s11) = (sale(&rpc, "8100").await, sale(&rpc, "8011").await);
    assert_eq!(s11["party"], s100["party"]);
    assert_eq!(addresses_of(&rpc, s11["party"].clone()).await.len(), 2);
    assert_eq!(
        street(&rpc, s11["invoice_address"].clone()).await,
        "Kerkstraat 8"
    );
    let distinct: std::collections::HashSet<String> = [&s0, &s1, &s2, &s6, &s13, &s100]
        .iter()
        .map(|s| s["party"].to_string())
        .collect();
    assert_eq!(distinct.len(), 6, "six customers, six parties");

    // No address given: one blank address, the sale's both ways.
    let s8 = sale(&rpc, "8008").await;
    assert_eq!(addresses_of(&rpc, s8["party"].clone()).await.len(), 1);
    assert_eq!(s8["invoice_address"], s8["shipment_address"]);
}

/// A customer with nothing to know it by (a till's walk-in sale: the
/// MplusKASSA notes show `relationNumber` and `relationName`, and no
/// document says an order has them) is the source's one walk-in party,
/// found by its identifier `SOURCE#walk-in`; a customer known by e-mail
/// only gets a party named by that e-mail. One order at a time and batched
/// alike; both were refused before ("the customer has no id, name, company
/// or e-mail").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_in_and_email_only_customers_get_their_party() {
    for (batch_size, base) in [(1, 8300), (8, 8400)] {
        let server = TrytonServer::start().await;
        let rpc = server.rpc();
        let (url, _calls) = proxy(&server).await;
        let app = spawn_tryton_app_via(
            &url,
            &format!("confirm = false\nbatch_size = {batch_size}\nmax_in_flight = 1"),
        )
        .await;
        let engine = engine(&app);
        let id = |n: u32| (base + n).to_string();
        let mut nameless = address("Laan 3");
        nameless.as_object_mut().unwrap().remove("name");
        let walk_in = json!({"phone": "+31 6 1234 5678"});
        let answers = push_all(
            &engine,
            vec![
                order(&id(1), json!({}), Value::Null, None),
                order(&id(2), walk_in.clone(), nameless.clone(), None),
                order(
                    &id(3),
                    json!({"email": "anna@example.nl"}),
                    nameless.clone(),
                    None,
                ),
            ],
        )
        .await;
        for (k, answer) in &answers {
            assert!(answer.is_ok(), "batch_size {batch_size}: {k}: {answer:?}");
        }
        // A later walk-in finds the same party.
        let later = push_all(&engine, vec![order(&id(4), json!({}), Value::Null, None)]).await;
        assert!(later[0].1.is_ok(), "{later:?}");

        let walk_ins = parties_by_code(&rpc, &format!("{SOURCE}#walk-in")).await;
        assert_eq!(walk_ins.len(), 1, "batch_size {batch_size}: {walk_ins:?}");
        assert_eq!(walk_ins[0]["name"], format!("{SOURCE} walk-in customer"));
        for n in [1, 2, 4] {
            let s = sale(&rpc, &id(n)).await;
            assert_eq!(
                s["party"], walk_ins[0]["id"],
                "batch_size {batch_size}: order {n}"
            );
        }
        // Not the first walk-in's phone: the party is everyone's.
        let phones = search_read(
            &rpc,
            "party.contact_mechanism",
            json!([["party", "=", walk_ins[0]["id"]]]),
            json!(["value"]),
        )
        .await;
        assert!(phones.is_empty(), "{phones:?}");
        let anna = sale(&rpc, &id(3)).await;
        let named = search_read(
            &rpc,
            "party.party",
            json!([["id", "=", anna["party"]]]),
            json!(["name"]),
        )
        .await;
        assert_eq!(named[0]["name"], "anna@example.nl");
    }
}

/// A Dutch address at `street`, as the canonical order carries it.
fn address(street: &str) -> Value {
    json!({"name": "Jan de Vries", "street": street, "postcode": "1234 AB",
           "city": "Utrecht", "country": "NL"})
}

/// A canonical order `id` of one line for `customer`: its key and JSON.
fn order(id: &str, customer: Value, billing: Value, shipping: Option<Value>) -> (String, String) {
    let mut o = json!({
        "order_key": format!("{SOURCE}:{id}"), "source": SOURCE, "source_kind": "cloudsuite",
        "external_id": id, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
        "prices_include_tax": false, "customer": customer, "billing_address": billing,
        "lines": [{"source_line_id": "1", "sku": "124_STUK", "quantity": "2",
                   "unit_price": "19.99", "line_total": "39.98"}],
        "totals": {"net": "39.98"}
    });
    if let Some(s) = shipping {
        o["shipping_address"] = s;
    }
    (format!("{SOURCE}:{id}"), o.to_string())
}

/// Pushes `orders` into the ERP at once (so they can share batches); each
/// key with its answer.
async fn push_all(
    engine: &Arc<Engine>,
    orders: Vec<(String, String)>,
) -> Vec<(String, Result<(), String>)> {
    let pushes = orders.iter().map(|(k, o)| engine.erp.push(k, o));
    let answers = futures_util::future::join_all(pushes).await;
    orders
        .into_iter()
        .zip(answers)
        .map(|((k, _), a)| (k, a.map(drop).map_err(|e| e.to_string())))
        .collect()
}

/// A customer Tryton refuses (an e-mail address its party module does not
/// accept; the proxy answers as Tryton would) is in the batch's one party
/// create with the others: Tryton refuses that create for all of them, the
/// batch goes on one order at a time, and only that order fails, with
/// Tryton's reason. The others get their sale and one party each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_tryton_refuses_fails_its_order_alone() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let (url, calls) = proxy_refusing(&server, Some("not-an-e-mail")).await;
    let app =
        spawn_tryton_app_via(&url, "confirm = false\nbatch_size = 8\nmax_in_flight = 1").await;
    let engine = engine(&app);
    let customer = |id: &str, email: &str| json!({"source_customer_id": id, "name": format!("Klant {id}"), "email": email});
    let answers = push_all(
        &engine,
        vec![
            order(
                "8101",
                customer("5101", "a@example.nl"),
                address("Laan 1"),
                None,
            ),
            order(
                "8102",
                customer("5102", "not-an-e-mail"),
                address("Laan 2"),
                None,
            ),
            order(
                "8103",
                customer("5103", "c@example.nl"),
                address("Laan 3"),
                None,
            ),
        ],
    )
    .await;
    let creates = sizes(&calls, "model.party.party.create");
    assert!(
        creates.contains(&3),
        "the three customers were in one create first: {creates:?}"
    );
    for (k, answer) in &answers {
        if k.ends_with(":8102") {
            let e = answer.as_ref().expect_err("Tryton refuses the e-mail");
            assert!(e.contains("not-an-e-mail"), "{k}: Tryton's reason: {e}");
        } else {
            assert!(answer.is_ok(), "{k}: {answer:?}");
            assert_eq!(sales_for(&rpc, k).await.len(), 1, "{k}: one sale");
        }
    }
    for code in ["5101", "5103"] {
        let parties = parties_by_code(&rpc, &format!("{SOURCE}:{code}")).await;
        assert_eq!(parties.len(), 1, "customer {code}: one party: {parties:?}");
    }
    assert!(
        parties_by_code(&rpc, &format!("{SOURCE}:5102"))
            .await
            .is_empty(),
        "no party for the refused customer"
    );
}

async fn parties_by_code(rpc: &Rpc, code: &str) -> Vec<Value> {
    search_read(
        rpc,
        "party.party",
        json!([["identifiers.code", "=", code]]),
        json!(["name"]),
    )
    .await
}

/// The sale of order `id`: its party and addresses.
async fn sale(rpc: &Rpc, id: &str) -> Value {
    let found = search_read(
        rpc,
        "sale.sale",
        json!([["reference", "=", format!("{SOURCE}:{id}")]]),
        json!(["party", "invoice_address", "shipment_address"]),
    )
    .await;
    assert_eq!(found.len(), 1, "order {id}: one sale: {found:?}");
    found[0].clone()
}

async fn street(rpc: &Rpc, address: Value) -> String {
    let found = search_read(
        rpc,
        "party.address",
        json!([["id", "=", address]]),
        json!(["street"]),
    )
    .await;
    found[0]["street"].as_str().unwrap_or_default().to_string()
}

async fn addresses_of(rpc: &Rpc, party: Value) -> Vec<Value> {
    search_read(
        rpc,
        "party.address",
        json!([["party", "=", party]]),
        json!(["street"]),
    )
    .await
}
