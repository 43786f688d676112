//! `sandbox` serves the simulators; `demo` is the README's first command:
//! the simulators plus the daemon on a throwaway ledger, from the config
//! embedded in the binary (config/demo.toml), so it needs no checkout and
//! no accounts.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, SandboxArgs};
use crate::config::Config;
use crate::sandbox::{Faults, Sandbox, SandboxOptions};

const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");
/// The password of the throwaway test database tests/tryton/serve.sh serves.
/// config/demo.toml's http ERP simulator (asserted by a test).
const DEMO_ERP_URL: &str = "http://127.0.0.1:7402";
const DEMO_TRYTON_PASSWORD: &str = "admin-secret";

/// The demo config with its ERP swapped for a Tryton server (`--tryton`).
fn with_tryton(config: &str, url: &str) -> String {
    let erp = format!(
        "[erp]\nkind = \"tryton\"\nurl = \"{url}\"\nuser = \"admin\"\npassword_file = \"secrets/tryton-password\"\n"
    );
    let start = config.find("[erp]").unwrap_or(config.len());
    let end = config[start..]
        .find("[[sources]]")
        .map_or(config.len(), |i| start + i);
    format!("{}{erp}\n{}", &config[..start], &config[end..])
}

fn sandbox_options(args: &SandboxArgs) -> SandboxOptions {
    let mut opts = SandboxOptions {
        cloudsuite_listen: args.cloudsuite_listen,
        erp_listen: args.erp_listen,
        ..Default::default()
    };
    let faults = Faults {
        latency: args.latency,
        error_5xx_rate: args.fault_5xx,
        rate_429: args.fault_429,
        retry_after_secs: 1,
        drop_rate: args.fault_drop,
        ..Default::default()
    };
    opts.cloudsuite.seed_orders = args.orders;
    opts.cloudsuite.faults = faults.clone();
    opts.erp.faults = faults;
    opts.erp.ship_after = Some(Duration::from_secs(args.ship_after_secs));
    opts
}

pub async fn sandbox(args: &SandboxArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let sb = Sandbox::start(sandbox_options(args)).await?;
    println!("CloudSuite simulator: {}", sb.cloudsuite_url);
    println!("  OAuth2 token URL:   {}", sb.token_url);
    println!("http ERP simulator:   {}", sb.erp_url);
    println!(
        "{} orders seeded; credentials are the sandbox defaults (see config/demo.toml). Ctrl-C stops.",
        args.orders
    );
    shutdown.cancelled().await;
    sb.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn port_of(url: &str) -> anyhow::Result<SocketAddr> {
    let u = reqwest::Url::parse(url)?;
    let host = u.host_str().unwrap_or("127.0.0.1");
    let port = u.port_or_known_default().unwrap_or(80);
    format!("{host}:{port}")
        .parse()
        .with_context(|| format!("demo config: {url} is not a loopback address"))
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{value}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub async fn demo(args: &DemoArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir.join("secrets"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // A throwaway ledger: the simulators start afresh each time, so an old
    // ledger would see "the same" order ids with other contents.
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let config_path = dir.join("ordersync.toml");
    let text = match &args.tryton {
        Some(url) => {
            write_secret(&dir.join("secrets/tryton-password"), DEMO_TRYTON_PASSWORD)?;
            with_tryton(DEMO_CONFIG, url)
        }
        None => DEMO_CONFIG.to_string(),
    };
    std::fs::write(&config_path, text)?;
    let config = Config::load(&config_path)?;
    let source = config
        .sources
        .first()
        .context("demo config has no source")?;

    let mut opts = sandbox_options(&SandboxArgs {
        cloudsuite_listen: port_of(&source.base_url)?,
        // With --tryton the http ERP simulator still starts, unused, on its usual port.
        erp_listen: match args.tryton {
            Some(_) => port_of(DEMO_ERP_URL)?,
            None => port_of(&config.erp.url)?,
        },
        orders: args.orders,
        latency: Duration::from_millis(30),
        // A little trouble, so the log shows retries doing their job.
        fault_5xx: 0.03,
        fault_429: 0.0,
        fault_drop: 0.0,
        ship_after_secs: 6,
    });
    opts.cloudsuite.spread = Duration::from_secs(3600);
    write_secret(
        &dir.join("secrets/cloudsuite-client-secret"),
        &opts.cloudsuite.client_secret,
    )?;
    write_secret(&dir.join("secrets/erp-token"), &opts.erp.token)?;
    let sb = Sandbox::start(opts)
        .await
        .context("cannot start the simulators (is another demo or `ordersync sandbox` running?)")?;
    sb.cloudsuite
        .confirm_new_orders_every(Duration::from_secs(4));

    let shown = config_path.display();
    match &args.tryton {
        Some(url) => eprintln!(
            "ordersync demo: CloudSuite simulator {} -> ordersync -> Tryton {url}\n  ship in Tryton (Sales > the sale > its shipment) to see \"shipment_state=sent\" written back",
            sb.cloudsuite_url
        ),
        None => eprintln!(
            "ordersync demo: CloudSuite simulator {} -> ordersync -> http ERP simulator {}",
            sb.cloudsuite_url, sb.erp_url
        ),
    }
    eprintln!("  ledger:  {}", config.daemon.db_path().display());
    eprintln!("  watch:   ordersync --config {shown} status");
    eprintln!("  inspect: ordersync --config {shown} orders list");
    eprintln!("  Ctrl-C stops (the ledger stays for inspection until the next demo).\n");
    crate::daemon::run(config, shutdown).await?;
    sb.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tryton_demo_config_parses_and_points_at_tryton() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            with_tryton(DEMO_CONFIG, "http://127.0.0.1:8000/demo"),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.erp.kind, crate::config::ErpKind::Tryton);
        assert_eq!(config.erp.url, "http://127.0.0.1:8000/demo");
        assert_eq!(config.sources.len(), 1);
        assert!(DEMO_CONFIG.contains(&format!("url = \"{DEMO_ERP_URL}\"")));
    }
}
