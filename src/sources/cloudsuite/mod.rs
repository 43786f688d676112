//! CloudSuite (Dutch B2B webshop platform, Django-REST style API).
//! Read: `GET /api/order/?state=confirmed&confirm_date__gte=<cursor - lookback>`
//! following `next` (until [`WalkGuard`] stops a list that does not end),
//! then each order's detail; list items are read one by one, so a bad one
//! does not fail its page. `state=confirmed` is a work
//! queue: after the ERP accepts we PATCH `state=processing`, which takes the
//! order out of it. A write-back's first attempt writes directly; one after
//! an attempt whose outcome is unknown reads the order first, so each takes
//! effect once.

pub(crate) mod config;
mod desadv;
#[cfg(test)]
mod fuzz_tests;
mod map;
#[cfg(test)]
mod vendor_examples;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::stream::{self, StreamExt};
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::list::{self, Body, Listing};
use super::walk::{IdSet, OffsetSteer, WalkGuard, offset_of, with_offset};
use super::{Page, Window, WriteBack};
use crate::config::{CloudSuiteAuth, CloudSuiteSettings, Config, ConfigError, SourceConfig};
use crate::http::session::{Issued, Session, refused_401};
use crate::http::{Endpoint, Failure, Reply, path_segment, query_value};
use crate::model::CountryMap;
use crate::model::convert::{naive_local_to_utc, utc_to_naive_local};
use crate::poll::Known;
use crate::secret::Secret;
use crate::store::{ErpShipment, IncomingOrder};

enum Auth {
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
    },
    Legacy(Secret),
}

pub struct CloudSuite {
    name: String,
    base: String,
    pub(super) endpoint: Endpoint,
    auth: Auth,
    session: Session,
    webshop: Option<i64>,
    payment_ok: Vec<String>,
    countries: CountryMap,
    timezone: chrono_tz::Tz,
    page_size: u32,
    lookback: Duration,
    /// Shipments go out as DESADV messages (else `shipment_state=sent`).
    desadv: Option<crate::config::DesadvTarget>,
}

/// Where a walk is. The cursor is written only at the end of a complete,
/// consistent walk: the list is a work queue that shrinks while we read it
/// (our own write-backs take orders out), so offset paging can skip orders.
pub struct Walk {
    first_path: String,
    next: Option<String>,
    backfill: bool,
    /// A complete listing (`reconcile`): drafts too, and a page whose
    /// details cannot all be read fails whole instead of moving on.
    listing: bool,
    old_cursor: Option<DateTime<Utc>>,
    first_count: Option<u64>,
    /// Pages start where the list's shrinking put the orders not yet read
    /// ([`OffsetSteer`]), while the remote's links page by offset.
    steer: OffsetSteer,
    /// Every `next` link so far paged by `offset`: the walk steers.
    steered: bool,
    /// Every order this walk listed.
    seen: IdSet,
    max_confirm: Option<DateTime<Utc>>,
    /// A detail could not be read this walk: do not move the cursor past it.
    incomplete: bool,
    /// Ends a `next` chain that does not; counts items without an id.
    pub(super) guard: WalkGuard,
    done: bool,
}

/// The summaries stay raw: each is read on its own ([`super::list`]), so
/// one the server could not serialize does not take its page down.
#[derive(Deserialize)]
struct ListPage {
    count: u64,
    next: Option<String>,
    results: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// An order detail as read: the raw reply (kept verbatim) and its JSON.
type DetailResult = Result<(Reply, Result<Value, String>), Failure>;

impl CloudSuite {
    /// Whether shipments go out as DESADV messages (which carry the
    /// tracking number); without, only `shipment_state=sent` is written.
    pub fn sends_desadv(&self) -> bool {
        self.desadv.is_some()
    }

    pub fn new(
        config: &Config,
        source: &SourceConfig,
        settings: &CloudSuiteSettings,
    ) -> Result<CloudSuite, ConfigError> {
        let prefix = format!("source {}", source.name);
        let auth = match &settings.auth {
            CloudSuiteAuth::OAuth2 {
                token_url,
                client_id,
                client_secret,
            } => Auth::OAuth2 {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.load(&format!("{prefix}: client_secret"))?,
            },
            CloudSuiteAuth::LegacyToken(r) => {
                Auth::Legacy(r.load(&format!("{prefix}: api_token"))?)
            }
        };
        let endpoint = Endpoint::for_source(config, source)?;
        Ok(CloudSuite {
            name: source.name.clone(),
            base: source.base_url.clone(),
            endpoint,
            auth,
            session: Session::new(),
            webshop: settings.webshop,
            payment_ok: settings.payment_ok.clone(),
            countries: source.country_map.clone(),
            timezone: settings.timezone,
            page_size: source.page_size,
            lookback: source.lookback,
            desadv: settings.desadv.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn map_context(&self) -> map::MapContext<'_> {
        map::MapContext {
            source: &self.name,
            timezone: self.timezone,
            payment_ok: &self.payment_ok,
            countries: &self.countries,
        }
    }

    // --- authentication -------------------------------------------------

    /// An OAuth2 token from the token endpoint (client credentials).
    async fn fetch_token(&self) -> Result<Issued, Failure> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
        } = &self.auth
        else {
            return Err(Failure::permanent("internal error: no OAuth2 configured"));
        };
        let req = self.endpoint.client().post(token_url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
            ("scope", "openid"),
        ]);
        let reply = self.endpoint.send(req).await.map_err(|f| {
            let hint = match f.status() {
                Some(400 | 401 | 403) => "; check client_id and the client secret file",
                _ => "",
            };
            f.context(&format!("OAuth2 token request failed{hint}"))
        })?;
        let answer: TokenAnswer = reply.json()?;
        Ok(Issued {
            token: Secret::new(answer.access_token),
            // Unstated: assume a short life and renew early.
            lifetime: Some(Duration::from_secs(answer.expires_in.unwrap_or(300))),
        })
    }

    /// Sends with authentication; the session logs in again once on a 401.
    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Reply, Failure> {
        if let Auth::Legacy(token) = &self.auth {
            let header = format!("Token {}", token.expose());
            return self
                .endpoint
                .send(build().header(AUTHORIZATION, header))
                .await;
        }
        self.session
            .call(
                || self.fetch_token(),
                |token| {
                    let header = format!("Bearer {}", token.expose());
                    self.endpoint.send(build().header(AUTHORIZATION, header))
                },
                refused_401,
            )
            .await
    }

    fn order_url(&self, id: &str) -> Result<String, Failure> {
        Ok(format!("{}/api/order/{}/", self.base, path_segment(id)?))
    }

    /// The detail of one order: a transport failure is the `Err`; an answer
    /// that is not an order (not JSON, not an object) is the inner `Err`.
    async fn get_detail_body(&self, id: &str) -> Result<(Reply, Result<Value, String>), Failure> {
        let (reply, detail) = self.fetch_detail(id).await?;
        let value = match detail.broken {
            Some(reason) => Err(format!(
                "{}: the order detail cannot be read: {reason}",
                reply.what
            )),
            None if detail.value.is_object() => Ok(detail.value),
            None => Err(format!(
                "{}: the order detail is not a JSON object",
                reply.what
            )),
        };
        Ok((reply, value))
    }

    async fn get_detail(&self, id: &str) -> Result<(Reply, Value), Failure> {
        let (reply, value) = self.get_detail_body(id).await?;
        let value = value.map_err(Failure::retry)?;
        Ok((reply, value))
    }

    /// One order's detail, read like a list item, so a bad value is named
    /// by its field.
    async fn fetch_detail(&self, id: &str) -> Result<(Reply, list::Item), Failure> {
        let url = self.order_url(id)?;
        let reply = self.send(|| self.endpoint.client().get(&url)).await?;
        let detail = Body::decode(&reply.body).whole();
        Ok((reply, detail))
    }

    /// One order for a write-back that reads before it writes, as
    /// [`list::Item::readable_for`] the fields the write-backs decide by.
    async fn get_fields(&self, id: &str) -> Result<(Reply, Value), Failure> {
        let (reply, detail) = self.fetch_detail(id).await?;
        match detail.readable_for(&["state", "erp_order_number", "shipment_state"]) {
            Ok(fields) => Ok((reply, fields)),
            Err(reason) => Err(Failure::retry(format!(
                "{}: the order detail cannot be read: {reason}",
                reply.what
            ))),
        }
    }

    /// The order as it stands after a PATCH, the copy the PUT of the line
    /// numbers starts from. DRF answers a PATCH with the whole object, but
    /// CloudSuite's pages show no answer: one without `order_lines` (only
    /// the fields set, or 204 with no body) is no copy to PUT back, so the
    /// order is read again instead of leaving its lines unnumbered.
    async fn after_patch(&self, id: &str, reply: &Reply) -> Result<RawOrder, Failure> {
        let whole = std::str::from_utf8(&reply.body)
            .ok()
            .and_then(|text| serde_json::from_str::<RawOrder>(text).ok())
            .filter(|order| order.contains_key("order_lines"));
        if let Some(order) = whole {
            return Ok(order);
        }
        tracing::debug!(source = %self.name, order = %id, "the PATCH answer holds no order_lines; reading the order for the PUT");
        let (read, _) = self.get_fields(id).await?;
        read.json()
    }

    /// Maps one order detail (listed or re-read as `id`), a panic in it
    /// contained by [`list::isolated`]: that order is parked.
    fn map(
        &self,
        ctx: &map::MapContext<'_>,
        id: &str,
        raw: &str,
        value: &Value,
    ) -> Result<IncomingOrder, String> {
        list::isolated(
            || map::incoming(ctx, raw, value),
            |why| Ok(list::parked(id, raw, why)),
        )
    }

    /// An order the list shows but whose detail cannot be read as an order
    /// (not JSON, not an object, no id) after the quick retries: recorded
    /// under the list's id and parked with the reason, so `status` shows it
    /// (SPEC §5.1). A later readable detail un-parks it by itself.
    fn unreadable(&self, id: &str, raw: &str, reason: &str) -> IncomingOrder {
        IncomingOrder {
            external_id: id.to_string(),
            raw: raw.chars().take(64 * 1024).collect(),
            version: None,
            mapped: Err(format!("cannot read CloudSuite order {id}: {reason}")),
        }
    }

    // --- reading ----------------------------------------------------------

    fn local(&self, t: DateTime<Utc>) -> String {
        utc_to_naive_local(t, self.timezone)
    }

    pub fn begin(&self, window: Window) -> Walk {
        let lookback = chrono::Duration::from_std(self.lookback).unwrap_or_default();
        let mut query: Vec<(&str, String)> = Vec::new();
        let listing = window.is_listing();
        let (backfill, old_cursor) = match &window {
            Window::Live {
                cursor,
                lookback: reread,
            } => {
                let cursor = cursor
                    .as_deref()
                    .and_then(|c| c.parse::<DateTime<Utc>>().ok());
                query.push(("state", "confirmed".into()));
                if let Some(c) = cursor {
                    let reread = chrono::Duration::from_std(*reread).unwrap_or_default();
                    query.push(("confirm_date__gte", self.local(c - reread)));
                }
                (false, cursor)
            }
            Window::Backfill { since, until, .. } => {
                // Backfill replays history: every state, within the window;
                // its own cursor lets an interrupted run resume.
                let (from, resume) = window.backfill_from(lookback).unwrap_or((*since, None));
                query.push(("confirm_date__gte", self.local(from)));
                if let Some(u) = until {
                    query.push(("confirm_date__lte", self.local(*u)));
                }
                (true, resume)
            }
            Window::Listing { since, until } => {
                query.push(("confirm_date__gte", self.local(*since)));
                if let Some(u) = until {
                    query.push(("confirm_date__lte", self.local(*u)));
                }
                (true, None)
            }
        };
        // Offline orders were entered outside the webshop (the ERP posts
        // them): never ours to import (the mapper also skips one a tenant
        // lists anyway).
        query.push(("offline", "false".into()));
        if let Some(w) = self.webshop {
            query.push(("webshop", w.to_string()));
        }
        query.push(("limit", self.page_size.to_string()));
        let qs = query
            .iter()
            .map(|(k, v)| format!("{k}={}", query_value(v)))
            .collect::<Vec<_>>()
            .join("&");
        Walk {
            first_path: format!("/api/order/?{qs}"),
            next: None,
            backfill,
            listing,
            old_cursor,
            first_count: None,
            steer: OffsetSteer::default(),
            steered: true,
            seen: IdSet::default(),
            max_confirm: None,
            incomplete: false,
            guard: WalkGuard::new(&self.name, self.page_size),
            done: false,
        }
    }

    pub async fn next_page(&self, walk: &mut Walk, known: &Known) -> Result<Option<Page>, Failure> {
        if walk.done {
            return Ok(None);
        }
        let path = walk.next.clone().unwrap_or_else(|| walk.first_path.clone());
        let url = format!("{}{path}", self.base);
        let reply = self.send(|| self.endpoint.client().get(&url)).await?;
        let listing = read_list(&reply.body, &reply.what)?;
        let what = format!("the page at {path:?}");
        let admitted = if walk.next.is_some() && walk.steered {
            // Steered pages may read orders again on purpose.
            let new = listing
                .ids
                .iter()
                .flatten()
                .filter(|id| !walk.seen.contains(id))
                .count();
            walk.guard.admit_steered_page(&what, new)
        } else {
            walk.guard.admit_page(&what, listing.listed())
        };
        if !admitted {
            walk.done = true;
            return Ok(None);
        }
        let Listing { page, items, ids } = listing;
        let seen = known.look_up(ids.iter().flatten()).await;
        let mut listed = Vec::with_capacity(ids.len());
        let mut wanted = Vec::new();
        let mut unchanged = Vec::new();
        let mut unkeyed = Vec::new();
        for (item, id) in items.iter().zip(ids.iter().cloned()) {
            // A summary that does not parse whole still names its order: the
            // detail is what gets recorded (or parked, naming what is wrong).
            let s = &item.value;
            let Some(id) = id else {
                unkeyed.push(item.broken.as_deref().unwrap_or("no id"));
                continue;
            };
            listed.push(id.clone());
            if let Some(t) = s["confirm_date"]
                .as_str()
                .and_then(|c| naive_local_to_utc(c, self.timezone).ok())
            {
                walk.max_confirm = walk.max_confirm.max(Some(t));
            }
            if walk.backfill
                && !walk.listing
                && matches!(s["state"].as_str(), Some("draft" | "quotation"))
            {
                continue;
            }
            // Unchanged since we recorded it: no need to read the detail again.
            if seen.unchanged(&id, s["modified_date"].as_str()) {
                unchanged.push(id);
                continue;
            }
            wanted.push(id);
        }
        let fetched: Vec<(String, DetailResult)> = stream::iter(wanted)
            .map(|id| async move {
                let r = self.detail_with_retry(&id).await;
                (id, r)
            })
            .buffered(self.endpoint.max_in_flight())
            .collect()
            .await;
        if walk.listing
            && let Some(f) = fetched.iter().find_map(|(_, r)| match r {
                Err(f) if f.status() != Some(404) => Some(f),
                _ => None,
            })
        {
            // A complete listing leaves out no order it could not read: the
            // page is read again, whole, by the caller's retry.
            walk.guard.retract_page();
            return Err(f.clone());
        }
        // From here on the walk moves: nothing below returns early with an error.
        walk.first_count.get_or_insert(page.count);
        for id in &listed {
            walk.seen.insert(id);
        }
        for why in unkeyed {
            walk.guard.unkeyed(why);
        }
        let ctx = self.map_context();
        let mut orders: Vec<IncomingOrder> = Vec::new();
        for (id, result) in fetched {
            match result {
                Ok((reply, Err(reason))) => {
                    orders.push(self.unreadable(
                        &id,
                        &crate::model::utf8_lossy(&reply.body),
                        &reason,
                    ));
                }
                Ok((reply, Ok(value))) => {
                    let raw = crate::model::utf8_lossy(&reply.body);
                    // The list items the documents show carry no
                    // confirm_date: the details tell the cursor.
                    if let Some(t) = value["confirm_date"]
                        .as_str()
                        .and_then(|c| naive_local_to_utc(c, self.timezone).ok())
                    {
                        walk.max_confirm = walk.max_confirm.max(Some(t));
                    }
                    match self.map(&ctx, &id, &raw, &value) {
                        Ok(o) if o.external_id == id => orders.push(o),
                        Ok(o) => orders.push(self.unreadable(
                            &id,
                            &raw,
                            &format!("the detail of order {id} carries id {}", o.external_id),
                        )),
                        Err(e) => orders.push(self.unreadable(&id, &raw, &e)),
                    }
                }
                Err(f) if f.status() == Some(404) => {
                    tracing::info!(source = %self.name, external_id = %id, "order disappeared between list and detail; skipped");
                }
                Err(f) => {
                    walk.incomplete = true;
                    tracing::warn!(source = %self.name, external_id = %id, error = %f, "cannot read order detail; will read it again next poll");
                }
            }
        }
        let mut cursor = None;
        let next = page.next.as_deref().map(path_of);
        walk.steered &= next.as_deref().is_none_or(|l| offset_of(l).is_some());
        let backwards = next
            .as_deref()
            .and_then(offset_of)
            .is_some_and(|o| o <= walk.steer.offset());
        let consistent = if walk.steered && backwards {
            let link = next.as_deref().unwrap_or_default();
            Some(walk.guard.backwards(link))
        } else if walk.steered {
            // Pages by offset: the next one starts where the orders not
            // yet read are now, whatever the list lost meanwhile.
            let listed = ids.iter().map(Option::as_deref);
            match walk.steer.read(page.count, listed, next.is_some()) {
                Some(at) => {
                    walk.next = Some(with_offset(next.as_deref().unwrap_or(&path), at));
                    None
                }
                None => Some(walk.steer.saw_everything()),
            }
        } else {
            match next {
                Some(next) if walk.guard.follow(&next) => {
                    walk.next = Some(next);
                    None
                }
                // A link followed before: the walk ends here, its cursor stays.
                Some(_) => Some(false),
                // The list did not change size under us, and the walk saw
                // as many orders as it holds.
                None => Some(
                    walk.first_count == Some(page.count) && walk.seen.len() as u64 == page.count,
                ),
            }
        };
        if let Some(saw_everything) = consistent {
            // A clean walk saw every order the list held: the cursor moves.
            // If not, it stays, and the next walk reads the window again.
            if saw_everything && !walk.incomplete && walk.guard.complete() {
                let new = walk.old_cursor.max(walk.max_confirm);
                cursor = new.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
                tracing::debug!(source = %self.name, pages = walk.steer.pages(), stepped_back = walk.steer.steps_back(), "walked the whole list; the cursor moves");
            } else {
                tracing::debug!(source = %self.name, pages = walk.steer.pages(), stepped_back = walk.steer.steps_back(), steered = walk.steered, saw_everything, incomplete = walk.incomplete, "order list changed while walking; the cursor stays where it was");
            }
            walk.done = true;
        }
        Ok(Some(Page {
            orders,
            cursor,
            unchanged,
        }))
    }

    /// A detail read with two quick retries for passing errors, so that one
    /// flaky answer does not leave the order for the next poll.
    async fn detail_with_retry(&self, id: &str) -> DetailResult {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.get_detail_body(id).await {
                Err(Failure::Retryable { retry_after, .. }) if attempt < 3 => retry_after,
                // A truncated body is often a passing proxy fault: read again.
                Ok((_, Err(_))) if attempt < 3 => None,
                other => return other,
            };
            let wait = wait
                .unwrap_or(Duration::from_millis(200 * attempt))
                .min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
        }
    }

    /// Read by the same rules as in a walk: a detail that is not an order
    /// after the quick retries is recorded again as such (parked), not a
    /// warning every poll.
    pub async fn recheck(&self, external_id: &str) -> Result<IncomingOrder, Failure> {
        let (reply, value) = self.detail_with_retry(external_id).await?;
        let raw = crate::model::utf8_lossy(&reply.body);
        match value {
            Ok(value) => self
                .map(&self.map_context(), external_id, &raw, &value)
                .map_err(Failure::retry),
            Err(reason) => Ok(self.unreadable(external_id, &raw, &reason)),
        }
    }

    // --- writing back -------------------------------------------------------

    /// `state=processing` + `erp_order_number` (one PATCH), then a PUT of the
    /// order exactly as the PATCH returned it with `erp_line_number` set on
    /// each line. Read first, so a repeat after a crash changes nothing.
    pub async fn write_accepted(&self, wb: &WriteBack) -> Result<String, Failure> {
        if !wb.in_doubt {
            // First attempt: nothing of ours can be there yet, so no read.
            // The PATCH answers with the whole order, which the PUT of the
            // line numbers starts from. A refusal (4xx: cancelled since, or
            // not in a state that may move) goes the careful way below to
            // say exactly why; anything uncertain leaves the next attempt in
            // doubt, and that one reads first.
            let url = self.order_url(&wb.external_id)?;
            let body = serde_json::json!({
                "erp_order_number": wb.erp_order_number,
                "state": "processing",
            });
            match self
                .send(|| self.endpoint.client().patch(&url).json(&body))
                .await
            {
                Ok(reply) => {
                    let mut current = self.after_patch(&wb.external_id, &reply).await?;
                    let mut done = vec!["state=processing, erp_order_number"];
                    if set_line_numbers(&mut current, wb) {
                        // The PUT sends the whole order as the PATCH found
                        // it: only while the job is still ours, or a node
                        // that stalled past its lease would write an old
                        // copy over what the job's new runner wrote since.
                        // That fence is the HTTP layer's, checked right
                        // before the request goes out (`outbox::lease`).
                        relations_as_pks(&mut current);
                        let body = current;
                        self.send(|| self.endpoint.client().put(&url).json(&body))
                            .await?;
                        done.push("erp_line_number on lines");
                    }
                    return Ok(done.join("; "));
                }
                Err(
                    f @ Failure::Permanent {
                        status: Some(400..=499),
                        ..
                    },
                ) => {
                    tracing::debug!(source = %self.name, order_key = %wb.order_key, error = %f, "direct write-back refused; reading the order to see why");
                }
                Err(f) => return Err(f),
            }
        }
        let (read, fields) = self.get_fields(&wb.external_id).await?;
        let state = fields["state"].as_str().unwrap_or_default().to_string();
        if state == "cancel" {
            return Err(Failure::permanent(format!(
                "order was cancelled at CloudSuite after the push: cancel ERP order {} by hand",
                wb.erp_order_number
            )));
        }
        let mut done = Vec::new();
        let number_ok = fields["erp_order_number"].as_str() == Some(wb.erp_order_number.as_str());
        let state_ok = matches!(state.as_str(), "processing" | "done");
        let mut current: RawOrder = if number_ok && state_ok {
            // The PUT's copy, read strictly: never bytes we had to escape.
            read.json()?
        } else {
            let mut body = serde_json::json!({ "erp_order_number": wb.erp_order_number });
            if !state_ok {
                if state != "confirmed" {
                    return Err(Failure::permanent(format!(
                        "order is in state {state:?} at CloudSuite; expected confirmed"
                    )));
                }
                body["state"] = "processing".into();
            }
            let url = self.order_url(&wb.external_id)?;
            let reply = self
                .send(|| self.endpoint.client().patch(&url).json(&body))
                .await?;
            done.push("state=processing, erp_order_number");
            self.after_patch(&wb.external_id, &reply).await?
        };
        if set_line_numbers(&mut current, wb) {
            // Only while the job is still ours (see above).
            let url = self.order_url(&wb.external_id)?;
            relations_as_pks(&mut current);
            let body = current;
            self.send(|| self.endpoint.client().put(&url).json(&body))
                .await?;
            done.push("erp_line_number on lines");
        }
        Ok(if done.is_empty() {
            "already written".into()
        } else {
            done.join("; ")
        })
    }

    /// A sale cancelled in the ERP: `PATCH state=cancel`, only from the
    /// states of CloudSuite's documented order flow that come before `done`
    /// and after the push (`confirmed`, `processing`) and not once its
    /// shipment is `sent`. Always read first: the state decides.
    pub async fn write_cancelled(&self, wb: &WriteBack) -> Result<String, Failure> {
        let (_, fields) = self.get_fields(&wb.external_id).await?;
        let state = fields["state"].as_str().unwrap_or_default().to_string();
        let shipment_state = fields["shipment_state"].as_str();
        if state == "cancel" {
            return Ok("already cancelled at CloudSuite".into());
        }
        if !matches!(state.as_str(), "confirmed" | "processing") || shipment_state == Some("sent") {
            return Err(Failure::permanent(format!(
                "order {} is in state {state:?} (shipment_state {}) at CloudSuite: state=cancel is written only from confirmed or processing before it is sent; ERP order {} was cancelled, settle it by hand",
                wb.external_id,
                shipment_state.unwrap_or("none"),
                wb.erp_order_number
            )));
        }
        let url = self.order_url(&wb.external_id)?;
        let body = serde_json::json!({ "state": "cancel" });
        self.send(|| self.endpoint.client().patch(&url).json(&body))
            .await?;
        Ok(format!("state=cancel (was {state})"))
    }

    /// With `desadv` configured: the shipment as a DESADV message, once
    /// ([`desadv`]). Otherwise `shipment_state=sent` (CloudSuite has no
    /// tracking field on the order; the tracking number stays in the ledger).
    pub async fn write_shipped(
        &self,
        wb: &WriteBack,
        shipment: &ErpShipment,
    ) -> Result<String, Failure> {
        let done = || {
            format!(
                "shipment_state=sent (tracking {} kept in the ledger only)",
                shipment.tracking_number.as_deref().unwrap_or("-")
            )
        };
        if self.desadv.is_none() && !wb.progress.completes_order {
            // CloudSuite's shipment_state is per order: it says "sent" when
            // the last line ships (tracking stays in the ledger either way).
            return Ok(format!(
                "partial shipment (tracking {}); shipment_state=sent waits for the last line",
                shipment.tracking_number.as_deref().unwrap_or("-")
            ));
        }
        if self.desadv.is_none() && !wb.in_doubt {
            // First attempt: this job waited for our accepted write-back, so
            // the order is `processing` by our own hand; write directly. A
            // refusal goes the careful way below, which says why.
            let url = self.order_url(&wb.external_id)?;
            let body = serde_json::json!({ "shipment_state": "sent" });
            match self
                .send(|| self.endpoint.client().patch(&url).json(&body))
                .await
            {
                Ok(_) => return Ok(done()),
                Err(
                    f @ Failure::Permanent {
                        status: Some(400..=499),
                        ..
                    },
                ) => {
                    tracing::debug!(source = %self.name, order_key = %wb.order_key, error = %f, "direct write-back refused; reading the order to see why");
                }
                Err(f) => return Err(f),
            }
        }
        if let Some(target) = &self.desadv {
            let (_, current) = self.get_detail(&wb.external_id).await?;
            return self.send_desadv(target, wb, shipment, &current).await;
        }
        let (_, fields) = self.get_fields(&wb.external_id).await?;
        if fields["shipment_state"].as_str() == Some("sent") {
            return Ok("already sent".into());
        }
        let state = fields["state"].as_str().unwrap_or_default();
        if !matches!(state, "processing" | "done") {
            return Err(Failure::retry(format!(
                "order is in state {state:?}; shipment_state can only be set once it is processing"
            )));
        }
        let url = self.order_url(&wb.external_id)?;
        let body = serde_json::json!({ "shipment_state": "sent" });
        self.send(|| self.endpoint.client().patch(&url).json(&body))
            .await?;
        Ok(done())
    }

    pub async fn check(&self) -> Result<String, Failure> {
        let url = format!("{}/api/order/?state=confirmed&limit=1", self.base);
        let reply = self.send(|| self.endpoint.client().get(&url)).await?;
        let page: ListPage = Body::decode(&reply.body).envelope(&reply.what)?;
        Ok(format!(
            "CloudSuite at {} answered; {} confirmed order(s) waiting",
            host_of(&self.base),
            page.count
        ))
    }
}

impl list::Envelope for ListPage {
    fn items(&self) -> &[Box<RawValue>] {
        &self.results
    }
}

/// A list page read summary by summary, each keyed by its id.
fn read_list(body: &[u8], what: &str) -> Result<Listing<ListPage>, Failure> {
    Listing::read(body, what, summary_id)
}

/// The id of a list summary, as text.
fn summary_id(s: &Value) -> Option<String> {
    match &s["id"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(t) => Some(t.clone()),
        _ => None,
    }
}

/// The connector's mapping for a client outside the engine (the benchmarks'
/// naive peer): one order detail as received → its canonical JSON, `None`
/// when the order is not to be pushed (held, cancelled), `Err` when it cannot
/// be mapped.
pub fn canonical_json(
    source: &str,
    timezone: chrono_tz::Tz,
    payment_ok: &[String],
    raw: &str,
) -> Result<Option<String>, String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let ctx = map::MapContext {
        source,
        timezone,
        payment_ok,
        countries: &CountryMap::default(),
    };
    let mapped = map::incoming(&ctx, raw, &value)?.mapped?;
    Ok(
        matches!(mapped.disposition, crate::store::Disposition::Push)
            .then(|| mapped.order.to_json()),
    )
}

/// An order (or one of its lines) as CloudSuite answered it, each field
/// kept as the exact JSON text it came in. The PUT of the line numbers
/// sends back what it does not change to the letter (a number an `f64`
/// would round, or one out of its range, goes back as it came), and reading
/// the PATCH's answer costs a scan of it, not a tree of values.
type RawOrder = BTreeMap<String, Box<RawValue>>;

/// A field's JSON value, `None` when it is missing or not valid JSON.
fn field(object: &RawOrder, name: &str) -> Option<Value> {
    serde_json::from_str(object.get(name)?.get()).ok()
}

/// Sets `erp_line_number` on each line of `order` that `wb` numbers,
/// matched by the line's `id`; whether anything changed. Lines that are not
/// a list of objects, or have no `id`, are left as they are.
/// Related records the detail may embed whole: the PUT names them by their
/// pk, as CloudSuite documents it (3c: `"customer": 1324`,
/// `"shipment_address": 1695`, `"webshop": 1`, `"user": 1260`). DRF's
/// nested read serializers commonly take only the pk on writes.
const RELATIONS: [&str; 5] = [
    "customer",
    "invoice_address",
    "shipment_address",
    "webshop",
    "user",
];

/// Replaces each embedded related record in the PUT's copy by its pk, as
/// the text CloudSuite sent it; one without an `id` stays as it is.
fn relations_as_pks(order: &mut RawOrder) {
    for name in RELATIONS {
        let Some(raw) = order.get(name) else { continue };
        let Ok(record) = serde_json::from_str::<RawOrder>(raw.get()) else {
            continue;
        };
        if let Some(pk) = record.get("id").cloned() {
            order.insert(name.into(), pk);
        }
    }
}

fn set_line_numbers(order: &mut RawOrder, wb: &WriteBack) -> bool {
    let Some(Ok(mut lines)) = order
        .get("order_lines")
        .map(|raw| serde_json::from_str::<Vec<RawOrder>>(raw.get()))
    else {
        return false;
    };
    let mut changed = false;
    for line in &mut lines {
        let id = match field(line, "id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s,
            _ => continue,
        };
        if let Some(n) = wb.lines.iter().find(|l| l.source_line_id == id) {
            let want: Value = n
                .erp_line_number
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(n.erp_line_number.clone()));
            if field(line, "erp_line_number").as_ref() != Some(&want) {
                let Ok(raw) = serde_json::value::to_raw_value(&want) else {
                    continue;
                };
                line.insert("erp_line_number".into(), raw);
                changed = true;
            }
        }
    }
    if changed {
        match serde_json::value::to_raw_value(&lines) {
            Ok(raw) => {
                order.insert("order_lines".into(), raw);
            }
            Err(_) => return false,
        }
    }
    changed
}

/// `next` is an absolute URL built by the server; we keep only its path and
/// query and put our own base in front, so credentials never go to a host
/// the server names.
fn path_of(next: &str) -> String {
    match reqwest::Url::parse(next) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => next.to_string(),
    }
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| url.to_string())
}

/// An order given as a JSON value, as a [`RawOrder`] (tests).
#[cfg(test)]
fn raw_order(v: &Value) -> RawOrder {
    serde_json::from_str(&v.to_string()).expect("an object")
}

/// A [`RawOrder`] read back as a JSON value (tests).
#[cfg(test)]
fn order_value(order: &RawOrder) -> Value {
    serde_json::to_string(order)
        .and_then(|s| serde_json::from_str(&s))
        .expect("valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_rebased() {
        assert_eq!(
            path_of("http://evil.example/api/order/?limit=5&offset=10"),
            "/api/order/?limit=5&offset=10"
        );
    }

    fn numbering_line_11() -> WriteBack {
        WriteBack {
            order_key: "s:1".into(),
            external_id: "1".into(),
            erp_order_number: "SO1".into(),
            shipped_before: Vec::new(),
            in_doubt: true,
            progress: Default::default(),
            step: Default::default(),
            lines: vec![crate::store::LineNumber {
                source_line_id: "11".into(),
                erp_line_number: "10".into(),
            }],
        }
    }

    #[test]
    fn line_numbers_are_set_once() {
        let mut order = raw_order(&serde_json::json!({"order_lines": [
            {"id": 11, "erp_line_number": null}, {"id": 12, "erp_line_number": null}
        ]}));
        let wb = numbering_line_11();
        assert!(set_line_numbers(&mut order, &wb));
        let v = order_value(&order);
        assert_eq!(v["order_lines"][0]["erp_line_number"], 10);
        assert!(v["order_lines"][1]["erp_line_number"].is_null());
        assert!(
            !set_line_numbers(&mut order, &wb),
            "a second pass changes nothing"
        );
    }

    /// The PUT sends back what it does not change as CloudSuite wrote it:
    /// decimals keep their digits, and numbers past what an `f64` holds
    /// (which a tree of JSON values refuses to read at all) go back as
    /// they came, in the order and in its lines.
    #[test]
    fn the_put_keeps_every_other_field_to_the_letter() {
        let answer = r#"{"id": 7, "total": 19.990, "big": 123456789012345678901234567890,
            "tiny": 1e400, "note": "caf\u00e9",
            "order_lines": [{"id": 11, "price": 1.10, "erp_line_number": null, "x": -0.0}]}"#;
        assert!(serde_json::from_str::<Value>(answer).is_err(), "1e400");
        let mut order: RawOrder = serde_json::from_str(answer).unwrap();
        assert!(set_line_numbers(&mut order, &numbering_line_11()));
        let put = serde_json::to_string(&order).unwrap();
        for kept in [
            r#""total":19.990"#,
            r#""big":123456789012345678901234567890"#,
            r#""tiny":1e400"#,
            r#""note":"caf\u00e9""#,
            r#""price":1.10"#,
            r#""x":-0.0"#,
            r#""erp_line_number":10"#,
        ] {
            assert!(put.contains(kept), "{kept} in {put}");
        }
    }

    /// The detail may embed the customer and addresses whole; the PUT names
    /// them by pk, digit for digit, as CloudSuite's 3c body does. A pk as it
    /// is, or a record without an id, stays.
    #[test]
    fn the_put_names_embedded_records_by_their_pk() {
        let answer = r#"{"id": 7, "customer": {"id": 1324, "name": "Jan"},
            "invoice_address": {"id": "0077", "city": "Amsterdam"}, "shipment_address": 1695,
            "webshop": {"name": "no id"}, "user": {"id": 1260},
            "order_lines": [{"id": 11, "product": {"key": "124_STUK", "origin": "x"}}]}"#;
        let mut order: RawOrder = serde_json::from_str(answer).unwrap();
        relations_as_pks(&mut order);
        let put = serde_json::to_string(&order).unwrap();
        for sent in [
            r#""customer":1324"#,
            r#""invoice_address":"0077""#,
            r#""shipment_address":1695"#,
            r#""webshop":{"name": "no id"}"#,
            r#""user":1260"#,
            r#""product": {"key": "124_STUK", "origin": "x"}"#,
        ] {
            assert!(put.contains(sent), "{sent} in {put}");
        }
    }

    #[test]
    fn lines_that_are_not_a_list_of_objects_are_left_alone() {
        for lines in [
            serde_json::json!(null),
            serde_json::json!("11"),
            serde_json::json!([11]),
        ] {
            let mut order = raw_order(&serde_json::json!({"order_lines": lines}));
            assert!(!set_line_numbers(&mut order, &numbering_line_11()));
            assert_eq!(order_value(&order)["order_lines"], lines);
        }
        assert!(!set_line_numbers(
            &mut raw_order(&serde_json::json!({})),
            &numbering_line_11()
        ));
    }
}
