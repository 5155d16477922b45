//! The hand-written codec against rmp-serde, the reference.

use super::*;
use proptest::prelude::*;
use serde::Serialize;
use serde_json::json;

/// The reference encoding: rmp-serde with `names` in scope.
fn reference(names: &Arc<Names>, e: &Entity) -> Vec<u8> {
    let mut out = Vec::new();
    names
        .scope(|| e.serialize(&mut rmp_serde::Serializer::new(&mut out)))
        .unwrap();
    out
}

fn fast(names: &Arc<Names>, bytes: &[u8]) -> Option<Entity> {
    Reader::new(bytes, Some(names)).entity()
}

/// The integers at the edges of MessagePack's integer forms.
fn integer_edges() -> Vec<i64> {
    let mut edges = vec![0, i64::MIN, i64::MAX];
    for bits in [5u32, 7, 8, 15, 16, 31, 32] {
        let e = 1i64 << bits;
        edges.extend([e - 1, e, e + 1, -e - 1, -e, -e + 1]);
    }
    edges
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Every integer form, at both ends.
        prop::sample::select(integer_edges()).prop_map(Value::from),
        prop::sample::select(integer_edges()).prop_map(|i| Value::from(i.unsigned_abs())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        // Past the one-byte string length.
        "[a-z]{250,300}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An `Option<Value>` that survives the encoding: `Some(null)` is written
/// as nil and read back as `None`, by serde as by the codec.
fn object_type() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(json_value().prop_filter("not null", |v| !v.is_null()))
}

fn attr_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        json_value().prop_map(AttrValue::Property),
        (json_value(), object_type()).prop_map(|(object, object_type)| {
            AttrValue::Relationship {
                object,
                object_type,
            }
        }),
        json_value().prop_map(AttrValue::GeoProperty),
        prop::collection::vec(("[a-z]{1,3}", "\\PC{0,12}"), 0..4).prop_map(|kv| {
            AttrValue::LanguageProperty(kv.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
        }),
        json_value().prop_map(AttrValue::JsonProperty),
        json_value().prop_map(AttrValue::VocabProperty),
        prop::collection::vec(json_value(), 0..5).prop_map(AttrValue::ListProperty),
        (prop::collection::vec(json_value(), 0..4), object_type()).prop_map(
            |(objects, object_type)| AttrValue::ListRelationship {
                objects,
                object_type,
            }
        ),
    ]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), prop::sample::select(integer_edges())]
}

fn name() -> impl Strategy<Value = Iri> {
    "https://example\\.org/[a-z]{1,6}".prop_map(|s| iri(&s))
}

fn leaf_attribute() -> impl Strategy<Value = Attribute> {
    (
        attr_value(),
        prop::option::of("urn:ds:[a-z0-9]{1,5}"),
        prop::option::of("2026-11-26T10:00:0[0-9]Z"),
        prop::option::of("[A-Z0-9]{3}"),
        timestamp(),
        timestamp(),
        extra(),
    )
        .prop_map(
            |(value, dataset_id, observed_at, unit_code, created_at, modified_at, extra)| {
                Attribute {
                    value,
                    dataset_id: dataset_id.map(Into::into),
                    observed_at: observed_at.map(Into::into),
                    unit_code: unit_code.map(Into::into),
                    created_at,
                    modified_at,
                    sub: Vec::new(),
                    extra,
                }
            },
        )
}

/// Mostly none; else an expiry, a value type or both.
fn extra() -> impl Strategy<Value = Option<Box<AttrExtra>>> {
    prop_oneof![
        3 => Just(None),
        1 => (
            prop::option::of("2100-01-0[1-9]T00:00:00Z"),
            prop::option::of("http://www\\.w3\\.org/2001/XMLSchema#[a-z]{3,6}"),
        )
            .prop_map(|(expires_at, value_type)| {
                AttrExtra {
                    expires_at: expires_at.map(Into::into),
                    value_type: value_type.map(Into::into),
                }
                .boxed()
            }),
    ]
}

fn attribute() -> impl Strategy<Value = Attribute> {
    (
        leaf_attribute(),
        prop::collection::vec((name(), leaf_attribute()), 0..3),
    )
        .prop_map(|(mut a, sub)| {
            a.sub = sub;
            a
        })
}

fn entity() -> impl Strategy<Value = Entity> {
    (
        "urn:ngsi-ld:[A-Za-z]{1,8}:[0-9]{1,6}",
        prop::collection::vec(name(), 1..3),
        prop::collection::vec("/[A-Za-z]{1,6}(/[a-z]{1,4})?", 0..3),
        prop::collection::vec((name(), prop::collection::vec(attribute(), 1..3)), 0..6),
        timestamp(),
        timestamp(),
        prop::option::of("2100-01-0[1-9]T00:00:00Z"),
    )
        .prop_map(
            |(id, types, scopes, attrs, created_at, modified_at, expires_at)| Entity {
                id: id.into(),
                types,
                scopes: scopes.into_iter().map(Into::into).collect(),
                attrs: attrs.into_iter().map(|(n, i)| (n, i.into())).collect(),
                created_at,
                modified_at,
                expires_at: expires_at.map(Into::into),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The writer's bytes are rmp-serde's, and the reader takes them back
    /// on its own path (no fallback) as the entity written.
    #[test]
    fn entities_encode_as_rmp_serde_and_read_back(e in entity()) {
        let names = Arc::new(Names::default());
        let bytes = encode_entity(&names, &e);
        prop_assert_eq!(&bytes, &reference(&names, &e));
        prop_assert_eq!(fast(&names, &bytes), Some(e.clone()));
        prop_assert_eq!(decode_entity(&names, &bytes).unwrap(), e);
    }

    /// Encoding a version of an entity from an earlier one's encoding gives
    /// the bytes of a fresh encoding, whatever the two share: kept lists,
    /// changed ones, a list kept under another name, attributes added,
    /// removed or moved.
    #[test]
    fn a_version_encoded_from_an_earlier_one_is_encoded_as_afresh(
        prev in entity(),
        edits in prop::collection::vec((0u8..5, 0usize..8, attribute()), 0..6),
        names_first in any::<bool>(),
    ) {
        let names = Arc::new(Names::default());
        if names_first {
            // Numbers given in another order than the entity's.
            for (n, _) in prev.attrs.iter().rev() {
                names.number_of(n);
            }
        }
        let prev_encoded = encode_entity_reusing(&names, &prev, None);
        prop_assert_eq!(&prev_encoded.bytes, &encode_entity(&names, &prev));
        let mut next = prev.clone();
        for (kind, at, attr) in edits {
            let len = next.attrs.len();
            match kind {
                // Change one instance of a list (copied on write).
                0 if len > 0 => next.attrs[at % len].1[0] = attr,
                // Another list under a kept name.
                1 if len > 0 => next.attrs[at % len].1 = vec![attr].into(),
                // A kept list under another name.
                2 if len > 0 => next.attrs[at % len].0 = iri(&format!("https://example.org/renamed{at}")),
                3 if len > 0 => { next.attrs.remove(at % len); }
                4 if len > 1 => next.attrs.swap(0, at % len),
                _ => next.attrs.push((iri(&format!("https://example.org/added{at}")), vec![attr].into())),
            }
        }
        next.modified_at = next.modified_at.wrapping_add(1);
        let reused = encode_entity_reusing(&names, &next, Some((&prev, &prev_encoded)));
        prop_assert_eq!(&reused.bytes, &encode_entity(&names, &next));
        prop_assert_eq!(decode_entity(&names, &reused.bytes).unwrap(), next.clone());
        // And the next version after that, from this one.
        let again = encode_entity_reusing(&names, &next, Some((&next, &reused)));
        prop_assert_eq!(&again.bytes, &reused.bytes);
    }

    /// Without a name table (the temporal instances' documents) names are
    /// strings, as rmp-serde writes them outside a scope.
    #[test]
    fn attributes_without_a_table_encode_as_rmp_serde(a in attribute()) {
        let mut bytes = Vec::new();
        write_attribute(&mut bytes, None, &AttrParts::of(&a));
        prop_assert_eq!(&bytes, &rmp_serde::to_vec(&a).unwrap());
        let mut r = Reader::new(&bytes, None);
        let read = r.attribute().filter(|_| r.at_end());
        prop_assert_eq!(read, Some(a.clone()));
        prop_assert_eq!(decode_attribute(&bytes).unwrap(), a);
    }

    /// On any input, damaged or not, the reader never panics, and whatever
    /// it takes it reads as rmp-serde does.
    #[test]
    fn damaged_input_reads_as_rmp_serde_or_falls_back(
        e in entity(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let names = Arc::new(Names::default());
        let mut bytes = encode_entity(&names, &e);
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Some(read) = fast(&names, &bytes) {
            let reference: Result<Entity, _> = names.scope(|| rmp_serde::from_slice(&bytes));
            prop_assert_eq!(reference.ok(), Some(read));
        }
        // The public reader answers (an error or an entity), never panics.
        let _ = decode_entity(&names, &bytes);
    }
}

#[test]
fn names_as_strings_read_on_the_fast_path() {
    // Encodings from before the name table (storage formats 2 and 3).
    let names = Arc::new(Names::default());
    let mut a = Attribute::new(AttrValue::Property(json!(1)));
    a.dataset_id = Some("urn:ds:1".into());
    a.sub.push((
        iri("https://example.org/acc"),
        Attribute::new(AttrValue::Property(json!(0.5))),
    ));
    let e = Entity {
        id: "urn:e:1".into(),
        types: vec![iri("https://example.org/T")],
        scopes: vec![],
        attrs: vec![(iri("https://example.org/level"), vec![a].into())],
        created_at: 1,
        modified_at: 2,
        expires_at: None,
    };
    let plain = rmp_serde::to_vec(&e).unwrap();
    assert_eq!(fast(&names, &plain), Some(e.clone()));
    assert!(names.is_empty(), "reading names as strings numbers none");
}

#[test]
fn shapes_it_does_not_take_fall_back_to_rmp_serde() {
    // An attribute of an older shape: fewer fields (the rest default).
    #[derive(Serialize)]
    struct Older {
        value: AttrValue,
        dataset_id: Option<String>,
        observed_at: Option<String>,
    }
    let bytes = rmp_serde::to_vec(&Older {
        value: AttrValue::Property(json!("x")),
        dataset_id: None,
        observed_at: Some("2026-11-26T00:00:00Z".into()),
    })
    .unwrap();
    assert!(Reader::new(&bytes, None).attribute().is_none());
    let a = decode_attribute(&bytes).unwrap();
    assert_eq!(a.value, AttrValue::Property(json!("x")));
    assert_eq!(a.observed_at.as_deref(), Some("2026-11-26T00:00:00Z"));
    assert!(a.sub.is_empty());

    // A name number the table does not have is an error, not a wrong name.
    let names = Arc::new(Names::default());
    let e = Entity {
        id: "urn:e:1".into(),
        types: vec![iri("https://example.org/T")],
        scopes: vec![],
        attrs: vec![],
        created_at: 1,
        modified_at: 2,
        expires_at: None,
    };
    let bytes = encode_entity(&names, &e);
    assert!(decode_entity(&Arc::new(Names::default()), &bytes).is_err());
}

#[test]
fn deep_nesting_is_left_to_rmp_serde() {
    let mut v = json!(1);
    for _ in 0..(MAX_DEPTH + 10) {
        v = json!([v]);
    }
    let names = Arc::new(Names::default());
    let e = Entity {
        id: "urn:e:1".into(),
        types: vec![iri("https://example.org/T")],
        scopes: vec![],
        attrs: vec![(
            iri("https://example.org/deep"),
            vec![Attribute::new(AttrValue::Property(v))].into(),
        )],
        created_at: 1,
        modified_at: 2,
        expires_at: None,
    };
    let bytes = encode_entity(&names, &e);
    assert!(fast(&names, &bytes).is_none());
    // rmp-serde refuses it too (its own depth bound): an error, no panic.
    let _ = decode_entity(&names, &bytes);
}

/// Each writer picks the form `rmp`'s writer picks, at every edge.
#[test]
fn the_writers_pick_rmps_forms() {
    fn same(ours: impl Fn(&mut Vec<u8>), theirs: impl Fn(&mut Vec<u8>), what: &str) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ours(&mut a);
        theirs(&mut b);
        assert_eq!(a, b, "{what}");
    }
    for i in integer_edges() {
        same(
            |o| int(o, i),
            |o| drop(rmp::encode::write_sint(o, i)),
            &format!("int {i}"),
        );
        let u = i.unsigned_abs();
        same(
            |o| uint(o, u),
            |o| drop(rmp::encode::write_uint(o, u)),
            &format!("uint {u}"),
        );
    }
    for len in [0usize, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536] {
        let bytes = vec![b'a'; len];
        let text = String::from_utf8(bytes.clone()).unwrap();
        same(
            |o| bin(o, &bytes),
            |o| drop(rmp::encode::write_bin(o, &bytes)),
            "bin",
        );
        same(
            |o| string(o, &text),
            |o| drop(rmp::encode::write_str(o, &text)),
            "str",
        );
        same(
            |o| array_len(o, len),
            |o| drop(rmp::encode::write_array_len(o, len as u32)),
            "array",
        );
        same(
            |o| map_len(o, len),
            |o| drop(rmp::encode::write_map_len(o, len as u32)),
            "map",
        );
    }
    for f in [0.0, -1.5, f64::MAX, f64::MIN_POSITIVE] {
        same(|o| f64(o, f), |o| drop(rmp::encode::write_f64(o, f)), "f64");
    }
    same(nil, |o| drop(rmp::encode::write_nil(o)), "nil");
}

/// Shapes that rmp-serde refuses are refused here too (and handed to it,
/// which reports the error): the kind in a signed integer form, and
/// sub-attributes nested past the bound that keeps the whole document
/// within rmp-serde's depth limit.
#[test]
fn what_rmp_serde_refuses_the_fast_reader_refuses() {
    let names = Arc::new(Names::default());
    let a = Attribute::new(AttrValue::Property(json!(1)));
    let e = Entity {
        id: "urn:e:1".into(),
        types: vec![iri("https://example.org/T")],
        scopes: vec![],
        attrs: vec![(iri("https://example.org/level"), vec![a.clone()].into())],
        created_at: 1,
        modified_at: 2,
        expires_at: None,
    };
    let bytes = encode_entity(&names, &e);
    // The kind: a one-entry map (0x81) then 0 as a positive fixint.
    let at = bytes.windows(2).position(|w| w == [0x81, 0x00]).unwrap();
    let mut signed = bytes[..at + 1].to_vec();
    signed.extend_from_slice(&[0xd0, 0x00]);
    signed.extend_from_slice(&bytes[at + 2..]);
    let reference: Result<Entity, _> = names.scope(|| rmp_serde::from_slice(&signed));
    assert!(reference.is_err());
    assert!(fast(&names, &signed).is_none());
    assert!(decode_entity(&names, &signed).is_err());

    // Sub-attributes up to the bound read on the fast path; past it, not.
    let nest = |levels: usize| {
        let mut inner = a.clone();
        for _ in 0..levels {
            let mut outer = a.clone();
            outer.sub.push((iri("https://example.org/s"), inner));
            inner = outer;
        }
        Entity {
            attrs: vec![(iri("https://example.org/level"), vec![inner].into())],
            ..e.clone()
        }
    };
    let within = nest(MAX_SUB_DEPTH);
    assert_eq!(fast(&names, &encode_entity(&names, &within)), Some(within));
    assert!(fast(&names, &encode_entity(&names, &nest(MAX_SUB_DEPTH + 1))).is_none());
}
