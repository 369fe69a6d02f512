// Embeddings through the npm API, in the worker, against PyTorch's reference vectors; model
// loading from the network, then from Cache Storage with the network blocked; bad model URLs.
import { test, expect } from '@playwright/test';
import { watchProblems } from './helpers.mjs';

const MODEL = '/models/all-MiniLM-L6-v2/';

test.beforeEach(async ({ page }) => {
  await page.goto('/fixture/blank.html');
  await page.evaluate(() => globalThis.caches.delete('orion-models-v1'));
});

test('orion.embed matches PyTorch on all 200 reference sentences', async ({ page }) => {
  const problems = watchProblems(page);
  const outcome = await page.evaluate(async (model) => {
    const { Orion } = await import('/pkg/index.js');
    const reference = await (await fetch('/reference/minilm-reference.json')).json();
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full' });
    const vectors = await orion.embed(reference.sentences);
    const cosines = vectors.map((v, i) => {
      const r = reference.embeddings[i];
      let dot = 0, nv = 0, nr = 0;
      for (let k = 0; k < v.length; k += 1) { dot += v[k] * r[k]; nv += v[k] * v[k]; nr += r[k] * r[k]; }
      return dot / Math.sqrt(nv * nr);
    });
    const profile = await orion.profile();
    await orion.close();
    return {
      count: vectors.length,
      typed: vectors.every((v) => v instanceof Float32Array && v.length === 384),
      worst: Math.min(...cosines),
      profile,
    };
  }, MODEL);
  expect(outcome.count).toBe(200);
  expect(outcome.typed).toBe(true);
  expect(outcome.worst).toBeGreaterThanOrEqual(0.99999);
  expect(outcome.profile).toMatchObject({ requested: 'full', chosen: 'full', active: 'full', fallbackReason: null });
  expect(outcome.profile.embedding).toMatchObject({ id: 'sentence-transformers/all-MiniLM-L6-v2', dims: 384 });
  expect(typeof outcome.profile.facts.wasmSimd).toBe('boolean');
  expect(problems).toEqual([]);
});

test('the second start loads the model from Cache Storage with the network blocked', async ({ page, context }) => {
  const first = await page.evaluate(async (model) => {
    const { Orion } = await import('/pkg/index.js');
    const progress = [];
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full', onProgress: (e) => progress.push(e) });
    const [vector] = await orion.embed(['offline please']);
    await orion.close();
    const cached = await (await caches.open('orion-models-v1')).keys();
    return { progress, vector: Array.from(vector), cached: cached.map((r) => new URL(r.url).pathname) };
  }, MODEL);
  expect(first.progress.some((e) => e.file === 'model.safetensors' && !e.cached && e.loaded === e.total)).toBe(true);
  expect(first.cached.sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => MODEL + f));

  let blocked = 0;
  await context.route('**/models/**', (route) => { blocked += 1; return route.abort(); });
  const second = await page.evaluate(async (model) => {
    const { Orion } = await import('/pkg/index.js');
    const progress = [];
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full', onProgress: (e) => progress.push(e) });
    const [vector] = await orion.embed(['offline please']);
    const profile = await orion.profile();
    await orion.close();
    return { progress, vector: Array.from(vector), active: profile.active };
  }, MODEL);
  expect(second.active).toBe('full');
  expect(second.progress.every((e) => e.cached)).toBe(true);
  expect(second.vector).toEqual(first.vector);
  expect(blocked).toBe(0);

  const cleared = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ profile: 'micro' });
    const deleted = await orion.models.clearCache();
    await orion.close();
    return { deleted, left: await caches.has('orion-models-v1') };
  });
  expect(cleared).toEqual({ deleted: true, left: false });
});

test('a missing, HTML or truncated model falls back to micro, says why, and caches nothing', async ({ page, context }) => {
  await context.route('**/html-model/**', (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><p>Not here</p>' }));
  await context.route('**/short-model/**', async (route) => {
    const url = new URL(route.request().url());
    const real = await route.fetch({ url: url.href.replace('/short-model/', MODEL) });
    const body = await real.body();
    const headers = { ...real.headers(), 'content-length': String(body.length) };
    await route.fulfill({ status: 200, headers, body: url.pathname.endsWith('.safetensors') ? body.subarray(0, 1000) : body });
  });
  const outcomes = await page.evaluate(async () => {
    const { Orion } = await import('/pkg/index.js');
    const results = {};
    for (const base of ['/no-such-model/', '/html-model/', '/short-model/']) {
      const orion = await Orion.create({ models: { embedding: base }, profile: 'full' });
      const profile = await orion.profile();
      const [vector] = await orion.embed(['still works']);
      const health = await orion.health();
      await orion.close();
      results[base] = {
        active: profile.active,
        reason: profile.fallbackReason,
        version: profile.embedding.version,
        dims: vector.length,
        embedder: health.components.find((c) => c.name === 'embedder'),
      };
    }
    const cache = await caches.open('orion-models-v1');
    results.cached = (await cache.keys()).map((r) => r.url);
    return results;
  });
  for (const [base, needle] of [['/no-such-model/', 'HTTP 404'], ['/html-model/', 'HTML page'], ['/short-model/', 'model.safetensors']]) {
    const outcome = outcomes[base];
    expect(outcome.active, base).toBe('micro');
    expect(outcome.reason, base).toContain(base);
    expect(outcome.reason, base).toContain(needle);
    expect(outcome.version, base).toBe('orion-hashing-v1/384');
    expect(outcome.dims, base).toBe(384);
    expect(outcome.embedder.totalFailures, base).toBe(1);
  }
  expect(outcomes.cached).toEqual([]);
});
