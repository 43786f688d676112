//! Benchmarks for the MplusKASSA source (issue 3, issue 13). Not tests:
//! nothing here asserts a speed. Results go to docs/BENCHMARKS.md.
//!
//!     cargo bench --bench mplus -- parse    # getOrders answer, 100 orders x 10 lines
//!     cargo bench --bench mplus -- sync     # 5,000 till orders, 20 ms latency
//!     BENCH_ORDERS=500 cargo bench --bench mplus -- sync
//!     BENCH_LATENCY_MS=0 ... ; BENCH_SHIPPED=0 ... ; BENCH_SOURCE_RATE=100 ...
//!
//! `parse` times `sources::mplus::parse_orders`: splitting the SOAP answer
//! into `<order>` elements, deserializing each and mapping it to the
//! canonical order.
//!
//! `sync` runs two clients one after the other in this one process, each
//! against its own identically seeded sandbox (same till orders), every
//! request at either simulator held `BENCH_LATENCY_MS` (default 20 ms),
//! `max_in_flight = 8`, page size 100:
//!
//! - the naive peer (`common/naive_mplus.rs`): getOrders by sync marker,
//!   then 8 workers: push, getOrder + updateOrder (reference), no ledger;
//! - the real `ordersync run` release binary.
//!
//! Both are timed the same way as in `benches/sync.rs`: from the first
//! request either simulator sees until every pushable order is in the ERP
//! with its reference written at the till. The ERP ships nothing during that
//! time. Then, timed separately and for ordersync only, the ERP ships every
//! order and the daemon runs until each order's lines are delivered
//! (getOrder + deliverOrderV2).

mod common;

use std::time::Instant;

use common::naive_mplus::{self, Peer};
use common::{
    Daemon, MAX_IN_FLIGHT, Pending, Shipped, Side, Usage, daemon_side, latency, load, on,
    on_own_runtime, orders_wanted, print_comparison, print_shipped, print_start, self_cpu,
    source_rate, time_shipped, watch_daemon, write_config,
};

use ordersync::sandbox::{Sandbox, SandboxOptions};
use ordersync::sources::mplus::{parse_orders, soap, wire};

const SOURCE: &str = "bench";

fn answer(orders: usize, lines: usize) -> String {
    let mut body = String::new();
    for o in 0..orders {
        let line = (0..lines)
            .map(|l| wire::Line {
                line_id: format!("{o}-{l}"),
                article_number: 301 + l as i64,
                plu_number: Some(format!("{}_KG", 301 + l)),
                text: Some("Jonge kaas, per kilo".into()),
                line_type: Some("LINE-TYPE-NONE".into()),
                data: wire::LineData {
                    quantity: 530 + l as i64,
                    decimal_places: 3,
                    price: 1299,
                    vat_percentage: Some(9),
                    total_incl_amount: Some(((530 + l as i64) * 1299 + 500) / 1000),
                    ..Default::default()
                },
                preparation_list: None,
            })
            .collect::<Vec<_>>();
        let incl: i64 = line.iter().filter_map(|l| l.data.total_incl_amount).sum();
        let order = wire::Order {
            order_id: format!("5F3A{o:04X}-0001"),
            sync_marker: 1000 + o as i64,
            entry_timestamp: Some(wire::SoapDateTime {
                sec: 5,
                min: 15,
                hour: 10,
                day: 29,
                mon: 6,
                year: 2024,
                isdst: Some(true),
                timezone: Some(120),
            }),
            relation_number: Some(1324),
            relation_name: Some("Bakkerij De Korf".into()),
            invoice_address: Some(wire::Address {
                name: Some("De Korf".into()),
                address: Some("Dorpsstraat 1".into()),
                zipcode: Some("3511 AB".into()),
                city: Some("Utrecht".into()),
                country: Some("NL".into()),
                ..Default::default()
            }),
            total_incl_amount: incl,
            total_excl_amount: incl * 100 / 109,
            vat_method: Some("VAT-METHOD-INCLUSIVE".into()),
            order_number: Some(wire::YearNumber {
                year: 2024,
                number: o as i64,
            }),
            line_list: wire::LineList { line },
            ..Default::default()
        };
        body.push_str(&quick_xml::se::to_string_with_root("order", &order).expect("xml"));
    }
    soap::wrap(&format!(
        "<getOrdersResponse xmlns=\"urn:mplusqapi\"><orderList>{body}</orderList></getOrdersResponse>"
    ))
}

fn parse_bench() {
    let body = answer(100, 10);
    let orders = parse_orders("bench", &body).expect("parses").orders;
    assert!(orders.iter().all(|o| o.mapped.is_ok()));
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let batch = parse_orders("bench", std::hint::black_box(&body)).expect("parses");
        std::hint::black_box(batch);
    }
    let per_answer = started.elapsed() / rounds;
    println!(
        "getOrders answer: 100 orders x 10 lines, {} bytes",
        body.len()
    );
    println!(
        "parse + map per answer:   {:.2} ms",
        per_answer.as_secs_f64() * 1e3
    );
    println!(
        "parse + map per order:    {:.1} us",
        per_answer.as_secs_f64() * 1e6 / 100.0
    );
}

/// A sandbox with `n` seeded till orders (same seed every time) and the ids
/// of those to be pushed (not cancelled at the till).
async fn sandbox(n: usize) -> (Sandbox, SandboxOptions, Vec<String>) {
    let mut opts = SandboxOptions::default();
    opts.mplus.faults.latency = latency();
    opts.erp.faults.latency = latency();
    opts.erp.ship_after = None; // shipments only when the bench says so
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb.mplus.seed_orders(n);
    let pushable = ids
        .into_iter()
        .filter(|id| {
            sb.mplus
                .order(id)
                .is_some_and(|o| o.cancel_state.as_deref() != Some("ORDER-CANCEL-STATE-COMPLETE"))
        })
        .collect();
    (sb, opts, pushable)
}

/// In the ERP and written back: the till's `reference` holds the ERP number.
fn written_back(sb: &Sandbox, id: &str) -> bool {
    sb.mplus
        .order(id)
        .and_then(|o| o.reference)
        .is_some_and(|r| !r.trim().is_empty())
}

async fn naive_side(n: usize) -> (Side, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let (till0, erp0, cpu0) = (sb.mplus.request_count(), sb.erp.request_count(), self_cpu());
    let peer = Peer {
        mplus_url: sb.mplus_url.clone(),
        ident: opts.mplus.ident.clone(),
        secret: opts.mplus.secret.clone(),
        erp_url: sb.erp_url.clone(),
        erp_token: opts.erp.token.clone(),
        source: SOURCE.into(),
        workers: MAX_IN_FLIGHT,
        page_size: 100,
        source_rate: source_rate(),
    };
    let (run, cpu) = on_own_runtime(move || naive_mplus::run(peer)).await;
    let sims_cpu = self_cpu() - cpu0 - cpu;
    let all_done = Pending::new(&pushable).all(|id| written_back(&sb, id));
    let in_erp = sb.erp.orders().len();
    assert!(
        all_done && in_erp == pushable.len() && run.failed == 0,
        "naive peer: {} of {} pushable orders written back, {in_erp} in the ERP, {} failed",
        run.written_back,
        pushable.len(),
        run.failed
    );
    println!(
        "naive peer: listed {}, written back {}, skipped {} (cancelled); {} ORDER-HAS-CHANGED answers; {:.3} getOrders calls per order",
        run.listed,
        run.written_back,
        run.skipped,
        sb.mplus.conflicts(),
        sb.mplus.get_orders_calls() as f64 / pushable.len().max(1) as f64
    );
    let side = Side {
        elapsed: run.elapsed(),
        orders: pushable.len(),
        source_requests: sb.mplus.request_count() - till0,
        erp_requests: sb.erp.request_count() - erp0,
        cpu,
    };
    sb.shutdown().await;
    (side, sims_cpu)
}

async fn ordersync_side(n: usize) -> (Side, Option<Shipped>, Usage, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let source = format!(
        "kind = \"mplus\"\nbase_url = \"{}\"\nident = \"{}\"\nsecret_file = \"mplus\"\n",
        sb.mplus_url, opts.mplus.ident
    );
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("mplus", &opts.mplus.secret)],
        source_rate().unwrap_or(100_000),
    );
    let requests = || sb.mplus.request_count() + sb.erp.request_count();
    let (till0, erp0) = (sb.mplus.request_count(), sb.erp.request_count());
    let cpu0 = self_cpu();
    let daemon = Daemon::start(&cfg);
    let mut pending = Pending::new(&pushable);
    let timeline = watch_daemon(
        &daemon,
        requests,
        till0 + erp0,
        || !sb.erp.orders().is_empty(),
        || pending.all(|id| written_back(&sb, id)),
    )
    .await;
    let usage = daemon.usage();
    print_start(&daemon, &timeline);
    let (till1, erp1) = (sb.mplus.request_count(), sb.erp.request_count());
    let sims_cpu = self_cpu() - cpu0;
    assert_eq!(
        sb.erp.orders().len(),
        pushable.len(),
        "ordersync: ERP orders"
    );
    println!(
        "ordersync: {} ORDER-HAS-CHANGED answers; {:.3} getOrders calls per order",
        sb.mplus.conflicts(),
        sb.mplus.get_orders_calls() as f64 / pushable.len().max(1) as f64
    );
    let accepted = daemon_side(
        &timeline,
        &usage,
        pushable.len(),
        till1 - till0,
        erp1 - erp0,
    );
    if !on("BENCH_SHIPPED") {
        daemon.stop();
        sb.shutdown().await;
        return (accepted, None, usage, sims_cpu);
    }
    // The deliveries, timed on their own: the ERP ships everything now.
    let delivered = time_shipped(
        &sb,
        &pushable,
        |id| sb.mplus.deliveries(id) >= 1,
        || (sb.mplus.request_count(), sb.erp.request_count()),
    )
    .await;
    let total = daemon.usage();
    daemon.stop();
    sb.shutdown().await;
    (accepted, Some(delivered), total, sims_cpu)
}

async fn sync_bench() {
    ordersync::http::install_crypto();
    let n = orders_wanted();
    println!(
        "{n} seeded till orders, {} ms per request at each simulator, max_in_flight = {MAX_IN_FLIGHT}, load average before: {}",
        latency().as_millis(),
        load()
    );
    if let Some(rate) = source_rate() {
        println!("both clients limited to {rate} requests per second to the till (burst 1)");
    }
    let (naive, naive_sims) = naive_side(n).await;
    println!("load average after the naive peer: {}", load());
    let (ours, delivered, total, ours_sims) = ordersync_side(n).await;
    println!("load average after ordersync: {}", load());
    print_comparison(&naive, &ours, (naive_sims, ours_sims), None);
    println!();
    print_shipped(
        delivered.as_ref(),
        "delivered at the till",
        ours.orders,
        &total,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !common::start() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let only = |name: &str| {
        !args.iter().any(|a| a == "parse" || a == "sync") || args.iter().any(|a| a == name)
    };
    if only("parse") {
        parse_bench();
    }
    if only("sync") {
        sync_bench().await;
    }
}
