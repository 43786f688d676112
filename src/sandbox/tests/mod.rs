//! End-to-end tests of the simulators over real HTTP (reqwest against servers
//! on port 0). They live inside the module so they travel with `src/sandbox/`.

mod cloudsuite_http;
mod erp_http;
mod faults_http;
mod latency_http;
mod titelive_http;
mod vinou_http;

use serde_json::Value;

use super::cloudsuite::CloudSuiteOptions;
use super::erp_http::ErpOptions;
use super::{Sandbox, SandboxOptions};

pub(super) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

pub(super) async fn start(cloudsuite: CloudSuiteOptions, erp: ErpOptions) -> Sandbox {
    Sandbox::start(SandboxOptions {
        cloudsuite,
        erp,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

pub(super) async fn access_token(sb: &Sandbox, c: &reqwest::Client) -> String {
    let opts = sb.cloudsuite.options();
    let resp = c
        .post(&sb.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", opts.client_id.as_str()),
            ("client_secret", opts.client_secret.as_str()),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// A minimal valid canonical order for the ERP.
pub(super) fn canonical_order(key: &str) -> Value {
    serde_json::json!({
        "order_key": key, "source": "webshop-nl", "source_kind": "cloudsuite",
        "external_id": "48193", "reference": "CS48193",
        "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR", "prices_include_tax": false,
        "customer": {"name": "Jan de Vries", "email": "jan.devries@example.nl", "source_customer_id": "1324"},
        "billing_address": {"name": "Jan de Vries", "street": "Keizersgracht 12A", "postcode": "1015 CJ", "city": "Amsterdam", "country": "NL"},
        "shipping_address": {"name": "Jan de Vries", "street": "Keizersgracht 12A", "postcode": "1015 CJ", "city": "Amsterdam", "country": "NL"},
        "lines": [
            {"source_line_id": "11", "sku": "124_STUK", "ean": "9789462500877", "description": "Vakboek",
             "quantity": "2", "unit_price": "19.99", "tax_rate": "9", "line_total": "39.98"},
            {"source_line_id": "12", "sku": "301_KG", "quantity": "0.530", "unit_price": "24.50", "tax_rate": "9", "line_total": "12.99"}
        ],
        "shipping": {"method": "PostNL", "amount": "4.95"},
        "discounts": [{"description": "Kortingscode ZOMER", "amount": "5.00"}],
        "totals": {"net": "52.92", "tax": "4.38", "gross": "57.30"},
        "payment": {"method": "ideal", "status": "paid"}
    })
}
