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
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full', onProgress: (e) => { if (e.kind === 'model_progress') progress.push(e); } });
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
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full', onProgress: (e) => { if (e.kind === 'model_progress') progress.push(e); } });
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

/** The hex SHA-256 of `path` on the test server, computed in the page. */
async function sha256Of(page, path) {
  return page.evaluate(async (url) => {
    const digest = await crypto.subtle.digest('SHA-256', await (await fetch(url)).arrayBuffer());
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  }, path);
}

test('SHA-256: right digests load and cache; a wrong one is ERR_MODEL_LOAD naming the URL, cached or not', async ({ page }) => {
  const weights = await sha256Of(page, `${MODEL}model.safetensors`);
  const config = await sha256Of(page, `${MODEL}config.json`);
  const outcome = await page.evaluate(async ({ model, weights, config }) => {
    const { Orion } = await import('/pkg/index.js');
    const attempt = async (sha256) => {
      const progress = [];
      const fallbacks = [];
      const orion = await Orion.create({ models: { embedding: { url: model, sha256 } }, profile: 'full', onProgress: (e) => { if (e.kind === 'model_progress') progress.push(e); } });
      orion.on('embedder_fallback', (e) => fallbacks.push(e));
      const profile = await orion.profile();
      let explicit = null;
      try {
        await orion.embed(['x'], { profile: 'full' });
      } catch (error) {
        explicit = { code: error.code, message: error.message };
      }
      await orion.close();
      const keys = await (await caches.open('orion-models-v1')).keys();
      return { active: profile.active, reason: profile.fallbackReason, explicit, progress, cached: keys.length };
    };
    const wrong = '0'.repeat(64);
    return {
      fresh: await attempt({ weights: wrong }),
      right: await attempt({ weights, config: config.toUpperCase() }),
      // The cached copy no longer matches: downloaded again, still wrong, and the good copy stays.
      stale: await attempt({ weights: wrong }),
    };
  }, { model: MODEL, weights, config });
  for (const name of ['fresh', 'stale']) {
    const attempt = outcome[name];
    expect(attempt.active, name).toBe('micro');
    expect(attempt.reason, name).toContain(`${MODEL}model.safetensors`);
    expect(attempt.reason, name).toContain('SHA-256 mismatch');
    expect(attempt.reason, name).toContain(weights);
    expect(attempt.explicit.code, name).toBe('ERR_MODEL_LOAD');
  }
  expect(outcome.fresh.cached).toBe(0);
  expect(outcome.right.active).toBe('full');
  expect(outcome.right.explicit).toBeNull();
  expect(outcome.right.cached).toBe(3);
  // One overall figure across the three files, ending at their sum.
  const last = outcome.right.progress.at(-1);
  expect(last.overallTotal).toBeGreaterThan(90_000_000);
  expect(last.overallLoaded).toBe(last.overallTotal);
  expect(outcome.stale.cached).toBe(3);
  expect(outcome.stale.progress.some((e) => e.file === 'model.safetensors' && !e.cached)).toBe(true);
});

test('model files given as ArrayBuffers load without the network and are verified', async ({ page, context }) => {
  const weights = await sha256Of(page, `${MODEL}model.safetensors`);
  const outcome = await page.evaluate(async ({ model, weights }) => {
    const { Orion } = await import('/pkg/index.js');
    const bytes = async (name) => (await fetch(model + name)).arrayBuffer();
    const files = { config: await bytes('config.json'), tokenizer: await bytes('tokenizer.json'), weights: new Uint8Array(await bytes('model.safetensors')) };
    const reference = await (await fetch('/reference/minilm-reference.json')).json();
    globalThis.orionTestFiles = files;
    globalThis.orionTestReference = { sentence: reference.sentences[0], vector: reference.embeddings[0] };
    return { sizes: [files.config.byteLength, files.weights.byteLength] };
  }, { model: MODEL, weights });
  expect(outcome.sizes[1]).toBeGreaterThan(90_000_000);
  let requests = 0;
  await context.route('**/models/**', (route) => { requests += 1; return route.abort(); });
  const result = await page.evaluate(async (weights) => {
    const { Orion } = await import('/pkg/index.js');
    const files = globalThis.orionTestFiles;
    const { sentence, vector: expected } = globalThis.orionTestReference;
    const orion = await Orion.create({ models: { embedding: { files, sha256: { weights } } }, profile: 'full' });
    const [vector] = await orion.embed([sentence]);
    const lite = await orion.embed([sentence], { profile: 'lite' });
    const profile = await orion.profile();
    await orion.close();
    const cosine = (a, b) => { let d = 0; for (let i = 0; i < a.length; i += 1) d += a[i] * b[i]; return d; };
    const wrong = await Orion.create({ models: { embedding: { files, sha256: { weights: 'f'.repeat(64) } } }, profile: 'full' });
    const fallback = await wrong.profile();
    await wrong.close();
    let refused = null;
    try {
      await Orion.create({ models: { embedding: { files: { ...files, weights: 'not bytes' } } } });
    } catch (error) {
      refused = { code: error.code, message: error.message };
    }
    const keys = await (await caches.open('orion-models-v1')).keys();
    return {
      active: profile.active,
      cosine: cosine(vector, expected),
      liteCosine: cosine(lite[0], expected),
      fallback: { active: fallback.active, reason: fallback.fallbackReason },
      refused,
      cached: keys.length,
    };
  }, weights);
  expect(result.active).toBe('full');
  expect(result.cosine).toBeGreaterThanOrEqual(0.99999);
  expect(result.liteCosine).toBeGreaterThanOrEqual(0.995);
  expect(result.fallback.active).toBe('micro');
  expect(result.fallback.reason).toContain('the provided `weights` file');
  expect(result.fallback.reason).toContain('SHA-256 mismatch');
  expect(result.refused.code).toBe('ERR_INVALID_MESSAGE');
  expect(result.refused.message).toContain('models.embedding.files.weights');
  expect(result.cached).toBe(0);
  expect(requests).toBe(0);
});

test('embed(texts, { profile }) uses that profile, loading it once; bad profiles are refused', async ({ page }) => {
  const outcome = await page.evaluate(async (model) => {
    const { Orion } = await import('/pkg/index.js');
    const reference = await (await fetch('/reference/minilm-reference.json')).json();
    const texts = reference.sentences.slice(0, 8);
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full' });
    const progress = [];
    orion.on('model_progress', (e) => progress.push(e));
    const full = await orion.embed(texts);
    const [lite, liteAgain, micro] = await Promise.all([
      orion.embed(texts, { profile: 'lite' }),
      orion.embed(texts, { profile: 'lite' }),
      orion.embed(texts, { profile: 'micro' }),
    ]);
    const refused = await orion.embed(texts, { profile: 'huge' }).then(() => null, (e) => ({ code: e.code, message: e.message }));
    const profile = await orion.profile();
    await orion.close();
    const cosine = (a, b) => { let d = 0; for (let i = 0; i < a.length; i += 1) d += a[i] * b[i]; return d; };
    return {
      liteCosines: lite.map((v, i) => cosine(v, full[i])),
      sameLite: lite.every((v, i) => cosine(v, liteAgain[i]) > 0.999999),
      microLiteCosines: micro.map((v, i) => cosine(v, lite[i])),
      weightsReads: progress.filter((e) => e.file === 'model.safetensors' && e.loaded === e.total).length,
      refused,
      active: profile.active,
    };
  }, MODEL);
  expect(Math.min(...outcome.liteCosines)).toBeGreaterThanOrEqual(0.995);
  expect(Math.max(...outcome.liteCosines)).toBeLessThan(0.9999999);
  expect(outcome.sameLite).toBe(true);
  // Given a model, micro runs the same 8-bit MiniLM as lite.
  expect(Math.min(...outcome.microLiteCosines)).toBeGreaterThan(0.999999);
  // Lite's two calls share one load; micro loads its own copy of the same weights.
  expect(outcome.weightsReads).toBe(2);
  expect(outcome.refused.code).toBe('ERR_INVALID_MESSAGE');
  expect(outcome.refused.message).toContain('profile');
  expect(outcome.active).toBe('full');
});
