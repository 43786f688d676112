//! `check-config` against a real Tryton: names the company and the products
//! it sees; a wrong password is a clear error naming the URL, not the password.

use super::*;
use crate::binary::run_daemon_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_logs_in_and_a_wrong_password_names_the_url_only() {
    let server = TrytonServer::start().await;
    let app = spawn_tryton_app(&server, "").await;
    let out = app.run_binary().arg("check-config").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Ordersync Test BV"), "{text}");
    assert!(text.contains("25 products visible"), "{text}");

    let wrong = "not-the-password-7f3a";
    std::fs::write(app.dir.path().join("erp-pass"), format!("{wrong}\n")).unwrap();
    let out = app.run_binary().arg("check-config").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&server.url), "names the ERP URL: {text}");
    assert!(text.contains("refused the login"), "{text}");
    assert!(!text.contains(wrong), "the password leaked: {text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // The daemon keeps running on a refused login, says why, and never
    // prints the password (debug logs included), nor does `status`.
    let started = std::time::Instant::now();
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[("RUST_LOG", "debug")], || {
            started.elapsed() > std::time::Duration::from_secs(4)
        })
    });
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains("refused the login") && log.contains(&server.url),
        "{log}"
    );
    let status = crate::common::status_json(&app).to_string();
    for text in [&log, &status] {
        assert!(!text.contains(wrong), "the password leaked: {text}");
    }
}
