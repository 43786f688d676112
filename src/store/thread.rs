//! The ledger's own thread. The engine's async code never runs SQLite on a
//! tokio worker: [`Store::call`] hands the work to one dedicated thread that
//! owns the writes (so they never wait on each other for the mutex, and a
//! commit's `fsync` stalls no HTTP exchange), and [`Store::read_off`] runs a
//! report on the blocking pool against the read connection.
//!
//! WAL checkpoints stay with the writer (SQLite's `wal_autocheckpoint`),
//! which is now this thread: a checkpoint's `fsync` delays only ledger calls,
//! never a runtime worker (issue 13: 4.5 % of the daemon's time was a
//! checkpoint under the ledger lock on a tokio worker). They must stay with
//! the one writer: a checkpoint from another connection runs while the writer
//! keeps appending, never finds the WAL fully copied, so the WAL is never
//! started over and grows without bound (seen: 2.6 GB in a minute of a
//! 100,000-order backlog; `the_wal_stays_bounded_under_constant_writes`).

use std::sync::Arc;
use std::sync::mpsc;

use super::Store;

type Task = Box<dyn FnOnce() + Send>;

/// The sending end of the ledger thread, made on first use.
pub(super) struct LedgerThread {
    tx: mpsc::Sender<Task>,
}

impl Store {
    /// Runs `work` on a ledger thread and waits for it without blocking
    /// the runtime. The work is one short ledger call (one transaction). On
    /// SQLite there is one ledger thread: calls run one after another in the
    /// order they were made; on PostgreSQL there is one per writer
    /// connection, and calls run side by side.
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
            let rx = Arc::new(std::sync::Mutex::new(rx));
            for _ in 0..self.writers() {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name("ordersync-ledger".into())
                    .spawn(move || {
                        loop {
                            // One waits for the next task at a time; the
                            // lock is let go before the task runs.
                            let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(task) = next else { break };
                            // A panicking task drops its reply; the caller sees it.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a ledger thread; ledger calls run inline");
                }
            }
            LedgerThread { tx }
        })
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

    /// Constant small writes through the ledger thread, with a reader
    /// polling beside them (as `status` and the watchdog do): the WAL is
    /// started over again and again, so it stays near SQLite's 1000-page
    /// checkpoint size. A checkpointer on another connection let it grow by
    /// every commit (80 MB here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_constant_writes() {
        let (dir, store) = super::super::testutil::temp_store();
        let store = Arc::new(store);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.status(&["shop".to_string()]).unwrap();
                }
            })
        };
        for i in 0..20_000 {
            let source = format!("shop-{}", i % 50);
            store
                .call(move |s| s.note_polling(&source, 1))
                .await
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
        let wal = std::fs::metadata(dir.path().join("ordersync.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(wal < 16 * 1024 * 1024, "WAL grew to {wal} bytes");
    }

    /// On PostgreSQL the node's ledger calls run side by side, one per
    /// writer connection (each call is round trips to the server).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgresql_calls_run_side_by_side() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let db = crate::store::pg::testing::TestDb::new();
        let (url, pw) = (db.url.clone(), db.password.clone());
        let store = tokio::task::spawn_blocking(move || Store::connect(&url, Some(&pw)))
            .await
            .unwrap()
            .unwrap();
        let store = Arc::new(store);
        assert_eq!(store.writers(), crate::store::PG_CONNECTIONS);
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls = (0..8).map(|i| {
            let (store, inside, most) =
                (Arc::clone(&store), Arc::clone(&inside), Arc::clone(&most));
            async move {
                store
                    .call(move |s| {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let r = s.note_polling(&format!("shop-{i}"), 1);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        r
                    })
                    .await
            }
        });
        for r in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) > 1, "calls ran one at a time");
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
