//! In-process HTTP simulators of the CloudSuite, Retailys, Titelive MediaWeb,
//! MplusKASSA (SOAP) and Vinou shop APIs and the http ERP contract, with fault knobs. Used by integration tests (port 0), by
//! `ordersync sandbox` / `ordersync demo`, and by benchmarks.
//!
//! Built only with the cargo feature `sandbox` (on by default), which also
//! brings in axum. The simulators themselves are private: [`Sandbox::start`]
//! starts them all, its fields are their handles (seed, fault and inspect
//! methods), and the order specs, [`Faults`] and the product [`catalog`] are
//! what callers build with.

/// The products the simulators sell; tests/tryton/products.json holds the same.
pub mod catalog;
pub(crate) mod cloudsuite;
mod conn;
mod erp_http;
mod faults;
mod mplus;
mod retailys;
#[cfg(test)]
mod tests;
mod titelive;
mod vinou;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cloudsuite::{
    LineSpec as CloudSuiteLineSpec, OrderSpec as CloudSuiteOrderSpec,
    PatchAnswer as CloudSuitePatchAnswer,
};
pub use faults::Faults;
pub use retailys::{RetailysOrderSpec, Write as RetailysWrite};
pub use titelive::OrderSpec as TiteliveOrderSpec;

#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub cloudsuite: cloudsuite::CloudSuiteOptions,
    pub erp: erp_http::ErpOptions,
    pub titelive: titelive::TiteliveOptions,
    /// 127.0.0.1:0 in tests.
    pub cloudsuite_listen: SocketAddr,
    pub erp_listen: SocketAddr,
    pub titelive_listen: SocketAddr,
    pub retailys: retailys::RetailysOptions,
    pub retailys_listen: SocketAddr,
    pub mplus: mplus::MplusOptions,
    pub mplus_listen: SocketAddr,
    pub vinou: vinou::VinouOptions,
    pub vinou_listen: SocketAddr,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        SandboxOptions {
            cloudsuite: cloudsuite::CloudSuiteOptions::default(),
            erp: erp_http::ErpOptions::default(),
            titelive: titelive::TiteliveOptions::default(),
            cloudsuite_listen: any_port,
            erp_listen: any_port,
            titelive_listen: any_port,
            retailys: retailys::RetailysOptions::default(),
            retailys_listen: any_port,
            mplus: mplus::MplusOptions::default(),
            mplus_listen: any_port,
            vinou: vinou::VinouOptions::default(),
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
    /// Titelive's WS_URL; the API is under `/api/json/{domain_code}/`.
    pub titelive_url: String,
    pub cloudsuite: cloudsuite::CloudSuiteSim,
    pub erp: erp_http::ErpSim,
    pub titelive: titelive::TiteliveSim,
    /// e.g. "http://127.0.0.1:41236" (no trailing slash).
    pub retailys_url: String,
    pub retailys: retailys::RetailysSim,
    /// The MplusKASSA SOAP endpoint (credentials go in its query string).
    pub mplus_url: String,
    pub mplus: mplus::MplusSim,
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
        let titelive = titelive::TiteliveSim::new(opts.titelive);
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
        let (tl_addr, tl_server) =
            match serve(opts.titelive_listen, titelive.router(), stop.clone()).await {
                Ok(v) => v,
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
        let retailys = retailys::RetailysSim::new(opts.retailys);
        let (rt_addr, rt_server) =
            match serve(opts.retailys_listen, retailys.router(), stop.clone()).await {
                Ok(v) => v,
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
        let mplus = mplus::MplusSim::new(opts.mplus);
        let (mplus_addr, mplus_server) =
            match serve(opts.mplus_listen, mplus.router(), stop.clone()).await {
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
            titelive_url: format!("http://{tl_addr}"),
            cloudsuite,
            erp,
            titelive,
            retailys_url: format!("http://{rt_addr}"),
            retailys,
            mplus_url: format!("http://{mplus_addr}"),
            mplus,
            vinou_url: format!("http://{vinou_addr}"),
            vinou,
            stop,
            servers: vec![
                cs_server,
                erp_server,
                tl_server,
                rt_server,
                mplus_server,
                vinou_server,
            ],
        })
    }

    /// Graceful stop of both servers: in-flight requests finish, idle
    /// keep-alive connections are closed.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.cloudsuite.stop_background();
        self.titelive.stop_background();
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
        self.titelive.stop_background();
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

/// For the library's own tests: the sandbox, and a loaded config (in
/// `dir`) whose ERP is the sandbox's http ERP and whose one source, `till`,
/// is its MplusKASSA; `source_extra` adds keys to that source.
#[cfg(test)]
pub(crate) struct MplusApp {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config: crate::config::Config,
}

#[cfg(test)]
pub(crate) async fn mplus_app(opts: SandboxOptions, source_extra: &str) -> MplusApp {
    crate::http::install_crypto();
    let secret = opts.mplus.secret.clone();
    let erp_token = opts.erp.token.clone();
    let sandbox = Sandbox::start(opts).await.expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mplus-secret"), format!("{secret}\n")).unwrap();
    std::fs::write(dir.path().join("erp-token"), format!("{erp_token}\n")).unwrap();
    let config = format!(
        r#"
[daemon]
state_dir = "state"

[erp]
kind = "http"
url = "{erp}"
token_file = "erp-token"

[[sources]]
name = "till"
kind = "mplus"
base_url = "{mplus}"
ident = "ordersync"
secret_file = "mplus-secret"
schedule = "*/1 * * * * *"
{source_extra}
"#,
        erp = sandbox.erp_url,
        mplus = sandbox.mplus_url,
    );
    let path = dir.path().join("ordersync.toml");
    std::fs::write(&path, config).unwrap();
    let config = crate::config::Config::load(&path).expect("config loads");
    MplusApp {
        sandbox,
        dir,
        config,
    }
}

/// `%XX` decoding, lossy UTF-8 (a `%` not followed by two hex digits stays
/// as it is). `plus_as_space` for form and query text
/// (`application/x-www-form-urlencoded`), not for a header's value, where
/// `+` is itself.
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'+' if plus_as_space => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=&c` -> decoded pairs, keeping blanks and order (Python's
/// `parse_qsl` with `keep_blank_values=True`; a form body reads the same).
pub(crate) fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(raw)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}
