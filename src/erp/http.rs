//! The `http` ERP contract (SPEC §3, docs/erp-http-contract.md): POST the
//! canonical order with `Idempotency-Key`, page shipments and cancellations
//! with `after`/`next`, cancel with `POST /orders/cancel`.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;

use super::{CancellationPage, ShipmentPage};
use crate::config::{Config, ConfigError};
use crate::http::{Endpoint, Failure};
use crate::secret::Secret;
use crate::store::{ErpAccepted, ErpCancellation, ErpShipment, LineNumber};

pub struct HttpErp {
    base: String,
    token: Secret,
    endpoint: Endpoint,
    /// Whether the "no cancellations feed" line was logged (once a run).
    said_no_feed: std::sync::atomic::AtomicBool,
}

#[derive(Deserialize)]
struct PushAnswer {
    erp_order_number: String,
    #[serde(default)]
    lines: Vec<PushLine>,
}

#[derive(Deserialize)]
struct PushLine {
    source_line_id: String,
    erp_line_number: serde_json::Value,
}

/// The order's source line ids that an answer's `lines` leave out, `None`
/// when it has them all. The common case (an answer with every line) is
/// decided on the text: as many of the answer's ids found in the order as
/// it has lines. Anything else reads the order's lines to name them.
fn missing_lines(canonical_json: &str, lines: &[LineNumber]) -> Option<Vec<String>> {
    let listed = canonical_json.matches("\"source_line_id\"").count();
    let found: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l.source_line_id.as_str())
        .filter(|id| canonical_json.contains(&format!("\"source_line_id\":\"{id}\"")))
        .collect();
    if found.len() >= listed {
        return None;
    }
    #[derive(Deserialize)]
    struct Lines {
        lines: Vec<LineId>,
    }
    #[derive(Deserialize)]
    struct LineId {
        source_line_id: String,
    }
    let order: Lines = serde_json::from_str(canonical_json).ok()?;
    let missing: Vec<String> = order
        .lines
        .into_iter()
        .map(|l| l.source_line_id)
        .filter(|id| !lines.iter().any(|l| &l.source_line_id == id))
        .collect();
    (!missing.is_empty()).then_some(missing)
}

#[derive(Deserialize)]
struct ShipmentsAnswer {
    shipments: Vec<ErpShipment>,
    next: String,
}

#[derive(Deserialize)]
struct CancellationsAnswer {
    cancellations: Vec<ErpCancellation>,
    next: String,
}

#[derive(Deserialize)]
struct CancelAnswer {
    #[serde(default)]
    cancelled: bool,
}

#[derive(Deserialize)]
struct OrdersAnswer {
    orders: Vec<OrdersItem>,
}

#[derive(Deserialize)]
struct OrdersItem {
    erp_order_number: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

impl HttpErp {
    pub fn new(config: &Config) -> Result<HttpErp, ConfigError> {
        let token = config.erp.credential.load("erp.token")?;
        let endpoint = Endpoint::for_erp(config)?;
        Ok(HttpErp {
            base: config.erp.url.trim_end_matches('/').to_string(),
            token,
            endpoint,
            said_no_feed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose())
    }

    pub async fn push(
        &self,
        order_key: &str,
        canonical_json: &str,
    ) -> Result<ErpAccepted, Failure> {
        let req = self
            .endpoint
            .client()
            .post(format!("{}/orders", self.base))
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", crate::http::header_safe(order_key))
            .body(canonical_json.to_string());
        let reply = match self.endpoint.send(req).await {
            Ok(r) => r,
            Err(Failure::Permanent {
                message,
                status: Some(s),
            }) if s == 409 || s == 422 => {
                return Err(Failure::Permanent {
                    message: format!(
                        "the ERP refused the order ({s}): {}",
                        refusal_text(&message)
                    ),
                    status: Some(s),
                });
            }
            Err(e) => return Err(e),
        };
        let answer: PushAnswer = reply.json()?;
        if answer.erp_order_number.is_empty() {
            return Err(Failure::retry(format!(
                "{} answered without an erp_order_number",
                reply.what
            )));
        }
        let accepted = ErpAccepted {
            // 201: created now; 200: the ERP had this key already.
            created: reply.status == 201,
            erp_order_number: answer.erp_order_number,
            lines: answer
                .lines
                .into_iter()
                .map(|l| LineNumber {
                    source_line_id: l.source_line_id,
                    erp_line_number: match l.erp_line_number {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    },
                })
                .collect(),
        };
        // The contract gives every line its number. The order is in the
        // ERP either way; an answer short of lines is said at once, not
        // first found when a DESADV for the missing lines is parked.
        if let Some(missing) = missing_lines(canonical_json, &accepted.lines) {
            tracing::warn!(
                order_key,
                erp_order_number = %accepted.erp_order_number,
                missing = %missing.join(", "),
                "the ERP's answer gives no erp_line_number for these source lines; the http contract wants one per line, and write-backs that need them (CloudSuite's line numbers, DESADV) will lack them"
            );
        }
        Ok(accepted)
    }

    pub async fn shipments(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ShipmentPage, Failure> {
        let mut req = self
            .endpoint
            .client()
            .get(format!("{}/shipments", self.base))
            .header(AUTHORIZATION, self.bearer())
            .query(&[("limit", limit.to_string())]);
        if let Some(after) = after {
            req = req.query(&[("after", after)]);
        }
        let answer: ShipmentsAnswer = self.endpoint.send(req).await?.json()?;
        Ok(ShipmentPage {
            shipments: answer.shipments,
            next: answer.next,
        })
    }

    /// `POST {url}/orders/cancel`: 200 cancelled (also a repeat), 409 too
    /// late (permanent, with the ERP's `error`).
    pub async fn cancel(&self, order_key: &str, reason: &str) -> Result<String, Failure> {
        let body = serde_json::json!({"order_key": order_key, "reason": reason});
        let req = self
            .endpoint
            .client()
            .post(format!("{}/orders/cancel", self.base))
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let reply = match self.endpoint.send(req).await {
            Ok(r) => r,
            Err(Failure::Permanent {
                message,
                status: Some(s),
            }) if s == 409 || s == 404 || s == 422 => {
                return Err(Failure::Permanent {
                    message: format!(
                        "the ERP refuses to cancel the order ({s}): {}; cancel or credit it in the ERP by hand",
                        refusal_text(&message)
                    ),
                    status: Some(s),
                });
            }
            Err(e) => return Err(e),
        };
        let answer: CancelAnswer = reply.json()?;
        if !answer.cancelled {
            return Err(Failure::retry(format!(
                "{} answered 200 without \"cancelled\": true",
                reply.what
            )));
        }
        Ok("cancelled in the ERP".into())
    }

    pub async fn cancellations(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<CancellationPage, Failure> {
        let mut req = self
            .endpoint
            .client()
            .get(format!("{}/cancellations", self.base))
            .header(AUTHORIZATION, self.bearer())
            .query(&[("limit", limit.to_string())]);
        if let Some(after) = after.filter(|a| !a.is_empty()) {
            req = req.query(&[("after", after)]);
        }
        let reply = match self.endpoint.send(req).await {
            Ok(reply) => reply,
            // The feed goes beyond SPEC §3's four endpoints: an ERP that
            // serves only those answers 404. Nothing to read, said once.
            Err(f) if f.status() == Some(404) => {
                if !self
                    .said_no_feed
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!(url = %format!("{}/cancellations", self.base), "the ERP serves no cancellations feed (404): sales cancelled in the ERP are not written back to the sources (docs/erp-http-contract.md)");
                }
                return Ok(CancellationPage {
                    cancellations: Vec::new(),
                    next: after.unwrap_or_default().to_string(),
                });
            }
            Err(f) => return Err(f),
        };
        let answer: CancellationsAnswer = reply.json()?;
        Ok(CancellationPage {
            cancellations: answer.cancellations,
            next: answer.next,
        })
    }

    pub async fn orders_for_key(&self, order_key: &str) -> Result<Vec<String>, Failure> {
        let req = self
            .endpoint
            .client()
            .get(format!("{}/orders", self.base))
            .header(AUTHORIZATION, self.bearer())
            .query(&[("order_key", order_key)]);
        let answer: OrdersAnswer = self.endpoint.send(req).await?.json()?;
        Ok(answer
            .orders
            .into_iter()
            .map(|o| o.erp_order_number)
            .collect())
    }

    pub async fn check(&self) -> Result<String, Failure> {
        let page = self.shipments(None, 1).await?;
        Ok(format!(
            "http ERP at {} answered; shipments cursor starts at {:?}",
            self.base, page.next
        ))
    }
}

/// The `error` text of a refusal body, else the whole message.
fn refusal_text(message: &str) -> String {
    message
        .split_once(": ")
        .and_then(|(_, body)| serde_json::from_str::<ErrorAnswer>(body).ok())
        .map(|e| e.error)
        .unwrap_or_else(|| message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(ids: &[&str]) -> Vec<LineNumber> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| LineNumber {
                source_line_id: id.to_string(),
                erp_line_number: ((i + 1) * 10).to_string(),
            })
            .collect()
    }

    #[test]
    fn an_answer_short_of_lines_names_the_ones_it_leaves_out() {
        let canonical = serde_json::json!({
            "order_key": "shop:1",
            "lines": [
                {"source_line_id": "11", "description": "says \"source_line_id\" in its text"},
                {"source_line_id": "12"},
                {"source_line_id": "13"}
            ]
        })
        .to_string();
        assert_eq!(
            missing_lines(&canonical, &numbers(&["11"])),
            Some(vec!["12".to_string(), "13".to_string()])
        );
        assert_eq!(
            missing_lines(&canonical, &numbers(&["13", "11", "12"])),
            None
        );
        // Every line, under other numbers: nothing is missing.
        assert_eq!(
            missing_lines(&canonical, &numbers(&["11", "12", "13", "14"])),
            None
        );
        // As many numbers as lines, but one for no line of the order, or
        // one line twice: the line left out is still named.
        assert_eq!(
            missing_lines(&canonical, &numbers(&["11", "12", "99"])),
            Some(vec!["13".to_string()])
        );
        assert_eq!(
            missing_lines(&canonical, &numbers(&["11", "11", "12"])),
            Some(vec!["13".to_string()])
        );
    }
}
