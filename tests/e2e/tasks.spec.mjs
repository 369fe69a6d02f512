// Background tasks through the npm API, in real tabs on IndexedDB: jobs whose handlers run in the
// leader tab's page, workflows that resume after a reload without re-running a completed step,
// cancellation reaching the handler's AbortSignal, schema checks before anything is stored.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

// A short lease, so that a run lost with its tab is taken back within the test.
const OPTIONS = { profile: 'micro', tasks: { leaseMs: 1_000 } };

// Opens a tab on `database` with its orchestrator in `globalThis.orion` and the page's task code
// defined: `echo` (a job recording what it ran in `globalThis.ran`), `slow` (a job that waits for
// its signal) and `order` (a workflow counting its step runs in localStorage, whose `charge` step
// hangs while `localStorage.hang` is set).
async function openTab(context, database) {
  const tab = await context.newPage();
  const problems = watchProblems(tab);
  await tab.goto('/fixture/blank.html');
  await tab.evaluate(async ({ options, database }) => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.ran = [];
    globalThis.aborted = [];
    const orion = await Orion.create({ ...options, database });
    globalThis.orion = orion;
    await orion.tasks.simple.define('echo', async (payload, context) => {
      globalThis.ran.push({ payload, attempt: context.attempt, key: context.idempotencyKey });
      await context.progress(50);
      return { echoed: payload.text };
    }, {
      concurrency: 2,
      schema: { type: 'object', required: ['text'], properties: { text: { type: 'string', maxLength: 20 } } },
    });
    await orion.tasks.simple.define('slow', (payload, context) => new Promise((resolve, reject) => {
      context.signal.addEventListener('abort', () => {
        globalThis.aborted.push(context.taskId);
        reject(context.signal.reason);
      });
    }));
    const count = (name) => {
      const runs = JSON.parse(localStorage.getItem('runs') ?? '{}');
      runs[name] = (runs[name] ?? 0) + 1;
      localStorage.setItem('runs', JSON.stringify(runs));
    };
    await orion.tasks.complex.define('order', {
      schema: { type: 'object', required: ['sku'] },
      steps: [
        { name: 'reserve', run: (input) => { count('reserve'); return { held: input.sku }; } },
        {
          name: 'charge',
          run: (input, context) => {
            count('charge');
            if (localStorage.getItem('hang')) return new Promise(() => {});
            return { paid: context.results.reserve.held };
          },
        },
      ],
    });
  }, { options: OPTIONS, database });
  return { tab, problems };
}

const isLeader = (tab) => tab.evaluate(() => globalThis.orion.health().then((h) => h.leader));

async function waitFor(read, predicate, what, limitMs = 10_000) {
  const started = Date.now();
  for (;;) {
    const value = await read();
    if (predicate(value)) return value;
    if (Date.now() - started > limitMs) throw new Error(`timed out waiting for ${what}: last ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('a job scheduled in any tab runs once, in the leader tab', async ({ context }, testInfo) => {
  const database = `tasks-jobs-${testInfo.workerIndex}-${Date.now()}`;
  const tabs = [await openTab(context, database), await openTab(context, database)];
  const leaders = await waitFor(() => Promise.all(tabs.map(({ tab }) => isLeader(tab))), (l) => l.filter(Boolean).length === 1, 'a leader');
  const leader = tabs[leaders.indexOf(true)].tab;
  const other = tabs[leaders.indexOf(false)].tab;

  const ids = await other.evaluate(async () => {
    const jobs = [];
    for (let i = 0; i < 5; i += 1) jobs.push(await globalThis.orion.tasks.simple.schedule('echo', { text: `hello ${i}` }, { priority: 5 }));
    return jobs.map((job) => job.id);
  });
  for (const id of ids) {
    const status = await waitFor(() => other.evaluate((id) => globalThis.orion.tasks.status(id), id), (s) => s?.state === 'completed', `job ${id}`);
    expect(status.source).toBe('queue');
    expect(status.progress).toBe(50);
    expect(status.result.echoed).toMatch(/^hello \d$/);
  }
  const ranInLeader = await leader.evaluate(() => globalThis.ran.map((r) => r.payload.text).sort());
  expect(ranInLeader).toEqual([0, 1, 2, 3, 4].map((i) => `hello ${i}`));
  expect(await other.evaluate(() => globalThis.ran.length)).toBe(0);

  // A jobId already present is not added again.
  const [first, again] = await other.evaluate(async () => [
    await globalThis.orion.tasks.simple.schedule('echo', { text: 'once' }, { jobId: 'only-once' }),
    await globalThis.orion.tasks.simple.schedule('echo', { text: 'twice' }, { jobId: 'only-once' }),
  ]);
  expect(again.id).toBe(first.id);
  await waitFor(() => leader.evaluate(() => globalThis.orion.tasks.status('only-once')), (s) => s?.state === 'completed', 'only-once');
  expect(await leader.evaluate(() => globalThis.ran.filter((r) => r.key === 'only-once').length)).toBe(1);
  for (const { problems } of tabs) expect(problems).toEqual([]);
});

test('a payload that breaks the schema is refused with the field named, and nothing is stored', async ({ context }, testInfo) => {
  const { tab, problems } = await openTab(context, `tasks-schema-${testInfo.workerIndex}-${Date.now()}`);
  const refused = await tab.evaluate(async () => {
    const errors = [];
    for (const payload of [{}, { text: 7 }, { text: 'x'.repeat(21) }]) {
      try {
        await globalThis.orion.tasks.simple.schedule('echo', payload);
        errors.push(null);
      } catch (error) {
        errors.push({ code: error.code, message: error.message });
      }
    }
    try {
      await globalThis.orion.tasks.simple.schedule('nobody-defined-this', {});
    } catch (error) {
      errors.push({ code: error.code, message: error.message });
    }
    return { errors, counts: await globalThis.orion.tasks.counts() };
  });
  expect(refused.errors.map((e) => e?.code)).toEqual(Array(4).fill('ERR_INVALID_INPUT'));
  expect(refused.errors[0].message).toContain('`payload`');
  expect(refused.errors[1].message).toContain('`payload.text`');
  expect(refused.errors[2].message).toContain('`payload.text`');
  expect(refused.errors[3].message).toContain('`name`');
  expect(refused.counts.jobs.all).toEqual({ waiting: 0, delayed: 0, paused: 0, active: 0, completed: 0, failed: 0, cancelled: 0 });
  expect(problems).toEqual([]);
});

test('cancelling a running job aborts its handler\'s signal', async ({ context }, testInfo) => {
  const { tab, problems } = await openTab(context, `tasks-cancel-${testInfo.workerIndex}-${Date.now()}`);
  await waitFor(() => isLeader(tab), Boolean, 'leadership');
  const job = await tab.evaluate(() => globalThis.orion.tasks.simple.schedule('slow', null));
  await waitFor(() => tab.evaluate((id) => globalThis.orion.tasks.status(id), job.id), (s) => s?.state === 'active', 'the job to start');
  const cancelled = await tab.evaluate((id) => globalThis.orion.tasks.cancel(id), job.id);
  expect(['active', 'cancelled']).toContain(cancelled.state);
  await waitFor(() => tab.evaluate((id) => globalThis.orion.tasks.status(id), job.id), (s) => s?.state === 'cancelled', 'the job to end cancelled');
  expect(await tab.evaluate(() => globalThis.aborted)).toEqual([job.id]);
  expect(problems).toEqual([]);
});

test('a workflow resumes after a reload without re-running its completed step', async ({ context }, testInfo) => {
  const database = `tasks-workflow-${testInfo.workerIndex}-${Date.now()}`;
  const { tab, problems } = await openTab(context, database);
  await waitFor(() => isLeader(tab), Boolean, 'leadership');
  await tab.evaluate(() => localStorage.setItem('hang', '1'));
  const flow = await tab.evaluate(() => globalThis.orion.tasks.complex.schedule('order', { sku: 'kettle' }, { workflowId: 'order-1' }));
  expect(flow).toMatchObject({ id: 'order-1', source: 'workflow', state: 'running' });
  await waitFor(() => tab.evaluate(() => JSON.parse(localStorage.getItem('runs') ?? '{}')), (runs) => runs.charge === 1, 'the charge step to start');
  const during = await tab.evaluate(() => globalThis.orion.tasks.status('order-1'));
  expect(during).toMatchObject({ state: 'running', step: 'charge', progress: 50 });

  // The page reloads mid-step: its worker dies with the step unanswered.
  await tab.evaluate(() => localStorage.removeItem('hang'));
  await tab.reload();
  const reopened = await openTab(context, database);
  await tab.close();
  const done = await waitFor(() => reopened.tab.evaluate(() => globalThis.orion.tasks.status('order-1')), (s) => s?.state === 'completed', 'the workflow to complete', 15_000);
  expect(done.result).toEqual({ paid: 'kettle' });
  expect(await reopened.tab.evaluate(() => JSON.parse(localStorage.getItem('runs')))).toEqual({ reserve: 1, charge: 2 });
  expect(problems).toEqual([]);
  expect(reopened.problems).toEqual([]);
});

test('a worker killed after the handler finished but before the outcome was saved: the job runs again under the same idempotency key, and its effect happens once', async ({ context }, testInfo) => {
  const tab = await context.newPage();
  const problems = watchProblems(tab);
  await tab.goto('/fixture/blank.html');
  const database = `tasks-crash-${testInfo.workerIndex}-${Date.now()}`;
  const outcome = await tab.evaluate(async ({ options, database }) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ ...options, database, debug: true });
    const calls = [];
    const effects = new Map();
    let crashed = false;
    await orion.tasks.simple.define('pay', async (payload, context) => {
      calls.push({ attempt: context.attempt, key: context.idempotencyKey });
      // The side effect, made once per idempotency key.
      if (!effects.has(context.idempotencyKey)) effects.set(context.idempotencyKey, payload.amount);
      if (!crashed) {
        crashed = true;
        // The handler is done; the worker dies before it hears so.
        await orion.debug.crash().catch(() => {});
      }
      return { paid: payload.amount };
    });
    const leader = async () => {
      for (let i = 0; i < 100; i += 1) {
        if ((await orion.health()).leader) return true;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return false;
    };
    await leader();
    const job = await orion.tasks.simple.schedule('pay', { amount: 42 });
    let status = null;
    for (let i = 0; i < 200; i += 1) {
      // Calls after the crash start a fresh worker, which re-learns the task and leads.
      status = await orion.tasks.status(job.id);
      if (status?.state === 'completed') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { status, calls, effects: [...effects.entries()], jobId: job.id };
  }, { options: OPTIONS, database });
  expect(outcome.status.state).toBe('completed');
  expect(outcome.status.result).toEqual({ paid: 42 });
  expect(outcome.calls.map((c) => c.attempt)).toEqual([1, 2]);
  expect(outcome.calls.map((c) => c.key)).toEqual([outcome.jobId, outcome.jobId]);
  expect(outcome.effects).toEqual([[outcome.jobId, 42]]);
  expect(problems).toEqual([]);
});

test('a failure-rate alert reaches the page and the health report', async ({ context }, testInfo) => {
  const { tab, problems } = await openTab(context, `tasks-alert-${testInfo.workerIndex}-${Date.now()}`);
  await waitFor(() => isLeader(tab), Boolean, 'leadership');
  const alert = await tab.evaluate(async () => {
    const { orion } = globalThis;
    await orion.tasks.simple.define('doomed', () => {
      throw Object.assign(new Error('always fails'), { retryable: false });
    });
    const firing = new Promise((resolve) => orion.on('alert', (event) => event.state === 'firing' && resolve(event)));
    await orion.tasks.monitoring.configureAlerts({ taskFailureRate: { threshold: 0.5, window: 60_000 } });
    await orion.tasks.simple.schedule('doomed', null);
    const event = await firing;
    const health = await orion.health();
    const metrics = await orion.tasks.monitoring.getMetrics({ windowMs: 60_000 });
    return { event, health: health.alerts, doomed: metrics.queues.find((q) => q.queue === 'doomed') };
  });
  expect(alert.event).toMatchObject({ kind: 'alert', rule: 'taskFailureRate', subject: 'doomed', state: 'firing', value: 1, threshold: 0.5 });
  expect(alert.health).toEqual([expect.objectContaining({ rule: 'taskFailureRate', subject: 'doomed', state: 'firing' })]);
  expect(alert.doomed).toMatchObject({ failed: 1, finalFailed: 1, completed: 0, failureRate: 1 });
  expect(problems).toEqual([]);
});

test('of three tabs, when the leader closes mid-job another takes the job over and completes it', async ({ context }, testInfo) => {
  const database = `tasks-takeover-${testInfo.workerIndex}-${Date.now()}`;
  const tabs = [];
  for (let i = 0; i < 3; i += 1) tabs.push(await openTab(context, database));
  for (const { tab } of tabs) {
    await tab.evaluate(() => globalThis.orion.tasks.simple.define('handover', (payload, context) => {
      globalThis.ran.push({ attempt: context.attempt });
      // The first tab to run it never finishes: it closes mid-job.
      if (context.attempt === 1) return new Promise(() => {});
      return { by: 'the new leader' };
    }));
  }
  const leaders = await waitFor(() => Promise.all(tabs.map(({ tab }) => isLeader(tab))), (l) => l.filter(Boolean).length === 1, 'a leader');
  const [leader] = tabs.splice(leaders.indexOf(true), 1);
  const job = await tabs[0].tab.evaluate(() => globalThis.orion.tasks.simple.schedule('handover', null));
  await waitFor(() => leader.tab.evaluate(() => globalThis.ran.length), (n) => n === 1, 'the leader to start the job');
  const closedAt = Date.now();
  await leader.tab.close();
  const done = await waitFor(() => tabs[0].tab.evaluate((id) => globalThis.orion.tasks.status(id), job.id), (s) => s?.state === 'completed', 'the takeover', 10_000);
  const ms = Date.now() - closedAt;
  testInfo.annotations.push({ type: 'takeover', description: `job completed ${ms} ms after the leader's tab closed (lease 1 s)` });
  expect(done.result).toEqual({ by: 'the new leader' });
  expect(done.attempts).toBe(2);
  const runs = await Promise.all(tabs.map(({ tab }) => tab.evaluate(() => globalThis.ran.map((r) => r.attempt))));
  expect(runs.flat()).toEqual([2]);
  for (const { problems } of [leader, ...tabs]) expect(problems).toEqual([]);
});
