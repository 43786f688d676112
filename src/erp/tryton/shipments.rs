//! Shipments: `stock.shipment.out` in state `done`, read by `write_date`
//! ([`super::feed`]). Each shipment carries the quantities of its outgoing
//! moves per sale line.

use serde_json::{Value, json};

use super::TrytonErp;
use super::feed::Feed;
use super::rpc::{parse_date, parse_decimal};
use crate::erp::ShipmentPage;
use crate::http::Failure;
use crate::store::{ErpShipment, ShippedLine};

/// Fields only some module sets have: asked for only when present.
const OPTIONAL: &[&str] = &["shipping_reference", "carrier"];

pub async fn shipments(
    erp: &TrytonErp,
    after: Option<&str>,
    limit: u32,
) -> Result<ShipmentPage, Failure> {
    let mut fields = vec![
        "number",
        "effective_date",
        "write_date",
        "reference",
        "outgoing_moves",
    ];
    let optional = optional_fields(erp).await?;
    if optional.iter().any(|f| f == "shipping_reference") {
        fields.push("shipping_reference");
    }
    if optional.iter().any(|f| f == "carrier") {
        fields.push("carrier.rec_name");
    }
    let mut feed = Feed::new(
        &erp.rpc,
        "shipments",
        "stock.shipment.out",
        json!(["state", "=", "done"]),
        fields,
        after,
        limit,
    )?;
    let mut shipments = Vec::new();
    while let Some(rows) = feed.next_page().await? {
        shipments.extend(shipments_of(erp, &rows).await?);
    }
    Ok(ShipmentPage {
        shipments,
        next: feed.cursor(),
    })
}

/// The shipments of one page with their sales and per-line quantities.
async fn shipments_of(erp: &TrytonErp, rows: &[Value]) -> Result<Vec<ErpShipment>, Failure> {
    let ids: Vec<i64> = rows.iter().filter_map(|r| r["id"].as_i64()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sales = erp
        .search_read(
            "sale.sale",
            json!([["shipments", "in", ids]]),
            &["number", "reference", "shipments"],
            None,
        )
        .await?;
    let move_ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| r["outgoing_moves"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m.as_i64())
        .collect();
    let moves = if move_ids.is_empty() {
        Vec::new()
    } else {
        erp.search_read(
            "stock.move",
            json!([["id", "in", move_ids]]),
            &["origin", "quantity"],
            None,
        )
        .await?
    };
    Ok(rows
        .iter()
        .filter_map(|r| to_shipment(r, &sales, &moves))
        .collect())
}

/// One done shipment as the ledger wants it, when a sale with a reference
/// (an order key) ships with it; shipments of sales made in Tryton by hand
/// have none of ours and are skipped. Its lines are its outgoing moves that
/// come from a sale line (the ERP line number ordersync recorded at the push).
fn to_shipment(row: &Value, sales: &[Value], moves: &[Value]) -> Option<ErpShipment> {
    let id = row["id"].as_i64()?;
    let sale = sales.iter().find(|s| {
        s["shipments"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_i64() == Some(id)))
    })?;
    let order_key = sale["reference"].as_str().filter(|r| !r.is_empty())?;
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let mine: Vec<i64> = row["outgoing_moves"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let mut lines: Vec<ShippedLine> = Vec::new();
    for m in moves
        .iter()
        .filter(|m| m["id"].as_i64().is_some_and(|i| mine.contains(&i)))
    {
        let Some(line) = m["origin"]
            .as_str()
            .and_then(|o| o.strip_prefix("sale.line,"))
        else {
            continue;
        };
        // A Float field: its number's own text, never through f64.
        let Some(quantity) = parse_decimal(&m["quantity"]) else {
            continue;
        };
        match lines
            .iter_mut()
            .find(|l| l.erp_line_number.as_deref() == Some(line))
        {
            Some(l) => l.quantity += quantity.normalize(),
            None => lines.push(ShippedLine {
                source_line_id: String::new(),
                quantity: quantity.normalize(),
                erp_line_number: Some(line.to_string()),
            }),
        }
    }
    Some(ErpShipment {
        order_key: order_key.to_string(),
        erp_order_number: text(&sale["number"]),
        // A date only in Tryton; as a timestamp it is stable across reads.
        shipped_at: parse_date(&row["effective_date"])
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc()),
        carrier: text(&row["carrier."]["rec_name"]),
        tracking_number: text(&row["shipping_reference"]).or_else(|| text(&row["reference"])),
        tracking_url: None,
        lines,
        erp_shipment_id: Some(format!("stock.shipment.out,{id}")),
    })
}

async fn optional_fields(erp: &TrytonErp) -> Result<Vec<String>, Failure> {
    let mut known = erp.shipment_fields.lock().await;
    if let Some(f) = known.as_ref() {
        return Ok(f.clone());
    }
    let described = erp
        .rpc
        .model("stock.shipment.out", "fields_get", vec![json!(OPTIONAL)])
        .await?;
    let present: Vec<String> = OPTIONAL
        .iter()
        .filter(|f| described.get(**f).is_some())
        .map(|f| f.to_string())
        .collect();
    *known = Some(present.clone());
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shipment's lines as (sale line, quantity text).
    fn lines_of(s: &ErpShipment) -> Vec<(Option<&str>, String)> {
        s.lines
            .iter()
            .map(|l| (l.erp_line_number.as_deref(), l.quantity.to_string()))
            .collect()
    }

    #[test]
    fn a_shipment_maps_to_its_sales_reference() {
        let row = json!({"id": 7, "number": "3", "shipping_reference": "3SABC", "outgoing_moves": [41, 42, 43],
            "reference": null, "carrier.": {"rec_name": "PostNL", "id": 1},
            "effective_date": {"__class__": "date", "year": 2026, "month": 11, "day": 22}});
        let sales = vec![
            json!({"id": 1, "number": "1", "reference": "other:1", "shipments": [6]}),
            json!({"id": 2, "number": "2", "reference": "webshop-nl:48193", "shipments": [5, 7]}),
        ];
        let moves = vec![
            json!({"id": 41, "origin": "sale.line,12", "quantity": 2.0}),
            json!({"id": 42, "origin": "sale.line,13", "quantity": 0.53}),
            json!({"id": 43, "origin": null, "quantity": 1.0}),
            json!({"id": 99, "origin": "sale.line,14", "quantity": 5.0}),
        ];
        let s = to_shipment(&row, &sales, &moves).unwrap();
        assert_eq!(s.erp_shipment_id.as_deref(), Some("stock.shipment.out,7"));
        let lines = lines_of(&s);
        assert_eq!(
            lines,
            vec![
                (Some("12"), "2".to_string()),
                (Some("13"), "0.53".to_string())
            ],
            "only this shipment's moves that come from a sale line"
        );
        assert_eq!(s.order_key, "webshop-nl:48193");
        assert_eq!(s.erp_order_number.as_deref(), Some("2"));
        assert_eq!(s.tracking_number.as_deref(), Some("3SABC"));
        assert_eq!(s.carrier.as_deref(), Some("PostNL"));
        assert_eq!(
            s.shipped_at.unwrap().to_rfc3339(),
            "2026-11-22T00:00:00+00:00"
        );
        // A shipment of a sale made by hand in Tryton: not ours.
        let manual = vec![json!({"id": 3, "number": "9", "reference": null, "shipments": [7]})];
        assert!(to_shipment(&row, &manual, &moves).is_none());
    }

    /// Quantities are read from the numbers' text and added as decimals: two
    /// moves of one sale line of 0.1 and 0.2 ship 0.3, not
    /// 0.3000000000000000444 (the line's quantity, or it never completes);
    /// a tagged Decimal counts too, and a number no decimal holds is left out.
    #[test]
    fn move_quantities_add_up_exactly() {
        let row = json!({"id": 7, "outgoing_moves": [1, 2, 3, 4]});
        let sales = vec![json!({"id": 2, "number": "2", "reference": "shop:1", "shipments": [7]})];
        let moves = vec![
            json!({"id": 1, "origin": "sale.line,12", "quantity": 0.1}),
            json!({"id": 2, "origin": "sale.line,12", "quantity": 0.2}),
            json!({"id": 3, "origin": "sale.line,13", "quantity": {"__class__": "Decimal", "decimal": "1.25"}}),
            json!({"id": 4, "origin": "sale.line,14", "quantity": 1e300}),
        ];
        let s = to_shipment(&row, &sales, &moves).unwrap();
        let lines = lines_of(&s);
        assert_eq!(
            lines,
            vec![
                (Some("12"), "0.3".to_string()),
                (Some("13"), "1.25".to_string())
            ]
        );
    }
}
