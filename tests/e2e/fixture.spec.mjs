// A separate app installs the packed npm tarball by file path (`cargo xtask test` runs `npm pack`
// and `npm install`) and uses it the way a user's app would.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

test('an app that installed the npm tarball creates ORION, pings, reads health and version, and closes', async ({ page }) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/');
  await expect(page.locator('#result')).toHaveAttribute('data-done', 'true');
  const result = JSON.parse(await page.locator('#result').textContent());
  expect(result.error).toBeUndefined();
  expect(result.pong).toEqual({ hello: 'from the fixture', n: [1, 2, 3] });
  expect(result.version).toMatchObject({ protocol: 1, client: '0.1.0', core: '0.1.0', web: '0.1.0' });
  
  expect(result.health.components.map((c) => c.name)).toEqual(['embedder', 'generator', 'orchestrator', 'protocol', 'runtime', 'store', 'tasks', 'tools']);
  // No model URL given: the hashing embedder, with its own version.
  expect(result.embedding.length).toBe(384);
  expect(result.profile.active).toBe('micro');
  expect(result.profile.embedding.version).toBe('orion-hashing-v1/384');
  expect(result.afterClose).toBe('ERR_CLOSED');
  expect(result.installedFrom).toContain('node_modules/orion-orchestrator');
  expect(problems).toEqual([]);
});
