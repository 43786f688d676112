//! The Tryton ERP adapter (`erp.kind = "tryton"`), raw JSON-RPC to trytond.
//!
//! Push ([`push`]): look the sale up by `reference = <order key>` first and
//! resume or reuse it; only when none exists create party, addresses and the
//! sale, then quote and confirm. Every call is its own Tryton transaction, so
//! a crash between create and confirm leaves a draft that the next attempt
//! resumes: never a second sale (guarantee 2). With `erp.batch_size` > 1
//! orders waiting at the same time go through the same steps together, one
//! call per step for all of them ([`batch`]).
//! Shipments ([`shipments`]): `stock.shipment.out` done since a `write_date`
//! cursor, re-read with an overlap because Tryton stamps `write_date` when
//! its transaction starts, not when it commits; repeats are harmless
//! (the ledger dedupes shipment write-backs).
//! Cancellations ([`cancel`]): cancel a sale while Tryton's workflow allows
//! it; report cancelled sales by `write_date` like shipments.

mod batch;
mod cancel;
mod feed;
mod parties;
mod push;
pub mod rpc;
mod shipments;
mod taxes;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::{Config, ConfigError, ProductMatch, UnknownProduct};
use crate::http::{Endpoint, Failure};
use rpc::Rpc;

pub struct TrytonErp {
    rpc: Rpc,
    confirm: bool,
    unknown_product: UnknownProduct,
    product_match: Vec<ProductMatch>,
    /// `erp.tax_map`: rate in percent → sale tax name.
    tax_map: Vec<(rust_decimal::Decimal, String)>,
    /// The company's sale taxes, read at the first order that needs them
    /// and again when a rate finds none (a tax added in Tryton).
    sale_taxes: Mutex<Option<Arc<taxes::TaxTable>>>,
    /// ISO codes (countries, currencies) to ids: master data that does not
    /// change under a running daemon, so one search per code.
    ids: Mutex<HashMap<String, i64>>,
    /// Held while a party or product is looked up and created, so that two
    /// orders of one new customer (or product) pushed at once create it once.
    master_data: Mutex<()>,
    /// Which optional shipment fields this server has (module-dependent).
    shipment_fields: Mutex<Option<Vec<String>>>,
    /// The company's time zone (`company.company.timezone`), read once: a
    /// sale's date is the order's date there, not in UTC.
    company_tz: Mutex<Option<chrono_tz::Tz>>,
    /// `erp.batch_size` > 1: pushes go out together.
    batcher: Option<batch::Batcher>,
}

impl TrytonErp {
    pub fn new(config: &Config) -> Result<TrytonErp, ConfigError> {
        let password = config.erp.credential.load("erp.password")?;
        let endpoint = Endpoint::for_erp(config)?;
        let user = config.erp.user.clone().unwrap_or_default();
        Ok(TrytonErp {
            rpc: Rpc::new(&config.erp.url, &user, password, endpoint),
            confirm: config.erp.confirm,
            unknown_product: config.erp.unknown_product,
            product_match: config.erp.product_match.clone(),
            tax_map: config.erp.tax_map.clone(),
            sale_taxes: Mutex::new(None),
            ids: Mutex::new(HashMap::new()),
            master_data: Mutex::new(()),
            company_tz: Mutex::new(None),
            shipment_fields: Mutex::new(None),
            batcher: (config.erp.batch_size > 1)
                .then(|| batch::Batcher::new(config.erp.batch_size, config.erp.max_in_flight)),
        })
    }

    pub async fn push(
        &self,
        order_key: &str,
        canonical_json: &str,
    ) -> Result<crate::store::ErpAccepted, Failure> {
        match &self.batcher {
            Some(b) => b.push(self, order_key, canonical_json).await,
            None => push::push(self, order_key, canonical_json).await,
        }
    }

    pub async fn shipments(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<super::ShipmentPage, Failure> {
        shipments::shipments(self, after, limit).await
    }

    pub async fn cancel(&self, order_key: &str) -> Result<String, Failure> {
        cancel::cancel(self, order_key).await
    }

    pub async fn cancellations(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<super::CancellationPage, Failure> {
        cancel::cancellations(self, after, limit).await
    }

    /// Sale numbers (or `draft #id`) of every non-cancelled sale with this reference.
    pub async fn orders_for_key(&self, order_key: &str) -> Result<Vec<String>, Failure> {
        let rows = self
            .search_read(
                "sale.sale",
                json!([["reference", "=", order_key], ["state", "!=", "cancelled"]]),
                &["number", "state"],
                None,
            )
            .await?;
        Ok(rows.iter().map(sale_label).collect())
    }

    /// check-config: logs in, names the company and counts visible products.
    pub async fn check(&self) -> Result<String, Failure> {
        let ctx = self.rpc.context().await?;
        let company = ctx["company"].clone();
        let rows = self
            .rpc
            .model(
                "company.company",
                "read",
                vec![json!([company]), json!(["rec_name"])],
            )
            .await?;
        let name = rows[0]["rec_name"].as_str().unwrap_or("?").to_string();
        let products = self
            .rpc
            .model("product.product", "search_count", vec![json!([])])
            .await?;
        Ok(format!(
            "Tryton at {}: logged in; company {name:?} (id {company}); {products} products visible",
            self.rpc.base
        ))
    }

    async fn search_read(
        &self,
        model: &str,
        domain: Value,
        fields: &[&str],
        limit: Option<u32>,
    ) -> Result<Vec<Value>, Failure> {
        let rows = self
            .rpc
            .model(
                model,
                "search_read",
                vec![
                    domain,
                    json!(0),
                    json!(limit),
                    json!([["id", "ASC"]]),
                    json!(fields),
                ],
            )
            .await?;
        match rows {
            Value::Array(a) => Ok(a),
            other => Err(Failure::retry(format!(
                "Tryton at {}: {model}.search_read answered {other} instead of a list",
                self.rpc.base
            ))),
        }
    }

    /// Ids of records matching `domain` (at most `limit`).
    async fn search(
        &self,
        model: &str,
        domain: Value,
        limit: Option<u32>,
    ) -> Result<Vec<i64>, Failure> {
        let ids = self
            .rpc
            .model(
                model,
                "search",
                vec![domain, json!(0), json!(limit), json!([["id", "ASC"]])],
            )
            .await?;
        Ok(ids_of(&ids))
    }

    async fn create(&self, model: &str, values: Value) -> Result<i64, Failure> {
        let ids = self
            .rpc
            .model(model, "create", vec![json!([values])])
            .await?;
        ids_of(&ids).first().copied().ok_or_else(|| {
            Failure::retry(format!(
                "Tryton at {}: {model}.create returned no id",
                self.rpc.base
            ))
        })
    }

    /// Creates several records in one call (one Tryton transaction): their
    /// ids in the order of `values`.
    async fn create_many(&self, model: &str, values: Vec<Value>) -> Result<Vec<i64>, Failure> {
        let wanted = values.len();
        let ids = ids_of(
            &self
                .rpc
                .model(model, "create", vec![Value::Array(values)])
                .await?,
        );
        if ids.len() != wanted {
            return Err(Failure::retry(format!(
                "Tryton at {}: {model}.create of {wanted} records returned {} ids",
                self.rpc.base,
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// A workflow button on records, all in one call (one transaction).
    async fn button(&self, model: &str, button: &str, ids: &[i64]) -> Result<(), Failure> {
        self.rpc.model(model, button, vec![json!(ids)]).await?;
        Ok(())
    }

    /// The company's sale taxes: no parent, no group or a sale group, of the
    /// user's current company. `reload` reads them again.
    async fn sale_taxes(&self, reload: bool) -> Result<Arc<taxes::TaxTable>, Failure> {
        let mut cached = self.sale_taxes.lock().await;
        if !reload && let Some(t) = cached.as_ref() {
            return Ok(Arc::clone(t));
        }
        let company = self.rpc.context().await?["company"].clone();
        let rows = self
            .search_read(
                "account.tax",
                json!([
                    ["company", "=", company],
                    ["parent", "=", null],
                    [
                        "OR",
                        ["group", "=", null],
                        ["group.kind", "in", ["sale", "both"]]
                    ],
                ]),
                &["name", "type", "rate"],
                None,
            )
            .await?;
        let table = Arc::new(taxes::TaxTable::from_rows(&rows));
        *cached = Some(Arc::clone(&table));
        Ok(table)
    }

    /// The company's time zone, read once; UTC when it has none or one this
    /// build does not know (said at WARN).
    async fn company_tz(&self) -> Result<chrono_tz::Tz, Failure> {
        let mut cached = self.company_tz.lock().await;
        if let Some(tz) = *cached {
            return Ok(tz);
        }
        let company = self.rpc.context().await?["company"].clone();
        let rows = self
            .search_read(
                "company.company",
                json!([["id", "=", company]]),
                &["timezone"],
                Some(1),
            )
            .await?;
        let named = rows
            .first()
            .and_then(|r| r["timezone"].as_str())
            .filter(|t| !t.is_empty());
        let tz = match named.map(|t| (t, t.parse::<chrono_tz::Tz>())) {
            Some((_, Ok(tz))) => tz,
            Some((t, Err(_))) => {
                tracing::warn!(erp = %self.rpc.base, timezone = t, "the Tryton company's time zone is unknown to ordersync; sale dates are UTC dates");
                chrono_tz::UTC
            }
            None => chrono_tz::UTC,
        };
        *cached = Some(tz);
        Ok(tz)
    }

    /// Id of the record whose `code` is `code` (countries, currencies), cached.
    async fn id_by_code(&self, model: &str, code: &str) -> Result<Option<i64>, Failure> {
        let cache_key = format!("{model}:{code}");
        if let Some(id) = self.ids.lock().await.get(&cache_key) {
            return Ok(Some(*id));
        }
        let found = self
            .search(model, json!([["code", "=", code]]), Some(1))
            .await?
            .first()
            .copied();
        if let Some(id) = found {
            self.ids.lock().await.insert(cache_key, id);
        }
        Ok(found)
    }
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// The sale number, or `draft #<id>` before Tryton assigns one at quote.
fn sale_label(row: &Value) -> String {
    match row["number"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("draft #{}", row["id"]),
    }
}
