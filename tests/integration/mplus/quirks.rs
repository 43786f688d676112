//! The simulator's documented quirks over plain HTTP, and the example
//! config's mplus block.

use super::*;

#[test]
fn the_example_mplus_source_parses_when_uncommented() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ordersync.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let block: String = text
        .lines()
        .skip_while(|l| *l != "# BEGIN mplus")
        .skip(1)
        .take_while(|l| *l != "# END mplus")
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    assert!(block.contains("kind = \"mplus\""), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, format!("{text}\n{block}")).unwrap();
    let config = Config::load(&p).expect("example with the mplus source parses");
    let till = config
        .sources
        .iter()
        .find(|s| s.kind.as_str() == "mplus")
        .expect("the uncommented mplus source");
    let ordersync::config::SourceSettings::Mplus(m) = &till.settings else {
        panic!("not mplus");
    };
    assert!(m.write_reference);
    assert_eq!(m.start, ordersync::config::MplusStart::Beginning);
    let country = |v| till.country_map.iso("country", Some(v)).unwrap();
    assert_eq!(country(" nederland").as_deref(), Some("NL"));
    assert_eq!(country("FR").as_deref(), Some("FR"));
}

/// The simulator itself, over plain HTTP: the quirks the connector relies on.
#[tokio::test]
async fn the_simulator_behaves_like_the_documented_api() {
    ordersync::http::install_crypto();
    let sb = Sandbox::start(options()).await.unwrap();
    sb.mplus.seed_orders(30);
    let client = reqwest::Client::new();
    let url = |secret: &str| format!("{}/?ident=ordersync&secret={secret}", sb.mplus_url);
    let secret = sb.mplus.options().secret.clone();
    // A plain GET is 405 (the liveness check of the old PHP client).
    let r = client.get(url(&secret)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let get_orders = |marker: i64, limit: u32, empties: bool| {
        let extra = if empties {
            "<articlePluNumbers/><articleBarcodes/>"
        } else {
            ""
        };
        format!(
            r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:mplusqapi"><SOAP-ENV:Body><urn:getOrders><urn:request><urn:syncMarker>{marker}</urn:syncMarker><urn:syncMarkerLimit>{limit}</urn:syncMarkerLimit>{extra}</urn:request></urn:getOrders></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        )
    };
    let post = |secret: String, body: String| {
        let client = client.clone();
        let u = url(&secret);
        async move {
            let r = client
                .post(u)
                .header("SOAPAction", "getOrders")
                .header("Content-Type", "text/xml; charset=utf-8")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = post("nope".into(), get_orders(1, 5, true)).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("faultcode") && body.contains("Authentication failed"),
        "{body}"
    );
    let (status, body) = post(secret.clone(), get_orders(1, 5, false)).await;
    assert_eq!(status, 500);
    assert!(body.contains("articlePluNumbers"), "{body}");
    // The limit is honoured, the batch holds the lowest markers from the
    // inclusive bound, and it comes unsorted.
    let mut sorted_every_time = true;
    for _ in 0..3 {
        let (status, body) = post(secret.clone(), get_orders(3, 5, true)).await;
        assert_eq!(status, 200, "{body}");
        let ordersync::sources::mplus::Batch { orders, max, .. } =
            ordersync::sources::mplus::parse_orders("t", &body).unwrap();
        let markers: Vec<i64> = orders
            .iter()
            .map(|o| o.version.as_deref().unwrap().parse().unwrap())
            .collect();
        let mut s = markers.clone();
        s.sort();
        assert_eq!(s, vec![3, 4, 5, 6, 7]);
        assert_eq!(max, 7);
        sorted_every_time &= s == markers;
    }
    assert!(!sorted_every_time, "the simulator always answered sorted");
    sb.shutdown().await;
}

/// `SoapMplusDateTime.timezone`'s unit is inference (minutes in the
/// community client, seconds in C's `tm_gmtoff`). A till that counts
/// seconds had every order parked ("timezone 7200 is out of range"); both
/// units now place the order at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_giving_its_timezone_in_seconds_places_orders_right() {
    for in_seconds in [false, true] {
        let mut o = options();
        o.mplus.timezone_in_seconds = in_seconds;
        let app = spawn_mplus(o, "", 25).await;
        let before = chrono::Utc::now();
        let ids = app.sandbox.mplus.seed_orders(5);
        let after = chrono::Utc::now();
        let engine = app.engine();
        app.sync(&engine).await;
        assert_till_converged(&app, &ids);
        for id in &ids {
            let sent = &app.sandbox.erp.erp_orders_for(&key(id))[0].body;
            let at: chrono::DateTime<chrono::Utc> = sent["ordered_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("order {id}: ordered_at {}", sent["ordered_at"]));
            // The till's clock has whole seconds.
            assert!(
                at >= before - chrono::Duration::seconds(1) && at <= after,
                "order {id} (timezone in seconds: {in_seconds}): {at} not in {before}..{after}"
            );
        }
    }
}

/// `Address.country` is a free string: a Dutch till may hold "Nederland".
/// Without a `country_map` entry the order is parked naming the value and
/// the key to add; once the entry is there (a restart with the new config),
/// the recheck round reads the parked orders again and each is pushed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_country_name_parks_until_the_country_map_has_it_then_pushes_once() {
    let mut o = options();
    o.mplus.country_names = true;
    let app = spawn_mplus(o, "recheck_every = \"0s\"", 25).await;
    let ids = app.sandbox.mplus.seed_orders(4);
    let engine = app.engine();
    app.sync_until(&engine, &ids, false).await;
    for id in &ids {
        assert_eq!(app.state(id), "invalid", "{id}");
        assert!(app.sandbox.erp.erp_orders_for(&key(id)).is_empty(), "{id}");
        let d = engine.store.order_detail(&key(id)).unwrap().unwrap();
        let reason = d.jobs[0].parked_reason.clone().unwrap_or_default();
        assert!(
            reason.contains("invoiceAddress.country \"Nederland\"")
                && reason.contains("sources[0].country_map"),
            "{id}: {reason}"
        );
    }
    drop(engine);
    // The operator adds the entry and restarts.
    let mut config = app.config.clone();
    config.sources[0].country_map = ordersync::model::CountryMap::new(
        "sources[0].country_map".into(),
        [("nederland".to_string(), "NL".to_string())].into(),
    )
    .unwrap();
    let store = Arc::new(Store::open(&app.db_path()).unwrap());
    let engine = ordersync::daemon::build_engine(&config, store).unwrap();
    app.sync(&engine).await;
    assert_till_converged(&app, &ids);
    for id in &ids {
        let sent = &app.sandbox.erp.erp_orders_for(&key(id))[0].body;
        assert_eq!(sent["billing_address"]["country"], "NL", "{id}");
    }
    // Another round reads nothing new into the ERP.
    app.sync(&engine).await;
    for id in &ids {
        assert_eq!(app.sandbox.erp.post_requests(&key(id)), 1, "{id}");
    }
}
