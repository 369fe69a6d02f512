// Where ORION's local LLM spends its time in wasm: not part of `cargo xtask bench llm`, run by
// hand (`node llm-profile.mjs <base url> [as-stored|q8_0]` against a server of the repository
// root, e.g. the one `cargo xtask bench llm` starts, or any static server of the repository root
// that serves `.wasm` as application/wasm). It loads `BenchLlm` on the page's main thread (so
// that the DevTools protocol's sampling profiler sees it), then profiles two runs: the long
// prompt's prefill (one token) and the short prompt with 64 tokens (mostly decode), and prints
// the self time per wasm function and per kind of work as JSON.
import { launchGuarded } from './harness.mjs';

const base = process.argv[2];
const format = process.argv[3] ?? 'q8_0';
const page = process.argv[4] ?? '/tests/bench/llm.html';
if (!base) {
  console.error('usage: node llm-profile.mjs <base url> [as-stored|q8_0] [page path]');
  process.exit(2);
}
const MODEL = '/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf';
const LONG = `${'The lighthouse on the northern cape was built in 1871, after three ships were lost on the reef in a single winter. '.repeat(12)}\n\nSummarize the passage above in a few sentences.`;
const SHORT = 'Write a short story about a robot who learns to paint.';

// Kinds of work, by the wasm function's (demangled) name; the first match wins.
const KINDS = [
  ['Q4_1 dot products (matmul)', /q4_1|Q4_1|BlockQ4_1/],
  ['Q8_0/Q8_1 dot products and activation quantizing (matmul)', /q8_0|Q8_0|BlockQ8|q8_1|Q8_1|quantize_row|from_float/],
  ['f32 gemm (attention scores and values)', /gemm|matmul/i],
  ['softmax', /softmax/i],
  ['rope', /rope/i],
  ['rms norm', /rms/i],
  ['silu and element-wise ops', /silu|unary|binary|affine|map|where_cond|cmp/i],
  ['copies (contiguous, cat, narrow, repeat_kv)', /copy|cat|strided|slice|narrow|repeat/i],
  ['memcpy / memset / allocation', /memcpy|memset|memmove|malloc|dlmalloc|alloc|free|realloc/i],
  ['tokenizer and template', /tokeniz|minijinja|regex|bpe/i],
];

const { browser, context, openPage, closePage, finish } = await launchGuarded(base);
try {
  const p = await openPage(page);
  const load = await p.evaluate(async ({ model, format }) => {
    const mod = await import('/pkg/wasm/orion_web.js');
    await mod.default();
    const bytes = new Uint8Array(await (await fetch(model)).arrayBuffer());
    const t0 = performance.now();
    window.llm = new mod.BenchLlm(bytes, format, 1024);
    return { loadMs: performance.now() - t0 };
  }, { model: MODEL, format });
  console.error('[llm profile] loaded', JSON.stringify(load));
  // Warm-up.
  await p.evaluate(({ prompt }) => window.llm.decode({ prompt, maxTokens: 4, temperature: 0 }, true), { prompt: SHORT });
  const cdp = await context.newCDPSession(p);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 250 });

  const profile = async (label, prompt, maxTokens) => {
    await cdp.send('Profiler.start');
    const result = await p.evaluate(
      ({ prompt, maxTokens }) => {
        const r = window.llm.decode({ prompt, maxTokens, temperature: 0 }, true);
        return { promptTokens: r.promptTokens, tokens: r.tokens, prefillMs: r.prefillMs, decodeMs: r.decodeMs };
      },
      { prompt, maxTokens },
    );
    const { profile } = await cdp.send('Profiler.stop');
    const interval = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples.length);
    const byName = new Map();
    let total = 0;
    for (const node of profile.nodes) {
      const name = node.callFrame.functionName || `(${node.callFrame.url || 'anonymous'})`;
      const ms = node.hitCount * interval;
      total += ms;
      byName.set(name, (byName.get(name) ?? 0) + ms);
    }
    const top = [...byName.entries()].sort((a, b) => b[1] - a[1]);
    const kinds = new Map();
    for (const [name, ms] of top) {
      const kind = KINDS.find(([, re]) => re.test(name))?.[0] ?? (name.startsWith('(') ? name : 'other');
      kinds.set(kind, (kinds.get(kind) ?? 0) + ms);
    }
    const share = (ms) => Math.round((ms / total) * 1000) / 10;
    return {
      label,
      result,
      sampledMs: total,
      kinds: [...kinds.entries()].sort((a, b) => b[1] - a[1]).map(([kind, ms]) => ({ kind, ms: Math.round(ms), pct: share(ms) })),
      top: top.slice(0, 30).map(([name, ms]) => ({ name, ms: Math.round(ms), pct: share(ms) })),
    };
  };

  const out = { format, load };
  out.prefill = await profile('long prompt, prefill + 1 token', LONG, 1);
  console.error('[llm profile]', JSON.stringify(out.prefill.kinds));
  out.decode = await profile('short prompt, 64 tokens', SHORT, 64);
  console.error('[llm profile]', JSON.stringify(out.decode.kinds));
  await closePage(p);
  finish(out);
  console.log(JSON.stringify(out, null, 1));
} finally {
  await browser.close();
}
