//! Read-only queries for operators: `status`, `orders list`, `orders show`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sql::{Dialect, Tx};
use super::{Store, fmt_ms};

#[derive(Clone, Debug, Serialize)]
pub struct SourceStatusRow {
    pub name: String,
    #[serde(skip)]
    pub last_poll_ms: Option<i64>,
    pub cursor: Option<String>,
    pub last_poll_at: Option<String>,
    #[serde(skip)]
    pub last_success_ms: Option<i64>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    /// Pages the poll under way has recorded (none between polls).
    #[serde(skip)]
    pub pages_under_way: Option<i64>,
    /// Pages the last poll recorded before it failed (none after a success).
    #[serde(skip)]
    pub failed_after_pages: Option<i64>,
}

impl SourceStatusRow {
    /// The last poll failed, and the poll under way has recorded more pages
    /// than that one did: whatever stopped it (a full disk, an outage) no
    /// longer does. A poll that fails at the same page every time never
    /// gets past it.
    pub fn past_last_failure(&self) -> bool {
        self.last_error.is_some()
            && self
                .pages_under_way
                .is_some_and(|p| p > self.failed_after_pages.unwrap_or(0))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ParkedRow {
    pub order_key: String,
    pub job: String,
    pub reason: String,
    pub attempts: u32,
    pub parked_at: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub sources: Vec<SourceStatusRow>,
    /// Orders per state; an order with a parked job counts as `parked`.
    pub orders: BTreeMap<String, i64>,
    pub parked: Vec<ParkedRow>,
    pub jobs_due: i64,
    pub shipments_cursor: Option<String>,
    /// When a running daemon last proved it could write the ledger.
    pub daemon_alive_at: Option<String>,
    /// Orders per source and state (same rule for `parked` as `orders`).
    pub orders_by_source: BTreeMap<String, BTreeMap<String, i64>>,
}

/// See [`Store::push_outcomes`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PushOutcomes {
    pub pushed: usize,
    pub parked: usize,
    pub settled: usize,
    /// Jobs still to run for them (pushes and "accepted" write-backs; the
    /// shipped ones wait for the ERP), as `backfill` waits for them.
    pub open_jobs: usize,
}

/// An order the ERP has by the ledger ([`Store::orders_in_erp`]).
#[derive(Clone, Debug)]
pub struct InErp {
    pub order_key: String,
    pub state: String,
    /// From the canonical order; `None` if it cannot be read.
    pub ordered_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone, Debug, Default)]
pub struct SourceNumbers {
    pub seen: i64,
    pub pushed: i64,
    pub parked: i64,
    pub queued_jobs: i64,
    pub oldest_due_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OrderRow {
    pub order_key: String,
    pub state: String,
    pub erp_order_number: Option<String>,
    pub first_seen_at: String,
    pub updated_at: String,
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttemptRow {
    pub attempt: u32,
    pub at: String,
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobRow {
    pub kind: String,
    pub job_ref: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub parked_reason: Option<String>,
    pub history: Vec<AttemptRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub row: OrderRow,
    pub source: String,
    pub external_id: String,
    pub recorded_by: String,
    /// The source's own change marker as last read (CloudSuite's modified
    /// date, MplusKASSA's sync marker, Titelive's status, packages and
    /// cancelled / returned quantities…).
    pub source_version: Option<String>,
    pub changed_after_push_at: Option<String>,
    pub canonical: Option<serde_json::Value>,
    pub erp_lines: Vec<super::LineNumber>,
    pub jobs: Vec<JobRow>,
    pub events: Vec<EventRow>,
}

fn opt_time(v: Option<i64>) -> Option<String> {
    v.map(fmt_ms)
}

impl Store {
    /// `sources` gives the configured names in order; sources the ledger knows
    /// but the config no longer lists are left out.
    pub fn status(&self, sources: &[String]) -> anyhow::Result<StatusReport> {
        self.read().read(|tx| {
            let rows = source_rows(tx, sources)?;
            let orders_by_source = orders_by_source(tx)?;
            let mut orders = BTreeMap::new();
            for states in orders_by_source.values() {
                for (state, n) in states {
                    *orders.entry(state.clone()).or_insert(0) += n;
                }
            }
            let mut parked = Vec::new();
            for r in tx.query(
                "SELECT order_key, kind, COALESCE(parked_reason, ''), attempts, parked_at FROM jobs
                 WHERE state = 'parked' ORDER BY parked_at, id",
                &[],
            )? {
                parked.push(ParkedRow {
                    order_key: r.get(0)?,
                    job: r.get(1)?,
                    reason: r.get(2)?,
                    attempts: r.get(3)?,
                    parked_at: opt_time(r.get(4)?),
                });
            }
            let jobs_due: i64 =
                tx.value("SELECT count(*) FROM jobs WHERE state = 'pending'", &[])?;
            let shipments_cursor = tx
                .query_opt(
                    "SELECT value FROM cursors WHERE source = '_erp' AND scope = 'shipments'",
                    &[],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            let daemon_alive_at = tx
                .query_opt(
                    "SELECT updated_at FROM daemon_state WHERE key = 'heartbeat'",
                    &[],
                )?
                .map(|r| r.get::<i64>(0))
                .transpose()?
                .map(fmt_ms);
            Ok(StatusReport {
                sources: rows,
                orders,
                parked,
                jobs_due,
                shipments_cursor,
                daemon_alive_at,
                orders_by_source,
            })
        })
    }

    /// Each configured source's cursor, last poll and last error: what the
    /// health checks need, without counting the orders (which `status`
    /// does, and which grows with the ledger).
    pub fn source_rows(&self, sources: &[String]) -> anyhow::Result<Vec<SourceStatusRow>> {
        self.read().read(|tx| source_rows(tx, sources))
    }

    /// Per-source numbers for `/metrics`.
    pub fn source_numbers(&self) -> anyhow::Result<BTreeMap<String, SourceNumbers>> {
        let now = super::now_ms();
        self.read().read(|tx| {
            let mut out: BTreeMap<String, SourceNumbers> = BTreeMap::new();
            // Both counts from indexes (`orders_by_source_state`,
            // `orders_pushed`): a scrape never reads every order row.
            for r in tx.query("SELECT source, count(*) FROM orders GROUP BY source", &[])? {
                out.entry(r.get(0)?).or_default().seen = r.get(1)?;
            }
            for r in tx.query(
                "SELECT source, count(*) FROM orders WHERE pushed_at IS NOT NULL GROUP BY source",
                &[],
            )? {
                out.entry(r.get(0)?).or_default().pushed = r.get(1)?;
            }
            for r in tx.query(
                "SELECT source, count(DISTINCT order_key) FROM jobs WHERE state = 'parked' GROUP BY source",
                &[],
            )? {
                out.entry(r.get(0)?).or_default().parked = r.get(1)?;
            }
            for r in tx.query(
                "SELECT source, count(*), min(CASE WHEN next_attempt_at <= ?1 THEN next_attempt_at END)
                 FROM jobs WHERE state = 'pending' GROUP BY source",
                &[&now],
            )? {
                let e = out.entry(r.get(0)?).or_default();
                e.queued_jobs = r.get(1)?;
                e.oldest_due_ms = r.get(2)?;
            }
            Ok(out)
        })
    }

    /// Proves the ledger takes writes (health checks) and tells `status`
    /// when a daemon was last alive.
    pub fn write_heartbeat(&self) -> anyhow::Result<()> {
        self.lock().auto(|tx| {
            tx.exec(
                "INSERT INTO daemon_state (key, value, updated_at) VALUES ('heartbeat', ?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&std::process::id().to_string(), &super::now_ms()],
            )
        })?;
        Ok(())
    }

    /// Orders of `source` the ERP has by the ledger (an ERP number, or a
    /// state past the push), with their state and when they were ordered:
    /// `reconcile` looks among them for orders the source no longer lists.
    pub fn orders_in_erp(&self, source: &str) -> anyhow::Result<Vec<InErp>> {
        let mut conn = self.read();
        let ordered_at = match conn.dialect() {
            Dialect::Sqlite => "json_extract(p.canonical_json, '$.ordered_at')",
            Dialect::Postgres => "CAST(p.canonical_json AS json) ->> 'ordered_at'",
        };
        let sql = format!(
            "SELECT o.order_key, o.state, {ordered_at}
             FROM orders o LEFT JOIN order_payloads p ON p.order_key = o.order_key
             WHERE o.source = ?1
               AND (o.erp_order_number IS NOT NULL OR o.state IN ('pushed', 'accepted', 'shipped', 'completed'))
             ORDER BY o.order_key"
        );
        conn.read(|tx| {
            tx.query(&sql, &[&source])?
                .iter()
                .map(|r| {
                    let at: Option<String> = r.get(2)?;
                    Ok(InErp {
                        order_key: r.get(0)?,
                        state: r.get(1)?,
                        ordered_at: at
                            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()),
                    })
                })
                .collect()
        })
    }

    /// How far these orders got: how many are in the ERP (by the ledger),
    /// how many have a parked job, and how many are either (`backfill`'s
    /// progress; an order both pushed and parked counts once in the last).
    pub fn push_outcomes(&self, keys: &[String]) -> anyhow::Result<PushOutcomes> {
        self.read().read(|tx| {
            let mut out = PushOutcomes::default();
            for key in keys {
                let row = tx.query_opt(
                    "SELECT state,
                            EXISTS (SELECT 1 FROM jobs j WHERE j.order_key = o.order_key AND j.state = 'parked'),
                            (SELECT count(*) FROM jobs j WHERE j.order_key = o.order_key AND j.state = 'pending'
                                                              AND j.kind != 'write_shipped')
                     FROM orders o WHERE o.order_key = ?1",
                    &[key],
                )?;
                if let Some(r) = row {
                    let (state, parked, open): (String, bool, usize) =
                        (r.get(0)?, r.get(1)?, r.get(2)?);
                    out.open_jobs += open;
                    let pushed = super::in_erp(&state);
                    out.pushed += usize::from(pushed);
                    out.parked += usize::from(parked);
                    out.settled += usize::from(pushed || parked);
                }
            }
            Ok(out)
        })
    }

    pub fn list_orders(
        &self,
        source: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<OrderRow>> {
        self.read().read(|tx| {
            tx.query(
                "SELECT order_key, state, erp_order_number, first_seen_at, updated_at, note FROM orders
                 WHERE (CAST(?1 AS TEXT) IS NULL OR source = ?1) AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
                 ORDER BY first_seen_at DESC, order_key LIMIT ?3",
                &[&source, &state, &limit],
            )?
            .iter()
            .map(|r| {
                Ok(OrderRow {
                    order_key: r.get(0)?,
                    state: r.get(1)?,
                    erp_order_number: r.get(2)?,
                    first_seen_at: fmt_ms(r.get(3)?),
                    updated_at: fmt_ms(r.get(4)?),
                    note: r.get(5)?,
                })
            })
            .collect()
        })
    }

    pub fn order_detail(&self, order_key: &str) -> anyhow::Result<Option<OrderDetail>> {
        let lines = match self.order_for(order_key, false)? {
            Some(o) => o.lines,
            None => return Ok(None),
        };
        self.read().read(|tx| {
            let Some(r) = tx.query_opt(
                "SELECT o.order_key, o.state, o.erp_order_number, o.first_seen_at, o.updated_at, o.note,
                        o.source, o.external_id, o.recorded_by, o.changed_after_push_at, p.canonical_json,
                        o.source_version
                 FROM orders o LEFT JOIN order_payloads p ON p.order_key = o.order_key
                 WHERE o.order_key = ?1",
                &[&order_key],
            )?
            else {
                return Ok(None);
            };
            let canonical: Option<String> = r.get(10)?;
            let mut detail = OrderDetail {
                row: OrderRow {
                    order_key: r.get(0)?,
                    state: r.get(1)?,
                    erp_order_number: r.get(2)?,
                    first_seen_at: fmt_ms(r.get(3)?),
                    updated_at: fmt_ms(r.get(4)?),
                    note: r.get(5)?,
                },
                source: r.get(6)?,
                external_id: r.get(7)?,
                recorded_by: r.get(8)?,
                source_version: r.get(11)?,
                changed_after_push_at: opt_time(r.get(9)?),
                canonical: canonical.and_then(|t| serde_json::from_str(&t).ok()),
                erp_lines: lines.clone(),
                jobs: Vec::new(),
                events: Vec::new(),
            };
            for r in tx.query(
                "SELECT id, kind, ref, state, attempts, next_attempt_at, last_error, parked_reason
                 FROM jobs WHERE order_key = ?1 ORDER BY id",
                &[&order_key],
            )? {
                let id: i64 = r.get(0)?;
                let mut job = JobRow {
                    kind: r.get(1)?,
                    job_ref: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    next_attempt_at: fmt_ms(r.get(5)?),
                    last_error: r.get(6)?,
                    parked_reason: r.get(7)?,
                    history: Vec::new(),
                };
                for a in tx.query(
                    "SELECT attempt, at, outcome, error FROM job_attempts WHERE job_id = ?1 ORDER BY id",
                    &[&id],
                )? {
                    job.history.push(AttemptRow {
                        attempt: a.get(0)?,
                        at: fmt_ms(a.get(1)?),
                        outcome: a.get(2)?,
                        error: a.get(3)?,
                    });
                }
                detail.jobs.push(job);
            }
            for e in tx.query(
                "SELECT at, kind, detail FROM events WHERE order_key = ?1 ORDER BY id",
                &[&order_key],
            )? {
                detail.events.push(EventRow {
                    at: fmt_ms(e.get(0)?),
                    kind: e.get(1)?,
                    detail: e.get(2)?,
                });
            }
            Ok(Some(detail))
        })
    }
}

/// The rows of [`Store::source_rows`], in `sources`' order.
fn source_rows(tx: &mut Tx<'_>, sources: &[String]) -> anyhow::Result<Vec<SourceStatusRow>> {
    let mut rows = Vec::new();
    for name in sources {
        let cursor: Option<String> = tx
            .query_opt(
                "SELECT value FROM cursors WHERE source = ?1 AND scope = 'live'",
                &[name],
            )?
            .map(|r| r.get(0))
            .transpose()?;
        let st = tx.query_opt(
            "SELECT last_poll_at, last_success_at, last_error, pages_under_way, failed_after_pages
             FROM source_status WHERE source = ?1",
            &[name],
        )?;
        let (poll, success, error, under_way, failed_after) = match st {
            Some(r) => (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
            None => (None, None, None, None, None),
        };
        rows.push(SourceStatusRow {
            name: name.clone(),
            last_poll_ms: poll,
            cursor,
            last_poll_at: opt_time(poll),
            last_success_ms: success,
            last_success_at: opt_time(success),
            last_error: error,
            pages_under_way: under_way,
            failed_after_pages: failed_after,
        });
    }
    Ok(rows)
}

/// Orders per source and state, where an order with a parked job counts as
/// `parked` instead of its state (once, however many of its jobs are
/// parked). Counted from the `(source, state)` index, then the few orders
/// with a parked job moved over: asking every order whether it has a
/// parked job took 640 ms at 100,000 orders, and the daemon's health
/// loop asked every 10 s (docs/BENCHMARKS.md).
fn orders_by_source(tx: &mut Tx<'_>) -> anyhow::Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in tx.query(
        "SELECT source, state, count(*) FROM orders GROUP BY source, state",
        &[],
    )? {
        out.entry(r.get(0)?)
            .or_default()
            .insert(r.get(1)?, r.get(2)?);
    }
    for r in tx.query(
        "SELECT o.source, o.state, count(DISTINCT o.order_key) FROM jobs j
         JOIN orders o ON o.order_key = j.order_key
         WHERE j.state = 'parked' GROUP BY o.source, o.state",
        &[],
    )? {
        let (source, state, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let states = out.entry(source).or_default();
        if let Some(count) = states.get_mut(&state) {
            *count -= n;
            if *count <= 0 {
                states.remove(&state);
            }
        }
        *states.entry("parked".into()).or_insert(0) += n;
    }
    Ok(out)
}
