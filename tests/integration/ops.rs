//! Operations: systemd notifications, journald priorities, status --check,
//! metrics and health, a source whose polls keep failing, reconcile, skip,
//! db backup.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ordersync::sandbox::CloudSuiteOrderSpec as OrderSpec;

use crate::binary::{terminate, wait_with_timeout};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_tells_systemd_ready_watchdog_and_stopping() {
    let app = spawn_app(AppOptions::default()).await;
    app.sandbox.cloudsuite.add_order(OrderSpec::default());
    let sock_path = app.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = app
        .run_binary()
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let read_until = |seen: &mut String, buf: &mut [u8], want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains(want) && Instant::now() < deadline {
            if let Ok(n) = sock.recv(buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
    };
    tokio::task::block_in_place(|| {
        read_until(&mut seen, &mut buf, "READY=1");
        read_until(&mut seen, &mut buf, "WATCHDOG=1");
        terminate(&mut child);
        read_until(&mut seen, &mut buf, "STOPPING=1");
        assert_eq!(
            wait_with_timeout(&mut child, Duration::from_secs(20)),
            Some(0)
        );
    });
    for want in ["READY=1", "WATCHDOG=1", "STATUS=", "STOPPING=1"] {
        assert!(seen.contains(want), "{want} missing from {seen:?}");
    }
    let ready = seen.find("READY=1").unwrap();
    assert!(seen.find("STOPPING=1").unwrap() > ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_lines_carry_their_syslog_priority() {
    use std::os::unix::fs::MetadataExt;
    let app = spawn_app(AppOptions::default()).await;
    app.sandbox.cloudsuite.add_order(OrderSpec::default());
    // Every ERP call fails: WARN lines (retries) next to INFO lines.
    app.sandbox.erp.set_faults(ordersync::sandbox::Faults {
        error_5xx_rate: 1.0,
        ..Default::default()
    });
    let log = app.dir.path().join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = app
        .run_binary()
        .arg("run")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let text = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("<4>") || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        terminate(&mut child);
        wait_with_timeout(&mut child, Duration::from_secs(20));
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("ordersync running")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("will retry")),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.starts_with('<'), "every line has a priority: {line:?}");
        assert!(!line.contains('\u{1b}'), "no colour codes: {line:?}");
        assert!(
            !line.contains(&format!("{}-", chrono::Utc::now().format("%Y"))),
            "no timestamp of our own: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_order_fails_status_check_until_retried_after_the_fix() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let good = cs.add_order(OrderSpec::default());
    let bad = cs.add_order(OrderSpec {
        lines: vec![ordersync::sandbox::CloudSuiteLineSpec::new(
            "124_STUK",
            1.into(),
        )],
        ..Default::default()
    });
    // The ERP does not know the product: 422, parked at once.
    app.sandbox.erp.set_unknown_skus(vec!["124_STUK".into()]);
    let engine = app.engine();
    app.sync(&engine).await;
    let check = || {
        app.run_binary()
            .args(["status", "--check"])
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(1), "parked work fails the check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&key(bad)) && text.contains("124_STUK"),
        "{text}"
    );

    // The product is created in the ERP; the operator re-queues the order.
    app.sandbox.erp.set_unknown_skus(vec![]);
    let out = app
        .run_binary()
        .args(["retry", &key(bad)])
        .output()
        .unwrap();
    assert!(out.status.success());
    app.sync(&engine).await;
    assert_converged(&app, &[good, bad]);
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let app = spawn_app(AppOptions::default()).await;
    let ids: Vec<i64> = (0..5)
        .map(|_| app.sandbox.cloudsuite.add_order(OrderSpec::default()))
        .collect();
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &ids);
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _h) = ordersync::metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        std::sync::Arc::new(app.config.clone()),
        stop.clone(),
    )
    .await
    .unwrap();
    engine.heartbeat.beat();
    // A family without samples is not served: give the retries one.
    ordersync::metrics::global().retry("webshop-nl", "push");
    let client = reqwest::Client::new();
    let answer = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["content-type"],
        ordersync::metrics::CONTENT_TYPE
    );
    let metrics = answer.text().await.unwrap();
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    served_series_are_the_documented_ones_and_all_charted(&metrics);
    for want in [
        "ordersync_orders_seen_total{source=\"webshop-nl\"} 5",
        "ordersync_orders_pushed_total{source=\"webshop-nl\"} 5",
        "ordersync_orders_parked{source=\"webshop-nl\"} 0",
        "ordersync_jobs_queued",
        "ordersync_last_poll_success_timestamp_seconds{source=\"webshop-nl\"}",
        "ordersync_http_requests_total{host=\"127.0.0.1\",status=\"200\"}",
        "ordersync_erp_push_duration_seconds_count",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    let health_status = health.status();
    let health_body = health.text().await.unwrap_or_default();
    assert_eq!(health_status, 200, "{health_body}");
    // A stuck engine loop is unhealthy, with the reason.
    let stuck = ordersync::health::Heartbeat::default();
    let reason = ordersync::health::check(&stuck, &engine.store, &app.config, 0).unwrap_err();
    assert!(reason.contains("engine loop stuck"), "{reason}");
    stop.cancel();
}

/// The series names a PromQL expression can use, by metric family `/metrics`
/// declares (`# TYPE name kind`): counters carry `_total`, histograms
/// `_bucket`, `_sum` and `_count`.
fn served_series(exposition: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut families = std::collections::BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let series = match kind {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            _ => vec![name.to_string()],
        };
        families.insert(name.to_string(), series);
    }
    families
}

/// Every `ordersync_…` name in `text`.
fn metric_names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("ordersync_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The dashboard and the alert rules use only series `/metrics` serves, the
/// dashboard charts every family, and the list in the docs is that list.
fn served_series_are_the_documented_ones_and_all_charted(exposition: &str) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let families = served_series(exposition);
    let mut documented: Vec<&str> = ordersync::metrics::METRIC_NAMES.to_vec();
    documented.sort();
    let mut declared: Vec<String> = families.values().flatten().cloned().collect();
    declared.retain(|s| !s.ends_with("_sum") && !s.ends_with("_count"));
    let mut declared: Vec<String> = declared
        .into_iter()
        .map(|s| s.trim_end_matches("_bucket").to_string())
        .collect();
    declared.sort();
    assert_eq!(declared, documented, "{exposition}");
    let operations = std::fs::read_to_string(repo.join("docs/OPERATIONS.md")).unwrap();
    for name in &documented {
        assert!(
            operations.contains(&format!("`{name}")),
            "{name} not in docs/OPERATIONS.md"
        );
    }
    let served: Vec<&String> = families.values().flatten().collect();

    let dashboard_text =
        std::fs::read_to_string(repo.join("deploy/grafana/ordersync.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    let mut strings = Vec::new();
    fn collect<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut strings);
    let charted: Vec<String> = strings.iter().flat_map(|s| metric_names_in(s)).collect();
    assert!(!charted.is_empty());
    for name in &charted {
        assert!(
            served.contains(&name),
            "the dashboard uses {name}, which /metrics does not serve"
        );
    }
    for (family, series) in &families {
        assert!(
            series.iter().any(|s| charted.contains(s)),
            "the dashboard charts nothing of {family}"
        );
    }

    let alerts = std::fs::read_to_string(repo.join("deploy/prometheus/alerts.yml")).unwrap();
    let used: Vec<String> = alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
        .flat_map(metric_names_in)
        .collect();
    assert!(used.len() >= 3, "{used:?}");
    for name in &used {
        assert!(
            served.contains(&name),
            "alerts.yml uses {name}, which /metrics does not serve"
        );
    }
}

/// Reads until the peer closes (EOF) or `limit` passes; None on timeout.
async fn read_to_close(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            // A reset also means the server let go of the connection.
            Ok(Err(_)) => return Some(got),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_closes_silent_half_sent_and_idle_connections() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let app = spawn_app(AppOptions::default()).await;
    let engine = app.engine();
    engine.heartbeat.beat();
    let stop = tokio_util::sync::CancellationToken::new();
    let limits = ordersync::metrics::ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (addr, handle) = ordersync::metrics::serve_with(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        std::sync::Arc::new(app.config.clone()),
        stop.clone(),
        limits,
    )
    .await
    .unwrap();

    // 300 clients that connect and send nothing or half a request line.
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /heal").await.unwrap();
        }
        idle.push(s);
    }
    // The server closes every one of them: 64 at a time, each after the
    // header timeout, so about five rounds of one second.
    for (i, s) in idle.iter_mut().enumerate() {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        let got = read_to_close(s, left).await;
        assert!(
            got.is_some(),
            "connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    drop(idle);

    // A normal request is still answered.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A keep-alive connection that goes idle after its answer is closed too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("the idle keep-alive connection was closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "closed by the idle timeout, not at once: {:?}",
        asked.elapsed()
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the server stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_serves_a_bounded_number_of_connections() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let app = spawn_app(AppOptions::default()).await;
    let engine = app.engine();
    engine.heartbeat.beat();
    let stop = tokio_util::sync::CancellationToken::new();
    let limits = ordersync::metrics::ServerLimits {
        header_timeout: Duration::from_secs(30),
        connection_deadline: Duration::from_secs(60),
        max_connections: 2,
    };
    let (addr, _h) = ordersync::metrics::serve_with(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        std::sync::Arc::new(app.config.clone()),
        stop.clone(),
        limits,
    )
    .await
    .unwrap();
    let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let silent1 = TcpStream::connect(addr).await.unwrap();
    let _silent2 = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(ask).await.unwrap();
    // Both slots are held: the third client waits in the backlog.
    assert!(
        read_to_close(&mut third, Duration::from_millis(500))
            .await
            .is_none(),
        "a third connection was served beside two open ones"
    );
    // One slot frees up: it is served.
    drop(silent1);
    let got = read_to_close(&mut third, Duration::from_secs(10))
        .await
        .expect("served once a slot was free");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_polls_keep_failing_shows_in_status_check_and_healthz() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    cs.add_order(OrderSpec::default());
    cs.set_faults(ordersync::sandbox::Faults {
        error_5xx_rate: 1.0,
        ..Default::default()
    });
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    ordersync::daemon::poll_live(&engine, &connector, &stop).await;
    let (addr, _h) = ordersync::metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        std::sync::Arc::new(app.config.clone()),
        stop.clone(),
    )
    .await
    .unwrap();
    engine.heartbeat.beat();
    let health = || async {
        let r = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let check = || {
        app.run_binary()
            .args(["status", "--check"])
            .output()
            .unwrap()
    };

    // It polls on schedule (not stale), yet nothing is recorded: shown.
    let (code, body) = health().await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("sources failing: webshop-nl"), "{body}");
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILING: webshop-nl: polls keep failing"),
        "{text}"
    );
    let status = status_json(&app);
    assert_eq!(status["failing_sources"].as_array().unwrap().len(), 1);
    // The watchdog does not restart the daemon for it: that cannot heal a remote.
    assert!(ordersync::health::check(&engine.heartbeat, &engine.store, &app.config, 0).is_ok());

    // The next poll is under way (as after an outage, a long walk through
    // the backlog) and has recorded a page, which the failed one never
    // did: not failing, and `status` says the error is behind it.
    engine.store.note_polling(SOURCE, 0).unwrap();
    let (code, body) = health().await;
    assert_eq!(code, 503, "not past it before its first page: {body}");
    engine.store.note_polling(SOURCE, 1).unwrap();
    let (code, body) = health().await;
    assert_eq!(code, 200, "{body}");
    let out = check();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(the poll under way got past it) "), "{text}");
    assert_eq!(status_json(&app)["sources"][0]["past_last_error"], true);

    cs.set_faults(ordersync::sandbox::Faults::default());
    ordersync::daemon::poll_live(&engine, &connector, &stop).await;
    let (code, body) = health().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(check().status.code(), Some(0));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_what_is_missing_and_passes_when_nothing_is() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let ids: Vec<i64> = (0..6).map(|_| cs.add_order(OrderSpec::default())).collect();
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &ids);
    let run = || {
        app.run_binary()
            .args(["reconcile", "--since", "1d", "--json"])
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sources"][0]["checked"], 6);

    // An order the daemon has not seen yet is missing from the ERP.
    let late = cs.add_order(OrderSpec::default());
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sources"][0]["missing"][0]["order_key"], key(late));
    assert!(
        app.sandbox.erp.erp_orders_for(&key(late)).is_empty(),
        "reconcile is read-only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_stops_an_order_and_backup_copies_the_ledger() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let id = cs.add_order(OrderSpec::default());
    app.sandbox.erp.set_faults(ordersync::sandbox::Faults {
        error_5xx_rate: 1.0,
        ..Default::default()
    });
    let engine = app.engine();
    let stop = tokio_util::sync::CancellationToken::new();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    ordersync::daemon::poll_live(&engine, &connector, &stop).await;
    let out = app
        .run_binary()
        .args(["skip", &key(id), "--reason", "entered by hand in the ERP"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.sandbox
        .erp
        .set_faults(ordersync::sandbox::Faults::default());
    engine.drain(SOURCE, None, 4, &stop).await.unwrap();
    assert!(
        app.sandbox.erp.orders().is_empty(),
        "a skipped order is not pushed"
    );
    let d = engine.store.order_detail(&key(id)).unwrap().unwrap();
    assert_eq!(d.row.state, "skipped");
    assert!(d.events.iter().any(|e| e.kind == "skipped"));

    let backup = app.dir.path().join("backup.db");
    let out = app
        .run_binary()
        .arg("db")
        .arg("backup")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = ordersync::store::Store::open_read_only(&backup).unwrap();
    assert_eq!(
        copy.order_detail(&key(id)).unwrap().unwrap().row.state,
        "skipped"
    );
    let again = app
        .run_binary()
        .arg("db")
        .arg("backup")
        .arg(&backup)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "never overwrites a file");
}

/// Issue 16.5: with `daemon.retain`, the running daemon prunes orders that
/// ended longer ago than that (raw payload, attempts, events): completed
/// ones, and one cancelled in the ERP with nothing left to do. It keeps
/// what prevents a second push: reading them again pushes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_prunes_old_ended_orders_and_pushes_nothing_again() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let ids: Vec<i64> = (0..4).map(|_| cs.add_order(OrderSpec::default())).collect();
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &ids);
    // The first two completed 100 days ago, the third just now; the fourth
    // was cancelled in the ERP 100 days ago, its jobs all done.
    {
        let conn = rusqlite::Connection::open(app.db_path()).unwrap();
        let old = ordersync::store::now_ms() - 100 * 24 * 3600 * 1000;
        for id in &ids[..2] {
            conn.execute(
                "UPDATE orders SET completed_at = ?2 WHERE order_key = ?1 AND state = 'completed'",
                rusqlite::params![key(*id), old],
            )
            .unwrap();
        }
        let changed = conn
            .execute(
                "UPDATE orders SET state = 'cancelled_in_erp', updated_at = ?2 WHERE order_key = ?1 AND state = 'completed'",
                rusqlite::params![key(ids[3]), old],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let pruned = |id: i64| {
        let store = ordersync::store::Store::open_read_only(&app.db_path()).unwrap();
        let d = store.order_detail(&key(id)).unwrap().unwrap();
        d.events.iter().any(|e| e.kind == "pruned")
    };
    let (status, log) = tokio::task::block_in_place(|| {
        crate::binary::run_daemon_until(&app, &[("ORDERSYNC__DAEMON__RETAIN", "90d")], || {
            pruned(ids[0]) && pruned(ids[1]) && pruned(ids[3])
        })
    });
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("pruned the raw payload"), "{log}");
    assert!(
        pruned(ids[0]) && pruned(ids[1]) && !pruned(ids[2]) && pruned(ids[3]),
        "{log}"
    );
    let store = ordersync::store::Store::open_read_only(&app.db_path()).unwrap();
    let d = store.order_detail(&key(ids[0])).unwrap().unwrap();
    assert_eq!(d.row.state, "completed");
    assert!(d.row.erp_order_number.is_some() && !d.erp_lines.is_empty());
    assert!(d.jobs.iter().all(|j| j.history.is_empty()));
    // Nothing went to the ERP twice.
    assert_converged(&app, &ids);
}
