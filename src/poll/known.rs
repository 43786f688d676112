//! What the ledger already knows about the orders a page lists, asked once
//! per page by the poll rather than once per order by each connector. A
//! connector hands over the ids a page lists; it gets back, per id, the
//! version recorded and the ledger state, and the one rule for "unchanged,
//! no need to read it again" lives here.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::order_key;
use crate::outbox::state::OrderState;
use crate::store::Store;

/// The ledger, as a walk of one source may ask it.
#[derive(Clone)]
pub struct Known {
    store: Arc<Store>,
    source: String,
}

/// One recorded order, as the ledger has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The source's own version marker of what was recorded (a modified
    /// date, a sync marker, a digest), if the connector keeps one.
    pub version: Option<String>,
    /// The ledger state.
    pub state: OrderState,
}

/// The answer for one page: external id → what is recorded.
#[derive(Debug, Default)]
pub struct Seen {
    recorded: HashMap<String, Recorded>,
}

impl Known {
    pub fn new(store: Arc<Store>, source: &str) -> Known {
        Known {
            store,
            source: source.to_string(),
        }
    }

    /// What the ledger has of these orders, in one call on the ledger
    /// thread. A ledger that cannot answer knows nothing: every order is
    /// read again, which costs requests but never skips one.
    pub async fn look_up<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Seen {
        let keys: Vec<String> = ids
            .into_iter()
            .map(|id| order_key(&self.source, id))
            .collect();
        if keys.is_empty() {
            return Seen::default();
        }
        let prefix = order_key(&self.source, "");
        match self.store.call(move |s| s.recorded(&keys)).await {
            Ok(rows) => Seen {
                recorded: rows
                    .into_iter()
                    .filter_map(|(key, version, state)| {
                        let id = key.strip_prefix(&prefix)?.to_string();
                        Some((id, Recorded { version, state }))
                    })
                    .collect(),
            },
            Err(e) => {
                tracing::warn!(source = %self.source, error = %format!("{e:#}"), "cannot ask the ledger which orders it has; reading them all again");
                Seen::default()
            }
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// [`Known::look_up`] for one order.
    pub async fn one(&self, id: &str) -> Option<Recorded> {
        let id = id.to_string();
        self.look_up([&id]).await.recorded.remove(&id)
    }
}

impl Seen {
    /// Recorded with this very version: nothing to read again. An order
    /// whose version the source does not show is never unchanged.
    pub fn unchanged(&self, id: &str, version: Option<&str>) -> bool {
        match (self.recorded.get(id), version) {
            (Some(r), Some(v)) => r.version.as_deref() == Some(v),
            _ => false,
        }
    }

    /// The ledger state of an order, if it is recorded.
    pub fn state(&self, id: &str) -> Option<OrderState> {
        self.recorded.get(id).map(|r| r.state)
    }

    /// Whether ordersync pushed this order (only those follow the source's
    /// processing and shipped statuses).
    pub fn ours(&self, id: &str) -> bool {
        self.state(id).is_some_and(OrderState::in_erp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::temp_store;

    #[tokio::test(flavor = "current_thread")]
    async fn one_call_answers_a_page_and_only_an_equal_version_is_unchanged() {
        let (_dir, store) = temp_store();
        let store = Arc::new(store);
        {
            let conn = store.lock_for_tests();
            for (id, version, state) in [("1", Some("v1"), "queued"), ("2", None, "pushed")] {
                conn.execute(
                    "INSERT INTO orders (order_key, source, external_id, state, content_hash, source_version, recorded_by, first_seen_at, updated_at)
                     VALUES (?1, 'shop', ?2, ?3, 'h', ?4, 'live', 0, 0)",
                    rusqlite::params![order_key("shop", id), id, state, version],
                )
                .unwrap();
            }
        }
        let known = Known::new(Arc::clone(&store), "shop");
        let ids: Vec<String> = ["1", "2", "3", "../x"].map(String::from).to_vec();
        let seen = known.look_up(&ids).await;
        assert!(seen.unchanged("1", Some("v1")));
        assert!(!seen.unchanged("1", Some("v2")));
        assert!(!seen.unchanged("1", None));
        assert!(
            !seen.unchanged("2", Some("anything")),
            "no version recorded"
        );
        assert!(!seen.unchanged("3", Some("v1")), "not recorded");
        assert_eq!(seen.state("1"), Some(OrderState::Queued));
        assert!(!seen.ours("1"));
        assert!(seen.ours("2"));
        assert_eq!(seen.state("../x"), None);
        let other = Known::new(Arc::clone(&store), "other");
        assert_eq!(other.one("1").await, None, "another source's order 1");
    }
}
