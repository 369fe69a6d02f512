// Interoperability of ORION's backup file with dexie-export-import, the npm packages themselves in
// the page (their UMD builds, served from tests/node_modules/ at /test-modules/): Dexie's
// `importDB` takes a file ORION exported and its rows come out as ORION stored them, and a file
// Dexie's `exportDB` wrote from ORION's own database imports into ORION.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

const MODULES = ['/test-modules/dexie/dist/dexie.js', '/test-modules/dexie-export-import/dist/dexie-export-import.js'];

/** Memories with every kind and a nested `meta` (arrays inside, which typeson tags). */
const ITEMS = Array.from({ length: 40 }, (_, n) => ({
  text: `memory ${n}: ${['tea', 'maps', 'ünïcödé 🍵', 'the meeting'][n % 4]} and more`,
  kind: ['fact', 'conversation', 'feedback', 'tool_result'][n % 4],
  meta: n % 3 === 0 ? { tags: ['a', String(n)], nested: { list: [1, [2, 3]], flag: true } } : {},
}));

async function openWithDexie(page) {
  await page.goto('/fixture/blank.html');
  for (const url of MODULES) await page.addScriptTag({ url });
}

test("a file exported by ORION is accepted by dexie-export-import's importDB, rows intact", async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  await openWithDexie(page);
  const stamp = `${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await page.evaluate(async ({ items, database, dexieName }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ profile: 'micro', database });
    const added = await orion.memory.addMany(items);
    const text = await orion.backups.export();
    // The embeddings ORION stored: micro's embedder is deterministic.
    const vectors = await orion.embed(added.map((m) => m.text));
    await orion.close();

    const progress = [];
    const db = await globalThis.DexieExportImport.importDB(new Blob([text], { type: 'application/json' }), {
      name: dexieName,
      progressCallback: (p) => {
        progress.push(p.completedRows);
        return true;
      },
    });
    const rows = await db.table('memories').toArray();
    const schema = db.tables.map((t) => ({ name: t.name, primKey: t.schema.primKey.keyPath, indexes: t.schema.indexes.map((i) => i.keyPath) }));
    const verno = db.verno;
    db.close();
    await globalThis.Dexie.delete(dexieName);
    const byId = new Map(rows.map((row) => [row.id, row]));
    const mismatches = [];
    added.forEach((memory, i) => {
      const row = byId.get(memory.id);
      if (!row) return mismatches.push(`${memory.id}: missing`);
      const { embedding, ...fields } = row;
      const expected = { ...memory };
      if (JSON.stringify(Object.keys(fields).sort()) !== JSON.stringify(Object.keys(expected).sort())) {
        mismatches.push(`${memory.id}: fields ${Object.keys(fields)} against ${Object.keys(expected)}`);
      }
      for (const key of Object.keys(expected)) {
        if (JSON.stringify(fields[key]) !== JSON.stringify(expected[key])) mismatches.push(`${memory.id}.${key}`);
      }
      if (!(embedding instanceof Float32Array)) return mismatches.push(`${memory.id}.embedding is not a Float32Array`);
      const vector = vectors[i];
      if (embedding.length !== vector.length || embedding.some((x, j) => !Object.is(x, vector[j]))) {
        mismatches.push(`${memory.id}.embedding differs`);
      }
    });
    return { count: rows.length, mismatches, schema, verno, lastProgress: progress.at(-1) };
  }, { items: ITEMS, database: `dexie-interop-out-${stamp}`, dexieName: `dexie-import-${stamp}` });

  expect(outcome.count).toBe(ITEMS.length);
  expect(outcome.mismatches).toEqual([]);
  // Dexie created ORION's schema: key `id`, index [kind+id]; IndexedDB version 2 is Dexie's 0.2.
  expect(outcome.schema).toEqual([{ name: 'memories', primKey: 'id', indexes: [['kind', 'id']] }]);
  expect(outcome.verno).toBe(0.2);
  expect(outcome.lastProgress).toBe(ITEMS.length);
  expect(problems).toEqual([]);
});

test("a file written by Dexie's exportDB from ORION's database imports into ORION", async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  await openWithDexie(page);
  const stamp = `${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await page.evaluate(async ({ items, source, target }) => {
    const { Orion } = await import('/pkg/index.js');
    const first = await Orion.create({ profile: 'micro', database: source });
    const added = await first.memory.addMany(items);
    const hitsBefore = await first.memory.search('ünïcödé tea', { k: 5 });
    await first.close();

    // Dexie opens ORION's database as it is (no schema declared) and exports every table.
    const db = new globalThis.Dexie(source);
    await db.open();
    const tables = db.tables.map((t) => t.name).sort();
    const blob = await globalThis.DexieExportImport.exportDB(db);
    db.close();
    const file = JSON.parse(await blob.text());

    const second = await Orion.create({ profile: 'micro', database: target });
    const report = await second.backups.import(blob);
    const page1 = await second.memory.list({ limit: 100 });
    const hitsAfter = await second.memory.search('ünïcödé tea', { k: 5 });
    const stats = await second.memory.stats();
    await second.close();
    return { added, tables, report, items: page1.items, hitsBefore, hitsAfter, stats, hasOrionHeader: 'orion' in file, dexieTables: file.data.tables.map((t) => t.name).sort() };
  }, { items: ITEMS, source: `dexie-interop-src-${stamp}`, target: `dexie-interop-dst-${stamp}` });

  expect(outcome.tables).toEqual(['backups', 'jobs', 'memories', 'meta', 'workflows']);
  expect(outcome.dexieTables).toEqual(outcome.tables);
  expect(outcome.hasOrionHeader).toBe(false);
  expect(outcome.stats).toMatchObject({ count: ITEMS.length, searchable: ITEMS.length });
  const strip = ({ lastAccessed, ...rest }) => rest;
  const byId = (list) => [...list].sort((a, b) => a.id.localeCompare(b.id));
  expect(byId(outcome.items).map(strip)).toEqual(byId(outcome.added).map(strip));
  expect(outcome.hitsAfter.map((h) => [h.id, h.similarity])).toEqual(outcome.hitsBefore.map((h) => [h.id, h.similarity]));
  expect(problems).toEqual([]);
});
