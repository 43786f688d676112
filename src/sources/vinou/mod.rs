//! Vinou (winery shop SaaS). Every call is a JSON POST to
//! `{base_url}/service/<module>/<function>` with a JWT from `service/login`
//! ([`auth`]). Read: `orders/getAll`, newest first, walked page by page;
//! orders the list no longer shows (held ones) are re-read with `orders/get`.
//! Write-back: only `orders/touch` ("mark as read"); Vinou documents no
//! status, ERP-number or tracking update.
//!
//! The walk and its cursor (the newest `crstamp` seen, Vinou's local time):
//! - it starts at page 1 every poll and goes down until a page holds an
//!   order older than `cursor − lookback` (old ground) or the list ends;
//! - orders placed during the walk push everything down, so a page may start
//!   with orders already read: they are skipped by id, and such a page never
//!   ends the walk (only old ground or the end of the list does);
//! - "already in the ledger" is deliberately NOT a stop: a walk cut short
//!   (error, shutdown) records its upper pages, and a later walk stopping at
//!   them would skip the gap below. Known, unchanged orders are just skipped;
//! - the cursor is written with the last page only, and only when the walk
//!   reached old ground or the end with every order on the way recorded;
//!   otherwise it stays and the next poll walks the same ground again;
//! - a list that does not end (a page repeated, pages without number) is
//!   stopped by [`WalkGuard`], and the cursor stays;
//! - each order of a page is read on its own: a bad one is parked.

mod auth;
pub(crate) mod config;
#[cfg(test)]
mod fuzz_tests;
mod map;
#[cfg(test)]
mod vendor_examples;

pub use auth::base64url_decode;
/// Vinou's times are the shop's local time (naive), in this zone.
pub use map::TIMEZONE;

use std::collections::HashSet;

use chrono::NaiveDateTime;
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::list::{self, Body, Listing};
use super::walk::WalkGuard;
use super::{Page, Window, WriteBack};
use crate::config::{Config, ConfigError, SourceConfig, VinouSettings};
use crate::http::session::{Session, refused_401};
use crate::http::{Endpoint, Failure, Reply};
use crate::model::CountryMap;
use crate::model::convert::{parse_naive, utc_to_naive_local};
use crate::outbox::state::OrderState;
use crate::poll::Known;
use crate::store::IncomingOrder;

/// The documented maximum of `pageSize`.
const MAX_PAGE_SIZE: u32 = 100;
const INCLUDE: [&str; 4] = ["client", "billing", "delivery", "items"];
const CURSOR_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

pub struct Vinou {
    name: String,
    base: String,
    pub(super) endpoint: Endpoint,
    login: auth::Login,
    session: Session,
    import_statuses: Vec<String>,
    countries: CountryMap,
    touch_on_import: bool,
    page_size: u32,
}

/// Where a walk is; see the module doc for the rules.
pub struct Walk {
    page: u32,
    /// Orders older than this are old ground (live: cursor − lookback;
    /// backfill: `since`).
    stop_below: Option<NaiveDateTime>,
    until: Option<NaiveDateTime>,
    backfill: bool,
    old_cursor: Option<NaiveDateTime>,
    newest: Option<NaiveDateTime>,
    seen: HashSet<String>,
    /// Something on the way could not be recorded: the cursor stays.
    incomplete: bool,
    /// Ends a list that does not; counts items without an id.
    pub(super) guard: WalkGuard,
    done: bool,
}

/// The orders stay raw: each is read on its own ([`super::list`]).
#[derive(Deserialize)]
struct ListAnswer {
    #[serde(default)]
    data: Vec<Box<RawValue>>,
    /// Number of pages. Its shape is not documented; anything but a number
    /// is ignored and the end is found by a short page instead.
    #[serde(default)]
    pages: Value,
    #[serde(default, rename = "totalCount")]
    total_count: Value,
}

impl list::Envelope for ListAnswer {
    fn items(&self) -> &[Box<RawValue>] {
        &self.data
    }
}

/// An `orders/getAll` page read order by order, each keyed by its id.
fn read_list(body: &[u8], what: &str) -> Result<Listing<ListAnswer>, Failure> {
    Listing::read(body, what, map::order_id)
}

/// `orders/get` with its order kept raw, read like a list item.
#[derive(Deserialize)]
struct OneRaw {
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

impl Vinou {
    pub fn new(
        config: &Config,
        source: &SourceConfig,
        settings: &VinouSettings,
    ) -> Result<Vinou, ConfigError> {
        let prefix = format!("source {}", source.name);
        let api_token = settings.api_token.load(&format!("{prefix}: api_token"))?;
        let endpoint = Endpoint::for_source(config, source)?;
        Ok(Vinou {
            name: source.name.clone(),
            session: Session::new(),
            login: auth::Login::new(
                format!("{}/service/login", source.base_url),
                settings.auth_id.clone(),
                api_token,
            ),
            base: source.base_url.clone(),
            endpoint,
            import_statuses: settings.import_statuses.clone(),
            countries: source.country_map.clone(),
            touch_on_import: settings.touch_on_import,
            page_size: source.page_size.min(MAX_PAGE_SIZE),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn touch_on_import(&self) -> bool {
        self.touch_on_import
    }

    /// POSTs `body` to `service/<route>`; on 401 logs in again once (the JWT
    /// expired early or the server forgot it).
    async fn call(&self, route: &str, body: &Value) -> Result<Reply, Failure> {
        let url = format!("{}/service/{route}", self.base);
        self.session
            .call(
                || self.login.log_in(&self.endpoint),
                |jwt| {
                    self.endpoint.send(
                        self.endpoint
                            .client()
                            .post(&url)
                            .header(AUTHORIZATION, format!("Bearer {}", jwt.expose()))
                            .json(body),
                    )
                },
                refused_401,
            )
            .await
    }

    /// `orders/get` for one order, with the includes the mapping needs,
    /// read like a list item: a value that cannot be read is named.
    async fn get(&self, external_id: &str) -> Result<list::Item, Failure> {
        let id = external_id
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(external_id));
        let reply = self
            .call("orders/get", &json!({ "id": id, "include": INCLUDE }))
            .await?;
        let body = Body::decode(&reply.body);
        let answer: OneRaw = body.envelope(&reply.what)?;
        let item = answer.data.map(|raw| body.item(&raw));
        match item {
            Some(item) if item.value.is_object() || item.broken.is_some() => Ok(item),
            _ => Err(Failure::retry(format!(
                "Vinou orders/get for order {external_id} answered without an order"
            ))),
        }
    }

    // --- reading ----------------------------------------------------------

    pub fn begin(&self, window: Window) -> Walk {
        let parse = |c: Option<&str>| c.and_then(|c| parse_naive(c).ok());
        let local = |t| parse_naive(&utc_to_naive_local(t, map::TIMEZONE)).ok();
        let (stop_below, until, backfill, old_cursor) = match &window {
            Window::Live { cursor, lookback } => {
                let lookback = chrono::Duration::from_std(*lookback).unwrap_or_default();
                let cursor = parse(cursor.as_deref());
                (cursor.map(|c| c - lookback), None, false, cursor)
            }
            // A newest-first list cannot resume in the middle: a backfill
            // walks its whole window again (recording dedupes).
            Window::Backfill { since, until, .. } | Window::Listing { since, until } => {
                (local(*since), until.and_then(local), true, None)
            }
        };
        Walk {
            page: 1,
            stop_below,
            until,
            backfill,
            old_cursor,
            newest: None,
            seen: HashSet::new(),
            incomplete: false,
            guard: WalkGuard::new(&self.name, self.page_size),
            done: false,
        }
    }

    pub async fn next_page(&self, walk: &mut Walk, known: &Known) -> Result<Option<Page>, Failure> {
        if walk.done {
            return Ok(None);
        }
        let body = json!({ "page": walk.page, "pageSize": self.page_size, "include": INCLUDE });
        let reply = self.call("orders/getAll", &body).await?;
        let listing = read_list(&reply.body, &reply.what)?;
        if !walk
            .guard
            .admit_page(&format!("page {}", walk.page), listing.listed())
        {
            walk.done = true;
            return Ok(None);
        }
        let Listing {
            page: answer,
            items,
            ids,
        } = listing;
        let seen = known.look_up(ids.iter().flatten()).await;
        // From here on the walk moves: nothing below returns early with an error.
        let mut orders = Vec::new();
        let mut unchanged = Vec::new();
        let mut old_ground = false;
        for (item, id) in items.iter().zip(ids) {
            // A broken item keeps what parses of it: enough to place it.
            let v = &item.value;
            let Some(id) = id else {
                walk.guard
                    .unkeyed(item.broken.as_deref().unwrap_or("no id"));
                continue;
            };
            if !walk.seen.insert(id.clone()) {
                continue; // pushed down from the page before by a new order
            }
            let crstamp = v["crstamp"].as_str().and_then(|c| parse_naive(c).ok());
            if let (Some(t), Some(stop)) = (crstamp, walk.stop_below)
                && t < stop
            {
                old_ground = true;
                continue;
            }
            if let (Some(t), Some(until)) = (crstamp, walk.until)
                && t > until
            {
                continue;
            }
            walk.newest = walk.newest.max(crstamp);
            if let Some(parked) = item.unreadable("Vinou", &id) {
                orders.push(parked);
                continue;
            }
            // Unchanged since we recorded it: nothing to do.
            if seen.unchanged(&id, Some(&map::version(v))) {
                unchanged.push(id);
                continue;
            }
            match self.map(
                &id,
                &item.raw,
                v,
                seen.state(&id),
                walk.backfill || walk.old_cursor.is_some(),
            ) {
                Ok(o) => orders.push(o),
                Err(e) => {
                    walk.incomplete = true;
                    tracing::warn!(source = %self.name, external_id = %id, error = %e, "order unusable; will read it again next poll");
                }
            }
        }
        let end_of_list = match answer.pages.as_u64() {
            Some(pages) => u64::from(walk.page) >= pages,
            None => answer.data.len() < self.page_size as usize,
        };
        let mut cursor = None;
        if old_ground || end_of_list || answer.data.is_empty() {
            walk.done = true;
            let complete = !walk.incomplete && walk.guard.complete();
            if !walk.backfill && complete {
                cursor = walk
                    .old_cursor
                    .max(walk.newest)
                    .map(|t| t.format(CURSOR_FORMAT).to_string());
            } else if !complete {
                tracing::debug!(source = %self.name, "walk incomplete; the cursor stays where it was");
            }
        } else {
            walk.page += 1;
        }
        Ok(Some(Page {
            orders,
            cursor,
            unchanged,
        }))
    }

    /// Maps one order (listed or re-read as `id`, received as `raw`), a
    /// panic in it contained by [`list::isolated`]: that order is parked.
    fn map(
        &self,
        id: &str,
        raw: &str,
        v: &Value,
        ledger_state: Option<OrderState>,
        watching: bool,
    ) -> Result<IncomingOrder, String> {
        let ctx = map::MapContext {
            source: &self.name,
            import_statuses: &self.import_statuses,
            countries: &self.countries,
            already_pushed: ledger_state.is_some_and(OrderState::in_erp),
            watching: watching || ledger_state.is_some(),
        };
        list::isolated(
            || map::incoming(&ctx, v),
            |why| Ok(list::parked(id, raw, why)),
        )
    }

    /// Reads an open order again (`orders/get`); the ledger compares it
    /// (content, `chstamp` + `status` as version): a held one is pushed once
    /// it reaches an import status, a pushed one cancelled at Vinou is
    /// cancelled in the ERP (SPEC: "re-check open orders with `get`").
    pub async fn recheck(
        &self,
        external_id: &str,
        known: &Known,
    ) -> Result<IncomingOrder, Failure> {
        let item = self.get(external_id).await?;
        if let Some(parked) = item.unreadable("Vinou", external_id) {
            return Ok(parked);
        }
        // Rechecked orders are in the ledger; whether they are in the ERP
        // decides how a status past the import point reads.
        let ledger_state = known
            .one(external_id)
            .await
            .map_or(OrderState::Held, |r| r.state);
        self.map(
            external_id,
            &item.raw,
            &item.value,
            Some(ledger_state),
            true,
        )
        .map_err(Failure::retry)
    }

    // --- writing back -------------------------------------------------------

    /// `orders/touch` marks the order as read: the only mark Vinou documents.
    /// It is idempotent by nature (touching twice changes nothing more), so
    /// a repeat after a crash is harmless and needs no read first.
    pub async fn write_accepted(&self, wb: &WriteBack) -> Result<String, Failure> {
        if !self.touch_on_import {
            return Ok("touch_on_import = false: nothing written".into());
        }
        let id = wb
            .external_id
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(wb.external_id.clone()));
        self.call("orders/touch", &json!({ "id": id })).await?;
        Ok(format!(
            "touched (marked as read); ERP order {} kept in the ledger only",
            wb.erp_order_number
        ))
    }

    /// A sale cancelled in the ERP: `orders/checkout/cancel` (Vinou's one
    /// documented cancel). After an attempt that may have written, the
    /// order is read first and a cancelled one is left alone.
    pub async fn write_cancelled(&self, wb: &WriteBack) -> Result<String, Failure> {
        let id = wb
            .external_id
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(wb.external_id.clone()));
        if wb.in_doubt {
            let item = self.get(&wb.external_id).await?;
            if item.value["status"].as_str() == Some("cancelled") {
                return Ok("already cancelled at Vinou".into());
            }
        }
        match self
            .call("orders/checkout/cancel", &json!({ "id": id }))
            .await
        {
            Ok(_) => Ok(format!(
                "cancelled at Vinou (ERP order {} cancelled)",
                wb.erp_order_number
            )),
            Err(Failure::Permanent { message, status }) => Err(Failure::Permanent {
                message: format!(
                    "Vinou refuses to cancel order {}: {message}; cancel it in Vinou by hand",
                    wb.external_id
                ),
                status,
            }),
            Err(e) => Err(e),
        }
    }

    pub async fn check(&self) -> Result<String, Failure> {
        let reply = self
            .call("orders/getAll", &json!({ "page": 1, "pageSize": 1 }))
            .await?;
        let answer: ListAnswer = Body::decode(&reply.body).envelope(&reply.what)?;
        let host = reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| self.base.clone());
        Ok(match answer.total_count.as_u64() {
            Some(n) => format!("Vinou at {host} answered; {n} order(s) in the shop"),
            None => format!("Vinou at {host} answered"),
        })
    }
}
