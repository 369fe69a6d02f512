// `orion.ask` through the npm API in a real worker: built-in tools, the page's own tools, the
// debate over the page's LLM function (a deterministic double), cancellation and bad input.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

const EMBEDDING = '/models/all-MiniLM-L6-v2/';

/** A page with an orchestrator made by `setup` (a function run in the page, given `arg`). */
async function withOrion(browser, testInfo, setup, arg) {
  const { baseURL, serviceWorkers } = testInfo.project.use;
  const context = await browser.newContext({ baseURL, serviceWorkers });
  const page = await context.newPage();
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  await page.evaluate(setup, arg);
  return { context, page, problems };
}

test('built-in tools answer exactly, with their status, on micro', async ({ browser }, testInfo) => {
  const { context, page, problems } = await withOrion(browser, testInfo, async () => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.orion = await Orion.create({ profile: 'micro', database: 'orion-ask-tools' });
  });
  const answers = await page.evaluate(async () => {
    const ask = async (query) => {
      const stages = [];
      const answer = await globalThis.orion.ask(query, { timeZone: 'UTC', onStatus: ({ stage }) => stages.push(stage) });
      return { answer, stages };
    };
    return {
      product: await ask('What is 12 * 7?'),
      exact: await ask('What is 1/3 + 1/6?'),
      miles: await ask('Convert 5 km to miles'),
      weekday: await ask('What day of the week is 2027-01-01?'),
      chat: await ask('Tell me a story about 3 dragons'),
    };
  });
  expect(answers.product.answer.response).toContain('84');
  expect(answers.product.answer).toMatchObject({ confidence: 1, provenance: { toolUsed: 'calculator' }, debug: { route: 'tool', profile: 'micro' } });
  expect(answers.product.stages).toEqual(['tool_search']);
  expect(answers.exact.answer.response).toMatch(/\b(1\/2|0\.5)\b/);
  expect(answers.miles.answer.provenance.toolUsed).toBe('convert_units');
  expect(answers.miles.answer.response).toContain('3.106856');
  expect(answers.weekday.answer.provenance.toolUsed).toBe('date_time');
  expect(answers.weekday.answer.response).toContain('Friday');
  // Not a tool's question: micro answers from its templates, after searching memory.
  expect(answers.chat.answer.provenance.toolUsed).toBeNull();
  expect(answers.chat.answer.debug.route).toBe('fallback');
  expect(answers.chat.stages).toEqual(['tool_search', 'memory_search']);
  expect(problems).toEqual([]);
  await context.close();
});

test('a page tool is chosen by similarity, called with its arguments, and its failure degrades', async ({ browser }, testInfo) => {
  const { context, page, problems } = await withOrion(browser, testInfo, async () => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.calls = [];
    globalThis.orion = await Orion.create({
      profile: 'micro',
      database: 'orion-ask-host-tools',
      tools: [
        {
          name: 'weather',
          description: 'Current weather for a city',
          examples: ['What is the weather in Oslo today?'],
          parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
          run: async (args) => { globalThis.calls.push(args); return { text: 'Sunny and 12 degrees', celsius: 12 }; },
        },
        {
          name: 'stock_price',
          description: 'Stock price for a ticker symbol',
          examples: ['What is the stock price of ACME right now?'],
          parameters: { type: 'object', properties: { symbol: { type: 'string' } }, required: ['symbol'] },
          run: async () => { throw Object.assign(new Error('the market is closed'), { retryable: false }); },
        },
      ],
    });
  });
  const outcome = await page.evaluate(async () => ({
    weather: await globalThis.orion.ask('What is the weather in Oslo today?'),
    stock: await globalThis.orion.ask('What is the stock price of ACME right now?'),
    calls: globalThis.calls,
    health: await globalThis.orion.health(),
  }));
  expect(outcome.weather.response).toBe('Sunny and 12 degrees');
  expect(outcome.weather.provenance.toolUsed).toBe('weather');
  expect(outcome.calls).toEqual([{ city: 'What is the weather in Oslo today' }]);
  expect(outcome.stock.provenance.toolUsed).toBeNull();
  expect(outcome.stock.provenance.degraded).toContain('stock_price');
  expect(outcome.stock.debug.notes.join(' ')).toContain('the market is closed');
  expect(outcome.health.components.find((c) => c.name === 'tools').totalFailures).toBeGreaterThan(0);
  expect(problems).toEqual([]);
  await context.close();
});

test('on full the debate runs over the page LLM, in order, and can be cancelled', async ({ browser }, testInfo) => {
  test.setTimeout(120_000);
  const { context, page, problems } = await withOrion(browser, testInfo, async (embedding) => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.agents = [];
    globalThis.orion = await Orion.create({
      profile: 'full',
      database: 'orion-ask-debate',
      models: { embedding },
      llm: async ({ agent, prompt, signal }) => {
        globalThis.agents.push(agent);
        if (prompt.includes('never answer')) {
          await new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));
        }
        return `The ${agent} agent says Paris is the capital of France.`;
      },
    });
  }, EMBEDDING);
  const outcome = await page.evaluate(async () => {
    const stages = [];
    const tokens = new Set();
    const answer = await globalThis.orion.ask('What is the capital of France?', {
      onStatus: ({ stage }) => stages.push(stage),
      onToken: (_text, agent) => tokens.add(agent),
    });
    const controller = new AbortController();
    const pending = globalThis.orion.ask('Please never answer this question about France', { signal: controller.signal });
    setTimeout(() => controller.abort(), 300);
    const cancelled = await pending.then(() => null, (error) => error.code);
    return { answer, stages, tokens: [...tokens].sort(), agents: globalThis.agents, cancelled };
  });
  expect(outcome.stages).toEqual(['tool_search', 'memory_search', 'multi_agent_parallel', 'multi_agent_critical', 'multi_agent_synthesis']);
  expect(outcome.agents.slice(0, 4).sort()).toEqual(['creative', 'critical', 'logical', 'synthesizer']);
  expect(outcome.tokens).toEqual(['creative', 'critical', 'logical', 'synthesizer']);
  expect(outcome.answer.debug.route).toBe('debate');
  expect(outcome.answer.response).toBe('The synthesizer agent says Paris is the capital of France.');
  expect(outcome.answer.provenance.fromAgents).toContain('synthesizer');
  expect(outcome.answer.debug.quality.signals.map((s) => s.name)).toContain('agreement');
  expect(outcome.cancelled).toBe('ERR_CANCELLED');
  expect(problems).toEqual([]);
  await context.close();
});

test('bad questions and bad tools are refused with their field', async ({ browser }, testInfo) => {
  const { context, page, problems } = await withOrion(browser, testInfo, async () => {
    const { Orion } = await import('/pkg/index.js');
    globalThis.Orion = Orion;
    globalThis.orion = await Orion.create({ profile: 'micro', database: 'orion-ask-bad' });
  });
  const codes = await page.evaluate(async () => {
    const code = (promise) => promise.then(() => 'resolved', (error) => `${error.code}: ${error.message}`);
    return {
      empty: await code(globalThis.orion.ask('   ')),
      zone: await code(globalThis.orion.ask('What time is it?', { timeZone: 'Mars/Olympus' })),
      option: await code(globalThis.orion.ask('hi', { nope: 1 })),
      noRun: await code(globalThis.Orion.create({ profile: 'micro', tools: [{ name: 'x', description: 'x', parameters: { type: 'object' } }] })),
      badSchema: await code(globalThis.Orion.create({ profile: 'micro', database: 'orion-ask-bad-2', tools: [{ name: 'x', description: 'x', parameters: { type: 'nonsense' }, run: () => 1 }] })),
    };
  });
  expect(codes.empty).toMatch(/^ERR_INVALID_INPUT: .*query/);
  expect(codes.zone).toMatch(/^ERR_INVALID_INPUT: .*timeZone/);
  expect(codes.option).toMatch(/^ERR_INVALID_INPUT: .*nope/);
  expect(codes.noRun).toMatch(/^ERR_INVALID_INPUT: .*tools\[0\]\.run/);
  expect(codes.badSchema).toMatch(/^ERR_INVALID_INPUT: .*tools\[0\]\.parameters/);
  expect(problems).toEqual([]);
  await context.close();
});

test('a debate interrupted by a reload is finished from its checkpoint by the next page, which keeps its answer', async ({ browser }, testInfo) => {
  test.setTimeout(120_000);
  const { baseURL, serviceWorkers } = testInfo.project.use;
  const context = await browser.newContext({ baseURL, serviceWorkers });
  const page = await context.newPage();
  const problems = watchProblems(page);
  const database = `orion-ask-reload-${testInfo.workerIndex}-${Date.now()}`;
  const query = 'What is the capital of France?';
  // The page's LLM double: each page records the agents it was asked for; the first page's
  // critic never answers, so the page reloads while the debate waits for it.
  const open = async (hangCritic) => {
    await page.goto('/fixture/blank.html');
    await page.evaluate(async ({ embedding, database, hangCritic }) => {
      const { Orion } = await import('/pkg/index.js');
      globalThis.agents = [];
      globalThis.orion = await Orion.create({
        profile: 'full',
        database,
        models: { embedding },
        tasks: { leaseMs: 1_000 },
        llm: async ({ agent, signal }) => {
          globalThis.agents.push(agent);
          if (hangCritic && agent === 'critical') {
            await new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));
          }
          return `The ${agent} agent says Paris is the capital of France.`;
        },
      });
      for (let i = 0; i < 200 && !(await globalThis.orion.health()).leader; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }, { embedding: EMBEDDING, database, hangCritic });
  };
  await open(true);
  await page.evaluate((query) => {
    globalThis.stages = [];
    globalThis.orion.ask(query, { onStatus: ({ stage }) => globalThis.stages.push(stage) }).catch(() => {});
  }, query);
  await page.waitForFunction(() => globalThis.stages.includes('multi_agent_critical') && globalThis.agents.includes('critical'));
  const during = await page.evaluate(() => globalThis.orion.tasks.list({ source: 'workflow' }));
  const debate = during.items.find((t) => t.name === 'orion.debate');
  expect(debate).toMatchObject({ state: 'running', step: 'critical' });

  await open(false);
  const kept = await page.evaluate(async () => {
    for (let i = 0; i < 240; i += 1) {
      const found = (await globalThis.orion.memory.list({ kind: 'conversation' })).items.find((m) => m.meta?.resumed);
      if (found) return found;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return null;
  });
  expect(kept?.text).toBe(`Q: ${query}\nA: The synthesizer agent says Paris is the capital of France.`);
  // The workflow is marked completed in the tick after its last step kept the memory.
  const after = await page.evaluate(async (id) => {
    let status = await globalThis.orion.tasks.status(id);
    for (let i = 0; i < 100 && status.state !== 'completed'; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = await globalThis.orion.tasks.status(id);
    }
    return { status, agents: globalThis.agents, answer: await globalThis.orion.ask('What is 6 * 7?') };
  }, debate.id);
  expect(after.status).toMatchObject({ state: 'completed', step: null });
  // The logical and creative answers came from the checkpoint: only the later agents ran here.
  expect(after.agents).toEqual(['critical', 'synthesizer']);
  expect(after.answer.response).toContain('42');
  expect(problems).toEqual([]);
  await context.close();
});
