//! The fleet primitives: nodes with heartbeats, one poll lease per source
//! (and `_erp` for the ERP's shipments) with a fencing token, cursor commits
//! that check that token in their own transaction, and the rescue of what
//! dead nodes held.
//!
//! A node's cycle (not wired into the daemon yet): `register_node` once;
//! every heartbeat (a few seconds) `heartbeat` (false: this node was
//! declared dead and must step down: stop its pollers and job runners) and
//! `renew_poll_lease` for each lease it holds (false: stop that poller);
//! `acquire_poll_lease` for sources nobody polls; any node may run `rescue`.
//!
//! Every deadline and age is measured on the database's clock.

use std::time::Duration;

use postgres::Transaction;

use super::{millis, now_ms, sql};
use crate::store::Store;

/// A row of `nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// A node as `status` shows it: what it holds right now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: String,
    pub last_heartbeat_at: String,
    /// Seconds since its last heartbeat, on the database's clock.
    pub heartbeat_age_s: i64,
    /// The poll leases it holds (sources, `_erp` for the ERP's feeds).
    pub sources: Vec<String>,
    /// Jobs it has claimed and not settled.
    pub jobs_running: i64,
}

/// A poll lease this node holds. `epoch` is its fencing token: it grows at
/// every change of holder, so a node that lost the lease (it lapsed, or a
/// rescue freed it) and was replaced holds an epoch that no longer matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollLease {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: i64,
}

/// What a rescue freed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Nodes whose heartbeat was older than the horizon (removed).
    pub nodes: Vec<String>,
    /// Jobs whose lease was held by such a node or had lapsed: due again.
    pub jobs: usize,
    /// Poll leases held by such a node or lapsed: free to acquire.
    pub poll_leases: usize,
}

impl Store {
    /// Records this process as node `id` (`host/pid/nonce`, like
    /// [`lease_owner`](crate::store::lease_owner)), alive now.
    pub fn register_node(&self, id: &str) -> anyhow::Result<()> {
        let host = id.split('/').next().unwrap_or_default();
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        self.with_pg(|c| {
            c.execute(
                concat!(
                    "INSERT INTO nodes (id, host, pid, started_at, heartbeat_at)
                     SELECT $1, $2, $3, t.now, t.now FROM (SELECT ",
                    now_ms!(),
                    " AS now) t
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at"
                ),
                &[&id, &host, &pid],
            )
            .map_err(sql("registering the node"))
        })?;
        Ok(())
    }

    /// This node is alive. False when its row is gone (a rescue declared it
    /// dead and freed what it held): the node must step down.
    pub fn heartbeat(&self, id: &str) -> anyhow::Result<bool> {
        let n = self.with_pg(|c| {
            c.execute(
                concat!(
                    "UPDATE nodes SET heartbeat_at = ",
                    now_ms!(),
                    " WHERE id = $1"
                ),
                &[&id],
            )
            .map_err(sql("heartbeat"))
        })?;
        Ok(n == 1)
    }

    /// The nodes the ledger knows, oldest first.
    pub fn nodes(&self) -> anyhow::Result<Vec<NodeInfo>> {
        let rows = self.with_pg(|c| {
            c.query(
                "SELECT id, host, pid, started_at, heartbeat_at FROM nodes ORDER BY started_at, id",
                &[],
            )
            .map_err(sql("listing nodes"))
        })?;
        Ok(rows
            .iter()
            .map(|r| NodeInfo {
                id: r.get(0),
                host: r.get(1),
                pid: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                started_at: r.get(3),
                heartbeat_at: r.get(4),
            })
            .collect())
    }

    /// A clean stop: node `id` leaves the fleet (its row goes; its job
    /// leases are released by the caller).
    pub fn leave_fleet(&self, id: &str) -> anyhow::Result<()> {
        self.with_pg(|c| {
            c.execute("DELETE FROM nodes WHERE id = $1", &[&id])
                .map_err(sql("leaving the fleet"))
        })?;
        Ok(())
    }

    /// The fleet for `status`: every node, what it polls and how many jobs
    /// it runs now.
    pub fn fleet_view(&self) -> anyhow::Result<Vec<NodeView>> {
        let rows = self.with_pg(|c| {
            c.query(
                concat!(
                    "WITH t AS (SELECT ",
                    now_ms!(),
                    " AS now)
                     SELECT n.id, n.host, n.pid, n.started_at, n.heartbeat_at, t.now - n.heartbeat_at,
                            COALESCE((SELECT string_agg(l.name, ',' ORDER BY l.name) FROM poll_leases l
                                      WHERE l.holder = n.id AND l.expires_at >= t.now), ''),
                            (SELECT count(*) FROM jobs j WHERE j.lease_owner = n.id
                               AND j.state = 'pending' AND j.lease_until >= t.now)
                     FROM nodes n, t ORDER BY n.started_at, n.id"
                ),
                &[],
            )
            .map_err(sql("listing the fleet"))
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let held: String = r.get(6);
                NodeView {
                    id: r.get(0),
                    host: r.get(1),
                    pid: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                    started_at: crate::store::fmt_ms(r.get(3)),
                    last_heartbeat_at: crate::store::fmt_ms(r.get(4)),
                    heartbeat_age_s: r.get::<_, i64>(5) / 1000,
                    sources: held
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    jobs_running: r.get(7),
                }
            })
            .collect())
    }

    /// Takes the poll lease `name` for `node` for `ttl`, when nobody holds
    /// it or its holder let it lapse; the epoch grows by one. `None` while
    /// another holder's lease runs (or this node's own: renew that).
    pub fn acquire_poll_lease(
        &self,
        name: &str,
        node: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<PollLease>> {
        // Two nodes racing for a lapsed lease: ON CONFLICT locks the row,
        // the second waits, then finds it no longer lapsed and gets nothing.
        let row = self.with_pg(|c| {
            c.query_opt(
                concat!(
                    "INSERT INTO poll_leases AS l (name, holder, epoch, acquired_at, expires_at)
                     SELECT $1, $2, 1, t.now, t.now + $3 FROM (SELECT ",
                    now_ms!(),
                    " AS now) t
                     ON CONFLICT (name) DO UPDATE
                       SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
                           acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
                       WHERE l.holder IS NULL OR l.expires_at < EXCLUDED.acquired_at
                     RETURNING l.name, l.holder, l.epoch, l.expires_at"
                ),
                &[&name, &node, &millis(ttl)],
            )
            .map_err(sql("acquiring a poll lease"))
        })?;
        Ok(row.map(|r| PollLease {
            name: r.get(0),
            holder: r.get(1),
            epoch: r.get(2),
            expires_at: r.get(3),
        }))
    }

    /// Extends a poll lease this node still holds (same epoch, not lapsed).
    /// False when it lost it: the poller must stop at once.
    pub fn renew_poll_lease(&self, lease: &mut PollLease, ttl: Duration) -> anyhow::Result<bool> {
        let row = self.with_pg(|c| {
            c.query_opt(
                concat!(
                    "WITH t AS (SELECT ",
                    now_ms!(),
                    " AS now)
                     UPDATE poll_leases SET expires_at = t.now + $4 FROM t
                     WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at >= t.now
                     RETURNING expires_at"
                ),
                &[&lease.name, &lease.holder, &lease.epoch, &millis(ttl)],
            )
            .map_err(sql("renewing a poll lease"))
        })?;
        match row {
            Some(r) => {
                lease.expires_at = r.get(0);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives a poll lease up (clean shutdown): another node may take it at
    /// once. The epoch stays; the next holder raises it.
    pub fn release_poll_lease(&self, lease: &PollLease) -> anyhow::Result<bool> {
        let n = self.with_pg(|c| {
            c.execute(
                concat!(
                    "UPDATE poll_leases SET holder = NULL, expires_at = ",
                    now_ms!(),
                    " WHERE name = $1 AND holder = $2 AND epoch = $3"
                ),
                &[&lease.name, &lease.holder, &lease.epoch],
            )
            .map_err(sql("releasing a poll lease"))
        })?;
        Ok(n == 1)
    }

    /// Runs `work` in one transaction that first checks, and locks against
    /// a takeover until it commits, that `lease` is still held: same
    /// holder, same epoch, not lapsed. `None` (nothing written) when the
    /// lease was lost: a paused or partitioned node that wakes up after its
    /// lease lapsed commits nothing. This is where a page of orders and its
    /// cursor will be written.
    pub fn fenced<T, F>(&self, lease: &PollLease, work: F) -> anyhow::Result<Option<T>>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error> + Send,
        T: Send,
    {
        self.with_pg(|client| {
            let mut tx = client.transaction().map_err(sql("begin"))?;
            // FOR SHARE: a concurrent acquire (ON CONFLICT DO UPDATE) waits
            // until this commits, then sees the lease renewed or not lapsed.
            let held = tx
                .query_opt(
                    concat!(
                        "SELECT 1 FROM poll_leases WHERE name = $1 AND holder = $2 AND epoch = $3
                           AND expires_at >= ",
                        now_ms!(),
                        " FOR SHARE"
                    ),
                    &[&lease.name, &lease.holder, &lease.epoch],
                )
                .map_err(sql("checking the poll lease"))?
                .is_some();
            if !held {
                return Ok(None);
            }
            let out = work(&mut tx).map_err(sql("a fenced write"))?;
            tx.commit().map_err(sql("commit"))?;
            Ok(Some(out))
        })
    }

    /// Moves the cursor `scope` of the lease's source to `value`, only while
    /// the lease is held (see [`fenced`](Self::fenced)). False when it was
    /// lost: the cursor is untouched.
    pub fn commit_cursor(
        &self,
        lease: &PollLease,
        scope: &str,
        value: &str,
    ) -> anyhow::Result<bool> {
        let done = self.fenced(lease, |tx| {
            tx.execute(
                concat!(
                    "INSERT INTO cursors (source, scope, value, updated_at) VALUES ($1, $2, $3, ",
                    now_ms!(),
                    ") ON CONFLICT (source, scope) DO UPDATE
                       SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"
                ),
                &[&lease.name, &scope, &value],
            )
        })?;
        Ok(done.is_some())
    }

    /// Declares dead the nodes whose last heartbeat is older than
    /// `dead_after`, and frees what they held and every lapsed lease: their
    /// jobs are due again at once, their poll leases free to acquire (the
    /// next holder raises the epoch, so the dead node's writes are fenced
    /// off should it wake up). One transaction; any node may run it, as
    /// often as it likes.
    pub fn rescue(&self, dead_after: Duration) -> anyhow::Result<Rescued> {
        let run = |client: &mut postgres::Client| -> Result<Rescued, postgres::Error> {
            let mut tx = client.transaction()?;
            let now: i64 = tx.query_one(concat!("SELECT ", now_ms!()), &[])?.get(0);
            let horizon = now.saturating_sub(millis(dead_after));
            let nodes: Vec<String> = tx
                .query(
                    "DELETE FROM nodes WHERE heartbeat_at < $1 RETURNING id",
                    &[&horizon],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let jobs = tx.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL
                 WHERE lease_owner IS NOT NULL AND (lease_owner = ANY($1) OR lease_until < $2)",
                &[&nodes, &now],
            )?;
            let poll_leases = tx.execute(
                "UPDATE poll_leases SET holder = NULL, expires_at = $2
                 WHERE holder IS NOT NULL AND (holder = ANY($1) OR expires_at < $2)",
                &[&nodes, &now],
            )?;
            tx.commit()?;
            Ok(Rescued {
                nodes,
                jobs: usize::try_from(jobs).unwrap_or(usize::MAX),
                poll_leases: usize::try_from(poll_leases).unwrap_or(usize::MAX),
            })
        };
        self.with_pg(|client| run(client).map_err(sql("rescue")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::super::testing::TestDb;
    use super::*;
    use crate::store::ClaimFilter;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn nodes_register_and_heartbeat() {
        let db = TestDb::new();
        let store = db.store();
        store.register_node("host-a/4242/00000001").unwrap();
        store.register_node("host-b/77/00000002").unwrap();
        let nodes = store.nodes().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].host, "host-a");
        assert_eq!(nodes[0].pid, std::process::id());
        let before = nodes[0].heartbeat_at;
        std::thread::sleep(Duration::from_millis(20));
        assert!(store.heartbeat("host-a/4242/00000001").unwrap());
        assert!(store.nodes().unwrap()[0].heartbeat_at > before);
        assert!(
            !store.heartbeat("host-c/1/00000003").unwrap(),
            "an unknown node"
        );
    }

    /// Nodes racing for one free lease: exactly one gets it, and the epoch
    /// grows at every change of holder, never going back.
    #[test]
    fn one_holder_per_poll_lease_and_the_epoch_only_grows() {
        let db = TestDb::new();
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let store = db.store();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .acquire_poll_lease("shop", &format!("node{n}"), TTL)
                        .unwrap()
                })
            })
            .collect();
        let won: Vec<PollLease> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(won.len(), 1, "{won:?}");
        assert_eq!(won[0].epoch, 1);
        let store = db.store();
        assert!(
            store
                .acquire_poll_lease("shop", "other", TTL)
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .acquire_poll_lease("shop", &won[0].holder, TTL)
                .unwrap()
                .is_none(),
            "its own running lease is renewed, not taken again"
        );
        let mut epochs = vec![won[0].epoch];
        let mut lease = won[0].clone();
        for n in 0..3 {
            assert!(store.release_poll_lease(&lease).unwrap());
            lease = store
                .acquire_poll_lease("shop", &format!("again{n}"), TTL)
                .unwrap()
                .expect("a released lease is free");
            epochs.push(lease.epoch);
        }
        assert_eq!(epochs, [1, 2, 3, 4]);
        // Another source's lease is its own.
        let erp = store.acquire_poll_lease("_erp", "x", TTL).unwrap().unwrap();
        assert_eq!(erp.epoch, 1);
    }

    /// A node whose lease lapsed (paused past it) and was taken over can
    /// neither renew it nor commit a cursor; the new holder can. A lapsed
    /// lease nobody took yet is not enough to commit either.
    #[test]
    fn a_node_that_lost_its_lease_cannot_commit_a_cursor() {
        let db = TestDb::new();
        let (a, b) = (db.store(), db.store());
        let short = Duration::from_millis(300);
        let mut lease_a = a.acquire_poll_lease("shop", "A", short).unwrap().unwrap();
        assert!(a.commit_cursor(&lease_a, "live", "100").unwrap());
        assert!(a.renew_poll_lease(&mut lease_a, short).unwrap());
        std::thread::sleep(Duration::from_millis(400));
        // Lapsed, nobody took it yet: A, waking up, still may not write.
        assert!(!a.commit_cursor(&lease_a, "live", "150").unwrap());
        let lease_b = b
            .acquire_poll_lease("shop", "B", TTL)
            .unwrap()
            .expect("lapsed: free");
        assert_eq!(lease_b.epoch, lease_a.epoch + 1);
        assert!(!a.renew_poll_lease(&mut lease_a, TTL).unwrap());
        assert!(!a.commit_cursor(&lease_a, "live", "200").unwrap());
        assert_eq!(
            a.fenced(&lease_a, |tx| tx.execute("DELETE FROM cursors", &[]))
                .unwrap(),
            None
        );
        assert_eq!(b.cursor("shop", "live").unwrap().as_deref(), Some("100"));
        assert!(b.commit_cursor(&lease_b, "live", "300").unwrap());
        assert_eq!(a.cursor("shop", "live").unwrap().as_deref(), Some("300"));
        // Stale even with the right name and holder: a lease A gets again
        // later has a new epoch, and the old value stays fenced off.
        assert!(b.release_poll_lease(&lease_b).unwrap());
        let again = a.acquire_poll_lease("shop", "A", TTL).unwrap().unwrap();
        assert!(!a.commit_cursor(&lease_a, "live", "400").unwrap());
        assert!(a.commit_cursor(&again, "live", "500").unwrap());
    }

    /// The lease check and the cursor write are one transaction, and the
    /// checked lease row stays locked until it commits: a takeover that
    /// starts while a fenced write runs (the lease lapsed meanwhile) waits
    /// for that commit, so the old and new holders' writes never overlap.
    #[test]
    fn a_takeover_waits_for_a_fenced_write_in_flight() {
        let db = TestDb::new();
        let (a, b) = (db.store(), db.store());
        let lease_a = a
            .acquire_poll_lease("shop", "A", Duration::from_millis(300))
            .unwrap()
            .unwrap();
        let (started, wait_started) = std::sync::mpsc::channel();
        let taker = std::thread::spawn(move || {
            let _ = wait_started.recv();
            let got = b.acquire_poll_lease("shop", "B", TTL).unwrap();
            (got, std::time::Instant::now())
        });
        let mut before_commit = None;
        let committed = a
            .fenced(&lease_a, |tx| {
                std::thread::sleep(Duration::from_millis(400));
                // A's lease has lapsed: B tries to take it now.
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(400));
                let n = tx.execute(
                    "INSERT INTO cursors (source, scope, value, updated_at) VALUES ('shop', 'live', 'a', 0)",
                    &[],
                );
                before_commit = Some(std::time::Instant::now());
                n
            })
            .unwrap();
        assert_eq!(committed, Some(1));
        let (b_lease, b_at) = taker.join().unwrap();
        let b_lease = b_lease.expect("B takes the lapsed lease after A's commit");
        assert_eq!(b_lease.epoch, 2);
        assert!(
            before_commit.is_some_and(|t| b_at > t),
            "B took the lease while A's fenced write was still open"
        );
        assert_eq!(a.cursor("shop", "live").unwrap().as_deref(), Some("a"));
    }

    /// A node that stopped heartbeating is removed by a rescue; its jobs and
    /// poll leases are freed and taken by another node; when the dead node
    /// wakes up it learns it must step down and can write nothing.
    #[test]
    fn rescue_frees_what_a_dead_node_held() {
        let db = TestDb::new();
        let (a, b) = (db.store(), db.store());
        let mut c = db.raw();
        c.batch_execute(
            "INSERT INTO orders (order_key, source, external_id, state, content_hash,
                                 recorded_by, first_seen_at, updated_at)
             VALUES ('shop:1', 'shop', '1', 'queued', 'h', 'live', 0, 0);
             INSERT INTO jobs (source, kind, order_key, state, next_attempt_at, created_at, updated_at)
             VALUES ('shop', 'push', 'shop:1', 'pending', 0, 0, 0);",
        )
        .unwrap();
        a.register_node("A").unwrap();
        b.register_node("B").unwrap();
        let lease_a = a.acquire_poll_lease("shop", "A", TTL).unwrap().unwrap();
        let jobs = a.claim("shop", "A", TTL, 10, ClaimFilter::All).unwrap();
        assert_eq!(jobs.len(), 1);
        // A fresh heartbeat everywhere: nothing to rescue.
        assert_eq!(
            b.rescue(Duration::from_secs(15)).unwrap(),
            Rescued::default()
        );
        // A stops heartbeating (SIGSTOP, a partition): its heartbeat ages.
        c.execute(
            "UPDATE nodes SET heartbeat_at = heartbeat_at - 20000 WHERE id = 'A'",
            &[],
        )
        .unwrap();
        let rescued = b.rescue(Duration::from_secs(15)).unwrap();
        assert_eq!(
            rescued,
            Rescued {
                nodes: vec!["A".into()],
                jobs: 1,
                poll_leases: 1
            }
        );
        assert_eq!(
            b.nodes()
                .unwrap()
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>(),
            ["B"]
        );
        let lease_b = b
            .acquire_poll_lease("shop", "B", TTL)
            .unwrap()
            .expect("freed");
        assert_eq!(lease_b.epoch, 2);
        let taken = b.claim("shop", "B", TTL, 10, ClaimFilter::All).unwrap();
        assert_eq!(taken.len(), 1, "the dead node's job is due again at once");
        // A wakes up.
        assert!(!a.heartbeat("A").unwrap(), "A must step down");
        assert!(!a.commit_cursor(&lease_a, "live", "stale").unwrap());
        assert!(!a.finish_job(&jobs[0], "A", "stale").unwrap());
        assert!(b.finish_job(&taken[0], "B", "done").unwrap());
        assert_eq!(b.cursor("shop", "live").unwrap(), None);
    }
}
