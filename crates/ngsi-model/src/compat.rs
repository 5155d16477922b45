//! Entity payloads for an earlier version of NGSI-LD (clause 4.3.6.8).
//!
//! A client that understands only an earlier version of the specification
//! asks for it with `Prefer: ngsi-ld=<major.minor>`; the broker amends what
//! it answers by the fallbacks of Tables 4.3.6.8-1 (entity members and
//! attribute kinds), 4.3.6.8-2 (Property members) and 4.3.6.8-3
//! (Relationship members), and names the version it answered for in
//! `Preference-Applied`.

use serde_json::Value;

use crate::entity::{AttrValue, Attribute, Entity};
use crate::parse::Terms;

/// An NGSI-LD version, `(major, minor)`.
pub type Version = (u32, u32);

/// The version this broker's payloads conform to.
pub const NATIVE: Version = (1, 9);

/// The version preference among the values of `Prefer` headers (IETF RFC
/// 7240: a comma-separated list of preferences, each a name with an
/// optional value, a token or a quoted string, and optional parameters
/// after `;`; names are case-insensitive). `None` when no preference names
/// `ngsi-ld` with a `major.minor` value.
pub fn preferred_version<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Version> {
    headers
        .into_iter()
        .flat_map(|h| h.split(','))
        .find_map(|preference| {
            let (name, value) = preference.split(';').next()?.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("ngsi-ld") {
                return None;
            }
            parse_version(value.trim().trim_matches('"'))
        })
}

fn parse_version(s: &str) -> Option<Version> {
    let (major, minor) = s.split_once('.')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The version a payload is given in for a client that prefers `preferred`:
/// that version when this broker can amend its payloads to it, this
/// broker's own for a later one; `None` before 1.0 (there is none).
pub fn applied(preferred: Version) -> Option<Version> {
    (preferred >= (1, 0)).then(|| preferred.min(NATIVE))
}

/// `Preference-Applied` for `version`.
pub fn preference_applied(version: Version) -> String {
    format!("ngsi-ld={}.{}", version.0, version.1)
}

/// Amends `entity` to what `version` defines: members introduced later are
/// removed, attribute kinds introduced later become the Property or
/// Relationship they extend, and before 1.3 an entity has one type and
/// each attribute one instance (the default instance if there is one).
/// `terms` compacts the IRIs of a VocabProperty that becomes a Property (a
/// Property's value is never compacted).
pub fn amend(entity: &mut Entity, version: Version, terms: &dyn Terms) {
    if version >= NATIVE {
        return;
    }
    // Before 1.9 there is no transient storage (clause 4.22).
    entity.expires_at = None;
    if version < (1, 4) {
        entity.scopes.clear();
    }
    if version < (1, 3) {
        entity.types.truncate(1);
    }
    for (_, instances) in &mut entity.attrs {
        if version < (1, 3) && instances.len() > 1 {
            let keep = instances
                .iter()
                .position(|a| a.dataset_id.is_none())
                .unwrap_or(0);
            let one = instances[keep].clone();
            instances.clear();
            instances.push(one);
        }
        for a in instances.iter_mut() {
            amend_attribute(a, version, terms);
        }
    }
}

fn amend_attribute(a: &mut Attribute, version: Version, terms: &dyn Terms) {
    let value = std::mem::replace(&mut a.value, AttrValue::Property(Value::Null));
    a.value = match value {
        AttrValue::LanguageProperty(map) if version < (1, 4) => {
            AttrValue::Property(Value::Object(map))
        }
        AttrValue::JsonProperty(v) if version < (1, 8) => AttrValue::Property(v),
        AttrValue::VocabProperty(v) if version < (1, 8) => {
            AttrValue::Property(compact_values(v, terms))
        }
        AttrValue::ListProperty(items) if version < (1, 8) => {
            AttrValue::Property(Value::Array(items))
        }
        AttrValue::ListRelationship { objects, .. } if version < (1, 8) => {
            AttrValue::Relationship {
                object: Value::Array(objects),
                object_type: None,
            }
        }
        AttrValue::Relationship { object, .. } if version < (1, 8) => AttrValue::Relationship {
            object,
            object_type: None,
        },
        other => other,
    };
    // `expiresAt` and `valueType` came in 1.9.
    a.extra = None;
    if version < (1, 3) {
        a.dataset_id = None;
        a.observed_at = None;
        a.unit_code = None;
    }
    for (_, sub) in &mut a.sub {
        amend_attribute(sub, version, terms);
    }
}

fn compact_values(v: Value, terms: &dyn Terms) -> Value {
    match v {
        Value::String(s) => Value::String(terms.compact(&s).into_owned()),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| compact_values(i, terms))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;

    use super::*;
    use crate::entity::iri;

    #[test]
    fn the_preference_is_found_in_the_spellings_rfc_7240_allows() {
        let v = |h: &str| preferred_version([h]);
        assert_eq!(v("ngsi-ld=1.5"), Some((1, 5)));
        assert_eq!(v("NGSI-LD=1.0"), Some((1, 0)));
        assert_eq!(v("Ngsi-Ld=1.0"), Some((1, 0)));
        assert_eq!(v("ngsi-ld=\"1.0\""), Some((1, 0)));
        assert_eq!(v("ngsi-ld=1.0;q=0.1"), Some((1, 0)));
        assert_eq!(v("respond-async, ngsi-ld=1.7"), Some((1, 7)));
        assert_eq!(v(" ngsi-ld = 1.10 "), Some((1, 10)));
        assert_eq!(v("respond-async"), None);
        assert_eq!(v("body=json"), None);
        assert_eq!(v("ngsi-ld=1"), None);
        assert_eq!(v("ngsi-ld=1.x"), None);
        assert_eq!(v("ngsi-ld=1.5.1"), None);
        assert_eq!(v("ngsi-ld"), None);
        assert_eq!(
            preferred_version(["body=json", "ngsi-ld=1.3"]),
            Some((1, 3))
        );
    }

    #[test]
    fn the_applied_version_is_at_most_this_brokers() {
        assert_eq!(applied((1, 0)), Some((1, 0)));
        assert_eq!(applied((1, 8)), Some((1, 8)));
        assert_eq!(applied((1, 9)), Some((1, 9)));
        assert_eq!(applied((2, 0)), Some(NATIVE));
        assert_eq!(applied((0, 9)), None);
        assert_eq!(preference_applied((1, 5)), "ngsi-ld=1.5");
    }

    struct Short;
    impl Terms for Short {
        fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
            Cow::Owned(format!("https://example.org/{term}"))
        }
        fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
            Cow::Borrowed(iri.strip_prefix("https://example.org/").unwrap_or(iri))
        }
    }

    fn instance(value: AttrValue, dataset: Option<&str>) -> Attribute {
        let mut a = Attribute::new(value);
        a.dataset_id = dataset.map(Into::into);
        a.observed_at = Some("2026-01-01T00:00:00Z".into());
        a.unit_code = Some("CEL".into());
        a.extra = crate::entity::AttrExtra {
            expires_at: Some("2100-01-01T00:00:00Z".into()),
            value_type: Some("https://example.org/celsius".into()),
        }
        .boxed();
        a
    }

    fn sample() -> Entity {
        let object = json!("urn:ngsi-ld:Street:1");
        Entity {
            id: "urn:ngsi-ld:Building:1".into(),
            types: vec![
                iri("https://example.org/Building"),
                iri("https://example.org/Venue"),
            ],
            scopes: vec!["/Guangzhou/Tianhe".into()],
            attrs: vec![
                (
                    iri("https://example.org/name"),
                    vec![instance(
                        AttrValue::LanguageProperty(
                            json!({"en": "Canton Tower", "zh": "广州塔"})
                                .as_object()
                                .unwrap()
                                .clone(),
                        ),
                        None,
                    )]
                    .into(),
                ),
                (
                    iri("https://example.org/category"),
                    vec![instance(
                        AttrValue::VocabProperty(json!(["https://example.org/tower"])),
                        None,
                    )]
                    .into(),
                ),
                (
                    iri("https://example.org/config"),
                    vec![instance(AttrValue::JsonProperty(json!({"a": 1})), None)].into(),
                ),
                (
                    iri("https://example.org/levels"),
                    vec![instance(
                        AttrValue::ListProperty(vec![json!(1), json!(2)]),
                        None,
                    )]
                    .into(),
                ),
                (
                    iri("https://example.org/route"),
                    vec![instance(
                        AttrValue::ListRelationship {
                            objects: vec![object.clone(), json!("urn:ngsi-ld:Street:2")],
                            object_type: Some(json!("https://example.org/Street")),
                        },
                        None,
                    )]
                    .into(),
                ),
                (
                    iri("https://example.org/street"),
                    vec![instance(
                        AttrValue::Relationship {
                            object,
                            object_type: Some(json!("https://example.org/Street")),
                        },
                        None,
                    )]
                    .into(),
                ),
                (
                    iri("https://example.org/temperature"),
                    vec![
                        instance(
                            AttrValue::Property(json!(21)),
                            Some("urn:ngsi-ld:Dataset:a"),
                        ),
                        instance(AttrValue::Property(json!(20)), None),
                    ]
                    .into(),
                ),
            ],
            created_at: 1,
            modified_at: 2,
            expires_at: Some("2100-01-01T00:00:00Z".into()),
        }
    }

    fn value_of(e: &Entity, name: &str) -> AttrValue {
        e.attr(&format!("https://example.org/{name}")).unwrap()[0]
            .value
            .clone()
    }

    #[test]
    fn before_1_9_expiry_and_value_types_go() {
        let mut e = sample();
        assert!(e.expires_at.is_some());
        amend(&mut e, (1, 8), &Short);
        assert_eq!(e.expires_at, None);
        for (name, instances) in &e.attrs {
            for a in instances.iter() {
                assert!(a.extra.is_none(), "{name}");
                assert!(a.unit_code.is_some(), "{name}");
            }
        }
    }

    #[test]
    fn this_brokers_version_and_later_leave_the_entity_alone() {
        for v in [(1, 9), (2, 0)] {
            let mut e = sample();
            amend(&mut e, v, &Short);
            assert_eq!(e, sample());
        }
    }

    #[test]
    fn before_1_8_the_new_kinds_become_properties_and_relationships() {
        let mut e = sample();
        amend(&mut e, (1, 7), &Short);
        assert_eq!(
            value_of(&e, "category"),
            AttrValue::Property(json!(["tower"]))
        );
        assert_eq!(value_of(&e, "config"), AttrValue::Property(json!({"a": 1})));
        assert_eq!(value_of(&e, "levels"), AttrValue::Property(json!([1, 2])));
        assert_eq!(
            value_of(&e, "route"),
            AttrValue::Relationship {
                object: json!(["urn:ngsi-ld:Street:1", "urn:ngsi-ld:Street:2"]),
                object_type: None
            }
        );
        assert_eq!(
            value_of(&e, "street"),
            AttrValue::Relationship {
                object: json!("urn:ngsi-ld:Street:1"),
                object_type: None
            }
        );
        // Introduced before 1.7: kept.
        assert!(matches!(
            value_of(&e, "name"),
            AttrValue::LanguageProperty(_)
        ));
        assert_eq!(e.scopes.len(), 1);
        assert_eq!(e.types.len(), 2);
        let temperature = e.attr("https://example.org/temperature").unwrap();
        assert_eq!(temperature.len(), 2);
        assert!(temperature[0].dataset_id.is_some() && temperature[0].unit_code.is_some());
    }

    #[test]
    fn before_1_4_scopes_and_language_properties_go() {
        let mut e = sample();
        amend(&mut e, (1, 3), &Short);
        assert!(e.scopes.is_empty());
        assert_eq!(
            value_of(&e, "name"),
            AttrValue::Property(json!({"en": "Canton Tower", "zh": "广州塔"}))
        );
        assert_eq!(e.types.len(), 2);
    }

    #[test]
    fn version_1_0_has_one_type_one_instance_and_no_metadata() {
        let mut e = sample();
        amend(&mut e, (1, 0), &Short);
        assert_eq!(e.types, vec![iri("https://example.org/Building")]);
        let temperature = e.attr("https://example.org/temperature").unwrap();
        assert_eq!(temperature.len(), 1, "the default instance alone");
        assert_eq!(temperature[0].value, AttrValue::Property(json!(20)));
        for (_, instances) in &e.attrs {
            for a in instances {
                assert!(a.dataset_id.is_none() && a.observed_at.is_none() && a.unit_code.is_none());
            }
        }
    }

    #[test]
    fn sub_attributes_are_amended_too() {
        let mut e = sample();
        let mut a = Attribute::new(AttrValue::Property(json!(1)));
        a.sub.push((
            iri("https://example.org/source"),
            instance(AttrValue::JsonProperty(json!([1])), None),
        ));
        e.attrs
            .push((iri("https://example.org/withSub"), vec![a].into()));
        amend(&mut e, (1, 5), &Short);
        let sub = &e.attr("https://example.org/withSub").unwrap()[0].sub[0].1;
        assert_eq!(sub.value, AttrValue::Property(json!([1])));
    }
}
