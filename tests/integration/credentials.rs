//! `check-config` and the unit's credentials, with the real binary, the real
//! unit file and the example config laid out as the installer lays them out
//! in a temporary root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAMES: [&str; 5] = [
    "erp-token",
    "cloudsuite-secret",
    "titelive-system-password",
    "retailys-token",
    "vinou-token",
];

fn ordersync(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ordersync"));
    c.env_remove("ORDERSYNC_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("--config")
        .arg(config);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The example config, the unit and its derived drop-in under `root`.
fn install(root: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let conf = root.join("etc/ordersync");
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(conf.join("credentials")).unwrap();
    std::fs::create_dir_all(units.join("ordersync.service.d")).unwrap();
    let config = conf.join("ordersync.toml");
    std::fs::copy(repo.join("config/ordersync.example.toml"), &config).unwrap();
    std::fs::copy(
        repo.join("systemd/ordersync.service"),
        units.join("ordersync.service"),
    )
    .unwrap();
    let out = ordersync(&config)
        .args(["check-config", "--unit-credentials"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(
        units.join("ordersync.service.d/credentials.conf"),
        &out.stdout,
    )
    .unwrap();
    config
}

fn check_from_unit(config: &Path, root: &Path) -> Output {
    ordersync(config)
        .args([
            "check-config",
            "--credentials-from-unit",
            "--offline",
            "--root",
        ])
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn the_unit_loads_every_secret_the_example_config_names() {
    let root = tempfile::tempdir().unwrap();
    let config = install(root.path());
    let drop_in = std::fs::read_to_string(
        root.path()
            .join("etc/systemd/system/ordersync.service.d/credentials.conf"),
    )
    .unwrap();
    for name in NAMES {
        assert!(
            drop_in.contains(&format!(
                "LoadCredential={name}:/etc/ordersync/credentials/{name}\n"
            )),
            "{drop_in}"
        );
    }
    // Before the secrets are in place: every one of them named, in one run.
    let out = check_from_unit(&config, root.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for name in NAMES {
        assert!(
            text(&out).contains(&format!("etc/ordersync/credentials/{name}:")),
            "{name}: {}",
            text(&out)
        );
    }
    // With them: read where the unit loads them from, as root would before
    // the first start; no value is printed.
    for name in NAMES {
        std::fs::write(
            root.path().join("etc/ordersync/credentials").join(name),
            format!("value-of-{name}-7f3a\n"),
        )
        .unwrap();
    }
    let out = check_from_unit(&config, root.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("value-of-"), "{}", text(&out));
    assert!(
        text(&out).contains("sources[3].api_token: file"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_credential_the_unit_does_not_load_is_named_with_the_fix() {
    let root = tempfile::tempdir().unwrap();
    let config = install(root.path());
    for name in NAMES {
        std::fs::write(
            root.path().join("etc/ordersync/credentials").join(name),
            "some-secret-value\n",
        )
        .unwrap();
    }
    // The config changed after the drop-in was written: one more secret.
    let drop_in = root
        .path()
        .join("etc/systemd/system/ordersync.service.d/credentials.conf");
    let lines = std::fs::read_to_string(&drop_in).unwrap();
    std::fs::write(
        &drop_in,
        lines
            .lines()
            .filter(|l| !l.contains("vinou-token"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = check_from_unit(&config, root.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("1 problem(s)")
            && t.contains("sources[3].api_token_file: names credential vinou-token, which the unit does not load"),
        "{t}"
    );
    assert!(t.contains("check-config --unit-credentials >"), "{t}");
}

#[test]
fn outside_the_unit_every_missing_secret_is_named_in_one_run() {
    let root = tempfile::tempdir().unwrap();
    let config = install(root.path());
    let out = ordersync(&config)
        .args(["check-config", "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("5 problem(s)"), "{t}");
    for name in NAMES {
        assert!(
            t.contains(&format!("/run/credentials/ordersync.service/{name}:")),
            "{name}: {t}"
        );
    }
    assert!(t.contains("--credentials-from-unit"), "{t}");
}
