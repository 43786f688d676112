//! The handful of MplusQapi (`urn:mplusqapi`) types ordersync reads and
//! writes, written by hand from the WSDL rather than generated from all of it.
//! The same types serve the connector and the simulator, so both sides agree
//! on element names; every list wrapper (`<lineList><line>…`) is a struct
//! with a `Vec`, so a one-element list is still a list.
//!
//! Names are unprefixed: quick-xml's deserializer matches local names, so an
//! answer written with `ns1:` prefixes parses the same; requests declare
//! `urn:mplusqapi` as the default namespace on the operation element.

use serde::{Deserialize, Serialize};

pub const NAMESPACE: &str = "urn:mplusqapi";

/// `SoapMplusDate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoapDate {
    pub day: u32,
    pub mon: u32,
    pub year: i32,
}

/// `SoapMplusDateTime`. `timezone` is read as the UTC offset in minutes
/// (a community client's reading; the vendor text does not say).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoapDateTime {
    pub sec: u32,
    pub min: u32,
    pub hour: u32,
    pub day: u32,
    pub mon: u32,
    pub year: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isdst: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct YearNumber {
    pub year: i32,
    pub number: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
}

/// `LineData`: prices in cents, quantities scaled by `decimalPlaces`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineData {
    pub quantity: i64,
    #[serde(default)]
    pub decimal_places: u32,
    #[serde(default)]
    pub delivered_quantity: i64,
    #[serde(default)]
    pub delivered_decimal_places: u32,
    #[serde(default)]
    pub cancelled_quantity: i64,
    #[serde(default)]
    pub cancelled_decimal_places: u32,
    /// Unit price in cents, including VAT under VAT-METHOD-INCLUSIVE.
    pub price: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_excl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_code: Option<i64>,
    /// Whole percent (21); the scale is not documented (assumption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_percentage: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_incl_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_excl_amount: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LineList {
    #[serde(default)]
    pub line: Vec<Line>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub line_id: String,
    pub article_number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plu_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `LINE-TYPE-NONE|PREPARATION|COMPONENT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_type: Option<String>,
    pub data: LineData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparation_list: Option<LineList>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_order_id: Option<String>,
    pub sync_marker: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_branch_number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_timestamp: Option<SoapDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub financial_date: Option<SoapDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub total_incl_amount: i64,
    pub total_excl_amount: i64,
    /// `VAT-METHOD-INCLUSIVE|EXCLUSIVE|SHIFTED|NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub change_counter: i64,
    #[serde(default)]
    pub version_number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepaid_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fully_paid: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_number: Option<YearNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_category_number: Option<i64>,
    #[serde(default)]
    pub line_list: LineList,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderList {
    #[serde(default)]
    pub order: Vec<Order>,
}

/// An element the XSD requires but that may be empty (`<articleBarcodes/>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

// --- requests ------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOrdersRequest {
    pub sync_marker: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_marker_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_financial_date: Option<SoapDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through_financial_date: Option<SoapDate>,
    /// Required by the XSD even when empty; the simulator checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article_plu_numbers: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article_barcodes: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_line_list: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetOrders {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub request: GetOrdersRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOrder {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub order_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetCurrentSyncMarkersV2 {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
}

/// `updateOrder`, as the simulator reads it (the connector writes this
/// request from the order XML it just read, see `soap::update_order_body`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateOrder {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub order: Order,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryLine {
    pub line_id: String,
    pub quantity: i64,
    pub decimal_places: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryLineList {
    #[serde(default)]
    pub line: Vec<DeliveryLine>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDelivery {
    pub order_id: String,
    pub line_list: DeliveryLineList,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverOrderV2 {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub order_delivery: OrderDelivery,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverOrderRequest {
    pub order_id: String,
}

/// `cancelOrder`: the whole order, by `orderId` (the optional
/// `request{branchNumber}` is left out).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOrder {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub order_id: String,
}

/// `cancelOrder`'s answer: `result` (`CANCEL-ORDER-RESULT-OK|FAILED|
/// NOT-FOUND|PENDING|ALREADY-CANCELLED|UNDO-CANCEL-OK`) and `message`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CancelOrderResponse {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliverOrder {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub request: DeliverOrderRequest,
}

// --- answers -------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOrdersResponse {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    #[serde(default)]
    pub order_list: OrderList,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetOrderResponse {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    /// `GET-ORDER-RESULT-OK|NOT-FOUND`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetCurrentSyncMarkersV2Response {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub order_sync_marker: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing_slip_sync_marker: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_sync_marker: Option<i64>,
}

/// The answer of updateOrder, deliverOrder and deliverOrderV2: a `result`
/// enum in an HTTP 200, plus an optional message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultResponse {
    #[serde(rename = "@xmlns", default)]
    pub xmlns: String,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing_slip_id: Option<String>,
}

/// A SOAP 1.1 fault.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub faultcode: String,
    pub faultstring: String,
}
