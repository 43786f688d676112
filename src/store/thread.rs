//! The ledger's own thread. The engine's async code never runs SQLite on a
//! tokio worker: [`Store::call`] hands the work to one dedicated thread that
//! owns the writes (so they never wait on each other for the mutex, and a
//! commit's `fsync` stalls no HTTP exchange), and [`Store::read_off`] runs a
//! report on the blocking pool against the read connection. WAL checkpoints
//! leave the write path too: once the thread runs, a checkpointer with its
//! own connection copies the WAL back every [`CHECKPOINT_EVERY`], so no
//! job's commit pays for one (issue 13: 4.5 % of the daemon's time was a
//! checkpoint's `fsync` under the ledger lock).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Store;

type Task = Box<dyn FnOnce() + Send>;

/// How often the background checkpointer copies the WAL into the database.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The sending end of the ledger thread, made on first use.
pub(super) struct LedgerThread {
    tx: mpsc::Sender<Task>,
}

impl Store {
    /// Runs `work` on the ledger thread and waits for it without blocking
    /// the runtime. The work is one short ledger call (one transaction);
    /// calls run one after another in the order they were made.
    pub async fn call<R, F>(self: &Arc<Self>, work: F) -> R
    where
        F: FnOnce(&Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let store = Arc::clone(self);
        let task: Task = Box::new(move || {
            let _ = reply.send(work(&store));
        });
        let task = match self.thread().tx.send(task) {
            Ok(()) => None,
            Err(mpsc::SendError(task)) => Some(task),
        };
        if let Some(task) = task {
            // The thread is gone (it cannot panic out of a task, but be
            // total): run the work here rather than lose it.
            task();
        }
        match answer.await {
            Ok(r) => r,
            // The task panicked on the ledger thread: the reply was dropped.
            // Resume the panic where the caller can see it (a job's runner
            // counts a panic as a failed attempt).
            Err(_) => panic!("a ledger call panicked on the ledger thread"),
        }
    }

    /// Runs a read-only report (status, health, metrics) on the blocking
    /// pool, against the read connection: a full-table scan never holds up
    /// the ledger thread nor a runtime worker.
    pub async fn read_off<R, F>(self: &Arc<Self>, work: F) -> R
    where
        F: FnOnce(&Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let store = Arc::clone(self);
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a ledger report was cancelled: {e}"),
        }
    }

    fn thread(self: &Arc<Self>) -> &LedgerThread {
        self.thread.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Task>();
            let spawned = std::thread::Builder::new()
                .name("ordersync-ledger".into())
                .spawn(move || {
                    for task in rx {
                        // A panicking task drops its reply; the caller sees it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the ledger thread; ledger calls run inline");
            } else {
                self.start_checkpointer();
            }
            LedgerThread { tx }
        })
    }

    /// Moves WAL checkpoints off the write path: the writer stops running
    /// them itself, and a thread with its own connection runs a passive
    /// checkpoint every [`CHECKPOINT_EVERY`] until the store is dropped.
    fn start_checkpointer(self: &Arc<Self>) {
        let weak: Weak<Store> = Arc::downgrade(self);
        let path: PathBuf = self.path.clone();
        let conn = match rusqlite::Connection::open(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(ledger = %path.display(), error = %e, "cannot open a checkpoint connection; the writer keeps checkpointing");
                return;
            }
        };
        let _ = conn.busy_timeout(Duration::from_secs(1));
        let spawned = std::thread::Builder::new()
            .name("ordersync-checkpoint".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if weak.strong_count() == 0 {
                        // Last one on the way out: leave a short WAL behind.
                        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                        break;
                    }
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background checkpoint failed; next one tries again");
                    }
                }
            });
        match spawned {
            Ok(_) => {
                // Only now that someone checkpoints may the writer stop.
                let _ = self.lock().pragma_update(None, "wal_autocheckpoint", 0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the checkpoint thread; the writer keeps checkpointing")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn calls_run_on_the_ledger_thread_in_order() {
        let (_dir, store) = super::super::testutil::temp_store();
        let store = Arc::new(store);
        let here = std::thread::current().id();
        let mut seen = Vec::new();
        for i in 0..5 {
            let (thread, name, i) = store
                .call(move |_| {
                    let t = std::thread::current();
                    (t.id(), t.name().map(str::to_string), i)
                })
                .await;
            assert_ne!(thread, here, "ran on the caller's thread");
            assert_eq!(name.as_deref(), Some("ordersync-ledger"));
            seen.push(i);
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_leaves_checkpoints_to_the_background() {
        let (_dir, store) = super::super::testutil::temp_store();
        let store = Arc::new(store);
        let before: i64 = store
            .lock()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert!(before > 0);
        store.call(|_| ()).await;
        let after: i64 = store
            .lock()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(after, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_call_reaches_its_caller_and_the_thread_goes_on() {
        let (_dir, store) = super::super::testutil::temp_store();
        let store = Arc::new(store);
        let s = Arc::clone(&store);
        let caught = tokio::spawn(async move { s.call(|_| -> () { panic!("boom") }).await }).await;
        assert!(caught.is_err_and(|e| e.is_panic()));
        assert_eq!(store.call(|_| 7).await, 7);
    }
}
