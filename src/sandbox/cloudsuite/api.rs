//! HTTP surface of the CloudSuite simulator: Keycloak token endpoint and the
//! DRF order endpoints, including DRF's limit/offset links, 301 on a missing
//! trailing slash, and its error shapes.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::{NaiveDate, NaiveDateTime};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use super::model::Order;
use super::{CloudSuiteSim, PatchAnswer, TOKEN_PATH, writes};
use crate::sandbox::faults::inject;
use crate::sandbox::{form_pairs, percent_decode};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn router(sim: CloudSuiteSim) -> Router {
    let faults = sim.inner.faults.clone();
    Router::new()
        .route(TOKEN_PATH, any(token))
        .route("/api/order/", any(list))
        .route("/api/order", any(append_slash))
        .route("/api/order/{id}/", any(detail))
        .route("/api/order/{id}", any(append_slash))
        .route("/proxy/des_adv_xml/delivery/", any(super::desadv::delivery))
        .route("/proxy/des_adv_xml/delivery", any(append_slash))
        .fallback(not_found)
        .layer(from_fn_with_state(faults, inject))
        .with_state(sim)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub(super) fn method_not_allowed(method: &Method) -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"detail": format!("Method \"{method}\" not allowed.")}),
    )
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<h1>Not Found</h1><p>The requested resource was not found on this server.</p>",
    )
        .into_response()
}

/// Django's APPEND_SLASH: a permanent redirect, also for PATCH/PUT (whose
/// body a client then loses if it follows blindly).
async fn append_slash(uri: Uri) -> Response {
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}

// ---------------------------------------------------------------- auth

async fn token(
    State(sim): State<CloudSuiteSim>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "HTTP 405 Method Not Allowed"}),
        );
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        form_pairs(&body)
    } else {
        Vec::new()
    };
    let field = |name: &str| {
        form.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    let opts = sim.options();
    let mut st = sim.state();
    st.token_requests += 1;
    if field("grant_type") != Some("client_credentials") {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}),
        );
    }
    // Keycloak accepts the client credentials in the form or as HTTP Basic.
    let basic = basic_credentials(&headers);
    let (id, secret) = match (field("client_id"), field("client_secret")) {
        (Some(id), Some(secret)) => (Some(id.to_string()), Some(secret.to_string())),
        _ => basic.map_or((None, None), |(i, s)| (Some(i), Some(s))),
    };
    if id.as_deref() != Some(opts.client_id.as_str())
        || secret.as_deref() != Some(opts.client_secret.as_str())
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized_client", "error_description": "Invalid client credentials"}),
        );
    }

    let token = new_access_token();
    st.tokens
        .insert(token.clone(), Instant::now() + opts.token_ttl);
    st.issued.push(token.clone());
    let expires_in = opts.token_ttl.as_secs() + u64::from(opts.token_ttl.subsec_nanos() > 0);
    json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "expires_in": expires_in,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "openid",
        }),
    )
}

/// JWT-shaped and unique, so tests can grep logs for leaked tokens.
fn new_access_token() -> String {
    let mut rng = rand::rng();
    let mut part = |n: usize| -> String {
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    };
    format!("eyJhbGciOiJSUzI1NiJ9.{}.{}", part(48), part(43))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((percent_decode(id, true), percent_decode(secret, true)))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s.trim_end_matches('=').as_bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// DRF's authentication: Bearer (Keycloak token) or the legacy `Token`.
/// Unknown schemes count as "no credentials", like DRF does.
/// `Some(401 response)` when the request is not authenticated.
pub(super) fn unauthenticated(sim: &CloudSuiteSim, headers: &HeaderMap) -> Option<Response> {
    let deny = |detail: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"api\"")],
            axum::Json(json!({"detail": detail})),
        )
            .into_response()
    };
    let not_provided = "Authentication credentials were not provided.";
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some(deny(not_provided));
    };
    let Ok(value) = value.to_str() else {
        return Some(deny(
            "Invalid token header. Token string should not contain invalid characters.",
        ));
    };
    let mut parts = value.split_whitespace();
    let scheme = parts.next().unwrap_or("").to_ascii_lowercase();
    let legacy = sim.options().legacy_token.as_deref();
    if scheme != "bearer" && !(scheme == "token" && legacy.is_some()) {
        return Some(deny(not_provided));
    }
    let credentials: Vec<&str> = parts.collect();
    let token = match credentials.as_slice() {
        [] => return Some(deny("Invalid token header. No credentials provided.")),
        [t] => *t,
        _ => {
            return Some(deny(
                "Invalid token header. Token string should not contain spaces.",
            ));
        }
    };
    let valid = if scheme == "token" {
        legacy == Some(token)
    } else {
        let mut st = sim.state();
        match st.tokens.get(token) {
            Some(expiry) if *expiry > Instant::now() => true,
            Some(_) => {
                st.tokens.remove(token);
                false
            }
            None => false,
        }
    };
    (!valid).then(|| deny("Invalid token."))
}

// ---------------------------------------------------------------- list

/// Parsed filters of `GET /api/order/`; empty values mean "no filter", as in
/// django-filter.
#[derive(Default)]
struct Filters {
    state: Option<String>,
    reference: Option<String>,
    webshop: Option<i64>,
    offline: Option<bool>,
    confirm_gte: Option<NaiveDateTime>,
    confirm_lte: Option<NaiveDateTime>,
}

/// Django's DateTimeField input: naive ISO datetime (T or space, optional
/// seconds/fraction) or a bare date meaning midnight. A bare date as `__lte`
/// therefore excludes that day, which is exactly what Django does.
fn parse_local_datetime(s: &str) -> Option<NaiveDateTime> {
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

fn parse_filters(params: &[(String, String)]) -> Result<Filters, Value> {
    // QueryDict.get: the last value of a repeated parameter wins.
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut errors = serde_json::Map::new();
    let mut f = Filters {
        state: get("state").map(str::to_string),
        reference: get("reference").map(str::to_string),
        ..Filters::default()
    };
    if let Some(v) = get("webshop") {
        match v.parse() {
            Ok(n) => f.webshop = Some(n),
            Err(_) => {
                errors.insert("webshop".into(), json!(["Enter a number."]));
            }
        }
    }
    // django-filter's BooleanFilter: true/false (any case) or 1/0.
    if let Some(v) = get("offline") {
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" => f.offline = Some(true),
            "false" | "0" => f.offline = Some(false),
            _ => {
                errors.insert(
                    "offline".into(),
                    json!([format!(
                        "Select a valid choice. {v} is not one of the available choices."
                    )]),
                );
            }
        }
    }
    for (name, slot) in [
        ("confirm_date__gte", &mut f.confirm_gte),
        ("confirm_date__lte", &mut f.confirm_lte),
    ] {
        if let Some(v) = get(name) {
            match parse_local_datetime(v) {
                Some(dt) => *slot = Some(dt),
                None => {
                    errors.insert(name.into(), json!(["Enter a valid date/time."]));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(f)
    } else {
        Err(Value::Object(errors))
    }
}

/// DRF `_positive_int`: garbage falls back to the default, `limit` is capped.
fn positive_int(params: &[(String, String)], name: &str, strict: bool, default: usize) -> usize {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.trim().trim_start_matches('+').parse::<usize>().ok())
        .filter(|n| !(strict && *n == 0))
        .unwrap_or(default)
}

async fn list(
    State(sim): State<CloudSuiteSim>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(denied) = unauthenticated(&sim, &headers) {
        return denied;
    }
    if method != Method::GET {
        return method_not_allowed(&method);
    }
    let params = form_pairs(query.unwrap_or_default().as_bytes());
    let filters = match parse_filters(&params) {
        Ok(f) => f,
        Err(errors) => return json_response(StatusCode::BAD_REQUEST, errors),
    };
    let limit = positive_int(&params, "limit", true, DEFAULT_LIMIT).min(MAX_LIMIT);
    let offset = positive_int(&params, "offset", false, 0);

    let (count, results) = {
        let st = sim.state();
        // Every order is looked at (the list is the whole shop's): the
        // cheap comparisons go first, the string ones last, and only the
        // page's own orders are kept, so that a backlog of 100,000 orders
        // does not make each list request eat the CPU the benchmarks
        // measure the clients with.
        let matches = |o: &&super::model::Order| {
            filters
                .confirm_gte
                .is_none_or(|t| o.confirm_date.is_some_and(|c| c >= t))
                && filters
                    .confirm_lte
                    .is_none_or(|t| o.confirm_date.is_some_and(|c| c <= t))
                && filters.webshop.is_none_or(|w| w == o.webshop)
                && filters.offline.is_none_or(|off| off == o.offline)
                && filters.state.as_ref().is_none_or(|s| *s == o.state)
                && filters
                    .reference
                    .as_ref()
                    .is_none_or(|r| *r == o.reference())
        };
        let mut count = 0;
        let mut page: Vec<Value> = Vec::new();
        for o in st.orders.values().filter(matches) {
            if count >= offset && page.len() < limit {
                page.push(o.summary_json());
            }
            count += 1;
        }
        (count, page)
    };

    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}{}", uri.path());
    let link = |offset: Option<usize>| {
        let mut p: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
            .cloned()
            .collect();
        p.push(("limit".into(), limit.to_string()));
        if let Some(o) = offset {
            p.push(("offset".into(), o.to_string()));
        }
        // Python's urlencode(sorted(...)): keys sorted, repeats kept in order.
        p.sort_by(|a, b| a.0.cmp(&b.0));
        format!("{base}?{}", encode_query(&p))
    };
    let next = if sim.inner.faults.get().repeat_page_forever {
        // Fault: a `next` link back to this very page, forever.
        Some(link(Some(offset)))
    } else {
        (offset + limit < count).then(|| link(Some(offset + limit)))
    };
    let previous = (offset > 0).then(|| {
        if offset <= limit {
            link(None)
        } else {
            link(Some(offset - limit))
        }
    });
    json_response(
        StatusCode::OK,
        json!({"count": count, "next": next, "previous": previous, "results": results}),
    )
}

// ---------------------------------------------------------------- detail

type WriteFn = fn(&mut Order, &Map<String, Value>, NaiveDateTime) -> Result<(), Value>;

async fn detail(
    State(sim): State<CloudSuiteSim>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthenticated(&sim, &headers) {
        return denied;
    }
    let not_found = || json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."}));
    // A non-numeric pk is a 404 in DRF, not a 400.
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let write: WriteFn = match method {
        Method::GET => {
            let mut st = sim.state();
            return st.orders.get_mut(&id).map_or_else(not_found, |o| {
                o.detail_reads += 1;
                json_response(StatusCode::OK, o.detail_json())
            });
        }
        Method::PATCH => writes::patch,
        Method::PUT => writes::put,
        _ => return method_not_allowed(&method),
    };

    let now = sim.now_local();
    let mut st = sim.state();
    let Some(order) = st.orders.get_mut(&id) else {
        return not_found();
    };
    order.write_requests += 1;
    let data = match parse_json_body(&headers, &body) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    match write(order, &data, now) {
        Ok(()) if method == Method::PATCH => match sim.options().patch_answer {
            PatchAnswer::Whole => json_response(StatusCode::OK, order.detail_json()),
            PatchAnswer::FieldsSet => {
                let whole = order.detail_json();
                let mut set = Map::new();
                for k in std::iter::once("id").chain(data.keys().map(String::as_str)) {
                    if let Some(v) = whole.get(k) {
                        set.insert(k.to_string(), v.clone());
                    }
                }
                json_response(StatusCode::OK, Value::Object(set))
            }
            PatchAnswer::NoContent => StatusCode::NO_CONTENT.into_response(),
        },
        Ok(()) => json_response(StatusCode::OK, order.detail_json()),
        Err(errors) => json_response(StatusCode::BAD_REQUEST, errors),
    }
}

/// DRF's JSONParser: 415 for other media types, an empty body is `{}`.
fn parse_json_body(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let fail = |status, body| Err(Box::new(json_response(status, body)));
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"detail": format!("Unsupported media type \"{ct}\" in request.")}),
        );
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "list",
                Value::String(_) => "str",
                Value::Number(_) => "int",
                Value::Bool(_) => "bool",
                _ => "NoneType",
            };
            fail(
                StatusCode::BAD_REQUEST,
                json!({"non_field_errors": [format!("Invalid data. Expected a dictionary, but got {kind}.")]}),
            )
        }
        Err(e) => fail(
            StatusCode::BAD_REQUEST,
            json!({"detail": format!("JSON parse error - {e}")}),
        ),
    }
}

// ---------------------------------------------------------------- url encoding

/// Python's `quote_plus`.
fn encode_query(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for &b in s.as_bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let pairs =
            form_pairs(b"confirm_date__gte=2024-06-29T10%3A15%3A00&state=confirmed&x&y=a+b");
        assert_eq!(pairs[0].1, "2024-06-29T10:15:00");
        assert_eq!(pairs[2], ("x".to_string(), String::new()));
        assert_eq!(pairs[3].1, "a b");
        assert_eq!(
            encode_query(&pairs[..1]),
            "confirm_date__gte=2024-06-29T10%3A15%3A00"
        );
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%e2%82%ac", true), "€");
    }

    #[test]
    fn datetimes_like_django() {
        assert!(parse_local_datetime("2024-06-29T10:15:00.123456").is_some());
        assert!(parse_local_datetime("2024-06-29 10:15:00").is_some());
        assert_eq!(
            parse_local_datetime("2024-06-29"),
            NaiveDate::from_ymd_opt(2024, 6, 29).and_then(|d| d.and_hms_opt(0, 0, 0))
        );
        assert!(parse_local_datetime("29-06-2024").is_none());
        assert!(parse_local_datetime("2024-06-29T10:15:00Z").is_none());
    }

    #[test]
    fn basic_auth_decodes() {
        assert_eq!(
            base64_decode("b3JkZXJzeW5jOnNlY3JldA=="),
            Some(b"ordersync:secret".to_vec())
        );
    }
}
