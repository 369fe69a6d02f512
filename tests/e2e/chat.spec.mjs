// The demo's chat and the `ask` pipeline behind it: a tool answer, a remembered fact found again
// by a debate of the local SmolLM2 on the full profile (stages in order, each agent's text in the
// debate view), Stop, a reload mid-answer, and the same debate on the page's own `llm` function.
// The chat tests share one page on `?profile=full`, so that the 98 MB model loads once.
import { test, expect } from '@playwright/test';
import { openDemo, watchProblems } from './helpers.mjs';

const DEBATE = ['tool_search', 'memory_search', 'multi_agent_parallel', 'multi_agent_critical', 'multi_agent_synthesis'];
const AGENTS = ['logical', 'creative', 'critical', 'synthesizer'];

/** Asks `query` in the chat; the new turn of the conversation. */
async function ask(page, query) {
  const turns = page.locator('#chat-log > li');
  const before = await turns.count();
  await page.fill('#chat-input', query);
  await page.click('#chat-ask');
  const turn = turns.nth(before);
  await expect(turn.locator('.question')).toContainText(query);
  return turn;
}

const stagesOf = (turn) => turn.locator('.stages [data-stage]').evaluateAll((items) => items.map((li) => li.dataset.stage));

test.describe('the chat panel', () => {
  test.describe.configure({ mode: 'serial' });
  let context;
  let page;
  let problems;

  test.beforeAll(async ({ browser }, testInfo) => {
    const { baseURL, serviceWorkers } = testInfo.project.use;
    context = await browser.newContext({ baseURL, serviceWorkers });
    page = await context.newPage();
    problems = await openDemo(page, '/?profile=full');
  });

  test.afterAll(async () => {
    await context?.close();
  });

  test('comes first, and a tool question is answered by the calculator', async () => {
    await expect(page.locator('main > section').first()).toHaveId('chat-panel');
    await expect(page.locator('#profile')).toContainText(/^full /);
    const turn = await ask(page, 'What is 12 * 7?');
    await expect(turn).toHaveAttribute('data-outcome', 'answered');
    await expect(turn).toHaveAttribute('data-route', 'tool');
    await expect(turn.locator('.response')).toContainText('84');
    await expect(turn.locator('.summary')).toContainText('confidence 1.00 · route tool · tool calculator');
    expect(await stagesOf(turn)).toEqual(['tool_search']);
    await expect(turn.locator('.debate')).toBeHidden();
    await expect(page.locator('#chat-status')).toHaveAttribute('data-stage', 'done');
    await expect(page.locator('#chat-input')).toHaveValue('');
    await expect(page.locator('#chat-ask')).toBeEnabled();
    await expect(page.locator('#chat-stop')).toBeDisabled();
    expect(problems).toEqual([]);
  });

  test('a fact remembered through the chat is found by a later question, answered by a debate', async () => {
    test.setTimeout(240_000);
    const remembered = await ask(page, 'Remember that my cat is called Miso');
    await expect(remembered).toHaveAttribute('data-outcome', 'answered');
    await expect(remembered.locator('.summary')).toContainText('tool remember');
    await expect(remembered.locator('.response')).toContainText('my cat is called Miso');

    // The stages the status line showed, and which agents had text while the answer was pending.
    await page.evaluate(() => {
      globalThis.chatStages = [];
      globalThis.streamed = new Set();
      const status = document.getElementById('chat-status');
      new MutationObserver(() => {
        if (globalThis.chatStages.at(-1) !== status.dataset.stage) globalThis.chatStages.push(status.dataset.stage);
      }).observe(status, { attributes: true, attributeFilter: ['data-stage'] });
      const chat = document.getElementById('chat-log');
      new MutationObserver(() => {
        for (const block of chat.querySelectorAll('.turn[data-outcome="pending"] [data-agent]')) {
          if (block.querySelector('.agent-text').textContent) globalThis.streamed.add(block.dataset.agent);
        }
      }).observe(chat, { childList: true, characterData: true, subtree: true });
    });
    // The first question that needs the model downloads and loads it.
    const turn = await ask(page, "What is my cat's name?");
    await expect(page.locator('#chat-stop')).toBeEnabled();
    await expect(turn).toHaveAttribute('data-outcome', 'answered', { timeout: 200_000 });
    await expect(turn).toHaveAttribute('data-route', 'debate');
    expect(await stagesOf(turn)).toEqual(DEBATE);
    const seen = await page.evaluate(() => ({ stages: globalThis.chatStages, streamed: [...globalThis.streamed] }));
    expect(seen.stages.filter((stage) => DEBATE.includes(stage)), seen.stages.join(' ')).toEqual(DEBATE);
    expect(seen.stages.at(-1)).toBe('done');
    for (const agent of AGENTS) {
      await expect(turn.locator(`[data-agent="${agent}"] .agent-text`), agent).not.toBeEmpty();
    }
    expect(seen.streamed.sort()).toEqual([...AGENTS].sort());
    // The panel names the agents the answer came from: the synthesis with its contributors, or,
    // when a 135M model's synthesis drifts off the question and an agent's own answer scores
    // clearly better (by design, see response_formatter.rs), that one agent and a note saying so.
    const agents = (await turn.locator('[data-detail="agents"]').textContent()).split(', ');
    if (agents.includes('synthesizer')) {
      expect(agents.length, agents.join(', ')).toBeGreaterThan(1);
    } else {
      expect(agents.length, agents.join(', ')).toBe(1);
      expect(['logical', 'creative', 'critical']).toContain(agents[0]);
      await expect(turn.locator('[data-detail="notes"]')).toContainText(
        new RegExp(`below the ${agents[0]} agent's|answered with the ${agents[0]} agent's answer`),
      );
    }
    const answer = await turn.locator('.response').textContent();
    const hits = await turn.locator('[data-detail="memory-hits"]').textContent();
    expect(`${answer}\n${hits}`).toContain('Miso');
    await expect(turn.locator('.summary')).toHaveText(/^confidence [01]\.\d\d · route debate · quality [01]\.\d\d( \(low\))? · \d+ ms$/);
    // The low-quality flag shows exactly when the answer's quality is low.
    const low = await turn.locator('.quality').getAttribute('data-low');
    expect((await turn.locator('.quality').textContent()).endsWith('(low)')).toBe(low === 'true');
    expect(problems).toEqual([]);
  });

  test('Stop cancels a debate and the error code is shown', async () => {
    test.setTimeout(120_000);
    const turn = await ask(page, 'Describe a walk along a beach at sunset.');
    await expect(turn.locator('[data-agent="logical"] .agent-text')).not.toBeEmpty({ timeout: 60_000 });
    await page.click('#chat-stop');
    await expect(turn).toHaveAttribute('data-outcome', 'cancelled', { timeout: 30_000 });
    await expect(turn.locator('.answer')).toHaveAttribute('data-error-code', 'ERR_CANCELLED');
    await expect(turn.locator('.answer')).toContainText('ERR_CANCELLED');
    await expect(page.locator('#chat-status')).toHaveAttribute('data-stage', 'cancelled');
    await expect(page.locator('#chat-ask')).toBeEnabled();
    expect(problems).toEqual([]);
  });

  test('reloading while an answer streams leaves the chat usable', async () => {
    test.setTimeout(120_000);
    const turn = await ask(page, 'Tell me about lighthouses and the people who kept them.');
    await expect(turn.locator('[data-agent="logical"] .agent-text')).not.toBeEmpty({ timeout: 60_000 });
    expect(await turn.getAttribute('data-outcome')).toBe('pending');
    await page.reload();
    await expect(page.locator('#worker-status')).toHaveAttribute('data-state', 'ready', { timeout: 90_000 });
    // A new page session: a new, empty conversation.
    await expect(page.locator('#chat-log > li')).toHaveCount(0);
    const next = await ask(page, 'What is 12 * 7?');
    await expect(next).toHaveAttribute('data-outcome', 'answered');
    await expect(next.locator('.response')).toContainText('84');
    expect(problems).toEqual([]);
  });
});

test('the debate runs on the page\'s llm function when one is given', async ({ page }) => {
  const problems = watchProblems(page);
  await page.goto('/fixture/blank.html');
  const outcome = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    // A deterministic text per agent; the synthesizer's streams in pieces.
    const texts = {
      logical: 'The Moon pulls on the oceans, so the water bulges toward it.',
      creative: 'Picture the Moon tugging the sea like a blanket across a bed.',
      critical: 'Both are right; neither mentions that the Sun adds a smaller pull.',
      synthesizer: 'Tides come mainly from the Moon\'s gravity pulling on the oceans, with a smaller pull from the Sun.',
    };
    const calls = [];
    const llm = async ({ agent, prompt }) => {
      calls.push({ agent, prompt });
      if (agent !== 'synthesizer') return texts[agent] ?? `unexpected agent ${agent}`;
      return (async function* pieces() {
        for (const piece of texts.synthesizer.split(/(?<= )/)) yield piece;
      })();
    };
    const orion = await Orion.create({
      profile: 'full',
      database: 'orion-chat-host-llm',
      models: { embedding: '/models/all-MiniLM-L6-v2/' },
      llm,
    });
    const stages = [];
    const streamed = {};
    const result = await orion.ask('Why does the sea have tides?', {
      conversationId: 'host-llm',
      onStatus: ({ stage }) => stages.push(stage),
      onToken: (text, agent) => { streamed[agent] = (streamed[agent] ?? '') + text; },
    });
    await orion.close();
    return { texts, calls, stages, streamed, result };
  });
  const { texts, calls, stages, streamed, result } = outcome;
  expect(stages).toEqual(DEBATE);
  expect(calls.map((call) => call.agent).sort()).toEqual([...AGENTS].sort());
  // Each stage read the one before: the critic the two answers, the synthesizer the critique.
  const prompt = (agent) => calls.find((call) => call.agent === agent).prompt;
  expect(prompt('critical')).toContain(texts.logical);
  expect(prompt('critical')).toContain(texts.creative);
  expect(prompt('synthesizer')).toContain(texts.critical);
  expect(streamed).toEqual(texts);
  expect(result.debug.route).toBe('debate');
  expect(result.debug.profile).toBe('full');
  expect(result.provenance.fromAgents).toEqual(['logical', 'creative', 'synthesizer']);
  expect(result.response).toBe(texts.synthesizer);
  expect(result.provenance.degraded).toEqual([]);
  expect(problems).toEqual([]);
});
