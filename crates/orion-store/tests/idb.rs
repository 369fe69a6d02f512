//! `IdbStore` in a real dedicated worker in headless Chromium (`cargo xtask test` runs these with
//! wasm-bindgen-test-runner): the shared conformance suite, the upgrade from schema version 1,
//! records other code wrote that are not rows, and a batch whose last request fails.
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not know it: a failed unwrap here is a
// failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use js_sys::{Array, Date, Float32Array, Object, Reflect};
use orion_core::embedding::LocalBoxFuture;
use orion_core::store::conformance;
use orion_core::{Error, Row, Scan, Store, Table, WriteOp};
use orion_store::{IdbStore, SCHEMA_VERSION};
use rexie::{Index, ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

mod common;
use common::{fresh, unique_name};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

fn set(object: &JsValue, name: &str, value: impl Into<JsValue>) {
    Reflect::set(object, &JsValue::from_str(name), &value.into()).unwrap();
}

/// A plain object with these string properties.
fn record(props: &[(&str, &str)]) -> JsValue {
    let object: JsValue = Object::new().into();
    for (name, value) in props {
        set(&object, name, *value);
    }
    object
}

fn ids(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|row| row.id.as_str()).collect()
}

#[wasm_bindgen_test]
async fn idb_store_passes_the_conformance_suite() {
    let factory = || -> LocalBoxFuture<'static, orion_core::error::Result<Box<dyn Store>>> {
        Box::pin(async { Ok(Box::new(fresh("conformance").await?) as Box<dyn Store>) })
    };
    let failures = conformance::run(&factory).await;
    console_log!("conformance failures: {failures:#?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A version-1 database (the five stores, no indexes) written the way ORION wrote rows, opened by
/// `IdbStore`: upgraded in place, rows unchanged, and the new indexes cover the old rows.
#[wasm_bindgen_test]
async fn a_version_1_database_is_upgraded_in_place() {
    let name = unique_name("upgrade");
    let v1 = Table::ALL
        .iter()
        .fold(Rexie::builder(&name).version(1), |db, table| {
            db.add_object_store(ObjectStore::new(table.name()).key_path("id"))
        })
        .build()
        .await
        .unwrap();
    let vector: Vec<f32> = (0..384).map(|i| (i as f32 - 100.0) / 7.0).collect();
    {
        let transaction = v1
            .transaction(&["memories", "jobs"], TransactionMode::ReadWrite)
            .unwrap();
        let memories = transaction.store("memories").unwrap();
        for (id, kind) in [("m3", "fact"), ("m1", "fact"), ("m2", "conversation")] {
            let row = record(&[("id", id), ("kind", kind), ("text", "old")]);
            set(&row, "createdAt", 1_700_000_000_000_f64);
            set(&row, "embedding", Float32Array::from(vector.as_slice()));
            memories.put(&row, None).await.unwrap();
        }
        let jobs = transaction.store("jobs").unwrap();
        for (id, state) in [("j2", "waiting"), ("j1", "waiting"), ("j3", "done")] {
            let row = record(&[("id", id), ("state", state), ("name", "index")]);
            jobs.put(&row, None).await.unwrap();
        }
        assert!(transaction.done().await.unwrap().is_committed());
    }
    assert_eq!(v1.version(), Ok(1));
    v1.close();

    let store = IdbStore::open(&name).await.unwrap();
    let old = store
        .get(Table::Memories, vec!["m1".into()])
        .await
        .unwrap()
        .pop()
        .flatten()
        .expect("m1 survived the upgrade");
    let expected = Row::new("m1")
        .with("kind", "fact")
        .with("text", "old")
        .with("createdAt", 1_700_000_000_000_u64)
        .with_vector("embedding", vector.clone());
    assert_eq!(old, expected);
    assert_eq!(store.count(Table::Memories).await.unwrap(), 3);

    // Rows written after the upgrade join the old ones in the index, in id order.
    store
        .write(vec![WriteOp::Put(
            Table::Memories,
            Row::new("m0").with("kind", "fact"),
        )])
        .await
        .unwrap();
    let facts = store
        .scan(Table::Memories, Scan::first(10).where_eq("kind", "fact"))
        .await
        .unwrap();
    assert_eq!(ids(&facts), ["m0", "m1", "m3"]);
    let after = store
        .scan(
            Table::Memories,
            Scan::first(10).where_eq("kind", "fact").after("m1"),
        )
        .await
        .unwrap();
    assert_eq!(ids(&after), ["m3"]);
    for (field, value, expected) in [
        ("state", "waiting", vec!["j1", "j2"]),
        ("state", "done", vec!["j3"]),
        ("name", "index", vec!["j1", "j2", "j3"]),
    ] {
        let rows = store
            .scan(Table::Jobs, Scan::first(10).where_eq(field, value))
            .await
            .unwrap();
        assert_eq!(ids(&rows), expected, "{field} = {value}");
    }
    drop(store);

    // Opened without a version: whatever the database now is.
    let reopened = Rexie::builder(&name).build().await.unwrap();
    assert_eq!(reopened.version(), Ok(SCHEMA_VERSION));
    let transaction = reopened
        .transaction(&["jobs"], TransactionMode::ReadOnly)
        .unwrap();
    let mut indexes = transaction.store("jobs").unwrap().index_names();
    indexes.sort();
    assert_eq!(indexes, ["by_name", "by_state"]);
    drop(transaction);
    reopened.close();
}

/// Records other code put in ORION's database that are not rows: each read is a `Store` error
/// naming the record, and the worker lives on.
#[wasm_bindgen_test]
async fn records_that_are_not_rows_are_store_errors() {
    let store = fresh("malformed").await.unwrap();
    store
        .write(vec![WriteOp::Put(
            Table::Memories,
            Row::new("good").with("kind", "fact"),
        )])
        .await
        .unwrap();

    let other = Rexie::builder(&store.name()).build().await.unwrap();
    let names: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
    let transaction = other
        .transaction(&names, TransactionMode::ReadWrite)
        .unwrap();
    // A `Date` where JSON belongs.
    let dated = record(&[("id", "dated"), ("kind", "fact")]);
    set(&dated, "createdAt", Date::new_0());
    transaction
        .store("memories")
        .unwrap()
        .put(&dated, None)
        .await
        .unwrap();
    // A number as the id (a valid IndexedDB key, not a row id).
    let numbered: JsValue = Object::new().into();
    set(&numbered, "id", 7);
    transaction
        .store("jobs")
        .unwrap()
        .put(&numbered, None)
        .await
        .unwrap();
    // An array with an `id` property (structured clone keeps it) instead of an object.
    let array: JsValue = Array::of2(&"a".into(), &"b".into()).into();
    set(&array, "id", "listed");
    transaction
        .store("workflows")
        .unwrap()
        .put(&array, None)
        .await
        .unwrap();
    // A Float32Array nested inside a JSON field (only top-level ones are vectors).
    let nested = record(&[("id", "nested")]);
    let meta: JsValue = Object::new().into();
    set(&meta, "v", Float32Array::new_with_length(2));
    set(&nested, "meta", meta);
    transaction
        .store("backups")
        .unwrap()
        .put(&nested, None)
        .await
        .unwrap();
    // NaN, which JSON has no spelling for.
    let nan = record(&[("id", "nan")]);
    set(&nan, "score", f64::NAN);
    transaction
        .store("meta")
        .unwrap()
        .put(&nan, None)
        .await
        .unwrap();
    assert!(transaction.done().await.unwrap().is_committed());
    other.close();

    let expect_store_error =
        |what: &str, result: orion_core::error::Result<Vec<Row>>, needle: &str| match result {
            Err(Error::Store(message)) => {
                console_log!("{what}: {message}");
                assert!(message.contains(needle), "{what}: {message}");
            }
            other => panic!("{what}: expected a Store error, got {other:?}"),
        };
    let get = |table: Table, id: &str| {
        let store = &store;
        let id = id.to_owned();
        async move {
            store
                .get(table, vec![id])
                .await
                .map(|rows| rows.into_iter().flatten().collect())
        }
    };
    expect_store_error("a Date", get(Table::Memories, "dated").await, "dated");
    expect_store_error(
        "a Date (scan)",
        store.scan(Table::Memories, Scan::first(10)).await,
        "Date",
    );
    expect_store_error(
        "a numeric id",
        store.scan(Table::Jobs, Scan::first(10)).await,
        "no string `id`",
    );
    expect_store_error(
        "an array",
        get(Table::Workflows, "listed").await,
        "not a plain object",
    );
    expect_store_error(
        "a nested vector",
        get(Table::Backups, "nested").await,
        "nested",
    );
    expect_store_error("NaN", get(Table::Meta, "nan").await, "NaN");
    assert!(matches!(
        store.snapshot(vec![Table::Meta]).await,
        Err(Error::Store(_))
    ));

    // The readable row still reads.
    let good = store
        .get(Table::Memories, vec!["good".into()])
        .await
        .unwrap();
    assert_eq!(good, [Some(Row::new("good").with("kind", "fact"))]);
}

/// `IdbStore` never builds a request that fails from a valid batch, so the failure comes from a
/// constraint another program's schema imposes: a version-2 database whose `by_kind` index on
/// `memories` is unique on `kind` alone (it has every store and index name `IdbStore` checks for).
/// The batch's last put breaks it: the whole batch is undone and the error names the cause.
#[wasm_bindgen_test]
async fn a_failed_request_undoes_the_whole_batch() {
    let name = unique_name("abort");
    let foreign = Table::ALL
        .iter()
        .fold(
            Rexie::builder(&name).version(SCHEMA_VERSION),
            |db, table| {
                let store = table.indexed_fields().iter().fold(
                    ObjectStore::new(table.name()).key_path("id"),
                    |store, field| {
                        let index = if *table == Table::Memories {
                            Index::new(&format!("by_{field}"), field).unique(true)
                        } else {
                            Index::new_array(&format!("by_{field}"), [*field, "id"])
                        };
                        store.add_index(index)
                    },
                );
                db.add_object_store(store)
            },
        )
        .build()
        .await
        .unwrap();
    foreign.close();

    let store = IdbStore::open(&name).await.unwrap();
    store
        .write(vec![WriteOp::Put(
            Table::Memories,
            Row::new("x").with("kind", "fact"),
        )])
        .await
        .unwrap();
    let result = store
        .write(vec![
            WriteOp::Put(
                Table::Jobs,
                Row::new("j1").with("state", "waiting").with("name", "n"),
            ),
            WriteOp::Put(Table::Memories, Row::new("y").with("kind", "conversation")),
            WriteOp::Delete(Table::Memories, "x".into()),
            WriteOp::Put(Table::Memories, Row::new("x").with("kind", "fact")),
            WriteOp::Put(Table::Meta, Row::new("settings").with("a", 1)),
            // Same kind as `x`: the unique index refuses it.
            WriteOp::Put(Table::Memories, Row::new("z").with("kind", "fact")),
        ])
        .await;
    match &result {
        Err(Error::Store(message)) => {
            console_log!("the failed batch: {message}");
            assert!(message.contains("ConstraintError"), "{message}");
        }
        other => panic!("expected a Store error, got {other:?}"),
    }
    assert_eq!(store.count(Table::Jobs).await.unwrap(), 0);
    assert_eq!(store.count(Table::Meta).await.unwrap(), 0);
    let memories = store
        .snapshot(vec![Table::Memories])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .1;
    assert_eq!(memories, [Row::new("x").with("kind", "fact")]);

    // The connection is fine afterwards.
    store
        .write(vec![WriteOp::Put(
            Table::Memories,
            Row::new("y").with("kind", "conversation"),
        )])
        .await
        .unwrap();
    assert_eq!(store.count(Table::Memories).await.unwrap(), 2);
}

/// A row JS cannot hold exactly is refused before anything is written.
#[wasm_bindgen_test]
async fn unrepresentable_rows_are_refused_before_writing() {
    let store = fresh("unrepresentable").await.unwrap();
    let result = store
        .write(vec![
            WriteOp::Put(Table::Memories, Row::new("ok").with("kind", "fact")),
            WriteOp::Put(Table::Memories, Row::new("big").with("n", u64::MAX)),
        ])
        .await;
    assert!(
        matches!(&result, Err(Error::Store(m)) if m.contains("big")),
        "{result:?}"
    );
    let clash = store
        .write(vec![WriteOp::Put(
            Table::Memories,
            Row::new("clash").with("e", 1).with_vector("e", vec![1.0]),
        )])
        .await;
    assert!(matches!(clash, Err(Error::Internal(_))), "{clash:?}");
    assert_eq!(store.count(Table::Memories).await.unwrap(), 0);
}

/// A database from a newer ORION is refused, not downgraded.
#[wasm_bindgen_test]
async fn a_newer_database_is_refused() {
    let name = unique_name("newer");
    Rexie::builder(&name)
        .version(SCHEMA_VERSION + 1)
        .add_object_store(ObjectStore::new("memories").key_path("id"))
        .build()
        .await
        .unwrap()
        .close();
    let result = IdbStore::open(&name).await;
    match result {
        Err(Error::Store(message)) => {
            console_log!("a newer database: {message}");
            assert!(message.contains("VersionError"), "{message}");
        }
        other => panic!("expected a Store error, got {other:?}"),
    }
}
