//! Evaluation of `q` against stored entities: the [`ngsi_query::Target`]
//! view of an [`Entity`].

use ngsi_model::time::format_micros;
use ngsi_model::{AttrValue, Attribute, Entity};
use std::sync::Arc;

use ngsi_query::q::Hop;
use ngsi_query::{AttrPath, Query, Target};
use serde_json::Value;

/// An entity seen by the q evaluator.
pub struct EntityTarget<'a>(pub &'a Entity);

/// The value of a member of an attribute named by a q path segment: either a
/// metadata member or a sub-attribute.
enum Member<'a> {
    Attr(&'a Attribute),
    Value(Value),
}

fn member<'a>(attr: &'a Attribute, name: &str) -> Option<Member<'a>> {
    // Metadata members are written as plain names; the broker expands every
    // name through the context, so recognise the expanded core forms too.
    let short = name
        .strip_prefix("https://uri.etsi.org/ngsi-ld/")
        .unwrap_or(name);
    match short {
        "observedAt" => attr
            .observed_at
            .as_deref()
            .map(|s| Member::Value(Value::String(s.to_string()))),
        "unitCode" => attr
            .unit_code
            .as_deref()
            .map(|s| Member::Value(Value::String(s.to_string()))),
        "datasetId" => attr
            .dataset_id
            .as_deref()
            .map(|s| Member::Value(Value::String(s.to_string()))),
        "createdAt" => Some(Member::Value(Value::String(format_micros(attr.created_at)))),
        "modifiedAt" => Some(Member::Value(Value::String(format_micros(
            attr.modified_at,
        )))),
        _ => attr.sub_attr(name).map(Member::Attr),
    }
}

/// The element of an attribute instance that `path`'s sub-attributes name
/// (the instance itself when there are none).
fn element<'a>(inst: &'a Attribute, path: &AttrPath) -> Option<Member<'a>> {
    let mut current = Member::Attr(inst);
    for sub in &path.sub_attrs {
        current = match &current {
            Member::Attr(a) => member(a, sub)?,
            Member::Value(_) => return None,
        };
    }
    Some(current)
}

fn is_language(a: &Attribute) -> bool {
    matches!(a.value, AttrValue::LanguageProperty(_))
}

fn primary_values(attr: &Attribute, out: &mut Vec<Value>) {
    match &attr.value {
        AttrValue::Property(v)
        | AttrValue::GeoProperty(v)
        | AttrValue::JsonProperty(v)
        | AttrValue::VocabProperty(v) => out.push(v.clone()),
        AttrValue::Relationship { object, .. } => out.push(object.clone()),
        AttrValue::LanguageProperty(m) => out.push(Value::Object(m.clone())),
        AttrValue::ListProperty(items) | AttrValue::ListRelationship { objects: items, .. } => {
            out.push(Value::Array(items.clone()))
        }
    }
}

fn walk(mut v: &Value, keys: &[String], out: &mut Vec<Value>) {
    for (i, k) in keys.iter().enumerate() {
        match v {
            Value::Object(m) if k == "*" => {
                for child in m.values() {
                    walk(child, &keys[i + 1..], out);
                }
                return;
            }
            Value::Object(m) => match m.get(k) {
                Some(child) => v = child,
                None => return,
            },
            _ => return,
        }
    }
    out.push(v.clone());
}

impl Target for EntityTarget<'_> {
    fn values(&self, path: &AttrPath, out: &mut Vec<Value>) {
        let Some(instances) = self.0.attr(&path.attr) else {
            return;
        };
        for inst in instances {
            let Some(current) = element(inst, path) else {
                continue;
            };
            let mut vals = Vec::new();
            let mut language = false;
            match current {
                Member::Attr(a) => {
                    language = is_language(a);
                    primary_values(a, &mut vals);
                }
                Member::Value(v) => vals.push(v),
            }
            for v in vals {
                match v {
                    // A LanguageProperty named without a language: the
                    // value of every language (clause 4.9).
                    Value::Object(m) if path.compound.is_empty() && language => {
                        out.extend(m.into_iter().map(|(_, v)| v));
                    }
                    v if path.compound.is_empty() => out.push(v),
                    v => walk(&v, &path.compound, out),
                }
            }
        }
    }

    fn is_language_map(&self, path: &AttrPath) -> bool {
        path.compound.is_empty()
            && self.0.attr(&path.attr).is_some_and(|instances| {
                instances.iter().any(
                    |inst| matches!(element(inst, path), Some(Member::Attr(a)) if is_language(a)),
                )
            })
    }

    fn is_relationship(&self, path: &AttrPath) -> bool {
        path.sub_attrs.is_empty()
            && self.0.attr(&path.attr).is_some_and(|i| {
                i.iter().any(|a| {
                    matches!(
                        a.value,
                        AttrValue::Relationship { .. } | AttrValue::ListRelationship { .. }
                    )
                })
            })
    }
}

/// Looks an entity of the tenant at hand up by id.
pub type Lookup<'a> = dyn Fn(&str) -> Option<Arc<Entity>> + 'a;

/// The most entities one evaluation of `q` looks up through
/// [`LinkedTarget`]: nested linked terms over Relationships with many
/// objects would otherwise multiply the lookups level by level. Past it,
/// the remaining linked terms do not match.
pub const MAX_LOOKUPS: usize = 1000;

/// An entity seen by the q evaluator, with the entities its Relationships
/// target looked up on demand (linked terms of `q` not resolved beforehand).
pub struct LinkedTarget<'a> {
    pub entity: &'a Entity,
    pub lookup: &'a Lookup<'a>,
    /// Lookups this evaluation may still make (shared by the targets it
    /// reaches).
    pub budget: &'a std::cell::Cell<usize>,
}

impl Target for LinkedTarget<'_> {
    fn values(&self, path: &AttrPath, out: &mut Vec<Value>) {
        EntityTarget(self.entity).values(path, out)
    }

    fn is_relationship(&self, path: &AttrPath) -> bool {
        EntityTarget(self.entity).is_relationship(path)
    }

    fn is_language_map(&self, path: &AttrPath) -> bool {
        EntityTarget(self.entity).is_language_map(path)
    }

    fn linked(&self, id: &str, hop: &Hop, rest: &Query) -> bool {
        let left = self.budget.get();
        if left == 0 {
            return false;
        }
        self.budget.set(left - 1);
        (self.lookup)(id).is_some_and(|e| {
            (hop.types.is_empty() || hop.types.iter().any(|t| e.has_type(t)))
                && rest.matches(&LinkedTarget {
                    entity: &e,
                    lookup: self.lookup,
                    budget: self.budget,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use ngsi_model::{AttrValue, Attribute, Entity, iri};
    use serde_json::json;

    use super::*;

    /// An entity whose ListRelationship `rel` targets `a` twice.
    fn looping(id: &str) -> Entity {
        Entity {
            id: id.into(),
            types: vec![iri("T")],
            scopes: Vec::new(),
            attrs: vec![(
                iri("rel"),
                vec![Attribute::new(AttrValue::ListRelationship {
                    objects: vec![json!("a"), json!("a")],
                    object_type: None,
                })]
                .into(),
            )],
            created_at: 0,
            modified_at: 0,
            expires_at: None,
        }
    }

    #[test]
    fn nested_linked_terms_make_a_bounded_number_of_lookups() {
        // Ten hops over two objects each: 2 + 4 + ... + 2^10 lookups
        // without the budget.
        let q = ngsi_query::parse_q(&format!("{}x{}", "rel{".repeat(10), "}".repeat(10))).unwrap();
        let calls = Cell::new(0usize);
        let lookup = |id: &str| {
            calls.set(calls.get() + 1);
            Some(Arc::new(looping(id)))
        };
        let root = looping("root");
        let matched = q.matches(&LinkedTarget {
            entity: &root,
            lookup: &lookup,
            budget: &Cell::new(MAX_LOOKUPS),
        });
        assert!(!matched, "no entity has x");
        assert_eq!(calls.get(), MAX_LOOKUPS);
        // Within the budget a term holds through the lookups.
        let q = ngsi_query::parse_q("rel{rel{rel}}").unwrap();
        assert!(q.matches(&LinkedTarget {
            entity: &root,
            lookup: &lookup,
            budget: &Cell::new(MAX_LOOKUPS),
        }));
    }
}
