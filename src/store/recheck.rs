//! Which ledger orders a poll looks at again (held, unmappable, not final).
//! A poll re-reads at most `limit` of them; the batches rotate through all
//! of them by order key (the last key read is kept in `cursors`, scope
//! `recheck`), so a large pile of orders that never change (abandoned
//! carts waiting for payment) cannot starve the others. A new round begins
//! at most once per the source's `recheck_every` (scope `recheck_round`
//! keeps when the last one began): on a schedule of seconds, a pile of
//! orders that never change would otherwise be read again every few polls.

use super::sql::ToParam;
use super::{Store, now_ms};
use crate::outbox::state::OrderState;

/// What [`Store::recheck_batch`] hands out.
#[derive(Debug, Default)]
pub struct RecheckBatch {
    /// External ids to read again, in key order.
    pub ids: Vec<String>,
    /// A new round began with this batch (it was due and the last one was
    /// through); also when nothing is in the states to read.
    pub new_round: bool,
}

impl Store {
    /// External ids of the next batch of this source's orders in `states`.
    /// A round goes through them in key order, `limit` a poll; a new round
    /// begins at most once per `round_every` (the time it began is kept in
    /// `cursors`, scope `recheck_round`), so orders that never change are
    /// not read again every few seconds on a short schedule. Until then the
    /// batch holds only orders recorded past the round's last key.
    pub fn recheck_batch(
        &self,
        source: &str,
        states: &[OrderState],
        limit: usize,
        round_every: std::time::Duration,
    ) -> anyhow::Result<RecheckBatch> {
        if states.is_empty() || limit == 0 {
            return Ok(RecheckBatch::default());
        }
        let now = now_ms();
        let after = self.cursor(source, "recheck")?.unwrap_or_default();
        let began: Option<i64> = self
            .cursor(source, "recheck_round")?
            .and_then(|v| v.parse().ok());
        let every = i64::try_from(round_every.as_millis()).unwrap_or(i64::MAX);
        // A clock set back (began in the future) must not stop rounds.
        let due = began.is_none_or(|t| t > now || now.saturating_sub(t) >= every);
        let mut batch = if after.is_empty() {
            Vec::new()
        } else {
            self.keys_in_states(source, states, ">", &after, limit)?
        };
        let mut new_round = false;
        if batch.len() < limit && due {
            // This round is through: the next one begins from the first key
            // (up to `after`, which the part above did not reach).
            let more = if after.is_empty() {
                self.keys_in_states(source, states, ">", "", limit)?
            } else {
                self.keys_in_states(source, states, "<=", &after, limit - batch.len())?
            };
            batch.extend(more);
            new_round = true;
        }
        let Some(last) = batch.last().map(|(key, _)| key.clone()) else {
            return Ok(RecheckBatch {
                ids: Vec::new(),
                new_round,
            });
        };
        self.lock().write(|tx| {
            let upsert = "INSERT INTO cursors (source, scope, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(source, scope) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
            tx.exec(upsert, &[&source, &"recheck", &last, &now])?;
            if new_round {
                tx.exec(upsert, &[&source, &"recheck_round", &now.to_string(), &now])?;
            }
            Ok(())
        })?;
        Ok(RecheckBatch {
            ids: batch.into_iter().map(|(_, id)| id).collect(),
            new_round,
        })
    }

    /// (order_key, external_id) of orders in `states` whose key is `op` `key`.
    fn keys_in_states(
        &self,
        source: &str,
        states: &[OrderState],
        op: &str,
        key: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let placeholders: Vec<String> = (0..states.len()).map(|i| format!("?{}", i + 2)).collect();
        let (key_at, limit_at) = (states.len() + 2, states.len() + 3);
        let sql = format!(
            "SELECT order_key, external_id FROM orders
             WHERE source = ?1 AND state IN ({}) AND order_key {op} ?{key_at}
             ORDER BY order_key LIMIT ?{limit_at}",
            placeholders.join(",")
        );
        let mut args: Vec<&dyn ToParam> = vec![&source];
        args.extend(states.iter().map(|s| s as &dyn ToParam));
        args.push(&key);
        args.push(&limit);
        self.lock().auto(|tx| {
            tx.query(&sql, &args)?
                .iter()
                .map(|r| Ok((r.get(0)?, r.get(1)?)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use crate::outbox::state::OrderState;

    use crate::model::Order;
    use crate::store::testutil::temp_store;
    use crate::store::{Disposition, IncomingOrder, MappedOrder};

    fn held(ext: &str) -> IncomingOrder {
        let order: Order = serde_json::from_value(serde_json::json!({
            "order_key": format!("shop:{ext}"), "source": "shop", "source_kind": "vinou",
            "external_id": ext, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
            "prices_include_tax": true, "customer": {},
            "lines": [{"source_line_id": "1", "quantity": "1", "unit_price": "10.00", "line_total": "10.00"}],
            "totals": {"net": "8.40", "tax": "1.60", "gross": "10.00"}
        }))
        .unwrap();
        IncomingOrder {
            external_id: ext.into(),
            raw: format!("{{\"id\":{ext}}}"),
            version: None,
            mapped: Ok(MappedOrder::new(
                order,
                Disposition::Hold("need_payment".into()),
            )),
        }
    }

    #[test]
    fn batches_rotate_through_every_order() {
        let (_d, store) = temp_store();
        let orders: Vec<IncomingOrder> = (1..=5).map(|i| held(&i.to_string())).collect();
        store.ingest("shop", "live", &orders, None).unwrap();
        let b1 = store
            .recheck_batch("shop", &[OrderState::Held], 2, Duration::ZERO)
            .unwrap()
            .ids;
        let b2 = store
            .recheck_batch("shop", &[OrderState::Held], 2, Duration::ZERO)
            .unwrap()
            .ids;
        let b3 = store
            .recheck_batch("shop", &[OrderState::Held], 2, Duration::ZERO)
            .unwrap()
            .ids;
        assert_eq!((b1.len(), b2.len(), b3.len()), (2, 2, 2));
        let seen: HashSet<String> = b1.iter().chain(&b2).chain(&b3).cloned().collect();
        assert_eq!(
            seen.len(),
            5,
            "three batches of two saw all five: {b1:?} {b2:?} {b3:?}"
        );
        assert!(
            store
                .recheck_batch("other", &[OrderState::Held], 2, Duration::ZERO)
                .unwrap()
                .ids
                .is_empty()
        );
        assert!(
            store
                .recheck_batch("shop", &[OrderState::Invalid], 2, Duration::ZERO)
                .unwrap()
                .ids
                .is_empty()
        );
    }

    #[test]
    fn a_new_round_waits_for_recheck_every_but_new_orders_do_not() {
        let (_d, store) = temp_store();
        let hour = Duration::from_secs(3600);
        let orders: Vec<IncomingOrder> = (1..=5).map(|i| held(&i.to_string())).collect();
        store.ingest("shop", "live", &orders, None).unwrap();
        let round = |every| {
            store
                .recheck_batch("shop", &[OrderState::Held], 2, every)
                .unwrap()
        };
        let batch = |every| round(every).ids;
        let first: Vec<String> = [batch(hour), batch(hour), batch(hour)].concat();
        assert_eq!(
            first,
            ["1", "2", "3", "4", "5"],
            "the first round is not held back"
        );
        assert!(
            batch(hour).is_empty(),
            "the round is through; the next waits"
        );
        // An order recorded past the round's last key is read in this round.
        store.ingest("shop", "live", &[held("6")], None).unwrap();
        assert_eq!(batch(hour), ["6"]);
        assert!(batch(hour).is_empty());
        // Once it is time, a new round begins from the first key, and says so.
        let next = round(Duration::ZERO);
        assert_eq!(next.ids, ["1", "2"]);
        assert!(next.new_round);
        let on = round(hour);
        assert_eq!(on.ids, ["3", "4"], "a round under way goes on");
        assert!(!on.new_round);
        assert_eq!(batch(hour), ["5", "6"]);
        assert!(batch(hour).is_empty());
    }
}
