//! The same ledger scenarios on both databases: every statement of the
//! store runs on the embedded SQLite file and on a real PostgreSQL server
//! (the test cluster of `pg::testing`), and must leave the same ledger.

use std::time::Duration;

use rust_decimal::Decimal;

use super::ingest::tests::incoming;
use super::pg::testing::TestDb;
use super::testutil::temp_store;
use super::{ClaimFilter, Disposition, ErpAccepted, ErpCancellation, ErpShipment, JobKind};
use super::{LineNumber, ShippedLine, Store};
use crate::outbox::state::OrderState;

const LEASE: Duration = Duration::from_secs(60);

fn on_both(scenario: impl Fn(&Store)) {
    let (_dir, sqlite) = temp_store();
    scenario(&sqlite);
    let db = TestDb::new();
    let pg = db.store();
    // On a shared ledger a node writes a source's pages (and the ERP's
    // feeds) only under its poll lease.
    pg.register_node("node-a").unwrap();
    for name in ["shop", super::fence::ERP_FEED] {
        let lease = pg
            .acquire_poll_lease(name, "node-a", LEASE)
            .unwrap()
            .unwrap();
        pg.hold_fence(lease);
    }
    scenario(&pg);
}

/// Records `orders` of source `shop` as a live poll would.
fn record_live(store: &Store, orders: &[super::IncomingOrder]) {
    store.ingest("shop", "live", orders, None).unwrap();
}

fn accepted(number: &str) -> ErpAccepted {
    ErpAccepted {
        erp_order_number: number.into(),
        lines: vec![LineNumber {
            source_line_id: "1".into(),
            erp_line_number: "10".into(),
        }],
        created: true,
    }
}

fn one_job(store: &Store, kind: JobKind) -> super::Job {
    let jobs = store
        .claim("shop", "node-a", LEASE, 10, ClaimFilter::All)
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].kind, kind);
    let order = jobs[0]
        .order
        .as_deref()
        .expect("a claimed job comes with its order");
    assert_eq!(
        order.canonical_json.is_some(),
        kind == JobKind::Push,
        "the mapped payload for a push only"
    );
    jobs.into_iter().next().unwrap()
}

/// An order's whole life: recorded, pushed once, accepted written back,
/// shipped in two parts, completed; status, metrics and the operator's
/// views read it back the same on both ledgers.
#[test]
fn an_order_lives_the_same_life_on_both_ledgers() {
    on_both(seeded_life);
}

/// The life of `an_order_lives_the_same_life_on_both_ledgers`, checked as
/// it goes; also what `db migrate --to` copies in its test.
pub(crate) fn seeded_life(store: &Store) {
    {
        let report = store
            .ingest(
                "shop",
                "live",
                &[incoming("1", Disposition::Push, "2")],
                Some(("live", "c1")),
            )
            .unwrap();
        assert_eq!(report.notes.len(), 1);
        // Seen again unchanged: no second job.
        let again = store
            .ingest(
                "shop",
                "live",
                &[incoming("1", Disposition::Push, "2")],
                Some(("live", "c2")),
            )
            .unwrap();
        assert_eq!(again.unchanged, 1);
        assert_eq!(store.cursor("shop", "live").unwrap().as_deref(), Some("c2"));
        assert_eq!(
            store.order_state("shop:1").unwrap(),
            Some(OrderState::Queued)
        );
        let recorded = store.recorded(&["shop:1".into(), "shop:2".into()]).unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].1.as_deref(), Some("v1"));

        let push = one_job(store, JobKind::Push);
        assert!(!push.in_doubt);
        assert!(store.renew_lease(&push, "node-a", LEASE).unwrap());
        assert!(!store.renew_lease(&push, "node-b", LEASE).unwrap());
        let order = store.order_for_job("shop:1").unwrap().unwrap();
        assert_eq!(order.state, OrderState::Queued);
        store.remember_sent(&push, "node-a", "h1").unwrap();
        assert!(
            store
                .finish_push(&push, "node-a", &accepted("SO1"), "h1", true)
                .unwrap()
        );
        assert!(
            !store
                .finish_push(&push, "node-a", &accepted("SO1"), "h1", true)
                .unwrap(),
            "a settled job settles once"
        );
        let order = store.order_for_job("shop:1").unwrap().unwrap();
        assert_eq!(order.erp_order_number.as_deref(), Some("SO1"));
        assert_eq!(order.lines.len(), 1);
        assert!(order.canonical_json.is_some());
        // A write-back reads the same order without its payload.
        let bare = store.order_for("shop:1", false).unwrap().unwrap();
        assert_eq!(bare.canonical_json, None);
        assert_eq!(
            (bare.erp_order_number, bare.lines, bare.content_hash),
            (order.erp_order_number, order.lines, order.content_hash)
        );

        // The accepted write-back fails once, then works.
        let write = one_job(store, JobKind::WriteAccepted);
        assert!(
            store
                .retry_later(&write, "node-a", "HTTP 503 token=secret", 0)
                .unwrap()
        );
        let write = one_job(store, JobKind::WriteAccepted);
        assert!(write.in_doubt, "a second attempt knows the first began");
        assert!(
            store
                .set_write_step(&write, "node-a", Some("patched"))
                .unwrap()
        );
        assert!(
            store
                .finish_job(&write, "node-a", "accepted written")
                .unwrap()
        );
        assert_eq!(
            store.order_state("shop:1").unwrap(),
            Some(OrderState::Accepted)
        );

        // Two partial shipments; the second is written after the first.
        let part = |n: &str, qty: i64| ErpShipment {
            order_key: "shop:1".into(),
            erp_order_number: Some("SO1".into()),
            shipped_at: None,
            carrier: Some("DHL".into()),
            tracking_number: Some(n.into()),
            tracking_url: None,
            lines: vec![ShippedLine {
                source_line_id: String::new(),
                quantity: Decimal::from(qty),
                erp_line_number: Some("10".into()),
            }],
            erp_shipment_id: Some(format!("ship-{n}")),
        };
        let queued = store
            .record_shipments(&[part("T1", 1), part("T2", 1)], "s1")
            .unwrap();
        assert_eq!(queued.len(), 2);
        assert!(
            store
                .record_shipments(&[part("T1", 1)], "s2")
                .unwrap()
                .is_empty(),
            "a shipment seen again is not queued again"
        );
        let first = one_job(store, JobKind::WriteShipped);
        let payload = |job: &super::Job| -> ErpShipment {
            serde_json::from_str(job.payload.as_deref().unwrap()).unwrap()
        };
        let progress = store
            .shipment_progress("shop:1", first.id, &payload(&first))
            .unwrap();
        assert!(!progress.completes_order);
        assert!(
            store
                .finish_job(&first, "node-a", "shipped written")
                .unwrap()
        );
        let second = one_job(store, JobKind::WriteShipped);
        let before = store.shipped_before("shop:1", second.id).unwrap();
        assert_eq!(before.len(), 1);
        assert_eq!(
            before[0].source_line_id, "1",
            "placed by the ERP line number"
        );
        let progress = store
            .shipment_progress("shop:1", second.id, &payload(&second))
            .unwrap();
        assert!(progress.completes_order);
        assert_eq!(progress.tracking_numbers, ["T1", "T2"]);
        assert!(
            store
                .finish_job(&second, "node-a", "shipped written")
                .unwrap()
        );
        assert_eq!(
            store.order_state("shop:1").unwrap(),
            Some(OrderState::Completed)
        );

        store
            .record_poll("shop", Some("HTTP 500 token=secret"))
            .unwrap();
        store.record_poll("shop", None).unwrap();
        store.note_polling("shop", 1).unwrap();
        store.write_heartbeat().unwrap();
        let status = store.status(&["shop".into()]).unwrap();
        assert_eq!(status.orders.get("completed"), Some(&1));
        assert_eq!(status.sources[0].cursor.as_deref(), Some("c2"));
        assert!(status.sources[0].last_error.is_none());
        assert!(status.daemon_alive_at.is_some());
        assert_eq!(status.shipments_cursor.as_deref(), Some("s2"));
        let numbers = store.source_numbers().unwrap();
        assert_eq!(numbers["shop"].seen, 1);
        assert_eq!(numbers["shop"].pushed, 1);
        let rows = store.list_orders(Some("shop"), None, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(
            store
                .list_orders(None, Some("queued"), 10)
                .unwrap()
                .is_empty()
        );
        let detail = store.order_detail("shop:1").unwrap().unwrap();
        assert_eq!(detail.jobs.len(), 4);
        assert!(detail.events.len() >= 6, "{:?}", detail.events);
        let retried = &detail.jobs[1].history[0];
        assert_eq!(retried.outcome, "retry", "{retried:?}");
        assert!(
            retried
                .error
                .as_deref()
                .unwrap_or("")
                .starts_with("HTTP 503"),
            "{retried:?}"
        );
        let in_erp = store.orders_in_erp("shop").unwrap();
        assert_eq!(in_erp.len(), 1);
        assert!(in_erp[0].ordered_at.is_some(), "read from the stored order");
        let outcomes = store.push_outcomes(&["shop:1".into()]).unwrap();
        assert_eq!((outcomes.pushed, outcomes.parked), (1, 0));
        assert_eq!(store.open_jobs("shop").unwrap(), 0);
        assert_eq!(store.next_due_ms("shop", ClaimFilter::All).unwrap(), None);

        // Retention keeps what dedupes.
        assert_eq!(store.prune_ended(i64::MAX, 10).unwrap(), 1);
        assert_eq!(
            store.order_state("shop:1").unwrap(),
            Some(OrderState::Completed)
        );
    }
}

/// What operators do, and what goes wrong: parking, retry, skip, a change
/// after the push, a cancel after the push both ways, held orders, rechecks.
#[test]
fn operators_and_failures_work_the_same_on_both_ledgers() {
    on_both(|store| {
        record_live(
            store,
            &[
                incoming("1", Disposition::Push, "1"),
                incoming("2", Disposition::Hold("payment open".into()), "1"),
                incoming("3", Disposition::Push, "1"),
            ],
        );
        let jobs = store
            .claim(
                "shop",
                "node-a",
                LEASE,
                10,
                ClaimFilter::Orders(&["shop:1".into()]),
            )
            .unwrap();
        assert_eq!(jobs.len(), 1, "the filter holds");
        assert!(store.park(&jobs[0], "node-a", "HTTP 422 bad tax").unwrap());
        assert_eq!(store.parked_among(&["shop:1".into()]).unwrap().len(), 1);
        assert_eq!(store.status(&["shop".into()]).unwrap().parked.len(), 1);
        assert_eq!(store.requeue_order("shop:1").unwrap(), 1);
        assert_eq!(store.skip_order("shop:1", "duplicate").unwrap(), Some(1));
        assert_eq!(store.skip_order("shop:nope", "x").unwrap(), None);
        assert_eq!(store.requeue_order("shop:1").unwrap(), 1, "un-skipped");
        assert_eq!(store.requeue_all_parked().unwrap(), 0);
        assert_eq!(
            store
                .open_jobs_for(&["shop:1".into(), "shop:3".into()])
                .unwrap(),
            2
        );
        assert!(
            store
                .next_due_ms("shop", ClaimFilter::All)
                .unwrap()
                .is_some()
        );
        // Only pushes are queued: a worker with free write-back slots only
        // has nothing to wait for.
        let erp = ClaimFilter::Talking(crate::store::Remote::Erp);
        let source = ClaimFilter::Talking(crate::store::Remote::Source);
        assert!(store.next_due_ms("shop", erp).unwrap().is_some());
        assert_eq!(store.next_due_ms("shop", source).unwrap(), None);
        assert_eq!(store.pull_forward("shop", true).unwrap(), 0);

        let hour = std::time::Duration::from_secs(3600);
        let batch = store
            .recheck_batch("shop", &[OrderState::Held], 10, hour)
            .unwrap()
            .ids;
        assert_eq!(batch, ["2"]);
        // The round is through and the next may begin only in an hour.
        let batch = store
            .recheck_batch("shop", &[OrderState::Held], 10, hour)
            .unwrap()
            .ids;
        assert!(batch.is_empty(), "{batch:?}");

        // Push 1 and 3; then the source changes 1 and cancels 3.
        for job in store
            .claim("shop", "node-a", LEASE, 10, ClaimFilter::All)
            .unwrap()
        {
            let n = format!("SO-{}", job.order_key);
            assert!(
                store
                    .finish_push(&job, "node-a", &accepted(&n), "h", true)
                    .unwrap()
            );
        }
        let report = store
            .ingest(
                "shop",
                "live",
                &[
                    incoming("1", Disposition::Push, "5"),
                    incoming("3", Disposition::Cancel("customer".into()), "1"),
                ],
                None,
            )
            .unwrap();
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
        assert_eq!(
            store.order_state("shop:3").unwrap(),
            Some(OrderState::Cancelling)
        );
        let cancel = store
            .claim(
                "shop",
                "node-a",
                LEASE,
                10,
                ClaimFilter::Orders(&["shop:3".into()]),
            )
            .unwrap();
        assert_eq!(cancel[0].kind, JobKind::CancelInErp);
        assert!(
            store
                .finish_job(&cancel[0], "node-a", "cancelled in the ERP")
                .unwrap()
        );
        assert_eq!(
            store.order_state("shop:3").unwrap(),
            Some(OrderState::CancelledInErp)
        );
        // The ERP cancels order 1.
        let notes = store
            .record_cancellations(
                &[ErpCancellation {
                    order_key: "shop:1".into(),
                    erp_order_number: Some("SO-shop:1".into()),
                    cancelled_at: None,
                    reason: Some("out of stock".into()),
                }],
                "k1",
            )
            .unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(store.release_leases("node-a").unwrap(), 0);
        assert_eq!(store.release_dead_leases().unwrap(), 0);

        // Retention: order 3, cancelled in the ERP with nothing left to do,
        // is pruned; order 1's cancel is still to be written back, and
        // order 2 is held.
        assert_eq!(store.prune_ended(i64::MAX, 10).unwrap(), 1);
        for (key, pruned) in [("shop:1", false), ("shop:2", false), ("shop:3", true)] {
            let events = store.order_detail(key).unwrap().unwrap().events;
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds == ["pruned"], pruned, "{key}: {kinds:?}");
        }
        assert_eq!(
            store.order_state("shop:3").unwrap(),
            Some(OrderState::CancelledInErp)
        );
    });
}

/// The worker claims pushes (they wait on the ERP) and write-backs (they
/// wait on the source) apart, each up to its own slots.
#[test]
fn pushes_and_write_backs_are_claimed_apart_on_both_ledgers() {
    use super::Remote;
    on_both(|store| {
        record_live(
            store,
            &[
                incoming("1", Disposition::Push, "1"),
                incoming("2", Disposition::Push, "1"),
            ],
        );
        push_one(store, "a", "shop:1", "SO1");
        // Due now: one push (order 2) and one write-back (order 1).
        let none = store
            .claim("shop", "a", LEASE, 0, ClaimFilter::Talking(Remote::Erp))
            .unwrap();
        assert!(none.is_empty());
        let writes = store
            .claim("shop", "a", LEASE, 10, ClaimFilter::Talking(Remote::Source))
            .unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].kind, JobKind::WriteAccepted);
        let pushes = store
            .claim("shop", "a", LEASE, 10, ClaimFilter::Talking(Remote::Erp))
            .unwrap();
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].kind, JobKind::Push);
        assert_eq!(pushes[0].order_key, "shop:2");
    });
}

/// `status` counts an order with a parked job as `parked`, once however
/// many of its jobs are parked, per source and in total: the same numbers
/// the old per-order `EXISTS` query gave (kept here as the oracle), from
/// the `(source, state)` index and the parked jobs instead.
#[test]
fn status_counts_parked_orders_once_and_agrees_with_the_per_order_query() {
    on_both(|store| {
        record_live(
            store,
            &[
                incoming("1", Disposition::Push, "1"),
                incoming("2", Disposition::Push, "1"),
                incoming("3", Disposition::Hold("payment open".into()), "1"),
                incoming("4", Disposition::Push, "1"),
                incoming("5", Disposition::Push, "1"),
            ],
        );
        for key in ["shop:1", "shop:2"] {
            let jobs = store
                .claim(
                    "shop",
                    "node-a",
                    LEASE,
                    10,
                    ClaimFilter::Orders(&[key.into()]),
                )
                .unwrap();
            assert_eq!(jobs.len(), 1);
            assert!(store.park(&jobs[0], "node-a", "HTTP 422").unwrap());
        }
        // A second parked job of the same order (a shipment write-back, say)
        // still counts the order once.
        store
            .lock()
            .write(|tx| {
                tx.exec(
                    "INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, created_at, updated_at)
                     VALUES ('shop', 'write_shipped', 'shop:2', 'p1', 'parked', 3, 0, 0, 0)",
                    &[],
                )
            })
            .unwrap();
        let oracle = |by_source: bool| -> Vec<(String, String, i64)> {
            let sql = if by_source {
                "SELECT o.source, CASE WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.order_key = o.order_key AND j.state = 'parked')
                        THEN 'parked' ELSE o.state END AS s, count(*)
                 FROM orders o GROUP BY o.source, s ORDER BY 1, 2"
            } else {
                "SELECT '', CASE WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.order_key = o.order_key AND j.state = 'parked')
                        THEN 'parked' ELSE o.state END AS s, count(*)
                 FROM orders o GROUP BY s ORDER BY 1, 2"
            };
            store
                .lock()
                .read(|tx| {
                    tx.query(sql, &[])?
                        .into_iter()
                        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .collect()
                })
                .unwrap()
        };
        let status = store.status(&["shop".into()]).unwrap();
        let totals: Vec<(String, String, i64)> = status
            .orders
            .iter()
            .map(|(s, n)| (String::new(), s.clone(), *n))
            .collect();
        let by_source: Vec<(String, String, i64)> = status
            .orders_by_source
            .iter()
            .flat_map(|(src, states)| states.iter().map(|(s, n)| (src.clone(), s.clone(), *n)))
            .collect();
        assert_eq!(status.orders.get("parked"), Some(&2), "{:?}", status.orders);
        assert_eq!(status.orders.get("queued"), Some(&2), "{:?}", status.orders);
        assert_eq!(status.orders.get("held"), Some(&1), "{:?}", status.orders);
        assert_eq!(totals, oracle(false));
        assert_eq!(by_source, oracle(true));
        assert_eq!(status.parked.len(), 3, "every parked job is listed");

        // `/metrics` counts from the indexes: five seen, none pushed, then one.
        let numbers = |store: &Store| {
            let n = &store.source_numbers().unwrap()["shop"];
            (n.seen, n.pushed, n.parked)
        };
        assert_eq!(numbers(store), (5, 0, 2));
        push_one(store, "node-a", "shop:4", "SO4");
        assert_eq!(numbers(store), (5, 1, 2));
    });
}

/// Claims the push of `key` (source `shop`) as `owner` and records that
/// the ERP accepted it as `erp_number`.
fn push_one(store: &Store, owner: &str, key: &str, erp_number: &str) {
    let jobs = store
        .claim("shop", owner, LEASE, 1, ClaimFilter::Orders(&[key.into()]))
        .unwrap();
    assert_eq!(jobs.len(), 1, "the push of {key} is due");
    assert!(
        store
            .finish_push(&jobs[0], owner, &accepted(erp_number), "h", true)
            .unwrap()
    );
}

/// A poll under way is noted with the pages it has recorded: it keeps its
/// source from looking stopped without claiming a success or clearing an
/// error, and once it has recorded more pages than the last failed poll,
/// that failure is behind it (health does not call the source failing
/// while a long walk after a full disk drains the backlog). A poll that
/// fails at the same page every time never gets past its failure.
#[test]
fn a_poll_under_way_gets_past_a_failure_only_by_going_further() {
    on_both(|store| {
        let row = |store: &Store| store.source_rows(&["shop".into()]).unwrap().remove(0);
        store.note_polling("shop", 0).unwrap();
        let r = row(store);
        assert!(r.last_poll_ms.is_some() && r.last_success_ms.is_none());
        assert!(r.last_error.is_none() && !r.past_last_failure());

        // Failed after two pages.
        store.note_polling("shop", 2).unwrap();
        store
            .record_poll("shop", Some("ledger: disk full"))
            .unwrap();
        let r = row(store);
        assert_eq!((r.failed_after_pages, r.pages_under_way), (Some(2), None));
        assert!(!r.past_last_failure());

        // The next poll: as far as the failed one is not past it...
        for pages in [0, 1, 2] {
            store.note_polling("shop", pages).unwrap();
            let r = row(store);
            assert!(!r.past_last_failure(), "{pages} page(s)");
            assert_eq!(r.last_error.as_deref(), Some("ledger: disk full"));
            assert!(r.last_success_ms.is_none());
        }
        // ...one page further is.
        store.note_polling("shop", 3).unwrap();
        assert!(row(store).past_last_failure());

        // It fails at page 3 too: the next one must get to 4.
        store.record_poll("shop", Some("HTTP 503")).unwrap();
        store.note_polling("shop", 3).unwrap();
        let r = row(store);
        assert_eq!(r.failed_after_pages, Some(3));
        assert!(!r.past_last_failure());

        // A success clears both.
        store.record_poll("shop", None).unwrap();
        let r = row(store);
        assert!(r.last_error.is_none() && r.last_success_ms.is_some());
        assert_eq!((r.failed_after_pages, r.pages_under_way), (None, None));
        assert!(!r.past_last_failure());

        // A poll that fails before its first page counts 0 pages.
        store.record_poll("shop", Some("HTTP 401")).unwrap();
        assert_eq!(row(store).failed_after_pages, Some(0));
        store.note_polling("shop", 1).unwrap();
        assert!(row(store).past_last_failure());
    });
}

/// A tracking number that comes after the ERP's shipment was recorded
/// (Tryton: a label made on a done shipment): the shipped write-back that
/// has not run carries it; once it ran, the number is recorded and an
/// operator is told, and nothing is written back a second time.
#[test]
fn a_tracking_number_that_comes_later_rides_along_or_is_reported_never_written_twice() {
    on_both(|store| {
        store
            .ingest(
                "shop",
                "live",
                &[incoming("1", Disposition::Push, "2")],
                Some(("live", "c1")),
            )
            .unwrap();
        let push = one_job(store, JobKind::Push);
        store.remember_sent(&push, "node-a", "h1").unwrap();
        assert!(
            store
                .finish_push(&push, "node-a", &accepted("SO1"), "h1", true)
                .unwrap()
        );
        let write = one_job(store, JobKind::WriteAccepted);
        assert!(store.finish_job(&write, "node-a", "accepted").unwrap());
        let shipment = |tracking: Option<&str>| ErpShipment {
            order_key: "shop:1".into(),
            erp_order_number: Some("SO1".into()),
            shipped_at: None,
            carrier: None,
            tracking_number: tracking.map(str::to_string),
            tracking_url: None,
            lines: Vec::new(),
            erp_shipment_id: Some("stock.shipment.out,7".into()),
        };
        let tracking_of = |job: &super::Job| -> Option<String> {
            serde_json::from_str::<ErpShipment>(job.payload.as_deref().unwrap())
                .unwrap()
                .tracking_number
        };
        // Done in the ERP without a number; the number comes before the
        // write-back runs: it rides along.
        assert_eq!(
            store
                .record_shipments(&[shipment(None)], "s1")
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .record_shipments(&[shipment(Some("3S1"))], "s2")
                .unwrap()
                .is_empty()
        );
        let job = one_job(store, JobKind::WriteShipped);
        assert_eq!(tracking_of(&job).as_deref(), Some("3S1"));
        // A number that comes while the write-back runs, and after: recorded
        // and reported, never queued again; seen again, nothing new.
        assert!(
            store
                .record_shipments(&[shipment(Some("3S2"))], "s3")
                .unwrap()
                .is_empty()
        );
        assert!(store.finish_job(&job, "node-a", "shipped").unwrap());
        for cursor in ["s4", "s5"] {
            assert!(
                store
                    .record_shipments(&[shipment(Some("3S2"))], cursor)
                    .unwrap()
                    .is_empty()
            );
        }
        assert!(
            store
                .claim("shop", "node-a", LEASE, 10, ClaimFilter::All)
                .unwrap()
                .is_empty(),
            "a second shipped write-back was queued"
        );
        let detail = store.order_detail("shop:1").unwrap().unwrap();
        let late: Vec<&str> = detail
            .events
            .iter()
            .filter_map(|e| e.detail.as_deref())
            .filter(|d| d.contains("stock.shipment.out,7") && d.contains("tracking 3S"))
            .collect();
        assert_eq!(late.len(), 2, "{:?}", detail.events);
        assert!(
            late[0].contains("tracking 3S1 came later") && late[0].contains("carries it"),
            "{}",
            late[0]
        );
        assert!(
            late[1].contains("got tracking 3S2")
                && late[1].contains("with tracking 3S1")
                && late[1].contains("was not told"),
            "{}",
            late[1]
        );
        assert_eq!(
            detail
                .jobs
                .iter()
                .filter(|j| j.kind == "write_shipped")
                .count(),
            1
        );
        // A source whose write-back carries no tracking number (MplusKASSA,
        // CloudSuite without DESADV): recorded, nobody to tell.
        let no_tracking = super::Uptake {
            shipped: true,
            tracking: false,
            tracking_later: false,
        };
        assert!(
            store
                .record_shipments_with(&[shipment(Some("3S3"))], "s6", |_| no_tracking)
                .unwrap()
                .is_empty()
        );
        let detail = store.order_detail("shop:1").unwrap().unwrap();
        let last = detail.events.last().and_then(|e| e.detail.clone());
        assert!(
            last.as_deref()
                .is_some_and(|d| d.contains("tracking 3S3 came later")
                    && d.contains("was tracking 3S2")
                    && d.contains("takes no tracking number")),
            "{last:?}"
        );
        // A source whose write-back adds only what the order lacks
        // (Retailys): the same job runs again with the new number.
        let again = super::Uptake {
            tracking_later: true,
            ..super::Uptake::ALL
        };
        assert_eq!(
            store
                .record_shipments_with(&[shipment(Some("3S4"))], "s7", |_| again)
                .unwrap(),
            [("shop".to_string(), "shop:1".to_string())]
        );
        let rerun = one_job(store, JobKind::WriteShipped);
        assert_eq!(tracking_of(&rerun).as_deref(), Some("3S4"));
        assert_eq!(rerun.job_ref, "erp:stock.shipment.out,7");
        assert!(store.finish_job(&rerun, "node-a", "tracking 3S4").unwrap());
        assert_eq!(
            store.order_state("shop:1").unwrap(),
            Some(OrderState::Completed)
        );
    });
}
