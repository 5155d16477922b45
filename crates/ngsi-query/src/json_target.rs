//! A [`Target`] over an entity in NGSI-LD normalized JSON, the reference
//! implementation of the trait's contract and the one the tests use.

use serde_json::Value as Json;

use crate::q::{AttrPath, Target};

/// An entity in normalized form (`{"id", "type", "attr": {"type": "Property",
/// "value": ..}, ..}`), with attribute names as the query uses them (compact
/// or expanded, as long as both agree). An attribute may be an array of
/// instances (datasetId).
#[derive(Debug, Clone, Copy)]
pub struct JsonTarget<'a>(pub &'a Json);

/// The member holding an attribute's target value, by attribute type
/// (clause 4.9: value, object, languageMap, valueList, objectList, json,
/// vocab).
const VALUE_MEMBERS: [&str; 7] = [
    "value",
    "object",
    "languageMap",
    "valueList",
    "objectList",
    "json",
    "vocab",
];

fn target_value(element: &Json) -> Option<&Json> {
    match element {
        Json::Object(m) => VALUE_MEMBERS.iter().find_map(|k| m.get(*k)),
        // A non-reified sub-attribute such as observedAt or unitCode.
        other => Some(other),
    }
}

fn instances(v: &Json) -> Vec<&Json> {
    match v {
        Json::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn walk(value: &Json, keys: &[String], out: &mut Vec<Json>) {
    let Some((key, rest)) = keys.split_first() else {
        out.push(value.clone());
        return;
    };
    let Json::Object(m) = value else { return };
    if key == "*" {
        for v in m.values() {
            walk(v, rest, out);
        }
    } else if let Some(v) = m.get(key) {
        walk(v, rest, out);
    }
}

impl Target for JsonTarget<'_> {
    fn values(&self, path: &AttrPath, out: &mut Vec<Json>) {
        let Some(attr) = self.0.get(&path.attr) else {
            return;
        };
        for instance in instances(attr) {
            let mut element = Some(instance);
            for sub in &path.sub_attrs {
                element = element.and_then(|e| e.get(sub));
            }
            let Some(value) = element.and_then(target_value) else {
                continue;
            };
            match value {
                // A LanguageProperty named without a language: the value of
                // every language (clause 4.9).
                Json::Object(m) if path.compound.is_empty() && is_language_map(element) => {
                    out.extend(m.values().cloned());
                }
                _ => walk(value, &path.compound, out),
            }
        }
    }

    fn is_language_map(&self, path: &AttrPath) -> bool {
        let Some(attr) = self.0.get(&path.attr) else {
            return false;
        };
        // Any instance, as the stored entities' target tells.
        path.compound.is_empty()
            && instances(attr).into_iter().any(|i| {
                let mut element = Some(i);
                for sub in &path.sub_attrs {
                    element = element.and_then(|e| e.get(sub));
                }
                is_language_map(element)
            })
    }

    fn is_relationship(&self, path: &AttrPath) -> bool {
        matches!(
            self.element(path)
                .and_then(|e| e.get("type"))
                .and_then(Json::as_str),
            Some("Relationship" | "ListRelationship")
        )
    }
}

impl<'a> JsonTarget<'a> {
    /// The first instance of the element at `path`, sub-attributes walked.
    fn element(&self, path: &AttrPath) -> Option<&'a Json> {
        let mut element = instances(self.0.get(&path.attr)?).into_iter().next();
        for sub in &path.sub_attrs {
            element = element.and_then(|e| e.get(sub));
        }
        element
    }
}

/// Whether an attribute element holds a languageMap.
fn is_language_map(element: Option<&Json>) -> bool {
    element.is_some_and(|e| e.get("languageMap").is_some())
}
