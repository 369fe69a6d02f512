// The demo's backups panel: a backup taken from the panel is listed, verified, downloaded as a
// file, restored and deleted; the file imports back through the file input with a progress bar;
// a damaged file is refused with its error. Everything the panel shows comes from `orion.backups`.
import { readFile } from 'node:fs/promises';
import { test, expect } from '@playwright/test';
import { openDemo } from './helpers.mjs';

const MEMORIES = ['Alice prefers green tea', 'The meeting moved to Thursday', 'Carol sails on weekends'];

test('the backups panel takes, verifies, downloads, restores, deletes and imports backups', async ({ page }) => {
  const problems = await openDemo(page, '/?profile=micro');
  const panel = page.locator('#backups-panel');
  const status = page.locator('#backup-status');
  await expect(panel.getByRole('heading', { name: 'Backups' })).toBeVisible();
  await expect(page.locator('#backup-create')).toBeEnabled();
  await expect(panel.locator('tbody')).toContainText('no backups yet');
  await expect(page.locator('#storage')).toContainText(/persist.* · [\d.]+ MB of \d+ MB used/);
  await page.evaluate((texts) => window.orion.memory.addMany(texts.map((text) => ({ text, kind: 'fact' }))), MEMORIES);
  const count = () => page.evaluate(async () => (await window.orion.memory.stats()).count);
  // Every state the progress bar shows, from here on.
  await page.evaluate(() => {
    const bar = document.getElementById('backup-progress');
    globalThis.bars = [];
    new MutationObserver(() => globalThis.bars.push({ hidden: bar.hidden, value: bar.getAttribute('value'), max: bar.max }))
      .observe(bar, { attributes: true });
  });

  await page.fill('#backup-label', 'before the cleanup');
  await page.click('#backup-create');
  await expect(status).toHaveAttribute('data-phase', 'done');
  await expect(status).toContainText('3 memories');
  const row = panel.locator('tbody tr', { hasText: 'before the cleanup' });
  await expect(row).toBeVisible();
  await expect(row.locator('td').nth(1)).toHaveText('manual');
  await expect(row.locator('td').nth(4)).toHaveText('3');
  await expect(page.locator('#backup-stats')).toContainText('1 stored (0 automatic');
  const [listed] = await page.evaluate(() => window.orion.backups.list());
  await expect(row.locator('td').first()).toHaveText(listed.id);

  await row.getByRole('button', { name: /^Verify/ }).click();
  await expect(status).toHaveText(`${listed.id} is valid`);

  const downloading = page.waitForEvent('download');
  await row.getByRole('button', { name: /^Download/ }).click();
  const download = await downloading;
  expect(download.suggestedFilename()).toMatch(/^orion-backup-\d{4}-\d\d-\d\dT[\d-]+Z\.json$/);
  await expect(status).toHaveText(`saved ${download.suggestedFilename()}`);
  const path = await download.path();
  const file = JSON.parse(await readFile(path, 'utf8'));
  expect(file.orion.backupId).toBe(listed.id);
  expect(file.orion.itemCount).toBe(3);

  await page.evaluate(() => window.orion.memory.purge());
  expect(await count()).toBe(0);
  await row.getByRole('button', { name: /^Restore/ }).click();
  await expect(status).toContainText(`restored ${listed.id}: 3 memories written`);
  expect(await count()).toBe(3);

  await row.getByRole('button', { name: /^Delete/ }).click();
  await expect(status).toHaveText(`deleted ${listed.id}`);
  await expect(panel.locator('tbody')).toContainText('no backups yet');

  // The downloaded file, imported through the file input over an emptied store.
  await page.evaluate(() => window.orion.memory.purge());
  await page.evaluate(() => {
    globalThis.bars = [];
  });
  await page.check('#backup-clear');
  await page.setInputFiles('#backup-import', path);
  await expect(status).toContainText('imported');
  await expect(status).toHaveAttribute('data-phase', 'done');
  await expect(status).toContainText('3 memories written');
  expect(await count()).toBe(3);
  const bars = await page.evaluate(() => globalThis.bars);
  // Shown, counting up to the 3 memories the file announces, then hidden.
  expect(bars.some((bar) => !bar.hidden && bar.max === 3 && bar.value === '3')).toBe(true);
  expect(bars.at(-1).hidden).toBe(true);
  const hits = await page.evaluate(() => window.orion.memory.search('green tea', { k: 1 }));
  expect(hits[0].text).toBe('Alice prefers green tea');

  // A damaged file: refused with its path, and the memories stay as they are.
  await page.setInputFiles('#backup-import', { name: 'broken.json', mimeType: 'application/json', buffer: Buffer.from('{"formatName":"dexie","formatVersion":1,"data":{') });
  await expect(status).toHaveAttribute('data-phase', 'error');
  await expect(status).toContainText('ERR_BACKUP_INVALID');
  expect(await count()).toBe(3);
  await expect(page.locator('#backup-import')).toBeEnabled();
  expect(problems).toEqual([]);
});
