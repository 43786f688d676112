//! The real binary with a Titelive source: check-config, SIGKILL, secrets.

use super::*;
use crate::binary::run_daemon_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reaches_titelive_and_names_a_wrong_login_without_the_password() {
    let app = spawn_titelive(TlOptions::default()).await;
    app.sandbox
        .titelive
        .seed_orders(3, 1, Duration::from_secs(600));
    let run =
        || tokio::task::block_in_place(|| app.run_binary().arg("check-config").output().unwrap());
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("boekhandel: Titelive at 127.0.0.1 answered; 3 confirmed"),
        "{text}"
    );
    let wrong = "0000000000000000000000000000000000000bad";
    std::fs::write(app.dir.path().join("tl-password"), wrong).unwrap();
    let out = run();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("check system_login and system_password_file"),
        "{text}"
    );
    assert!(
        !text.contains(wrong),
        "the password is never printed: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_titelive_sync_loses_and_doubles_nothing() {
    let mut opts = TlOptions::default();
    opts.sandbox.titelive.faults.latency = Duration::from_millis(8);
    opts.sandbox.erp.faults.latency = Duration::from_millis(8);
    opts.sandbox.erp.faults.drop_rate = 0.02;
    opts.sandbox.titelive.faults.drop_rate = 0.02;
    let app = spawn_titelive(opts).await;
    app.sandbox
        .titelive
        .seed_orders(250, 21, Duration::from_secs(3600));
    let ids = pushable(&app);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("titelive crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mid_sync_kills = tokio::task::block_in_place(|| {
        crate::crash::kill_at_random_moments(&app, &mut rng, 10, 40, 300, || {
            all_shipped(&app, &ids)
        })
    });
    assert!(
        mid_sync_kills >= 10,
        "only {mid_sync_kills} kills landed while work was left"
    );
    let (status, log) =
        tokio::task::block_in_place(|| run_daemon_until(&app, &[], || all_shipped(&app, &ids)));
    assert_eq!(status, Some(0), "{log}");
    assert_converged(&app, &ids);
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titelive_secrets_never_reach_logs_or_status() {
    let mut opts = TlOptions::default();
    // Short-lived tokens: several are issued during the run, all stay hidden.
    opts.sandbox.titelive.token_ttl = Duration::from_secs(1);
    opts.sandbox.titelive.system_password = "7c4a8d09ca3762af61e59520943dc26494f8941b".into();
    // The shop reads the login only as the documented query string: the
    // password goes in a URL, which no log line may show.
    opts.sandbox.titelive.login_query_only = true;
    opts.sandbox.titelive.faults.latency = Duration::from_millis(20);
    opts.sandbox.titelive.code_fault_rate = 0.1;
    opts.sandbox.erp.token = "erp-token-9e1f-do-not-print".into();
    let app = spawn_titelive(opts).await;
    app.sandbox
        .titelive
        .seed_orders(40, 9, Duration::from_secs(3600));
    let ids = pushable(&app);
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[("RUST_LOG", "debug")], || all_shipped(&app, &ids))
    });
    assert_eq!(status, Some(0), "clean exit; log:\n{log}");
    assert!(
        log.contains("order pushed to ERP"),
        "the run did work:\n{log}"
    );
    assert!(
        log.contains("documented query string"),
        "the login went as a query string:\n{log}"
    );
    let status_text = {
        let out = app.run_binary().arg("status").output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let status_json = status_json(&app).to_string();
    let mut secrets = app.sandbox.titelive.issued_tokens();
    assert!(secrets.len() >= 2, "tokens were renewed during the run");
    secrets.push("7c4a8d09ca3762af61e59520943dc26494f8941b".into());
    secrets.push("erp-token-9e1f-do-not-print".into());
    for s in &secrets {
        for (name, text) in [
            ("log", &log),
            ("status", &status_text),
            ("status --json", &status_json),
        ] {
            assert!(
                !text.contains(s.as_str()),
                "a secret appears in the {name} output"
            );
        }
    }
    assert_converged(&app, &ids);
}
