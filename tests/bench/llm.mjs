// `cargo xtask bench llm`: ORION's local LLM (orion-llm, wasm, one thread) against wllama 3.8.1
// (llama.cpp in wasm, one thread), in headless Chromium, on the same GGUF file and the same
// prompts. Prints one JSON object with the figures as its last line (xtask writes
// docs/BENCHMARKS.md); progress goes to stderr.
//
// Each engine runs in a browser of its own (a fresh renderer process, so that its peak resident
// memory is its own), on /bench-llm/llm.html:
// - ORION, once with the weights as stored (Q4_1) and once re-quantized to Q8_0 at load time: a
//   dedicated worker of the benchmark's own (llm-worker.mjs) loads pkg/wasm and calls `BenchLlm`
//   (crates/orion-web/src/bench_llm.rs). Decoding with `ignoreEos` runs the model itself for
//   exactly TOKENS greedy tokens, as llama.cpp's `ignore_eos` does; one more run per prompt goes
//   through the generator (`LocalGenerator::start`/`step`, which stops at the end of turn). Then
//   the batching ratio: `generate_many` of 2 and of 3 prompts against `generate` of each in turn.
// - wllama: `loadModelFromUrl` of the same file (n_threads 1, no cache), then `createCompletion`
//   of the prompt ORION's chat template rendered (the same text, so the same tokens: checked
//   through the prompt token count llama.cpp reports), TOKENS tokens, temperature 0, ignore_eos,
//   no prompt cache, streamed. Its wasm comes from the served node_modules (setCompat(null): no
//   fallback build from a CDN).
// Every figure is the median of RUNS runs after a warm-up. Every request must go to our server:
// anything else fails the run.
import { readFileSync } from 'node:fs';
import { launchGuarded } from './harness.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node llm.mjs <base url>');
  process.exit(2);
}

const PAGE = '/bench-llm/llm.html';
const MODEL = '/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf';
const RUNS = Number(process.env.ORION_BENCH_LLM_RUNS ?? 3);
const TOKENS = 64;
const MAX_CONTEXT = 1024;
const log = (...args) => console.error('[bench llm]', ...args);

const LONG_TEXT = [
  'The lighthouse on the northern cape was built in 1871, after three ships were lost on the reef',
  'in a single winter. For most of its life it was kept by families who lived in the small stone',
  'house at its foot: they trimmed the wicks, wound the clockwork that turned the lens, and wrote',
  'the weather into a logbook every four hours. The last keeper, a woman named Ada Morrow, served',
  'for twenty-six years. Her logbooks record storms that tore the roof from the oil store, a summer',
  'when the sea froze along the shore, and the night in 1953 when she rowed out alone to pull two',
  'fishermen from a capsized boat. In 1968 the light was automated, and Ada moved to the village,',
  'where she taught children to swim and to read the tides. The house stood empty for decades. Its',
  'windows were boarded up, and gulls nested in the chimney. In 2004 a group of volunteers formed',
  'a trust to save it. They raised money with concerts and bake sales, repaired the roof, and',
  'turned the keeper\'s house into a small museum. Ada\'s logbooks are displayed in a glass case in',
  'the front room, open at the page describing the rescue. Visitors can climb the one hundred and',
  'twelve steps to the lantern room, where the original lens still turns, although the lamp is now',
  'an electric bulb no bigger than a thumb. Every year on the anniversary of the rescue, the trust',
  'holds a supper in the village hall, and the descendants of the two fishermen read aloud from',
  'the logbook. The reef is still there, but no ship has been lost on it since the light was lit.',
].join(' ');

const PROMPTS = {
  short: { prompt: 'Write a short story about a robot who learns to paint.' },
  long: { prompt: `${LONG_TEXT}\n\nSummarize the passage above in a few sentences.` },
};
const BATCH_PROMPTS = [
  'Write a short story about a robot who learns to paint.',
  'Explain how a rainbow forms, step by step.',
  'Give me three ideas for a birthday party for a ten-year-old.',
];
const request = (prompt, maxTokens) => ({ prompt, maxTokens, temperature: 0 });

const median = (values) => {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return null;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
};

// The figures of one decoding, in tokens/s and ms, from its prompt and generated token counts,
// prefill time (the first token included), decode time (every later token) and first token time.
const rates = ({ promptTokens, tokens, prefillMs, decodeMs, firstTokenMs }) => ({
  promptTokens,
  tokens,
  prefillMs,
  decodeMs,
  firstTokenMs,
  prefillTokS: (promptTokens / prefillMs) * 1000,
  decodeTokS: ((tokens - 1) / decodeMs) * 1000,
});

const summarize = (runs) => {
  const out = { runs };
  for (const key of ['prefillTokS', 'decodeTokS', 'firstTokenMs', 'prefillMs', 'decodeMs']) {
    out[key] = median(runs.map((r) => r[key]));
  }
  out.promptTokens = runs[0]?.promptTokens;
  out.tokens = runs[0]?.tokens;
  return out;
};

// Peak and current resident memory (VmHWM, VmRSS of /proc) of the browser's renderer processes,
// the largest first: the page's renderer, which runs its workers too.
async function rendererMemory(browser) {
  try {
    const cdp = await browser.newBrowserCDPSession();
    const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
    await cdp.detach();
    const renderers = [];
    for (const p of processInfo.filter((p) => p.type === 'renderer')) {
      try {
        const status = readFileSync(`/proc/${p.id}/status`, 'utf8');
        const kb = (key) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1] ?? NaN);
        renderers.push({ pid: p.id, peakBytes: kb('VmHWM') * 1024, rssBytes: kb('VmRSS') * 1024 });
      } catch {
        // The process ended.
      }
    }
    renderers.sort((a, b) => b.peakBytes - a.peakBytes);
    return renderers;
  } catch (error) {
    return [{ error: String(error) }];
  }
}

const recorded = { foreignRequests: [], cspViolations: [], pageErrors: [], requests: 0 };

// Runs `fn(page)` in a browser of its own and adds its renderer's memory to the result.
async function inFreshBrowser(label, fn) {
  log(label, 'starting a browser');
  const { browser, openPage, closePage, finish } = await launchGuarded(base);
  try {
    const page = await openPage(PAGE);
    const idle = await rendererMemory(browser);
    const result = await fn(page);
    result.renderers = await rendererMemory(browser);
    result.idleRenderers = idle;
    result.browser = await page.evaluate(() => navigator.userAgent);
    result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
    await closePage(page);
    const seen = {};
    try {
      finish(seen);
    } finally {
      recorded.requests += seen.requests ?? 0;
      recorded.foreignRequests.push(...(seen.foreignRequests ?? []));
      recorded.cspViolations.push(...(seen.cspViolations ?? []));
      recorded.pageErrors.push(...(seen.pageErrors ?? []));
    }
    return result;
  } finally {
    await browser.close();
  }
}

// The page's handle on ORION's bench worker: `call(op, args)`.
async function orionWorker(page) {
  await page.evaluate(() => {
    const worker = new Worker('/bench-harness/llm-worker.mjs', { type: 'module' });
    const pending = new Map();
    let next = 0;
    worker.onmessage = ({ data }) => {
      const call = pending.get(data.id);
      pending.delete(data.id);
      if (data.ok) call.resolve(data.result);
      else call.reject(new Error(data.error));
    };
    worker.onerror = (event) => {
      for (const call of pending.values()) call.reject(new Error(`worker error: ${event.message}`));
      pending.clear();
    };
    window.benchWorker = (op, args) =>
      new Promise((resolve, reject) => {
        const id = ++next;
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, op, args });
      });
  });
  return (op, args) => page.evaluate(({ op, args }) => window.benchWorker(op, args), { op, args });
}

async function orion(format) {
  return inFreshBrowser(`ORION ${format}`, async (page) => {
    const call = await orionWorker(page);
    const out = { format };
    out.load = await call('load', { url: MODEL, format, maxContext: MAX_CONTEXT });
    log(`ORION ${format} loaded`, JSON.stringify(out.load));
    out.prompts = {};
    for (const [name, p] of Object.entries(PROMPTS)) {
      out.prompts[name] = await call('promptOf', { request: request(p.prompt, TOKENS) });
    }
    log(`ORION ${format} warm-up`);
    await call('decode', { request: request(PROMPTS.short.prompt, 8), ignoreEos: true });
    out.decode = {};
    out.generator = {};
    for (const [name, p] of Object.entries(PROMPTS)) {
      const runs = [];
      for (let i = 0; i < RUNS; i++) {
        const r = await call('decode', { request: request(p.prompt, TOKENS), ignoreEos: true });
        const figures = { ...rates(r), tokenizeMs: r.tokenizeMs, text: r.text, stepsMs: r.stepsMs };
        runs.push(figures);
        log(`ORION ${format} ${name}`, JSON.stringify({ ...figures, stepsMs: undefined, text: undefined }));
      }
      out.decode[name] = summarize(runs);
      out.decode[name].text = runs[0].text;
      const g = await call('decode', { request: request(p.prompt, TOKENS), ignoreEos: false });
      out.generator[name] = { ...rates(g), text: g.text };
      log(`ORION ${format} ${name} through the generator`, JSON.stringify({ ...out.generator[name], text: undefined }));
    }
    out.batching = {};
    for (const n of [2, 3]) {
      const requests = BATCH_PROMPTS.slice(0, n).map((p) => request(p, TOKENS));
      const sequential = await call('sequential', { requests });
      const many = await call('many', { requests });
      const tokens = (r) => r.results.reduce((sum, g) => sum + g.tokens, 0);
      out.batching[n] = {
        sequentialMs: sequential.totalMs,
        manyMs: many.totalMs,
        ratio: many.totalMs / sequential.totalMs,
        sequentialTokens: tokens(sequential),
        manyTokens: tokens(many),
        sequential: sequential.results.map(({ text, ...rest }) => rest),
        many: many.results.map(({ text, ...rest }) => rest),
        sameText: sequential.results.every((g, i) => g.text === many.results[i].text),
      };
      log(`ORION ${format} batch of ${n}`, JSON.stringify({ ...out.batching[n], sequential: undefined, many: undefined }));
    }
    out.memory = await call('memory', {});
    return out;
  });
}

async function wllama(prompts) {
  return inFreshBrowser('wllama', async (page) => {
    const version = JSON.parse(readFileSync('node_modules/@wllama/wllama/package.json', 'utf8')).version;
    const out = { version, format: 'as-stored' };
    out.load = await page.evaluate(async ({ model, maxContext }) => {
      const { Wllama } = await import('/node_modules/@wllama/wllama/esm/index.js');
      const wllama = new Wllama(
        { default: '/node_modules/@wllama/wllama/esm/wasm/wllama.wasm' },
        { suppressNativeLog: true },
      );
      // No fallback build from a CDN.
      wllama.setCompat(null);
      window.wllama = wllama;
      const t0 = performance.now();
      await wllama.loadModelFromUrl(model, { n_threads: 1, n_ctx: maxContext, useCache: false });
      return {
        loadMs: performance.now() - t0,
        threads: wllama.getNumThreads(),
        multithread: wllama.isMultithread(),
        context: wllama.getLoadedContextInfo().n_ctx,
      };
    }, { model: MODEL, maxContext: MAX_CONTEXT });
    log('wllama loaded', JSON.stringify(out.load));

    // One streamed completion: wall-clock times on the page, and llama.cpp's own timings.
    const complete = (prompt, maxTokens) =>
      page.evaluate(async ({ prompt, maxTokens }) => {
        const chunks = [];
        const t0 = performance.now();
        let first = null;
        let text = '';
        await window.wllama.createCompletion({
          prompt,
          max_tokens: maxTokens,
          temperature: 0,
          ignore_eos: true,
          cache_prompt: false,
          stream: true,
          onData: (chunk) => {
            const at = performance.now();
            const piece = chunk?.choices?.[0]?.text ?? '';
            if (first === null && piece !== '') first = at;
            text += piece;
            chunks.push({ at: at - t0, piece, keys: Object.keys(chunk) });
          },
        });
        const end = performance.now();
        const last = [...chunks].reverse().find((c) => c.keys.includes('timings') || c.keys.includes('usage'));
        return { firstTokenMs: first - t0, totalMs: end - t0, text, chunks: chunks.length, lastKeys: chunks.at(-1)?.keys };
      }, { prompt, maxTokens });
    // The same, not streamed: llama.cpp's usage and timings.
    const completeWhole = (prompt, maxTokens) =>
      page.evaluate(async ({ prompt, maxTokens }) => {
        const t0 = performance.now();
        const r = await window.wllama.createCompletion({
          prompt,
          max_tokens: maxTokens,
          temperature: 0,
          ignore_eos: true,
          cache_prompt: false,
        });
        return { totalMs: performance.now() - t0, usage: r.usage, timings: r.timings ?? null, text: r.choices?.[0]?.text };
      }, { prompt, maxTokens });

    log('wllama warm-up');
    out.warmup = await completeWhole(prompts.short.text, 8);
    log('wllama warm-up', JSON.stringify(out.warmup));
    out.decode = {};
    for (const [name, p] of Object.entries(prompts)) {
      const runs = [];
      for (let i = 0; i < RUNS; i++) {
        const streamed = await complete(p.text, TOKENS);
        const whole = await completeWhole(p.text, TOKENS);
        const promptTokens = whole.usage?.prompt_tokens ?? p.ids.length;
        const tokens = whole.usage?.completion_tokens ?? TOKENS;
        // Wall clock of the streamed run: the first token's arrival, then the rest.
        const figures = rates({
          promptTokens,
          tokens,
          prefillMs: streamed.firstTokenMs,
          decodeMs: streamed.totalMs - streamed.firstTokenMs,
          firstTokenMs: streamed.firstTokenMs,
        });
        // llama.cpp's own timings of the whole (not streamed) run, when it reports them.
        const t = whole.timings;
        if (t) {
          figures.llamaPrefillTokS = t.prompt_per_second;
          figures.llamaDecodeTokS = t.predicted_per_second;
          figures.llamaTimings = t;
        }
        figures.wholeMs = whole.totalMs;
        figures.streamedChunks = streamed.chunks;
        figures.lastKeys = streamed.lastKeys;
        figures.text = streamed.text;
        figures.sameTextWhole = streamed.text === whole.text;
        runs.push(figures);
        log(`wllama ${name}`, JSON.stringify({ ...figures, text: undefined }));
      }
      out.decode[name] = summarize(runs);
      out.decode[name].llamaPrefillTokS = median(runs.map((r) => r.llamaPrefillTokS));
      out.decode[name].llamaDecodeTokS = median(runs.map((r) => r.llamaDecodeTokS));
      out.decode[name].text = runs[0].text;
      out.decode[name].orionPromptTokens = p.ids.length;
    }
    await page.evaluate(() => window.wllama.exit());
    return out;
  });
}

const out = {
  runs: RUNS,
  tokens: TOKENS,
  maxContext: MAX_CONTEXT,
  model: MODEL,
  modelBytes: null,
  prompts: PROMPTS,
  batchPrompts: BATCH_PROMPTS,
};
const only = (process.env.ORION_BENCH_LLM_ONLY ?? 'q8_0,as-stored,wllama').split(',');
out.orion = {};
for (const format of ['q8_0', 'as-stored']) {
  if (only.includes(format)) out.orion[format] = await orion(format);
}
const rendered = Object.values(out.orion)[0]?.prompts;
if (only.includes('wllama')) {
  if (!rendered) throw new Error('wllama needs the prompts ORION renders: run an ORION format too');
  out.wllama = await wllama(rendered);
}
out.modelBytes = Object.values(out.orion)[0]?.load?.bytes ?? null;
Object.assign(out, recorded);
if (recorded.foreignRequests.length > 0) throw new Error(`requests outside our server: ${recorded.foreignRequests.join(', ')}`);
if (recorded.pageErrors.length > 0) throw new Error(`page errors: ${recorded.pageErrors.join('; ')}`);
console.log(JSON.stringify(out));
