//! The stored encoding of entities and attributes, written and read by hand.
//!
//! The encoding is the one rmp-serde gives the model's serde
//! implementations: positional MessagePack (a struct is an array of its
//! fields in order), names as numbers of the store's [`Names`] table (or
//! strings, see [`ngsi_model::names`]), an attribute's kind as a one-entry
//! map from the kind's number to its payload. rmp-serde stays the
//! reference:
//! - [`encode_entity`] writes the same bytes as rmp-serde (a property test
//!   compares them);
//! - the readers take the shapes that the writers produce and hand anything
//!   else to rmp-serde: the kind by name, arrays of fewer fields (older
//!   encodings), MessagePack types the model never writes, and damaged
//!   input, for which rmp-serde gives the error.
//!
//! One deliberate difference: when serde_json's `raw_value` feature is on
//! (axum turns it on in the server's build), a stored value object whose
//! first member is `$serde_json::private::RawValue` makes rmp-serde fail or
//! re-parse it; the codec keeps the object as it was stored.
//!
//! Why by hand: the serde path asks a thread-local scope for every name
//! and builds each value through visitors. Writing and reading stored
//! entities is on every write (the writer reads the entity it updates and
//! writes it back) and on every query answer.

use std::sync::Arc;

use ngsi_model::entity::{AttrExtra, AttrValue, Attribute, Entity, Iri, iri};
use ngsi_model::names::{NameList, Names};
use rmp::Marker;
use serde_json::{Map, Number, Value};

/// The encoding of `entity`, its names numbered in `names`.
pub fn encode_entity(names: &Names, entity: &Entity) -> Vec<u8> {
    encode_entity_reusing(names, entity, None).bytes
}

/// An entity's encoding and where each of its attributes lies in it.
#[derive(Debug)]
pub struct Encoded {
    /// The encoding, as [`encode_entity`] writes it.
    pub bytes: Vec<u8>,
    /// The end of each attribute's bytes (`[name, [instances]]`), in the
    /// entity's attribute order; the first starts at `attrs_start`.
    attr_ends: Vec<usize>,
    attrs_start: usize,
}

impl Encoded {
    fn attr_bytes(&self, i: usize) -> Option<&[u8]> {
        let start = match i {
            0 => self.attrs_start,
            _ => *self.attr_ends.get(i - 1)?,
        };
        let end = *self.attr_ends.get(i)?;
        self.bytes.get(start..end)
    }
}

/// Encodes `entity`, copying the bytes of every attribute it shares with
/// `prev` (an earlier version and that version's encoding) instead of
/// writing them again: an update that changes one attribute of ten writes
/// one. Shared means the same instance list ([`InstanceList::same`]) under
/// the same name at the same position; the result is always byte for byte
/// what [`encode_entity`] writes (a property test checks it).
///
/// [`InstanceList::same`]: ngsi_model::entity::InstanceList::same
pub fn encode_entity_reusing(
    names: &Names,
    entity: &Entity,
    prev: Option<(&Entity, &Encoded)>,
) -> Encoded {
    // Room for a typical entity up front: growing from empty reallocates
    // eight times on the way to a kilobyte.
    let mut out = Vec::with_capacity(prev.map_or(1024, |(_, p)| p.bytes.len() + 64));
    let e = entity;
    array_len(&mut out, if e.expires_at.is_some() { 7 } else { 6 });
    string(&mut out, &e.id);
    array_len(&mut out, e.types.len());
    for t in &e.types {
        name(&mut out, Some(names), t);
    }
    array_len(&mut out, e.scopes.len());
    for s in &e.scopes {
        string(&mut out, s);
    }
    array_len(&mut out, e.attrs.len());
    let attrs_start = out.len();
    let mut attr_ends = Vec::with_capacity(e.attrs.len());
    for (i, (n, instances)) in e.attrs.iter().enumerate() {
        let shared = prev.and_then(|(pe, pc)| {
            let (pn, pl) = pe.attrs.get(i)?;
            (pl.same(instances) && pn == n)
                .then(|| pc.attr_bytes(i))
                .flatten()
        });
        match shared {
            Some(bytes) => out.extend_from_slice(bytes),
            None => {
                array_len(&mut out, 2);
                name(&mut out, Some(names), n);
                array_len(&mut out, instances.len());
                for a in instances {
                    write_attribute(&mut out, Some(names), &AttrParts::of(a));
                }
            }
        }
        attr_ends.push(out.len());
    }
    int(&mut out, e.created_at);
    int(&mut out, e.modified_at);
    if let Some(x) = &e.expires_at {
        string(&mut out, x);
    }
    Encoded {
        bytes: out,
        attr_ends,
        attrs_start,
    }
}

/// The fields of an attribute to write, borrowed (a temporal instance
/// writes an attribute with some of them left out).
pub struct AttrParts<'a> {
    /// The kind and value.
    pub value: &'a AttrValue,
    /// The datasetId.
    pub dataset_id: Option<&'a str>,
    /// The observedAt, as given.
    pub observed_at: Option<&'a str>,
    /// The unitCode.
    pub unit_code: Option<&'a str>,
    /// createdAt, microseconds.
    pub created_at: i64,
    /// modifiedAt, microseconds.
    pub modified_at: i64,
    /// The sub-attributes.
    pub sub: &'a [(Iri, Attribute)],
    /// The rarer members.
    pub extra: Option<&'a AttrExtra>,
}

impl<'a> AttrParts<'a> {
    /// All of `a`.
    pub fn of(a: &'a Attribute) -> Self {
        Self {
            value: &a.value,
            dataset_id: a.dataset_id.as_deref(),
            observed_at: a.observed_at.as_deref(),
            unit_code: a.unit_code.as_deref(),
            created_at: a.created_at,
            modified_at: a.modified_at,
            sub: &a.sub,
            extra: a.extra.as_deref(),
        }
    }
}

/// Writes an attribute: its names numbered in `names`, or strings without
/// a table.
pub fn write_attribute(out: &mut Vec<u8>, names: Option<&Names>, a: &AttrParts<'_>) {
    array_len(out, if a.extra.is_some() { 8 } else { 7 });
    map_len(out, 1);
    uint(out, kind_number(a.value));
    match a.value {
        AttrValue::Property(v)
        | AttrValue::GeoProperty(v)
        | AttrValue::JsonProperty(v)
        | AttrValue::VocabProperty(v) => value(out, v),
        AttrValue::Relationship {
            object,
            object_type,
        } => {
            array_len(out, 2);
            value(out, object);
            optional_value(out, object_type.as_ref());
        }
        AttrValue::LanguageProperty(m) => object(out, m),
        AttrValue::ListProperty(items) => array(out, items),
        AttrValue::ListRelationship {
            objects,
            object_type,
        } => {
            array_len(out, 2);
            array(out, objects);
            optional_value(out, object_type.as_ref());
        }
    }
    match a.dataset_id {
        Some(d) => name(out, names, d),
        None => nil(out),
    }
    optional_string(out, a.observed_at);
    optional_string(out, a.unit_code);
    int(out, a.created_at);
    int(out, a.modified_at);
    array_len(out, a.sub.len());
    for (n, s) in a.sub {
        array_len(out, 2);
        name(out, names, n);
        write_attribute(out, names, &AttrParts::of(s));
    }
    if let Some(x) = a.extra {
        array_len(out, 2);
        optional_string(out, x.expires_at.as_deref());
        optional_string(out, x.value_type.as_deref());
    }
}

/// The number of an attribute's kind in the encoding: its place in
/// [`AttrValue`]'s declaration (see its `Serialize`).
#[inline(always)]
fn kind_number(v: &AttrValue) -> u64 {
    v.kind_index() as u64
}

// The smallest form of each length and integer, as `rmp`'s writers choose
// it (also used by the genesis rows, `genesis.rs`).

#[inline(always)]
pub(crate) fn array_len(out: &mut Vec<u8>, len: usize) {
    header(out, len, Some((0x90, 16)), None, [0xdc, 0xdd]);
}

#[inline(always)]
fn map_len(out: &mut Vec<u8>, len: usize) {
    header(out, len, Some((0x80, 16)), None, [0xde, 0xdf]);
}

#[inline(always)]
fn string(out: &mut Vec<u8>, s: &str) {
    header(out, s.len(), Some((0xa0, 32)), Some(0xd9), [0xda, 0xdb]);
    out.extend_from_slice(s.as_bytes());
}

/// The marker and length of an array, map, string or binary: the fixed
/// form (`fix` with the length in its low bits, below `limit`), else one
/// length byte after `marker8` (strings and binaries), else two or four
/// after `wide`'s markers.
#[inline(always)]
fn header(
    out: &mut Vec<u8>,
    len: usize,
    fix: Option<(u8, usize)>,
    marker8: Option<u8>,
    wide: [u8; 2],
) {
    match (fix, marker8) {
        (Some((fix, limit)), _) if len < limit => out.push(fix | len as u8),
        (_, Some(marker)) if len < 0x100 => out.extend_from_slice(&[marker, len as u8]),
        _ if len < 0x1_0000 => {
            out.push(wide[0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(wide[1]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

#[inline(always)]
fn uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..0x80 => out.push(n as u8),
        0x80..0x100 => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..0x1_0000 => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..0x1_0000_0000 => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A signed integer: a non-negative one in the unsigned forms.
#[inline(always)]
pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    match n {
        0.. => uint(out, n as u64),
        -32..0 => out.push(n as u8),
        -0x80..-32 => out.extend_from_slice(&[0xd0, n as u8]),
        -0x8000..-0x80 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -0x8000_0000..-0x8000 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

pub(crate) fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// A 64-bit float (serde and `rmp` never shorten one).
pub(crate) fn f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xcb);
    out.extend_from_slice(&f.to_be_bytes());
}

/// Binary data.
pub(crate) fn bin(out: &mut Vec<u8>, b: &[u8]) {
    header(out, b.len(), None, Some(0xc4), [0xc5, 0xc6]);
    out.extend_from_slice(b);
}

fn name(out: &mut Vec<u8>, names: Option<&Names>, n: &str) {
    match names {
        Some(names) => uint(out, u64::from(names.number_of(n))),
        None => string(out, n),
    }
}

fn optional_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => nil(out),
    }
}

/// An `Option<Value>` as serde writes it: `Some(v)` as `v`.
fn optional_value(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        Some(v) => value(out, v),
        None => nil(out),
    }
}

fn array(out: &mut Vec<u8>, items: &[Value]) {
    array_len(out, items.len());
    for v in items {
        value(out, v);
    }
}

fn object(out: &mut Vec<u8>, m: &Map<String, Value>) {
    map_len(out, m.len());
    for (k, v) in m {
        string(out, k);
        value(out, v);
    }
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => nil(out),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            // serde_json's order: an unsigned, else a signed, else a float.
            if let Some(u) = n.as_u64() {
                uint(out, u);
            } else if let Some(i) = n.as_i64() {
                int(out, i);
            } else {
                f64(out, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        Value::String(s) => string(out, s),
        Value::Array(items) => array(out, items),
        Value::Object(m) => object(out, m),
    }
}

/// Decodes a stored entity, its names numbered in `names` (or strings).
pub fn decode_entity(names: &Arc<Names>, bytes: &[u8]) -> Result<Entity, rmp_serde::decode::Error> {
    match Reader::new(bytes, Some(names)).entity() {
        Some(e) => Ok(e),
        None => names.scope(|| rmp_serde::from_slice(bytes)),
    }
}

/// Decodes an attribute written without a name table (names as strings).
pub fn decode_attribute(bytes: &[u8]) -> Result<Attribute, rmp_serde::decode::Error> {
    let mut r = Reader::new(bytes, None);
    match r.attribute().filter(|_| r.at_end()) {
        Some(a) => Ok(a),
        None => rmp_serde::from_slice(bytes),
    }
}

/// A cursor over an encoding. Every reader returns `None` for a shape it
/// does not take, and the caller hands the whole input to rmp-serde.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    names: Option<&'a Arc<Names>>,
    /// The table's names as first needed (taken again for a number past
    /// its end: a name numbered since).
    list: Option<Arc<NameList>>,
}

/// Values nested deeper than this, and sub-attributes deeper than
/// [`MAX_SUB_DEPTH`], are left to rmp-serde, so that a damaged input cannot
/// exhaust the stack here. Together they stay below rmp-serde's own bound
/// (1,023 arrays and maps, counted over the whole document: an entity's
/// first value sits 6 deep, each sub-attribute level adds 4), so the codec
/// never takes a document that rmp-serde refuses for its depth.
const MAX_DEPTH: usize = 256;

/// See [`MAX_DEPTH`]. Requests are parsed with a nesting limit of 64 by
/// default, far below this.
const MAX_SUB_DEPTH: usize = 64;

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], names: Option<&'a Arc<Names>>) -> Self {
        Self {
            bytes,
            at: 0,
            names,
            list: None,
        }
    }

    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn entity(&mut self) -> Option<Entity> {
        let fields = self.array_len()?;
        if !(6..=7).contains(&fields) {
            return None;
        }
        let id: Arc<str> = self.str()?.into();
        let n = self.array_len()?;
        let mut types = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            types.push(self.name()?);
        }
        let n = self.array_len()?;
        let mut scopes = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            scopes.push(self.str()?.into());
        }
        let attrs = self.named(|r| {
            let k = r.array_len()?;
            let mut instances = Vec::with_capacity(k.min(64));
            for _ in 0..k {
                instances.push(r.attribute()?);
            }
            Some(ngsi_model::entity::InstanceList::from(instances))
        })?;
        let created_at = self.int()?;
        let modified_at = self.int()?;
        let expires_at = match fields {
            7 => Some(self.str()?.into()),
            _ => None,
        };
        self.at_end().then_some(Entity {
            id,
            types,
            scopes,
            attrs,
            created_at,
            modified_at,
            expires_at,
        })
    }

    fn attribute(&mut self) -> Option<Attribute> {
        self.attribute_at(0)
    }

    fn attribute_at(&mut self, depth: usize) -> Option<Attribute> {
        if depth > MAX_SUB_DEPTH {
            return None;
        }
        let fields = self.array_len()?;
        if !(7..=8).contains(&fields) || self.map_len()? != 1 {
            return None;
        }
        // The derived reader of the kind takes unsigned forms only.
        let Int::U(kind) = self.integer()? else {
            return None;
        };
        let value = match kind {
            0 => AttrValue::Property(self.value(0)?),
            1 => {
                let (object, object_type) = self.object_and_type()?;
                AttrValue::Relationship {
                    object,
                    object_type,
                }
            }
            2 => AttrValue::GeoProperty(self.value(0)?),
            3 => AttrValue::LanguageProperty(self.object(0)?),
            4 => AttrValue::JsonProperty(self.value(0)?),
            5 => AttrValue::VocabProperty(self.value(0)?),
            6 => AttrValue::ListProperty(self.array(0)?),
            7 => {
                if self.array_len()? != 2 {
                    return None;
                }
                let objects = self.array(0)?;
                let object_type = self.optional_value()?;
                AttrValue::ListRelationship {
                    objects,
                    object_type,
                }
            }
            _ => return None,
        };
        let dataset_id = match self.peek()? {
            Marker::Null => {
                self.at += 1;
                None
            }
            _ => Some(self.name()?),
        };
        let observed_at = self.optional_str()?;
        let unit_code = self.optional_str()?;
        let created_at = self.int()?;
        let modified_at = self.int()?;
        let sub = self.named(|r| r.attribute_at(depth + 1))?;
        let extra = match fields {
            8 => {
                if self.array_len()? != 2 {
                    return None;
                }
                Some(Box::new(AttrExtra {
                    expires_at: self.optional_str()?,
                    value_type: self.optional_str()?,
                }))
            }
            _ => None,
        };
        Some(Attribute {
            value,
            dataset_id,
            observed_at,
            unit_code,
            created_at,
            modified_at,
            sub,
            extra,
        })
    }

    /// A list of `[name, item]` pairs (attributes, sub-attributes), as
    /// `ngsi_model::names::named` writes it.
    fn named<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<(Iri, T)>> {
        let n = self.array_len()?;
        let mut out = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            if self.array_len()? != 2 {
                return None;
            }
            let name = self.name()?;
            out.push((name, item(self)?));
        }
        Some(out)
    }

    fn object_and_type(&mut self) -> Option<(Value, Option<Value>)> {
        if self.array_len()? != 2 {
            return None;
        }
        Some((self.value(0)?, self.optional_value()?))
    }

    /// An `Option<Value>` as serde reads it: nil is `None`.
    fn optional_value(&mut self) -> Option<Option<Value>> {
        if self.peek()? == Marker::Null {
            self.at += 1;
            return Some(None);
        }
        Some(Some(self.value(0)?))
    }

    fn name(&mut self) -> Option<Iri> {
        match self.peek()? {
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                Some(iri(self.str()?))
            }
            _ => {
                let n = usize::try_from(self.uint()?).ok()?;
                let names = self.names?;
                if self.list.as_ref().is_none_or(|l| n >= l.len()) {
                    self.list = Some(names.snapshot());
                }
                self.list.as_ref()?.get(n).cloned()
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let marker = self.peek()?;
        Some(match marker {
            Marker::Null => {
                self.at += 1;
                Value::Null
            }
            Marker::True | Marker::False => {
                self.at += 1;
                Value::Bool(marker == Marker::True)
            }
            Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                Value::Number(self.uint()?.into())
            }
            Marker::FixNeg(_) | Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                Value::Number(self.int()?.into())
            }
            Marker::F32 => {
                self.at += 1;
                let b = self.take(4)?;
                float(f64::from(f32::from_be_bytes(b.try_into().ok()?)))
            }
            Marker::F64 => {
                self.at += 1;
                let b = self.take(8)?;
                float(f64::from_be_bytes(b.try_into().ok()?))
            }
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                Value::String(self.str()?.to_owned())
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                Value::Array(self.array(depth + 1)?)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                Value::Object(self.object(depth + 1)?)
            }
            _ => return None,
        })
    }

    fn array(&mut self, depth: usize) -> Option<Vec<Value>> {
        let n = self.array_len()?;
        // A damaged length cannot reserve more than the input could hold.
        let mut items = Vec::with_capacity(n.min(self.bytes.len() - self.at));
        for _ in 0..n {
            items.push(self.value(depth)?);
        }
        Some(items)
    }

    fn object(&mut self, depth: usize) -> Option<Map<String, Value>> {
        let n = self.map_len()?;
        let mut m = Map::with_capacity(n.min(self.bytes.len() - self.at));
        for _ in 0..n {
            let k = self.str()?.to_owned();
            let v = self.value(depth)?;
            m.insert(k, v);
        }
        Some(m)
    }

    fn peek(&self) -> Option<Marker> {
        self.bytes.get(self.at).map(|b| Marker::from_u8(*b))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn array_len(&mut self) -> Option<usize> {
        self.length(Counted::Array)
    }

    fn map_len(&mut self) -> Option<usize> {
        self.length(Counted::Map)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.length(Counted::Str)?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// The length after a marker of `what`; `None` after any other marker.
    fn length(&mut self, what: Counted) -> Option<usize> {
        use Counted::{Array, Map, Str};
        let marker = self.peek()?;
        self.at += 1;
        let n = match (what, marker) {
            (Array, Marker::FixArray(n)) | (Map, Marker::FixMap(n)) | (Str, Marker::FixStr(n)) => {
                u64::from(n)
            }
            (Str, Marker::Str8) => self.be(1)?,
            (Array, Marker::Array16) | (Map, Marker::Map16) | (Str, Marker::Str16) => self.be(2)?,
            (Array, Marker::Array32) | (Map, Marker::Map32) | (Str, Marker::Str32) => self.be(4)?,
            _ => return None,
        };
        usize::try_from(n).ok()
    }

    fn optional_str(&mut self) -> Option<Option<Arc<str>>> {
        if self.peek()? == Marker::Null {
            self.at += 1;
            return Some(None);
        }
        Some(Some(self.str()?.into()))
    }

    /// A non-negative integer of any integer type.
    fn uint(&mut self) -> Option<u64> {
        match self.integer()? {
            Int::U(u) => Some(u),
            Int::I(i) => u64::try_from(i).ok(),
        }
    }

    /// An integer of any integer type that fits an `i64`.
    fn int(&mut self) -> Option<i64> {
        match self.integer()? {
            Int::U(u) => i64::try_from(u).ok(),
            Int::I(i) => Some(i),
        }
    }

    fn integer(&mut self) -> Option<Int> {
        let marker = self.peek()?;
        self.at += 1;
        Some(match marker {
            Marker::FixPos(n) => Int::U(u64::from(n)),
            Marker::FixNeg(n) => Int::I(i64::from(n)),
            Marker::U8 => Int::U(self.be(1)?),
            Marker::U16 => Int::U(self.be(2)?),
            Marker::U32 => Int::U(self.be(4)?),
            Marker::U64 => Int::U(self.be(8)?),
            Marker::I8 => Int::I(i64::from(self.be(1)? as u8 as i8)),
            Marker::I16 => Int::I(i64::from(self.be(2)? as u16 as i16)),
            Marker::I32 => Int::I(i64::from(self.be(4)? as u32 as i32)),
            Marker::I64 => Int::I(self.be(8)? as i64),
            _ => return None,
        })
    }
}

enum Int {
    U(u64),
    I(i64),
}

/// What a length belongs to.
#[derive(Clone, Copy)]
enum Counted {
    Array,
    Map,
    Str,
}

/// A float as serde_json reads one: not finite is null.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests;
