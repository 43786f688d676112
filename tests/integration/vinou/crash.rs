//! SIGKILL at random moments while Vinou orders sync: nothing lost, nothing
//! doubled; no log line nor `status` shows the API token or a JWT.

use rand::SeedableRng;

use super::*;
use crate::binary::run_daemon_until;
use crate::common::status_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vinou_sigkill_loses_and_doubles_nothing_and_keeps_secrets() {
    let mut setup = Setup {
        page_size: 20,
        ..Default::default()
    };
    // Latency so kills land in the middle of calls (and there is work left
    // to kill), and dropped ERP answers: applied, but the daemon never heard.
    setup.sandbox.vinou.faults.latency = Duration::from_millis(20);
    setup.sandbox.vinou.jwt_ttl = Duration::from_secs(2);
    setup.sandbox.vinou.api_token = "vinou-api-token-9c41e7-do-not-print".into();
    setup.sandbox.erp.faults.latency = Duration::from_millis(20);
    setup.sandbox.erp.faults.drop_rate = 0.02;
    let app = spawn_vinou(setup).await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(400, 21, Duration::from_secs(6 * 3600));
    let ids = pushable(&app);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("vinou crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let finished = || {
        ids.iter().all(|id| {
            vinou.order(*id).is_some_and(|o| o["touched"] == 1)
                && app.sandbox.erp.erp_orders_for(&key(*id)).len() == 1
        })
    };
    let mid_sync_kills = tokio::task::block_in_place(|| {
        crate::crash::kill_at_random_moments(&app, &mut rng, 10, 40, 400, finished)
    });
    assert!(
        mid_sync_kills >= 10,
        "only {mid_sync_kills} kills landed while work was left"
    );
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    assert_converged(&app, &ids, true);
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");

    // No log line of any run, nor `status`, shows the API token or a JWT.
    let mut secrets = vinou.issued_tokens();
    assert!(secrets.len() >= 2, "JWTs were issued and renewed");
    secrets.push(vinou.options().api_token.clone());
    let mut texts = vec![status.to_string()];
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            texts.push(std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(texts.len() >= 11, "logs of every run were read");
    assert!(
        texts.iter().any(|t| t.contains("order pushed to ERP")),
        "the logs hold the runs' work (else this check proves nothing)"
    );
    for text in &texts {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret reached the output");
        }
        // Not even the signature part of a JWT.
        for s in vinou.issued_tokens() {
            let sig = s.rsplit('.').next().unwrap();
            assert!(!text.contains(sig), "a JWT signature reached the output");
        }
    }
}
