// Backups through the npm API on IndexedDB: a manual backup holds every memory, lists, verifies,
// exports the Dexie-compatible file and downloads it; the automatic backups are a schedule.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

test('a manual backup is listed, verified, exported and downloaded as a file', async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const database = `backups-${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await page.evaluate(async ({ database }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ profile: 'micro', database });
    globalThis.orion = orion;
    await orion.memory.addMany([
      { text: 'Alice prefers green tea', kind: 'fact' },
      { text: 'The meeting moved to Thursday', kind: 'conversation', meta: { room: 'B' } },
      { text: 'Emoji survive 🍵 and so does ünïcödé', kind: 'feedback' },
    ]);
    const backup = await orion.backups.create({ label: 'before the upgrade' });
    const list = await orion.backups.list();
    const verified = await orion.backups.verify(backup.id);
    const text = await orion.backups.export(backup.id);
    const schedules = await orion.tasks.schedules.list();
    let missing = null;
    try {
      await orion.backups.verify('no-such-backup');
    } catch (error) {
      missing = error.code;
    }
    const { storage } = await orion.health();
    return { backup, list, verified, text, utf8Bytes: new TextEncoder().encode(text).length, schedules, missing, storage };
  }, { database });

  // persist() was asked at create; health has its answer and the origin's usage and quota.
  expect(typeof outcome.storage.persistGranted).toBe('boolean');
  expect(typeof outcome.storage.persisted).toBe('boolean');
  expect(outcome.storage.usageBytes).toBeGreaterThan(0);
  expect(outcome.storage.quotaBytes).toBeGreaterThan(outcome.storage.usageBytes);

  expect(outcome.backup).toMatchObject({ kind: 'manual', label: 'before the upgrade', itemCount: 3 });
  expect(outcome.backup.checksum).toMatch(/^sha256:[0-9a-f]{64}$/);
  expect(outcome.list.map((b) => b.id)).toEqual([outcome.backup.id]);
  expect(outcome.verified).toEqual({ valid: true, issues: [] });
  expect(outcome.utf8Bytes).toBe(outcome.backup.bytes);
  expect(outcome.missing).toBe('ERR_INVALID_INPUT');

  const file = JSON.parse(outcome.text);
  expect(file.formatName).toBe('dexie');
  expect(file.data.tables).toEqual([{ name: 'memories', schema: 'id,[kind+id]', rowCount: 3 }]);
  const rows = file.data.data[0].rows;
  expect(rows.map((r) => r.text).sort()).toEqual(['Alice prefers green tea', 'Emoji survive 🍵 and so does ünïcödé', 'The meeting moved to Thursday']);
  expect(rows.find((r) => r.kind === 'conversation').meta).toEqual({ room: 'B' });
  // Embeddings travel as base64 of little-endian f32, tagged for Dexie's typeson.
  const embedding = rows[0].embedding;
  expect(rows[0].$types).toEqual({ embedding: 'float32array2', 'embedding.buffer': 'arraybuffer' });
  expect(Buffer.from(embedding.buffer, 'base64').length).toBe(embedding.length * 4);
  expect(file.orion).toMatchObject({ backupId: outcome.backup.id, itemCount: 3, kind: 'manual', checksum: outcome.backup.checksum });

  const auto = outcome.schedules.find((s) => s.id === 'orion.backups.auto');
  expect(auto).toMatchObject({ spec: { every: 3_600_000 }, template: { name: 'orion.backup' } });
  expect(auto.nextRunAt - Date.now()).toBeGreaterThan(4 * 60_000);
  expect(auto.nextRunAt - Date.now()).toBeLessThanOrEqual(5 * 60_000);

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.evaluate((id) => globalThis.orion.backups.download(id), outcome.backup.id),
  ]);
  expect(download.suggestedFilename()).toMatch(/^orion-backup-\d{4}-\d{2}-\d{2}T[\d-]+Z\.json$/);
  const saved = await download.path().then((path) => import('node:fs').then((fs) => fs.readFileSync(path, 'utf8')));
  expect(saved).toBe(outcome.text);

  // Without an id: a backup taken now, downloaded and not stored.
  const [fresh] = await Promise.all([
    page.waitForEvent('download'),
    page.evaluate(() => globalThis.orion.backups.download()),
  ]);
  expect(fresh.suggestedFilename()).toMatch(/^orion-backup-\d{4}-\d{2}-\d{2}T[\d-]+Z\.json$/);
  const freshFile = JSON.parse(await fresh.path().then((path) => import('node:fs').then((fs) => fs.readFileSync(path, 'utf8'))));
  expect(freshFile.orion.itemCount).toBe(3);
  expect(freshFile.orion.backupId).not.toBe(outcome.backup.id);
  expect(freshFile.orion.checksum).toBe(outcome.backup.checksum);
  const after = await page.evaluate(() => globalThis.orion.backups.list());
  expect(after.map((b) => b.id)).toEqual([outcome.backup.id]);
  expect(problems).toEqual([]);
});

test('backup settings from Orion.create: the first automatic backup fires when due, stats count it, bad settings refuse create', async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const database = `backup-settings-${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await page.evaluate(async ({ database }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ profile: 'micro', database, backups: { firstAfterMs: 0, everyMs: 120_000, keepAuto: 2 } });
    globalThis.orion = orion;
    await orion.memory.add('Alice prefers green tea');
    let stats = await orion.backups.stats();
    for (let waited = 0; stats.auto === 0 && waited < 20_000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      stats = await orion.backups.stats();
    }
    const list = await orion.backups.list();
    const schedules = await orion.tasks.schedules.list();
    const refused = await Orion.create({ profile: 'micro', database: `${database}-bad`, backups: { everyMs: 5 } })
      .then(() => null, (error) => ({ code: error.code, message: error.message }));
    return { stats, list, schedules, refused };
  }, { database });

  expect(outcome.stats).toMatchObject({ count: 1, auto: 1, manual: 0, keepAuto: 2 });
  expect(outcome.stats.bytes).toBe(outcome.list[0].bytes);
  expect(outcome.stats.newestAt).toBe(outcome.list[0].createdAt);
  expect(outcome.list[0].kind).toBe('auto');
  const auto = outcome.schedules.find((s) => s.id === 'orion.backups.auto');
  expect(auto).toMatchObject({ spec: { every: 120_000 }, count: 1 });
  expect(outcome.refused.code).toBe('ERR_INVALID_INPUT');
  expect(outcome.refused.message).toContain('backups.everyMs');
  expect(problems).toEqual([]);
});

test('restore brings deleted memories back, an export imports identically elsewhere, a corrupted file changes nothing', async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const stamp = `${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await page.evaluate(async ({ stamp }) => {
    const { Orion } = await import('/pkg/index.js');
    const all = async (orion) => (await orion.memory.list({ limit: 1000 })).items;
    const same = (m) => ({ id: m.id, text: m.text, kind: m.kind, createdAt: m.createdAt, embeddingVersion: m.embeddingVersion, meta: m.meta });
    const first = await Orion.create({ profile: 'micro', database: `restore-a-${stamp}` });
    await first.memory.addMany([
      { text: 'Alice prefers green tea', kind: 'fact' },
      { text: 'The meeting moved to Thursday', kind: 'conversation', meta: { room: 'B' } },
      { text: 'Bob answered the survey', kind: 'feedback' },
      { text: 'Carol sails on weekends', kind: 'fact' },
    ]);
    const statsBefore = await first.memory.stats();
    const listBefore = await all(first);
    const backup = await first.backups.create({ label: 'before the cleanup' });
    const tea = listBefore.find((m) => m.text.includes('green tea'));
    await first.memory.delete(tea.id);
    await first.memory.purge({ kind: 'feedback' });
    const statsDeleted = await first.memory.stats();
    const indexEvents = [];
    first.on('memory_index', (event) => indexEvents.push({ loaded: event.loaded, done: event.done }));
    const restored = await first.backups.restore(backup.id, { clearExisting: true });
    const statsRestored = await first.memory.stats();
    const listRestored = await all(first);
    const hits = await first.memory.search('green tea', { k: 1 });

    // The exported file, as a File, into a second database.
    const text = await first.backups.export(backup.id);
    const second = await Orion.create({ profile: 'micro', database: `restore-b-${stamp}` });
    const imported = await second.backups.import(new File([text], 'backup.json', { type: 'application/json' }));
    const listImported = await all(second);
    const statsImported = await second.memory.stats();
    const secondHits = await second.memory.search('Carol sails on weekends', { k: 1 });

    // Corrupted files: refused with the path, and the database is unchanged.
    const listBeforeBad = await all(second);
    const refusals = [];
    // Strings, then Blobs (read as bytes in the worker): one with a byte that is not UTF-8.
    const notUtf8 = new Blob([text.slice(0, 200), new Uint8Array([0xff]), text.slice(200)]);
    const wrongKind = text.replace('"kind":"fact"', '"kind":7');
    for (const bad of [wrongKind, text.slice(0, text.length >> 1), text.replace(/"checksum":"sha256:[0-9a-f]/, '"checksum":"sha256:g'), notUtf8, new Blob([wrongKind])]) {
      try {
        await second.backups.import(bad, { clearExisting: true });
        refusals.push(null);
      } catch (error) {
        refusals.push({ code: error.code, message: error.message });
      }
    }
    const listAfterBad = await all(second);
    let badOption = null;
    try {
      await second.backups.import(text, { onConflict: 'merge' });
    } catch (error) {
      badOption = { code: error.code, message: error.message };
    }
    await first.close();
    await second.close();
    return {
      statsBefore, statsDeleted, statsRestored, statsImported, restored, imported, hits, secondHits,
      before: listBefore.map(same), restoredList: listRestored.map(same), importedList: listImported.map(same),
      listBeforeBad, listAfterBad, refusals, badOption, indexEvents,
    };
  }, { stamp });

  expect(outcome.statsDeleted.count).toBe(2);
  expect(outcome.restored).toEqual({ restored: 4, skipped: 0, replaced: 0, otherVersions: 0 });
  expect(outcome.statsRestored.count).toBe(outcome.statsBefore.count);
  expect(outcome.statsRestored.byKind).toEqual(outcome.statsBefore.byKind);
  expect(outcome.statsRestored.searchable).toBe(4);
  expect(outcome.restoredList).toEqual(outcome.before);
  expect(outcome.hits[0].text).toBe('Alice prefers green tea');
  expect(outcome.indexEvents).toContainEqual({ loaded: 4, done: true });

  expect(outcome.imported).toEqual({ restored: 4, skipped: 0, replaced: 0, otherVersions: 0 });
  expect(outcome.importedList).toEqual(outcome.before);
  expect(outcome.statsImported.count).toBe(4);
  expect(outcome.statsImported.searchable).toBe(4);
  expect(outcome.secondHits[0].text).toBe('Carol sails on weekends');

  for (const refusal of outcome.refusals) expect(refusal?.code).toBe('ERR_BACKUP_INVALID');
  expect(outcome.refusals[0].message).toContain('data.data[0].rows[');
  expect(outcome.refusals[0].message).toContain('].kind');
  expect(outcome.refusals[2].message).toContain('orion.checksum');
  expect(outcome.refusals[3].message).toContain('not UTF-8 text (at byte 200)');
  expect(outcome.refusals[4].message).toBe(outcome.refusals[0].message);
  expect(outcome.listAfterBad).toEqual(outcome.listBeforeBad);
  expect(outcome.badOption.code).toBe('ERR_INVALID_INPUT');
  expect(outcome.badOption.message).toContain('options.onConflict');
  expect(problems).toEqual([]);
});

test('a file larger than one message string imports in pieces, and over the budget nothing is written', async ({ page }, testInfo) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const stamp = `${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await page.evaluate(async ({ stamp }) => {
    const { Orion } = await import('/pkg/index.js');
    const first = await Orion.create({ profile: 'micro', database: `big-a-${stamp}` });
    await first.memory.addMany(Array.from({ length: 1500 }, (_, i) => ({ text: `memory number ${i} about ${'🍵é'.repeat(i % 7)} things`, kind: 'fact' })));
    const backup = await first.backups.create();
    const text = await first.backups.export(backup.id);
    const second = await Orion.create({ profile: 'micro', database: `big-b-${stamp}` });
    const imported = await second.backups.import(new Blob([text]));
    const stats = await second.memory.stats();
    const small = await Orion.create({ profile: 'micro', database: `big-c-${stamp}`, memory: { maxMemories: 1000 } });
    await small.memory.add('already here', { kind: 'fact' });
    let overBudget = null;
    try {
      await small.backups.import(text);
    } catch (error) {
      overBudget = { code: error.code, message: error.message };
    }
    const smallStats = await small.memory.stats();
    await Promise.all([first.close(), second.close(), small.close()]);
    return { length: text.length, imported, count: stats.count, overBudget, smallCount: smallStats.count };
  }, { stamp });
  expect(outcome.length).toBeGreaterThan(1 << 20);
  expect(outcome.imported.restored).toBe(1500);
  expect(outcome.count).toBe(1500);
  expect(outcome.overBudget?.code).toBe('ERR_INVALID_INPUT');
  expect(outcome.overBudget.message).toContain('maxMemories');
  expect(outcome.smallCount).toBe(1);
  expect(problems).toEqual([]);
});

const QUOTA_TEST_BYTES = 3_000_000;

test('out of quota, the oldest automatic backups make room: the write is tried again, then ERR_QUOTA with nothing else lost', async ({ page, context }, testInfo) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const cdp = await context.newCDPSession(page);
  const origin = new URL(page.url()).origin;
  const database = `quota-${testInfo.workerIndex}-${Date.now()}`;
  // A small disk, set before the origin first opens IndexedDB (which reads its quota then).
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: QUOTA_TEST_BYTES });
  try {
    // Memories of random text (IndexedDB compresses values), two automatic backups of them (the
    // backup job, run twice) and a manual one.
    const before = await page.evaluate(async ({ database }) => {
      const { Orion } = await import('/pkg/index.js');
      const orion = await Orion.create({ profile: 'micro', database, backups: { automatic: false } });
      globalThis.big = (i) => `${i} ${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(45_000))))}`;
      await orion.memory.addMany(Array.from({ length: 8 }, (_, i) => ({ text: globalThis.big(i) })));
      for (let n = 0; n < 2; n++) {
        const job = await orion.tasks.simple.schedule('orion.backup');
        for (let t = 0; (await orion.tasks.status(job.id)).state !== 'completed'; t++) {
          if (t > 200) throw new Error('the backup job did not complete');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      const manual = await orion.backups.create({ label: 'mine' });
      const list = await orion.backups.list();
      await orion.close();
      return { list, manual };
    }, { database });
    const autos = before.list.filter((b) => b.kind === 'auto');
    expect(autos).toHaveLength(2);
    const outcome = await page.evaluate(async ({ database }) => {
      const { Orion } = await import('/pkg/index.js');
      const orion = await Orion.create({ profile: 'micro', database, backups: { automatic: false } });
      const { big } = globalThis;
      let stored = 0;
      let error = null;
      for (let i = 100; i < 200 && !error; i++) {
        try {
          await orion.memory.add(big(i));
          stored += 1;
        } catch (e) {
          error = { code: e.code, message: e.message };
        }
      }
      const count = (await orion.memory.stats()).count;
      const list = await orion.backups.list();
      const verified = await Promise.all(list.map((b) => orion.backups.verify(b.id)));
      await orion.close();
      return { stored, error, count, list, verified };
    }, { database });
    expect(outcome.error?.code).toBe('ERR_QUOTA');
    expect(outcome.error.message).toContain('no automatic backup to delete');
    expect(outcome.stored).toBeGreaterThan(0);
    expect(outcome.count).toBe(8 + outcome.stored);
    // The older automatic backup went; the newest and the manual one are whole.
    expect(outcome.list.map((b) => b.id).sort()).toEqual([autos[0].id, before.manual.id].sort());
    expect(outcome.verified.every((v) => v.valid)).toBe(true);
    expect(problems).toEqual([]);
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  }
});
