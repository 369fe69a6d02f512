// `cargo xtask bench backup`: ORION's backups (issue 5 items 1, 3 and 9) and dexie-export-import
// on the same data, in one headless Chromium run on a profile on disk, through the npm API with
// the micro profile (the hashing embedder: no model download). Prints one JSON object with the
// figures as its last line (xtask writes docs/BENCHMARKS.md); progress goes to stderr.
//
// 1. One page fills an ORION database with `orion.memory.addMany` (texts of 100–200 characters,
//    384-dimension embeddings) up to 10k, 50k, then 100k memories.
// 2. At 50k, the latency of `orion.memory.search` (k = 10, back to back) alone, then while
//    `orion.backups.create()` runs in the same worker, twice.
// 3. At 10k and at 100k, each of these in a fresh page (a new renderer, whose peak resident memory
//    is measured from just before the operation to its end; see `rendererMemoryMeter`):
//    - ORION `backups.export()` (a backup taken now, the file's text in the page);
//    - ORION `backups.download()` (the same file saved through a Blob of its parts);
//    - Dexie `exportDB` of ORION's `memories` table (Dexie opens ORION's database as it is);
//    - ORION `backups.import(file)` of its own file into an empty database (validated, then written
//      in one transaction, and indexed);
//    - Dexie `importDB` of its own file into a new database.
//    Throughput is the file's size over the operation's time. The files pass from page to page
//    through Cache Storage, so that no page holds another's.
// Every request must go to our server: anything else fails the run.
import { createOrion, installBenchText, launchGuarded, rendererMemoryMeter } from './harness.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node backup.mjs <base url>');
  process.exit(2);
}

const PAGE = '/fixture/blank.html';
const SIZES = [10_000, 100_000];
const DURING_AT = 50_000; // memories when query latency during a backup is measured
const DURING_RUNS = 2;
const QUERIES = 50;
const WARM_QUERIES = 5;
const BATCH = 1000; // texts per addMany call
// After a start, the exact vectors of the index load in the background (about 3 s at 100k): wait
// for that before measuring a page's memory.
const SETTLE_MS = 6000;
const MAX_MEMORIES = 200_000;
const DEXIE = ['/node_modules/dexie/dist/dexie.js', '/node_modules/dexie-export-import/dist/dexie-export-import.js'];
const FILES = 'orion-bench-backup-files';
const run = `${Date.now().toString(36)}-${process.pid}`;
const SOURCE = `orion-bench-backup-${run}`;
const log = (...args) => console.error('[bench backup]', ...args);

const { browser, openPage: openGuarded, closePage, finish } = await launchGuarded(base, { persistent: true });
try {
  const meter = await rendererMemoryMeter(browser);
  // The renderer each page started (a fresh page gets its own), to measure that one alone.
  const renderersOf = new Map();
  const openPage = async () => {
    const before = new Set(await meter.renderers());
    const page = await openGuarded(PAGE);
    renderersOf.set(page, (await meter.renderers()).filter((pid) => !before.has(pid)));
    await installBenchText(page);
    return page;
  };
  // ORION on `database`, automatic backups off so that none starts during a measurement.
  const openOrion = (page, database, settleMs) =>
    createOrion(page, { database, maxMemories: MAX_MEMORIES, settleMs, backups: { automatic: false } });

  // Runs `fn(arg)` in `page` and measures the page's renderer meanwhile (every renderer, should
  // the page have shared one: `memory.renderer` says which).
  const measured = async (page, fn, arg) => {
    const own = renderersOf.get(page) ?? [];
    await meter.reset(own.length > 0 ? own : undefined);
    const result = await page.evaluate(fn, arg);
    return { ...result, memory: { ...meter.read(), renderer: own.length > 0 ? 'the page' : 'any' } };
  };

  const out = { browser: null, sizes: SIZES, fill: [], during: null, runs: [] };

  const filler = await openPage();
  await openOrion(filler, SOURCE, 0);
  out.browser = await filler.evaluate(() => navigator.userAgent);
  out.orionVersion = await filler.evaluate(() => window.orion.version());
  let stored = 0;
  const fillTo = async (size) => {
    log(`addMany ${stored} → ${size}`);
    const fill = await filler.evaluate(async ({ from, to, batch }) => {
      const { orion, bench } = window;
      const t = performance.now();
      for (let n = from; n < to; n += batch) {
        const items = [];
        for (let i = n; i < Math.min(to, n + batch); i++) items.push({ text: bench.text(i), kind: 'fact' });
        const records = await orion.memory.addMany(items);
        if (records.length !== items.length) throw new Error(`addMany returned ${records.length} of ${items.length}`);
      }
      return { from, to, ms: performance.now() - t, count: (await orion.memory.stats()).count };
    }, { from: stored, to: size, batch: BATCH });
    if (fill.count !== size) throw new Error(`${fill.count} memories stored, ${size} expected`);
    stored = size;
    out.fill.push(fill);
  };

  // Puts the page's `window.file` (text or Blob) in Cache Storage at `path`, after the
  // measurement; answers its size in bytes.
  const keepFile = (page, path) =>
    page.evaluate(async ({ path, name }) => {
      const blob = window.file instanceof Blob ? window.file : new Blob([window.file], { type: 'application/json' });
      window.file = null;
      await (await caches.open(name)).put(path, new Response(blob));
      return blob.size;
    }, { path, name: FILES });

  const exportsAndImports = async (size) => {
    const files = { orion: `/files/orion-${size}.json`, dexie: `/files/dexie-${size}.json` };
    const result = { size };

    log(`ORION export() at ${size}`);
    let page = await openPage();
    await openOrion(page, SOURCE, SETTLE_MS);
    result.orionExport = await measured(page, async () => {
      const t = performance.now();
      window.file = await window.orion.backups.export();
      return { ms: performance.now() - t };
    });
    result.orionExport.bytes = await keepFile(page, files.orion);
    await page.evaluate(() => window.orion.close());
    await closePage(page);
    log(JSON.stringify(result.orionExport));

    log(`ORION download() at ${size}`);
    page = await openPage();
    await openOrion(page, SOURCE, SETTLE_MS);
    const download = page.waitForEvent('download');
    result.orionDownload = await measured(page, async () => {
      const t = performance.now();
      const name = await window.orion.backups.download();
      return { ms: performance.now() - t, name };
    });
    const saved = await download;
    result.orionDownload.suggestedName = saved.suggestedFilename();
    await saved.delete();
    await page.evaluate(() => window.orion.close());
    await closePage(page);
    log(JSON.stringify(result.orionDownload));

    log(`Dexie exportDB at ${size}`);
    page = await openPage();
    for (const url of DEXIE) await page.addScriptTag({ url });
    result.dexieExport = await measured(page, async ({ database }) => {
      const t = performance.now();
      // ORION's database as it is (no schema declared), its memories only.
      const db = new globalThis.Dexie(database);
      await db.open();
      window.file = await globalThis.DexieExportImport.exportDB(db, { filter: (table) => table === 'memories' });
      db.close();
      return { ms: performance.now() - t };
    }, { database: SOURCE });
    result.dexieExport.bytes = await keepFile(page, files.dexie);
    await closePage(page);
    log(JSON.stringify(result.dexieExport));

    log(`ORION import at ${size}`);
    const target = `${SOURCE}-import-${size}`;
    page = await openPage();
    await openOrion(page, target, 0);
    await page.evaluate(async ({ files, name }) => {
      window.file = await (await (await caches.open(name)).match(files.orion)).blob();
    }, { files, name: FILES });
    result.orionImport = await measured(page, async () => {
      const t = performance.now();
      const report = await window.orion.backups.import(window.file, { clearExisting: true });
      const ms = performance.now() - t;
      const stats = await window.orion.memory.stats();
      return { ms, bytes: window.file.size, report, count: stats.count, searchable: stats.searchable };
    });
    await page.evaluate(() => window.orion.close());
    await closePage(page);
    log(JSON.stringify(result.orionImport));
    if (result.orionImport.count !== size) throw new Error(`ORION imported ${result.orionImport.count} of ${size}`);

    log(`Dexie importDB at ${size}`);
    page = await openPage();
    for (const url of DEXIE) await page.addScriptTag({ url });
    await page.evaluate(async ({ files, name }) => {
      window.file = await (await (await caches.open(name)).match(files.dexie)).blob();
    }, { files, name: FILES });
    result.dexieImport = await measured(page, async ({ database }) => {
      const t = performance.now();
      const db = await globalThis.DexieExportImport.importDB(window.file, { name: database });
      const ms = performance.now() - t;
      const count = await db.table('memories').count();
      db.close();
      return { ms, bytes: window.file.size, count };
    }, { database: `${SOURCE}-dexie-${size}` });
    await closePage(page);
    log(JSON.stringify(result.dexieImport));
    if (result.dexieImport.count !== size) throw new Error(`Dexie imported ${result.dexieImport.count} of ${size}`);

    // Free the disk for the next size.
    page = await openPage();
    await page.evaluate(async ({ names, name }) => {
      await caches.delete(name);
      for (const database of names) {
        await new Promise((resolve) => {
          const request = indexedDB.deleteDatabase(database);
          request.onsuccess = request.onerror = request.onblocked = resolve;
        });
      }
    }, { names: [target, `${SOURCE}-dexie-${size}`], name: FILES });
    await closePage(page);
    out.runs.push(result);
  };

  // Searches back to back, alone and while a backup is taken in the same worker.
  const during = async () => {
    log(`search latency during backups.create() at ${stored}`);
    return filler.evaluate(async ({ queries, warm, runs }) => {
      const { orion, bench } = window;
      const search = async (q) => {
        const t = performance.now();
        await orion.memory.search(bench.query(q), { k: 10 });
        return performance.now() - t;
      };
      const alone = [];
      for (let q = 0; q < warm + queries; q++) {
        const ms = await search(q);
        if (q >= warm) alone.push(ms);
      }
      const backups = [];
      for (let r = 0; r < runs; r++) {
        const ms = [];
        let done = false;
        const t = performance.now();
        const created = orion.backups.create({ label: `bench ${r}` }).finally(() => {
          done = true;
        });
        for (let q = 0; !done; q++) ms.push(await search(q));
        const info = await created;
        const createMs = performance.now() - t;
        await orion.backups.delete(info.id);
        backups.push({ createMs, itemCount: info.itemCount, bytes: info.bytes, searches: bench.stats(ms) });
      }
      return { memories: (await orion.memory.stats()).count, alone: bench.stats(alone), backups };
    }, { queries: QUERIES, warm: WARM_QUERIES, runs: DURING_RUNS });
  };

  await fillTo(SIZES[0]);
  await exportsAndImports(SIZES[0]);
  await fillTo(DURING_AT);
  out.during = await during();
  log(JSON.stringify(out.during));
  await fillTo(SIZES[1]);
  await exportsAndImports(SIZES[1]);

  await filler.evaluate(() => window.orion.close());
  await closePage(filler);
  finish(out);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
