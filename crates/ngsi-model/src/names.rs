//! Names as small numbers in the stored encoding.
//!
//! Every stored entity repeats its type and attribute names, expanded IRIs of
//! fifty bytes and more: in the benchmark's template entity they are about
//! 40% of the encoding. A [`Names`] table gives each name a number; inside
//! [`Names::scope`], entities and attributes serialize their types,
//! attribute names, sub-attribute names and datasetIds as those numbers, and
//! deserialize either form. Outside a scope (JSON, or a store without a
//! table) names are plain strings, so encodings written before the table
//! existed still read.
//!
//! Invariant: a number, once given, names the same IRI for the life of the
//! table. The table only grows; its owner persists the names from
//! [`Names::len`] on, in the transaction that stores the first encoding using
//! them (see [`Names::since`]).

use std::cell::RefCell;
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::entity::{Iri, iri};

/// A growing table of names (IRIs) and their numbers.
#[derive(Debug)]
pub struct Names {
    inner: RwLock<Inner>,
    /// Unique to this table in the process (see [`KNOWN`]).
    serial: u64,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Entries of one thread's [`KNOWN`] before it starts afresh.
const KNOWN_LIMIT: usize = 4096;

thread_local! {
    /// Numbers this thread has looked up, by table serial and the address
    /// and length of an interned IRI's text: a hit costs neither the
    /// table's lock nor hashing the text (which took the writer 5% of its
    /// time). Sound because interned texts are never freed (no other text
    /// can ever have that address) and a table never renumbers a name.
    static KNOWN: RefCell<FxHashMap<(u64, usize, usize), u32>> = RefCell::default();
}

#[derive(Debug, Default)]
struct Inner {
    /// Names by number, shared with the decoders in scope.
    list: Arc<NameList>,
    numbers: FxHashMap<Iri, u32>,
}

/// Names in segments of this many.
const SEGMENT: usize = 1024;

/// The names of a table by number, in segments of [`SEGMENT`]: a copy (made
/// when a name is added while a decoder holds the list) copies the segment
/// pointers and at most one segment, never every name, so a table of
/// hundreds of thousands of datasetIds still grows in constant time.
#[derive(Debug, Default, Clone)]
pub struct NameList {
    segments: Vec<Arc<Vec<Iri>>>,
    len: usize,
}

impl NameList {
    /// The name numbered `n`.
    pub fn get(&self, n: usize) -> Option<&Iri> {
        self.segments.get(n / SEGMENT)?.get(n % SEGMENT)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, name: Iri) {
        if self.len.is_multiple_of(SEGMENT) {
            self.segments.push(Arc::new(Vec::with_capacity(SEGMENT)));
        }
        if let Some(last) = self.segments.last_mut() {
            Arc::make_mut(last).push(name);
        }
        self.len += 1;
    }

    /// The names in number order.
    pub fn iter(&self) -> impl Iterator<Item = &Iri> {
        self.segments.iter().flat_map(|s| s.iter())
    }
}

impl Names {
    /// A table holding `list`, numbered by position (as persisted).
    pub fn from_list(list: Vec<Iri>) -> Self {
        let numbers = list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let mut names = NameList::default();
        for n in list {
            names.push(n);
        }
        Self {
            inner: RwLock::new(Inner {
                list: Arc::new(names),
                numbers,
            }),
            ..Self::default()
        }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.inner.read().list.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names numbered `from` and above, with their numbers.
    pub fn since(&self, from: usize) -> Vec<(u32, Iri)> {
        let inner = self.inner.read();
        (from..inner.list.len())
            .filter_map(|i| inner.list.get(i).map(|n| (i as u32, n.clone())))
            .collect()
    }

    /// The number of `name`, given now when it has none (also for
    /// in-memory indexes that number names: the owner persists it with the
    /// next commit like any other).
    pub fn number_of(&self, name: &str) -> u32 {
        let key = (self.serial, name.as_ptr() as usize, name.len());
        if let Some(n) = KNOWN.with(|k| k.borrow().get(&key).copied()) {
            return n;
        }
        let n = self.number_of_slow(name);
        if crate::entity::is_interned(name) {
            KNOWN.with(|k| {
                let mut k = k.borrow_mut();
                if k.len() >= KNOWN_LIMIT {
                    k.clear();
                }
                k.insert(key, n);
            });
        }
        n
    }

    fn number_of_slow(&self, name: &str) -> u32 {
        if let Some(n) = self.inner.read().numbers.get(name) {
            return *n;
        }
        let mut inner = self.inner.write();
        if let Some(n) = inner.numbers.get(name) {
            return *n;
        }
        let n = inner.list.len() as u32;
        let name = iri(name);
        Arc::make_mut(&mut inner.list).push(name.clone());
        inner.numbers.insert(name, n);
        n
    }

    fn list(&self) -> Arc<NameList> {
        self.inner.read().list.clone()
    }

    /// The number of `name`, if it has one.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.inner.read().numbers.get(name).copied()
    }

    /// The names by number, as they are now (later names are not in it).
    pub fn snapshot(&self) -> Arc<NameList> {
        self.list()
    }

    /// Runs `f` with this table in scope: names serialize as numbers and
    /// deserialize from either form (see the module documentation).
    pub fn scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        let previous = SCOPE.with(|s| {
            s.replace(Some(Scope {
                names: self.clone(),
                list: None,
            }))
        });
        // Restores the outer scope also when `f` unwinds.
        struct Restore(Option<Scope>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                SCOPE.with(|s| *s.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        f()
    }
}

struct Scope {
    names: Arc<Names>,
    /// The list as first read by a decode in this scope.
    list: Option<Arc<NameList>>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// The number of `name` in the table in scope, if any.
fn number_in_scope(name: &str) -> Option<u32> {
    SCOPE.with(|s| s.borrow().as_ref().map(|s| s.names.number_of(name)))
}

/// The name numbered `n` in the table in scope.
fn name_in_scope(n: u64) -> Result<Iri, String> {
    SCOPE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(scope) = s.as_mut() else {
            return Err(format!("name number {n} outside a name table"));
        };
        let i = usize::try_from(n).map_err(|_| format!("name number {n}"))?;
        let fresh = scope.list.as_ref().is_none_or(|l| i >= l.len());
        if fresh {
            scope.list = Some(scope.names.list());
        }
        scope
            .list
            .as_ref()
            .and_then(|l| l.get(i))
            .cloned()
            .ok_or_else(|| format!("unknown name number {n}"))
    })
}

/// Serializes a name: its number in scope, else the string.
struct NameRef<'a>(&'a str);

impl Serialize for NameRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match number_in_scope(self.0) {
            Some(n) => serializer.serialize_u32(n),
            None => serializer.serialize_str(self.0),
        }
    }
}

/// Deserializes a name from a number (in scope) or a string.
struct Name(Iri);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name or a name number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name(iri(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Name, E> {
                name_in_scope(v).map(Name).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Name, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a negative name number"))?;
                self.visit_u64(v)
            }
        }
        deserializer.deserialize_any(NameVisitor)
    }
}

/// `#[serde(with)]` for a list of names (entity types).
pub(crate) mod name_list {
    use super::*;

    pub fn serialize<S: Serializer>(names: &[Iri], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(names.iter().map(|n| NameRef(n)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Iri>, D::Error> {
        let names: Vec<Name> = Vec::deserialize(deserializer)?;
        Ok(names.into_iter().map(|n| n.0).collect())
    }
}

/// `#[serde(with)]` for an optional name (a datasetId: the few sources of
/// a multi-instance attribute recur in every entity that has it).
pub(crate) mod optional_name {
    use super::*;

    pub fn serialize<S: Serializer>(
        name: &Option<Arc<str>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match name {
            Some(n) => serializer.serialize_some(&NameRef(n)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Arc<str>>, D::Error> {
        let name: Option<Name> = Option::deserialize(deserializer)?;
        Ok(name.map(|n| n.0))
    }
}

/// `#[serde(with)]` for a list of named values (attributes,
/// sub-attributes): each pair a two-element sequence, as a tuple.
pub(crate) mod named {
    use super::*;

    pub fn serialize<S: Serializer, T: Serialize>(
        items: &[(Iri, T)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(items.len()))?;
        for (name, value) in items {
            seq.serialize_element(&(NameRef(name), value))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<(Iri, T)>, D::Error> {
        struct Items<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
            type Value = Vec<(Iri, T)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of named values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some((Name(name), value)) = seq.next_element::<(Name, T)>()? {
                    out.push((name, value));
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Items(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{AttrValue, Attribute, Entity};

    fn sample() -> Entity {
        let mut level = Attribute::new(AttrValue::Property(serde_json::json!(3)));
        level.dataset_id = Some("urn:example:dataset:a".into());
        level.sub.push((
            iri("https://example.org/accuracy"),
            Attribute::new(AttrValue::Property(serde_json::json!(0.5))),
        ));
        Entity {
            id: "urn:e:1".into(),
            types: vec![iri("https://example.org/T")],
            scopes: vec![],
            attrs: vec![(iri("https://example.org/level"), vec![level].into())],
            created_at: 1,
            modified_at: 2,
            expires_at: None,
        }
    }

    fn encode(e: &Entity) -> Vec<u8> {
        let mut out = Vec::new();
        e.serialize(&mut serde_json::Serializer::new(&mut out))
            .unwrap();
        out
    }

    #[test]
    fn each_table_answers_its_own_numbers_for_interned_names_and_copies() {
        // Two tables number the same interned names in opposite orders;
        // the thread's cache of numbers by address must keep them apart,
        // and a copy of a name (another address) must get the same number.
        let (x, y) = (iri("urn:names:test:x"), iri("urn:names:test:y"));
        let a = Names::default();
        let b = Names::default();
        assert_eq!((a.number_of(&x), a.number_of(&y)), (0, 1));
        assert_eq!((b.number_of(&y), b.number_of(&x)), (0, 1));
        for _ in 0..3 {
            assert_eq!((a.number_of(&x), a.number_of(&y)), (0, 1));
            assert_eq!((b.number_of(&x), b.number_of(&y)), (1, 0));
            let copy = String::from("urn:names:test:y");
            assert_eq!((a.number_of(&copy), b.number_of(&copy)), (1, 0));
        }
        // A table made from a persisted list has a serial of its own too.
        let c = Names::from_list(vec![y.clone(), x.clone()]);
        assert_eq!((c.number_of(&x), c.number_of(&y)), (1, 0));
        assert_eq!(a.number_of(&x), 0);
    }

    #[test]
    fn in_scope_names_are_numbers_and_read_back() {
        let names = Arc::new(Names::default());
        let e = sample();
        let bytes = names.scope(|| encode(&e));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("example"), "{text}");
        assert_eq!(names.len(), 4);
        let back: Entity = names.scope(|| serde_json::from_slice(&bytes).unwrap());
        assert_eq!(back, e);
        // Numbers outside the scope are an error, not a wrong name.
        assert!(serde_json::from_slice::<Entity>(&bytes).is_err());
    }

    #[test]
    fn strings_read_in_and_out_of_scope_and_numbers_persist() {
        let e = sample();
        let plain = encode(&e);
        assert!(String::from_utf8_lossy(&plain).contains("https://example.org/level"));
        let names = Arc::new(Names::default());
        let back: Entity = names.scope(|| serde_json::from_slice(&plain).unwrap());
        assert_eq!(back, e);
        // A table rebuilt from its persisted list reads what the first wrote.
        let bytes = names.scope(|| encode(&e));
        let persisted: Vec<Iri> = names.since(0).into_iter().map(|(_, n)| n).collect();
        let reopened = Arc::new(Names::from_list(persisted));
        let back: Entity = reopened.scope(|| serde_json::from_slice(&bytes).unwrap());
        assert_eq!(back, e);
        assert_eq!(names.since(2).len(), names.len() - 2);
    }

    #[test]
    fn many_names_span_segments_and_read_back() {
        let names = Arc::new(Names::default());
        let mut e = sample();
        // More datasetIds than a segment holds, each numbered once.
        let n = 3 * SEGMENT + 7;
        let template = e.attrs[0].1[0].clone();
        e.attrs[0].1 = (0..n)
            .map(|i| {
                let mut a = template.clone();
                a.dataset_id = Some(format!("urn:example:dataset:{i}").into());
                a
            })
            .collect();
        let bytes = names.scope(|| encode(&e));
        assert_eq!(names.len(), n + 3);
        let back: Entity = names.scope(|| serde_json::from_slice(&bytes).unwrap());
        assert_eq!(back, e);
        assert_eq!(names.since(n).len(), 3);
        let snapshot = names.snapshot();
        assert_eq!(snapshot.len(), n + 3);
        assert_eq!(snapshot.iter().count(), n + 3);
        let reopened = Arc::new(Names::from_list(snapshot.iter().cloned().collect()));
        let back: Entity = reopened.scope(|| serde_json::from_slice(&bytes).unwrap());
        assert_eq!(back, e);
    }

    #[test]
    fn an_unknown_number_is_an_error() {
        let names = Arc::new(Names::default());
        let e = sample();
        let bytes = names.scope(|| encode(&e));
        let empty = Arc::new(Names::default());
        assert!(
            empty
                .scope(|| serde_json::from_slice::<Entity>(&bytes))
                .is_err()
        );
    }
}
