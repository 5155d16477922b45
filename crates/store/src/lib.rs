//! Durable entity storage.
//!
//! [`Store`] is the port that the broker talks to; [`sqlite::SqliteStore`] is
//! the embedded implementation (SQLite in WAL mode as the system of record,
//! in-memory indexes for reads). A PostgreSQL backend will implement the same
//! trait.

pub mod attr_index;
pub mod codec;
pub mod datadir;
mod genesis;
pub mod history;
pub mod index;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ngsi_model::time::IsoDuration;
use ngsi_model::update::UpdateReport;
use ngsi_model::{Attribute, Entity, Iri, NgsiError};

/// What an operation does to the entity it targets, decided by the operation
/// itself from the latest committed state.
#[derive(Debug)]
pub enum Next {
    /// Leave the entity as it is.
    Keep,
    /// Store this version of the entity.
    Put(Entity),
    /// Delete the entity.
    Delete,
}

/// The result of applying one operation.
#[derive(Debug)]
pub struct Change {
    /// The new state.
    pub next: Next,
    /// What happened per attribute, for operations that report it.
    pub report: Option<UpdateReport>,
}

impl Change {
    /// Store `entity`.
    pub fn put(entity: Entity) -> Self {
        Self {
            next: Next::Put(entity),
            report: None,
        }
    }

    /// Delete the entity.
    pub fn delete() -> Self {
        Self {
            next: Next::Delete,
            report: None,
        }
    }
}

/// The function an operation runs against the current state of its entity
/// (`None` when the entity does not exist).
pub type Apply = Box<dyn FnOnce(Option<&Entity>) -> Result<Change, NgsiError> + Send>;

/// One write operation on one entity.
pub struct Op {
    /// The entity the operation targets.
    pub id: Arc<str>,
    /// Computes the new state from the current one.
    pub apply: Apply,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Op {
    /// An operation on `id`.
    pub fn new(
        id: impl Into<Arc<str>>,
        apply: impl FnOnce(Option<&Entity>) -> Result<Change, NgsiError> + Send + 'static,
    ) -> Self {
        Self {
            id: id.into(),
            apply: Box::new(apply),
        }
    }
}

/// The outcome of one operation, in the order the operations were given.
#[derive(Debug)]
pub struct Outcome {
    /// Whether the entity did not exist before.
    pub created: bool,
    /// The per-attribute report, when the operation made one.
    pub report: Option<UpdateReport>,
}

/// One committed change of one entity. A commit publishes the changes of all
/// its operations, in the order they were applied, after it is durable.
#[derive(Debug, Clone)]
pub struct EntityChange {
    /// The tenant of the entity.
    pub tenant: Arc<str>,
    /// The entity id.
    pub id: Arc<str>,
    /// The state before the operation (`None`: it was created).
    pub before: Option<Arc<Entity>>,
    /// The state after the operation (`None`: it was deleted).
    pub after: Option<Arc<Entity>>,
}

/// What [`Store::expiries`] answers.
#[derive(Debug, Default)]
pub struct Expiries {
    /// The entities with something expired, as (tenant, id).
    pub due: Vec<(String, Arc<str>)>,
    /// The earliest instant at which something held expires.
    pub next: Option<i64>,
}

/// The changes of one commit, shared by every listener.
pub type ChangeBatch = Arc<[EntityChange]>;

/// A listener's end of the change feed. A listener that falls more than the
/// feed's capacity behind loses the oldest batches and is told how many
/// (`RecvError::Lagged`); writers never wait for listeners.
pub type ChangeReceiver = tokio::sync::broadcast::Receiver<ChangeBatch>;

/// Errors of the storage layer itself (as opposed to the domain errors that an
/// operation returns).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored document could not be decoded.
    #[error("stored entity {id} could not be decoded: {reason}")]
    Decode {
        /// The entity id.
        id: String,
        /// The decoder's message.
        reason: String,
    },
    /// The data directory is in a storage format this build does not know
    /// (a newer build wrote it).
    #[error(
        "the data directory has storage format {0}, which this build does not know; was it written by a newer Wuyang?"
    )]
    UnknownFormat(String),
    /// The writer has stopped (the store is shutting down or failed).
    #[error("the store's writer has stopped")]
    WriterGone,
    /// Filesystem trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The store does not offer the operation (history switched off).
    #[error("{0}")]
    Unsupported(String),
    /// Another process holds the data directory's lock.
    #[error(
        "the data directory {dir} is in use by {holder}; stop it first or choose another data directory"
    )]
    InUse {
        /// The directory.
        dir: String,
        /// Who holds it ("process 1234").
        holder: String,
    },
    /// A backup or restore cannot go ahead (the message says why).
    #[error("{0}")]
    DataDir(String),
}

impl From<StoreError> for NgsiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unsupported(detail) => {
                NgsiError::new(ngsi_model::ErrorKind::OperationNotSupported, detail)
            }
            e => NgsiError::internal(e.to_string()),
        }
    }
}

/// The future of a write: one result per operation, once committed.
pub type WriteFuture =
    Pin<Box<dyn Future<Output = Result<Vec<Result<Outcome, NgsiError>>, StoreError>> + Send>>;

/// Which entities a query considers before filtering.
#[derive(Debug, Default, Clone, Copy)]
pub struct Selection<'a> {
    /// Only these ids.
    pub ids: Option<&'a [Arc<str>]>,
    /// Only entities that have at least one of these (expanded) types.
    pub types: Option<&'a [Iri]>,
    /// Conditions on attribute values that all matches satisfy; the store
    /// may answer them from attribute indexes (the filter still decides).
    pub conditions: &'a [attr_index::IndexedCondition],
    /// The selection alone decides: every candidate of `ids` or `types`
    /// matches, so the filter need not run (counting needs no decoding).
    pub exact: bool,
}

/// Runs `f`, work that may hold the CPU for long (a scan that decodes
/// thousands of entities, the rendering of a large page, building an
/// index), without holding a runtime worker: on the multi-thread runtime
/// the worker first hands its other tasks to another thread
/// (`block_in_place`), so that other requests, `/health` among them, are
/// still answered while it runs. On a current-thread runtime (the tests),
/// or outside a runtime, it simply runs. The hand-over costs tens of
/// microseconds: keep it for work that takes milliseconds.
pub fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What discovery reports about one entity type.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    /// The type (expanded).
    pub name: Iri,
    /// Entities of the type.
    pub entities: usize,
    /// Attributes of those entities with the kinds they take.
    pub attrs: Vec<(Iri, Vec<&'static str>)>,
}

/// What discovery reports about one attribute.
#[derive(Debug, Clone)]
pub struct AttrInfo {
    /// The attribute (expanded).
    pub name: Iri,
    /// Entities having it.
    pub entities: usize,
    /// Its instances in those entities (one per datasetId).
    pub instances: usize,
    /// The kinds it takes.
    pub kinds: Vec<&'static str>,
    /// The types of the entities having it.
    pub types: Vec<Iri>,
}

/// Which page of the matches to return.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Matches to skip.
    pub offset: usize,
    /// Matches to return at most.
    pub limit: usize,
    /// Count all matches.
    pub count: bool,
}

/// One page of query results.
#[derive(Debug, Default)]
pub struct QueryPage {
    /// The matching entities of the page, ordered by id.
    pub entities: Vec<Arc<Entity>>,
    /// The number of all matches, when counted.
    pub total: Option<usize>,
}

/// A predicate applied to every candidate entity of a query.
pub type Filter<'a> = &'a (dyn Fn(&Entity) -> bool + Sync);

/// The future of a store operation other than an entity write.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The time property a temporal query selects and orders by (clause 5.2.22
/// `timeproperty`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeProperty {
    /// The instant of the instance: observedAt, or modifiedAt without it.
    /// A bounded range selects only the instances that have an observedAt
    /// (clause 4.11: an instance without it is not part of an
    /// observedAt-based time filter).
    #[default]
    ObservedAt,
    /// When the broker stored the instance.
    ModifiedAt,
    /// When the attribute was created.
    CreatedAt,
    /// When the attribute was deleted: only deletion instances are
    /// selected, with or without a range.
    DeletedAt,
}

impl TimeProperty {
    /// Whether an instance is selected under this property, `bounded`
    /// telling whether the range has a bound (see the variants).
    pub fn selects(self, instance: &TemporalInstance, bounded: bool) -> bool {
        match self {
            Self::ObservedAt => {
                !bounded
                    || instance
                        .attr
                        .as_ref()
                        .is_some_and(|a| a.observed_at.is_some())
            }
            Self::DeletedAt => instance.attr.is_none(),
            Self::ModifiedAt | Self::CreatedAt => true,
        }
    }

    /// The time of an instance on this property.
    pub fn time_of(self, instance: &TemporalInstance) -> i64 {
        match self {
            Self::ObservedAt | Self::DeletedAt => instance.instant,
            Self::ModifiedAt => instance.modified_at,
            Self::CreatedAt => instance.created_at,
        }
    }
}

impl TimeRange {
    /// Whether the range has a lower or an upper bound.
    pub fn bounded(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }
}

/// A time range of a temporal query, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Which time property the bounds apply to.
    pub property: TimeProperty,
    /// The first instant included.
    pub from: Option<i64>,
    /// The first instant excluded.
    pub to: Option<i64>,
}

/// Which instances of an entity's history to read.
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    /// Only these attributes (expanded); `None`: all.
    pub attrs: Option<Vec<Iri>>,
    /// Only these attribute instances (`None` inside: the default
    /// instance); `None`: all.
    pub datasets: Option<Vec<Option<Box<str>>>>,
    /// The time range.
    pub range: TimeRange,
    /// Only the last N instances of each attribute instance (datasetId).
    pub last_n: Option<usize>,
    /// The most instances returned per attribute instance; more are
    /// reported as `truncated`.
    pub limit: usize,
}

/// One temporal instance of an attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalInstance {
    /// Unique among the instances of the store (the instanceId).
    pub instance_id: i64,
    /// observedAt when the instance had one, else modifiedAt.
    pub instant: i64,
    /// When the broker stored the instance (for a deletion: deletedAt).
    pub modified_at: i64,
    /// When the attribute was created.
    pub created_at: i64,
    /// The instance; `None` when the attribute was deleted at `modified_at`.
    pub attr: Option<Attribute>,
    /// For a deletion, the kind of the attribute deleted (`Relationship`,
    /// `LanguageProperty`, ...) when it was recorded.
    pub deleted_kind: Option<&'static str>,
    /// The instanceId a registered context source gave the instance (a
    /// forwarded temporal read); `None` for the instances of this store.
    pub source_instance_id: Option<Box<str>>,
}

/// The history of one attribute instance (attribute and datasetId).
#[derive(Debug, Clone)]
pub struct AttrHistory {
    /// The attribute (expanded).
    pub attr: Iri,
    /// The datasetId (`None`: the default instance).
    pub dataset_id: Option<Box<str>>,
    /// The instances in order of the selected time property.
    pub instances: Vec<TemporalInstance>,
    /// Whether more instances matched than the request's limit.
    pub truncated: bool,
}

/// An entity that has history.
#[derive(Debug, Clone)]
pub struct HistoryEntity {
    /// The entity id.
    pub id: Arc<str>,
    /// Its latest known types (expanded).
    pub types: Vec<Iri>,
    /// The attribute instances with history: attribute (expanded) and
    /// datasetId, ordered.
    pub attrs: Vec<(Iri, Option<Box<str>>)>,
}

/// The kinds of value a period's instances hold, as the aggregation
/// methods tell them apart (Tables 4.5.19.1-1 to -3): a bit set of
/// [`AggregateBucket::classes`].
pub mod value_class {
    /// JSON numbers.
    pub const NUMBER: u8 = 1;
    /// Booleans (true counts 1, false 0).
    pub const BOOLEAN: u8 = 2;
    /// Arrays (and ListProperty values): their sizes are summed, averaged
    /// and compared.
    pub const ARRAY: u8 = 4;
    /// Strings and date-times: compared in lexical order.
    pub const STRING: u8 = 8;
    /// Objects, language maps, JSON values, geometries: counted only.
    pub const OBJECT: u8 = 16;
    /// Relationship objects and vocabulary terms: counted only.
    pub const RELATIONSHIP: u8 = 32;
}

/// The aggregates of one period (clause 4.5.19).
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateBucket {
    /// The start of the period (included).
    pub start: i64,
    /// The end of the period (excluded).
    pub end: i64,
    /// totalCount.
    pub count: u64,
    /// distinctCount, when asked for.
    pub distinct: Option<u64>,
    /// sum.
    pub sum: f64,
    /// avg: the mean of the numeric values (NaN without any), computed
    /// so that it stays finite when the sum overflows.
    pub mean: f64,
    /// sumsq.
    pub sumsq: f64,
    /// min.
    pub min: f64,
    /// max.
    pub max: f64,
    /// The sample standard deviation (0 for one instance).
    pub stddev: f64,
    /// The first and last string in lexical order, when the period holds
    /// strings (min and max then); the numeric fields hold the numbers,
    /// booleans and array sizes.
    pub text_min: Option<String>,
    pub text_max: Option<String>,
    /// The kinds of value seen ([`value_class`] bits).
    pub classes: u8,
}

/// What to aggregate.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggregateRequest {
    /// The time range and property.
    pub range: TimeRange,
    /// The period (`None` or zero: the whole range).
    pub period: Option<IsoDuration>,
    /// Whether distinctCount is wanted (it costs a set per period).
    pub distinct: bool,
}

/// A write through the temporal API (clauses 5.6.11 to 5.6.16).
#[derive(Debug, Clone)]
pub enum HistoryOp {
    /// Adds instances to an entity's history (creating the temporal entity
    /// when new). Instances keep their own createdAt/modifiedAt.
    Add {
        /// The entity id.
        id: Arc<str>,
        /// The entity types (may be empty when the entity is known).
        types: Vec<Iri>,
        /// Attributes and their instances.
        attrs: Vec<(Iri, Vec<Attribute>)>,
    },
    /// Deletes the whole history of an entity.
    DeleteEntity {
        /// The entity id.
        id: Arc<str>,
    },
    /// Deletes the history of an attribute: of one datasetId (`Some(None)`
    /// is the default instance) or, with `None`, of all.
    DeleteAttr {
        /// The entity id.
        id: Arc<str>,
        /// The attribute (expanded).
        attr: Iri,
        /// Which datasetId.
        dataset: Option<Option<Box<str>>>,
    },
    /// Deletes one instance.
    DeleteInstance {
        /// The entity id.
        id: Arc<str>,
        /// The attribute (expanded).
        attr: Iri,
        /// The instanceId.
        instance: i64,
    },
    /// Replaces the value of one instance (its time stays).
    ModifyInstance {
        /// The entity id.
        id: Arc<str>,
        /// The attribute (expanded).
        attr: Iri,
        /// The instanceId.
        instance: i64,
        /// The new content.
        value: Box<Attribute>,
    },
}

fn history_disabled<T: Send + 'static>() -> StoreFuture<T> {
    Box::pin(async {
        Err(StoreError::Unsupported(
            "this store keeps no history".into(),
        ))
    })
}

/// The storage port.
///
/// Writes are submitted as a list of [`Op`]s that are applied in order, each
/// to the latest state of its entity, and acknowledged only once durable.
/// Reads see only committed state. Tenants are isolated: no method reaches
/// across tenants.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` for `tenant` and resolves once they are durable.
    fn write(&self, tenant: &str, ops: Vec<Op>) -> WriteFuture;
    /// The entity `id` of `tenant`.
    fn get(&self, tenant: &str, id: &str) -> Option<Arc<Entity>>;
    /// The entities of `tenant` selected by `selection` that pass `filter`,
    /// ordered by id, paged.
    fn query(
        &self,
        tenant: &str,
        selection: Selection<'_>,
        filter: Filter<'_>,
        page: Page,
    ) -> QueryPage;
    /// Visits every entity of `tenant`.
    fn scan(&self, tenant: &str, visit: &mut dyn FnMut(&Entity));
    /// Transient storage (clause 4.22): the entities, with their tenants,
    /// that hold something whose `expiresAt` is at or before `now` (at most
    /// `limit`, the earliest first), and the earliest expiry of all held.
    fn expiries(&self, now: i64, limit: usize) -> Expiries;
    /// The entity types of `tenant` with counts and attributes.
    fn type_infos(&self, tenant: &str) -> Vec<TypeInfo>;
    /// The attributes of `tenant` with counts, kinds and types.
    fn attr_infos(&self, tenant: &str) -> Vec<AttrInfo>;
    /// Whether `tenant` exists (has ever been written to).
    fn tenant_exists(&self, tenant: &str) -> bool;
    /// The names of all tenants.
    fn tenants(&self) -> Vec<String>;
    /// The number of entities in all tenants.
    fn entity_count(&self) -> usize;
    /// Durably stores (or, with `None`, deletes) a small JSON record of a
    /// collection such as the hosted @contexts; resolves once durable.
    fn put_record(
        &self,
        tenant: &str,
        collection: &str,
        key: &str,
        value: Option<serde_json::Value>,
    ) -> WriteFuture;
    /// Every record of a collection, ordered by key.
    fn records(&self, tenant: &str, collection: &str) -> Vec<(String, serde_json::Value)>;
    /// A new listener of the change feed: every commit from now on, after it
    /// is durable and visible to readers.
    fn changes(&self) -> ChangeReceiver;

    /// Whether the store records history (the temporal API).
    fn history_enabled(&self) -> bool {
        false
    }
    /// The entities of `tenant` that have history and whose id and types
    /// pass `select`, ordered by id.
    fn history_entities(
        &self,
        _tenant: &str,
        _select: &mut dyn FnMut(&str, &[Iri]) -> bool,
    ) -> Vec<HistoryEntity> {
        Vec::new()
    }
    /// The entity `id` of `tenant` if it has history.
    fn history_entity(&self, _tenant: &str, _id: &str) -> Option<HistoryEntity> {
        None
    }
    /// The history of entity `id`, one entry per attribute instance that
    /// has instances in the range (or every one, without a range); `None`
    /// when the entity has no history.
    fn history(
        &self,
        _tenant: &str,
        _id: &str,
        _req: HistoryRequest,
    ) -> StoreFuture<Option<Vec<AttrHistory>>> {
        history_disabled()
    }
    /// For each of `ids` (of `tenant`), whether its history has an instance
    /// that `req` selects (by its attributes, datasetIds and range;
    /// `last_n` and `limit` do not matter). One read answers for all the
    /// entities a temporal query considers.
    fn history_has_instances(
        &self,
        _tenant: &str,
        _ids: Vec<Arc<str>>,
        _req: HistoryRequest,
    ) -> StoreFuture<Vec<bool>> {
        history_disabled()
    }
    /// Aggregates the numeric instances of one attribute instance.
    fn aggregate(
        &self,
        _tenant: &str,
        _id: &str,
        _attr: Iri,
        _dataset: Option<Box<str>>,
        _req: AggregateRequest,
    ) -> StoreFuture<Vec<AggregateBucket>> {
        history_disabled()
    }
    /// Applies a write of the temporal API; resolves once durable. The
    /// inner result is `true` when the operation created a temporal entity.
    fn write_history(&self, _tenant: &str, _op: HistoryOp) -> StoreFuture<Result<bool, NgsiError>> {
        history_disabled()
    }
    /// Deletes the instances older than `before` (microseconds since the
    /// epoch) of every tenant and frees their disk space; resolves to the
    /// number deleted. The embedded store deletes in bounded chunks between
    /// writes; instances recorded while it runs may wait for the next call.
    fn expire_history(&self, _before: i64) -> StoreFuture<u64> {
        history_disabled()
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_bound;

    /// On the multi-thread runtime the worker hands its other tasks on
    /// before the work runs: with one worker, a task queued behind the work
    /// still runs while the work waits for it (it would wait forever if the
    /// work held the worker).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn cpu_bound_work_lets_the_runtime_go_on() {
        let got = tokio::spawn(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let other = tokio::spawn(async move { tx.send(7).unwrap() });
            let got = cpu_bound(|| rx.recv_timeout(std::time::Duration::from_secs(5)).ok());
            other.await.unwrap();
            got
        })
        .await
        .unwrap();
        assert_eq!(got, Some(7));
    }

    #[tokio::test]
    async fn cpu_bound_work_runs_in_place_on_a_current_thread_runtime() {
        assert_eq!(cpu_bound(|| 6 * 7), 42);
    }

    #[test]
    fn cpu_bound_work_runs_outside_a_runtime() {
        assert_eq!(cpu_bound(|| 6 * 7), 42);
    }
}
