// `cargo xtask bench embed`: ORION's embedders and transformers.js in one headless Chromium run on
// the 200-sentence reference corpus. Prints one JSON object with the figures as its last line
// (xtask writes docs/BENCHMARKS.md); progress goes to stderr.
//
// Each engine runs in a fresh page of one browser context (so Cache Storage is shared and warm,
// but the renderer process is new): a first page fills the caches, then one page per engine
// measures cold start (from creating the engine to its first embedding, model files already in
// Cache Storage), sentences/s one at a time, sentences/s in batches of 32, parity with the
// reference vectors, and the renderer's peak resident memory (Linux VmHWM, reset through
// /proc/PID/clear_refs when the page is ready; the page's dedicated workers live in that process).
// Every request the pages make must go to our server: anything else fails the run.
import { readFileSync, writeFileSync } from 'node:fs';
import { launchGuarded } from './harness.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node embed.mjs <base url>');
  process.exit(2);
}

// transformers.js as the browser loads it from a CDN (the self-contained ESM bundle with
// onnxruntime-web inside), served by us instead, and onnxruntime-web's wasm files next to it.
const TJS = {
  module: '/node_modules/@huggingface/transformers/dist/transformers.min.js',
  model: 'minilm-int8', // models/minilm-int8/, laid out by xtask (onnx/model_quantized.onnx = q8)
  localModelPath: '/models/',
  // The variant transformers.js 4.3.1 picks by default (`.asyncify`), from our server.
  wasmPaths: {
    mjs: '/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs',
    wasm: '/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm',
  },
};
const ORION_MODEL = '/models/all-MiniLM-L6-v2/';
// ORION runs under the server's strict CSP. transformers.js runs on a page that the benchmark's
// server serves with `blob:` added to script-src (serve.rs, `BENCH_PAGE_CSP`): with its default
// `env.useWasmCache = true` it keeps onnxruntime-web's .mjs loader in Cache Storage and imports it
// from a blob: URL, which `script-src 'self'` forbids ("no available backend found").
const ORION_PAGE = '/fixture/blank.html';
const TJS_PAGE = '/bench/blank.html';
const log = (...args) => console.error('[bench]', ...args);

const { browser, openPage, closePage, finish } = await launchGuarded(base);
try {
  const cdp = await browser.newBrowserCDPSession();

  // The renderer processes right now, and their resident memory (kB).
  const renderers = async () => {
    const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
    return processInfo.filter((p) => p.type === 'renderer').map((p) => p.id);
  };
  const status = (pid, field) => {
    try {
      const line = readFileSync(`/proc/${pid}/status`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith(`${field}:`));
      return line ? Number.parseInt(line.split(/\s+/)[1], 10) : null;
    } catch {
      return null;
    }
  };

  // Runs `fn(arg)` in a fresh page and measures the renderer's peak resident memory meanwhile.
  const measured = async (label, path, fn, arg) => {
    log(label);
    const page = await openPage(path);
    const pids = await renderers();
    const before = new Map();
    for (const pid of pids) {
      before.set(pid, status(pid, 'VmRSS'));
      try {
        writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current VmRSS
      } catch {
        before.delete(pid);
      }
    }
    const result = await page.evaluate(fn, arg);
    let memory = null;
    for (const [pid, rss] of before) {
      const peak = status(pid, 'VmHWM');
      if (rss === null || peak === null) continue;
      if (!memory || peak - rss > memory.peakIncreaseMB * 1024) {
        memory = { pid, blankPageMB: rss / 1024, peakMB: peak / 1024, peakIncreaseMB: (peak - rss) / 1024 };
      }
    }
    await closePage(page);
    return { ...result, memory };
  };

  // The worst and mean cosine of `vectors` against the reference embeddings (computed here, not in
  // the page: the page's CSP forbids eval and nothing needs to run there).
  const reference = await (await fetch(`${base}/reference/minilm-reference.json`)).json();
  const cosine = (vectors) => {
    let worst = 1;
    let sum = 0;
    vectors.forEach((v, i) => {
      const r = reference.embeddings[i];
      let dot = 0;
      let nv = 0;
      let nr = 0;
      for (let k = 0; k < r.length; k++) {
        dot += v[k] * r[k];
        nv += v[k] * v[k];
        nr += r[k] * r[k];
      }
      const c = dot / Math.sqrt(nv * nr);
      worst = Math.min(worst, c);
      sum += c;
    });
    return { worst, mean: sum / vectors.length };
  };
  const withParity = ({ vectors, batchedVectors, ...rest }) => ({
    ...rest,
    parity: cosine(vectors),
    parityBatched: cosine(batchedVectors),
  });

  // 1. Fill the caches: ORION's model files (Cache Storage `orion-models-v1`) and transformers.js'
  //    (its own Cache Storage, `transformers-cache`, which also keeps the ort wasm binary).
  log('warming the caches');
  const warmOrion = await openPage(ORION_PAGE);
  await warmOrion.evaluate(async (model) => {
    const { Orion } = await import('/pkg/index.js');
    const orion = await Orion.create({ models: { embedding: model }, profile: 'full' });
    await orion.embed(['warm']);
    await orion.close();
  }, ORION_MODEL);
  await closePage(warmOrion);
  const warmTjs = await openPage(TJS_PAGE);
  const warmInfo = await warmTjs.evaluate(async (tjs) => {
    const { pipeline, env } = await import(tjs.module);
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = tjs.localModelPath;
    env.backends.onnx.wasm.numThreads = 1;
    env.backends.onnx.wasm.wasmPaths = {
      mjs: new URL(tjs.wasmPaths.mjs, location.href).href,
      wasm: new URL(tjs.wasmPaths.wasm, location.href).href,
    };
    const extractor = await pipeline('feature-extraction', tjs.model, { dtype: 'q8', device: 'wasm' });
    await extractor(['warm'], { pooling: 'mean', normalize: true });
    await extractor.dispose();
    const cached = {};
    for (const name of await caches.keys()) {
      cached[name] = (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname);
    }
    return { cached };
  }, TJS);
  await closePage(warmTjs);
  log('cached:', JSON.stringify(warmInfo.cached));

  // 2. One fresh page per engine.
  const out = {
    browser: null,
    sentences: 0,
    profiles: {},
    transformersjs: null,
    cached: warmInfo.cached,
  };
  for (const profile of ['full', 'lite', 'micro']) {
    const result = await measured(
      `ORION ${profile}`,
      ORION_PAGE,
      async ({ model, profile }) => {
        const { Orion } = await import('/pkg/index.js');
        const { sentences } = await (await fetch('/reference/minilm-reference.json')).json();
        const started = performance.now();
        const orion = await Orion.create({ models: { embedding: model }, profile });
        await orion.embed(['first']);
        const coldStartMs = performance.now() - started;
        const vectors = [];
        let t = performance.now();
        for (const s of sentences) vectors.push(...(await orion.embed([s])));
        const oneAtATime = sentences.length / ((performance.now() - t) / 1000);
        const batchedVectors = [];
        t = performance.now();
        for (let i = 0; i < sentences.length; i += 32) batchedVectors.push(...(await orion.embed(sentences.slice(i, i + 32))));
        const batched = sentences.length / ((performance.now() - t) / 1000);
        const info = await orion.profile();
        await orion.close();
        return {
          browser: navigator.userAgent,
          sentences: sentences.length,
          coldStartMs,
          oneAtATime,
          batched,
          version: info.embedding.version,
          active: info.active,
          vectors: vectors.map((v) => Array.from(v)),
          batchedVectors: batchedVectors.map((v) => Array.from(v)),
        };
      },
      { model: ORION_MODEL, profile },
    );
    out.browser = result.browser;
    out.sentences = result.sentences;
    delete result.browser;
    delete result.sentences;
    out.profiles[profile] = withParity(result);
  }

  out.transformersjs = withParity(await measured(
    'transformers.js',
    TJS_PAGE,
    async ({ tjs }) => {
      const { pipeline, env } = await import(tjs.module);
      env.allowRemoteModels = false;
      env.allowLocalModels = true;
      env.localModelPath = tjs.localModelPath;
      env.backends.onnx.wasm.numThreads = 1;
      env.backends.onnx.wasm.wasmPaths = {
        mjs: new URL(tjs.wasmPaths.mjs, location.href).href,
        wasm: new URL(tjs.wasmPaths.wasm, location.href).href,
      };
      const { sentences } = await (await fetch('/reference/minilm-reference.json')).json();
      const options = { pooling: 'mean', normalize: true };
      const started = performance.now();
      const extractor = await pipeline('feature-extraction', tjs.model, { dtype: 'q8', device: 'wasm' });
      await extractor(['first'], options);
      const coldStartMs = performance.now() - started;
      const vectors = [];
      let t = performance.now();
      for (const s of sentences) vectors.push(...(await extractor([s], options)).tolist());
      const oneAtATime = sentences.length / ((performance.now() - t) / 1000);
      const batchedVectors = [];
      t = performance.now();
      for (let i = 0; i < sentences.length; i += 32) batchedVectors.push(...(await extractor(sentences.slice(i, i + 32), options)).tolist());
      const batched = sentences.length / ((performance.now() - t) / 1000);
      await extractor.dispose();
      return {
        coldStartMs,
        oneAtATime,
        batched,
        version: 'all-MiniLM-L6-v2 int8 ONNX, q8, max256',
        library: `transformers.js ${env.version}, onnxruntime-web ${env.backends.onnx.versions?.web ?? '?'}`,
        threads: env.backends.onnx.wasm.numThreads,
        crossOriginIsolated,
        vectors,
        batchedVectors,
      };
    },
    { tjs: TJS },
  ));

  finish(out);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
