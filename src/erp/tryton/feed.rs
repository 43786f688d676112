//! Tryton's feeds (done shipments, cancelled sales): records read by
//! `write_date`, the one page walk both use.
//!
//! The cursor is the latest `write_date` seen (naive UTC, microseconds).
//! Each read starts [`OVERLAP`] before it: Tryton takes `write_date` when the
//! writing transaction starts, so a record committed late can carry a time
//! before the cursor. Records read twice are harmless: the ledger keys what
//! the feeds report (a shipment by order and shipment id, a cancel by order).
//! Every page of the window is read in one poll: a page cut by a limit would
//! leave the cursor where it was when more than a page of records share one
//! write date, and the same page would be read again for good.

use chrono::{NaiveDateTime, TimeDelta};
use serde_json::{Value, json};

use super::rpc::{Rpc, datetime, parse_datetime};
use crate::http::Failure;

/// Longer than any Tryton transaction that marks shipments done or sales
/// cancelled.
pub(super) const OVERLAP: TimeDelta = TimeDelta::seconds(120);
/// Records read per call. The overlap window is re-read every poll, so a
/// page must hold more than one window's worth (Tryton on SQLite finishes
/// far fewer than this in two minutes).
const PAGE: u32 = 1000;
/// Pages read per poll at most (a bound, not an expectation): the rest come
/// next poll, from the cursor the pages read so far reached.
const MAX_PAGES: u32 = 100;
pub(super) const CURSOR_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// A stored feed cursor (`write_date` of the last record read), if any.
pub(super) fn parse_cursor(
    after: Option<&str>,
    feed: &str,
) -> Result<Option<NaiveDateTime>, Failure> {
    after
        .filter(|a| !a.is_empty())
        .map(|text| {
            NaiveDateTime::parse_from_str(text, CURSOR_FORMAT).map_err(|e| {
                Failure::permanent(format!(
                    "stored Tryton {feed} cursor {text:?} is not a timestamp: {e}"
                ))
            })
        })
        .transpose()
}

/// One poll of a feed: `search_read` of `model` for `filter` and records
/// written since the cursor (less [`OVERLAP`]), oldest first, page by page.
pub(super) struct Feed<'a> {
    rpc: &'a Rpc,
    feed: &'static str,
    model: &'static str,
    domain: Vec<Value>,
    fields: Vec<&'static str>,
    page: u32,
    page_no: u32,
    next: Option<NaiveDateTime>,
    done: bool,
}

impl<'a> Feed<'a> {
    /// `after`: the stored cursor; `limit`: what the caller asked for, at
    /// least a page.
    pub(super) fn new(
        rpc: &'a Rpc,
        feed: &'static str,
        model: &'static str,
        filter: Value,
        fields: Vec<&'static str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Feed<'a>, Failure> {
        let cursor = parse_cursor(after, feed)?;
        let mut domain = vec![filter];
        if let Some(c) = cursor {
            domain.push(json!(["write_date", ">=", datetime(c - OVERLAP)]));
        }
        let mut fields = fields;
        if !fields.contains(&"write_date") {
            fields.push("write_date");
        }
        Ok(Feed {
            rpc,
            feed,
            model,
            domain,
            fields,
            page: PAGE.max(limit),
            page_no: 0,
            next: cursor,
            done: false,
        })
    }

    /// The next page of records, `None` once the window is read (or
    /// [`MAX_PAGES`] were, said at WARN).
    pub(super) async fn next_page(&mut self) -> Result<Option<Vec<Value>>, Failure> {
        if self.done {
            return Ok(None);
        }
        let rows = self
            .rpc
            .model(
                self.model,
                "search_read",
                vec![
                    json!(self.domain),
                    json!(self.page_no * self.page),
                    json!(self.page),
                    json!([["write_date", "ASC"], ["id", "ASC"]]),
                    json!(self.fields),
                ],
            )
            .await?;
        let rows = match rows {
            Value::Array(rows) => rows,
            _ => Vec::new(),
        };
        for r in &rows {
            if let Some(t) = parse_datetime(&r["write_date"]) {
                self.next = self.next.max(Some(t));
            }
        }
        self.page_no += 1;
        if (rows.len() as u32) < self.page {
            self.done = true;
        } else if self.page_no == MAX_PAGES {
            self.done = true;
            tracing::warn!(
                feed = self.feed,
                pages = MAX_PAGES,
                "Tryton {}: more records in the window than one poll reads; the rest come next poll",
                self.feed
            );
        }
        Ok(Some(rows))
    }

    /// The cursor to store: the latest `write_date` read (or the one given).
    pub(super) fn cursor(&self) -> String {
        self.next
            .map(|t| t.format(CURSOR_FORMAT).to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::rpc::tests::{Answer, rpc_at, stand_in};
    use super::*;

    /// A stand-in trytond whose `search_read` serves `total` records (all
    /// of them when `total` is `None`: every page is full), written a
    /// second apart from 10:00, and keeps the domains it was asked for.
    async fn feed_server(total: Option<usize>) -> (Rpc, Arc<Mutex<Vec<Value>>>) {
        let domains = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&domains);
        let answer: Arc<Answer> = Arc::new(move |_: &hyper::HeaderMap, body: &str| {
            let req: Value = serde_json::from_str(body).unwrap();
            let result = match req["method"].as_str().unwrap() {
                "common.db.login" => json!([1, "key", null]),
                "model.res.user.get_preferences" => json!({"company": 1}),
                "model.stock.shipment.out.search_read" => {
                    let p = &req["params"];
                    seen.lock().unwrap().push(p[0].clone());
                    let (offset, limit) = (p[1].as_u64().unwrap(), p[2].as_u64().unwrap());
                    let end = total.map_or(offset + limit, |t| (offset + limit).min(t as u64));
                    let start = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
                        .unwrap()
                        .and_hms_opt(10, 0, 0)
                        .unwrap();
                    (offset..end)
                        .map(|i| {
                            let at = start + TimeDelta::seconds(i as i64);
                            json!({"id": i + 1, "write_date": datetime(at)})
                        })
                        .collect::<Vec<_>>()
                        .into()
                }
                other => panic!("unexpected call {other}"),
            };
            (
                hyper::StatusCode::OK,
                json!({"id": req["id"], "result": result}).to_string(),
            )
        });
        (rpc_at(stand_in(answer).await, "pw"), domains)
    }

    fn feed<'a>(rpc: &'a Rpc, after: Option<&str>) -> Result<Feed<'a>, Failure> {
        Feed::new(
            rpc,
            "shipments",
            "stock.shipment.out",
            json!(["state", "=", "done"]),
            vec!["number"],
            after,
            10,
        )
    }

    #[tokio::test]
    async fn every_page_of_the_window_is_read_and_the_cursor_is_the_latest_write() {
        let (rpc, domains) = feed_server(Some(2_500)).await;
        let mut f = feed(&rpc, Some("2026-12-01T10:30:00.000000")).unwrap();
        let mut sizes = Vec::new();
        while let Some(rows) = f.next_page().await.unwrap() {
            sizes.push(rows.len());
        }
        assert_eq!(sizes, vec![1000, 1000, 500]);
        // Record 2,500 was written 2,499 s after 10:00.
        assert_eq!(f.cursor(), "2026-12-01T10:41:39.000000");
        // Every page asked from the stored cursor less the overlap.
        let domains = domains.lock().unwrap();
        assert_eq!(domains.len(), 3);
        for d in domains.iter() {
            assert_eq!(d[0], json!(["state", "=", "done"]));
            assert_eq!(d[1][0], "write_date");
            assert_eq!(
                (d[1][2]["hour"].as_i64(), d[1][2]["minute"].as_i64()),
                (Some(10), Some(28))
            );
        }
    }

    #[tokio::test]
    async fn a_poll_reads_at_most_max_pages_and_the_next_goes_on_from_its_cursor() {
        let (rpc, _) = feed_server(None).await;
        let mut f = feed(&rpc, None).unwrap();
        let mut pages = 0;
        while f.next_page().await.unwrap().is_some() {
            pages += 1;
        }
        assert_eq!(pages, MAX_PAGES);
        // 100,000 records a second apart: the last one 99,999 s after 10:00.
        assert_eq!(f.cursor(), "2026-12-02T13:46:39.000000");
    }

    #[test]
    fn a_stored_cursor_that_is_no_time_names_the_feed() {
        let err = parse_cursor(Some("yesterday"), "cancellations").unwrap_err();
        assert!(
            err.message()
                .contains("Tryton cancellations cursor \"yesterday\""),
            "{err:?}"
        );
        assert_eq!(parse_cursor(Some(""), "shipments").unwrap(), None);
    }
}
