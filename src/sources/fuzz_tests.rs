//! Property tests of every connector's parsers and mappers (issue 12), the
//! shared part: input strategies, byte mutations, seed files and the
//! properties every connector's outcome must have. Each connector's own
//! `fuzz_tests.rs` feeds its list-page reader and its order mapper with
//!
//! - hostile orders: a valid order with a few of its values replaced,
//!   removed or duplicated, or an object made up from the connector's own
//!   field names, with leaves chosen to hurt (`1e27`, `-0`,
//!   `79228162514264337593543950335`, `1e400` as text, lone surrogates
//!   escaped, `../`, empty strings, nulls, impossible dates, nesting deeper
//!   than serde_json's limit);
//! - arbitrary bytes, and the vendor fixtures (`tests/fixtures/vendor/KIND`)
//!   and seed files (`tests/fixtures/fuzz/KIND`) mutated: bits flipped,
//!   cut short, bytes inserted or deleted, a value replaced by a hostile
//!   one, a list item duplicated;
//! - the seed files as they are.
//!
//! The properties ([`check`], [`bounded`]): no panic (an `Err` is fine);
//! each input is read within [`TIME_LIMIT`]; an `IncomingOrder` has a
//! non-empty `external_id`; its mapping, when it failed, was not a panic
//! contained by [`super::list::isolated`]; when it mapped, the canonical
//! JSON has no `null` and no `""` anywhere and is at most [`amplified`] the
//! size of the input (memory stays proportional to what was received).
//! Inputs are bounded in size, so every case is bounded in time and memory.
//!
//! 256 cases per property (proptest's default; `PROPTEST_CASES=10000 cargo
//! test --lib fuzz` runs more). A failure is shrunk and its seed saved in
//! `proptest-regressions/`, which is committed: saved seeds run first.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use quick_xml::events::Event;
use serde_json::Value;

use crate::store::IncomingOrder;

/// Far above what any bounded input here takes (milliseconds), far below a hang.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);

/// JSON values that have broken, or could break, a reader or a mapper:
/// numbers beyond `Decimal` and `f64`, numbers as text, text that is not a
/// number, lone surrogates, paths, dates at the ends of time and inside a
/// clock change, empty and blank strings, nulls, empty containers.
pub const JSON_HOSTILE: &[&str] = &[
    "1e400",
    "-1e400",
    "1e27",
    "-1e27",
    "1e28",
    "-0",
    "-0.0",
    "0",
    "1",
    "-1",
    "2",
    "0.005",
    "1e-30",
    "0.0000000000000000000000000001",
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "79228162514264337593543950336",
    "39614081257132168796771975168",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "9007199254740993",
    "1.7976931348623157e308",
    "4.9e-324",
    "9.789462500877e12",
    "1e13",
    "\"1e27\"",
    "\"-1e27\"",
    "\"79228162514264337593543950335\"",
    "\"-79228162514264337593543950335\"",
    "\"7.9228162514264337593543950335\"",
    "\"1e400\"",
    "\"1e-400\"",
    "\"-0\"",
    "\"0.530\"",
    "\"NaN\"",
    "\"inf\"",
    "\"\"",
    "\" \"",
    "\"-\"",
    "\"../\"",
    "\"../../etc/passwd\"",
    "\"..\"",
    "\".\"",
    "\"\\ud800\"",
    "\"a\\udc00b\"",
    "\"\\ud83d\\ude00\"",
    "\"\\u0000\"",
    "\"\\u00fc\"",
    "\"\u{FFFD}\"",
    "\"\u{1F600}\u{1F600}\"",
    "\"null\"",
    "\"2024-06-29T10:15:00.123456\"",
    "\"2024-06-29 10:15:00\"",
    "\"2024-06-29\"",
    "\"2024-06-29T10:15:30+02:00\"",
    "\"2024-03-31T02:30:00\"",
    "\"2024-03-31 02:30:00\"",
    "\"2024-10-27T02:30:00\"",
    "\"+262142-12-31T23:59:59\"",
    "\"262142-12-31T23:59:59\"",
    "\"-262143-01-01T00:00:00\"",
    "\"-262143-01-01\"",
    "\"262142-12-31\"",
    "\"9999-12-31T23:59:59+14:00\"",
    "\"0000-01-01T00:00:00-14:00\"",
    "\"+262142-12-31T23:59:59-23:59\"",
    "\"2024-02-30T10:00:00\"",
    "\"EUR\"",
    "\"eur\"",
    "\"NL\"",
    "\"nl\"",
    "\"N\u{130}\"",
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "[null]",
    "{\"id\":null}",
    "{\"id\":\"\"}",
];

/// XML texts (element content) that have broken, or could break, the SOAP
/// reader or the MplusKASSA mapper: numbers at and beyond `i64`, scales
/// beyond `Decimal`'s 28, impossible dates and offsets, entities XML does
/// not define, markup out of place.
pub const XML_HOSTILE: &[&str] = &[
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "99999999999999999999",
    "4294967295",
    "4294967296",
    "2147483647",
    "-2147483648",
    "0",
    "-0",
    "-1",
    "1",
    "28",
    "29",
    "255",
    "1e3",
    "0x10",
    " 12 ",
    "",
    " ",
    "../",
    "true",
    "false",
    "&foo;",
    "&amp;",
    "&#0;",
    "&#xD800;",
    "&#x110000;",
    "<![CDATA[7]]>",
    "<!-- c -->7",
    "]]>",
    "<",
    "&",
    "<ns1:line>",
    "</ns1:order>",
    "\u{FFFD}",
    "VAT-METHOD-INCLUSIVE",
    "VAT-METHOD-EXCLUSIVE",
    "VAT-METHOD-SHIFTED",
    "LINE-TYPE-PREPARATION",
    "LINE-TYPE-COMPONENT",
    "LINE-TYPE-NONE",
    "ORDER-CANCEL-STATE-COMPLETE",
    "NL",
    "nl",
];

/// A JSON value or an XML element's content, as a tree to edit.
#[derive(Clone, Debug)]
pub enum Node {
    /// A scalar as its text: a JSON token (possibly one serde_json refuses)
    /// or an element's text content (possibly markup).
    Leaf(String),
    /// A JSON array.
    List(Vec<Node>),
    /// A JSON object, or an XML element's children; a name may repeat.
    Map(Vec<(String, Node)>),
}

/// An element being read: its name, its children so far, its text so far.
type Open = (String, Vec<(String, Node)>, String);

/// One change to a [`Node`] tree, at a node chosen by an [`Index`].
#[derive(Clone, Debug)]
pub enum Edit {
    Replace(Node),
    /// The node leaves its parent.
    Remove,
    /// The node appears twice in its parent.
    Duplicate,
    /// A member (or item) added to the node.
    Insert(String, Node),
}

impl Node {
    pub fn from_json(v: &Value) -> Node {
        match v {
            Value::Array(a) => Node::List(a.iter().map(Node::from_json).collect()),
            Value::Object(o) => Node::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
            scalar => Node::Leaf(scalar.to_string()),
        }
    }

    /// An element tree from well-formed XML (a seed file): each element is
    /// a member of its parent under its local name; text-only elements are
    /// leaves (their text as written, entities and all).
    pub fn from_xml(xml: &str) -> Node {
        let mut reader = quick_xml::Reader::from_str(xml);
        // The open elements: name, children so far, text so far.
        let mut stack: Vec<Open> = vec![(String::new(), Vec::new(), String::new())];
        let local = |name: &[u8]| {
            let n = String::from_utf8_lossy(name).to_string();
            n.rsplit(':').next().unwrap_or_default().to_string()
        };
        loop {
            let start = reader.buffer_position() as usize;
            match reader.read_event() {
                Ok(Event::Start(s)) => {
                    stack.push((local(s.name().as_ref()), Vec::new(), String::new()))
                }
                Ok(Event::Empty(s)) => {
                    if let Some(top) = stack.last_mut() {
                        top.1
                            .push((local(s.name().as_ref()), Node::Leaf(String::new())));
                    }
                }
                Ok(Event::Text(_) | Event::GeneralRef(_) | Event::CData(_)) => {
                    let end = reader.buffer_position() as usize;
                    if let Some(top) = stack.last_mut() {
                        top.2.push_str(xml.get(start..end).unwrap_or_default());
                    }
                }
                Ok(Event::End(_)) => {
                    if stack.len() < 2 {
                        break;
                    }
                    let Some((name, children, text)) = stack.pop() else {
                        break;
                    };
                    let node = if children.is_empty() {
                        Node::Leaf(text.trim().to_string())
                    } else {
                        Node::Map(children)
                    };
                    if let Some(top) = stack.last_mut() {
                        top.1.push((name, node));
                    }
                }
                Ok(Event::Eof) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Node::Map(stack.swap_remove(0).1)
    }

    /// As JSON text (object keys escaped, leaves as they are).
    pub fn json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Node::Leaf(t) => out.push_str(t),
            Node::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Node::Map(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// As XML content: each member an element `<prefix:name>`; list items
    /// one after the other; leaves as they are (markup and all).
    pub fn xml(&self, prefix: &str) -> String {
        let mut out = String::new();
        self.write_xml(prefix, &mut out);
        out
    }

    fn write_xml(&self, prefix: &str, out: &mut String) {
        match self {
            Node::Leaf(t) => out.push_str(t),
            Node::List(items) => items.iter().for_each(|i| i.write_xml(prefix, out)),
            Node::Map(members) => {
                for (name, v) in members {
                    out.push_str(&format!("<{prefix}{name}>"));
                    v.write_xml(prefix, out);
                    out.push_str(&format!("</{prefix}{name}>"));
                }
            }
        }
    }

    /// Every node's path from the root (the root's is empty), in preorder.
    fn paths(&self) -> Vec<Vec<usize>> {
        fn walk(n: &Node, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            out.push(path.clone());
            let children: Vec<&Node> = match n {
                Node::Leaf(_) => Vec::new(),
                Node::List(items) => items.iter().collect(),
                Node::Map(members) => members.iter().map(|(_, v)| v).collect(),
            };
            for (i, c) in children.into_iter().enumerate() {
                path.push(i);
                walk(c, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    fn at_mut(&mut self, path: &[usize]) -> Option<&mut Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        let child = match self {
            Node::Leaf(_) => return None,
            Node::List(items) => items.get_mut(*first)?,
            Node::Map(members) => &mut members.get_mut(*first)?.1,
        };
        child.at_mut(rest)
    }

    /// Applies `edit` at the node `at` picks.
    pub fn edit(&mut self, at: &Index, edit: &Edit) {
        let n = at.index(self.paths().len());
        self.edit_nth(n, edit);
    }

    /// Applies `edit` at the `n`th node in preorder (the root is the 0th).
    pub fn edit_nth(&mut self, n: usize, edit: &Edit) {
        let Some(path) = self.paths().get(n).cloned() else {
            return;
        };
        match edit {
            Edit::Replace(n) => {
                if let Some(node) = self.at_mut(&path) {
                    *node = n.clone();
                }
            }
            Edit::Insert(k, n) => match self.at_mut(&path) {
                Some(Node::Map(members)) => members.push((k.clone(), n.clone())),
                Some(Node::List(items)) => items.push(n.clone()),
                Some(leaf) => *leaf = Node::Map(vec![(k.clone(), n.clone())]),
                None => {}
            },
            Edit::Remove | Edit::Duplicate => {
                let Some((&i, parent)) = path.split_last() else {
                    return;
                };
                let remove = matches!(edit, Edit::Remove);
                match self.at_mut(parent) {
                    Some(Node::List(items)) if i < items.len() => {
                        if remove {
                            items.remove(i);
                        } else {
                            items.insert(i, items[i].clone());
                        }
                    }
                    Some(Node::Map(members)) if i < members.len() => {
                        if remove {
                            members.remove(i);
                        } else {
                            members.insert(i, members[i].clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A name for a JSON member or an XML element: mostly the connector's own.
fn name(fields: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(fields).prop_map(str::to_string),
        1 => "[a-zA-Z_]{0,10}",
    ]
    .boxed()
}

/// A JSON value: hostile leaves, the connector's own words as values,
/// numbers and text of any kind, containers of them (bounded: at most 4
/// levels of containers here, 64 nodes), and now and then nesting deeper
/// than serde_json's limit of 128.
pub fn json_value(fields: &'static [&'static str]) -> BoxedStrategy<Node> {
    let leaf = prop_oneof![
        8 => select(JSON_HOSTILE).prop_map(|t| Node::Leaf(t.to_string())),
        2 => any::<i64>().prop_map(|n| Node::Leaf(n.to_string())),
        2 => (any::<i64>(), 0u32..=30).prop_map(|(m, e)| Node::Leaf(format!("{m}e-{e}"))),
        1 => any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| Node::Leaf(format!("{f:?}"))),
        3 => "\\PC{0,16}".prop_map(|s| Node::Leaf(serde_json::to_string(&s).unwrap_or_default())),
        2 => select(fields).prop_map(|f| Node::Leaf(format!("\"{f}\""))),
        1 => (100usize..=200)
            .prop_map(|d| Node::Leaf(format!("{}1{}", "[".repeat(d), "]".repeat(d)))),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Node::List),
            prop::collection::vec((name(fields), inner), 0..8).prop_map(Node::Map),
        ]
    })
    .boxed()
}

/// XML element content: hostile texts, numbers, any text (escaped or not),
/// the connector's own words, and elements of them (bounded like
/// [`json_value`]), now and then nesting a few hundred levels deep.
pub fn xml_content(fields: &'static [&'static str]) -> BoxedStrategy<Node> {
    let leaf = prop_oneof![
        8 => select(XML_HOSTILE).prop_map(|t| Node::Leaf(t.to_string())),
        3 => any::<i64>().prop_map(|n| Node::Leaf(n.to_string())),
        2 => "\\PC{0,16}".prop_map(|s| Node::Leaf(quick_xml::escape::escape(&s).to_string())),
        1 => "\\PC{0,16}".prop_map(Node::Leaf),
        1 => select(fields).prop_map(|f| Node::Leaf(f.to_string())),
        1 => (100usize..=300).prop_map(|d| {
            let open = "<ns1:line><ns1:lineId>x</ns1:lineId><ns1:articleNumber>1</ns1:articleNumber><ns1:data><ns1:quantity>1</ns1:quantity><ns1:price>1</ns1:price></ns1:data><ns1:preparationList>";
            let close = "</ns1:preparationList></ns1:line>";
            Node::Leaf(format!("{}{}", open.repeat(d), close.repeat(d)))
        }),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop::collection::vec((name(fields), inner), 0..8).prop_map(Node::Map)
    })
    .boxed()
}

fn edit(value: BoxedStrategy<Node>, fields: &'static [&'static str]) -> BoxedStrategy<Edit> {
    prop_oneof![
        5 => value.clone().prop_map(Edit::Replace),
        1 => Just(Edit::Remove),
        2 => Just(Edit::Duplicate),
        2 => (name(fields), value).prop_map(|(k, v)| Edit::Insert(k, v)),
    ]
    .boxed()
}

/// A template (a valid order) with 1 to 4 [`Edit`]s, each at a random node.
pub fn edited(
    templates: Vec<Node>,
    value: BoxedStrategy<Node>,
    fields: &'static [&'static str],
) -> BoxedStrategy<Node> {
    (
        select(templates),
        prop::collection::vec((any::<Index>(), edit(value, fields)), 1..=4),
    )
        .prop_map(|(mut node, edits)| {
            for (at, e) in &edits {
                node.edit(at, e);
            }
            node
        })
        .boxed()
}

/// A hostile order as JSON text: mostly a template edited, sometimes an
/// object made up from the connector's field names.
pub fn json_order(templates: Vec<Node>, fields: &'static [&'static str]) -> BoxedStrategy<String> {
    let value = json_value(fields);
    prop_oneof![
        4 => edited(templates, value.clone(), fields).prop_map(|n| n.json()),
        1 => prop::collection::vec((name(fields), value), 0..12).prop_map(|m| Node::Map(m).json()),
    ]
    .boxed()
}

/// One change to the bytes of an input.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    /// A scalar value (JSON) or a text node (XML) replaced by a hostile one.
    Splice(Index, Index),
    /// An object in an array (JSON) or an `<order>`/`<line>` (XML) twice.
    DuplicateItem(Index),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, h)| Mutation::Splice(i, h)),
        2 => any::<Index>().prop_map(Mutation::DuplicateItem),
    ]
    .boxed()
}

/// The kind of text a mutation works on.
#[derive(Clone, Copy, Debug)]
pub enum Syntax {
    Json,
    Xml,
}

impl Mutation {
    pub fn apply(&self, bytes: &mut Vec<u8>, syntax: Syntax) {
        let pos = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
        match self {
            Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            Mutation::FlipBit(..) => {}
            Mutation::Truncate(i) => bytes.truncate(pos(i, bytes.len())),
            Mutation::Insert(i, b) => {
                let at = pos(i, bytes.len());
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = pos(i, bytes.len());
                let end = (at + usize::from(*n)).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Splice(i, h) => {
                let spans = match syntax {
                    Syntax::Json => json_scalars(bytes),
                    Syntax::Xml => xml_texts(bytes),
                };
                if spans.is_empty() {
                    return;
                }
                let (start, end) = *i.get(&spans);
                let hostile = match syntax {
                    Syntax::Json => h.get(JSON_HOSTILE),
                    Syntax::Xml => h.get(XML_HOSTILE),
                };
                bytes.splice(start..end, hostile.bytes());
            }
            Mutation::DuplicateItem(i) => {
                let spans = match syntax {
                    Syntax::Json => json_array_objects(bytes),
                    Syntax::Xml => xml_items(bytes),
                };
                if spans.is_empty() {
                    return;
                }
                let (start, end) = *i.get(&spans);
                let copy: Vec<u8> = bytes[start..end].to_vec();
                let glue: &[u8] = match syntax {
                    Syntax::Json => b",",
                    Syntax::Xml => b"",
                };
                bytes.splice(end..end, glue.iter().chain(&copy).copied());
            }
        }
    }
}

/// Byte spans of JSON scalars (strings, numbers, literals) outside keys.
fn json_scalars(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let end = (i + 1).min(b.len());
                // A key is followed by a colon.
                let mut j = end;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if b.get(j) != Some(&b':') {
                    out.push((start, end));
                }
                i = end;
            }
            c if c == b'-' || c.is_ascii_alphanumeric() => {
                let start = i;
                while i < b.len()
                    && (b[i] == b'-'
                        || b[i] == b'+'
                        || b[i] == b'.'
                        || b[i].is_ascii_alphanumeric())
                {
                    i += 1;
                }
                out.push((start, i));
            }
            _ => i += 1,
        }
    }
    out
}

/// Byte spans of JSON objects that are items of an array.
fn json_array_objects(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // Open containers: (kind, start).
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            c @ (b'{' | b'[') => stack.push((c, i)),
            b'}' | b']' => {
                if let Some((kind, start)) = stack.pop()
                    && kind == b'{'
                    && stack.last().is_some_and(|(k, _)| *k == b'[')
                {
                    out.push((start, i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Byte spans of XML text content (between a `>` and the next `<`).
fn xml_texts(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in b.iter().enumerate() {
        match c {
            b'>' => start = Some(i + 1),
            b'<' => {
                if let Some(s) = start.take()
                    && b[s..i].iter().any(|c| !c.is_ascii_whitespace())
                {
                    out.push((s, i));
                }
            }
            _ => {}
        }
    }
    out
}

/// Byte spans of `<order>` and `<line>` elements (any prefix).
fn xml_items(b: &[u8]) -> Vec<(usize, usize)> {
    let Ok(text) = std::str::from_utf8(b) else {
        return Vec::new();
    };
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = false;
    let mut out = Vec::new();
    loop {
        let start = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(s)) => {
                let name = String::from_utf8_lossy(s.name().as_ref()).to_string();
                let local = name.rsplit(':').next().unwrap_or_default();
                if matches!(local, "order" | "line") {
                    let end = s.to_end().into_owned();
                    if reader.read_to_end(end.name()).is_err() {
                        break;
                    }
                    out.push((start, reader.buffer_position() as usize));
                    // Lines inside an order are found on a second look.
                    if local == "order" {
                        let inner = xml_items(&b[start + 1..reader.buffer_position() as usize]);
                        out.extend(
                            inner
                                .into_iter()
                                .map(|(s, e)| (s + start + 1, e + start + 1)),
                        );
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// An input: one of `bases` with 1 to 4 [`Mutation`]s, or arbitrary bytes,
/// or a soup of the syntax's own characters.
pub fn mutated(bases: Vec<Vec<u8>>, syntax: Syntax) -> BoxedStrategy<Vec<u8>> {
    let soup = match syntax {
        Syntax::Json => "[\\[\\]{}:,\"0-9eE.+\\-tfnrul\\\\ ]{0,256}",
        Syntax::Xml => "[<>/:=\"'&;!?\\[\\]a-zA-Z0-9 ]{0,256}",
    };
    prop_oneof![
        6 => (select(bases), prop::collection::vec(mutation(), 1..=4)).prop_map(move |(mut b, ms)| {
            for m in &ms {
                m.apply(&mut b, syntax);
            }
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..1024),
        1 => soup.prop_map(String::into_bytes),
    ]
    .boxed()
}

/// The vendor fixtures and seed files of connector `kind`, by file name.
pub fn seeds(kind: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for dir in [root.join("vendor").join(kind), root.join("fuzz").join(kind)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file()
                && let Ok(bytes) = std::fs::read(&path)
            {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no seed files for {kind}");
    out
}

/// The seed files' bytes, the mutations' bases.
pub fn bases(kind: &str) -> Vec<Vec<u8>> {
    seeds(kind).into_iter().map(|(_, b)| b).collect()
}

/// The seed file `tests/fixtures/fuzz/KIND/NAME` as JSON.
pub fn seed_json(kind: &str, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(kind)
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `read` on an input of `len` bytes and checks it returned in time.
pub fn bounded<T>(len: usize, read: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let started = Instant::now();
    let out = read();
    let took = started.elapsed();
    prop_assert!(
        took < TIME_LIMIT,
        "an input of {len} bytes took {took:?}, more than {TIME_LIMIT:?}"
    );
    Ok(out)
}

/// What a canonical order may weigh for an input of `len` bytes: a value
/// grows when it is written out (`1e27` is 28 digits and two decimals),
/// never by more than this.
pub fn amplified(len: usize) -> usize {
    16 * len + 4096
}

/// The properties of one order read from an input of `len` bytes.
pub fn check(o: &IncomingOrder, len: usize) -> Result<(), TestCaseError> {
    prop_assert!(!o.external_id.is_empty(), "an order without an id: {o:?}");
    match &o.mapped {
        Err(why) => {
            prop_assert!(
                !why.contains("ordersync could not map this order"),
                "the mapping panicked: {why}"
            );
            prop_assert!(!why.is_empty(), "a mapping error without a reason");
        }
        Ok(m) => {
            prop_assert_eq!(&m.order.external_id, &o.external_id);
            let json = m.order.to_json();
            let v: Value = serde_json::from_str(&json)
                .map_err(|e| TestCaseError::fail(format!("canonical JSON does not parse: {e}")))?;
            if let Some(path) = null_or_empty(&v, "") {
                return Err(TestCaseError::fail(format!(
                    "canonical JSON has null or \"\" at {path}: {json}"
                )));
            }
            prop_assert!(
                json.len() <= amplified(len),
                "an input of {len} bytes gave a canonical order of {} bytes",
                json.len()
            );
        }
    }
    Ok(())
}

/// The path of the first `null` or empty string in `v`.
fn null_or_empty(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Null => Some(path.to_string()),
        Value::String(s) if s.is_empty() => Some(path.to_string()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| null_or_empty(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            if k.is_empty() {
                return Some(format!("{path}.\"\""));
            }
            null_or_empty(x, &format!("{path}.{k}"))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use serde_json::json;

    #[test]
    fn edits_and_mutations_do_what_they_say() {
        let mut n = Node::from_json(&json!({"a": [1, {"b": 2}], "c": "x"}));
        // Preorder: 0 root, 1 a, 2 a[0], 3 a[1], 4 a[1].b, 5 c.
        n.edit_nth(3, &Edit::Duplicate);
        assert_eq!(n.json(), r#"{"a":[1,{"b":2},{"b":2}],"c":"x"}"#);
        n.edit_nth(6, &Edit::Replace(Node::Leaf("1e400".into())));
        n.edit_nth(1, &Edit::Remove);
        assert_eq!(n.json(), r#"{"c":"x"}"#);
        n.edit_nth(
            0,
            &Edit::Insert("d".into(), Node::Leaf("\"\\ud800\"".into())),
        );
        assert_eq!(n.json(), r#"{"c":"x","d":"\ud800"}"#);
        let at = || {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            any::<Index>().new_tree(&mut runner).unwrap().current()
        };

        let mut b = br#"{"items":[{"id":1},{"id":2}],"n":"5"}"#.to_vec();
        assert_eq!(json_array_objects(&b).len(), 2);
        assert_eq!(json_scalars(&b).len(), 3, "values, not keys");
        Mutation::DuplicateItem(at()).apply(&mut b, Syntax::Json);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 3);

        let xml = "<a:r><a:order><a:line>1</a:line><a:line>2</a:line></a:order></a:r>";
        assert_eq!(
            xml_items(xml.as_bytes()).len(),
            3,
            "the order and its two lines"
        );
        assert_eq!(xml_texts(xml.as_bytes()).len(), 2);
        let tree = Node::from_xml(xml);
        assert_eq!(
            tree.xml("a:"),
            "<a:r><a:order><a:line>1</a:line><a:line>2</a:line></a:order></a:r>"
        );
    }

    #[test]
    fn canonical_json_with_null_or_empty_text_is_named() {
        assert_eq!(
            null_or_empty(&json!({"a": [1, ""]}), ""),
            Some(".a[1]".into())
        );
        assert_eq!(
            null_or_empty(&json!({"a": {"b": null}}), ""),
            Some(".a.b".into())
        );
        assert_eq!(
            null_or_empty(&json!({"a": "null"}), ""),
            None,
            "text is data"
        );
    }
}
