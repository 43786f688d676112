//! Retailys write-backs. Each reads the order first, so a repeat after a
//! crash changes nothing, except the ERP-number history record, which the API
//! cannot read back: it is written at most once (see `write_accepted`).

use serde::Deserialize;
use serde_json::json;

use super::{Retailys, map};
use crate::http::Failure;
use crate::sources::WriteBack;
use crate::store::ErpShipment;

#[derive(Deserialize)]
struct Shipping {
    id: i64,
    #[serde(default)]
    name: String,
}

/// The first page (250) only: a shop has a handful of shippings.
#[derive(Deserialize)]
struct ShippingsPage {
    #[serde(default)]
    shippings: Vec<Shipping>,
}

impl Retailys {
    /// The status PATCH to `processing_status`, then the ERP number as a
    /// history record (type `apps`). The API cannot read history back, so the
    /// record is written at most once: the status is its marker (an order
    /// already in that status gets no record), and between the PATCH and the
    /// POST this process remembers the record is due. Residual window: the
    /// process dies while the PATCH or the POST is in flight, or the POST's
    /// connection breaks after sending; then the record is missing (never
    /// doubled) and the ERP number is only in the ledger (`orders show`).
    pub async fn write_accepted(&self, wb: &WriteBack) -> Result<String, Failure> {
        let table = self.statuses().await?;
        let current = self.get_order(&wb.external_id).await?;
        if current["canceled"].as_bool() == Some(true) {
            return Err(Failure::permanent(format!(
                "order was cancelled at Retailys after the push: cancel ERP order {} by hand",
                wb.erp_order_number
            )));
        }
        let status = map::status_id(&current);
        let ours =
            status == Some(table.processing) || (status.is_some() && status == table.shipped);
        let due = self.history_due(&wb.order_key, None);
        let mut done = Vec::new();
        if !ours {
            if status
                .and_then(|s| table.get(s))
                .is_some_and(|s| s.complete_order)
            {
                // Never move an order the shop has completed back to processing.
                return Ok(format!(
                    "order is already {:?} at the shop; status and ERP-number record left alone",
                    table.name(status.unwrap_or_default())
                ));
            }
            let url = self.order_url(&wb.external_id, "/status")?;
            let body = json!({ "status_id": table.processing });
            self.send(|| self.endpoint.client().patch(&url).json(&body))
                .await?;
            self.history_due(&wb.order_key, Some(true));
            done.push(format!("status {}", table.name(table.processing)));
        } else if !due {
            return Ok(format!(
                "already written (status {})",
                table.name(status.unwrap_or_default())
            ));
        }
        let url = self.order_url(&wb.external_id, "/history")?;
        let body = json!({
            "type": "apps",
            "record": {"name": "ERP order number", "status": wb.erp_order_number},
        });
        match self
            .send(|| self.endpoint.client().post(&url).json(&body))
            .await
        {
            Ok(_) => {
                self.history_due(&wb.order_key, Some(false));
                done.push(format!("history record ERP {}", wb.erp_order_number));
            }
            // The server answered, or no connection was made: not written,
            // safe to try again.
            Err(f) if f.status().is_some() || f.message().contains("could not connect") => {
                return Err(f);
            }
            Err(f) => {
                self.history_due(&wb.order_key, Some(false));
                tracing::warn!(source = %self.name, order_key = %wb.order_key, error = %f, "the ERP-number history record may not have been written; not repeated, so it is never doubled");
                done.push("history record outcome unknown (not repeated)".into());
            }
        }
        Ok(done.join("; "))
    }

    /// Whether the ERP-number record of an order is due; `set` changes it.
    fn history_due(&self, order_key: &str, set: Option<bool>) -> bool {
        let mut due = self.history_due.lock().unwrap_or_else(|e| e.into_inner());
        match set {
            Some(true) => due.insert(order_key.to_string()),
            Some(false) => due.remove(order_key),
            None => due.contains(order_key),
        }
    }

    /// Tracking (unless the order already lists that number), `sent`, and the
    /// shipped status if configured; each step reads before it writes.
    pub async fn write_shipped(
        &self,
        wb: &WriteBack,
        shipment: &ErpShipment,
    ) -> Result<String, Failure> {
        let table = self.statuses().await?;
        let current = self.get_order(&wb.external_id).await?;
        let mut done = Vec::new();
        if let Some(number) = shipment.tracking_number.as_deref() {
            let known = current["trackings"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["tracking_number"].as_str() == Some(number))
            });
            if !known {
                let shipper_id = self.shipper_for(shipment.carrier.as_deref()).await?;
                let url = self.order_url(&wb.external_id, "/tracking")?;
                let body = json!({"shipper_id": shipper_id, "tracking_number": number});
                self.send(|| self.endpoint.client().post(&url).json(&body))
                    .await?;
                done.push(format!("tracking {number}"));
            }
        }
        if current["sent"].as_bool() != Some(true) {
            let url = self.order_url(&wb.external_id, "/sent")?;
            self.send(|| self.endpoint.client().patch(&url)).await?;
            done.push("sent".to_string());
        }
        if let Some(shipped) = table.shipped
            && map::status_id(&current) != Some(shipped)
        {
            let url = self.order_url(&wb.external_id, "/status")?;
            let body = json!({ "status_id": shipped });
            self.send(|| self.endpoint.client().patch(&url).json(&body))
                .await?;
            done.push(format!("status {}", table.name(shipped)));
        }
        Ok(if done.is_empty() {
            "already written".into()
        } else {
            done.join("; ")
        })
    }

    /// `shipper_id` from config, else the shop's shipping whose name is the
    /// ERP's carrier name (case-insensitive).
    async fn shipper_for(&self, carrier: Option<&str>) -> Result<i64, Failure> {
        if let Some(id) = self.shipper_id {
            return Ok(id);
        }
        let Some(carrier) = carrier else {
            return Err(Failure::permanent(format!(
                "the ERP shipment names no carrier and {}.shipper_id is not set",
                self.key
            )));
        };
        let mut cached = self.shippings.lock().await;
        if cached.is_none() {
            let url = self.url("/System/Channels/Shippings");
            let answer: ShippingsPage = self
                .send(|| {
                    self.endpoint
                        .client()
                        .get(&url)
                        .query(&[("per_page", "250")])
                })
                .await?
                .json()?;
            *cached = Some(
                answer
                    .shippings
                    .into_iter()
                    .map(|s| (s.id, s.name))
                    .collect(),
            );
        }
        let list = cached.as_deref().unwrap_or_default();
        list.iter()
            .find(|(_, n)| n.trim().eq_ignore_ascii_case(carrier.trim()))
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                let names: Vec<&str> = list.iter().map(|(_, n)| n.as_str()).collect();
                Failure::permanent(format!(
                    "carrier {carrier:?} matches none of the shop's shippings ({}); set {}.shipper_id",
                    names.join(", "),
                    self.key
                ))
            })
    }
}
