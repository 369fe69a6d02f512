// `cargo xtask bench tasks`: ORION's background tasks (the job queue and its schedules) in one
// headless Chromium run. Prints one JSON object with the figures as its last line (xtask writes
// docs/BENCHMARKS.md); progress goes to stderr.
//
// In a dedicated worker of the benchmark's own (tasks-worker.mjs, which loads pkg/wasm as ORION's
// worker does), each figure the median of RUNS runs after a warm-up run: of the same size in memory
// (V8 compiles wasm with its baseline compiler first and optimises hot functions in the background:
// a small warm-up left the first measured runs partly unoptimised, and their figures 30-50 % low),
// smaller for IndexedDB:
// 1. In-memory dispatch: ORION's JobQueue on a MemStore, a Rust no-op handler, N jobs through
//    enqueue_bulk → tick → run → complete; the same with enqueue one by one, and at concurrency 1.
//    p-queue with the same number of no-op tasks at the same concurrencies, in the same worker.
// 2. Persisted: the same on IndexedDB (a fresh database per run): enqueue_bulk alone (the write
//    path) and enqueue → complete end to end; Dexie `bulkPut` of the same job rows, same batches;
//    raw IndexedDB writing those jobs' outcomes as ORION does (a read and a write transaction per
//    job), and per group of 100, for the floor under the end-to-end figure.
// Then in the page, through the npm API (the leader tab):
// 3. End to end: `orion.tasks.simple.define` with a no-op page handler, N `schedule` calls, until
//    `tasks.counts()` says every job completed.
// 4. Schedule firing latency: `orion.tasks.schedules.upsert('lat', { every: 200 }, ...)`; the page
//    handler records `Date.now() - dueMs` (the job id is `lat:<dueMs>`) for FIRES fires.
// Every request must go to our server: anything else fails the run.
import { readFileSync } from 'node:fs';
import { launchGuarded } from './harness.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node tasks.mjs <base url>');
  process.exit(2);
}

const PAGE = '/fixture/blank.html';
const RUNS = 5;
const MEMORY_JOBS = 20_000;
const MEMORY_SERIAL_JOBS = 5_000; // at concurrency 1
const IDB_JOBS = 10_000;
const IDB_SINGLE_JOBS = 1_000; // enqueued one by one
const IDB_FLOOR_JOBS = 5_000; // raw IndexedDB, two transactions per job
const BATCH = 1000; // jobs per enqueue_bulk / bulkPut call
const CONCURRENCY = 1000; // the queue's (ORION's most), and p-queue's
const CLIENT_JOBS = 2_000;
const CLIENT_CONCURRENCY = 100;
const EVERY_MS = 200;
const FIRES = 100;
const run = `${Date.now().toString(36)}-${process.pid}`;
const databases = [];
const database = (what) => {
  const name = `orion-bench-tasks-${what}-${run}-${databases.length}`;
  databases.push(name);
  return name;
};
const log = (...args) => console.error('[bench tasks]', ...args);

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
};

const { browser, openPage, closePage, finish } = await launchGuarded(base);
try {
  const out = {
    runs: RUNS,
    batch: BATCH,
    concurrency: CONCURRENCY,
    memory: {},
    indexeddb: {},
    peers: {},
    client: null,
    latency: null,
    versions: Object.fromEntries(
      [['pQueue', 'p-queue'], ['dexie', 'dexie']].map(([key, name]) => [
        key,
        JSON.parse(readFileSync(`node_modules/${name}/package.json`, 'utf8')).version,
      ]),
    ),
  };

  const page = await openPage(PAGE);
  out.browser = await page.evaluate(() => navigator.userAgent);
  await page.evaluate(() => {
    const worker = new Worker('/bench-harness/tasks-worker.mjs', { type: 'module' });
    const pending = new Map();
    let next = 0;
    worker.onmessage = ({ data }) => {
      const call = pending.get(data.id);
      pending.delete(data.id);
      if (data.ok) call.resolve(data.result);
      else call.reject(new Error(data.error));
    };
    worker.onerror = (event) => {
      for (const call of pending.values()) call.reject(new Error(`worker error: ${event.message}`));
      pending.clear();
    };
    window.benchWorker = (op, args) =>
      new Promise((resolve, reject) => {
        const id = ++next;
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, op, args });
      });
  });
  const call = (op, args) => page.evaluate(({ op, args }) => window.benchWorker(op, args), { op, args });

  // `RUNS` runs of `op` after one smaller warm-up run; each run's result and the median of `key`.
  const repeat = async (label, op, args, warmArgs, keys) => {
    log(label, 'warm-up');
    await call(op, typeof warmArgs === 'function' ? warmArgs() : warmArgs);
    const runs = [];
    for (let i = 0; i < RUNS; i++) {
      const result = await call(op, typeof args === 'function' ? args() : args);
      delete result.sampleRecord;
      runs.push(result);
      log(label, JSON.stringify(result));
    }
    const medians = {};
    for (const key of keys) medians[key] = median(runs.map((r) => key.split('.').reduce((v, k) => v[k], r)));
    return { ...medians, runs };
  };
  // ORION's queue: like `repeat`, with `totalMs` = enqueue + drain, and the warm-up's first job
  // record (`sampleRecord`: the row shape the peers write).
  const orionRepeat = async (label, args, warmArgs) => {
    const once = async (a) => {
      const result = await call('orion', typeof a === 'function' ? a() : a);
      result.totalMs = result.enqueueMs + result.drainMs;
      return result;
    };
    log(label, 'warm-up');
    const { sampleRecord } = await once(warmArgs);
    const runs = [];
    for (let i = 0; i < RUNS; i++) {
      const result = await once(args);
      delete result.sampleRecord;
      runs.push(result);
      log(label, JSON.stringify(result));
    }
    const medians = {};
    for (const key of ['enqueueMs', 'drainMs', 'tickMs', 'totalMs']) medians[key] = median(runs.map((r) => r[key]));
    const { jobs, batch, concurrency } = runs[0];
    return { ...medians, jobs, batch, concurrency, runs, sampleRecord };
  };

  // 1. In memory.
  out.memory.bulk = await orionRepeat(
    'memory bulk',
    { jobs: MEMORY_JOBS, store: 'memory', batch: BATCH, concurrency: CONCURRENCY },
    { jobs: MEMORY_JOBS, store: 'memory', batch: BATCH, concurrency: CONCURRENCY },
  );
  const template = out.memory.bulk.sampleRecord;
  delete out.memory.bulk.sampleRecord;
  out.jobRecord = template;
  out.memory.single = await orionRepeat(
    'memory one by one',
    { jobs: MEMORY_JOBS, store: 'memory', batch: 1, concurrency: CONCURRENCY },
    { jobs: MEMORY_JOBS, store: 'memory', batch: 1, concurrency: CONCURRENCY },
  );
  delete out.memory.single.sampleRecord;
  out.memory.serial = await orionRepeat(
    'memory concurrency 1',
    { jobs: MEMORY_SERIAL_JOBS, store: 'memory', batch: BATCH, concurrency: 1 },
    { jobs: MEMORY_SERIAL_JOBS, store: 'memory', batch: BATCH, concurrency: 1 },
  );
  delete out.memory.serial.sampleRecord;
  out.peers.pqueue = await repeat(
    'p-queue',
    'pqueue',
    { jobs: MEMORY_JOBS, concurrency: CONCURRENCY },
    { jobs: MEMORY_JOBS, concurrency: CONCURRENCY },
    ['addMs', 'totalMs'],
  );
  out.peers.pqueueSerial = await repeat(
    'p-queue concurrency 1',
    'pqueue',
    { jobs: MEMORY_SERIAL_JOBS, concurrency: 1 },
    { jobs: MEMORY_SERIAL_JOBS, concurrency: 1 },
    ['addMs', 'totalMs'],
  );

  // 2. IndexedDB.
  out.indexeddb.bulk = await orionRepeat(
    'indexeddb bulk',
    () => ({ jobs: IDB_JOBS, store: 'indexeddb', database: database('orion'), batch: BATCH, concurrency: CONCURRENCY }),
    () => ({ jobs: 2000, store: 'indexeddb', database: database('warm'), batch: BATCH, concurrency: CONCURRENCY }),
  );
  delete out.indexeddb.bulk.sampleRecord;
  out.indexeddb.single = await orionRepeat(
    'indexeddb one by one',
    () => ({ jobs: IDB_SINGLE_JOBS, store: 'indexeddb', database: database('orion-single'), batch: 1, concurrency: CONCURRENCY }),
    () => ({ jobs: 200, store: 'indexeddb', database: database('warm'), batch: 1, concurrency: CONCURRENCY }),
  );
  delete out.indexeddb.single.sampleRecord;
  out.peers.dexie = await repeat(
    'dexie bulkPut',
    'dexie',
    () => ({ jobs: IDB_JOBS, batch: BATCH, database: database('dexie'), template }),
    () => ({ jobs: 2000, batch: BATCH, database: database('warm'), template }),
    ['writeMs'],
  );

  // The floor under the end-to-end figure: raw IndexedDB finishing jobs one transaction pair per
  // job (as ORION does), and per group of 100.
  out.peers.idbPerJob = await repeat(
    'raw IndexedDB, a read and a write transaction per job',
    'idbFloor',
    () => ({ jobs: IDB_FLOOR_JOBS, concurrency: CONCURRENCY, database: database('floor'), template }),
    () => ({ jobs: 500, concurrency: CONCURRENCY, database: database('warm'), template }),
    ['ms'],
  );
  out.peers.idbGrouped = await repeat(
    'raw IndexedDB, a read and a write transaction per 100 jobs',
    'idbFloor',
    () => ({ jobs: IDB_JOBS, concurrency: 10, group: 100, database: database('floor'), template }),
    () => ({ jobs: 500, concurrency: 10, group: 100, database: database('warm'), template }),
    ['ms'],
  );

  // 3 and 4: the npm API in the page (the leader tab).
  log('client: end to end');
  out.client = await page.evaluate(async ({ database, jobs, concurrency }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ profile: 'micro', database });
    window.orion = orion;
    // Only the leader runs tasks: wait until this tab's worker holds the lock.
    for (let i = 0; !(await orion.tasks.counts()).leader; i++) {
      if (i > 500) throw new Error('this tab never became the leader');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    let handled = 0;
    await orion.tasks.simple.define('bench.noop', () => {
      handled += 1;
      return null;
    }, { concurrency });
    const completed = async (n) => {
      for (;;) {
        const counts = await orion.tasks.counts();
        if ((counts.jobs.all.completed ?? 0) >= n) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    // Warm-up: 100 jobs.
    await Promise.all(Array.from({ length: 100 }, (_, i) => orion.tasks.simple.schedule('bench.noop', { i })));
    await completed(100);
    handled = 0;
    const t0 = performance.now();
    const scheduled = [];
    for (let i = 0; i < jobs; i++) scheduled.push(orion.tasks.simple.schedule('bench.noop', { i }));
    await Promise.all(scheduled);
    const scheduleMs = performance.now() - t0;
    await completed(100 + jobs);
    const totalMs = performance.now() - t0;
    if (handled !== jobs) throw new Error(`the page handled ${handled} of ${jobs} jobs`);
    return { jobs, concurrency, scheduleMs, totalMs };
  }, { database: database('client'), jobs: CLIENT_JOBS, concurrency: CLIENT_CONCURRENCY });
  log('client', JSON.stringify(out.client));

  log(`schedule latency: ${FIRES} fires every ${EVERY_MS} ms`);
  out.latency = await page.evaluate(async ({ every, fires }) => {
    const { orion } = window;
    const seen = [];
    let enough;
    const done = new Promise((resolve) => {
      enough = resolve;
    });
    await orion.tasks.simple.define('bench.tick', (payload, context) => {
      const at = Date.now();
      const due = Number(context.taskId.slice(context.taskId.lastIndexOf(':') + 1));
      seen.push({ id: context.taskId, due, at });
      if (seen.length === fires) enough();
      return null;
    });
    await orion.tasks.schedules.upsert('lat', { every }, { name: 'bench.tick' });
    await done;
    await orion.tasks.schedules.remove('lat');
    const fired = seen.slice(0, fires);
    // Where the lateness arose: the job's `createdAt` is when the scheduler enqueued it.
    for (const fire of fired) fire.created = (await orion.tasks.status(fire.id)).createdAt;
    const stats = (values) => {
      const sorted = [...values].sort((a, b) => a - b);
      const at = (p) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
      return {
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        max: sorted[sorted.length - 1],
        min: sorted[0],
        mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
      };
    };
    const result = {
      every,
      fires: fired.length,
      ...stats(fired.map((f) => f.at - f.due)),
      // Due → enqueued by the scheduler (timer wake-up, tick, the enqueue's transaction).
      enqueued: stats(fired.map((f) => f.created - f.due)),
      // Enqueued → the page's handler called (queue tick, start transaction, task_run event).
      started: stats(fired.map((f) => f.at - f.created)),
      lateness: fired.map((f) => f.at - f.due),
    };
    await orion.close();
    return result;
  }, { every: EVERY_MS, fires: FIRES });
  log('latency', JSON.stringify(out.latency));
  await closePage(page);

  // Leave no benchmark databases behind in the (throw-away) profile anyway.
  const cleanup = await openPage(PAGE);
  await cleanup.evaluate(async (names) => {
    for (const name of names) {
      await new Promise((resolve) => {
        const request = indexedDB.deleteDatabase(name);
        request.onsuccess = request.onerror = request.onblocked = resolve;
      });
    }
  }, databases);
  await closePage(cleanup);

  finish(out);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
