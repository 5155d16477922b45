//! Batch operations (clauses 5.6.7 to 5.6.10 and 5.6.20): many entities in
//! one request, applied in array order in one store write, with a result per
//! entity.

use std::sync::Arc;

use ngsi_model::parse::{EntityRequirements, ParseLimits, parse_entity};
use ngsi_model::time::now_micros;
use ngsi_model::{Entity, ErrorKind, JsonDoc, NgsiError, NgsiResult, update};
use serde_json::Value;
use store::{Change, Next, Op};

use crate::registrations::{BatchFanout, EntityWrite, Origin, WriteKind};
use crate::{BodyKind, Broker, Ctx, not_found};

/// The result of a batch operation (BatchOperationResult, clause 5.2.16).
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Ids of the entities that succeeded.
    pub success: Vec<String>,
    /// Ids of the entities that did not, with the reason.
    pub errors: Vec<(String, NgsiError)>,
    /// Ids of the entities that did not exist before (create and upsert).
    pub created: Vec<String>,
    /// Parts that failed at a registered source (distributed batches): the
    /// entity's id, the ProblemDetails, the registration.
    pub remote_errors: Vec<(String, Value, Arc<str>)>,
    /// The `NGSILD-Warning`s of the sources that failed.
    pub warnings: Vec<String>,
}

impl BatchResult {
    /// The BatchOperationResult JSON body.
    pub fn to_json(&self) -> Value {
        let remote = self
            .remote_errors
            .iter()
            .map(|(id, problem, registration)| {
                serde_json::json!({
                    "entityId": id,
                    "error": problem,
                    "registrationId": &**registration,
                })
            });
        serde_json::json!({
            "success": self.success,
            "errors": self.errors.iter().map(|(id, e)| serde_json::json!({
                "entityId": id,
                "error": e.problem_details(),
            })).chain(remote).collect::<Vec<_>>(),
        })
    }

    /// Whether some entity failed (the API answers 207).
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty() || !self.remote_errors.is_empty()
    }
}

/// How Batch Upsert treats entities that exist (clause 5.6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertMode {
    /// Replace the whole entity (the default).
    Replace,
    /// Update: add and overwrite attributes, keep the others.
    Update,
}

/// What each batch operation does with one parsed entity.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Create,
    Upsert(UpsertMode),
    Update { no_overwrite: bool },
    Merge,
}

impl Kind {
    /// How the registrations split an entity of the batch: the write of
    /// one entity it is like, the operation's name (Table 4.20-1) and its
    /// path segment under `/entityOperations`.
    fn distributed(self) -> (WriteKind, &'static str, &'static str) {
        match self {
            Kind::Create => (WriteKind::Create, "createBatch", "create"),
            Kind::Upsert(_) => (WriteKind::Replace, "upsertBatch", "upsert"),
            Kind::Update { .. } => (WriteKind::AppendAttrs, "updateBatch", "update"),
            Kind::Merge => (WriteKind::Merge, "mergeBatch", "merge"),
        }
    }
}

fn entity_id_of<J: JsonDoc>(v: &J) -> String {
    v.get("id")
        .or_else(|| v.get("@id"))
        .and_then(J::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The items of a batch body: a non-empty array of entities (objects) or,
/// for Batch Delete, of entity ids (strings). Anything else is not the
/// request the operation defines, refused whole (clause 5.6.7.4).
fn batch_array<J: JsonDoc>(body: &J, of_ids: bool) -> NgsiResult<&[J]> {
    match body.as_array() {
        Some([]) => Err(NgsiError::bad_data("a batch needs at least one entity")),
        Some(items) if items.iter().any(J::is_null) => {
            Err(NgsiError::bad_data("a batch cannot contain null"))
        }
        Some(items) if of_ids && items.iter().any(|i| i.as_str().is_none()) => Err(
            NgsiError::bad_data("a batch delete is an array of entity ids (strings)"),
        ),
        Some(items) if !of_ids && !items.iter().all(J::is_object) => Err(NgsiError::bad_data(
            "a batch is an array of entities (JSON objects)",
        )),
        Some(items) => Ok(items),
        None => Err(NgsiError::bad_data("a batch must be a JSON array")),
    }
}

impl Broker {
    /// Batch Create.
    pub async fn batch_create<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        kind: BodyKind,
        link: Option<&str>,
        body: &J,
        origin: &Origin<'_>,
    ) -> NgsiResult<BatchResult> {
        self.batch(tenant, kind, link, body, Kind::Create, origin)
            .await
    }

    /// Batch Upsert.
    pub async fn batch_upsert<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        kind: BodyKind,
        link: Option<&str>,
        body: &J,
        mode: UpsertMode,
        origin: &Origin<'_>,
    ) -> NgsiResult<BatchResult> {
        self.batch(tenant, kind, link, body, Kind::Upsert(mode), origin)
            .await
    }

    /// Batch Update.
    pub async fn batch_update<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        kind: BodyKind,
        link: Option<&str>,
        body: &J,
        no_overwrite: bool,
        origin: &Origin<'_>,
    ) -> NgsiResult<BatchResult> {
        self.check_tenant(tenant)?;
        self.batch(
            tenant,
            kind,
            link,
            body,
            Kind::Update { no_overwrite },
            origin,
        )
        .await
    }

    /// Batch Merge.
    pub async fn batch_merge<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        kind: BodyKind,
        link: Option<&str>,
        body: &J,
        origin: &Origin<'_>,
    ) -> NgsiResult<BatchResult> {
        self.check_tenant(tenant)?;
        self.batch(tenant, kind, link, body, Kind::Merge, origin)
            .await
    }

    /// Batch Delete: the body is an array of entity ids.
    pub async fn batch_delete(
        &self,
        tenant: &str,
        body: &Value,
        origin: &Origin<'_>,
    ) -> NgsiResult<BatchResult> {
        let items = batch_array(body, true)?;
        let registrations = self.write_registrations(tenant, origin, "deleteBatch");
        if registrations.is_none() {
            self.check_tenant(tenant)?;
        }
        let ctx = Ctx::core();
        let mut fanout = BatchFanout::new("delete");
        let mut result = BatchResult::default();
        let mut ops = Vec::new();
        let mut op_ids = Vec::new();
        for item in items {
            match item {
                Value::String(id) if ngsi_model::parse::is_absolute_iri(id) => {
                    if let Some(regs) = &registrations {
                        let w = EntityWrite {
                            kind: WriteKind::Delete,
                            op: "deleteBatch",
                            id,
                            attr: None,
                            type_param: None,
                        };
                        if let Some(plan) = self.split(tenant, &ctx, &w, None, regs)
                            && fanout.add(id, plan, true).is_none()
                        {
                            continue;
                        }
                    }
                    let id2 = id.clone();
                    ops.push(Op::new(id.as_str(), move |current| match current {
                        Some(_) => Ok(Change::delete()),
                        None => Err(not_found(&id2)),
                    }));
                    op_ids.push(id.clone());
                }
                other => result.errors.push((
                    other.as_str().unwrap_or_default().to_string(),
                    NgsiError::bad_data("a batch delete holds entity ids (URIs)"),
                )),
            }
        }
        if registrations.is_some() && fanout.is_empty() {
            self.check_tenant(tenant)?;
        }
        self.run_distributed(
            tenant,
            ops,
            op_ids,
            &mut result,
            fanout,
            &ctx,
            origin,
            "deleteBatch",
        )
        .await?;
        Ok(result)
    }

    /// Runs the local ops of a batch, then the parts of its entities that
    /// registrations hold (none with `fanout` empty).
    #[allow(clippy::too_many_arguments)]
    async fn run_distributed(
        &self,
        tenant: &str,
        ops: Vec<Op>,
        op_ids: Vec<String>,
        result: &mut BatchResult,
        fanout: BatchFanout,
        ctx: &Ctx,
        origin: &Origin<'_>,
        op: &'static str,
    ) -> NgsiResult<()> {
        if fanout.is_empty() {
            return self.run_ops(tenant, ops, op_ids, result).await;
        }
        self.check_loop(tenant, origin)?;
        // A tenant that only the sources know has nothing here to write.
        if !ops.is_empty() || tenant.is_empty() || self.store.tenant_exists(tenant) {
            self.run_ops(tenant, ops, op_ids, result).await?;
        }
        fanout.finish(self, tenant, ctx, origin, op, result).await;
        Ok(())
    }

    async fn batch<J: JsonDoc + Sync>(
        &self,
        tenant: &str,
        body_kind: BodyKind,
        link: Option<&str>,
        body: &J,
        kind: Kind,
        origin: &Origin<'_>,
    ) -> NgsiResult<BatchResult> {
        let items = batch_array(body, false)?;
        let (write_kind, op, segment) = kind.distributed();
        let registrations = self.write_registrations(tenant, origin, op);
        let mut fanout = BatchFanout::new(segment);
        if body_kind == BodyKind::LdJson && link.is_some() {
            return Err(crate::context::ld_json_with_link());
        }
        let shared_ctx = match body_kind {
            BodyKind::Json => Some(self.context_from_link(link).await),
            BodyKind::LdJson => None,
        };
        let mut result = BatchResult::default();
        let mut ops = Vec::with_capacity(items.len());
        let mut op_ids = Vec::with_capacity(items.len());
        for item in items {
            let id = entity_id_of(item);
            let ctx: NgsiResult<Ctx> = match &shared_ctx {
                Some(c) => match item.get("@context") {
                    Some(_) => Err(NgsiError::bad_data(
                        "an application/json body cannot carry @context",
                    )),
                    None => c.clone(),
                },
                None => self.context_for_body(BodyKind::LdJson, None, item).await,
            };
            let parsed = ctx.and_then(|ctx| self.batch_entity(item, &ctx, kind).map(|e| (e, ctx)));
            let (entity, ctx) = match parsed {
                Ok(parsed) => parsed,
                Err(e) => {
                    result.errors.push((id, e));
                    continue;
                }
            };
            let plan = registrations.as_ref().and_then(|regs| {
                let w = EntityWrite {
                    kind: write_kind,
                    op,
                    id: &entity.id,
                    attr: None,
                    type_param: None,
                };
                self.split(tenant, &ctx, &w, Some(item.to_value()), regs)
            });
            let entity = match plan {
                None => entity,
                // What the registrations left of the entity, if anything.
                Some(plan) => match fanout.add(&entity.id, plan, false).flatten() {
                    None => continue,
                    Some(doc) => match self.batch_entity(&doc, &ctx, kind) {
                        Ok(e) => e,
                        Err(e) => {
                            result.errors.push((id, e));
                            continue;
                        }
                    },
                },
            };
            op_ids.push(entity.id.to_string());
            ops.push(batch_op(entity, kind));
        }
        let batch_ctx = match shared_ctx {
            Some(Ok(c)) => c,
            _ => Ctx::core(),
        };
        self.run_distributed(
            tenant,
            ops,
            op_ids,
            &mut result,
            fanout,
            &batch_ctx,
            origin,
            op,
        )
        .await?;
        Ok(result)
    }

    fn batch_entity<J: JsonDoc>(&self, item: &J, ctx: &Ctx, kind: Kind) -> NgsiResult<Entity> {
        let (req, limits) = match kind {
            Kind::Create | Kind::Upsert(_) => (
                EntityRequirements {
                    id: true,
                    types: true,
                },
                self.config.parse,
            ),
            Kind::Update { .. } => (
                EntityRequirements {
                    id: true,
                    types: false,
                },
                self.config.parse,
            ),
            Kind::Merge => (
                EntityRequirements {
                    id: true,
                    types: false,
                },
                ParseLimits::merge(),
            ),
        };
        parse_entity(item, ctx, req, limits)
    }

    async fn run_ops(
        &self,
        tenant: &str,
        ops: Vec<Op>,
        op_ids: Vec<String>,
        result: &mut BatchResult,
    ) -> NgsiResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let ops = ops.into_iter().map(crate::expiry::transient).collect();
        let outcomes = self.store.write(tenant, ops).await?;
        for (id, outcome) in op_ids.into_iter().zip(outcomes) {
            match outcome {
                // An update that left attributes as they were (noOverwrite)
                // did not do all it was asked: the entity is in error.
                Ok(o) if o.report.as_ref().is_some_and(|r| !r.not_updated.is_empty()) => {
                    let names: Vec<&str> = o
                        .report
                        .iter()
                        .flat_map(|r| r.not_updated.iter().map(|(n, _)| &**n))
                        .collect();
                    result.errors.push((
                        id,
                        NgsiError::new(
                            ErrorKind::AlreadyExists,
                            format!(
                                "attributes not overwritten as noOverwrite was given: {}",
                                names.join(", ")
                            ),
                        ),
                    ));
                }
                Ok(o) => {
                    if o.created {
                        result.created.push(id.clone());
                    }
                    result.success.push(id);
                }
                Err(e) => result.errors.push((id, e)),
            }
        }
        Ok(())
    }
}

fn batch_op(mut entity: Entity, kind: Kind) -> Op {
    let id: Arc<str> = entity.id.clone();
    Op::new(id, move |current| {
        let now = now_micros();
        match (kind, current) {
            (Kind::Create, Some(_)) => Err(NgsiError::new(
                ErrorKind::AlreadyExists,
                format!("entity {} already exists", entity.id),
            )),
            (Kind::Create | Kind::Upsert(_), None) => {
                update::stamp_new(&mut entity, now);
                Ok(Change::put(entity))
            }
            (Kind::Upsert(UpsertMode::Replace), Some(old)) => {
                Ok(Change::put(update::replace(old, entity, now)))
            }
            (Kind::Upsert(UpsertMode::Update), Some(old)) => {
                let mut e = old.clone();
                update::append(&mut e, entity, false, now);
                e.modified_at = now;
                Ok(Change::put(e))
            }
            // Batch Update runs Append Attributes per entity (clause 5.6.9).
            (Kind::Update { no_overwrite }, Some(old)) => {
                let mut e = old.clone();
                let report = update::append(&mut e, entity, no_overwrite, now);
                Ok(Change {
                    next: Next::Put(e),
                    report: Some(report),
                })
            }
            (Kind::Merge, Some(old)) => {
                let mut e = old.clone();
                update::merge(&mut e, entity, now)?;
                Ok(Change::put(e))
            }
            (Kind::Update { .. } | Kind::Merge, None) => Err(not_found(&entity.id)),
        }
    })
}
