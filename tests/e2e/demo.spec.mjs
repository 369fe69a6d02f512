import { test, expect } from '@playwright/test';
import { openDemo } from './helpers.mjs';

test('the demo starts the worker and shows its status, versions and health', async ({ page }) => {
  const problems = await openDemo(page);
  await expect(page.locator('#worker-version')).toContainText('protocol v1');
  await expect(page.locator('#worker-version')).toContainText('client 0.1.0');
  const rows = page.locator('#health tbody tr');
  await expect(rows).toHaveCount(8);
  await expect(page.locator('tr[data-component="embedder"] td').nth(1)).toHaveText('healthy');
  await expect(page.locator('tr[data-component="tasks"] td').nth(1)).toHaveText('healthy');
  await expect(page.locator('tr[data-component="protocol"] td').nth(1)).toHaveText('healthy');
  await expect(page.locator('tr[data-component="runtime"] td').nth(1)).toHaveText('healthy');
  await expect(page.locator('tr[data-component="orchestrator"] td').nth(1)).toHaveText('healthy');
  await expect(page.locator('tr[data-component="tools"] td').nth(1)).toHaveText('healthy');
  await page.click('#ping');
  await expect(page.locator('#ping-result')).toContainText('pong in');
  await expect(page.locator('#log')).toContainText('pong: {"from":"demo"}');
  // Full or lite depending on the machine: either way a MiniLM embedder, not the fallback.
  await expect(page.locator('#profile')).toContainText(/all-MiniLM-L6-v2\/(f32|q8b32)\//);
  await page.click('#compare');
  await expect(page.locator('#similarity')).toContainText('cosine 0.');
  await expect(page.locator('#similarity')).toContainText('384 dims');
  expect(await page.evaluate(() => self.crossOriginIsolated)).toBe(true);
  expect(problems).toEqual([]);
});

test('the server sends a strict CSP, cross-origin isolation and correct MIME types', async ({ request }) => {
  const page = await request.get('/');
  const csp = page.headers()['content-security-policy'];
  expect(csp).toContain("script-src 'self' 'wasm-unsafe-eval'");
  expect(csp).not.toContain('unsafe-inline');
  expect(csp).not.toMatch(/'unsafe-eval'/);
  expect(page.headers()['cross-origin-opener-policy']).toBe('same-origin');
  expect(page.headers()['cross-origin-embedder-policy']).toBe('require-corp');
  expect(page.headers()['content-type']).toContain('text/html');
  const wasm = await request.get('/pkg/wasm/orion_web_bg.wasm');
  expect(wasm.headers()['content-type']).toBe('application/wasm');
  const js = await request.get('/pkg/worker.js');
  expect(js.headers()['content-type']).toContain('text/javascript');
  expect((await request.get('/pkg/../Cargo.toml')).status()).toBe(404);
});

test('the page has no inline script and runs no eval', async ({ page }) => {
  const violations = [];
  await page.exposeFunction('reportViolation', (v) => violations.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => window.reportViolation(`${e.violatedDirective}: ${e.blockedURI}`));
  });
  await openDemo(page);
  expect(await page.locator('script:not([src])').count()).toBe(0);
  await page.click('#ping');
  await expect(page.locator('#ping-result')).toContainText('pong');
  // The tasks panel renders rows (with a <progress>) and runs page code for a job.
  await page.click('#run-job');
  await expect(page.locator('#task-jobs tr[data-job-id] td[data-state="completed"]')).toHaveCount(1, { timeout: 15_000 });
  expect(violations).toEqual([]);
});
