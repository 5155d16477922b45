//! The entity model: entities and attributes keyed by expanded IRIs.

use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An expanded IRI, interned so that the thousands of entities that share an
/// attribute name share one allocation.
pub type Iri = Arc<str>;

/// The interned IRIs. Requests look up every name, datasetId, unitCode and
/// observedAt they carry here, so it hashes with foldhash (randomly seeded
/// per process, as the JSON-LD term tables) rather than SipHash: about 2,000
/// instructions less per template entity parsed.
static INTERNER: LazyLock<RwLock<foldhash::HashSet<Arc<str>>>> = LazyLock::new(Default::default);

/// Whether two IRIs are equal. Interned IRIs are compared by address first;
/// otherwise the length and the last byte rule out most different IRIs
/// (which share long prefixes) before the full comparison.
#[inline]
pub fn same_iri(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && (std::ptr::eq(a.as_ptr(), b.as_ptr())
            || (a.as_bytes().last() == b.as_bytes().last() && a == b))
}

/// Returns the interned copy of `s`.
pub fn iri(s: &str) -> Iri {
    if let Some(found) = INTERNER.read().get(s) {
        return found.clone();
    }
    let mut set = INTERNER.write();
    if let Some(found) = set.get(s) {
        return found.clone();
    }
    let new: Arc<str> = Arc::from(s);
    set.insert(new.clone());
    new
}

/// The interned copy of `s` if there is one, else a new shared text that
/// is not interned: for texts a client chooses freely (datasetIds), so that
/// requests that are refused never grow the interner. (A name the store
/// keeps is interned by its name table; the next request naming it shares
/// that copy.)
pub fn shared_text(s: &str) -> Arc<str> {
    INTERNER
        .read()
        .get(s)
        .cloned()
        .unwrap_or_else(|| Arc::from(s))
}

/// Whether `s` is the text of an interned IRI itself (not a copy of it).
/// Interned IRIs are never freed, so the address of such a text stays
/// unique to it for the life of the process.
pub fn is_interned(s: &str) -> bool {
    INTERNER
        .read()
        .get(s)
        .is_some_and(|found| std::ptr::eq(found.as_ptr(), s.as_ptr()))
}

/// Well-known IRIs of the NGSI-LD core context.
pub mod core_iri {
    /// The namespace of the core vocabulary.
    pub const NGSI_LD: &str = "https://uri.etsi.org/ngsi-ld/";
    /// The `location` GeoProperty.
    pub const LOCATION: &str = "https://uri.etsi.org/ngsi-ld/location";
    /// The `observationSpace` GeoProperty.
    pub const OBSERVATION_SPACE: &str = "https://uri.etsi.org/ngsi-ld/observationSpace";
    /// The `operationSpace` GeoProperty.
    pub const OPERATION_SPACE: &str = "https://uri.etsi.org/ngsi-ld/operationSpace";
    /// The `scope` member of entities.
    pub const SCOPE: &str = "https://uri.etsi.org/ngsi-ld/scope";
    /// The NGSI-LD Null used by merge-patch to delete.
    pub const NULL: &str = "urn:ngsi-ld:null";
}

/// The instances of one attribute, shared between versions of an entity
/// until one of them changes it (copy on write): an update that changes
/// one attribute copies that attribute's instances, not the others'. Reads
/// go through `Deref` to the `Vec`; writes through `DerefMut`, which copies
/// the list first when another version still shares it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceList(Arc<Vec<Attribute>>);

impl InstanceList {
    /// Whether `self` and `other` are the same list (not only equal): an
    /// attribute an update left alone.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The instances, owned (copied only when shared).
    pub fn into_vec(self) -> Vec<Attribute> {
        Arc::unwrap_or_clone(self.0)
    }
}

impl std::ops::Deref for InstanceList {
    type Target = Vec<Attribute>;

    fn deref(&self) -> &Vec<Attribute> {
        &self.0
    }
}

impl std::ops::DerefMut for InstanceList {
    fn deref_mut(&mut self) -> &mut Vec<Attribute> {
        Arc::make_mut(&mut self.0)
    }
}

impl From<Vec<Attribute>> for InstanceList {
    fn from(list: Vec<Attribute>) -> Self {
        Self(Arc::new(list))
    }
}

impl FromIterator<Attribute> for InstanceList {
    fn from_iter<I: IntoIterator<Item = Attribute>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().collect()))
    }
}

impl IntoIterator for InstanceList {
    type Item = Attribute;
    type IntoIter = std::vec::IntoIter<Attribute>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a InstanceList {
    type Item = &'a Attribute;
    type IntoIter = std::slice::Iter<'a, Attribute>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut InstanceList {
    type Item = &'a mut Attribute;
    type IntoIter = std::slice::IterMut<'a, Attribute>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::make_mut(&mut self.0).iter_mut()
    }
}

/// A stored entity. Types and attribute names are expanded IRIs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The entity id, a URI.
    pub id: Arc<str>,
    /// Expanded entity types, at least one.
    #[serde(with = "crate::names::name_list")]
    pub types: Vec<Iri>,
    /// The scopes of the entity (`/a/b` paths), possibly empty.
    #[serde(default)]
    pub scopes: Vec<Box<str>>,
    /// Attributes in the order they were first added. Each has one or more
    /// instances, distinguished by `dataset_id` (at most one without).
    #[serde(with = "crate::names::named")]
    pub attrs: Vec<(Iri, InstanceList)>,
    /// System attribute createdAt, in microseconds since the Unix epoch.
    pub created_at: i64,
    /// System attribute modifiedAt, in microseconds since the Unix epoch.
    pub modified_at: i64,
    /// When the entity's storage expires (clause 4.22), as the producer
    /// wrote the DateTime. Last, and left out when absent, so that the
    /// stored encoding of an entity without it is what it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Arc<str>>,
}

impl Entity {
    /// The instances of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&[Attribute]> {
        self.attr_list(name).map(|v| v.as_slice())
    }

    /// The instance list of attribute `name`, if present (to tell by
    /// [`InstanceList::same`] whether another version shares it).
    pub fn attr_list(&self, name: &str) -> Option<&InstanceList> {
        self.attrs
            .iter()
            .find(|(n, _)| same_iri(n, name))
            .map(|(_, v)| v)
    }

    /// Mutable access to the instances of attribute `name`.
    pub fn attr_mut(&mut self, name: &str) -> Option<&mut Vec<Attribute>> {
        self.attrs
            .iter_mut()
            .find(|(n, _)| same_iri(n, name))
            .map(|(_, v)| &mut **v)
    }

    /// Whether the entity has type `t` (expanded).
    pub fn has_type(&self, t: &str) -> bool {
        self.types.iter().any(|x| same_iri(x, t))
    }
}

/// One instance of an attribute (or of a sub-attribute).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    /// The kind and the value.
    pub value: AttrValue,
    /// The datasetId; `None` for the default instance.
    #[serde(default, with = "crate::names::optional_name")]
    pub dataset_id: Option<Arc<str>>,
    /// observedAt as given by the producer (validated ISO 8601 DateTime).
    #[serde(default)]
    pub observed_at: Option<Arc<str>>,
    /// unitCode (UN/CEFACT code).
    #[serde(default)]
    pub unit_code: Option<Arc<str>>,
    /// createdAt in microseconds since the Unix epoch.
    #[serde(default)]
    pub created_at: i64,
    /// modifiedAt in microseconds since the Unix epoch.
    #[serde(default)]
    pub modified_at: i64,
    /// Sub-attributes (properties of properties), by expanded name.
    #[serde(default, with = "crate::names::named")]
    pub sub: Vec<(Iri, Attribute)>,
    /// The members few instances have (`expiresAt`, `valueType`), boxed so
    /// that the others stay small. Last, and left out when absent, so that
    /// the stored encoding of an instance without them is what it always
    /// was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<AttrExtra>>,
}

/// The rarer members of an attribute instance (NGSI-LD 1.9).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttrExtra {
    /// When the instance's storage expires (clause 4.22), as the producer
    /// wrote the DateTime.
    #[serde(default)]
    pub expires_at: Option<Arc<str>>,
    /// The datatype IRI of the value (clause 4.5.2.2), expanded.
    #[serde(default)]
    pub value_type: Option<Arc<str>>,
}

impl AttrExtra {
    /// `None` when neither member is set, else the members boxed.
    pub fn boxed(self) -> Option<Box<Self>> {
        (self.expires_at.is_some() || self.value_type.is_some()).then(|| Box::new(self))
    }
}

impl Attribute {
    /// A new attribute instance with `value` and no metadata.
    pub fn new(value: AttrValue) -> Self {
        Self {
            value,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            created_at: 0,
            modified_at: 0,
            sub: Vec::new(),
            extra: None,
        }
    }

    /// Whether this is a Merge Entity fragment's Property that gave no
    /// value (only metadata or sub-attributes): it keeps the value of the
    /// instance it merges into (`ParseLimits::allow_valueless`).
    pub fn is_valueless(&self) -> bool {
        matches!(self.value, AttrValue::Property(Value::Null))
    }

    /// Whether this instance or one of its sub-attributes, at any depth,
    /// [is valueless](Self::is_valueless).
    pub fn has_valueless(&self) -> bool {
        self.is_valueless() || self.sub.iter().any(|(_, s)| s.has_valueless())
    }

    /// When the instance's storage expires, as written.
    pub fn expires_at(&self) -> Option<&str> {
        self.extra.as_ref()?.expires_at.as_deref()
    }

    /// The datatype IRI of the value.
    pub fn value_type(&self) -> Option<&str> {
        self.extra.as_ref()?.value_type.as_deref()
    }

    /// The sub-attribute `name`, if present.
    pub fn sub_attr(&self, name: &str) -> Option<&Attribute> {
        self.sub
            .iter()
            .find(|(n, _)| same_iri(n, name))
            .map(|(_, a)| a)
    }

    /// Stamps createdAt (when unset) and modifiedAt, recursively.
    pub fn stamp(&mut self, created: i64, now: i64) {
        if self.created_at == 0 {
            self.created_at = created;
        }
        self.modified_at = now;
        for (_, s) in &mut self.sub {
            s.stamp(created, now);
        }
    }
}

/// Appends to `list` the items of `more` that it lacks, in order; whether
/// any was added. A set finds them past a few (an entity may be given
/// thousands of types; pairwise checks would take the square).
pub fn extend_unique(list: &mut Vec<Iri>, more: impl IntoIterator<Item = Iri>) -> bool {
    let before = list.len();
    let mut seen: Option<foldhash::HashSet<Iri>> = None;
    for item in more {
        if seen.is_none() && list.len() > 16 {
            seen = Some(list.iter().cloned().collect());
        }
        let fresh = match &mut seen {
            Some(set) => set.insert(item.clone()),
            None => !list.contains(&item),
        };
        if fresh {
            list.push(item);
        }
    }
    list.len() > before
}

/// The kind of an attribute with its value, as in clause 4.5 of the spec.
///
/// In the stored encoding (MessagePack, not human-readable) the kind is
/// its number, the variant's index, where a derived encoding would spell
/// its name: a byte instead of up to seventeen, for every attribute of
/// every entity and every temporal instance. Decoding takes either.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub enum AttrValue {
    /// A Property: any JSON value (string, number, boolean, array, object).
    Property(Value),
    /// A Relationship: the object URI, or an array of URIs.
    Relationship {
        /// The target entity id(s).
        object: Value,
        /// The optional objectType (expanded type names).
        #[serde(default)]
        object_type: Option<Value>,
    },
    /// A GeoProperty: a GeoJSON geometry.
    GeoProperty(Value),
    /// A LanguageProperty: language tag to string (or array of strings).
    LanguageProperty(Map<String, Value>),
    /// A JsonProperty: an opaque JSON value, never expanded.
    JsonProperty(Value),
    /// A VocabProperty: expanded IRI(s).
    VocabProperty(Value),
    /// A ListProperty: an ordered list of values.
    ListProperty(Vec<Value>),
    /// A ListRelationship: an ordered list of entity ids.
    ListRelationship {
        /// The target entity ids in order.
        objects: Vec<Value>,
        /// The optional objectType.
        #[serde(default)]
        object_type: Option<Value>,
    },
}

impl Serialize for AttrValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if serializer.is_human_readable() {
            return Named::from(self).serialize(serializer);
        }
        let mut m = serializer.serialize_map(Some(1))?;
        // The variant indexes, in declaration order, which the derived
        // Deserialize maps back to the variants.
        match self {
            Self::Property(v) => m.serialize_entry(&0u8, v)?,
            Self::Relationship {
                object,
                object_type,
            } => m.serialize_entry(&1u8, &(object, object_type))?,
            Self::GeoProperty(v) => m.serialize_entry(&2u8, v)?,
            Self::LanguageProperty(v) => m.serialize_entry(&3u8, v)?,
            Self::JsonProperty(v) => m.serialize_entry(&4u8, v)?,
            Self::VocabProperty(v) => m.serialize_entry(&5u8, v)?,
            Self::ListProperty(v) => m.serialize_entry(&6u8, v)?,
            Self::ListRelationship {
                objects,
                object_type,
            } => m.serialize_entry(&7u8, &(objects, object_type))?,
        }
        m.end()
    }
}

/// [`AttrValue`] with its kinds by name: its human-readable encoding.
#[derive(Serialize)]
#[serde(rename = "AttrValue")]
enum Named<'a> {
    Property(&'a Value),
    Relationship {
        object: &'a Value,
        object_type: &'a Option<Value>,
    },
    GeoProperty(&'a Value),
    LanguageProperty(&'a Map<String, Value>),
    JsonProperty(&'a Value),
    VocabProperty(&'a Value),
    ListProperty(&'a [Value]),
    ListRelationship {
        objects: &'a [Value],
        object_type: &'a Option<Value>,
    },
}

impl<'a> From<&'a AttrValue> for Named<'a> {
    fn from(v: &'a AttrValue) -> Self {
        match v {
            AttrValue::Property(v) => Named::Property(v),
            AttrValue::Relationship {
                object,
                object_type,
            } => Named::Relationship {
                object,
                object_type,
            },
            AttrValue::GeoProperty(v) => Named::GeoProperty(v),
            AttrValue::LanguageProperty(v) => Named::LanguageProperty(v),
            AttrValue::JsonProperty(v) => Named::JsonProperty(v),
            AttrValue::VocabProperty(v) => Named::VocabProperty(v),
            AttrValue::ListProperty(v) => Named::ListProperty(v),
            AttrValue::ListRelationship {
                objects,
                object_type,
            } => Named::ListRelationship {
                objects,
                object_type,
            },
        }
    }
}

impl AttrValue {
    /// The NGSI-LD names of the kinds, in the order of the variants.
    pub const KIND_NAMES: [&'static str; 8] = [
        "Property",
        "Relationship",
        "GeoProperty",
        "LanguageProperty",
        "JsonProperty",
        "VocabProperty",
        "ListProperty",
        "ListRelationship",
    ];

    /// The NGSI-LD name of the kind (`Property`, `Relationship`, ...).
    pub fn kind_name(&self) -> &'static str {
        Self::KIND_NAMES[self.kind_index()]
    }

    /// The place of the kind in [`AttrValue::KIND_NAMES`], which is its
    /// place in the declaration (its number in the stored encoding).
    pub fn kind_index(&self) -> usize {
        match self {
            Self::Property(_) => 0,
            Self::Relationship { .. } => 1,
            Self::GeoProperty(_) => 2,
            Self::LanguageProperty(_) => 3,
            Self::JsonProperty(_) => 4,
            Self::VocabProperty(_) => 5,
            Self::ListProperty(_) => 6,
            Self::ListRelationship { .. } => 7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Through the set or pairwise, the same items are added in order.
        #[test]
        fn extend_unique_adds_what_is_missing_in_order(
            start in proptest::collection::vec(0u8..60, 0..40),
            more in proptest::collection::vec(0u8..60, 0..40),
        ) {
            let name = |n: &u8| iri(&format!("https://example.org/T{n}"));
            let mut list: Vec<Iri> = Vec::new();
            for n in &start {
                if !list.contains(&name(n)) {
                    list.push(name(n));
                }
            }
            let mut expected = list.clone();
            for n in &more {
                if !expected.contains(&name(n)) {
                    expected.push(name(n));
                }
            }
            let before = list.len();
            let changed = extend_unique(&mut list, more.iter().map(name));
            proptest::prop_assert_eq!(changed, expected.len() > before);
            proptest::prop_assert_eq!(&list, &expected);
        }
    }
    use serde_json::json;

    fn every_kind() -> Vec<AttrValue> {
        vec![
            AttrValue::Property(json!({"a": [1, 2.5, "x"]})),
            AttrValue::Relationship {
                object: json!("urn:ngsi-ld:Road:1"),
                object_type: Some(json!("https://example.org/Road")),
            },
            AttrValue::Relationship {
                object: json!(["urn:a", "urn:b"]),
                object_type: None,
            },
            AttrValue::GeoProperty(json!({"type": "Point", "coordinates": [113.3, 23.1]})),
            AttrValue::LanguageProperty(
                json!({"zh": "羊城", "en": "City of Rams"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            AttrValue::JsonProperty(json!({"@id": "kept", "n": null})),
            AttrValue::VocabProperty(json!("https://example.org/Green")),
            AttrValue::ListProperty(vec![json!(1), json!("two")]),
            AttrValue::ListRelationship {
                objects: vec![json!("urn:a")],
                object_type: Some(json!("https://example.org/Stop")),
            },
        ]
    }

    #[test]
    fn the_stored_encoding_numbers_the_kind_and_reads_both_forms() {
        for v in every_kind() {
            let numbered = rmp_serde::to_vec(&v).unwrap();
            let named = rmp_serde::to_vec(&Named::from(&v)).unwrap();
            let name = v.kind_name().as_bytes();
            assert!(!numbered.windows(name.len()).any(|w| w == name), "{v:?}");
            assert!(numbered.len() + name.len() <= named.len() + 1, "{v:?}");
            assert_eq!(rmp_serde::from_slice::<AttrValue>(&numbered).unwrap(), v);
            assert_eq!(rmp_serde::from_slice::<AttrValue>(&named).unwrap(), v);
        }
    }

    #[test]
    fn the_human_readable_encoding_names_the_kind() {
        let v = AttrValue::Relationship {
            object: json!("urn:a"),
            object_type: None,
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"Relationship": {"object": "urn:a", "object_type": null}})
        );
        assert_eq!(
            serde_json::from_value::<AttrValue>(serde_json::to_value(&v).unwrap()).unwrap(),
            v
        );
    }

    #[test]
    fn instance_lists_are_shared_until_one_version_changes() {
        let prop = |v: i64| Attribute::new(AttrValue::Property(serde_json::json!(v)));
        let a: InstanceList = vec![prop(1), prop(2)].into();
        let mut b = a.clone();
        assert!(a.same(&b) && a == b);
        // Reading through a mutable handle copies nothing.
        assert_eq!(b.len(), 2);
        assert!(a.same(&b));
        b[0].value = AttrValue::Property(serde_json::json!(9));
        assert!(!a.same(&b));
        assert_eq!(a[0].value, AttrValue::Property(serde_json::json!(1)));
        assert_eq!(b[0].value, AttrValue::Property(serde_json::json!(9)));
        // Equal lists that are not shared are equal, not the same.
        let c: InstanceList = a.iter().cloned().collect();
        assert!(a == c && !a.same(&c));
        // Owned iteration of a shared list leaves the other intact.
        let d = a.clone();
        assert_eq!(d.into_iter().count(), 2);
        assert_eq!(a.len(), 2);
        // The serialized form is the plain list.
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&*a).unwrap()
        );
    }

    #[test]
    fn free_texts_share_an_interned_copy_but_never_add_one() {
        let fresh = shared_text("urn:test:shared-text:fresh");
        assert!(!is_interned(&fresh));
        assert!(!INTERNER.read().contains("urn:test:shared-text:fresh"));
        let known = iri("urn:test:shared-text:known");
        let again = shared_text("urn:test:shared-text:known");
        assert!(Arc::ptr_eq(&known, &again) && is_interned(&again));
    }
}
