//! Linked Entity retrieval (clause 4.5.23): Retrieve Entity and Query
//! Entities with `join=inline` answer the entities a returned Relationship
//! targets inside that Relationship, with `join=flat` after the linking
//! entities, down `joinLevel` hops.
//!
//! Only Linked Entities this broker holds for the tenant are retrieved
//! (clause 4.5.23.1: "Relationships targeting a locally stored Entity"). An
//! entity is never retrieved twice along one path (no loops), nor when
//! `containedBy` names it (the client has it already); with `join=flat`
//! each entity appears once in the whole answer. Every entity of the answer
//! is shown in the same representation (format, options, lang); pick and
//! omit apply level by level (clause 4.21): a plain name to the entity it
//! stands beside, `rel{...}` to the Linked Entities of `rel`, whose other
//! Linked Entities are shown whole (ETSI 018_20, 018_21, 019_20–019_23).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ngsi_model::render::LinkedEntities;
use ngsi_model::{AttrValue, Entity, Iri, NgsiError, NgsiResult};
use serde_json::Value;

use store::Store;

use crate::{Broker, Ctx, ViewOptions};

/// The deepest `joinLevel` accepted.
pub const MAX_JOIN_LEVEL: usize = 10;

/// The most Linked Entities one answer holds, counted where they are
/// placed (an entity that several Relationships of one entity name is
/// placed in each): a wide or dense graph stops growing there instead of
/// exhausting memory.
pub const MAX_LINKED: usize = 1000;

/// A Linked Entity retrieval asked for (`join`, `joinLevel`,
/// `containedBy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// `join=flat`: the Linked Entities follow the linking ones; else
    /// inline, inside their Relationships.
    pub flat: bool,
    /// Hops followed from a linking entity (`joinLevel`, default 1).
    pub level: usize,
    /// Entities the client has already met (`containedBy`): not retrieved.
    pub contained_by: Vec<Arc<str>>,
}

impl Join {
    /// Reads the parameters; `None` when `join` is absent or `@none`.
    /// `joinLevel` and `containedBy` without `join` are accepted and change
    /// nothing.
    pub fn from_params(
        join: Option<&str>,
        level: Option<&str>,
        contained_by: Option<&str>,
    ) -> NgsiResult<Option<Join>> {
        let level = match level {
            None => 1,
            Some(l) => l
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_JOIN_LEVEL).contains(l))
                .ok_or_else(|| {
                    NgsiError::bad_data(format!(
                        "joinLevel must be an integer from 1 to {MAX_JOIN_LEVEL}"
                    ))
                })?,
        };
        let mut ids = Vec::new();
        for id in contained_by
            .into_iter()
            .flat_map(|c| c.split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            if !ngsi_model::parse::is_absolute_iri(id) {
                return Err(NgsiError::bad_data(format!(
                    "containedBy: {id} is not a URI"
                )));
            }
            ids.push(Arc::from(id));
        }
        let flat = match join.map(str::trim) {
            None | Some("@none") => return Ok(None),
            Some("inline") => false,
            Some("flat") => true,
            Some(other) => {
                return Err(NgsiError::bad_data(format!(
                    "join must be inline, flat or @none, not {other}"
                )));
            }
        };
        Ok(Some(Join {
            flat,
            level,
            contained_by: ids,
        }))
    }
}

/// The entity ids the top-level Relationships and ListRelationships of
/// `entity` target, in order, each with the Relationship's name.
fn targets(entity: &Entity) -> impl Iterator<Item = (&Iri, &str)> {
    entity
        .attrs
        .iter()
        .flat_map(|(name, instances)| instances.iter().map(move |a| (name, a)))
        .flat_map(|(name, a)| {
            let ids = match &a.value {
                AttrValue::Relationship {
                    object: Value::String(s),
                    ..
                } => vec![s.as_str()],
                AttrValue::Relationship {
                    object: Value::Array(items),
                    ..
                }
                | AttrValue::ListRelationship { objects: items, .. } => {
                    items.iter().filter_map(Value::as_str).collect()
                }
                _ => Vec::new(),
            };
            ids.into_iter().map(move |id| (name, id))
        })
}

impl Broker {
    /// The rendered Linked Entities to inline in `shown` (what the view
    /// shows of an entity) for `join=inline`; none without it. `budget`
    /// counts down the Linked Entities the answer may still retrieve.
    pub(crate) fn inline_of(
        &self,
        tenant: &str,
        shown: &Entity,
        ctx: &Ctx,
        view: &ViewOptions,
        budget: &mut usize,
    ) -> LinkedEntities {
        inline_linked(&*self.store, tenant, shown, ctx, view, budget)
    }

    /// An entity of an answer, as JSON text (`None` when pick/omit leave
    /// nothing of it), with its inline Linked Entities for `join=inline`.
    pub(crate) fn answer_json(
        &self,
        tenant: &str,
        entity: &Entity,
        ctx: &Ctx,
        view: &ViewOptions,
        budget: &mut usize,
    ) -> Option<Vec<u8>> {
        let shown = crate::project(entity, ctx, view);
        let inline = self.inline_of(tenant, &shown, ctx, view, budget);
        crate::shown_json(&shown, ctx, view, &inline)
    }

    /// The Linked Entities `join=flat` appends to an answer of `roots`, as
    /// JSON text (none without it).
    pub(crate) fn flat_answer(
        &self,
        tenant: &str,
        roots: &[&Entity],
        ctx: &Ctx,
        view: &ViewOptions,
    ) -> Vec<Vec<u8>> {
        let shown: Vec<_> = roots.iter().map(|e| crate::project(e, ctx, view)).collect();
        let shown: Vec<&Entity> = shown.iter().map(|e| &**e).collect();
        flat_linked(&*self.store, tenant, &shown, ctx, view)
            .iter()
            .filter_map(|(e, v)| crate::shown_json(e, ctx, v, &LinkedEntities::new()))
            .collect()
    }
}

/// The rendered Linked Entities to inline in `shown` (what `view` shows of
/// an entity) for `view`'s `join=inline`; none without it. Each Linked
/// Entity is shown as [`ViewOptions::linked_view`] says for the
/// Relationship that reached it (clause 4.21, level by level). `budget`
/// counts down the Linked Entities the answer may still retrieve.
pub(crate) fn inline_linked(
    store: &dyn Store,
    tenant: &str,
    shown: &Entity,
    ctx: &Ctx,
    view: &ViewOptions,
    budget: &mut usize,
) -> LinkedEntities {
    match view.join.as_ref().filter(|j| !j.flat) {
        Some(join) => Walk {
            store,
            tenant,
            ctx,
            ancestors: join.contained_by.clone(),
            budget,
        }
        .inline(shown, view, join.level),
        None => LinkedEntities::new(),
    }
}

/// The Linked Entities of `shown` (what `view` shows of the entities of an
/// answer) for `view`'s `join=flat` (none without it), each with the view
/// it is shown through ([`ViewOptions::linked_view`] of the Relationship
/// that first reached it): each entity once, breadth first, `joinLevel`
/// hops deep, leaving out the roots and what `containedBy` names.
pub(crate) fn flat_linked(
    store: &dyn Store,
    tenant: &str,
    shown: &[&Entity],
    ctx: &Ctx,
    view: &ViewOptions,
) -> Vec<(Entity, ViewOptions)> {
    let Some(join) = view.join.as_ref().filter(|j| j.flat) else {
        return Vec::new();
    };
    let mut seen: HashSet<Arc<str>> = shown.iter().map(|e| e.id.clone()).collect();
    seen.extend(join.contained_by.iter().cloned());
    // The ids the level at hand targets, with the views they are shown in.
    let reached = |e: &Entity, v: &ViewOptions| -> Vec<(Arc<str>, ViewOptions)> {
        targets(e)
            .map(|(rel, id)| (Arc::from(id), v.linked_view(rel)))
            .collect()
    };
    let mut next: Vec<(Arc<str>, ViewOptions)> =
        shown.iter().flat_map(|e| reached(e, view)).collect();
    let mut out: Vec<(Entity, ViewOptions)> = Vec::new();
    for _ in 0..join.level {
        let start = out.len();
        for (id, v) in std::mem::take(&mut next) {
            if out.len() >= MAX_LINKED {
                return out;
            }
            if seen.contains(&id) {
                continue;
            }
            let Some(target) = store.get(tenant, &id) else {
                continue;
            };
            seen.insert(id);
            let projected = crate::project(&target, ctx, &v).into_owned();
            out.push((projected, v));
        }
        next = out[start..]
            .iter()
            .flat_map(|(e, v)| reached(e, v))
            .collect();
        if next.is_empty() {
            break;
        }
    }
    out
}

/// One inline Linked Entity retrieval under way.
struct Walk<'a> {
    store: &'a dyn Store,
    tenant: &'a str,
    ctx: &'a Ctx,
    /// The ids on the path to the entity at hand (and `containedBy`),
    /// which are not retrieved again.
    ancestors: Vec<Arc<str>>,
    /// Linked Entities the answer may still retrieve.
    budget: &'a mut usize,
}

impl Walk<'_> {
    /// The rendered Linked Entities of `shown` (shown through `view`),
    /// `level` hops deep.
    ///
    /// A Linked Entity goes into every Relationship (and list item) of
    /// `shown` that names it, with all it holds, so the budget pays for
    /// each placement. The budget is shared fairly: each entity `shown`
    /// links to may take its share of what is left (what one leaves goes
    /// to the next), divided by its placements, for itself and what it
    /// holds in turn. An entity whose share cannot pay for all its places
    /// is left out, so nearer hops fill before farther ones.
    fn inline(&mut self, shown: &Entity, view: &ViewOptions, level: usize) -> LinkedEntities {
        let mut linked = LinkedEntities::new();
        if level == 0 {
            return linked;
        }
        let mut places: HashMap<&str, usize> = HashMap::new();
        for (_, id) in targets(shown) {
            *places.entry(id).or_default() += 1;
        }
        let mut unseen = places.len();
        self.ancestors.push(shown.id.clone());
        for (rel, id) in targets(shown) {
            let Some(count) = places.remove(id) else {
                continue;
            };
            let share = *self.budget / unseen;
            unseen -= 1;
            // The entity itself in each of its places, then what it holds.
            let Some(inner_budget) = (share / count).checked_sub(1) else {
                continue;
            };
            if self.ancestors.iter().any(|a| &**a == id) {
                continue;
            }
            let Some(target) = self.store.get(self.tenant, id) else {
                continue;
            };
            let target_view = view.linked_view(rel);
            let target_shown = crate::project(&target, self.ctx, &target_view);
            let left = std::mem::replace(self.budget, inner_budget);
            let inner = self.inline(&target_shown, &target_view, level - 1);
            let used = inner_budget - *self.budget;
            // At most `share`, which is at most `left`.
            *self.budget = left - count * (1 + used);
            linked.insert(
                id.to_string(),
                crate::shown_value(&target_shown, self.ctx, &target_view, &inner),
            );
        }
        self.ancestors.pop();
        linked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_parameters_are_read_and_checked() {
        assert_eq!(Join::from_params(None, Some("3"), None).unwrap(), None);
        assert_eq!(Join::from_params(Some("@none"), None, None).unwrap(), None);
        let j = Join::from_params(Some("inline"), None, Some("urn:a:1, urn:a:2"))
            .unwrap()
            .unwrap();
        assert!(!j.flat && j.level == 1 && j.contained_by.len() == 2);
        assert!(
            Join::from_params(Some("flat"), Some("10"), None)
                .unwrap()
                .unwrap()
                .flat
        );
        for (join, level, by) in [
            (Some("deep"), None, None),
            (Some("inline"), Some("0"), None),
            (Some("inline"), Some("11"), None),
            (Some("inline"), Some("x"), None),
            (Some("flat"), None, Some("not a uri")),
        ] {
            assert!(
                Join::from_params(join, level, by).is_err(),
                "{join:?} {level:?} {by:?}"
            );
        }
    }
}
