//! Issue 16.7, the small ones an operator runs into: `sandbox` serves Vinou
//! where asked and its help names every simulator; `orders show` prints the
//! canonical order; `status` prints the Vinou cursor in UTC with its zone.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::binary::{terminate, wait_with_timeout};
use crate::common::*;

#[test]
fn sandbox_help_names_every_simulator_and_vinou_listens_where_asked() {
    let ordersync = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ordersync"));
        c.env_remove("ORDERSYNC_CONFIG");
        c
    };
    let help = ordersync().args(["sandbox", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for name in [
        "CloudSuite",
        "Titelive",
        "Retailys",
        "MplusKASSA",
        "Vinou",
        "http ERP",
    ] {
        assert!(help.contains(name), "{name} missing from:\n{help}");
    }
    assert!(help.contains("--vinou-listen"), "{help}");

    // Port 0 everywhere, a chosen port for Vinou.
    let vinou_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let any = "127.0.0.1:0";
    let mut child = ordersync()
        .args(["sandbox", "--orders", "1"])
        .args(["--cloudsuite-listen", any, "--erp-listen", any])
        .args(["--titelive-listen", any, "--retailys-listen", any])
        .args(["--mplus-listen", any])
        .args(["--vinou-listen", &format!("127.0.0.1:{vinou_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let vinou_line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("Vinou simulator:"));
    terminate(&mut child);
    wait_with_timeout(&mut child, Duration::from_secs(20));
    let line = vinou_line.expect("the sandbox names the Vinou simulator");
    assert!(
        line.ends_with(&format!("http://127.0.0.1:{vinou_port}")),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_show_prints_the_canonical_order() {
    let app = spawn_app(AppOptions::default()).await;
    let id = app
        .sandbox
        .cloudsuite
        .add_order(ordersync::sandbox::CloudSuiteOrderSpec::default());
    let engine = app.engine();
    app.sync(&engine).await;
    let out = tokio::task::block_in_place(|| {
        app.run_binary()
            .args(["orders", "show", &key(id)])
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("canonical order"), "{text}");
    let order = engine
        .store
        .order_detail(&key(id))
        .unwrap()
        .unwrap()
        .canonical
        .unwrap();
    for field in ["order_key", "ordered_at", "totals", "lines"] {
        assert!(text.contains(&format!("\"{field}\"")), "{field}: {text}");
    }
    // The whole of it, line by line.
    for line in serde_json::to_string_pretty(&order).unwrap().lines() {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_vinou_cursor_in_utc_with_its_zone() {
    use crate::vinou::{Setup, VINOU, spawn_vinou};
    let app = spawn_vinou(Setup::default()).await;
    app.sandbox
        .vinou
        .seed_orders(3, 4, Duration::from_secs(3600));
    let engine = app.engine();
    crate::vinou::poll(&engine).await;
    let stored = engine.store.cursor(VINOU, "live").unwrap().unwrap();
    assert!(!stored.ends_with('Z'), "kept in the shop's time: {stored}");
    let status = tokio::task::block_in_place(|| status_json(&app));
    let shown = status["sources"][0]["cursor"].as_str().unwrap().to_string();
    let utc: chrono::DateTime<chrono::Utc> =
        shown.parse().unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert!(shown.ends_with('Z'), "{shown}");
    let local = chrono::NaiveDateTime::parse_from_str(&stored, "%Y-%m-%d %H:%M:%S").unwrap();
    use chrono::TimeZone;
    assert_eq!(
        chrono_tz::Europe::Berlin
            .from_local_datetime(&local)
            .earliest()
            .unwrap(),
        utc
    );
    let text = tokio::task::block_in_place(|| app.run_binary().arg("status").output().unwrap());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&shown), "{text}");
}
