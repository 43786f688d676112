//! The states an order and a job can be in, and every move between them, in
//! one place. The ledger stores them as the words [`OrderState::as_str`] and
//! [`JobState::as_str`] give (they are what `status` and `orders` print);
//! Rust code names them only through these enums, and binds them to SQL as
//! values (`ToSql`/`FromSql`), so a misspelt state cannot compile. The SQL
//! that moves many rows at once (`CASE WHEN state IN (...)`) writes the same
//! words; a test reads every state word in the store's SQL and checks it is
//! one of these.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Where an order stands. Before the push: `Held`, `Invalid`, `Queued`,
/// `Cancelled`, `Skipped`; in the ERP: `Pushed`, `Accepted`, `Shipped`,
/// `Completed`, and, once cancelled after the push, `Cancelling`,
/// `CancelRefused`, `CancelledInErp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderState {
    /// Recorded, not pushable yet (payment open): read again each poll.
    Held,
    /// Recorded, cannot be mapped: parked with the reason until it changes.
    Invalid,
    /// A push job is waiting for it.
    Queued,
    /// Cancelled (or payment failed) at the source before the push.
    Cancelled,
    /// An operator said never to push it (`skip`), until `retry`.
    Skipped,
    /// In the ERP; the "accepted" write-back is still to do.
    Pushed,
    /// In the ERP and written back (or the source takes no write-back).
    Accepted,
    /// A shipment is reported; its write-back is still to do.
    Shipped,
    /// Shipped and written back: nothing left to do.
    Completed,
    /// Cancelled at the source after the push: the ERP cancel is queued.
    Cancelling,
    /// The ERP refused the cancel (shipped, invoiced): flagged for an
    /// operator (its parked job), until `retry` or a cancel in the ERP.
    CancelRefused,
    /// The sale is cancelled in the ERP (at the source's request, or by the
    /// ERP, then written back to the source where its API allows).
    CancelledInErp,
}

/// Every move an order makes, with what makes it. Anything else is a defect.
pub const ORDER_MOVES: &[(&[OrderState], &[OrderState], &str)] = {
    use OrderState::*;
    &[
        (
            &[Held, Invalid, Queued, Cancelled],
            &[Held, Invalid, Queued, Cancelled],
            "a poll reads the order again before its push (payment cleared, fixed, cancelled)",
        ),
        (
            &[Held, Invalid, Queued, Cancelled],
            &[Pushed, Accepted],
            "the ERP accepted the push (Accepted when the source takes no write-back)",
        ),
        (
            &[Pushed],
            &[Accepted, Shipped],
            "the accepted write-back landed (Shipped when a shipment already waits)",
        ),
        (
            &[Accepted, Completed],
            &[Shipped],
            "the ERP reports a shipment; its write-back is queued",
        ),
        (
            &[Accepted, Shipped, Completed],
            &[Completed],
            "the shipped write-back landed, or the source takes none",
        ),
        (
            &[Held, Invalid, Queued, Cancelled],
            &[Skipped],
            "an operator runs `skip`",
        ),
        (
            &[Skipped],
            &[Held, Invalid, Queued, Cancelled],
            "an operator runs `retry` on a skipped order",
        ),
        (
            &[Cancelled],
            &[Cancelling],
            "a push that was under way when the source cancelled the order landed: the cancel follows it",
        ),
        (
            &[Pushed, Accepted, Shipped, Completed],
            &[Cancelling],
            "cancelled at the source after the push: the ERP cancel is queued",
        ),
        (
            &[Cancelling],
            &[CancelRefused],
            "the ERP refuses to cancel (shipped, invoiced): flagged for an operator",
        ),
        (
            &[CancelRefused],
            &[Cancelling],
            "an operator runs `retry` on the refused cancel",
        ),
        (
            &[Cancelling, CancelRefused, Pushed, Accepted],
            &[CancelledInErp],
            "the ERP cancelled the sale (asked by us, or reported by its cancellations feed)",
        ),
    ]
};

impl OrderState {
    pub const ALL: [OrderState; 12] = [
        OrderState::Held,
        OrderState::Invalid,
        OrderState::Queued,
        OrderState::Cancelled,
        OrderState::Skipped,
        OrderState::Pushed,
        OrderState::Accepted,
        OrderState::Shipped,
        OrderState::Completed,
        OrderState::Cancelling,
        OrderState::CancelRefused,
        OrderState::CancelledInErp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Held => "held",
            OrderState::Invalid => "invalid",
            OrderState::Queued => "queued",
            OrderState::Cancelled => "cancelled",
            OrderState::Skipped => "skipped",
            OrderState::Pushed => "pushed",
            OrderState::Accepted => "accepted",
            OrderState::Shipped => "shipped",
            OrderState::Completed => "completed",
            OrderState::Cancelling => "cancelling",
            OrderState::CancelRefused => "cancel_refused",
            OrderState::CancelledInErp => "cancelled_in_erp",
        }
    }

    pub fn parse(word: &str) -> Option<OrderState> {
        OrderState::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// Pushed to the ERP by us: only such an order follows the source's
    /// processing and shipped statuses, and is never pushed again.
    pub fn in_erp(self) -> bool {
        matches!(
            self,
            OrderState::Pushed
                | OrderState::Accepted
                | OrderState::Shipped
                | OrderState::Completed
                | OrderState::Cancelling
                | OrderState::CancelRefused
                | OrderState::CancelledInErp
        )
    }

    /// Whether `ORDER_MOVES` allows this move (staying put always is).
    pub fn may_become(self, to: OrderState) -> bool {
        self == to
            || ORDER_MOVES
                .iter()
                .any(|(from, into, _)| from.contains(&self) && into.contains(&to))
    }
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Due at `next_attempt_at`; claimed under a lease while it runs.
    Pending,
    /// A shipped write-back waiting for the accepted one of its order.
    Waiting,
    /// Took effect (or turned out not to be needed).
    Done,
    /// Cannot succeed without an operator (`retry`, `skip`).
    Parked,
    /// Not needed any more (cancelled at the source, skipped).
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Waiting,
        JobState::Done,
        JobState::Parked,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Waiting => "waiting",
            JobState::Done => "done",
            JobState::Parked => "parked",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(word: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for OrderState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for OrderState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let word = value.as_str()?;
        OrderState::parse(word).ok_or_else(|| {
            FromSqlError::Other(format!("unknown order state {word:?} in the ledger").into())
        })
    }
}

impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let word = value.as_str()?;
        JobState::parse(word).ok_or_else(|| {
            FromSqlError::Other(format!("unknown job state {word:?} in the ledger").into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in OrderState::ALL {
            assert_eq!(OrderState::parse(s.as_str()), Some(s));
        }
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderState::parse("Queued"), None);
    }

    #[test]
    fn the_moves_keep_the_erp_promise() {
        use OrderState::*;
        // Once in the ERP, an order never goes back before the push (it
        // would be pushed twice), and skip cannot touch it.
        for from in OrderState::ALL.into_iter().filter(|s| s.in_erp()) {
            for to in OrderState::ALL.into_iter().filter(|s| !s.in_erp()) {
                assert!(!from.may_become(to), "{from} -> {to}");
            }
        }
        assert!(Queued.may_become(Pushed));
        assert!(Held.may_become(Queued));
        assert!(
            !Skipped.may_become(Pushed),
            "a skipped order is never pushed"
        );
        assert!(!Completed.may_become(Accepted));
        assert!(Completed.may_become(Shipped), "a later partial shipment");
        assert!(Accepted.may_become(Cancelling));
        assert!(Cancelling.may_become(CancelRefused));
        assert!(Accepted.may_become(CancelledInErp));
        assert!(
            !CancelledInErp.may_become(Cancelling),
            "a sale the ERP cancelled is never cancelled again"
        );
        assert!(!Cancelled.may_become(CancelledInErp));
    }

    /// Every state word in the ledger's SQL is one of the enums' words: a
    /// misspelt state in a statement fails here, not in production.
    #[test]
    fn every_state_word_in_the_stores_sql_is_known() {
        let sources = [
            include_str!("../store/jobs.rs"),
            include_str!("../store/cancel.rs"),
            include_str!("../store/ingest.rs"),
            include_str!("../store/status.rs"),
            include_str!("../store/recheck.rs"),
            include_str!("../store/retention.rs"),
            include_str!("../store/migrations.rs"),
            include_str!("../store/pg/migrations.rs"),
            include_str!("../store/pg/jobs.rs"),
            include_str!("../store/pg/fleet.rs"),
        ];
        let known = |w: &str| OrderState::parse(w).is_some() || JobState::parse(w).is_some();
        let mut checked = 0;
        for text in sources {
            for line in text.lines() {
                // `state = 'x'`, `state != 'x'`, `state IN ('x', 'y')`,
                // `THEN 'x'` inside a state CASE.
                // `state` as a word (not `daemon_state`, not `state_dir`).
                let word_at = line.match_indices("state").find(|(i, _)| {
                    let before = line[..*i].chars().next_back();
                    let after = line[i + 5..].chars().next();
                    let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                    !part(before) && !part(after)
                });
                let Some((at, _)) = word_at else {
                    continue;
                };
                let rest = &line[at..];
                for (i, piece) in rest.split('\'').enumerate() {
                    let quoted = i % 2 == 1;
                    let plain_word = !piece.is_empty()
                        && piece.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                    if quoted && plain_word && !is_other_word(piece) {
                        assert!(known(piece), "unknown state word '{piece}' in: {line}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 40, "the scan found only {checked} state words");
    }

    /// Quoted words on a line that mentions `state` but are not states.
    fn is_other_word(w: &str) -> bool {
        matches!(
            w,
            "push"
                | "write_accepted"
                | "write_shipped"
                | "cancel_in_erp"
                | "write_cancelled"
                | "live"
                | "shop"
                | "o"
                | "h"
                | "x"
        )
    }
}
