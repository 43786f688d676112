//! Which ledger orders a poll looks at again (held, unmappable, not final).
//! A poll re-reads at most `limit` of them; the batches rotate through all
//! of them by order key (the last key read is kept in `cursors`, scope
//! `recheck`), so a large pile of orders that never change (abandoned
//! carts waiting for payment) cannot starve the others.

use super::sql::ToParam;
use super::{Store, now_ms};
use crate::outbox::state::OrderState;

impl Store {
    /// External ids of the next batch of this source's orders in `states`.
    pub fn recheck_batch(
        &self,
        source: &str,
        states: &[OrderState],
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        if states.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let after = self.cursor(source, "recheck")?.unwrap_or_default();
        let mut batch = self.keys_in_states(source, states, ">", &after, limit)?;
        if batch.len() < limit && !after.is_empty() {
            // Wrap around to the start for the rest of this batch.
            let more = self.keys_in_states(source, states, "<=", &after, limit - batch.len())?;
            batch.extend(more);
        }
        let last = batch.last().map(|(key, _)| key.clone()).unwrap_or_default();
        self.lock().auto(|tx| {
            tx.exec(
                "INSERT INTO cursors (source, scope, value, updated_at) VALUES (?1, 'recheck', ?2, ?3)
                 ON CONFLICT(source, scope) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&source, &last, &now_ms()],
            )
        })?;
        Ok(batch.into_iter().map(|(_, id)| id).collect())
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
            mapped: Ok(MappedOrder {
                order,
                disposition: Disposition::Hold("need_payment".into()),
            }),
        }
    }

    #[test]
    fn batches_rotate_through_every_order() {
        let (_d, store) = temp_store();
        let orders: Vec<IncomingOrder> = (1..=5).map(|i| held(&i.to_string())).collect();
        store.ingest("shop", "live", &orders, None).unwrap();
        let b1 = store.recheck_batch("shop", &[OrderState::Held], 2).unwrap();
        let b2 = store.recheck_batch("shop", &[OrderState::Held], 2).unwrap();
        let b3 = store.recheck_batch("shop", &[OrderState::Held], 2).unwrap();
        assert_eq!((b1.len(), b2.len(), b3.len()), (2, 2, 2));
        let seen: HashSet<String> = b1.iter().chain(&b2).chain(&b3).cloned().collect();
        assert_eq!(
            seen.len(),
            5,
            "three batches of two saw all five: {b1:?} {b2:?} {b3:?}"
        );
        assert!(
            store
                .recheck_batch("other", &[OrderState::Held], 2)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .recheck_batch("shop", &[OrderState::Invalid], 2)
                .unwrap()
                .is_empty()
        );
    }
}
