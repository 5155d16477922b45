//! A JSON document that borrows its strings from the request body.
//!
//! The write path reads an entity once, into the model: building a
//! `serde_json::Value` on the way costs a hash map per object and an
//! allocation per string, half of what parsing a batch costs the server.
//! [`Json`] keeps objects as member lists in document order and strings as
//! slices of the body (owned only when they hold escapes); the parser
//! ([`crate::parse`]) reads either through [`JsonDoc`], and only the values
//! that the model keeps (property values, geometries) become `Value`s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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
    /// Parses `text`, borrowing its strings.
    pub fn from_slice(text: &'a [u8]) -> serde_json::Result<Self> {
        Self::from_slice_nested(text, usize::MAX)
    }

    /// Parses `text`, borrowing its strings, refusing objects and arrays
    /// nested more than `max_depth` deep (the outermost is depth 1). The
    /// limit is checked while parsing: no pass over the text before.
    pub fn from_slice_nested(text: &'a [u8], max_depth: usize) -> serde_json::Result<Self> {
        // One pass of UTF-8 validation over the whole text is several times
        // cheaper than validating each string as the parser meets it.
        match std::str::from_utf8(text) {
            Ok(text) => parse_all(serde_json::Deserializer::from_str(text), max_depth),
            // Let the parser find and report the invalid byte.
            Err(_) => parse_all(serde_json::Deserializer::from_slice(text), max_depth),
        }
    }
}

/// Reads one document and nothing after it.
fn parse_all<'a, R: serde_json::de::Read<'a>>(
    mut de: serde_json::Deserializer<R>,
    max_depth: usize,
) -> serde_json::Result<Json<'a>> {
    let doc = JsonSeed { left: max_depth }.deserialize(&mut de)?;
    de.end()?;
    Ok(doc)
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

impl<'de> de::Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        JsonSeed { left: usize::MAX }.deserialize(deserializer)
    }
}

/// Reads one value with `left` more levels of objects and arrays allowed.
#[derive(Clone, Copy)]
struct JsonSeed {
    left: usize,
}

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(JsonVisitor { left: self.left })
    }
}

struct JsonVisitor {
    left: usize,
}

impl JsonVisitor {
    /// The seed of the values inside an object or array being entered.
    fn inner<E: de::Error>(&self) -> Result<JsonSeed, E> {
        match self.left {
            0 => Err(E::custom("the JSON nests too deeply")),
            left => Ok(JsonSeed { left: left - 1 }),
        }
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let inner = self.inner()?;
        // serde_json gives no size hints: start with room for a few, as
        // growing from empty reallocates at 4 and at 8.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(1024));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let inner = self.inner()?;
        // An attribute has about five members: room for eight saves the
        // reallocations of growing from empty.
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> = Vec::with_capacity(8);
        let mut positions: Option<HashMap<Cow<'de, str>, usize>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(inner)?;
            let at = match &mut positions {
                Some(positions) => positions.get(&key).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match at {
                Some(i) => members[i].1 = value,
                None => {
                    if let Some(positions) = &mut positions {
                        positions.insert(key.clone(), members.len());
                    } else if members.len() == SCAN_MEMBERS {
                        let mut index: HashMap<Cow<'de, str>, usize> = members
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect();
                        index.insert(key.clone(), members.len());
                        positions = Some(index);
                    }
                    members.push((key, value));
                }
            }
        }
        Ok(Json::Object(members))
    }
}

/// Reads an object member's name, borrowed when it holds no escape.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
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
        for text in ["", "{", "[1,]", "{\"a\":1}x", "nul", "\"\\x\""] {
            assert!(Json::from_slice(text.as_bytes()).is_err(), "{text}");
        }
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
            // As serde_json reads the text (a float may come back one unit
            // in the last place away from `v`, as it does for serde_json).
            let theirs: Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(doc.to_value(), theirs);
        }

        /// Any bytes: the same verdict as `serde_json`, and the same value.
        #[test]
        fn any_bytes_parse_like_serde_json(text in prop::collection::vec(any::<u8>(), 0..64)) {
            let ours = Json::from_slice(&text).map(|d| d.to_value()).ok();
            let theirs: Option<Value> = serde_json::from_slice(&text).ok();
            prop_assert_eq!(ours, theirs);
        }
    }
}
