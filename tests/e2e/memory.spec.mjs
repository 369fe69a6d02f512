// The memory store through the npm API, in a real worker on IndexedDB: the API and its errors,
// durability across page crashes, several tabs writing at once, and a full disk.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

// Micro needs no model download: these tests are about storage.
const OPTIONS = { profile: 'micro' };

/** A unique database per test, so tests never see each other's memories. */
function databaseName(testInfo) {
  return `orion-e2e-${testInfo.testId}-${Date.now()}`;
}

test.beforeEach(async ({ page }) => {
  await page.goto('/fixture/blank.html');
});

test('add, get, search, list, delete, purge and stats', async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  const outcome = await page.evaluate(async ({ options, database }) => {
    const { Orion } = await import('/pkg/index.js');
    const events = [];
    const orion = await Orion.create({ ...options, database, onProgress: (e) => events.push(e.kind) });
    const cat = await orion.memory.add('the cat sat on the mat', { kind: 'fact', meta: { source: 'e2e', tags: ['a'] } });
    const many = await orion.memory.addMany([
      { text: 'stock markets fell sharply today', kind: 'conversation' },
      { text: 'a cat chased the dog around the garden', kind: 'conversation' },
      { text: 'it was sunny in paris', kind: 'tool_result' },
    ]);
    const got = await orion.memory.get(cat.id);
    const hits = await orion.memory.search('cat on the mat', { k: 2 });
    const conversations = await orion.memory.search('cat', { kind: 'conversation', k: 5 });
    const page1 = await orion.memory.list({ limit: 2 });
    const page2 = await orion.memory.list({ limit: 2, after: page1.next });
    const stats = await orion.memory.stats();
    const touched = await orion.memory.get(cat.id);
    const deleted = await orion.memory.delete(many[0].id);
    const deletedAgain = await orion.memory.delete(many[0].id);
    const purgedTools = await orion.memory.purge({ kind: 'tool_result' });
    const purgedAll = await orion.memory.purge();
    const after = await orion.memory.stats();
    await orion.close();
    return { cat, got, hits, conversations, page1, page2, stats, touched, deleted, deletedAgain, purgedTools, purgedAll, after, events, many };
  }, { options: OPTIONS, database: databaseName(testInfo) });
  expect(outcome.got).toEqual(outcome.cat);
  expect(outcome.cat).toMatchObject({ kind: 'fact', meta: { source: 'e2e', tags: ['a'] }, embeddingVersion: 'orion-hashing-v1/384' });
  expect(outcome.hits[0]).toMatchObject({ id: outcome.cat.id, text: 'the cat sat on the mat', kind: 'fact' });
  expect(outcome.hits).toHaveLength(2);
  expect(outcome.hits[0].similarity).toBeGreaterThan(outcome.hits[1].similarity);
  expect(outcome.conversations.every((h) => h.kind === 'conversation')).toBe(true);
  expect(outcome.conversations[0].text).toContain('cat');
  expect([...outcome.page1.items, ...outcome.page2.items].map((m) => m.id)).toEqual([outcome.cat.id, outcome.many[0].id, outcome.many[1].id, outcome.many[2].id]);
  expect(outcome.page2.next).toBeNull();
  expect(outcome.stats).toMatchObject({ count: 4, byKind: { fact: 1, conversation: 2, tool_result: 1, feedback: 0 }, maxMemories: 5000, toolResultTtlMs: 86_400_000 });
  expect(outcome.touched.lastAccessed).toBeGreaterThanOrEqual(outcome.cat.lastAccessed);
  expect([outcome.deleted, outcome.deletedAgain]).toEqual([true, false]);
  expect([outcome.purgedTools, outcome.purgedAll]).toEqual([1, 2]);
  expect(outcome.after.count).toBe(0);
  expect(outcome.events).toContain('memory_index');
  expect(outcome.events).toContain('memory_progress');
  expect(problems).toEqual([]);
});

test('a restart loads the saved index (codes first) and searches find exactly what they found before', async ({ page, context }, testInfo) => {
  const problems = watchProblems(page);
  const database = databaseName(testInfo);
  const queries = ['memory about topic 3', 'topic 7 and word 11', 'number 1190'];
  const before = await page.evaluate(async ({ options, database, queries }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ ...options, database });
    const items = Array.from({ length: 1200 }, (_, n) => ({ text: `memory number ${n} about topic ${n % 13} and word ${n % 17}`, kind: 'fact' }));
    await orion.memory.addMany(items);
    const started = performance.now();
    while (!(await orion.memory.stats()).indexSaved) {
      if (performance.now() - started > 60_000) throw new Error('no snapshot saved');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const hits = [];
    for (const query of queries) hits.push(await orion.memory.search(query, { k: 5 }));
    await orion.close();
    return hits.map((list) => list.map(({ id, similarity }) => ({ id, similarity })));
  }, { options: OPTIONS, database, queries });
  const reopened = await context.newPage();
  const reopenedProblems = watchProblems(reopened);
  await reopened.goto('/fixture/blank.html');
  const after = await reopened.evaluate(async ({ options, database, queries }) => {
    const { Orion } = await import('/pkg/index.js');
    const loaded = [];
    let ready;
    const done = new Promise((resolve) => { ready = resolve; });
    const orion = await Orion.create({ ...options, database, onProgress: (e) => {
      if (e.kind !== 'memory_index') return;
      loaded.push(e.loaded);
      if (e.done) ready();
    } });
    await done;
    // At once (the exact vectors may still be loading), then after the start's background work.
    const first = [];
    for (const query of queries) first.push(await orion.memory.search(query, { k: 5 }));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const later = [];
    for (const query of queries) later.push(await orion.memory.search(query, { k: 5 }));
    const stats = await orion.memory.stats();
    await orion.close();
    const strip = (lists) => lists.map((list) => list.map(({ id, similarity }) => ({ id, similarity })));
    return { loaded, first: strip(first), later: strip(later), stats };
  }, { options: OPTIONS, database, queries });
  // Blocks of 500 entries from the snapshot, not the rows (which load 5 000 at a time).
  expect(after.loaded.slice(0, 2)).toEqual([500, 1000]);
  expect(after.loaded.at(-1)).toBe(1200);
  expect(after.stats).toMatchObject({ count: 1200, searchable: 1200, indexSaved: true });
  expect(before.every((hits) => hits.length === 5)).toBe(true);
  expect(after.first).toEqual(before);
  expect(after.later).toEqual(before);
  expect(problems).toEqual([]);
  expect(reopenedProblems).toEqual([]);
});

test('bad input is ERR_INVALID_INPUT naming the field, and nothing is written', async ({ page }, testInfo) => {
  const outcome = await page.evaluate(async ({ options, database }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ ...options, database });
    await orion.memory.add('one good memory');
    const attempt = async (name, call) => {
      try {
        await call();
        return { name, code: null };
      } catch (error) {
        return { name, code: error.code, message: error.message };
      }
    };
    const results = [
      await attempt('text', () => orion.memory.add('')),
      await attempt('text', () => orion.memory.add('   \n\t ')),
      await attempt('text', () => orion.memory.add('x'.repeat(64 * 1024 + 1))),
      await attempt('text', () => orion.memory.add(`broken \ud800 text`)),
      await attempt('text', () => orion.memory.add(42)),
      await attempt('kind', () => orion.memory.add('ok', { kind: 'gossip' })),
      await attempt('meta', () => orion.memory.add('ok', { meta: { when: new Date() } })),
      await attempt('meta', () => orion.memory.add('ok', { meta: { run: () => 1 } })),
      await attempt('meta', () => orion.memory.add('ok', { meta: { n: NaN } })),
      await attempt('meta', () => orion.memory.add('ok', { meta: 'not an object' })),
      await attempt('k', () => orion.memory.search('q', { k: 0 })),
      await attempt('k', () => orion.memory.search('q', { k: 1e9 })),
      await attempt('minSimilarity', () => orion.memory.search('q', { minSimilarity: 3 })),
      await attempt('limit', () => orion.memory.list({ limit: 0 })),
      await attempt('items[1].text', () => orion.memory.addMany([{ text: 'fine' }, { text: '' }])),
      await attempt('items[2].kind', () => orion.memory.addMany([{ text: 'a' }, { text: 'b' }, { text: 'c', kind: 'nope' }])),
      await attempt('color', () => orion.memory.search('q', { color: 'red' })),
    ];
    const stats = await orion.memory.stats();
    await orion.close();
    return { results, count: stats.count };
  }, { options: OPTIONS, database: databaseName(testInfo) });
  for (const result of outcome.results) {
    expect(result.code, result.name).toBe('ERR_INVALID_INPUT');
    expect(result.message, result.name).toContain(`\`${result.name}`);
  }
  expect(outcome.count).toBe(1);
});

test('every acknowledged add survives the page or the worker dying at once (20 random trials)', async ({ page, context }, testInfo) => {
  test.setTimeout(300_000);
  const database = databaseName(testInfo);
  const acknowledged = [];
  let seed = 20261122;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  for (let trial = 0; trial < 20; trial += 1) {
    const victim = await context.newPage();
    await victim.goto('/fixture/blank.html');
    const texts = Array.from({ length: 1 + Math.floor(random() * 4) }, (_, i) => `trial ${trial} memory ${i} ${random().toString(36).slice(2)}`);
    const how = ['crash the page', 'close the page', 'terminate the worker'][Math.floor(random() * 3)];
    const bulk = random() < 0.5;
    const ids = await victim.evaluate(async ({ options, database, texts, bulk, terminate }) => {
      const { Orion } = await import('/pkg/index.js');
      const orion = await Orion.create({ ...options, database });
      const records = bulk
        ? await orion.memory.addMany(texts.map((text) => ({ text })))
        : await Promise.all(texts.map((text) => orion.memory.add(text)));
      if (terminate) orion.close();
      return records.map((r) => r.id);
    }, { options: OPTIONS, database, texts, bulk, terminate: how === 'terminate the worker' });
    acknowledged.push(...ids.map((id, i) => ({ id, text: texts[i] })));
    if (how === 'crash the page') {
      const cdp = await context.newCDPSession(victim);
      const crashed = victim.waitForEvent('crash', { timeout: 15_000 });
      // The command never answers: the renderer dies under it.
      cdp.send('Page.crash').catch(() => {});
      await crashed;
    }
    await victim.close({ runBeforeUnload: false });
  }
  const found = await page.evaluate(async ({ options, database, ids }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ ...options, database });
    const records = await Promise.all(ids.map((id) => orion.memory.get(id)));
    const stats = await orion.memory.stats();
    await orion.close();
    return { texts: records.map((r) => r?.text ?? null), count: stats.count };
  }, { options: OPTIONS, database, ids: acknowledged.map((a) => a.id) });
  expect(found.texts).toEqual(acknowledged.map((a) => a.text));
  expect(found.count).toBe(acknowledged.length);
});

test('two tabs adding at once lose nothing, and each finds the other\'s memories', async ({ context }, testInfo) => {
  const database = databaseName(testInfo);
  const tabs = [await context.newPage(), await context.newPage()];
  await Promise.all(tabs.map((tab) => tab.goto('/fixture/blank.html')));
  await Promise.all(tabs.map((tab, t) => tab.evaluate(async ({ options, database }) => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.orion = await Orion.create({ ...options, database });
  }, { options: OPTIONS, database, t })));
  const written = await Promise.all(tabs.map((tab, t) => tab.evaluate(async (t) => {
    const ids = [];
    for (let i = 0; i < 40; i += 1) {
      const record = i % 2 === 0
        ? await globalThis.orion.memory.add(`tab ${t} note ${i}`)
        : (await globalThis.orion.memory.addMany([{ text: `tab ${t} batch ${i} a` }, { text: `tab ${t} batch ${i} b` }]))[0];
      ids.push(record.id);
    }
    return ids;
  }, t)));
  // Each tab's worker heard about the other's writes (BroadcastChannel) and searches them.
  const crossSearch = await tabs[0].evaluate(async () => {
    for (let attempt = 0; attempt < 50; attempt += 1) {
      const hits = await globalThis.orion.memory.search('tab 1 note 38', { k: 1 });
      if (hits[0]?.text === 'tab 1 note 38') return hits[0].text;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return null;
  });
  expect(crossSearch).toBe('tab 1 note 38');
  const counts = await Promise.all(tabs.map((tab) => tab.evaluate(() => globalThis.orion.memory.stats().then((s) => s.count))));
  // 20 single adds and 20 pairs per tab.
  expect(counts).toEqual([120, 120]);
  const reopened = await tabs[1].evaluate(async ({ options, database, ids }) => {
    const { Orion } = await import('/pkg/index.js');
    const fresh = await Orion.create({ ...options, database });
    const records = await Promise.all(ids.map((id) => fresh.memory.get(id)));
    await fresh.close();
    return records.filter(Boolean).length;
  }, { options: OPTIONS, database, ids: written.flat() });
  expect(reopened).toBe(80);
});

test('a full disk is ERR_QUOTA, changes nothing and shows in health', async ({ page, context }, testInfo) => {
  const database = databaseName(testInfo);
  const cdp = await context.newCDPSession(page);
  const origin = new URL(page.url()).origin;
  // A 1.5 MB disk: room for a couple of dozen of the memories below.
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1_500_000 });
  try {
    const outcome = await page.evaluate(async ({ options, database }) => {
      const { Orion } = await import('/pkg/index.js');
      const orion = await Orion.create({ ...options, database });
      await orion.memory.add('a memory from before the disk filled up');
      // Random text: IndexedDB compresses values, so repeated characters would take no room.
      const noise = () => {
        const bytes = crypto.getRandomValues(new Uint8Array(45_000));
        return btoa(String.fromCharCode(...bytes));
      };
      const big = (i) => ({ text: `${i} ${noise()}` });
      let error = null;
      let stored = 0;
      for (let round = 0; round < 50 && !error; round += 1) {
        try {
          await orion.memory.addMany([big(round * 2), big(round * 2 + 1)]);
          stored += 2;
        } catch (e) {
          error = { code: e.code, message: e.message };
        }
      }
      const stats = await orion.memory.stats();
      const list = await orion.memory.list({ limit: 1000 });
      const health = await orion.health();
      await orion.close();
      // A fresh worker reads the database as it is on disk.
      const reopened = await Orion.create({ ...options, database });
      const onDisk = (await reopened.memory.stats()).count;
      await reopened.close();
      return { error, stored, count: stats.count, listed: list.items.length, onDisk, store: health.components.find((c) => c.name === 'store') };
    }, { options: OPTIONS, database });
    expect(outcome.error?.code).toBe('ERR_QUOTA');
    expect(outcome.stored).toBeGreaterThan(0);
    expect(outcome.count).toBe(1 + outcome.stored);
    expect(outcome.listed).toBe(1 + outcome.stored);
    expect(outcome.onDisk).toBe(1 + outcome.stored);
    expect(outcome.store.totalFailures).toBeGreaterThanOrEqual(1);
    expect(outcome.store.lastError).toContain('quota');
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  }
});
