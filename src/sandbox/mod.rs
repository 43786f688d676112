//! In-process HTTP simulators of the CloudSuite webshop API, the Vinou
//! orders service and the http ERP contract, with fault knobs. Used by integration tests (port 0), by
//! `ordersync sandbox` / `ordersync demo`, and by benchmarks.

pub mod catalog;
pub mod cloudsuite;
mod conn;
pub mod erp_http;
pub mod faults;
#[cfg(test)]
mod tests;
pub mod vinou;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::Faults;

#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub cloudsuite: cloudsuite::CloudSuiteOptions,
    pub erp: erp_http::ErpOptions,
    pub vinou: vinou::VinouOptions,
    /// 127.0.0.1:0 in tests.
    pub cloudsuite_listen: SocketAddr,
    pub erp_listen: SocketAddr,
    pub vinou_listen: SocketAddr,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        SandboxOptions {
            cloudsuite: cloudsuite::CloudSuiteOptions::default(),
            erp: erp_http::ErpOptions::default(),
            vinou: vinou::VinouOptions::default(),
            cloudsuite_listen: any_port,
            erp_listen: any_port,
            vinou_listen: any_port,
        }
    }
}

/// Both simulators, running. Dropping it stops the servers too, but only
/// `shutdown` waits for them.
pub struct Sandbox {
    /// e.g. "http://127.0.0.1:41234" (no trailing slash).
    pub cloudsuite_url: String,
    /// `cloudsuite_url` + "/realms/CloudSuite/protocol/openid-connect/token".
    pub token_url: String,
    pub erp_url: String,
    pub cloudsuite: cloudsuite::CloudSuiteSim,
    pub erp: erp_http::ErpSim,
    /// e.g. "http://127.0.0.1:41235": a Vinou source's `base_url`.
    pub vinou_url: String,
    pub vinou: vinou::VinouSim,
    stop: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

impl Sandbox {
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let cloudsuite = cloudsuite::CloudSuiteSim::new(opts.cloudsuite);
        let erp = erp_http::ErpSim::new(opts.erp);
        let vinou = vinou::VinouSim::new(opts.vinou);
        let stop = CancellationToken::new();

        let (cs_addr, cs_server) =
            serve(opts.cloudsuite_listen, cloudsuite.router(), stop.clone()).await?;
        let (erp_addr, erp_server) = match serve(opts.erp_listen, erp.router(), stop.clone()).await
        {
            Ok(v) => v,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        let (vinou_addr, vinou_server) =
            match serve(opts.vinou_listen, vinou.router(), stop.clone()).await {
                Ok(v) => v,
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
        let cloudsuite_url = format!("http://{cs_addr}");
        Ok(Sandbox {
            token_url: format!("{cloudsuite_url}{}", cloudsuite::TOKEN_PATH),
            cloudsuite_url,
            erp_url: format!("http://{erp_addr}"),
            cloudsuite,
            erp,
            vinou_url: format!("http://{vinou_addr}"),
            vinou,
            stop,
            servers: vec![cs_server, erp_server, vinou_server],
        })
    }

    /// Graceful stop of both servers: in-flight requests finish, idle
    /// keep-alive connections are closed.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.cloudsuite.stop_background();
        self.vinou.stop_background();
        for server in std::mem::take(&mut self.servers) {
            let abort = server.abort_handle();
            // A client holding a slow response open must not hang the caller.
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cloudsuite.stop_background();
        self.vinou.stop_background();
    }
}

/// Binds `addr` and serves `router` through the fault-aware listener until `stop`.
pub(crate) async fn serve(
    addr: SocketAddr,
    router: Router,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("sandbox: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let make_service = router.into_make_service_with_connect_info::<conn::ConnCtl>();
    let handle = tokio::spawn(async move {
        let server = axum::serve(conn::FaultListener::new(listener), make_service)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, %local, "sandbox server stopped with an error");
        }
    });
    Ok((local, handle))
}

/// Locks ignoring poisoning: a panicking test thread must not cascade into
/// every later request of a shared simulator.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
