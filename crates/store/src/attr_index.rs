//! Attribute value indexes: for one attribute, the entities by value, so
//! that `q` terms such as `a==5`, `a==x,y` or `a>3` read a small candidate
//! set instead of every entity of a type.
//!
//! **Invariant:** an index lookup returns a *superset* of the entities whose
//! attribute satisfies the condition. Entities whose values the index cannot
//! represent (objects, language maps, JSON, lists) are kept in `opaque` and
//! always returned. The caller applies the full query to every candidate.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use ngsi_model::{AttrValue, Entity};
use serde_json::Value;

/// A value as an index orders it: booleans, then numbers (total order, with
/// -0 folded into 0), then strings (by code point).
#[derive(Debug, Clone)]
pub enum IndexKey {
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string, URI or term.
    Str(Arc<str>),
}

impl IndexKey {
    fn rank(&self) -> u8 {
        match self {
            IndexKey::Bool(_) => 0,
            IndexKey::Num(_) => 1,
            IndexKey::Str(_) => 2,
        }
    }

    /// A number key with -0 folded into 0.
    pub fn num(v: f64) -> Self {
        IndexKey::Num(if v == 0.0 { 0.0 } else { v })
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (IndexKey::Bool(a), IndexKey::Bool(b)) => a.cmp(b),
            (IndexKey::Num(a), IndexKey::Num(b)) => a.total_cmp(b),
            (IndexKey::Str(a), IndexKey::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for IndexKey {}

/// What an attribute's value must satisfy, as far as an index can tell.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Equal to one of these keys.
    AnyOf(Vec<IndexKey>),
    /// Between two bounds of the same kind (numbers or strings); a missing
    /// bound is open. Bounds are treated as inclusive (a superset).
    Between(Option<IndexKey>, Option<IndexKey>),
}

/// A condition on the top-level value of one attribute.
#[derive(Debug, Clone)]
pub struct IndexedCondition {
    /// The attribute (expanded IRI).
    pub attr: ngsi_model::Iri,
    /// The condition on its value.
    pub condition: Condition,
}

/// The index of one attribute.
#[derive(Debug, Default)]
pub struct AttrIndex {
    by_key: BTreeMap<IndexKey, BTreeSet<Arc<str>>>,
    /// The keys of each indexed entity, so that a candidate can be checked
    /// against a condition without decoding it.
    keys_of: rustc_hash::FxHashMap<Arc<str>, Box<[IndexKey]>>,
    opaque: BTreeSet<Arc<str>>,
}

fn json_keys(v: &Value, keys: &mut Vec<IndexKey>) -> bool {
    match v {
        Value::Bool(b) => keys.push(IndexKey::Bool(*b)),
        Value::Number(n) => match n.as_f64() {
            Some(f) => keys.push(IndexKey::num(f)),
            None => return false,
        },
        Value::String(s) => keys.push(IndexKey::Str(s.as_str().into())),
        Value::Array(items) => {
            for i in items {
                // Nested arrays and objects inside arrays are not indexed.
                if i.is_array() || !json_keys(i, keys) {
                    return false;
                }
            }
        }
        Value::Object(m) => match m.get("@value").or_else(|| m.get("@id")) {
            Some(inner) if m.len() <= 2 && !inner.is_object() => return json_keys(inner, keys),
            _ => return false,
        },
        Value::Null => return false,
    }
    true
}

/// The keys of attribute `attr` of `entity`; `None` when some value cannot
/// be represented (the entity is then opaque for this attribute).
fn entity_keys(entity: &Entity, attr: &str) -> Option<Vec<IndexKey>> {
    let instances = entity.attr(attr)?;
    let mut keys = Vec::new();
    for a in instances {
        let ok = match &a.value {
            AttrValue::Property(v) | AttrValue::VocabProperty(v) => json_keys(v, &mut keys),
            AttrValue::Relationship { object, .. } => json_keys(object, &mut keys),
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    Some(keys)
}

impl AttrIndex {
    /// Adds `entity`'s values of `attr`.
    pub fn insert(&mut self, attr: &str, entity: &Entity) {
        if entity.attr(attr).is_none() {
            return;
        }
        match entity_keys(entity, attr) {
            Some(keys) => {
                for k in &keys {
                    self.by_key
                        .entry(k.clone())
                        .or_default()
                        .insert(entity.id.clone());
                }
                self.keys_of
                    .insert(entity.id.clone(), keys.into_boxed_slice());
            }
            None => {
                self.opaque.insert(entity.id.clone());
            }
        }
    }

    /// Removes `entity`'s values of `attr`.
    pub fn remove(&mut self, _attr: &str, entity: &Entity) {
        self.opaque.remove(&*entity.id);
        if let Some(keys) = self.keys_of.remove(&*entity.id) {
            for k in keys.iter() {
                if let Some(set) = self.by_key.get_mut(k) {
                    set.remove(&*entity.id);
                    if set.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
        }
    }

    /// Whether entity `id` may satisfy `condition`: false only when the
    /// index knows all of its values and none does (or it lacks the
    /// attribute).
    pub fn may_satisfy(&self, id: &str, condition: &Condition) -> bool {
        if self.opaque.contains(id) {
            return true;
        }
        let Some(keys) = self.keys_of.get(id) else {
            return false;
        };
        keys.iter().any(|k| match condition {
            Condition::AnyOf(wanted) => wanted.contains(k),
            Condition::Between(low, high) => {
                let rank = low.as_ref().or(high.as_ref()).map(IndexKey::rank);
                rank.is_none_or(|r| r == k.rank())
                    && low.as_ref().is_none_or(|l| k >= l)
                    && high.as_ref().is_none_or(|h| k <= h)
            }
        })
    }

    /// The candidates for `condition`, unsorted and possibly repeated.
    pub fn candidates<'a>(&'a self, condition: &Condition, out: &mut Vec<&'a Arc<str>>) {
        out.extend(self.opaque.iter());
        for set in self.sets(condition) {
            out.extend(set.iter());
        }
    }

    /// The sets of the keys that satisfy `condition` (the opaque entities
    /// aside).
    fn sets<'a: 'c, 'c>(
        &'a self,
        condition: &'c Condition,
    ) -> Box<dyn Iterator<Item = &'a BTreeSet<Arc<str>>> + 'c> {
        match condition {
            Condition::AnyOf(keys) => Box::new(keys.iter().filter_map(|k| self.by_key.get(k))),
            Condition::Between(low, high) => {
                let kind = low.as_ref().or(high.as_ref()).map(IndexKey::rank);
                let (lo, hi) = match kind {
                    Some(1) => (
                        IndexKey::Num(f64::NEG_INFINITY),
                        Some(IndexKey::Num(f64::INFINITY)),
                    ),
                    Some(2) => (IndexKey::Str("".into()), None),
                    // Booleans or no bounds: every indexed entity.
                    _ => return Box::new(self.by_key.values()),
                };
                let lo = Bound::Included(low.clone().unwrap_or(lo));
                let hi = match high.clone().or(hi) {
                    Some(h) => Bound::Included(h),
                    None => Bound::Unbounded,
                };
                if let (Bound::Included(l), Bound::Included(h)) = (&lo, &hi)
                    && l > h
                {
                    return Box::new(std::iter::empty());
                }
                Box::new(self.by_key.range((lo, hi)).map(|(_, s)| s))
            }
        }
    }

    /// The candidates for `condition` already in id order, when they come
    /// from one set (a single key and no opaque entities).
    pub fn sorted_candidates(&self, condition: &Condition) -> Option<&BTreeSet<Arc<str>>> {
        match condition {
            Condition::AnyOf(keys) if keys.len() == 1 && self.opaque.is_empty() => {
                static EMPTY: BTreeSet<Arc<str>> = BTreeSet::new();
                Some(self.by_key.get(&keys[0]).unwrap_or(&EMPTY))
            }
            _ => None,
        }
    }

    /// The number of candidates for `condition`, counted up to `cap` (a
    /// wide range stops counting once it has passed it): exact for
    /// equality, and for a range whenever it is at most `cap`.
    pub fn estimate(&self, condition: &Condition, cap: usize) -> usize {
        let mut n = self.opaque.len();
        for set in self.sets(condition) {
            n += set.len();
            if n > cap && matches!(condition, Condition::Between(..)) {
                break;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ngsi_model::{Attribute, iri};
    use serde_json::json;

    fn entity(id: &str, value: Value) -> Entity {
        Entity {
            id: id.into(),
            types: vec![iri("urn:T")],
            scopes: Vec::new(),
            attrs: vec![(
                iri("urn:a"),
                vec![Attribute::new(AttrValue::Property(value))].into(),
            )],
            created_at: 0,
            modified_at: 0,
            expires_at: None,
        }
    }

    fn check(values: &[Value], condition: Condition, expected: &[&str]) {
        let mut index = AttrIndex::default();
        let entities: Vec<Entity> = values
            .iter()
            .enumerate()
            .map(|(i, v)| entity(&format!("e{i}"), v.clone()))
            .collect();
        for e in &entities {
            index.insert("urn:a", e);
        }
        let mut out = Vec::new();
        index.candidates(&condition, &mut out);
        // The estimate counts the candidates, and a range stops counting
        // once past the cap.
        assert_eq!(
            index.estimate(&condition, usize::MAX),
            out.len(),
            "{condition:?}"
        );
        let capped = index.estimate(&condition, 0);
        assert!(
            capped <= out.len() && (capped > 0) != out.is_empty(),
            "{condition:?}"
        );
        let mut got: Vec<&str> = out.iter().map(|s| &***s).collect();
        got.sort();
        got.dedup();
        assert_eq!(got, expected, "{condition:?}");
        // Removing everything leaves an empty index.
        for e in &entities {
            index.remove("urn:a", e);
        }
        assert!(index.by_key.is_empty() && index.opaque.is_empty() && index.keys_of.is_empty());
        // Every candidate may satisfy; every non-candidate may not.
        for e in &entities {
            index.insert("urn:a", e);
        }
        for e in &entities {
            assert_eq!(
                index.may_satisfy(&e.id, &condition),
                expected.contains(&&*e.id),
                "{} {condition:?}",
                e.id
            );
        }
    }

    #[test]
    fn lookups() {
        let values = [
            json!(1),
            json!(5),
            json!(-0.0),
            json!("x"),
            json!([5, 7]),
            json!({"k": 1}),
            json!(true),
            json!({"@value": 7}),
        ];
        check(
            &values,
            Condition::AnyOf(vec![IndexKey::num(5.0)]),
            &["e1", "e4", "e5"],
        );
        check(
            &values,
            Condition::AnyOf(vec![IndexKey::num(0.0)]),
            &["e2", "e5"],
        );
        check(
            &values,
            Condition::AnyOf(vec![IndexKey::Str("x".into()), IndexKey::num(7.0)]),
            &["e3", "e4", "e5", "e7"],
        );
        check(
            &values,
            Condition::Between(Some(IndexKey::num(2.0)), None),
            &["e1", "e4", "e5", "e7"],
        );
        check(
            &values,
            Condition::Between(None, Some(IndexKey::num(1.0))),
            &["e0", "e2", "e5"],
        );
        check(
            &values,
            Condition::Between(Some(IndexKey::Str("a".into())), None),
            &["e3", "e5"],
        );
        check(
            &values,
            Condition::Between(Some(IndexKey::num(9.0)), Some(IndexKey::num(3.0))),
            &["e5"],
        );
    }
}
