//! SIGTERM / SIGINT become a cancelled token; a second signal exits at once.
//! For the daemon, SIGHUP (whose default is to end the process without a
//! word) is logged and ignored: there is no configuration reload.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The line logged for SIGHUP.
pub const HANGUP_MESSAGE: &str = "SIGHUP received; ordersync does not reload its configuration, restart the service to apply changes";

/// Must be called inside the runtime. The handlers are installed before this
/// returns, so a signal that comes right after is never missed.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    let mut signals = StopSignals::install();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("stop requested (SIGTERM/SIGINT)");
        t.cancel();
        signals.next().await;
        tracing::warn!("second stop request: exiting now");
        std::process::exit(130);
    });
    token
}

/// The daemon keeps running on SIGHUP and says so, until `stop`. Reloading
/// the configuration in place is not offered: sources, secrets and the
/// ledger are wired together at start, and a restart is cheap and safe.
/// Must be called inside the runtime; the handler is installed before this
/// returns.
pub fn log_hangups(stop: CancellationToken) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; it will stop the daemon");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hangup.recv() => match got {
                    Some(()) => tracing::info!("{HANGUP_MESSAGE}"),
                    None => break,
                },
                _ = stop.cancelled() => break,
            }
        }
    });
}

struct StopSignals(Option<(Signal, Signal)>);

impl StopSignals {
    fn install() -> Self {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => StopSignals(None),
        }
    }

    async fn next(&mut self) {
        match &mut self.0 {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
