//! `reconcile` through the real binary, against every source kind: after a
//! clean backfill it lists every order of the window (those the ledger has
//! unchanged too), rides out injected 5xx on the source and the ERP with the
//! jobs' retries, and reports nothing false; what is really wrong (an order
//! the source no longer lists, a key with two ERP orders, an order not yet
//! pushed) it reports, with exit 1.

use std::time::Duration;

use ordersync::sandbox::Faults;
use serde_json::Value;

use crate::common::App;

/// 5xx on the next two requests, then on one in ten: a flaky remote, not
/// a dead one. (At one in five, a lookup that failed five times running
/// under the MplusKASSA test's `max_attempts = 5` failed about one run in
/// a hundred, in CI once: the command gave up as designed, the test was
/// wrong.)
fn flaky() -> Faults {
    Faults {
        error_5xx_next: 2,
        error_5xx_rate: 0.1,
        ..Default::default()
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Runs the binary with `args`; the exit code and the combined output.
fn run(app: &App, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::task::block_in_place(|| app.run_binary().args(args).output().unwrap());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn backfill(app: &App, since: &str) {
    let (code, out, err) = run(app, &["backfill", "--since", since]);
    assert!(
        matches!(code, Some(0) | Some(3)),
        "backfill: {code:?}\n{out}\n{err}"
    );
}

/// `reconcile --json`: the exit code and the one source's report.
fn reconcile(app: &App, since: &str) -> (Option<i32>, Value) {
    let (code, out, err) = run(app, &["reconcile", "--since", since, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{v}");
    assert_eq!(v["ok"], code == Some(0), "{v}");
    (code, sources[0].clone())
}

/// A clean report: exit 0, `listed` orders, each of them checked, nothing found.
fn assert_clean(code: Option<i32>, report: &Value, listed: usize) {
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["error"], Value::Null, "{report:#}");
    for what in ["missing", "orphaned", "doubled"] {
        assert_eq!(report[what], serde_json::json!([]), "{what}: {report:#}");
    }
    assert_eq!(report["listed"], listed, "{report:#}");
    assert_eq!(report["checked"], listed, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudsuite_reconciles_every_order_of_the_window_under_5xx() {
    let app = crate::common::spawn_app(crate::common::AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    cs.seed_orders(20, 16, DAY);
    backfill(&app, "2d");
    // Every order with a confirm_date is in the window (drafts have none).
    let listed = cs
        .orders()
        .iter()
        .filter(|o| o["confirm_date"].is_string())
        .count();
    assert!(listed >= 10, "{listed}");
    cs.set_faults(flaky());
    app.sandbox.erp.set_faults(flaky());
    let (code, report) = reconcile(&app, "2d");
    assert_clean(code, &report, listed);
    assert!(cs.fault_count() >= 2 && app.sandbox.erp.fault_count() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vinou_reconciles_every_order_and_reports_what_is_really_wrong() {
    use crate::vinou::{Setup, key, spawn_vinou};
    let app = spawn_vinou(Setup::default()).await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(20, 16, DAY);
    backfill(&app, "2d");
    // Fault-free first: the ledger has every order unchanged, yet each is listed.
    let (code, report) = reconcile(&app, "2d");
    assert_clean(code, &report, 20);
    vinou.set_faults(flaky());
    app.sandbox.erp.set_faults(flaky());
    let (code, report) = reconcile(&app, "2d");
    assert_clean(code, &report, 20);
    assert!(vinou.fault_count() >= 2 && app.sandbox.erp.fault_count() >= 2);
    // A dry run counts the same way, and rides out the same faults.
    vinou.set_faults(flaky());
    let (code, out, err) = run(&app, &["backfill", "--since", "2d", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("weingut: 20 order(s) in the window"), "{out}");

    // Now really wrong: an order someone entered in the ERP a second time,
    // one the shop no longer lists in the window, one not pushed yet.
    vinou.set_faults(Faults::default());
    app.sandbox.erp.set_faults(Faults::default());
    let pushed: Vec<String> = app
        .sandbox
        .erp
        .orders()
        .into_iter()
        .map(|o| o.order_key)
        .collect();
    assert!(pushed.len() >= 2, "{pushed:?}");
    app.sandbox.erp.enter_again_by_hand(&pushed[0]).unwrap();
    let gone: i64 = pushed[1].trim_start_matches("weingut:").parse().unwrap();
    let old = (vinou.now_local() - chrono::Duration::days(5))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(vinou.edit_order(gone, |o| o["crstamp"] = old.into()));
    let late = vinou.add_order("payed", None);
    // Usage errors exit 2 and name what is wrong.
    let (code, _, err) = run(&app, &["reconcile", "--since", "2d", "--source", "nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = run(&app, &["reconcile", "--since", "yesterday"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, report) = reconcile(&app, "2d");
    assert_eq!(code, Some(1), "{report:#}");
    let keys = |what: &str| -> Vec<String> {
        report[what]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["order_key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys("doubled"), vec![pushed[0].clone()], "{report:#}");
    assert_eq!(keys("orphaned"), vec![key(gone)], "{report:#}");
    assert_eq!(keys("missing"), vec![key(late)], "{report:#}");
    assert_eq!(
        report["doubled"][0]["erp_order_numbers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // 19 of the first 20 are listed, plus the late one; the gone one is
    // checked from the ledger.
    assert_eq!(report["listed"], 20, "{report:#}");
    assert_eq!(report["checked"], 21, "{report:#}");
    assert!(
        app.sandbox.erp.erp_orders_for(&key(late)).is_empty(),
        "reconcile is read-only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retailys_reconciles_every_order_of_the_window_under_5xx() {
    let app = crate::retailys::spawn_retailys(Default::default()).await;
    let rt = &app.sandbox.retailys;
    rt.seed_orders(20, 16, DAY);
    backfill(&app, "2d");
    rt.set_faults(flaky());
    app.sandbox.erp.set_faults(flaky());
    let (code, report) = reconcile(&app, "2d");
    assert!(rt.fault_count() >= 2, "faults were injected at the source");
    // Orders finished at the shop before ordersync saw them are listed too.
    assert_clean(code, &report, 20);
    assert!(app.sandbox.erp.fault_count() >= 2, "faults were injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titelive_reconciles_every_order_of_the_window_under_5xx() {
    let app = crate::titelive::spawn_titelive(Default::default()).await;
    let tl = &app.sandbox.titelive;
    tl.seed_orders(20, 16, DAY);
    backfill(&app, "2d");
    tl.set_faults(flaky());
    app.sandbox.erp.set_faults(flaky());
    let (code, report) = reconcile(&app, "2d");
    assert!(tl.fault_count() >= 2, "faults were injected at the source");
    assert_clean(code, &report, 20);
    assert!(app.sandbox.erp.fault_count() >= 2, "faults were injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mplus_reconciles_every_order_of_the_window_under_5xx() {
    let app = crate::mplus::spawn_mplus(crate::mplus::options(), "", 8).await;
    let till = &app.sandbox.mplus;
    till.seed_orders(20);
    backfill(&app, "2d");
    till.set_faults(flaky());
    app.sandbox.erp.set_faults(flaky());
    let (code, report) = reconcile(&app, "2d");
    assert!(
        till.fault_count() >= 2,
        "faults were injected at the source"
    );
    assert_clean(code, &report, 20);
    assert!(app.sandbox.erp.fault_count() >= 2, "faults were injected");
}
