//! The real binary: exit codes and messages for bad input, clean shutdown,
//! and secrets that never reach logs or `status`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn ordersync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ordersync"));
    c.env_remove("ORDERSYNC_CONFIG");
    c
}

fn write_config(
    dir: &std::path::Path,
    extra_source: &str,
    secret_line: &str,
) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[daemon]
state_dir = "state"
[erp]
kind = "http"
url = "http://127.0.0.1:9"
token_env = "ORDERSYNC_TEST_ERP_TOKEN"
[[sources]]
name = "shop"
kind = "cloudsuite"
base_url = "http://127.0.0.1:9"
client_id = "me"
{secret_line}
{extra_source}
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn an_unknown_config_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "pagesize = 10", "client_secret_env = \"X\"");
    let out = ordersync()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sources[0]") && err.contains("pagesize"),
        "{err}"
    );
}

#[test]
fn a_missing_secret_file_exits_2_naming_the_path_not_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "",
        "client_secret_file = \"/nonexistent/cs-secret\"",
    );
    let out = ordersync()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .env("ORDERSYNC_TEST_ERP_TOKEN", "erp-token-value-123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/cs-secret") && err.contains("client_secret_file"),
        "{err}"
    );
    assert!(!err.contains("erp-token-value-123"));
}

#[test]
fn a_bad_since_exits_2_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "", "client_secret_env = \"X\"");
    let out = ordersync()
        .arg("--config")
        .arg(&cfg)
        .args(["backfill", "--since", "last-tuesday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("last-tuesday"), "{err}");
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let out = ordersync()
        .args(["--config", "/nonexistent/ordersync.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ordersync.toml"));
}

#[test]
fn env_overrides_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "", "client_secret_env = \"X\"");
    let out = ordersync()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .env("ORDERSYNC__DAEMON__LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log_format") && err.contains("xml"), "{err}");
}

#[test]
fn a_bad_runtime_thread_count_exits_2_naming_the_variable_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "", "client_secret_env = \"X\"");
    for bad in ["0", "many", "1e400"] {
        let out = ordersync()
            .arg("--config")
            .arg(&cfg)
            .arg("status")
            .env("TOKIO_WORKER_THREADS", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "TOKIO_WORKER_THREADS={bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("TOKIO_WORKER_THREADS") && err.contains(&format!("{bad:?}")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Runs the daemon against the sandbox until `done` or a deadline, then
/// SIGTERM; returns its exit status and everything it logged.
pub fn run_daemon_until(
    app: &App,
    env: &[(&str, &str)],
    mut done: impl FnMut() -> bool,
) -> (Option<i32>, String) {
    let log = app.dir.path().join(format!("daemon-{}.log", rand_suffix()));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = app.run_binary();
    cmd.arg("run").stdout(Stdio::null()).stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status, text)
}

fn rand_suffix() -> u32 {
    rand::random()
}

pub fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

pub fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` (no stdin, stdout dropped) until it ends, at most `limit`;
/// its exit code and what it wrote on stderr.
fn exit_and_stderr(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_with_timeout(&mut child, limit);
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).unwrap();
    }
    (code, err)
}

fn all_done(app: &App, ids: &[i64]) -> bool {
    ids.iter().all(|id| {
        app.sandbox
            .cloudsuite
            .order(*id)
            .is_some_and(|o| o["shipment_state"] == "sent")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_status() {
    let mut opts = AppOptions::default();
    // Short tokens: several are issued during the run, all must stay hidden.
    opts.sandbox.cloudsuite.token_ttl = Duration::from_secs(1);
    opts.sandbox.cloudsuite.client_secret = "cs-secret-7f3a9c-do-not-print".into();
    opts.sandbox.erp.token = "erp-token-51d2e8-do-not-print".into();
    // Some failures, so error paths get logged too.
    opts.sandbox.cloudsuite.faults.error_5xx_rate = 0.1;
    let app = spawn_app(opts).await;
    let ids = app
        .sandbox
        .cloudsuite
        .seed_orders(30, 5, Duration::from_secs(600));
    let ids: Vec<i64> = ids
        .into_iter()
        .filter(|i| pushable(&app.sandbox.cloudsuite.order(*i).unwrap()))
        .collect();
    let status_while_running = std::cell::Cell::new(None);
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[("RUST_LOG", "debug")], || {
            if status_while_running.get().is_none() && !app.sandbox.erp.orders().is_empty() {
                // The ledger is readable while the daemon writes to it.
                let out = app
                    .run_binary()
                    .args(["status", "--json"])
                    .output()
                    .unwrap();
                status_while_running.set(Some(out.status.success()));
            }
            // Done once the work is done and the revoked token was replaced.
            all_done(&app, &ids) && app.sandbox.cloudsuite.issued_tokens().len() >= 2
        })
    });
    assert_eq!(
        status_while_running.get(),
        Some(true),
        "status works while the daemon runs"
    );
    assert_eq!(status, Some(0), "clean exit on SIGTERM; log:\n{log}");
    assert!(
        log.contains("order pushed to ERP"),
        "the run did work:\n{log}"
    );
    let status_text = {
        let out = app.run_binary().arg("status").output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let status_json = status_json(&app).to_string();
    let tokens = app.sandbox.cloudsuite.issued_tokens();
    assert!(tokens.len() >= 2, "tokens were renewed during the run");
    let mut secrets: Vec<String> = tokens;
    secrets.push("cs-secret-7f3a9c-do-not-print".into());
    secrets.push("erp-token-51d2e8-do-not-print".into());
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

/// Waits until `path` contains `needle`; returns the text read last.
fn wait_for_log(path: &std::path::Path, needle: &str, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return (true, text);
        }
        if Instant::now() > deadline {
            return (false, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_the_daemon_keeps_running() {
    let app = spawn_app(AppOptions::default()).await;
    let log = app.dir.path().join("sighup.log");
    let mut child = app
        .run_binary()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (status, text) = tokio::task::block_in_place(|| {
        let (running, text) = wait_for_log(&log, "ordersync running", Duration::from_secs(30));
        if !running {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not start:\n{text}");
        }
        let hup = || {
            Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .unwrap()
        };
        assert!(hup().success());
        let (logged, text) = wait_for_log(
            &log,
            ordersync::shutdown::HANGUP_MESSAGE,
            Duration::from_secs(10),
        );
        assert!(logged, "no SIGHUP line:\n{text}");
        // Still running a while later, and a second SIGHUP is fine too.
        std::thread::sleep(Duration::from_millis(500));
        assert!(hup().success());
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon died on SIGHUP:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        terminate(&mut child);
        let status = wait_with_timeout(&mut child, Duration::from_secs(20));
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    });
    assert_eq!(
        status,
        Some(0),
        "clean exit on SIGTERM after SIGHUP:\n{text}"
    );
    assert_eq!(
        text.matches(ordersync::shutdown::HANGUP_MESSAGE).count(),
        2,
        "one INFO line per SIGHUP:\n{text}"
    );
    assert!(text.contains("ordersync stopped"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(ordersync::shutdown::HANGUP_MESSAGE))
        .unwrap_or_default();
    assert!(line.contains("INFO"), "logged at INFO: {line}");
}

#[test]
fn a_corrupt_ledger_exits_1_naming_the_file_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "", "client_secret_env = \"X\"");
    let ledger = dir.path().join("state").join("ordersync.db");
    std::fs::create_dir_all(ledger.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&ledger, &garbage).unwrap();
    for command in [&["status"][..], &["status", "--json"], &["run"]] {
        let (code, err) = exit_and_stderr(
            ordersync()
                .arg("--config")
                .arg(&cfg)
                .args(command)
                .env("X", "x")
                .env("ORDERSYNC_TEST_ERP_TOKEN", "t"),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(1), "{command:?}: {err}");
        assert!(
            err.contains(&format!(
                "ledger {} is not a valid SQLite database",
                ledger.display()
            )) && err.contains("restore it from a backup"),
            "{command:?}: {err}"
        );
    }
    // Nothing was written over the operator's file.
    assert_eq!(std::fs::read(&ledger).unwrap(), garbage);
}

/// One logfmt line as `(key, value)` pairs (a bare word is a key without a
/// value); `Err` names what does not parse. The journal's `<N>` priority
/// prefix is skipped.
fn parse_logfmt(line: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut rest = line;
    if let Some(r) = rest.strip_prefix('<')
        && let Some((n, after)) = r.split_once('>')
        && n.chars().all(|c| c.is_ascii_digit())
    {
        rest = after;
    }
    let mut chars = rest.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == '=' {
                break;
            }
            if c == '"' {
                return Err(format!("a quote in key {key:?}"));
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return Err("an empty key".into());
        }
        if chars.peek() != Some(&'=') {
            pairs.push((key, None));
            continue;
        }
        chars.next();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("{key}: unterminated quote")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some(c @ ('"' | '\\')) => value.push(c),
                        Some('u') => {
                            let code: String = chars.by_ref().take_while(|c| *c != '}').collect();
                            let n = u32::from_str_radix(code.trim_start_matches('{'), 16)
                                .map_err(|e| format!("{key}: bad \\u escape: {e}"))?;
                            value.push(char::from_u32(n).ok_or("bad \\u escape")?);
                        }
                        other => return Err(format!("{key}: bad escape {other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if chars.peek().is_some_and(|c| *c != ' ') {
                return Err(format!("{key}: text right after the closing quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if c == '"' || c == '=' {
                    return Err(format!("{key}: unquoted value with {c:?}"));
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, Some(value)));
    }
}

#[test]
fn the_logfmt_parser_refuses_what_the_old_logs_wrote() {
    assert!(parse_logfmt(r#"<4>msg="a b" source=shop detail="x=1; y""#).is_ok());
    // tracing's default: message bare, `%` values raw.
    assert!(parse_logfmt("accepted written back detail=state=processing, lines").is_err());
    assert!(parse_logfmt(r#"msg="a" error="unterminated"#).is_err());
}

/// Issue 16.3: the logs of a real run, through a 5xx-injecting sandbox, parse:
/// text as logfmt, JSON with serde; every `source` is a configured source
/// name (written the same way everywhere), error pages are summed up, and
/// no message repeats the source name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_parse_as_logfmt_and_json_and_name_the_source_once() {
    let mut opts = AppOptions::default();
    let flaky = ordersync::sandbox::Faults {
        error_5xx_next: 2,
        error_5xx_rate: 0.15,
        ..Default::default()
    };
    opts.sandbox.cloudsuite.faults = flaky.clone();
    opts.sandbox.erp.faults = flaky.clone();
    let app = spawn_app(opts).await;
    let names = [SOURCE.to_string()];
    let cs = &app.sandbox.cloudsuite;
    let mut runs = Vec::new();
    for (format, seed) in [("text", 7), ("json", 8)] {
        // Each run starts with two 5xx answers, so each run's log has one
        // whatever the random ones do (a run of few requests may get none).
        cs.set_faults(flaky.clone());
        let ids: Vec<i64> = cs
            .seed_orders(8, seed, Duration::from_secs(600))
            .into_iter()
            .filter(|i| pushable(&cs.order(*i).unwrap()))
            .collect();
        let (status, log) = tokio::task::block_in_place(|| {
            run_daemon_until(
                &app,
                &[
                    ("RUST_LOG", "debug"),
                    ("ORDERSYNC__DAEMON__LOG_FORMAT", format),
                ],
                || all_done(&app, &ids),
            )
        });
        assert_eq!(status, Some(0), "{format} run; log:\n{log}");
        assert!(all_done(&app, &ids), "{format} run did its work:\n{log}");
        runs.push((format, log));
    }
    for (format, log) in &runs {
        assert!(log.lines().count() > 10, "{log}");
        assert!(log.contains("answered 50"), "a 5xx was logged:\n{log}");
        for line in log.lines() {
            let sources: Vec<String> = if *format == "text" {
                let pairs = parse_logfmt(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(pairs.iter().any(|(k, _)| k == "msg"), "{line}");
                pairs
                    .into_iter()
                    .filter(|(k, _)| k == "source")
                    .filter_map(|(_, v)| v)
                    .collect()
            } else {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                v["fields"]["source"]
                    .as_str()
                    .map(str::to_string)
                    .into_iter()
                    .collect()
            };
            for s in sources {
                assert!(names.contains(&s), "source {s:?} in {line}");
            }
            for markup in ["<html", "<title", "<h1", "<center"] {
                assert!(!line.contains(markup), "{line}");
            }
            assert!(!line.contains(&format!("{SOURCE}: {SOURCE}")), "{line}");
        }
    }

    // An error message names the source once, also on the command line.
    std::fs::write(app.dir.path().join("cs-secret"), "not-the-secret\n").unwrap();
    let out = app.run_binary().arg("check-config").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("OAuth2"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(line.matches(SOURCE).count(), 1, "{line}");
}

/// A ledger address that takes connections and never says a word (a load
/// balancer without a live server, a wrong port): `status` and `run` stop
/// with the address named, instead of waiting for good. (They hung: the
/// client's connect timeout covers only the TCP connect.)
#[test]
fn a_ledger_that_takes_the_connection_and_says_nothing_is_named_not_waited_for() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts every connection and holds it, silent, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pg = format!(
        "[ledger]\nurl = \"postgres://ordersync@127.0.0.1:{port}/ledger\"\npassword_env = \"ORDERSYNC_TEST_PG_PW\"\n"
    );
    let cfg = write_config(dir.path(), "", &format!("client_secret_env = \"X\"\n{pg}"));
    for command in ["status", "run"] {
        // Not a speed check: a liveness one. Without the fix it never ends.
        let (code, err) = exit_and_stderr(
            ordersync()
                .arg("--config")
                .arg(&cfg)
                .arg(command)
                .env("ORDERSYNC_TEST_ERP_TOKEN", "erp-token-value")
                .env("X", "client-secret-value")
                .env("ORDERSYNC_TEST_PG_PW", "pg-password-value"),
            Duration::from_secs(120),
        );
        assert_eq!(code, Some(1), "{command}: {err}");
        assert!(
            err.contains(&format!(
                "127.0.0.1:{port} took the connection but gave no answer"
            )),
            "{command}: {err}"
        );
        assert!(!err.contains("pg-password-value"), "{err}");
    }
}

/// `[ledger] url` puts the ledger in PostgreSQL: a server that cannot be
/// reached stops `run` and `status` with a message naming the server (never
/// the password), and nothing falls back to a SQLite ledger in state_dir. A
/// URL that carries a password is refused without echoing it.
#[test]
fn an_unreachable_postgres_ledger_is_named_not_replaced_by_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let pg = "[ledger]\nurl = \"postgres://ordersync@127.0.0.1:9/ledger\"\npassword_env = \"ORDERSYNC_TEST_PG_PW\"\n";
    let cfg = write_config(dir.path(), "", &format!("client_secret_env = \"X\"\n{pg}"));
    for command in [&["run"][..], &["status"]] {
        let out = ordersync()
            .arg("--config")
            .arg(&cfg)
            .args(command)
            .env("ORDERSYNC_TEST_ERP_TOKEN", "erp-token-value")
            .env("X", "client-secret-value")
            .env("ORDERSYNC_TEST_PG_PW", "pg-password-value")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert!(
            err.contains("cannot connect to the PostgreSQL ledger at 127.0.0.1:9/ledger"),
            "{command:?}: {err}"
        );
        assert!(!err.contains("pg-password-value"), "{err}");
    }
    assert!(
        !dir.path().join("state/ordersync.db").exists(),
        "a SQLite ledger was made although [ledger] names PostgreSQL"
    );
    let cfg = write_config(
        dir.path(),
        "",
        "client_secret_env = \"X\"\n[ledger]\nurl = \"postgres://ordersync:pg-password-value@127.0.0.1:9/ledger\"\n",
    );
    let out = ordersync()
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ledger.url") && err.contains("carries a password"),
        "{err}"
    );
    assert!(
        !err.contains("pg-password-value"),
        "the password leaked: {err}"
    );
}
