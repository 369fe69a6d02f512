//! The conformance suite every [`Store`] must pass: `MemStore` natively, `IdbStore` in headless
//! Chromium (enable the `conformance` feature to use it from another crate).
//!
//! [`run`] takes a factory that returns an empty store, runs every check on a fresh one and
//! returns the failures (empty when the store conforms), so that each platform's test harness can
//! report them its own way. Ids are ASCII: IndexedDB orders strings by UTF-16 code units and Rust
//! by bytes, which agree on ASCII.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use serde_json::json;

use super::{Fields, Guard, Guarded, Row, Scan, SnapshotVisitor, Store, Table, WriteOp};
use crate::embedding::LocalBoxFuture;
use crate::error::Result;

/// Makes an empty store.
pub type StoreFactory<'a> = dyn Fn() -> LocalBoxFuture<'static, Result<Box<dyn Store>>> + 'a;

type Check = for<'a> fn(&'a dyn Store) -> LocalBoxFuture<'a, Result<(), String>>;

/// Every check, by name.
pub const CHECKS: [(&str, Check); 15] = [
    ("rows round-trip exactly", |s| Box::pin(round_trip(s))),
    ("get returns rows in the order asked", |s| {
        Box::pin(get_keeps_order(s))
    }),
    ("put replaces the whole row", |s| Box::pin(put_replaces(s))),
    ("delete and clear", |s| Box::pin(delete_and_clear(s))),
    ("one batch across tables", |s| {
        Box::pin(batch_across_tables(s))
    }),
    ("scan pages in id order", |s| Box::pin(scan_pages(s))),
    ("scan filters on an index", |s| Box::pin(scan_index(s))),
    ("snapshot reads whole tables", |s| Box::pin(snapshot(s))),
    ("a visited snapshot comes in chunks, in id order", |s| {
        Box::pin(visit_snapshot(s))
    }),
    ("a large batch with vectors", |s| Box::pin(large_batch(s))),
    ("an empty batch is fine", |s| Box::pin(empty_batch(s))),
    ("scanning an unindexed field is refused", |s| {
        Box::pin(unindexed_scan(s))
    }),
    ("a scan can read only some fields", |s| {
        Box::pin(projection(s))
    }),
    ("patch merges into existing rows only", |s| {
        Box::pin(patch(s))
    }),
    ("a guarded write changes only the rows as expected", |s| {
        Box::pin(guarded(s))
    }),
];

/// Runs every check on a fresh store from `factory`; returns `"<check>: <problem>"` per failure.
pub async fn run(factory: &StoreFactory<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, check) in CHECKS {
        let outcome = match factory().await {
            Ok(store) => check(store.as_ref()).await,
            Err(error) => Err(format!("the factory failed: {error}")),
        };
        if let Err(problem) = outcome {
            failures.push(format!("{name}: {problem}"));
        }
    }
    failures
}

/// A waker that notes it was woken: polling loops poll again while it was.
#[derive(Debug, Default)]
pub struct WakeFlag(AtomicBool);

impl WakeFlag {
    /// Whether it was woken since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Drives a future whose work never waits on anything outside it (every `MemStore` future):
/// polls it again while it wakes itself (a yield).
///
/// # Panics
/// If the future is pending without having woken itself: it waits on something this loop cannot
/// drive.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let flag = Arc::new(WakeFlag::default());
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => return output,
            std::task::Poll::Pending if flag.take() => {}
            std::task::Poll::Pending => panic!("block_on: the future is waiting on outside work"),
        }
    }
}

fn ensure(condition: bool, problem: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(problem())
    }
}

fn text(error: crate::Error) -> String {
    error.to_string()
}

async fn put(store: &dyn Store, table: Table, rows: Vec<Row>) -> Result<(), String> {
    let ops = rows
        .into_iter()
        .map(|row| WriteOp::Put(table, row))
        .collect();
    store.write(ops).await.map_err(text)
}

async fn get_one(store: &dyn Store, table: Table, id: &str) -> Result<Option<Row>, String> {
    let mut rows = store.get(table, vec![id.to_owned()]).await.map_err(text)?;
    ensure(rows.len() == 1, || {
        format!("get of one id gave {} rows", rows.len())
    })?;
    Ok(rows.pop().flatten())
}

fn ids(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|row| row.id.as_str()).collect()
}

fn memory(id: &str, kind: &str) -> Row {
    Row::new(id)
        .with("text", format!("text of {id}"))
        .with("kind", kind)
}

async fn round_trip(store: &dyn Store) -> Result<(), String> {
    let mut vector: Vec<f32> = (0..384).map(|i| (i as f32 - 190.0) / 97.0).collect();
    vector[0] = -0.0;
    vector[1] = f32::MIN_POSITIVE / 8.0;
    vector[2] = f32::MAX;
    vector[3] = f32::EPSILON;
    let row = Row::new("m-1")
        .with("text", "naïve café — 猫が好き 🐈‍⬛ \"quoted\" \\ back\nline")
        .with("kind", "fact")
        .with("createdAt", 1_795_000_000_123u64)
        .with("score", -0.125)
        .with(
            "meta",
            json!({"nested": {"list": [1, "two", null, true]}, "empty": {}}),
        )
        .with_vector("embedding", vector.clone())
        .with_vector("empty", Vec::new())
        .with_bytes("codes", (0..=255).collect())
        .with_bytes("none", Vec::new());
    put(store, Table::Memories, vec![row.clone()]).await?;
    let back = get_one(store, Table::Memories, "m-1")
        .await?
        .ok_or("the row is gone")?;
    ensure(back.id == row.id, || format!("id {:?}", back.id))?;
    ensure(back.fields == row.fields, || {
        format!("fields {:?} != {:?}", back.fields, row.fields)
    })?;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let stored = back.vector_field("embedding").map_err(text)?;
    ensure(bits(stored) == bits(&vector), || {
        "the vector changed (bit for bit)".into()
    })?;
    ensure(back.vectors.len() == 2, || {
        format!("vector fields {:?}", back.vectors.keys())
    })?;
    ensure(back.bytes == row.bytes, || {
        format!("byte fields {:?} != {:?}", back.bytes, row.bytes)
    })?;
    ensure(
        back.u64_field("createdAt").ok() == Some(1_795_000_000_123),
        || "createdAt changed".into(),
    )
}

async fn get_keeps_order(store: &dyn Store) -> Result<(), String> {
    put(
        store,
        Table::Memories,
        vec![memory("a", "fact"), memory("b", "fact")],
    )
    .await?;
    let rows = store
        .get(Table::Memories, vec!["b".into(), "zz".into(), "a".into()])
        .await
        .map_err(text)?;
    let got: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.as_ref().map(|r| r.id.as_str()))
        .collect();
    ensure(got == [Some("b"), None, Some("a")], || format!("{got:?}"))?;
    let none = store.get(Table::Jobs, Vec::new()).await.map_err(text)?;
    ensure(none.is_empty(), || {
        format!("{} rows for no ids", none.len())
    })
}

async fn put_replaces(store: &dyn Store) -> Result<(), String> {
    let first = memory("x", "fact")
        .with("extra", 1)
        .with_vector("embedding", vec![1.0, 2.0])
        .with_bytes("codes", vec![1, 2]);
    put(store, Table::Memories, vec![first]).await?;
    put(store, Table::Memories, vec![memory("x", "feedback")]).await?;
    let back = get_one(store, Table::Memories, "x")
        .await?
        .ok_or("the row is gone")?;
    ensure(back.str_field("kind").ok() == Some("feedback"), || {
        "kind not replaced".into()
    })?;
    ensure(!back.fields.contains_key("extra"), || {
        "a field of the old row survived".into()
    })?;
    ensure(back.vectors.is_empty() && back.bytes.is_empty(), || {
        "a vector or bytes of the old row survived".into()
    })?;
    let count = store.count(Table::Memories).await.map_err(text)?;
    ensure(count == 1, || format!("count {count}"))
}

async fn delete_and_clear(store: &dyn Store) -> Result<(), String> {
    put(
        store,
        Table::Memories,
        (0..5).map(|i| memory(&format!("d{i}"), "fact")).collect(),
    )
    .await?;
    put(store, Table::Meta, vec![Row::new("schema").with("v", 1)]).await?;
    store
        .write(vec![
            WriteOp::Delete(Table::Memories, "d1".into()),
            WriteOp::Delete(Table::Memories, "no-such-row".into()),
        ])
        .await
        .map_err(text)?;
    let rows = store
        .scan(Table::Memories, Scan::first(100))
        .await
        .map_err(text)?;
    ensure(ids(&rows) == ["d0", "d2", "d3", "d4"], || {
        format!("{:?}", ids(&rows))
    })?;
    store
        .write(vec![WriteOp::Clear(Table::Memories)])
        .await
        .map_err(text)?;
    let memories = store.count(Table::Memories).await.map_err(text)?;
    let meta = store.count(Table::Meta).await.map_err(text)?;
    ensure(memories == 0 && meta == 1, || {
        format!("after clear: {memories} memories, {meta} meta rows")
    })
}

async fn batch_across_tables(store: &dyn Store) -> Result<(), String> {
    put(
        store,
        Table::Jobs,
        vec![Row::new("old").with("state", "done")],
    )
    .await?;
    store
        .write(vec![
            WriteOp::Put(Table::Memories, memory("m", "fact")),
            WriteOp::Put(Table::Meta, Row::new("settings").with("k", json!({"a": 1}))),
            WriteOp::Put(
                Table::Jobs,
                Row::new("j1").with("state", "waiting").with("name", "n"),
            ),
            WriteOp::Delete(Table::Jobs, "old".into()),
            WriteOp::Put(
                Table::Backups,
                Row::new("b1").with("kind", "manual").with("payload", "{}"),
            ),
            WriteOp::Put(Table::Workflows, Row::new("w1").with("status", "running")),
        ])
        .await
        .map_err(text)?;
    for (table, expected) in [
        (Table::Memories, 1),
        (Table::Meta, 1),
        (Table::Jobs, 1),
        (Table::Backups, 1),
        (Table::Workflows, 1),
    ] {
        let count = store.count(table).await.map_err(text)?;
        ensure(count == expected, || {
            format!("{}: {count} rows", table.name())
        })?;
    }
    let old = get_one(store, Table::Jobs, "old").await?;
    ensure(old.is_none(), || "the deleted job is still there".into())
}

async fn scan_pages(store: &dyn Store) -> Result<(), String> {
    // Written out of order: scans come back in id order anyway.
    let mut rows: Vec<Row> = (0..25)
        .map(|i| memory(&format!("r{i:02}"), "fact"))
        .collect();
    rows.reverse();
    put(store, Table::Memories, rows).await?;
    let mut seen = Vec::new();
    let mut scan = Scan::first(10);
    for expected in [10, 10, 5, 0] {
        let page = store
            .scan(Table::Memories, scan.clone())
            .await
            .map_err(text)?;
        ensure(page.len() == expected, || {
            format!("a page of {} rows, expected {expected}", page.len())
        })?;
        if let Some(last) = page.last() {
            scan = Scan::first(10).after(last.id.clone());
        }
        seen.extend(page.into_iter().map(|row| row.id));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();
    ensure(seen == expected, || format!("{seen:?}"))
}

async fn scan_index(store: &dyn Store) -> Result<(), String> {
    let rows = (0..12)
        .map(|i| {
            let kind = if i % 3 == 0 { "tool_result" } else { "fact" };
            memory(&format!("k{i:02}"), kind)
        })
        .collect();
    put(store, Table::Memories, rows).await?;
    let first = store
        .scan(
            Table::Memories,
            Scan::first(2).where_eq("kind", "tool_result"),
        )
        .await
        .map_err(text)?;
    ensure(ids(&first) == ["k00", "k03"], || {
        format!("{:?}", ids(&first))
    })?;
    let rest = store
        .scan(
            Table::Memories,
            Scan::first(10).where_eq("kind", "tool_result").after("k03"),
        )
        .await
        .map_err(text)?;
    ensure(ids(&rest) == ["k06", "k09"], || format!("{:?}", ids(&rest)))?;
    let none = store
        .scan(
            Table::Memories,
            Scan::first(10).where_eq("kind", "feedback"),
        )
        .await
        .map_err(text)?;
    ensure(none.is_empty(), || format!("{:?}", ids(&none)))
}

async fn snapshot(store: &dyn Store) -> Result<(), String> {
    put(
        store,
        Table::Memories,
        vec![memory("s1", "fact"), memory("s2", "fact")],
    )
    .await?;
    put(
        store,
        Table::Backups,
        vec![Row::new("b").with("kind", "auto")],
    )
    .await?;
    let snapshot = store
        .snapshot(vec![Table::Memories, Table::Jobs, Table::Backups])
        .await
        .map_err(text)?;
    let shape: Vec<(Table, Vec<&str>)> = snapshot
        .iter()
        .map(|(table, rows)| (*table, ids(rows)))
        .collect();
    ensure(
        shape
            == [
                (Table::Memories, vec!["s1", "s2"]),
                (Table::Jobs, vec![]),
                (Table::Backups, vec!["b"]),
            ],
        || format!("{shape:?}"),
    )
}

/// What a [`SnapshotVisitor`] was given: the count, then each chunk's ids; it fails on the chunk
/// `fail_at`.
#[derive(Default)]
struct Visits {
    count: Option<u64>,
    chunks: Vec<Vec<String>>,
    fail_at: Option<usize>,
}

impl SnapshotVisitor for Visits {
    fn count(&mut self, rows: u64) -> Result<()> {
        if self.count.is_some() || !self.chunks.is_empty() {
            return Err(crate::error::Error::Internal("a count after rows".into()));
        }
        self.count = Some(rows);
        Ok(())
    }

    fn rows(&mut self, rows: Vec<Row>) -> Result<()> {
        if self.fail_at == Some(self.chunks.len()) {
            return Err(crate::error::Error::Store("the visitor stops".into()));
        }
        self.chunks
            .push(rows.into_iter().map(|row| row.id).collect());
        Ok(())
    }
}

async fn visit_snapshot(store: &dyn Store) -> Result<(), String> {
    let mut empty = Visits::default();
    store
        .visit_snapshot(Table::Memories, 2, &mut empty)
        .await
        .map_err(text)?;
    ensure(empty.count == Some(0) && empty.chunks.is_empty(), || {
        format!("empty: {:?} {:?}", empty.count, empty.chunks)
    })?;
    let rows: Vec<Row> = ["v3", "v1", "v5", "v2", "v4"]
        .iter()
        .map(|id| memory(id, "fact"))
        .collect();
    put(store, Table::Memories, rows).await?;
    for (chunk, expected) in [
        (2, vec![vec!["v1", "v2"], vec!["v3", "v4"], vec!["v5"]]),
        (5, vec![vec!["v1", "v2", "v3", "v4", "v5"]]),
        (9, vec![vec!["v1", "v2", "v3", "v4", "v5"]]),
    ] {
        let mut visits = Visits::default();
        store
            .visit_snapshot(Table::Memories, chunk, &mut visits)
            .await
            .map_err(text)?;
        ensure(visits.count == Some(5) && visits.chunks == expected, || {
            format!("chunks of {chunk}: {:?} {:?}", visits.count, visits.chunks)
        })?;
    }
    let mut failing = Visits {
        fail_at: Some(1),
        ..Visits::default()
    };
    let outcome = store.visit_snapshot(Table::Memories, 2, &mut failing).await;
    ensure(
        matches!(&outcome, Err(crate::error::Error::Store(reason)) if reason == "the visitor stops")
            && failing.chunks.len() == 1,
        || format!("a failing visitor: {outcome:?}, {:?}", failing.chunks),
    )
}

async fn large_batch(store: &dyn Store) -> Result<(), String> {
    let rows: Vec<Row> = (0..3000)
        .map(|i| {
            let vector = (0..384)
                .map(|d| ((i * 31 + d) % 97) as f32 / 97.0)
                .collect();
            memory(&format!("big{i:05}"), "conversation").with_vector("embedding", vector)
        })
        .collect();
    let expected = rows[1234].clone();
    put(store, Table::Memories, rows).await?;
    let count = store.count(Table::Memories).await.map_err(text)?;
    ensure(count == 3000, || format!("count {count}"))?;
    let back = get_one(store, Table::Memories, "big01234").await?;
    ensure(back.as_ref() == Some(&expected), || {
        "row 1234 differs".into()
    })
}

async fn empty_batch(store: &dyn Store) -> Result<(), String> {
    store.write(Vec::new()).await.map_err(text)?;
    let count = store.count(Table::Memories).await.map_err(text)?;
    ensure(count == 0, || format!("count {count}"))
}

async fn unindexed_scan(store: &dyn Store) -> Result<(), String> {
    let result = store
        .scan(Table::Memories, Scan::first(1).where_eq("text", "x"))
        .await;
    ensure(result.is_err(), || "a scan on `text` was accepted".into())
}

async fn projection(store: &dyn Store) -> Result<(), String> {
    let row = memory("p1", "fact")
        .with("createdAt", 5)
        .with("meta", json!({"big": "x".repeat(100)}))
        .with_vector("embedding", vec![0.5, -0.25])
        .with_vector("other", vec![1.0])
        .with_bytes("codes", vec![7, 200])
        .with_bytes("skipped", vec![1]);
    put(store, Table::Memories, vec![row.clone()]).await?;
    let rows = store
        .scan(
            Table::Memories,
            Scan::first(10).only(&["kind", "createdAt", "embedding", "codes", "absent"]),
        )
        .await
        .map_err(text)?;
    let expected = row.project(&["kind", "createdAt", "embedding", "codes"]);
    ensure(rows == [expected.clone()], || {
        format!("{rows:?} != [{expected:?}]")
    })?;
    ensure(
        expected.fields.len() == 2 && expected.vectors.len() == 1 && expected.bytes.len() == 1,
        || "project kept the wrong fields".into(),
    )
}

async fn patch(store: &dyn Store) -> Result<(), String> {
    let row = memory("q1", "fact")
        .with("lastAccessed", 1)
        .with_vector("embedding", vec![0.25, 0.5]);
    put(store, Table::Memories, vec![row.clone()]).await?;
    let fields = |value: u64| {
        let mut map = serde_json::Map::new();
        map.insert("lastAccessed".into(), json!(value));
        map.insert("extra".into(), json!("new"));
        map
    };
    store
        .patch(
            Table::Memories,
            vec![("q1".into(), fields(9)), ("gone".into(), fields(9))],
        )
        .await
        .map_err(text)?;
    let back = get_one(store, Table::Memories, "q1")
        .await?
        .ok_or("the row is gone")?;
    let expected = row.with("lastAccessed", 9).with("extra", "new");
    ensure(back == expected, || format!("{back:?} != {expected:?}"))?;
    let gone = get_one(store, Table::Memories, "gone").await?;
    ensure(gone.is_none(), || "a patch created a row".into())?;
    store.patch(Table::Jobs, Vec::new()).await.map_err(text)
}

async fn guarded(store: &dyn Store) -> Result<(), String> {
    let job = |id: &str, state: &str| {
        Row::new(id)
            .with("state", state)
            .with("seq", 1)
            .with("data", json!({"n": 1}))
    };
    put(
        store,
        Table::Jobs,
        vec![
            job("a", "waiting"),
            job("b", "waiting"),
            job("c", "active"),
            job("d", "waiting"),
            job("e", "completed"),
        ],
    )
    .await?;
    let expect: Fields = vec![
        ("state".into(), json!("waiting")),
        ("seq".into(), json!(1)),
        ("runId".into(), json!(null)),
    ];
    let start = |id: &str, read_back: bool| Guarded {
        id: id.into(),
        expect: expect.clone(),
        // A name the caller built (an existing field) beside constant ones.
        merge: Some(vec![
            (String::from("state").into(), json!("active")),
            ("runId".into(), json!("r1")),
        ]),
        read_back,
    };
    let changes = vec![
        start("a", true),
        start("c", true),
        start("gone", true),
        Guarded {
            id: "d".into(),
            expect: expect.clone(),
            merge: None,
            read_back: true,
        },
    ];
    let then = vec![WriteOp::Delete(Table::Jobs, "e".into())];
    let outcomes = store
        .write_guarded(Table::Jobs, changes, then)
        .await
        .map_err(text)?;
    let started = job("a", "active").with("runId", "r1");
    let expected = vec![
        Guard::Applied(Some(started.clone())),
        Guard::Refused(job("c", "active")),
        Guard::Missing,
        Guard::Applied(None),
    ];
    ensure(outcomes == expected, || {
        format!("{outcomes:?} != {expected:?}")
    })?;
    let rows = store
        .get(
            Table::Jobs,
            ["a", "b", "c", "d", "e", "gone"].map(String::from).to_vec(),
        )
        .await
        .map_err(text)?;
    let expected = vec![
        Some(started),
        Some(job("b", "waiting")),
        Some(job("c", "active")),
        None,
        None,
        None,
    ];
    ensure(rows == expected, || format!("{rows:?} != {expected:?}"))?;
    // Without `read_back`, nothing is read back; no change at all is fine.
    let outcomes = store
        .write_guarded(Table::Jobs, vec![start("b", false)], Vec::new())
        .await
        .map_err(text)?;
    ensure(outcomes == vec![Guard::Applied(None)], || {
        format!("{outcomes:?}")
    })?;
    let none = store
        .write_guarded(Table::Jobs, Vec::new(), Vec::new())
        .await
        .map_err(text)?;
    ensure(none.is_empty(), || format!("{none:?}"))
}
