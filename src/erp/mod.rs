//! ERP adapters, chosen by `erp.kind`. Every adapter pushes idempotently
//! (it looks the order key up before it creates: guarantee 2), reports
//! shipments and cancelled sales since a cursor, and cancels a sale while
//! the ERP still allows it (a repeat of a done cancel is done).

pub mod http;
pub mod tryton;

use crate::config::{Config, ErpKind};
use crate::http::Failure;
use crate::store::{ErpAccepted, ErpCancellation, ErpShipment};

pub enum Erp {
    Http(http::HttpErp),
    Tryton(Box<tryton::TrytonErp>),
}

/// One page of shipments and the cursor after it.
pub struct ShipmentPage {
    pub shipments: Vec<ErpShipment>,
    pub next: String,
}

/// One page of cancelled sales and the cursor after it.
pub struct CancellationPage {
    pub cancellations: Vec<ErpCancellation>,
    pub next: String,
}

impl Erp {
    /// Builds the adapter; reads its secret now, so a missing secret stops
    /// startup with the key named.
    pub fn from_config(config: &Config) -> Result<Erp, crate::config::ConfigError> {
        match config.erp.kind {
            ErpKind::Http => Ok(Erp::Http(http::HttpErp::new(config)?)),
            ErpKind::Tryton => Ok(Erp::Tryton(Box::new(tryton::TrytonErp::new(config)?))),
        }
    }

    /// Pushes one canonical order; the same key twice gives the same answer.
    pub async fn push(
        &self,
        order_key: &str,
        canonical_json: &str,
    ) -> Result<ErpAccepted, Failure> {
        match self {
            Erp::Http(e) => e.push(order_key, canonical_json).await,
            Erp::Tryton(e) => e.push(order_key, canonical_json).await,
        }
    }

    pub async fn shipments(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ShipmentPage, Failure> {
        match self {
            Erp::Http(e) => e.shipments(after, limit).await,
            Erp::Tryton(e) => e.shipments(after, limit).await,
        }
    }

    /// Cancels the ERP's sale for this order key; done (Ok, with what was
    /// done) also when it is cancelled already. A permanent failure names
    /// why the ERP refuses (shipped, invoiced): the job parks and the order
    /// is flagged for an operator.
    pub async fn cancel(&self, order_key: &str, reason: &str) -> Result<String, Failure> {
        match self {
            Erp::Http(e) => e.cancel(order_key, reason).await,
            Erp::Tryton(e) => e.cancel(order_key).await,
        }
    }

    /// Sales cancelled in the ERP since a cursor (ours included: the ledger
    /// tells them apart).
    pub async fn cancellations(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<CancellationPage, Failure> {
        match self {
            Erp::Http(e) => e.cancellations(after, limit).await,
            Erp::Tryton(e) => e.cancellations(after, limit).await,
        }
    }

    /// Every ERP order carrying this order key (reconcile, operators).
    pub async fn orders_for_key(&self, order_key: &str) -> Result<Vec<String>, Failure> {
        match self {
            Erp::Http(e) => e.orders_for_key(order_key).await,
            Erp::Tryton(e) => e.orders_for_key(order_key).await,
        }
    }

    /// A harmless call that proves URL and credentials work (check-config).
    pub async fn check(&self) -> Result<String, Failure> {
        match self {
            Erp::Http(e) => e.check().await,
            Erp::Tryton(e) => e.check().await,
        }
    }
}
