//! Reading a JSON order list item by item, so that one bad order cannot fail
//! its page (SPEC §5.5, issue 12.12). The body is decoded lossily, the
//! envelope is parsed with each item kept as raw text (`RawValue` skips over
//! what serde_json refuses to build: `1e400`, a lone surrogate), then each
//! item is parsed on its own and what broke is named by its JSON path.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::http::Failure;
use crate::store::IncomingOrder;

/// An answer's body as text.
pub struct Body {
    pub text: String,
    /// Some bytes were not UTF-8 and were escaped (see [`decode_text`]): the
    /// items holding one are reported, not passed on with a mangled name.
    lossy: bool,
}

/// The first of the code points that stand for bytes that are not UTF-8:
/// byte `b` (always ≥ 0x80) becomes U+F700 + `b`, in the Private Use Area.
const ESCAPE_BASE: u32 = 0xF700;

/// Decodes a remote's bytes without losing any: a byte that is not UTF-8
/// becomes a Private Use code point of its own (U+F780–U+F7FF) instead of
/// U+FFFD, so `ORD-\xff` and `ORD-\xfe` stay two ids (and two order keys)
/// rather than both becoming `ORD-\u{FFFD}`. `true` when any byte was escaped.
pub fn decode_text(bytes: &[u8]) -> (String, bool) {
    // Valid text (nearly all of it) is checked the fast way first.
    if let Ok(text) = std::str::from_utf8(bytes) {
        return (text.to_owned(), false);
    }
    let mut out = String::with_capacity(bytes.len());
    let mut escaped = false;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            escaped = true;
            out.push(char::from_u32(ESCAPE_BASE + u32::from(*b)).unwrap_or('\u{FFFD}'));
        }
    }
    (out, escaped)
}

/// Whether a text holds a byte [`decode_text`] escaped.
pub fn has_escaped_bytes(text: &str) -> bool {
    text.chars()
        .any(|c| (ESCAPE_BASE + 0x80..=ESCAPE_BASE + 0xFF).contains(&u32::from(c)))
}

/// One list item as received.
pub struct Item {
    /// The item's text exactly as received (bar bytes that were not UTF-8).
    pub raw: String,
    /// The whole item; for a broken one, every top-level field that still
    /// parses on its own (enough to key it, and often to filter it).
    pub value: Value,
    /// Why the item cannot be mapped as it stands, naming the field.
    pub broken: Option<String>,
}

impl Body {
    pub fn decode(bytes: &[u8]) -> Body {
        let (text, lossy) = decode_text(bytes);
        Body { text, lossy }
    }

    /// The envelope, with its items left as `Box<RawValue>`. A body that is
    /// not the envelope is retried, like any garbled answer. `what` names
    /// the request.
    pub fn envelope<T: DeserializeOwned>(&self, what: &str) -> Result<T, Failure> {
        serde_json::from_str(&self.text).map_err(|e| {
            Failure::retry(format!(
                "{what} answered with a body that is not the expected JSON: {e}"
            ))
        })
    }

    pub fn item(&self, raw: &RawValue) -> Item {
        item(raw.get(), self.lossy)
    }

    pub fn is_lossy(&self) -> bool {
        self.lossy
    }

    /// The whole body read as one item (an order detail).
    pub fn whole(&self) -> Item {
        item(&self.text, self.lossy)
    }
}

impl Item {
    /// The item for a write-back that reads before it writes and decides by
    /// the top-level fields `decided_by`: a field that cannot be read
    /// elsewhere (a byte that is not UTF-8 in a name, `1e400` in a price)
    /// does not stop it; one it decides by does (missing, it would read as
    /// "not cancelled", "no state"), and so does an item that is not an
    /// object. `Err` is the reason, naming the field.
    pub fn readable_for(self, decided_by: &[&str]) -> Result<Value, String> {
        match self.broken {
            Some(reason)
                if !self.value.is_object() || decided_by.contains(&top_level_field(&reason)) =>
            {
                Err(reason)
            }
            _ => Ok(self.value),
        }
    }

    /// A broken item as an order recorded and parked with the reason, so
    /// `status` shows it (SPEC §5.1, §5.5); `None` for a whole one.
    /// `system` names the source's product in the reason.
    pub fn unreadable(&self, system: &str, id: &str) -> Option<IncomingOrder> {
        let reason = self.broken.as_ref()?;
        Some(IncomingOrder {
            external_id: id.to_string(),
            raw: self.raw.clone(),
            version: None,
            mapped: Err(format!("cannot read {system} order {id}: {reason}")),
        })
    }
}

/// A JSON envelope whose order list is kept raw, item by item.
pub trait Envelope: DeserializeOwned {
    fn items(&self) -> &[Box<RawValue>];
}

/// A JSON list page as a walk reads it: the envelope, each item parsed on
/// its own, and the id of each (`None`: it cannot be keyed).
pub struct Listing<P> {
    pub page: P,
    pub items: Vec<Item>,
    pub ids: Vec<Option<String>>,
}

impl<P: Envelope> Listing<P> {
    /// Reads `body` (the answer to `what`); `id` keys one item. A body that
    /// is not the envelope is retried, like any garbled answer.
    pub fn read(
        body: &[u8],
        what: &str,
        id: impl Fn(&Value) -> Option<String>,
    ) -> Result<Listing<P>, Failure> {
        let body = Body::decode(body);
        let page: P = body.envelope(what)?;
        let items: Vec<Item> = page.items().iter().map(|r| body.item(r)).collect();
        let ids = items.iter().map(|i| id(&i.value)).collect();
        Ok(Listing { page, items, ids })
    }

    /// What names each item for [`super::walk::WalkGuard::admit_page`].
    pub fn listed(&self) -> impl Iterator<Item = &str> {
        listed(&self.items, &self.ids)
    }
}

/// Maps one order with a panic in it contained (issue 12): every connector
/// maps each order through here, in walks and re-checks alike. `map` is the
/// mapping of that one order; should it panic (a bug, or remote data no
/// check foresaw), the panic ends neither the page nor the source's poller:
/// `parked` is given the reason, "ordersync could not map this order
/// (internal error: ...)", and makes of it what the caller records, normally
/// that order parked with the reason ([`parked`]), so `status` shows it and
/// the other orders flow. The panic itself is still printed by the panic
/// hook, with its location. Needs `panic = "unwind"` (the default) in every
/// profile that ships.
pub fn isolated<T>(map: impl FnOnce() -> T, parked: impl FnOnce(String) -> T) -> T {
    let run = || {
        #[cfg(test)]
        panic_hook::fire();
        map()
    };
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(mapped) => mapped,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            parked(format!(
                "ordersync could not map this order (internal error: {message})"
            ))
        }
    }
}

/// An order recorded as received (`raw`) and parked with `reason`.
pub fn parked(id: &str, raw: &str, reason: String) -> IncomingOrder {
    IncomingOrder {
        external_id: id.to_string(),
        raw: raw.to_string(),
        version: None,
        mapped: Err(reason),
    }
}

/// A test's way to make an order's mapping panic inside [`isolated`].
#[cfg(test)]
pub mod panic_hook {
    use std::cell::Cell;

    thread_local! {
        static COUNTDOWN: Cell<usize> = const { Cell::new(0) };
    }

    /// The `n`th order mapped on this thread from now on (1: the next one)
    /// panics in its mapping.
    pub fn arm(n: usize) {
        COUNTDOWN.set(n);
    }

    pub(super) fn fire() {
        let n = COUNTDOWN.get();
        if n > 0 {
            COUNTDOWN.set(n - 1);
            if n == 1 {
                panic!("a panic injected by a test");
            }
        }
    }
}

/// What names each item for [`super::walk::WalkGuard::admit_page`]: its id,
/// or its text when it has none.
pub fn listed<'a>(items: &'a [Item], ids: &'a [Option<String>]) -> impl Iterator<Item = &'a str> {
    items
        .iter()
        .zip(ids)
        .map(|(item, id)| id.as_deref().unwrap_or(&item.raw))
}

/// Parses one item; `lossy`: its body had bytes that were not UTF-8.
pub fn item(text: &str, lossy: bool) -> Item {
    // Tracking the path costs a tenth of a poll's CPU and only serves the
    // message of a broken item: a whole one is read without it, and only a
    // broken one is read again to say where it breaks. The same reader
    // either way (trailing text after the value is left alone by both).
    let tracked = match Value::deserialize(&mut serde_json::Deserializer::from_str(text)) {
        Ok(value) => Ok(value),
        Err(_) => serde_path_to_error::deserialize::<_, Value>(
            &mut serde_json::Deserializer::from_str(text),
        ),
    };
    match tracked {
        Ok(value) => {
            let broken = lossy
                .then(|| replaced_at(&value))
                .flatten()
                .map(|path| format!("{path}: not valid UTF-8 (the source sent a byte that is not UTF-8, e.g. Latin-1)"));
            Item {
                raw: text.to_string(),
                value,
                broken,
            }
        }
        Err(e) => {
            let inner = e.inner().to_string();
            // The position is within the item, which says little to an operator.
            let inner = inner.split(" at line ").next().unwrap_or_default();
            Item {
                raw: text.to_string(),
                value: partial(text),
                broken: Some(format!("{}: {inner}", e.path())),
            }
        }
    }
}

/// The top-level field a broken item's reason names first (`trackings` of
/// `trackings[0].number: invalid type`).
fn top_level_field(reason: &str) -> &str {
    reason
        .split(['.', '[', ':'])
        .next()
        .unwrap_or_default()
        .trim()
}

/// Every top-level field of an object that parses on its own.
fn partial(text: &str) -> Value {
    match serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text) {
        Ok(fields) => Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| Some((k, serde_json::from_str(v.get()).ok()?)))
                .collect(),
        ),
        Err(_) => Value::Null,
    }
}

/// The JSON path of the first text holding an escaped byte (see
/// [`decode_text`]), the mark of a byte that was not UTF-8.
fn replaced_at(v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) if has_escaped_bytes(s) => Some(path.to_string()),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, x)| walk(x, &format!("{path}[{i}]"))),
            Value::Object(o) => o.iter().find_map(|(k, x)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if has_escaped_bytes(k) {
                    return Some(here);
                }
                walk(x, &here)
            }),
            _ => None,
        }
    }
    walk(v, "").map(|p| if p.is_empty() { ".".into() } else { p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_kept_apart() {
        let (a, bad_a) = decode_text(b"ORD-\xff");
        let (b, bad_b) = decode_text(b"ORD-\xfe");
        assert!(bad_a && bad_b);
        assert_ne!(a, b, "no merging into U+FFFD");
        assert!(has_escaped_bytes(&a) && !has_escaped_bytes("ORD-\u{e9}"));
        assert_eq!(
            decode_text("ORD-é".as_bytes()),
            ("ORD-é".to_string(), false)
        );
    }

    #[derive(serde::Deserialize)]
    struct Page {
        orders: Vec<Box<RawValue>>,
    }

    fn items(body: &[u8]) -> Vec<Item> {
        let body = Body::decode(body);
        let page: Page = body.envelope("GET x").unwrap();
        page.orders.iter().map(|r| body.item(r)).collect()
    }

    #[test]
    fn a_panic_in_one_mapping_parks_that_order_and_the_others_map() {
        let map = |id: &str| -> Result<IncomingOrder, String> {
            if id == "2" {
                let lines: Vec<u32> = Vec::new();
                // What an unchecked index on remote data does.
                let _ = lines[usize::from(id == "2")];
            }
            Ok(parked(id, "{}", "mapped".into()))
        };
        let got: Vec<Result<IncomingOrder, String>> = ["1", "2", "3"]
            .into_iter()
            .map(|id| isolated(|| map(id), |why| Ok(parked(id, "{\"id\":2}", why))))
            .collect();
        assert_eq!(got.len(), 3);
        let two = got[1].as_ref().unwrap();
        assert_eq!(two.external_id, "2");
        assert_eq!(two.raw, "{\"id\":2}");
        let why = two.mapped.as_ref().unwrap_err();
        assert!(
            why.starts_with(
                "ordersync could not map this order (internal error: index out of bounds"
            ),
            "{why}"
        );
        assert_eq!(
            got[0].as_ref().unwrap().mapped.as_ref().unwrap_err(),
            "mapped"
        );
        assert_eq!(got[2].as_ref().unwrap().external_id, "3");
        // A `&str` payload, and one that is neither.
        let why = isolated(|| panic!("plain"), |why| why);
        assert_eq!(
            why,
            "ordersync could not map this order (internal error: plain)"
        );
        let why: String = isolated(|| std::panic::panic_any(7_u8), |why| why);
        assert!(why.contains("a panic without a message"), "{why}");
        // The test hook panics inside the helper, on the nth mapping.
        panic_hook::arm(2);
        assert_eq!(isolated(|| 1, |_| 0), 1);
        assert_eq!(isolated(|| 1, |_| 0), 0);
        assert_eq!(isolated(|| 1, |_| 0), 1, "once only");
    }

    /// A whole item is read without path tracking and a broken one again
    /// with it: both readers must accept and refuse the same texts, or an
    /// item would be called broken with no reason or whole with none read.
    #[test]
    fn the_untracked_and_the_tracked_reader_agree_on_every_text() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let texts = [
            r#"{"id":1}"#,
            r#"{"id":1} trailing"#,
            r#"{"id":1}}"#,
            r#"{"p":1e400}"#,
            r#"{"p":-1e400,"q":1e-400}"#,
            r#"{"id":"\ud800"}"#,
            r#"{"id":1,"id":2}"#,
            r#"{"a":[1,2,}"#,
            "",
            "null",
            "\"text\"",
            &deep,
        ];
        for text in texts {
            let fast = Value::deserialize(&mut serde_json::Deserializer::from_str(text));
            let tracked = serde_path_to_error::deserialize::<_, Value>(
                &mut serde_json::Deserializer::from_str(text),
            );
            assert_eq!(fast.is_ok(), tracked.is_ok(), "{text}");
            if let (Ok(a), Ok(b)) = (&fast, &tracked) {
                assert_eq!(a, b, "{text}");
            }
            let got = item(text, false);
            assert_eq!(got.broken.is_some(), tracked.is_err(), "{text}");
        }
    }

    #[test]
    fn serde_json_refuses_these_whole_pages() {
        for body in [
            &br#"{"orders":[{"id":1,"p":1e400}]}"#[..],
            br#"{"orders":[{"id":"\ud800"}]}"#,
            b"{\"orders\":[{\"id\":1,\"name\":\"M\xfcller\"}]}",
        ] {
            assert!(serde_json::from_slice::<Value>(body).is_err());
        }
    }

    #[test]
    fn one_bad_item_is_named_and_the_others_parse() {
        let got = items(
            br#"{"orders":[{"id":1,"items":[{"price":{"final_price":1e400}}]},{"id":2,"x":"ok"}]}"#,
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].broken.as_deref(),
            Some("items[0].price.final_price: number out of range")
        );
        assert_eq!(got[0].value["id"], 1, "still keyed");
        assert!(got[0].value.get("items").is_none());
        assert!(got[0].raw.contains("1e400"), "kept as received");
        assert!(got[1].broken.is_none());
        assert_eq!(got[1].value["x"], "ok");
    }

    #[test]
    fn a_lone_surrogate_is_named_and_an_id_made_of_one_is_lost() {
        let got = items(br#"{"orders":[{"id":"\ud800","n":1},{"id":3,"name":"a\udc00b"}]}"#);
        assert!(got[0].broken.as_deref().unwrap().starts_with("id: "));
        assert!(got[0].value.get("id").is_none());
        assert_eq!(got[0].value["n"], 1);
        assert!(got[1].broken.as_deref().unwrap().starts_with("name: "));
        assert_eq!(got[1].value["id"], 3);
    }

    #[test]
    fn a_latin1_byte_is_named_by_its_field() {
        let got = items(
            b"{\"orders\":[{\"id\":1,\"lines\":[{\"name\":\"M\xfcller\"}]},{\"id\":2,\"name\":\"ok \xef\xbf\xbd\"}]}",
        );
        assert_eq!(
            got[0].broken.as_deref(),
            Some(
                "lines[0].name: not valid UTF-8 (the source sent a byte that is not UTF-8, e.g. Latin-1)"
            )
        );
        assert_eq!(got[0].value["id"], 1);
        // A genuine U+FFFD on the same page is data: bad bytes carry their
        // own marks, so they cannot be confused with it.
        assert!(got[1].broken.is_none(), "{:?}", got[1].broken);
        let clean = items("{\"orders\":[{\"id\":2,\"name\":\"ok \u{FFFD}\"}]}".as_bytes());
        assert!(clean[0].broken.is_none(), "a valid body's U+FFFD is data");
    }

    /// A write-back's read: a field that cannot be read stops it only when
    /// it is one it decides by, named by the reasons the one reader gives.
    #[test]
    fn a_broken_field_stops_only_the_write_backs_that_decide_by_it() {
        for (text, lossy, field) in [
            (r#"{"id": 1, "sent": 1e400, "name": "x"}"#, false, "sent"),
            (
                r#"{"id": 1, "trackings": [{"number": 1e400}]}"#,
                false,
                "trackings",
            ),
            (
                r#"{"id": 1, "customer": {"name": 1e400}}"#,
                false,
                "customer",
            ),
            ("{\"id\": 1, \"name\": \"M\u{f7fc}ller\"}", true, "name"),
        ] {
            let got = item(text, lossy);
            assert!(got.broken.is_some(), "{text}");
            let reason = item(text, lossy).readable_for(&[field]).expect_err(text);
            assert!(reason.starts_with(field), "{reason}");
            let order = got.readable_for(&["state", "status"]).expect(text);
            assert_eq!(order["id"], 1, "{text}");
            assert!(order.get(field).is_none() || lossy, "{text}");
        }
        // Not an object at all: nothing to decide by.
        assert!(item("[1, 1e400]", false).readable_for(&[]).is_err());
        // A whole item reads whatever is asked.
        assert!(item(r#"{"id": 1}"#, false).readable_for(&["id"]).is_ok());
    }
}
