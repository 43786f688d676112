//! Benchmarks for the MplusKASSA source (issue 3). Not tests: nothing here
//! asserts a speed. Results go to docs/BENCHMARKS.md.
//!
//!     cargo bench --bench mplus -- parse    # getOrders answer, 100 orders x 10 lines
//!     cargo bench --bench mplus -- sync     # real binary, 5,000 till orders, 20 ms latency
//!     BENCH_ORDERS=500 cargo bench --bench mplus -- sync
//!
//! `parse` times `sources::mplus::parse_orders`: splitting the SOAP answer
//! into `<order>` elements, deserializing each and mapping it to the
//! canonical order. `sync` runs `ordersync run` against the sandbox until
//! every order is in the ERP with its reference written and its lines
//! delivered (getOrders, push, getOrder + updateOrder, getOrder +
//! deliverOrderV2), `max_in_flight = 8`, page size 100.

mod common;

use std::time::{Duration, Instant};

use common::{latency, orders_wanted, report, run_until, write_config};

use ordersync::sandbox::{Sandbox, SandboxOptions};
use ordersync::sources::mplus::{parse_orders, soap, wire};

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

async fn sync_bench() {
    ordersync::http::install_crypto();
    let mut opts = SandboxOptions::default();
    opts.mplus.faults.latency = latency();
    opts.erp.faults.latency = latency();
    opts.erp.ship_after = Some(Duration::ZERO);
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb.mplus.seed_orders(orders_wanted());
    let source = format!(
        "kind = \"mplus\"\nbase_url = \"{}\"\nident = \"{}\"\nsecret_file = \"mplus\"\n",
        sb.mplus_url, opts.mplus.ident
    );
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("mplus", &opts.mplus.secret)],
    );
    let (till_before, erp_before) = (sb.mplus.request_count(), sb.erp.request_count());
    let (elapsed, usage) =
        run_until(&cfg, || ids.iter().all(|id| sb.mplus.deliveries(id) >= 1)).await;
    report(
        "till orders synced (pushed, reference written, delivered)",
        ids.len(),
        elapsed,
        sb.mplus.request_count() - till_before,
        sb.erp.request_count() - erp_before,
        usage,
    );
    sb.shutdown().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests
    }
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
