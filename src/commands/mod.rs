//! One function per CLI command. Each returns the process exit code (SPEC §4):
//! 0 success, 1 runtime failure, 2 usage or configuration error, 3 backfill
//! finished with parked orders.

mod backfill;
mod check;
pub mod credentials;
#[cfg(feature = "sandbox")]
mod demo;
mod inspect;
mod reconcile;

pub use backfill::backfill;
pub use check::check_config;
#[cfg(feature = "sandbox")]
pub use demo::{demo, sandbox};
pub use inspect::{db, orders, retry, skip, status};
pub use reconcile::reconcile;

use std::process::ExitCode;

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_PARKED: u8 = 3;

/// Maps an error to its exit code: configuration errors are 2, the rest 1.
pub fn exit_for(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<crate::config::ConfigError>().is_some() {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}
