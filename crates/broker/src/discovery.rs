//! Type and attribute discovery (clauses 5.7.5 to 5.7.10).

use std::collections::{BTreeMap, BTreeSet};

use ngsi_model::{Iri, NgsiError, NgsiResult, Terms, iri};
use serde_json::{Value, json};

use crate::{Broker, Ctx};

/// The attribute kinds, by their NGSI-LD names.
pub(crate) const ATTRIBUTE_KINDS: [&str; 8] = ngsi_model::AttrValue::KIND_NAMES;

#[derive(Default)]
pub(crate) struct TypeInfo {
    pub(crate) count: usize,
    pub(crate) attrs: BTreeMap<Iri, BTreeSet<&'static str>>,
}

#[derive(Default)]
pub(crate) struct AttrInfo {
    /// Instances of the attribute: `attributeCount` (clause 5.2.28).
    pub(crate) count: usize,
    pub(crate) kinds: BTreeSet<&'static str>,
    pub(crate) types: BTreeSet<Iri>,
}

fn unique_id(prefix: &str) -> String {
    format!("urn:ngsi-ld:{prefix}:{:x}", ngsi_model::time::now_micros())
}

impl Broker {
    // The store keeps these counts up to date on every write, so discovery
    // never scans the entities.
    pub(crate) fn type_infos(&self, tenant: &str) -> BTreeMap<Iri, TypeInfo> {
        self.store
            .type_infos(tenant)
            .into_iter()
            .map(|t| {
                let attrs = t
                    .attrs
                    .into_iter()
                    .map(|(a, kinds)| (a, kinds.into_iter().collect()))
                    .collect();
                (
                    t.name,
                    TypeInfo {
                        count: t.entities,
                        attrs,
                    },
                )
            })
            .collect()
    }

    pub(crate) fn attr_infos(&self, tenant: &str) -> BTreeMap<Iri, AttrInfo> {
        self.store
            .attr_infos(tenant)
            .into_iter()
            .map(|a| {
                let info = AttrInfo {
                    count: a.instances,
                    kinds: a.kinds.into_iter().collect(),
                    types: a.types.into_iter().collect(),
                };
                (a.name, info)
            })
            .collect()
    }

    /// Retrieve Available Entity Types (clause 5.7.5) and their details
    /// (clause 5.7.6).
    pub fn entity_types(&self, tenant: &str, ctx: &Ctx, details: bool) -> NgsiResult<Value> {
        self.check_tenant(tenant)?;
        Ok(render_types(&self.type_infos(tenant), ctx, details))
    }

    /// Retrieve Entity Type Information (clause 5.7.7).
    pub fn entity_type_info(&self, tenant: &str, ctx: &Ctx, type_name: &str) -> NgsiResult<Value> {
        self.check_tenant(tenant)?;
        let t = iri(&ctx.expand(type_name));
        let infos = self.type_infos(tenant);
        let info = infos
            .get(&t)
            .ok_or_else(|| NgsiError::not_found(format!("no entity has type {type_name}")))?;
        Ok(render_type_info(&t, info, ctx))
    }

    /// Retrieve Available Attributes (clause 5.7.8) and their details
    /// (clause 5.7.9).
    pub fn attributes(&self, tenant: &str, ctx: &Ctx, details: bool) -> NgsiResult<Value> {
        self.check_tenant(tenant)?;
        Ok(render_attributes(&self.attr_infos(tenant), ctx, details))
    }

    /// Retrieve Attribute Information (clause 5.7.10).
    pub fn attribute_info(&self, tenant: &str, ctx: &Ctx, attr: &str) -> NgsiResult<Value> {
        self.check_tenant(tenant)?;
        let a = iri(&ctx.expand(attr));
        let infos = self.attr_infos(tenant);
        let info = infos
            .get(&a)
            .ok_or_else(|| NgsiError::not_found(format!("no entity has attribute {attr}")))?;
        Ok(render_attribute_info(&a, info, ctx))
    }
}

/// The answer of Retrieve Available Entity Types, with or without details.
pub(crate) fn render_types(infos: &BTreeMap<Iri, TypeInfo>, ctx: &Ctx, details: bool) -> Value {
    if details {
        return Value::Array(
            infos
                .iter()
                .map(|(t, info)| {
                    json!({
                        "id": &**t,
                        "type": "EntityType",
                        "typeName": ctx.compact(t),
                        "attributeNames": info.attrs.keys().map(|a| ctx.compact(a).into_owned()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        );
    }
    json!({
        "id": unique_id("EntityTypeList"),
        "type": "EntityTypeList",
        "typeList": infos.keys().map(|t| ctx.compact(t).into_owned()).collect::<Vec<_>>(),
    })
}

/// The answer of Retrieve Entity Type Information.
pub(crate) fn render_type_info(t: &Iri, info: &TypeInfo, ctx: &Ctx) -> Value {
    json!({
        "id": &**t,
        "type": "EntityTypeInfo",
        "typeName": ctx.compact(t),
        "entityCount": info.count,
        "attributeDetails": info.attrs.iter().map(|(a, kinds)| json!({
            "id": &**a,
            "type": "Attribute",
            "attributeName": ctx.compact(a),
            "attributeTypes": kinds.iter().collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The answer of Retrieve Available Attributes, with or without details.
pub(crate) fn render_attributes(
    infos: &BTreeMap<Iri, AttrInfo>,
    ctx: &Ctx,
    details: bool,
) -> Value {
    if details {
        return Value::Array(
            infos
                .iter()
                .map(|(a, info)| {
                    json!({
                        "id": &**a,
                        "type": "Attribute",
                        "attributeName": ctx.compact(a),
                        "typeNames": info.types.iter().map(|t| ctx.compact(t).into_owned()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        );
    }
    json!({
        "id": unique_id("AttributeList"),
        "type": "AttributeList",
        "attributeList": infos.keys().map(|a| ctx.compact(a).into_owned()).collect::<Vec<_>>(),
    })
}

/// The answer of Retrieve Attribute Information.
pub(crate) fn render_attribute_info(a: &Iri, info: &AttrInfo, ctx: &Ctx) -> Value {
    json!({
        "id": &**a,
        "type": "Attribute",
        "attributeName": ctx.compact(a),
        "attributeCount": info.count,
        "attributeTypes": info.kinds.iter().collect::<Vec<_>>(),
        "typeNames": info.types.iter().map(|t| ctx.compact(t).into_owned()).collect::<Vec<_>>(),
    })
}
