//! `benchTaskDispatch`: the job queue's own dispatch speed in the browser, for `cargo xtask bench
//! tasks` (`tests/bench/tasks.mjs` calls it in a dedicated worker of its own).
//!
//! It measures the Rust engine, not the page ↔ worker protocol: a [`JobQueue`] on a [`MemStore`]
//! or on IndexedDB ([`orion_store::IdbStore`], a fresh database), one queue whose handler is a
//! Rust no-op, `jobs` jobs enqueued with [`JobQueue::enqueue_bulk`] in batches (or one by one
//! with [`JobQueue::enqueue`]), then driven to the end as the worker's task loop drives them
//! (`orion_core::tasks::Tasks::drive`): tick, spawn the started runs on the browser's microtask
//! executor, tick again once runs have ended (many endings make one tick). Times are
//! `performance.now()`. The store is wrapped to count its calls (transactions, in IndexedDB), so
//! the result also says where the time goes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::StreamExt;
use orion_core::embedding::LocalBoxFuture;
use orion_core::jobs::{JobOptions, JobQueue, JobRecord, JobState, QueueConfig};
use orion_core::store::{Guard, Guarded, Row, Scan, Snapshot, Store, Table, WriteOp};
use orion_core::{MemStore, StoreOpener};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wasm_bindgen::prelude::*;

use crate::clock::WebClock;
use crate::memory_sync::{random_seed, IdbOpener};

/// The queue the benchmark's jobs go to.
const QUEUE: &str = "bench.noop";

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`: ms, sub-millisecond, in a window or a worker.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// What `benchTaskDispatch` takes: `{jobs, store, database?, batch?, concurrency?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DispatchOptions {
    /// How many jobs.
    jobs: u32,
    /// `memory` (a [`MemStore`]) or `indexeddb` (the database `database`, which should be new).
    store: String,
    #[serde(default)]
    database: Option<String>,
    /// Jobs per `enqueue_bulk` call; 1 enqueues them one by one with `enqueue`. Default 1000.
    #[serde(default)]
    batch: Option<u32>,
    /// The queue's concurrency (1 to 1000). Default 1000.
    #[serde(default)]
    concurrency: Option<u32>,
}

/// The store's calls during a phase.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreCalls {
    /// `get` calls (one read transaction each) and the rows they asked for.
    gets: u32,
    get_rows: u32,
    /// `write` calls (one read-write transaction each) and their operations.
    writes: u32,
    write_ops: u32,
    /// Every other call (scans, counts, patches, snapshots).
    other: u32,
}

/// What `benchTaskDispatch` answers (ms unless named otherwise).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DispatchResult {
    store: String,
    jobs: u32,
    batch: u32,
    concurrency: u32,
    /// Opening the store and the queue (not counted in the throughput).
    open_ms: f64,
    /// Enqueueing every job (each call awaited before the next).
    enqueue_ms: f64,
    /// From the first tick to the last job completed.
    drain_ms: f64,
    /// Time spent awaiting `tick()`, within `drain_ms`.
    tick_ms: f64,
    ticks: u32,
    completed: u32,
    /// The most runs in flight at once.
    max_in_flight: u32,
    enqueue_calls: StoreCalls,
    drain_calls: StoreCalls,
    /// The first job as stored (the row's fields and its id), for peers to write the same shape.
    sample_record: Value,
}

/// A [`Store`] that counts the calls it forwards.
struct Counted {
    inner: Rc<dyn Store>,
    calls: Rc<RefCell<StoreCalls>>,
}

impl Counted {
    fn counted<'a, T: 'a>(
        &'a self,
        future: LocalBoxFuture<'a, T>,
        count: impl FnOnce(&mut StoreCalls),
    ) -> LocalBoxFuture<'a, T> {
        count(&mut self.calls.borrow_mut());
        future
    }
}

impl Store for Counted {
    fn get(
        &self,
        table: Table,
        ids: Vec<String>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Option<Row>>>> {
        let rows = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        self.counted(self.inner.get(table, ids), |c| {
            c.gets += 1;
            c.get_rows += rows;
        })
    }

    fn scan(
        &self,
        table: Table,
        scan: Scan,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Row>>> {
        self.counted(self.inner.scan(table, scan), |c| c.other += 1)
    }

    fn count(&self, table: Table) -> LocalBoxFuture<'_, orion_core::error::Result<u64>> {
        self.counted(self.inner.count(table), |c| c.other += 1)
    }

    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, orion_core::error::Result<()>> {
        let n = u32::try_from(ops.len()).unwrap_or(u32::MAX);
        self.counted(self.inner.write(ops), |c| {
            c.writes += 1;
            c.write_ops += n;
        })
    }

    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<()>> {
        self.counted(self.inner.patch(table, patches), |c| c.other += 1)
    }

    fn snapshot(
        &self,
        tables: Vec<Table>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Snapshot>> {
        self.counted(self.inner.snapshot(tables), |c| c.other += 1)
    }

    /// Counted as a write (one read-write transaction), its rows as both read and written.
    fn write_guarded(
        &self,
        table: Table,
        changes: Vec<Guarded>,
        then: Vec<WriteOp>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Guard>>> {
        let rows = u32::try_from(changes.len()).unwrap_or(u32::MAX);
        let ops = u32::try_from(changes.len() + then.len()).unwrap_or(u32::MAX);
        self.counted(self.inner.write_guarded(table, changes, then), |c| {
            c.writes += 1;
            c.write_ops += ops;
            c.get_rows += rows;
        })
    }
}

fn js_error(error: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&error.to_string()).into()
}

/// Runs the benchmark `options` describes (see the module docs) and answers its timings:
/// `{store, jobs, batch, concurrency, openMs, enqueueMs, drainMs, tickMs, ticks, completed,
/// maxInFlight, enqueueCalls, drainCalls, sampleRecord}`. Rejects if a job does not complete.
#[wasm_bindgen(js_name = benchTaskDispatch)]
pub async fn bench_task_dispatch(options: JsValue) -> Result<JsValue, JsValue> {
    let options: DispatchOptions = serde_wasm_bindgen::from_value(options).map_err(js_error)?;
    let result = dispatch(options).await?;
    result
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

async fn dispatch(options: DispatchOptions) -> Result<DispatchResult, JsValue> {
    let batch = options.batch.unwrap_or(1000).max(1);
    let concurrency = options.concurrency.unwrap_or(1000);
    let opened = performance_now();
    let inner: Rc<dyn Store> = match options.store.as_str() {
        "memory" => Rc::new(MemStore::new()),
        "indexeddb" => {
            let name = options
                .database
                .as_deref()
                .ok_or_else(|| js_error("`database` is required with `indexeddb`"))?;
            IdbOpener.open(name).await.map_err(js_error)?
        }
        other => return Err(js_error(format!("unknown store `{other}`"))),
    };
    let calls = Rc::new(RefCell::new(StoreCalls::default()));
    let store = Rc::new(Counted {
        inner,
        calls: Rc::clone(&calls),
    });
    let config = QueueConfig {
        seed: random_seed(),
        ..QueueConfig::default()
    };
    let queue = JobQueue::open(store, WebClock::shared(), config)
        .await
        .map_err(js_error)?;
    queue
        .register(QUEUE, concurrency as usize, |_context| {
            Box::pin(async { Ok(Value::Null) })
        })
        .map_err(js_error)?;
    let open_ms = performance_now() - opened;
    *calls.borrow_mut() = StoreCalls::default();

    // Enqueue.
    let started = performance_now();
    let mut first: Option<JobRecord> = None;
    let mut i = 0;
    while i < options.jobs {
        let n = batch.min(options.jobs - i);
        let records = if n == 1 && batch == 1 {
            vec![queue
                .enqueue(QUEUE, json!({ "i": i }), JobOptions::default())
                .await
                .map_err(js_error)?]
        } else {
            let jobs = (i..i + n)
                .map(|k| (QUEUE.to_owned(), json!({ "i": k }), JobOptions::default()))
                .collect();
            queue.enqueue_bulk(jobs).await.map_err(js_error)?
        };
        if first.is_none() {
            first = records.into_iter().next();
        }
        i += n;
    }
    let enqueue_ms = performance_now() - started;
    let enqueue_calls = std::mem::take(&mut *calls.borrow_mut());

    // Drain, as the task loop does.
    let (ended, mut endings) = mpsc::unbounded::<orion_core::error::Result<Option<JobState>>>();
    let in_flight = Rc::new(Cell::new(0u32));
    let mut completed = 0u32;
    let mut max_in_flight = 0u32;
    let mut ticks = 0u32;
    let mut tick_ms = 0.0;
    let started = performance_now();
    loop {
        let tick_start = performance_now();
        let runs = queue.tick().await.map_err(js_error)?;
        tick_ms += performance_now() - tick_start;
        ticks += 1;
        for run in runs {
            in_flight.set(in_flight.get() + 1);
            let ended = ended.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let _ = ended.unbounded_send(run.await);
            });
        }
        max_in_flight = max_in_flight.max(in_flight.get());
        if in_flight.get() == 0 {
            break;
        }
        let mut take = |outcome: Option<orion_core::error::Result<Option<JobState>>>| {
            in_flight.set(in_flight.get().saturating_sub(1));
            match outcome {
                Some(Ok(Some(JobState::Completed))) => {
                    completed += 1;
                    Ok(())
                }
                other => Err(js_error(format!("a run ended with {other:?}"))),
            }
        };
        take(endings.next().await)?;
        while let Ok(outcome) = endings.try_recv() {
            take(Some(outcome))?;
        }
    }
    let drain_ms = performance_now() - started;
    let drain_calls = *calls.borrow();
    if completed != options.jobs {
        return Err(js_error(format!(
            "{completed} of {} jobs completed",
            options.jobs
        )));
    }
    let sample_record = match first {
        Some(record) => serde_json::to_value(&record).map_err(js_error)?,
        None => Value::Null,
    };
    Ok(DispatchResult {
        store: options.store,
        jobs: options.jobs,
        batch,
        concurrency,
        open_ms,
        enqueue_ms,
        drain_ms,
        tick_ms,
        ticks,
        completed,
        max_in_flight,
        enqueue_calls,
        drain_calls,
        sample_record,
    })
}
