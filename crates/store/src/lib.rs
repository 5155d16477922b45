//! Durable entity storage.
//!
//! [`Store`] is the port that the broker talks to; [`sqlite::SqliteStore`] is
//! the embedded implementation (SQLite in WAL mode as the system of record,
//! in-memory indexes for reads). A PostgreSQL backend will implement the same
//! trait.

pub mod attr_index;
pub mod index;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ngsi_model::update::UpdateReport;
use ngsi_model::{Entity, Iri, NgsiError};

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
    /// The writer has stopped (the store is shutting down or failed).
    #[error("the store's writer has stopped")]
    WriterGone,
    /// Filesystem trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for NgsiError {
    fn from(e: StoreError) -> Self {
        NgsiError::internal(e.to_string())
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
}
