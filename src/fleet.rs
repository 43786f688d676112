//! One node of a fleet: several `ordersync run` processes with the same
//! config share one PostgreSQL ledger (`[ledger] url`). Each source, and
//! the ERP's shipments and cancellations feeds (lease `_erp`), is polled by
//! one node at a time under a poll lease; jobs are claimed by any node
//! (`FOR UPDATE SKIP LOCKED`, see `store::pg::jobs`).
//!
//! Every `ledger.heartbeat` this task, on a ledger connection of its own
//! (so a busy engine never delays it):
//! - says the node is alive; a node told it was declared dead gives up
//!   every poll lease it thought it held, and joins again;
//! - renews the poll leases it holds; one it lost (it lapsed and another
//!   node took it) is dropped, and its poller stops at once;
//! - takes the leases nobody holds (free, or lapsed), and polls that source
//!   at once;
//! - declares dead the nodes silent for two heartbeats and frees what they
//!   held (their jobs are due again, their leases free).
//!
//! So the sources and jobs of a node that dies are taken over within about
//! two heartbeats plus one (10 to 15 s with the default 5 s). A node that
//! only stalled and wakes up after losing its lease commits nothing: every
//! page, cursor and feed write checks the lease in its own transaction
//! (`store::fence`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::lease::{LeaseClock, Membership};
use crate::store::Store;
use crate::store::pg::PollLease;

/// How a node keeps its place in the fleet.
#[derive(Clone, Debug)]
pub struct FleetTiming {
    /// How often the node beats and renews.
    pub heartbeat: Duration,
    /// How long a poll lease lasts unless renewed: two heartbeats.
    pub lease_ttl: Duration,
    /// A node silent this long is dead to the others: two heartbeats.
    pub dead_after: Duration,
}

impl FleetTiming {
    pub fn from_heartbeat(heartbeat: Duration) -> FleetTiming {
        FleetTiming {
            heartbeat,
            lease_ttl: heartbeat * 2,
            dead_after: heartbeat * 2,
        }
    }
}

/// The fleet task of one node. `engine_store` is the engine's ledger (its
/// fences are set here); `own` is a second connection to the same ledger
/// for the fleet's own statements. `pollers` maps each lease name (source
/// names and `_erp`) to the trigger of its poller.
pub fn spawn(
    node: String,
    membership: Membership,
    engine_store: Arc<Store>,
    own: Arc<Store>,
    pollers: HashMap<String, Arc<Notify>>,
    timing: FleetTiming,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut names: Vec<String> = pollers.keys().cloned().collect();
        names.sort();
        let id = node.clone();
        if let Err(e) = own.call(move |s| s.register_node(&id)).await {
            tracing::error!(node = %node, error = %format!("{e:#}"), "cannot join the fleet; trying again at the next heartbeat");
        } else {
            tracing::info!(node = %node, heartbeat_s = timing.heartbeat.as_secs_f64(), "joined the fleet");
        }
        // Beats start a heartbeat apart however long one takes (a slow beat
        // must not stretch the gap the others and `membership` judge by).
        let mut every = tokio::time::interval(timing.heartbeat);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            beat(
                &node,
                &membership,
                &engine_store,
                &own,
                &pollers,
                &names,
                &timing,
            )
            .await;
        }
        leave(&node, &engine_store, &own, &names).await;
    })
}

async fn beat(
    node: &str,
    membership: &Membership,
    engine_store: &Arc<Store>,
    own: &Arc<Store>,
    pollers: &HashMap<String, Arc<Notify>>,
    names: &[String],
    timing: &FleetTiming,
) {
    let id = node.to_string();
    let asked = LeaseClock::now();
    match own.call(move |s| s.heartbeat(&id)).await {
        Ok(true) => membership.beat(asked, timing.dead_after),
        Ok(false) => {
            // Before anything else: no job of ours sends another request.
            membership.declared_dead();
            // Another node found our heartbeat too old and freed what we
            // held: whatever we think we hold is no longer ours.
            tracing::warn!(
                node,
                "this node was declared dead by the fleet (its heartbeat was late); giving up its poll leases and joining again"
            );
            for name in names {
                engine_store.drop_fence(name);
            }
            let id = node.to_string();
            if let Err(e) = own.call(move |s| s.register_node(&id)).await {
                tracing::error!(node, error = %format!("{e:#}"), "cannot join the fleet again");
                return;
            }
        }
        Err(e) => {
            // The ledger is unreachable: our leases run out on their own;
            // every write checks them, so nothing is written twice.
            tracing::warn!(node, error = %format!("{e:#}"), "fleet heartbeat failed; trying again at the next one");
            return;
        }
    }
    let dead_after = timing.dead_after;
    match own.call(move |s| s.rescue(dead_after)).await {
        Ok(r) if !r.nodes.is_empty() || r.jobs > 0 || r.poll_leases > 0 => {
            tracing::warn!(
                node,
                dead = ?r.nodes,
                jobs = r.jobs,
                poll_leases = r.poll_leases,
                "freed what silent nodes held; other nodes take it over"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(node, error = %format!("{e:#}"), "fleet rescue failed"),
    }
    // After the rescue: what silent nodes held is free to take in this beat.
    for name in names {
        match engine_store.fence(name) {
            Some(lease) => renew(node, engine_store, own, lease, timing).await,
            None => take(node, engine_store, own, pollers, name, timing).await,
        }
    }
}

async fn renew(
    node: &str,
    engine_store: &Arc<Store>,
    own: &Arc<Store>,
    lease: PollLease,
    timing: &FleetTiming,
) {
    let ttl = timing.lease_ttl;
    let name = lease.name.clone();
    let renewed = own
        .call(move |s| {
            let mut lease = lease;
            s.renew_poll_lease(&mut lease, ttl)
                .map(|ok| ok.then_some(lease))
        })
        .await;
    match renewed {
        Ok(Some(lease)) => engine_store.hold_fence(lease),
        Ok(None) => {
            engine_store.drop_fence(&name);
            tracing::warn!(node, source = %name, "lost the poll lease (it lapsed and another node took it); this node stops polling it");
        }
        Err(e) => {
            tracing::warn!(node, source = %name, error = %format!("{e:#}"), "cannot renew the poll lease; trying again at the next heartbeat")
        }
    }
}

async fn take(
    node: &str,
    engine_store: &Arc<Store>,
    own: &Arc<Store>,
    pollers: &HashMap<String, Arc<Notify>>,
    name: &str,
    timing: &FleetTiming,
) {
    let (n, id, ttl) = (name.to_string(), node.to_string(), timing.lease_ttl);
    match own.call(move |s| s.acquire_poll_lease(&n, &id, ttl)).await {
        Ok(Some(lease)) => {
            tracing::info!(node, source = %name, epoch = lease.epoch, "took the poll lease; this node polls it now");
            engine_store.hold_fence(lease);
            if let Some(trigger) = pollers.get(name) {
                trigger.notify_one();
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(node, source = %name, error = %format!("{e:#}"), "cannot take the poll lease")
        }
    }
}

/// A clean stop: the poll leases go back at once (another node takes them
/// at its next heartbeat) and the node leaves the fleet.
async fn leave(node: &str, engine_store: &Arc<Store>, own: &Arc<Store>, names: &[String]) {
    for name in names {
        if let Some(lease) = engine_store.fence(name) {
            engine_store.drop_fence(name);
            let _ = own.call(move |s| s.release_poll_lease(&lease)).await;
        }
    }
    let id = node.to_string();
    match own.call(move |s| s.leave_fleet(&id)).await {
        Ok(()) => tracing::info!(node, "left the fleet"),
        Err(e) => {
            tracing::warn!(node, error = %format!("{e:#}"), "cannot leave the fleet cleanly; the others will find it silent")
        }
    }
}

/// Whether a poller may run now: always on an SQLite ledger; on a shared
/// one only while this node holds the lease of `name`.
pub fn may_poll(store: &Store, name: &str) -> bool {
    !store.is_shared() || store.fence(name).is_some()
}
