//! Benchmark (ignored by default; a measurement, not a test): N orders into
//! one Tryton server, first by a plain sequential JSON-RPC client (search by
//! reference, create, quote, confirm: the recipe's loop), then by ordersync
//! (sandbox CloudSuite orders, the real engine, `max_in_flight` = each
//! value of the sweep, `batch_size` = each of BENCH_BATCH_SIZES). Prints
//! orders/s and the ratio. Debug build:
//!
//!     cargo test --test integration tryton::bench -- --ignored --nocapture
//!     BENCH_ORDERS=200 BENCH_SWEEP=1,2,4,8 BENCH_BATCH_SIZES=1,20 (the defaults)
//!     BENCH_PLAIN_BATCHES=10,50: also the plain client with that many sales
//!     per `create` / `quote` / `confirm` call
//!     BENCH_TRYTON_DB=postgresql: Tryton's own database on PostgreSQL (the
//!     tests' throwaway cluster) instead of SQLite
//!
//! Results go to docs/BENCHMARKS.md.

use std::time::Instant;

use ordersync::daemon::poll_live;
use ordersync::erp::tryton::rpc::decimal;
use ordersync::sandbox::CloudSuiteOrderSpec as OrderSpec;
use ordersync::sandbox::SandboxOptions;
use rust_decimal::Decimal;

use super::*;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn one(rpc: &Rpc, model: &str, domain: Value) -> i64 {
    rpc.model(
        model,
        "search",
        vec![domain, json!(0), json!(1), json!(null)],
    )
    .await
    .unwrap()[0]
        .as_i64()
        .unwrap()
}

/// The recipe's sequential client: 4 calls per sale, one line each. With
/// `batch` > 1, the same calls each carry `batch` sales (one search for their
/// references, one `create` of all, `quote` and `confirm` on the list): what
/// batching could gain on this server (issue 13.6).
async fn plain_client(rpc: &Rpc, n: usize, batch: usize) -> f64 {
    let party = rpc
        .model(
            "party.party",
            "create",
            vec![json!([{"name": "Bench customer"}])],
        )
        .await
        .unwrap()[0]
        .as_i64()
        .unwrap();
    let nl = one(rpc, "country.country", json!([["code", "=", "NL"]])).await;
    let address = rpc
        .model(
            "party.address",
            "create",
            vec![json!([{"party": party, "street": "Kerkstraat 1", "postal_code": "1017 GA", "city": "Amsterdam", "country": nl}])],
        )
        .await
        .unwrap()[0]
        .as_i64()
        .unwrap();
    let product = one(rpc, "product.product", json!([["code", "=", "205_STUK"]])).await;
    let started = Instant::now();
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(batch.max(1)) {
        let references: Vec<String> = chunk.iter().map(|i| format!("plain{batch}:{i}")).collect();
        let found = rpc
            .model(
                "sale.sale",
                "search",
                vec![
                    json!([["reference", "in", references]]),
                    json!(0),
                    json!(null),
                    json!(null),
                ],
            )
            .await
            .unwrap();
        assert_eq!(found, json!([]));
        let sales: Vec<Value> = references
            .iter()
            .map(|reference| {
                json!({"party": party, "reference": reference,
                    "invoice_address": address, "shipment_address": address,
                    "lines": [["create", [{"type": "line", "product": product, "unit": 1,
                        "quantity": 2.0, "unit_price": decimal(Decimal::new(695, 2))}]]]})
            })
            .collect();
        let created = rpc
            .model("sale.sale", "create", vec![json!(sales)])
            .await
            .unwrap();
        assert_eq!(created.as_array().map(Vec::len), Some(chunk.len()));
        for button in ["quote", "confirm"] {
            rpc.model("sale.sale", button, vec![created.clone()])
                .await
                .unwrap();
        }
    }
    started.elapsed().as_secs_f64()
}

/// ordersync: n sandbox orders, polled and pushed with `slots` calls at
/// once, `batch` orders per call; as many jobs in flight as the daemon's
/// worker keeps (pushes: slots × batch, plus the source's write-backs).
async fn ordersync_run(
    server: &TrytonServer,
    n: usize,
    (slots, batch): (usize, usize),
    first_id: i64,
) -> f64 {
    let mut opts = SandboxOptions::default();
    opts.cloudsuite.first_order_id = first_id;
    let erp = format!("max_in_flight = {slots}\nbatch_size = {batch}");
    let app = spawn_tryton_app_with(server, &erp, opts).await;
    let jobs = app.config.erp.push_slots() + app.config.sources[0].max_in_flight;
    for _ in 0..n {
        app.sandbox.cloudsuite.add_order(OrderSpec::default());
    }
    let engine = engine(&app);
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let started = Instant::now();
    poll_live(&engine, &connector, &stop).await;
    loop {
        engine.drain(SOURCE, None, jobs, &stop).await.unwrap();
        let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
        let count = |s: &str| status.orders.get(s).copied().unwrap_or(0);
        assert_eq!(count("parked"), 0, "{:?}", status.parked);
        if count("accepted") == n as i64 {
            break;
        }
        // Jobs waiting out a retry backoff (e.g. "database is locked").
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see the module doc"]
async fn tryton_push_throughput() {
    let n: usize = env_or("BENCH_ORDERS", "200").parse().unwrap();
    let sweep: Vec<usize> = env_or("BENCH_SWEEP", "1,2,4,8")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let server = match env_or("BENCH_TRYTON_DB", "sqlite").as_str() {
        "sqlite" => TrytonServer::start().await,
        "postgresql" => TrytonServer::start_postgres().await,
        other => panic!("BENCH_TRYTON_DB={other}: sqlite or postgresql"),
    };
    let rpc = server.rpc();
    let plain = plain_client(&rpc, n, 1).await;
    let plain_rate = n as f64 / plain;
    eprintln!("plain sequential client: {n} sales in {plain:.1} s = {plain_rate:.2} sales/s");
    let batches = env_or("BENCH_PLAIN_BATCHES", "");
    for batch in batches
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let secs = plain_client(&rpc, n, batch).await;
        let rate = n as f64 / secs;
        eprintln!(
            "plain client, {batch} sales per call: {n} sales in {secs:.1} s = {rate:.2} sales/s (x{:.2} of one per call)",
            rate / plain_rate
        );
    }
    let batch_sizes: Vec<usize> = env_or("BENCH_BATCH_SIZES", "1,20")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let runs = sweep
        .iter()
        .flat_map(|slots| batch_sizes.iter().map(move |batch| (*slots, *batch)));
    for (i, (slots, batch)) in runs.enumerate() {
        let secs = ordersync_run(&server, n, (slots, batch), 100_000 * (i as i64 + 1)).await;
        let rate = n as f64 / secs;
        eprintln!(
            "ordersync max_in_flight={slots} batch_size={batch}: {n} orders in {secs:.1} s = {rate:.2} orders/s (x{:.2} of plain)",
            rate / plain_rate
        );
    }
}
