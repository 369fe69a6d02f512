//! The job queue's dispatch speed natively, on a [`MemStore`]: jobs enqueued with
//! `enqueue_bulk` (1000 per call), then driven to the end with a no-op handler as the worker's
//! task loop drives them (tick, spawn the started runs, tick again once runs have ended).
//! `cargo bench -p orion-core --bench dispatch [-- JOBS CONCURRENCY]`.
//!
//! A plain `harness = false` bench (median of a few rounds after a warm-up), like
//! `orion-embed`'s: it gives jobs/s before and after a change and a stable binary for `perf`.
//! The browser figures (`cargo xtask bench tasks`) are the ones reported.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_executor::LocalPool;
use futures_util::task::LocalSpawnExt;
use futures_util::StreamExt;
use orion_core::jobs::{JobOptions, JobQueue, JobState, QueueConfig};
use orion_core::{ManualClock, MemStore, Store};
use serde_json::{json, Value};

const QUEUE: &str = "bench.noop";

/// Enqueue time and drain time of one round.
async fn round(
    spawner: futures_executor::LocalSpawner,
    jobs: u32,
    concurrency: usize,
) -> (Duration, Duration) {
    let clock = ManualClock::new(1_000_000);
    let store: Rc<dyn Store> = Rc::new(MemStore::new());
    let queue = JobQueue::open(store, clock.shared(), QueueConfig::default())
        .await
        .unwrap();
    queue
        .register(QUEUE, concurrency, |_| Box::pin(async { Ok(Value::Null) }))
        .unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < jobs {
        let n = 1000.min(jobs - i);
        let batch = (i..i + n)
            .map(|k| (QUEUE.to_owned(), json!({ "i": k }), JobOptions::default()))
            .collect();
        queue.enqueue_bulk(batch).await.unwrap();
        i += n;
    }
    let enqueued = started.elapsed();
    let (ended, mut endings) = futures_channel::mpsc::unbounded();
    let in_flight = Rc::new(Cell::new(0u32));
    let mut completed = 0;
    let started = Instant::now();
    loop {
        for run in queue.tick().await.unwrap() {
            in_flight.set(in_flight.get() + 1);
            let ended = ended.clone();
            spawner
                .spawn_local(async move {
                    let _ = ended.unbounded_send(run.await);
                })
                .unwrap();
        }
        if in_flight.get() == 0 {
            break;
        }
        let mut take = |outcome: Option<orion_core::error::Result<Option<JobState>>>| {
            in_flight.set(in_flight.get() - 1);
            assert_eq!(outcome.unwrap().unwrap(), Some(JobState::Completed));
            completed += 1;
        };
        take(endings.next().await);
        while let Ok(outcome) = endings.try_recv() {
            take(Some(outcome));
        }
    }
    assert_eq!(completed, jobs);
    (enqueued, started.elapsed())
}

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let jobs = args.first().copied().unwrap_or(20_000);
    let concurrency = args.get(1).copied().unwrap_or(1000) as usize;
    let rounds: usize = std::env::var("ORION_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    pool.run_until(round(spawner.clone(), jobs.min(2000), concurrency));
    let mut times: Vec<(Duration, Duration)> = (0..rounds)
        .map(|_| pool.run_until(round(spawner.clone(), jobs, concurrency)))
        .collect();
    times.sort_by_key(|(e, d)| *e + *d);
    let (enqueue, drain) = times[times.len() / 2];
    let per_s = |d: Duration| f64::from(jobs) / d.as_secs_f64();
    println!(
        "{jobs} jobs, concurrency {concurrency}, median of {rounds}: enqueue {:.0}/s, tick → complete {:.0}/s, enqueue → complete {:.0}/s ({:.1} µs per job)",
        per_s(enqueue),
        per_s(drain),
        per_s(enqueue + drain),
        (enqueue + drain).as_secs_f64() * 1e6 / f64::from(jobs)
    );
}
