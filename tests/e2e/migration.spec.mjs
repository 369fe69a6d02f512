// The re-embedding migration: 2 000 memories made by the micro profile's hashing embedder, imported
// into a full-profile instance (MiniLM), are searched with hashing vectors until they are
// re-embedded on the job engine, a batch per transaction;
// the page is closed halfway, and a new page on the same database finishes the migration from
// where it stopped, every memory then on the new version and searchable by meaning.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

const COUNT = 2000;
const FULL = { profile: 'full', models: { embedding: '/models/all-MiniLM-L6-v2/' }, backups: { automatic: false } };

test('a migration stopped by closing the page halfway resumes at the next start and finishes', async ({ context }, testInfo) => {
  test.setTimeout(600_000);
  const database = `migration-${testInfo.workerIndex}-${Date.now()}`;
  const first = await context.newPage();
  const problems = watchProblems(first);
  await first.goto('/fixture/blank.html');
  const imported = await first.evaluate(async ({ count, full, database }) => {
    const { Orion } = await import('/pkg/index.js');
    const topics = ['green tea', 'sailing boats', 'the quarterly budget', 'a birthday party', 'mountain hiking'];
    const micro = await Orion.create({ profile: 'micro', database: `${database}-micro`, memory: { maxMemories: 10_000 } });
    await micro.memory.addMany(Array.from({ length: count }, (_, n) => ({ text: `Note ${n}: something about ${topics[n % topics.length]} (${n * 7919 % 1000})`, kind: 'fact' })));
    const file = new Blob([await micro.backups.export()]);
    const microVersion = (await micro.profile()).embedding.version;
    await micro.close();

    globalThis.migration = [];
    const orion = await Orion.create({ ...full, database, memory: { maxMemories: 10_000 }, onProgress: (e) => {
      if (e.kind === 'embedding_migration') globalThis.migration.push(e);
    } });
    globalThis.orion = orion;
    const report = await orion.backups.import(file);
    const stats = await orion.memory.stats();
    // Not migrated yet: searched with their own (hashing) version's vectors, never MiniLM's.
    const hits = await orion.memory.search('mountain hiking', { k: 5 });
    return { report, microVersion, fullVersion: (await orion.profile()).embedding.version, stats, hits };
  }, { count: COUNT, full: FULL, database });
  expect(imported.report.otherVersions).toBe(COUNT);
  expect(imported.fullVersion).not.toBe(imported.microVersion);
  expect(imported.stats).toMatchObject({ count: COUNT, searchable: 0, otherVersions: COUNT });
  expect(imported.hits).toHaveLength(5);
  expect(imported.hits.every((hit) => hit.text.includes('mountain hiking'))).toBe(true);

  // Halfway (a few batches in, most still to do), the page goes, and its worker with it.
  await expect.poll(() => first.evaluate(() => globalThis.migration.at(-1)?.migrated ?? 0), { timeout: 300_000 }).toBeGreaterThanOrEqual(256);
  const before = await first.evaluate(() => globalThis.migration.at(-1));
  expect(before.remaining).toBeGreaterThan(COUNT / 4);
  await first.close();

  const second = await context.newPage();
  problems.push(...watchProblems(second));
  await second.goto('/fixture/blank.html');
  const resumed = await second.evaluate(async ({ full, database }) => {
    const { Orion } = await import('/pkg/index.js');
    const events = [];
    let done;
    const finished = new Promise((resolve) => {
      done = resolve;
    });
    const orion = await Orion.create({ ...full, database, memory: { maxMemories: 10_000 }, onProgress: (e) => {
      if (e.kind !== 'embedding_migration') return;
      events.push(e);
      if (e.done) done();
    } });
    const atStart = await orion.memory.stats();
    await finished;
    const stats = await orion.memory.stats();
    const hits = await orion.memory.search('walking up a mountain trail', { k: 5 });
    const page = await orion.memory.list({ limit: 50 });
    const jobs = await orion.tasks.list({ name: 'orion.reembed' });
    await orion.close();
    return { atStart, events, stats, hits, versions: [...new Set(page.items.map((m) => m.embeddingVersion))], jobs: jobs.items.map((j) => j.state) };
  }, { full: FULL, database });
  // It went on from where it stopped: the batches written before the page closed stayed done.
  expect(resumed.atStart.otherVersions).toBeLessThanOrEqual(before.remaining);
  expect(resumed.atStart.searchable).toBeGreaterThanOrEqual(before.migrated);
  expect(resumed.events[0].remaining).toBeLessThan(before.remaining);
  expect(resumed.events.at(-1)).toMatchObject({ remaining: 0, done: true });
  expect(resumed.stats).toMatchObject({ count: COUNT, searchable: COUNT, otherVersions: 0, embeddingVersion: imported.fullVersion });
  expect(resumed.versions).toEqual([imported.fullVersion]);
  expect(resumed.hits.every((hit) => hit.text.includes('mountain hiking'))).toBe(true);
  expect(resumed.jobs).toContain('completed');
  expect(problems).toEqual([]);
});
