// `cargo xtask bench ask`: the latency of `orion.ask` (issue 7 item 7) through the npm API, in one
// headless Chromium run. Prints one JSON object with the figures as its last line (xtask writes
// docs/BENCHMARKS.md and target/bench-ask.json); progress goes to stderr.
//
// Each orchestrator runs in a page of its own (/fixture/blank.html, the strict policy), with a
// database of its own; every time is the page's `performance.now()` around `await orion.ask`, next
// to the worker's own `debug.inferenceTimeMs`.
// 1. micro (no model files): TOOL_ASKS tool questions cycling through TOOL_QUESTIONS after
//    WARM_ASKS unmeasured ones; then MEMORIES synthetic facts stored with `memory.addMany`, and
//    MEMORY_ASKS questions about them (no tool fits: answered from the memories).
// 1b. micro with the embedding model (the quantized MiniLM): the same, as many asks.
// 2. lite without a language model (the quantized MiniLM embedder): the same, LITE_ASKS of each.
// 3. lite with the local LLM: one generation per DEBATE_QUESTIONS question (each is short, so lite
//    answers with one generation), after a first ask that loads the model.
// 4. full with the local LLM (Q8_0 weights): a first ask that loads the model, then one debate per
//    DEBATE_QUESTIONS question. The `conversation` memories an answer leaves are purged before each
//    ask (not timed), so that every generated answer starts from the same empty memory: the first
//    ask and the later ask of the same question generate the same text, and their difference is
//    the model's load.
// Every request must go to our server: anything else fails the run.
import { launchGuarded } from './harness.mjs';

const base = process.argv[2];
if (!base) {
  console.error('usage: node ask.mjs <base url>');
  process.exit(2);
}

const PAGE = '/fixture/blank.html';
const EMBEDDING = '/models/all-MiniLM-L6-v2/';
const LLM = '/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf';
const WARM_ASKS = 5;
const TOOL_ASKS = 100;
const MEMORIES = 1000;
const MEMORY_ASKS = 50;
const LITE_ASKS = 30;
const TOOL_QUESTIONS = [
  'What is 12 * 7?',
  'What is 1/3 + 1/6?',
  "what's 15% of 80",
  'calculate (3+4)^2',
  'What is 100 divided by 8?',
  'what is 2 to the power of 10',
  'what is the square root of 81',
  'calculate 1,250 * 3',
  'Convert 5 km to miles',
  'how many ounces in 2 pounds',
  '100 fahrenheit in celsius',
  '60 mph to km/h',
  '2 GiB in MB',
  'What is 3 cups in ml?',
  '10 stone in kg',
  'What day of the week is 2027-01-01?',
  'what day was December 25, 2026',
  'What is today\'s date?',
  'what time is it in Tokyo',
  'What time is it?',
];
const DEBATE_QUESTIONS = [
  'Why is the sky blue?',
  'What are the benefits of regular exercise?',
  'How do plants make their food?',
];
const run = `${Date.now().toString(36)}-${process.pid}`;
const log = (...args) => console.error('[bench ask]', ...args);

// Installed in each page: `window.bench.ask(query)` times one ask of `window.orion`; the synthetic
// facts and the questions about them; nearest-rank percentiles.
function installHelpers() {
  const FIRST = ['Anna', 'Omar', 'Lena', 'Kenji', 'Maria', 'Tomas', 'Ines', 'Yusuf', 'Clara', 'Ravi',
    'Sofia', 'Mateo', 'Hana', 'Pavel', 'Leila', 'Jonas', 'Amara', 'Felix', 'Nadia', 'Hugo',
    'Elif', 'Bruno', 'Aiko', 'Dmitri', 'Zara', 'Oskar', 'Priya', 'Luca', 'Mina', 'Arjun',
    'Greta', 'Tariq', 'Noor', 'Emil', 'Chloe', 'Idris', 'Vera', 'Kofi', 'Ruth', 'Santiago',
    'Alma', 'Jakob', 'Farah', 'Milan', 'Ingrid', 'Diego', 'Selin', 'Marek', 'Olga', 'Theo'];
  const LAST = ['Berg', 'Lind', 'Costa', 'Novak', 'Okafor', 'Tanaka', 'Moreau', 'Silva', 'Kaya',
    'Haddad', 'Fischer', 'Rossi', 'Ivanova', 'Mensah', 'Dubois', 'Nakamura', 'Petrov', 'Larsen',
    'Alvarez', 'Quinn'];
  const CITIES = ['Lisbon', 'Oslo', 'Nairobi', 'Kyoto', 'Porto', 'Montreal', 'Krakow', 'Valencia',
    'Bergen', 'Lyon', 'Adelaide', 'Tallinn', 'Cusco', 'Ghent', 'Hobart', 'Dakar', 'Tbilisi'];
  const JOBS = ['nurse', 'carpenter', 'pilot', 'librarian', 'baker', 'architect', 'veterinarian',
    'translator', 'electrician', 'teacher', 'chemist', 'gardener', 'journalist', 'dentist'];
  const HOBBIES = ['climbing in the mountains', 'restoring old radios', 'sailing on the lake',
    'painting watercolours', 'playing chess in the park', 'baking sourdough bread',
    'birdwatching by the river', 'repairing bicycles', 'singing in a choir', 'growing tomatoes'];
  const PETS = [['dog', 'Biscuit'], ['cat', 'Pepper'], ['parrot', 'Mango'], ['rabbit', 'Clover'],
    ['tortoise', 'Atlas'], ['horse', 'Storm'], ['goldfish', 'Bubbles']];
  const person = (i) => `${FIRST[i % FIRST.length]} ${LAST[Math.floor(i / FIRST.length) % LAST.length]}`;
  // Fact `i`, one of four kinds, about a person of its own (1000 distinct names).
  const fact = (i) => {
    const p = person(i);
    switch (i % 4) {
      case 0: return `${p} lives in ${CITIES[i % CITIES.length]}, in a flat near the old harbour.`;
      case 1: return `${p} works as a ${JOBS[i % JOBS.length]} and started the job ${2 + (i % 9)} years ago.`;
      case 2: return `${p} spends most weekends ${HOBBIES[i % HOBBIES.length]}.`;
      default: {
        const [kind, name] = PETS[i % PETS.length];
        return `${p} has a ${kind} called ${name} who is ${1 + (i % 12)} years old.`;
      }
    }
  };
  const question = (i) => {
    const p = person(i);
    return [`Where does ${p} live?`, `What job does ${p} have?`, `How does ${p} spend weekends?`,
      `What pet does ${p} have?`][i % 4];
  };

  const stats = (values) => {
    const sorted = values.filter(Number.isFinite).sort((x, y) => x - y);
    const at = (p) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
    const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
    return { p50: at(0.5), p95: at(0.95), max: sorted.at(-1), min: sorted[0], mean, n: sorted.length };
  };

  // One ask, timed on the page; `full` keeps the answer's text and the stages as they started.
  const ask = async (query, { full = false } = {}) => {
    const tokens = {};
    const chars = {};
    const firstTokenMs = {};
    const lastTokenMs = {};
    const stages = [];
    const t0 = performance.now();
    const answer = await window.orion.ask(query, {
      timeZone: 'UTC',
      onStatus: ({ stage }) => stages.push({ stage, atMs: performance.now() - t0 }),
      onToken: (text, agent) => {
        const at = performance.now() - t0;
        tokens[agent] = (tokens[agent] ?? 0) + 1;
        chars[agent] = (chars[agent] ?? 0) + text.length;
        firstTokenMs[agent] ??= at;
        lastTokenMs[agent] = at;
      },
    });
    const wallMs = performance.now() - t0;
    const out = {
      query,
      wallMs,
      inferenceTimeMs: answer.debug.inferenceTimeMs,
      route: answer.debug.route,
      toolUsed: answer.provenance.toolUsed,
      memoryHits: answer.provenance.memoryHits.length,
      degraded: answer.provenance.degraded,
      steps: answer.reasoningSteps.map(({ stage, detail, durationMs, ok }) => ({ stage, detail, durationMs, ok })),
    };
    if (full) {
      Object.assign(out, {
        response: answer.response,
        confidence: answer.confidence,
        quality: answer.debug.quality.score,
        fromAgents: answer.provenance.fromAgents,
        notes: answer.debug.notes,
        stages,
        tokens,
        chars,
        firstTokenMs,
        lastTokenMs,
      });
    } else {
      out.response = answer.response.slice(0, 120);
    }
    return out;
  };

  // `count` asks of `questions` in turn, after the unmeasured asks of `warmUp`.
  const series = async (questions, count, warmUp) => {
    for (const question of warmUp) await ask(question);
    const runs = [];
    for (let i = 0; i < count; i++) runs.push(await ask(questions[i % questions.length]));
    const routes = {};
    for (const r of runs) routes[r.route] = (routes[r.route] ?? 0) + 1;
    return {
      runs,
      routes,
      withMemoryHits: runs.filter((r) => r.memoryHits > 0).length,
      wall: stats(runs.map((r) => r.wallMs)),
      worker: stats(runs.map((r) => r.inferenceTimeMs)),
    };
  };

  // Stores the facts, then asks about every (MEMORIES / count)-th of them.
  const memorySeries = async (memories, count, warm) => {
    const t0 = performance.now();
    await window.orion.memory.addMany(Array.from({ length: memories }, (_, i) => ({ text: fact(i) })));
    const seedMs = performance.now() - t0;
    const step = Math.floor(memories / (count + warm));
    const questions = Array.from({ length: count + warm }, (_, k) => question(k * step + (k % 4)));
    // No measured question was asked before.
    const measured = await series(questions.slice(warm), count, questions.slice(0, warm));
    return { seeded: memories, seedMs, example: { fact: fact(1), question: question(1) }, ...measured };
  };

  window.bench = { ask, series, memorySeries, stats };
}

const { browser, openPage, closePage, finish } = await launchGuarded(base);
const out = {
  toolQuestions: TOOL_QUESTIONS,
  debateQuestions: DEBATE_QUESTIONS,
  warmAsks: WARM_ASKS,
  memories: MEMORIES,
};
try {
  // A page with an orchestrator made from `options`, and the helpers.
  const withOrion = async (label, options, fn) => {
    log(label, 'starting');
    const page = await openPage(PAGE);
    try {
      await page.evaluate(installHelpers);
      const created = await page.evaluate(async (options) => {
        const { Orion } = await import('/pkg/index.js');
        const t0 = performance.now();
        window.orion = await Orion.create(options);
        return { createMs: performance.now() - t0, profile: (await window.orion.profile()).active };
      }, options);
      const result = await fn(page);
      await page.evaluate(() => window.orion.close());
      return { ...created, ...result };
    } finally {
      await closePage(page);
    }
  };
  const summary = (s) => JSON.stringify({ routes: s.routes, hits: s.withMemoryHits, wall: s.wall, worker: s.worker });

  const latency = async (label, options, { toolAsks, memoryAsks }) =>
    withOrion(label, options, async (page) => {
      const tool = await page.evaluate(
        ({ questions, asks, warm }) => window.bench.series(questions, asks, questions.slice(0, warm)),
        { questions: TOOL_QUESTIONS, asks: toolAsks, warm: WARM_ASKS },
      );
      log(label, 'tool answers', summary(tool));
      const memory = await page.evaluate(
        ({ memories, asks, warm }) => window.bench.memorySeries(memories, asks, warm),
        { memories: MEMORIES, asks: memoryAsks, warm: WARM_ASKS },
      );
      log(label, `memory answers (${MEMORIES} stored in ${memory.seedMs.toFixed(0)} ms)`, summary(memory));
      return { tool, memory };
    });

  out.micro = await latency(
    'micro',
    { profile: 'micro', database: `orion-bench-ask-micro-${run}` },
    { toolAsks: TOOL_ASKS, memoryAsks: MEMORY_ASKS },
  );
  out.microModel = await latency(
    'micro with the model',
    { profile: 'micro', database: `orion-bench-ask-micro-model-${run}`, models: { embedding: EMBEDDING } },
    { toolAsks: TOOL_ASKS, memoryAsks: MEMORY_ASKS },
  );
  out.lite = await latency(
    'lite',
    { profile: 'lite', database: `orion-bench-ask-lite-${run}`, models: { embedding: EMBEDDING } },
    { toolAsks: LITE_ASKS, memoryAsks: LITE_ASKS },
  );

  // The first ask (which loads the model), then one ask per question, each after the
  // conversation memories are purged.
  const generated = async (label, profile) =>
    withOrion(
      label,
      {
        profile,
        database: `orion-bench-ask-${profile}-llm-${run}`,
        models: { embedding: EMBEDDING, llm: LLM },
        llmOptions: { weights: 'q8_0' },
      },
      async (page) => {
        const ask = (query) =>
          page.evaluate(async (query) => {
            await window.orion.memory.purge({ kind: 'conversation' });
            return window.bench.ask(query, { full: true });
          }, query);
        const first = await ask(DEBATE_QUESTIONS[0]);
        log(label, 'first ask (loads the model)', first.wallMs.toFixed(0), 'ms', first.route);
        const runs = [];
        for (const question of DEBATE_QUESTIONS) {
          const r = await ask(question);
          log(label, JSON.stringify({ query: r.query, route: r.route, wallMs: r.wallMs, steps: r.steps, tokens: r.tokens }));
          runs.push(r);
        }
        return { first, runs, sameFirstText: first.response === runs[0].response };
      },
    );
  out.liteSingle = await generated('lite + LLM', 'lite');
  out.full = await generated('full + LLM', 'full');

  out.browser = browser.version();
  finish(out);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
