//! Ordering of query results (`orderBy`, clause 4.23 of v1.9.1, and its use
//! in Query Entities, 5.7.2, and Query Temporal Evolution, 5.7.4).
//!
//! `orderBy` is a comma-separated list of members, each a path with an
//! optional direction: `name`, `name;desc`, `type;asc,name.subProperty;desc`.
//! A path is `id`, `type`, `createdAt`, `modifiedAt`, or an attribute name
//! (expanded with the request's @context) followed optionally by one of
//! `createdAt`, `modifiedAt`, `observedAt` (the attribute's own) or a
//! sub-attribute name, and optionally by a key path into a compound value in
//! brackets (`address[city]`, `address[geo.lat]`, clause 4.23.3 Example 4).
//! An attribute orders by its default instance (else its first), a
//! sub-attribute by its value.
//!
//! Values compare within their kind (numbers as numbers, strings by their
//! bytes, false before true) and kinds in the order boolean, number, string,
//! other (arrays and objects, by their JSON text). An entity without the
//! member comes after those with it, in either direction. Entities equal on
//! every member keep the order of their ids.
//!
//! A GeoProperty may be ordered by distance (clause 4.23.3): `location;dist-asc`
//! or `location;dist-desc`, from the reference geometry given beside
//! `orderBy` (`orderFrom`, or the `coordinates` and `geometry` of the
//! ordering parameters of a Query); the distance is that of its default
//! instance, in metres.

use std::cmp::Ordering;

use ngsi_model::{AttrValue, Attribute, Entity, Iri, NgsiError, NgsiResult, Terms, iri};
use serde_json::Value;

use crate::Ctx;

/// What a member orders by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderPath {
    /// The entity id.
    Id,
    /// The entity's (first) type, expanded.
    Type,
    /// The entity's createdAt.
    CreatedAt,
    /// The entity's modifiedAt.
    ModifiedAt,
    /// An attribute (expanded name) and what of it.
    Attr(Iri, AttrMember),
    /// The distance of a GeoProperty (expanded name) from the reference
    /// geometry.
    Distance(Iri),
}

/// What of an attribute a member orders by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrMember {
    /// Its value (a Relationship's object).
    Value,
    /// The value of a sub-attribute (expanded name).
    Sub(Iri),
    /// Its createdAt.
    CreatedAt,
    /// Its modifiedAt.
    ModifiedAt,
    /// Its observedAt.
    ObservedAt,
}

/// One member of `orderBy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    pub path: OrderPath,
    pub descending: bool,
    /// Keys into a compound value (`address[city]`: `["city"]`).
    pub keys: Vec<String>,
}

fn bad(msg: impl Into<String>) -> NgsiError {
    NgsiError::bad_data(msg.into())
}

/// Parses `orderBy`.
pub fn parse_order_by(text: &str, ctx: &Ctx) -> NgsiResult<Vec<OrderKey>> {
    let mut order = Vec::new();
    for member in text.split(',') {
        let member = member.trim();
        let (path, direction) = match member.split_once(';') {
            Some((p, d)) => (p.trim(), Some(d.trim())),
            None => (member, None),
        };
        let (descending, distance) = match direction {
            None | Some("asc") => (false, false),
            Some("desc") => (true, false),
            Some("dist-asc") => (false, true),
            Some("dist-desc") => (true, true),
            Some(d) => {
                return Err(bad(format!(
                    "orderBy direction {d:?} is none of asc, desc, dist-asc, dist-desc"
                )));
            }
        };
        if path.is_empty() {
            return Err(bad("orderBy has an empty member"));
        }
        let (path, keys) = match path.split_once('[') {
            None => (path, Vec::new()),
            Some((head, tail)) => {
                let inner = tail.strip_suffix(']').filter(|k| !k.contains(['[', ']']));
                let Some(inner) = inner else {
                    return Err(bad(format!(
                        "orderBy member {path:?}: a key path is written attribute[key] or attribute[key.key]"
                    )));
                };
                let keys: Vec<String> = inner.split('.').map(str::to_string).collect();
                if keys.iter().any(|k| k.is_empty()) {
                    return Err(bad(format!("orderBy member {path:?} has an empty key")));
                }
                (head, keys)
            }
        };
        let mut parts = path.split('.');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        if parts.next().is_some() {
            return Err(bad(format!(
                "orderBy member {path:?} is deeper than attribute.member"
            )));
        }
        let check = |name: &str| -> NgsiResult<()> {
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || "<>\"'=()".contains(c))
            {
                Err(bad(format!("orderBy member {path:?} is not a valid name")))
            } else {
                Ok(())
            }
        };
        check(first)?;
        let path = match (first, second) {
            ("id", None) => OrderPath::Id,
            ("type", None) => OrderPath::Type,
            ("createdAt", None) => OrderPath::CreatedAt,
            ("modifiedAt", None) => OrderPath::ModifiedAt,
            ("id" | "type" | "createdAt" | "modifiedAt", Some(_)) => {
                return Err(bad(format!(
                    "orderBy member {path:?}: {first} has no members"
                )));
            }
            (attr, member) => {
                let name = iri(&ctx.expand(attr));
                let member = match member {
                    None => AttrMember::Value,
                    Some("createdAt") => AttrMember::CreatedAt,
                    Some("modifiedAt") => AttrMember::ModifiedAt,
                    Some("observedAt") => AttrMember::ObservedAt,
                    Some(sub) => {
                        check(sub)?;
                        AttrMember::Sub(iri(&ctx.expand(sub)))
                    }
                };
                OrderPath::Attr(name, member)
            }
        };
        if !keys.is_empty()
            && !matches!(
                path,
                OrderPath::Attr(_, AttrMember::Value | AttrMember::Sub(_))
            )
        {
            return Err(bad(format!(
                "orderBy member {member:?}: only a value has keys"
            )));
        }
        let path = match (distance, path) {
            (true, _) if !keys.is_empty() => {
                return Err(bad(format!(
                    "orderBy member {member:?}: only a GeoProperty orders by distance"
                )));
            }
            (false, path) => path,
            (true, OrderPath::Attr(name, AttrMember::Value)) => OrderPath::Distance(name),
            (true, _) => {
                return Err(bad(format!(
                    "orderBy member {member:?}: only a GeoProperty orders by distance"
                )));
            }
        };
        order.push(OrderKey {
            path,
            descending,
            keys,
        });
    }
    Ok(order)
}

/// A value to order by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Bool(bool),
    Number(f64),
    Text(String),
    /// Arrays and objects, by their JSON text.
    Other(String),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            Self::Bool(_) => 0,
            Self::Number(_) => 1,
            Self::Text(_) => 2,
            Self::Other(_) => 3,
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (Self::Number(a), Self::Number(b)) => a.total_cmp(b),
            (Self::Text(a), Self::Text(b)) | (Self::Other(a), Self::Other(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn of_json(v: &Value) -> Option<Self> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.as_f64()?),
            Value::String(s) => Self::Text(s.clone()),
            other => Self::Other(other.to_string()),
        })
    }
}

/// The value of `a` to order by; with `keys`, the member they name in a
/// compound Property value.
fn value_at(a: &Attribute, keys: &[String]) -> Option<SortValue> {
    if keys.is_empty() {
        return value_of(a);
    }
    let (AttrValue::Property(v) | AttrValue::JsonProperty(v)) = &a.value else {
        return None;
    };
    let mut at = v;
    for k in keys {
        at = at.as_object()?.get(k)?;
    }
    SortValue::of_json(at)
}

fn value_of(a: &Attribute) -> Option<SortValue> {
    match &a.value {
        AttrValue::Property(v)
        | AttrValue::GeoProperty(v)
        | AttrValue::JsonProperty(v)
        | AttrValue::VocabProperty(v) => SortValue::of_json(v),
        AttrValue::Relationship { object, .. } => SortValue::of_json(object),
        AttrValue::LanguageProperty(m) => {
            Some(SortValue::Other(Value::Object(m.clone()).to_string()))
        }
        AttrValue::ListProperty(items) | AttrValue::ListRelationship { objects: items, .. } => {
            Some(SortValue::Other(Value::Array(items.clone()).to_string()))
        }
    }
}

/// Whether `keys` order by a distance, so that a reference geometry is needed.
pub fn needs_reference(keys: &[OrderKey]) -> bool {
    keys.iter()
        .any(|k| matches!(k.path, OrderPath::Distance(_)))
}

/// The values of `keys` for `e`; `from` is the reference geometry of the
/// distance members.
pub fn sort_values(
    keys: &[OrderKey],
    e: &Entity,
    from: Option<&ngsi_geo::Geometry>,
) -> Vec<Option<SortValue>> {
    keys.iter()
        .map(|k| match &k.path {
            OrderPath::Distance(name) => {
                let instances = e.attr(name)?;
                let a = instances
                    .iter()
                    .find(|i| i.dataset_id.is_none())
                    .or_else(|| instances.first())?;
                let AttrValue::GeoProperty(v) = &a.value else {
                    return None;
                };
                let geometry = ngsi_geo::parse_geojson(v).ok()?;
                from.map(|f| SortValue::Number(ngsi_geo::distance_m(&geometry, f)))
            }
            OrderPath::Id => Some(SortValue::Text(e.id.to_string())),
            OrderPath::Type => e.types.first().map(|t| SortValue::Text(t.to_string())),
            OrderPath::CreatedAt => Some(SortValue::Number(e.created_at as f64)),
            OrderPath::ModifiedAt => Some(SortValue::Number(e.modified_at as f64)),
            OrderPath::Attr(name, member) => {
                let instances = e.attr(name)?;
                let a = instances
                    .iter()
                    .find(|i| i.dataset_id.is_none())
                    .or_else(|| instances.first())?;
                match member {
                    AttrMember::Value => value_at(a, &k.keys),
                    AttrMember::Sub(sub) => a
                        .sub
                        .iter()
                        .find(|(n, _)| ngsi_model::entity::same_iri(n, sub))
                        .and_then(|(_, s)| value_at(s, &k.keys)),
                    AttrMember::CreatedAt => Some(SortValue::Number(a.created_at as f64)),
                    AttrMember::ModifiedAt => Some(SortValue::Number(a.modified_at as f64)),
                    AttrMember::ObservedAt => a
                        .observed_at
                        .as_deref()
                        .and_then(ngsi_model::time::parse_datetime)
                        .map(|t| SortValue::Number(t as f64)),
                }
            }
        })
        .collect()
}

/// Compares two entities' values of `keys` (see the module documentation).
pub fn compare(keys: &[OrderKey], a: &[Option<SortValue>], b: &[Option<SortValue>]) -> Ordering {
    for (k, (x, y)) in keys.iter().zip(a.iter().zip(b)) {
        let ord = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = x.cmp(y);
                if k.descending { o.reverse() } else { o }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx::core()
    }

    #[test]
    fn members_paths_and_directions_parse() {
        let keys = parse_order_by("type;asc,name.subProperty;desc,name;asc,id", &ctx()).unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(
            keys[0],
            OrderKey {
                path: OrderPath::Type,
                descending: false,
                keys: Vec::new(),
            }
        );
        assert!(keys[1].descending);
        assert!(
            matches!(&keys[1].path, OrderPath::Attr(n, AttrMember::Sub(s))
            if n.ends_with("/name") && s.ends_with("/subProperty"))
        );
        assert!(matches!(
            &keys[2].path,
            OrderPath::Attr(_, AttrMember::Value)
        ));
        assert_eq!(keys[3].path, OrderPath::Id);
        let keys = parse_order_by("name.createdAt,createdAt;desc", &ctx()).unwrap();
        assert!(matches!(
            &keys[0].path,
            OrderPath::Attr(_, AttrMember::CreatedAt)
        ));
        assert_eq!(
            keys[1],
            OrderKey {
                path: OrderPath::CreatedAt,
                descending: true,
                keys: Vec::new(),
            }
        );
    }

    #[test]
    fn malformed_members_are_bad_data() {
        for text in [
            "",
            "name;up",
            "a.b.c",
            "id.x",
            "name,",
            ";desc",
            "na me",
            "a[",
            "a[]",
            "a[b]c",
            "a[b..c]",
            "a[b][c]",
            "id[x]",
            "a.createdAt[x]",
            "location[x];dist-asc",
        ] {
            assert!(parse_order_by(text, &ctx()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn key_paths_name_members_of_compound_values() {
        let keys = parse_order_by("address[city];desc,a.b[geo.lat]", &ctx()).unwrap();
        assert_eq!(keys[0].keys, ["city"]);
        assert!(keys[0].descending);
        assert!(matches!(
            &keys[0].path,
            OrderPath::Attr(_, AttrMember::Value)
        ));
        assert_eq!(keys[1].keys, ["geo", "lat"]);
        assert!(matches!(
            &keys[1].path,
            OrderPath::Attr(_, AttrMember::Sub(_))
        ));
        let city = |c: &str| Attribute::new(AttrValue::Property(serde_json::json!({"city": c})));
        let [x, y] = [city("Berlin"), city("Zagreb")].map(|a| value_at(&a, &keys[0].keys));
        assert_eq!(x, Some(SortValue::Text("Berlin".into())));
        assert_eq!(y, Some(SortValue::Text("Zagreb".into())));
        assert_eq!(value_at(&city("x"), &["town".to_string()]), None);
    }

    proptest::proptest! {
        /// No orderBy text panics the parser.
        #[test]
        fn any_text_parses_or_is_bad_data(text in "\\PC{0,40}") {
            let _ = parse_order_by(&text, &ctx());
        }

        /// Members built from the grammar parse into as many keys, with
        /// their directions.
        #[test]
        fn grammar_members_parse(
            members in proptest::collection::vec(
                (
                    "(id|type|createdAt|modifiedAt|[a-z][a-zA-Z0-9]{0,8}(\\.(createdAt|observedAt|[a-z][a-zA-Z0-9]{0,6}))?)",
                    proptest::option::of(proptest::bool::ANY),
                ),
                1..5,
            )
        ) {
            let text = members
                .iter()
                .map(|(path, dir)| match dir {
                    None => path.clone(),
                    Some(true) => format!("{path};desc"),
                    Some(false) => format!("{path};asc"),
                })
                .collect::<Vec<_>>()
                .join(",");
            let keys = parse_order_by(&text, &ctx());
            // A path like id.x is refused; every other member parses.
            let entity_member_with_sub = members.iter().any(|(p, _)| {
                p.split_once('.').is_some_and(|(head, _)| {
                    matches!(head, "id" | "type" | "createdAt" | "modifiedAt")
                })
            });
            proptest::prop_assert_eq!(keys.is_ok(), !entity_member_with_sub, "{}", text);
            if let Ok(keys) = keys {
                proptest::prop_assert_eq!(keys.len(), members.len());
                for (k, (_, dir)) in keys.iter().zip(&members) {
                    proptest::prop_assert_eq!(k.descending, *dir == Some(true));
                }
            }
        }
    }

    #[test]
    fn missing_values_come_last_in_both_directions() {
        let asc = [OrderKey {
            path: OrderPath::Id,
            descending: false,
            keys: Vec::new(),
        }];
        let desc = [OrderKey {
            path: OrderPath::Id,
            descending: true,
            keys: Vec::new(),
        }];
        let one = [Some(SortValue::Number(1.0))];
        let two = [Some(SortValue::Number(2.0))];
        let none = [None];
        assert_eq!(compare(&asc, &one, &two), Ordering::Less);
        assert_eq!(compare(&desc, &one, &two), Ordering::Greater);
        assert_eq!(compare(&asc, &none, &one), Ordering::Greater);
        assert_eq!(compare(&desc, &none, &one), Ordering::Greater);
        // Kinds: booleans, numbers, strings, others.
        let t = [Some(SortValue::Text("a".into()))];
        let b = [Some(SortValue::Bool(true))];
        assert_eq!(compare(&asc, &b, &one), Ordering::Less);
        assert_eq!(compare(&asc, &one, &t), Ordering::Less);
    }
}
