//! The in-memory indexes that answer reads: entities by id (ordered, which
//! gives queries a stable order for pagination) and ids by type.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ngsi_model::{Entity, Iri};

use crate::attr_index::AttrIndex;
use crate::{Filter, Page, QueryPage, Selection};

/// The most attribute indexes one tenant keeps; queries on further
/// attributes scan.
pub const MAX_ATTR_INDEXES: usize = 32;

/// The indexes of one tenant.
#[derive(Debug, Default)]
pub struct TenantIndex {
    by_id: BTreeMap<Arc<str>, Arc<Entity>>,
    by_type: HashMap<Iri, BTreeSet<Arc<str>>>,
    /// Value indexes of the attributes that queries asked for, built on
    /// first use and maintained on every write from then on.
    by_attr: HashMap<Iri, AttrIndex>,
}

impl TenantIndex {
    /// The entity `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Entity>> {
        self.by_id.get(id)
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the tenant holds no entity.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Inserts or replaces an entity.
    pub fn put(&mut self, entity: Arc<Entity>) {
        let id = entity.id.clone();
        if let Some(old) = self.by_id.insert(id.clone(), entity.clone()) {
            self.unlink(&old);
        }
        for t in &entity.types {
            self.by_type
                .entry(t.clone())
                .or_default()
                .insert(id.clone());
        }
        for (attr, index) in &mut self.by_attr {
            index.insert(attr, &entity);
        }
    }

    /// Removes an entity.
    pub fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.unlink(&old);
        }
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
            for e in self.by_id.values() {
                index.insert(&c.attr, e);
            }
            tracing::info!(attribute = %c.attr, entities = self.by_id.len(), "built an attribute index");
            self.by_attr.insert(c.attr.clone(), index);
        }
    }

    fn unlink(&mut self, old: &Entity) {
        self.unlink_types(old);
        for (attr, index) in &mut self.by_attr {
            index.remove(attr, old);
        }
    }

    fn unlink_types(&mut self, old: &Entity) {
        for t in &old.types {
            if let Some(set) = self.by_type.get_mut(t) {
                set.remove(&*old.id);
                if set.is_empty() {
                    self.by_type.remove(t);
                }
            }
        }
    }

    /// Visits every entity in id order.
    pub fn scan(&self, visit: &mut dyn FnMut(&Entity)) {
        for e in self.by_id.values() {
            visit(e);
        }
    }

    /// Answers a query: candidates from the narrowest index, then `filter`,
    /// then the page.
    pub fn query(&self, selection: Selection<'_>, filter: Filter<'_>, page: Page) -> QueryPage {
        let mut out = QueryPage::default();
        let mut matched = 0usize;
        let end = page.offset.saturating_add(page.limit);
        let mut visit = |e: &Arc<Entity>| -> bool {
            if !filter(e) {
                return true;
            }
            if matched >= page.offset && matched < end {
                out.entities.push(e.clone());
            }
            matched += 1;
            // Keep going only while the page is incomplete or we count.
            page.count || matched < end
        };
        // The most selective indexed condition, if any, gives the candidates.
        let indexed = selection
            .conditions
            .iter()
            .filter_map(|c| {
                self.by_attr
                    .get(&c.attr)
                    .map(|i| (i.estimate(&c.condition), i, c))
            })
            .min_by_key(|(estimate, _, _)| *estimate);
        match (selection.ids, selection.types, indexed) {
            (None, _, Some((_, index, c))) if index.sorted_candidates(&c.condition).is_some() => {
                let ids = index.sorted_candidates(&c.condition).into_iter().flatten();
                for id in ids {
                    if let Some(e) = self.by_id.get(&**id)
                        && !visit(e)
                    {
                        break;
                    }
                }
            }
            (None, _, Some((_, index, c))) => {
                let mut ids = Vec::new();
                index.candidates(&c.condition, &mut ids);
                ids.sort_unstable();
                ids.dedup();
                for id in ids {
                    if let Some(e) = self.by_id.get(&**id)
                        && !visit(e)
                    {
                        break;
                    }
                }
            }
            (Some(ids), _, _) => {
                let mut sorted: Vec<&Arc<str>> = ids.iter().collect();
                sorted.sort();
                sorted.dedup();
                for id in sorted {
                    if let Some(e) = self.by_id.get(&**id)
                        && !visit(e)
                    {
                        break;
                    }
                }
            }
            (None, Some([only]), None) => {
                for id in self.by_type.get(only).into_iter().flatten() {
                    if let Some(e) = self.by_id.get(id)
                        && !visit(e)
                    {
                        break;
                    }
                }
            }
            (None, Some(types), None) => {
                let mut ids: BTreeSet<&Arc<str>> = BTreeSet::new();
                for t in types {
                    ids.extend(self.by_type.get(t).into_iter().flatten());
                }
                for id in ids {
                    if let Some(e) = self.by_id.get(id)
                        && !visit(e)
                    {
                        break;
                    }
                }
            }
            (None, None, None) => {
                for e in self.by_id.values() {
                    if !visit(e) {
                        break;
                    }
                }
            }
        }
        if page.count {
            out.total = Some(matched);
        }
        out
    }
}
