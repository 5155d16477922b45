//! The update semantics of NGSI-LD (clause 5.6) as pure functions on an
//! entity. The store calls them with the latest committed state, so they are
//! the single place where read-modify-write happens.

use serde_json::Value;
use std::sync::Arc;

use crate::entity::{AttrExtra, AttrValue, Attribute, Entity, InstanceList, Iri, core_iri};
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
        // An array of the one Null (clauses 4.5.21.3, 4.5.22.3).
        AttrValue::ListProperty(l) | AttrValue::ListRelationship { objects: l, .. } => {
            l.len() == 1 && l[0].as_str() == Some(core_iri::NULL)
        }
        _ => false,
    }
}

/// Sets the entity's `expiresAt` from a fragment's (clause 4.22): a value
/// replaces it, the NGSI-LD Null (a merge patch) removes it, none leaves
/// it. Whether it changed.
fn set_expiry(entity: &mut Entity, given: Option<Arc<str>>) -> bool {
    let next = match given {
        None => return false,
        Some(v) if &*v == core_iri::NULL => None,
        Some(v) => Some(v),
    };
    let changed = entity.expires_at != next;
    entity.expires_at = next;
    changed
}

/// Merges the rarer members of a patch into an instance's: each member
/// given replaces the old one, the NGSI-LD Null removes it.
fn merge_extra(old: &mut Option<Box<AttrExtra>>, patch: AttrExtra) {
    let mut merged = old.take().map(|b| *b).unwrap_or_default();
    patch_member(&mut merged.expires_at, patch.expires_at);
    patch_member(&mut merged.value_type, patch.value_type);
    *old = merged.boxed();
}

/// Patches one member of an instance (clause 5.5.8): a value given replaces
/// the old one, the NGSI-LD Null removes it, none leaves it.
fn patch_member(slot: &mut Option<Arc<str>>, given: Option<Arc<str>>) {
    match given {
        Some(v) if &*v == core_iri::NULL => *slot = None,
        Some(v) => *slot = Some(v),
        None => {}
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
    drop_null_members(&mut new);
    let created = old.created_at;
    new.created_at = 0;
    new.stamp(created, now);
    *old = new;
}

/// Drops the `observedAt` and `unitCode` a patch set to the NGSI-LD Null
/// from an instance that replaces or adds one: there is nothing for the
/// Null to delete, and it is never stored.
fn drop_null_members(a: &mut Attribute) {
    let null = |v: &Option<Arc<str>>| v.as_deref() == Some(core_iri::NULL);
    if null(&a.observed_at) {
        a.observed_at = None;
    }
    if null(&a.unit_code) {
        a.unit_code = None;
    }
    for (_, sub) in &mut a.sub {
        drop_null_members(sub);
    }
}

/// `new` stamped as created now.
fn created(mut new: Attribute, now: i64) -> Attribute {
    drop_null_members(&mut new);
    new.created_at = 0;
    new.stamp(now, now);
    new
}

/// Above this many comparisons, a pass of lookups in a list goes through a
/// map rather than scans: an entity may have thousands of attributes,
/// datasetIds or sub-attributes, and a fragment as many, and scans would
/// take the product of the two.
const SCAN_LIMIT: usize = 1024;

/// The places of a list's items by key, for a pass of lookups over the
/// list: by scan for a few, through a map (seeded hashing: the keys are the
/// client's) past [`SCAN_LIMIT`] comparisons. With a map, removals wait for
/// [`Places::finish`], so that places hold meanwhile.
pub(crate) struct Places<T, K> {
    key: fn(&T) -> &K,
    map: Option<foldhash::HashMap<K, usize>>,
    removed: Vec<usize>,
}

impl<T, K: std::hash::Hash + Eq + Clone> Places<T, K> {
    /// For `lookups` lookups in `list`.
    pub(crate) fn new(list: &[T], lookups: usize, key: fn(&T) -> &K) -> Self {
        let scans = (list.len() + lookups).saturating_mul(lookups);
        let map = (scans > SCAN_LIMIT).then(|| {
            list.iter()
                .enumerate()
                .map(|(i, item)| (key(item).clone(), i))
                .collect()
        });
        Self {
            key,
            map,
            removed: Vec::new(),
        }
    }

    /// The place of the item with key `k`.
    pub(crate) fn find(&self, list: &[T], k: &K) -> Option<usize> {
        match &self.map {
            Some(map) => map.get(k).copied(),
            None => list.iter().position(|item| (self.key)(item) == k),
        }
    }

    /// Appends `item` to `list`.
    pub(crate) fn push(&mut self, list: &mut Vec<T>, item: T) {
        if let Some(map) = &mut self.map {
            map.insert((self.key)(&item).clone(), list.len());
        }
        list.push(item);
    }

    /// Removes the item at `i`: at once without a map, at
    /// [`Places::finish`] with one.
    pub(crate) fn remove(&mut self, list: &mut Vec<T>, i: usize) {
        match &mut self.map {
            Some(map) => {
                map.remove((self.key)(&list[i]));
                self.removed.push(i);
            }
            None => {
                list.remove(i);
            }
        }
    }

    /// Applies the removals that waited, keeping the order of the others.
    pub(crate) fn finish(self, list: &mut Vec<T>) {
        if self.removed.is_empty() {
            return;
        }
        let mut gone = vec![false; list.len()];
        for i in self.removed {
            gone[i] = true;
        }
        let mut i = 0;
        list.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }
}

/// An attribute's name in an entity's list.
pub(crate) fn attr_name(a: &(Iri, InstanceList)) -> &Iri {
    &a.0
}

/// A sub-attribute's name.
fn sub_name(s: &(Iri, Attribute)) -> &Iri {
    &s.0
}

/// An instance's datasetId.
fn dataset_of(a: &Attribute) -> &Option<Arc<str>> {
    &a.dataset_id
}

/// An entity being edited by a fragment: its attributes found by name.
/// Attributes are added at the end, and the ones left without instances are
/// removed by [`Edit::finish`], so that places hold during the edit.
struct Edit<'e> {
    entity: &'e mut Entity,
    places: Places<(Iri, InstanceList), Iri>,
}

impl<'e> Edit<'e> {
    fn new(entity: &'e mut Entity, lookups: usize) -> Self {
        let places = Places::new(&entity.attrs, lookups, attr_name);
        Self { entity, places }
    }

    /// The instances of attribute `name`, added without instances if new,
    /// for `lookups` lookups by datasetId.
    fn attr(&mut self, name: &Iri, lookups: usize) -> Instances<'_> {
        let attrs = &mut self.entity.attrs;
        let at = match self.places.find(attrs, name) {
            Some(at) => at,
            None => {
                self.places
                    .push(attrs, (name.clone(), InstanceList::default()));
                attrs.len() - 1
            }
        };
        let list = &mut attrs[at].1;
        let places = Places::new(list, lookups, dataset_of);
        Instances { list, places }
    }

    /// Removes the attributes left without instances.
    fn finish(self) {
        self.entity.attrs.retain(|(_, v)| !v.is_empty());
    }
}

/// The instances of one attribute being edited, found by datasetId.
struct Instances<'a> {
    list: &'a mut Vec<Attribute>,
    places: Places<Attribute, Option<Arc<str>>>,
}

impl Instances<'_> {
    fn find(&self, dataset: &Option<Arc<str>>) -> Option<usize> {
        self.places.find(self.list, dataset)
    }

    fn get_mut(&mut self, i: usize) -> &mut Attribute {
        &mut self.list[i]
    }

    fn remove(&mut self, i: usize) {
        self.places.remove(self.list, i);
    }

    /// Adds `new`, stamped as created now.
    fn insert(&mut self, new: Attribute, now: i64) {
        self.places.push(self.list, created(new, now));
    }

    /// Applies the removals that waited.
    fn finish(self) {
        self.places.finish(self.list);
    }
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
    changed |= set_expiry(entity, fragment.expires_at);
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
            match list.find(&new.dataset_id) {
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
    changed |= set_expiry(entity, fragment.expires_at);
    if !fragment.scopes.is_empty() {
        if entity.scopes.is_empty() {
            // The clause says to ignore it; the official test (ETSI
            // 011_05_02) wants it reported, as a 207.
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
            match (list.find(&new.dataset_id), null) {
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
    if let Some(extra) = a.extra.take() {
        merge_extra(&mut a.extra, *extra);
    }
    // A new instance has nothing for a Null to delete: it is dropped, never
    // stored.
    a.sub.retain(|(_, sub)| !is_ngsi_null(sub));
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
    let keep_value = patch.is_valueless();
    // A member the fragment does not give stays (clause 5.5.8 Example 1):
    // the objectType of a Relationship given a new object.
    let old_kind = old.value.kind_name();
    let old_object_type = match &old.value {
        AttrValue::Relationship { object_type, .. }
        | AttrValue::ListRelationship { object_type, .. } => object_type.clone(),
        _ => None,
    };
    match (&mut old.value, patch.value) {
        _ if keep_value => {}
        (AttrValue::LanguageProperty(target), AttrValue::LanguageProperty(map)) if compound => {
            for (tag, text) in map {
                target.insert(tag, text);
            }
        }
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
    if let Some(kept) = old_object_type
        && old.value.kind_name() == old_kind
        && let AttrValue::Relationship { object_type, .. }
        | AttrValue::ListRelationship { object_type, .. } = &mut old.value
        && object_type.is_none()
    {
        *object_type = Some(kept);
    }
    patch_member(&mut old.observed_at, patch.observed_at);
    patch_member(&mut old.unit_code, patch.unit_code);
    if let Some(extra) = patch.extra {
        merge_extra(&mut old.extra, *extra);
    }
    let mut places = Places::new(&old.sub, patch.sub.len(), sub_name);
    for (name, sub) in patch.sub {
        match (places.find(&old.sub, &name), is_ngsi_null(&sub)) {
            (Some(i), true) => places.remove(&mut old.sub, i),
            (None, true) => {}
            (Some(i), false) => merge_instance(&mut old.sub[i].1, sub, compound, now),
            (None, false) => {
                let mut sub = sub;
                if compound {
                    strip_compound_nulls(&mut sub);
                }
                sub.stamp(now, now);
                places.push(&mut old.sub, (name, sub));
            }
        }
    }
    places.finish(&mut old.sub);
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
    // Checked on the shared list: the list is copied (see `InstanceList`)
    // only once the update is known to change it.
    let Some(list) = entity.attr(name) else {
        return Err(NgsiError::not_found(format!(
            "attribute {name} does not exist"
        )));
    };
    let Some(pos) = list.iter().position(|a| a.dataset_id == dataset) else {
        return Err(NgsiError::not_found(format!(
            "attribute {name} has no such datasetId"
        )));
    };
    let current = list[pos].value.kind_name();
    if let Some(k) = kind.as_deref()
        && k != current
    {
        return Err(NgsiError::bad_data(format!(
            "attribute {name} is a {current}: a partial update cannot make it a {k}"
        )));
    }
    let delete = value_given && is_ngsi_null(&patch);
    if !delete {
        if !value_given {
            patch.value = list[pos].value.clone();
        } else if patch.value.kind_name() != current {
            return Err(NgsiError::bad_data(format!(
                "attribute {name} is a {current}: the fragment's value is a {}",
                patch.value.kind_name()
            )));
        }
    }
    let Some(instances) = entity.attr_mut(name) else {
        return Err(NgsiError::internal(format!("attribute {name} vanished")));
    };
    if delete {
        instances.remove(pos);
        if instances.is_empty() {
            entity.attrs.retain(|(n, _)| n != name);
        }
    } else {
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
    let Some(instances) = entity.attr(name) else {
        return Err(NgsiError::not_found(format!(
            "attribute {name} does not exist"
        )));
    };
    // Replace does not create: each instance replaced must exist (as for a
    // partial update), checked before anything changes.
    if let Some(missing) = new
        .iter()
        .find(|a| !instances.iter().any(|i| i.dataset_id == a.dataset_id))
    {
        return Err(NgsiError::not_found(match &missing.dataset_id {
            Some(d) => format!("attribute {name} has no instance of datasetId {d}"),
            None => format!("attribute {name} has no default instance (without datasetId)"),
        }));
    }
    for attr in new {
        let instances = entity.attr_mut(name).expect("checked above");
        if let Some(old) = find_instance(instances, attr.dataset_id.as_deref()) {
            overwrite(old, attr, now);
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
///
/// A fragment's instance without a value ([`Attribute::is_valueless`])
/// merges its metadata and sub-attributes into the instance it names; one
/// that names no instance is refused (BadRequestData), before anything
/// changes.
///
/// A merge keeps the kind of each attribute it merges into (clause
/// 5.6.17.4): a fragment's Property value, as the simplified
/// representations give it, becomes a value of that kind, or is refused
/// when it cannot be one (BadRequestData).
pub fn merge(entity: &mut Entity, fragment: Entity, now: i64) -> NgsiResult<()> {
    merge_with(entity, fragment, now, &MergeOptions::default())
}

/// The common values of a Merge Entity (clause 5.6.17.3, Table 6.5.3.4-1).
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// `lang`: a string merged into a LanguageProperty replaces the text
    /// of this language only.
    pub lang: Option<String>,
    /// `observedAt`: the observedAt of every merged instance that had one,
    /// unless the fragment gives its own.
    pub observed_at: Option<Arc<str>>,
}

/// [`merge`] with the common values of `options`.
pub fn merge_with(
    entity: &mut Entity,
    mut fragment: Entity,
    now: i64,
    options: &MergeOptions,
) -> NgsiResult<()> {
    prepare_merge(entity, &mut fragment, options)?;
    add_types(entity, fragment.types);
    set_expiry(entity, fragment.expires_at);
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
            match list.find(&patch.dataset_id) {
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
    Ok(())
}

/// Readies a merge fragment against the entity, before anything changes:
/// every instance (and sub-attribute) that merges into one takes its kind,
/// and every valueless one has an instance to merge into.
fn prepare_merge(entity: &Entity, fragment: &mut Entity, options: &MergeOptions) -> NgsiResult<()> {
    for (name, instances) in &mut fragment.attrs {
        for patch in instances.iter_mut().filter(|p| !is_ngsi_null(p)) {
            let old = entity
                .attr(name)
                .and_then(|list| list.iter().find(|a| a.dataset_id == patch.dataset_id));
            if let Some(old) = old
                && old.observed_at.is_some()
                && patch.observed_at.is_none()
            {
                patch.observed_at.clone_from(&options.observed_at);
            }
            prepare_instance(name, old, patch, options.lang.as_deref())?;
        }
    }
    Ok(())
}

fn prepare_instance(
    name: &str,
    old: Option<&Attribute>,
    patch: &mut Attribute,
    lang: Option<&str>,
) -> NgsiResult<()> {
    let Some(old) = old else {
        if patch.has_valueless() {
            return Err(NgsiError::bad_data(format!(
                "attribute {name}: a fragment without a value can only merge into an instance that exists, and there is none"
            )));
        }
        return Ok(());
    };
    kept_kind(name, &old.value, &mut patch.value, lang)?;
    for (sub_name, sub) in &mut patch.sub {
        if !is_ngsi_null(sub) {
            prepare_instance(sub_name, old.sub_attr(sub_name), sub, lang)?;
        }
    }
    Ok(())
}

/// Turns a Property value merged into an attribute of another kind into a
/// value of that kind (a simplified representation names no kind), or
/// refuses it. Values of a named kind, and valueless ones, stay.
fn kept_kind(
    name: &str,
    old: &AttrValue,
    patch: &mut AttrValue,
    lang: Option<&str>,
) -> NgsiResult<()> {
    let AttrValue::Property(v) = patch else {
        return Ok(());
    };
    if v.is_null() || matches!(old, AttrValue::Property(_)) {
        return Ok(());
    }
    let uri = |x: &Value| x.as_str().is_some_and(crate::parse::is_absolute_iri);
    let kind = old.kind_name();
    let v = std::mem::take(v);
    *patch = match (old, v) {
        (AttrValue::Relationship { object_type, .. }, v)
            if uri(&v)
                || v.as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(uri)) =>
        {
            AttrValue::Relationship {
                object: v,
                object_type: object_type.clone(),
            }
        }
        (AttrValue::ListRelationship { object_type, .. }, Value::Array(items))
            if items
                .iter()
                .all(|x| uri(x) || x.get("object").is_some_and(uri)) =>
        {
            AttrValue::ListRelationship {
                objects: items
                    .into_iter()
                    .map(|x| match x {
                        Value::Object(mut m) => m.remove("object").unwrap_or_default(),
                        other => other,
                    })
                    .collect(),
                object_type: object_type.clone(),
            }
        }
        (AttrValue::LanguageProperty(_), Value::Object(map))
            if map.values().all(|x| {
                x.is_string() || x.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }) =>
        {
            AttrValue::LanguageProperty(map)
        }
        // The text (or texts) of the common language (`lang`), else of
        // none (clause 6.5.3.4).
        (AttrValue::LanguageProperty(_), v)
            if v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) =>
        {
            let tag = lang.unwrap_or("@none").to_string();
            AttrValue::LanguageProperty(serde_json::Map::from_iter([(tag, v)]))
        }
        (AttrValue::JsonProperty(_), v) => AttrValue::JsonProperty(v),
        (AttrValue::ListProperty(_), Value::Array(items)) => AttrValue::ListProperty(items),
        _ => {
            return Err(NgsiError::bad_data(format!(
                "attribute {name} is a {kind}: a merge keeps its type, and the value given is no {kind} value (write it in the normalized form)"
            )));
        }
    };
    Ok(())
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

        /// Adds `new` as an instance of `name` (a new attribute if need be).
        fn insert_instance(entity: &mut Entity, name: &Iri, new: Attribute, now: i64) {
            let new = created(new, now);
            match entity.attr_mut(name) {
                Some(instances) => instances.push(new),
                None => entity.attrs.push((name.clone(), vec![new].into())),
            }
        }

        fn position(e: &Entity, name: &Iri, dataset: &Option<Arc<str>>) -> Option<usize> {
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
                    .map(|(n, i)| (crate::iri(&format!("https://example.org/a{n}")), i.into()))
                    .collect(),
                created_at: 1,
                modified_at: 1,
                expires_at: None,
            }
        })
    }

    fn sorted(mut e: Entity) -> Vec<(Iri, InstanceList)> {
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

    #[test]
    fn a_valueless_fragment_merges_its_metadata_and_keeps_the_value() {
        let name = |n: &str| crate::iri(&format!("https://example.org/{n}"));
        let mut speed = Attribute::new(AttrValue::Relationship {
            object: Value::from("urn:ngsi-ld:Road:1"),
            object_type: None,
        });
        speed.sub.push((
            name("accuracy"),
            Attribute::new(AttrValue::Property(1.into())),
        ));
        let mut e = Entity {
            id: "urn:ngsi-ld:T:1".into(),
            types: vec![crate::iri("https://example.org/T")],
            scopes: Vec::new(),
            attrs: vec![(name("on"), vec![speed].into())],
            created_at: 1,
            modified_at: 1,
            expires_at: None,
        };
        let valueless = || Attribute::new(AttrValue::Property(Value::Null));
        let mut patch = valueless();
        patch.observed_at = Some("2026-09-01T00:00:00Z".into());
        let mut accuracy = valueless();
        accuracy.unit_code = Some("MTR".into());
        patch.sub.push((name("accuracy"), accuracy));
        let template = e.clone();
        let fragment = |attrs: Vec<(Iri, InstanceList)>| Entity {
            attrs,
            ..template.clone()
        };
        merge(&mut e, fragment(vec![(name("on"), vec![patch].into())]), 5).unwrap();
        let on = &e.attr(&name("on")).unwrap()[0];
        assert!(
            matches!(&on.value, AttrValue::Relationship { object, .. } if object == "urn:ngsi-ld:Road:1")
        );
        assert_eq!(on.observed_at.as_deref(), Some("2026-09-01T00:00:00Z"));
        let accuracy = on.sub_attr("https://example.org/accuracy").unwrap();
        assert_eq!(accuracy.value, AttrValue::Property(1.into()));
        assert_eq!(accuracy.unit_code.as_deref(), Some("MTR"));

        // Nothing to merge into: refused, and nothing changes.
        let before = e.clone();
        let mut missing_sub = valueless();
        missing_sub.sub.push((name("precision"), valueless()));
        for attrs in [
            vec![(name("off"), vec![valueless()].into())],
            vec![(name("on"), vec![missing_sub].into())],
        ] {
            let mut with_types = fragment(attrs);
            with_types.types.push(crate::iri("https://example.org/U"));
            assert!(merge(&mut e, with_types, 6).is_err());
            assert_eq!(e, before);
        }
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
                    merge(&mut fast, fragment.clone(), now).unwrap();
                    Vec::new()
                }
            };
            let expected = reference::edit(&mut slow, fragment, mode, now);
            prop_assert_eq!(updated, expected);
            prop_assert_eq!(sorted(fast), sorted(slow));
        }
    }
}
