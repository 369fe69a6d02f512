// ORION's dedicated worker in `cargo xtask bench llm` (served at /bench-harness/ by the bench
// server). It loads ORION's wasm as pkg/worker.js does and runs, on request from the page, one
// measurement at a time on `BenchLlm` (crates/orion-web/src/bench_llm.rs: the model and
// generator of orion-llm, no postMessage protocol). Calls are synchronous inside the wasm, so a
// request blocks this worker (and only it) until it is done.
//
// Request `{id, op, args}`; answer `{id, ok: true, result}` or `{id, ok: false, error}`.
import init, { BenchLlm } from '/pkg/wasm/orion_web.js';

const ready = init();
let model = null;

const memory = async () => (await ready).memory.buffer.byteLength;

const ops = {
  // Fetches the GGUF file and loads it in `format` ('as-stored' or 'q8_0').
  async load({ url, format, maxContext }) {
    const t0 = performance.now();
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const fetchMs = performance.now() - t0;
    model?.free();
    model = null;
    const t1 = performance.now();
    model = new BenchLlm(bytes, format, maxContext);
    const loadMs = performance.now() - t1;
    return { fetchMs, loadMs, innerLoadMs: model.loadMs, bytes: bytes.length, wasmMemoryBytes: await memory() };
  },
  promptOf: ({ request }) => model.promptOf(request),
  decode: ({ request, ignoreEos }) => model.decode(request, ignoreEos),
  sequential: ({ requests }) => model.generateSequential(requests),
  many: ({ requests }) => model.generateMany(requests),
  memory: async () => ({ wasmMemoryBytes: await memory() }),
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    await ready;
    const result = await ops[op](args);
    self.postMessage({ id, ok: true, result });
  } catch (error) {
    self.postMessage({ id, ok: false, error: String(error?.stack ?? error?.message ?? error) });
  }
};
