// `cargo xtask bench memory`: ORION's memory store (issue 4 item 7) in one headless Chromium run,
// through the npm API with the micro profile (the hashing embedder: no model download). Prints one
// JSON object with the figures as its last line (xtask writes docs/BENCHMARKS.md); progress goes
// to stderr.
//
// 1. `orion.memory.addMany` in calls of 1000 texts into an empty database up to 10k, then on to
//    100k; the same texts are then embedded alone with `orion.embed` (same batches), so the share
//    of embedding in addMany is known.
// 2. `orion.memory.search(query, { k: 10 })` at 10k and at 100k memories: 50 queries after 5
//    unmeasured ones; `orion.embed([query])` and `orion.ping()` of the same page for comparison.
// 3. Cold start: a fresh page (new renderer) on the same database, from `Orion.create` to the
//    `memory_index` event with `done: true`, then the first search, 20 more back to back, and 20
//    more after 3 s; three times.
// 4. The same records (id, text, kind, createdAt, lastAccessed, embeddingVersion, meta, embedding
//    as a Float32Array(384)) written on the page's main thread with idb-keyval's `setMany` and
//    Dexie's `bulkPut`, 500 per call, into other databases; then Dexie's records read back in a
//    fresh page, 2000 per call, to compare with the cold start.
// Every request must go to our server: anything else fails the run.
import { createOrion, installBenchText, launchGuarded } from './harness.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node memory.mjs <base url>');
  process.exit(2);
}

const PAGE = '/fixture/blank.html';
const SIZES = [10_000, 100_000];
const BATCH = 1000; // texts per addMany / embed call
const CHUNK = 500; // records per idb-keyval / Dexie call (ORION's transaction size)
const QUERIES = 50;
const WARM_QUERIES = 5;
const COLD_STARTS = 3;
const SEARCHES_AFTER = 20; // searches after a cold start's first, back to back; again once settled
const SETTLE_MS = 3000;
const MODULES = {
  idbKeyval: '/node_modules/idb-keyval/dist/index.js',
  dexie: '/node_modules/dexie/dist/dexie.mjs',
};
const run = `${Date.now().toString(36)}-${process.pid}`;
const DATABASES = {
  orion: `orion-bench-memory-${run}`,
  idbKeyval: `bench-idb-keyval-${run}`,
  dexie: `bench-dexie-${run}`,
};
const log = (...args) => console.error('[bench memory]', ...args);

// A profile on disk, as users have (see harness.mjs for what an in-memory one changes).
const { browser, openPage: openGuarded, closePage, finish } = await launchGuarded(base, { persistent: true });
try {
  // A page with the deterministic texts and queries of `benchText` (harness.mjs).
  const openPage = async () => {
    const page = await openGuarded(PAGE);
    await installBenchText(page);
    return page;
  };

  const out = {
    browser: null,
    database: DATABASES.orion,
    batch: BATCH,
    chunk: CHUNK,
    orion: { add: [], search: [] },
    coldStart: [],
    idbKeyval: null,
    dexie: null,
  };

  // 1 and 2: ORION, one page, one worker.
  const page = await openPage();
  // Over micro's budget (5000 memories), past which the store would evict the least recently
  // used; `stats().maxMemories` says what applied.
  await createOrion(page, { database: DATABASES.orion, maxMemories: 200_000 });
  const created = await page.evaluate(async () => {
    const { orion } = window;
    const info = await orion.profile();
    const stats = await orion.memory.stats();
    const lengths = Array.from({ length: 1000 }, (_, n) => window.bench.text(n * 97).length);
    return {
      browser: navigator.userAgent,
      version: await orion.version(),
      active: info.active,
      embedding: info.embedding?.version ?? null,
      maxMemories: stats.maxMemories,
      textLength: { min: Math.min(...lengths), max: Math.max(...lengths), mean: lengths.reduce((a, b) => a + b, 0) / lengths.length },
    };
  });
  Object.assign(out, { browser: created.browser, orionVersion: created.version });
  Object.assign(out.orion, {
    active: created.active,
    embedding: created.embedding,
    maxMemories: created.maxMemories,
    textLength: created.textLength,
  });
  log('ORION', JSON.stringify(created));

  let stored = 0;
  for (const size of SIZES) {
    log(`addMany ${stored} → ${size}`);
    const add = await page.evaluate(async ({ from, to, batch }) => {
      const { orion, bench } = window;
      let addMs = 0;
      for (let n = from; n < to; n += batch) {
        const items = [];
        for (let i = n; i < Math.min(to, n + batch); i++) items.push({ text: bench.text(i), kind: 'fact' });
        const t = performance.now();
        const records = await orion.memory.addMany(items);
        addMs += performance.now() - t;
        if (records.length !== items.length) throw new Error(`addMany returned ${records.length} of ${items.length}`);
      }
      let embedMs = 0;
      for (let n = from; n < to; n += batch) {
        const texts = [];
        for (let i = n; i < Math.min(to, n + batch); i++) texts.push(bench.text(i));
        const t = performance.now();
        const vectors = await orion.embed(texts);
        embedMs += performance.now() - t;
        if (vectors.length !== texts.length) throw new Error('embed returned too few vectors');
      }
      const stats = await orion.memory.stats();
      return { from, to, added: to - from, addMs, embedMs, count: stats.count, searchable: stats.searchable };
    }, { from: stored, to: size, batch: BATCH });
    stored = size;
    out.orion.add.push(add);
    log(JSON.stringify(add));

    log(`search at ${size}`);
    const search = await page.evaluate(async ({ queries, warm }) => {
      const { orion, bench } = window;
      const searchMs = [];
      const embedMs = [];
      const pingMs = [];
      let hits = 0;
      for (let q = 0; q < warm + queries; q++) {
        const query = bench.query(q);
        let t = performance.now();
        const found = await orion.memory.search(query, { k: 10 });
        const ms = performance.now() - t;
        t = performance.now();
        await orion.embed([query]);
        const embed = performance.now() - t;
        t = performance.now();
        await orion.ping(null);
        const ping = performance.now() - t;
        if (q < warm) continue;
        searchMs.push(ms);
        embedMs.push(embed);
        pingMs.push(ping);
        hits += found.length;
      }
      const stats = await orion.memory.stats();
      return {
        memories: stats.count,
        search: bench.stats(searchMs),
        embedQuery: bench.stats(embedMs),
        ping: bench.stats(pingMs),
        meanHits: hits / queries,
      };
    }, { queries: QUERIES, warm: WARM_QUERIES });
    out.orion.search.push({ size, ...search });
    log(JSON.stringify(search));
  }
  // The index's snapshot is written in the background, yielding to requests; the cold starts
  // below are meant to load it, so wait until it is saved (`stats()` also prompts the save).
  out.snapshotSavedMs = await page.evaluate(async () => {
    const t = performance.now();
    while (!(await window.orion.memory.stats()).indexSaved) {
      if (performance.now() - t > 300_000) throw new Error('the index snapshot was not saved in 5 minutes');
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return performance.now() - t;
  });
  log(`snapshot saved ${out.snapshotSavedMs} ms after the last search`);
  await page.evaluate(async () => window.orion.close());
  await closePage(page);

  // 3. Cold start: a fresh page each time, the same database.
  for (let i = 0; i < COLD_STARTS; i++) {
    const cold = await openPage();
    const result = await cold.evaluate(async ({ database, maxMemories, SEARCHES_AFTER, SETTLE_MS }) => {
      const { Orion } = await import('/pkg/index.js');
      const events = [];
      let t0;
      let indexDone;
      const done = new Promise((resolve) => {
        indexDone = resolve;
      });
      t0 = performance.now();
      const orion = await Orion.create({
        profile: 'micro',
        database,
        memory: { maxMemories },
        onProgress: (e) => {
          if (e.kind !== 'memory_index') return;
          events.push(e.loaded);
          if (e.done) indexDone({ at: performance.now() - t0, loaded: e.loaded });
        },
      });
      const createdMs = performance.now() - t0;
      const index = await done;
      let t = performance.now();
      const hits = await orion.memory.search(window.bench.query(0), { k: 10 });
      const firstSearchMs = performance.now() - t;
      // The next searches, back to back (while the exact vectors load in the background), then
      // the same number once the start's background work is over.
      const timed = async (from) => {
        const ms = [];
        for (let q = from; q < from + SEARCHES_AFTER; q++) {
          const t = performance.now();
          await orion.memory.search(window.bench.query(q), { k: 10 });
          ms.push(performance.now() - t);
        }
        return window.bench.stats(ms);
      };
      const next = await timed(1);
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const settled = await timed(1 + SEARCHES_AFTER);
      const stats = await orion.memory.stats();
      await orion.close();
      return { createdMs, indexDoneMs: index.at, loaded: index.loaded, progressEvents: events.length, firstSearchMs, next, settled, hits: hits.length, count: stats.count };
    }, { database: DATABASES.orion, maxMemories: 200_000, SEARCHES_AFTER, SETTLE_MS });
    out.coldStart.push(result);
    log('cold start', JSON.stringify(result));
    await closePage(cold);
  }

  // 4. idb-keyval and Dexie on the page's main thread, records of ORION's shape.
  const baseline = async (library) => {
    log(library);
    const p = await openPage();
    const result = await p.evaluate(async ({ library, modules, database, sizes, chunk }) => {
      const { bench } = window;
      // Unit vectors from a small deterministic generator, made outside the timed part.
      let seed = 12345;
      const random = () => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return seed / 4294967296 - 0.5;
      };
      const record = (n, now) => {
        const embedding = new Float32Array(384);
        let norm = 0;
        for (let i = 0; i < 384; i++) {
          embedding[i] = random();
          norm += embedding[i] * embedding[i];
        }
        norm = Math.sqrt(norm);
        for (let i = 0; i < 384; i++) embedding[i] /= norm;
        return {
          id: `${now.toString(36).padStart(10, '0')}-${n.toString(36).padStart(8, '0')}`,
          text: bench.text(n),
          kind: 'fact',
          createdAt: now,
          lastAccessed: now,
          embeddingVersion: 'orion-hashing-v1/384',
          meta: {},
          embedding,
        };
      };
      let write;
      if (library === 'idbKeyval') {
        const { createStore, setMany } = await import(modules.idbKeyval);
        const store = createStore(database, 'memories');
        write = (records) => setMany(records.map((r) => [r.id, r]), store);
      } else {
        const { Dexie } = await import(modules.dexie);
        const db = new Dexie(database);
        // ORION's memories store: key path `id`, one index on [kind, id].
        db.version(1).stores({ memories: 'id, [kind+id]' });
        await db.open();
        write = (records) => db.table('memories').bulkPut(records);
      }
      const marks = [];
      let ms = 0;
      let n = 0;
      for (const size of sizes) {
        while (n < size) {
          const now = Date.now();
          const records = [];
          for (let i = n; i < Math.min(size, n + chunk); i++) records.push(record(i, now));
          const t = performance.now();
          await write(records);
          ms += performance.now() - t;
          n += records.length;
        }
        marks.push({ size, ms });
      }
      return { marks };
    }, { library, modules: MODULES, database: DATABASES[library], sizes: SIZES, chunk: CHUNK });
    await closePage(p);
    log(library, JSON.stringify(result));
    return result;
  };
  out.idbKeyval = await baseline('idbKeyval');
  out.dexie = await baseline('dexie');

  // For the cold start: Dexie reading its 100k records back in a fresh page, in pages of 2000 by
  // key (what ORION's index load does, without building an index).
  const reader = await openPage();
  out.dexieReadBack = await reader.evaluate(async ({ module, database }) => {
    const { Dexie } = await import(module);
    const t0 = performance.now();
    const db = new Dexie(database);
    db.version(1).stores({ memories: 'id, [kind+id]' });
    await db.open();
    const table = db.table('memories');
    let rows = 0;
    let last = null;
    for (;;) {
      const page = await (last === null ? table.orderBy(':id') : table.where(':id').above(last)).limit(2000).toArray();
      if (page.length === 0) break;
      rows += page.length;
      last = page[page.length - 1].id;
    }
    const ms = performance.now() - t0;
    db.close();
    return { rows, ms };
  }, { module: MODULES.dexie, database: DATABASES.dexie });
  log('dexie read back', JSON.stringify(out.dexieReadBack));
  await closePage(reader);

  // Leave no benchmark databases behind in the (throw-away) profile anyway.
  const cleanup = await openPage();
  await cleanup.evaluate(async (names) => {
    for (const name of names) {
      await new Promise((resolve) => {
        const request = indexedDB.deleteDatabase(name);
        request.onsuccess = request.onerror = request.onblocked = resolve;
      });
    }
  }, Object.values(DATABASES));
  await closePage(cleanup);

  finish(out);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
