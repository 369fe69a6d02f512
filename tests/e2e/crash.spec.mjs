import { test, expect } from '@playwright/test';
import { openDemo } from './helpers.mjs';

test('a panic rejects every pending call with ERR_WORKER_CRASHED and the next call starts a fresh worker', async ({ page }) => {
  await openDemo(page);
  const outcome = await page.evaluate(async () => {
    const { orion } = window;
    const settled = await Promise.allSettled([orion.debug.crash(), orion.ping(1), orion.health()]);
    const rejected = settled.map((s) => (s.status === 'rejected' ? { name: s.reason.name, code: s.reason.code, isError: s.reason instanceof Error } : s));
    const after = await orion.ping('after');
    const health = await orion.health();
    return { rejected, after: after.payload, runtimeCalls: health.components.find((c) => c.name === 'runtime').totalCalls };
  });
  for (const r of outcome.rejected) {
    expect(r).toEqual({ name: 'OrionError', code: 'ERR_WORKER_CRASHED', isError: true });
  }
  expect(outcome.after).toBe('after');
  // A fresh worker: its health history starts over (init, ping, health).
  expect(outcome.runtimeCalls).toBeLessThanOrEqual(3);
  await expect(page.locator('#worker-status')).toHaveAttribute('data-state', 'ready');
  await expect(page.locator('#log')).toContainText('worker crashed: ERR_WORKER_CRASHED');
});

test('the demo shows a crash and recovers on the next call', async ({ page }) => {
  await openDemo(page);
  await page.click('#crash');
  await expect(page.locator('#worker-status')).toHaveAttribute('data-state', 'crashed');
  await page.click('#ping');
  await expect(page.locator('#worker-status')).toHaveAttribute('data-state', 'ready');
  await expect(page.locator('#ping-result')).toContainText('pong');
});

test('crash is refused unless debug is on; close rejects later calls; a missing worker fails to start', async ({ page }) => {
  await openDemo(page);
  const outcome = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const code = (promise) => promise.then(() => 'resolved', (e) => e.code);
    const plain = await Orion.create();
    const crash = await code(plain.debug.crash());
    const stillServing = (await plain.ping('x')).payload;
    const pending = plain.ping('in flight');
    await plain.close();
    const closedPending = await code(pending);
    const closedLater = await code(plain.ping());
    const badStart = await code(Orion.create({ workerUrl: '/no-such-worker.js' }));
    return { crash, stillServing, closedPending, closedLater, badStart };
  });
  expect(outcome).toEqual({
    crash: 'ERR_DEBUG_DISABLED',
    stillServing: 'x',
    closedPending: 'ERR_CLOSED',
    closedLater: 'ERR_CLOSED',
    badStart: 'ERR_WORKER_START',
  });
});

test('a worker that never loads is replaced once; if that one hangs too, create fails with ERR_WORKER_START', async ({ page }) => {
  await page.goto('/fixture/blank.html');
  const outcome = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const code = (promise) => promise.then(() => 'resolved', (e) => `${e.code}: ${e.message}`);
    const started = performance.now();
    // The first start of this script hangs; the client gives up on it after 1.5 s and starts again.
    const orion = await Orion.create({ profile: 'micro', workerUrl: '/fixture/workers/hang-once.js', startTimeoutMs: 1500 });
    const createdMs = performance.now() - started;
    const pong = (await orion.ping('after a hang')).payload;
    await orion.close();
    const silent = await code(Orion.create({ workerUrl: '/fixture/workers/silent.js', startTimeoutMs: 300 }));
    const badOption = await code(Orion.create({ startTimeoutMs: -1 }));
    return { createdMs, pong, silent, badOption };
  });
  expect(outcome.pong).toBe('after a hang');
  expect(outcome.createdMs).toBeGreaterThanOrEqual(1500);
  expect(outcome.silent).toMatch(/^ERR_WORKER_START: .*did not load within 300 ms/);
  expect(outcome.badOption).toMatch(/^ERR_INVALID_MESSAGE: .*startTimeoutMs/);
});
