//! The update semantics of NGSI-LD (clause 5.6) as pure functions on an
//! entity. The store calls them with the latest committed state, so they are
//! the single place where read-modify-write happens.

use serde_json::Value;

use crate::entity::{AttrValue, Attribute, Entity, Iri, core_iri};
use crate::error::{NgsiError, NgsiResult};

/// What an update did per attribute (the UpdateResult of clause 5.2.18).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateReport {
    /// Attributes that were written.
    pub updated: Vec<Iri>,
    /// Attributes that were not written, with the reason.
    pub not_updated: Vec<(Iri, String)>,
}

impl UpdateReport {
    fn updated(&mut self, name: &Iri) {
        if !self.updated.contains(name) {
            self.updated.push(name.clone());
        }
    }
}

/// Whether an attribute instance carries the NGSI-LD Null, which asks a merge
/// to delete it.
pub fn is_ngsi_null(a: &Attribute) -> bool {
    match &a.value {
        AttrValue::Property(Value::String(s)) | AttrValue::GeoProperty(Value::String(s)) => {
            s == core_iri::NULL
        }
        AttrValue::Relationship {
            object: Value::String(s),
            ..
        } => s == core_iri::NULL,
        AttrValue::JsonProperty(Value::String(s)) | AttrValue::VocabProperty(Value::String(s)) => {
            s == core_iri::NULL
        }
        AttrValue::LanguageProperty(m) => {
            m.get("@none").and_then(Value::as_str) == Some(core_iri::NULL)
        }
        AttrValue::ListProperty(l) => l.len() == 1 && l[0].as_str() == Some(core_iri::NULL),
        _ => false,
    }
}

/// Stamps a new entity: createdAt and modifiedAt of the entity and of every
/// attribute become `now`.
pub fn stamp_new(entity: &mut Entity, now: i64) {
    entity.created_at = now;
    entity.modified_at = now;
    for (_, instances) in &mut entity.attrs {
        for a in instances {
            a.created_at = 0;
            a.stamp(now, now);
        }
    }
}

fn find_instance<'a>(
    instances: &'a mut [Attribute],
    dataset_id: Option<&str>,
) -> Option<&'a mut Attribute> {
    instances
        .iter_mut()
        .find(|a| a.dataset_id.as_deref() == dataset_id)
}

/// Writes `new` over `old`, keeping `old`'s createdAt.
fn overwrite(old: &mut Attribute, mut new: Attribute, now: i64) {
    let created = old.created_at;
    new.created_at = 0;
    new.stamp(created, now);
    *old = new;
}

fn insert_instance(entity: &mut Entity, name: &Iri, mut new: Attribute, now: i64) {
    new.created_at = 0;
    new.stamp(now, now);
    match entity.attr_mut(name) {
        Some(instances) => instances.push(new),
        None => entity.attrs.push((name.clone(), vec![new])),
    }
}

/// Adds the types of `fragment` that `entity` lacks (clauses 5.6.2, 5.6.3).
fn add_types(entity: &mut Entity, types: Vec<Iri>) -> bool {
    let mut changed = false;
    for t in types {
        if !entity.types.contains(&t) {
            entity.types.push(t);
            changed = true;
        }
    }
    changed
}

/// The name under which scope changes are reported in an UpdateResult.
pub const SCOPE: &str = "scope";

/// Append Entity Attributes (clause 5.6.3): adds the fragment's types and
/// attributes, overwriting existing instances with the same datasetId
/// unless `no_overwrite`. Scopes of the fragment replace the entity's, or
/// with `no_overwrite` are added to them.
pub fn append(entity: &mut Entity, fragment: Entity, no_overwrite: bool, now: i64) -> UpdateReport {
    let mut report = UpdateReport::default();
    let mut changed = add_types(entity, fragment.types);
    if !fragment.scopes.is_empty() {
        if no_overwrite {
            for s in fragment.scopes {
                if !entity.scopes.contains(&s) {
                    entity.scopes.push(s);
                }
            }
        } else {
            entity.scopes = fragment.scopes;
        }
        changed = true;
    }
    for (name, instances) in fragment.attrs {
        for new in instances {
            let existing = entity
                .attr_mut(&name)
                .and_then(|i| find_instance(i, new.dataset_id.as_deref()));
            match existing {
                Some(_) if no_overwrite => report.not_updated.push((
                    name.clone(),
                    "attribute exists and noOverwrite was given".into(),
                )),
                Some(old) => {
                    overwrite(old, new, now);
                    report.updated(&name);
                }
                None => {
                    insert_instance(entity, &name, new, now);
                    report.updated(&name);
                }
            }
        }
    }
    if changed || !report.updated.is_empty() {
        entity.modified_at = now;
    }
    report
}

/// Update Entity Attributes (clause 5.6.2, a partial update patch of
/// clause 5.5.8): an instance with the same datasetId is replaced as a
/// whole, one that does not exist is appended, and one given as the NGSI-LD
/// Null is deleted. New types are added; the scope replaces the entity's
/// scope only when it has one (otherwise it is reported as not updated).
pub fn update_attrs(entity: &mut Entity, fragment: Entity, now: i64) -> UpdateReport {
    let mut report = UpdateReport::default();
    let mut changed = add_types(entity, fragment.types);
    if !fragment.scopes.is_empty() {
        if entity.scopes.is_empty() {
            report
                .not_updated
                .push((crate::iri(SCOPE), "the entity has no scope".into()));
        } else {
            entity.scopes = fragment.scopes;
            changed = true;
        }
    }
    for (name, instances) in fragment.attrs {
        for new in instances {
            let null = is_ngsi_null(&new);
            let dataset = new.dataset_id.clone();
            let pos = entity
                .attr(&name)
                .and_then(|i| i.iter().position(|a| a.dataset_id == dataset));
            match (pos, null) {
                (Some(i), true) => {
                    remove_instance(entity, &name, i);
                    report.updated(&name);
                }
                (None, true) => report.not_updated.push((
                    name.clone(),
                    match &dataset {
                        Some(d) => format!("no instance with datasetId {d} to delete"),
                        None => "no default instance to delete".into(),
                    },
                )),
                (Some(i), false) => {
                    let instances = entity.attr_mut(&name).expect("found above");
                    overwrite(&mut instances[i], new, now);
                    report.updated(&name);
                }
                (None, false) => {
                    insert_instance(entity, &name, new, now);
                    report.updated(&name);
                }
            }
        }
    }
    if changed || !report.updated.is_empty() {
        entity.modified_at = now;
    }
    report
}

/// Removes instance `i` of attribute `name`, and the attribute with its
/// last instance.
fn remove_instance(entity: &mut Entity, name: &str, i: usize) {
    if let Some(instances) = entity.attr_mut(name) {
        instances.remove(i);
        if instances.is_empty() {
            entity.attrs.retain(|(n, _)| &**n != name);
        }
    }
}

/// Applies an RFC 7396 merge patch to a JSON value, with the NGSI-LD Null in
/// the role of JSON null: objects merge key by key, a key set to the Null is
/// removed, anything else replaces the target.
fn merge_json(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.as_str() == Some(core_iri::NULL) {
                t.remove(&k);
            } else {
                merge_json(t.entry(k).or_insert(Value::Null), v);
            }
        }
    }
}

/// Removes the keys set to the NGSI-LD Null from the compound values of a
/// merge patch that creates a new attribute: the Null is never stored.
fn strip_compound_nulls(a: &mut Attribute) {
    if let AttrValue::Property(v @ Value::Object(_)) = &mut a.value {
        let patch = std::mem::take(v);
        merge_json(v, patch);
    }
    for (_, sub) in &mut a.sub {
        strip_compound_nulls(sub);
    }
}

/// Merges `patch` into `old`: the members present in the patch replace those
/// of the old instance; sub-attributes merge recursively; an NGSI-LD Null
/// sub-attribute deletes it. With `compound`, a Property whose value is a
/// JSON object is merged key by key (Merge Entity, clause 5.5.12); otherwise
/// the value is replaced (Partial Attribute Update, clause 5.5.8).
fn merge_instance(old: &mut Attribute, patch: Attribute, compound: bool, now: i64) {
    match (&mut old.value, patch.value) {
        (AttrValue::Property(target), AttrValue::Property(v @ Value::Object(_))) if compound => {
            merge_json(target, v)
        }
        (_, mut value) => {
            if compound && let AttrValue::Property(v @ Value::Object(_)) = &mut value {
                let patch = std::mem::take(v);
                merge_json(v, patch);
            }
            old.value = value;
        }
    }
    if patch.observed_at.is_some() {
        old.observed_at = patch.observed_at;
    }
    if patch.unit_code.is_some() {
        old.unit_code = patch.unit_code;
    }
    for (name, sub) in patch.sub {
        let pos = old.sub.iter().position(|(n, _)| *n == name);
        match (pos, is_ngsi_null(&sub)) {
            (Some(i), true) => {
                old.sub.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_instance(&mut old.sub[i].1, sub, compound, now),
            (None, false) => {
                let mut sub = sub;
                if compound {
                    strip_compound_nulls(&mut sub);
                }
                sub.stamp(now, now);
                old.sub.push((name, sub));
            }
        }
    }
    old.modified_at = now;
}

/// The fragment of a Partial Attribute Update (clause 5.6.4).
#[derive(Debug, Clone)]
pub struct AttrPatch {
    /// The members given. Its value is meaningless unless `value_given`.
    pub attr: Attribute,
    /// Whether the fragment carries the value member; without it only the
    /// metadata and the sub-attributes change.
    pub value_given: bool,
    /// The attribute type the fragment names, if it names one: it must be
    /// the type of the target (an attribute cannot change its type).
    pub kind: Option<String>,
}

/// Partial Attribute Update (clause 5.6.4) of instance `patch.dataset_id`.
pub fn partial_update(
    entity: &mut Entity,
    name: &Iri,
    patch: AttrPatch,
    now: i64,
) -> NgsiResult<()> {
    let AttrPatch {
        attr: mut patch,
        value_given,
        kind,
    } = patch;
    let dataset = patch.dataset_id.clone();
    let Some(instances) = entity.attr_mut(name) else {
        return Err(NgsiError::not_found(format!(
            "attribute {name} does not exist"
        )));
    };
    let Some(pos) = instances.iter().position(|a| a.dataset_id == dataset) else {
        return Err(NgsiError::not_found(format!(
            "attribute {name} has no such datasetId"
        )));
    };
    let current = instances[pos].value.kind_name();
    if let Some(k) = kind.as_deref()
        && k != current
    {
        return Err(NgsiError::bad_data(format!(
            "attribute {name} is a {current}: a partial update cannot make it a {k}"
        )));
    }
    if value_given && is_ngsi_null(&patch) {
        instances.remove(pos);
        if instances.is_empty() {
            entity.attrs.retain(|(n, _)| n != name);
        }
    } else {
        if !value_given {
            patch.value = instances[pos].value.clone();
        } else if patch.value.kind_name() != current {
            return Err(NgsiError::bad_data(format!(
                "attribute {name} is a {current}: the fragment's value is a {}",
                patch.value.kind_name()
            )));
        }
        merge_instance(&mut instances[pos], patch, false, now);
    }
    entity.modified_at = now;
    Ok(())
}

/// Deletes the scopes of an entity (Delete Attribute of `scope`, clause
/// 5.6.5).
pub fn delete_scope(entity: &mut Entity, now: i64) -> NgsiResult<()> {
    if entity.scopes.is_empty() {
        return Err(NgsiError::not_found("the entity has no scope"));
    }
    entity.scopes.clear();
    entity.modified_at = now;
    Ok(())
}

/// Replace Attribute (clause 5.6.19): the attribute must exist; the given
/// instances replace the instances with the same datasetIds.
pub fn replace_attribute(
    entity: &mut Entity,
    name: &Iri,
    new: Vec<Attribute>,
    now: i64,
) -> NgsiResult<()> {
    if entity.attr(name).is_none() {
        return Err(NgsiError::not_found(format!(
            "attribute {name} does not exist"
        )));
    }
    for attr in new {
        let instances = entity.attr_mut(name).expect("checked above");
        match find_instance(instances, attr.dataset_id.as_deref()) {
            Some(old) => overwrite(old, attr, now),
            None => insert_instance(entity, name, attr, now),
        }
    }
    entity.modified_at = now;
    Ok(())
}

/// Delete Entity Attribute (clause 5.6.5): the default instance, the one with
/// `dataset_id`, or all instances.
pub fn delete_attribute(
    entity: &mut Entity,
    name: &str,
    dataset_id: Option<&str>,
    delete_all: bool,
    now: i64,
) -> NgsiResult<()> {
    let Some(pos) = entity.attrs.iter().position(|(n, _)| &**n == name) else {
        return Err(NgsiError::not_found(format!(
            "attribute {name} does not exist"
        )));
    };
    if delete_all {
        entity.attrs.remove(pos);
    } else {
        let instances = &mut entity.attrs[pos].1;
        let Some(i) = instances
            .iter()
            .position(|a| a.dataset_id.as_deref() == dataset_id)
        else {
            return Err(NgsiError::not_found(match dataset_id {
                Some(d) => format!("attribute {name} has no instance with datasetId {d}"),
                None => format!("attribute {name} has no default instance"),
            }));
        };
        instances.remove(i);
        if instances.is_empty() {
            entity.attrs.remove(pos);
        }
    }
    entity.modified_at = now;
    Ok(())
}

/// Merge Entity (clause 5.6.17): adds the fragment's types, replaces its
/// scopes if given, merges each attribute instance, and deletes those set
/// to the NGSI-LD Null.
pub fn merge(entity: &mut Entity, fragment: Entity, now: i64) {
    for t in fragment.types {
        if !entity.types.contains(&t) {
            entity.types.push(t);
        }
    }
    if fragment.scopes.len() == 1 && &*fragment.scopes[0] == core_iri::NULL {
        entity.scopes.clear();
    } else if !fragment.scopes.is_empty() {
        entity.scopes = fragment.scopes;
    }
    for (name, instances) in fragment.attrs {
        for patch in instances {
            let null = is_ngsi_null(&patch);
            let dataset = patch.dataset_id.clone();
            match entity.attr_mut(&name) {
                Some(existing) => match existing.iter().position(|a| a.dataset_id == dataset) {
                    Some(i) if null => {
                        existing.remove(i);
                        if existing.is_empty() {
                            entity.attrs.retain(|(n, _)| *n != name);
                        }
                    }
                    Some(i) => merge_instance(&mut existing[i], patch, true, now),
                    None if null => {}
                    None => insert_instance(entity, &name, stripped(patch), now),
                },
                None if null => {}
                None => insert_instance(entity, &name, stripped(patch), now),
            }
        }
    }
    entity.modified_at = now;
}

fn stripped(mut a: Attribute) -> Attribute {
    strip_compound_nulls(&mut a);
    a
}

/// Replace Entity (clause 5.6.18): everything but the id and createdAt is
/// replaced by `new`.
pub fn replace(old: &Entity, mut new: Entity, now: i64) -> Entity {
    stamp_new(&mut new, now);
    new.id = old.id.clone();
    new.created_at = old.created_at;
    new
}
