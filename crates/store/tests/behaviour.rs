//! The behaviour every `Store` backend must show, run here against the
//! embedded SQLite store (in memory and on disk). A later PostgreSQL backend
//! runs the same checks.

use std::sync::Arc;

use ngsi_model::{AttrValue, Attribute, Entity, ErrorKind, NgsiError, iri};
use serde_json::json;
use store::sqlite::{SqliteConfig, SqliteStore};
use store::{Change, Next, Op, Page, Selection, Store};

fn entity(id: &str, t: &str, level: i64) -> Entity {
    Entity {
        id: id.into(),
        types: vec![iri(t)],
        scopes: Vec::new(),
        attrs: vec![(
            iri("https://example.org/level"),
            vec![Attribute::new(AttrValue::Property(json!(level)))].into(),
        )],
        created_at: 1,
        modified_at: 1,
        expires_at: None,
    }
}

fn create(e: Entity) -> Op {
    Op::new(e.id.clone(), move |current| {
        if current.is_some() {
            return Err(NgsiError::new(ErrorKind::AlreadyExists, "exists"));
        }
        Ok(Change::put(e))
    })
}

/// An operation that deletes entity `id`, present or not.
fn delete(id: &str) -> Op {
    Op::new(id, |_| Ok(Change::delete()))
}

/// An operation that adds one to the level of entity `id`, which must exist.
fn increment(id: &str) -> Op {
    Op::new(id, |current| {
        let mut e = current
            .cloned()
            .ok_or_else(|| NgsiError::not_found("missing"))?;
        let next = level_of(&e) + 1;
        e.attrs[0].1[0].value = AttrValue::Property(json!(next));
        Ok(Change::put(e))
    })
}

fn level_of(e: &Entity) -> i64 {
    match &e.attr("https://example.org/level").unwrap()[0].value {
        AttrValue::Property(v) => v.as_i64().unwrap(),
        _ => panic!("not a property"),
    }
}

/// The entities whose level is `v`, queried through the level's value
/// index (the first such query builds it).
fn ids_at_level(store: &SqliteStore, v: i64) -> Vec<String> {
    use store::attr_index::{Condition, IndexKey, IndexedCondition};
    let conditions = vec![IndexedCondition {
        attr: iri("https://example.org/level"),
        condition: Condition::AnyOf(vec![IndexKey::num(v as f64)]),
    }];
    let sel = Selection {
        ids: None,
        types: None,
        conditions: &conditions,
        exact: false,
    };
    let filter = move |e: &Entity| level_of(e) == v;
    store
        .query("", sel, &filter, all())
        .entities
        .iter()
        .map(|e| e.id.to_string())
        .collect()
}

fn all() -> Page {
    Page {
        offset: 0,
        limit: usize::MAX,
        count: true,
    }
}

#[tokio::test]
async fn ops_apply_in_order_and_each_sees_the_previous() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let id = "urn:ngsi-ld:T:1";
    let results = store
        .write(
            "",
            vec![
                create(entity(id, "https://example.org/T", 0)),
                increment(id),
                increment(id),
            ],
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert!(results[0].as_ref().unwrap().created);
    assert!(!results[1].as_ref().unwrap().created);
    assert_eq!(level_of(&store.get("", id).unwrap()), 2);
}

#[tokio::test]
async fn a_failing_op_does_not_stop_the_others() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let results = store
        .write(
            "",
            vec![
                create(entity("urn:a:1", "https://example.org/T", 1)),
                create(entity("urn:a:1", "https://example.org/T", 2)),
                Op::new("urn:a:2", |_| panic!("a bug in an operation")),
                create(entity("urn:a:3", "https://example.org/T", 3)),
            ],
        )
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        results[2].as_ref().unwrap_err().kind,
        ErrorKind::InternalError
    );
    assert!(results[3].is_ok());
    assert_eq!(level_of(&store.get("", "urn:a:1").unwrap()), 1);
    assert!(store.get("", "urn:a:2").is_none());
    assert_eq!(store.entity_count(), 2);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    store
        .write(
            "tianhe",
            vec![create(entity("urn:x:1", "https://example.org/T", 1))],
        )
        .await
        .unwrap();
    assert!(store.get("tianhe", "urn:x:1").is_some());
    assert!(store.get("", "urn:x:1").is_none());
    assert!(store.get("haizhu", "urn:x:1").is_none());
    assert!(store.tenant_exists("tianhe"));
    assert!(!store.tenant_exists("haizhu"));
    let page = store.query("", Selection::default(), &|_| true, all());
    assert_eq!(page.total, Some(0));
}

#[tokio::test]
async fn queries_page_in_id_order_and_count_all_matches() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let ops = (0..25)
        .rev()
        .map(|i| create(entity(&format!("urn:e:{i:02}"), "https://example.org/T", i)))
        .collect();
    store.write("", ops).await.unwrap();
    let types = [iri("https://example.org/T")];
    let sel = Selection {
        ids: None,
        types: Some(&types),
        conditions: &[],
        exact: false,
    };
    let even = |e: &Entity| level_of(e) % 2 == 0;
    let page = store.query(
        "",
        sel,
        &even,
        Page {
            offset: 2,
            limit: 3,
            count: true,
        },
    );
    let ids: Vec<&str> = page.entities.iter().map(|e| &*e.id).collect();
    assert_eq!(ids, ["urn:e:04", "urn:e:06", "urn:e:08"]);
    assert_eq!(page.total, Some(13));
    let ids: Vec<Arc<str>> = vec!["urn:e:03".into(), "urn:e:01".into(), "urn:missing".into()];
    let page = store.query(
        "",
        Selection {
            ids: Some(&ids),
            types: None,
            conditions: &[],
            exact: false,
        },
        &|_| true,
        all(),
    );
    assert_eq!(page.entities.len(), 2);
    assert_eq!(&*page.entities[0].id, "urn:e:01");
}

#[tokio::test]
async fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        store
            .write(
                "",
                vec![create(entity("urn:p:1", "https://example.org/T", 7))],
            )
            .await
            .unwrap();
        store
            .write(
                "nansha",
                vec![create(entity("urn:p:2", "https://example.org/U", 8))],
            )
            .await
            .unwrap();
        store
            .write("nansha", vec![delete("urn:p:2")])
            .await
            .unwrap();
        store
            .put_record(
                "",
                "jsonldContexts",
                "http://h/ctx/1",
                Some(json!({"@context": {"a": "b"}})),
            )
            .await
            .unwrap();
        store
            .put_record(
                "",
                "jsonldContexts",
                "http://h/ctx/2",
                Some(json!({"@context": {}})),
            )
            .await
            .unwrap();
        store
            .put_record("", "jsonldContexts", "http://h/ctx/2", None)
            .await
            .unwrap();
    }
    // The writer thread of the first store may still be closing the file.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    assert_eq!(level_of(&store.get("", "urn:p:1").unwrap()), 7);
    assert!(store.get("nansha", "urn:p:2").is_none());
    assert!(
        store.tenant_exists("nansha"),
        "a tenant outlives its last entity"
    );
    assert_eq!(store.entity_count(), 1);
    assert_eq!(
        store.records("", "jsonldContexts"),
        vec![(
            "http://h/ctx/1".to_string(),
            json!({"@context": {"a": "b"}})
        )]
    );
}

#[tokio::test]
async fn attribute_indexes_follow_writes() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let ops = (0..10)
        .map(|i| {
            create(entity(
                &format!("urn:i:{i}"),
                "https://example.org/T",
                i % 3,
            ))
        })
        .collect();
    store.write("", ops).await.unwrap();
    let ids = ids_at_level;
    // The first query builds the index.
    assert_eq!(ids(&store, 1), ["urn:i:1", "urn:i:4", "urn:i:7"]);
    // Writes after that keep it right: an update moves an entity, a delete
    // removes it, a create adds one.
    let set_level = |id: &'static str, v: i64| {
        Op::new(id, move |current| {
            let mut e = current.cloned().unwrap();
            e.attrs[0].1[0].value = AttrValue::Property(json!(v));
            Ok(Change::put(e))
        })
    };
    store
        .write(
            "",
            vec![
                set_level("urn:i:4", 2),
                delete("urn:i:7"),
                create(entity("urn:i:99", "https://example.org/T", 1)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids(&store, 1), ["urn:i:1", "urn:i:99"]);
    assert_eq!(ids(&store, 2), ["urn:i:2", "urn:i:4", "urn:i:5", "urn:i:8"]);
}

#[tokio::test]
async fn an_update_of_another_attribute_keeps_the_index_of_the_one_it_left_alone() {
    // The versions before and after an update share the instances of the
    // attributes it did not touch; the index keeps their entries then, and
    // must still follow the attribute the next update changes.
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let note = iri("https://example.org/note");
    let mut e = entity("urn:k:1", "https://example.org/T", 1);
    e.attrs.push((
        note.clone(),
        vec![Attribute::new(AttrValue::Property(json!("a")))].into(),
    ));
    store.write("", vec![create(e)]).await.unwrap();
    store
        .write(
            "",
            vec![create(entity("urn:k:2", "https://example.org/T", 2))],
        )
        .await
        .unwrap();
    let ids = ids_at_level;
    assert_eq!(ids(&store, 1), ["urn:k:1"]);
    let update = |f: fn(&mut Entity)| {
        Op::new("urn:k:1", move |current| {
            let mut e = current.cloned().unwrap();
            f(&mut e);
            Ok(Change::put(e))
        })
    };
    // The note changes: level's entries stay.
    store
        .write(
            "",
            vec![update(|e| {
                e.attr_mut("https://example.org/note").unwrap()[0].value =
                    AttrValue::Property(json!("b"))
            })],
        )
        .await
        .unwrap();
    assert_eq!(ids(&store, 1), ["urn:k:1"]);
    let stored = store.get("", "urn:k:1").unwrap();
    assert_eq!(
        stored.attr("https://example.org/note").unwrap()[0].value,
        AttrValue::Property(json!("b"))
    );
    // Then the level changes: its entries move.
    store
        .write(
            "",
            vec![update(|e| {
                e.attr_mut("https://example.org/level").unwrap()[0].value =
                    AttrValue::Property(json!(2))
            })],
        )
        .await
        .unwrap();
    assert!(ids(&store, 1).is_empty());
    assert_eq!(ids(&store, 2), ["urn:k:1", "urn:k:2"]);
}

#[tokio::test]
async fn updates_of_one_attribute_at_a_time_are_stored_whole() {
    // Each update's encoding copies the bytes of the attributes it shares
    // with the version before (in the same group or an earlier one); what
    // the table holds must read back as the whole latest version.
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..4)
        .map(|i| format!("https://example.org/p{i}"))
        .collect();
    let mut e = entity("urn:w:1", "https://example.org/T", 0);
    for n in &names {
        e.attrs.push((
            iri(n),
            vec![Attribute::new(AttrValue::Property(json!(0)))].into(),
        ));
    }
    let mut expected = e.clone();
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        store.write("", vec![create(e)]).await.unwrap();
        let set = |name: String, v: i64| {
            Op::new("urn:w:1", move |current| {
                let mut e = current.cloned().unwrap();
                e.attr_mut(&name).unwrap()[0].value = AttrValue::Property(json!(v));
                Ok(Change::put(e))
            })
        };
        for round in 1..=3 {
            // One group of several updates, then single updates.
            let group = names
                .iter()
                .enumerate()
                .map(|(i, n)| set(n.clone(), round * 10 + i as i64))
                .collect();
            store.write("", group).await.unwrap();
            store
                .write("", vec![set(names[round as usize].clone(), -round)])
                .await
                .unwrap();
        }
        for (i, n) in names.iter().enumerate() {
            // The last round's group, then its single update of p3.
            let v = if i == 3 { -3 } else { 30 + i as i64 };
            expected.attr_mut(n).unwrap()[0].value = AttrValue::Property(json!(v));
        }
        let live = store.get("", "urn:w:1").unwrap();
        assert_eq!(live.attrs, expected.attrs);
    }
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    assert_eq!(store.get("", "urn:w:1").unwrap().attrs, expected.attrs);
}

#[tokio::test]
async fn discovery_counts_and_exact_counts_follow_writes() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let t = "https://example.org/T";
    let ops = (0..6)
        .map(|i| create(entity(&format!("urn:d:{i}"), t, i)))
        .collect();
    store.write("", ops).await.unwrap();
    store
        .write(
            "",
            vec![create(entity("urn:d:u", "https://example.org/U", 1))],
        )
        .await
        .unwrap();
    // Drop the attribute of one T entity and delete another.
    store
        .write(
            "",
            vec![
                Op::new("urn:d:0", |c| {
                    let mut e = c.cloned().unwrap();
                    e.attrs.clear();
                    Ok(Change::put(e))
                }),
                delete("urn:d:1"),
            ],
        )
        .await
        .unwrap();
    let types = store.type_infos("");
    let names: Vec<(&str, usize, usize)> = types
        .iter()
        .map(|t| (&*t.name, t.entities, t.attrs.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("https://example.org/T", 5, 1),
            ("https://example.org/U", 1, 1)
        ]
    );
    let attrs = store.attr_infos("");
    assert_eq!(attrs.len(), 1);
    assert_eq!(
        attrs[0].entities, 5,
        "4 T entities and 1 U entity keep the attribute"
    );
    assert_eq!(attrs[0].kinds, ["Property"]);
    assert_eq!(attrs[0].types.len(), 2);
    // An exact selection counts without filtering.
    let only_t = [iri(t)];
    let sel = Selection {
        ids: None,
        types: Some(&only_t),
        conditions: &[],
        exact: true,
    };
    let page = store.query(
        "",
        sel,
        &|_| unreachable!("exact selections are not filtered"),
        Page {
            offset: 1,
            limit: 2,
            count: true,
        },
    );
    assert_eq!(page.total, Some(5));
    let ids: Vec<&str> = page.entities.iter().map(|e| &*e.id).collect();
    assert_eq!(ids, ["urn:d:2", "urn:d:3"]);
}

#[tokio::test]
async fn a_large_store_reloads_completely() {
    // More entities than one loading chunk, in two tenants.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        for tenant in ["", "baiyun"] {
            let ops = (0..5000)
                .map(|i| {
                    create(entity(
                        &format!("urn:big:{i:05}"),
                        "https://example.org/T",
                        i,
                    ))
                })
                .collect();
            store.write(tenant, ops).await.unwrap();
        }
    }
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    assert_eq!(store.entity_count(), 10_000);
    for tenant in ["", "baiyun"] {
        assert_eq!(level_of(&store.get(tenant, "urn:big:04321").unwrap()), 4321);
        assert_eq!(store.type_infos(tenant)[0].entities, 5000);
    }
}

#[tokio::test]
async fn the_change_feed_reports_every_applied_op_in_order_after_commit() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    // Nobody listens yet: nothing is kept for later listeners.
    store
        .write(
            "",
            vec![create(entity("urn:a:0", "https://example.org/T", 0))],
        )
        .await
        .unwrap();
    let mut feed = store.changes();
    let id = "urn:a:1";
    let bump = Op::new(id, |current| {
        let mut e = current.cloned().unwrap();
        e.attrs[0].1[0].value = AttrValue::Property(json!(level_of(&e) + 1));
        Ok(Change::put(e))
    });
    let fails = Op::new(id, |_| Err(NgsiError::not_found("no")));
    let keeps = Op::new(id, |_| {
        Ok(Change {
            next: Next::Keep,
            report: None,
        })
    });
    let deletes = delete(id);
    let delete_missing = delete("urn:a:missing");
    store
        .write(
            "t1",
            vec![
                create(entity(id, "https://example.org/T", 5)),
                bump,
                fails,
                keeps,
                deletes,
                delete_missing,
            ],
        )
        .await
        .unwrap();
    let batch = feed.recv().await.unwrap();
    let summary: Vec<_> = batch
        .iter()
        .map(|c| {
            assert_eq!(&*c.tenant, "t1");
            assert_eq!(&*c.id, id);
            (
                c.before.as_deref().map(level_of),
                c.after.as_deref().map(level_of),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(None, Some(5)), (Some(5), Some(6)), (Some(6), None)]
    );
    assert!(feed.try_recv().is_err(), "one batch per commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_writes_of_one_entity_lose_nothing() {
    // Many writers incrementing one counter on a durable file: every group
    // must read the state the previous groups left.
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::in_dir(dir.path());
    let store = Arc::new(SqliteStore::open(config.clone()).unwrap());
    let id = "urn:ngsi-ld:T:counter";
    store
        .write("", vec![create(entity(id, "https://example.org/T", 0))])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let op = Op::new(id, |current| {
                    let mut e = current.cloned().unwrap();
                    e.attrs[0].1[0].value = AttrValue::Property(json!(level_of(&e) + 1));
                    Ok(Change::put(e))
                });
                let r = store.write("", vec![op]).await.unwrap();
                assert!(r[0].is_ok());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(level_of(&store.get("", id).unwrap()), 1000);
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let reopened = SqliteStore::open(config).unwrap();
    assert_eq!(level_of(&reopened.get("", id).unwrap()), 1000);
}

fn with_level(mut e: Entity, level: i64, now: i64) -> Entity {
    e.attrs[0].1[0].value = AttrValue::Property(json!(level));
    e.attrs[0].1[0].modified_at = now;
    e.modified_at = now;
    e
}

fn put(e: Entity) -> Op {
    Op::new(e.id.clone(), move |_| Ok(Change::put(e)))
}

fn history_request() -> store::HistoryRequest {
    store::HistoryRequest {
        limit: usize::MAX,
        ..Default::default()
    }
}

#[tokio::test]
async fn stamped_instances_are_recorded_in_the_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let level = iri("https://example.org/level");
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        assert!(store.history_enabled());
        let base = entity("urn:ngsi-ld:T:h", "https://example.org/T", 0);
        for i in 1..=5 {
            store
                .write("", vec![put(with_level(base.clone(), i, i * 1000))])
                .await
                .unwrap()
                .remove(0)
                .unwrap();
        }
        // An operation that leaves the instance's modifiedAt alone records nothing.
        store
            .write("", vec![put(with_level(base.clone(), 99, 5000))])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        // A deletion leaves an instance without value.
        store
            .write("", vec![delete("urn:ngsi-ld:T:h")])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
    }
    // After a reopen, everything is there.
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    let entities = store.history_entities("", &mut |_, _| true);
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0].attrs, vec![(level.clone(), None)]);
    let h = store
        .history("", "urn:ngsi-ld:T:h", history_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.len(), 1);
    let values: Vec<Option<serde_json::Value>> = h[0]
        .instances
        .iter()
        .map(|i| {
            i.attr.as_ref().map(|a| match &a.value {
                AttrValue::Property(v) => v.clone(),
                _ => panic!(),
            })
        })
        .collect();
    assert_eq!(values[..5], [1, 2, 3, 4, 5].map(|v| Some(json!(v))));
    assert_eq!(values.len(), 6);
    assert_eq!(values[5], None);
    // lastN and a range (of modifiedAt: the instances have no observedAt,
    // and an observedAt range selects only instances that have one).
    let mut req = history_request();
    req.last_n = Some(2);
    req.range.to = Some(5000);
    req.range.property = store::TimeProperty::ModifiedAt;
    let h = store
        .history("", "urn:ngsi-ld:T:h", req)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        h[0].instances.iter().map(|i| i.instant).collect::<Vec<_>>(),
        [3000, 4000]
    );
    // A limit truncates and says so.
    let mut req = history_request();
    req.limit = 2;
    let h = store
        .history("", "urn:ngsi-ld:T:h", req)
        .await
        .unwrap()
        .unwrap();
    assert!(h[0].truncated);
    assert_eq!(h[0].instances.len(), 2);
    // Aggregation from the columnar copy, then after a new write.
    let agg = |store: &SqliteStore| {
        store.aggregate(
            "",
            "urn:ngsi-ld:T:h",
            level.clone(),
            None,
            store::AggregateRequest {
                distinct: true,
                ..Default::default()
            },
        )
    };
    let b = agg(&store).await.unwrap();
    assert_eq!((b[0].count, b[0].sum, b[0].distinct), (5, 15.0, Some(5)));
    store
        .write(
            "",
            vec![put(with_level(
                entity("urn:ngsi-ld:T:h", "https://example.org/T", 0),
                10,
                6000,
            ))],
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let b = agg(&store).await.unwrap();
    assert_eq!((b[0].count, b[0].sum, b[0].max), (6, 25.0, 10.0));
    // Reads see the moved instances and the recent one together, in order.
    let h = store
        .history("", "urn:ngsi-ld:T:h", history_request())
        .await
        .unwrap()
        .unwrap();
    let instants: Vec<i64> = h[0].instances.iter().map(|i| i.instant).collect();
    assert_eq!(instants.len(), 7);
    assert!(instants.windows(2).all(|w| w[0] <= w[1]), "{instants:?}");
    assert!(instants.contains(&6000), "{instants:?}");
}

#[tokio::test]
async fn temporal_writes_add_modify_and_delete_instances() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let level = iri("https://example.org/level");
    let instance = |v: i64, t: i64| {
        let mut a = Attribute::new(AttrValue::Property(json!(v)));
        a.observed_at = Some(ngsi_model::time::format_micros(t).into());
        a.modified_at = 1;
        a.created_at = 1;
        a
    };
    let add = |attrs: Vec<Attribute>, types: Vec<ngsi_model::Iri>| store::HistoryOp::Add {
        id: "urn:ngsi-ld:T:w".into(),
        types,
        attrs: vec![(level.clone(), attrs)],
    };
    let e = store
        .write_history("", add(vec![instance(1, 10)], Vec::new()))
        .await
        .unwrap();
    assert_eq!(e.unwrap_err().kind, ErrorKind::BadRequestData);
    let created = store
        .write_history(
            "",
            add(
                vec![instance(1, 10), instance(2, 20)],
                vec![iri("https://example.org/T")],
            ),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(created);
    let created = store
        .write_history("", add(vec![instance(3, 15)], Vec::new()))
        .await
        .unwrap()
        .unwrap();
    assert!(!created);
    let h = store
        .history("", "urn:ngsi-ld:T:w", history_request())
        .await
        .unwrap()
        .unwrap();
    let instants: Vec<i64> = h[0].instances.iter().map(|i| i.instant).collect();
    assert_eq!(instants, [10, 15, 20]);
    let middle = h[0].instances[1].instance_id;
    store
        .write_history(
            "",
            store::HistoryOp::ModifyInstance {
                id: "urn:ngsi-ld:T:w".into(),
                attr: level.clone(),
                instance: middle,
                value: Box::new(instance(30, 99)),
            },
        )
        .await
        .unwrap()
        .unwrap();
    let b = store
        .aggregate(
            "",
            "urn:ngsi-ld:T:w",
            level.clone(),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(b[0].sum, 33.0);
    store
        .write_history(
            "",
            store::HistoryOp::DeleteInstance {
                id: "urn:ngsi-ld:T:w".into(),
                attr: level.clone(),
                instance: middle,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let again = store
        .write_history(
            "",
            store::HistoryOp::DeleteInstance {
                id: "urn:ngsi-ld:T:w".into(),
                attr: level.clone(),
                instance: middle,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.unwrap_err().kind, ErrorKind::ResourceNotFound);
    let b = store
        .aggregate(
            "",
            "urn:ngsi-ld:T:w",
            level.clone(),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!((b[0].count, b[0].sum), (2, 3.0));
    store
        .write_history(
            "",
            store::HistoryOp::DeleteEntity {
                id: "urn:ngsi-ld:T:w".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(store.history_entities("", &mut |_, _| true).is_empty());
    assert!(
        store
            .history("", "urn:ngsi-ld:T:w", history_request())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn retention_deletes_old_instances_and_frees_pages() {
    check_retention_frees_pages(SqliteConfig::default().history_sweep_rows).await;
}

#[tokio::test]
async fn retention_in_small_chunks_frees_pages() {
    // About forty chunks, each freeing the pages it emptied.
    check_retention_frees_pages(500).await;
}

async fn check_retention_frees_pages(sweep_rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig {
        history_sweep_rows: sweep_rows,
        ..SqliteConfig::in_dir(dir.path())
    })
    .unwrap();
    let level = iri("https://example.org/level");
    let attrs: Vec<Attribute> = (0..20_000)
        .map(|i| {
            let mut a = Attribute::new(AttrValue::Property(json!(format!("value number {i}"))));
            a.observed_at = Some(ngsi_model::time::format_micros(i * 1_000_000).into());
            a
        })
        .collect();
    store
        .write_history(
            "",
            store::HistoryOp::Add {
                id: "urn:ngsi-ld:T:r".into(),
                types: vec![iri("https://example.org/T")],
                attrs: vec![(level.clone(), attrs)],
            },
        )
        .await
        .unwrap()
        .unwrap();
    let (before, _) = store.disk_pages().await.unwrap();
    let deleted = store.expire_history(19_000 * 1_000_000).await.unwrap();
    assert_eq!(deleted, 19_000);
    let (after, _) = store.disk_pages().await.unwrap();
    assert!(after * 2 < before, "pages before {before}, after {after}");
    let h = store
        .history("", "urn:ngsi-ld:T:r", history_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h[0].instances.len(), 1000);
}

/// Numeric instances observed at the given seconds (several may share one).
fn observed_at_seconds(seconds: &[i64]) -> Vec<Attribute> {
    seconds
        .iter()
        .map(|&s| {
            let mut a = Attribute::new(AttrValue::Property(json!(s)));
            a.observed_at = Some(ngsi_model::time::format_micros(s * 1_000_000).into());
            a
        })
        .collect()
}

/// An operation that changes nothing and calls `f` on the writer thread
/// when it is applied.
fn probe(f: impl FnOnce() + Send + 'static) -> Op {
    Op::new("urn:ngsi-ld:T:probe", move |_| {
        f();
        Ok(Change {
            next: Next::Keep,
            report: None,
        })
    })
}

/// Polls `f` once: enough for a store future to queue its message to the
/// writer.
async fn queue<F: std::future::Future + Unpin>(f: &mut F) {
    std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut *f).poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
}

#[tokio::test]
async fn retention_deletes_in_chunks_between_writes_and_keeps_what_is_not_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig {
        history_sweep_rows: 100,
        ..SqliteConfig::in_dir(dir.path())
    })
    .unwrap();
    let level = iri("https://example.org/level");
    // Expired instances in 14 chunks: whole chunks of one series, a run of
    // one instant cut by a chunk's end, a series of another tenant with a
    // few, a series with none; the instances at the cutoff itself stay.
    let cutoff = 1000;
    let same: Vec<i64> = [(500, 350), (999, 10), (1000, 10)]
        .iter()
        .flat_map(|&(s, n)| std::iter::repeat_n(s, n))
        .collect();
    let series: [(&str, &str, Vec<i64>); 4] = [
        ("", "urn:ngsi-ld:T:long", (0..2000).collect()),
        ("", "urn:ngsi-ld:T:same", same),
        ("other", "urn:ngsi-ld:T:few", (990..=1020).collect()),
        ("", "urn:ngsi-ld:T:young", (1000..1050).collect()),
    ];
    for (tenant, id, seconds) in &series {
        store
            .write_history(
                tenant,
                store::HistoryOp::Add {
                    id: (*id).into(),
                    types: vec![iri("https://example.org/T")],
                    attrs: vec![(level.clone(), observed_at_seconds(seconds))],
                },
            )
            .await
            .unwrap()
            .unwrap();
    }
    let expired: i64 = series
        .iter()
        .map(|(_, _, s)| s.iter().filter(|&&t| t < cutoff).count() as i64)
        .sum();
    assert_eq!(expired, 1370);

    // Hold the writer in a write, queue the sweep and a second write behind
    // it, then let go: the second write is applied while the sweep has
    // begun and not finished. (Deleting all in one transaction, the writer
    // applied it after the whole sweep.)
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let held = tokio::spawn(store.write(
        "",
        vec![probe(move || {
            entered_tx.send(()).unwrap();
            gate.recv().unwrap();
        })],
    ));
    entered.await.unwrap();
    let mut sweep = store.expire_history(cutoff * 1_000_000);
    queue(&mut sweep).await;
    let db = dir.path().join("wuyang.db");
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let mut during = store.write(
        "",
        vec![probe(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let left: i64 = conn
                .query_row(
                    "SELECT count(*) FROM history WHERE t < ?1",
                    [cutoff * 1_000_000],
                    |r| r.get(0),
                )
                .unwrap();
            seen_tx.send(left).unwrap();
        })],
    );
    queue(&mut during).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    during.await.unwrap();
    let left = seen.recv().unwrap();
    assert!(
        0 < left && left < expired,
        "{left} of {expired} expired instances left when the write was applied"
    );
    assert_eq!(sweep.await.unwrap(), expired as u64);

    for (tenant, id, seconds) in &series {
        let kept: Vec<i64> = seconds.iter().copied().filter(|&t| t >= cutoff).collect();
        let h = store
            .history(tenant, id, history_request())
            .await
            .unwrap()
            .unwrap();
        let instants: Vec<i64> = h[0]
            .instances
            .iter()
            .map(|i| i.instant / 1_000_000)
            .collect();
        assert_eq!(instants, kept, "{id}");
    }
    assert_eq!(store.expire_history(cutoff * 1_000_000).await.unwrap(), 0);
}

#[tokio::test]
async fn without_history_nothing_is_recorded() {
    let store = SqliteStore::open(SqliteConfig {
        history: false,
        ..SqliteConfig::default()
    })
    .unwrap();
    store
        .write(
            "",
            vec![create(entity(
                "urn:ngsi-ld:T:n",
                "https://example.org/T",
                1,
            ))],
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(store.history_entities("", &mut |_, _| true).is_empty());
    assert!(
        store
            .write_history(
                "",
                store::HistoryOp::DeleteEntity {
                    id: "urn:ngsi-ld:T:n".into()
                }
            )
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_write_ahead_log_is_checkpointed_while_writes_go_on() {
    // Many small commits with a small checkpoint threshold: without
    // checkpoints the log would hold every page of every commit.
    let dir = tempfile::tempdir().unwrap();
    let frames = 64;
    let config = || SqliteConfig {
        checkpoint_frames: frames,
        ..SqliteConfig::in_dir(dir.path())
    };
    let wal = dir.path().join("wuyang.db-wal");
    let mut largest = 0;
    {
        let store = SqliteStore::open(config()).unwrap();
        for i in 0..3000 {
            store
                .write(
                    "",
                    vec![create(entity(
                        &format!("urn:wal:{i:05}"),
                        "https://example.org/T",
                        i,
                    ))],
                )
                .await
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // Each commit writes several pages: far more than the bound below
        // went through the log.
        let page = 4096 + 24;
        assert!(
            largest <= (4 * frames as u64 + 64) * page,
            "the log grew to {largest} bytes"
        );
    }
    let store = SqliteStore::open(config()).unwrap();
    assert_eq!(store.entity_count(), 3000);
    assert_eq!(level_of(&store.get("", "urn:wal:02999").unwrap()), 2999);
}

#[tokio::test]
async fn names_are_stored_once_and_numbered_in_the_encodings() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        let ops = (0..50)
            .map(|i| create(entity(&format!("urn:n:{i}"), "https://example.org/T", i)))
            .collect();
        store.write("", ops).await.unwrap();
        // A name first used by a later commit.
        let mut e = entity("urn:n:late", "https://example.org/Late", 1);
        e.attrs[0].0 = iri("https://example.org/lateLevel");
        store.write("", vec![create(e)]).await.unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
    let doc: Vec<u8> = db
        .query_row("SELECT doc FROM entities WHERE id = 'urn:n:7'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let text = String::from_utf8_lossy(&doc);
    assert!(!text.contains("example.org"), "names are numbers: {text}");
    let names: Vec<String> = db
        .prepare("SELECT name FROM names ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        names,
        [
            "https://example.org/T",
            "https://example.org/level",
            "https://example.org/Late",
            "https://example.org/lateLevel"
        ]
    );
    drop(db);
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    assert_eq!(level_of(&store.get("", "urn:n:7").unwrap()), 7);
    let late = store.get("", "urn:n:late").unwrap();
    assert_eq!(&*late.types[0], "https://example.org/Late");
    assert!(late.attr("https://example.org/lateLevel").is_some());
}

#[tokio::test]
async fn a_store_of_format_2_with_names_as_strings_opens_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    // Format 2 had no name numbers anywhere: no history series groups.
    let config = || SqliteConfig {
        history: false,
        ..SqliteConfig::in_dir(dir.path())
    };
    {
        let store = SqliteStore::open(config()).unwrap();
        store
            .write(
                "",
                vec![create(entity("urn:old:1", "https://example.org/T", 5))],
            )
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    {
        // Rewrite it as version 2 wrote it: names as strings, no table.
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        let old = rmp_serde::to_vec(&entity("urn:old:1", "https://example.org/T", 5)).unwrap();
        assert!(String::from_utf8_lossy(&old).contains("https://example.org/level"));
        db.execute("UPDATE entities SET doc = ?1", [old]).unwrap();
        db.execute("DELETE FROM names", []).unwrap();
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format'", [])
            .unwrap();
        entities_table_as_before_format_4(&db);
    }
    let store = SqliteStore::open(config()).unwrap();
    assert_eq!(level_of(&store.get("", "urn:old:1").unwrap()), 5);
    // Old and new encodings side by side.
    store
        .write(
            "",
            vec![create(entity("urn:new:1", "https://example.org/T", 6))],
        )
        .await
        .unwrap();
    assert_eq!(level_of(&store.get("", "urn:new:1").unwrap()), 6);
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
    let format: String = db
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(format, "6");
}

/// Rebuilds the `entities` table in the shape formats 2 and 3 had: unique
/// on (tenant, id), rows numbered by SQLite.
fn entities_table_as_before_format_4(db: &rusqlite::Connection) {
    db.execute_batch(
        "CREATE TABLE entities_old (tenant TEXT NOT NULL, id TEXT NOT NULL, doc BLOB NOT NULL, \
             UNIQUE (tenant, id)); \
         INSERT INTO entities_old (tenant, id, doc) SELECT tenant, id, doc FROM entities ORDER BY row DESC; \
         DROP TABLE entities; \
         ALTER TABLE entities_old RENAME TO entities;",
    )
    .unwrap();
}

/// The first builds of format 2 kept the entities in a `WITHOUT ROWID`
/// table keyed on (tenant, id) (the unique index came an hour later, and
/// `CREATE TABLE IF NOT EXISTS` never rebuilt an existing table): such a
/// directory opened before format 4 and must still open and upgrade.
#[tokio::test]
async fn a_store_of_format_2_without_rowid_opens_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        let ops = (0..3)
            .map(|i| create(entity(&format!("urn:w:{i}"), "https://example.org/T", i)))
            .collect();
        store.write("", ops).await.unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    {
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE entities_old (tenant TEXT NOT NULL, id TEXT NOT NULL, \
                 doc BLOB NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID; \
             INSERT INTO entities_old (tenant, id, doc) SELECT tenant, id, doc FROM entities; \
             DROP TABLE entities; \
             ALTER TABLE entities_old RENAME TO entities; \
             UPDATE meta SET value = '2' WHERE key = 'format';",
        )
        .unwrap();
    }
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        assert_eq!(level_of(&store.get("", "urn:w:1").unwrap()), 1);
        store
            .write(
                "",
                vec![put(entity("urn:w:1", "https://example.org/T", 11))],
            )
            .await
            .unwrap();
        store
            .write(
                "",
                vec![create(entity("urn:w:new", "https://example.org/T", 7))],
            )
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    assert_eq!(level_of(&store.get("", "urn:w:1").unwrap()), 11);
    assert_eq!(level_of(&store.get("", "urn:w:new").unwrap()), 7);
    assert_eq!(store.entity_count(), 4);
}

#[tokio::test]
async fn a_store_of_format_3_gets_numbered_rows_and_keeps_updating_and_deleting() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        let ops = (0..20)
            .map(|i| {
                create(entity(
                    &format!("urn:f3:{i:02}"),
                    "https://example.org/T",
                    i,
                ))
            })
            .collect();
        store.write("", ops).await.unwrap();
        store
            .write(
                "t2",
                vec![create(entity("urn:f3:00", "https://example.org/T", 100))],
            )
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    {
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        entities_table_as_before_format_4(&db);
        db.execute("UPDATE meta SET value = '3' WHERE key = 'format'", [])
            .unwrap();
    }
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        assert_eq!(level_of(&store.get("", "urn:f3:05").unwrap()), 5);
        assert_eq!(level_of(&store.get("t2", "urn:f3:00").unwrap()), 100);
        // Update, delete and create after the upgrade, then restart: each
        // write reached the row of its entity and no other.
        store
            .write(
                "",
                vec![put(entity("urn:f3:05", "https://example.org/T", 55))],
            )
            .await
            .unwrap();
        store.write("", vec![delete("urn:f3:06")]).await.unwrap();
        store
            .write(
                "",
                vec![create(entity("urn:f3:new", "https://example.org/T", 7))],
            )
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    assert_eq!(level_of(&store.get("", "urn:f3:05").unwrap()), 55);
    assert!(store.get("", "urn:f3:06").is_none());
    assert_eq!(level_of(&store.get("", "urn:f3:new").unwrap()), 7);
    assert_eq!(level_of(&store.get("", "urn:f3:00").unwrap()), 0);
    assert_eq!(level_of(&store.get("t2", "urn:f3:00").unwrap()), 100);
    assert_eq!(store.entity_count(), 21);
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 21, "one row per entity");
}

#[tokio::test]
async fn the_write_ahead_log_is_checkpointed_under_temporal_writes_alone() {
    // Writes of the temporal API commit on the writer as jobs, not groups:
    // they too must start checkpoints, or a broker fed only through the
    // temporal API grows its log without bound.
    let dir = tempfile::tempdir().unwrap();
    let frames = 64;
    let store = SqliteStore::open(SqliteConfig {
        checkpoint_frames: frames,
        ..SqliteConfig::in_dir(dir.path())
    })
    .unwrap();
    let wal = dir.path().join("wuyang.db-wal");
    let level = iri("https://example.org/level");
    let mut largest = 0;
    for i in 0..1500 {
        store
            .write_history(
                "",
                store::HistoryOp::Add {
                    id: format!("urn:wal:{i:05}").into(),
                    types: vec![iri("https://example.org/T")],
                    attrs: vec![(level.clone(), observed_at_seconds(&[i, i + 1]))],
                },
            )
            .await
            .unwrap()
            .unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    let page = 4096 + 24;
    assert!(
        largest <= (4 * frames as u64 + 64) * page,
        "the log grew to {largest} bytes"
    );
    let h = store
        .history("", "urn:wal:01499", history_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h[0].instances.len(), 2);
}

/// An entity with two attributes, one of them with two datasetIds.
fn with_datasets(id: &str, level: i64) -> Entity {
    let mut e = entity(id, "https://example.org/T", level);
    let mut a = Attribute::new(AttrValue::Property(json!(level)));
    a.dataset_id = Some("urn:ds:a".into());
    let mut b = Attribute::new(AttrValue::Property(json!(level + 1)));
    b.dataset_id = Some("urn:ds:b".into());
    e.attrs
        .push((iri("https://example.org/flow"), vec![a, b].into()));
    e
}

/// The integer values of a series' instances, in order.
fn int_values(h: &store::AttrHistory) -> Vec<i64> {
    h.instances
        .iter()
        .filter_map(|i| match &i.attr.as_ref()?.value {
            AttrValue::Property(v) => v.as_i64(),
            _ => None,
        })
        .collect()
}

/// (attribute, datasetId, values) of the history of `id`, sorted.
async fn series_of(store: &SqliteStore, id: &str) -> Vec<(String, Option<String>, Vec<i64>)> {
    let mut out: Vec<_> = store
        .history("", id, history_request())
        .await
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|h| {
            let values = int_values(&h);
            (h.attr.to_string(), h.dataset_id.map(String::from), values)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn series_written_as_groups_survive_reopening_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SqliteConfig::in_dir(dir.path());
    let flow = "https://example.org/flow";
    let level = "https://example.org/level";
    {
        let store = SqliteStore::open(config()).unwrap();
        // Two entities in one commit: two groups, ids one after the other.
        store
            .write(
                "",
                vec![
                    create(with_datasets("urn:g:1", 1)),
                    create(with_datasets("urn:g:2", 10)),
                ],
            )
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let expected_1 = vec![
        (flow.to_string(), Some("urn:ds:a".to_string()), vec![1]),
        (flow.to_string(), Some("urn:ds:b".to_string()), vec![2]),
        (level.to_string(), None, vec![1]),
    ];
    {
        let store = SqliteStore::open(config()).unwrap();
        assert_eq!(series_of(&store, "urn:g:1").await, expected_1);
        // A series created after the restart gets a fresh id.
        store
            .write("", vec![create(with_datasets("urn:g:3", 100))])
            .await
            .unwrap();
        assert_eq!(series_of(&store, "urn:g:3").await.len(), 3);
        // Deleting one series of a group keeps the others.
        store
            .write_history(
                "",
                store::HistoryOp::DeleteAttr {
                    id: "urn:g:2".into(),
                    attr: iri(flow),
                    dataset: Some(Some("urn:ds:a".into())),
                },
            )
            .await
            .unwrap()
            .unwrap();
        store
            .write_history(
                "",
                store::HistoryOp::DeleteEntity {
                    id: "urn:g:1".into(),
                },
            )
            .await
            .unwrap()
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(config()).unwrap();
    assert_eq!(series_of(&store, "urn:g:1").await, vec![]);
    assert_eq!(
        series_of(&store, "urn:g:2").await,
        vec![
            (flow.to_string(), Some("urn:ds:b".to_string()), vec![11]),
            (level.to_string(), None, vec![10]),
        ]
    );
    assert_eq!(series_of(&store, "urn:g:3").await.len(), 3);
    // Entity 1's group row went with its last series.
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
    let groups: i64 = db
        .query_row("SELECT count(*) FROM history_series_groups", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(groups, 2);
}

#[tokio::test]
async fn series_rows_of_the_earlier_layout_still_load() {
    // Rewrite the groups as the rows of one series each that earlier
    // versions wrote, then reopen, write and delete.
    let dir = tempfile::tempdir().unwrap();
    let config = || SqliteConfig::in_dir(dir.path());
    {
        let store = SqliteStore::open(config()).unwrap();
        store
            .write("", vec![create(with_datasets("urn:l:1", 1))])
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    {
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        let names: Vec<String> = db
            .prepare("SELECT name FROM names ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let groups: Vec<(i64, String, String, Vec<u8>)> = db
            .prepare("SELECT id, tenant, entity, series FROM history_series_groups")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!groups.is_empty());
        for (first, tenant, entity, entries) in groups {
            for (i, e) in entries.chunks_exact(8).enumerate() {
                let attr = u32::from_le_bytes(e[..4].try_into().unwrap()) as usize;
                let dataset = u32::from_le_bytes(e[4..].try_into().unwrap()) as usize;
                let dataset = (dataset > 0).then(|| names[dataset - 1].clone());
                db.execute(
                    "INSERT INTO history_series (id, tenant, entity, attr, dataset) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![first + i as i64, tenant, entity, names[attr], dataset],
                )
                .unwrap();
            }
        }
        db.execute("DELETE FROM history_series_groups", []).unwrap();
    }
    let store = SqliteStore::open(config()).unwrap();
    let before = series_of(&store, "urn:l:1").await;
    assert_eq!(before.len(), 3, "{before:?}");
    store
        .write("", vec![create(with_datasets("urn:l:2", 50))])
        .await
        .unwrap();
    assert_eq!(series_of(&store, "urn:l:1").await, before);
    assert_eq!(series_of(&store, "urn:l:2").await.len(), 3);
    store
        .write_history(
            "",
            store::HistoryOp::DeleteAttr {
                id: "urn:l:1".into(),
                attr: iri("https://example.org/flow"),
                dataset: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(series_of(&store, "urn:l:1").await.len(), 1);
}

#[tokio::test]
async fn the_types_of_an_entity_new_to_history_survive_reopening_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SqliteConfig::in_dir(dir.path());
    let types_of = |store: &SqliteStore, id: &str| -> Vec<String> {
        store
            .history_entity("", id)
            .map(|h| h.types.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    };
    {
        let store = SqliteStore::open(config()).unwrap();
        store
            .write(
                "",
                vec![
                    create(entity("urn:t:1", "https://example.org/T", 1)),
                    create(entity("urn:t:2", "https://example.org/T", 2)),
                    create(entity("urn:t:3", "https://example.org/T", 3)),
                ],
            )
            .await
            .unwrap();
        // A type change after the first write.
        store
            .write(
                "",
                vec![Op::new("urn:t:2", |_| {
                    Ok(Change::put(entity("urn:t:2", "https://example.org/U", 20)))
                })],
            )
            .await
            .unwrap();
        // Every series of urn:t:3 deleted: its group row goes, its types stay.
        store
            .write_history(
                "",
                store::HistoryOp::DeleteAttr {
                    id: "urn:t:3".into(),
                    attr: iri("https://example.org/level"),
                    dataset: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        // A temporal entity with types and no attributes.
        store
            .write_history(
                "",
                store::HistoryOp::Add {
                    id: "urn:t:4".into(),
                    types: vec![iri("https://example.org/V")],
                    attrs: Vec::new(),
                },
            )
            .await
            .unwrap()
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(config()).unwrap();
    assert_eq!(types_of(&store, "urn:t:1"), ["https://example.org/T"]);
    assert_eq!(types_of(&store, "urn:t:2"), ["https://example.org/U"]);
    assert_eq!(types_of(&store, "urn:t:3"), ["https://example.org/T"]);
    assert_eq!(types_of(&store, "urn:t:4"), ["https://example.org/V"]);
    store
        .write_history(
            "",
            store::HistoryOp::DeleteEntity {
                id: "urn:t:1".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(config()).unwrap();
    assert!(store.history_entity("", "urn:t:1").is_none());
    assert_eq!(types_of(&store, "urn:t:2"), ["https://example.org/U"]);
}

#[tokio::test]
async fn one_read_tells_which_entities_have_instances_in_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    let level = iri("https://example.org/level");
    let add = |id: &str, seconds: &[i64]| store::HistoryOp::Add {
        id: id.into(),
        types: vec![iri("https://example.org/T")],
        attrs: vec![(level.clone(), observed_at_seconds(seconds))],
    };
    for (id, seconds) in [("urn:T:early", &[10, 20][..]), ("urn:T:late", &[100][..])] {
        store
            .write_history("", add(id, seconds))
            .await
            .unwrap()
            .unwrap();
    }
    // A later write lands in the recent rows, which count too.
    store
        .write_history("", add("urn:T:early", &[150]))
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<Arc<str>> = ["urn:T:early", "urn:T:late", "urn:T:none"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let check = |from: i64, to: i64, expect: [bool; 3]| {
        let store = &store;
        let ids = ids.clone();
        async move {
            let mut req = history_request();
            req.range.from = Some(from * 1_000_000);
            req.range.to = Some(to * 1_000_000);
            let found = store.history_has_instances("", ids, req).await.unwrap();
            assert_eq!(found, expect, "[{from}, {to})");
        }
    };
    check(0, 15, [true, false, false]).await;
    check(20, 100, [true, false, false]).await;
    check(21, 100, [false, false, false]).await;
    check(100, 101, [false, true, false]).await;
    check(140, 200, [true, false, false]).await;
    // Only deletions count for deletedAt: there are none.
    let mut req = history_request();
    req.range.property = store::TimeProperty::DeletedAt;
    let found = store
        .history_has_instances("", ids.clone(), req)
        .await
        .unwrap();
    assert_eq!(found, [false, false, false]);
}

/// A temporal write whose transaction fails after it reserved instance
/// numbers must not leave the writer believing the reservation is saved:
/// after a restart the numbers would be handed out again, and two
/// instances of one series would share an instance id.
#[tokio::test]
async fn a_failed_temporal_write_does_not_keep_an_unsaved_seq_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = iri("https://example.org/fresh");
    let instance = |v: i64, t: i64| {
        let mut a = Attribute::new(AttrValue::Property(json!(v)));
        a.observed_at = Some(ngsi_model::time::format_micros(t).into());
        a.modified_at = 1;
        a.created_at = 1;
        a
    };
    let add = |attrs: Vec<Attribute>| store::HistoryOp::Add {
        id: "urn:ngsi-ld:T:seq".into(),
        types: vec![iri("https://example.org/T")],
        attrs: vec![(fresh.clone(), attrs)],
    };
    let db_path = dir.path().join("wuyang.db");
    {
        let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
        // Take the number the next new name gets, so that persisting the
        // names (after the counter is saved) fails.
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let taken: i64 = db
            .query_row("SELECT count(*) FROM names", [], |r| r.get(0))
            .unwrap();
        db.execute(
            "INSERT INTO names (id, name) VALUES (?1, 'blocker')",
            [taken],
        )
        .unwrap();
        let failed = store
            .write_history("", add(vec![instance(1, 10), instance(2, 20)]))
            .await;
        assert!(failed.is_err(), "{failed:?}");
        db.execute("DELETE FROM names WHERE name = 'blocker'", [])
            .unwrap();
        store
            .write_history("", add(vec![instance(3, 30), instance(4, 40)]))
            .await
            .unwrap()
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    store
        .write_history(
            "",
            add((5..9).map(|i| instance(i, i * 10)).collect::<Vec<_>>()),
        )
        .await
        .unwrap()
        .unwrap();
    let h = store
        .history("", "urn:ngsi-ld:T:seq", history_request())
        .await
        .unwrap()
        .unwrap();
    let mut ids: Vec<i64> = h[0].instances.iter().map(|i| i.instance_id).collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "instance ids reused: {ids:?}");
}

/// The rows of `table` in the store of directory `dir`, read beside it.
fn table_rows(dir: &std::path::Path, table: &str) -> i64 {
    let db = rusqlite::Connection::open(dir.join("wuyang.db")).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The first instances of entities created together live in one genesis
/// row per entity, not in `history`; reading, aggregating, modifying,
/// deleting and expiring them works as for any other instance, and the
/// answers survive a reopen.
#[tokio::test]
async fn first_instances_of_created_entities_read_edit_delete_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SqliteConfig::in_dir(dir.path());
    let level = iri("https://example.org/level");
    let t = "https://example.org/T";
    let observed = |mut e: Entity, seconds: i64| {
        e.attrs[0].1[0].observed_at =
            Some(ngsi_model::time::format_micros(seconds * 1_000_000).into());
        e
    };
    let rows = |table: &str| table_rows(dir.path(), table);
    let levels = |h: &[store::AttrHistory]| -> Vec<(i64, i64)> {
        h.iter()
            .flat_map(|a| &a.instances)
            .filter_map(|i| match &i.attr.as_ref()?.value {
                AttrValue::Property(v) => Some((i.instant / 1_000_000, v.as_i64()?)),
                _ => None,
            })
            .collect()
    };
    let store = SqliteStore::open(config()).unwrap();
    let created = store
        .write(
            "",
            ["a", "b", "c", "d"]
                .iter()
                .zip(1..)
                .map(|(n, i)| create(observed(entity(&format!("urn:g:{n}"), t, i * 10), i * 100)))
                .collect(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok));
    assert_eq!((rows("history_genesis"), rows("history")), (4, 0));
    let history = |id: &'static str| {
        let store = &store;
        async move {
            store
                .history("", id, history_request())
                .await
                .unwrap()
                .unwrap()
        }
    };
    for (id, expected) in [("urn:g:a", (100, 10)), ("urn:g:d", (400, 40))] {
        assert_eq!(levels(&history(id).await), [expected], "{id}");
    }
    let sum = |id: &'static str| {
        let (store, level) = (&store, level.clone());
        async move {
            let b = store
                .aggregate("", id, level, None, Default::default())
                .await
                .unwrap();
            b.first().map(|b| b.sum)
        }
    };
    assert_eq!(sum("urn:g:a").await, Some(10.0));
    // A later instance joins the first one, in time order, in the cached
    // aggregation too.
    let a = store.get("", "urn:g:a").unwrap();
    store
        .write(
            "",
            vec![put(observed(with_level((*a).clone(), 11, 2000), 150))],
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(levels(&history("urn:g:a").await), [(100, 10), (150, 11)]);
    assert_eq!(sum("urn:g:a").await, Some(21.0));
    // Modifying a first instance moves its entity's genesis row to `history`.
    let first_of = |h: Vec<store::AttrHistory>| h[0].instances[0].instance_id;
    let b_first = first_of(history("urn:g:b").await);
    let mut changed = Attribute::new(AttrValue::Property(json!(25)));
    changed.observed_at = Some(ngsi_model::time::format_micros(200_000_000).into());
    store
        .write_history(
            "",
            store::HistoryOp::ModifyInstance {
                id: "urn:g:b".into(),
                attr: level.clone(),
                instance: b_first,
                value: Box::new(changed),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(levels(&history("urn:g:b").await), [(200, 25)]);
    assert_eq!(sum("urn:g:b").await, Some(25.0));
    assert_eq!(rows("history_genesis"), 3);
    // Deleting one.
    let c_first = first_of(history("urn:g:c").await);
    let delete_c = || store::HistoryOp::DeleteInstance {
        id: "urn:g:c".into(),
        attr: level.clone(),
        instance: c_first,
    };
    store.write_history("", delete_c()).await.unwrap().unwrap();
    let again = store.write_history("", delete_c()).await.unwrap();
    assert_eq!(again.unwrap_err().kind, ErrorKind::ResourceNotFound);
    assert!(levels(&history("urn:g:c").await).is_empty());
    // Deleting the attribute's history.
    store
        .write_history(
            "",
            store::HistoryOp::DeleteAttr {
                id: "urn:g:d".into(),
                attr: level.clone(),
                dataset: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(levels(&history("urn:g:d").await).is_empty());
    assert_eq!(rows("history_genesis"), 1);
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let store = SqliteStore::open(config()).unwrap();
    let read = |id: &'static str| {
        let store = &store;
        async move {
            levels(
                &store
                    .history("", id, history_request())
                    .await
                    .unwrap()
                    .unwrap(),
            )
        }
    };
    assert_eq!(read("urn:g:a").await, [(100, 10), (150, 11)]);
    assert_eq!(read("urn:g:b").await, [(200, 25)]);
    assert!(read("urn:g:c").await.is_empty());
    // Expiring: a's first instance (100 s) goes with its genesis row, its
    // later one (150 s) stays.
    assert_eq!(store.expire_history(120 * 1_000_000).await.unwrap(), 1);
    assert_eq!(read("urn:g:a").await, [(150, 11)]);
    assert_eq!(rows("history_genesis"), 0);
}

/// A format 4 or 5 directory opens as it is and becomes format 6; an
/// unknown newer format is refused rather than misread.
#[tokio::test]
async fn a_format_4_directory_opens_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SqliteConfig::in_dir(dir.path());
    let set_format = |v: &str| {
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        db.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", [v])
            .unwrap();
    };
    let format = || -> String {
        let db = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
        db.query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    {
        let store = SqliteStore::open(config()).unwrap();
        store
            .write(
                "",
                vec![create(entity("urn:f:1", "https://example.org/T", 4))],
            )
            .await
            .unwrap()
            .remove(0)
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    set_format("4");
    {
        let store = SqliteStore::open(config()).unwrap();
        assert_eq!(level_of(&store.get("", "urn:f:1").unwrap()), 4);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(format(), "6");
    set_format("5");
    {
        let store = SqliteStore::open(config()).unwrap();
        assert_eq!(level_of(&store.get("", "urn:f:1").unwrap()), 4);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(format(), "6");
    set_format("7");
    match SqliteStore::open(config()) {
        Err(store::StoreError::UnknownFormat(f)) => assert_eq!(f, "7"),
        other => panic!("a format 7 directory opened: {:?}", other.err()),
    }
}

/// Discovery follows an update that changes an attribute's kind, and an
/// update of values alone (same types, attributes and kinds) leaves the
/// counts as they were while the value indexes follow the new values.
#[tokio::test]
async fn discovery_and_value_indexes_follow_updates() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let t = "https://example.org/T";
    let level = iri("https://example.org/level");
    store
        .write(
            "",
            vec![
                create(entity("urn:k:1", t, 1)),
                create(entity("urn:k:2", t, 2)),
            ],
        )
        .await
        .unwrap();
    let by_level = |v: i64| {
        let conditions = [store::attr_index::IndexedCondition {
            attr: level.clone(),
            condition: store::attr_index::Condition::AnyOf(vec![store::attr_index::IndexKey::num(
                v as f64,
            )]),
        }];
        let types = [iri(t)];
        let sel = Selection {
            ids: None,
            types: Some(&types),
            conditions: &conditions,
            exact: false,
        };
        let page = store.query("", sel, &|e| level_of(e) == v, all());
        page.entities
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
    };
    // The first query builds the value index; later writes maintain it.
    assert_eq!(by_level(1), ["urn:k:1"]);
    let set = |id: &'static str, value: AttrValue| {
        Op::new(id, move |c| {
            let mut e = c.cloned().unwrap();
            e.attrs[0].1[0].value = value;
            e.modified_at += 1;
            Ok(Change::put(e))
        })
    };
    store
        .write("", vec![set("urn:k:1", AttrValue::Property(json!(7)))])
        .await
        .unwrap();
    assert_eq!(by_level(1), Vec::<String>::new());
    assert_eq!(by_level(7), ["urn:k:1"]);
    let attrs = store.attr_infos("");
    assert_eq!(
        (attrs[0].entities, attrs[0].kinds.clone()),
        (2, vec!["Property"])
    );
    assert_eq!(store.type_infos("")[0].entities, 2);
    store
        .write(
            "",
            vec![set(
                "urn:k:2",
                AttrValue::Relationship {
                    object: json!("urn:k:1"),
                    object_type: None,
                },
            )],
        )
        .await
        .unwrap();
    let attrs = store.attr_infos("");
    assert_eq!(attrs[0].entities, 2);
    let mut kinds = attrs[0].kinds.clone();
    kinds.sort_unstable();
    assert_eq!(kinds, ["Property", "Relationship"]);
    store
        .write(
            "",
            vec![set(
                "urn:k:1",
                AttrValue::Relationship {
                    object: json!("urn:k:2"),
                    object_type: None,
                },
            )],
        )
        .await
        .unwrap();
    assert_eq!(store.attr_infos("")[0].kinds, ["Relationship"]);
    assert_eq!(
        store.type_infos("")[0].attrs,
        [(level.clone(), vec!["Relationship"])]
    );
}

/// An entity of three attributes a, b, c (three series), observed at
/// `base`, `base + 1` and `base + 2` seconds with those values.
fn three_series_entity(id: &str, base: i64) -> Entity {
    let attr = |n: i64| {
        let mut a = Attribute::new(AttrValue::Property(json!(base + n)));
        a.observed_at = Some(ngsi_model::time::format_micros((base + n) * 1_000_000).into());
        a
    };
    Entity {
        id: id.into(),
        types: vec![iri("https://example.org/T")],
        scopes: Vec::new(),
        attrs: ["a", "b", "c"]
            .iter()
            .zip(0..)
            .map(|(n, i)| {
                (
                    iri(&format!("https://example.org/{n}")),
                    vec![attr(i)].into(),
                )
            })
            .collect(),
        created_at: 1,
        modified_at: 1,
        expires_at: None,
    }
}

fn all_history() -> store::HistoryRequest {
    store::HistoryRequest {
        limit: usize::MAX,
        ..Default::default()
    }
}

/// Per attribute (sorted): its values and whether the answer was cut.
async fn series_values(
    s: &SqliteStore,
    id: &str,
    r: store::HistoryRequest,
) -> Vec<(String, Vec<i64>, bool)> {
    let mut out: Vec<_> = s
        .history("", id, r)
        .await
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.attr.to_string(), int_values(&a), a.truncated))
        .collect();
    out.sort();
    out
}

/// Genesis rows of entities with several series: each series finds its own
/// instances in its group's row (the first, middle and last of a group),
/// under lastN and limit; the probe, a temporal write at an existing
/// instant, deleting the last series of a group and a whole entity, reusing
/// series ids after a reopen, and retention.
#[tokio::test]
async fn genesis_rows_of_entities_with_several_series() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SqliteConfig::in_dir(dir.path());
    let rows = |table: &str| table_rows(dir.path(), table);
    let store = SqliteStore::open(config()).unwrap();
    let r = store
        .write(
            "",
            vec![
                create(three_series_entity("urn:x:1", 100)),
                create(three_series_entity("urn:x:2", 200)),
                create(three_series_entity("urn:x:3", 300)),
            ],
        )
        .await
        .unwrap();
    assert!(r.iter().all(Result::is_ok));
    assert_eq!((rows("history_genesis"), rows("history")), (3, 0));
    for (id, base) in [("urn:x:1", 100), ("urn:x:2", 200), ("urn:x:3", 300)] {
        let v = series_values(&store, id, all_history()).await;
        assert_eq!(
            v.iter().map(|x| x.1.clone()).collect::<Vec<_>>(),
            vec![vec![base], vec![base + 1], vec![base + 2]],
            "{id}"
        );
    }
    // lastN / limit with genesis instances.
    let v = series_values(
        &store,
        "urn:x:2",
        store::HistoryRequest {
            last_n: Some(1),
            limit: 1,
            ..Default::default()
        },
    )
    .await;
    assert!(v.iter().all(|x| x.1.len() == 1 && !x.2), "{v:?}");
    let v = series_values(
        &store,
        "urn:x:2",
        store::HistoryRequest {
            limit: 0,
            ..Default::default()
        },
    )
    .await;
    assert!(v.iter().all(|x| x.1.is_empty() && x.2), "{v:?}");
    let has = store
        .history_has_instances(
            "",
            vec![Arc::from("urn:x:1"), Arc::from("urn:x:3")],
            all_history(),
        )
        .await
        .unwrap();
    assert_eq!(has, [true, true]);
    // Temporal Add at the instant of b's genesis instance of x:2 replaces it.
    let mut a = Attribute::new(AttrValue::Property(json!(999)));
    a.observed_at = Some(ngsi_model::time::format_micros(201 * 1_000_000).into());
    store
        .write_history(
            "",
            store::HistoryOp::Add {
                id: "urn:x:2".into(),
                types: vec![],
                attrs: vec![(iri("https://example.org/b"), vec![a])],
            },
        )
        .await
        .unwrap()
        .unwrap();
    let v = series_values(&store, "urn:x:2", all_history()).await;
    assert_eq!(
        v.iter().map(|x| x.1.clone()).collect::<Vec<_>>(),
        vec![vec![200], vec![999], vec![202]]
    );
    // Delete attribute c of x:1 (the last series of its group).
    store
        .write_history(
            "",
            store::HistoryOp::DeleteAttr {
                id: "urn:x:1".into(),
                attr: iri("https://example.org/c"),
                dataset: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        series_values(&store, "urn:x:1", all_history())
            .await
            .iter()
            .map(|x| x.1.clone())
            .collect::<Vec<_>>(),
        vec![vec![100], vec![101]]
    );
    // Delete the whole history of the last entity, reopen, create another:
    // ids may be reused.
    store
        .write_history(
            "",
            store::HistoryOp::DeleteEntity {
                id: "urn:x:3".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows("history_genesis"), 0);
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let store = SqliteStore::open(config()).unwrap();
    let r = store
        .write("", vec![create(three_series_entity("urn:x:4", 400))])
        .await
        .unwrap();
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(
        series_values(&store, "urn:x:4", all_history())
            .await
            .iter()
            .map(|x| x.1.clone())
            .collect::<Vec<_>>(),
        vec![vec![400], vec![401], vec![402]]
    );
    assert!(
        store
            .history("", "urn:x:3", all_history())
            .await
            .unwrap()
            .is_none()
    );
    // Retention at 401 s: x:1, x:2 all gone, x:4 keeps b and c.
    let n = store.expire_history(401 * 1_000_000).await.unwrap();
    assert_eq!(n, 2 + 3 + 1);
    assert_eq!(
        series_values(&store, "urn:x:4", all_history())
            .await
            .iter()
            .map(|x| x.1.clone())
            .collect::<Vec<_>>(),
        vec![vec![], vec![401], vec![402]]
    );
}

/// Updates read the state the previous group committed, whether the writer
/// still holds the entity decoded or not: more entities than its cache of
/// recent ones holds (two generations of 1,024) are updated in turn, the
/// same ids live in two tenants, and deleted entities are created again.
#[tokio::test]
async fn updates_in_turn_see_the_last_committed_state_of_each_entity() {
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let n = 10_000;
    let id = |i: usize| format!("urn:ngsi-ld:T:{i}");
    for tenant in ["a", "b"] {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let ops = chunk
                .iter()
                .map(|&i| create(entity(&id(i), "https://example.org/T", 0)))
                .collect();
            store.write(tenant, ops).await.unwrap();
        }
    }
    // Three rounds in tenant a, one in tenant b, in groups of 500.
    for tenant in ["a", "a", "b", "a"] {
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let ops = chunk.iter().map(|&i| increment(&id(i))).collect();
            for r in store.write(tenant, ops).await.unwrap() {
                r.unwrap();
            }
        }
    }
    // Every hundredth entity of tenant a deleted and created anew.
    let gone: Vec<usize> = (0..n).step_by(100).collect();
    store
        .write("a", gone.iter().map(|&i| delete(&id(i))).collect())
        .await
        .unwrap();
    for r in store
        .write(
            "a",
            gone.iter()
                .map(|&i| create(entity(&id(i), "https://example.org/T", 7)))
                .collect(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    for i in 0..n {
        let a = store.get("a", &id(i)).unwrap();
        let b = store.get("b", &id(i)).unwrap();
        let expected = if i % 100 == 0 { 7 } else { 3 };
        assert_eq!(level_of(&a), expected, "tenant a, {}", id(i));
        assert_eq!(level_of(&b), 1, "tenant b, {}", id(i));
    }
}

/// The same entity id created in two tenants by writes that wait together
/// (so that the writer commits them in one group): each tenant's entity
/// gets series of its own, holding only its own instances.
#[tokio::test]
async fn one_group_keeps_the_series_of_two_tenants_apart() {
    let store = Arc::new(SqliteStore::open(SqliteConfig::default()).unwrap());
    let n = 200;
    let id = |i: i64| format!("urn:ngsi-ld:T:{i}");
    let mut writes = Vec::new();
    for i in 0..n {
        for (tenant, level) in [("a", i), ("b", 1000 + i)] {
            let store = store.clone();
            let e = with_level(entity(&id(i), "https://example.org/T", 0), level, 10 + i);
            writes.push(tokio::spawn(async move {
                store
                    .write(tenant, vec![put(e)])
                    .await
                    .unwrap()
                    .remove(0)
                    .unwrap();
            }));
        }
    }
    for w in writes {
        w.await.unwrap();
    }
    for i in 0..n {
        for (tenant, level) in [("a", i), ("b", 1000 + i)] {
            let h = store
                .history(tenant, &id(i), history_request())
                .await
                .unwrap()
                .unwrap();
            let values: Vec<_> = h
                .iter()
                .flat_map(|a| &a.instances)
                .map(|inst| match &inst.attr.as_ref().unwrap().value {
                    AttrValue::Property(v) => v.as_i64().unwrap(),
                    _ => panic!("not a property"),
                })
                .collect();
            assert_eq!(values, [level], "tenant {tenant}, {}", id(i));
        }
    }
}

#[tokio::test]
async fn a_group_that_fails_to_commit_is_rolled_back_and_the_next_one_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    let t = "https://example.org/T";
    store
        .write("", vec![create(entity("urn:ok:1", t, 1))])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    // Another connection makes the entities table refuse one id: the
    // writer's statement fails in the middle of its group.
    let other = rusqlite::Connection::open(dir.path().join("wuyang.db")).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON entities WHEN NEW.id = 'urn:bad:1' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    drop(other);
    let failed = store
        .write(
            "",
            vec![
                create(entity("urn:ok:2", t, 2)),
                create(entity("urn:bad:1", t, 3)),
            ],
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    // Nothing of the failed group is visible, and the writer goes on: its
    // transaction was rolled back, so the next group can begin its own.
    assert!(store.get("", "urn:ok:2").is_none());
    assert_eq!(store.entity_count(), 1);
    for id in ["urn:ok:3", "urn:ok:4"] {
        store
            .write("", vec![create(entity(id, t, 4))])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
    }
    drop(store);
    let store = SqliteStore::open(SqliteConfig::in_dir(dir.path())).unwrap();
    let ids: Vec<String> = ["urn:ok:1", "urn:ok:2", "urn:bad:1", "urn:ok:3", "urn:ok:4"]
        .into_iter()
        .filter(|id| store.get("", id).is_some())
        .map(String::from)
        .collect();
    assert_eq!(ids, ["urn:ok:1", "urn:ok:3", "urn:ok:4"]);
}

/// An attribute of one instance per datasetId in `datasets`, stamped `t`.
fn instances(datasets: std::ops::Range<u32>, t: i64) -> Vec<Attribute> {
    datasets
        .map(|d| {
            let mut a = Attribute::new(AttrValue::Property(json!(d)));
            a.dataset_id = Some(format!("urn:ngsi-ld:Dataset:{d}").into());
            a.created_at = t;
            a.modified_at = t;
            a
        })
        .collect()
}

#[tokio::test]
async fn the_history_of_an_entity_of_many_instances_records_each_change_once() {
    // More instances than the recorder looks up by scanning: its maps
    // must find the same instances and series as the scans.
    let store = SqliteStore::open(SqliteConfig::default()).unwrap();
    let id = "urn:ngsi-ld:T:many";
    let temp = iri("https://example.org/temp");
    let version = |attrs: Vec<Attribute>, t: i64| Entity {
        id: id.into(),
        types: vec![iri("https://example.org/T")],
        scopes: Vec::new(),
        attrs: vec![(temp.clone(), attrs.into())],
        created_at: 1_000,
        modified_at: t,
        expires_at: None,
    };
    let put = |e: Entity| Op::new(id, move |_| Ok(Change::put(e)));
    store
        .write("", vec![put(version(instances(0..40, 1_000), 1_000))])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    // 0..20 change, 20..30 stay as they were, 30..40 go, 40..45 are new;
    // in the same group, 40..45 change again.
    let mut second = instances(0..20, 2_000);
    second.extend(instances(20..30, 1_000));
    second.extend(instances(40..45, 2_000));
    let mut third = second.clone();
    third.truncate(30);
    third.extend(instances(40..45, 3_000));
    let results = store
        .write(
            "",
            vec![put(version(second, 2_000)), put(version(third, 3_000))],
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    let history = store
        .history("", id, history_request())
        .await
        .unwrap()
        .unwrap();
    let mut counts: Vec<(u32, usize, usize)> = history
        .iter()
        .map(|h| {
            let d = h.dataset_id.as_deref().unwrap();
            let n: u32 = d.rsplit(':').next().unwrap().parse().unwrap();
            let deletions = h.instances.iter().filter(|i| i.attr.is_none()).count();
            (n, h.instances.len(), deletions)
        })
        .collect();
    counts.sort_unstable();
    let expected: Vec<(u32, usize, usize)> = (0..45)
        .map(|n| match n {
            0..20 => (n, 2, 0),
            20..30 => (n, 1, 0),
            30..40 => (n, 2, 1),
            _ => (n, 2, 0),
        })
        .collect();
    assert_eq!(counts, expected);
}
