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
    /// Notes that attribute `name` was written. The edits go through a
    /// fragment attribute by attribute (each name once: the parser merges
    /// terms of one IRI), so a name already noted is the last one.
    fn updated(&mut self, name: &Iri) {
        if self.updated.last() != Some(name) {
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

/// Above this many comparisons, a fragment's attributes and instances are
/// found through maps rather than by scanning: an entity may have thousands
/// of attributes or datasetIds, and a fragment as many, and scans would
/// take the product of the two.
const SCAN_LIMIT: usize = 1024;

/// An entity being edited by a fragment: its attributes found by name.
/// Attributes are added at the end, and the ones left without instances are
/// removed by [`Edit::finish`], so that positions hold during the edit.
struct Edit<'e> {
    entity: &'e mut Entity,
    /// Seeded hashing: the names are the client's.
    by_name: Option<foldhash::HashMap<Iri, usize>>,
}

impl<'e> Edit<'e> {
    fn new(entity: &'e mut Entity, lookups: usize) -> Self {
        let scans = (entity.attrs.len() + lookups).saturating_mul(lookups);
        let by_name = (scans > SCAN_LIMIT).then(|| {
            entity
                .attrs
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (n.clone(), i))
                .collect()
        });
        Self { entity, by_name }
    }

    /// The position of attribute `name`, if the entity has it.
    fn find(&self, name: &Iri) -> Option<usize> {
        match &self.by_name {
            Some(map) => map.get(name).copied(),
            None => self.entity.attrs.iter().position(|(n, _)| n == name),
        }
    }

    /// The instances of attribute `name`, added without instances if new,
    /// for `lookups` finds by datasetId.
    fn attr(&mut self, name: &Iri, lookups: usize) -> Instances<'_> {
        let at = match self.find(name) {
            Some(at) => at,
            None => {
                self.entity.attrs.push((name.clone(), Vec::new()));
                let at = self.entity.attrs.len() - 1;
                if let Some(map) = &mut self.by_name {
                    map.insert(name.clone(), at);
                }
                at
            }
        };
        Instances::new(&mut self.entity.attrs[at].1, lookups)
    }

    /// Removes the attributes left without instances.
    fn finish(self) {
        self.entity.attrs.retain(|(_, v)| !v.is_empty());
    }
}

/// The instances of one attribute being edited, found by datasetId.
/// With a map, removals wait for [`Instances::finish`], so that positions
/// hold meanwhile.
struct Instances<'a> {
    list: &'a mut Vec<Attribute>,
    by_dataset: Option<foldhash::HashMap<Option<Box<str>>, usize>>,
    removed: Vec<usize>,
}

impl<'a> Instances<'a> {
    fn new(list: &'a mut Vec<Attribute>, lookups: usize) -> Self {
        let scans = (list.len() + lookups).saturating_mul(lookups);
        let by_dataset = (scans > SCAN_LIMIT).then(|| {
            list.iter()
                .enumerate()
                .map(|(i, a)| (a.dataset_id.clone(), i))
                .collect()
        });
        Self {
            list,
            by_dataset,
            removed: Vec::new(),
        }
    }

    fn find(&self, dataset: Option<&str>) -> Option<usize> {
        match &self.by_dataset {
            Some(map) => map.get(&dataset.map(Box::from)).copied(),
            None => self
                .list
                .iter()
                .position(|a| a.dataset_id.as_deref() == dataset),
        }
    }

    fn get_mut(&mut self, i: usize) -> &mut Attribute {
        &mut self.list[i]
    }

    fn remove(&mut self, i: usize) {
        match &mut self.by_dataset {
            Some(map) => {
                map.remove(&self.list[i].dataset_id);
                self.removed.push(i);
            }
            None => {
                self.list.remove(i);
            }
        }
    }

    /// Adds `new`, stamped as created now.
    fn insert(&mut self, mut new: Attribute, now: i64) {
        new.created_at = 0;
        new.stamp(now, now);
        if let Some(map) = &mut self.by_dataset {
            map.insert(new.dataset_id.clone(), self.list.len());
        }
        self.list.push(new);
    }

    /// Applies the removals that waited.
    fn finish(self) {
        remove_places(self.list, &self.removed);
    }
}

/// Removes the items at `places` from `list` in one pass, keeping the order
/// of the others.
fn remove_places<T>(list: &mut Vec<T>, places: &[usize]) {
    if places.is_empty() {
        return;
    }
    let mut gone = vec![false; list.len()];
    for &i in places {
        gone[i] = true;
    }
    let mut i = 0;
    list.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
}

/// Adds the types of `fragment` that `entity` lacks (clauses 5.6.2, 5.6.3).
fn add_types(entity: &mut Entity, types: Vec<Iri>) -> bool {
    crate::entity::extend_unique(&mut entity.types, types)
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
    let mut edit = Edit::new(entity, fragment.attrs.len());
    for (name, instances) in fragment.attrs {
        let mut list = edit.attr(&name, instances.len());
        for new in instances {
            match list.find(new.dataset_id.as_deref()) {
                Some(_) if no_overwrite => report.not_updated.push((
                    name.clone(),
                    "attribute exists and noOverwrite was given".into(),
                )),
                Some(i) => {
                    overwrite(list.get_mut(i), new, now);
                    report.updated(&name);
                }
                None => {
                    list.insert(new, now);
                    report.updated(&name);
                }
            }
        }
        list.finish();
    }
    edit.finish();
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
    let mut edit = Edit::new(entity, fragment.attrs.len());
    for (name, instances) in fragment.attrs {
        let mut list = edit.attr(&name, instances.len());
        for new in instances {
            let null = is_ngsi_null(&new);
            match (list.find(new.dataset_id.as_deref()), null) {
                (Some(i), true) => {
                    list.remove(i);
                    report.updated(&name);
                }
                (None, true) => report.not_updated.push((
                    name.clone(),
                    match &new.dataset_id {
                        Some(d) => format!("no instance with datasetId {d} to delete"),
                        None => "no default instance to delete".into(),
                    },
                )),
                (Some(i), false) => {
                    overwrite(list.get_mut(i), new, now);
                    report.updated(&name);
                }
                (None, false) => {
                    list.insert(new, now);
                    report.updated(&name);
                }
            }
        }
        list.finish();
    }
    edit.finish();
    if changed || !report.updated.is_empty() {
        entity.modified_at = now;
    }
    report
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
    // Past a few, the sub-attributes' places by name (see `SCAN_LIMIT`);
    // removals then wait for the end, so that the places hold.
    let scans = (old.sub.len() + patch.sub.len()).saturating_mul(patch.sub.len());
    let mut places: Option<foldhash::HashMap<Iri, usize>> = (scans > SCAN_LIMIT).then(|| {
        old.sub
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect()
    });
    let mut gone = Vec::new();
    for (name, sub) in patch.sub {
        let pos = match &places {
            Some(map) => map.get(&name).copied(),
            None => old.sub.iter().position(|(n, _)| *n == name),
        };
        match (pos, is_ngsi_null(&sub)) {
            (Some(i), true) => match &mut places {
                Some(map) => {
                    map.remove(&name);
                    gone.push(i);
                }
                None => {
                    old.sub.remove(i);
                }
            },
            (None, true) => {}
            (Some(i), false) => merge_instance(&mut old.sub[i].1, sub, compound, now),
            (None, false) => {
                let mut sub = sub;
                if compound {
                    strip_compound_nulls(&mut sub);
                }
                sub.stamp(now, now);
                if let Some(map) = &mut places {
                    map.insert(name.clone(), old.sub.len());
                }
                old.sub.push((name, sub));
            }
        }
    }
    remove_places(&mut old.sub, &gone);
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
    add_types(entity, fragment.types);
    if fragment.scopes.len() == 1 && &*fragment.scopes[0] == core_iri::NULL {
        entity.scopes.clear();
    } else if !fragment.scopes.is_empty() {
        entity.scopes = fragment.scopes;
    }
    let mut edit = Edit::new(entity, fragment.attrs.len());
    for (name, instances) in fragment.attrs {
        let mut list = edit.attr(&name, instances.len());
        for patch in instances {
            let null = is_ngsi_null(&patch);
            match list.find(patch.dataset_id.as_deref()) {
                Some(i) if null => list.remove(i),
                Some(i) => merge_instance(list.get_mut(i), patch, true, now),
                None if null => {}
                None => list.insert(stripped(patch), now),
            }
        }
        list.finish();
    }
    edit.finish();
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The edits by scanning, one instance at a time: the reference that
    /// the maps of [`Edit`] and [`Instances`] must agree with.
    mod reference {
        use super::super::*;

        fn position(e: &Entity, name: &Iri, dataset: &Option<Box<str>>) -> Option<usize> {
            e.attr(name)
                .and_then(|i| i.iter().position(|a| a.dataset_id == *dataset))
        }

        fn remove(e: &mut Entity, name: &Iri, i: usize) {
            let list = e.attr_mut(name).unwrap();
            list.remove(i);
            if list.is_empty() {
                e.attrs.retain(|(n, _)| n != name);
            }
        }

        pub fn edit(e: &mut Entity, fragment: Entity, mode: u8, now: i64) -> Vec<Iri> {
            let mut updated: Vec<Iri> = Vec::new();
            for (name, instances) in fragment.attrs {
                for new in instances {
                    let null = is_ngsi_null(&new);
                    let at = position(e, &name, &new.dataset_id);
                    let wrote = match (mode, at, null) {
                        // append with noOverwrite
                        (0, Some(_), _) => false,
                        // append
                        (1, Some(i), _) => {
                            overwrite(&mut e.attr_mut(&name).unwrap()[i], new, now);
                            true
                        }
                        (0 | 1, None, _) => {
                            insert_instance(e, &name, new, now);
                            true
                        }
                        // update attributes
                        (2, Some(i), true) => {
                            remove(e, &name, i);
                            true
                        }
                        (2, None, true) => false,
                        (2, Some(i), false) => {
                            overwrite(&mut e.attr_mut(&name).unwrap()[i], new, now);
                            true
                        }
                        (2, None, false) => {
                            insert_instance(e, &name, new, now);
                            true
                        }
                        // merge
                        (_, Some(i), true) => {
                            remove(e, &name, i);
                            false
                        }
                        (_, Some(i), false) => {
                            merge_instance(&mut e.attr_mut(&name).unwrap()[i], new, true, now);
                            false
                        }
                        (_, None, true) => false,
                        (_, None, false) => {
                            insert_instance(e, &name, stripped(new), now);
                            false
                        }
                    };
                    if wrote && !updated.contains(&name) {
                        updated.push(name.clone());
                    }
                }
            }
            updated
        }
    }

    /// A Property of value `v`, or the NGSI-LD Null for 0.
    fn property(v: u8) -> Attribute {
        let value = match v {
            0 => Value::String(core_iri::NULL.into()),
            v => Value::from(v),
        };
        Attribute::new(AttrValue::Property(value))
    }

    /// Instances of one attribute: datasetIds from a small pool (so that
    /// fragments hit, miss and repeat), some the NGSI-LD Null.
    fn instances() -> impl Strategy<Value = Vec<Attribute>> {
        proptest::collection::vec((proptest::option::of(0u8..48), 0u8..6), 0..48).prop_map(
            |items| {
                let mut seen = std::collections::HashSet::new();
                items
                    .into_iter()
                    .filter(|(d, _)| seen.insert(*d))
                    .map(|(d, v)| {
                        let mut a = property(v);
                        a.dataset_id = d.map(|d| format!("urn:d:{d}").into());
                        a
                    })
                    .collect()
            },
        )
    }

    fn entity() -> impl Strategy<Value = Entity> {
        proptest::collection::vec((0u8..40, instances()), 0..40).prop_map(|attrs| {
            let mut seen = std::collections::HashSet::new();
            Entity {
                id: "urn:ngsi-ld:T:1".into(),
                types: vec![crate::iri("https://example.org/T")],
                scopes: Vec::new(),
                attrs: attrs
                    .into_iter()
                    .filter(|(n, i)| seen.insert(*n) && !i.is_empty())
                    .map(|(n, i)| (crate::iri(&format!("https://example.org/a{n}")), i))
                    .collect(),
                created_at: 1,
                modified_at: 1,
            }
        })
    }

    fn sorted(mut e: Entity) -> Vec<(Iri, Vec<Attribute>)> {
        e.attrs.sort_by(|a, b| a.0.cmp(&b.0));
        e.attrs
    }

    /// The sub-attribute loop of [`merge_instance`] by scanning, one
    /// sub-attribute at a time (the reference for its map).
    fn merge_subs_by_scan(old: &mut Attribute, patch: Vec<(Iri, Attribute)>, now: i64) {
        for (name, sub) in patch {
            let pos = old.sub.iter().position(|(n, _)| *n == name);
            match (pos, is_ngsi_null(&sub)) {
                (Some(i), true) => {
                    old.sub.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => merge_instance(&mut old.sub[i].1, sub, true, now),
                (None, false) => {
                    let mut sub = sub;
                    strip_compound_nulls(&mut sub);
                    sub.stamp(now, now);
                    old.sub.push((name, sub));
                }
            }
        }
        old.modified_at = now;
    }

    fn subs() -> impl Strategy<Value = Vec<(Iri, Attribute)>> {
        proptest::collection::vec((0u8..60, 0u8..4), 0..60).prop_map(|items| {
            let mut seen = std::collections::HashSet::new();
            items
                .into_iter()
                .filter(|(n, _)| seen.insert(*n))
                .map(|(n, v)| {
                    (
                        crate::iri(&format!("https://example.org/s{n}")),
                        property(v),
                    )
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Merging sub-attributes through the map gives what the scans give,
        /// in the same order.
        #[test]
        fn sub_attributes_merge_through_maps_as_by_scans(old in subs(), patch in subs()) {
            let mut base = Attribute::new(AttrValue::Property(Value::from(1)));
            base.sub = old.into_iter().filter(|(_, a)| !is_ngsi_null(a)).collect();
            let mut with_patch = Attribute::new(AttrValue::Property(Value::from(2)));
            with_patch.sub = patch.clone();
            let (mut fast, mut slow) = (base.clone(), base);
            merge_instance(&mut fast, with_patch, true, 7);
            slow.value = AttrValue::Property(Value::from(2));
            merge_subs_by_scan(&mut slow, patch, 7);
            prop_assert_eq!(fast, slow);
        }

        /// Append, Update Attributes and Merge give what editing one
        /// instance at a time by scanning gives, with and without the maps.
        /// (An attribute emptied and refilled by one fragment keeps its
        /// place where the scans moved it to the end: compared by name.)
        #[test]
        fn edits_through_maps_agree_with_scans(e in entity(), fragment in entity(), mode in 0u8..4) {
            let now = 5;
            let (mut fast, mut slow) = (e.clone(), e);
            let updated = match mode {
                0 => append(&mut fast, fragment.clone(), true, now).updated,
                1 => append(&mut fast, fragment.clone(), false, now).updated,
                2 => update_attrs(&mut fast, fragment.clone(), now).updated,
                _ => {
                    merge(&mut fast, fragment.clone(), now);
                    Vec::new()
                }
            };
            let expected = reference::edit(&mut slow, fragment, mode, now);
            prop_assert_eq!(updated, expected);
            prop_assert_eq!(sorted(fast), sorted(slow));
        }
    }
}
