//! The in-memory indexes that answer reads.
//!
//! Entities are held in their compact stored encoding (positional
//! MessagePack with names as numbers, about 890 bytes for the benchmark's
//! template entity; see `ngsi_model::names`) and decoded
//! only when an operation needs one: a read, a filter that the indexes cannot
//! decide, or the page being rendered. Beside them: ids by type (ordered by
//! id, which gives queries a stable order for pagination), attribute value
//! indexes built on first use, and the per-type and per-attribute counts that
//! discovery reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use ngsi_model::names::Names;
use ngsi_model::{Entity, Iri};

use crate::attr_index::AttrIndex;
use crate::{AttrInfo, Filter, Page, QueryPage, Selection, TypeInfo};

/// The most attribute indexes one tenant keeps; queries on further
/// attributes filter candidates instead.
pub const MAX_ATTR_INDEXES: usize = 32;
/// The candidates above which a query's scan runs as [`crate::cpu_bound`]
/// work (decoding and filtering take about 1.5 µs per entity).
const HEAVY_SCAN: usize = 2000;

/// The names of the attribute kinds, in the order of the counters.
const KINDS: [&str; 8] = ngsi_model::AttrValue::KIND_NAMES;

/// The kinds among the instances of one attribute, as the discovery
/// counts see them.
fn kinds_of(instances: &[ngsi_model::Attribute]) -> [bool; 8] {
    let mut k = [false; 8];
    for a in instances {
        k[a.value.kind_index()] = true;
    }
    k
}

/// Whether two versions of an entity have the same attributes, in the same
/// order, with as many instances of the same kinds: then they count alike
/// in discovery.
fn same_attr_kinds(a: &Entity, b: &Entity) -> bool {
    a.attrs.len() == b.attrs.len()
        && a.attrs.iter().zip(&b.attrs).all(|((na, ia), (nb, ib))| {
            na == nb && (ia.same(ib) || ia.len() == ib.len() && kinds_of(ia) == kinds_of(ib))
        })
}

/// Entities (of one type, or in all) having an attribute, by kind.
#[derive(Debug, Default, Clone)]
struct AttrCounts {
    entities: usize,
    kinds: [usize; 8],
}

/// The discovery counts of one type: its entities, and its attributes by
/// name number.
#[derive(Debug, Default)]
struct TypeCounts {
    entities: usize,
    attrs: FxHashMap<u32, AttrCounts>,
}

/// The discovery counts of one attribute: in all, and by type (name
/// number).
#[derive(Debug, Default)]
struct AttrTotals {
    counts: AttrCounts,
    /// Instances of the attribute (one per datasetId in each entity).
    instances: usize,
    types: FxHashMap<u32, usize>,
}

/// Decodes a stored entity whose names are numbered in `names` (or
/// strings, as before the table existed).
pub fn decode(names: &Arc<Names>, bytes: &[u8]) -> Result<Entity, rmp_serde::decode::Error> {
    crate::codec::decode_entity(names, bytes)
}

/// Encodes an entity for storage: positional MessagePack with its types and
/// attribute names as numbers of `names` (see [`ngsi_model::names`] and
/// [`crate::codec`]).
pub fn encode(names: &Arc<Names>, entity: &Entity) -> Vec<u8> {
    crate::codec::encode_entity(names, entity)
}

/// An entity as held: its stored encoding and the row that stores it (the
/// rowid of the `entities` table, which the writer assigns: rows are found
/// by number, so the table needs no index on the id).
#[derive(Debug)]
struct Held {
    row: i64,
    bytes: Box<[u8]>,
}

/// The indexes of one tenant.
#[derive(Debug)]
pub struct TenantIndex {
    /// The store's name table, which the held encodings number their names
    /// in.
    names: Arc<Names>,
    by_id: BTreeMap<Arc<str>, Held>,
    by_type: HashMap<Iri, BTreeSet<Arc<str>>>,
    /// Value indexes of the attributes that queries asked for, built on
    /// first use and maintained on every write from then on.
    by_attr: HashMap<Iri, AttrIndex>,
    /// Discovery counts by the name numbers of types and attributes (in
    /// `names`): a create bumps a counter per type and attribute pair, and
    /// a number hashes in one step where an IRI takes its whole length.
    types: FxHashMap<u32, TypeCounts>,
    attrs: FxHashMap<u32, AttrTotals>,
    /// The entities with something that expires (clause 4.22), by the
    /// instant of their earliest expiry, and that instant by id: empty for
    /// a city without transient data, and then never consulted on writes.
    expiring: BTreeSet<(i64, Arc<str>)>,
    expiry_of: HashMap<Arc<str>, i64>,
}

impl TenantIndex {
    /// An empty index whose entities are encoded with `names`.
    pub fn new(names: Arc<Names>) -> Self {
        Self {
            names,
            by_id: BTreeMap::new(),
            by_type: HashMap::new(),
            by_attr: HashMap::new(),
            types: FxHashMap::default(),
            attrs: FxHashMap::default(),
            expiring: BTreeSet::new(),
            expiry_of: HashMap::new(),
        }
    }

    /// Notes when entity `id` next expires (`None`: never).
    fn track_expiry(&mut self, id: &Arc<str>, due: Option<i64>) {
        if due.is_none() && self.expiry_of.is_empty() {
            return;
        }
        if let Some(old) = self.expiry_of.remove(id) {
            self.expiring.remove(&(old, id.clone()));
        }
        if let Some(t) = due {
            self.expiry_of.insert(id.clone(), t);
            self.expiring.insert((t, id.clone()));
        }
    }

    /// The earliest instant at which something held expires.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiring.first().map(|(t, _)| *t)
    }

    /// The entities with something that expires at or before `now`, the
    /// earliest first.
    pub fn expired(&self, now: i64) -> impl Iterator<Item = &Arc<str>> {
        self.expiring
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, id)| id)
    }

    fn decode_stored(&self, id: &str, bytes: &[u8]) -> Option<Entity> {
        match decode(&self.names, bytes) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(%id, error = %e, "a held entity could not be decoded");
                None
            }
        }
    }

    /// The entity `id`, decoded.
    pub fn get(&self, id: &str) -> Option<Arc<Entity>> {
        let held = self.by_id.get(id)?;
        self.decode_stored(id, &held.bytes).map(Arc::new)
    }

    /// The entity `id`, decoded; an error (not `None`) when it is held but
    /// does not decode.
    pub fn lookup(&self, id: &str) -> Result<Option<Arc<Entity>>, crate::StoreError> {
        match self.by_id.get(id) {
            None => Ok(None),
            Some(held) => decode(&self.names, &held.bytes)
                .map(|e| Some(Arc::new(e)))
                .map_err(|e| crate::StoreError::Decode {
                    id: id.to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// The row of the `entities` table that stores entity `id`.
    pub fn row_of(&self, id: &str) -> Option<i64> {
        self.by_id.get(id).map(|h| h.row)
    }

    /// Whether entity `id` exists.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the tenant holds no entity.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Inserts or replaces an entity; `bytes` is its stored encoding, in
    /// row `row` of the `entities` table.
    pub fn put(&mut self, entity: &Entity, row: i64, bytes: Box<[u8]>) {
        let old = self.get(&entity.id);
        self.replace(old.as_deref(), entity, row, bytes);
    }

    /// Replaces `old` (the held version of the entity, as the caller has it
    /// decoded already; `None` if it is new) with `entity`, stored in row
    /// `row`.
    pub fn replace(&mut self, old: Option<&Entity>, entity: &Entity, row: i64, bytes: Box<[u8]>) {
        let id = entity.id.clone();
        self.track_expiry(&id, ngsi_model::expiry::earliest(entity));
        match old {
            // The same types and the same attributes of the same kinds (the
            // common update): the type sets and the discovery counts stay as
            // they are; only the value indexes follow the values.
            Some(old) if old.types == entity.types && same_attr_kinds(old, entity) => {
                for (attr, index) in &mut self.by_attr {
                    // An attribute the update left alone (the versions share
                    // its instances) keeps its index entries.
                    let kept = match (old.attr_list(attr), entity.attr_list(attr)) {
                        (Some(a), Some(b)) => a.same(b),
                        (None, None) => true,
                        _ => false,
                    };
                    if !kept {
                        index.remove(attr, old);
                        index.insert(attr, entity);
                    }
                }
                self.by_id.insert(id, Held { row, bytes });
                return;
            }
            Some(old) => self.unlink(old),
            None => {}
        }
        self.by_id.insert(id.clone(), Held { row, bytes });
        for t in &entity.types {
            self.by_type
                .entry(t.clone())
                .or_default()
                .insert(id.clone());
        }
        for (attr, index) in &mut self.by_attr {
            index.insert(attr, entity);
        }
        self.count(entity, true);
    }

    /// Removes an entity.
    pub fn remove(&mut self, id: &str) {
        if let Some(old) = self.get(id) {
            self.remove_known(&old);
        }
    }

    /// Removes `old`, the held version of an entity, decoded by the caller.
    pub fn remove_known(&mut self, old: &Entity) {
        if self.by_id.remove(&*old.id).is_some() {
            self.track_expiry(&old.id, None);
            self.unlink(old);
        }
    }

    fn unlink(&mut self, old: &Entity) {
        for t in &old.types {
            if let Some(set) = self.by_type.get_mut(t) {
                set.remove(&*old.id);
                if set.is_empty() {
                    self.by_type.remove(t);
                }
            }
        }
        for (attr, index) in &mut self.by_attr {
            index.remove(attr, old);
        }
        self.count(old, false);
    }

    /// Adds (or, with `add` false, removes) an entity to the discovery counts.
    fn count(&mut self, e: &Entity, add: bool) {
        fn bump(n: &mut usize, add: bool) {
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        }
        fn bump_kinds(counts: &mut AttrCounts, kinds: &[bool; 8], add: bool) {
            bump(&mut counts.entities, add);
            for (n, present) in counts.kinds.iter_mut().zip(kinds) {
                if *present {
                    bump(n, add);
                }
            }
        }
        let types: Vec<u32> = e.types.iter().map(|t| self.names.number_of(t)).collect();
        let attrs: Vec<(u32, [bool; 8], usize)> = e
            .attrs
            .iter()
            .map(|(name, i)| (self.names.number_of(name), kinds_of(i), i.len()))
            .collect();
        for &t in &types {
            let tc = self.types.entry(t).or_default();
            bump(&mut tc.entities, add);
            for (name, kinds, _) in &attrs {
                let ac = tc.attrs.entry(*name).or_default();
                bump_kinds(ac, kinds, add);
                if ac.entities == 0 {
                    tc.attrs.remove(name);
                }
            }
            if tc.entities == 0 {
                self.types.remove(&t);
            }
        }
        for (name, kinds, instances) in &attrs {
            let totals = self.attrs.entry(*name).or_default();
            bump_kinds(&mut totals.counts, kinds, add);
            if add {
                totals.instances += instances;
            } else {
                totals.instances = totals.instances.saturating_sub(*instances);
            }
            for t in &types {
                let n = totals.types.entry(*t).or_default();
                bump(n, add);
                if *n == 0 {
                    totals.types.remove(t);
                }
            }
            if totals.counts.entities == 0 {
                self.attrs.remove(name);
            }
        }
    }

    fn kinds_of(counts: &AttrCounts) -> Vec<&'static str> {
        KINDS
            .iter()
            .zip(counts.kinds.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The entity types with their counts and attributes (for discovery).
    pub fn type_infos(&self) -> Vec<TypeInfo> {
        let names = self.names.snapshot();
        let mut out: Vec<TypeInfo> = self
            .types
            .iter()
            .filter_map(|(name, tc)| {
                let mut attrs: Vec<(Iri, Vec<&'static str>)> = tc
                    .attrs
                    .iter()
                    .filter_map(|(a, c)| Some((names.get(*a as usize)?.clone(), Self::kinds_of(c))))
                    .collect();
                attrs.sort_by(|a, b| a.0.cmp(&b.0));
                Some(TypeInfo {
                    name: names.get(*name as usize)?.clone(),
                    entities: tc.entities,
                    attrs,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The attributes with their counts, kinds and types (for discovery).
    pub fn attr_infos(&self) -> Vec<AttrInfo> {
        let names = self.names.snapshot();
        let mut out: Vec<AttrInfo> = self
            .attrs
            .iter()
            .filter_map(|(name, t)| {
                let mut types: Vec<Iri> = t
                    .types
                    .keys()
                    .filter_map(|n| names.get(*n as usize).cloned())
                    .collect();
                types.sort();
                Some(AttrInfo {
                    name: names.get(*name as usize)?.clone(),
                    entities: t.counts.entities,
                    instances: t.instances,
                    kinds: Self::kinds_of(&t.counts),
                    types,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether every attribute of `selection`'s conditions has an index (or
    /// cannot get one because the limit is reached).
    pub fn has_indexes_for(&self, selection: &Selection<'_>) -> bool {
        selection
            .conditions
            .iter()
            .all(|c| self.by_attr.contains_key(&c.attr) || self.by_attr.len() >= MAX_ATTR_INDEXES)
    }

    /// Builds the missing indexes for `selection`'s conditions.
    pub fn build_indexes_for(&mut self, selection: &Selection<'_>) {
        for c in selection.conditions {
            if self.by_attr.contains_key(&c.attr) || self.by_attr.len() >= MAX_ATTR_INDEXES {
                continue;
            }
            let mut index = AttrIndex::default();
            for (id, Held { bytes, .. }) in &self.by_id {
                if let Some(e) = self.decode_stored(id, bytes) {
                    index.insert(&c.attr, &e);
                }
            }
            tracing::info!(attribute = %c.attr, entities = self.by_id.len(), "built an attribute index");
            self.by_attr.insert(c.attr.clone(), index);
        }
    }

    /// Visits every entity in id order.
    pub fn scan(&self, visit: &mut dyn FnMut(&Entity)) {
        for (id, Held { bytes, .. }) in &self.by_id {
            if let Some(e) = self.decode_stored(id, bytes) {
                visit(&e);
            }
        }
    }

    /// The candidate ids of a query in id order: the given ids, else the
    /// intersection of the indexed conditions, else the by-type index, else
    /// every entity. `None` means every entity.
    fn candidates<'a>(&'a self, selection: &Selection<'a>) -> Option<Vec<&'a Arc<str>>> {
        if let Some(ids) = selection.ids {
            let mut sorted: Vec<&Arc<str>> = ids.iter().collect();
            sorted.sort();
            sorted.dedup();
            return Some(sorted);
        }
        // The entities of the types asked for: the candidates when no
        // indexed condition selects fewer.
        let of_types: Option<usize> = selection.types.map(|ts| {
            ts.iter()
                .map(|t| self.by_type.get(t).map_or(0, BTreeSet::len))
                .sum()
        });
        let cap = of_types.unwrap_or(usize::MAX);
        let mut indexed: Vec<(usize, &AttrIndex, &crate::attr_index::Condition)> = selection
            .conditions
            .iter()
            .filter_map(|c| {
                self.by_attr
                    .get(&c.attr)
                    .map(|i| (i.estimate(&c.condition, cap), i, &c.condition))
            })
            .collect();
        // Start from the most selective condition, then intersect.
        // Equality conditions are cheap to read and intersect; a range is
        // used only when there is no equality, and only the narrowest (it
        // may cover most entities, and the filter checks it anyway).
        indexed.sort_by_key(|(estimate, _, _)| *estimate);
        if indexed
            .iter()
            .any(|(_, _, c)| matches!(c, crate::attr_index::Condition::AnyOf(_)))
        {
            indexed.retain(|(_, _, c)| matches!(c, crate::attr_index::Condition::AnyOf(_)));
        } else {
            indexed.truncate(1);
        }
        // The types may select fewer still (a wide range, or a common
        // value, of an attribute that other types have too).
        if indexed
            .first()
            .is_some_and(|(estimate, _, _)| *estimate > cap)
        {
            indexed.clear();
        }
        if !indexed.is_empty() {
            let mut result: Option<Vec<&Arc<str>>> = None;
            for (_, index, condition) in indexed {
                let mut ids: Vec<&Arc<str>> = match index.sorted_candidates(condition) {
                    Some(set) => set.iter().collect(),
                    None => {
                        let mut v = Vec::new();
                        index.candidates(condition, &mut v);
                        v.sort_unstable();
                        v.dedup();
                        v
                    }
                };
                if let Some(prev) = result {
                    let keep: std::collections::HashSet<&str> = ids.iter().map(|s| &***s).collect();
                    ids = prev
                        .into_iter()
                        .filter(|id| keep.contains(&***id))
                        .collect();
                }
                let empty = ids.is_empty();
                result = Some(ids);
                if empty {
                    break;
                }
            }
            return result;
        }
        match selection.types {
            Some([only]) => Some(
                self.by_type
                    .get(only)
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
            ),
            Some(types) => {
                let mut ids: BTreeSet<&Arc<str>> = BTreeSet::new();
                for t in types {
                    ids.extend(self.by_type.get(t).into_iter().flatten());
                }
                Some(ids.into_iter().collect())
            }
            None => None,
        }
    }

    /// Answers a query: candidates from the indexes, then `filter` (unless
    /// the selection is exact), then the page. Only the entities that must be
    /// filtered or returned are decoded.
    pub fn query(&self, selection: Selection<'_>, filter: Filter<'_>, page: Page) -> QueryPage {
        let mut out = QueryPage::default();
        let mut matched = 0usize;
        let end = page.offset.saturating_add(page.limit);
        // Cheap checks before decoding: the types (when the candidates did
        // not come from the by-type index) and every indexed condition.
        let type_sets: Option<Vec<&BTreeSet<Arc<str>>>> = selection
            .types
            .map(|ts| ts.iter().filter_map(|t| self.by_type.get(t)).collect());
        let checks: Vec<(&AttrIndex, &crate::attr_index::Condition)> = selection
            .conditions
            .iter()
            .filter_map(|c| self.by_attr.get(&c.attr).map(|i| (i, &c.condition)))
            .collect();
        let of_type = |id: &str| {
            type_sets
                .as_ref()
                .is_none_or(|sets| sets.iter().any(|s| s.contains(id)))
        };
        // The callers pass over candidates of other types first.
        let mut visit = |id: &str, bytes: &[u8]| -> bool {
            if !selection.exact && !checks.iter().all(|(index, c)| index.may_satisfy(id, c)) {
                return true;
            }
            let in_page = matched >= page.offset && matched < end;
            if selection.exact {
                if in_page && let Some(e) = self.decode_stored(id, bytes) {
                    out.entities.push(Arc::new(e));
                }
            } else {
                let Some(e) = self.decode_stored(id, bytes) else {
                    return true;
                };
                if !filter(&e) {
                    return true;
                }
                if in_page {
                    out.entities.push(Arc::new(e));
                }
            }
            matched += 1;
            // Keep going only while the page is incomplete or we count.
            page.count || matched < end
        };
        let candidates = self.candidates(&selection);
        // Decoding is what costs: a scan that may decode thousands of
        // entities does not hold a runtime worker.
        let heavy =
            !selection.exact && candidates.as_ref().map_or(self.by_id.len(), Vec::len) > HEAVY_SCAN;
        let scan = || match candidates {
            Some(ids) => {
                for id in ids {
                    // A candidate of another type is passed over before its
                    // lookup (candidates by attribute value come in id
                    // order, so the ids of other types may come first).
                    if !selection.exact && !of_type(id) {
                        continue;
                    }
                    if let Some(held) = self.by_id.get(&**id)
                        && !visit(id, &held.bytes)
                    {
                        break;
                    }
                }
            }
            None => {
                for (id, Held { bytes, .. }) in &self.by_id {
                    if !selection.exact && !of_type(id) {
                        continue;
                    }
                    if !visit(id, bytes) {
                        break;
                    }
                }
            }
        };
        if heavy {
            crate::cpu_bound(scan);
        } else {
            scan();
        }
        if page.count {
            out.total = Some(matched);
        }
        out
    }
}
