// `cargo xtask demo --headless`: drives the demo page through a short scripted session in headless
// Chromium and prints what the page showed. Exits non-zero on any failure.
import { chromium } from '@playwright/test';
import { chromiumLaunchOptions } from './chromium.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node demo-headless.mjs <base url>');
  process.exit(2);
}

const problems = [];
const browser = await chromium.launch(chromiumLaunchOptions);
try {
  const page = await browser.newPage();
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().includes('ORION worker panicked')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  const step = async (title, action) => {
    process.stdout.write(`- ${title}: `);
    const shown = await action();
    console.log(shown);
  };
  const text = (selector) => page.locator(selector).innerText();
  const waitFor = (selector, state) => page.locator(`${selector}[data-state="${state}"]`).waitFor({ timeout: 20_000 });

  await step('open the demo', async () => {
    await page.goto(`${base}/`);
    await waitFor('#worker-status', 'ready');
    return `worker ${await text('#worker-status')}; ${await text('#worker-version')}`;
  });
  await step('ping', async () => {
    await page.click('#ping');
    await page.locator('#ping-result', { hasText: 'pong' }).waitFor();
    return await text('#ping-result');
  });
  await step('profile', async () => await text('#profile'));
  await step('ask the chat a tool question', async () => {
    const question = 'What is 12 * 7?';
    await page.locator('#chat-ask:not([disabled])').waitFor();
    await page.fill('#chat-input', question);
    await page.click('#chat-ask');
    const turn = page.locator('#chat-log > li:not([data-outcome="pending"])').first();
    await turn.waitFor({ timeout: 20_000 });
    const answer = await turn.locator('.answer').innerText();
    if (await turn.getAttribute('data-outcome') !== 'answered') throw new Error(`the chat did not answer: ${answer}`);
    return `"${question}" → "${answer}"; ${await turn.locator('.summary').innerText()}`;
  });
  await step('compare two sentences', async () => {
    await page.click('#compare');
    await page.locator('#similarity', { hasText: 'cosine' }).waitFor();
    return `"${await page.inputValue('#text-a')}" vs "${await page.inputValue('#text-b')}": ${await text('#similarity')}`;
  });
  await step('remember and search', async () => {
    await page.click('#remember');
    await page.locator('#memory-stats', { hasText: /[1-9]\d* memor/ }).waitFor();
    await page.click('#recall');
    await page.locator('#memory-results li').first().waitFor();
    const top = await page.locator('#memory-results li').first().innerText();
    return `"${await page.inputValue('#memory-query')}" → ${top}; ${await text('#memory-stats')}`;
  });
  await step('run a background job', async () => {
    await page.locator('#run-job:not([disabled])').waitFor({ timeout: 20_000 });
    await page.click('#run-job');
    const row = page.locator('#tasks-panel tr[data-job-id]', { has: page.locator('td[data-state="completed"]') }).first();
    await row.waitFor({ timeout: 20_000 });
    const cells = await row.locator('td').allInnerTexts();
    return `${cells.slice(0, 3).join(' | ')}; ${await text('#tasks-leader')}; ${await text('#tasks-updated')}`;
  });
  await step('generate with the local model', async () => {
    await page.click('#llm-generate');
    // The first generation downloads and loads the 98 MB model.
    await page.locator('#llm-output', { hasText: 'Paris' }).waitFor({ timeout: 120_000 });
    await page.locator('#llm-status[data-finish]').waitFor({ timeout: 120_000 });
    return `"${await page.inputValue('#llm-prompt')}" → "${await text('#llm-output')}"; ${await text('#llm-status')}`;
  });
  await step('health table', async () => {
    await page.click('#refresh');
    await page.locator('#health tbody tr').first().waitFor();
    const rows = await page.locator('#health tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.cells].slice(0, 2).map((td) => td.textContent).join(' ')));
    return `${await text('#health-overall')} (${rows.join(', ')})`;
  });
  await step('crash the worker', async () => {
    await page.click('#crash');
    await waitFor('#worker-status', 'crashed');
    return await text('#worker-status');
  });
  await step('ping after the crash', async () => {
    await page.click('#ping');
    await waitFor('#worker-status', 'ready');
    await page.locator('#ping-result', { hasText: 'pong' }).waitFor();
    return `${await text('#ping-result')}; worker ${await text('#worker-status')}`;
  });
  await step('event log', async () => {
    const items = await page.locator('#log li').allInnerTexts();
    return `\n    ${items.reverse().join('\n    ')}`;
  });
} catch (error) {
  problems.push(error.message);
} finally {
  await browser.close();
}

if (problems.length) {
  console.error(`\nthe demo session failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('\nthe demo session passed');
