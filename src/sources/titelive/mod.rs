//! Titelive MediaWeb ("MediaServices API", bookshop webshops).
//! Read: `GET {base}/api/json/{domain}/customer/order` with the SYSTEM
//! user's token, keeping status 5 (confirmed); ledger orders that are not
//! final are read again with `customer/order/{id}`. Write back: a form POST
//! to `admin/order/{id}/status` (7 processing with the ERP number, 8
//! processed with the tracking), each after reading the order, so a repeat
//! changes nothing. Every answer is HTTP 200 with a `success` flag: see [`wire`].
//! The list's orders are read one by one: a bad one is parked, not the list.

pub(crate) mod config;

/// An answer read by its envelope. Titelive documents its answers by the
/// envelope, not by HTTP status: a refusal (4xx) that carries one is read by
/// its code like any other (401 + code 5: a new token; 404 + code 10: no
/// such order). 408, 429 and 5xx go by their status (retried, `Retry-After`
/// honoured), as does an answer without the envelope.
fn read_answer(reply: &Reply) -> Result<Answer, Failure> {
    if (200..300).contains(&reply.status) {
        return wire::unwrap(reply);
    }
    let by_status = crate::http::status_failure(reply);
    if (400..500).contains(&reply.status)
        && reply.status != 408
        && reply.status != 429
        && let Ok(answer) = wire::unwrap(reply)
        && !answer.success
    {
        return Ok(answer);
    }
    Err(by_status)
}

#[cfg(test)]
mod fuzz_tests;
mod map;
#[cfg(test)]
mod vendor_examples;
mod wire;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::list;
use super::walk::WalkGuard;
use super::{Page, Window, WriteBack};
use crate::config::{Config, ConfigError, SourceConfig, TiteliveAuth, TiteliveSettings};
use crate::http::session::{Issued, Session, refused_401};
use crate::http::{Endpoint, Failure, Reply, path_segment};
use crate::model::CountryMap;
use crate::model::convert::naive_local_to_utc;
use crate::poll::Known;
use crate::secret::{Secret, SecretRef};
use crate::store::{ErpShipment, IncomingOrder};
use wire::{Answer, CodeClass};

enum Auth {
    /// Re-read from its file or variable when Titelive rejects it, so an
    /// operator can rotate it without a restart.
    Given {
        from: SecretRef,
        key: String,
    },
    Login {
        login: String,
        password: Secret,
    },
}

pub struct Titelive {
    name: String,
    /// `{base_url}/api/json/{domain_code}`.
    api: String,
    pub(super) endpoint: Endpoint,
    auth: Auth,
    session: Session,
    processing_status: i64,
    shipped_status: i64,
    countries: CountryMap,
    /// The shop did not read the SYSTEM login as a form: it goes as the
    /// documented query string ([`Titelive::log_in`]).
    login_by_query: std::sync::atomic::AtomicBool,
}

/// An order read by id.
enum Read {
    Order(Value),
    /// It exists but cannot be read: its text as received and why.
    Unreadable {
        raw: String,
        reason: String,
    },
    /// Code 10: it does not exist.
    Gone,
}

/// The list is one call (Titelive documents no paging or date filter).
pub struct Walk {
    backfill: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// Counts list items without an id (reported once per poll).
    pub(super) guard: WalkGuard,
    done: bool,
}

impl Titelive {
    pub fn new(
        config: &Config,
        source: &SourceConfig,
        settings: &TiteliveSettings,
    ) -> Result<Titelive, ConfigError> {
        let prefix = format!("source {}", source.name);
        let auth = match &settings.auth {
            TiteliveAuth::Token(r) => {
                let key = format!("{prefix}: token");
                // Read now, so a missing file stops startup naming it.
                r.load(&key)?;
                Auth::Given {
                    from: r.clone(),
                    key,
                }
            }
            TiteliveAuth::Login { login, password } => Auth::Login {
                login: login.clone(),
                password: password.load(&format!("{prefix}: system_password"))?,
            },
        };
        let endpoint = Endpoint::for_source(config, source)?;
        Ok(Titelive {
            name: source.name.clone(),
            api: format!("{}/api/json/{}", source.base_url, settings.domain_code),
            endpoint,
            auth,
            session: Session::new(),
            processing_status: settings.processing_status,
            shipped_status: settings.shipped_status,
            countries: source.country_map.clone(),
            login_by_query: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn map_context(&self) -> map::MapContext<'_> {
        map::MapContext {
            source: &self.name,
            countries: &self.countries,
        }
    }

    // --- the token ------------------------------------------------------

    /// A token: the configured one, or one bound to the SYSTEM user by
    /// logging in. Caching and renewal are the session's.
    async fn obtain_token(&self) -> Result<Issued, Failure> {
        let (login, password) = match &self.auth {
            Auth::Given { from, key } => {
                // Failing to read it is the operator's to fix: retried, named.
                let value = from.load(key).map_err(Failure::retry)?;
                return Ok(Issued {
                    token: value,
                    lifetime: None,
                });
            }
            Auth::Login { login, password } => (login, password),
        };
        let hint = "; check system_login and system_password_file";
        // 1. A fresh, anonymous token.
        let url = format!("{}/customer/token", self.api);
        let reply = self
            .endpoint
            .send(self.endpoint.client().get(&url))
            .await
            .map_err(|f| f.context("getting a token failed"))?;
        let answer = wire::unwrap(&reply)?;
        if !answer.success {
            return Err(Failure::retry(answer.describe("getting a token")));
        }
        let token = token_of(&answer.object).ok_or_else(|| {
            Failure::retry(format!(
                "{}: customer/token answered without a token value",
                self.name
            ))
        })?;
        // 2. Bound to the SYSTEM user.
        let answer = self
            .log_in(&token.token, login, password)
            .await
            .map_err(|f| f.context("SYSTEM login failed"))?;
        if !answer.success {
            // Wrong credentials are fixed by an operator, not per order: the
            // daemon keeps going with backoff, like a 401.
            return Err(Failure::retry(format!(
                "{}{hint}",
                answer.describe("SYSTEM login")
            )));
        }
        // Login answers with the token as bound; it may carry a new expiry.
        Ok(token_of(&answer.object).unwrap_or(token))
    }

    /// Sends with the token; an answer saying the token is empty, unknown or
    /// invalid (3, 4, 5) gets a new token and one more try.
    async fn call(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Answer, Failure> {
        let build = &build;
        let answer = self
            .session
            .call(
                || self.obtain_token(),
                |token| async move { self.send_once(build, &token).await },
                |r| {
                    matches!(r, Ok(a) if a.class() == Some(CodeClass::TokenRejected))
                        || refused_401(r)
                },
            )
            .await?;
        if answer.class() == Some(CodeClass::TokenRejected) {
            let hint = match self.auth {
                Auth::Given { .. } => "check token_file / token_env (the SYSTEM user's token)",
                Auth::Login { .. } => "a freshly obtained token was rejected too",
            };
            return Err(Failure::retry(format!(
                "{}; {hint}",
                answer.describe("token rejected")
            )));
        }
        Ok(answer)
    }

    async fn send_once(
        &self,
        build: &impl Fn() -> reqwest::RequestBuilder,
        token: &Secret,
    ) -> Result<Answer, Failure> {
        let reply = self
            .endpoint
            .exchange(build().header("token", token.expose()))
            .await?;
        read_answer(&reply)
    }

    /// Binds `token` to the SYSTEM user. The documents show the login as a
    /// query string (`customer/login?login=…&password=…`). A form POST keeps
    /// the password out of URLs (and out of every proxy's access log), so it
    /// goes first; a shop that does not read it as a form (code 9: a
    /// parameter missing; or 405) gets the documented GET with the query
    /// string, from then on. Our own messages never show a query string.
    async fn log_in(
        &self,
        token: &Secret,
        login: &str,
        password: &Secret,
    ) -> Result<Answer, Failure> {
        use std::sync::atomic::Ordering::Relaxed;
        let url = format!("{}/customer/login", self.api);
        let exchange = |req: reqwest::RequestBuilder| async {
            let reply = self
                .endpoint
                .exchange(req.header("token", token.expose()))
                .await?;
            read_answer(&reply)
        };
        if !self.login_by_query.load(Relaxed) {
            let form = self
                .endpoint
                .client()
                .post(&url)
                .form(&[("login", login), ("password", password.expose())]);
            match exchange(form).await {
                Ok(answer) if answer.success || answer.code != Some(9) => return Ok(answer),
                Err(f) if f.status() != Some(405) => return Err(f),
                _ => {}
            }
            tracing::info!(source = %self.name, "Titelive did not read the SYSTEM login as a form; logging in with the documented query string from now on");
            self.login_by_query.store(true, Relaxed);
        }
        let query = self
            .endpoint
            .client()
            .get(&url)
            .query(&[("login", login), ("password", password.expose())]);
        exchange(query).await
    }

    fn order_url(&self, id: &str) -> Result<String, Failure> {
        Ok(format!("{}/customer/order/{}", self.api, path_segment(id)?))
    }

    /// One order as Titelive has it now.
    async fn read_order(&self, id: &str) -> Result<Read, Failure> {
        let url = self.order_url(id)?;
        let answer = self.call(|| self.endpoint.client().get(&url)).await?;
        if answer.class() == Some(CodeClass::NotFound) {
            return Ok(Read::Gone);
        }
        let raw = answer.raw_member("order").unwrap_or_default();
        let object = match answer.into_readable(&format!("order {id}"))? {
            Ok(object) => object,
            Err(reason) => return Ok(Read::Unreadable { raw, reason }),
        };
        match &object["order"] {
            Value::Object(_) => Ok(Read::Order(object["order"].clone())),
            _ => Err(Failure::retry(format!(
                "order {id}: customer/order/{id} answered success without an order"
            ))),
        }
    }

    /// One order for a write-back (which reads before it writes and
    /// decides by its `status`), as [`list::Item::readable_for`]: a field
    /// that cannot be read elsewhere does not stop it. `None`: it does not
    /// exist (code 10).
    async fn get_order(&self, id: &str) -> Result<Option<Value>, Failure> {
        match self.read_order(id).await? {
            Read::Order(order) => Ok(Some(order)),
            Read::Gone => Ok(None),
            Read::Unreadable { raw, reason } => {
                match list::item(&raw, false).readable_for(&["status"]) {
                    Ok(order) => Ok(Some(order)),
                    Err(_) => Err(Failure::retry(format!(
                        "order {id} cannot be read: {reason}"
                    ))),
                }
            }
        }
    }

    // --- reading -----------------------------------------------------------

    pub fn begin(&self, window: Window) -> Walk {
        Walk {
            // A listing is the backfill's selection: every order confirmed
            // or later created in the window (carts are not orders yet), and
            // nothing is filtered by what the ledger knows.
            backfill: window.bounds(),
            // One list, one page: the guard only counts unkeyed items.
            guard: WalkGuard::with_cap(&self.name, 1),
            done: false,
        }
    }

    pub async fn next_page(
        &self,
        walk: &mut Walk,
        _known: &Known,
    ) -> Result<Option<Page>, Failure> {
        if walk.done {
            return Ok(None);
        }
        let url = format!("{}/customer/order", self.api);
        let answer = self.call(|| self.endpoint.client().get(&url)).await?;
        // "no orders" is code 10 with success=false.
        let items = if answer.class() == Some(CodeClass::NotFound) {
            Vec::new()
        } else {
            answer.into_items("order list", "orders", "order")?
        };
        walk.done = true;
        let wanted = select(&items, walk.backfill, &mut walk.guard);
        tracing::debug!(source = %self.name, listed = items.len(), wanted = wanted.len(), "order list read");
        let ctx = self.map_context();
        let mut orders = Vec::new();
        for (id, item) in wanted {
            match item.unreadable("Titelive", &id) {
                Some(parked) => orders.push(parked),
                None => match map_one(&ctx, &id, &item.raw, &item.value) {
                    Ok(o) => orders.push(o),
                    Err(e) => walk.guard.unkeyed(e),
                },
            }
        }
        Ok(Some(Page {
            orders,
            cursor: None,
            unchanged: Vec::new(),
        }))
    }

    pub async fn recheck(&self, external_id: &str) -> Result<IncomingOrder, Failure> {
        match self.read_order(external_id).await? {
            Read::Order(order) => {
                map_one(&self.map_context(), external_id, &order.to_string(), &order)
                    .map_err(Failure::retry)
            }
            // Recorded again as it was listed, parked: no warning every poll.
            Read::Unreadable { raw, reason } => Ok(IncomingOrder {
                external_id: external_id.to_string(),
                raw,
                version: None,
                mapped: Err(format!(
                    "cannot read Titelive order {external_id}: {reason}"
                )),
            }),
            // Gone at Titelive: recorded as unmappable, so its push is parked
            // and `status` shows why.
            Read::Gone => Ok(IncomingOrder {
                external_id: external_id.to_string(),
                raw: "{}".into(),
                version: None,
                mapped: Err(format!(
                    "Titelive order {external_id} does not exist (code 10)"
                )),
            }),
        }
    }

    // --- writing back ----------------------------------------------------------

    /// The order's status now; `Err` (parked) when it is gone.
    async fn status_now(&self, id: &str) -> Result<i64, Failure> {
        let order = self.get_order(id).await?.ok_or_else(|| {
            Failure::permanent(format!("order {id} does not exist at Titelive (code 10)"))
        })?;
        map::status(&order).ok_or_else(|| {
            Failure::retry(format!("order {id}: Titelive answered without a status"))
        })
    }

    /// Writes `status`; `reached`: the statuses that show the write took
    /// effect (the status itself, or one past it).
    async fn set_status(
        &self,
        id: &str,
        status: i64,
        message: &str,
        reached: &[i64],
    ) -> Result<String, Failure> {
        let url = format!("{}/admin/order/{}/status", self.api, path_segment(id)?);
        let form = [
            ("status", status.to_string()),
            ("message", message.to_string()),
        ];
        let answer = self
            .call(|| self.endpoint.client().post(&url).form(&form))
            .await?;
        match answer.class() {
            None => Ok(format!("status {status} ({message})")),
            // Documented only as "order already confirmed", and we never
            // write 5: for 7, 8 or 99 it may mean the write was refused (a
            // shop whose status writes are closed to integrators) or that it
            // has nothing left to do. The order's status tells which.
            Some(CodeClass::AlreadyConfirmed) => {
                let now = self.status_now(id).await?;
                if reached.contains(&now) {
                    Ok(format!(
                        "status {status}: Titelive answered code 13 (order already confirmed); the order shows status {now}"
                    ))
                } else {
                    Err(Failure::permanent(format!(
                        "Titelive refused status {status} for order {id} with code 13 (order already confirmed); the order stays in status {now} there. Ask Titelive whether this shop's status writes are open to integrators (its documents reserve them for shops that manage payment themselves)"
                    )))
                }
            }
            Some(_) => Err(answer.failure(&format!("setting order {id} to status {status}"))),
        }
    }

    /// `processing_status` (7) with the ERP order number in `message`.
    pub async fn write_accepted(&self, wb: &WriteBack) -> Result<String, Failure> {
        let id = &wb.external_id;
        let now = self.status_now(id).await?;
        if now == self.processing_status || now == self.shipped_status || now == map::DONE {
            return Ok(format!("already status {now}"));
        }
        if now == map::CANCELLED {
            return Err(Failure::permanent(format!(
                "order was cancelled at Titelive after the push: cancel ERP order {} by hand",
                wb.erp_order_number
            )));
        }
        if now != map::CONFIRMED {
            return Err(Failure::permanent(format!(
                "order {id} is in status {now} at Titelive; expected 5 (confirmed)"
            )));
        }
        self.set_status(
            id,
            self.processing_status,
            &format!("ERP order {}", wb.erp_order_number),
            &[self.processing_status, self.shipped_status, map::DONE],
        )
        .await
    }

    /// A sale cancelled in the ERP: status 99 (cancelled), which Titelive's
    /// status list has and its status write takes, with the ERP's reason in
    /// `message`. Read first (every Titelive write-back does): cancelled
    /// already is done; a done order (10) cannot be cancelled.
    pub async fn write_cancelled(
        &self,
        wb: &WriteBack,
        cancellation: &crate::store::ErpCancellation,
    ) -> Result<String, Failure> {
        let id = &wb.external_id;
        let now = self.status_now(id).await?;
        if now == map::CANCELLED {
            return Ok("already status 99 (cancelled)".into());
        }
        if now == map::DONE {
            return Err(Failure::permanent(format!(
                "order {id} is done (status 10) at Titelive: it cannot be cancelled there; ERP order {} was cancelled, settle it with the customer by hand",
                wb.erp_order_number
            )));
        }
        let mut message = format!("Cancelled in the ERP (order {})", wb.erp_order_number);
        if let Some(r) = &cancellation.reason {
            message.push_str(&format!(": {r}"));
        }
        self.set_status(id, map::CANCELLED, &message, &[map::CANCELLED])
            .await
    }

    /// `shipped_status` (8) with carrier and tracking in `message`. Titelive
    /// documents no write for packages, so the message is where they go.
    pub async fn write_shipped(
        &self,
        wb: &WriteBack,
        shipment: &ErpShipment,
    ) -> Result<String, Failure> {
        let id = &wb.external_id;
        if !wb.progress.completes_order {
            // Titelive's status is per order: "shipped" waits for the last
            // line, and then names every tracking number.
            return Ok(format!(
                "partial shipment (tracking {}); the shipped status waits for the last line",
                shipment.tracking_number.as_deref().unwrap_or("-")
            ));
        }
        let now = self.status_now(id).await?;
        if now == self.shipped_status || now == map::DONE {
            return Ok(format!(
                "already status {now} (tracking {} kept in the ledger only)",
                shipment.tracking_number.as_deref().unwrap_or("-")
            ));
        }
        if now == map::CANCELLED {
            return Err(Failure::permanent(format!(
                "order was cancelled at Titelive after the push; ERP order {} shipped anyway",
                wb.erp_order_number
            )));
        }
        if now != self.processing_status {
            return Err(Failure::retry(format!(
                "order {id} is in status {now} at Titelive; it can be marked shipped once it is {}",
                self.processing_status
            )));
        }
        let mut message = format!("Shipped (ERP order {})", wb.erp_order_number);
        if let Some(c) = &shipment.carrier {
            message.push_str(&format!(" by {c}"));
        }
        if !wb.progress.tracking_numbers.is_empty() {
            message.push_str(&format!(
                ", tracking {}",
                wb.progress.tracking_numbers.join(", ")
            ));
        } else if let Some(t) = &shipment.tracking_number {
            message.push_str(&format!(", tracking {t}"));
        }
        if let Some(u) = &shipment.tracking_url {
            message.push_str(&format!(" {u}"));
        }
        self.set_status(
            id,
            self.shipped_status,
            &message,
            &[self.shipped_status, map::DONE],
        )
        .await
    }

    pub async fn check(&self) -> Result<String, Failure> {
        let url = format!("{}/customer/order", self.api);
        let answer = self.call(|| self.endpoint.client().get(&url)).await?;
        let waiting = if answer.class() == Some(CodeClass::NotFound) {
            0
        } else {
            answer
                .into_items("order list", "orders", "order")?
                .iter()
                .filter(|o| map::status(&o.value) == Some(map::CONFIRMED))
                .count()
        };
        let host = reqwest::Url::parse(&self.api)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        Ok(format!(
            "Titelive at {host} answered; {waiting} confirmed order(s) waiting"
        ))
    }
}

/// Maps one order (listed or re-read as `id`, received as `raw`), a panic
/// in it contained by [`list::isolated`]: that order is parked.
fn map_one(
    ctx: &map::MapContext<'_>,
    id: &str,
    raw: &str,
    order: &Value,
) -> Result<IncomingOrder, String> {
    list::isolated(
        || map::incoming(ctx, order),
        |why| Ok(list::parked(id, raw, why)),
    )
}

/// The list items a walk records: status 5 (live), or every real order
/// created in the window (backfill replays history, carts excluded);
/// deduplicated by id, the last copy winning. Items without an id are
/// counted by `guard`. A broken item is judged by what of it still parses,
/// and kept when its status cannot be read: parked, it is seen; skipped,
/// it would be lost.
fn select<'a>(
    items: &'a [list::Item],
    backfill: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    guard: &mut WalkGuard,
) -> Vec<(String, &'a list::Item)> {
    let mut by_id: BTreeMap<String, &list::Item> = BTreeMap::new();
    for item in items {
        let v = &item.value;
        let Some(id) = map::order_id(v) else {
            guard.unkeyed(item.broken.as_deref().unwrap_or("no id"));
            continue;
        };
        let status = map::status(v);
        let wanted = match backfill {
            None => status == Some(map::CONFIRMED),
            Some((since, until)) => {
                status.is_some_and(|s| s >= map::CONFIRMED)
                    && match created_at(v) {
                        Some(t) => t >= since && until.is_none_or(|u| t <= u),
                        None => item.broken.is_some(),
                    }
            }
        };
        let unsure = item.broken.is_some() && status.is_none();
        if wanted || unsure {
            by_id.insert(id, item);
        }
    }
    by_id.into_iter().collect()
}

fn created_at(order: &Value) -> Option<DateTime<Utc>> {
    naive_local_to_utc(order["creationDate"].as_str()?, map::TIMEZONE).ok()
}

/// `{"token": {"value", "expirationDate", ...}}` (or the token object itself).
fn token_of(object: &Value) -> Option<Issued> {
    let t = if object["token"].is_object() {
        &object["token"]
    } else {
        object
    };
    let value = t["value"].as_str().filter(|v| !v.trim().is_empty())?;
    // From `expirationDate` when it can be read; otherwise the token is used
    // until an answer rejects it. The session bounds and renews early.
    let lifetime = t["expirationDate"]
        .as_str()
        .and_then(|e| naive_local_to_utc(e, map::TIMEZONE).ok())
        .and_then(|exp| (exp - Utc::now()).to_std().ok());
    Some(Issued {
        token: Secret::new(value),
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_walk_keeps_confirmed_orders_once() {
        let list = json!({"orders": {"order": [
            {"id": 1, "status": 5, "creationDate": "2024-06-01 10:00:00", "v": "old"},
            {"id": 2, "status": 7, "creationDate": "2024-06-01 10:00:00"},
            {"id": 3, "status": 1, "creationDate": "2024-06-01 10:00:00"},
            {"id": 1, "status": 5, "creationDate": "2024-06-01 10:00:00", "v": "new"},
            {"status": 5},
            {"id": 4, "status": 99, "creationDate": "2024-05-01 10:00:00"}
        ]}});
        let items: Vec<list::Item> = wire::collection(&list, "orders", "order")
            .iter()
            .map(|v| list::item(&v.to_string(), false))
            .collect();
        let mut guard = WalkGuard::with_cap("s", 1);
        let live = select(&items, None, &mut guard);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].1.value["v"], "new", "the last copy of an id wins");
        assert!(!guard.complete(), "the item without an id is counted");
        let since = "2024-05-15T00:00:00Z".parse().unwrap();
        let ids: Vec<String> = select(&items, Some((since, None)), &mut guard)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            ids,
            ["1", "2"],
            "backfill: real orders in the window, no carts"
        );
    }
}
