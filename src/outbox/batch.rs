//! Group commit of jobs' successful ends (issue 13.5). Each finished job
//! used to be its own ledger transaction (and, on SQLite, its own hand-off
//! to the ledger thread). Here the runners hand their results to one
//! settle loop per engine, which records whatever has queued up while the
//! previous batch was being written in one transaction
//! ([`Store::finish_many`]), after waiting up to [`GATHER`] for more to
//! come: under load that is many jobs per commit; when idle, a batch of
//! one, [`GATHER`] late.
//!
//! Every item stays fenced on its own (lease owner and attempt), and a
//! runner's answer comes only after the commit, so nothing is reported
//! done that the ledger might still lose. A batch the ledger refuses is
//! recorded again item by item, so one bad item never takes the others'
//! results with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::store::{Finish, Store};

/// At most this many results per transaction: a commit stays short, and
/// the ledger thread serves other calls (claims, pages) between them.
const MAX_BATCH: usize = 64;

/// How long the loop waits, after a batch's first result, for more to
/// join it. A transaction rewrites every page it touches in the WAL
/// (about 16 pages, 4 KB each, for one pushed order: the job, its three
/// due indexes, the order, its state index, its lines, the write-back job,
/// the attempt and the event), and consecutive orders share most of them:
/// ten results in one transaction write little more than one. The wait
/// holds no worker slot (a job gives its slot back before it settles), so
/// it costs a result this long, never throughput (docs/BENCHMARKS.md, "100
/// KB of WAL per order: results wait up to 2 ms for company").
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

type Answer = anyhow::Result<bool>;

/// The runners' side of the settle loop of one engine (one lease owner),
/// started on first use.
pub struct Settler {
    owner: String,
    queue: OnceLock<mpsc::UnboundedSender<(Finish, oneshot::Sender<Answer>)>>,
    /// Transactions written so far (for tests and benchmarks).
    batches: Arc<AtomicUsize>,
}

impl Settler {
    /// The settle loop of jobs claimed as `owner`.
    pub fn new(owner: &str) -> Self {
        Settler {
            owner: owner.to_string(),
            queue: OnceLock::new(),
            batches: Arc::default(),
        }
    }

    /// Records `item` with whatever else is waiting: whether it was still
    /// this claim's (as [`Store::finish_many`] answers per item).
    pub async fn finish(&self, store: &Arc<Store>, item: Finish) -> Answer {
        let owner = self.owner.as_str();
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(settle_loop(
                Arc::clone(store),
                owner.to_string(),
                rx,
                Arc::clone(&self.batches),
            ));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((item, _))) = queue.send((item, reply)) {
            // The loop is gone with the runtime it was started on (a CLI
            // command that ran several): record this one alone.
            return finish_alone(store, owner, item).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the settle loop stopped before recording this result"
            ))
        })
    }

    /// How many transactions the settle loop has written.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
}

async fn finish_alone(store: &Arc<Store>, owner: &str, item: Finish) -> Answer {
    let owner = owner.to_string();
    let done = store
        .call(move |s| s.finish_many(&owner, std::slice::from_ref(&item)))
        .await?;
    Ok(done.first().copied().unwrap_or(false))
}

async fn settle_loop(
    store: Arc<Store>,
    owner: String,
    mut queue: mpsc::UnboundedReceiver<(Finish, oneshot::Sender<Answer>)>,
    batches: Arc<AtomicUsize>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + GATHER;
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    _ => break,
                },
            }
        }
        let (items, replies): (Vec<Finish>, Vec<oneshot::Sender<Answer>>) =
            batch.into_iter().unzip();
        batches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            jobs = items.len(),
            "ledger: settling jobs in one transaction"
        );
        let items = Arc::new(items);
        let (all, o) = (Arc::clone(&items), owner.clone());
        match store.call(move |s| s.finish_many(&o, &all)).await {
            Ok(done) => {
                for (reply, done) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(e) if items.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(_) => {
                for (item, reply) in items.iter().zip(replies) {
                    let _ = reply.send(finish_alone(&store, &owner, item.clone()).await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{ClaimFilter, JobKind};

    /// Results that arrive while the ledger is busy are written together,
    /// and each runner learns its own job's outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_that_wait_for_the_ledger_are_written_together() {
        let (_dir, store) = crate::store::testutil::temp_store();
        let store = Arc::new(store);
        for n in 0..40 {
            crate::store::testutil::seed(&store, &n.to_string());
        }
        let lease = Duration::from_secs(60);
        let jobs = store
            .claim("shop", "me/1/x", lease, 40, ClaimFilter::All)
            .unwrap();
        assert_eq!(jobs.len(), 40);
        let settler = Arc::new(Settler::new("me/1/x"));
        // The ledger is busy for a moment: the results queue up behind it.
        let busy = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .call(|_| std::thread::sleep(Duration::from_millis(300)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut runners = Vec::new();
        for (n, job) in jobs.into_iter().enumerate() {
            let (store, settler) = (Arc::clone(&store), Arc::clone(&settler));
            // Every fifth is a stale claim (its attempt was taken over).
            let mut job = job;
            if n % 5 == 0 {
                job.attempts += 1;
            }
            runners.push(tokio::spawn(async move {
                let item = Finish::Done {
                    job,
                    detail: "ok".into(),
                };
                settler.finish(&store, item).await
            }));
        }
        busy.await.unwrap();
        let mut answers = Vec::new();
        for r in runners {
            answers.push(r.await.unwrap().unwrap());
        }
        let expected: Vec<bool> = (0..40).map(|n| n % 5 != 0).collect();
        assert_eq!(answers, expected);
        assert!(settler.batches() < 10, "{} transactions", settler.batches());
        let left = store
            .claim("shop", "me/1/x", lease, 40, ClaimFilter::All)
            .unwrap();
        assert!(left.iter().all(|j| j.kind == JobKind::Push));
    }
}
