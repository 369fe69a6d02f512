// Text generation through the npm API: the local SmolLM2 in the worker (loaded once for the
// local tests, which share one page), cancellation, a model that cannot load, and the page's own
// LLM function (a string, a stream, a hung one).
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

const MODEL = '/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf';

test.describe('the local model', () => {
  test.describe.configure({ mode: 'serial' });
  /** One page and one orchestrator for these tests: the 98 MB model loads once. */
  let context;
  let page;
  let problems;

  test.beforeAll(async ({ browser }, testInfo) => {
    const { baseURL, serviceWorkers } = testInfo.project.use;
    context = await browser.newContext({ baseURL, serviceWorkers });
    page = await context.newPage();
    problems = watchProblems(page);
    await page.goto('/fixture/blank.html');
    await page.evaluate(async (model) => {
      const { Orion } = await import('/pkg/index.js');
      globalThis.progress = [];
      globalThis.orion = await Orion.create({
        profile: 'micro',
        database: 'orion-llm-spec',
        models: { llm: model },
        onProgress: (e) => { if (e.kind === 'model_progress') globalThis.progress.push(e); },
      });
    }, MODEL);
  });

  test.afterAll(async () => {
    await page?.evaluate(() => globalThis.orion?.close());
    await context?.close();
  });

  test('greedy generation answers the question and streams the same text', async () => {
    const outcome = await page.evaluate(async () => {
      const before = globalThis.progress.length;
      const pieces = [];
      const result = await globalThis.orion.llm.generate(
        'What is the capital of France? Answer in one sentence.',
        { maxTokens: 16, onToken: (text) => pieces.push(text) },
      );
      const health = await globalThis.orion.health();
      return { result, pieces, before, progress: globalThis.progress, health };
    });
    expect(outcome.before, 'nothing downloads at create').toBe(0);
    expect(outcome.progress.some((e) => e.file === 'SmolLM2-135M-Instruct.Q4_1.gguf' && e.loaded === e.total)).toBe(true);
    expect(outcome.result.text.startsWith('The capital of France is Paris'), outcome.result.text).toBe(true);
    expect(outcome.pieces.length).toBeGreaterThan(1);
    expect(outcome.pieces.join('')).toBe(outcome.result.text);
    expect(outcome.result.promptTokens).toBeGreaterThan(0);
    expect(outcome.result.tokens).toBeLessThanOrEqual(16);
    expect(outcome.health.components.find((c) => c.name === 'generator')).toMatchObject({ status: 'healthy' });
    expect(problems).toEqual([]);
  });

  test('aborting after the first token resolves promptly with finish: cancelled', async () => {
    const outcome = await page.evaluate(async () => {
      const { OrionError } = await import('/pkg/index.js');
      const controller = new AbortController();
      let abortedAt = null;
      const pieces = [];
      const result = await globalThis.orion.llm.generate('Write a long story about a dragon and a knight.', {
        maxTokens: 200,
        signal: controller.signal,
        onToken: (text) => {
          pieces.push(text);
          if (abortedAt === null) {
            abortedAt = performance.now();
            controller.abort();
          }
        },
      });
      const latencyMs = performance.now() - abortedAt;
      let early = null;
      try {
        await globalThis.orion.llm.generate('Hello', { signal: AbortSignal.abort() });
      } catch (error) {
        early = { code: error.code, isOrionError: error instanceof OrionError };
      }
      return { result, latencyMs, pieces, early };
    });
    expect(outcome.result.finish).toBe('cancelled');
    expect(outcome.result.tokens).toBeLessThan(200);
    expect(outcome.result.text.startsWith(outcome.pieces[0])).toBe(true);
    expect(outcome.latencyMs).toBeLessThan(2_000);
    expect(outcome.early).toEqual({ code: 'ERR_CANCELLED', isOrionError: true });
    expect(problems).toEqual([]);
  });
});

test('a model that cannot load rejects ERR_MODEL_LOAD, shows in health, and the rest works', async ({ page }) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const outcome = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ profile: 'micro', database: 'orion-llm-missing', models: { llm: '/models/missing/nothing.gguf' } });
    const failures = [];
    for (let i = 0; i < 2; i += 1) {
      try {
        await orion.llm.generate('Hello');
        failures.push(null);
      } catch (error) {
        failures.push({ code: error.code, message: error.message });
      }
    }
    const health = await orion.health();
    const added = await orion.memory.add('the generator is down but memory works');
    const hits = await orion.memory.search('memory works', { k: 1 });
    const pong = await orion.ping('still here');
    await orion.close();
    return { failures, generator: health.components.find((c) => c.name === 'generator'), added, hits, pong };
  });
  for (const failure of outcome.failures) {
    expect(failure?.code).toBe('ERR_MODEL_LOAD');
    expect(failure?.message).toContain('/models/missing/nothing.gguf');
  }
  expect(outcome.generator).toMatchObject({ status: 'unhealthy', reason: { kind: 'unavailable' } });
  expect(outcome.generator.lastError).toContain('HTTP 404');
  expect(outcome.hits[0]?.id).toBe(outcome.added.id);
  expect(outcome.pong.payload).toBe('still here');
  // The browser logs the 404 itself; nothing else may go wrong.
  expect(problems.filter((p) => !p.includes('404'))).toEqual([]);
});

test('the page\'s llm function: a string, a stream, and a hung one that times out', async ({ page }) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const outcome = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const seen = [];
    let hungSignal = null;
    const llm = async ({ system, prompt, maxTokens, agent, signal }) => {
      seen.push({ system, prompt, maxTokens, agent });
      if (prompt === 'stream') {
        return (async function* pieces() {
          for (const piece of ['Hel', 'lo', ' world']) {
            await new Promise((resolve) => setTimeout(resolve, 5));
            yield piece;
          }
        })();
      }
      if (prompt === 'hang') {
        hungSignal = signal;
        return new Promise(() => {});
      }
      return `echo: ${prompt}`;
    };
    const orion = await Orion.create({
      profile: 'micro',
      database: 'orion-llm-host',
      // The host function wins over a model URL (which is never fetched).
      models: { llm: '/models/missing/never-fetched.gguf' },
      llm,
      llmOptions: { timeoutMs: 500, attempts: 2 },
    });
    const plain = await orion.llm.generate('hi', { system: 'Be brief.', maxTokens: 7 });
    const streamed = [];
    const stream = await orion.llm.generate({ prompt: 'stream', agent: 'creative' }, { onToken: (t) => streamed.push(t) });
    const started = performance.now();
    let hung = null;
    try {
      await orion.llm.generate('hang');
    } catch (error) {
      hung = { code: error.code, message: error.message, ms: performance.now() - started };
    }
    const many = await orion.llm.generateMany(['a', 'b']);
    const health = await orion.health();
    await orion.close();
    return { plain, stream, streamed, hung, hungAborted: hungSignal?.aborted ?? null, seen, many, generator: health.components.find((c) => c.name === 'generator') };
  });
  expect(outcome.plain.text).toBe('echo: hi');
  expect(outcome.seen[0]).toEqual({ system: 'Be brief.', prompt: 'hi', maxTokens: 7, agent: null });
  expect(outcome.stream.text).toBe('Hello world');
  expect(outcome.streamed).toEqual(['Hel', 'lo', ' world']);
  expect(outcome.seen[1].agent).toBe('creative');
  expect(outcome.hung?.code).toBe('ERR_TIMEOUT');
  expect(outcome.hung.ms).toBeGreaterThanOrEqual(450);
  expect(outcome.hung.ms).toBeLessThan(5_000);
  expect(outcome.hungAborted).toBe(true);
  expect(outcome.many.map((g) => g.text)).toEqual(['echo: a', 'echo: b']);
  expect(outcome.generator.totalFailures).toBe(1);
  expect(problems).toEqual([]);
});
