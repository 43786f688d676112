//! Per-order panic isolation end to end (issue 12): the MplusKASSA
//! simulator over HTTP, the engine and a real ledger. A panic injected into
//! one order's mapping ([`super::list::panic_hook`]) parks that order with
//! the panic's message; the other orders of the batch are recorded, the
//! poll succeeds and moves the cursor, and the next poll runs as usual.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::list::panic_hook;
use crate::daemon::{build_engine, poll_live};
use crate::sandbox::{MplusApp, SandboxOptions, mplus_app};
use crate::store::Store;

const SOURCE: &str = "till";

#[tokio::test]
async fn a_panic_mapping_one_order_parks_it_and_the_source_keeps_polling() {
    let mut opts = SandboxOptions::default();
    opts.mplus.seed_orders = 3;
    let MplusApp {
        sandbox,
        dir: _dir,
        config,
    } = mplus_app(opts, "page_size = 10").await;
    let store = Arc::new(Store::open(&config.daemon.db_path()).unwrap());
    let engine = build_engine(&config, store).unwrap();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    let ids = sandbox.mplus.order_ids();
    assert_eq!(ids.len(), 3);

    // The second order mapped on this (the test's only) thread panics.
    panic_hook::arm(2);
    poll_live(&engine, &connector, &stop).await;
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    let till = &status.sources[0];
    assert_eq!(till.last_error, None, "the poll succeeded");
    assert!(till.last_success_at.is_some());
    let marker = sandbox.mplus.current_marker().to_string();
    assert_eq!(
        till.cursor.as_deref(),
        Some(marker.as_str()),
        "the cursor moved past all three"
    );
    let states: Vec<String> = ids
        .iter()
        .map(|id| {
            engine
                .store
                .order_state(&format!("{SOURCE}:{id}"))
                .unwrap()
                .expect("every order is recorded")
                .to_string()
        })
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "invalid").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "queued").count(),
        2,
        "{states:?}"
    );
    let [parked] = &status.parked[..] else {
        panic!("{:?}", status.parked)
    };
    assert_eq!(
        parked.reason,
        "ordersync could not map this order (internal error: a panic injected by a test)"
    );

    // The source goes on: the next poll runs, and once the till changes the
    // order its mapping no longer panics and it is queued.
    let key = parked.order_key.clone();
    let id = key.trim_start_matches("till:").to_string();
    assert!(sandbox.mplus.add_one_to_first_line(&id));
    poll_live(&engine, &connector, &stop).await;
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    assert_eq!(status.sources[0].last_error, None);
    assert_eq!(
        engine.store.order_state(&key).unwrap(),
        Some(crate::outbox::state::OrderState::Queued)
    );
    assert!(status.parked.is_empty(), "{:?}", status.parked);
    sandbox.shutdown().await;
}
