//! ERP adapters, chosen by `erp.kind`. Every adapter pushes idempotently
//! (it looks the order key up before it creates: guarantee 2) and reports
//! shipments since a cursor.

pub mod http;
pub mod tryton;

use crate::config::{Config, ErpKind};
use crate::http::Failure;
use crate::store::{ErpAccepted, ErpShipment};

pub enum Erp {
    Http(http::HttpErp),
    Tryton(Box<tryton::TrytonErp>),
}

/// One page of shipments and the cursor after it.
pub struct ShipmentPage {
    pub shipments: Vec<ErpShipment>,
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
