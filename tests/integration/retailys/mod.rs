//! Retailys end to end: the simulator → ledger → http ERP → status, ERP
//! number as history, tracking and `sent` written back; per-shop status
//! names; SIGKILL; 429 storms; secrets kept out of output. `lists`: a
//! paginator that does not end and orders the API cannot serialize.

mod lists;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::daemon::{poll_live, poll_shipments, prepare_connectors};
use ordersync::outbox::Engine;
use ordersync::outbox::state::OrderState;
use ordersync::sandbox::RetailysOrderSpec;
use ordersync::sandbox::{Faults, SandboxOptions};
use rand::SeedableRng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::binary::run_daemon_until;
use crate::common::*;

const RT: &str = "eshop-cz";

pub(crate) struct RtOptions {
    sandbox: SandboxOptions,
    /// Lines for the [[sources]] table beyond the connection.
    source_keys: String,
    rate_limit_per_sec: u32,
}

impl Default for RtOptions {
    fn default() -> Self {
        let mut sandbox = SandboxOptions::default();
        sandbox.erp.ship_after = Some(Duration::ZERO);
        RtOptions {
            sandbox,
            source_keys: "processing_status = \"Processing\"\nshipped_status = \"Shipped\"\nimport_statuses = [\"New\", \"Paid\"]".into(),
            rate_limit_per_sec: 90,
        }
    }
}

pub(crate) async fn spawn_retailys(opts: RtOptions) -> App {
    let api_key = opts.sandbox.retailys.token.clone();
    let (rate, keys) = (opts.rate_limit_per_sec, opts.source_keys);
    // A recheck round on every poll (the default at Retailys is ten
    // minutes), unless the test sets its own.
    let recheck = if keys.contains("recheck_every") {
        ""
    } else {
        "recheck_every = \"0s\""
    };
    crate::common::start_app(opts.sandbox, "", |sb| {
        let source = format!(
            r#"name = "{RT}"
kind = "retailys"
base_url = "{rt}"
token_file = "rt-token"
schedule = "*/1 * * * * *"
lookback = "15m"
{recheck}
page_size = 50
max_in_flight = 4
rate_limit_per_sec = {rate}
{keys}
"#,
            rt = sb.retailys_url,
        );
        (source, vec![("rt-token", api_key)])
    })
    .await
}

fn rkey(id: i64) -> String {
    format!("{RT}:{id}")
}

/// Orders the test config imports: status New or Paid, not cancelled.
fn importable(o: &Value, ids: &[i64]) -> bool {
    ids.contains(&o["status_id"].as_i64().unwrap_or(0)) && o["canceled"] != true
}

fn pushable_ids(app: &App) -> Vec<i64> {
    let rt = &app.sandbox.retailys;
    let wanted = [rt.status_id("New").unwrap(), rt.status_id("Paid").unwrap()];
    rt.orders()
        .iter()
        .filter(|o| importable(o, &wanted))
        .filter_map(|o| o["id"].as_i64())
        .collect()
}

/// Polls, pushes, reads shipments and writes back until every order in
/// `ids` shows `sent` and the ledger has nothing in flight.
async fn sync_until_sent(app: &App, engine: &Arc<Engine>, ids: &[i64]) -> usize {
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(RT).unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    loop {
        assert!(Instant::now() < deadline, "no convergence within 120 s");
        rounds += 1;
        poll_live(engine, &connector, &stop).await;
        engine.drain(RT, None, 8, &stop).await.unwrap();
        let shipped = poll_shipments(engine, &stop).await.unwrap_or(1);
        engine.drain(RT, None, 8, &stop).await.unwrap();
        let status = engine.store.status(&[RT.to_string()]).unwrap();
        let busy = ["queued", "pushed", "accepted", "shipped"]
            .iter()
            .any(|s| status.orders.get(*s).copied().unwrap_or(0) > 0);
        let all_sent = ids.iter().all(|id| {
            app.sandbox
                .retailys
                .order(*id)
                .is_some_and(|o| o["sent"] == true)
        });
        if shipped == 0 && !busy && all_sent {
            return rounds;
        }
    }
}

fn count(writes: &[ordersync::sandbox::RetailysWrite], what: &str) -> usize {
    writes.iter().filter(|w| w.what == what).count()
}

/// Every order in `ids` is in the ERP once and shows each write-back once;
/// nothing else reached the ERP. `history_at_most_once`: the crash test
/// allows a missing ERP-number record (the documented residual window).
fn assert_retailys_converged(app: &App, ids: &[i64], history_at_most_once: bool) -> usize {
    let rt = &app.sandbox.retailys;
    let erp = &app.sandbox.erp;
    let (processing, shipped) = (
        rt.status_id("Processing").unwrap(),
        rt.status_id("Shipped").unwrap(),
    );
    let mut missing_history = 0;
    for &id in ids {
        let k = rkey(id);
        let in_erp = erp.erp_orders_for(&k);
        assert_eq!(
            in_erp.len(),
            1,
            "{k}: expected one ERP order, found {}",
            in_erp.len()
        );
        let number = &in_erp[0].erp_order_number;
        let order = rt.order(id).unwrap();
        let writes = rt.writes(id);
        assert_eq!(
            order["status_id"], shipped,
            "{k}: shipped status written: {writes:?}"
        );
        assert_eq!(order["sent"], true, "{k}: sent");
        let statuses: Vec<&Value> = writes
            .iter()
            .filter(|w| w.what == "PATCH status")
            .map(|w| &w.body["status_id"])
            .collect();
        assert_eq!(
            statuses,
            vec![&Value::from(processing), &Value::from(shipped)],
            "{k}: {writes:?}"
        );
        assert_eq!(count(&writes, "PATCH sent"), 1, "{k}: {writes:?}");
        // Tracking: once, the ERP's number, the shipper matched by carrier name.
        let shipment = erp
            .shipments()
            .into_iter()
            .find(|s| s.order_key == k)
            .expect("the ERP shipped it");
        let trackings = order["trackings"].as_array().unwrap();
        assert_eq!(trackings.len(), 1, "{k}: {trackings:?}");
        assert_eq!(
            trackings[0]["tracking_number"],
            shipment.tracking_number.as_str()
        );
        assert_eq!(
            trackings[0]["shipper_id"], 12,
            "PostNL is shipping 12 in the sandbox"
        );
        let records: Vec<Value> = rt
            .history(id)
            .into_iter()
            .filter(|h| h["type"] == "apps")
            .collect();
        match records.len() {
            1 => assert_eq!(records[0]["record"]["status"], number.as_str(), "{k}"),
            0 if history_at_most_once => missing_history += 1,
            n => panic!("{k}: {n} ERP-number history records: {records:?}"),
        }
    }
    let expected: HashSet<String> = ids.iter().map(|i| rkey(*i)).collect();
    for o in erp.orders() {
        assert!(
            expected.contains(&o.order_key),
            "{} reached the ERP but should not have",
            o.order_key
        );
    }
    assert_eq!(erp.orders().len(), ids.len(), "ERP order count");
    missing_history
}

fn engine_of(app: &App) -> Arc<Engine> {
    app.engine()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_retailys_orders_reach_the_erp_once_with_every_write_back() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    rt.seed_orders(290, 5, Duration::from_secs(3 * 3600));
    // f64 would make these 0.30000000000000004 and 140.23000000000002.
    let floats = rt.add_order(RetailysOrderSpec {
        status: "Paid".into(),
        items: vec![
            ("TEA-01".into(), 3, 0.1, 0.08, 21),
            ("MUG-02".into(), 7, 19.99, 16.52, 21),
        ],
        ..Default::default()
    });
    let ids = pushable_ids(&app);
    assert!(
        ids.len() >= 200,
        "only {} importable orders seeded",
        ids.len()
    );
    let engine = engine_of(&app);
    prepare_connectors(&engine).await.unwrap();
    sync_until_sent(&app, &engine, &ids).await;
    assert_eq!(assert_retailys_converged(&app, &ids, false), 0);

    // Floats arrive to the cent, read from their text.
    let erp = &app.sandbox.erp.erp_orders_for(&rkey(floats))[0].body;
    assert_eq!(erp["totals"]["gross"], "140.23");
    assert_eq!(erp["lines"][0]["unit_price"], "0.10");
    assert_eq!(erp["lines"][0]["line_total"], "0.30");
    assert_eq!(erp["lines"][1]["line_total"], "139.93");
    assert_eq!(erp["currency"], "CZK");
    assert_eq!(erp["prices_include_tax"], true);
    for &id in ids.iter().take(60) {
        let o = rt.order(id).unwrap();
        let body = &app.sandbox.erp.erp_orders_for(&rkey(id))[0].body;
        let money = o["money"]
            .to_string()
            .parse::<rust_decimal::Decimal>()
            .unwrap();
        assert_eq!(
            body["totals"]["gross"],
            format!("{:.2}", money),
            "order {id} gross"
        );
    }
    // Unpaid, on-hold, cancelled and shipped orders stayed out, visible in the ledger.
    let status = engine.store.status(&[RT.to_string()]).unwrap();
    assert!(
        status.orders.get("held").copied().unwrap_or(0) > 0,
        "{:?}",
        status.orders
    );
    assert!(
        status.orders.get("cancelled").copied().unwrap_or(0) > 0,
        "{:?}",
        status.orders
    );
    assert!(status.parked.is_empty(), "{:?}", status.parked);

    // An order paid long after its date (outside the list's lookback) is
    // found by the slower re-check of orders that are not final.
    let held = rt
        .orders()
        .into_iter()
        .filter(|o| o["status_id"] == rt.status_id("Awaiting payment").unwrap())
        .filter_map(|o| o["id"].as_i64())
        .next()
        .expect("an unpaid order was seeded");
    assert!(rt.set_status(held, "Paid"));
    let mut all = ids.clone();
    all.push(held);
    let rounds = sync_until_sent(&app, &engine, &all).await;
    assert!(
        rounds <= 6,
        "re-checked within a re-check period: {rounds} rounds"
    );
    assert_eq!(assert_retailys_converged(&app, &all, false), 0);

    // A later round writes nothing: our own write-backs are not news.
    let before: usize = all.iter().map(|i| rt.writes(*i).len()).sum();
    sync_until_sent(&app, &engine, &all).await;
    let after: usize = all.iter().map(|i| rt.writes(*i).len()).sum();
    assert_eq!(before, after);
}

/// The SDK's `OrderModel` has no status field. While `import_statuses` is
/// set, an open order that comes without a status is held (a gate we
/// cannot read stays shut) and the operator is told; none reaches the ERP.
/// With the key removed and a restart, the recheck round pushes every open
/// one, each once; cancelled and finished ones never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_orders_without_a_status_are_held_while_import_statuses_is_set() {
    let mut o = RtOptions::default();
    o.sandbox.retailys.orders_without_status = true;
    let app = spawn_retailys(o).await;
    let rt = &app.sandbox.retailys;
    let order_in = |status: &str| {
        rt.add_order(RetailysOrderSpec {
            status: status.into(),
            ..Default::default()
        })
    };
    let open: Vec<i64> = ["Paid", "New", "Awaiting payment"]
        .into_iter()
        .map(order_in)
        .collect();
    let (cancelled, delivered) = (order_in("Cancelled"), order_in("Delivered"));
    assert!(rt.orders().iter().all(|o| o.get("status_id").is_some()));
    let engine = engine_of(&app);
    prepare_connectors(&engine).await.unwrap();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(RT).unwrap().clone();
    for _ in 0..2 {
        poll_live(&engine, &connector, &stop).await;
        engine.drain(RT, None, 8, &stop).await.unwrap();
    }
    assert!(app.sandbox.erp.orders().is_empty(), "nothing is pushed");
    for id in &open {
        let d = engine.store.order_detail(&rkey(*id)).unwrap().unwrap();
        assert_eq!(d.row.state, "held", "order {id}");
        let note = d.row.note.unwrap_or_default();
        assert!(
            note.contains("no status_id") && note.contains("import_statuses: New, Paid"),
            "order {id}: {note}"
        );
    }
    drop(engine);
    // The operator removes import_statuses and restarts.
    let mut config = app.config.clone();
    let ordersync::config::SourceSettings::Retailys(r) = &mut config.sources[0].settings else {
        panic!("not retailys");
    };
    r.import_statuses = None;
    let store = Arc::new(ordersync::store::Store::open(&app.db_path()).unwrap());
    let engine = ordersync::daemon::build_engine(&config, store).unwrap();
    prepare_connectors(&engine).await.unwrap();
    sync_until_sent(&app, &engine, &open).await;
    for id in &open {
        assert_eq!(
            app.sandbox.erp.erp_orders_for(&rkey(*id)).len(),
            1,
            "order {id}"
        );
        assert_eq!(app.sandbox.erp.post_requests(&rkey(*id)), 1, "order {id}");
    }
    for id in [cancelled, delivered] {
        assert!(
            app.sandbox.erp.erp_orders_for(&rkey(id)).is_empty(),
            "order {id}"
        );
    }
}

/// Issue 11, SPEC §5.11: only what we imported is ours. Orders first seen
/// in the processing, shipped, done, a non-imported or a newly added status
/// were handled by someone else: re-read many times and moved between
/// statuses, they are never pushed, while an imported one flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_first_seen_in_a_status_we_do_not_import_are_never_pushed() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let order_in = |status: &str| {
        rt.add_order(RetailysOrderSpec {
            status: status.into(),
            ..Default::default()
        })
    };
    let imported = order_in("New");
    let mut elsewhere: Vec<i64> = ["Processing", "Shipped", "Delivered", "On hold"]
        .into_iter()
        .map(order_in)
        .collect();
    let engine = engine_of(&app);
    prepare_connectors(&engine).await.unwrap();
    sync_until_sent(&app, &engine, &[imported]).await;
    // A status the shop adds while ordersync runs, and is not imported.
    rt.add_status("Picked by hand", false, false);
    elsewhere.push(order_in("Picked by hand"));
    for to in [
        "Shipped",
        "Processing",
        "On hold",
        "Picked by hand",
        "Processing",
        "Shipped",
    ] {
        for id in &elsewhere {
            assert!(rt.set_status(*id, to));
        }
        sync_until_sent(&app, &engine, &[imported]).await;
    }
    for id in &elsewhere {
        assert!(
            app.sandbox.erp.erp_orders_for(&rkey(*id)).is_empty(),
            "order {id}, never in an imported status, reached the ERP"
        );
        assert!(
            rt.writes(*id).is_empty(),
            "order {id} got write-backs: {:?}",
            rt.writes(*id)
        );
    }
    assert_eq!(app.sandbox.erp.erp_orders_for(&rkey(imported)).len(), 1);
    assert_eq!(app.sandbox.erp.orders().len(), 1);
    // They are recorded, not lost from view.
    // Those first seen in a status still open at the shop (Processing, On
    // hold, the new one) are recorded, held. One first seen shipped or
    // delivered was completed at the shop before ordersync saw it and is
    // not recorded then (`Retailys::next_page`); it is recorded only if a
    // later walk caught it while the test had it in an open status, which
    // is timing (this assertion wanted all five and failed about one run in
    // four under a parallel run), so either is right for those two.
    let states: Vec<_> = elsewhere
        .iter()
        .map(|id| engine.store.order_state(&rkey(*id)).unwrap())
        .collect();
    for (i, state) in states.iter().enumerate() {
        let held = *state == Some(OrderState::Held);
        assert!(
            held || (matches!(i, 1 | 2) && state.is_none()),
            "order {} (first seen in its status {i}): {state:?}; all: {states:?}",
            elsewhere[i]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_status_name_stops_startup_and_lists_the_shops_statuses() {
    let app = spawn_retailys(RtOptions {
        source_keys: "processing_status = \"In progress\"".into(),
        ..Default::default()
    })
    .await;
    let (code, log) = tokio::task::block_in_place(|| {
        let out = app.run_binary().arg("run").output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    });
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("processing_status = \"In progress\""), "{log}");
    assert!(
        log.contains("\"Processing\" (id 305)") && log.contains("\"Shipped\" (id 319)"),
        "{log}"
    );
    assert!(app.sandbox.erp.orders().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_added_while_running_is_resolved_and_the_default_imports_it() {
    let app = spawn_retailys(RtOptions {
        // No import_statuses: every status that neither completes nor cancels.
        source_keys: "processing_status = 305\nshipped_status = \"Shipped\"".into(),
        ..Default::default()
    })
    .await;
    let rt = &app.sandbox.retailys;
    let new = rt.add_order(RetailysOrderSpec::default());
    let cancelled = rt.add_order(RetailysOrderSpec {
        status: "Cancelled".into(),
        ..Default::default()
    });
    let done = rt.add_order(RetailysOrderSpec {
        status: "Delivered".into(),
        ..Default::default()
    });
    let engine = engine_of(&app);
    prepare_connectors(&engine).await.unwrap();
    sync_until_sent(&app, &engine, &[new]).await;
    rt.add_status("Gift wrapping", false, false);
    let wrapped = rt.add_order(RetailysOrderSpec {
        status: "Gift wrapping".into(),
        ..Default::default()
    });
    sync_until_sent(&app, &engine, &[new, wrapped]).await;
    assert_eq!(app.sandbox.erp.erp_orders_for(&rkey(wrapped)).len(), 1);
    assert!(app.sandbox.erp.erp_orders_for(&rkey(cancelled)).is_empty());
    assert!(app.sandbox.erp.erp_orders_for(&rkey(done)).is_empty());
    assert_eq!(app.sandbox.erp.orders().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retailys_survives_sigkill_at_random_moments() {
    let mut opts = RtOptions::default();
    opts.sandbox.retailys.faults.latency = Duration::from_millis(8);
    opts.sandbox.erp.faults.latency = Duration::from_millis(8);
    opts.sandbox.erp.faults.drop_rate = 0.02;
    let app = spawn_retailys(opts).await;
    app.sandbox
        .retailys
        .seed_orders(200, 77, Duration::from_secs(6 * 3600));
    let ids = pushable_ids(&app);
    assert!(ids.len() >= 140, "{} pushable", ids.len());
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("retailys crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let finished = || {
        ids.iter().all(|id| {
            app.sandbox
                .retailys
                .order(*id)
                .is_some_and(|o| o["sent"] == true && o["status_id"] == 319)
        })
    };
    let mid_sync_kills = tokio::task::block_in_place(|| {
        crate::crash::kill_at_random_moments(&app, &mut rng, 12, 40, 400, finished)
    });
    assert!(
        mid_sync_kills >= 12,
        "only {mid_sync_kills} kills landed while work was left"
    );
    assert!(
        !app.sandbox.erp.orders().is_empty(),
        "the killed runs made progress"
    );
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    let missing = assert_retailys_converged(&app, &ids, true);
    eprintln!("{mid_sync_kills} kills; {missing} ERP-number records lost in the residual window");
    // Only a history POST in flight when the process dies can be lost (its
    // marker says it went out, so it is never repeated blind), so at most
    // one per job running at that moment (max_in_flight = 4). A kill
    // anywhere else loses none (see the test above). Doubles were ruled out.
    assert!(
        missing <= 4 * mid_sync_kills,
        "{missing} lost records for {mid_sync_kills} kills: more than the jobs in flight"
    );
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

/// The accepted write-back stopped between its status PATCH and its history
/// POST (the POST refused), then the process SIGKILLed: the next run still
/// writes each ERP-number record, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_status_patch_and_the_history_post_loses_no_record() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let ids: Vec<i64> = (0..6)
        .map(|_| rt.add_order(RetailysOrderSpec::default()))
        .collect();
    let processing = rt.status_id("Processing").unwrap();
    rt.refuse_history_posts(u32::MAX);
    // A refused POST waits 30 s for its retry, so the kill lands while every
    // job sits between the two calls, not in the middle of a new attempt.
    let fast = std::fs::read_to_string(&app.config_path).unwrap();
    let slow = fast
        .replace("retry_initial = \"100ms\"", "retry_initial = \"30s\"")
        .replace("retry_max = \"2s\"", "retry_max = \"60s\"");
    assert_ne!(fast, slow);
    std::fs::write(&app.config_path, &slow).unwrap();
    // Every status PATCHed and every history POST refused and settled as a
    // retry in the ledger: the process now sits between the two calls.
    let patched_and_refused = || {
        let Ok(ledger) = ordersync::store::Store::open_read_only(&app.db_path()) else {
            return false;
        };
        // Between attempts, not inside one: every job's marker says the
        // record is still due and no runner holds it (a poll that succeeds
        // pulls backed-off jobs forward, so attempts keep coming).
        let idle_and_due = rusqlite::Connection::open_with_flags(
            app.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM jobs WHERE kind = 'write_accepted'
                   AND sent_hash = 'history due' AND lease_owner IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n == ids.len() as i64);
        if !idle_and_due {
            return false;
        }
        ids.iter().all(|id| {
            let retried = ledger
                .order_detail(&rkey(*id))
                .ok()
                .flatten()
                .is_some_and(|d| {
                    d.jobs.iter().any(|j| {
                        j.kind == "write_accepted" && j.state == "pending" && j.last_error.is_some()
                    })
                });
            retried
                && rt
                    .order(*id)
                    .is_some_and(|o| o["status_id"].as_i64() == Some(processing))
        })
    };
    let log_path = app.dir.path().join("kill-between.log");
    let mut child = app
        .run_binary()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !patched_and_refused() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From here the shop answers every request with 503: no poll succeeds,
    // so nothing pulls the backed-off jobs forward (a successful poll
    // would), and the kill lands between attempts, not inside one.
    rt.set_faults(ordersync::sandbox::Faults {
        error_5xx_rate: 1.0,
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    while !patched_and_refused() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(patched_and_refused(), "status PATCHed everywhere: {log}");
    for &id in &ids {
        assert!(
            rt.history(id).iter().all(|h| h["type"] != "apps"),
            "{}: no record while they are refused",
            rkey(id)
        );
    }
    rt.refuse_history_posts(0);
    rt.set_faults(ordersync::sandbox::Faults::default());
    std::fs::write(&app.config_path, &fast).unwrap();
    let finished = || {
        ids.iter()
            .all(|id| rt.order(*id).is_some_and(|o| o["sent"] == true))
    };
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    assert_eq!(assert_retailys_converged(&app, &ids, false), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_ridden_out_within_the_limit_and_the_key_never_shows() {
    let mut opts = RtOptions {
        // Above the API's 100/s: the simulator answers 429 + Retry-After
        // beyond it, on top of random 429s.
        rate_limit_per_sec: 100,
        ..Default::default()
    };
    // A storm of 1 in 10 requests answered 429 (with Retry-After, which
    // pauses every call to the shop) on top of 3 % 5xx.
    opts.sandbox.retailys.faults.rate_429 = 0.1;
    opts.sandbox.retailys.faults.retry_after_secs = 1;
    opts.sandbox.retailys.faults.error_5xx_rate = 0.03;
    let app = spawn_retailys(opts).await;
    app.sandbox
        .retailys
        .seed_orders(60, 21, Duration::from_secs(3600));
    let ids = pushable_ids(&app);
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[], || {
            ids.iter().all(|id| {
                app.sandbox
                    .retailys
                    .order(*id)
                    .is_some_and(|o| o["sent"] == true && o["status_id"] == 319)
            })
        })
    });
    assert_eq!(status, Some(0), "{log}");
    assert_eq!(assert_retailys_converged(&app, &ids, false), 0);
    assert!(
        app.sandbox.retailys.fault_count() > 20,
        "the storm happened"
    );
    assert!(log.contains("429"), "the 429s were seen and retried: {log}");
    let peak = app.sandbox.retailys.peak_requests_per_sec();
    assert!(
        peak <= 101,
        "the 100 requests/s limit was exceeded: peak {peak}/s"
    );
    // The API key is in no log line, no status output and no error.
    let key = app.sandbox.retailys.options().token.clone();
    assert!(!log.contains(&key), "API key in the daemon log");
    let status = status_json(&app).to_string();
    assert!(!status.contains(&key), "API key in status");
    // check-config makes one attempt per remote: calm the storm first.
    app.sandbox.retailys.set_faults(Faults {
        max_requests_per_sec: Some(100),
        ..Faults::default()
    });
    let check = app.run_binary().arg("check-config").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("Retailys at 127.0.0.1 answered"), "{text}");
    assert!(!text.contains(&key), "API key in check-config: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_named_without_being_shown() {
    let mut opts = RtOptions::default();
    opts.sandbox.retailys.faults = Faults::default();
    let app = spawn_retailys(opts).await;
    std::fs::write(app.dir.path().join("rt-token"), "wrong-key-s3cr3t\n").unwrap();
    let out =
        tokio::task::block_in_place(|| app.run_binary().arg("check-config").output().unwrap());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("401") && text.contains("/System/Orders/Statuses"),
        "{text}"
    );
    assert!(!text.contains("wrong-key-s3cr3t"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_shop_at_startup_does_not_stop_the_daemon() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let id = rt.add_order(RetailysOrderSpec::default());
    rt.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let engine = engine_of(&app);
    // A remote failure is not a configuration error: startup goes on and
    // the statuses are read on first use.
    prepare_connectors(&engine).await.unwrap();
    rt.set_faults(Faults::default());
    sync_until_sent(&app, &engine, &[id]).await;
    assert_eq!(assert_retailys_converged(&app, &[id], false), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_exactly_the_from_to_window() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let now = chrono::Utc::now();
    let at = |days: i64| RetailysOrderSpec {
        status: "Paid".into(),
        date_order: Some(now - chrono::Duration::days(days)),
        ..Default::default()
    };
    let old: Vec<i64> = (0..4).map(|_| rt.add_order(at(9))).collect();
    let window: Vec<i64> = (0..6).map(|_| rt.add_order(at(4))).collect();
    // The daemon started recently: its live cursor is half an hour ago.
    let engine = engine_of(&app);
    let cursor = (now - chrono::Duration::minutes(30)).to_rfc3339();
    engine
        .store
        .ingest(RT, "live", &[], Some(("live", &cursor)))
        .unwrap();
    let out = tokio::task::block_in_place(|| {
        app.run_binary()
            .args(["backfill", "--since", "6d", "--until", "2d"])
            .output()
            .unwrap()
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    for id in &window {
        assert_eq!(
            app.sandbox.erp.erp_orders_for(&rkey(*id)).len(),
            1,
            "{id}: {text}"
        );
        assert_eq!(
            rt.order(*id).unwrap()["status_id"],
            rt.status_id("Processing").unwrap(),
            "accepted written back for {id}"
        );
    }
    for id in &old {
        assert!(
            app.sandbox.erp.erp_orders_for(&rkey(*id)).is_empty(),
            "{id} is outside the window"
        );
    }
    assert_eq!(
        engine.store.cursor(RT, "live").unwrap().as_deref(),
        Some(cursor.as_str()),
        "live cursor untouched"
    );
}

/// Issue 15.4: a sale the ERP cancels gets `cancelled_status` once (read
/// first); without that key the cancel is parked naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_cancelled_in_the_erp_gets_the_cancelled_status_once() {
    for configured in [true, false] {
        let mut opts = RtOptions::default();
        opts.sandbox.erp.ship_after = None;
        if configured {
            opts.source_keys
                .push_str("\ncancelled_status = \"Cancelled\"");
        }
        let app = spawn_retailys(opts).await;
        let ids: Vec<i64> = (0..2)
            .map(|_| app.sandbox.retailys.add_order(RetailysOrderSpec::default()))
            .collect();
        let engine = engine_of(&app);
        crate::cancel::rounds(&engine, RT, 2).await;
        let k = rkey(ids[0]);
        assert_eq!(crate::cancel::state(&engine, &k), "accepted");
        assert!(app.sandbox.erp.cancel_by_hand(&k, "no stock"));
        crate::cancel::rounds(&engine, RT, 3).await;
        assert_eq!(crate::cancel::state(&engine, &k), "cancelled_in_erp");
        let cancelled = app.sandbox.retailys.status_id("Cancelled").unwrap();
        let patches = app
            .sandbox
            .retailys
            .writes(ids[0])
            .into_iter()
            .filter(|w| w.what == "PATCH status" && w.body["status_id"] == cancelled)
            .count();
        let parked = status_json(&app)["parked"].as_array().unwrap().clone();
        if configured {
            assert_eq!(patches, 1, "{:?}", app.sandbox.retailys.writes(ids[0]));
            assert!(parked.is_empty(), "{parked:?}");
        } else {
            assert_eq!(patches, 0);
            assert!(
                parked.iter().any(|p| p["order_key"] == k.as_str()
                    && p["job"] == "write_cancelled"
                    && p["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("cancelled_status")),
                "{parked:?}"
            );
        }
        assert_eq!(crate::cancel::state(&engine, &rkey(ids[1])), "accepted");
    }
}

/// A write-back reads the order first and looks at the fields it decides
/// by: after the push, the shop's API starts spoiling the order's name (a
/// Latin-1 byte), and a cancel from the ERP still gets its status (before, the read failed on every attempt). A spoiled
/// field it decides by (`sent`) still stops it: missing, it would read as
/// "not sent".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_the_shop_cannot_serialize_stops_only_the_write_backs_that_decide_by_it() {
    let mut opts = RtOptions::default();
    opts.sandbox.erp.ship_after = None;
    opts.source_keys
        .push_str("\ncancelled_status = \"Cancelled\"");
    let app = spawn_retailys(opts).await;
    let rt = &app.sandbox.retailys;
    let ids: Vec<i64> = (0..2)
        .map(|_| rt.add_order(RetailysOrderSpec::default()))
        .collect();
    rt.edit_order(ids[0], |o| o["name"] = serde_json::json!("ZZ-LATIN1-NAME"));
    let engine = engine_of(&app);
    crate::cancel::rounds(&engine, RT, 2).await;
    for id in &ids {
        assert_eq!(crate::cancel::state(&engine, &rkey(*id)), "accepted");
    }
    // A marker in a field the mapper reads: planted once pushed.
    rt.edit_order(ids[1], |o| o["sent"] = serde_json::json!("ZZ-SENT"));
    rt.set_faults(Faults {
        corrupt: vec![
            (b"ZZ-LATIN1-NAME".to_vec(), b"M\xfcller".to_vec()),
            (b"\"ZZ-SENT\"".to_vec(), b"1e400".to_vec()),
        ],
        ..rt.faults()
    });
    for id in &ids {
        assert!(app.sandbox.erp.cancel_by_hand(&rkey(*id), "no stock"));
    }
    // Bounded: the write-back that cannot decide retries, backing off.
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        crate::cancel::rounds(&engine, RT, 3),
    )
    .await;
    let cancelled = rt.status_id("Cancelled").unwrap();
    let cancels = |id: i64| {
        rt.writes(id)
            .into_iter()
            .filter(|w| w.what == "PATCH status" && w.body["status_id"] == cancelled)
            .count()
    };
    assert_eq!(cancels(ids[0]), 1, "{:?}", rt.writes(ids[0]));
    assert_eq!(
        crate::cancel::state(&engine, &rkey(ids[0])),
        "cancelled_in_erp"
    );
    assert_eq!(cancels(ids[1]), 0, "{:?}", rt.writes(ids[1]));
    let detail = engine.store.order_detail(&rkey(ids[1])).unwrap().unwrap();
    let job = detail
        .jobs
        .iter()
        .find(|j| j.kind == "write_cancelled")
        .expect("a cancel write-back");
    let error = job.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("sent: "), "{error}");
}

/// The ERP reports a shipment without a tracking number; the label comes
/// after the shop was told "sent" (the same shipment, by its
/// `erp_shipment_id`, reported again with a number). Retailys' shipped
/// write-back adds only what the order lacks, so the same job runs again:
/// the number reaches the order once, and `sent` and the shipped status are
/// not written a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_number_that_comes_after_sent_is_added_once() {
    let mut opts = RtOptions::default();
    opts.sandbox.erp.ship_after = None;
    opts.sandbox.erp.shipment_ids = true;
    opts.sandbox.erp.tracking_later = true;
    let app = spawn_retailys(opts).await;
    let id = app.sandbox.retailys.add_order(RetailysOrderSpec::default());
    let k = rkey(id);
    let engine = engine_of(&app);
    crate::cancel::rounds(&engine, RT, 2).await;
    assert_eq!(crate::cancel::state(&engine, &k), "accepted");
    assert!(app.sandbox.erp.ship_now(&k));
    sync_until_sent(&app, &engine, &[id]).await;
    let order = app.sandbox.retailys.order(id).unwrap();
    assert_eq!(order["sent"], true);
    assert_eq!(
        order["trackings"].as_array().map_or(0, Vec::len),
        0,
        "no number yet: {order}"
    );

    let number = app.sandbox.erp.label(&k).expect("a shipment to label");
    crate::cancel::rounds(&engine, RT, 3).await;
    let order = app.sandbox.retailys.order(id).unwrap();
    let trackings = order["trackings"].as_array().unwrap();
    assert_eq!(trackings.len(), 1, "{trackings:?}");
    assert_eq!(trackings[0]["tracking_number"], number.as_str());
    let writes = app.sandbox.retailys.writes(id);
    assert_eq!(count(&writes, "PATCH sent"), 1, "{writes:?}");
    assert_eq!(count(&writes, "POST tracking"), 1, "{writes:?}");
    let shipped = app.sandbox.retailys.status_id("Shipped").unwrap();
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.what == "PATCH status" && w.body["status_id"] == shipped)
            .count(),
        1,
        "{writes:?}"
    );
    // One shipment, one job, run twice; the order ends completed.
    let detail = engine.store.order_detail(&k).unwrap().unwrap();
    let jobs: Vec<_> = detail
        .jobs
        .iter()
        .filter(|j| j.kind == "write_shipped")
        .collect();
    assert_eq!(jobs.len(), 1, "{:?}", detail.jobs);
    assert_eq!(jobs[0].state, "done", "{:?}", jobs[0]);
    assert_eq!(crate::cancel::state(&engine, &k), "completed");
    assert!(
        detail.events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&format!("tracking {number} came later"))
                && d.contains("runs again"))),
        "{:?}",
        detail.events
    );
    // Seen again (the feed's overlap): nothing new.
    crate::cancel::rounds(&engine, RT, 2).await;
    let writes = app.sandbox.retailys.writes(id);
    assert_eq!(count(&writes, "POST tracking"), 1, "{writes:?}");
}
