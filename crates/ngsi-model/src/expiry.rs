//! Transient storage (clause 4.22): when an entity's or an attribute
//! instance's `expiresAt` has passed, it is no longer valid and the broker
//! removes it. These are the pure parts: when the next expiry of an entity
//! falls, and the entity without what has expired. The store keeps the
//! entities by their next expiry; the broker removes what is due.

use crate::entity::{Attribute, Entity};
use crate::time::parse_datetime;

/// The instant of an `expiresAt` as written, in microseconds. A value that
/// does not parse never expires (the parser lets only DateTimes in).
fn due(expires_at: Option<&str>) -> Option<i64> {
    expires_at.and_then(parse_datetime)
}

fn earliest_in(a: &Attribute) -> Option<i64> {
    let own = due(a.expires_at());
    a.sub
        .iter()
        .filter_map(|(_, s)| earliest_in(s))
        .chain(own)
        .min()
}

/// The earliest instant at which something of `e` expires: the entity,
/// one of its attribute instances or one of their sub-attributes. `None`
/// when nothing does (the common case, found without a parse).
pub fn earliest(e: &Entity) -> Option<i64> {
    let own = due(e.expires_at.as_deref());
    e.attrs
        .iter()
        .flat_map(|(_, list)| list.iter())
        .filter(|a| a.extra.is_some() || !a.sub.is_empty())
        .filter_map(earliest_in)
        .chain(own)
        .min()
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pruned {
    /// Nothing had expired.
    Nothing,
    /// Some attribute instances or sub-attributes had expired and are gone.
    Parts,
    /// The entity itself had expired: it is to be deleted.
    Entity,
}

/// Whether the `expiresAt` of instance `a` has passed at `now`.
pub fn expired(a: &Attribute, now: i64) -> bool {
    due(a.expires_at()).is_some_and(|t| t <= now)
}

/// Removes the expired sub-attributes of `a`, at any depth. Whether any
/// went.
fn prune_subs(a: &mut Attribute, now: i64) -> bool {
    let before = a.sub.len();
    a.sub.retain(|(_, s)| !expired(s, now));
    let mut changed = a.sub.len() != before;
    for (_, s) in &mut a.sub {
        changed |= prune_subs(s, now);
    }
    changed
}

/// Removes from `e` what has expired at `now` (microseconds): the
/// attribute instances and sub-attributes whose `expiresAt` has passed
/// (an attribute left without instances goes too), or, when the entity's
/// own has passed, nothing: the answer says the entity is to go. Instance
/// lists with nothing expired are left shared with earlier versions.
pub fn prune(e: &mut Entity, now: i64) -> Pruned {
    if due(e.expires_at.as_deref()).is_some_and(|t| t <= now) {
        return Pruned::Entity;
    }
    match earliest(e) {
        Some(t) if t <= now => {}
        _ => return Pruned::Nothing,
    }
    for (_, list) in &mut e.attrs {
        let touched = list
            .iter()
            .any(|a| earliest_in(a).is_some_and(|t| t <= now));
        if !touched {
            continue;
        }
        list.retain(|a| !expired(a, now));
        for a in list.iter_mut() {
            prune_subs(a, now);
        }
    }
    e.attrs.retain(|(_, list)| !list.is_empty());
    Pruned::Parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{AttrExtra, AttrValue, iri};
    use serde_json::json;

    const PAST: &str = "2020-01-01T00:00:00Z";
    const FUTURE: &str = "2100-01-01T00:00:00Z";

    fn now() -> i64 {
        parse_datetime("2026-11-27T00:00:00Z").unwrap()
    }

    fn instance(value: i64, dataset: Option<&str>, expires: Option<&str>) -> Attribute {
        let mut a = Attribute::new(AttrValue::Property(json!(value)));
        a.dataset_id = dataset.map(Into::into);
        a.extra = AttrExtra {
            expires_at: expires.map(Into::into),
            value_type: None,
        }
        .boxed();
        a
    }

    fn entity(expires: Option<&str>) -> Entity {
        let mut speed = instance(1, None, None);
        speed.sub.push((
            iri("https://example.org/accuracy"),
            instance(2, None, Some(PAST)),
        ));
        Entity {
            id: "urn:ngsi-ld:Vehicle:1".into(),
            types: vec![iri("https://example.org/Vehicle")],
            scopes: Vec::new(),
            attrs: vec![
                (
                    iri("https://example.org/speed"),
                    vec![speed, instance(3, Some("urn:ds:gps"), Some(PAST))].into(),
                ),
                (
                    iri("https://example.org/alert"),
                    vec![instance(4, None, Some(PAST))].into(),
                ),
                (
                    iri("https://example.org/humidity"),
                    vec![instance(5, None, Some(FUTURE))].into(),
                ),
            ],
            created_at: 0,
            modified_at: 0,
            expires_at: expires.map(Into::into),
        }
    }

    #[test]
    fn the_earliest_expiry_is_found_at_every_level() {
        let e = entity(Some(FUTURE));
        assert_eq!(earliest(&e), parse_datetime(PAST));
        let mut plain = entity(None);
        plain.attrs.clear();
        assert_eq!(earliest(&plain), None);
        plain.expires_at = Some(FUTURE.into());
        assert_eq!(earliest(&plain), parse_datetime(FUTURE));
    }

    #[test]
    fn expired_instances_sub_attributes_and_emptied_attributes_go() {
        let mut e = entity(Some(FUTURE));
        let untouched = e.attr_list("https://example.org/humidity").unwrap().clone();
        assert_eq!(prune(&mut e, now()), Pruned::Parts);
        let names: Vec<&str> = e.attrs.iter().map(|(n, _)| &**n).collect();
        assert_eq!(
            names,
            ["https://example.org/speed", "https://example.org/humidity"]
        );
        let speed = e.attr("https://example.org/speed").unwrap();
        assert_eq!(speed.len(), 1);
        assert!(speed[0].dataset_id.is_none() && speed[0].sub.is_empty());
        // What had nothing expired stays shared with the earlier version.
        assert!(
            e.attr_list("https://example.org/humidity")
                .unwrap()
                .same(&untouched)
        );
        assert_eq!(earliest(&e), parse_datetime(FUTURE));
        assert_eq!(prune(&mut e, now()), Pruned::Nothing);
    }

    #[test]
    fn an_expired_entity_is_to_go_whole() {
        let mut e = entity(Some(PAST));
        let before = e.clone();
        assert_eq!(prune(&mut e, now()), Pruned::Entity);
        assert_eq!(e, before);
    }
}
