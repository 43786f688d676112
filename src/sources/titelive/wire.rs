//! Titelive's answer envelope and the one table from its `code` to what we
//! do. Every answer, failed or not, is HTTP 200 with
//! `{"response": {"success", "code", "message", "object"}}`: `success`
//! decides, never the status line, and `code` may be missing on success.

use serde_json::Value;

use crate::http::{Failure, Reply};

/// One unwrapped answer.
#[derive(Debug)]
pub struct Answer {
    pub success: bool,
    pub code: Option<i64>,
    pub message: String,
    pub object: Value,
    /// `GET host/path` of the request, for messages (never the query).
    pub what: String,
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
/// | 13          | AlreadyConfirmed | a write-back is already done |
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
    let v: Value = reply.json()?;
    let r = &v["response"];
    let success = match &r["success"] {
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
    let code = match &r["code"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(Answer {
        success,
        code,
        message: r["message"].as_str().unwrap_or_default().to_string(),
        object: r["object"].clone(),
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

    /// The `object` of a successful answer, or the failure per the table.
    pub fn into_object(self, what: &str) -> Result<Value, Failure> {
        if self.success {
            Ok(self.object)
        } else {
            Err(self.failure(what))
        }
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
        let f = a.into_object("order 5").unwrap_err();
        assert!(matches!(f, Failure::Permanent { .. }));
        assert!(f.message().contains("processing_status"), "{f}");
        // The login sample has no code on success.
        let a = unwrap(&reply(
            json!({"response": {"success": true, "message": "ok", "object": {"x": 1}}}),
        ))
        .unwrap();
        assert_eq!(a.class(), None);
        assert_eq!(a.into_object("login").unwrap()["x"], 1);
        let f = unwrap(&reply(
            json!({"response": {"success": false, "code": 99, "message": "uncatched exception"}}),
        ))
        .unwrap()
        .into_object("list")
        .unwrap_err();
        assert!(matches!(f, Failure::Retryable { .. }));
        assert!(unwrap(&reply(json!({"orders": []}))).is_err());
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
