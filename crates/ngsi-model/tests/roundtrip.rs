//! Property tests: for every normalized entity we accept, rendering the parsed
//! (expanded) entity with the same @context gives back the document:
//! compact(expand(x)) == x. And parsing never panics on arbitrary JSON.

use std::borrow::Cow;

use ngsi_model::Terms;
use ngsi_model::parse::{EntityRequirements, ParseLimits, parse_entity};
use ngsi_model::render::{Format, JsonSink, RenderOptions, render_entity, write_entity};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// A user @context over the core context, as a client would send it.
struct UserContext(jsonld::Context);

impl Terms for UserContext {
    fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
        self.0.expand_term(term)
    }
    fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        self.0.compact_iri(iri)
    }
}

fn context() -> UserContext {
    UserContext(
        jsonld::Context::from_value(&json!({
            "gz": "https://data.guangzhou.example/ontology#",
            "WaterLevelSensor": "gz:WaterLevelSensor",
            "level": "gz:level",
            "district": "gz:district",
            "name": "https://schema.org/name",
        }))
        .expect("valid context"),
    )
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("level".to_string()),
        Just("district".to_string()),
        Just("name".to_string()),
        Just("gz:extra".to_string()),
        "[a-z][a-zA-Z0-9_]{0,12}".prop_filter("not reserved", |n| !matches!(
            n.as_str(),
            "id" | "type"
                | "value"
                | "object"
                | "objectType"
                | "languageMap"
                | "json"
                | "vocab"
                | "valueList"
                | "objectList"
                | "datasetId"
                | "instanceId"
                | "observedAt"
                | "unitCode"
                | "createdAt"
                | "modifiedAt"
                | "deletedAt"
                | "lang"
                | "valueType"
                | "scope"
                | "location"
                | "observationSpace"
                | "operationSpace"
        )),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[a-zA-Z0-9 广州五羊<>=;()'\"]{0,20}"
            .prop_filter("no NGSI-LD Null", |s| s != "urn:ngsi-ld:null")
            .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 1..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn uri() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9]{0,8}:[0-9]{1,4}".prop_map(|s| format!("urn:ngsi-ld:{s}"))
}

fn attribute() -> impl Strategy<Value = Value> {
    let metadata = (
        prop::option::of(uri()),
        prop::option::of(Just("2026-07-01T08:00:00Z".to_string())),
        prop::option::of("[A-Z0-9]{3}"),
    );
    let kind = prop_oneof![
        json_value().prop_map(|v| json!({"type": "Property", "value": v})),
        uri().prop_map(|o| json!({"type": "Relationship", "object": o})),
        (-180.0f64..180.0, -90.0f64..90.0)
            .prop_map(|(x, y)| json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [x, y]}})),
        prop::collection::btree_map("(zh|en|zh-Hans|@none)", "[a-z广州]{1,8}", 1..3)
            .prop_map(|m| json!({"type": "LanguageProperty", "languageMap": m})),
        // A raw JSON object or an array of objects (clause 4.5.24.2).
        json_value().prop_map(|v| json!({"type": "JsonProperty", "json": {"raw": v}})),
        Just(json!({"type": "VocabProperty", "vocab": "WaterLevelSensor"})),
        prop::collection::vec(scalar(), 0..4).prop_map(|v| json!({"type": "ListProperty", "valueList": v})),
        prop::collection::vec(uri(), 0..3).prop_map(|v| {
            json!({"type": "ListRelationship", "objectList": v.into_iter().map(|o| json!({"object": o})).collect::<Vec<_>>()})
        }),
    ];
    (kind, metadata).prop_map(|(mut a, (dataset, observed, unit))| {
        let m = a.as_object_mut().unwrap();
        if let Some(d) = dataset {
            m.insert("datasetId".into(), Value::String(d));
        }
        if let Some(o) = observed {
            m.insert("observedAt".into(), Value::String(o));
        }
        if let Some(u) = unit
            && m["type"] == "Property"
        {
            m.insert("unitCode".into(), Value::String(u));
        }
        a
    })
}

fn entity() -> impl Strategy<Value = Value> {
    (
        uri(),
        prop::sample::select(vec!["WaterLevelSensor", "Vehicle", "gz:Camera"]),
        prop::collection::btree_map(name(), attribute(), 0..6),
    )
        .prop_map(|(id, t, attrs)| {
            let mut m = Map::new();
            m.insert("id".into(), Value::String(id));
            m.insert("type".into(), Value::String(t.into()));
            for (k, v) in attrs {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

proptest! {
    #[test]
    fn compact_of_expand_is_identity(doc in entity()) {
        let ctx = context();
        let parsed = parse_entity(&doc, &ctx, EntityRequirements { id: true, types: true }, ParseLimits::default())
            .expect("generated documents are valid");
        let rendered = render_entity(&parsed, &ctx, &RenderOptions { format: Format::Normalized, ..Default::default() });
        prop_assert_eq!(Value::Object(rendered), doc);
    }

    #[test]
    fn concise_output_parses_back_to_the_same_entity(doc in entity()) {
        let ctx = context();
        let req = EntityRequirements { id: true, types: true };
        let parsed = parse_entity(&doc, &ctx, req, ParseLimits::default()).unwrap();
        let concise = render_entity(&parsed, &ctx, &RenderOptions { format: Format::Concise, ..Default::default() });
        let again = parse_entity(&Value::Object(concise), &ctx, req, ParseLimits::default()).unwrap();
        prop_assert_eq!(again, parsed);
    }

    /// The JSON text writer and the value builder are one renderer: for
    /// every form and option the text is the serialized value.
    #[test]
    fn json_text_is_the_serialized_tree(
        doc in entity(),
        format in prop::sample::select(vec![Format::Normalized, Format::Concise, Format::KeyValues]),
        sys_attrs in any::<bool>(),
        lang in prop::option::of(prop::sample::select(vec!["zh", "en;q=0.5,zh-Hans", "*", "fr"])),
        omit in (any::<bool>(), any::<bool>(), any::<bool>()),
        multi in any::<bool>(),
    ) {
        let ctx = context();
        let mut parsed = parse_entity(&doc, &ctx, EntityRequirements { id: true, types: true }, ParseLimits::default()).unwrap();
        parsed.scopes = vec!["/Guangzhou/Tianhe".into()];
        if multi && let Some((_, instances)) = parsed.attrs.first_mut() {
            // A second instance under another datasetId: a multi-attribute.
            let mut other = instances[0].clone();
            other.dataset_id = Some(format!("{}:other", other.dataset_id.as_deref().unwrap_or("urn:ngsi-ld:Dataset")).into());
            instances.push(other);
        }
        let opts = RenderOptions { format, sys_attrs, lang, omit_id: omit.0, omit_type: omit.1, omit_scope: omit.2, linked: None };
        let tree = render_entity(&parsed, &ctx, &opts);
        let mut text = JsonSink::default();
        write_entity(&parsed, &ctx, &opts, &mut text);
        prop_assert_eq!(String::from_utf8(text.out).unwrap(), serde_json::to_string(&tree).unwrap());
    }

    #[test]
    fn parsing_never_panics(doc in json_value()) {
        let _ = parse_entity(&doc, &context(), EntityRequirements { id: true, types: true }, ParseLimits::default());
    }
}

#[test]
fn expanded_names_use_the_user_context() {
    let ctx = context();
    let doc = json!({"id": "urn:ngsi-ld:WaterLevelSensor:1", "type": "WaterLevelSensor",
        "level": {"type": "Property", "value": 2.5}, "free": 1});
    let e = parse_entity(
        &doc,
        &ctx,
        EntityRequirements {
            id: true,
            types: true,
        },
        ParseLimits::default(),
    )
    .unwrap();
    assert_eq!(
        &*e.types[0],
        "https://data.guangzhou.example/ontology#WaterLevelSensor"
    );
    assert_eq!(
        &*e.attrs[0].0,
        "https://data.guangzhou.example/ontology#level"
    );
    assert_eq!(
        &*e.attrs[1].0,
        "https://uri.etsi.org/ngsi-ld/default-context/free"
    );
}
