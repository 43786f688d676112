//! Retailys write-backs. Each reads the order first, so a repeat after a
//! crash changes nothing, except the ERP-number history record, which the API
//! cannot read back: its progress is kept in the job row (see
//! `write_accepted`).

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

/// Progress markers of the accepted write-back, kept in the job row: the
/// history record is due (set before the status PATCH), its POST went out
/// (set before it is sent), it was answered.
const HISTORY_DUE: &str = "history due";
const HISTORY_SENDING: &str = "history sending";
const HISTORY_WRITTEN: &str = "history written";

impl Retailys {
    /// The status PATCH to `processing_status`, then the ERP number as a
    /// history record (type `apps`). The API has no way to read an order's
    /// history back (no endpoint, no field in `OrderModel`), so the job row
    /// carries the proof instead: "due" is stored before the PATCH, "sending"
    /// before the POST. A run killed anywhere before the POST goes out finds
    /// "due" and writes the record once; one that finds "sending" does not
    /// repeat it. Residual window: the process dies while the POST is in
    /// flight, or its connection breaks after sending; then the record may be
    /// missing (never doubled) and the ERP number is in the ledger
    /// (`orders show`). An order already in that status when we first write
    /// back (moved by someone else) gets no record.
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
        let step = wb.step.get();
        let posted = matches!(step.as_deref(), Some(HISTORY_SENDING | HISTORY_WRITTEN));
        let mut done = Vec::new();
        // Once the record went out, our PATCH is behind us: a status the
        // shop set since is the shop's.
        if !ours && !posted {
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
            if step.is_none() {
                wb.step.set(Some(HISTORY_DUE)).await?;
            }
            let url = self.order_url(&wb.external_id, "/status")?;
            let body = json!({ "status_id": table.processing });
            self.send(|| self.endpoint.client().patch(&url).json(&body))
                .await?;
            done.push(format!("status {}", table.name(table.processing)));
        }
        match step.as_deref() {
            None if ours => {
                return Ok(format!(
                    "already in status {} before our write-back; no ERP-number record",
                    table.name(status.unwrap_or_default())
                ));
            }
            None | Some(HISTORY_DUE) => {}
            Some(HISTORY_SENDING) => {
                done.push("history record sent by an earlier attempt whose answer was lost (not repeated)".into());
                return Ok(done.join("; "));
            }
            Some(_) => {
                done.push("history record already written".into());
                return Ok(done.join("; "));
            }
        }
        let url = self.order_url(&wb.external_id, "/history")?;
        let body = json!({
            "type": "apps",
            "record": {"name": "ERP order number", "status": wb.erp_order_number},
        });
        wb.step.set(Some(HISTORY_SENDING)).await?;
        match self
            .send(|| self.endpoint.client().post(&url).json(&body))
            .await
        {
            Ok(_) => {
                // The job finishes next; should that be lost, "sending"
                // already keeps the record from being repeated.
                let _ = wb.step.set(Some(HISTORY_WRITTEN)).await;
                done.push(format!("history record ERP {}", wb.erp_order_number));
            }
            // The server answered, or no connection was made: not written,
            // safe to try again.
            Err(f) if f.status().is_some() || f.message().contains("could not connect") => {
                wb.step.set(Some(HISTORY_DUE)).await?;
                return Err(f);
            }
            Err(f) => {
                tracing::warn!(source = %self.name, order_key = %wb.order_key, error = %f, "the ERP-number history record may not have been written; not repeated, so it is never doubled");
                done.push("history record outcome unknown (not repeated)".into());
            }
        }
        Ok(done.join("; "))
    }

    /// A sale cancelled in the ERP: the status `cancelled_status`, read
    /// first (always: the order may have been cancelled, completed or sent at
    /// the shop since). Without `cancelled_status` nothing is written: the job
    /// parks, naming the key, for the operator to cancel it by hand.
    pub async fn write_cancelled(&self, wb: &WriteBack) -> Result<String, Failure> {
        let table = self.statuses().await?;
        let Some(cancelled) = table.cancelled else {
            return Err(Failure::permanent(format!(
                "ERP order {} was cancelled; {}.cancelled_status is not set, so it is not written back: cancel order {} at Retailys by hand",
                wb.erp_order_number, self.key, wb.external_id
            )));
        };
        let current = self.get_order(&wb.external_id).await?;
        let status = map::status_id(&current);
        if status == Some(cancelled) || current["canceled"].as_bool() == Some(true) {
            return Ok("already cancelled at the shop".into());
        }
        if current["sent"].as_bool() == Some(true)
            || status
                .and_then(|s| table.get(s))
                .is_some_and(|s| s.complete_order)
        {
            return Err(Failure::permanent(format!(
                "order {} is {} at the shop (sent or complete): not moved to {}; ERP order {} was cancelled, settle it by hand",
                wb.external_id,
                table.name(status.unwrap_or_default()),
                table.name(cancelled),
                wb.erp_order_number
            )));
        }
        let url = self.order_url(&wb.external_id, "/status")?;
        let body = json!({ "status_id": cancelled });
        self.send(|| self.endpoint.client().patch(&url).json(&body))
            .await?;
        Ok(format!("status {}", table.name(cancelled)))
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
        if !wb.progress.completes_order {
            // Every shipment's tracking number is added as it ships; `sent`
            // and the shipped status wait for the last line.
            done.push("partial shipment: sent waits for the last line".to_string());
            return Ok(done.join("; "));
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
