//! Fencing (a fleet on one PostgreSQL ledger): a node writes a source's
//! pages and live cursor only while it holds that source's poll lease, and
//! the check runs inside the writing transaction, so a node that lost its
//! lease (it stalled past the lease, and another node took over, raising
//! the epoch) commits nothing. The ERP's shipments and cancellations feeds
//! are fenced the same way, under the lease [`ERP_FEED`].
//!
//! The engine tells the store which leases it holds ([`Store::hold_fence`],
//! [`Store::drop_fence`]); the store refuses a live page of a source whose
//! lease this process does not hold. An SQLite ledger has one daemon and no
//! fences.

use std::fmt;

use super::Store;
use super::pg::{PollLease, now_ms};
use super::sql::Tx;

/// The poll lease of the ERP's feeds (shipments, cancellations).
pub const ERP_FEED: &str = "_erp";

/// A write refused because this node no longer holds the poll lease: the
/// poller must stop polling that source (another node does it now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLease {
    pub source: String,
}

impl fmt::Display for LostLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this node no longer holds the poll lease of {}: nothing of its page was recorded (another node polls it now)",
            self.source
        )
    }
}

impl std::error::Error for LostLease {}

/// Whether an error is (or wraps) a [`LostLease`].
pub fn is_lost_lease(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<LostLease>().is_some())
}

impl Store {
    /// This process holds `lease` (a source's, or [`ERP_FEED`]): its writes
    /// for that source are fenced by it from now on.
    pub fn hold_fence(&self, lease: PollLease) {
        self.fences().insert(lease.name.clone(), lease);
    }

    /// This process no longer holds the lease of `name`.
    pub fn drop_fence(&self, name: &str) {
        self.fences().remove(name);
    }

    /// The lease this process holds for `name`, if any.
    pub fn fence(&self, name: &str) -> Option<PollLease> {
        self.fences().get(name).cloned()
    }

    fn fences(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, PollLease>> {
        self.fences.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the lease of `name` when `result` says it was lost, so the
    /// poller stops at once (the fleet task would notice at its next beat).
    pub(crate) fn forget_lost<T>(
        &self,
        name: &str,
        result: anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if let Err(e) = &result
            && is_lost_lease(e)
        {
            self.drop_fence(name);
        }
        result
    }

    /// The lease a write for `source` must be checked against: none on an
    /// SQLite ledger, and none for a backfill run's own cursor scope (a
    /// backfill may run beside the fleet; the ledger's transactions keep
    /// their pages consistent). A live write on a shared ledger without the
    /// lease is refused.
    pub(crate) fn fence_for(
        &self,
        source: &str,
        scope: Option<&str>,
    ) -> anyhow::Result<Option<PollLease>> {
        if !self.is_shared() {
            return Ok(None);
        }
        match (self.fence(source), scope) {
            (Some(lease), _) => Ok(Some(lease)),
            (None, Some("live")) => Err(LostLease {
                source: source.to_string(),
            }
            .into()),
            (None, _) => Ok(None),
        }
    }
}

/// Checks, inside the writing transaction, that `lease` is still held: same
/// holder, same epoch, not lapsed. `FOR SHARE` makes a takeover (which
/// updates the lease row) wait until this transaction ends.
pub(crate) fn check(tx: &mut Tx<'_>, lease: &PollLease) -> anyhow::Result<()> {
    let held = tx
        .query_opt(
            concat!(
                "SELECT 1 FROM poll_leases WHERE name = ?1 AND holder = ?2 AND epoch = ?3
                   AND expires_at >= ",
                now_ms!(),
                " FOR SHARE"
            ),
            &[&lease.name, &lease.holder, &lease.epoch],
        )?
        .is_some();
    if held {
        Ok(())
    } else {
        Err(LostLease {
            source: lease.name.clone(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Disposition;
    use crate::store::ingest::tests::incoming;
    use crate::store::pg::testing::TestDb;

    /// A node that stalled past its lease (another node took the source
    /// over) wakes up with a page in hand: nothing of it is recorded, not
    /// the orders nor the cursor, and it stops considering itself the
    /// poller. A node without the lease cannot write a live page at all.
    #[test]
    fn a_stalled_node_records_nothing_after_its_lease_went_to_another() {
        let db = TestDb::new();
        let (a, b) = (db.store(), db.store());
        let page = [incoming("1", Disposition::Push, "1")];
        let e = a
            .ingest("shop", "live", &page, Some(("live", "c1")))
            .unwrap_err();
        assert!(is_lost_lease(&e), "{e:#}");

        let short = Duration::from_millis(200);
        let lease = a
            .acquire_poll_lease("shop", "node-a", short)
            .unwrap()
            .unwrap();
        a.hold_fence(lease);
        a.ingest("shop", "live", &page, Some(("live", "c1")))
            .unwrap();
        // Node a stalls; its lease lapses and node b takes the source.
        std::thread::sleep(Duration::from_millis(300));
        let taken = b
            .acquire_poll_lease("shop", "node-b", Duration::from_secs(60))
            .unwrap()
            .unwrap();
        b.hold_fence(taken);
        let later = [incoming("2", Disposition::Push, "1")];
        let e = a
            .ingest("shop", "live", &later, Some(("live", "c2")))
            .unwrap_err();
        assert!(is_lost_lease(&e), "{e:#}");
        assert!(a.fence("shop").is_none(), "a forgets the lease at once");
        assert_eq!(b.cursor("shop", "live").unwrap().as_deref(), Some("c1"));
        assert_eq!(
            b.order_state("shop:2").unwrap(),
            None,
            "nothing of a's page"
        );
        // b, the holder now, records it.
        b.ingest("shop", "live", &later, Some(("live", "c2")))
            .unwrap();
        assert_eq!(b.cursor("shop", "live").unwrap().as_deref(), Some("c2"));
    }
}
