// One worker per database leads (it will run schedules and workflows): the holder of the Web Lock
// `orion-leader/<database>`. When its tab closes, another tab's worker takes over.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

const OPTIONS = { profile: 'micro' };

async function openTab(context, database) {
  const tab = await context.newPage();
  watchProblems(tab);
  await tab.goto('/fixture/blank.html');
  await tab.evaluate(async ({ options, database }) => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.leadership = [];
    globalThis.orion = await Orion.create({ ...options, database });
    globalThis.orion.on('leadership', (event) => globalThis.leadership.push(event.database));
  }, { options: OPTIONS, database });
  return tab;
}

const isLeader = (tab) => tab.evaluate(() => globalThis.orion.health().then((h) => h.leader));

// Polls the tabs until exactly one leads; returns its index and how long that took.
async function waitForOneLeader(tabs, limitMs) {
  const started = Date.now();
  for (;;) {
    const leaders = await Promise.all(tabs.map(isLeader));
    const count = leaders.filter(Boolean).length;
    expect(count).toBeLessThanOrEqual(1);
    if (count === 1) return { index: leaders.indexOf(true), ms: Date.now() - started };
    if (Date.now() - started > limitMs) return { index: -1, ms: Date.now() - started };
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

test('one of three tabs leads; when it closes another takes over within 2 s', async ({ context }, testInfo) => {
  const database = `leadership-${testInfo.workerIndex}-${Date.now()}`;
  const tabs = [];
  for (let i = 0; i < 3; i += 1) tabs.push(await openTab(context, database));

  const first = await waitForOneLeader(tabs, 2_000);
  expect(first.index).toBeGreaterThanOrEqual(0);
  const events = await Promise.all(tabs.map((tab) => tab.evaluate(() => globalThis.leadership)));
  expect(events.map((e) => e.length)).toEqual(tabs.map((_, i) => (i === first.index ? 1 : 0)));
  expect(events[first.index]).toEqual([database]);

  // The leader's tab closes: its worker ends with it and the lock passes on.
  const [closed] = tabs.splice(first.index, 1);
  await closed.close();
  const second = await waitForOneLeader(tabs, 2_000);
  expect(second.index, `no takeover within 2 s (${second.ms} ms)`).toBeGreaterThanOrEqual(0);
  expect(second.ms).toBeLessThan(2_000);
  testInfo.annotations.push({ type: 'takeover', description: `${second.ms} ms after the leader's tab closed` });

  // Closing the orchestrator (not the tab) releases it too.
  await tabs[second.index].evaluate(() => globalThis.orion.close());
  tabs.splice(second.index, 1);
  const [survivor] = tabs;
  const third = await waitForOneLeader([survivor], 2_000);
  expect(third.index).toBe(0);
  expect(await survivor.evaluate(() => globalThis.leadership)).toEqual([database]);

  // Another database has a leader of its own.
  const other = await openTab(context, `${database}-other`);
  expect((await waitForOneLeader([other], 2_000)).index).toBe(0);
  expect(await isLeader(survivor)).toBe(true);
});
