//! Several orders into Tryton together (`erp.batch_size`): on Tryton most
//! of a sale's cost is per call and per transaction, not per sale (measured
//! in docs/BENCHMARKS.md: `confirm` on 50 sales costs little more than on
//! one).
//!
//! The worker still runs one job per order, with its own lease, deadline
//! and settle. Each job's push queues its order here; whichever waiting
//! push gets one of the `max_in_flight` batch permits takes up to
//! `batch_size` queued orders and runs them together (a group commit): one
//! search by reference, one product search, one `create` of the new sales,
//! one totals read, `quote` and `confirm` on the list, one read-back.
//! Parties and addresses are found, and the missing ones created, for the
//! whole batch in at most five calls under the master-data lock
//! ([`Parties::resolve`]).
//!
//! Every step is its own Tryton transaction, as one order's are, so a crash
//! between any two leaves drafts that the next attempt finds by reference
//! and resumes: never a second sale. When Tryton refuses a list call it has
//! rolled it back for every sale in it: those orders then go on one at a
//! time from where the batch left them ([`push::push_order`]), so one bad
//! order fails alone. A retryable failure of a list call fails every order
//! in it; each job retries and looks its sale up first.
//!
//! A request goes out for the batch only while every job in it still holds
//! its lease ([`lease::holding_all`]); before each call, a job whose lease
//! ran out or whose runner stopped waiting is dropped from the batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use super::TrytonErp;
use super::parties::Parties;
use super::push::{self, Products};
use crate::http::Failure;
use crate::model::Order;
use crate::outbox::lease::{self, Held};
use crate::store::ErpAccepted;

type Answer = Result<ErpAccepted, Failure>;

/// Orders waiting to be pushed, and the permits to push a batch of them.
pub(super) struct Batcher {
    size: usize,
    queue: Mutex<VecDeque<Waiting>>,
    permits: Semaphore,
}

/// One job's push, queued.
struct Waiting {
    order_key: String,
    canonical: String,
    held: Vec<Held>,
    reply: oneshot::Sender<Answer>,
}

/// One order of a running batch, until it is answered.
struct Member {
    order: Order,
    held: Vec<Held>,
    reply: Option<oneshot::Sender<Answer>>,
    /// Its sale, once found or created, and the sale's state.
    sale: Option<(i64, String)>,
    created: bool,
    /// The new sale's values, between preparing and creating it.
    values: Option<Value>,
}

impl Member {
    fn answer(&mut self, answer: Answer) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }

    fn in_state(&self, states: &[&str]) -> Option<i64> {
        self.sale
            .as_ref()
            .filter(|(_, s)| states.contains(&s.as_str()))
            .map(|(id, _)| *id)
    }
}

fn cut() -> Failure {
    Failure::retry(
        "the batch this order was pushed in was cut before it finished; the next attempt looks the sale up first",
    )
}

impl Batcher {
    /// Batches of up to `size` orders, `concurrent` batches at a time.
    pub(super) fn new(size: usize, concurrent: usize) -> Batcher {
        Batcher {
            size: size.max(1),
            queue: Mutex::new(VecDeque::new()),
            permits: Semaphore::new(concurrent.max(1)),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `size` queued orders whose jobs still wait for them.
    fn take(&self) -> Vec<Waiting> {
        let mut queue = self.queue();
        let mut batch = Vec::new();
        while batch.len() < self.size {
            match queue.pop_front() {
                Some(w) if w.reply.is_closed() => {}
                Some(w) => batch.push(w),
                None => break,
            }
        }
        batch
    }

    /// Pushes one order, in a batch with whatever else is waiting.
    pub(super) async fn push(
        &self,
        erp: &TrytonErp,
        order_key: &str,
        canonical_json: &str,
    ) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        self.queue().push_back(Waiting {
            order_key: order_key.to_string(),
            canonical: canonical_json.to_string(),
            held: lease::current(),
            reply,
        });
        loop {
            tokio::select! {
                biased;
                answered = &mut answer => return answered.unwrap_or_else(|_| Err(cut())),
                permit = self.permits.acquire() => {
                    let Ok(_permit) = permit else {
                        return Err(cut());
                    };
                    // Jobs claimed together start together: let them queue.
                    tokio::task::yield_now().await;
                    let batch = self.take();
                    if batch.is_empty() {
                        // Another batch took ours; it answers.
                        return answer.await.unwrap_or_else(|_| Err(cut()));
                    }
                    run(erp, batch).await;
                }
            }
        }
    }
}

/// Pushes a batch and answers every order of it.
async fn run(erp: &TrytonErp, batch: Vec<Waiting>) {
    let started = Instant::now();
    let mut members = Vec::with_capacity(batch.len());
    for w in batch {
        match push::parse(&w.order_key, &w.canonical) {
            Ok(order) => members.push(Member {
                order,
                held: w.held,
                reply: Some(w.reply),
                sale: None,
                created: false,
                values: None,
            }),
            Err(f) => {
                let _ = w.reply.send(Err(f));
            }
        }
    }
    let size = members.len();
    match steps(erp, &mut members).await {
        Ok(()) => {}
        Err(failure @ Failure::Retryable { .. }) => {
            let failure = failure.context(&format!("a batched push of {size} orders"));
            for m in &mut members {
                m.answer(Err(failure.clone()));
            }
        }
        Err(refused) => {
            // Rolled back for the whole list: on one at a time, from where
            // each order is, so the order Tryton refuses fails alone.
            members.retain(|m| m.reply.as_ref().is_some_and(|r| !r.is_closed()));
            tracing::info!(
                orders = members.len(),
                error = %refused,
                "Tryton refused a batched call; pushing these orders one at a time"
            );
            for m in &mut members {
                let one = lease::holding_all(m.held.clone(), push::push_order(erp, &m.order));
                let answer = one.await;
                m.answer(answer);
            }
        }
    }
    tracing::debug!(
        orders = size,
        ms = started.elapsed().as_millis() as u64,
        "pushed a batch to Tryton"
    );
}

/// Drops the orders whose job no longer waits or may no longer send; the
/// leases of the rest, for the next call.
fn prune(members: &mut Vec<Member>) -> Vec<Held> {
    for m in members.iter_mut() {
        if m.reply.as_ref().is_some_and(|r| r.is_closed()) {
            m.reply = None;
        } else if let Some(why) = m.held.iter().find_map(|h| h.check().err()) {
            m.answer(Err(Failure::retry(format!(
                "order {}: dropped from a batched push: {why}",
                m.order.order_key
            ))));
        }
    }
    members.retain(|m| m.reply.is_some());
    members
        .iter()
        .flat_map(|m| m.held.iter().cloned())
        .collect()
}

/// The batch's calls in order; `Err` when a list call failed (what is
/// answered by then stays answered).
async fn steps(erp: &TrytonErp, members: &mut Vec<Member>) -> Result<(), Failure> {
    find(erp, members).await?;
    create(erp, members).await?;
    check_totals(erp, members).await?;
    for (button, from, to) in [
        ("quote", &["draft"][..], "quotation"),
        ("confirm", &["draft", "quotation"][..], "confirmed"),
    ] {
        if button == "confirm" && !erp.confirm {
            continue;
        }
        let held = prune(members);
        let ids: Vec<i64> = members.iter().filter_map(|m| m.in_state(from)).collect();
        if ids.is_empty() {
            continue;
        }
        lease::holding_all(held, erp.button("sale.sale", button, &ids)).await?;
        for m in members.iter_mut() {
            if let Some((_, state)) = m.sale.as_mut().filter(|(_, s)| from.contains(&s.as_str())) {
                *state = to.to_string();
            }
        }
    }
    read_back(erp, members).await
}

/// Every order's sale by reference, in one search.
async fn find(erp: &TrytonErp, members: &mut Vec<Member>) -> Result<(), Failure> {
    let held = prune(members);
    let keys: Vec<&str> = members.iter().map(|m| m.order.order_key.as_str()).collect();
    if keys.is_empty() {
        return Ok(());
    }
    let rows = lease::holding_all(
        held,
        erp.search_read(
            "sale.sale",
            json!([["reference", "in", keys], ["state", "!=", "cancelled"]]),
            &["reference", "state"],
            None,
        ),
    )
    .await?;
    let mut found: HashMap<&str, (i64, String, usize)> = HashMap::new();
    for row in &rows {
        let (Some(reference), Some(id)) = (row["reference"].as_str(), row["id"].as_i64()) else {
            continue;
        };
        let state = row["state"].as_str().unwrap_or_default().to_string();
        // By id ascending: the first sale of a reference is the one used.
        found.entry(reference).or_insert((id, state, 0)).2 += 1;
    }
    for m in members.iter_mut() {
        if let Some((id, state, sales)) = found.get(m.order.order_key.as_str()) {
            if *sales > 1 {
                tracing::warn!(
                    order_key = %m.order.order_key,
                    sales,
                    "Tryton holds more than one sale with this reference; using the first"
                );
            }
            m.sale = Some((*id, state.clone()));
        }
    }
    Ok(())
}

/// The sales not in Tryton yet, in one `create`; each order's master data
/// first (an order whose data Tryton cannot take fails alone here).
async fn create(erp: &TrytonErp, members: &mut Vec<Member>) -> Result<(), Failure> {
    let held = prune(members);
    if members.iter().all(|m| m.sale.is_some()) {
        return Ok(());
    }
    {
        let _master_data = erp.master_data.lock().await;
        let orders: Vec<&Order> = members
            .iter()
            .filter(|m| m.sale.is_none())
            .map(|m| &m.order)
            .collect();
        let mut products =
            lease::holding_all(held.clone(), Products::prefetch(erp, &orders)).await?;
        let mut parties = lease::holding_all(held, Parties::resolve(erp, &orders)).await?;
        for m in members.iter_mut().filter(|m| m.sale.is_none()) {
            let prepared = push::sale_values(erp, &m.order, &mut products, &mut parties);
            match lease::holding_all(m.held.clone(), prepared).await {
                Ok(v) => m.values = Some(v),
                Err(f) => m.answer(Err(f)),
            }
        }
    }
    // Only the orders still waiting and still leased go into the create.
    prune(members);
    let creating: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].values.is_some())
        .collect();
    if creating.is_empty() {
        return Ok(());
    }
    let held: Vec<Held> = creating
        .iter()
        .flat_map(|&i| members[i].held.iter().cloned())
        .collect();
    let values: Vec<Value> = creating
        .iter()
        .filter_map(|&i| members[i].values.take())
        .collect();
    let ids = lease::holding_all(held, erp.create_many("sale.sale", values)).await?;
    for (&i, id) in creating.iter().zip(ids) {
        members[i].sale = Some((id, "draft".into()));
        members[i].created = true;
    }
    Ok(())
}

/// Tryton's totals of every draft against the sources' in one read; the
/// drafts that miss are removed in one call and their orders parked.
async fn check_totals(erp: &TrytonErp, members: &mut Vec<Member>) -> Result<(), Failure> {
    let held = prune(members);
    let drafts: Vec<i64> = members
        .iter()
        .filter_map(|m| m.in_state(&["draft"]))
        .collect();
    if drafts.is_empty() {
        return Ok(());
    }
    let rows = lease::holding_all(
        held,
        erp.search_read(
            "sale.sale",
            json!([["id", "in", drafts]]),
            push::TOTAL_FIELDS,
            None,
        ),
    )
    .await?;
    let by_id: HashMap<i64, &Value> = rows
        .iter()
        .filter_map(|r| Some((r["id"].as_i64()?, r)))
        .collect();
    let mut wrong = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        let Some(sale) = m.in_state(&["draft"]) else {
            continue;
        };
        match push::totals_differ(&m.order, sale, by_id.get(&sale).copied()) {
            Ok(None) => {}
            Ok(Some(why)) => wrong.push((i, sale, why)),
            Err(f) => m.answer(Err(f)),
        }
    }
    if !wrong.is_empty() {
        let sales: Vec<i64> = wrong.iter().map(|(_, s, _)| *s).collect();
        let held: Vec<Held> = wrong
            .iter()
            .flat_map(|(i, _, _)| members[*i].held.iter().cloned())
            .collect();
        let removed = lease::holding_all(held, push::remove_drafts(erp, &sales)).await;
        for (i, sale, why) in wrong {
            let m = &mut members[i];
            m.answer(match &removed {
                Ok(()) => Err(Failure::permanent(why)),
                Err(e) => Err(e.clone().context(&format!(
                    "order {}: removing draft sale {sale} whose total is wrong",
                    m.order.order_key
                ))),
            });
        }
    }
    members.retain(|m| m.reply.is_some());
    Ok(())
}

/// Every sale's number and product lines in one read; answers the batch.
async fn read_back(erp: &TrytonErp, members: &mut Vec<Member>) -> Result<(), Failure> {
    let held = prune(members);
    let sales: Vec<i64> = members
        .iter()
        .filter_map(|m| m.sale.as_ref().map(|(id, _)| *id))
        .collect();
    if sales.is_empty() {
        return Ok(());
    }
    let lines = lease::holding_all(held, push::product_lines(erp, &sales)).await?;
    for m in members.iter_mut() {
        let Some((sale, _)) = m.sale else {
            continue;
        };
        let answer = push::accepted(
            &m.order,
            sale,
            lines.get(&sale).map_or(&[][..], Vec::as_slice),
        )
        .map(|mut accepted| {
            accepted.created = m.created;
            accepted
        });
        m.answer(answer);
    }
    Ok(())
}
