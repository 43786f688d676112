//! Job claims and lease renewals on PostgreSQL: the two job statements
//! that differ from SQLite's (`Store::claim` and `Store::renew_lease` come
//! here on a PostgreSQL ledger). Settling a job (`finish_job`, `retry_later`,
//! `park`, `finish_push`) is the same statement on both (`../jobs.rs`).
//!
//! A claim is one statement: the due jobs are picked with
//! `FOR UPDATE SKIP LOCKED` (rows another claimer is taking right now are
//! passed over, not waited for) and leased in the same `UPDATE`, so two
//! nodes claiming at once never get the same job. Deadlines come from the
//! database's clock.
//!
//! Settling (and renewing) a job checks the lease in the same statement:
//! `lease_owner` names the node, and `attempts` (raised by one at every
//! claim) tells this claim from a later one, even by the same node. It is
//! the job's fencing token: a runner whose lease lapsed and was taken over
//! changes nothing and is told so (`false`).

use std::time::Duration;

use super::{millis, now_ms, sql};
use crate::store::{ClaimFilter, Job, JobKind, Store};

/// Due jobs of a source, picked and leased in one statement. `$1` source,
/// `$2` owner, `$3` lease (ms), `$4` limit, `$5` the orders a filtered claim
/// may take (NULL: all); `$kinds` the class of kinds it may take.
macro_rules! pg_claim {
    ($kinds:literal) => {
        concat!(
            "WITH t AS (SELECT ",
            now_ms!(),
            " AS now),
     picked AS (
       SELECT j.id, j.started_at FROM jobs j, t
       WHERE j.source = $1 AND j.state = 'pending' AND j.next_attempt_at <= t.now",
            $kinds,
            "
         AND (j.lease_until IS NULL OR j.lease_until < t.now)
         AND ($5::text[] IS NULL OR j.order_key = ANY($5::text[]))
         -- Shipments of one order are written back one at a time, in the
         -- order the ERP reported them (as in SQLite).
         AND NOT (j.kind = 'write_shipped' AND EXISTS (
             SELECT 1 FROM jobs p WHERE p.order_key = j.order_key
                AND p.kind = 'write_shipped' AND p.id < j.id
                AND p.state IN ('pending', 'waiting', 'parked')))
       ORDER BY j.next_attempt_at, j.id
       LIMIT $4
       FOR UPDATE OF j SKIP LOCKED
     )
     UPDATE jobs SET lease_owner = $2, lease_until = t.now + $3, attempts = jobs.attempts + 1,
            updated_at = t.now, started_at = COALESCE(jobs.started_at, t.now)
     FROM picked, t
     WHERE jobs.id = picked.id
     RETURNING jobs.id, jobs.kind, jobs.order_key, jobs.ref, jobs.attempts, jobs.payload,
               jobs.first_failed_at, jobs.sent_hash, picked.started_at IS NOT NULL"
        )
    };
}

/// The claim statement of each class of kinds ([`ClaimFilter::class`]),
/// the kinds written out so the planner can use the class's partial index
/// (PostgreSQL migration 3) under a generic plan.
pub(crate) const CLAIM_SQL: [&str; 3] = [
    pg_claim!(""),
    pg_claim!(" AND j.kind IN ('push', 'cancel_in_erp')"),
    pg_claim!(" AND j.kind NOT IN ('push', 'cancel_in_erp')"),
];

impl Store {
    /// Leases up to `limit` due jobs of `source` to `owner` for `lease`.
    pub(crate) fn pg_claim(
        &self,
        source: &str,
        owner: &str,
        lease: Duration,
        limit: usize,
        filter: ClaimFilter<'_>,
    ) -> anyhow::Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys: Option<&[String]> = match filter {
            ClaimFilter::All | ClaimFilter::Talking(_) => None,
            ClaimFilter::Orders(keys) => Some(keys),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with_pg(|c| {
            c.query(
                CLAIM_SQL[filter.class()],
                &[&source, &owner, &millis(lease), &limit, &keys],
            )
            .map_err(sql("claiming jobs"))
        })?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.get(1);
            let attempts: i32 = r.get(4);
            let Some(kind) = JobKind::parse(&kind) else {
                // A kind this build does not know: leave it to its lease's
                // end (as SQLite's claim skips it).
                continue;
            };
            jobs.push(Job {
                id: r.get(0),
                source: source.to_string(),
                kind,
                order_key: r.get(2),
                job_ref: r.get(3),
                attempts: u32::try_from(attempts).unwrap_or(0),
                payload: r.get(5),
                first_failed_at: r.get(6),
                sent_hash: r.get(7),
                in_doubt: r.get(8),
                order: None,
            });
        }
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Extends the lease of a job we are still running. `false` when it is
    /// no longer ours (the lease lapsed and another claim took the job, or
    /// it was rescued): the caller must stop and leave the job alone.
    pub(crate) fn pg_renew_lease(
        &self,
        job: &Job,
        owner: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let n = self.with_pg(|c| {
            c.execute(
                concat!(
                    "UPDATE jobs SET lease_until = ",
                    now_ms!(),
                    " + $4
                     WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'pending'"
                ),
                &[&job.id, &owner, &attempt_no(job), &millis(lease)],
            )
            .map_err(sql("renewing a job lease"))
        })?;
        Ok(n == 1)
    }
}

/// The claim this job value came from (see the module's note on fencing).
fn attempt_no(job: &Job) -> i32 {
    i32::try_from(job.attempts).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::super::testing::TestDb;
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    /// An order and its jobs, written behind the store's back (ingest is
    /// not on PostgreSQL yet). Returns the job ids.
    fn add_order(
        c: &mut postgres::Client,
        key: &str,
        state: &str,
        jobs: &[(&str, &str, &str)],
    ) -> Vec<i64> {
        c.execute(
            "INSERT INTO orders (order_key, source, external_id, state, content_hash,
                                 recorded_by, first_seen_at, updated_at)
             VALUES ($1, 'shop', $1, $2, 'h', 'live', 0, 0)",
            &[&key, &state],
        )
        .unwrap();
        jobs.iter()
            .map(|(kind, job_ref, job_state)| {
                c.query_one(
                    "INSERT INTO jobs (source, kind, order_key, ref, state, next_attempt_at, created_at, updated_at)
                     VALUES ('shop', $1, $2, $3, $4, 0, 0, 0) RETURNING id",
                    &[kind, &key, job_ref, job_state],
                )
                .unwrap()
                .get(0)
            })
            .collect()
    }

    fn job_row(c: &mut postgres::Client, id: i64) -> (String, Option<String>, i32, Option<String>) {
        let r = c
            .query_one(
                "SELECT state, lease_owner, attempts, last_error FROM jobs WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    }

    /// Four nodes (each its own connection) claim from one queue at once
    /// until it is empty: every job is claimed exactly once.
    #[test]
    fn concurrent_claimers_never_get_the_same_job() {
        let db = TestDb::new();
        let stores: Vec<_> = (0..4).map(|_| db.store()).collect();
        let mut c = db.raw();
        let mut all = Vec::new();
        for i in 0..50 {
            all.extend(add_order(
                &mut c,
                &format!("shop:{i}"),
                "queued",
                &[
                    ("push", "", "pending"),
                    ("write_accepted", "", "pending"),
                    ("write_shipped", "a", "pending"),
                    ("write_shipped", "b", "pending"),
                ],
            ));
        }
        // The second shipment of each order waits for the first: 150 due now.
        let barrier = Arc::new(Barrier::new(stores.len()));
        let handles: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(n, store)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let owner = format!("node{n}");
                    let mut mine = Vec::new();
                    loop {
                        let got = store
                            .claim("shop", &owner, LONG, 3, ClaimFilter::All)
                            .unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|j| (j.id, owner.clone())));
                    }
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut per_node = Vec::new();
        for h in handles {
            let mine = h.join().unwrap();
            per_node.push(mine.len());
            for (id, owner) in mine {
                assert!(seen.insert(id), "job {id} claimed twice");
                let (_, lease_owner, attempts, _) = job_row(&mut c, id);
                assert_eq!(lease_owner.as_deref(), Some(owner.as_str()));
                assert_eq!(attempts, 1);
            }
        }
        assert_eq!(seen.len(), 150, "per node: {per_node:?}");
        assert_eq!(all.len(), 200);
    }

    /// A row another transaction holds locked is skipped, not waited for
    /// (without SKIP LOCKED this claim blocks until that transaction ends).
    #[test]
    fn a_locked_job_is_skipped_not_waited_for() {
        let db = TestDb::new();
        let store = db.store();
        let mut c = db.raw();
        let ids = add_order(&mut c, "shop:1", "queued", &[("push", "", "pending")]);
        add_order(&mut c, "shop:2", "queued", &[("push", "", "pending")]);
        let mut holder = db.raw();
        let mut tx = holder.transaction().unwrap();
        tx.query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", &[&ids[0]])
            .unwrap();
        let (send, recv) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(
                store
                    .claim("shop", "n", LONG, 10, ClaimFilter::All)
                    .unwrap(),
            );
        });
        let got = recv
            .recv_timeout(Duration::from_secs(10))
            .expect("the claim waited for a locked row");
        tx.rollback().unwrap();
        assert_eq!(got.len(), 1);
        assert_ne!(got[0].id, ids[0]);
        assert!(!got[0].in_doubt, "a first attempt");
    }

    /// A lease keeps others off until it lapses; then another node takes
    /// the job, and the first can neither renew nor settle it, not even the
    /// same node with the value of its earlier claim.
    #[test]
    fn only_the_current_lease_holder_renews_and_settles() {
        let db = TestDb::new();
        let (a, b) = (db.store(), db.store());
        let mut c = db.raw();
        let ids = add_order(&mut c, "shop:1", "queued", &[("push", "", "pending")]);
        let short = Duration::from_millis(300);
        let first = a.claim("shop", "A", short, 10, ClaimFilter::All).unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            b.claim("shop", "B", LONG, 10, ClaimFilter::All)
                .unwrap()
                .is_empty()
        );
        assert!(a.renew_lease(&first[0], "A", short).unwrap());
        assert!(
            !b.renew_lease(&first[0], "B", LONG).unwrap(),
            "B holds no lease"
        );
        assert!(!b.retry_later(&first[0], "B", "x", 0).unwrap());
        std::thread::sleep(Duration::from_millis(400));
        let second = b.claim("shop", "B", LONG, 10, ClaimFilter::All).unwrap();
        assert_eq!(second.len(), 1, "the lapsed lease is taken over");
        assert!(second[0].in_doubt, "the first attempt may have written");
        assert_eq!(second[0].attempts, 2);
        assert!(!a.renew_lease(&first[0], "A", LONG).unwrap());
        assert!(!a.retry_later(&first[0], "A", "late", 0).unwrap());
        assert!(!a.park(&first[0], "A", "late").unwrap());
        assert!(!a.finish_job(&first[0], "A", "late").unwrap());
        assert_eq!(
            job_row(&mut c, ids[0]),
            ("pending".into(), Some("B".into()), 2, None)
        );
        // B's lease lapses and A claims the job again: A's first claim is
        // still stale (attempts tells the claims apart).
        c.execute("UPDATE jobs SET lease_until = 0", &[]).unwrap();
        let third = a.claim("shop", "A", LONG, 10, ClaimFilter::All).unwrap();
        assert_eq!(third[0].attempts, 3);
        assert!(!a.finish_job(&first[0], "A", "stale").unwrap());
        assert!(!b.finish_job(&second[0], "B", "stale").unwrap());
        assert!(a.finish_job(&third[0], "A", "done").unwrap());
        assert_eq!(job_row(&mut c, ids[0]), ("done".into(), None, 3, None));
        let attempts: i64 = c
            .query_one(
                "SELECT count(*) FROM job_attempts WHERE job_id = $1",
                &[&ids[0]],
            )
            .unwrap()
            .get(0);
        assert_eq!(attempts, 1, "only the settling claim wrote its attempt");
    }

    /// A renewed lease outlasts its first deadline.
    #[test]
    fn renewal_extends_the_lease() {
        let db = TestDb::new();
        let (a, b) = (db.store(), db.store());
        let mut c = db.raw();
        add_order(&mut c, "shop:1", "queued", &[("push", "", "pending")]);
        let jobs = a
            .claim("shop", "A", Duration::from_millis(300), 1, ClaimFilter::All)
            .unwrap();
        assert!(a.renew_lease(&jobs[0], "A", LONG).unwrap());
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            b.claim("shop", "B", LONG, 1, ClaimFilter::All)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn retry_park_finish_and_release() {
        let db = TestDb::new();
        let store = db.store();
        let mut c = db.raw();
        let ids = add_order(
            &mut c,
            "shop:1",
            "pushed",
            &[
                ("write_accepted", "", "pending"),
                ("write_shipped", "t1", "waiting"),
            ],
        );
        let p = add_order(&mut c, "shop:2", "queued", &[("push", "", "pending")]);
        let only_2 = ["shop:2".to_string()];
        let jobs = store
            .claim("shop", "n", LONG, 10, ClaimFilter::Orders(&only_2))
            .unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            p,
            "the filter holds"
        );
        assert!(store.retry_later(&jobs[0], "n", "HTTP 503", 0).unwrap());
        let (state, owner, _, error) = job_row(&mut c, p[0]);
        assert_eq!(
            (state.as_str(), owner, error.as_deref()),
            ("pending", None, Some("HTTP 503"))
        );
        let jobs = store
            .claim("shop", "n", LONG, 10, ClaimFilter::Orders(&only_2))
            .unwrap();
        assert_eq!(jobs[0].attempts, 2);
        assert!(jobs[0].first_failed_at.is_some());
        assert!(store.park(&jobs[0], "n", "HTTP 422").unwrap());
        assert_eq!(job_row(&mut c, p[0]).0, "parked");

        let jobs = store
            .claim("shop", "n", LONG, 10, ClaimFilter::All)
            .unwrap();
        assert_eq!(jobs.len(), 1, "the waiting shipment is not due");
        assert!(store.finish_job(&jobs[0], "n", "accepted written").unwrap());
        let state: String = c
            .query_one("SELECT state FROM orders WHERE order_key = 'shop:1'", &[])
            .unwrap()
            .get(0);
        assert_eq!(state, "shipped", "a shipment waited: the order is shipped");
        assert_eq!(
            job_row(&mut c, ids[1]).0,
            "pending",
            "the shipment is released"
        );
        let jobs = store
            .claim("shop", "n", LONG, 10, ClaimFilter::All)
            .unwrap();
        assert_eq!(jobs[0].kind, JobKind::WriteShipped);
        assert_eq!(store.release_leases("n").unwrap(), 1);
        let jobs = store
            .claim("shop", "m", LONG, 10, ClaimFilter::All)
            .unwrap();
        assert!(store.finish_job(&jobs[0], "m", "shipped written").unwrap());
        let state: String = c
            .query_one("SELECT state FROM orders WHERE order_key = 'shop:1'", &[])
            .unwrap()
            .get(0);
        assert_eq!(state, "completed");
    }
}
