//! Genesis rows: the instances that the commit creating a group of series
//! (the series of one entity, see `history_series_groups`) wrote for them,
//! kept together as one row of `history_genesis` keyed by the group's first
//! series id, instead of one row of `history` each.
//!
//! A created entity's first instances are most of what a city writes to
//! its history while it loads (ten rows for the template entity of the
//! benchmark); one row instead of ten saves most of the writer's history
//! work per created entity. Readers of a series merge its genesis
//! instances with its rows of `history` and `history_recent`. Whatever
//! changes or deletes instances of a series first *explodes* the genesis
//! row that holds them into ordinary `history` rows ([`explode`]), so the
//! code that edits `history` needs no other case.
//!
//! Encoding (MessagePack): an array of items. An item is a row, an array
//! `[offset, t, seq, modified|nil, created|nil, num|nil, doc|nil]`, where
//! `offset` is the series id minus the group's, `num` an integer or a
//! float and `doc` binary; or (since storage format 6) a created entity:
//! the byte `0xc1` (which MessagePack never uses), then `offset`, `seq`
//! and the entity's stored encoding as binary. That item stands for one
//! row per attribute instance of the entity, in the entity's order, with
//! series `offset`, `offset + 1`, ... and seqs `seq`, `seq + 1`, ..., each
//! the instance as [`crate::history::encode_instance`] writes it: what the
//! recorder would have written row by row. A created entity's instances
//! are the bytes of its encoding already, so its creation copies them once
//! instead of encoding every instance again.

use std::sync::Arc;

use ngsi_model::names::Names;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::history::{Num, Row};

/// The first byte of a created-entity item.
const ENTITY_ITEM: u8 = 0xc1;

/// Inserts a genesis row: group, earliest instant, last series, rows.
pub(crate) const INSERT: &str =
    "INSERT INTO history_genesis (grp, min_t, last, rows) VALUES (?1, ?2, ?3, ?4)";

/// The MessagePack nil marker.
const NIL: u8 = 0xc0;

/// Encodes the rows of the group whose first series is `first`.
#[cfg(test)]
pub(crate) fn encode(first: i64, rows: &[Row]) -> Vec<u8> {
    let mut b = Builder::default();
    for r in rows {
        b.push(first, r);
    }
    b.finish().2
}

/// A genesis row built while its instances are recorded: each row is
/// encoded as it comes, and [`Builder::finish`] puts the count in front.
/// The bytes are exactly [`encode`]'s for the same rows.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    rows: Vec<u8>,
    count: usize,
    min_t: i64,
    last: i64,
}

impl Builder {
    /// Adds a row of the group whose first series is `first`.
    pub(crate) fn push(&mut self, first: i64, r: &Row) {
        use crate::codec::{array_len, bin, f64, int, nil};
        let out = &mut self.rows;
        let opt = |out: &mut Vec<u8>, v: Option<i64>| match v {
            Some(v) => int(out, v),
            None => nil(out),
        };
        array_len(out, 7);
        int(out, r.series - first);
        int(out, r.t);
        int(out, r.seq);
        opt(out, r.modified);
        opt(out, r.created);
        match r.num {
            None => nil(out),
            Some(Num::Int(i)) => int(out, i),
            Some(Num::Real(f)) => f64(out, f),
        }
        match &r.doc {
            None => nil(out),
            Some(d) => bin(out, d),
        }
        self.note(r.t, r.series);
    }

    /// Adds a created entity's instances (see the module documentation):
    /// the first of its series is `sid`, of its seqs `seq`; `min_t` is the
    /// earliest instant among them and `last` their last series.
    pub(crate) fn push_entity(
        &mut self,
        first: i64,
        sid: i64,
        seq: i64,
        encoding: &[u8],
        min_t: i64,
        last: i64,
    ) {
        use crate::codec::{bin, int};
        self.rows.push(ENTITY_ITEM);
        int(&mut self.rows, sid - first);
        int(&mut self.rows, seq);
        bin(&mut self.rows, encoding);
        self.note(min_t, last);
    }

    fn note(&mut self, t: i64, series: i64) {
        if self.count == 0 {
            (self.min_t, self.last) = (t, series);
        } else {
            self.min_t = self.min_t.min(t);
            self.last = self.last.max(series);
        }
        self.count += 1;
    }

    /// Whether no row was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The earliest instant, the last series and the encoded rows.
    pub(crate) fn finish(self) -> (i64, i64, Vec<u8>) {
        let mut out = Vec::with_capacity(self.rows.len() + 5);
        crate::codec::array_len(&mut out, self.count);
        out.extend_from_slice(&self.rows);
        (self.min_t, self.last, out)
    }
}

fn corrupt(reason: impl std::fmt::Display) -> StoreError {
    StoreError::Decode {
        id: "<history_genesis>".into(),
        reason: reason.to_string(),
    }
}

/// Decodes a genesis row of the group whose first series is `first`;
/// `names` numbers the names of its entity items.
pub(crate) fn decode(names: &Arc<Names>, first: i64, bytes: &[u8]) -> Result<Vec<Row>, StoreError> {
    use rmp::decode::{read_array_len, read_bin_len, read_f32, read_f64, read_int};
    let mut rd: &[u8] = bytes;
    let int = |rd: &mut &[u8]| read_int::<i64, _>(rd).map_err(corrupt);
    let opt = |rd: &mut &[u8]| -> Result<Option<i64>, StoreError> {
        if rd.first() == Some(&NIL) {
            *rd = &rd[1..];
            return Ok(None);
        }
        read_int::<i64, _>(rd).map(Some).map_err(corrupt)
    };
    let n = read_array_len(&mut rd).map_err(corrupt)?;
    let mut rows = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        if rd.first() == Some(&ENTITY_ITEM) {
            rd = &rd[1..];
            let offset = int(&mut rd)?;
            let seq = int(&mut rd)?;
            let len = read_bin_len(&mut rd).map_err(corrupt)? as usize;
            if len > rd.len() {
                return Err(corrupt("an entity runs past the row"));
            }
            let (encoding, rest) = rd.split_at(len);
            rd = rest;
            let entity = crate::codec::decode_entity(names, encoding).map_err(corrupt)?;
            let instances = entity.attrs.iter().flat_map(|(_, list)| list.iter());
            for (k, inst) in (0i64..).zip(instances) {
                let (t, modified, created, num, doc) =
                    crate::history::encode_instance(Some(inst), 0, None);
                rows.push(Row {
                    series: first
                        .checked_add(offset)
                        .and_then(|s| s.checked_add(k))
                        .ok_or_else(|| corrupt("a series offset out of range"))?,
                    t,
                    seq: seq
                        .checked_add(k)
                        .ok_or_else(|| corrupt("a seq out of range"))?,
                    modified,
                    created,
                    num,
                    doc,
                });
            }
            continue;
        }
        if read_array_len(&mut rd).map_err(corrupt)? != 7 {
            return Err(corrupt("a row is not seven fields"));
        }
        let series = first
            .checked_add(int(&mut rd)?)
            .ok_or_else(|| corrupt("a series offset out of range"))?;
        let t = int(&mut rd)?;
        let seq = int(&mut rd)?;
        let modified = opt(&mut rd)?;
        let created = opt(&mut rd)?;
        let num = match rd.first() {
            Some(&NIL) => {
                rd = &rd[1..];
                None
            }
            Some(0xca) => Some(Num::Real(f64::from(read_f32(&mut rd).map_err(corrupt)?))),
            Some(0xcb) => Some(Num::Real(read_f64(&mut rd).map_err(corrupt)?)),
            _ => Some(Num::Int(int(&mut rd)?)),
        };
        let doc = if rd.first() == Some(&NIL) {
            rd = &rd[1..];
            None
        } else {
            let len = read_bin_len(&mut rd).map_err(corrupt)? as usize;
            if len > rd.len() {
                return Err(corrupt("a document runs past the row"));
            }
            let (d, rest) = rd.split_at(len);
            rd = rest;
            Some(d.to_vec())
        };
        rows.push(Row {
            series,
            t,
            seq,
            modified,
            created,
            num,
            doc,
        });
    }
    if !rd.is_empty() {
        return Err(corrupt("bytes after the last row"));
    }
    Ok(rows)
}

/// The genesis row that may hold instances of series `sid`: the one of
/// the last group at or before it, if its series reach `sid`. Returns the
/// group, the earliest instant and the encoded rows.
fn lookup(conn: &Connection, sid: i64) -> Result<Option<(i64, i64, Vec<u8>)>, StoreError> {
    let found: Option<(i64, i64, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT grp, min_t, last, rows FROM history_genesis \
             WHERE grp <= ?1 ORDER BY grp DESC LIMIT 1",
        )?
        .query_row([sid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    Ok(found
        .filter(|(_, _, last, _)| sid <= *last)
        .map(|(first, min_t, _, rows)| (first, min_t, rows)))
}

/// Reads genesis instances series by series, keeping the last group it
/// decoded: the series of one entity share one row, which a read of the
/// entity's history would otherwise decode once per series.
pub(crate) struct Reader {
    /// The store's name table (for entity items).
    names: Arc<Names>,
    /// The last group read: its first series, its last, and its rows by
    /// series, each in (instant, seq) order (a group may hold thousands of
    /// series: one pass sorts them all out).
    group: Option<(i64, i64, rustc_hash::FxHashMap<i64, Vec<Row>>)>,
}

impl Reader {
    pub(crate) fn new(names: Arc<Names>) -> Self {
        Self { names, group: None }
    }

    /// The genesis instances of series `sid`, in (instant, seq) order.
    pub(crate) fn rows_of(&mut self, conn: &Connection, sid: i64) -> Result<Vec<Row>, StoreError> {
        let cached = self
            .group
            .as_ref()
            .is_some_and(|(first, last, _)| (*first..=*last).contains(&sid));
        if !cached {
            self.group = match lookup(conn, sid)? {
                Some((first, _, bytes)) => {
                    let rows = decode(&self.names, first, &bytes)?;
                    let last = rows.iter().map(|r| r.series).max().unwrap_or(first);
                    let mut by_series = rustc_hash::FxHashMap::<i64, Vec<Row>>::default();
                    for row in rows {
                        by_series.entry(row.series).or_default().push(row);
                    }
                    for rows in by_series.values_mut() {
                        rows.sort_by_key(|r| (r.t, r.seq));
                    }
                    Some((first, last, by_series))
                }
                None => None,
            };
        }
        Ok(self
            .group
            .as_ref()
            .and_then(|(_, _, by_series)| by_series.get(&sid))
            .cloned()
            .unwrap_or_default())
    }
}

/// Moves the genesis row that holds instances of series `sid`, if any, to
/// ordinary rows of `history` (every series of its group), so that they
/// can be changed or deleted there. With `older_than`, only a row with an
/// instant before it moves (what a retention sweep would delete). Returns
/// whether a row moved.
pub(crate) fn explode(
    conn: &Connection,
    names: &Arc<Names>,
    sid: i64,
    older_than: Option<i64>,
) -> Result<bool, StoreError> {
    let Some((first, min_t, bytes)) = lookup(conn, sid)? else {
        return Ok(false);
    };
    if older_than.is_some_and(|before| min_t >= before) {
        return Ok(false);
    }
    let rows = decode(names, first, &bytes)?;
    let mut insert = conn.prepare_cached(crate::history::INSERT_HISTORY)?;
    for r in &rows {
        crate::history::execute_row(&mut insert, r)?;
    }
    conn.execute("DELETE FROM history_genesis WHERE grp = ?1", params![first])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty name table (rows number no names).
    fn names() -> Arc<Names> {
        Arc::default()
    }

    fn row(series: i64, seq: i64, num: Option<Num>, doc: Option<Vec<u8>>) -> Row {
        Row {
            series,
            t: 1_700_000_000_000_000 + seq,
            seq,
            modified: (seq % 2 == 0).then_some(-5),
            created: (seq % 3 == 0).then_some(i64::MAX),
            num,
            doc,
        }
    }

    #[test]
    fn rows_round_trip() {
        let rows = vec![
            row(100, 1, Some(Num::Int(-7)), None),
            row(101, 2, Some(Num::Real(20.5)), Some(vec![0x91, 0x01])),
            row(102, 3, None, Some(vec![0u8; 300])),
            row(109, 4, Some(Num::Int(i64::MIN)), Some(Vec::new())),
            row(100, 5, Some(Num::Real(f64::MAX)), None),
        ];
        let back = decode(&names(), 100, &encode(100, &rows)).unwrap();
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(
                (a.series, a.t, a.seq, a.modified, a.created, &a.doc),
                (b.series, b.t, b.seq, b.modified, b.created, &b.doc)
            );
            match (a.num, b.num) {
                (None, None) => {}
                (Some(Num::Int(x)), Some(Num::Int(y))) => assert_eq!(x, y),
                (Some(Num::Real(x)), Some(Num::Real(y))) => assert_eq!(x.to_bits(), y.to_bits()),
                _ => panic!("number kind changed"),
            }
        }
    }

    #[test]
    fn the_builder_keeps_the_earliest_instant_and_the_last_series() {
        // Rows in the order a group's instances come: not by instant, and a
        // later series before an earlier one (an entity's attribute whose
        // instances were recorded after another's).
        let mut rows = vec![
            row(103, 9, None, None),
            row(101, 2, Some(Num::Int(1)), None),
            row(104, 5, None, Some(vec![7])),
            row(102, 7, None, None),
        ];
        rows[2].t = 1;
        let mut b = Builder::default();
        assert!(b.is_empty());
        for r in &rows {
            b.push(100, r);
        }
        assert!(!b.is_empty());
        let (min_t, last, bytes) = b.finish();
        assert_eq!((min_t, last), (1, 104));
        let back = decode(&names(), 100, &bytes).unwrap();
        assert_eq!(
            back.iter()
                .map(|r| (r.series, r.t, r.seq))
                .collect::<Vec<_>>(),
            rows.iter()
                .map(|r| (r.series, r.t, r.seq))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_damaged_offset_is_an_error_not_an_overflow() {
        // A row whose offset was damaged into a huge value.
        let mut r = row(7, 1, None, None);
        r.series = i64::MAX;
        assert!(decode(&names(), 7, &encode(0, &[r])).is_err());
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let bytes = encode(7, &[row(7, 1, Some(Num::Real(1.5)), Some(vec![1, 2, 3]))]);
        for cut in 0..bytes.len() {
            assert!(decode(&names(), 7, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = bytes.clone();
        wrong[1] = 0x96; // a row of six fields
        assert!(decode(&names(), 7, &wrong).is_err());
        let mut longer = bytes.clone();
        longer.push(0xc0);
        assert!(
            decode(&names(), 7, &longer).is_err(),
            "bytes after the last row"
        );
        // An entity item whose encoding is damaged or cut.
        let mut b = Builder::default();
        b.push_entity(7, 7, 1, &[0x93, 0xff, 0x01], 0, 7);
        let (_, _, bytes) = b.finish();
        for cut in 0..=bytes.len() {
            assert!(decode(&names(), 7, &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
