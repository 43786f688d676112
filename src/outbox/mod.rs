//! The durable retry machinery: jobs are claimed from the ledger with a
//! lease, run against the ERP or the source, and settled as done, retry later
//! or parked (the three outcomes). Retry state lives in the job row.

mod batch;
pub mod lease;
pub mod policy;
pub mod state;
mod worker;

pub use batch::Settler;
pub use worker::{Engine, Outcome};
