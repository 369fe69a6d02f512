import { test, expect } from '@playwright/test';
import { openDemo } from './helpers.mjs';

// The one spec about the demo's service worker (blocked elsewhere: see playwright.config.mjs).
test.use({ serviceWorkers: 'allow' });

test('after one visit, a reload with the network cut still starts the orchestrator', async ({ page, context }) => {
  await openDemo(page);
  // Wait until the service worker controls the page (it claims clients on activation).
  await page.evaluate(async () => {
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      await new Promise((resolve) => navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true }));
    }
  });
  await context.setOffline(true);
  // The network really is gone: a request the cache cannot answer fails.
  const uncached = await page.evaluate(() => fetch('/not-cached.txt').then((r) => r.type, (e) => e.name));
  expect(['error', 'TypeError']).toContain(uncached);

  await page.reload();
  await expect(page.locator('#worker-status')).toHaveAttribute('data-state', 'ready');
  const pong = await page.evaluate(() => window.orion.ping('offline'));
  expect(pong.payload).toBe('offline');
  await expect(page.locator('#sw-status')).toContainText('works offline');
  await context.setOffline(false);
});
