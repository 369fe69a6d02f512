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
    return { backup, list, verified, text, utf8Bytes: new TextEncoder().encode(text).length, schedules, missing };
  }, { database });

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
  expect(problems).toEqual([]);
});
