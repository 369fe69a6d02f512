// Shared by the end-to-end specs.
import { expect } from '@playwright/test';

/** Opens the demo page (at `path`) and waits until its orchestrator is ready; fails on any page error. */
export async function openDemo(page, path = '/') {
  const problems = watchProblems(page);
  await page.goto(path);
  // Each test has a fresh browser context, so the first start downloads and loads the 90 MB model:
  // on a busy 2-core machine that can take well over the default wait.
  await expect(page.locator('#worker-status')).toHaveAttribute('data-state', 'ready', { timeout: 90_000 });
  return problems;
}

/**
 * Collects page errors, CSP violations and console errors (except the worker's own report of a
 * requested panic and the client's report of a message the worker refused, which tests provoke).
 */
export function watchProblems(page) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    const text = message.text();
    if (message.type() !== 'error') return;
    if (text.includes('ORION worker panicked') || text.includes('ORION: the worker refused')) return;
    problems.push(`console error: ${text}`);
  });
  return problems;
}
