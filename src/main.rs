//! The `ordersync` binary: parse the command line, load the config, start
//! logging, dispatch, and turn the outcome into an exit code (SPEC §4).

use std::process::ExitCode;

use clap::Parser;
use ordersync::cli::{Cli, Command};
use ordersync::commands::{self, EXIT_CONFIG, exit_for};
#[cfg(feature = "sandbox")]
use ordersync::config::LogFormat;
use ordersync::config::{Config, choose_path};
use ordersync::{daemon, shutdown, telemetry};

fn main() -> ExitCode {
    // Before any other thread exists (see the function).
    ordersync::runtime::keep_freed_heap();
    let cli = Cli::parse();
    // The simulators stand in for many remotes at once: a worker per core.
    #[cfg(feature = "sandbox")]
    let per_core = matches!(cli.command, Command::Sandbox(_));
    #[cfg(not(feature = "sandbox"))]
    let per_core = false;
    let workers = match ordersync::runtime::workers_from_env(per_core) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ordersync: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match ordersync::runtime::build(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordersync: cannot start the async runtime: {e}");
            return ExitCode::from(commands::EXIT_RUNTIME);
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    // The simulators need no config file (feature "sandbox", on by default).
    #[cfg(feature = "sandbox")]
    match cli.command {
        Command::Sandbox(args) => {
            telemetry::init(LogFormat::Text);
            return report(commands::sandbox(&args, shutdown::on_signals()).await);
        }
        Command::Demo(args) => {
            telemetry::init(LogFormat::Text);
            return report(commands::demo(&args, shutdown::on_signals()).await);
        }
        _ => {}
    }
    let path = choose_path(cli.config.as_deref());
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ordersync: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.daemon.log_format);
    let outcome = match &cli.command {
        Command::Run => {
            let stop = shutdown::on_signals();
            shutdown::log_hangups(stop.clone());
            daemon::run(config, stop).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Backfill(args) => commands::backfill(&config, args, shutdown::on_signals()).await,
        Command::Status { json, check } => commands::status(&config, *json, *check),
        Command::Skip { order_key, reason } => commands::skip(&config, order_key, reason),
        Command::Db(cmd) => commands::db(&config, cmd),
        Command::Orders(cmd) => commands::orders(&config, cmd),
        Command::Retry(args) => commands::retry(&config, args),
        Command::Reconcile {
            since,
            sources,
            json,
        } => commands::reconcile(&config, *since, sources, *json, shutdown::on_signals()).await,
        Command::CheckConfig(args) => commands::check_config(&config, args).await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(_) | Command::Demo(_) => unreachable!("handled above"),
    };
    report(outcome)
}

fn report(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let code = exit_for(&e);
            if code == ExitCode::from(EXIT_CONFIG) {
                eprintln!("ordersync: configuration error: {e:#}");
            } else {
                eprintln!("ordersync: {e:#}");
            }
            code
        }
    }
}
