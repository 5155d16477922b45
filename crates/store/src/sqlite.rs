//! The embedded store: SQLite (WAL, `synchronous=FULL` by default) written by one writer
//! thread with group commit, and in-memory indexes for reads.
//!
//! A write travels: `write()` sends the ops to the writer thread; the writer
//! takes every message that is waiting (up to a bound), applies the ops in
//! arrival order against the latest state (committed state overlaid with the
//! changes of the group so far), writes the rows in one transaction, commits,
//! publishes the changes to the indexes and only then answers each caller.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use foldhash::HashMap as FoldMap;

use ngsi_model::names::Names;
use ngsi_model::{Entity, NgsiError};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use crate::history::{HistoryIndex, HistoryOverlay, NumCache, NumSeries, Recorder};
use crate::index::TenantIndex;
use crate::{
    AggregateBucket, AggregateRequest, AttrHistory, ChangeBatch, ChangeReceiver, EntityChange,
    Filter, HistoryEntity, HistoryOp, HistoryRequest, Next, Op, Outcome, Page, QueryPage,
    Selection, Store, StoreError, StoreFuture, TimeProperty, WriteFuture,
};

type Reply = oneshot::Sender<Result<Vec<Result<Outcome, NgsiError>>, StoreError>>;

/// A message to the writer thread.
enum Msg {
    Write(WriteRequest),
    /// Work that must run on the writer's connection, between groups.
    Job(Box<dyn FnOnce(&mut Writer) + Send>),
    /// A retention sweep, run in chunks between groups (see [`Sweep`]).
    Expire(Sweep),
}

struct WriteRequest {
    tenant: Box<str>,
    ops: Vec<Op>,
    records: Vec<RecordWrite>,
    reply: Reply,
}

/// A write of one record: `value` `None` deletes it.
struct RecordWrite {
    collection: Box<str>,
    key: Box<str>,
    value: Option<serde_json::Value>,
}

/// Records by (tenant, collection), then key.
type Records = HashMap<(Box<str>, Box<str>), std::collections::BTreeMap<String, serde_json::Value>>;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file; `None` keeps everything in memory (tests only:
    /// nothing survives the process).
    pub path: Option<PathBuf>,
    /// The most operations committed in one transaction.
    pub max_group_ops: usize,
    /// The depth of the queue in front of the writer.
    pub queue_depth: usize,
    /// How hard each commit pushes to the disk.
    pub sync: SyncMode,
    /// How many commits the change feed holds for a listener that is behind.
    pub change_feed_capacity: usize,
    /// Record every attribute change as a temporal instance (the temporal
    /// API).
    pub history: bool,
    /// Bytes of memory for the numeric series that aggregation reads.
    pub history_cache_bytes: usize,
    /// Delete instances older than this many days (checked every
    /// `history_sweep`); `None` keeps everything.
    pub history_days: Option<u32>,
    /// How long the retention thread waits after a sweep before the next.
    pub history_sweep: std::time::Duration,
    /// The most instances a retention sweep deletes in one transaction
    /// (and the most series it looks at in one): between two such chunks
    /// the writer commits the writes that are waiting.
    pub history_sweep_rows: usize,
    /// WAL frames (pages) after which the log is copied into the database
    /// by the checkpoint thread; the writer copies it itself at four times
    /// as many.
    pub checkpoint_frames: i32,
}

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// After the write-ahead log is flushed to the device (fsync): survives
    /// a process kill and a power loss.
    #[default]
    Full,
    /// After the write-ahead log is handed to the operating system: survives
    /// a process kill (including kill -9), but a power loss or kernel crash
    /// may lose the last commits.
    Normal,
}

impl SqliteConfig {
    /// A durable store in `dir/wuyang.db`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: Some(dir.join("wuyang.db")),
            ..Self::default()
        }
    }
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_group_ops: 8192,
            queue_depth: 4096,
            sync: SyncMode::Full,
            change_feed_capacity: 1024,
            history: true,
            history_cache_bytes: 256 << 20,
            history_days: None,
            history_sweep: std::time::Duration::from_secs(3600),
            history_sweep_rows: 50_000,
            checkpoint_frames: 8192,
        }
    }
}

struct Metrics {
    history_instances: Counter,
    commits: Counter,
    commit_ops: Histogram,
    commit_seconds: Histogram,
}

struct Shared {
    tenants: RwLock<HashMap<Box<str>, TenantIndex>>,
    /// Tenants that exist, even if all their entities were deleted.
    known_tenants: RwLock<HashSet<Box<str>>>,
    entities: AtomicU64,
    records: RwLock<Records>,
    metrics: Metrics,
    /// The change feed (see [`Store::changes`]).
    changes: tokio::sync::broadcast::Sender<ChangeBatch>,
    /// Whether history is recorded.
    history: bool,
    /// The series and entities with history.
    history_index: RwLock<HistoryIndex>,
    /// Columnar copies of numeric series for aggregation.
    num_cache: Mutex<NumCache>,
    /// The database file, for read-only connections (none in memory: reads
    /// of history then run on the writer).
    path: Option<PathBuf>,
    /// Idle read-only connections.
    readers: Mutex<Vec<Connection>>,
    /// The numbers of the names in the stored encodings.
    names: Arc<Names>,
}

/// The embedded SQLite store. Cheap to share behind an `Arc`; dropping the
/// last handle stops the writer after it drained its queue.
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    /// Signalled by the writer thread once it has closed its connections.
    closed: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Drop for SqliteStore {
    /// Waits (a bounded time) for the writer to close the database: SQLite
    /// can deadlock when one connection of a process closes a file while
    /// another opens it, so a store reopened right after a drop must find
    /// the old connections closed.
    fn drop(&mut self) {
        let (unused, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, unused));
        let _ = self
            .closed
            .lock()
            .recv_timeout(std::time::Duration::from_secs(10));
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (
    row INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant, collection, key)
) WITHOUT ROWID;
";

/// Version 6: version 5 whose genesis rows may hold a created entity's
/// stored encoding in place of its instances' rows (see `genesis.rs`). A
/// version 5 directory becomes version 6 as it is; a version 5 binary
/// refuses a version 6 directory, whose entity items it could not read.
const FORMAT_VERSION: &str = "6";

/// Version 5: version 4 with genesis rows (`history_genesis`, see
/// `genesis.rs`): the first instances of a created entity's series in one
/// row. A version 4 directory becomes version 5 as it is (it has no genesis
/// rows); a version 4 binary refuses a version 5 directory, whose genesis
/// instances it could not see.
const FORMAT_VERSION_5: &str = "5";

/// Version 4: entities as positional MessagePack (fields by position, every
/// field present) with names as numbers of the `names` table, in rows that
/// the writer numbers (the in-memory index keeps each entity's row, so the
/// table has no index on the id: an insert appends, an update or a delete
/// goes straight to its row).
const FORMAT_VERSION_4: &str = "4";

/// Version 3 keeps the entities in a table unique on (tenant, id), which
/// opening rebuilds in the version 4 shape, numbering its rows afresh.
const FORMAT_VERSION_3: &str = "3";

/// Version 2 is version 3 without the name table: its names are strings,
/// which later versions read as well.
const FORMAT_VERSION_2: &str = "2";

/// Records that a tenant exists (entities or history were written to it).
const ADD_TENANT: &str = "INSERT OR IGNORE INTO tenants (name) VALUES (?1)";

/// Whether this build reads (and, when older, upgrades) storage format
/// `format`.
pub(crate) fn is_known_format(format: &str) -> bool {
    [
        FORMAT_VERSION,
        FORMAT_VERSION_5,
        FORMAT_VERSION_4,
        FORMAT_VERSION_3,
        FORMAT_VERSION_2,
    ]
    .contains(&format)
}

/// Rebuilds the version 2 and 3 `entities` table (unique on tenant and id)
/// as the version 4 table. The rows are numbered afresh: nothing refers to
/// the old numbers, and the first builds of version 2 kept the table
/// `WITHOUT ROWID` (there are no old numbers to keep).
const UPGRADE_ENTITIES_TO_4: &str = "
CREATE TABLE entities_v4 (
    row INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL
);
INSERT INTO entities_v4 (tenant, id, doc) SELECT tenant, id, doc FROM entities;
DROP TABLE entities;
ALTER TABLE entities_v4 RENAME TO entities;
";

/// Decodes a stored entity. The encoding is positional (about a third
/// smaller than named fields): a change of the model's fields needs a new
/// FORMAT_VERSION and a migration.
fn decode(names: &Arc<Names>, id: &str, bytes: &[u8]) -> Result<Entity, StoreError> {
    crate::index::decode(names, bytes).map_err(|e| StoreError::Decode {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

impl SqliteStore {
    /// Opens (or creates) the store, loads the indexes and starts the writer.
    pub fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        // The lock first: nothing touches the database of a directory that
        // another server holds.
        let (conn, lock) = match &config.path {
            Some(p) => {
                let lock = crate::datadir::DirLock::acquire(crate::datadir::parent_dir(p))?;
                (Connection::open(p)?, Some(lock))
            }
            None => (Connection::open_in_memory()?, None),
        };
        prepare_auto_vacuum(&conn, config.history_days.is_some())?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match config.sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "cache_size", -65536)?;
        // Checkpoints run on their own thread (see `Checkpointer`): the hook
        // replaces SQLite's automatic checkpoint in the writer's commits.
        conn.wal_hook(Some(note_wal_frames));
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::history::SCHEMA)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version.as_deref() {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('format', ?1)",
                    [FORMAT_VERSION],
                )?;
            }
            Some(FORMAT_VERSION) => {}
            Some(
                old @ (FORMAT_VERSION_2 | FORMAT_VERSION_3 | FORMAT_VERSION_4 | FORMAT_VERSION_5),
            ) => {
                tracing::info!("upgrading the data directory to storage format {FORMAT_VERSION}");
                let tx = conn.unchecked_transaction()?;
                if old != FORMAT_VERSION_4 && old != FORMAT_VERSION_5 {
                    tx.execute_batch(UPGRADE_ENTITIES_TO_4)?;
                }
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'format'",
                    [FORMAT_VERSION],
                )?;
                tx.commit()?;
            }
            Some(other) => return Err(StoreError::UnknownFormat(other.to_string())),
        }

        let mut tenants: HashMap<Box<str>, TenantIndex> = HashMap::new();
        let mut known: HashSet<Box<str>> = HashSet::new();
        let mut records: Records = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT tenant, collection, key, value FROM records")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (tenant, collection, key, text): (String, String, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                let value = serde_json::from_str(&text).map_err(|e| StoreError::Decode {
                    id: key.clone(),
                    reason: e.to_string(),
                })?;
                records
                    .entry((tenant.into(), collection.into()))
                    .or_default()
                    .insert(key, value);
            }

            let mut stmt = conn.prepare("SELECT name FROM tenants")?;
            for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
                known.insert(name?.into());
            }
        }
        let names = Arc::new(load_names(&conn)?);
        let persisted_names = names.len();
        // The history index loads beside the entities, on its own
        // connection (a restart at a million entities with history: two
        // loads of four seconds each).
        let (count, history_index) = match &config.path {
            Some(path) => std::thread::scope(|scope| {
                let history_names = names.clone();
                let history = scope.spawn(move || -> Result<HistoryIndex, StoreError> {
                    let conn = Connection::open_with_flags(
                        path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    HistoryIndex::load(&conn, history_names)
                });
                let count = load_entities(&conn, &names, &mut tenants);
                let history_index = history.join().map_err(|_| {
                    StoreError::Io(std::io::Error::other("loading history panicked"))
                })?;
                Ok::<_, StoreError>((count?, history_index?))
            })?,
            None => (
                load_entities(&conn, &names, &mut tenants)?,
                HistoryIndex::load(&conn, names.clone())?,
            ),
        };
        let recorder = config.history.then(|| Recorder::open(&conn)).transpose()?;
        let next_row: i64 =
            conn.query_row("SELECT COALESCE(MAX(row), 0) + 1 FROM entities", [], |r| {
                r.get(0)
            })?;
        let shared = Arc::new(Shared {
            tenants: RwLock::new(tenants),
            known_tenants: RwLock::new(known),
            entities: AtomicU64::new(count),
            records: RwLock::new(records),
            metrics: Metrics {
                history_instances: Counter::default(),
                commits: Counter::default(),
                commit_ops: Histogram::new([
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
                ]),
                commit_seconds: Histogram::new([
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
                ]),
            },
            changes: tokio::sync::broadcast::channel(config.change_feed_capacity.max(1)).0,
            history: config.history,
            history_index: RwLock::new(history_index),
            num_cache: Mutex::new(NumCache::new(config.history_cache_bytes)),
            path: config.path.clone(),
            readers: Mutex::new(Vec::new()),
            names,
        });
        let (tx, rx) = mpsc::channel(config.queue_depth);
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let writer_shared = shared.clone();
        let checkpoint = match &config.path {
            Some(path) => Some(Checkpointer::spawn(path, config.checkpoint_frames)?),
            None => None,
        };
        std::thread::Builder::new()
            .name("wuyang-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    shared: writer_shared,
                    max_group_ops: config.max_group_ops,
                    recorder,
                    checkpoint,
                    persisted_names,
                    next_row,
                    sweeps: VecDeque::new(),
                    sweep_rows: config.history_sweep_rows.max(1),
                    recent: RecentEntities::with_reaper(),
                }
                .run(rx);
                // The connections are closed: the directory is free again.
                drop(lock);
                let _ = closed_tx.send(());
            })?;
        if let (Some(days), true) = (config.history_days, config.history) {
            spawn_retention(tx.downgrade(), days, config.history_sweep)?;
        }
        Ok(Self {
            shared,
            tx,
            closed: Mutex::new(closed),
        })
    }

    /// Registers the store's metrics (commit count, ops per commit, commit
    /// latency) in `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.shared.metrics;
        registry.register(
            "wuyang_store_commits",
            "Transactions committed by the writer",
            m.commits.clone(),
        );
        registry.register(
            "wuyang_store_commit_ops",
            "Operations per committed transaction",
            m.commit_ops.clone(),
        );
        registry.register(
            "wuyang_store_history_instances",
            "Temporal instances recorded",
            m.history_instances.clone(),
        );
        registry.register(
            "wuyang_store_commit_seconds",
            "Time to apply and commit one transaction",
            m.commit_seconds.clone(),
        );
        registry.register_collector(Box::new(SizeCollector {
            shared: Arc::downgrade(&self.shared),
        }));
    }
}

/// The gauges read at each scrape: entities and tenants held, and the disk
/// the database and its WAL take.
#[derive(Debug)]
struct SizeCollector {
    shared: std::sync::Weak<Shared>,
}

impl prometheus_client::collector::Collector for SizeCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let mut gauge = |name: &str, help: &str, value: i64| {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            "wuyang_store_entities",
            "Entities held, all tenants together",
            count(shared.entities.load(Ordering::Relaxed)),
        )?;
        gauge(
            "wuyang_store_tenants",
            "Tenants that exist",
            count(shared.known_tenants.read().len() as u64),
        )?;
        if let Some(path) = &shared.path {
            let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let wal = crate::datadir::with_suffix(path, "-wal");
            gauge(
                "wuyang_store_database_bytes",
                "Size of the database file",
                count(size(path)),
            )?;
            gauge(
                "wuyang_store_wal_bytes",
                "Size of the database's write-ahead log",
                count(size(&wal)),
            )?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn write(&self, tenant: &str, ops: Vec<Op>) -> WriteFuture {
        let tx = self.tx.clone();
        let tenant: Box<str> = tenant.into();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            tx.send(Msg::Write(WriteRequest {
                tenant,
                ops,
                records: Vec::new(),
                reply,
            }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
            rx.await.map_err(|_| StoreError::WriterGone)?
        })
    }

    fn get(&self, tenant: &str, id: &str) -> Option<Arc<Entity>> {
        self.shared.tenants.read().get(tenant)?.get(id)
    }

    fn query(
        &self,
        tenant: &str,
        selection: Selection<'_>,
        filter: Filter<'_>,
        page: Page,
    ) -> QueryPage {
        if !selection.conditions.is_empty() {
            let missing = self
                .shared
                .tenants
                .read()
                .get(tenant)
                .is_some_and(|i| !i.has_indexes_for(&selection));
            if missing && let Some(index) = self.shared.tenants.write().get_mut(tenant) {
                // Decodes every entity of the tenant once.
                crate::cpu_bound(|| index.build_indexes_for(&selection));
            }
        }
        match self.shared.tenants.read().get(tenant) {
            Some(index) => index.query(selection, filter, page),
            None => QueryPage {
                entities: Vec::new(),
                total: page.count.then_some(0),
            },
        }
    }

    fn scan(&self, tenant: &str, visit: &mut dyn FnMut(&Entity)) {
        if let Some(index) = self.shared.tenants.read().get(tenant) {
            index.scan(visit);
        }
    }

    fn expiries(&self, now: i64, limit: usize) -> crate::Expiries {
        let tenants = self.shared.tenants.read();
        let mut out = crate::Expiries::default();
        for (tenant, index) in tenants.iter() {
            out.next = match (out.next, index.next_expiry()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let room = limit.saturating_sub(out.due.len());
            out.due.extend(
                index
                    .expired(now)
                    .take(room)
                    .map(|id| (tenant.to_string(), id.clone())),
            );
        }
        out
    }

    fn type_infos(&self, tenant: &str) -> Vec<crate::TypeInfo> {
        self.shared
            .tenants
            .read()
            .get(tenant)
            .map(TenantIndex::type_infos)
            .unwrap_or_default()
    }

    fn attr_infos(&self, tenant: &str) -> Vec<crate::AttrInfo> {
        self.shared
            .tenants
            .read()
            .get(tenant)
            .map(TenantIndex::attr_infos)
            .unwrap_or_default()
    }

    fn tenant_exists(&self, tenant: &str) -> bool {
        self.shared.known_tenants.read().contains(tenant)
    }

    fn tenants(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .known_tenants
            .read()
            .iter()
            .map(|t| t.to_string())
            .collect();
        v.sort();
        v
    }

    fn entity_count(&self) -> usize {
        self.shared.entities.load(Ordering::Relaxed) as usize
    }

    fn put_record(
        &self,
        tenant: &str,
        collection: &str,
        key: &str,
        value: Option<serde_json::Value>,
    ) -> WriteFuture {
        let tx = self.tx.clone();
        let tenant: Box<str> = tenant.into();
        let record = RecordWrite {
            collection: collection.into(),
            key: key.into(),
            value,
        };
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            tx.send(Msg::Write(WriteRequest {
                tenant,
                ops: Vec::new(),
                records: vec![record],
                reply,
            }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
            rx.await.map_err(|_| StoreError::WriterGone)?
        })
    }

    fn changes(&self) -> ChangeReceiver {
        self.shared.changes.subscribe()
    }

    fn history_enabled(&self) -> bool {
        self.shared.history
    }

    fn history_entities(
        &self,
        tenant: &str,
        select: &mut dyn FnMut(&str, &[ngsi_model::Iri]) -> bool,
    ) -> Vec<HistoryEntity> {
        self.shared.history_index.read().entity_list(tenant, select)
    }

    fn history_entity(&self, tenant: &str, id: &str) -> Option<HistoryEntity> {
        self.shared.history_index.read().entity(tenant, id)
    }

    fn history(
        &self,
        tenant: &str,
        id: &str,
        req: HistoryRequest,
    ) -> StoreFuture<Option<Vec<AttrHistory>>> {
        let (series, recent) = {
            let index = self.shared.history_index.read();
            let Some(mut series) = index.series_of(tenant, id, req.attrs.as_deref()) else {
                return Box::pin(async { Ok(None) });
            };
            if let Some(wanted) = &req.datasets {
                series.retain(|(_, _, d)| wanted.iter().any(|w| w.as_deref() == d.as_deref()));
            }
            let recent = recent_of(&index, &series);
            (series, recent)
        };
        let names = self.shared.names.clone();
        self.read(move |conn| {
            crate::history::read_history(conn, &names, &series, &recent, &req).map(Some)
        })
    }

    fn history_has_instances(
        &self,
        tenant: &str,
        ids: Vec<Arc<str>>,
        req: HistoryRequest,
    ) -> StoreFuture<Vec<bool>> {
        let (per_entity, recent) = {
            let index = self.shared.history_index.read();
            let per_entity: Vec<Vec<crate::history::SeriesRef>> = ids
                .iter()
                .map(|id| {
                    let mut series = index
                        .series_of(tenant, id, req.attrs.as_deref())
                        .unwrap_or_default();
                    if let Some(wanted) = &req.datasets {
                        series.retain(|(_, _, d)| {
                            wanted.iter().any(|w| w.as_deref() == d.as_deref())
                        });
                    }
                    series
                })
                .collect();
            let recent: crate::history::RecentSeqs = per_entity
                .iter()
                .flatten()
                .filter_map(|(sid, _, _)| index.recent.get(sid).map(|v| (*sid, v.clone())))
                .collect();
            (per_entity, recent)
        };
        let names = self.shared.names.clone();
        self.read(move |conn| {
            crate::history::has_instances(conn, &names, &per_entity, &recent, &req)
        })
    }

    fn aggregate(
        &self,
        tenant: &str,
        id: &str,
        attr: ngsi_model::Iri,
        dataset: Option<Box<str>>,
        req: AggregateRequest,
    ) -> StoreFuture<Vec<AggregateBucket>> {
        let key = (
            Box::<str>::from(tenant),
            Arc::<str>::from(id),
            attr,
            dataset,
        );
        let Some(sid) = self.shared.history_index.read().lookup(&key) else {
            return Box::pin(async { Ok(Vec::new()) });
        };
        let period = req.period;
        let (from, to) = (req.range.from, req.range.to);
        let hreq = HistoryRequest {
            attrs: None,
            datasets: None,
            range: req.range,
            last_n: None,
            limit: usize::MAX,
        };
        let series = vec![(sid, key.2.clone(), key.3.as_deref().map(ngsi_model::iri))];
        let names = self.shared.names.clone();
        let from_instances =
            move |conn: &Connection,
                  series: &[crate::history::SeriesRef],
                  recent: &crate::history::RecentSeqs| {
                let h = crate::history::read_history(conn, &names, series, recent, &hreq)?;
                let instances: Vec<_> = h.into_iter().flat_map(|a| a.instances).collect();
                Ok::<_, StoreError>(crate::history::aggregate_instances(
                    &instances,
                    &hreq.range,
                    period.as_ref(),
                    req.distinct,
                ))
            };
        // Only the instant has a columnar copy, of series of numbers only; a
        // bounded range needs the points with an observedAt, which is every
        // point of most series.
        let cached = self.shared.num_cache.lock().get(sid);
        let bounded = req.range.bounded();
        let complete = move |s: &NumSeries| (!bounded || s.unobserved == 0) && s.others == 0;
        if req.range.property != TimeProperty::ObservedAt
            || cached.as_ref().is_some_and(|c| !complete(&c.read()))
        {
            let recent = recent_of(&self.shared.history_index.read(), &series);
            return self.read(move |conn| from_instances(conn, &series, &recent));
        }
        if let Some(cached) = cached {
            let buckets = cached
                .read()
                .aggregate(from, to, period.as_ref(), req.distinct);
            return Box::pin(async move { Ok(buckets) });
        }
        // Loading runs on the writer so that no commit slips between the
        // read of the rows and the copy joining the cache.
        self.job(move |w| {
            w.flush_recent()?;
            let loaded = NumSeries::load(&w.conn, &w.shared.names, sid)?;
            // Values of other kinds than numbers (strings, booleans,
            // arrays, relationships) aggregate from the instances.
            if !complete(&loaded) {
                return from_instances(&w.conn, &series, &Default::default());
            }
            let shared = w.shared.num_cache.lock().put(sid, loaded);
            let buckets = shared
                .read()
                .aggregate(from, to, period.as_ref(), req.distinct);
            Ok(buckets)
        })
    }

    fn write_history(&self, tenant: &str, op: HistoryOp) -> StoreFuture<Result<bool, NgsiError>> {
        if !self.shared.history {
            return Box::pin(async {
                Err(StoreError::Unsupported(
                    "history is switched off on this broker".into(),
                ))
            });
        }
        let tenant: Box<str> = tenant.into();
        self.job(move |w| w.history_op(&tenant, op))
    }

    fn expire_history(&self, before: i64) -> StoreFuture<u64> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (done, rx) = oneshot::channel();
            tx.send(Msg::Expire(Sweep::new(before, done)))
                .await
                .map_err(|_| StoreError::WriterGone)?;
            rx.await.map_err(|_| StoreError::WriterGone)?
        })
    }

    fn records(&self, tenant: &str, collection: &str) -> Vec<(String, serde_json::Value)> {
        let key: (Box<str>, Box<str>) = (tenant.into(), collection.into());
        self.shared
            .records
            .read()
            .get(&key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl SqliteStore {
    /// Runs `f` on the writer thread, between groups.
    fn job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<R, StoreError> + Send + 'static,
    ) -> StoreFuture<R> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let job = Box::new(move |w: &mut Writer| {
                let r = catch_unwind(AssertUnwindSafe(|| f(w))).unwrap_or_else(|_| {
                    Err(StoreError::Io(std::io::Error::other(
                        "a store job panicked",
                    )))
                });
                let _ = reply.send(r);
            });
            tx.send(Msg::Job(job))
                .await
                .map_err(|_| StoreError::WriterGone)?;
            rx.await.map_err(|_| StoreError::WriterGone)?
        })
    }

    /// Runs a read on a read-only connection of its own (WAL readers do not
    /// block the writer), or on the writer for an in-memory database.
    fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> StoreFuture<R> {
        let Some(path) = self.shared.path.clone() else {
            return self.job(move |w| f(&w.conn));
        };
        let shared = self.shared.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let pooled = shared.readers.lock().pop();
                let conn = match pooled {
                    Some(c) => c,
                    None => {
                        let c = Connection::open_with_flags(
                            &path,
                            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )?;
                        c.pragma_update(None, "cache_size", -16384)?;
                        c
                    }
                };
                let r = f(&conn);
                let mut pool = shared.readers.lock();
                if pool.len() < 4 {
                    pool.push(conn);
                }
                r
            })
            .await
            .map_err(|_| StoreError::Io(std::io::Error::other("a history read panicked")))?
        })
    }

    /// The database size: page count and page size (for measurements).
    pub fn disk_pages(&self) -> StoreFuture<(i64, i64)> {
        self.job(|w| {
            let count: i64 = w.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let size: i64 = w.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok((count, size))
        })
    }
}

/// The seqs of the recent rows of `series`.
fn recent_of(
    index: &HistoryIndex,
    series: &[crate::history::SeriesRef],
) -> crate::history::RecentSeqs {
    series
        .iter()
        .filter_map(|(sid, _, _)| index.recent.get(sid).map(|v| (*sid, v.clone())))
        .collect()
}

/// New databases free the pages of deleted rows incrementally (retention
/// needs it). An existing database made without it is rewritten once
/// (`VACUUM`) when retention is configured: that takes about as long as
/// copying the file.
fn prepare_auto_vacuum(conn: &Connection, retention: bool) -> Result<(), StoreError> {
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == 2 {
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    if tables > 0 && retention {
        tracing::info!("converting the database to incremental auto-vacuum (one VACUUM)");
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// Starts the thread that asks the writer to delete instances older than
/// `days`, at the start and then `every` after the end of each sweep; it
/// ends with the store.
fn spawn_retention(
    tx: mpsc::WeakSender<Msg>,
    days: u32,
    every: std::time::Duration,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("wuyang-retention".into())
        .spawn(move || {
            loop {
                let Some(sender) = tx.upgrade() else { return };
                let cutoff = ngsi_model::time::now_micros()
                    .saturating_sub(i64::from(days).saturating_mul(86_400_000_000));
                let (done, result) = oneshot::channel();
                if sender
                    .blocking_send(Msg::Expire(Sweep::new(cutoff, done)))
                    .is_err()
                {
                    return;
                }
                // Not held while the sweep runs: the store may stop meanwhile
                // (the writer then drops the sweep, and this thread ends).
                drop(sender);
                match result.blocking_recv() {
                    Ok(Ok(n)) if n > 0 => tracing::info!(deleted = n, "history retention"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "history retention failed"),
                    Err(_) => return,
                }
                std::thread::sleep(every);
            }
        })?;
    Ok(())
}

/// A retention sweep: deletes the instances older than `before` of every
/// series, in chunks of at most `SqliteConfig::history_sweep_rows` rows
/// (and as many series looked at), one transaction each. The writer runs
/// one chunk after each group or job, so a sweep of millions of rows never
/// holds back the writes for longer than one chunk, and the WAL of one
/// chunk stays small. Each chunk frees the pages its deletes emptied
/// (`PRAGMA incremental_vacuum(N)`) in its own transaction.
///
/// A sweep moves `history_recent` into `history` when it starts and then
/// deletes from `history` only: instances recorded while it runs (still in
/// `history_recent`) and series created meanwhile wait for the next sweep.
struct Sweep {
    before: i64,
    /// The series still to sweep in descending order (the next one last);
    /// `None` until the first chunk.
    series: Option<Vec<i64>>,
    /// Instances deleted so far.
    deleted: u64,
    /// Answered with `deleted` when the sweep is done.
    done: oneshot::Sender<Result<u64, StoreError>>,
}

impl Sweep {
    fn new(before: i64, done: oneshot::Sender<Result<u64, StoreError>>) -> Self {
        Self {
            before,
            series: None,
            deleted: 0,
            done,
        }
    }
}

impl Writer {
    /// Moves the recent instances into the clustered table (before the
    /// operations that read or change `history` alone).
    fn flush_recent(&mut self) -> Result<(), StoreError> {
        match self.recorder.as_mut() {
            Some(r) if r.recent_rows > 0 => {
                crate::history::flush_recent(&mut self.conn, r)?;
                self.shared.history_index.write().recent.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Runs one chunk of the first sweep waiting, and answers the sweep
    /// once it is done (or failed).
    fn sweep_step(&mut self) {
        let Some(mut sweep) = self.sweeps.pop_front() else {
            return;
        };
        match self.expire_chunk(&mut sweep) {
            Ok(false) => self.sweeps.push_front(sweep),
            Ok(true) => {
                if sweep.deleted > 0 {
                    // Hand the freed pages back to the file system now
                    // rather than at the next checkpoint.
                    if let Err(e) =
                        self.conn
                            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "checkpoint after retention failed");
                    }
                }
                let _ = sweep.done.send(Ok(sweep.deleted));
            }
            Err(e) => {
                // The chunks committed so far stay deleted; the next sweep
                // takes up the rest.
                let _ = sweep.done.send(Err(e));
            }
        }
    }

    /// Deletes the next chunk of `sweep` in one transaction and frees the
    /// pages it emptied; `true` when the sweep has no series left.
    ///
    /// The expired instances of a series are the first of its key range
    /// (series, t, seq): a chunk deletes them from the start of the range,
    /// the whole prefix `t < before` when it fits in the chunk, else up to
    /// the key of the last row that fits.
    fn expire_chunk(&mut self, sweep: &mut Sweep) -> Result<bool, StoreError> {
        let series = match &mut sweep.series {
            Some(series) => series,
            None => {
                // The recent rows are not in `history`: move them first.
                self.flush_recent()?;
                let mut all = self.shared.history_index.read().all_series();
                // In key order (the next one last), so that the chunks walk
                // the table from its start.
                all.sort_unstable_by(|a, b| b.cmp(a));
                sweep.series.insert(all)
            }
        };
        let before = sweep.before;
        let limit = self.sweep_rows;
        let tx = self.conn.transaction()?;
        let free_before = freelist_count(&tx)?;
        let mut deleted = 0usize;
        let mut touched: Vec<i64> = Vec::new();
        {
            let mut last_key = tx.prepare_cached(
                "SELECT t, seq FROM history WHERE series = ?1 AND t < ?2 \
                 ORDER BY t, seq LIMIT 1 OFFSET ?3",
            )?;
            let mut delete_all =
                tx.prepare_cached("DELETE FROM history WHERE series = ?1 AND t < ?2")?;
            let mut delete_to = tx.prepare_cached(
                // The explicit `t <= ?2` bounds the key range searched.
                "DELETE FROM history WHERE series = ?1 AND t <= ?2 AND (t < ?2 OR seq <= ?3)",
            )?;
            let mut looked = 0usize;
            while deleted < limit && looked < limit {
                let Some(&sid) = series.last() else { break };
                looked += 1;
                // Instances in a genesis row move to `history` first when
                // some of them expired.
                crate::genesis::explode(&tx, &self.shared.names, sid, Some(before))?;
                let room = limit - deleted;
                // The key of the room-th expired row: when there is one,
                // the series has at least as many expired rows as fit.
                let last: Option<(i64, i64)> = last_key
                    .query_row(
                        params![sid, before, i64::try_from(room - 1).unwrap_or(i64::MAX)],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let n = match last {
                    Some((t, seq)) => delete_to.execute(params![sid, t, seq])?,
                    None => {
                        series.pop();
                        delete_all.execute(params![sid, before])?
                    }
                };
                if n > 0 {
                    touched.push(sid);
                    deleted += n;
                }
            }
        }
        let freed = freelist_count(&tx)? - free_before;
        if freed > 0 {
            // Only the pages this chunk emptied, so that the pages moved
            // (and the WAL of the chunk) stay of the chunk's size. Each step
            // of the pragma frees one page: run it to the end.
            let mut vacuum = tx.prepare(&format!("PRAGMA incremental_vacuum({freed})"))?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
        }
        tx.commit()?;
        let finished = series.is_empty();
        sweep.deleted += deleted as u64;
        if !touched.is_empty() {
            // The columnar copies of the series touched hold deleted rows.
            let mut cache = self.shared.num_cache.lock();
            for sid in touched {
                cache.remove(sid);
            }
        }
        // Like a group's commit: start or finish a checkpoint once the WAL
        // has grown, so that a long sweep does not grow it without bound.
        self.after_commit();
        Ok(finished)
    }

    /// Applies one write of the temporal API in its own transaction.
    fn history_op(
        &mut self,
        tenant: &str,
        op: HistoryOp,
    ) -> Result<Result<bool, NgsiError>, StoreError> {
        self.flush_recent()?;
        let Some(recorder) = self.recorder.as_mut() else {
            return Ok(Err(NgsiError::new(
                ngsi_model::ErrorKind::OperationNotSupported,
                "history is switched off on this broker",
            )));
        };
        let mut overlay = HistoryOverlay::default();
        let mut removed: Vec<i64> = Vec::new();
        let mut removed_from: Option<Arc<str>> = None;
        let mut removed_entity: Option<Arc<str>> = None;
        let mut invalidate: Vec<i64> = Vec::new();
        // Instances added to a tenant make it exist, as entities do: its
        // history can be read back (also after a restart).
        let new_tenant = matches!(op, HistoryOp::Add { .. })
            && !self.shared.known_tenants.read().contains(tenant);
        let tx = self.conn.transaction()?;
        let result = {
            let index = self.shared.history_index.read();
            let not_found = |id: &str| NgsiError::not_found(format!("entity {id} has no history"));
            let series_of = |id: &str, attr: &str| -> Vec<(i64, Option<Box<str>>)> {
                index
                    .series_of(tenant, id, None)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, a, _)| **a == *attr)
                    .map(|(s, _, d)| (s, d.as_deref().map(Box::from)))
                    .collect()
            };
            match op {
                HistoryOp::Add { id, types, attrs } => {
                    let known = index
                        .entities
                        .get(tenant)
                        .is_some_and(|m| m.contains_key(&*id));
                    if !known && types.is_empty() {
                        Err(NgsiError::bad_data("a new temporal entity needs a type"))
                    } else {
                        recorder.note_types(&tx, &index, &mut overlay, tenant, &id, &types)?;
                        // An instance observed at the same instant as one
                        // recorded before replaces it: those are deleted
                        // first (all rows are in `history`, flushed above),
                        // so instances of this operation never replace
                        // each other.
                        let mut placed = Vec::new();
                        for (name, instances) in attrs {
                            for inst in instances {
                                let known = index.series_list(tenant, &id);
                                let sid = recorder.series(
                                    &tx,
                                    &index,
                                    &mut overlay,
                                    known,
                                    tenant,
                                    &id,
                                    &name,
                                    inst.dataset_id.as_deref(),
                                )?;
                                if let Some(t) = inst
                                    .observed_at
                                    .as_deref()
                                    .and_then(ngsi_model::time::parse_datetime)
                                {
                                    crate::genesis::explode(&tx, &self.shared.names, sid, None)?;
                                    tx.prepare_cached(
                                        "DELETE FROM history WHERE series = ?1 AND t = ?2 AND modified IS NOT NULL",
                                    )?
                                    .execute(params![sid, t])?;
                                }
                                placed.push((sid, inst));
                            }
                        }
                        for (sid, inst) in placed {
                            recorder.insert(
                                &tx,
                                &mut overlay,
                                sid,
                                Some(&inst),
                                inst.modified_at,
                                None,
                            )?;
                            invalidate.push(sid);
                        }
                        Ok(!known)
                    }
                }
                HistoryOp::DeleteEntity { id } => match index.series_of(tenant, &id, None) {
                    None => Err(not_found(&id)),
                    Some(series) => {
                        for (sid, _, _) in series {
                            delete_series(&tx, &self.shared.names, sid)?;
                            removed.push(sid);
                        }
                        tx.execute(
                            "DELETE FROM history_entities WHERE tenant = ?1 AND id = ?2",
                            params![tenant, &*id],
                        )?;
                        removed_entity = Some(id);
                        Ok(false)
                    }
                },
                HistoryOp::DeleteAttr { id, attr, dataset } => {
                    let series: Vec<i64> = series_of(&id, &attr)
                        .into_iter()
                        .filter(|(_, d)| dataset.as_ref().is_none_or(|want| want == d))
                        .map(|(s, _)| s)
                        .collect();
                    if series.is_empty() {
                        Err(NgsiError::not_found(format!(
                            "entity {id} has no history of attribute {attr}"
                        )))
                    } else {
                        for sid in series {
                            delete_series(&tx, &self.shared.names, sid)?;
                            removed.push(sid);
                        }
                        removed_from = Some(id.clone());
                        Ok(false)
                    }
                }
                HistoryOp::DeleteInstance { id, attr, instance } => {
                    let mut found = false;
                    for (sid, _) in series_of(&id, &attr) {
                        crate::genesis::explode(&tx, &self.shared.names, sid, None)?;
                        let n = tx.execute(
                            "DELETE FROM history WHERE series = ?1 AND seq = ?2",
                            params![sid, instance],
                        )?;
                        if n == 0 {
                            continue;
                        }
                        found = true;
                        // The last instance takes its series with it: an
                        // attribute without instances is no attribute.
                        let left: bool = tx
                            .prepare_cached(
                                "SELECT EXISTS(SELECT 1 FROM history WHERE series = ?1)",
                            )?
                            .query_row([sid], |r| r.get(0))?;
                        if left {
                            invalidate.push(sid);
                        } else {
                            delete_series(&tx, &self.shared.names, sid)?;
                            removed.push(sid);
                            removed_from = Some(id.clone());
                        }
                    }
                    if found {
                        Ok(false)
                    } else {
                        Err(instance_not_found(&id, instance))
                    }
                }
                HistoryOp::ModifyInstance {
                    id,
                    attr,
                    instance,
                    value,
                } => {
                    let mut found = false;
                    let mut moved = None;
                    for (sid, dataset) in series_of(&id, &attr) {
                        crate::genesis::explode(&tx, &self.shared.names, sid, None)?;
                        let row: Option<(i64, Option<i64>, Option<i64>)> = tx
                            .query_row(
                                "SELECT t, modified, created FROM history WHERE series = ?1 AND seq = ?2",
                                params![sid, instance],
                                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                            )
                            .optional()?;
                        let Some((t, modified, created)) = row else {
                            continue;
                        };
                        // An instance stays in its series: a datasetId
                        // given is the one it has.
                        if let Some(given) = value.dataset_id.as_deref()
                            && Some(given) != dataset.as_deref()
                        {
                            moved = Some(NgsiError::bad_data(format!(
                                "instance urn:ngsi-ld:instance:{instance} has {}, not datasetId {given}",
                                dataset.map_or("no datasetId".to_string(), |d| format!(
                                    "datasetId {d}"
                                ))
                            )));
                            break;
                        }
                        // The instance keeps its place in time; only its
                        // content and modifiedAt change.
                        let (_, _, _, num, doc) =
                            crate::history::encode_instance(Some(&value), t, None);
                        let now = ngsi_model::time::now_micros();
                        let row = crate::history::Row {
                            series: sid,
                            t,
                            seq: instance,
                            modified: Some(now),
                            created: created.or(Some(modified.unwrap_or(t))),
                            num,
                            doc,
                        };
                        crate::history::insert_row(&tx, &row, false)?;
                        invalidate.push(sid);
                        found = true;
                        break;
                    }
                    match moved {
                        Some(e) => Err(e),
                        None if found => Ok(false),
                        None => Err(instance_not_found(&id, instance)),
                    }
                }
            }
        };
        if result.is_err() {
            drop(tx);
            return Ok(result);
        }
        // Any failure from here on rolls back a counter the transaction
        // may have saved: the next commit that records must save it again.
        let committed = (|| -> Result<usize, StoreError> {
            crate::history::finish(&tx, &mut overlay)?;
            if overlay.recorded > 0 {
                recorder.save_seq(&tx)?;
            }
            let new_names = persist_names(&tx, &self.shared.names, self.persisted_names)?;
            if new_tenant {
                tx.execute(ADD_TENANT, [tenant])?;
            }
            tx.commit()?;
            Ok(new_names)
        })();
        let new_names = match committed {
            Ok(n) => n,
            Err(e) => {
                recorder.commit_failed();
                return Err(e);
            }
        };
        self.persisted_names += new_names;
        if new_tenant {
            self.shared.known_tenants.write().insert(tenant.into());
        }
        self.shared
            .metrics
            .history_instances
            .inc_by(overlay.recorded as u64);
        {
            let mut cache = self.shared.num_cache.lock();
            for sid in removed.iter().chain(&invalidate) {
                cache.remove(*sid);
            }
        }
        if !removed.is_empty() || removed_entity.is_some() {
            let mut index = self.shared.history_index.write();
            if let Some(id) = removed_from.as_ref().or(removed_entity.as_ref()) {
                for sid in &removed {
                    index.remove_series(tenant, id, *sid);
                }
            }
            if let Some(id) = &removed_entity
                && let Some(m) = index.entities.get_mut(tenant)
            {
                m.remove(&**id);
            }
        }
        // Numbers of the overlay need not be appended: their series were
        // dropped from the cache above.
        overlay.numbers.clear();
        crate::history::publish(&self.shared.history_index, &self.shared.num_cache, overlay);
        Ok(result)
    }
}

fn instance_not_found(id: &str, instance: i64) -> NgsiError {
    NgsiError::not_found(format!(
        "entity {id} has no instance urn:ngsi-ld:instance:{instance} of that attribute"
    ))
}

/// Pages on the free list of the database.
fn freelist_count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
}

fn delete_series(tx: &Connection, names: &Arc<Names>, sid: i64) -> Result<(), StoreError> {
    crate::genesis::explode(tx, names, sid, None)?;
    tx.execute("DELETE FROM history WHERE series = ?1", [sid])?;
    crate::history::delete_series_row(tx, names, sid)
}

/// Inserts the names numbered from `from` on into `names`, in the
/// transaction of the rows that use them; returns how many.
fn persist_names(tx: &Connection, names: &Names, from: usize) -> Result<usize, StoreError> {
    let fresh = names.since(from);
    if !fresh.is_empty() {
        let mut insert = tx.prepare_cached("INSERT INTO names (id, name) VALUES (?1, ?2)")?;
        for (n, name) in &fresh {
            insert.execute(params![n, &**name])?;
        }
    }
    Ok(fresh.len())
}

/// The name table, in number order (numbers are dense from 0).
fn load_names(conn: &Connection) -> Result<Names, StoreError> {
    let mut stmt = conn.prepare("SELECT id, name FROM names ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut list = Vec::new();
    while let Some(row) = rows.next()? {
        let (id, name): (i64, String) = (row.get(0)?, row.get(1)?);
        if usize::try_from(id).ok() != Some(list.len()) {
            return Err(StoreError::Decode {
                id: "<names>".into(),
                reason: format!("name number {id} out of sequence"),
            });
        }
        list.push(ngsi_model::iri(&name));
    }
    Ok(Names::from_list(list))
}

/// Loads every stored entity into the indexes. Reading rows, decoding them
/// and indexing them run as a three-stage pipeline on their own threads, so
/// a restart uses both cores.
fn load_entities(
    conn: &Connection,
    names: &Arc<Names>,
    tenants: &mut HashMap<Box<str>, TenantIndex>,
) -> Result<u64, StoreError> {
    use std::sync::mpsc::sync_channel;
    const CHUNK: usize = 4096;
    type Raw = Vec<(Box<str>, String, i64, Vec<u8>)>;
    type Decoded = Vec<(Box<str>, Entity, i64, Vec<u8>)>;
    let (raw_tx, raw_rx) = sync_channel::<Raw>(4);
    let (dec_tx, dec_rx) = sync_channel::<Result<Decoded, StoreError>>(4);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for chunk in raw_rx {
                let decoded: Result<Decoded, StoreError> = chunk
                    .into_iter()
                    .map(|(tenant, id, row, bytes)| {
                        decode(names, &id, &bytes).map(|e| (tenant, e, row, bytes))
                    })
                    .collect();
                let failed = decoded.is_err();
                if dec_tx.send(decoded).is_err() || failed {
                    break;
                }
            }
        });
        let indexer = scope.spawn(
            move || -> Result<(u64, HashMap<Box<str>, TenantIndex>), StoreError> {
                let mut local: HashMap<Box<str>, TenantIndex> = HashMap::new();
                let mut count = 0u64;
                for chunk in dec_rx {
                    for (tenant, entity, row, bytes) in chunk? {
                        local
                            .entry(tenant)
                            .or_insert_with(|| TenantIndex::new(names.clone()))
                            .put(&entity, row, bytes.into_boxed_slice());
                        count += 1;
                        // Progress for operators: a large city takes seconds.
                        if count.is_multiple_of(250_000) {
                            tracing::info!(entities = count, "loading the store");
                        }
                    }
                }
                Ok((count, local))
            },
        );
        let read = (|| -> Result<(), StoreError> {
            let mut stmt = conn.prepare("SELECT tenant, id, row, doc FROM entities")?;
            let mut rows = stmt.query([])?;
            let mut chunk: Raw = Vec::with_capacity(CHUNK);
            while let Some(row) = rows.next()? {
                chunk.push((
                    row.get::<_, String>(0)?.into(),
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                ));
                if chunk.len() == CHUNK
                    && raw_tx
                        .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                        .is_err()
                {
                    break;
                }
            }
            if !chunk.is_empty() {
                let _ = raw_tx.send(chunk);
            }
            Ok(())
        })();
        drop(raw_tx);
        let (count, loaded) = indexer.join().map_err(|_| StoreError::Decode {
            id: "<load>".into(),
            reason: "the indexing thread panicked".into(),
        })??;
        read?;
        *tenants = loaded;
        Ok(count)
    })
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    max_group_ops: usize,
    /// Records history; `None` when history is off.
    recorder: Option<Recorder>,
    /// The checkpoint thread; `None` in memory (no WAL).
    checkpoint: Option<Checkpointer>,
    /// Names numbered below this are in the `names` table.
    persisted_names: usize,
    /// The row the next new entity is stored in: rows only grow, so an
    /// insert appends to the table.
    next_row: i64,
    /// Retention sweeps asked for, the running one first.
    sweeps: VecDeque<Sweep>,
    /// `SqliteConfig::history_sweep_rows`.
    sweep_rows: usize,
    /// The entities written last, decoded (see [`RecentEntities`]).
    recent: RecentEntities,
}

/// The committed state of the entities written last, decoded: an update
/// of an entity updated a moment ago (a sensor's next reading) finds it
/// here instead of decoding its stored encoding again.
///
/// Invariant: an entity held here is the committed, published one. Only
/// [`Writer::publish`] changes it (the same step that changes the
/// indexes), so a group that fails to commit leaves it as it was.
///
/// Two generations approximate least-recently-used at the cost of a hash
/// lookup: an entity found in the older one moves to the newer; once the
/// newer holds [`RECENT_ENTITIES`], it becomes the older and the older is
/// dropped. At most twice that many entities are held: a template entity
/// takes about 6 KB decoded and 1 KB encoded (the encoding is kept for the
/// next version's, see [`Recent`]), so the bound keeps the cache near
/// 14 MB (at 4,096 a generation the server's resident memory after the
/// benchmark grew by 50 MB). The index holds its own exact-size copy of
/// the encoding: a copy of a kilobyte at publish, against re-encoding the
/// attributes an update left alone.
///
/// The dropped generation is freed on a thread of its own
/// (`wuyang-reaper`): freeing a thousand entities made by the request
/// threads took the writer 7% of its time on the create benchmark, and
/// every request of the next group waited for it.
#[derive(Default)]
struct RecentEntities {
    newer: FoldMap<EntityKey, Recent>,
    older: FoldMap<EntityKey, Recent>,
    /// Where dropped generations go; `None` frees them in place (when the
    /// thread could not be started, or has ended).
    reaper: Option<std::sync::mpsc::Sender<FoldMap<EntityKey, Recent>>>,
}

/// A recent entity and its encoding: the next version's encoding copies
/// the attributes it shares with this one
/// ([`crate::codec::encode_entity_reusing`]).
type Recent = (Arc<Entity>, Arc<crate::codec::Encoded>);

/// Entities in one generation of [`RecentEntities`].
const RECENT_ENTITIES: usize = 1024;

impl RecentEntities {
    fn get(&mut self, key: &EntityKey) -> Option<Recent> {
        if let Some(e) = self.newer.get(key) {
            return Some(e.clone());
        }
        let (key, e) = self.older.remove_entry(key)?;
        self.put(key, e.clone());
        Some(e)
    }

    /// A cache whose dropped generations are freed on a reaper thread.
    fn with_reaper() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<FoldMap<EntityKey, Recent>>();
        let reaper = std::thread::Builder::new()
            .name("wuyang-reaper".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx);
        Self {
            reaper,
            ..Self::default()
        }
    }

    fn put(&mut self, key: EntityKey, entity: Recent) {
        if self.newer.len() >= RECENT_ENTITIES && !self.newer.contains_key(&key) {
            let dropped = std::mem::replace(&mut self.older, std::mem::take(&mut self.newer));
            if let Some(reaper) = &self.reaper
                && let Err(returned) = reaper.send(dropped)
            {
                self.reaper = None;
                drop(returned);
            }
        }
        self.older.remove(&key);
        self.newer.insert(key, entity);
    }

    fn remove(&mut self, key: &EntityKey) {
        self.newer.remove(key);
        self.older.remove(key);
    }
}

thread_local! {
    /// Frames in the WAL after the last commit of this thread's connection
    /// (set by the WAL hook, which runs on the committing thread: the
    /// writer's).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// Copies the WAL into the database on its own connection and thread, so
/// that the writer's commits rarely pay for a checkpoint.
///
/// A passive checkpoint copies the frames committed before it started,
/// beside the writer and without blocking it. The log restarts from its
/// beginning only at a write that finds all of it copied, which a busy
/// writer never does: it keeps adding frames while the thread copies. So
/// once the thread is done, the writer copies the few frames left itself,
/// and its next commit restarts the log.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
    /// WAL frames that start a checkpoint (`SqliteConfig::checkpoint_frames`).
    frames: i32,
    /// `IDLE`, `RUNNING` (asked for or copying) or `DONE`.
    state: Arc<std::sync::atomic::AtomicU8>,
    /// The checkpoint thread, joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

const CHECKPOINT_IDLE: u8 = 0;
const CHECKPOINT_RUNNING: u8 = 1;
const CHECKPOINT_DONE: u8 = 2;

impl Checkpointer {
    fn spawn(path: &std::path::Path, frames: i32) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let state = Arc::new(std::sync::atomic::AtomicU8::new(CHECKPOINT_IDLE));
        let done = state.clone();
        let thread = std::thread::Builder::new()
            .name("wuyang-checkpoint".into())
            .spawn(move || {
                // Ends when the writer, the only sender, stops.
                while rx.recv().is_ok() {
                    passive_checkpoint(&conn);
                    done.store(CHECKPOINT_DONE, Ordering::Release);
                }
            })?;
        Ok(Self {
            wake,
            frames: frames.max(1),
            state,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and waits until it has closed its connection (see
    /// `SqliteStore`'s `Drop`).
    fn drop(&mut self) {
        let (unused, _) = std::sync::mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.wake, unused));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn passive_checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "checkpoint failed");
    }
}

/// A tenant and an entity id.
type EntityKey = (Box<str>, Arc<str>);

/// An entity with its stored encoding (and where its attributes lie in
/// it) and its row.
type Encoded = (Arc<Entity>, Arc<crate::codec::Encoded>, i64);

/// The state of one group of writes before it is published.
#[derive(Default)]
struct Overlay {
    /// The new state of each entity written: the entity and its encoding,
    /// or `None` for a deletion.
    changed: FoldMap<EntityKey, Option<Encoded>>,
    /// The committed state of each entity written, as read by its first op
    /// in the group: publishing unlinks it from the indexes without
    /// decoding it again.
    before: FoldMap<EntityKey, Option<Arc<Entity>>>,
    new_tenants: Vec<Box<str>>,
    records: Vec<(Box<str>, RecordWrite)>,
    /// Every change in application order, when someone listens.
    events: Option<Vec<EntityChange>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            // While a sweep runs, one chunk of it follows each group or job,
            // so that waiting writes wait for one chunk at most.
            let msg = if self.sweeps.is_empty() {
                match rx.blocking_recv() {
                    Some(msg) => Some(msg),
                    None => break,
                }
            } else {
                match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Empty) => None,
                    // The store is gone: what a sweep left waits for the
                    // next one.
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            if let Some(msg) = msg {
                self.handle(msg, &mut rx);
            }
            self.sweep_step();
        }
        tracing::debug!("store writer stopped");
    }

    /// Handles `first` and, if it is a write, every write waiting behind
    /// it (up to `max_group_ops`) in one group, then the job that ended the
    /// group, if any.
    fn handle(&mut self, first: Msg, rx: &mut mpsc::Receiver<Msg>) {
        let first = match first {
            Msg::Write(w) => w,
            Msg::Job(job) => {
                self.run_job(job);
                return;
            }
            Msg::Expire(sweep) => {
                self.sweeps.push_back(sweep);
                return;
            }
        };
        let mut ops = first.ops.len();
        let mut group = vec![first];
        let mut job = None;
        while ops < self.max_group_ops {
            match rx.try_recv() {
                Ok(Msg::Write(req)) => {
                    ops += req.ops.len();
                    group.push(req);
                }
                Ok(Msg::Job(j)) => {
                    job = Some(j);
                    break;
                }
                // Starting a sweep costs nothing: its first chunk runs
                // after the group.
                Ok(Msg::Expire(sweep)) => self.sweeps.push_back(sweep),
                Err(_) => break,
            }
        }
        self.commit_group(group);
        if let Some(job) = job {
            self.run_job(job);
        }
    }

    /// Runs a job, then the checkpoint step: jobs commit too (temporal
    /// writes, the move of the recent history), and the WAL hook has
    /// replaced SQLite's automatic checkpoint, so without it a broker fed
    /// only through the temporal API would grow its log without bound.
    fn run_job(&mut self, job: Box<dyn FnOnce(&mut Writer) + Send>) {
        job(self);
        self.after_commit();
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let started = Instant::now();
        let ops: usize = group.iter().map(|r| r.ops.len()).sum();
        let mut overlay = Overlay {
            events: (self.shared.changes.receiver_count() > 0).then(Vec::new),
            changed: FoldMap::with_capacity_and_hasher(ops, Default::default()),
            before: FoldMap::with_capacity_and_hasher(ops, Default::default()),
            ..Overlay::default()
        };
        let mut tenant_names: FoldMap<Box<str>, Arc<str>> = FoldMap::default();
        let mut results: Vec<Vec<Result<Outcome, NgsiError>>> = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut op_count = 0usize;
        let mut history = HistoryOverlay {
            defer_rows: true,
            ..HistoryOverlay::default()
        };
        let recorder = &mut self.recorder;
        let recent = &mut self.recent;
        let persisted_names = self.persisted_names;
        let next_row = &mut self.next_row;
        let conn = &self.conn;
        let outcome = (|| -> Result<usize, StoreError> {
            // BEGIN and COMMIT as cached statements: rusqlite's Transaction
            // parses both afresh for every group, which cost a single-write
            // group 5% of the writer's time. A failure rolls back below.
            conn.prepare_cached("BEGIN")?.execute([])?;
            let tx = conn;
            {
                // Rows are found by number (the index holds each entity's
                // row): an existing row is updated in place, a new entity
                // appended.
                // Each prepared on first use: a group of updates uses one of
                // the six, and taking a statement from the cache and giving
                // it back costs hundreds of instructions.
                let mut insert = LazyStatement::new(
                    tx,
                    "INSERT OR REPLACE INTO entities (row, tenant, id, doc) VALUES (?1, ?2, ?3, ?4)",
                );
                let mut update =
                    LazyStatement::new(tx, "UPDATE entities SET doc = ?2 WHERE row = ?1");
                let mut del = LazyStatement::new(tx, "DELETE FROM entities WHERE row = ?1");
                let mut add_tenant = LazyStatement::new(tx, ADD_TENANT);
                let mut put_record = LazyStatement::new(
                    tx,
                    "INSERT OR REPLACE INTO records (tenant, collection, key, value) VALUES (?1, ?2, ?3, ?4)",
                );
                let mut del_record = LazyStatement::new(
                    tx,
                    "DELETE FROM records WHERE tenant = ?1 AND collection = ?2 AND key = ?3",
                );
                let committed = self.shared.tenants.read();
                let known = self.shared.known_tenants.read();
                let history_index = self.shared.history_index.read();
                for req in group {
                    // Take the reply first: if a statement fails below, every
                    // caller of the group still gets the commit error.
                    replies.push(req.reply);
                    for r in req.records {
                        match &r.value {
                            Some(v) => put_record.get()?.execute(params![
                                &*req.tenant,
                                &*r.collection,
                                &*r.key,
                                v.to_string()
                            ])?,
                            None => del_record.get()?.execute(params![
                                &*req.tenant,
                                &*r.collection,
                                &*r.key
                            ])?,
                        };
                        // A record creates its tenant, as an entity does.
                        if r.value.is_some()
                            && !known.contains(&req.tenant)
                            && !overlay.new_tenants.contains(&req.tenant)
                        {
                            add_tenant.get()?.execute([&*req.tenant])?;
                            overlay.new_tenants.push(req.tenant.clone());
                        }
                        overlay.records.push((req.tenant.clone(), r));
                    }
                    let mut these = Vec::with_capacity(req.ops.len());
                    for op in req.ops {
                        op_count += 1;
                        let key = (req.tenant.clone(), op.id.clone());
                        // The latest state, and its encoding when at hand.
                        let (current, row, prev): (
                            Option<Arc<Entity>>,
                            Option<i64>,
                            Option<Arc<crate::codec::Encoded>>,
                        ) = match overlay.changed.get(&key) {
                            Some(Some((e, c, row))) => {
                                (Some(e.clone()), Some(*row), Some(c.clone()))
                            }
                            Some(None) => (None, None, None),
                            None => {
                                let tenant_index = committed.get(&*req.tenant);
                                let (held, prev) = match (recent.get(&key), tenant_index) {
                                    (Some((e, c)), _) => (Ok(Some(e)), Some(c)),
                                    (None, Some(t)) => (t.lookup(&op.id), None),
                                    (None, None) => (Ok(None), None),
                                };
                                let held = match held {
                                    Ok(held) => held,
                                    Err(e) => {
                                        // A held entity that does not decode is
                                        // never treated as absent (that would
                                        // orphan its index entries).
                                        these.push(Err(NgsiError::internal(e.to_string())));
                                        continue;
                                    }
                                };
                                overlay
                                    .before
                                    .entry(key.clone())
                                    .or_insert_with(|| held.clone());
                                // An entity the index does not hold has no row
                                // (a second lookup would miss again).
                                let row = held
                                    .as_ref()
                                    .and_then(|_| tenant_index.and_then(|t| t.row_of(&op.id)));
                                (held, row, prev)
                            }
                        };
                        let existed = current.is_some();
                        let before = overlay.events.is_some().then(|| current.clone()).flatten();
                        let applied =
                            catch_unwind(AssertUnwindSafe(|| (op.apply)(current.as_deref())))
                                .unwrap_or_else(|_| Err(NgsiError::internal("operation panicked")));
                        match applied {
                            Ok(change) => {
                                match change.next {
                                    Next::Keep => {}
                                    Next::Put(entity) => {
                                        let encoded = crate::codec::encode_entity_reusing(
                                            &self.shared.names,
                                            &entity,
                                            current.as_deref().zip(prev.as_deref()),
                                        );
                                        let bytes = &encoded.bytes;
                                        let row = match row {
                                            Some(row) => row,
                                            None => {
                                                *next_row += 1;
                                                *next_row - 1
                                            }
                                        };
                                        // Never 0 rows while memory and
                                        // disk agree; if not, insert.
                                        let updated = existed
                                            && update.get()?.execute(params![row, &bytes])? == 1;
                                        if !updated {
                                            insert.get()?.execute(params![
                                                row,
                                                &*req.tenant,
                                                &*op.id,
                                                &bytes
                                            ])?;
                                        }
                                        if let Some(r) = recorder.as_mut() {
                                            r.record(
                                                tx,
                                                &history_index,
                                                &mut history,
                                                &req.tenant,
                                                &op.id,
                                                current.as_deref(),
                                                Some(&entity),
                                                entity.modified_at,
                                                Some(&encoded.bytes),
                                            )?;
                                        }
                                        let entity = Arc::new(entity);
                                        if let Some(events) = &mut overlay.events {
                                            events.push(EntityChange {
                                                tenant: tenant_arc(&mut tenant_names, &req.tenant),
                                                id: op.id.clone(),
                                                before,
                                                after: Some(entity.clone()),
                                            });
                                        }
                                        overlay
                                            .changed
                                            .insert(key, Some((entity, Arc::new(encoded), row)));
                                        if !known.contains(&req.tenant)
                                            && !overlay.new_tenants.contains(&req.tenant)
                                        {
                                            add_tenant.get()?.execute([&*req.tenant])?;
                                            overlay.new_tenants.push(req.tenant.clone());
                                        }
                                    }
                                    Next::Delete => {
                                        if let Some(row) = row {
                                            del.get()?.execute([row])?;
                                        }
                                        if let Some(r) = recorder.as_mut() {
                                            r.record(
                                                tx,
                                                &history_index,
                                                &mut history,
                                                &req.tenant,
                                                &op.id,
                                                current.as_deref(),
                                                None,
                                                ngsi_model::time::now_micros(),
                                                None,
                                            )?;
                                        }
                                        if let Some(events) = &mut overlay.events
                                            && before.is_some()
                                        {
                                            events.push(EntityChange {
                                                tenant: tenant_arc(&mut tenant_names, &req.tenant),
                                                id: op.id.clone(),
                                                before,
                                                after: None,
                                            });
                                        }
                                        overlay.changed.insert(key, None);
                                    }
                                }
                                these.push(Ok(Outcome {
                                    created: !existed,
                                    report: change.report,
                                }));
                            }
                            Err(e) => these.push(Err(e)),
                        }
                    }
                    results.push(these);
                }
            }
            crate::history::finish(tx, &mut history)?;
            if history.recorded > 0
                && let Some(r) = recorder.as_mut()
            {
                r.save_seq(tx)?;
            }
            // The names the group's encodings and series numbered first, in
            // the same transaction as they.
            let new_names = persist_names(tx, &self.shared.names, persisted_names)?;
            tx.prepare_cached("COMMIT")?.execute([])?;
            Ok(new_names)
        })();
        if outcome.is_err()
            && !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a failed group failed");
        }
        match outcome {
            Ok(new_names) => {
                self.persisted_names += new_names;
                self.shared
                    .metrics
                    .history_instances
                    .inc_by(history.recorded as u64);
                crate::history::publish(
                    &self.shared.history_index,
                    &self.shared.num_cache,
                    history,
                );
                self.publish(overlay);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                self.after_commit();
                // After the answers: the move delays the next group only.
                if self
                    .recorder
                    .as_ref()
                    .is_some_and(|r| r.recent_rows >= crate::history::FLUSH_ROWS)
                    && let Err(e) = self.flush_recent()
                {
                    tracing::error!(error = %e, "moving recent history failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the group is rejected");
                if let Some(r) = self.recorder.as_mut() {
                    r.commit_failed();
                }
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Io(std::io::Error::other(e.to_string()))));
                }
            }
        }
        let m = &self.shared.metrics;
        m.commits.inc();
        m.commit_ops.observe(op_count as f64);
        m.commit_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Starts a checkpoint on the checkpoint thread once the WAL has grown,
    /// and finishes it here once that thread is done (see
    /// [`Checkpointer`]). Should the thread fall far behind, the writer
    /// checkpoints alone.
    fn after_commit(&mut self) {
        let frames = WAL_FRAMES.with(std::cell::Cell::get);
        let Some(checkpoint) = &self.checkpoint else {
            return;
        };
        if frames < checkpoint.frames {
            return;
        }
        let state = checkpoint.state.load(Ordering::Acquire);
        if state == CHECKPOINT_IDLE {
            checkpoint
                .state
                .store(CHECKPOINT_RUNNING, Ordering::Release);
            let _ = checkpoint.wake.try_send(());
        }
        // Far behind: four times the threshold.
        if state == CHECKPOINT_DONE || frames / 4 >= checkpoint.frames {
            passive_checkpoint(&self.conn);
            WAL_FRAMES.with(|f| f.set(0));
            if state == CHECKPOINT_DONE {
                checkpoint.state.store(CHECKPOINT_IDLE, Ordering::Release);
            }
        }
    }

    fn publish(&mut self, mut overlay: Overlay) {
        let events = overlay.events.take();
        if !overlay.records.is_empty() {
            let mut records = self.shared.records.write();
            for (tenant, r) in overlay.records {
                let map = records.entry((tenant, r.collection)).or_default();
                match r.value {
                    Some(v) => {
                        map.insert(r.key.into(), v);
                    }
                    None => {
                        map.remove(&*r.key);
                    }
                }
            }
        }
        if !overlay.new_tenants.is_empty() {
            self.shared
                .known_tenants
                .write()
                .extend(overlay.new_tenants);
        }
        let mut tenants = self.shared.tenants.write();
        let mut delta: i64 = 0;
        let mut before = overlay.before;
        for (key, state) in overlay.changed {
            let old = before.remove(&key).flatten();
            let index = tenants
                .entry(key.0.clone())
                .or_insert_with(|| TenantIndex::new(self.shared.names.clone()));
            match (state, old) {
                (Some((entity, encoded, row)), old) => {
                    if old.is_none() {
                        delta += 1;
                    }
                    index.replace(
                        old.as_deref(),
                        &entity,
                        row,
                        encoded.bytes.as_slice().into(),
                    );
                    self.recent.put(key, (entity, encoded));
                }
                (None, Some(old)) => {
                    index.remove_known(&old);
                    self.recent.remove(&key);
                    delta -= 1;
                }
                (None, None) => {}
            }
        }
        if delta >= 0 {
            self.shared
                .entities
                .fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.shared
                .entities
                .fetch_sub((-delta) as u64, Ordering::Relaxed);
        }
        drop(tenants);
        if let Some(events) = events
            && !events.is_empty()
        {
            // No listener left is not an error: the feed is best effort.
            let _ = self.shared.changes.send(events.into());
        }
    }
}

/// A statement taken from the connection's cache on its first use.
pub(crate) struct LazyStatement<'c> {
    conn: &'c Connection,
    sql: &'static str,
    stmt: Option<rusqlite::CachedStatement<'c>>,
}

impl<'c> LazyStatement<'c> {
    pub(crate) fn new(conn: &'c Connection, sql: &'static str) -> Self {
        Self {
            conn,
            sql,
            stmt: None,
        }
    }

    pub(crate) fn get(&mut self) -> rusqlite::Result<&mut rusqlite::CachedStatement<'c>> {
        match &mut self.stmt {
            Some(stmt) => Ok(stmt),
            none => Ok(none.insert(self.conn.prepare_cached(self.sql)?)),
        }
    }
}

/// The shared name of a tenant, allocated once per group.
fn tenant_arc(names: &mut FoldMap<Box<str>, Arc<str>>, tenant: &str) -> Arc<str> {
    if let Some(name) = names.get(tenant) {
        return name.clone();
    }
    let name: Arc<str> = Arc::from(tenant);
    names.insert(tenant.into(), name.clone());
    name
}
