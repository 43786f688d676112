//! The documented example config (and the demo config) must parse.

use ordersync::config::{Config, SourceSettings};

#[test]
fn example_config_parses_and_documents_every_key() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ordersync.example.toml");
    let config = Config::load(&path).expect("config/ordersync.example.toml must parse");
    let Some(SourceSettings::CloudSuite(cs)) = config.sources.first().map(|s| &s.settings) else {
        panic!("the example's first source is the CloudSuite one");
    };
    assert_eq!(cs.timezone, chrono_tz::Europe::Amsterdam);
    assert!(
        config
            .sources
            .iter()
            .any(|s| matches!(s.settings, SourceSettings::Retailys(_))),
        "the example documents a retailys source"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    // Every key the loader accepts appears in the example (set or commented).
    for key in [
        "state_dir",
        "log_format",
        "shipments_schedule",
        "shutdown_grace",
        "request_timeout",
        "max_body_bytes",
        "max_attempts",
        "give_up_after",
        "retry_initial",
        "retry_max",
        "metrics_listen",
        "kind",
        "url",
        "token_file",
        "token_env",
        "max_in_flight",
        "tax_map",
        "batch_size",
        "user",
        "password_file",
        "confirm",
        "unknown_product",
        "password_env",
        "product_match",
        "name",
        "base_url",
        "schedule",
        "lookback",
        "lookback_every",
        "recheck_every",
        "page_size",
        "rate_limit_per_sec",
        "enabled",
        "token_url",
        "client_id",
        "client_secret_file",
        "client_secret_env",
        "api_token_file",
        "webshop",
        "payment_ok",
        "desadv",
        "desadv_shop",
        "desadv_user",
        "timezone",
        "domain_code",
        "system_login",
        "system_password_file",
        "system_password_env",
        "processing_status",
        "shipped_status",
        "country_map",
        "channel_id",
        "import_statuses",
        "shipper_id",
        "ident",
        "secret_file",
        "secret_env",
        "start",
        "write_reference",
        "auth_id",
        "api_token_env",
        "touch_on_import",
    ] {
        assert!(
            text.contains(&format!("{key} =")),
            "example config does not document {key}"
        );
    }
}

/// The example's commented `[ledger]` table, uncommented as documented,
/// parses to a PostgreSQL ledger with its password from a file, and is then
/// refused by every command until the daemon can use it.
#[test]
fn example_ledger_table_parses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ordersync.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::load(&path).unwrap();
    assert!(
        config.ledger.is_none(),
        "the example keeps the ledger in SQLite"
    );
    let mut uncommented = 0;
    let text: String = text
        .lines()
        .map(|l| {
            for key in [
                "[ledger]",
                "url = \"postgres://",
                "password_file = \"/run/credentials/ordersync.service/ledger",
            ] {
                if let Some(rest) = l.strip_prefix("# ").filter(|r| r.starts_with(key)) {
                    uncommented += 1;
                    return format!("{rest}\n");
                }
            }
            format!("{l}\n")
        })
        .collect();
    assert_eq!(
        uncommented, 3,
        "the example documents [ledger], url and password_file"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ordersync.toml");
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&file).expect("the example with [ledger] uncommented parses");
    let ledger = config.ledger.as_ref().expect("[ledger]");
    assert!(
        ledger.url.starts_with("postgres://ordersync@"),
        "{}",
        ledger.url
    );
    assert!(ledger.password.is_some());
}

/// The example's `erp.tax_map` line, as documented, gives a Tryton ERP the
/// map it shows.
#[test]
fn example_tax_map_parses_for_a_tryton_erp() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ordersync.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# tax_map = "))
        .expect("the example documents tax_map");
    let batch = text
        .lines()
        .find_map(|l| l.strip_prefix("# batch_size = "))
        .expect("the example documents batch_size");
    let tryton = text
        .replacen(
            "kind = \"http\"",
            &format!(
                "kind = \"tryton\"\nuser = \"ordersync\"\npassword_env = \"ORDERSYNC_ERP_PASSWORD\"\ntax_map = {line}\nbatch_size = {batch}"
            ),
            1,
        )
        .replacen(
            "token_file = \"/run/credentials/ordersync.service/erp-token\"\n",
            "",
            1,
        );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ordersync.toml");
    std::fs::write(&file, tryton).unwrap();
    let config = Config::load(&file).expect("the example with kind = tryton parses");
    assert_eq!(
        config.erp.tax_map,
        vec![
            (
                rust_decimal::Decimal::from(21),
                "NL 21% verkoop".to_string()
            ),
            (rust_decimal::Decimal::from(9), "NL 9% verkoop".to_string()),
        ]
    );
    // The documented batch size is the default, and the worker keeps
    // enough pushes in flight to fill the batches.
    assert_eq!(config.erp.batch_size, 20);
    assert_eq!(config.erp.push_slots(), 4 * 20);
}

/// The Tryton test master data (tests/tryton/products.json) is the sandbox
/// catalogue: a product the simulator sells but Tryton lacks would park orders.
#[test]
fn tryton_fixture_products_are_the_sandbox_catalogue() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tryton/products.json");
    let fixture: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let catalogue = ordersync::sandbox::catalog::products();
    assert_eq!(fixture.len(), catalogue.len());
    for (f, p) in fixture.iter().zip(catalogue) {
        assert_eq!(f["sku"], p.sku);
        assert_eq!(f["ean"], p.ean);
        assert_eq!(f["price"], p.price().to_string().as_str(), "{}", p.sku);
        assert_eq!(
            f["tax_rate"],
            p.tax_rate().to_string().as_str(),
            "{}",
            p.sku
        );
    }
}

#[test]
fn demo_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let config = Config::load(&path).expect("config/demo.toml must parse");
    assert_eq!(config.sources[0].name, "webshop-nl");
    assert!(
        config
            .sources
            .iter()
            .any(|s| matches!(s.settings, SourceSettings::Titelive(_))),
        "the demo shows the Titelive source too"
    );
}
