// The demo's local model panel: Generate streams SmolLM2's answer into the output and shows the
// finish reason, token counts and speeds; Stop cancels a long generation. One page for both tests,
// so that the 98 MB model loads once.
import { test, expect } from '@playwright/test';
import { openDemo } from './helpers.mjs';

test.describe('the local model panel', () => {
  test.describe.configure({ mode: 'serial' });
  let context;
  let page;
  let problems;
  let warnings;

  test.beforeAll(async ({ browser }, testInfo) => {
    const { baseURL, serviceWorkers } = testInfo.project.use;
    context = await browser.newContext({ baseURL, serviceWorkers });
    page = await context.newPage();
    warnings = [];
    page.on('console', (message) => {
      // Playwright's own note that it blocks the demo's service worker (see playwright.config.mjs).
      if (message.type() === 'warning' && !message.text().includes('Service Worker registration blocked by Playwright')) {
        warnings.push(message.text());
      }
    });
    problems = await openDemo(page);
  });

  test.afterAll(async () => {
    await context?.close();
  });

  test('Generate streams the answer and shows how it finished', async () => {
    test.setTimeout(240_000);
    const panel = page.locator('#llm-panel');
    await expect(panel.getByRole('heading', { name: 'Local model' })).toBeVisible();
    await expect(panel.locator('.hint')).toContainText('SmolLM2-135M');
    await expect(page.locator('#llm-prompt')).toHaveValue('What is the capital of France? Answer in one sentence.');
    await expect(page.locator('#llm-stop')).toBeDisabled();

    // Every length the output had, and every status shown, from the click on.
    await page.evaluate(() => {
      globalThis.lengths = [];
      globalThis.statuses = [];
      globalThis.stopEnabled = false;
      const output = document.getElementById('llm-output');
      const status = document.getElementById('llm-status');
      new MutationObserver(() => {
        if (globalThis.lengths.at(-1) !== output.textContent.length) globalThis.lengths.push(output.textContent.length);
        if (output.textContent && !document.getElementById('llm-stop').disabled) globalThis.stopEnabled = true;
      }).observe(output, { childList: true, characterData: true, subtree: true });
      new MutationObserver(() => {
        if (globalThis.statuses.at(-1) !== status.textContent) globalThis.statuses.push(status.textContent);
      }).observe(status, { childList: true, characterData: true, subtree: true });
    });
    await page.click('#llm-generate');
    await expect(page.locator('#llm-generate')).toBeDisabled();
    await expect(page.locator('#llm-status')).toHaveAttribute('data-finish', /.+/, { timeout: 180_000 });
    await expect(page.locator('#llm-output')).toContainText('Paris');
    const status = page.locator('#llm-status');
    await expect(status).toHaveAttribute('data-finish', 'endOfTurn');
    await expect(status).toHaveText(/^finish endOfTurn · \d+ prompt tokens · \d+ generated · prefill [\d.]+ tok\/s · decode [\d.]+ tok\/s$/);
    await expect(page.locator('#llm-generate')).toBeEnabled();
    await expect(page.locator('#llm-stop')).toBeDisabled();

    const seen = await page.evaluate(() => ({ lengths: globalThis.lengths, statuses: globalThis.statuses, stopEnabled: globalThis.stopEnabled }));
    // The text grew piece by piece before the call resolved.
    expect(seen.lengths.filter((n) => n > 0).length, JSON.stringify(seen.lengths)).toBeGreaterThan(2);
    expect(seen.stopEnabled).toBe(true);
    // The model was downloaded (or read from the cache) with its progress shown in the panel.
    expect(seen.statuses.some((s) => /SmolLM2-135M-Instruct\.Q4_1\.gguf/.test(s)), seen.statuses.join('\n')).toBe(true);
    expect(seen.statuses.some((s) => s.includes('loading the model'))).toBe(true);
    expect(seen.statuses).toContain('generating…');
    await expect(page.locator('#log')).toContainText(/generated \d+ tokens \(finish endOfTurn\)/);
    expect(problems).toEqual([]);
    expect(warnings).toEqual([]);
  });

  test('Stop cancels a long generation', async () => {
    test.setTimeout(120_000);
    await page.fill('#llm-prompt', 'Write a long story about a dragon.');
    await page.click('#llm-generate');
    await expect(page.locator('#llm-stop')).toBeEnabled();
    await expect(page.locator('#llm-output')).not.toBeEmpty({ timeout: 60_000 });
    const before = await page.locator('#llm-output').textContent();
    await page.click('#llm-stop');
    const status = page.locator('#llm-status');
    await expect(status).toHaveAttribute('data-finish', 'cancelled', { timeout: 30_000 });
    await expect(status).toHaveText(/^finish cancelled · \d+ prompt tokens · \d+ generated · /);
    const generated = Number((await status.textContent()).match(/(\d+) generated/)[1]);
    // Stopped long before its 128 tokens.
    expect(generated).toBeGreaterThan(0);
    expect(generated).toBeLessThan(128);
    const after = await page.locator('#llm-output').textContent();
    expect(after.startsWith(before), `${before} / ${after}`).toBe(true);
    await expect(page.locator('#llm-generate')).toBeEnabled();
    await expect(page.locator('#llm-stop')).toBeDisabled();
    await expect(page.locator('#log')).toContainText('stopping the generation');
    expect(problems).toEqual([]);
    expect(warnings).toEqual([]);
  });
});
