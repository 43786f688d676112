//! Titelive's answer envelope and the one table from its `code` to what we
//! do. Every answer, failed or not, is HTTP 200 with
//! `{"response": {"success", "code", "message", "object"}}`: `success`
//! decides, never the status line, and `code` may be missing on success.
//! The envelope is read with its `object` kept raw, so that the order list
//! can be read item by item: one bad order must not hide the others.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::http::{Failure, Reply};
use crate::sources::list::{self, Body};

/// One unwrapped answer.
#[derive(Debug)]
pub struct Answer {
    pub success: bool,
    pub code: Option<i64>,
    pub message: String,
    /// `object` as a whole; `Null` when it does not parse (see `broken`).
    pub object: Value,
    /// `object` exactly as received, for reading a list item by item.
    raw_object: Option<Box<RawValue>>,
    /// The body had bytes that were not UTF-8.
    lossy: bool,
    /// Why `object` does not parse as a whole, naming the field.
    broken: Option<String>,
    /// `GET host/path` of the request, for messages (never the query).
    pub what: String,
}

#[derive(Deserialize)]
struct Envelope {
    response: Option<Response>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    success: Value,
    #[serde(default)]
    code: Value,
    #[serde(default)]
    message: Value,
    #[serde(default)]
    object: Option<Box<RawValue>>,
}

/// What a failed answer's `code` means to ordersync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeClass {
    /// 3 token empty, 4 no token with that key, 5 invalid token: get a new
    /// token and send again.
    TokenRejected,
    /// 2 connection error, 99 uncaught exception, or no code at all: passing
    /// trouble on their side; retry with backoff.
    Retry,
    /// 10 order does not exist ("no orders" on the list): that order is parked.
    NotFound,
    /// 12 status does not exist: our configured status id is wrong.
    UnknownStatus,
    /// 13 order already confirmed: the change we asked for is already there.
    AlreadyConfirmed,
    /// Anything else (1 domain code malformed, 9 bad parameter, 11 still a
    /// cart, other service codes): the request itself is refused; repeating
    /// it cannot help.
    Refused,
}

/// The whole policy in one place, like [`crate::http::status_is_retryable`].
///
/// | code        | class            | what happens |
/// |-------------|------------------|--------------|
/// | 3, 4, 5     | TokenRejected    | new token, the request is sent once more |
/// | 2, 99, none | Retry            | retried with backoff |
/// | 10          | NotFound         | that order (or write-back) is parked; an empty list |
/// | 12          | UnknownStatus    | parked as a configuration error (processing_status / shipped_status) |
/// | 13          | AlreadyConfirmed | a status write: the order is read again; done if it shows the status, else parked |
/// | other       | Refused          | parked |
pub fn classify(code: Option<i64>) -> CodeClass {
    match code {
        Some(3..=5) => CodeClass::TokenRejected,
        Some(2 | 99) | None => CodeClass::Retry,
        Some(10) => CodeClass::NotFound,
        Some(12) => CodeClass::UnknownStatus,
        Some(13) => CodeClass::AlreadyConfirmed,
        Some(_) => CodeClass::Refused,
    }
}

/// Reads the envelope. A body without one is retried like any garbled
/// answer (a proxy's error page, a truncated body).
pub fn unwrap(reply: &Reply) -> Result<Answer, Failure> {
    let body = Body::decode(&reply.body);
    let envelope: Envelope = body.envelope(&reply.what)?;
    let Some(r) = envelope.response else {
        return Err(Failure::retry(format!(
            "{} answered without the {{\"response\": {{\"success\": ...}}}} envelope",
            reply.what
        )));
    };
    let success = match &r.success {
        Value::Bool(b) => *b,
        // Seen as 1/0 in XML-converted answers.
        Value::Number(n) => n.as_i64() == Some(1),
        _ => {
            return Err(Failure::retry(format!(
                "{} answered without the {{\"response\": {{\"success\": ...}}}} envelope",
                reply.what
            )));
        }
    };
    let code = match &r.code {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let whole = r.object.as_ref().map(|raw| body.item(raw));
    Ok(Answer {
        success,
        code,
        message: r.message.as_str().unwrap_or_default().to_string(),
        object: match &whole {
            Some(item) if item.broken.is_none() => item.value.clone(),
            _ => Value::Null,
        },
        broken: whole.and_then(|item| item.broken),
        raw_object: r.object,
        lossy: body.is_lossy(),
        what: reply.what.clone(),
    })
}

impl Answer {
    pub fn class(&self) -> Option<CodeClass> {
        (!self.success).then(|| classify(self.code))
    }

    /// "`what`: POST host/path answered success=false (code 5: "invalid token")".
    pub fn describe(&self, what: &str) -> String {
        let code = self
            .code
            .map_or_else(|| "no code".to_string(), |c| format!("code {c}"));
        format!(
            "{what}: {} answered success=false ({code}: {:?})",
            self.what, self.message
        )
    }

    /// The failure this answer stands for, per the table. `what` says which
    /// order or call it was about.
    pub fn failure(&self, what: &str) -> Failure {
        let text = self.describe(what);
        match classify(self.code) {
            CodeClass::TokenRejected | CodeClass::Retry => Failure::retry(text),
            CodeClass::NotFound => {
                Failure::permanent(format!("{text}: the order does not exist at Titelive"))
            }
            CodeClass::UnknownStatus => Failure::permanent(format!(
                "{text}: configuration error: processing_status / shipped_status name a status this shop does not have"
            )),
            CodeClass::Refused if self.code == Some(1) => {
                Failure::permanent(format!("{text}: check domain_code"))
            }
            CodeClass::AlreadyConfirmed | CodeClass::Refused => Failure::permanent(text),
        }
    }

    /// One member of `object`, as the text received.
    pub fn raw_member(&self, key: &str) -> Option<String> {
        let object = self.raw_object.as_ref()?;
        let mut members: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(object.get()).ok()?;
        members.remove(key).map(|raw| raw.get().to_string())
    }

    /// The `object` of a successful answer, or the failure per the table;
    /// an object that cannot be read is the inner `Err`, naming the field.
    pub fn into_readable(self, what: &str) -> Result<Result<Value, String>, Failure> {
        if !self.success {
            return Err(self.failure(what));
        }
        Ok(match self.broken {
            Some(reason) => Err(reason),
            None => Ok(self.object),
        })
    }

    /// The items of a successful answer's collection (the shapes of
    /// [`collection`]), each read on its own, or the failure per the table.
    pub fn into_items(
        self,
        what: &str,
        plural: &str,
        singular: &str,
    ) -> Result<Vec<list::Item>, Failure> {
        if !self.success {
            return Err(self.failure(what));
        }
        let Some(object) = &self.raw_object else {
            return Ok(Vec::new());
        };
        let garbled = |e: serde_json::Error| {
            Failure::retry(format!(
                "{what}: {} answered a collection that cannot be read: {e}",
                self.what
            ))
        };
        let fields = |raw: &RawValue| {
            serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()).map_err(garbled)
        };
        let many =
            |raw: &RawValue| serde_json::from_str::<Vec<Box<RawValue>>>(raw.get()).map_err(garbled);
        let shape = |raw: &RawValue| raw.get().trim_start().chars().next();
        let raws: Vec<Box<RawValue>> = match shape(object) {
            Some('{') => match fields(object)?.remove(plural) {
                Some(p) if shape(&p) == Some('[') => many(&p)?,
                Some(p) if shape(&p) == Some('{') => {
                    let mut inner = fields(&p)?;
                    match inner.remove(singular) {
                        Some(i) if shape(&i) == Some('[') => many(&i)?,
                        Some(i) if shape(&i) == Some('{') => vec![i],
                        Some(_) => Vec::new(),
                        // An object that is itself the only item, wrapper dropped.
                        None if !inner.is_empty() => vec![p],
                        None => Vec::new(),
                    }
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok(raws
            .iter()
            .map(|r| list::item(r.get(), self.lossy))
            .collect())
    }
}

/// Reads a collection in Titelive's XML-shaped JSON: `{"lines": {"line":
/// [...]}}`, collapsed to `{"lines": {"line": {...}}}` when there is one,
/// also a bare array (`"lines": [...]` inside packages) or nothing at all.
pub fn collection<'a>(parent: &'a Value, plural: &str, singular: &str) -> Vec<&'a Value> {
    fn items(v: &Value) -> Vec<&Value> {
        match v {
            Value::Array(a) => a.iter().collect(),
            Value::Object(_) => vec![v],
            _ => Vec::new(),
        }
    }
    match &parent[plural] {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => match o.get(singular) {
            Some(inner) => items(inner),
            // An object that is itself the only item, wrapper dropped.
            None if !o.is_empty() => vec![&parent[plural]],
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table() {
        for c in [3, 4, 5] {
            assert_eq!(classify(Some(c)), CodeClass::TokenRejected, "{c}");
        }
        assert_eq!(classify(Some(2)), CodeClass::Retry);
        assert_eq!(classify(Some(99)), CodeClass::Retry);
        assert_eq!(classify(None), CodeClass::Retry);
        assert_eq!(classify(Some(10)), CodeClass::NotFound);
        assert_eq!(classify(Some(12)), CodeClass::UnknownStatus);
        assert_eq!(classify(Some(13)), CodeClass::AlreadyConfirmed);
        for c in [1, 9, 11, 14] {
            assert_eq!(classify(Some(c)), CodeClass::Refused, "{c}");
        }
    }

    fn reply(body: Value) -> Reply {
        Reply {
            status: 200,
            headers: Default::default(),
            body: body.to_string().into(),
            what: "GET shop/api/json/00000/customer/order/5".into(),
        }
    }

    #[test]
    fn success_decides_not_the_status_line() {
        let a = unwrap(&reply(
            json!({"response": {"success": false, "code": 12, "message": "status not exist"}}),
        ))
        .unwrap();
        assert_eq!(a.class(), Some(CodeClass::UnknownStatus));
        let f = a.into_readable("order 5").unwrap_err();
        assert!(matches!(f, Failure::Permanent { .. }));
        assert!(f.message().contains("processing_status"), "{f}");
        // The login sample has no code on success.
        let a = unwrap(&reply(
            json!({"response": {"success": true, "message": "ok", "object": {"x": 1}}}),
        ))
        .unwrap();
        assert_eq!(a.class(), None);
        assert_eq!(a.into_readable("login").unwrap().unwrap()["x"], 1);
        let f = unwrap(&reply(
            json!({"response": {"success": false, "code": 99, "message": "uncatched exception"}}),
        ))
        .unwrap()
        .into_readable("list")
        .unwrap_err();
        assert!(matches!(f, Failure::Retryable { .. }));
        assert!(unwrap(&reply(json!({"orders": []}))).is_err());
    }

    #[test]
    fn list_items_are_read_one_by_one_in_every_shape() {
        let list = |orders: &str| {
            let body = format!(
                r#"{{"response": {{"success": true, "code": 0, "object": {{"orders": {orders}}}}}}}"#
            );
            let a = unwrap(&Reply {
                status: 200,
                headers: Default::default(),
                body: body.into_bytes().into(),
                what: "GET shop/api/json/00000/customer/order".into(),
            })
            .unwrap();
            assert!(a.object.is_null() == orders.contains("1e400"));
            a.into_items("order list", "orders", "order").unwrap()
        };
        let got = list(r#"{"order": [{"id": 1, "total": 1e400}, {"id": 2}]}"#);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].broken.as_deref(), Some("total: number out of range"));
        assert_eq!(got[0].value["id"], 1);
        assert!(got[1].broken.is_none());
        assert_eq!(list(r#"{"order": {"id": 3}}"#)[0].value["id"], 3);
        assert_eq!(list(r#"[{"id": 4}]"#)[0].value["id"], 4);
        assert_eq!(list(r#"{"id": 5}"#)[0].value["id"], 5);
        assert!(list("{}").is_empty());
        assert!(list("0").is_empty());
        assert!(list(r#"{"order": []}"#).is_empty());
    }

    #[test]
    fn collections_collapse_and_unwrap() {
        let many = json!({"lines": {"line": [{"id": 1}, {"id": 2}]}});
        assert_eq!(collection(&many, "lines", "line").len(), 2);
        let one = json!({"lines": {"line": {"id": 1}}});
        assert_eq!(collection(&one, "lines", "line")[0]["id"], 1);
        let bare = json!({"lines": [{"id": 1}]});
        assert_eq!(collection(&bare, "lines", "line").len(), 1);
        assert!(collection(&json!({}), "lines", "line").is_empty());
        assert!(collection(&json!({"lines": ""}), "lines", "line").is_empty());
        assert!(collection(&json!({"lines": {"line": []}}), "lines", "line").is_empty());
    }
}
