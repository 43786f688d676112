//! SIGKILL at random moments, again and again, while 500 orders sync: each
//! order still ends in the ERP exactly once with every write-back applied
//! exactly once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::binary::run_daemon_until;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    // Slow enough that the sync outlasts 20 kills even on a loaded machine.
    let mut opts = AppOptions {
        max_in_flight: 4,
        ..Default::default()
    };
    // A little latency so kills land in the middle of calls, and dropped
    // answers: the ERP applied the order but the daemon never heard.
    // (A first write-back attempt writes without reading, so a sync is
    // quicker than it was: 20 ms and kills within 800 ms of the start keep
    // 20 kills landing while work is left.)
    opts.sandbox.cloudsuite.faults.latency = Duration::from_millis(20);
    opts.sandbox.erp.faults.latency = Duration::from_millis(20);
    opts.sandbox.erp.faults.drop_rate = 0.02;
    let app = spawn_app(opts).await;
    let seeded = app
        .sandbox
        .cloudsuite
        .seed_orders(600, 99, Duration::from_secs(6 * 3600));
    let ids: Vec<i64> = seeded
        .into_iter()
        .filter(|i| pushable(&app.sandbox.cloudsuite.order(*i).unwrap()))
        .collect();
    assert!(ids.len() >= 500, "{} pushable", ids.len());

    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let finished = || {
        ids.iter().all(|id| {
            app.sandbox
                .cloudsuite
                .order(*id)
                .is_some_and(|o| o["shipment_state"] == "sent")
        })
    };
    let mid_sync_kills = tokio::task::block_in_place(|| {
        kill_at_random_moments(&app, &mut rng, 20, 60, 800, finished)
    });
    eprintln!(
        "{mid_sync_kills} mid-sync kills; ERP has {} of {} orders before the final run",
        app.sandbox.erp.orders().len(),
        ids.len()
    );
    assert!(
        mid_sync_kills >= 20,
        "only {mid_sync_kills} kills landed while work was left"
    );
    assert!(
        !app.sandbox.erp.orders().is_empty(),
        "the killed runs made progress"
    );

    // Let one last run finish the work, then stop it cleanly.
    let started = Instant::now();
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    eprintln!("final run converged in {:?}", started.elapsed());
    assert_converged(&app, &ids);
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

/// Starts `ordersync run` and SIGKILLs it at a random moment, again and
/// again, until `wanted` kills landed while work was left (or `max_rounds`).
/// The kill clock starts when the daemon logs that it runs, so a slow start
/// on a loaded machine does not turn every kill into a kill at start-up.
/// Each kill lands 30 ms to `max_ms` after that. Returns how many kills
/// landed mid-sync.
pub fn kill_at_random_moments(
    app: &App,
    rng: &mut rand::rngs::StdRng,
    wanted: usize,
    max_rounds: usize,
    max_ms: u64,
    finished: impl Fn() -> bool,
) -> usize {
    let mut kills = 0;
    for round in 0..max_rounds {
        if kills >= wanted {
            break;
        }
        let log_path = app.dir.path().join(format!("kill-{round}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = app
            .run_binary()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("ordersync running")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(30..max_ms)));
        if !finished() {
            kills += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    kills
}
