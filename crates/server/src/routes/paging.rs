//! Paging links of query answers (clause 5.5.9): the `Link` header's
//! `rel="prev"` and `rel="next"` pointers.
//!
//! A pointer "shall contain all the parameters needed" to fetch its page
//! "without further interactions" (5.5.9.1). For GET queries that is the
//! request's own parameters with a new offset. For a POST query the body
//! is written as the equivalent GET parameters when it can be, so the link
//! can be followed as it is; a body that has no GET form (entity selectors
//! of different types with ids or patterns, ordering by distance, an entity
//! map request) gets links to the POST resource, to which the same body is
//! sent again with the link's offset.

use broker::EntityQuery;
use percent_encoding::utf8_percent_encode;
use serde_json::{Map, Value};

/// The `prev` and `next` links of a page of `returned` elements (of
/// `total` when counted) of a query at `path` with `params`.
pub(crate) fn paging_links(
    path: &str,
    params: &[(String, String)],
    query: &EntityQuery,
    total: Option<usize>,
    returned: usize,
) -> Vec<String> {
    let mut links = Vec::new();
    if query.limit == 0 {
        return links;
    }
    let mut base: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "offset" && k != "limit")
        .cloned()
        .collect();
    base.push(("limit".into(), query.limit.to_string()));
    let make = |offset: usize| {
        let mut p = base.clone();
        p.push(("offset".into(), offset.to_string()));
        p.sort();
        let qs: Vec<String> = p
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        format!("<{path}?{}>", qs.join("&"))
    };
    if query.offset > 0 {
        links.push(format!(
            "{}; rel=\"prev\";type=\"application/json\"",
            make(query.offset.saturating_sub(query.limit))
        ));
    }
    let more = match total {
        Some(t) => query.offset + returned < t,
        None => returned == query.limit,
    };
    if more {
        links.push(format!(
            "{}; rel=\"next\";type=\"application/json\"",
            make(query.offset + query.limit)
        ));
    }
    links
}

/// Which query a POST query's paging links point at: `get_path` with the
/// body written as parameters beside the URL's own, or else `post_path`
/// with the URL's parameters.
pub(crate) fn post_query_target<'a>(
    get_path: &'a str,
    post_path: &'a str,
    params: &[(String, String)],
    body: &Value,
    temporal: bool,
) -> (&'a str, Vec<(String, String)>) {
    let Some((from_body, aggregated)) = body_as_params(body, temporal) else {
        return (post_path, params.to_vec());
    };
    // A member of the body wins over the same URL parameter (lang).
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !from_body.iter().any(|(b, _)| b == k))
        .cloned()
        .collect();
    out.extend(from_body);
    // Aggregation methods in the body ask for the aggregated representation
    // unless the URL names one.
    let named = |(k, v): &(String, String)| {
        k == "format"
            || k == "options"
                && v.split(',')
                    .any(|o| broker::is_temporal_representation(o.trim()))
    };
    if aggregated && !out.iter().any(named) {
        match out.iter_mut().find(|(k, _)| k == "options") {
            Some((_, v)) => v.push_str(",aggregatedValues"),
            None => out.push(("options".into(), "aggregatedValues".into())),
        }
    }
    (get_path, out)
}

/// A Query body (clause 5.2.23) as GET query parameters, or `None` when
/// some member has no parameter form; with whether it names aggregation
/// methods.
fn body_as_params(body: &Value, temporal: bool) -> Option<(Vec<(String, String)>, bool)> {
    let Value::Object(m) = body else {
        return None;
    };
    let mut out = Vec::new();
    let mut push = |k: &str, v: String| out.push((k.to_string(), v));
    let mut aggregated = false;
    for (k, v) in m {
        match k.as_str() {
            "type" | "@context" => {}
            "attrs" | "pick" | "omit" | "datasetId" | "containedBy" | "expandValues"
            | "jsonKeys" => push(k, names(v)?),
            "q" | "scopeQ" | "csf" | "lang" | "join" => push(k, v.as_str()?.to_string()),
            "joinLevel" => push(k, v.as_u64()?.to_string()),
            "splitEntities" if !temporal => push(k, v.as_bool()?.to_string()),
            "geoQ" => {
                for (g, gv) in v.as_object()? {
                    match g.as_str() {
                        "geometry" | "georel" | "geoproperty" => {
                            push(g, gv.as_str()?.to_string());
                        }
                        "coordinates" => push(g, coordinates(gv)?),
                        _ => return None,
                    }
                }
            }
            "ordering" => {
                for (o, ov) in v.as_object()? {
                    match o.as_str() {
                        "orderBy" => push("orderBy", names(ov)?),
                        _ => return None,
                    }
                }
            }
            "entities" => selectors(v.as_array()?, &mut push)?,
            "temporalQ" if temporal => {
                for (t, tv) in v.as_object()? {
                    match t.as_str() {
                        "timerel" | "timeAt" | "endTimeAt" | "timeproperty" => {
                            push(t, tv.as_str()?.to_string());
                        }
                        "lastN" => push(t, scalar(tv)?),
                        _ => aggregated |= aggregation(t, tv, &mut push)?,
                    }
                }
            }
            "aggrParams" if temporal => {
                for (a, av) in v.as_object()? {
                    aggregated |= aggregation(a, av, &mut push)?;
                }
            }
            _ => return None,
        }
    }
    Some((out, aggregated))
}

/// A member of a body's aggregation (clause 5.2.44); whether it names the
/// methods, which ask for the aggregated representation.
fn aggregation(k: &str, v: &Value, push: &mut impl FnMut(&str, String)) -> Option<bool> {
    match k {
        "aggrPeriodDuration" => {
            push(k, v.as_str()?.to_string());
            Some(false)
        }
        "aggrMethods" => {
            push(k, names(v)?);
            Some(true)
        }
        _ => None,
    }
}

/// The entity selectors (clause 5.2.33) as `type` with `id` or `idPattern`:
/// one selector; selectors by type only (`type=A,B`); or selectors by ids
/// of one type. Others cannot be written as parameters.
fn selectors(list: &[Value], push: &mut impl FnMut(&str, String)) -> Option<()> {
    let sels: Vec<&Map<String, Value>> =
        list.iter().map(Value::as_object).collect::<Option<_>>()?;
    match sels.as_slice() {
        [] => None,
        [one] => {
            push("type", ty(one)?.to_string());
            if let Some(ids) = one.get("id") {
                push("id", id_list(ids)?);
            } else if let Some(p) = one.get("idPattern") {
                push("idPattern", p.as_str()?.to_string());
            }
            if one
                .keys()
                .any(|k| !["type", "id", "idPattern"].contains(&k.as_str()))
            {
                return None;
            }
            Some(())
        }
        many if many.iter().all(|s| s.len() == 1) => {
            // Types alone: any of them. An expression is kept whole in
            // parentheses.
            let types: Vec<String> = many
                .iter()
                .map(|s| {
                    let t = ty(s)?;
                    Some(if t.contains([',', ';', '|', '(', ')']) {
                        format!("({t})")
                    } else {
                        t.to_string()
                    })
                })
                .collect::<Option<_>>()?;
            push("type", types.join(","));
            Some(())
        }
        [first, ..] => {
            // Ids of one type.
            let t = ty(first)?;
            let mut ids = Vec::new();
            for s in &sels {
                if ty(s)? != t || s.len() != 2 {
                    return None;
                }
                ids.push(id_list(s.get("id")?)?);
            }
            push("type", t.to_string());
            push("id", ids.join(","));
            Some(())
        }
    }
}

/// The type of an entity selector.
fn ty(s: &Map<String, Value>) -> Option<&str> {
    s.get("type").and_then(Value::as_str)
}

/// Entity ids as the comma-separated list of the `id` parameter; an id
/// holding a comma has no such form.
fn id_list(v: &Value) -> Option<String> {
    let list = names(v)?;
    let count = match v {
        Value::Array(a) => a.len(),
        _ => 1,
    };
    (list.split(',').count() == count).then_some(list)
}

/// A name or an array of names as a comma-separated list.
fn names(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(
            a.iter()
                .map(Value::as_str)
                .collect::<Option<Vec<_>>>()?
                .join(","),
        ),
        _ => None,
    }
}

/// Coordinates as the JSON text the `coordinates` parameter holds.
fn coordinates(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(_) => Some(v.to_string()),
        _ => None,
    }
}

/// A string or a number as parameter text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(body: Value, url: &[(&str, &str)], temporal: bool) -> (String, Vec<String>) {
        let params: Vec<(String, String)> = url
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (path, out) = post_query_target("/get", "/post", &params, &body, temporal);
        let mut out: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.sort();
        (path.to_string(), out)
    }

    #[test]
    fn a_body_with_a_get_form_becomes_parameters() {
        let body = json!({
            "type": "Query",
            "entities": [{"type": "A", "idPattern": "urn:a:.*"}],
            "attrs": ["x", "y"],
            "geoQ": {"geometry": "Point", "coordinates": [1, 2], "georel": "near;maxDistance==5"},
            "lang": "fr",
            "ordering": {"orderBy": ["x"]},
            "splitEntities": true,
        });
        let (path, params) = target(body, &[("limit", "2"), ("lang", "en")], false);
        assert_eq!(path, "/get");
        assert_eq!(
            params,
            [
                "attrs=x,y",
                "coordinates=[1,2]",
                "geometry=Point",
                "georel=near;maxDistance==5",
                "idPattern=urn:a:.*",
                "lang=fr",
                "limit=2",
                "orderBy=x",
                "splitEntities=true",
                "type=A",
            ]
        );
        let ids = json!({"type": "Query", "entities": [
            {"type": "A", "id": "urn:1"}, {"type": "A", "id": ["urn:2", "urn:3"]}
        ]});
        assert_eq!(
            target(ids, &[], false).1,
            ["id=urn:1,urn:2,urn:3", "type=A"]
        );
        let types = json!({"type": "Query", "entities": [{"type": "A"}, {"type": "B;C"}]});
        assert_eq!(target(types, &[], false).1, ["type=A,(B;C)"]);
    }

    #[test]
    fn temporal_members_and_aggregation_become_parameters() {
        let body = json!({
            "type": "Query",
            "entities": [{"type": "A"}],
            "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z", "lastN": 3},
            "aggrParams": {"aggrMethods": ["sum", "max"], "aggrPeriodDuration": "PT1H"},
        });
        let (path, params) = target(body.clone(), &[("options", "sysAttrs")], true);
        assert_eq!(path, "/get");
        assert_eq!(
            params,
            [
                "aggrMethods=sum,max",
                "aggrPeriodDuration=PT1H",
                "lastN=3",
                "options=sysAttrs,aggregatedValues",
                "timeAt=2020-01-01T00:00:00Z",
                "timerel=after",
                "type=A",
            ]
        );
        // A representation named in the URL stays.
        let (_, params) = target(body.clone(), &[("options", "temporalValues")], true);
        assert!(params.contains(&"options=temporalValues".to_string()));
        // temporalQ is no member of an entity query.
        assert_eq!(target(body, &[], false).0, "/post");
    }

    #[test]
    fn a_body_without_a_get_form_is_sent_again() {
        for body in [
            json!({"type": "Query", "entities": [{"type": "A", "id": "urn:1"}, {"type": "B"}]}),
            json!({"type": "Query", "entities": [{"type": "A", "id": "urn:1"}, {"type": "B", "id": "urn:2"}]}),
            json!({"type": "Query", "entities": [{"type": "A"}], "entityMap": true}),
            json!({"type": "Query", "entities": [{"type": "A", "id": "urn:x:1,urn:x:2"}]}),
            json!({"type": "Query", "ordering": {"orderBy": "location;dist-asc", "coordinates": [1, 2]}}),
        ] {
            let (path, params) = target(body.clone(), &[("limit", "5")], false);
            assert_eq!(
                (path.as_str(), params),
                ("/post", vec!["limit=5".to_string()]),
                "{body}"
            );
        }
    }
}
