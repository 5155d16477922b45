//! Type and attribute discovery (clauses 5.7.5 to 5.7.10) with the
//! registered context sources: each source that offers the operation is
//! asked the same question with the client's @context, and its names,
//! expanded with that context, join the local ones, within the types and
//! attributes it registered. Entity and attribute counts are added up (an
//! entity held in two places counts twice).

use std::collections::{BTreeMap, BTreeSet};

use ngsi_model::{Iri, NgsiError, NgsiResult, Terms, iri};
use serde_json::Value;

use super::{Failure, Forwarder, Origin, Prepared};
use crate::discovery::{ATTRIBUTE_KINDS, AttrInfo, TypeInfo};
use crate::registrations::RegistrationQuery;
use crate::{Broker, Ctx};

impl Forwarder {
    /// A GET of `/ngsi-ld/v1/{segments}` at the source of `r`, with
    /// `details=true` when asked.
    fn discovery_request(
        &self,
        r: &crate::registrations::Registration,
        segments: &[&str],
        details: bool,
        origin: &Origin<'_>,
        ctx: &Ctx,
        alias: &str,
    ) -> Result<Prepared, Failure> {
        let params = if details {
            vec!["details=true".to_string()]
        } else {
            Vec::new()
        };
        self.request(r, segments, params, None, origin, ctx, alias)
    }

    /// The JSON answer of a discovery request; nothing for a 404 (the
    /// source has no such type or attribute).
    async fn fetch(self, p: Prepared) -> Result<Vec<Value>, Failure> {
        let (status, body) = self.send_once(p, super::MAX_BODY).await?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(|v| vec![v])
                .map_err(|e| Failure::Invalid(e.to_string())),
            404 => Ok(Vec::new()),
            s => Err(Failure::Status(s)),
        }
    }
}

fn invalid(what: &str) -> Failure {
    Failure::Invalid(format!("not {what}"))
}

/// The strings of an array member.
fn strings<'a>(v: Option<&'a Value>, what: &str) -> Result<Vec<&'a str>, Failure> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| invalid(what)))
            .collect(),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(_) => Err(invalid(what)),
    }
}

/// A name a source gave, compacted with the request's context, as an IRI.
fn expand(ctx: &Ctx, name: &str) -> Iri {
    iri(&ctx.expand(name))
}

/// The attribute kinds named in `v`, as the static names the local
/// counters use (unknown ones are dropped).
fn kinds(v: Option<&Value>) -> Result<BTreeSet<&'static str>, Failure> {
    Ok(strings(v, "attributeTypes")?
        .into_iter()
        .filter_map(|k| ATTRIBUTE_KINDS.iter().find(|x| **x == k).copied())
        .collect())
}

/// Where the names are in the answers to a list question.
struct ListShape {
    /// The resource.
    path: &'static str,
    /// The member of the list form.
    list: &'static str,
    /// The name member of each item of the details form, and what that
    /// item is.
    name: &'static str,
    details_what: &'static str,
    /// The names listed beside it in the details form.
    related: &'static str,
}

const TYPES: ListShape = ListShape {
    path: "types",
    list: "typeList",
    name: "typeName",
    details_what: "an array of EntityType",
    related: "attributeNames",
};

const ATTRIBUTES: ListShape = ListShape {
    path: "attributes",
    list: "attributeList",
    name: "attributeName",
    details_what: "an array of Attribute",
    related: "typeNames",
};

impl Broker {
    /// The sources asked for discovery operation `op`, selected by
    /// `selection`.
    fn discovery_sources(
        &self,
        tenant: &str,
        op: &str,
        selection: RegistrationQuery,
        origin: &Origin<'_>,
    ) -> Vec<std::sync::Arc<crate::registrations::Registration>> {
        if origin.local {
            return Vec::new();
        }
        self.registrations.sources(
            tenant,
            op,
            &[selection],
            None,
            origin,
            &self.source_alias(tenant),
        )
    }

    /// The local type counters, none for a tenant only the sources know.
    fn local_types(&self, tenant: &str) -> BTreeMap<Iri, TypeInfo> {
        if self.check_tenant(tenant).is_ok() {
            self.type_infos(tenant)
        } else {
            BTreeMap::new()
        }
    }

    fn local_attrs(&self, tenant: &str) -> BTreeMap<Iri, AttrInfo> {
        if self.check_tenant(tenant).is_ok() {
            self.attr_infos(tenant)
        } else {
            BTreeMap::new()
        }
    }

    /// The sources' answers to a list question (`GET /types` or `GET
    /// /attributes`, with or without details): each name, with the names
    /// the details list beside it.
    async fn ask_names(
        &self,
        tenant: &str,
        ctx: &Ctx,
        origin: &Origin<'_>,
        sources: Vec<std::sync::Arc<crate::registrations::Registration>>,
        details: bool,
        shape: &ListShape,
    ) -> super::Answers<Vec<(Iri, Vec<Iri>)>> {
        let alias = self.source_alias(tenant);
        self.ask_sources(
            tenant,
            sources,
            |f, r| f.discovery_request(r, &[shape.path], details, origin, ctx, &alias),
            Forwarder::fetch,
            |docs| {
                let mut found: Vec<(Iri, Vec<Iri>)> = Vec::new();
                for doc in &docs {
                    if details {
                        let Value::Array(items) = doc else {
                            return Err(invalid(shape.details_what));
                        };
                        for item in items {
                            let name = item
                                .get(shape.name)
                                .and_then(Value::as_str)
                                .ok_or_else(|| invalid(shape.details_what))?;
                            let related = strings(item.get(shape.related), shape.related)?;
                            found.push((
                                expand(ctx, name),
                                related.iter().map(|a| expand(ctx, a)).collect(),
                            ));
                        }
                    } else {
                        for name in strings(doc.get(shape.list), shape.list)? {
                            found.push((expand(ctx, name), Vec::new()));
                        }
                    }
                }
                Ok(found)
            },
        )
        .await
    }

    /// Retrieve Available Entity Types (clauses 5.7.5, 5.7.6) with the
    /// sources that offer retrieveEntityTypes / retrieveEntityTypeDetails.
    pub async fn entity_types_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        details: bool,
        origin: &Origin<'_>,
    ) -> NgsiResult<(Value, Vec<String>)> {
        let op = if details {
            "retrieveEntityTypeDetails"
        } else {
            "retrieveEntityTypes"
        };
        let sources = self.discovery_sources(tenant, op, RegistrationQuery::default(), origin);
        if sources.is_empty() {
            return Ok((self.entity_types(tenant, ctx, details)?, Vec::new()));
        }
        let answers = self
            .ask_names(tenant, ctx, origin, sources, details, &TYPES)
            .await;
        let mut infos = self.local_types(tenant);
        // What a source says is taken within what it registered.
        for (r, found) in answers.answers {
            for (t, attrs) in found.into_iter().filter(|(t, _)| r.covers_type(t)) {
                let info = infos.entry(t).or_default();
                for a in attrs.into_iter().filter(|a| r.covers_attr(a)) {
                    info.attrs.entry(a).or_default();
                }
            }
        }
        Ok((
            crate::discovery::render_types(&infos, ctx, details),
            answers.warnings,
        ))
    }

    /// Retrieve Entity Type Information (clause 5.7.7) with the sources
    /// that offer retrieveEntityTypeInfo and may hold the type.
    pub async fn entity_type_info_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        type_name: &str,
        origin: &Origin<'_>,
    ) -> NgsiResult<(Value, Vec<String>)> {
        let t = expand(ctx, type_name);
        let selection = RegistrationQuery {
            types: Some(ngsi_query::TypeExpr::Type(t.to_string())),
            ..Default::default()
        };
        let sources = self.discovery_sources(tenant, "retrieveEntityTypeInfo", selection, origin);
        if sources.is_empty() {
            return Ok((self.entity_type_info(tenant, ctx, type_name)?, Vec::new()));
        }
        let alias = self.source_alias(tenant);
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| f.discovery_request(r, &["types", type_name], false, origin, ctx, &alias),
                Forwarder::fetch,
                |docs| {
                    let mut found = Vec::new();
                    for doc in &docs {
                        let count = doc
                            .get("entityCount")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| invalid("an EntityTypeInfo"))?;
                        let mut attrs = Vec::new();
                        for a in doc
                            .get("attributeDetails")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let name = a
                                .get("attributeName")
                                .and_then(Value::as_str)
                                .ok_or_else(|| invalid("an Attribute"))?;
                            attrs.push((expand(ctx, name), kinds(a.get("attributeTypes"))?));
                        }
                        found.push((count as usize, attrs));
                    }
                    Ok(found)
                },
            )
            .await;
        let mut infos = self.local_types(tenant);
        for (r, found) in answers.answers {
            for (count, attrs) in found {
                let info = infos.entry(t.clone()).or_default();
                info.count = info.count.saturating_add(count);
                for (a, k) in attrs.into_iter().filter(|(a, _)| r.covers_attr(a)) {
                    info.attrs.entry(a).or_default().extend(k);
                }
            }
        }
        let info = infos
            .get(&t)
            .ok_or_else(|| NgsiError::not_found(format!("no entity has type {type_name}")))?;
        Ok((
            crate::discovery::render_type_info(&t, info, ctx),
            answers.warnings,
        ))
    }

    /// Retrieve Available Attributes (clauses 5.7.8, 5.7.9) with the
    /// sources that offer retrieveAttrTypes / retrieveAttrTypeDetails.
    pub async fn attributes_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        details: bool,
        origin: &Origin<'_>,
    ) -> NgsiResult<(Value, Vec<String>)> {
        let op = if details {
            "retrieveAttrTypeDetails"
        } else {
            "retrieveAttrTypes"
        };
        let sources = self.discovery_sources(tenant, op, RegistrationQuery::default(), origin);
        if sources.is_empty() {
            return Ok((self.attributes(tenant, ctx, details)?, Vec::new()));
        }
        let answers = self
            .ask_names(tenant, ctx, origin, sources, details, &ATTRIBUTES)
            .await;
        let mut infos = self.local_attrs(tenant);
        for (r, found) in answers.answers {
            for (a, types) in found.into_iter().filter(|(a, _)| r.covers_attr(a)) {
                infos
                    .entry(a)
                    .or_default()
                    .types
                    .extend(types.into_iter().filter(|t| r.covers_type(t)));
            }
        }
        Ok((
            crate::discovery::render_attributes(&infos, ctx, details),
            answers.warnings,
        ))
    }

    /// Retrieve Attribute Information (clause 5.7.10) with the sources that
    /// offer retrieveAttrTypeInfo and may hold the attribute.
    pub async fn attribute_info_distributed(
        &self,
        tenant: &str,
        ctx: &Ctx,
        attr: &str,
        origin: &Origin<'_>,
    ) -> NgsiResult<(Value, Vec<String>)> {
        let a = expand(ctx, attr);
        let selection = RegistrationQuery {
            attrs: Some(vec![a.clone()]),
            ..Default::default()
        };
        let sources = self.discovery_sources(tenant, "retrieveAttrTypeInfo", selection, origin);
        if sources.is_empty() {
            return Ok((self.attribute_info(tenant, ctx, attr)?, Vec::new()));
        }
        let alias = self.source_alias(tenant);
        let answers = self
            .ask_sources(
                tenant,
                sources,
                |f, r| f.discovery_request(r, &["attributes", attr], false, origin, ctx, &alias),
                Forwarder::fetch,
                |docs| {
                    let mut found = Vec::new();
                    for doc in &docs {
                        let count = doc
                            .get("attributeCount")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| invalid("an Attribute"))?;
                        let types = strings(doc.get("typeNames"), "typeNames")?
                            .iter()
                            .map(|t| expand(ctx, t))
                            .collect::<Vec<_>>();
                        found.push((count as usize, kinds(doc.get("attributeTypes"))?, types));
                    }
                    Ok(found)
                },
            )
            .await;
        let mut infos = self.local_attrs(tenant);
        for (r, found) in answers.answers {
            for (count, k, types) in found {
                let info = infos.entry(a.clone()).or_default();
                info.count = info.count.saturating_add(count);
                info.kinds.extend(k);
                info.types
                    .extend(types.into_iter().filter(|t| r.covers_type(t)));
            }
        }
        let info = infos
            .get(&a)
            .ok_or_else(|| NgsiError::not_found(format!("no entity has attribute {attr}")))?;
        Ok((
            crate::discovery::render_attribute_info(&a, info, ctx),
            answers.warnings,
        ))
    }
}
