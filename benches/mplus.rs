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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ordersync::sandbox::{Sandbox, SandboxOptions};
use ordersync::sources::mplus::{parse_orders, soap, wire};

const LATENCY: Duration = Duration::from_millis(20);
const MAX_IN_FLIGHT: usize = 8;

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
    let (orders, _) = parse_orders("bench", &body).expect("parses");
    assert!(orders.iter().all(|o| o.mapped.is_ok()));
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let (orders, max) = parse_orders("bench", std::hint::black_box(&body)).expect("parses");
        std::hint::black_box((orders, max));
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
    let orders: usize = std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    ordersync::http::install_crypto();
    let mut opts = SandboxOptions::default();
    opts.mplus.faults.latency = LATENCY;
    opts.erp.faults.latency = LATENCY;
    opts.erp.ship_after = Some(Duration::ZERO);
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb.mplus.seed_orders(orders);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mplus"), &opts.mplus.secret).unwrap();
    std::fs::write(dir.path().join("erp"), &opts.erp.token).unwrap();
    let config = format!(
        r#"
[daemon]
state_dir = "state"
shipments_schedule = "*/1 * * * * *"
[erp]
kind = "http"
url = "{erp}"
token_file = "erp"
max_in_flight = {MAX_IN_FLIGHT}
[[sources]]
name = "bench"
kind = "mplus"
base_url = "{mplus}"
ident = "{ident}"
secret_file = "mplus"
schedule = "*/1 * * * * *"
page_size = 100
max_in_flight = {MAX_IN_FLIGHT}
rate_limit_per_sec = 100000
"#,
        erp = sb.erp_url,
        mplus = sb.mplus_url,
        ident = opts.mplus.ident,
    );
    let cfg = dir.path().join("ordersync.toml");
    std::fs::write(&cfg, config).unwrap();
    let before = sb.mplus.request_count();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordersync"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ordersync");
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if ids.iter().all(|id| sb.mplus.deliveries(id) >= 1) {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            eprintln!("gave up after 30 minutes");
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let n = ids.len() as f64;
    let per_order = (sb.mplus.request_count() - before) as f64 / n;
    let rate = n / elapsed.as_secs_f64();
    let bound = MAX_IN_FLIGHT as f64 / (per_order * LATENCY.as_secs_f64());
    println!(
        "till orders synced (pushed, reference written, delivered): {}",
        ids.len()
    );
    println!("wall time:                  {:.1} s", elapsed.as_secs_f64());
    println!("orders per second:          {rate:.1}");
    println!("till requests per order:    {per_order:.2}");
    println!(
        "latency bound:              {bound:.1} orders/s = {MAX_IN_FLIGHT} / ({per_order:.2} x 20 ms)"
    );
    println!("ratio to the bound:         {:.2}", rate / bound);
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
