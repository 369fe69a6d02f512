// The dedicated worker of `cargo xtask bench tasks` (served at /bench-harness/ by the bench
// server). It loads ORION's wasm as pkg/worker.js does and runs, on request from the page, one
// measurement at a time, all in this one worker so that ORION and its peers share a thread:
//
// - `orion`: ORION's job queue itself (`benchTaskDispatch` in crates/orion-web/src/bench_tasks.rs:
//   a JobQueue on a MemStore or on IndexedDB, a Rust no-op handler; no postMessage protocol);
// - `pqueue`: p-queue, `jobs` no-op tasks added at `concurrency`, then `onIdle()`;
// - `dexie`: Dexie `bulkPut` of `jobs` records of ORION's job row shape, `batch` per call, into a
//   fresh database with the indexes of ORION's `jobs` store;
// - `idbFloor`: raw IndexedDB writing those rows' outcomes the way ORION's queue does (below).
//
// Request `{id, op, args}`; answer `{id, ok: true, result}` or `{id, ok: false, error}`.
import init, { benchTaskDispatch } from '/pkg/wasm/orion_web.js';
import PQueue from '/node_modules/p-queue/dist/index.js';
import { Dexie } from '/node_modules/dexie/dist/dexie.mjs';

const ready = init();

async function pqueue({ jobs, concurrency }) {
  const queue = new PQueue({ concurrency });
  let ran = 0;
  const task = () => {
    ran += 1;
    return null;
  };
  const t0 = performance.now();
  for (let i = 0; i < jobs; i++) queue.add(task);
  const added = performance.now();
  await queue.onIdle();
  const t1 = performance.now();
  if (ran !== jobs) throw new Error(`p-queue ran ${ran} of ${jobs} tasks`);
  return { jobs, concurrency, addMs: added - t0, totalMs: t1 - t0 };
}

// The rows ORION would store for jobs 0..jobs-1 of `template` (a job record as ORION stored it:
// `sampleRecord` of an `orion` run), each with its own id, data and seq.
function jobRows(template, jobs) {
  const now = Date.now();
  const rows = new Array(jobs);
  for (let i = 0; i < jobs; i++) {
    rows[i] = {
      ...template,
      id: `j${now.toString(16).padStart(13, '0')}${i.toString(16).padStart(4, '0')}${(i * 2654435761 % 2 ** 32).toString(16).padStart(12, '0')}`,
      data: { i },
      options: { ...template.options },
      seq: i + 1,
      createdAt: now,
      readyAt: now,
    };
  }
  return rows;
}

async function dexie({ jobs, batch, database, template }) {
  const rows = jobRows(template, jobs);
  const t0 = performance.now();
  const db = new Dexie(database);
  // ORION's `jobs` store: key path `id`, indexes on [state, id] and [name, id] (orion-store's
  // schema version 2).
  db.version(1).stores({ jobs: 'id, [state+id], [name+id]' });
  await db.open();
  const openMs = performance.now() - t0;
  const table = db.table('jobs');
  let writeMs = 0;
  for (let i = 0; i < jobs; i += batch) {
    const chunk = rows.slice(i, i + batch);
    const t = performance.now();
    await table.bulkPut(chunk);
    writeMs += performance.now() - t;
  }
  const count = await table.count();
  db.close();
  if (count !== jobs) throw new Error(`Dexie holds ${count} of ${jobs} rows`);
  return { jobs, batch, openMs, writeMs, rowBytes: JSON.stringify(rows[0]).length };
}

// The IndexedDB floor under ORION's way of finishing jobs, with raw IndexedDB (no library): the
// rows of `jobs` jobs are stored first (not timed); then each job's outcome is written as ORION's
// queue writes it, a read transaction of its row then a read-write transaction putting it back
// completed, `concurrency` jobs at a time (`perJob`); or `group` jobs per pair of transactions
// (`grouped`: one read of all their rows, one write of all of them).
const request = (r) =>
  new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
const committed = (tx) =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error);
  });

async function idbFloor({ jobs, concurrency, group, database, template }) {
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open(database, 1);
    open.onupgradeneeded = () => {
      const store = open.result.createObjectStore('jobs', { keyPath: 'id' });
      store.createIndex('by_state', ['state', 'id']);
      store.createIndex('by_name', ['name', 'id']);
    };
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  const rows = jobRows(template, jobs);
  const fill = db.transaction('jobs', 'readwrite');
  for (const row of rows) fill.objectStore('jobs').put(row);
  await committed(fill);
  const finish = async (ids) => {
    const read = db.transaction('jobs', 'readonly');
    const found = await Promise.all(ids.map((id) => request(read.objectStore('jobs').get(id))));
    const write = db.transaction('jobs', 'readwrite');
    for (const row of found) write.objectStore('jobs').put({ ...row, state: 'completed', attemptsMade: 1, finishedAt: Date.now() });
    await committed(write);
  };
  const ids = rows.map((r) => r.id);
  const size = group ?? 1;
  const groups = [];
  for (let i = 0; i < ids.length; i += size) groups.push(ids.slice(i, i + size));
  const t0 = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < groups.length) await finish(groups[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, groups.length) }, lane));
  const ms = performance.now() - t0;
  db.close();
  return { jobs, concurrency, group: size, ms };
}

const ops = {
  idbFloor,
  orion: (args) => benchTaskDispatch(args),
  pqueue,
  dexie,
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    await ready;
    const result = await ops[op](args);
    self.postMessage({ id, ok: true, result });
  } catch (error) {
    self.postMessage({ id, ok: false, error: String(error?.stack ?? error?.message ?? error) });
  }
};
