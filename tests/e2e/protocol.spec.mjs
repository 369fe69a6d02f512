// The worker protocol, spoken directly to pkg/worker.js the way the client does, with every kind
// of malformed message. After each one the worker must still answer.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

test.beforeEach(async ({ page }) => {
  watchProblems(page);
  await page.goto('/');
  await page.evaluate(() => {
    const worker = new Worker('/pkg/worker.js', { type: 'module' });
    const answers = [];
    const waiting = [];
    worker.onmessage = (e) => {
      if (e.data.type === 'event' || e.data.type === 'loaded') return;
      const next = waiting.shift();
      if (next) next(e.data);
      else answers.push(e.data);
    };
    // Posts `message` and resolves with the worker's next answer (response or error).
    window.exchange = (message) => {
      worker.postMessage(message);
      return answers.length ? Promise.resolve(answers.shift()) : new Promise((resolve) => waiting.push(resolve));
    };
    window.rawWorker = worker;
  });
});

const exchange = (page, message) => page.evaluate((m) => window.exchange(m), message);
const ping = (page, id) => exchange(page, { v: 1, id, type: 'ping', payload: id });

async function expectServing(page, id) {
  const answer = await ping(page, id);
  expect(answer).toMatchObject({ type: 'response', id, result: { payload: id } });
}

test('init, ping, version and health round-trip with their ids', async ({ page }) => {
  expect(await exchange(page, { v: 1, id: 1, type: 'init' })).toMatchObject({
    type: 'response', v: 1, id: 1, result: { protocol: 1, core: '0.1.0', web: '0.1.0' },
  });
  await expectServing(page, 2);
  const health = await exchange(page, { v: 1, id: 3, type: 'health' });
  expect(health.result.components.map((c) => c.name)).toEqual(['embedder', 'generator', 'orchestrator', 'protocol', 'runtime', 'store', 'tasks', 'tools']);
});

test('every kind of malformed message gets an error answer and the worker keeps serving', async ({ page }) => {
  expect((await exchange(page, { v: 1, id: 1, type: 'init' })).type).toBe('response');
  const cases = [
    ['unknown type', { v: 1, id: 10, type: 'launch' }, { id: 10, code: 'ERR_INVALID_MESSAGE', text: 'launch' }],
    ['missing type', { v: 1, id: 11 }, { id: 11, code: 'ERR_INVALID_MESSAGE', text: '`type`' }],
    ['missing id', { v: 1, type: 'ping' }, { id: null, code: 'ERR_INVALID_MESSAGE', text: '`id`' }],
    ['missing version', { id: 12, type: 'ping' }, { id: 12, code: 'ERR_INVALID_MESSAGE', text: '`v`' }],
    ['mistyped field', { v: 1, id: 13, type: 'ping', payload: 1, extra: true }, { id: 13, code: 'ERR_INVALID_MESSAGE', text: 'extra' }],
    ['mistyped version', { v: '1', id: 14, type: 'ping' }, { id: 14, code: 'ERR_INVALID_MESSAGE', text: '`v`' }],
    ['newer protocol', { v: 2, id: 15, type: 'ping' }, { id: 15, code: 'ERR_UNSUPPORTED_PROTOCOL', text: 'version 2' }],
    ['string id', { v: 1, id: 'abc', type: 'ping' }, { id: null, code: 'ERR_INVALID_MESSAGE', text: '`id`' }],
    ['negative id', { v: 1, id: -1, type: 'ping' }, { id: null, code: 'ERR_INVALID_MESSAGE', text: '`id`' }],
    ['not an object', 'ping', { id: null, code: 'ERR_INVALID_MESSAGE', text: 'request object' }],
    ['null', null, { id: null, code: 'ERR_INVALID_MESSAGE', text: 'request object' }],
    ['second init', { v: 1, id: 16, type: 'init' }, { id: 16, code: 'ERR_INIT_ORDER', text: 'init' }],
  ];
  let next = 100;
  for (const [name, message, expected] of cases) {
    const answer = await exchange(page, message);
    expect(answer.type, name).toBe('error');
    expect(answer.id, name).toBe(expected.id);
    expect(answer.error.code, name).toBe(expected.code);
    expect(answer.error.message, name).toContain(expected.text);
    await expectServing(page, next++);
  }
});

test('a 50 MB string, a cyclic value and non-JSON objects are refused before they reach wasm', async ({ page }) => {
  expect((await exchange(page, { v: 1, id: 1, type: 'init' })).type).toBe('response');
  const answers = await page.evaluate(async () => {
    const huge = 'x'.repeat(50 * 1024 * 1024);
    const cyclic = { name: 'loop' };
    cyclic.self = cyclic;
    return {
      huge: await window.exchange({ v: 1, id: 20, type: 'ping', payload: { text: huge } }),
      cyclic: await window.exchange({ v: 1, id: 21, type: 'ping', payload: cyclic }),
      map: await window.exchange({ v: 1, id: 22, type: 'ping', payload: [1, new Map([[1, 2]])] }),
      date: await window.exchange({ v: 1, id: 23, type: 'ping', payload: { when: new Date(0) } }),
      typed: await window.exchange({ v: 1, id: 24, type: 'ping', payload: new Float32Array(4) }),
    };
  });
  expect(answers.huge).toMatchObject({ type: 'error', id: 20, error: { code: 'ERR_MESSAGE_TOO_LARGE' } });
  expect(answers.huge.error.message).toContain('payload.text');
  expect(answers.huge.error.message).toContain('52428800');
  expect(answers.cyclic).toMatchObject({ type: 'error', id: 21, error: { code: 'ERR_MESSAGE_TOO_LARGE' } });
  expect(answers.cyclic.error.message).toContain('payload.self.self');
  expect(answers.map).toMatchObject({ id: 22, error: { code: 'ERR_INVALID_MESSAGE' } });
  expect(answers.map.error.message).toContain('payload[1]');
  expect(answers.map.error.message).toContain('Map');
  expect(answers.date.error.message).toContain('Date');
  expect(answers.typed.error.message).toContain('Float32Array');
  await expectServing(page, 30);
  const health = await exchange(page, { v: 1, id: 31, type: 'health' });
  const protocol = health.result.components.find((c) => c.name === 'protocol');
  expect(protocol.totalFailures).toBe(5);
});

test('a value the page cannot clone is refused by the client with ERR_INVALID_MESSAGE', async ({ page }) => {
  const outcome = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create();
    let raw;
    try {
      window.rawWorker.postMessage({ v: 1, id: 1, type: 'ping', payload: () => 1 });
      raw = 'sent';
    } catch (error) {
      raw = error.name;
    }
    const viaClient = await orion.ping({ f: () => 1 }).then(() => 'resolved', (e) => e.code);
    const after = (await orion.ping('still here')).payload;
    await orion.close();
    return { raw, viaClient, after };
  });
  expect(outcome).toEqual({ raw: 'DataCloneError', viaClient: 'ERR_INVALID_MESSAGE', after: 'still here' });
});

test('messages posted before the wasm has loaded are queued, not lost', async ({ page }) => {
  const answers = await page.evaluate(async () => {
    const worker = new Worker('/pkg/worker.js', { type: 'module' });
    const got = [];
    const done = new Promise((resolve) => {
      worker.onmessage = (e) => {
        if (e.data.type !== 'event') got.push(e.data);
        if (got.length === 4) resolve();
      };
    });
    worker.postMessage({ v: 1, id: 1, type: 'init' });
    worker.postMessage({ v: 1, id: 2, type: 'ping', payload: 'a' });
    worker.postMessage({ v: 1, id: 3, type: 'ping', payload: 'b' });
    await done;
    worker.terminate();
    return got.map((m) => [m.type, m.id ?? null]);
  });
  // The worker says it loaded before it answers anything.
  expect(answers[0]).toEqual(['loaded', null]);
  // `init` answers once the embedder is ready, so it may come after the pings: compare as a set.
  expect(answers.slice(1).sort((a, b) => a[1] - b[1])).toEqual([['response', 1], ['response', 2], ['response', 3]]);
});
