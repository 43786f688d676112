//! CloudSuite DESADV (issue 15): with `desadv = true` every ERP shipment
//! goes out once as a DESADV message carrying the ERP number, the line
//! numbers written back, the shipped quantities, carrier and track & trace;
//! an answer lost in transit or a SIGKILL neither doubles nor loses one.

use std::time::Duration;

use rand::SeedableRng;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::binary::run_daemon_until;
use crate::common::*;

const DESADV_KEYS: &str = "desadv = true\ndesadv_shop = 1\ndesadv_user = 1260";

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => s.parse().unwrap(),
        other => other.to_string().parse().unwrap(),
    }
}

/// Every order in `ids` has exactly one DESADV, matching the ERP's one
/// shipment line by line; `shipment_state` was left alone; nothing parked.
fn assert_one_desadv_each(app: &App, ids: &[i64]) {
    let cs = &app.sandbox.cloudsuite;
    let shipments = app.sandbox.erp.shipments();
    for &id in ids {
        let k = key(id);
        let desadvs = cs.desadvs(id);
        assert_eq!(desadvs.len(), 1, "{k}: {desadvs:?}");
        let d = &desadvs[0];
        let order = cs.order(id).unwrap();
        let shipment = shipments
            .iter()
            .find(|s| s.order_key == k)
            .expect("shipped");
        assert_eq!(d.carrier.as_deref(), Some(shipment.carrier.as_str()), "{k}");
        assert_eq!(
            d.tracking.as_deref(),
            Some(shipment.tracking_number.as_str()),
            "{k}"
        );
        let lines: Vec<&Value> = order["order_lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "line")
            .collect();
        assert_eq!(d.items.len(), lines.len(), "{k}: one item per line: {d:?}");
        for (item, line) in d.items.iter().zip(&lines) {
            assert_eq!(
                item.order_num,
                order["erp_order_number"].as_str().unwrap(),
                "{k}"
            );
            assert_eq!(item.item_num, line["erp_line_number"].to_string(), "{k}");
            assert_eq!(item.quantity, dec(&line["quantity"]).normalize(), "{k}");
            assert_eq!(
                item.seller_item_id.as_deref(),
                line["product"]["key"].as_str(),
                "{k}"
            );
        }
        assert!(
            order["shipment_state"].is_null(),
            "{k}: DESADV replaces shipment_state=sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shipment_goes_out_once_as_a_desadv_even_when_answers_are_lost() {
    let mut opts = AppOptions {
        source_extra: DESADV_KEYS.into(),
        ..Default::default()
    };
    // The handler runs, then the connection is cut: the connector cannot
    // know whether CloudSuite has the message, and sends it again.
    opts.sandbox.cloudsuite.faults.drop_rate = 0.15;
    let app = spawn_app(opts).await;
    app.sandbox
        .cloudsuite
        .seed_orders(80, 31, Duration::from_secs(3600));
    let ids = app.pushable_ids();
    assert!(ids.len() >= 50, "{} pushable", ids.len());
    let engine = app.engine();
    let cs = &app.sandbox.cloudsuite;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ids.iter().all(|id| !cs.desadvs(*id).is_empty()) {
        assert!(std::time::Instant::now() < deadline, "no convergence");
        app.sync(&engine).await;
    }
    app.sync(&engine).await;
    assert_one_desadv_each(&app, &ids);
    assert!(
        cs.desadv_repeats() > 0,
        "a lost answer was retried with the same DesadvNumber and refused as a repeat"
    );
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desadv_survives_sigkill_at_random_moments() {
    let mut opts = AppOptions {
        source_extra: DESADV_KEYS.into(),
        max_in_flight: 4,
        ..Default::default()
    };
    // Slow enough that ten kills land while work is left, even now that a
    // first write-back attempt writes without reading.
    opts.sandbox.cloudsuite.faults.latency = Duration::from_millis(20);
    let app = spawn_app(opts).await;
    app.sandbox
        .cloudsuite
        .seed_orders(160, 57, Duration::from_secs(3600));
    let ids = app.pushable_ids();
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("desadv crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cs = &app.sandbox.cloudsuite;
    let finished = || ids.iter().all(|id| !cs.desadvs(*id).is_empty());
    let kills = tokio::task::block_in_place(|| {
        crate::crash::kill_at_random_moments(&app, &mut rng, 10, 40, 500, finished)
    });
    assert!(kills >= 10, "only {kills} kills landed while work was left");
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    assert_one_desadv_each(&app, &ids);
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}
