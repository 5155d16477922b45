//! The history of attributes (the NGSI-LD temporal representation), kept by
//! the embedded store.
//!
//! Every attribute instance that a committed write stamped (its `modifiedAt`
//! changed, or it is new) becomes one *temporal instance*, written by the
//! writer thread in the same transaction as the entity, so an acknowledged
//! write never lacks its history. A deleted attribute or entity leaves an
//! instance without value whose `modifiedAt` is the `deletedAt`.
//!
//! Storage: one *series* per (tenant, entity, attribute, datasetId),
//! unique by the writer's map in memory, which is loaded whole on open (no
//! index on disk). The series a commit creates for one entity are one row
//! of `history_series_groups`: their ids follow from the row id, their
//! attribute and datasetId are numbers of the store's name table (8 bytes
//! a series; see [`GROUP_ENTRY`]). Stores written before groups existed
//! have one text row per series in `history_series`, which still loads.
//! The instances are in `history`, a `WITHOUT ROWID` table
//! keyed by (series, instant, seq): the instances of one attribute lie
//! together in time order, and the key is the row (no separate index). The
//! instant is observedAt when given, else modifiedAt. A plain numeric
//! Property instance (no unitCode, no sub-attributes) is stored as its number
//! alone; anything else as positional MessagePack of the attribute.
//!
//! Writes land first in `history_recent`, a rowid table in seq order with
//! no index (each commit appends to its last pages), and move to `history`
//! sorted by series once `FLUSH_ROWS` have gathered: clustering by series
//! directly, or indexing the recent rows by series, would dirty one page per
//! series in every commit when thousands of sensors report at once. A
//! series created by the commit is the exception: its id is above every
//! series in `history`, so its first instances append to the last pages of
//! `history` directly (a create would otherwise pay for its instances twice,
//! once here and once in the move). The
//! writer keeps the seqs of the recent rows per series in memory; reads
//! fetch those rows by rowid beside the range query on `history`, in one
//! read transaction.
//!
//! Numeric aggregation reads an in-memory columnar copy of a series (times
//! and values), loaded by the writer on first use and extended by it after
//! each commit, so that the copy never misses or repeats a commit. The copies
//! share one byte budget; the least recently used ones are dropped.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ngsi_model::names::Names;
use ngsi_model::time::IsoDuration;
use ngsi_model::{AttrValue, Attribute, Entity, Iri};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    AggregateBucket, AttrHistory, HistoryEntity, HistoryRequest, StoreError, TemporalInstance,
    TimeProperty, TimeRange,
};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS history_series (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    attr TEXT NOT NULL,
    dataset TEXT
);
CREATE TABLE IF NOT EXISTS history_series_groups (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    series BLOB NOT NULL,
    types BLOB
);
CREATE TABLE IF NOT EXISTS history_entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    modified INTEGER,
    created INTEGER,
    num,
    doc BLOB,
    PRIMARY KEY (series, t, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_genesis (
    grp INTEGER PRIMARY KEY,
    min_t INTEGER NOT NULL,
    last INTEGER NOT NULL,
    rows BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS history_recent (
    seq INTEGER PRIMARY KEY,
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    modified INTEGER,
    created INTEGER,
    num,
    doc BLOB
);
";

/// How far ahead of the instance counter its saved value goes.
const SEQ_RESERVE: i64 = 1 << 20;

/// Instances gathered in `history_recent` before they move to `history`.
pub(crate) const FLUSH_ROWS: usize = 50_000;

/// The identity of a series: tenant, entity id, attribute, datasetId.
pub(crate) type SeriesKeyData = (Box<str>, Arc<str>, Iri, Option<Box<str>>);

/// One series of an entity: id, attribute, datasetId (interned: the few
/// datasetIds of a city recur in every entity that has them).
pub(crate) type SeriesRef = (i64, Iri, Option<Iri>);

/// One series in an entity's list: its id, and its attribute and datasetId
/// as numbers of the store's name table (the datasetId's number plus one, 0
/// for none): 16 bytes, with no allocation of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    sid: i64,
    attr: u32,
    dataset: u32,
}

/// An entity with history: its types and its series.
pub(crate) type EntitySeries = (Vec<Iri>, Vec<Slot>);

/// A history row without its series and seq: instant, modified, created,
/// number, document.
pub(crate) type EncodedInstance = (i64, Option<i64>, Option<i64>, Option<Num>, Option<Vec<u8>>);

/// What the store knows about the entities with history, in memory.
pub(crate) struct HistoryIndex {
    /// The store's name table, which numbers the attributes and datasetIds
    /// of the series lists.
    names: Arc<Names>,
    /// Per tenant, entity id → types and series ids.
    pub(crate) entities: HashMap<Box<str>, BTreeMap<Arc<str>, EntitySeries>>,
    /// The seqs of the rows of `history_recent`, per series (published
    /// after each commit, cleared after each move; a stale seq finds
    /// nothing, and its row is then found in `history`).
    pub(crate) recent: HashMap<i64, Vec<i64>>,
}

impl HistoryIndex {
    /// The name table the series lists number their names in.
    pub(crate) fn names(&self) -> &Arc<Names> {
        &self.names
    }

    pub(crate) fn new(names: Arc<Names>) -> Self {
        Self {
            names,
            entities: HashMap::default(),
            recent: HashMap::default(),
        }
    }

    /// The slot of series `sid` of attribute `attr` with `dataset`,
    /// numbering names that have no number yet.
    fn slot(&self, sid: i64, attr: &str, dataset: Option<&str>) -> Slot {
        Slot {
            sid,
            attr: self.names.number_of(attr),
            dataset: dataset.map_or(0, |d| self.names.number_of(d) + 1),
        }
    }

    pub(crate) fn load(conn: &Connection, names: Arc<Names>) -> Result<Self, StoreError> {
        let mut index = Self::new(names);
        {
            let mut stmt = conn.prepare("SELECT series, seq FROM history_recent")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                index
                    .recent
                    .entry(row.get(0)?)
                    .or_default()
                    .push(row.get(1)?);
            }
        }
        let mut stmt = conn.prepare("SELECT tenant, id, types FROM history_entities")?;
        let mut rows = stmt.query([])?;
        // Entities share a few type lists: parse each distinct one once.
        let mut type_lists: HashMap<String, Vec<Iri>> = HashMap::default();
        while let Some(row) = rows.next()? {
            let (tenant, id): (String, String) = (row.get(0)?, row.get(1)?);
            let types_text = row.get_ref(2)?.as_str().unwrap_or("[]");
            let types = match type_lists.get(types_text) {
                Some(t) => t.clone(),
                None => {
                    let parsed: Vec<String> = serde_json::from_str(types_text).unwrap_or_default();
                    let t: Vec<Iri> = parsed.iter().map(|t| ngsi_model::iri(t)).collect();
                    type_lists.insert(types_text.to_string(), t.clone());
                    t
                }
            };
            let tenant_map = match index.entities.get_mut(tenant.as_str()) {
                Some(m) => m,
                None => index.entities.entry(tenant.into()).or_default(),
            };
            tenant_map.insert(id.into(), (types, Vec::new()));
        }
        // Millions of rows on a restart: read them borrowed, and resolve
        // the few distinct attribute names through a local table rather
        // than the global interner.
        let mut stmt =
            conn.prepare("SELECT id, tenant, entity, attr, dataset FROM history_series")?;
        let mut rows = stmt.query([])?;
        // Attribute names and datasetIds through local tables: a few
        // distinct ones among millions of rows.
        let mut numbers: HashMap<Box<str>, u32> = HashMap::default();
        let names = index.names.clone();
        let mut number = |names: &Names, name: &str| -> u32 {
            match numbers.get(name) {
                Some(n) => *n,
                None => {
                    let n = names.number_of(name);
                    numbers.insert(name.into(), n);
                    n
                }
            }
        };
        let text = |v: rusqlite::types::ValueRef<'_>| -> Result<String, StoreError> {
            match v {
                rusqlite::types::ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
                _ => Err(StoreError::Decode {
                    id: "<history_series>".into(),
                    reason: "a text column holds something else".into(),
                }),
            }
        };
        while let Some(row) = rows.next()? {
            let sid: i64 = row.get(0)?;
            let (tenant, entity, attr) = match (row.get_ref(1)?, row.get_ref(2)?, row.get_ref(3)?) {
                (
                    rusqlite::types::ValueRef::Text(t),
                    rusqlite::types::ValueRef::Text(e),
                    rusqlite::types::ValueRef::Text(a),
                ) => (
                    std::str::from_utf8(t).unwrap_or_default(),
                    std::str::from_utf8(e).unwrap_or_default(),
                    std::str::from_utf8(a).unwrap_or_default(),
                ),
                (t, e, a) => {
                    // Not plain text: take the slow path (and its error).
                    let (t, e, a) = (text(t)?, text(e)?, text(a)?);
                    let key: SeriesKeyData = (
                        t.into(),
                        e.into(),
                        ngsi_model::iri(&a),
                        row.get::<_, Option<String>>(4)?.map(Into::into),
                    );
                    index.add_series(sid, &key);
                    continue;
                }
            };
            let dataset = match row.get_ref(4)? {
                rusqlite::types::ValueRef::Null => 0,
                rusqlite::types::ValueRef::Text(d) => {
                    number(&names, std::str::from_utf8(d).unwrap_or_default()) + 1
                }
                v => number(&names, &text(v)?) + 1,
            };
            let slot = Slot {
                sid,
                attr: number(&names, attr),
                dataset,
            };
            let tenant_map = match index.entities.get_mut(tenant) {
                Some(m) => m,
                None => index.entities.entry(tenant.into()).or_default(),
            };
            // One copy of the entity id, shared with the entity's entry.
            match tenant_map.get_mut(entity) {
                Some((_, series)) => series.push(slot),
                None => {
                    tenant_map.insert(entity.into(), (Vec::new(), vec![slot]));
                }
            }
        }
        // The groups: one row per entity and commit, its series numbered
        // from the row id.
        let mut stmt =
            conn.prepare("SELECT id, tenant, entity, series, types FROM history_series_groups")?;
        let mut rows = stmt.query([])?;
        let known = index.names.len() as u32;
        // Group rows name only persisted names, all in this snapshot.
        let name_list = index.names.snapshot();
        while let Some(row) = rows.next()? {
            let first: i64 = row.get(0)?;
            let (tenant, entity, entries) =
                match (row.get_ref(1)?, row.get_ref(2)?, row.get_ref(3)?) {
                    (
                        rusqlite::types::ValueRef::Text(t),
                        rusqlite::types::ValueRef::Text(e),
                        rusqlite::types::ValueRef::Blob(b),
                    ) => (
                        std::str::from_utf8(t).unwrap_or_default(),
                        std::str::from_utf8(e).unwrap_or_default(),
                        b,
                    ),
                    _ => {
                        return Err(StoreError::Decode {
                            id: "<history_series_groups>".into(),
                            reason: "a column holds something else".into(),
                        });
                    }
                };
            let tenant_map = match index.entities.get_mut(tenant) {
                Some(m) => m,
                None => index.entities.entry(tenant.into()).or_default(),
            };
            let types: Option<Vec<u8>> = row.get(4)?;
            let entry = match tenant_map.get_mut(entity) {
                Some(e) => e,
                None => tenant_map.entry(entity.into()).or_default(),
            };
            // A type change since is in history_entities, read first.
            if entry.0.is_empty()
                && let Some(types) = types
            {
                entry.0 = decode_types(&name_list, &types);
            }
            let list = &mut entry.1;
            for (i, e) in entries.chunks_exact(GROUP_ENTRY).enumerate() {
                let (attr, dataset) = read_entry(e);
                if attr == DELETED {
                    continue;
                }
                if attr >= known || dataset > known {
                    return Err(StoreError::Decode {
                        id: "<history_series_groups>".into(),
                        reason: format!("series {} names an unknown name", first + i as i64),
                    });
                }
                list.push(Slot {
                    sid: first + i as i64,
                    attr,
                    dataset,
                });
            }
        }
        for (_, series) in index.entities.values_mut().flat_map(|m| m.values_mut()) {
            series.shrink_to_fit();
        }
        Ok(index)
    }

    /// Adds series `sid` to its entity's list. An entity's series are kept
    /// as one small list (16 bytes each, no hash maps): lookups scan it, and
    /// an entity has few series.
    pub(crate) fn add_series(&mut self, sid: i64, key: &SeriesKeyData) {
        let slot = self.slot(sid, &key.2, key.3.as_deref());
        let entities = match self.entities.get_mut(&*key.0) {
            Some(m) => m,
            None => self.entities.entry(key.0.clone()).or_default(),
        };
        let entry = entities.entry(key.1.clone()).or_default();
        entry.1.push(slot);
    }

    /// The series list of entity `id`, if it has history.
    pub(crate) fn series_list(&self, tenant: &str, id: &str) -> Option<&[Slot]> {
        self.entities
            .get(tenant)?
            .get(id)
            .map(|(_, series)| series.as_slice())
    }

    /// The id of the series of `attr` with `dataset` among `slots`.
    pub(crate) fn find_in(&self, slots: &[Slot], attr: &str, dataset: Option<&str>) -> Option<i64> {
        let attr = self.names.find(attr)?;
        let dataset = match dataset {
            None => 0,
            Some(d) => self.names.find(d)? + 1,
        };
        slots
            .iter()
            .find(|s| s.attr == attr && s.dataset == dataset)
            .map(|s| s.sid)
    }

    /// Adds the series of a written group row, and the entity's `types`
    /// when given.
    fn add_group(&mut self, g: &PendingGroup, types: Option<Vec<Iri>>) {
        let entities = match self.entities.get_mut(&*g.tenant) {
            Some(m) => m,
            None => self.entities.entry(g.tenant.clone()).or_default(),
        };
        let slots = g
            .entries
            .chunks_exact(GROUP_ENTRY)
            .enumerate()
            .map(|(i, e)| {
                let (attr, dataset) = read_entry(e);
                Slot {
                    sid: g.first + i as i64,
                    attr,
                    dataset,
                }
            });
        match entities.get_mut(&*g.entity) {
            Some(entry) => {
                entry.1.extend(slots);
                if let Some(types) = types {
                    entry.0 = types;
                }
            }
            None => {
                entities.insert(
                    g.entity.clone(),
                    (types.unwrap_or_default(), slots.collect()),
                );
            }
        }
    }

    /// The id of the series `key`, if it exists.
    pub(crate) fn lookup(&self, key: &SeriesKeyData) -> Option<i64> {
        let (_, series) = self.entities.get(&*key.0)?.get(&*key.1)?;
        let attr = self.names.find(&key.2)?;
        let dataset = match key.3.as_deref() {
            None => 0,
            Some(d) => self.names.find(d)? + 1,
        };
        series
            .iter()
            .find(|s| s.attr == attr && s.dataset == dataset)
            .map(|s| s.sid)
    }

    /// Every series id.
    pub(crate) fn all_series(&self) -> Vec<i64> {
        self.entities
            .values()
            .flat_map(|m| m.values())
            .flat_map(|(_, series)| series.iter().map(|s| s.sid))
            .collect()
    }

    /// Removes series `sid` of entity `id` of `tenant`.
    pub(crate) fn remove_series(&mut self, tenant: &str, id: &str, sid: i64) {
        if let Some(e) = self.entities.get_mut(tenant).and_then(|m| m.get_mut(id)) {
            e.1.retain(|s| s.sid != sid);
        }
    }

    /// A slot with its names.
    fn named(names: &ngsi_model::names::NameList, slot: &Slot) -> SeriesRef {
        let name = |n: u32| {
            names
                .get(n as usize)
                .cloned()
                .unwrap_or_else(|| ngsi_model::iri(""))
        };
        let dataset = (slot.dataset > 0).then(|| name(slot.dataset - 1));
        (slot.sid, name(slot.attr), dataset)
    }

    pub(crate) fn entity_list(
        &self,
        tenant: &str,
        select: &mut dyn FnMut(&str, &[Iri]) -> bool,
    ) -> Vec<HistoryEntity> {
        let Some(map) = self.entities.get(tenant) else {
            return Vec::new();
        };
        map.iter()
            .filter(|(id, (types, _))| select(id, types))
            .map(|(id, entry)| self.entity_of(id, entry))
            .collect()
    }

    pub(crate) fn entity(&self, tenant: &str, id: &str) -> Option<HistoryEntity> {
        let (id, entry) = self.entities.get(tenant)?.get_key_value(id)?;
        Some(self.entity_of(id, entry))
    }

    fn entity_of(&self, id: &Arc<str>, (types, series): &EntitySeries) -> HistoryEntity {
        let names = self.names.snapshot();
        let mut attrs: Vec<(Iri, Option<Box<str>>)> = series
            .iter()
            .map(|slot| {
                let (_, attr, dataset) = Self::named(&names, slot);
                (attr, dataset.as_deref().map(Box::from))
            })
            .collect();
        attrs.sort();
        HistoryEntity {
            id: id.clone(),
            types: types.clone(),
            attrs,
        }
    }

    /// The series of an entity, with attribute and datasetId, optionally
    /// only those of some attributes.
    pub(crate) fn series_of(
        &self,
        tenant: &str,
        id: &str,
        attrs: Option<&[Iri]>,
    ) -> Option<Vec<SeriesRef>> {
        let (_, series) = self.entities.get(tenant)?.get(id)?;
        let names = self.names.snapshot();
        let wanted: Option<Vec<u32>> =
            attrs.map(|a| a.iter().filter_map(|n| self.names.find(n)).collect());
        let mut out: Vec<SeriesRef> = series
            .iter()
            .filter(|s| wanted.as_ref().is_none_or(|w| w.contains(&s.attr)))
            .map(|s| Self::named(&names, s))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.cmp(&b.2)));
        Some(out)
    }
}

/// One row of the `history` table, ready to insert.
#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) series: i64,
    pub(crate) t: i64,
    pub(crate) seq: i64,
    pub(crate) modified: Option<i64>,
    pub(crate) created: Option<i64>,
    pub(crate) num: Option<Num>,
    pub(crate) doc: Option<Vec<u8>>,
}

/// A stored number: integers stay integers.
#[derive(Clone, Copy)]
pub(crate) enum Num {
    Int(i64),
    Real(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Real(f) => f,
        }
    }
}

fn number_of(v: &serde_json::Value) -> Option<Num> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        Some(Num::Int(i))
    } else {
        n.as_f64().filter(|f| f.is_finite()).map(Num::Real)
    }
}

/// The instant of an instance in its series: observedAt when given (then
/// true), else modifiedAt.
fn instant(a: &Attribute) -> (i64, bool) {
    match a
        .observed_at
        .as_deref()
        .and_then(ngsi_model::time::parse_datetime)
    {
        Some(t) => (t, true),
        None => (a.modified_at, false),
    }
}

/// Encodes an attribute instance as a history row (without series, seq).
/// `None` for `attr` records a deletion at `deleted_at`; its document is
/// then the kind of the attribute deleted (a MessagePack string, which no
/// attribute document is: those are arrays), when known.
pub(crate) fn encode_instance(
    attr: Option<&Attribute>,
    deleted_at: i64,
    deleted_kind: Option<&str>,
) -> EncodedInstance {
    let Some(a) = attr else {
        let doc = deleted_kind.and_then(|k| rmp_serde::to_vec(k).ok());
        return (deleted_at, None, None, None, doc);
    };
    let (t, observed) = instant(a);
    let modified = observed.then_some(a.modified_at);
    let created = (a.created_at != a.modified_at).then_some(a.created_at);
    let num = match &a.value {
        AttrValue::Property(v) => number_of(v),
        _ => None,
    };
    // The document leaves the value to the row only when the row holds it
    // exactly (not an unsigned integer above i64::MAX, kept as a float);
    // an instance is plain (no document at all) only then.
    let exact = match (&a.value, num) {
        (AttrValue::Property(serde_json::Value::Number(n)), Some(Num::Real(_))) => n.is_f64(),
        (_, num) => num.is_some(),
    };
    let plain = exact && a.unit_code.is_none() && a.sub.is_empty() && a.extra.is_none();
    let doc = (!plain).then(|| instance_doc(a, exact));
    // A deletion has neither number nor document; a non-plain instance
    // always has its document.
    (t, modified, created, num, doc)
}

/// Whether a row's document is that of a deletion (the kind of the deleted
/// attribute as a MessagePack string, see [`encode_instance`]) rather than
/// an instance's (a positional attribute).
pub(crate) fn is_deletion(doc: &[u8]) -> bool {
    rmp_serde::from_slice::<String>(doc).is_ok()
}

/// The document of an instance: the attribute without what its row holds
/// (datasetId, times, and the value when it is the row's number: then the
/// document's value is null, which no numbered instance has), in the
/// positional encoding of [`Attribute`], written from borrowed parts (no
/// copy of the attribute).
fn instance_doc(a: &Attribute, value_in_num: bool) -> Vec<u8> {
    const IN_NUM: AttrValue = AttrValue::Property(serde_json::Value::Null);
    let mut out = Vec::with_capacity(64);
    crate::codec::write_attribute(
        &mut out,
        None,
        &crate::codec::AttrParts {
            value: if value_in_num { &IN_NUM } else { &a.value },
            dataset_id: None,
            observed_at: None,
            unit_code: a.unit_code.as_deref(),
            created_at: 0,
            modified_at: 0,
            sub: &a.sub,
            extra: a.extra.as_deref(),
        },
    );
    out
}

/// A row as written (see [`Row`]) read back as an instance.
fn decode_stored(r: Row) -> TemporalInstance {
    let num = match r.num {
        Some(Num::Int(i)) => rusqlite::types::Value::Integer(i),
        Some(Num::Real(f)) => rusqlite::types::Value::Real(f),
        None => rusqlite::types::Value::Null,
    };
    decode_row(r.t, r.seq, r.modified, r.created, num, r.doc)
}

/// A row of `SELECT t, seq, modified, created, num, doc` as an instance.
fn instance_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<TemporalInstance> {
    Ok(decode_row(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode_row(
    t: i64,
    seq: i64,
    modified: Option<i64>,
    created: Option<i64>,
    num: rusqlite::types::Value,
    doc: Option<Vec<u8>>,
) -> TemporalInstance {
    let modified_at = modified.unwrap_or(t);
    let created_at = created.unwrap_or(modified_at);
    let num = match num {
        rusqlite::types::Value::Integer(i) => Some(serde_json::Value::from(i)),
        rusqlite::types::Value::Real(f) => serde_json::Number::from_f64(f).map(Into::into),
        _ => None,
    };
    let mut deleted_kind = None;
    let attr = match (doc, num) {
        (Some(bytes), num) => {
            let mut attr = crate::codec::decode_attribute(&bytes).ok();
            if let (Some(a), Some(n)) = (&mut attr, num)
                && a.value == AttrValue::Property(serde_json::Value::Null)
            {
                a.value = AttrValue::Property(n);
            }
            if attr.is_none() {
                deleted_kind = rmp_serde::from_slice::<String>(&bytes)
                    .ok()
                    .and_then(|k| kind_name(&k));
            }
            attr
        }
        (None, Some(v)) => Some(Attribute::new(AttrValue::Property(v))),
        (None, None) => None,
    }
    .map(|mut a| {
        a.created_at = created_at;
        a.modified_at = modified_at;
        // An observedAt copied from modifiedAt (the Scope's) reads back
        // written as modifiedAt is.
        a.observed_at = modified.map(|m| {
            if m == t {
                ngsi_model::time::format_micros(t).into()
            } else {
                ngsi_model::time::format_instant(t).into()
            }
        });
        a
    });
    TemporalInstance {
        instance_id: seq,
        instant: t,
        modified_at,
        created_at,
        attr,
        deleted_kind,
        source_instance_id: None,
    }
}

/// The attribute under which the history records an entity's Scope.
pub const SCOPE: &str = "https://uri.etsi.org/ngsi-ld/scope";

/// The static name of an attribute kind read back from a deletion row.
fn kind_name(k: &str) -> Option<&'static str> {
    AttrValue::KIND_NAMES.into_iter().find(|n| *n == k)
}

/// The rows a time property selects besides their time (see
/// [`TimeProperty`]): SQL over the columns of `history`.
fn selected_rows(property: TimeProperty, bounded: bool) -> &'static str {
    match property {
        // A row has an observedAt exactly when it keeps modifiedAt apart.
        TimeProperty::ObservedAt if bounded => "AND modified IS NOT NULL",
        // A deletion has neither number nor modifiedAt, and no document
        // or only the kind (a MessagePack fixstr, 0xa0 to 0xbf).
        TimeProperty::DeletedAt => {
            "AND num IS NULL AND modified IS NULL \
             AND (doc IS NULL OR hex(substr(doc, 1, 1)) BETWEEN 'A0' AND 'BF')"
        }
        _ => "",
    }
}

/// Reads the instances of `req` for the series of one entity.
/// The seqs of the recent rows of each series of `series`.
pub(crate) type RecentSeqs = HashMap<i64, Vec<i64>>;

pub(crate) fn read_history(
    conn: &Connection,
    names: &Arc<Names>,
    series: &[SeriesRef],
    recent: &RecentSeqs,
    req: &HistoryRequest,
) -> Result<Vec<AttrHistory>, StoreError> {
    // Both tables in one snapshot: a move between two reads would hide or
    // repeat rows.
    let tx = conn.unchecked_transaction()?;
    let out = read_history_in(&tx, names, series, recent, req)?;
    tx.finish()?;
    Ok(out)
}

fn read_history_in(
    conn: &Connection,
    names: &Arc<Names>,
    series: &[SeriesRef],
    recent: &RecentSeqs,
    req: &HistoryRequest,
) -> Result<Vec<AttrHistory>, StoreError> {
    let key = match req.range.property {
        TimeProperty::ObservedAt | TimeProperty::DeletedAt => "t",
        TimeProperty::ModifiedAt => "COALESCE(modified, t)",
        TimeProperty::CreatedAt => "COALESCE(created, modified, t)",
    };
    let bounded = req.range.bounded();
    let rows = selected_rows(req.range.property, bounded);
    let order = if req.last_n.is_some() { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT t, seq, modified, created, num, doc FROM history \
         WHERE series = ?1 AND {key} >= ?2 AND {key} < ?3 {rows} \
         ORDER BY {key} {order}, seq {order} LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut by_seq = conn.prepare_cached(
        "SELECT t, seq, modified, created, num, doc FROM history_recent WHERE seq = ?1",
    )?;
    let (from, to) = (
        req.range.from.unwrap_or(i64::MIN),
        req.range.to.unwrap_or(i64::MAX),
    );
    let key_of = |i: &TemporalInstance| req.range.property.time_of(i);
    let mut out = Vec::with_capacity(series.len());
    let mut genesis = crate::genesis::Reader::new(names.clone());
    for (sid, attr, dataset) in series {
        let take = req.last_n.map_or(req.limit, |n| n.min(req.limit));
        let mut rows = stmt.query(params![
            sid,
            from,
            to,
            i64::try_from(take).unwrap_or(i64::MAX - 1) + 1
        ])?;
        let mut instances = Vec::new();
        while let Some(row) = rows.next()? {
            instances.push(instance_of(row)?);
        }
        drop(rows);
        // The recent rows and the genesis instances of the series: every
        // one in the range is a candidate; the history query gave at least
        // `take + 1` of the others when there were that many, so the merge
        // is exact.
        let mut extra = false;
        let mut consider = |i: TemporalInstance| {
            let k = key_of(&i);
            if k >= from && k < to && req.range.property.selects(&i, bounded) {
                instances.push(i);
                extra = true;
            }
        };
        for seq in recent.get(sid).into_iter().flatten() {
            let mut rows = by_seq.query([seq])?;
            if let Some(row) = rows.next()? {
                consider(instance_of(row)?);
            }
        }
        for row in genesis.rows_of(conn, *sid)? {
            consider(decode_stored(row));
        }
        if extra {
            instances.sort_by_key(|i| (key_of(i), i.instance_id));
            if req.last_n.is_some() {
                instances.reverse();
            }
        }
        // Cut by the limit, not by lastN itself.
        let truncated = instances.len() > take && req.last_n.is_none_or(|n| n > req.limit);
        instances.truncate(take);
        if req.last_n.is_some() {
            instances.reverse();
        }
        if instances.is_empty() && (bounded || req.range.property == TimeProperty::DeletedAt) {
            continue;
        }
        out.push(AttrHistory {
            attr: attr.clone(),
            dataset_id: dataset.as_deref().map(Box::from),
            instances,
            truncated,
        });
    }
    Ok(out)
}

/// For each entity (its series), whether some series has an instance that
/// `req` selects: one indexed probe per series (`LIMIT 1`), in one
/// snapshot, without decoding rows of `history`.
pub(crate) fn has_instances(
    conn: &Connection,
    names: &Arc<Names>,
    per_entity: &[Vec<SeriesRef>],
    recent: &RecentSeqs,
    req: &HistoryRequest,
) -> Result<Vec<bool>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let key = match req.range.property {
        TimeProperty::ObservedAt | TimeProperty::DeletedAt => "t",
        TimeProperty::ModifiedAt => "COALESCE(modified, t)",
        TimeProperty::CreatedAt => "COALESCE(created, modified, t)",
    };
    let bounded = req.range.bounded();
    let rows = selected_rows(req.range.property, bounded);
    let mut probe = tx.prepare_cached(&format!(
        "SELECT 1 FROM history WHERE series = ?1 AND {key} >= ?2 AND {key} < ?3 {rows} LIMIT 1"
    ))?;
    let mut by_seq = tx.prepare_cached(
        "SELECT t, seq, modified, created, num, doc FROM history_recent WHERE seq = ?1",
    )?;
    let (from, to) = (
        req.range.from.unwrap_or(i64::MIN),
        req.range.to.unwrap_or(i64::MAX),
    );
    let mut out = Vec::with_capacity(per_entity.len());
    let mut genesis = crate::genesis::Reader::new(names.clone());
    for series in per_entity {
        let mut found = false;
        'series: for (sid, _, _) in series {
            if probe.exists(params![sid, from, to])? {
                found = true;
                break;
            }
            let selected = |i: &TemporalInstance| {
                let k = req.range.property.time_of(i);
                k >= from && k < to && req.range.property.selects(i, bounded)
            };
            for seq in recent.get(sid).into_iter().flatten() {
                let mut rows = by_seq.query([seq])?;
                if let Some(row) = rows.next()? {
                    let i = instance_of(row)?;
                    if selected(&i) {
                        found = true;
                        break 'series;
                    }
                }
            }
            for row in genesis.rows_of(&tx, *sid)? {
                if selected(&decode_stored(row)) {
                    found = true;
                    break 'series;
                }
            }
        }
        out.push(found);
    }
    drop(probe);
    drop(by_seq);
    tx.finish()?;
    Ok(out)
}

/// The numeric instances of one series in time order.
#[derive(Debug, Default)]
pub(crate) struct NumSeries {
    pub(crate) times: Vec<i64>,
    pub(crate) values: Vec<f64>,
    /// How many of the points have no observedAt (a bounded observedAt
    /// range leaves them out, so such a series aggregates from its
    /// instances then).
    pub(crate) unobserved: usize,
    /// How many instances hold a value that is not a number (strings,
    /// booleans, arrays, relationships...): such a series aggregates from
    /// its instances, which see every kind.
    pub(crate) others: usize,
}

impl NumSeries {
    pub(crate) fn load(
        conn: &Connection,
        names: &Arc<Names>,
        sid: i64,
    ) -> Result<Self, StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT t, num, modified IS NULL, CASE WHEN num IS NULL THEN doc END \
             FROM history WHERE series = ?1 ORDER BY t, seq",
        )?;
        let mut rows = stmt.query([sid])?;
        let mut s = NumSeries::default();
        while let Some(row) = rows.next()? {
            if let rusqlite::types::ValueRef::Blob(doc) = row.get_ref(3)?
                && !is_deletion(doc)
            {
                s.others += 1;
            }
            let v: rusqlite::types::Value = row.get(1)?;
            let v = match v {
                rusqlite::types::Value::Integer(i) => i as f64,
                rusqlite::types::Value::Real(f) => f,
                _ => continue,
            };
            s.times.push(row.get(0)?);
            s.values.push(v);
            if row.get::<_, bool>(2)? {
                s.unobserved += 1;
            }
        }
        // The genesis instances, where their instants place them.
        for row in crate::genesis::Reader::new(names.clone()).rows_of(conn, sid)? {
            match (row.num, &row.doc) {
                (Some(n), _) => s.insert(row.t, n.as_f64(), row.modified.is_some()),
                (None, Some(doc)) if !is_deletion(doc) => s.others += 1,
                (None, _) => {}
            }
        }
        Ok(s)
    }

    fn insert(&mut self, t: i64, v: f64, observed: bool) {
        if !observed {
            self.unobserved += 1;
        }
        // Appends are the common case (time moves forward).
        if self.times.last().is_none_or(|last| *last <= t) {
            self.times.push(t);
            self.values.push(v);
        } else {
            let at = self.times.partition_point(|x| *x <= t);
            self.times.insert(at, t);
            self.values.insert(at, v);
        }
    }

    fn bytes(&self) -> usize {
        self.times.len() * 16 + 64
    }

    /// Aggregates the instances in `range` over periods of `period` (none or
    /// zero: one period over the whole range). Periods start at the range's
    /// start, or at the first instance when the range is open at the start.
    pub(crate) fn aggregate(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        period: Option<&IsoDuration>,
        distinct: bool,
    ) -> Vec<AggregateBucket> {
        let lo = from.map_or(0, |f| self.times.partition_point(|x| *x < f));
        let hi = to.map_or(self.times.len(), |t| self.times.partition_point(|x| *x < t));
        if lo >= hi {
            return Vec::new();
        }
        aggregate_points(
            &self.times[lo..hi],
            &self.values[lo..hi],
            from,
            to,
            period,
            distinct,
        )
    }
}

/// Aggregates sorted points into periods; empty periods are left out.
/// Each period is found by binary search and then summarised in tight
/// passes over its slice (the second one for the standard deviation).
pub fn aggregate_points(
    times: &[i64],
    values: &[f64],
    from: Option<i64>,
    to: Option<i64>,
    period: Option<&IsoDuration>,
    distinct: bool,
) -> Vec<AggregateBucket> {
    let n = times.len().min(values.len());
    periods(&times[..n], from, to, period, |r, start, end| {
        summarise(&values[r], start, end, distinct)
    })
}

/// Splits sorted `times` into periods of `period` (none or zero: one
/// period over the whole range) and summarises each non-empty one with
/// `summarise(index range, start, end)`. Periods start at `from`, or at the
/// first time when the range is open at the start.
fn periods(
    times: &[i64],
    from: Option<i64>,
    to: Option<i64>,
    period: Option<&IsoDuration>,
    mut summarise: impl FnMut(std::ops::Range<usize>, i64, i64) -> AggregateBucket,
) -> Vec<AggregateBucket> {
    let n = times.len();
    let Some(&first) = times.first() else {
        return Vec::new();
    };
    let last = times[n - 1];
    let start = from.unwrap_or(first);
    let whole_end = to.unwrap_or_else(|| last.saturating_add(1));
    let period = period.filter(|p| !p.is_zero());
    let mut out: Vec<AggregateBucket> = Vec::new();
    // The number of the next calendar period (the first is 0).
    let mut k = 0u64;
    let mut i = 0usize;
    while i < n {
        let t = times[i];
        // The period holding `t`.
        let (bucket_start, bucket_end) = match period {
            None => (start, whole_end),
            Some(p) if p.months == 0 => {
                let k = (i128::from(t) - i128::from(start)).div_euclid(i128::from(p.micros));
                let s = i128::from(start) + k * i128::from(p.micros);
                let s = i64::try_from(s).unwrap_or(i64::MAX);
                (s, s.saturating_add(p.micros))
            }
            Some(p) => {
                // Calendar periods: the k-th starts k durations after the
                // start, counted from the start. A period that would end
                // past the representable time ends with the range instead.
                let bound = |k: u64, s: i64| {
                    p.add_times_to(start, k)
                        .filter(|e| *e > s)
                        .unwrap_or(if whole_end > s { whole_end } else { i64::MAX })
                };
                let mut s = out.last().map_or(start, |b| b.end);
                let mut e = bound(k + 1, s);
                while t >= e && e != i64::MAX {
                    k += 1;
                    s = e;
                    e = bound(k + 1, s);
                }
                // The next period is the one after this.
                k += 1;
                (s, e)
            }
        };
        let len = if period.is_none() || bucket_end == i64::MAX {
            n - i
        } else {
            times[i..].partition_point(|x| *x < bucket_end).max(1)
        };
        out.push(summarise(i..i + len, bucket_start, bucket_end));
        i += len;
    }
    out
}

fn summarise(v: &[f64], start: i64, end: i64, distinct: bool) -> AggregateBucket {
    let (mut sum, mut sumsq) = (0.0f64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in v {
        sum += x;
        sumsq += x * x;
        min = min.min(x);
        max = max.max(x);
    }
    let count = v.len() as u64;
    let mean = if sum.is_finite() {
        sum / count as f64
    } else {
        // Values near the largest double overflow the sum, not the mean.
        v.iter()
            .enumerate()
            .fold(0.0, |m, (i, x)| m + (x - m) / (i + 1) as f64)
    };
    let stddev = if count > 1 {
        let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
        (ss / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    let distinct = distinct.then(|| {
        let mut seen: Vec<u64> = v
            .iter()
            .map(|x| if *x == 0.0 { 0 } else { x.to_bits() })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() as u64
    });
    AggregateBucket {
        start,
        end,
        count,
        distinct,
        sum,
        mean,
        sumsq,
        min,
        max,
        stddev,
        text_min: None,
        text_max: None,
        classes: crate::value_class::NUMBER,
    }
}

/// One instance's value as the aggregation methods see it.
struct Point {
    /// The number it counts as (a number, a boolean as 1 or 0, an array's
    /// size); `None` for the rest.
    num: Option<f64>,
    /// The text compared in lexical order (strings, date-times).
    text: Option<String>,
    /// What tells distinct values apart: canonical JSON text, object
    /// members in key order (RFC 8259: they are unordered).
    key: String,
    /// Its [`crate::value_class`] bit.
    class: u8,
}

fn point_of(value: &AttrValue) -> Point {
    use crate::value_class::*;
    use serde_json::Value as V;
    let counted = |class: u8, v: &V| Point {
        num: None,
        text: None,
        key: jsonld::canonical_json(v),
        class,
    };
    match value {
        AttrValue::Property(v) => match v {
            V::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                Point {
                    num: Some(x),
                    text: None,
                    key: format!("n{}", if x == 0.0 { 0 } else { x.to_bits() }),
                    class: NUMBER,
                }
            }
            V::Bool(b) => Point {
                num: Some(if *b { 1.0 } else { 0.0 }),
                text: None,
                key: format!("n{}", if *b { 1.0f64.to_bits() } else { 0 }),
                class: BOOLEAN,
            },
            V::Array(items) => Point {
                num: Some(items.len() as f64),
                key: jsonld::canonical_json(v),
                text: None,
                class: ARRAY,
            },
            V::String(t) => Point {
                num: None,
                text: Some(t.clone()),
                key: v.to_string(),
                class: STRING,
            },
            // A typed date-time value compares as its text.
            V::Object(m) if m.get("@value").is_some_and(V::is_string) => Point {
                num: None,
                text: m.get("@value").and_then(V::as_str).map(str::to_string),
                key: jsonld::canonical_json(v),
                class: STRING,
            },
            _ => counted(OBJECT, v),
        },
        AttrValue::ListProperty(items) => Point {
            num: Some(items.len() as f64),
            text: None,
            key: jsonld::canonical_json(&V::Array(items.clone())),
            class: ARRAY,
        },
        AttrValue::Relationship { object, .. } => counted(RELATIONSHIP, object),
        AttrValue::ListRelationship { objects, .. } => {
            counted(RELATIONSHIP, &V::Array(objects.clone()))
        }
        AttrValue::VocabProperty(v) => counted(RELATIONSHIP, v),
        AttrValue::LanguageProperty(m) => counted(OBJECT, &V::Object(m.clone())),
        AttrValue::GeoProperty(v) | AttrValue::JsonProperty(v) => counted(OBJECT, v),
    }
}

/// The aggregates of values of any kind (clause 4.5.19.1): numbers,
/// booleans and array sizes in the numeric fields, strings in lexical
/// order, every value counted.
fn summarise_points(points: &[Point], start: i64, end: i64, distinct: bool) -> AggregateBucket {
    let nums: Vec<f64> = points.iter().filter_map(|p| p.num).collect();
    let mut b = summarise(&nums, start, end, false);
    if nums.is_empty() {
        (b.sum, b.mean, b.sumsq, b.min, b.max, b.stddev) =
            (0.0, f64::NAN, 0.0, f64::NAN, f64::NAN, 0.0);
    }
    b.count = points.len() as u64;
    b.distinct = distinct.then(|| {
        let mut keys: Vec<&str> = points.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len() as u64
    });
    let texts = || points.iter().filter_map(|p| p.text.as_deref());
    b.text_min = texts().min().map(str::to_string);
    b.text_max = texts().max().map(str::to_string);
    b.classes = points.iter().fold(0, |c, p| c | p.class);
    b
}

/// The in-memory columnar copies of numeric series, bounded in bytes.
pub(crate) struct NumCache {
    entries: HashMap<i64, (Arc<RwLock<NumSeries>>, AtomicU64)>,
    bytes: usize,
    budget: usize,
    tick: AtomicU64,
}

impl NumCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            entries: HashMap::default(),
            bytes: 0,
            budget,
            tick: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, sid: i64) -> Option<Arc<RwLock<NumSeries>>> {
        let (s, used) = self.entries.get(&sid)?;
        used.store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(s.clone())
    }

    /// Keeps `series` if it fits the budget (evicting the least recently
    /// used copies); returns it shared either way.
    pub(crate) fn put(&mut self, sid: i64, series: NumSeries) -> Arc<RwLock<NumSeries>> {
        let size = series.bytes();
        let shared = Arc::new(RwLock::new(series));
        if size > self.budget {
            return shared;
        }
        self.remove(sid);
        self.bytes += size;
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        self.entries
            .insert(sid, (shared.clone(), AtomicU64::new(tick)));
        self.evict();
        shared
    }

    pub(crate) fn remove(&mut self, sid: i64) {
        if let Some((s, _)) = self.entries.remove(&sid) {
            self.bytes = self.bytes.saturating_sub(s.read().bytes());
        }
    }

    /// Adds a committed numeric instance to the copy of its series, if held.
    pub(crate) fn append(&mut self, sid: i64, t: i64, v: f64, observed: bool) {
        if let Some((s, _)) = self.entries.get(&sid) {
            s.write().insert(t, v, observed);
            self.bytes += 16;
        }
    }

    pub(crate) fn evict(&mut self) {
        while self.bytes > self.budget && !self.entries.is_empty() {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| used.load(Ordering::Relaxed))
                .map(|(sid, _)| *sid);
            match oldest {
                Some(sid) => self.remove(sid),
                None => break,
            }
        }
    }
}

/// The history side of one group of writes, published after the commit.
#[derive(Default)]
pub(crate) struct HistoryOverlay {
    /// Series created by the group, by entity id (looked up by every later
    /// instance of the entity in the group: a map by entity, or creates
    /// grow quadratic; an entity has a handful of series).
    pub(crate) new_series: rustc_hash::FxHashMap<Arc<str>, Vec<NewSeries>>,
    /// Entity types written by the group, by (tenant, id).
    pub(crate) entity_types: HashMap<(Box<str>, Arc<str>), Vec<Iri>>,
    /// (series, instant, value, has observedAt) of the numeric instances.
    pub(crate) numbers: Vec<(i64, i64, f64, bool)>,
    /// The series given an instance whose value is not a number: their
    /// columnar copies no longer tell the whole series.
    pub(crate) others: Vec<i64>,
    /// (series, seq) of the rows written to `history_recent`.
    pub(crate) recent: Vec<(i64, i64)>,
    pub(crate) recorded: usize,
    /// The first series the group created: it and every later one are
    /// newer than any row of `history`, so their instances are appended
    /// there directly instead of passing through `history_recent`.
    pub(crate) first_new: Option<i64>,
    /// Series created for one entity and not yet written as a group row.
    pub(crate) group: Option<PendingGroup>,
    /// The group rows written, to publish (one index entry per group).
    pub(crate) groups: Vec<PendingGroup>,
    /// Types of entities new to history, by id (and tenant), not yet
    /// written: they ride in the entity's first group row, or go to
    /// `history_entities` at the commit (see [`finish`]).
    pub(crate) deferred_types: DeferredTypes,
    /// Whether instance rows wait in `pending` for [`finish`], which writes
    /// them with one prepared statement per table (a group of entity writes,
    /// which reads no row of its own; the temporal API's jobs write at once).
    pub(crate) defer_rows: bool,
    /// Instance rows waiting for [`finish`], with whether each goes to
    /// `history_recent`.
    pub(crate) pending: Vec<(Row, bool)>,
}

/// A series created by a group (see [`HistoryOverlay::new_series`]).
#[derive(Debug)]
pub(crate) struct NewSeries {
    tenant: Box<str>,
    attr: Iri,
    dataset: Option<Box<str>>,
    sid: i64,
}

/// Above this many attribute instances (before and after together), an
/// operation's history is recorded through [`ManyInstances`].
const MANY_INSTANCES: usize = 32;

/// The lookups of [`Recorder::record`] for an entity of many attribute
/// instances, as maps: the instances before and after the operation by
/// attribute and datasetId, and the entity's series (those in the index,
/// those the group created so far and those this call creates) by the
/// numbers of their attribute and datasetId.
struct ManyInstances<'e> {
    // Keyed by names and datasetIds as given: seeded hashing, so that no
    // chosen set of them collides.
    before: foldhash::HashMap<(&'e str, Option<&'e str>), &'e Attribute>,
    after: foldhash::HashSet<(&'e str, Option<&'e str>)>,
    series: HashMap<(u32, u32), i64>,
}

impl<'e> ManyInstances<'e> {
    fn new(
        index: &HistoryIndex,
        known: Option<&[Slot]>,
        overlay: &HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        before: Option<&'e Entity>,
        after: Option<&'e Entity>,
    ) -> Self {
        let pairs = |e: Option<&'e Entity>| {
            e.into_iter().flat_map(|e| {
                e.attrs.iter().flat_map(|(name, instances)| {
                    instances
                        .iter()
                        .map(move |a| ((&**name, a.dataset_id.as_deref()), a))
                })
            })
        };
        let names = index.names();
        let mut series: HashMap<(u32, u32), i64> = known
            .into_iter()
            .flatten()
            .map(|s| ((s.attr, s.dataset), s.sid))
            .collect();
        for s in overlay.new_series.get(&**id).into_iter().flatten() {
            if *s.tenant == *tenant {
                let attr = names.number_of(&s.attr);
                let dataset = s.dataset.as_deref().map_or(0, |d| names.number_of(d) + 1);
                series.insert((attr, dataset), s.sid);
            }
        }
        Self {
            before: pairs(before).collect(),
            after: pairs(after).map(|(key, _)| key).collect(),
            series,
        }
    }

    /// The instance of attribute `name` with `dataset` before the operation.
    fn before(&self, name: &str, dataset: Option<&str>) -> Option<&'e Attribute> {
        self.before.get(&(name, dataset)).copied()
    }

    /// Whether the operation kept an instance of `name` with `dataset`.
    fn kept(&self, name: &str, dataset: Option<&str>) -> bool {
        self.after.contains(&(name, dataset))
    }

    /// The series of `name` with the datasetId of `inst`, created when new.
    #[allow(clippy::too_many_arguments)]
    fn series(
        &mut self,
        recorder: &mut Recorder,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        name: &Iri,
        inst: &Attribute,
    ) -> Result<i64, StoreError> {
        let names = index.names();
        let dataset = inst.dataset_id.as_deref();
        let key = (
            names.number_of(name),
            dataset.map_or(0, |d| names.number_of(d) + 1),
        );
        if let Some(sid) = self.series.get(&key) {
            return Ok(*sid);
        }
        // Neither in the index nor among the group's new series.
        let sid = recorder.new_series(tx, index, overlay, tenant, id, name, dataset)?;
        self.series.insert(key, sid);
        Ok(sid)
    }
}

/// Types waiting to be written, by entity id: (tenant, types) pairs.
pub(crate) type DeferredTypes = HashMap<Arc<str>, Vec<(Box<str>, Vec<Iri>)>>;

/// Series created one after the other for one entity, written together as
/// one row of `history_series_groups` (see [`GROUP_ENTRY`]).
#[derive(Debug)]
pub(crate) struct PendingGroup {
    tenant: Box<str>,
    entity: Arc<str>,
    first: i64,
    entries: Vec<u8>,
    /// The entity's types as name numbers (little-endian `u32`s) when the
    /// entity is new to history.
    types: Option<Vec<u8>>,
    /// The first instances of the group's series (with deferred rows): its
    /// genesis row, written by [`finish`].
    genesis: crate::genesis::Builder,
}

impl PendingGroup {
    /// The series after the group's last one.
    fn end(&self) -> i64 {
        self.first + (self.entries.len() / GROUP_ENTRY) as i64
    }
}

impl HistoryOverlay {
    /// The group this commit created that holds series `sid`: the one being
    /// built, else one written before it (in the order of their ids).
    fn group_holding(&mut self, sid: i64) -> Option<&mut PendingGroup> {
        let holds = |g: &PendingGroup| (g.first..g.end()).contains(&sid);
        if let Some(g) = self.group.as_mut().filter(|g| holds(g)) {
            return Some(g);
        }
        let at = self
            .groups
            .partition_point(|g| g.first <= sid)
            .checked_sub(1)?;
        self.groups.get_mut(at).filter(|g| holds(g))
    }
}

/// Types from their name numbers (see [`encode_types`]).
fn decode_types(list: &ngsi_model::names::NameList, bytes: &[u8]) -> Vec<Iri> {
    bytes
        .chunks_exact(4)
        .filter_map(|b| list.get(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize))
        .cloned()
        .collect()
}

/// Types as name numbers.
fn encode_types(names: &Names, types: &[Iri]) -> Vec<u8> {
    types
        .iter()
        .flat_map(|t| names.number_of(t).to_le_bytes())
        .collect()
}

/// Writes what the group still holds back: the pending group row, and the
/// types of new entities that no group row carried.
pub(crate) fn finish(tx: &Connection, overlay: &mut HistoryOverlay) -> Result<(), StoreError> {
    flush_group(tx, overlay)?;
    if !overlay.pending.is_empty() {
        let mut recent = crate::sqlite::LazyStatement::new(tx, INSERT_RECENT);
        let mut history = crate::sqlite::LazyStatement::new(tx, INSERT_HISTORY);
        for (row, to_recent) in overlay.pending.drain(..) {
            execute_row(
                if to_recent {
                    recent.get()?
                } else {
                    history.get()?
                },
                &row,
            )?;
        }
    }
    // The first instances of the series this commit created: one genesis
    // row per group (see [`crate::genesis`]), in the order of their ids.
    let mut insert = crate::sqlite::LazyStatement::new(tx, crate::genesis::INSERT);
    for g in &mut overlay.groups {
        if !g.genesis.is_empty() {
            let (min_t, last, rows) = std::mem::take(&mut g.genesis).finish();
            insert.get()?.execute(params![g.first, min_t, last, rows])?;
        }
    }
    for (id, list) in std::mem::take(&mut overlay.deferred_types) {
        for (tenant, types) in list {
            write_types(tx, &tenant, &id, &types)?;
        }
    }
    Ok(())
}

fn write_types(tx: &Connection, tenant: &str, id: &str, types: &[Iri]) -> Result<(), StoreError> {
    let text = serde_json::to_string(&types.iter().map(|t| &**t).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT OR REPLACE INTO history_entities (tenant, id, types) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![tenant, id, text])?;
    Ok(())
}

/// Bytes of one series in a group row: the attribute's name number and the
/// datasetId's (plus one; 0 for none), both little-endian `u32`. The series
/// id is the row id plus the entry's position. A deleted series keeps its
/// place with the attribute number `u32::MAX`.
pub(crate) const GROUP_ENTRY: usize = 8;

const DELETED: u32 = u32::MAX;

fn group_entry(attr: u32, dataset: u32) -> [u8; GROUP_ENTRY] {
    let mut e = [0u8; GROUP_ENTRY];
    e[..4].copy_from_slice(&attr.to_le_bytes());
    e[4..].copy_from_slice(&dataset.to_le_bytes());
    e
}

fn read_entry(e: &[u8]) -> (u32, u32) {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (word(&e[..4]), word(&e[4..8]))
}

/// Writes the pending group of `overlay`, if any.
pub(crate) fn flush_group(tx: &Connection, overlay: &mut HistoryOverlay) -> Result<(), StoreError> {
    if let Some(g) = overlay.group.take() {
        tx.prepare_cached(
            "INSERT INTO history_series_groups (id, tenant, entity, series, types) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![g.first, &*g.tenant, &*g.entity, &g.entries, &g.types])?;
        overlay.groups.push(g);
    }
    Ok(())
}

/// Deletes series `sid` from the table that holds it: its own row of
/// `history_series` (written before groups existed), or its entry of a
/// group row (the row goes when its last entry does).
pub(crate) fn delete_series_row(
    tx: &Connection,
    names: &Names,
    sid: i64,
) -> Result<(), StoreError> {
    if tx.execute("DELETE FROM history_series WHERE id = ?1", [sid])? > 0 {
        return Ok(());
    }
    type GroupRow = (i64, String, String, Vec<u8>, Option<Vec<u8>>);
    let group: Option<GroupRow> = tx
        .query_row(
            "SELECT id, tenant, entity, series, types FROM history_series_groups \
             WHERE id <= ?1 ORDER BY id DESC LIMIT 1",
            [sid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((first, tenant, entity, mut entries, types)) = group else {
        return Ok(());
    };
    let at = usize::try_from(sid - first)
        .unwrap_or(usize::MAX)
        .saturating_mul(GROUP_ENTRY);
    if at + GROUP_ENTRY > entries.len() {
        return Ok(());
    }
    entries[at..at + GROUP_ENTRY].copy_from_slice(&group_entry(DELETED, 0));
    if entries
        .chunks_exact(GROUP_ENTRY)
        .all(|e| read_entry(e).0 == DELETED)
    {
        // The entity's types leave with the row unless kept elsewhere
        // (a deletion of the whole entity removes them after).
        if let Some(types) = types {
            let types = decode_types(&names.snapshot(), &types);
            let exists = tx
                .query_row(
                    "SELECT 1 FROM history_entities WHERE tenant = ?1 AND id = ?2",
                    params![tenant, entity],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                write_types(tx, &tenant, &entity, &types)?;
            }
        }
        tx.execute("DELETE FROM history_series_groups WHERE id = ?1", [first])?;
    } else {
        tx.execute(
            "UPDATE history_series_groups SET series = ?2 WHERE id = ?1",
            params![first, entries],
        )?;
    }
    Ok(())
}

/// The writer's state for recording history.
pub(crate) struct Recorder {
    pub(crate) next_series: i64,
    pub(crate) next_seq: i64,
    /// The counter value saved in `meta`: every seq below it may be in use.
    /// A commit saves a value `SEQ_RESERVE` ahead only once the counter
    /// reaches it, so that most commits leave the `meta` page alone.
    saved_seq: i64,
    /// Rows in `history_recent` (an upper bound: rows of a failed commit
    /// are counted too).
    pub(crate) recent_rows: usize,
}

impl Recorder {
    pub(crate) fn open(conn: &Connection) -> Result<Self, StoreError> {
        let next_series: i64 = conn.query_row(
            "SELECT MAX((SELECT COALESCE(MAX(id), 0) + 1 FROM history_series), \
                        (SELECT COALESCE(MAX(id + length(series) / 8), 1) FROM history_series_groups))",
            [],
            |r| r.get(0),
        )?;
        let seq: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'history_seq'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let recent: i64 =
            conn.query_row("SELECT count(*) FROM history_recent", [], |r| r.get(0))?;
        let next_seq = seq.and_then(|s| s.parse().ok()).unwrap_or(1);
        Ok(Self {
            next_series,
            next_seq,
            saved_seq: next_seq,
            recent_rows: usize::try_from(recent).unwrap_or(0),
        })
    }

    /// The series id of `key`, created (in the transaction and the overlay)
    /// when new.
    /// `known` is the entity's series list in the index (`None` for an
    /// entity without history), looked up once by the caller.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn series(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        known: Option<&[Slot]>,
        tenant: &str,
        id: &Arc<str>,
        name: &Iri,
        dataset: Option<&str>,
    ) -> Result<i64, StoreError> {
        if let Some(slots) = known
            && let Some(sid) = index.find_in(slots, name, dataset)
        {
            return Ok(sid);
        }
        if let Some(created) = overlay.new_series.get(&**id)
            && let Some(s) = created.iter().find(|s| {
                ngsi_model::entity::same_iri(&s.attr, name)
                    && s.dataset.as_deref() == dataset
                    && *s.tenant == *tenant
            })
        {
            return Ok(s.sid);
        }
        self.new_series(tx, index, overlay, tenant, id, name, dataset)
    }

    /// Creates the series of attribute `name` with `dataset` of entity `id`
    /// (in the transaction and the overlay), known to be new.
    #[allow(clippy::too_many_arguments)]
    fn new_series(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        name: &Iri,
        dataset: Option<&str>,
    ) -> Result<i64, StoreError> {
        let sid = self.next_series;
        self.next_series += 1;
        overlay.first_new.get_or_insert(sid);
        // The series joins the pending group of its entity (ids follow one
        // another), or starts one.
        let joins = overlay.group.as_ref().is_some_and(|g| {
            g.end() == sid
                && (Arc::ptr_eq(&g.entity, id) || *g.entity == **id)
                && *g.tenant == *tenant
        });
        if !joins {
            flush_group(tx, overlay)?;
            // An entity new to history: its types ride in its first row.
            let types = overlay.deferred_types.get_mut(&**id).and_then(|list| {
                let at = list.iter().position(|(t, _)| **t == *tenant)?;
                Some(encode_types(index.names(), &list.swap_remove(at).1))
            });
            if overlay.deferred_types.get(&**id).is_some_and(Vec::is_empty) {
                overlay.deferred_types.remove(&**id);
            }
            overlay.group = Some(PendingGroup {
                tenant: tenant.into(),
                entity: id.clone(),
                first: sid,
                entries: Vec::with_capacity(GROUP_ENTRY * 8),
                types,
                genesis: crate::genesis::Builder::default(),
            });
        }
        let attr = index.names().number_of(name);
        let dataset_number = dataset.map_or(0, |d| index.names().number_of(d) + 1);
        if let Some(g) = overlay.group.as_mut() {
            g.entries
                .extend_from_slice(&group_entry(attr, dataset_number));
        }
        overlay
            .new_series
            .entry(id.clone())
            .or_default()
            .push(NewSeries {
                tenant: tenant.into(),
                attr: name.clone(),
                dataset: dataset.map(Into::into),
                sid,
            });
        Ok(sid)
    }

    /// The series of attribute `name` of entity `id` with the datasetId of
    /// `inst`.
    #[allow(clippy::too_many_arguments)]
    fn series_for(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        known: Option<&[Slot]>,
        tenant: &str,
        id: &Arc<str>,
        name: &Iri,
        inst: &Attribute,
    ) -> Result<i64, StoreError> {
        self.series(
            tx,
            index,
            overlay,
            known,
            tenant,
            id,
            name,
            inst.dataset_id.as_deref(),
        )
    }

    /// Inserts one temporal instance.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert(
        &mut self,
        tx: &Connection,
        overlay: &mut HistoryOverlay,
        sid: i64,
        attr: Option<&Attribute>,
        deleted_at: i64,
        deleted_kind: Option<&str>,
    ) -> Result<i64, StoreError> {
        let (t, modified, created, num, doc) = encode_instance(attr, deleted_at, deleted_kind);
        let seq = self.next_seq;
        self.next_seq += 1;
        let row = Row {
            series: sid,
            t,
            seq,
            modified,
            created,
            num,
            doc,
        };
        let fresh = overlay.first_new.is_some_and(|first| sid >= first);
        if !overlay.defer_rows {
            insert_row(tx, &row, !fresh)?;
        } else if let Some(g) = fresh.then(|| overlay.group_holding(sid)).flatten() {
            g.genesis.push(g.first, &row);
        } else {
            // A series this commit created is in one of its groups; a row
            // of `history` would do as well.
            overlay.pending.push((row, !fresh));
        }
        if let Some(n) = num {
            overlay
                .numbers
                .push((sid, t, n.as_f64(), modified.is_some()));
        } else if attr.is_some() {
            overlay.others.push(sid);
        }
        overlay.recorded += 1;
        if !fresh {
            self.recent_rows += 1;
            overlay.recent.push((sid, seq));
        }
        Ok(seq)
    }

    /// Records the temporal instances of one applied operation: every
    /// instance of `after` that is new or was stamped, and every instance
    /// of `before` that is gone (a deletion).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        before: Option<&Entity>,
        after: Option<&Entity>,
        now: i64,
        encoding: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let known = index.series_list(tenant, id);
        if let (None, None, Some(after), Some(encoding)) = (before, known, after, encoding)
            && self.record_created(tx, index, overlay, tenant, id, after, encoding)?
        {
            return Ok(());
        }
        let instances = |e: Option<&Entity>| {
            e.map_or(0, |e| e.attrs.iter().map(|(_, v)| v.len()).sum::<usize>())
        };
        // An entity of many attribute instances is looked up through maps
        // built for this call: by scans, its record would take the square
        // of its size.
        let mut many = (instances(before) + instances(after) > MANY_INSTANCES)
            .then(|| ManyInstances::new(index, known, overlay, tenant, id, before, after));
        if let Some(after) = after {
            self.note_types(tx, index, overlay, tenant, id, &after.types)?;
            for (name, instances) in &after.attrs {
                let old = match &many {
                    Some(_) => None,
                    None => before.and_then(|b| b.attr(name)),
                };
                for inst in instances {
                    let prior = match &many {
                        Some(m) => m.before(name, inst.dataset_id.as_deref()),
                        None => {
                            old.and_then(|o| o.iter().find(|x| x.dataset_id == inst.dataset_id))
                        }
                    };
                    if prior.is_some_and(|p| p.modified_at == inst.modified_at) {
                        continue;
                    }
                    let sid = match &mut many {
                        Some(m) => m.series(self, tx, index, overlay, tenant, id, name, inst)?,
                        None => {
                            self.series_for(tx, index, overlay, known, tenant, id, name, inst)?
                        }
                    };
                    self.insert(tx, overlay, sid, Some(inst), now, None)?;
                }
            }
        }
        self.record_scope(tx, index, overlay, tenant, id, before, after, now)?;
        if let Some(before) = before {
            let deleted_at = after.map_or(now, |a| a.modified_at);
            for (name, instances) in &before.attrs {
                let new = match &many {
                    Some(_) => None,
                    None => after.and_then(|a| a.attr(name)),
                };
                for inst in instances {
                    let kept = match &many {
                        Some(m) => m.kept(name, inst.dataset_id.as_deref()),
                        None => {
                            new.is_some_and(|n| n.iter().any(|x| x.dataset_id == inst.dataset_id))
                        }
                    };
                    if kept {
                        continue;
                    }
                    let sid = match &mut many {
                        Some(m) => m.series(self, tx, index, overlay, tenant, id, name, inst)?,
                        None => {
                            self.series_for(tx, index, overlay, known, tenant, id, name, inst)?
                        }
                    };
                    self.insert(
                        tx,
                        overlay,
                        sid,
                        None,
                        deleted_at,
                        Some(inst.value.kind_name()),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Records the instances of entity `e`, created by this operation and
    /// new to history, as one entity item of its group's genesis row (see
    /// [`crate::genesis`]): its stored `encoding` stands for them. Returns
    /// false, having recorded nothing, when the item could not say what
    /// [`Self::record`] writes row by row: rows not deferred to the commit,
    /// series of the entity created earlier in the commit, a Scope (its
    /// series comes after the attributes'), many instances, or two
    /// instances of one attribute with one datasetId (they share a series).
    #[allow(clippy::too_many_arguments)]
    fn record_created(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        e: &Entity,
        encoding: &[u8],
    ) -> Result<bool, StoreError> {
        let count: usize = e.attrs.iter().map(|(_, list)| list.len()).sum();
        if !overlay.defer_rows
            || count == 0
            || count > MANY_INSTANCES
            || !e.scopes.is_empty()
            || overlay.new_series.contains_key(&**id)
        {
            return Ok(false);
        }
        // Pairwise, so only after the count is known to be small.
        let distinct = e.attrs.iter().all(|(_, list)| {
            list.iter()
                .enumerate()
                .all(|(i, a)| list[..i].iter().all(|b| b.dataset_id != a.dataset_id))
        });
        if !distinct {
            return Ok(false);
        }
        // Without series in the index, the entity has no entry there.
        self.note_types_in(tx, None, overlay, tenant, id, &e.types)?;
        let mut first = None;
        let mut min_t = i64::MAX;
        for (name, list) in &e.attrs {
            for inst in list.iter() {
                let sid = self.new_series(
                    tx,
                    index,
                    overlay,
                    tenant,
                    id,
                    name,
                    inst.dataset_id.as_deref(),
                )?;
                first.get_or_insert(sid);
                min_t = min_t.min(instant(inst).0);
            }
        }
        let (Some(sid), Some(group)) = (first, overlay.group.as_mut()) else {
            return Err(StoreError::Io(std::io::Error::other(
                "a created entity's series have no group",
            )));
        };
        let count = count as i64;
        // The series are consecutive in the entity's own group: it joins no
        // group of another entity, and none of its series is older. Were
        // that ever untrue, the item would name other series: the commit
        // fails instead.
        if group.end() != sid + count {
            return Err(StoreError::Io(std::io::Error::other(
                "a created entity's series do not follow one another",
            )));
        }
        let seq = self.next_seq;
        self.next_seq += count;
        group
            .genesis
            .push_entity(group.first, sid, seq, encoding, min_t, sid + count - 1);
        overlay.recorded += count as usize;
        Ok(true)
    }

    /// Records a change of the entity's Scope (clause 4.5.6): a Property
    /// of the core `scope` IRI whose value is the scope (one string or an
    /// array), its observedAt a copy of modifiedAt; or a deletion when the
    /// scope or the entity is gone.
    #[allow(clippy::too_many_arguments)]
    fn record_scope(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        before: Option<&Entity>,
        after: Option<&Entity>,
        now: i64,
    ) -> Result<(), StoreError> {
        let old: &[Box<str>] = before.map_or(&[], |b| &b.scopes);
        let new: &[Box<str>] = after.map_or(&[], |a| &a.scopes);
        if old == new {
            return Ok(());
        }
        let known = index.series_list(tenant, id);
        let name = ngsi_model::iri(SCOPE);
        if let Some(a) = after.filter(|a| !a.scopes.is_empty()) {
            let value = match a.scopes.as_slice() {
                [one] => serde_json::Value::String(one.to_string()),
                many => many
                    .iter()
                    .map(|s| serde_json::Value::String(s.to_string()))
                    .collect(),
            };
            let mut inst = Attribute::new(AttrValue::Property(value));
            inst.created_at = a.modified_at;
            inst.modified_at = a.modified_at;
            inst.observed_at = Some(ngsi_model::time::format_micros(a.modified_at).into());
            let sid = self.series_for(tx, index, overlay, known, tenant, id, &name, &inst)?;
            self.insert(tx, overlay, sid, Some(&inst), now, None)?;
        } else {
            let deleted_at = after.map_or(now, |a| a.modified_at);
            let inst = Attribute::new(AttrValue::Property(serde_json::Value::Null));
            let sid = self.series_for(tx, index, overlay, known, tenant, id, &name, &inst)?;
            self.insert(tx, overlay, sid, None, deleted_at, Some("Property"))?;
        }
        Ok(())
    }

    /// Stores the types of an entity with history when they are new.
    pub(crate) fn note_types(
        &mut self,
        tx: &Connection,
        index: &HistoryIndex,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        types: &[Iri],
    ) -> Result<(), StoreError> {
        self.note_types_in(tx, Some(index), overlay, tenant, id, types)
    }

    /// [`Self::note_types`] with the index to look the entity's types up in,
    /// or `None` for an entity known to be absent from it.
    fn note_types_in(
        &mut self,
        tx: &Connection,
        index: Option<&HistoryIndex>,
        overlay: &mut HistoryOverlay,
        tenant: &str,
        id: &Arc<str>,
        types: &[Iri],
    ) -> Result<(), StoreError> {
        let pending = overlay
            .entity_types
            .get(&(Box::<str>::from(tenant), id.clone()))
            .map(Vec::as_slice);
        let known = pending.or_else(|| {
            index?
                .entities
                .get(tenant)
                .and_then(|m| m.get(&**id))
                .map(|(t, _)| t.as_slice())
        });
        if known == Some(types) || types.is_empty() {
            return Ok(());
        }
        let deferred = overlay
            .deferred_types
            .get_mut(&**id)
            .and_then(|list| list.iter_mut().find(|(t, _)| **t == *tenant));
        match (known, deferred) {
            // Not yet written: the types change before they are.
            (_, Some((_, pending))) => *pending = types.to_vec(),
            // New to history: written with the entity's first group row.
            (None, None) => overlay
                .deferred_types
                .entry(id.clone())
                .or_default()
                .push((tenant.into(), types.to_vec())),
            (Some(_), None) => write_types(tx, tenant, id, types)?,
        }
        overlay
            .entity_types
            .insert((tenant.into(), id.clone()), types.to_vec());
        Ok(())
    }

    /// Saves the instance counter when the commit's instances used seqs
    /// beyond the saved value: it saves a value `SEQ_RESERVE` ahead, and a
    /// restart continues from there (seqs need to be unique and growing,
    /// not dense).
    pub(crate) fn save_seq(&mut self, tx: &Connection) -> Result<(), StoreError> {
        if self.next_seq <= self.saved_seq {
            return Ok(());
        }
        let reserved = self.next_seq + SEQ_RESERVE;
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('history_seq', ?1)")?
            .execute([reserved.to_string()])?;
        self.saved_seq = reserved;
        Ok(())
    }

    /// After a transaction that may have saved the counter failed: the next
    /// commit that records saves it again.
    pub(crate) fn commit_failed(&mut self) {
        self.saved_seq = 0;
    }
}

/// Inserts a row into `history_recent` (`recent`) or `history`.
pub(crate) fn insert_row(tx: &Connection, row: &Row, recent: bool) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(if recent {
        INSERT_RECENT
    } else {
        INSERT_HISTORY
    })?;
    execute_row(&mut stmt, row)
}

const INSERT_RECENT: &str = "INSERT OR REPLACE INTO history_recent (series, t, seq, modified, created, num, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
pub(crate) const INSERT_HISTORY: &str = "INSERT OR REPLACE INTO history (series, t, seq, modified, created, num, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Runs an insert statement of [`insert_row`] for `row`.
pub(crate) fn execute_row(stmt: &mut rusqlite::Statement<'_>, row: &Row) -> Result<(), StoreError> {
    let num: Option<rusqlite::types::Value> = row.num.map(|n| match n {
        Num::Int(i) => rusqlite::types::Value::Integer(i),
        Num::Real(f) => rusqlite::types::Value::Real(f),
    });
    stmt.execute(params![
        row.series,
        row.t,
        row.seq,
        row.modified,
        row.created,
        num,
        row.doc
    ])?;
    Ok(())
}

/// Moves the rows of `history_recent` into `history`, sorted by series so
/// that each series' last page is written once.
pub(crate) fn flush_recent(
    conn: &mut Connection,
    recorder: &mut Recorder,
) -> Result<(), StoreError> {
    if recorder.recent_rows == 0 {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute_batch(
        "INSERT OR REPLACE INTO history (series, t, seq, modified, created, num, doc) \
         SELECT series, t, seq, modified, created, num, doc FROM history_recent ORDER BY series, t, seq; \
         DELETE FROM history_recent;",
    )?;
    tx.commit()?;
    recorder.recent_rows = 0;
    Ok(())
}

/// Publishes the history side of a committed group.
pub(crate) fn publish(index: &RwLock<HistoryIndex>, cache: &Mutex<NumCache>, o: HistoryOverlay) {
    if !o.groups.is_empty() || !o.entity_types.is_empty() || !o.recent.is_empty() {
        let mut index = index.write();
        for (sid, seq) in o.recent {
            index.recent.entry(sid).or_default().push(seq);
        }
        let mut types = o.entity_types;
        for g in &o.groups {
            // The types of an entity new to history with its first series:
            // one lookup of the entity for both.
            let types = types.remove(&(g.tenant.clone(), g.entity.clone()));
            index.add_group(g, types);
        }
        for ((tenant, id), types) in types {
            index
                .entities
                .entry(tenant)
                .or_default()
                .entry(id)
                .or_default()
                .0 = types;
        }
    }
    if !o.numbers.is_empty() || !o.others.is_empty() {
        let mut cache = cache.lock();
        for (sid, t, v, observed) in o.numbers {
            cache.append(sid, t, v, observed);
        }
        for sid in o.others {
            cache.remove(sid);
        }
        cache.evict();
    }
}

/// Aggregates the whole range of `range` for a time property other than
/// the instant, or when the series is not cached: from the instances.
pub fn aggregate_instances(
    instances: &[TemporalInstance],
    range: &TimeRange,
    period: Option<&IsoDuration>,
    distinct: bool,
) -> Vec<AggregateBucket> {
    let mut points: Vec<(i64, Point)> = instances
        .iter()
        .filter_map(|i| Some((range.property.time_of(i), point_of(&i.attr.as_ref()?.value))))
        .collect();
    points.sort_by_key(|p| p.0);
    let (times, points): (Vec<i64>, Vec<Point>) = points.into_iter().unzip();
    // Numbers only: the numeric summary, as the columnar copies give it.
    if points.iter().all(|p| p.class == crate::value_class::NUMBER) {
        let values: Vec<f64> = points.iter().filter_map(|p| p.num).collect();
        return aggregate_points(&times, &values, range.from, range.to, period, distinct);
    }
    periods(&times, range.from, range.to, period, |r, start, end| {
        summarise_points(&points[r], start, end, distinct)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(times: &[i64], values: &[f64], period: Option<i64>, expect: &[(i64, i64, u64, f64)]) {
        let p = period.map(|micros| IsoDuration { months: 0, micros });
        let got = aggregate_points(times, values, None, None, p.as_ref(), true);
        let got: Vec<(i64, i64, u64, f64)> = got
            .iter()
            .map(|b| (b.start, b.end, b.count, b.sum))
            .collect();
        assert_eq!(got, expect);
    }

    /// Deletion rows are told from instances with a document, which the
    /// columnar copies count as values of another kind.
    #[test]
    fn deletion_documents_are_told_from_instance_documents() {
        let (.., deletion) = encode_instance(None, 5, Some("Relationship"));
        assert!(is_deletion(&deletion.unwrap()));
        let text = Attribute::new(AttrValue::Property(serde_json::json!("high")));
        let (_, _, _, num, doc) = encode_instance(Some(&text), 5, None);
        assert!(num.is_none());
        assert!(!is_deletion(&doc.unwrap()));
    }

    #[test]
    fn aggregation_buckets() {
        check(&[], &[], Some(10), &[]);
        check(
            &[0, 5, 10, 35],
            &[1.0, 2.0, 3.0, 4.0],
            Some(10),
            &[(0, 10, 2, 3.0), (10, 20, 1, 3.0), (30, 40, 1, 4.0)],
        );
        check(&[3, 5], &[1.0, 2.0], None, &[(3, 6, 2, 3.0)]);
        check(&[3, 5], &[1.0, 2.0], Some(0), &[(3, 6, 2, 3.0)]);
    }

    /// A calendar period that would end past the representable time
    /// (`P300000Y`) ends with the range: never before it starts.
    #[test]
    fn a_period_beyond_the_calendar_ends_with_the_range() {
        let huge = IsoDuration::parse("P300000Y").unwrap();
        let t0 = 1_700_000_000_000_000;
        for to in [None, Some(t0 + 100)] {
            let b = aggregate_points(&[t0, t0 + 7], &[1.0, 2.0], None, to, Some(&huge), false);
            assert_eq!(b.len(), 1);
            assert_eq!((b[0].start, b[0].count), (t0, 2));
            assert_eq!(b[0].end, to.unwrap_or(t0 + 8), "{:?}", b[0]);
        }
        let month = IsoDuration::parse("P1M").unwrap();
        let b = aggregate_points(
            &[0, 40 * 86_400_000_000],
            &[1.0, 2.0],
            None,
            None,
            Some(&month),
            false,
        );
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|b| b.end > b.start));
    }

    /// Monthly periods count from their start: after January 31st come
    /// February 29th, March 31st and April 30th (not the 29th each time).
    #[test]
    fn calendar_periods_count_from_the_start() {
        let at = |s: &str| ngsi_model::time::parse_datetime(s).unwrap();
        let month = IsoDuration::parse("P1M").unwrap();
        let times = [
            at("2020-01-31T00:00:00Z"),
            at("2020-03-30T12:00:00Z"),
            at("2020-03-31T12:00:00Z"),
            at("2020-04-30T12:00:00Z"),
        ];
        let b = aggregate_points(&times, &[1.0; 4], Some(times[0]), None, Some(&month), false);
        let spans: Vec<(String, String, u64)> = b
            .iter()
            .map(|b| {
                (
                    ngsi_model::time::format_instant(b.start),
                    ngsi_model::time::format_instant(b.end),
                    b.count,
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                (
                    "2020-01-31T00:00:00Z".into(),
                    "2020-02-29T00:00:00Z".into(),
                    1
                ),
                (
                    "2020-02-29T00:00:00Z".into(),
                    "2020-03-31T00:00:00Z".into(),
                    1
                ),
                (
                    "2020-03-31T00:00:00Z".into(),
                    "2020-04-30T00:00:00Z".into(),
                    1
                ),
                (
                    "2020-04-30T00:00:00Z".into(),
                    "2020-05-31T00:00:00Z".into(),
                    1
                ),
            ]
        );
    }

    /// Values near the largest double overflow the sum, not the mean;
    /// equal objects count once whatever the order of their members.
    #[test]
    fn averages_survive_an_overflowing_sum_and_objects_compare_as_json() {
        let b = aggregate_points(&[1, 2], &[1e308, 1e308], None, None, None, false);
        assert_eq!((b[0].mean, b[0].stddev), (1e308, 0.0));
        assert!(b[0].sum.is_infinite());
        assert_eq!(
            jsonld::canonical_json(&serde_json::json!({"b": [{"y": 1, "x": 2}], "a": "s"})),
            jsonld::canonical_json(&serde_json::json!({"a": "s", "b": [{"x": 2, "y": 1}]}))
        );
        assert_ne!(
            jsonld::canonical_json(&serde_json::json!({"a": [1, 2]})),
            jsonld::canonical_json(&serde_json::json!({"a": [2, 1]}))
        );
    }

    #[test]
    fn aggregation_statistics() {
        let b = aggregate_points(&[1, 2, 3, 4], &[2.0, 4.0, 4.0, 6.0], None, None, None, true);
        assert_eq!(b.len(), 1);
        let b = &b[0];
        assert_eq!(
            (b.count, b.distinct, b.sum, b.sumsq),
            (4, Some(3), 16.0, 72.0)
        );
        assert_eq!((b.min, b.max), (2.0, 6.0));
        assert!((b.stddev - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let p = IsoDuration {
            months: 1,
            micros: 1,
        };
        let b = aggregate_points(
            &[i64::MIN, 0, i64::MAX],
            &[1.0, 2.0, 3.0],
            None,
            None,
            Some(&p),
            false,
        );
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 3);
        let p = IsoDuration {
            months: 0,
            micros: 1,
        };
        let b = aggregate_points(
            &[i64::MIN, i64::MAX],
            &[1.0, 2.0],
            None,
            None,
            Some(&p),
            false,
        );
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 2);
    }
    proptest::proptest! {
        #[test]
        fn aggregation_matches_a_naive_count(
            mut times in proptest::collection::vec(-1_000_000i64..1_000_000, 0..300),
            micros in 1i64..500_000,
            months in 0u32..3,
            from in proptest::option::of(-1_000_000i64..0),
        ) {
            times.sort_unstable();
            let values: Vec<f64> = times.iter().map(|t| (*t % 97) as f64).collect();
            let p = IsoDuration { months, micros };
            let kept: Vec<(i64, f64)> = times
                .iter()
                .zip(&values)
                .filter(|(t, _)| from.is_none_or(|f| **t >= f))
                .map(|(t, v)| (*t, *v))
                .collect();
            let (kt, kv): (Vec<i64>, Vec<f64>) = kept.iter().copied().unzip();
            let buckets = aggregate_points(&kt, &kv, from, None, Some(&p), true);
            proptest::prop_assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), kt.len() as u64);
            for w in buckets.windows(2) {
                proptest::prop_assert!(w[0].end <= w[1].start);
            }
            for b in &buckets {
                let inside: Vec<f64> = kept
                    .iter()
                    .filter(|(t, _)| *t >= b.start && *t < b.end)
                    .map(|(_, v)| *v)
                    .collect();
                proptest::prop_assert_eq!(inside.len() as u64, b.count);
                proptest::prop_assert_eq!(inside.iter().sum::<f64>(), b.sum);
                proptest::prop_assert!(b.stddev >= 0.0);
            }
        }
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// An entity of every kind of instance the recorder tells apart: plain
    /// numbers (integer, float, an unsigned integer above i64::MAX), units,
    /// sub-attributes, datasetIds, observedAt or not, created and modified
    /// apart, and the other kinds of attribute.
    fn varied_entity(id: &str) -> Entity {
        use serde_json::json;
        let at = |mut a: Attribute, observed: Option<&str>, created: i64| {
            a.created_at = created;
            a.modified_at = 2_000;
            a.observed_at = observed.map(Into::into);
            a
        };
        let prop = |v: serde_json::Value| Attribute::new(AttrValue::Property(v));
        let mut unit = prop(json!(20.5));
        unit.unit_code = Some("CEL".into());
        let mut with_sub = prop(json!(1013));
        with_sub.sub = vec![(ngsi_model::iri("https://example.org/accuracy"), {
            let mut a = prop(json!(0.5));
            a.observed_at = Some("2024-03-01T08:00:00Z".into());
            a
        })];
        let mut a_set = prop(json!(60));
        a_set.dataset_id = Some("urn:ngsi-ld:Dataset:a".into());
        let mut b_set = prop(json!(62.25));
        b_set.dataset_id = Some("urn:ngsi-ld:Dataset:b".into());
        let name = |n: &str| ngsi_model::iri(&format!("https://example.org/{n}"));
        Entity {
            id: id.into(),
            types: vec![name("Sensor")],
            scopes: Vec::new(),
            attrs: vec![
                (
                    name("int"),
                    vec![at(prop(json!(7)), Some("2024-03-01T08:00:00Z"), 2_000)].into(),
                ),
                (
                    name("unit"),
                    vec![at(unit, Some("2024-03-01T07:00:00.5Z"), 1_000)].into(),
                ),
                (
                    name("big"),
                    vec![at(prop(json!(u64::MAX)), None, 2_000)].into(),
                ),
                (name("sub"), vec![at(with_sub, None, 2_000)].into()),
                (
                    name("sets"),
                    vec![
                        at(a_set, Some("2023-01-01T00:00:00Z"), 2_000),
                        at(b_set, None, 2_000),
                    ]
                    .into(),
                ),
                (
                    name("text"),
                    vec![at(prop(json!("open")), None, 2_000)].into(),
                ),
                (
                    name("rel"),
                    vec![at(
                        Attribute::new(AttrValue::Relationship {
                            object: json!("urn:ngsi-ld:Group:1"),
                            object_type: None,
                        }),
                        None,
                        2_000,
                    )]
                    .into(),
                ),
                (
                    name("location"),
                    vec![at(
                        Attribute::new(AttrValue::GeoProperty(
                            json!({"type": "Point", "coordinates": [113.25, 23.08]}),
                        )),
                        None,
                        2_000,
                    )]
                    .into(),
                ),
            ],
            created_at: 1_000,
            modified_at: 2_000,
            expires_at: None,
        }
    }

    /// The genesis rows a commit creating `entities` writes, the encodings
    /// given to the recorder (entity items) or not (a row per instance).
    fn genesis_of(entities: &[Entity], with_encoding: bool) -> (Vec<Row>, Vec<u32>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        let names = Arc::new(Names::default());
        let index = HistoryIndex::new(names.clone());
        let mut recorder = Recorder::open(&conn).unwrap();
        let mut overlay = HistoryOverlay {
            defer_rows: true,
            ..HistoryOverlay::default()
        };
        for e in entities {
            let encoding = crate::codec::encode_entity_reusing(&names, e, None).bytes;
            let id: Arc<str> = e.id.clone();
            recorder
                .record(
                    &conn,
                    &index,
                    &mut overlay,
                    "",
                    &id,
                    None,
                    Some(e),
                    e.modified_at,
                    with_encoding.then_some(&encoding[..]),
                )
                .unwrap();
        }
        finish(&conn, &mut overlay).unwrap();
        let mut stmt = conn
            .prepare("SELECT grp, rows FROM history_genesis ORDER BY grp")
            .unwrap();
        let groups: Vec<(i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let items = groups
            .iter()
            .map(|(_, bytes)| rmp::decode::read_array_len(&mut &bytes[..]).unwrap())
            .collect();
        let rows = groups
            .iter()
            .flat_map(|(first, bytes)| crate::genesis::decode(&names, *first, bytes).unwrap())
            .collect();
        (rows, items)
    }

    /// A created entity's genesis item reads back as exactly the rows the
    /// recorder writes instance by instance: series, instants, seqs,
    /// system times, numbers and documents.
    #[test]
    fn an_entity_item_reads_back_as_the_rows_recorded_one_by_one() {
        let entities = [varied_entity("urn:e:1"), varied_entity("urn:e:2")];
        let (items, count) = genesis_of(&entities, true);
        assert_eq!(count, [1, 1], "one entity item a group");
        let (rows, count) = genesis_of(&entities, false);
        assert_eq!(count, [9, 9], "a row an instance");
        let key = |r: &Row| {
            let num = r.num.map(|n| match n {
                Num::Int(i) => format!("i{i}"),
                Num::Real(f) => format!("f{}", f.to_bits()),
            });
            (
                r.series,
                r.t,
                r.seq,
                r.modified,
                r.created,
                num,
                r.doc.clone(),
            )
        };
        assert_eq!(rows.len(), 18);
        assert_eq!(
            items.iter().map(key).collect::<Vec<_>>(),
            rows.iter().map(key).collect::<Vec<_>>()
        );
    }

    /// The document as written before: a trimmed copy of the attribute.
    fn copied(a: &Attribute) -> Vec<u8> {
        let mut copy = a.clone();
        copy.dataset_id = None;
        copy.created_at = 0;
        copy.modified_at = 0;
        copy.observed_at = None;
        rmp_serde::to_vec(&copy).unwrap()
    }

    /// A numeric instance with metadata keeps its number in the row only;
    /// it reads back whole, and a document of the earlier layout (number
    /// inside) still reads.
    #[test]
    fn a_numbered_instance_keeps_its_value_in_the_row_only() {
        for value in [serde_json::json!(20.5), serde_json::json!(-3)] {
            let mut a = Attribute::new(AttrValue::Property(value.clone()));
            a.unit_code = Some("CEL".into());
            a.created_at = 5;
            a.modified_at = 5;
            let (t, modified, created, num, doc) = encode_instance(Some(&a), 0, None);
            let num = match num.unwrap() {
                Num::Int(i) => rusqlite::types::Value::Integer(i),
                Num::Real(f) => rusqlite::types::Value::Real(f),
            };
            let doc = doc.unwrap();
            let raw: Attribute = rmp_serde::from_slice(&doc).unwrap();
            assert_eq!(
                raw.value,
                AttrValue::Property(serde_json::Value::Null),
                "the number is not in the document"
            );
            for doc in [doc, copied(&a)] {
                let back = decode_row(t, 1, modified, created, num.clone(), Some(doc));
                let back = back.attr.unwrap();
                assert_eq!(back.value, AttrValue::Property(value.clone()));
                assert_eq!(back.unit_code.as_deref(), Some("CEL"));
            }
        }
    }

    /// A number the row cannot hold exactly (an unsigned integer above
    /// `i64::MAX`, which the row keeps as a float) stays in the document,
    /// with metadata or without, and reads back exactly.
    #[test]
    fn a_number_the_row_rounds_stays_in_the_document() {
        let value = serde_json::json!(u64::MAX);
        for unit in [Some("C62"), None] {
            let mut a = Attribute::new(AttrValue::Property(value.clone()));
            a.unit_code = unit.map(Into::into);
            let (t, modified, created, num, doc) = encode_instance(Some(&a), 0, None);
            assert!(doc.is_some(), "{unit:?}");
            let num = match num.unwrap() {
                Num::Int(i) => rusqlite::types::Value::Integer(i),
                Num::Real(f) => rusqlite::types::Value::Real(f),
            };
            let back = decode_row(t, 1, modified, created, num, doc);
            assert_eq!(
                back.attr.unwrap().value,
                AttrValue::Property(value.clone()),
                "{unit:?}"
            );
        }
    }

    #[test]
    fn instance_documents_match_the_trimmed_copy_and_read_back() {
        let mut p = Attribute::new(AttrValue::Property(serde_json::json!(20.5)));
        p.unit_code = Some("CEL".into());
        p.dataset_id = Some("urn:ds:a".into());
        p.observed_at = Some("2024-03-01T08:00:00Z".into());
        p.created_at = 5;
        p.modified_at = 7;
        let mut accuracy = Attribute::new(AttrValue::Property(serde_json::json!(0.5)));
        accuracy.unit_code = Some("P1".into());
        p.sub
            .push((ngsi_model::iri("https://example.org/accuracy"), accuracy));
        let r = Attribute::new(AttrValue::Relationship {
            object: serde_json::json!("urn:x:1"),
            object_type: None,
        });
        let l = Attribute::new(AttrValue::ListProperty(vec![
            serde_json::json!(1),
            serde_json::json!("a"),
        ]));
        for a in [&p, &r, &l] {
            let doc = instance_doc(a, false);
            assert_eq!(doc, copied(a));
            let back: Attribute = rmp_serde::from_slice(&doc).unwrap();
            assert_eq!(back.value, a.value);
            assert_eq!(back.sub, a.sub);
            assert_eq!(back.unit_code, a.unit_code);
        }
    }
}
