//! Retailys order statuses are defined per shop (`GET /System/Orders/Statuses`):
//! the configured names are resolved to ids here, and an id the table does
//! not know makes the connector read the table again.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::config::StatusRef;

#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub complete_order: bool,
    #[serde(default)]
    pub cancel_order: bool,
}

/// The shop's statuses with the configured ones resolved to ids.
#[derive(Clone, Debug)]
pub struct StatusTable {
    pub all: Vec<Status>,
    pub import: BTreeSet<i64>,
    /// `import_statuses` was configured (not the default of every status
    /// that neither completes nor cancels).
    pub import_given: bool,
    pub processing: i64,
    pub shipped: Option<i64>,
    /// `cancelled_status`: what a sale cancelled in the ERP is set to.
    pub cancelled: Option<i64>,
}

/// What the configuration asks for, before resolution.
pub struct Wanted<'a> {
    pub import: Option<&'a [StatusRef]>,
    pub processing: &'a StatusRef,
    pub shipped: Option<&'a StatusRef>,
    pub cancelled: Option<&'a StatusRef>,
}

impl StatusTable {
    /// Resolves the configured statuses. A name (or id) the shop does not
    /// have is an error that lists what the shop does have, with the key.
    pub fn resolve(all: Vec<Status>, wanted: &Wanted<'_>, prefix: &str) -> Result<Self, String> {
        let mut unknown = Vec::new();
        let mut find = |key: &str, r: &StatusRef| -> Option<i64> {
            let hit = match r {
                StatusRef::Id(id) => all.iter().find(|s| s.id == *id),
                StatusRef::Name(n) => all
                    .iter()
                    .find(|s| s.name.trim().eq_ignore_ascii_case(n.trim()))
                    // A name made of digits may be an id given as a string
                    // (environment overrides arrive as text).
                    .or_else(|| {
                        n.trim()
                            .parse::<i64>()
                            .ok()
                            .and_then(|id| all.iter().find(|s| s.id == id))
                    }),
            };
            if hit.is_none() {
                unknown.push(format!("{prefix}.{key} = {r}"));
            }
            hit.map(|s| s.id)
        };
        let processing = find("processing_status", wanted.processing);
        let shipped = wanted.shipped.map(|r| find("shipped_status", r));
        let cancelled = wanted.cancelled.map(|r| find("cancelled_status", r));
        let import: BTreeSet<i64> = match wanted.import {
            Some(list) => list
                .iter()
                .filter_map(|r| find("import_statuses", r))
                .collect(),
            None => all
                .iter()
                .filter(|s| !s.complete_order && !s.cancel_order)
                .map(|s| s.id)
                .collect(),
        };
        if !unknown.is_empty() {
            let names: Vec<String> = all
                .iter()
                .map(|s| format!("{:?} (id {})", s.name, s.id))
                .collect();
            return Err(format!(
                "{}: no such order status in this shop; it has: {}",
                unknown.join(", "),
                if names.is_empty() {
                    "no statuses at all".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        Ok(StatusTable {
            processing: processing.unwrap_or_default(),
            shipped: shipped.flatten(),
            cancelled: cancelled.flatten(),
            import,
            import_given: wanted.import.is_some(),
            all,
        })
    }

    pub fn get(&self, id: i64) -> Option<&Status> {
        self.all.iter().find(|s| s.id == id)
    }

    pub fn name(&self, id: i64) -> String {
        self.get(id)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    }

    /// Whether an order in this status goes to the ERP: an imported status,
    /// or, for an order ordersync itself pushed (`ours`), one of the statuses
    /// our own write-backs set, so reading it back after a write-back is not
    /// news. Being recorded (held, cancelled) never makes an order ours: one
    /// first seen in the processing or shipped status was handled by someone
    /// else (SPEC §5.11).
    pub fn pushes(&self, id: i64, ours: bool) -> bool {
        self.import.contains(&id) || (ours && (id == self.processing || Some(id) == self.shipped))
    }

    /// A status that completes the order and is not imported: such an order,
    /// when the ledger does not have it, is not for us at all.
    pub fn finished_elsewhere(&self, id: i64) -> bool {
        !self.import.contains(&id) && self.get(id).is_some_and(|s| s.complete_order)
    }

    pub fn import_names(&self) -> String {
        self.import
            .iter()
            .map(|id| self.name(*id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Vec<Status> {
        let s = |id, name: &str, complete_order, cancel_order| Status {
            id,
            name: name.into(),
            complete_order,
            cancel_order,
        };
        vec![
            s(101, "New", false, false),
            s(104, "Processing", false, false),
            s(117, "Shipped", true, false),
            s(120, "Cancelled", false, true),
        ]
    }

    #[test]
    fn names_and_ids_resolve_and_the_default_import_skips_final_statuses() {
        let processing = StatusRef::Name("processing".into());
        let shipped = StatusRef::Id(117);
        let t = StatusTable::resolve(
            shop(),
            &Wanted {
                import: None,
                processing: &processing,
                shipped: Some(&shipped),
                cancelled: None,
            },
            "sources[0]",
        )
        .unwrap();
        assert_eq!(t.processing, 104);
        assert_eq!(t.shipped, Some(117));
        assert_eq!(t.import.iter().copied().collect::<Vec<_>>(), vec![101, 104]);
        let by_text = StatusRef::Name("104".into());
        let t = StatusTable::resolve(
            shop(),
            &Wanted {
                import: Some(&[by_text]),
                processing: &processing,
                shipped: None,
                cancelled: None,
            },
            "s",
        )
        .unwrap();
        assert!(t.import.contains(&104));
    }

    #[test]
    fn only_an_order_we_pushed_follows_our_own_statuses() {
        let processing = StatusRef::Name("Processing".into());
        let shipped = StatusRef::Name("Shipped".into());
        let t = StatusTable::resolve(
            shop(),
            &Wanted {
                import: Some(&[StatusRef::Name("New".into())]),
                processing: &processing,
                shipped: Some(&shipped),
                cancelled: None,
            },
            "s",
        )
        .unwrap();
        assert!(t.pushes(101, false), "an imported status pushes");
        for status in [104, 117] {
            assert!(!t.pushes(status, false), "held elsewhere: {status}");
            assert!(
                t.pushes(status, true),
                "our own write-back read back: {status}"
            );
        }
        assert!(!t.pushes(120, true) && !t.pushes(999, false));
    }

    #[test]
    fn an_unknown_name_lists_what_exists() {
        let processing = StatusRef::Name("In progress".into());
        let err = StatusTable::resolve(
            shop(),
            &Wanted {
                import: Some(&[StatusRef::Id(999)]),
                processing: &processing,
                shipped: None,
                cancelled: None,
            },
            "sources[0]",
        )
        .unwrap_err();
        assert!(
            err.contains("sources[0].processing_status = \"In progress\""),
            "{err}"
        );
        assert!(err.contains("sources[0].import_statuses = 999"), "{err}");
        assert!(
            err.contains("\"Processing\" (id 104)") && err.contains("\"New\" (id 101)"),
            "{err}"
        );
    }
}
