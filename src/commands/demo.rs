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
use crate::config::{Config, SourceKind};
use crate::sandbox::{Faults, RetailysOrderSpec, Sandbox, SandboxOptions};

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
        titelive_listen: args.titelive_listen,
        retailys_listen: args.retailys_listen,
        mplus_listen: args.mplus_listen,
        vinou_listen: args.vinou_listen,
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
    opts.vinou.seed_orders = args.orders;
    opts.cloudsuite.faults = faults.clone();
    opts.titelive.seed_orders = args.orders;
    opts.titelive.faults = faults.clone();
    opts.retailys.seed_orders = args.orders;
    opts.retailys.spread = Duration::from_secs(3600);
    // Keep the API's own 100 requests/s limit on top of the chosen faults.
    opts.retailys.faults = Faults {
        max_requests_per_sec: opts.retailys.faults.max_requests_per_sec,
        ..faults.clone()
    };
    opts.mplus.seed_orders = args.orders;
    opts.mplus.faults = faults.clone();
    opts.erp.faults = faults;
    opts.erp.ship_after = Some(Duration::from_secs(args.ship_after_secs));
    opts
}

pub async fn sandbox(args: &SandboxArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let sb = Sandbox::start(sandbox_options(args)).await?;
    println!("CloudSuite simulator: {}", sb.cloudsuite_url);
    println!("  OAuth2 token URL:   {}", sb.token_url);
    println!("Vinou simulator:      {}", sb.vinou_url);
    println!("http ERP simulator:   {}", sb.erp_url);
    println!("Retailys simulator:   {}", sb.retailys_url);
    println!(
        "Titelive simulator:   {}/api/json/{}/",
        sb.titelive_url,
        sb.titelive.options().domain_code
    );
    println!("MplusKASSA simulator: {} (SOAP)", sb.mplus_url);
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
    let titelive_listen = match config
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::Titelive)
    {
        Some(s) => port_of(&s.base_url)?,
        None => SocketAddr::from(([127, 0, 0, 1], 7403)),
    };

    let retailys = config
        .sources
        .iter()
        .find(|s| s.kind == crate::config::SourceKind::Retailys)
        .context("demo config has no retailys source")?;
    let till = config
        .sources
        .iter()
        .find(|s| s.kind == crate::config::SourceKind::Mplus)
        .context("demo config has no mplus source")?;
    let mut opts = sandbox_options(&SandboxArgs {
        cloudsuite_listen: port_of(&source.base_url)?,
        // With --tryton the http ERP simulator still starts, unused, on its usual port.
        erp_listen: match args.tryton {
            Some(_) => port_of(DEMO_ERP_URL)?,
            None => port_of(&config.erp.url)?,
        },
        titelive_listen,
        retailys_listen: port_of(&retailys.base_url)?,
        mplus_listen: port_of(&till.base_url)?,
        // Replaced below by the demo config's Vinou address, if it has one.
        vinou_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        orders: args.orders,
        latency: Duration::from_millis(30),
        // A little trouble, so the log shows retries doing their job.
        fault_5xx: 0.03,
        fault_429: 0.0,
        fault_drop: 0.0,
        ship_after_secs: 6,
    });
    opts.cloudsuite.spread = Duration::from_secs(3600);
    opts.vinou.spread = Duration::from_secs(3600);
    if let Some(vinou) = config
        .sources
        .iter()
        .find(|s| s.kind == crate::config::SourceKind::Vinou)
    {
        opts.vinou_listen = port_of(&vinou.base_url)?;
        write_secret(&dir.join("secrets/vinou-api-token"), &opts.vinou.api_token)?;
    }
    write_secret(
        &dir.join("secrets/cloudsuite-client-secret"),
        &opts.cloudsuite.client_secret,
    )?;
    write_secret(&dir.join("secrets/erp-token"), &opts.erp.token)?;
    write_secret(
        &dir.join("secrets/titelive-system-password"),
        &opts.titelive.system_password,
    )?;
    opts.titelive.spread = Duration::from_secs(3600);
    // Titelive answers trouble with HTTP 200 and a code, not a 5xx.
    opts.titelive.code_fault_rate = opts.titelive.faults.error_5xx_rate;
    opts.titelive.faults.error_5xx_rate = 0.0;
    write_secret(&dir.join("secrets/retailys-token"), &opts.retailys.token)?;
    write_secret(&dir.join("secrets/mplus-secret"), &opts.mplus.secret)?;
    let sb = Sandbox::start(opts)
        .await
        .context("cannot start the simulators (is another demo or `ordersync sandbox` running?)")?;
    sb.cloudsuite
        .confirm_new_orders_every(Duration::from_secs(4));
    sb.titelive.confirm_new_orders_every(Duration::from_secs(7));
    // New Retailys orders keep arriving too, until the demo stops.
    let (shop, stop) = (sb.retailys.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    shop.add_order(RetailysOrderSpec::default());
                }
                _ = stop.cancelled() => break,
            }
        }
    });
    // The till rings up an order now and then too.
    let till_sim = sb.mplus.clone();
    let till_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = till_stop.cancelled() => return,
                _ = tick.tick() => { till_sim.add_order(); }
            }
        }
    });
    sb.vinou.place_orders_every(Duration::from_secs(6));

    let shown = config_path.display();
    match &args.tryton {
        Some(url) => eprintln!(
            "ordersync demo: the shop simulators below -> ordersync -> Tryton {url}\n  ship in Tryton (Sales > the sale > its shipment) to see it written back"
        ),
        None => eprintln!(
            "ordersync demo: the shop simulators below -> ordersync -> http ERP simulator {}",
            sb.erp_url
        ),
    }
    eprintln!(
        "  CloudSuite {}  Retailys {}  Titelive {}  MplusKASSA {}  Vinou {}",
        sb.cloudsuite_url, sb.retailys_url, sb.titelive_url, sb.mplus_url, sb.vinou_url
    );
    eprintln!("  ledger:  {}", config.daemon.db_path().display());
    eprintln!("  watch:   ordersync --config {shown} status");
    eprintln!("  inspect: ordersync --config {shown} orders list");
    eprintln!("  Ctrl-C stops (the ledger stays for inspection until the next demo).\n");
    let mut config = config;
    if args.tryton.is_some() {
        // The Tryton fixture holds the CloudSuite catalogue only: the other
        // shops' products would park every one of their orders.
        config.sources.retain(|s| s.kind == SourceKind::Cloudsuite);
    }
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
        assert!(DEMO_CONFIG.contains(&format!("url = \"{DEMO_ERP_URL}\"")));
    }
}
