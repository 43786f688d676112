//! Source connectors, chosen by `kind`. A connector knows how to walk its
//! API's pages (`begin` + `next_page`), look at one order again (`recheck`)
//! and write back what the ERP did (`write_accepted`, `write_shipped`), or
//! say that it takes no such write-back (`writes_accepted`, `writes_shipped`).
//! Polling, retries, logging and the ledger are written once, in
//! [`crate::daemon`] and [`crate::outbox`]; every walk ends by the rule in
//! [`walk`], and JSON lists are read item by item with [`list`].

pub mod cloudsuite;
#[cfg(test)]
pub(crate) mod fuzz_tests;
#[cfg(all(test, feature = "sandbox"))]
mod isolation_tests;
pub mod list;
pub mod mplus;
pub mod retailys;
pub mod titelive;
pub mod vinou;
/// The walk guard lives with the poll loop; connectors name it from here too.
pub use crate::poll::walk;

use chrono::{DateTime, Utc};

use crate::config::{Config, ConfigError, SourceConfig, SourceSettings};
use crate::http::Failure;
use crate::outbox::state::OrderState;
use crate::poll::Known;
use crate::store::{ErpShipment, IncomingOrder, LineNumber};

/// What part of the source's history a walk reads.
#[derive(Clone, Debug)]
pub enum Window {
    /// The daemon's incremental read from the stored live cursor, reading
    /// `lookback` before it again (zero between two reads of the whole
    /// window: [`crate::poll::overlap`]).
    Live {
        cursor: Option<String>,
        lookback: std::time::Duration,
    },
    /// `backfill --since/--until`: a fixed window with its own cursor.
    Backfill {
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        cursor: Option<String>,
    },
    /// `reconcile`: the source's complete listing of a window, read-only.
    /// Like a backfill without a cursor, but nothing is filtered out because
    /// of what the ledger knows or because ordersync would not import it:
    /// every order the source lists in the window comes back, read again
    /// (`Page::orders`) or known unchanged (`Page::unchanged`). A page that
    /// cannot be read whole fails without moving the walk.
    Listing {
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
}

impl Window {
    /// The window's bounds, for a backfill or a listing.
    pub fn bounds(&self) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        match self {
            Window::Live { .. } => None,
            Window::Backfill { since, until, .. } | Window::Listing { since, until } => {
                Some((*since, *until))
            }
        }
    }

    pub fn is_listing(&self) -> bool {
        matches!(self, Window::Listing { .. })
    }

    /// Where a backfill that walks by date reads from, and its own cursor
    /// (a UTC time) if it has one: `since`, or, once that cursor has passed
    /// `since`, the cursor less `lookback` (an interrupted run resumes,
    /// reading again what may have been saved late). `None` for a live poll
    /// or a listing.
    pub fn backfill_from(
        &self,
        lookback: chrono::Duration,
    ) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let Window::Backfill { since, cursor, .. } = self else {
            return None;
        };
        let resume = cursor
            .as_deref()
            .and_then(|c| c.parse::<DateTime<Utc>>().ok());
        let from = match resume {
            Some(c) if c - lookback > *since => c - lookback,
            _ => *since,
        };
        Some((from, resume))
    }
}

/// One page of a walk: its orders, and the cursor to store with them when
/// (and only when) the walk is at a point where everything before it is recorded.
pub struct Page {
    pub orders: Vec<IncomingOrder>,
    pub cursor: Option<String>,
    /// External ids the page listed but the walk did not read again because
    /// the ledger has them unchanged: still orders in the window (backfill
    /// reports them when parked; a dry run counts them).
    pub unchanged: Vec<String>,
}

/// A stored cursor as an operator should read it: a time is shown in UTC
/// with its zone, whatever form the connector keeps it in (Vinou keeps the
/// shop's local time); other cursors (sync markers) as they are.
pub fn cursor_for_display(kind: crate::config::SourceKind, cursor: &str) -> String {
    match kind {
        crate::config::SourceKind::Vinou => {
            crate::model::convert::naive_local_to_utc(cursor, vinou::TIMEZONE)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|_| cursor.to_string())
        }
        _ => cursor.to_string(),
    }
}

/// What a write-back needs to know about an order.
#[derive(Clone, Debug)]
pub struct WriteBack {
    pub order_key: String,
    pub external_id: String,
    pub erp_order_number: String,
    pub lines: Vec<LineNumber>,
    /// For a shipment write-back: what earlier shipments of this order
    /// already delivered, per source line (they run one at a time, in order).
    pub shipped_before: Vec<crate::store::ShippedLine>,
    /// An earlier attempt may have written (it was started and its outcome
    /// is unknown): read the remote before writing. A first attempt writes
    /// directly where the API allows (issue 13.4).
    pub in_doubt: bool,
    /// For a shipment write-back: whether this shipment completes the order
    /// and every tracking number so far. Sources without per-line delivery
    /// write "sent" only with the last line.
    pub progress: crate::store::ShipmentProgress,
    /// The job's durable progress marker (see [`WriteStep`]).
    pub step: WriteStep,
}

/// A write-back's progress marker, kept in its job row, so a write the
/// source cannot read back (the Retailys history record) is neither lost nor
/// repeated when the process dies between two calls. Without a ledger (unit
/// tests) it lives only in memory.
#[derive(Clone, Default)]
pub struct WriteStep {
    current: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    save: Option<SaveStep>,
}

/// Stores a marker (on the ledger thread) and answers whether the job's
/// lease is still ours.
type SaveStep = std::sync::Arc<
    dyn Fn(Option<String>) -> futures_util::future::BoxFuture<'static, anyhow::Result<bool>>
        + Send
        + Sync,
>;

impl WriteStep {
    /// `current`: the marker as the job row holds it; `save` writes a new
    /// one and answers false when the job's lease is no longer ours.
    pub fn new(
        current: Option<String>,
        save: impl Fn(Option<String>) -> futures_util::future::BoxFuture<'static, anyhow::Result<bool>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        WriteStep {
            current: std::sync::Arc::new(std::sync::Mutex::new(current)),
            save: Some(std::sync::Arc::new(save)),
        }
    }

    pub fn get(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stores the marker before the call it stands for is made; a failure
    /// to store it is a retryable failure, so that call is not made.
    pub async fn set(&self, step: Option<&str>) -> Result<(), Failure> {
        if let Some(save) = &self.save {
            match save(step.map(str::to_string)).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Failure::retry(
                        "the job's lease was lost; its progress marker was not stored",
                    ));
                }
                Err(e) => {
                    return Err(Failure::retry(format!(
                        "ledger: storing the write-back's progress: {e:#}"
                    )));
                }
            }
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = step.map(str::to_string);
        Ok(())
    }
}

impl std::fmt::Debug for WriteStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WriteStep").field(&self.get()).finish()
    }
}

pub enum Connector {
    CloudSuite(cloudsuite::CloudSuite),
    Titelive(titelive::Titelive),
    Retailys(retailys::Retailys),
    Mplus(mplus::Mplus),
    Vinou(vinou::Vinou),
}

pub enum Walk {
    CloudSuite(cloudsuite::Walk),
    Titelive(titelive::Walk),
    Retailys(retailys::Walk),
    Mplus(mplus::Walk),
    Vinou(vinou::Walk),
}

impl Walk {
    /// Why the walk cannot claim to have listed everything in its window
    /// (it was cut short, or items could not be keyed); `None`: complete.
    pub fn incomplete(&self) -> Option<String> {
        let guard = match self {
            Walk::CloudSuite(w) => &w.guard,
            Walk::Titelive(w) => &w.guard,
            Walk::Retailys(w) => &w.guard,
            Walk::Mplus(w) => &w.guard,
            Walk::Vinou(w) => &w.guard,
        };
        guard.incomplete()
    }

    /// A live walk of a change feed whose last page was short of a full
    /// batch: the source held nothing more when it answered (MplusKASSA,
    /// [`mplus::Walk::at_head`]). Other walks: never.
    pub fn at_head(&self) -> bool {
        match self {
            Walk::Mplus(w) => w.at_head(),
            _ => false,
        }
    }

    /// The walk is over: reports, once, what its guard counted.
    pub fn finish(&mut self) {
        match self {
            Walk::CloudSuite(w) => w.guard.finish(),
            Walk::Titelive(w) => w.guard.finish(),
            Walk::Retailys(w) => w.guard.finish(),
            Walk::Mplus(w) => w.guard.finish(),
            Walk::Vinou(w) => w.guard.finish(),
        }
    }
}

/// Why a connector's start-up step failed: the configuration does not fit
/// the remote (stop with exit 2), or the remote could not be asked (keep
/// going; the connector tries again on first use).
#[derive(Debug)]
pub enum PrepareError {
    Config(ConfigError),
    Remote(Failure),
}

impl PrepareError {
    /// As a job or poll failure: a configuration mismatch cannot heal by retrying.
    pub fn into_failure(self) -> Failure {
        match self {
            PrepareError::Config(e) => Failure::permanent(e.0),
            PrepareError::Remote(f) => f,
        }
    }
}

impl Connector {
    /// Builds the connector; reads its secrets now, so a missing secret file
    /// stops startup with the key and path named.
    pub fn from_config(config: &Config, source: &SourceConfig) -> Result<Connector, ConfigError> {
        match &source.settings {
            SourceSettings::CloudSuite(s) => Ok(Connector::CloudSuite(
                cloudsuite::CloudSuite::new(config, source, s)?,
            )),
            SourceSettings::Titelive(s) => Ok(Connector::Titelive(titelive::Titelive::new(
                config, source, s,
            )?)),
            SourceSettings::Retailys(s) => Ok(Connector::Retailys(retailys::Retailys::new(
                config, source, s,
            )?)),
            SourceSettings::Mplus(s) => Ok(Connector::Mplus(mplus::Mplus::new(config, source, s)?)),
            SourceSettings::Vinou(s) => Ok(Connector::Vinou(vinou::Vinou::new(config, source, s)?)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Connector::CloudSuite(c) => c.name(),
            Connector::Titelive(c) => c.name(),
            Connector::Retailys(c) => c.name(),
            Connector::Mplus(c) => c.name(),
            Connector::Vinou(c) => c.name(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Connector::CloudSuite(_) => "cloudsuite",
            Connector::Titelive(_) => "titelive",
            Connector::Retailys(_) => "retailys",
            Connector::Mplus(_) => "mplus",
            Connector::Vinou(_) => "vinou",
        }
    }

    /// An async start-up step before the first poll (Retailys resolves its
    /// per-shop status names). Called by `run`, `backfill` and `check-config`.
    pub async fn prepare(&self) -> Result<(), PrepareError> {
        match self {
            Connector::CloudSuite(_)
            | Connector::Titelive(_)
            | Connector::Mplus(_)
            | Connector::Vinou(_) => Ok(()),
            Connector::Retailys(c) => c.prepare().await,
        }
    }

    pub fn begin(&self, window: Window) -> Walk {
        match self {
            Connector::CloudSuite(c) => Walk::CloudSuite(c.begin(window)),
            Connector::Titelive(c) => Walk::Titelive(c.begin(window)),
            Connector::Retailys(c) => Walk::Retailys(c.begin(window)),
            Connector::Mplus(c) => Walk::Mplus(c.begin(window)),
            Connector::Vinou(c) => Walk::Vinou(c.begin(window)),
        }
    }

    /// The next page of the walk, or `None` when it is complete.
    pub async fn next_page(&self, walk: &mut Walk, known: &Known) -> Result<Option<Page>, Failure> {
        match (self, walk) {
            (Connector::CloudSuite(c), Walk::CloudSuite(w)) => c.next_page(w, known).await,
            (Connector::Titelive(c), Walk::Titelive(w)) => c.next_page(w, known).await,
            (Connector::Retailys(c), Walk::Retailys(w)) => c.next_page(w, known).await,
            (Connector::Mplus(c), Walk::Mplus(w)) => c.next_page(w, known).await,
            (Connector::Vinou(c), Walk::Vinou(w)) => c.next_page(w, known).await,
            _ => Err(Failure::permanent(
                "internal error: a walk of another connector",
            )),
        }
    }

    /// Reads one order again (held orders, orders not yet final).
    pub async fn recheck(
        &self,
        external_id: &str,
        known: &Known,
    ) -> Result<IncomingOrder, Failure> {
        match self {
            Connector::CloudSuite(c) => c.recheck(external_id).await,
            Connector::Titelive(c) => c.recheck(external_id).await,
            Connector::Retailys(c) => c.recheck(external_id, known).await,
            Connector::Mplus(c) => c.recheck(external_id).await,
            Connector::Vinou(c) => c.recheck(external_id, known).await,
        }
    }

    /// How many requests to the source may be under way at once
    /// (`max_in_flight`): a recheck round reads this many orders at a time.
    pub fn max_in_flight(&self) -> usize {
        match self {
            Connector::CloudSuite(c) => c.endpoint.max_in_flight(),
            Connector::Titelive(c) => c.endpoint.max_in_flight(),
            Connector::Retailys(c) => c.endpoint.max_in_flight(),
            Connector::Mplus(c) => c.endpoint.max_in_flight(),
            Connector::Vinou(c) => c.endpoint.max_in_flight(),
        }
    }

    /// States of ledger orders this source wants looked at again in recheck
    /// rounds (`recheck_every`):
    /// held ones (CloudSuite's list no longer shows them once they age out of
    /// the window) and unmappable ones (a fix at the source need not change
    /// the fields the list shows). Retailys: every order not yet final (it
    /// has no "changed since" filter).
    pub fn recheck_states(&self) -> &'static [OrderState] {
        use OrderState::*;
        match self {
            Connector::CloudSuite(_) => &[Held, Invalid],
            // Titelive's list shows only confirmed orders: everything not
            // final is read again to see cancellations, packages and returns.
            Connector::Titelive(_) => &[Held, Invalid, Pushed, Accepted, Shipped],
            Connector::Retailys(c) => c.recheck_states(),
            // A fix at the till bumps the order's sync marker: the list
            // brings it back by itself. An unmappable order is read again
            // all the same: the fix may be ours (a `country_map` entry).
            Connector::Mplus(_) => &[Invalid],
            // Vinou's list is newest first: an order waiting for payment
            // sinks out of the pages we read, so only `get` sees it again;
            // so does a cancel at Vinou after the push.
            Connector::Vinou(_) => &[Held, Invalid, Pushed, Accepted],
        }
    }

    /// Whether a live walk reads each order it returns in [`Page::orders`]
    /// as whole as [`Connector::recheck`] would, so a recheck round may
    /// leave out orders a walk read since the last round
    /// ([`crate::poll::fresh`]). CloudSuite reads the same detail; Retailys'
    /// list with `expanded=true` carries the same order as
    /// `GET /System/Orders/{id}?expanded=true`; MplusKASSA's `getOrders`
    /// (with `includeLineList`) carries the same `Order` as `getOrder`.
    /// Titelive's list is not its detail (packages come with the detail
    /// only); Vinou's recheck is left as it was.
    pub fn walk_reads_as_recheck(&self) -> bool {
        matches!(
            self,
            Connector::CloudSuite(_) | Connector::Retailys(_) | Connector::Mplus(_)
        )
    }

    /// Whether the source takes an "accepted" write-back at all. Without
    /// one, a pushed order is `accepted` at once.
    pub fn writes_accepted(&self) -> bool {
        match self {
            Connector::CloudSuite(_) | Connector::Titelive(_) | Connector::Retailys(_) => true,
            Connector::Mplus(c) => c.writes_accepted(),
            Connector::Vinou(c) => c.touch_on_import(),
        }
    }

    /// Whether the source takes a "shipped" write-back at all. Without one,
    /// an ERP shipment is recorded as an event and completes the order
    /// ([`crate::store::Store::record_shipments_with`]).
    pub fn writes_shipped(&self) -> bool {
        match self {
            Connector::CloudSuite(_)
            | Connector::Titelive(_)
            | Connector::Retailys(_)
            | Connector::Mplus(_) => true,
            Connector::Vinou(_) => false,
        }
    }

    /// What the source takes of an ERP shipment: a "shipped" write-back
    /// ([`Connector::writes_shipped`]), whether a tracking number goes with
    /// it (Retailys' tracking, Titelive's message, CloudSuite's DESADV;
    /// MplusKASSA's delivery and CloudSuite's `shipment_state` carry none),
    /// and whether a number that came later can be added by running it
    /// again ([`crate::store::Uptake`]).
    pub fn shipment_uptake(&self) -> crate::store::Uptake {
        let tracking = match self {
            Connector::Titelive(_) | Connector::Retailys(_) => true,
            Connector::CloudSuite(c) => c.sends_desadv(),
            Connector::Mplus(_) | Connector::Vinou(_) => false,
        };
        crate::store::Uptake {
            shipped: self.writes_shipped(),
            tracking: self.writes_shipped() && tracking,
            // Retailys' write-back reads the order and adds only a
            // tracking number it does not list; `sent` and the status are
            // written only when missing. Titelive's number goes with the
            // status change, CloudSuite's DESADV goes once.
            tracking_later: matches!(self, Connector::Retailys(_)),
        }
    }

    pub async fn write_accepted(&self, wb: &WriteBack) -> Result<String, Failure> {
        match self {
            Connector::CloudSuite(c) => c.write_accepted(wb).await,
            Connector::Titelive(c) => c.write_accepted(wb).await,
            Connector::Retailys(c) => c.write_accepted(wb).await,
            Connector::Mplus(c) => c.write_accepted(wb).await,
            Connector::Vinou(c) => c.write_accepted(wb).await,
        }
    }

    pub async fn write_shipped(
        &self,
        wb: &WriteBack,
        shipment: &ErpShipment,
    ) -> Result<String, Failure> {
        match self {
            Connector::CloudSuite(c) => c.write_shipped(wb, shipment).await,
            Connector::Titelive(c) => c.write_shipped(wb, shipment).await,
            Connector::Retailys(c) => c.write_shipped(wb, shipment).await,
            Connector::Mplus(c) => c.write_shipped(wb, shipment).await,
            // Never queued (writes_shipped is false); kept total for safety.
            Connector::Vinou(_) => Ok(format!(
                "Vinou takes no shipped write-back; shipment {} kept in the ledger only",
                shipment.tracking_number.as_deref().unwrap_or("-")
            )),
        }
    }

    /// Writes back a sale the ERP cancelled, where the source's API allows
    /// it (each connector says which of its states may be cancelled); a
    /// permanent failure parks the job naming what to do by hand.
    pub async fn write_cancelled(
        &self,
        wb: &WriteBack,
        cancellation: &crate::store::ErpCancellation,
    ) -> Result<String, Failure> {
        match self {
            Connector::CloudSuite(c) => c.write_cancelled(wb).await,
            Connector::Titelive(c) => c.write_cancelled(wb, cancellation).await,
            Connector::Retailys(c) => c.write_cancelled(wb).await,
            Connector::Mplus(c) => c.write_cancelled(wb).await,
            Connector::Vinou(c) => c.write_cancelled(wb).await,
        }
    }

    /// A harmless authenticated read that proves URL and credentials work.
    pub async fn check(&self) -> Result<String, Failure> {
        match self {
            Connector::CloudSuite(c) => c.check().await,
            Connector::Titelive(c) => c.check().await,
            Connector::Retailys(c) => c.check().await,
            Connector::Mplus(c) => c.check().await,
            Connector::Vinou(c) => c.check().await,
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_backfill_resumes_from_its_cursor_less_the_lookback_never_before_since() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let since = t("2026-11-01T00:00:00Z");
        let w = |cursor: Option<&str>| Window::Backfill {
            since,
            until: None,
            cursor: cursor.map(str::to_string),
        };
        let hour = chrono::Duration::hours(1);
        assert_eq!(w(None).backfill_from(hour), Some((since, None)));
        let c = t("2026-11-03T12:00:00Z");
        assert_eq!(
            w(Some("2026-11-03T12:00:00Z")).backfill_from(hour),
            Some((t("2026-11-03T11:00:00Z"), Some(c)))
        );
        // Within the lookback of `since`, and a cursor that is no time: `since`.
        let near = t("2026-11-01T00:30:00Z");
        assert_eq!(
            w(Some("2026-11-01T00:30:00Z")).backfill_from(hour),
            Some((since, Some(near)))
        );
        assert_eq!(w(Some("page 3")).backfill_from(hour), Some((since, None)));
        let live = Window::Live {
            cursor: None,
            lookback: std::time::Duration::ZERO,
        };
        assert_eq!(live.backfill_from(hour), None);
    }
}
