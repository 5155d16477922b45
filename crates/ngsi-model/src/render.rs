//! Rendering of entities to the normalized, concise and keyValues forms,
//! compacting every IRI through the response's JSON-LD context.

use serde_json::{Map, Value};

use crate::entity::{AttrValue, Attribute, Entity};
use crate::parse::Terms;
use crate::time::format_micros;

/// The representation of attributes in a response (clause 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Every attribute as a full object with its type.
    #[default]
    Normalized,
    /// Attributes without redundant members.
    Concise,
    /// Attributes as their bare values (a.k.a. simplified).
    KeyValues,
}

/// How to render an entity.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions<'a> {
    /// The representation.
    pub format: Format,
    /// Include createdAt and modifiedAt.
    pub sys_attrs: bool,
    /// Pick one language of LanguageProperties (`*` keeps all).
    pub lang: Option<&'a str>,
}

/// Renders `entity` as a JSON object. The caller has already applied any
/// attribute projection.
pub fn render_entity(
    entity: &Entity,
    terms: &dyn Terms,
    opts: &RenderOptions,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(entity.id.to_string()));
    let types: Vec<Value> = entity
        .types
        .iter()
        .map(|t| Value::String(terms.compact(t).into_owned()))
        .collect();
    out.insert(
        "type".into(),
        if types.len() == 1 {
            types.into_iter().next().unwrap()
        } else {
            Value::Array(types)
        },
    );
    if !entity.scopes.is_empty() {
        let scopes: Vec<Value> = entity
            .scopes
            .iter()
            .map(|s| Value::String(s.to_string()))
            .collect();
        out.insert(
            "scope".into(),
            if scopes.len() == 1 {
                scopes.into_iter().next().unwrap()
            } else {
                Value::Array(scopes)
            },
        );
    }
    if opts.sys_attrs && opts.format != Format::KeyValues {
        out.insert(
            "createdAt".into(),
            Value::String(format_micros(entity.created_at)),
        );
        out.insert(
            "modifiedAt".into(),
            Value::String(format_micros(entity.modified_at)),
        );
    }
    for (name, instances) in &entity.attrs {
        out.insert(
            terms.compact(name).into_owned(),
            render_instances(instances, terms, opts),
        );
    }
    out
}

/// Renders the instances of one attribute: one value, or an array for a
/// multi-attribute. In the simplified form a multi-attribute is
/// `{"dataset": {<datasetId>: <value>, "@none": <default instance's value>}}`
/// (clause 4.5.4, see docs/spec-notes.md §7.3).
pub fn render_instances(instances: &[Attribute], terms: &dyn Terms, opts: &RenderOptions) -> Value {
    if instances.len() == 1 {
        return render_attribute(&instances[0], terms, opts);
    }
    if opts.format == Format::KeyValues {
        let dataset: Map<String, Value> = instances
            .iter()
            .map(|a| (dataset_key(a).to_string(), render_attribute(a, terms, opts)))
            .collect();
        return serde_json::json!({ "dataset": dataset });
    }
    Value::Array(
        instances
            .iter()
            .map(|a| render_attribute(a, terms, opts))
            .collect(),
    )
}

/// The key of an instance in the simplified `dataset` map: its datasetId,
/// or `@none` for the default instance.
pub fn dataset_key(a: &Attribute) -> &str {
    a.dataset_id.as_deref().unwrap_or("@none")
}

fn compact_vocab(v: &Value, terms: &dyn Terms) -> Value {
    match v {
        Value::String(s) => Value::String(terms.compact(s).into_owned()),
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| compact_vocab(i, terms)).collect())
        }
        other => other.clone(),
    }
}

/// Chooses the string of a language map for `lang` (clause 4.15): a
/// comma-separated list of language ranges, each with an optional
/// `;q=<weight>` (default 1), tried by descending weight and, among equal
/// weights, in the order given. A range matches a tag equal to it, or with
/// the same primary subtag (`nl-BE` finds `nl`, `en` finds `en-US`), case
/// aside; `*` matches any entry. When no range matches: `@none`, then the
/// first entry.
fn pick_language<'m>(map: &'m Map<String, Value>, lang: &str) -> Option<(&'m str, &'m Value)> {
    let mut wanted: Vec<(&str, f64)> = lang
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let tag = parts.next().filter(|t| !t.is_empty())?;
            let weight = parts
                .find_map(|p| {
                    p.strip_prefix("q=")
                        .and_then(|w| w.trim().parse::<f64>().ok())
                })
                .filter(|w| w.is_finite())
                .unwrap_or(1.0);
            Some((tag, weight))
        })
        .collect();
    // Stable: equal weights keep the order given.
    wanted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let any = || {
        map.iter()
            .find(|(k, _)| *k == "@none")
            .or_else(|| map.iter().next())
    };
    let matching = |tag: &str| {
        if tag == "*" {
            return any();
        }
        let primary = tag.split('-').next().unwrap_or(tag);
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(tag))
            .or_else(|| {
                map.iter().find(|(k, _)| {
                    k.split('-')
                        .next()
                        .is_some_and(|p| p.eq_ignore_ascii_case(primary))
                })
            })
    };
    wanted
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .find_map(|(t, _)| matching(t))
        .or_else(any)
        .map(|(k, v)| (k.as_str(), v))
}

/// Renders one attribute instance.
pub fn render_attribute(attr: &Attribute, terms: &dyn Terms, opts: &RenderOptions) -> Value {
    let lang = opts.lang.filter(|l| !l.trim().is_empty());
    if opts.format == Format::KeyValues {
        return match &attr.value {
            AttrValue::Property(v) | AttrValue::GeoProperty(v) => v.clone(),
            // Like languageMap and vocab, the json member stays, so that the
            // keys of the JSON value are not read as terms (clause 4.5.4).
            AttrValue::JsonProperty(v) => serde_json::json!({ "json": v }),
            AttrValue::Relationship { object, .. } => object.clone(),
            // The simplified forms of LanguageProperty and VocabProperty keep
            // their member name, so that the keys (language tags) are not
            // expanded and the terms can be expanded again by @vocab.
            AttrValue::LanguageProperty(map) => match lang.and_then(|l| pick_language(map, l)) {
                Some((_, v)) => v.clone(),
                None => serde_json::json!({ "languageMap": map }),
            },
            AttrValue::VocabProperty(v) => serde_json::json!({ "vocab": compact_vocab(v, terms) }),
            AttrValue::ListProperty(items) => Value::Array(items.clone()),
            AttrValue::ListRelationship { objects, .. } => Value::Array(objects.clone()),
        };
    }
    let concise = opts.format == Format::Concise;
    let mut m = Map::new();
    let mut kind = attr.value.kind_name();
    let mut value_member = "value";
    match &attr.value {
        AttrValue::Property(v) | AttrValue::GeoProperty(v) => {
            m.insert("value".into(), v.clone());
        }
        AttrValue::Relationship {
            object,
            object_type,
        } => {
            value_member = "object";
            m.insert("object".into(), object.clone());
            if let Some(t) = object_type {
                m.insert("objectType".into(), compact_vocab(t, terms));
            }
        }
        AttrValue::LanguageProperty(map) => match lang.and_then(|l| pick_language(map, l)) {
            Some((tag, v)) => {
                kind = "Property";
                m.insert("value".into(), v.clone());
                m.insert("lang".into(), Value::String(tag.to_string()));
            }
            None => {
                value_member = "languageMap";
                m.insert("languageMap".into(), Value::Object(map.clone()));
            }
        },
        AttrValue::JsonProperty(v) => {
            value_member = "json";
            m.insert("json".into(), v.clone());
        }
        AttrValue::VocabProperty(v) => {
            value_member = "vocab";
            m.insert("vocab".into(), compact_vocab(v, terms));
        }
        AttrValue::ListProperty(items) => {
            value_member = "valueList";
            m.insert("valueList".into(), Value::Array(items.clone()));
        }
        AttrValue::ListRelationship {
            objects,
            object_type,
        } => {
            value_member = "objectList";
            // The list is written as objects in every form but keyValues
            // (clause 4.5.22).
            let list = objects
                .iter()
                .map(|o| serde_json::json!({ "object": o }))
                .collect();
            m.insert("objectList".into(), Value::Array(list));
            if let Some(t) = object_type {
                m.insert("objectType".into(), compact_vocab(t, terms));
            }
        }
    }
    if let Some(d) = &attr.dataset_id {
        m.insert("datasetId".into(), Value::String(d.to_string()));
    }
    if let Some(o) = &attr.observed_at {
        m.insert("observedAt".into(), Value::String(o.to_string()));
    }
    if let Some(u) = &attr.unit_code {
        m.insert("unitCode".into(), Value::String(u.to_string()));
    }
    if opts.sys_attrs {
        m.insert(
            "createdAt".into(),
            Value::String(format_micros(attr.created_at)),
        );
        m.insert(
            "modifiedAt".into(),
            Value::String(format_micros(attr.modified_at)),
        );
    }
    for (name, sub) in &attr.sub {
        m.insert(
            terms.compact(name).into_owned(),
            render_attribute(sub, terms, opts),
        );
    }
    if concise {
        // A Property or GeoProperty with nothing but its value is written as
        // the bare value, unless the value is an object that would be read
        // back as something else.
        if m.len() == 1 && value_member == "value" && matches!(kind, "Property" | "GeoProperty") {
            let v = m.remove("value").unwrap_or(Value::Null);
            let bare_ok = match &v {
                Value::Object(_) => kind == "GeoProperty",
                Value::Array(items) => !items.iter().any(Value::is_object),
                _ => true,
            };
            if bare_ok {
                return v;
            }
            m.insert("value".into(), v);
        }
        return Value::Object(m);
    }
    let mut full = Map::with_capacity(m.len() + 1);
    full.insert("type".into(), Value::String(kind.to_string()));
    full.extend(m);
    Value::Object(full)
}
