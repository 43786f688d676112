//! ordersync: moves webshop and point-of-sale orders into an ERP and writes
//! the ERP's answer back to where each order came from.
//!
//! The flow, one source at a time:
//! 1. [`poll`] walks a source page by page; [`sources`] supply each API's
//!    requests, incremental mechanism and mapping;
//! 2. [`store`] records the orders of a page and the cursor in ONE SQLite
//!    transaction, on the ledger's own thread (never on a runtime worker);
//! 3. [`outbox`] runs durable jobs: push to the [`erp`], write "accepted" back,
//!    cancel in the ERP what the source cancelled after the push;
//! 4. [`daemon`] polls the ERP for shipments and cancelled sales and queues
//!    the "shipped" and "cancelled" write-backs;
//! 5. every job retries with backoff and is parked, visible in `status`, when it cannot succeed.
//!
//! Modules: [`config`] (TOML + env, validated; the common part, while each
//! source kind's own keys sit next to its connector in `sources/<kind>/config.rs`),
//! [`secret`] (secrets that never print, and redaction of any remote text that
//! echoes one), [`model`] (the canonical
//! order, conversions, checked arithmetic on remote numbers), [`store`] (the
//! ledger: a writer on its own thread (which checkpoints the WAL), and a
//! reader connection for reports), [`poll`] (the one walk loop: page
//! retries, one ledger look-up per page, the cursor rule, the walk guard), [`outbox`] (retry policy with a
//! time budget, leases renewed while a job runs, workers), [`http`] (the one
//! HTTP policy per remote: timeouts, body cap, no redirects, a shared pause after
//! 429/Retry-After, ids as encoded path segments, and the login session every
//! connector that logs in shares), [`sources`] (connectors, and the
//! item-by-item list reading they share), [`erp`] (ERP adapters),
//! [`daemon`] (scheduling and shutdown), [`commands`] (the CLI's commands),
//! [`metrics`] (`/metrics` and `/healthz`), `sandbox` (simulators of every API,
//! for tests, `demo` and benchmarks; only with the cargo feature `sandbox`,
//! on by default, which also brings axum),
//! [`runtime`] (the async runtime and its thread count), [`telemetry`] (logs), [`progress`] (`backfill`'s bar or progress lines),
//! [`throttle`] (backoff and log throttling for loops that fail over and over).

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod erp;
pub mod fleet;
pub mod health;
pub mod http;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod poll;
pub mod progress;
pub mod runtime;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod secret;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod throttle;
