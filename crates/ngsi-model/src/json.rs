//! A JSON document that borrows its strings from the request body.
//!
//! The write path reads an entity once, into the model: building a
//! `serde_json::Value` on the way costs a hash map per object and an
//! allocation per string, half of what parsing a batch costs the server.
//! [`Json`] keeps objects as member lists in document order and strings as
//! slices of the body (owned only when they hold escapes); the parser
//! ([`crate::parse`]) reads either through [`JsonDoc`], and only the values
//! that the model keeps (property values, geometries) become `Value`s.
//!
//! The text is read by a parser of this module that builds the tree
//! directly. Built through `serde_json`'s visitor, the same tree took
//! about twice the instructions (docs/benchmarks.md, session 15); the
//! property tests below hold it to `serde_json`'s verdict on any text.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de;
use serde_json::{Map, Number, Value};

/// A parsed JSON document whose strings borrow from the text it was parsed
/// from. Objects keep their members in document order; a repeated member
/// keeps its first position and its last value, as `serde_json` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object: members in document order, each name once.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `text`, borrowing its strings (nested at most
    /// [`MAX_NESTING`] deep).
    pub fn from_slice(text: &'a [u8]) -> serde_json::Result<Self> {
        Self::from_slice_nested(text, usize::MAX)
    }

    /// Parses `text`, borrowing its strings, refusing objects and arrays
    /// nested more than `max_depth` deep (the outermost is depth 1). The
    /// limit is checked while parsing: no pass over the text before. No
    /// limit goes beyond [`MAX_NESTING`].
    pub fn from_slice_nested(text: &'a [u8], max_depth: usize) -> serde_json::Result<Self> {
        match std::str::from_utf8(text) {
            Ok(text) => Parser::parse(text, max_depth),
            Err(e) => Err(de::Error::custom(format!(
                "invalid UTF-8 at byte {}",
                e.valid_up_to()
            ))),
        }
    }
}

/// Read access to a JSON document, implemented by `serde_json::Value` and
/// by [`Json`], so that the parser reads both.
pub trait JsonDoc: Sized {
    /// The string, if this is one.
    fn as_str(&self) -> Option<&str>;
    /// Whether this is `null`.
    fn is_null(&self) -> bool;
    /// The items, if this is an array.
    fn as_array(&self) -> Option<&[Self]>;
    /// Whether this is an object.
    fn is_object(&self) -> bool;
    /// The member `key`, if this is an object that has it.
    fn get(&self, key: &str) -> Option<&Self>;
    /// The members in document order (none if this is not an object).
    fn members(&self) -> impl Iterator<Item = (&str, &Self)>;
    /// The number of members (0 if this is not an object).
    fn member_count(&self) -> usize;
    /// An owned copy as a `Value`.
    fn to_value(&self) -> Value;
}

impl JsonDoc for Value {
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn as_array(&self) -> Option<&[Self]> {
        Value::as_array(self).map(Vec::as_slice)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Value::Object(m) => m.get(key),
            _ => None,
        }
    }
    fn members(&self) -> impl Iterator<Item = (&str, &Self)> {
        // An iterator of the map itself, which knows its length (the
        // parser sizes its lookups by it).
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        self.as_object()
            .unwrap_or(&EMPTY)
            .iter()
            .map(|(k, v)| (k.as_str(), v))
    }
    fn member_count(&self) -> usize {
        self.as_object().map_or(0, Map::len)
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl JsonDoc for Json<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
    fn as_array(&self) -> Option<&[Self]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }
    fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn members(&self) -> impl Iterator<Item = (&str, &Self)> {
        let members: &[(Cow<'_, str>, Json<'_>)] = match self {
            Json::Object(members) => members,
            _ => &[],
        };
        members.iter().map(|(k, v)| (&**k, v))
    }
    fn member_count(&self) -> usize {
        match self {
            Json::Object(members) => members.len(),
            _ => 0,
        }
    }
    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(JsonDoc::to_value).collect()),
            Json::Object(members) => {
                let mut map = Map::with_capacity(members.len());
                for (k, v) in members {
                    map.insert(k.to_string(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// Objects up to this many members find a repeated name by scanning; larger
/// ones keep a map, so that no document costs quadratic time.
const SCAN_MEMBERS: usize = 32;

/// Whether two values are equal but for floats a unit in the last place
/// apart: what `serde_json`'s default reading of a float may differ by from
/// the correctly rounded one that [`Json`] reads (for tests that hold the
/// two parsers to each other).
pub fn equal_but_for_float_rounding(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(x, y)| equal_but_for_float_rounding(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal_but_for_float_rounding(v, w)))
        }
        _ => a == b,
    }
}

/// The deepest nesting any document may have, whatever the caller allows:
/// the parser descends once per level of objects and arrays.
pub const MAX_NESTING: usize = 512;

/// A JSON parser over validated UTF-8 text, building [`Json`] directly.
/// Grammar of RFC 8259; numbers become the `Number`s `serde_json` makes
/// (integers as `u64`/`i64`, else `f64`, correctly rounded).
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

/// Bytes that end the plain run of a string: the quote, the backslash and
/// the control characters.
static STRING_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

impl<'a> Parser<'a> {
    fn parse(text: &'a str, max_depth: usize) -> serde_json::Result<Json<'a>> {
        let mut parser = Parser { text, at: 0 };
        let doc = parser.value(max_depth.min(MAX_NESTING))?;
        parser.skip_whitespace();
        match parser.at < text.len() {
            true => Err(parser.error("trailing characters")),
            false => Ok(doc),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    /// An error at the current place, with its line and column.
    fn error(&self, what: &str) -> serde_json::Error {
        let before = &self.bytes()[..self.at.min(self.text.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = self.at
            - before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
        de::Error::custom(format!("{what} at line {line} column {}", column + 1))
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Expects `byte` after optional whitespace and steps over it.
    fn expect(&mut self, byte: u8, what: &str) -> serde_json::Result<()> {
        self.skip_whitespace();
        match self.peek() {
            Some(b) if b == byte => {
                self.at += 1;
                Ok(())
            }
            None => Err(self.error("EOF while parsing")),
            Some(_) => Err(self.error(what)),
        }
    }

    /// A value with `left` more levels of objects and arrays allowed.
    fn value(&mut self, left: usize) -> serde_json::Result<Json<'a>> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(left),
            Some(b'[') => self.array(left),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected value")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Json<'a>) -> serde_json::Result<Json<'a>> {
        if self.bytes()[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("expected value"))
        }
    }

    fn enter(&self, left: usize) -> serde_json::Result<usize> {
        match left {
            0 => Err(self.error("the JSON nests too deeply")),
            left => Ok(left - 1),
        }
    }

    fn object(&mut self, left: usize) -> serde_json::Result<Json<'a>> {
        let inner = self.enter(left)?;
        self.at += 1;
        let mut members = Members::default();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(members.list));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("key must be a string"));
            }
            let key = self.string()?;
            self.expect(b':', "expected `:`")?;
            let value = self.value(inner)?;
            members.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(members.list));
                }
                None => return Err(self.error("EOF while parsing an object")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, left: usize) -> serde_json::Result<Json<'a>> {
        let inner = self.enter(left)?;
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(inner)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                None => return Err(self.error("EOF while parsing a list")),
                Some(_) => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// Steps over plain string bytes, returning where the run ends.
    fn plain_run(&mut self) -> usize {
        let bytes = self.bytes();
        let mut at = self.at;
        while let Some(&b) = bytes.get(at) {
            if STRING_SPECIAL[b as usize] {
                break;
            }
            at += 1;
        }
        self.at = at;
        at
    }

    /// A string (the parser is at its opening quote): borrowed from the
    /// text unless it holds an escape.
    fn string(&mut self) -> serde_json::Result<Cow<'a, str>> {
        self.at += 1;
        let start = self.at;
        let end = self.plain_run();
        // Both ends sit next to ASCII bytes: character boundaries.
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                return Ok(Cow::Borrowed(&self.text[start..end]));
            }
            Some(b'\\') => {}
            None => return Err(self.error("EOF while parsing a string")),
            Some(_) => return Err(self.error("control character in a string")),
        }
        let mut out = String::with_capacity(end - start + 16);
        out.push_str(&self.text[start..end]);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.at += 1;
                    self.escape(&mut out)?;
                }
                None => return Err(self.error("EOF while parsing a string")),
                Some(_) => return Err(self.error("control character in a string")),
            }
            let run = self.at;
            let end = self.plain_run();
            out.push_str(&self.text[run..end]);
        }
    }

    /// One escape (the parser is past its backslash).
    fn escape(&mut self, out: &mut String) -> serde_json::Result<()> {
        let Some(kind) = self.peek() else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.at += 1;
        let c = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        if !self.bytes()[self.at..].starts_with(b"\\u") {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        self.at += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(code)
                            .ok_or_else(|| self.error("invalid unicode code point"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error("unexpected end of hex escape"));
                    }
                    code => char::from_u32(code)
                        .ok_or_else(|| self.error("invalid unicode code point"))?,
                }
            }
            _ => return Err(self.error("invalid escape")),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> serde_json::Result<u32> {
        let digits = self
            .bytes()
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("EOF while parsing a string"))?;
        let mut code = 0;
        for d in digits {
            let v = (*d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid escape"))?;
            code = code * 16 + v;
        }
        self.at += 4;
        Ok(code)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> serde_json::Result<Json<'a>> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        let text = &self.text[start..self.at];
        if integer {
            // As serde_json: `-0` is the float -0.0, integers beyond 64
            // bits are floats.
            let n = match negative {
                true => text
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n != 0)
                    .map(Number::from),
                false => text.parse::<u64>().ok().map(Number::from),
            };
            if let Some(n) = n {
                return Ok(Json::Number(n));
            }
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Json::Number)
            .ok_or_else(|| self.error("number out of range"))
    }
}

/// The members of an object being read: each name once, in the place it
/// first had, with the last value given for it (as `serde_json` keeps a
/// repeated member). Small objects find a repeated name by scanning; larger
/// ones keep a map, so that no document costs quadratic time.
struct Members<'a> {
    list: Vec<(Cow<'a, str>, Json<'a>)>,
    positions: Option<HashMap<Cow<'a, str>, usize>>,
}

impl Default for Members<'_> {
    fn default() -> Self {
        // An attribute has about five members: room for eight saves the
        // reallocations of growing from empty.
        Self {
            list: Vec::with_capacity(8),
            positions: None,
        }
    }
}

impl<'a> Members<'a> {
    fn insert(&mut self, key: Cow<'a, str>, value: Json<'a>) {
        let at = match &self.positions {
            Some(positions) => positions.get(&key).copied(),
            None => self.list.iter().position(|(k, _)| *k == key),
        };
        if let Some(i) = at {
            self.list[i].1 = value;
            return;
        }
        if let Some(positions) = &mut self.positions {
            positions.insert(key.clone(), self.list.len());
        } else if self.list.len() == SCAN_MEMBERS {
            let mut index: HashMap<Cow<'a, str>, usize> = self
                .list
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            index.insert(key.clone(), self.list.len());
            self.positions = Some(index);
        }
        self.list.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = br#"{"id":"urn:a","name":"caf\u00e9","n":[1,-2,3.5,true,null]}"#;
        let doc = Json::from_slice(text).unwrap();
        assert!(matches!(
            doc.get("id"),
            Some(Json::String(Cow::Borrowed("urn:a")))
        ));
        assert!(matches!(doc.get("name"), Some(Json::String(Cow::Owned(s))) if s == "café"));
        assert_eq!(
            doc.to_value(),
            json!({"id":"urn:a","name":"café","n":[1,-2,3.5,true,null]})
        );
    }

    #[test]
    fn a_repeated_member_keeps_its_first_place_and_last_value_in_small_and_large_objects() {
        for members in [3, 100] {
            let mut text = String::from("{");
            for i in 0..members {
                text.push_str(&format!("\"m{i}\":{i},"));
            }
            text.push_str("\"m1\":\"last\"}");
            let doc = Json::from_slice(text.as_bytes()).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(doc.to_value(), value);
            assert_eq!(doc.member_count(), members);
            let names: Vec<&str> = doc.members().map(|(k, _)| k).collect();
            assert_eq!(names[1], "m1");
            assert_eq!(doc.get("m1").and_then(JsonDoc::as_str), Some("last"));
        }
    }

    #[test]
    fn nesting_is_limited_while_parsing() {
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        assert!(Json::from_slice_nested(nested(3).as_bytes(), 3).is_ok());
        assert!(Json::from_slice_nested(nested(4).as_bytes(), 3).is_err());
        assert!(Json::from_slice_nested(br#"{"a":{"b":[1]}}"#, 3).is_ok());
        assert!(Json::from_slice_nested(br#"{"a":{"b":[{}]}}"#, 3).is_err());
        assert!(Json::from_slice_nested(b"7", 0).is_ok());
        assert!(Json::from_slice_nested(b"{}", 0).is_err());
    }

    #[test]
    fn invalid_text_is_an_error() {
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1}x",
            "nul",
            "\"\\x\"",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "[1 2]",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1,}",
            "\"\t\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "1e400",
            "-1e400",
            "\"abc",
            "[",
            "[1",
            "{\"a\":",
        ] {
            assert!(Json::from_slice(text.as_bytes()).is_err(), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }

    /// Numbers, escapes and whitespace read as `serde_json` reads them.
    #[test]
    fn edge_cases_read_as_serde_json_does() {
        for text in [
            "-0",
            "0",
            "-0.0",
            "1e2",
            "1E-2",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.1e-400",
            "123.456e7",
            " \t\r\n[ 1 , {\"a\" : \"b\" } ]\n",
            "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"\\ud83d\\ude00 and \\u00e9 and 粤\"",
            "\"\\u0000\"",
            "[true,false,null]",
            "{}",
            "[]",
        ] {
            let ours = Json::from_slice(text.as_bytes()).unwrap().to_value();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    /// However deep the text nests, parsing stops at a bound instead of
    /// exhausting the stack, even when the caller sets no limit.
    #[test]
    fn nesting_is_bounded_without_a_limit() {
        let deep = "[".repeat(100_000);
        assert!(Json::from_slice(deep.as_bytes()).is_err());
        let deep = "{\"a\":".repeat(100_000);
        assert!(Json::from_slice(deep.as_bytes()).is_err());
        let ok = "[".repeat(MAX_NESTING) + &"]".repeat(MAX_NESTING);
        assert!(Json::from_slice(ok.as_bytes()).is_ok());
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,4}", inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Parsing the text of any value gives the value `serde_json`
        /// reads from it.
        #[test]
        fn parses_as_serde_json_does(v in arb_value()) {
            let text = serde_json::to_vec(&v).unwrap();
            let doc = Json::from_slice(&text).unwrap();
            // Floats are read correctly rounded: the value comes back exactly.
            prop_assert_eq!(doc.to_value(), v);
        }

        /// Any bytes: the same verdict as `serde_json`, and the same value.
        #[test]
        fn any_bytes_parse_like_serde_json(text in prop::collection::vec(any::<u8>(), 0..64)) {
            let ours = Json::from_slice(&text).map(|d| d.to_value()).ok();
            let theirs: Option<Value> = serde_json::from_slice(&text).ok();
            prop_assert_eq!(ours, theirs);
        }

        /// Text made of JSON's own characters (far more often valid, or
        /// nearly): the same verdict as `serde_json`, and the same value.
        #[test]
        fn json_like_text_parses_like_serde_json(
            text in r#"[\[\]{}",: 0-9eE.+\-tfrulnsa\\/u\n\t]{0,48}"#
        ) {
            let ours = Json::from_slice(text.as_bytes()).map(|d| d.to_value());
            let theirs = serde_json::from_str::<Value>(&text);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} {:?}", ours, theirs);
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                prop_assert!(equal_but_for_float_rounding(&ours, &theirs), "{} {}", ours, theirs);
            }
        }

        /// The text of any value, with whitespace between its tokens.
        #[test]
        fn pretty_text_parses_back(v in arb_value()) {
            let text = serde_json::to_string_pretty(&v).unwrap();
            prop_assert_eq!(Json::from_slice(text.as_bytes()).unwrap().to_value(), v);
        }
    }
}
