//! Rendering of entities to the normalized, concise and keyValues forms,
//! compacting every IRI through the response's JSON-LD context.
//!
//! One renderer writes to a [`Sink`]: a [`ValueSink`] builds a JSON value
//! (for callers that still change the result, such as notifications), a
//! [`JsonSink`] writes JSON text straight into a byte buffer (for query
//! answers, where the tree would only be serialized and dropped).

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
    /// Leave out the entity's `id` (pick/omit, clause 4.21).
    pub omit_id: bool,
    /// Leave out the entity's `type`.
    pub omit_type: bool,
    /// Leave out the entity's `scope`.
    pub omit_scope: bool,
    /// Inline Linked Entity retrieval (clause 4.5.23.2): the rendered
    /// Linked Entities by id. A top-level Relationship whose object one of
    /// them is gets it as its `entity` member (an array of them for several
    /// objects), a ListRelationship its `entityList`; in the simplified
    /// form the Linked Entity stands in for the object.
    pub linked: Option<&'a LinkedEntities>,
}

/// Rendered Linked Entities by id (see [`RenderOptions::linked`]).
pub type LinkedEntities = std::collections::HashMap<String, Value>;

/// Where a renderer writes JSON, as a sequence of events. Keys come only
/// inside objects, each followed by exactly one value.
pub trait Sink {
    /// Opens an object.
    fn begin_object(&mut self);
    /// Closes the innermost object.
    fn end_object(&mut self);
    /// Opens an array.
    fn begin_array(&mut self);
    /// Closes the innermost array.
    fn end_array(&mut self);
    /// The key of the next member of the innermost object.
    fn key(&mut self, k: &str);
    /// A string value.
    fn string(&mut self, s: &str);
    /// Any JSON value.
    fn value(&mut self, v: &Value);
}

/// A [`Sink`] that builds a [`Value`].
#[derive(Debug, Default)]
pub struct ValueSink {
    open: Vec<Open>,
    done: Option<Value>,
}

#[derive(Debug)]
enum Open {
    Object(Map<String, Value>, Option<String>),
    Array(Vec<Value>),
}

impl ValueSink {
    fn put(&mut self, v: Value) {
        match self.open.last_mut() {
            Some(Open::Object(m, key)) => {
                if let Some(k) = key.take() {
                    m.insert(k, v);
                }
            }
            Some(Open::Array(items)) => items.push(v),
            None => self.done = Some(v),
        }
    }

    /// The value written (null if nothing was).
    pub fn finish(self) -> Value {
        self.done.unwrap_or(Value::Null)
    }
}

impl Sink for ValueSink {
    fn begin_object(&mut self) {
        self.open.push(Open::Object(Map::new(), None));
    }
    fn end_object(&mut self) {
        if let Some(Open::Object(m, _)) = self.open.pop() {
            self.put(Value::Object(m));
        }
    }
    fn begin_array(&mut self) {
        self.open.push(Open::Array(Vec::new()));
    }
    fn end_array(&mut self) {
        if let Some(Open::Array(items)) = self.open.pop() {
            self.put(Value::Array(items));
        }
    }
    fn key(&mut self, k: &str) {
        if let Some(Open::Object(_, key)) = self.open.last_mut() {
            *key = Some(k.to_owned());
        }
    }
    fn string(&mut self, s: &str) {
        self.put(Value::String(s.to_owned()));
    }
    fn value(&mut self, v: &Value) {
        self.put(v.clone());
    }
}

/// A [`Sink`] that writes compact JSON text, as `serde_json::to_vec` would
/// write the value a [`ValueSink`] builds from the same events.
#[derive(Debug, Default)]
pub struct JsonSink {
    /// The text written so far.
    pub out: Vec<u8>,
    /// Whether the next member or item needs a comma before it.
    comma: bool,
}

impl JsonSink {
    /// A sink that appends to `out`.
    pub fn new(out: Vec<u8>) -> Self {
        Self { out, comma: false }
    }

    fn separate(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
    }
}

impl Sink for JsonSink {
    fn begin_object(&mut self) {
        self.separate();
        self.out.push(b'{');
        self.comma = false;
    }
    fn end_object(&mut self) {
        self.out.push(b'}');
        self.comma = true;
    }
    fn begin_array(&mut self) {
        self.separate();
        self.out.push(b'[');
        self.comma = false;
    }
    fn end_array(&mut self) {
        self.out.push(b']');
        self.comma = true;
    }
    fn key(&mut self, k: &str) {
        self.separate();
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, k);
        self.out.push(b':');
        self.comma = false;
    }
    fn string(&mut self, s: &str) {
        self.separate();
        let _ = serde_json::to_writer(&mut self.out, s);
        self.comma = true;
    }
    fn value(&mut self, v: &Value) {
        self.separate();
        // A Value has only string keys, so this cannot fail either.
        let _ = serde_json::to_writer(&mut self.out, v);
        self.comma = true;
    }
}

/// The GeoJSON Feature of a rendered entity (clause 4.5.16): its geometry
/// is the value of `geometry_property`, of the default instance when the
/// attribute has several, and null when the entity lacks it or its value is
/// no GeoJSON geometry.
pub fn geojson_feature(mut entity: Map<String, Value>, geometry_property: &str) -> Value {
    let id = entity.remove("id").unwrap_or(Value::Null);
    let geometry = entity
        .get(geometry_property)
        .and_then(geometry_of)
        .cloned()
        .unwrap_or(Value::Null);
    serde_json::json!({ "id": id, "type": "Feature", "geometry": geometry, "properties": entity })
}

/// The geometry of a rendered attribute in any representation: normalized
/// or concise `{"value": ...}`, an array of instances, the simplified
/// `{"dataset": {...}}` map or a bare value.
fn geometry_of(rendered: &Value) -> Option<&Value> {
    match rendered {
        Value::Array(instances) => instances
            .iter()
            .find(|i| i.get("datasetId").is_none())
            .and_then(geometry_of),
        Value::Object(m) if m.len() == 1 && m.contains_key("dataset") => {
            m.get("dataset")?.get("@none").and_then(geometry_of)
        }
        Value::Object(m) if m.contains_key("value") => m.get("value").filter(|v| is_geometry(v)),
        v if is_geometry(v) => Some(v),
        _ => None,
    }
}

/// Whether `v` looks like a GeoJSON geometry object (a geometry type and its
/// coordinates); values were validated when they were written.
fn is_geometry(v: &Value) -> bool {
    v.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| crate::parse::GEOJSON_TYPES.contains(&t))
        && v.get("coordinates").is_some()
}

/// Renders `entity` as a JSON object. The caller has already applied any
/// attribute projection.
pub fn render_entity(
    entity: &Entity,
    terms: &dyn Terms,
    opts: &RenderOptions,
) -> Map<String, Value> {
    let mut sink = ValueSink::default();
    write_entity(entity, terms, opts, &mut sink);
    match sink.finish() {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Renders one attribute instance.
pub fn render_attribute(attr: &Attribute, terms: &dyn Terms, opts: &RenderOptions) -> Value {
    let mut sink = ValueSink::default();
    write_attribute(attr, terms, opts, &mut sink);
    sink.finish()
}

/// Writes `entity` as a JSON object to `out` (see [`render_entity`]).
pub fn write_entity<S: Sink>(
    entity: &Entity,
    terms: &dyn Terms,
    opts: &RenderOptions,
    out: &mut S,
) {
    out.begin_object();
    if !opts.omit_id {
        out.key("id");
        out.string(&entity.id);
    }
    if !opts.omit_type {
        out.key("type");
        one_or_many(out, &entity.types, |out, t| out.string(&terms.compact(t)));
    }
    if !entity.scopes.is_empty() && !opts.omit_scope {
        out.key("scope");
        one_or_many(out, &entity.scopes, |out, s| out.string(s));
    }
    if opts.sys_attrs && opts.format != Format::KeyValues {
        out.key("createdAt");
        out.string(&format_micros(entity.created_at));
        out.key("modifiedAt");
        out.string(&format_micros(entity.modified_at));
        if let Some(x) = &entity.expires_at {
            out.key("expiresAt");
            out.string(x);
        }
    }
    for (name, instances) in &entity.attrs {
        out.key(&terms.compact(name));
        write_instances(instances, terms, opts, out);
    }
    out.end_object();
}

/// One item as itself, several as an array.
fn one_or_many<S: Sink, T>(out: &mut S, items: &[T], mut write: impl FnMut(&mut S, &T)) {
    if let [only] = items {
        write(out, only);
        return;
    }
    out.begin_array();
    for item in items {
        write(out, item);
    }
    out.end_array();
}

/// Writes the instances of one attribute: one value, or an array for a
/// multi-attribute. In the simplified form a multi-attribute is
/// `{"dataset": {<datasetId>: <value>, "@none": <default instance's value>}}`
/// (clause 4.5.4, see docs/spec-notes.md §7.3).
fn write_instances<S: Sink>(
    instances: &[Attribute],
    terms: &dyn Terms,
    opts: &RenderOptions,
    out: &mut S,
) {
    if let [only] = instances {
        write_attribute(only, terms, opts, out);
        return;
    }
    if opts.format == Format::KeyValues {
        out.begin_object();
        out.key("dataset");
        out.begin_object();
        for a in instances {
            out.key(dataset_key(a));
            write_attribute(a, terms, opts, out);
        }
        out.end_object();
        out.end_object();
        return;
    }
    out.begin_array();
    for a in instances {
        // An instance among several is always an object (clause 4.5.2.3):
        // a bare value in the array would read back as one Property whose
        // value is the array.
        write_instance(a, terms, opts, false, out);
    }
    out.end_array();
}

/// The key of an instance in the simplified `dataset` map: its datasetId,
/// or `@none` for the default instance.
pub fn dataset_key(a: &Attribute) -> &str {
    a.dataset_id.as_deref().unwrap_or("@none")
}

/// Writes a VocabProperty's value or an objectType with every IRI compacted.
fn write_vocab<S: Sink>(v: &Value, terms: &dyn Terms, out: &mut S) {
    match v {
        Value::String(s) => out.string(&terms.compact(s)),
        Value::Array(items) => {
            out.begin_array();
            for i in items {
                write_vocab(i, terms, out);
            }
            out.end_array();
        }
        other => out.value(other),
    }
}

fn write_map<S: Sink>(map: &Map<String, Value>, out: &mut S) {
    out.begin_object();
    for (k, v) in map {
        out.key(k);
        out.value(v);
    }
    out.end_object();
}

fn write_list<S: Sink>(items: &[Value], out: &mut S) {
    out.begin_array();
    for i in items {
        out.value(i);
    }
    out.end_array();
}

/// `{"<member>": <value>}`.
fn write_wrapped<S: Sink>(member: &str, out: &mut S, write: impl FnOnce(&mut S)) {
    out.begin_object();
    out.key(member);
    write(out);
    out.end_object();
}

/// Chooses the string of a language map for `lang` (clause 4.15): a
/// comma-separated list of language ranges, each with an optional
/// `;q=<weight>` (default 1), tried by descending weight and, among equal
/// weights, in the order given. A range matches a tag equal to it, or with
/// the same primary subtag (`nl-BE` finds `nl`, `en` finds `en-US`), case
/// aside; `*` matches any entry. When no range matches: `@none`, then the
/// first entry.
pub fn pick_language<'m>(map: &'m Map<String, Value>, lang: &str) -> Option<(&'m str, &'m Value)> {
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

/// Writes one attribute instance (see [`render_attribute`]).
pub fn write_attribute<S: Sink>(
    attr: &Attribute,
    terms: &dyn Terms,
    opts: &RenderOptions,
    out: &mut S,
) {
    write_instance(attr, terms, opts, true, out);
}

/// [`write_attribute`]; `bare` lets the concise form write a plain value
/// as itself.
fn write_instance<S: Sink>(
    attr: &Attribute,
    terms: &dyn Terms,
    opts: &RenderOptions,
    bare: bool,
    out: &mut S,
) {
    let lang = opts.lang.filter(|l| !l.trim().is_empty());
    let picked = match &attr.value {
        AttrValue::LanguageProperty(map) => lang.and_then(|l| pick_language(map, l)),
        _ => None,
    };
    if opts.format == Format::KeyValues {
        match &attr.value {
            AttrValue::Property(v) | AttrValue::GeoProperty(v) => out.value(v),
            // Like languageMap and vocab, the json member stays, so that the
            // keys of the JSON value are not read as terms (clause 4.5.4).
            AttrValue::JsonProperty(v) => write_wrapped("json", out, |out| out.value(v)),
            AttrValue::Relationship { object, .. } => match opts.linked {
                Some(linked) => out.value(&linked_or_object(object, linked)),
                None => out.value(object),
            },
            // The simplified forms of LanguageProperty and VocabProperty keep
            // their member name, so that the keys (language tags) are not
            // expanded and the terms can be expanded again by @vocab.
            AttrValue::LanguageProperty(map) => match picked {
                Some((_, v)) => out.value(v),
                None => write_wrapped("languageMap", out, |out| write_map(map, out)),
            },
            AttrValue::VocabProperty(v) => {
                write_wrapped("vocab", out, |out| write_vocab(v, terms, out))
            }
            AttrValue::ListProperty(items) => write_list(items, out),
            AttrValue::ListRelationship { objects, .. } => match opts.linked {
                Some(linked) => {
                    out.begin_array();
                    for o in objects {
                        out.value(&linked_or_object(o, linked));
                    }
                    out.end_array();
                }
                None => write_list(objects, out),
            },
        }
        return;
    }
    let concise = opts.format == Format::Concise;
    // Concise: a Property or GeoProperty with nothing but its value is
    // written as the bare value, unless the value is an object that would
    // be read back as something else.
    if concise
        && bare
        && attr.dataset_id.is_none()
        && attr.observed_at.is_none()
        && attr.unit_code.is_none()
        && attr.value_type().is_none()
        && !opts.sys_attrs
        && attr.sub.is_empty()
        && let AttrValue::Property(v) | AttrValue::GeoProperty(v) = &attr.value
    {
        let bare_ok = match v {
            Value::Object(_) => matches!(attr.value, AttrValue::GeoProperty(_)),
            Value::Array(items) => !items.iter().any(Value::is_object),
            _ => true,
        };
        if bare_ok {
            out.value(v);
            return;
        }
    }
    out.begin_object();
    if !concise {
        out.key("type");
        // A LanguageProperty narrowed to one language is a Property.
        out.string(if picked.is_some() {
            "Property"
        } else {
            attr.value.kind_name()
        });
    }
    match &attr.value {
        AttrValue::Property(v) | AttrValue::GeoProperty(v) => {
            out.key("value");
            out.value(v);
        }
        AttrValue::Relationship {
            object,
            object_type,
        } => {
            out.key("object");
            out.value(object);
            if let Some(t) = object_type {
                out.key("objectType");
                write_vocab(t, terms, out);
            }
            if let Some(linked) = opts.linked {
                match object {
                    Value::String(id) => {
                        if let Some(e) = linked.get(id.as_str()) {
                            out.key("entity");
                            out.value(e);
                        }
                    }
                    Value::Array(ids) => {
                        let held: Vec<&Value> =
                            ids.iter().filter_map(|i| linked.get(i.as_str()?)).collect();
                        if !held.is_empty() {
                            out.key("entity");
                            out.begin_array();
                            held.into_iter().for_each(|e| out.value(e));
                            out.end_array();
                        }
                    }
                    _ => {}
                }
            }
        }
        AttrValue::LanguageProperty(map) => match picked {
            Some((tag, v)) => {
                out.key("value");
                out.value(v);
                out.key("lang");
                out.string(tag);
            }
            None => {
                out.key("languageMap");
                write_map(map, out);
            }
        },
        AttrValue::JsonProperty(v) => {
            out.key("json");
            out.value(v);
        }
        AttrValue::VocabProperty(v) => {
            out.key("vocab");
            write_vocab(v, terms, out);
        }
        AttrValue::ListProperty(items) => {
            out.key("valueList");
            write_list(items, out);
        }
        AttrValue::ListRelationship {
            objects,
            object_type,
        } => {
            // The list is written as objects in every form but keyValues
            // (clause 4.5.22).
            out.key("objectList");
            out.begin_array();
            for o in objects {
                write_wrapped("object", out, |out| out.value(o));
            }
            out.end_array();
            if let Some(t) = object_type {
                out.key("objectType");
                write_vocab(t, terms, out);
            }
            if let Some(linked) = opts.linked {
                let held: Vec<&Value> = objects
                    .iter()
                    .filter_map(|i| linked.get(i.as_str()?))
                    .collect();
                if !held.is_empty() {
                    out.key("entityList");
                    out.begin_array();
                    held.into_iter().for_each(|e| out.value(e));
                    out.end_array();
                }
            }
        }
    }
    if let Some(d) = &attr.dataset_id {
        out.key("datasetId");
        out.string(d);
    }
    if let Some(o) = &attr.observed_at {
        out.key("observedAt");
        out.string(o);
    }
    if let Some(u) = &attr.unit_code {
        out.key("unitCode");
        out.string(u);
    }
    if let Some(t) = attr.value_type() {
        out.key("valueType");
        out.string(&terms.compact(t));
    }
    if opts.sys_attrs {
        out.key("createdAt");
        out.string(&format_micros(attr.created_at));
        out.key("modifiedAt");
        out.string(&format_micros(attr.modified_at));
        if let Some(x) = attr.expires_at() {
            out.key("expiresAt");
            out.string(x);
        }
    }
    // Only top-level Relationships are followed (clause 5.7.1.5: "the
    // returned Attributes").
    let sub_opts = RenderOptions {
        linked: None,
        ..*opts
    };
    for (name, sub) in &attr.sub {
        out.key(&terms.compact(name));
        write_attribute(sub, terms, &sub_opts, out);
    }
    out.end_object();
}

/// In the simplified form, the Linked Entity an object names, or the
/// object itself when it names none held.
fn linked_or_object(object: &Value, linked: &LinkedEntities) -> Value {
    match object {
        Value::String(id) => linked
            .get(id.as_str())
            .cloned()
            .unwrap_or_else(|| object.clone()),
        Value::Array(ids) => {
            Value::Array(ids.iter().map(|i| linked_or_object(i, linked)).collect())
        }
        other => other.clone(),
    }
}
