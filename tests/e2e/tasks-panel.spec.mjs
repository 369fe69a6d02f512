// The demo's tasks panel: what it shows comes from `orion.tasks`, jobs run to completion with their
// progress, a failed job shows its error and can be retried, the schedule shows its next run.
import { test, expect } from '@playwright/test';
import { openDemo } from './helpers.mjs';

const STATES = ['waiting', 'delayed', 'paused', 'active', 'completed', 'failed', 'cancelled'];

// Records every state and progress the panel showed for job rows, from before a click on.
async function watchJobRows(page) {
  await page.evaluate(() => {
    globalThis.seen = {};
    const record = () => {
      for (const row of document.querySelectorAll('#task-jobs tr[data-job-id]')) {
        const seen = (globalThis.seen[row.dataset.jobId] ??= { states: [], progress: [] });
        const state = row.querySelector('td[data-state]')?.dataset.state;
        const progress = row.querySelector('td[data-progress]')?.dataset.progress;
        if (state && seen.states.at(-1) !== state) seen.states.push(state);
        if (progress !== undefined && seen.progress.at(-1) !== Number(progress)) seen.progress.push(Number(progress));
      }
    };
    new MutationObserver(record).observe(document.getElementById('task-jobs'), { childList: true, subtree: true });
  });
}

// Clicks `button` and answers the id of the job it scheduled.
async function clickAndGetJob(page, button) {
  const output = page.locator('#tasks-scheduled');
  const before = await output.getAttribute('data-last-job');
  await page.click(button);
  await expect.poll(() => output.getAttribute('data-last-job')).not.toBe(before);
  const id = await output.getAttribute('data-last-job');
  expect(id).toMatch(/^j[0-9a-f]{29}$/);
  return id;
}

// The panel's counts row of `queue`, cell by cell.
const panelCounts = (page, queue) => page.locator(`#task-queues tr[data-queue="${queue}"] td[data-count]`).evaluateAll(
  (cells) => Object.fromEntries(cells.map((td) => [td.dataset.count, Number(td.textContent)])),
);

test('a job runs to completion in the panel, with its progress, counts, leadership and the schedule', async ({ page }) => {
  const problems = await openDemo(page);
  const panel = page.locator('#tasks-panel');
  await expect(panel.getByRole('heading', { name: /^Tasks/ })).toBeVisible();
  await expect(page.locator('#tasks-leader')).toHaveAttribute('data-leader', 'true');
  await expect(page.locator('#tasks-leader')).toHaveText('this tab leads: it runs the jobs');

  // The schedule: defined by the page, its next run within its 60 s period, shown in local time.
  // It fires at each whole minute, possibly during the test: the panel and the API are read
  // together until they agree.
  const schedule = page.locator('#task-schedules tr[data-schedule-id="demo.heartbeat"]');
  await expect(schedule).toBeVisible();
  await expect(schedule.locator('td').nth(1)).toHaveText('every 60 s');
  await expect(schedule.locator('td').nth(2)).toHaveText('demo.tidy');
  await expect.poll(() => page.evaluate(async () => {
    const all = await window.orion.tasks.schedules.list();
    const now = Date.now();
    const heartbeat = all.find((s) => s.id === 'demo.heartbeat');
    const row = document.querySelector('#task-schedules tr[data-schedule-id="demo.heartbeat"]');
    const next = row.querySelector('td.next-run');
    const shown = {
      nextRunAt: Number(next.dataset.nextRunAt),
      text: next.textContent,
      datetime: next.querySelector('time')?.dateTime,
      fired: Number(row.querySelector('td[data-count="fired"]').textContent),
    };
    const expected = {
      nextRunAt: heartbeat.nextRunAt,
      text: new Date(heartbeat.nextRunAt).toLocaleTimeString(),
      datetime: new Date(heartbeat.nextRunAt).toISOString(),
      fired: heartbeat.count,
    };
    const future = heartbeat.nextRunAt > now && heartbeat.nextRunAt <= now + 60_000;
    return { ids: all.map((s) => s.id).sort(), agree: JSON.stringify(shown) === JSON.stringify(expected), future, shown, expected };
    // The demo's schedule, and ORION's own automatic backups.
  })).toMatchObject({ ids: ['demo.heartbeat', 'orion.backups.auto'], agree: true, future: true });

  await watchJobRows(page);
  const id = await clickAndGetJob(page, '#run-job');
  const row = page.locator(`#task-jobs tr[data-job-id="${id}"]`);
  await expect(row).toBeVisible();
  await expect(row.locator('td[data-state]')).toHaveText('completed', { timeout: 15_000 });
  await expect(row.locator('td[data-state]')).toHaveAttribute('data-state', 'completed');
  await expect(row.locator('td[data-progress]')).toHaveAttribute('data-progress', '100');
  await expect(row.locator('td[data-progress]')).toContainText('100%');
  expect(await row.locator('progress').evaluate((bar) => [bar.value, bar.max])).toEqual([100, 100]);
  await expect(row.locator('td').nth(1)).toHaveText('demo.tidy');
  await expect(row.locator('td').nth(4)).toHaveText('1');
  // The handler's result, as stored (key order is the store's).
  expect(JSON.parse(await row.locator('td').nth(6).textContent())).toEqual({ tidied: 4, source: 'button' });

  // While it ran, the panel showed it active with a progress between 0 and 100 (4 steps of 500 ms,
  // read every second).
  const seen = await page.evaluate((id) => globalThis.seen[id], id);
  expect(seen.states).toContain('active');
  expect(seen.states.at(-1)).toBe('completed');
  expect(seen.progress.some((p) => p > 0 && p < 100)).toBe(true);
  // Progress only grows.
  expect(seen.progress).toEqual([...seen.progress].sort((a, b) => a - b));

  // The counts are the API's, per queue and in total (read together, as the heartbeat may add a
  // demo.tidy job at any whole minute).
  await expect.poll(() => page.evaluate(async (states) => {
    const api = await window.orion.tasks.counts();
    // `state=count` in the panel's column order.
    const line = (counts) => states.map((state) => `${state}=${counts[state]}`).join(' ');
    const shown = (queue) => [...document.querySelectorAll(`#task-queues tr[data-queue="${queue}"] td[data-count]`)]
      .map((td) => `${td.dataset.count}=${td.textContent}`).join(' ');
    const queues = [...document.querySelectorAll('#task-queues tbody tr[data-queue]')].map((tr) => tr.dataset.queue);
    return {
      queues: JSON.stringify(queues) === JSON.stringify(Object.keys(api.jobs.queues).sort()),
      tidy: shown('demo.tidy') === line(api.jobs.queues['demo.tidy']),
      all: shown('*') === line(api.jobs.all),
      completed: api.jobs.queues['demo.tidy'].completed >= 1,
    };
  }, STATES)).toEqual({ queues: true, tidy: true, all: true, completed: true });
  expect(Object.keys(await panelCounts(page, '*'))).toEqual(STATES);
  await expect(page.locator('#task-failed tbody')).toContainText('no failed jobs');
  await expect(page.locator('#tasks-updated')).toHaveAttribute('data-read', 'ok');
  await expect(page.locator('#tasks-updated')).toContainText(/^\d+ jobs? stored; showing the newest \d+ and 0 of 0 failed · read at /);

  // A second tab on the same database does not lead, and shows the same job.
  const other = await page.context().newPage();
  const otherProblems = await openDemo(other);
  await expect(other.locator('#tasks-leader')).toHaveAttribute('data-leader', 'false');
  await expect(other.locator(`#task-jobs tr[data-job-id="${id}"] td[data-state]`)).toHaveText('completed');
  await expect(page.locator('#tasks-leader')).toHaveAttribute('data-leader', 'true');
  expect(otherProblems).toEqual([]);
  expect(problems).toEqual([]);
});

test('a failing job shows its error under failed; Retry runs it again and it fails again', async ({ page }) => {
  const problems = await openDemo(page);
  await watchJobRows(page);
  const id = await clickAndGetJob(page, '#run-failing');
  const failed = page.locator(`#task-failed tr[data-job-id="${id}"]`);
  await expect(failed).toBeVisible({ timeout: 15_000 });
  await expect(failed.locator('td.error')).toHaveText('demo.flaky: broken on purpose, not worth retrying');
  await expect(failed.locator('td').nth(1)).toHaveText('demo.flaky');
  // `retryable: false`: one attempt of the two it was allowed.
  await expect(failed.locator('td').nth(3)).toHaveText('1');
  await expect(page.locator(`#task-jobs tr[data-job-id="${id}"] td[data-state]`)).toHaveText('failed');
  await expect(page.locator(`#task-jobs tr[data-job-id="${id}"] td[data-progress]`)).toHaveAttribute('data-progress', '75');
  await expect.poll(() => panelCounts(page, 'demo.flaky')).toMatchObject({ failed: 1, completed: 0, active: 0 });
  const firstFailure = await page.evaluate((id) => window.orion.tasks.status(id), id);
  expect(firstFailure).toMatchObject({ state: 'failed', attempts: 1, error: 'demo.flaky: broken on purpose, not worth retrying' });

  // Retry: the job leaves the failed list, runs again (from progress 0), and fails again.
  const retry = failed.locator(`button[data-retry="${id}"]`);
  await expect(retry).toHaveAccessibleName(`Retry job ${id}`);
  await retry.click();
  await expect(page.locator('#log')).toContainText(`retrying demo.flaky ${id}: waiting`);
  await expect(failed).toHaveCount(0);
  await expect(page.locator('#task-failed tbody')).toContainText('no failed jobs');
  await expect(page.locator(`#task-jobs tr[data-job-id="${id}"] td[data-state]`)).toHaveText(/^(waiting|active)$/);
  await expect(failed).toBeVisible({ timeout: 15_000 });
  await expect(failed.locator('td.error')).toHaveText('demo.flaky: broken on purpose, not worth retrying');
  await expect(failed.locator('td').nth(3)).toHaveText('1');
  const secondFailure = await page.evaluate((id) => window.orion.tasks.status(id), id);
  expect(secondFailure).toMatchObject({ state: 'failed', attempts: 1 });
  expect(secondFailure.finishedAt).toBeGreaterThan(firstFailure.finishedAt);
  const seen = await page.evaluate((id) => globalThis.seen[id], id);
  expect(seen.states.lastIndexOf('failed')).toBeGreaterThan(seen.states.indexOf('failed'));
  const between = seen.states.slice(seen.states.indexOf('failed') + 1, seen.states.lastIndexOf('failed'));
  expect(between.length).toBeGreaterThan(0);
  expect(between.every((state) => state === 'waiting' || state === 'active')).toBe(true);
  await expect(failed.locator('button[data-retry]')).toBeEnabled();

  // The flaky job: its first attempt fails (retryably), the second completes; never listed failed.
  const flaky = await clickAndGetJob(page, '#run-flaky');
  const flakyRow = page.locator(`#task-jobs tr[data-job-id="${flaky}"]`);
  await expect(flakyRow.locator('td[data-state]')).toHaveText('completed', { timeout: 15_000 });
  await expect(flakyRow.locator('td').nth(4)).toHaveText('2');
  await expect(flakyRow.locator('td').nth(6)).toHaveText('{"succeededOnAttempt":2}');
  await expect(flakyRow.locator('td[data-progress]')).toHaveAttribute('data-progress', '100');
  await expect(page.locator(`#task-failed tr[data-job-id="${flaky}"]`)).toHaveCount(0);
  const flakySeen = await page.evaluate((id) => globalThis.seen[id], flaky);
  expect(flakySeen.states).not.toContain('failed');
  await expect.poll(() => panelCounts(page, 'demo.flaky')).toMatchObject({ failed: 1, completed: 1 });
  expect(problems).toEqual([]);
});
