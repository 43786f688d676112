//! Lists the documents do not promise (issue 12.9, 12.12): `getAll`
//! answering its first page for every page, and orders the API could not
//! serialize. The walk stops on its own with the cursor kept; a bad order
//! is parked with the field named while the others reach the ERP.

use ordersync::sandbox::Faults;
use serde_json::json;

use super::*;
use crate::common::{capture_warnings, changes_noted};

/// One live poll, which must end by itself.
async fn poll_once(engine: &Arc<Engine>) {
    tokio::time::timeout(Duration::from_secs(30), poll(engine))
        .await
        .expect("the poll ends on its own");
}

fn recorded(engine: &Arc<Engine>, ids: &[i64]) -> usize {
    ids.iter()
        .filter(|id| engine.store.order_detail(&key(**id)).unwrap().is_some())
        .count()
}

/// `n` paid orders placed a minute apart, the newest a minute ago.
fn paid_orders(app: &App, n: i64) -> Vec<i64> {
    let vinou = &app.sandbox.vinou;
    let now = vinou.now_local();
    (0..n)
        .map(|i| vinou.add_order("payed", Some(now - chrono::Duration::minutes(n - i))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vinou_list_repeating_its_first_page_stops_the_walk_and_keeps_the_cursor() {
    let app = spawn_vinou(Setup {
        page_size: 20,
        ..Default::default()
    })
    .await;
    let ids = paid_orders(&app, 50);
    let vinou = &app.sandbox.vinou;
    vinou.set_faults(Faults {
        repeat_page_forever: true,
        ..Faults::default()
    });
    let engine = app.engine();
    let warnings = capture_warnings();
    poll_once(&engine).await;
    assert!(
        vinou.list_requests() <= 2,
        "{} list requests",
        vinou.list_requests()
    );
    let warned = warnings.lines_with(&[VINOU, "page 2", "same orders"]);
    assert_eq!(warned.len(), 1, "{}", warnings.text());
    assert_eq!(cursor(&engine), None, "the cursor did not move");
    assert_eq!(recorded(&engine, &ids), 20, "page 1 is recorded");

    // Vinou heals: the next poll walks the whole list; nothing is lost.
    vinou.set_faults(Faults::default());
    poll_once(&engine).await;
    assert_eq!(recorded(&engine, &ids), ids.len());
    assert!(cursor(&engine).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vinou_orders_the_api_cannot_serialize_are_parked_by_field_and_the_others_flow() {
    let app = spawn_vinou(Setup::default()).await;
    let ids = paid_orders(&app, 8);
    let (quantity, remark) = (ids[2], ids[5]);
    let vinou = &app.sandbox.vinou;
    vinou.edit_order(quantity, |o| {
        o["positions"][0]["quantity"] = json!(1234.5678)
    });
    vinou.edit_order(remark, |o| o["client_remark"] = json!("ZZ-LATIN1"));
    vinou.set_faults(Faults {
        corrupt: vec![
            (b"1234.5678".to_vec(), b"1e400".to_vec()),
            (b"ZZ-LATIN1".to_vec(), b"Gr\xfc\xdfe".to_vec()),
        ],
        ..Faults::default()
    });
    let engine = app.engine();
    sync(&app, &engine).await;
    let good: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| ![quantity, remark].contains(id))
        .collect();
    for id in &good {
        assert_eq!(app.sandbox.erp.erp_orders_for(&key(*id)).len(), 1);
    }
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    let reason = |id: i64| {
        status
            .parked
            .iter()
            .find(|p| p.order_key == key(id))
            .map(|p| p.reason.clone())
            .unwrap_or_else(|| panic!("{} is not parked: {:?}", key(id), status.parked))
    };
    let r = reason(quantity);
    assert!(
        r.contains("positions[0].quantity: number out of range"),
        "{r}"
    );
    let r = reason(remark);
    assert!(r.contains("client_remark: not valid UTF-8"), "{r}");
    assert_eq!(app.sandbox.erp.orders().len(), good.len());
    assert!(cursor(&engine).is_some(), "every order was keyed");
    // Read again by the list and by the re-check: no news.
    poll_once(&engine).await;
    for bad in [quantity, remark] {
        assert_eq!(changes_noted(&engine, &key(bad)), 0);
    }
}
