//! `check-config`: the config parses, every secret can be read, and every
//! remote answers an authenticated read. Changes nothing anywhere. Every
//! secret is tried before anything else, so one run names every problem.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::credentials::{self, UnitCredential, UnitCredentials};
use crate::cli::CheckConfigArgs;
use crate::config::{Config, ConfigError};
use crate::secret::SecretRef;
use crate::store::Store;

pub async fn check_config(config: &Config, args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let mut config = config.clone();
    if args.unit_credentials {
        print!("{}", unit_credentials(&mut config)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut problems = Vec::new();
    let mut hint = None;
    if args.credentials_from_unit {
        let root = args.root.as_deref().unwrap_or(Path::new("/"));
        hint = point_secrets_at_unit(&mut config, root, &mut problems)?;
    }
    let mut outside_unit = false;
    let unit_problems = problems.clone();
    for use_ in config.secrets_mut() {
        // Already named: the service would not get it at all.
        if unit_problems
            .iter()
            .any(|p| p.starts_with(&format!("{}_file:", use_.key)))
        {
            continue;
        }
        match use_.secret.load(&use_.key) {
            Ok(_) => println!("{}: {}: ok", use_.key, describe(use_.secret)),
            Err(e) => {
                if let SecretRef::File(path) = &*use_.secret {
                    outside_unit |= credentials::credential_name(path).is_some();
                }
                problems.push(e);
            }
        }
    }
    // The ledger's CA file is no secret, but like one it is read here, so
    // a missing or broken file is named before anything is contacted.
    match crate::store::check_ledger_tls(&config) {
        Some(Ok(said)) => println!("ledger.url: {said}"),
        Some(Err(e)) => problems.push(format!("ledger.url: {e}")),
        None => {}
    }
    if !problems.is_empty() {
        let mut text = format!("{} problem(s) with secrets and files:", problems.len());
        for p in &problems {
            text.push_str("\n  ");
            text.push_str(p);
        }
        if let Some(hint) = hint {
            text.push('\n');
            text.push_str(&hint);
        }
        if outside_unit && !args.credentials_from_unit {
            text.push_str(
                "\n(outside the service, `check-config --credentials-from-unit` reads each \
                 credential from the file the unit's LoadCredential= line loads it from)",
            );
        }
        return Err(ConfigError(text).into());
    }
    // Builds every component, which reads every secret again: a problem
    // left is a configuration error (exit 2) naming the key and path.
    let scratch = tempfile_dir()?;
    let store = Arc::new(Store::open(&scratch.join("check.db"))?);
    let engine = crate::daemon::build_engine(&config, store)?;
    if args.offline {
        let _ = std::fs::remove_dir_all(&scratch);
        println!(
            "config {}: ok ({} source(s)); remotes not contacted (--offline)",
            config.path.display(),
            config.sources.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::daemon::prepare_connectors(&engine).await?;
    println!(
        "config {}: ok ({} source(s))",
        config.path.display(),
        config.sources.len()
    );
    let mut failed = false;
    if let Some(reached) = crate::store::reach_ledger(&config) {
        match reached {
            Ok(msg) => println!("ledger: {msg}"),
            Err(e) => {
                failed = true;
                println!("ledger: FAILED: {e:#}");
            }
        }
    }
    match engine.erp.check().await {
        Ok(msg) => println!("erp: {msg}"),
        Err(e) => {
            failed = true;
            println!("erp: FAILED: {e}");
        }
    }
    for source in &config.sources {
        let Some(c) = engine.connectors.get(&source.name) else {
            println!("{}: disabled", source.name);
            continue;
        };
        match c.check().await {
            Ok(msg) => println!("{}: {msg}", source.name),
            Err(e) => {
                failed = true;
                println!("{}: FAILED: {e}", source.name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(if failed {
        ExitCode::from(super::EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where a secret comes from, for the report: never its value.
fn describe(secret: &SecretRef) -> String {
    match secret {
        SecretRef::File(path) => format!("file {}", path.display()),
        SecretRef::Env(var) => format!("environment variable {var}"),
    }
}

/// The unit drop-in derived from the config (`--unit-credentials`).
fn unit_credentials(config: &mut Config) -> Result<String, ConfigError> {
    let config_path = config.path.clone();
    let mut names: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    for use_ in config.secrets_mut() {
        match &*use_.secret {
            SecretRef::File(path) => match credentials::credential_name(path) {
                Some(Ok(name)) => {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                Some(Err(e)) => problems.push(format!("{}_file: {e}", use_.key)),
                None => notes.push(format!(
                    "{}_file: {} is read directly (it must be readable by user ordersync)",
                    use_.key,
                    path.display()
                )),
            },
            SecretRef::Env(var) => notes.push(format!(
                "{}_env: from the environment variable {var} (Environment= or EnvironmentFile=)",
                use_.key
            )),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems.join("\n  ")));
    }
    Ok(credentials::drop_in(&config_path, &names, &notes))
}

/// Points every secret named in the credentials directory at the file the
/// installed unit loads it from (under `root`). A credential the unit does
/// not load, or loads encrypted, is a problem: the service would not get it.
/// Returns how to bring the unit in line with the config, when it is not.
fn point_secrets_at_unit(
    config: &mut Config,
    root: &Path,
    problems: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let unit = UnitCredentials::read(root).map_err(|e| {
        ConfigError(format!(
            "--credentials-from-unit: {e}; install it first (deploy/install.sh)"
        ))
    })?;
    let files: Vec<String> = unit.files.iter().map(|f| f.display().to_string()).collect();
    println!("unit: {}", files.join(" + "));
    let config_path = config.path.display().to_string();
    let mut used = Vec::new();
    let mut missing = Vec::new();
    for use_ in config.secrets_mut() {
        let SecretRef::File(path) = &*use_.secret else {
            continue;
        };
        let name = match credentials::credential_name(path) {
            None => continue,
            Some(Err(e)) => {
                problems.push(format!("{}_file: {e}", use_.key));
                continue;
            }
            Some(Ok(name)) => name,
        };
        used.push(name.clone());
        match unit.by_name.get(&name) {
            Some(UnitCredential::Plain(Some(source))) => {
                *use_.secret = SecretRef::File(credentials::under_root(root, source));
            }
            Some(UnitCredential::Plain(None)) => problems.push(format!(
                "{}_file: the unit loads credential {name} from the system's credentials, which cannot be read here",
                use_.key
            )),
            Some(UnitCredential::Encrypted(source)) => problems.push(format!(
                "{}_file: the unit loads credential {name} encrypted from {}, which only systemd can read: \
                 check with `systemd-run --pipe -p LoadCredentialEncrypted={name}:{} ordersync check-config`",
                use_.key,
                source.display(),
                source.display()
            )),
            None => {
                problems.push(format!(
                    "{}_file: names credential {name}, which the unit does not load (no LoadCredential={name}:…)",
                    use_.key
                ));
                missing.push(name);
            }
        }
    }
    for name in unit.by_name.keys().filter(|n| !used.contains(n)) {
        println!("note: the unit loads credential {name}, which the config does not use");
    }
    Ok((!missing.is_empty()).then(|| {
        format!(
            "(the unit's credentials do not match the config: derive them again with \
             `ordersync --config {config_path} check-config --unit-credentials > {}` \
             and `systemctl daemon-reload`)",
            credentials::DROP_IN
        )
    }))
}

/// A private scratch directory, so checking never touches the real ledger.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ordersync-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
