// `cargo xtask bench embed`: ORION's embedders in one headless Chromium run on the 200-sentence
// reference corpus. Prints one JSON object with the figures (xtask writes docs/BENCHMARKS.md).
import { chromium } from '@playwright/test';
import { chromiumLaunchOptions } from './chromium.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node bench-embed.mjs <base url>');
  process.exit(2);
}

const browser = await chromium.launch(chromiumLaunchOptions);
try {
  const page = await browser.newPage();
  await page.goto(`${base}/fixture/blank.html`);
  const results = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const model = '/models/all-MiniLM-L6-v2/';
    const { sentences } = await (await fetch('/reference/minilm-reference.json')).json();
    const out = { browser: navigator.userAgent, sentences: sentences.length, profiles: {} };
    // Fill Cache Storage first, so "cold start" below measures a start from the cache.
    const warm = await Orion.create({ models: { embedding: model }, profile: 'full' });
    await warm.close();
    for (const profile of ['full', 'lite', 'micro']) {
      const started = performance.now();
      const orion = await Orion.create({ models: { embedding: model }, profile });
      await orion.embed(['first']);
      const coldStartMs = performance.now() - started;
      let t = performance.now();
      for (const s of sentences) await orion.embed([s]);
      const oneAtATime = sentences.length / ((performance.now() - t) / 1000);
      t = performance.now();
      for (let i = 0; i < sentences.length; i += 32) await orion.embed(sentences.slice(i, i + 32));
      const batched = sentences.length / ((performance.now() - t) / 1000);
      const info = await orion.profile();
      await orion.close();
      out.profiles[profile] = { coldStartMs, oneAtATime, batched, version: info.embedding.version };
    }
    return out;
  });
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
