// The demo's first screen: a chat with the orchestrator, worker status, similarity, the local
// model, memory, background tasks, the health table and a log of events.
import { Orion } from '/pkg/index.js';

const $ = (id) => document.getElementById(id);
const MAX_LOG = 200;
// The local LLM: fetched (and cached) on the first generation, not at start.
const LLM_URL = '/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf';
const LLM_FILE = LLM_URL.slice(LLM_URL.lastIndexOf('/') + 1);
// `?profile=full|lite|micro` overrides the device's choice, e.g. to see the debate on a small device.
const PROFILES = ['full', 'lite', 'micro'];
const REQUESTED_PROFILE = new URLSearchParams(location.search).get('profile');

function log(text, kind = 'info') {
  const item = document.createElement('li');
  item.dataset.kind = kind;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, ' ', text);
  $('log').prepend(item);
  while ($('log').children.length > MAX_LOG) $('log').lastElementChild.remove();
}

function setStatus(state, text = state) {
  $('worker-status').dataset.state = state;
  $('worker-status').textContent = text;
}

function cell(text, state) {
  const td = document.createElement('td');
  td.textContent = text;
  if (state) td.dataset.state = state;
  return td;
}

function describe(reason) {
  switch (reason.kind) {
    case 'consecutive_failures': return `${reason.count} failures in a row`;
    case 'error_rate': return `error rate ${(reason.rate * 100).toFixed(1)}%`;
    case 'heartbeat_timeout': return `silent for ${reason.silentMs} ms`;
    default: return 'ok';
  }
}

function renderHealth(report) {
  $('health-overall').textContent = report.status;
  $('health-overall').dataset.state = report.status;
  const rows = report.components.map((c) => {
    const tr = document.createElement('tr');
    tr.dataset.component = c.name;
    tr.append(
      cell(c.name),
      cell(c.status, c.status),
      cell(describe(c.reason)),
      cell(`${(c.errorRate * 100).toFixed(1)}%`),
      cell(String(c.totalCalls)),
      cell(String(c.totalFailures)),
      cell(String(c.pending)),
      cell(c.lastError ?? '—'),
    );
    return tr;
  });
  $('health').tBodies[0].replaceChildren(...rows);
}

/** `health().storage` in a line: persistence and what the origin uses of its quota. */
function describeStorage({ persistGranted, persisted, usageBytes, quotaBytes }) {
  const kept = persisted ? 'persistent' : `not persistent (persist() ${persistGranted === null ? 'unavailable' : persistGranted ? 'granted' : 'refused'})`;
  const used = usageBytes === null || quotaBytes === null ? 'usage unknown' : `${(usageBytes / 1_000_000).toFixed(1)} MB of ${(quotaBytes / 1_000_000).toFixed(0)} MB used`;
  return `${kept} · ${used}`;
}

async function refreshHealth(orion) {
  try {
    const report = await orion.health();
    $('storage').textContent = describeStorage(report.storage);
    renderHealth(report);
  } catch (error) {
    log(`health failed: ${error.code}: ${error.message}`, 'error');
  }
}

async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) {
    $('sw-status').textContent = 'not supported by this browser';
    return;
  }
  try {
    await navigator.serviceWorker.register('/sw.js', { scope: '/' });
    await navigator.serviceWorker.ready;
    $('sw-status').textContent = navigator.serviceWorker.controller ? 'active: works offline' : 'installed: offline after the next load';
    navigator.serviceWorker.addEventListener('controllerchange', () => {
      $('sw-status').textContent = 'active: works offline';
    });
  } catch (error) {
    $('sw-status').textContent = `unavailable: ${error.message}`;
  }
}

// Events too frequent to read the health again after each (a token, a chunk of a download...).
const QUIET_EVENTS = ['model_progress', 'memory_progress', 'memory_index', 'task_run', 'task_abort', 'llm_token', 'llm_host_call', 'llm_host_abort', 'ask_status', 'ask_token'];

async function main() {
  let orion;
  try {
    // debug: the demo shows crash recovery, so it allows the debug `crash` request.
    orion = await Orion.create({
      debug: true,
      ...(PROFILES.includes(REQUESTED_PROFILE) ? { profile: REQUESTED_PROFILE } : {}),
      models: { embedding: '/models/all-MiniLM-L6-v2/', llm: LLM_URL },
      onProgress: (e) => {
        if (e.kind === 'memory_index') {
          $('memory-stats').textContent = e.done ? `index loaded: ${e.loaded} memories` : `loading the index: ${e.loaded} memories…`;
          return;
        }
        if (e.kind !== 'model_progress') return;
        if (e.file === LLM_FILE) {
          showLlmProgress(e);
          return;
        }
        const percent = e.total ? ` ${Math.round((100 * e.loaded) / e.total)}%` : '';
        const overall = e.overallTotal ? `, ${Math.round((100 * e.overallLoaded) / e.overallTotal)}% of the model` : '';
        $('model-progress').textContent = `${e.file}${percent}${overall}${e.cached ? ' (from cache)' : ''}`;
      },
    });
  } catch (error) {
    setStatus('crashed', `failed to start: ${error.code}`);
    log(`start failed: ${error.code}: ${error.message}`, 'error');
    registerServiceWorker();
    return;
  }
  // Only once the worker has started: in Chromium a module worker that loaded while the service
  // worker installed (fetching the same files) sometimes never finished loading its imports
  // (about 1 start in 40 here), and the page stayed on "starting…".
  registerServiceWorker();
  window.orion = orion;
  orion.on('worker', (event) => {
    if (event.state === 'crashed') {
      setStatus('crashed', `crashed (${event.code}); restarts on the next call`);
      log(`worker crashed: ${event.code}: ${event.reason}`, 'error');
    } else if (event.state === 'ready') {
      setStatus('ready');
      log('worker restarted and ready');
    } else if (event.state === 'starting') {
      setStatus('starting', 'starting…');
    }
  });
  orion.on('event', (event) => {
    if (event.kind === 'health_transition') {
      log(`health: ${event.component} ${event.from} → ${event.to} (${describe(event.reason)})`, 'event');
    } else if (event.kind === 'embedder_fallback') {
      log(`embedder fallback: ${event.reason}; using ${event.model.version}`, 'error');
    } else if (event.kind === 'breaker_transition') {
      log(`breaker: ${event.key} ${event.from} → ${event.to} (${event.reason})`, 'event');
    }
    if (!QUIET_EVENTS.includes(event.kind)) refreshHealth(orion);
  });

  const version = await orion.version();
  $('worker-version').textContent = `core ${version.core} · web ${version.web} · client ${version.client} · protocol v${version.protocol}`;
  setStatus('ready');
  log('worker ready');
  const profile = await orion.profile();
  $('profile').textContent = `${profile.active} (device: ${profile.chosen}) · embedder ${profile.embedding?.version ?? 'loading'}`;

  $('ping').addEventListener('click', async () => {
    const sent = performance.now();
    try {
      const pong = await orion.ping({ from: 'demo' });
      const ms = (performance.now() - sent).toFixed(1);
      $('ping-result').textContent = `pong in ${ms} ms`;
      log(`pong: ${JSON.stringify(pong.payload)} in ${ms} ms`);
    } catch (error) {
      $('ping-result').textContent = `failed: ${error.code}`;
      log(`ping failed: ${error.code}: ${error.message}`, 'error');
    }
    refreshHealth(orion);
  });
  $('refresh').addEventListener('click', () => refreshHealth(orion));
  $('compare').addEventListener('click', async () => {
    const started = performance.now();
    try {
      const [a, b] = await orion.embed([$('text-a').value, $('text-b').value]);
      let dot = 0;
      for (let i = 0; i < a.length; i += 1) dot += a[i] * b[i];
      const ms = (performance.now() - started).toFixed(1);
      $('similarity').textContent = `cosine ${dot.toFixed(4)} (${a.length} dims, ${ms} ms)`;
      log(`similarity ${dot.toFixed(4)} in ${ms} ms`);
    } catch (error) {
      $('similarity').textContent = `failed: ${error.code}`;
      log(`embed failed: ${error.code}: ${error.message}`, 'error');
    }
  });
  $('crash').addEventListener('click', async () => {
    log('asking the worker to crash');
    try {
      await orion.debug.crash();
    } catch (error) {
      log(`crash call rejected: ${error.code}`, 'error');
    }
  });

  setupChat(orion);
  setupLlm(orion);
  setupMemory(orion);
  setupTasks(orion);
  setupBackups(orion);

  await refreshHealth(orion);
  setInterval(() => refreshHealth(orion), 5000);
}

// The chat: one question at a time through `orion.ask`, with its stages, its streamed text (the
// debate's agents each in their own block) and, once answered, how the answer was reached.
const STAGES = {
  tool_search: 'looking for a tool…',
  memory_search: 'searching memories…',
  llm_reasoning: 'the local model is answering…',
  multi_agent_parallel: 'debate: the logical and creative agents are answering…',
  multi_agent_critical: 'debate: the critical agent is reviewing…',
  multi_agent_synthesis: 'debate: the synthesizer is writing the answer…',
};
const AGENTS = { logical: 'Logical', creative: 'Creative', critical: 'Critical', synthesizer: 'Synthesizer' };

/** Set while a chat question is in flight: shows the local model's loading in its status line. */
let showChatLoading = null;

function setChatStatus(stage, text) {
  $('chat-status').dataset.stage = stage;
  $('chat-status').textContent = text;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A turn of the chat: the question, then places for its stages, streamed text and answer. */
function chatTurn(query) {
  const turn = element('li', 'turn');
  turn.dataset.outcome = 'pending';
  // Screen readers read the turn once it is complete rather than token by token.
  turn.setAttribute('aria-busy', 'true');
  const question = element('p', 'question');
  question.append(element('strong', null, 'You: '), query);
  const stages = element('ol', 'stages');
  stages.setAttribute('aria-label', 'Stages');
  const stream = element('p', 'stream');
  stream.hidden = true;
  const debate = element('div', 'debate');
  debate.hidden = true;
  debate.setAttribute('role', 'group');
  debate.setAttribute('aria-label', 'Debate');
  const agents = {};
  for (const [agent, label] of Object.entries(AGENTS)) {
    const block = element('section', 'agent');
    block.dataset.agent = agent;
    block.setAttribute('aria-label', `${label} agent`);
    agents[agent] = element('p', 'agent-text');
    block.append(element('strong', 'agent-name', label), agents[agent]);
    debate.append(block);
  }
  const answer = element('p', 'answer');
  answer.hidden = true;
  turn.append(question, stages, stream, debate, answer);
  return { turn, stages, stream, debate, agents, answer };
}

/** One fact of an answer's details; `key` names it for tests (`data-detail`). */
function detail(list, key, term, value) {
  list.append(element('dt', null, term));
  const dd = element('dd');
  dd.dataset.detail = key;
  if (Array.isArray(value)) {
    if (value.length) {
      const items = element('ul');
      items.append(...value.map((text) => element('li', null, text)));
      dd.append(items);
    } else {
      dd.textContent = 'none';
    }
  } else {
    dd.textContent = value;
  }
  list.append(dd);
}

/** The resolved answer: its text, a summary line and the details of how it was reached. */
function showAnswer(parts, result) {
  const { turn, answer } = parts;
  const { provenance, debug } = result;
  turn.dataset.route = debug.route;
  answer.hidden = false;
  answer.replaceChildren(element('strong', null, 'ORION: '), element('span', 'response', result.response));
  const quality = element('span', 'quality', `quality ${debug.quality.score.toFixed(2)}${debug.quality.low ? ' (low)' : ''}`);
  quality.dataset.low = String(debug.quality.low);
  const summary = element('p', 'summary');
  summary.append(
    `confidence ${result.confidence.toFixed(2)} · route ${debug.route}${provenance.toolUsed ? ` · tool ${provenance.toolUsed}` : ''} · `,
    quality,
    ` · ${Math.round(debug.inferenceTimeMs)} ms`,
  );
  const details = element('details');
  const list = element('dl', 'facts');
  details.append(element('summary', null, 'How this was answered'), list);
  detail(list, 'memory-hits', 'Memory hits', provenance.memoryHits.map((hit) => `${hit.similarity.toFixed(3)} · ${hit.text}`));
  detail(list, 'agents', 'Agents', provenance.fromAgents.join(', ') || 'none');
  detail(list, 'degraded', 'Degraded', provenance.degraded);
  detail(list, 'notes', 'Notes', debug.notes);
  detail(list, 'signals', 'Quality signals', debug.quality.signals.map((s) => `${s.name} ${s.value.toFixed(2)} (weight ${s.weight.toFixed(2)})`));
  detail(list, 'steps', 'Steps', result.reasoningSteps.map((s) => `${s.stage}: ${s.detail} (${Math.round(s.durationMs)} ms${s.ok ? '' : ', failed'})`));
  detail(list, 'trace', 'Profile · trace', `${debug.profile} · ${debug.traceId}`);
  turn.append(summary, details);
}

function setupChat(orion) {
  const chatLog = $('chat-log');
  const input = $('chat-input');
  const ask = $('chat-ask');
  const stop = $('chat-stop');
  // One conversation per page load: its questions share history in the worker.
  const conversationId = crypto.randomUUID();
  chatLog.dataset.conversationId = conversationId;
  let controller = null;
  const scroll = () => { chatLog.scrollTop = chatLog.scrollHeight; };

  $('chat-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query || controller) return;
    input.value = '';
    controller = new AbortController();
    ask.disabled = true;
    stop.disabled = false;
    const parts = chatTurn(query);
    chatLog.append(parts.turn);
    scroll();
    showChatLoading = (text) => setChatStatus('loading_model', text);
    setChatStatus('starting', 'asking…');
    try {
      const result = await orion.ask(query, {
        conversationId,
        signal: controller.signal,
        onStatus: ({ stage }) => {
          const step = element('li', null, stage);
          step.dataset.stage = stage;
          parts.stages.append(step);
          if (stage.startsWith('multi_agent')) parts.debate.hidden = false;
          setChatStatus(stage, STAGES[stage] ?? stage);
        },
        onToken: (text, agent) => {
          const target = parts.agents[agent] ?? parts.stream;
          if (target === parts.stream) parts.stream.hidden = false;
          else parts.debate.hidden = false;
          target.textContent += text;
          scroll();
        },
      });
      showAnswer(parts, result);
      parts.turn.dataset.outcome = 'answered';
      setChatStatus('done', `answered by ${result.debug.route} in ${Math.round(result.debug.inferenceTimeMs)} ms`);
      log(`chat: answered by ${result.debug.route} (confidence ${result.confidence.toFixed(2)})`);
    } catch (error) {
      const cancelled = error.code === 'ERR_CANCELLED';
      parts.turn.dataset.outcome = cancelled ? 'cancelled' : 'error';
      parts.answer.hidden = false;
      parts.answer.dataset.errorCode = error.code;
      parts.answer.textContent = cancelled ? `stopped (${error.code})` : `failed: ${error.code}: ${error.message}`;
      setChatStatus(cancelled ? 'cancelled' : 'error', cancelled ? `stopped (${error.code})` : `failed: ${error.code}`);
      log(`chat: ${cancelled ? 'stopped' : 'failed'}: ${error.code}: ${error.message}`, cancelled ? 'info' : 'error');
    } finally {
      parts.turn.setAttribute('aria-busy', 'false');
      showChatLoading = null;
      controller = null;
      ask.disabled = false;
      stop.disabled = true;
      // Disabling the focused Ask or Stop button dropped the focus: back to the question box.
      if (document.activeElement === document.body) input.focus();
      scroll();
    }
  });
  stop.addEventListener('click', () => {
    if (!controller) return;
    stop.disabled = true;
    controller.abort();
  });
  ask.disabled = false;
}

// The local model panel: one single-turn generation at a time, streamed into the output, with a
// Stop button that aborts it (the call then resolves with finish 'cancelled' and the text so far).
const MB = 1_000_000;

function setLlmStatus(phase, text) {
  $('llm-status').dataset.phase = phase;
  $('llm-status').textContent = text;
}

/** The LLM file's download (or read from Cache Storage), shown in the panel's status line. */
function showLlmProgress(e) {
  const done = e.total !== null && e.loaded === e.total;
  let text;
  if (done) {
    text = `${e.file}: ${(e.loaded / MB).toFixed(1)} MB ${e.cached ? 'read from the cache' : 'downloaded'}; loading the model…`;
    log(`local model ${e.cached ? 'read from the cache' : 'downloaded'}: ${e.file}, ${(e.loaded / MB).toFixed(1)} MB`);
  } else {
    const percent = e.total ? ` ${Math.round((100 * e.loaded) / e.total)}%` : '';
    const size = e.total ? ` of ${(e.total / MB).toFixed(1)} MB` : '';
    text = `${e.cached ? 'reading' : 'downloading'} ${e.file}:${percent} (${(e.loaded / MB).toFixed(1)} MB${size})${e.cached ? ' from the cache' : ''}`;
  }
  setLlmStatus('loading', text);
  // A chat question that needs the model waits for this load: its status line says so.
  showChatLoading?.(text);
}

/** Tokens per second, or '—' when the time is too short to say. */
function perSecond(tokens, ms) {
  return ms > 0 ? (tokens / (ms / 1000)).toFixed(1) : '—';
}

function setupLlm(orion) {
  const output = $('llm-output');
  const generate = $('llm-generate');
  const stop = $('llm-stop');
  let controller = null;
  let loaded = false;
  // A restarted worker loads the model again (from Cache Storage) on its next generation.
  orion.on('worker', (event) => {
    if (event.state === 'crashed') loaded = false;
  });

  generate.addEventListener('click', async () => {
    const prompt = $('llm-prompt').value.trim();
    if (!prompt) {
      setLlmStatus('error', 'failed: ERR_INVALID_INPUT: the prompt is empty');
      return;
    }
    controller = new AbortController();
    generate.disabled = true;
    stop.disabled = false;
    output.textContent = '';
    output.dataset.done = 'false';
    delete $('llm-status').dataset.finish;
    setLlmStatus(loaded ? 'generating' : 'loading', loaded ? 'reading the prompt…' : 'loading the model (first use)…');
    const started = performance.now();
    let first = true;
    try {
      const result = await orion.llm.generate({ prompt, maxTokens: 128, temperature: 0 }, {
        signal: controller.signal,
        onToken: (text) => {
          if (first) {
            first = false;
            setLlmStatus('generating', 'generating…');
          }
          output.textContent += text;
        },
      });
      loaded = true;
      output.textContent = result.text;
      const read = result.promptTokens - result.cachedTokens;
      const ms = (performance.now() - started).toFixed(0);
      $('llm-status').dataset.finish = result.finish;
      setLlmStatus('done', `finish ${result.finish} · ${result.promptTokens} prompt tokens · ${result.tokens} generated · prefill ${perSecond(read, result.prefillMs)} tok/s · decode ${perSecond(result.tokens, result.decodeMs)} tok/s`);
      log(`generated ${result.tokens} tokens (finish ${result.finish}) in ${ms} ms`);
    } catch (error) {
      if (error.code === 'ERR_CANCELLED') {
        // Stopped before the generation started (while the model loaded).
        $('llm-status').dataset.finish = 'cancelled';
        setLlmStatus('done', `finish cancelled before the first token (${error.code}: ${error.message})`);
        log(`generation cancelled: ${error.code}: ${error.message}`);
      } else {
        $('llm-status').dataset.finish = 'error';
        setLlmStatus('error', `failed: ${error.code}: ${error.message}`);
        log(`generate failed: ${error.code}: ${error.message}`, 'error');
      }
    } finally {
      output.dataset.done = 'true';
      controller = null;
      generate.disabled = false;
      stop.disabled = true;
    }
  });
  stop.addEventListener('click', () => {
    if (!controller) return;
    stop.disabled = true;
    controller.abort();
    log('stopping the generation');
  });
}

// Background tasks: the demo defines a few through `orion.tasks` like any page would, and the panel
// shows only what `orion.tasks` answers (counts, lists, schedules), read again every second.
const JOB_STATES = ['waiting', 'delayed', 'paused', 'active', 'completed', 'failed', 'cancelled'];
const LATEST_JOBS = 10;
const FAILED_JOBS = 10;
// Finished demo jobs kept per queue (the rest are deleted), so that the lists stay short.
const KEEP = { removeOnComplete: 20, removeOnFail: 20 };
// How many jobs one refresh reads at most to find the newest (`tasks.list` pages in id order).
const SCAN_LIMIT = 1000;

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

async function defineDemoTasks(orion) {
  await orion.tasks.simple.define('demo.tidy', async (payload, context) => {
    const { steps, stepMs = 300 } = payload;
    for (let step = 1; step <= steps; step += 1) {
      await wait(stepMs, context.signal);
      await context.progress(Math.round((100 * step) / steps));
    }
    return { tidied: steps, source: payload.source ?? 'button' };
  }, {
    concurrency: 2,
    schema: {
      type: 'object',
      required: ['steps'],
      additionalProperties: false,
      properties: {
        steps: { type: 'integer', minimum: 1, maximum: 10 },
        stepMs: { type: 'integer', minimum: 0, maximum: 5000 },
        source: { type: 'string', maxLength: 40 },
      },
    },
  });
  // `flaky` fails its first attempt (retryably) and succeeds on the next; `broken` fails every
  // run with `retryable: false`, so it ends failed at once, whatever its attempts.
  await orion.tasks.simple.define('demo.flaky', async (payload, context) => {
    for (const progress of [25, 50, 75]) {
      await wait(400, context.signal);
      await context.progress(progress);
    }
    if (payload.mode === 'broken') {
      throw Object.assign(new Error('demo.flaky: broken on purpose, not worth retrying'), { retryable: false });
    }
    if (context.attempt === 1) throw new Error('demo.flaky: the first attempt fails on purpose');
    await context.progress(100);
    return { succeededOnAttempt: context.attempt };
  }, {
    concurrency: 2,
    schema: {
      type: 'object',
      required: ['mode'],
      additionalProperties: false,
      properties: { mode: { enum: ['flaky', 'broken'] } },
    },
  });
  // Same timing as before keeps its next run: reloading the page does not push it back.
  await orion.tasks.schedules.upsert('demo.heartbeat', { every: 60_000 }, {
    name: 'demo.tidy',
    data: { steps: 2, stepMs: 250, source: 'demo.heartbeat' },
    options: { priority: 15, ...KEEP },
  });
}

function formatTime(ms) {
  if (ms === null || ms === undefined) return '—';
  return new Date(ms).toLocaleTimeString();
}

function timeCell(ms) {
  const td = document.createElement('td');
  if (ms === null || ms === undefined) {
    td.textContent = '—';
    return td;
  }
  const time = document.createElement('time');
  time.dateTime = new Date(ms).toISOString();
  time.textContent = formatTime(ms);
  td.append(time);
  return td;
}

function idCell(id) {
  const td = document.createElement('td');
  const code = document.createElement('code');
  code.textContent = id;
  td.append(code);
  return td;
}

function json(value, max = 80) {
  const text = JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function progressCell(job) {
  const td = document.createElement('td');
  td.className = 'progress';
  if (typeof job.progress === 'number') {
    const value = Math.max(0, Math.min(100, job.progress));
    const bar = document.createElement('progress');
    bar.max = 100;
    bar.value = value;
    bar.setAttribute('aria-label', `progress of ${job.id}`);
    td.dataset.progress = String(job.progress);
    td.append(bar, ` ${job.progress}%`);
  } else {
    td.textContent = json(job.progress);
  }
  return td;
}

// What each rendered row was built from, so that a refresh leaves unchanged rows (and their
// buttons, focus and pending clicks) alone.
const builtFrom = new WeakMap();

/** Shows one row per item in `tbody`, rebuilding only rows whose item changed. */
function renderRows(tbody, items, key, build, empty) {
  const existing = new Map([...tbody.rows].filter((tr) => builtFrom.has(tr)).map((tr) => [tr.dataset.key, tr]));
  const rows = items.map((item) => {
    const signature = JSON.stringify(item);
    const old = existing.get(key(item));
    if (old && builtFrom.get(old) === signature) return old;
    const tr = build(item);
    tr.dataset.key = key(item);
    builtFrom.set(tr, signature);
    return tr;
  });
  if (!rows.length) {
    const shown = tbody.rows.length === 1 && !builtFrom.has(tbody.rows[0]) ? tbody.rows[0] : null;
    rows.push(shown ?? empty());
  }
  const same = rows.length === tbody.rows.length && rows.every((tr, i) => tbody.rows[i] === tr);
  if (!same) tbody.replaceChildren(...rows);
}

function emptyRow(columns, text) {
  const tr = document.createElement('tr');
  const td = cell(text);
  td.colSpan = columns;
  td.className = 'empty';
  tr.append(td);
  return tr;
}

function countsRow(name, counts, paused) {
  const tr = document.createElement('tr');
  const th = document.createElement('th');
  th.scope = 'row';
  th.textContent = name;
  if (paused) {
    th.append(' ');
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.dataset.state = 'paused';
    badge.textContent = '(paused)';
    th.append(badge);
  }
  tr.append(th, ...JOB_STATES.map((state) => {
    const td = cell(String(counts[state]));
    td.dataset.count = state;
    return td;
  }));
  return tr;
}

function renderCounts(counts) {
  const leader = $('tasks-leader');
  leader.dataset.leader = String(counts.leader);
  leader.textContent = counts.leader ? 'this tab leads: it runs the jobs' : 'another tab leads and runs the jobs';
  const queues = Object.keys(counts.jobs.queues).sort();
  const paused = new Set(counts.jobs.paused);
  const items = queues.map((name) => ({ name, counts: counts.jobs.queues[name], paused: paused.has(name) }));
  const build = (item) => {
    const tr = countsRow(item.name, item.counts, item.paused);
    tr.dataset.queue = item.name;
    return tr;
  };
  renderRows($('task-queues').tBodies[0], items, (item) => item.name, build, () => emptyRow(8, 'no jobs yet'));
  renderRows($('task-queues').tFoot, [{ name: 'all queues', counts: counts.jobs.all, paused: false }], () => '*', (item) => {
    const tr = countsRow(item.name, item.counts, false);
    tr.dataset.queue = '*';
    return tr;
  });
}

function jobRow(job) {
  const tr = document.createElement('tr');
  tr.dataset.jobId = job.id;
  const outcome = cell(job.error ?? (job.result === null || job.result === undefined ? '—' : json(job.result)));
  if (job.error) outcome.className = 'error';
  tr.append(
    idCell(job.id),
    cell(job.name),
    cell(job.state, job.state),
    progressCell(job),
    cell(String(job.attempts)),
    timeCell(job.createdAt),
    outcome,
  );
  return tr;
}

function failedRow(job, onRetry) {
  const tr = document.createElement('tr');
  tr.dataset.jobId = job.id;
  const error = cell(job.error ?? '—');
  error.className = 'error';
  const action = document.createElement('td');
  const retry = document.createElement('button');
  retry.type = 'button';
  retry.textContent = 'Retry';
  retry.dataset.retry = job.id;
  retry.setAttribute('aria-label', `Retry job ${job.id}`);
  retry.addEventListener('click', () => onRetry(job.id, retry));
  action.append(retry);
  tr.append(idCell(job.id), cell(job.name), error, cell(String(job.attempts)), timeCell(job.finishedAt), action);
  return tr;
}

function describeSpec(spec) {
  const parts = [];
  if (spec.every !== undefined && spec.every !== null) {
    parts.push(spec.every % 1000 === 0 ? `every ${spec.every / 1000} s` : `every ${spec.every} ms`);
  }
  if (spec.cron) parts.push(`cron ${spec.cron}${spec.tz ? ` (${spec.tz})` : ''}`);
  if (spec.limit) parts.push(`at most ${spec.limit} times`);
  return parts.join(', ') || json(spec);
}

function scheduleRow(schedule) {
  const tr = document.createElement('tr');
  tr.dataset.scheduleId = schedule.id;
  const next = timeCell(schedule.nextRunAt);
  next.className = 'next-run';
  if (schedule.nextRunAt !== null) next.dataset.nextRunAt = String(schedule.nextRunAt);
  const fired = cell(String(schedule.count));
  fired.dataset.count = 'fired';
  tr.append(idCell(schedule.id), cell(describeSpec(schedule.spec)), cell(schedule.template.name), next, timeCell(schedule.lastRunAt), fired);
  return tr;
}

/** Every job `tasks.list` pages through (in id order), up to SCAN_LIMIT; `complete` if that was all. */
async function readJobs(orion, live) {
  const jobs = [];
  let after;
  for (;;) {
    const page = await orion.tasks.list({ limit: 200, ...(after ? { after } : {}) });
    jobs.push(...page.items);
    if (!page.next) return { jobs, complete: true };
    if (jobs.length >= SCAN_LIMIT || !live()) return { jobs, complete: false };
    after = page.next;
  }
}

const newestFirst = (key) => (a, b) => (b[key] ?? 0) - (a[key] ?? 0) || (a.id < b.id ? 1 : -1);

function setupTasks(orion) {
  // A crashed worker restarts on the next call: the panel waits for something else to restart it.
  let workerUp = true;
  let inFlight = null;
  let queued = false;
  let lastError = null;

  const retry = async (id, button) => {
    button.disabled = true;
    try {
      const job = await orion.tasks.retry(id);
      log(`retrying ${job.name} ${job.id}: ${job.state}`);
    } catch (error) {
      button.disabled = false;
      log(`retry of ${id} failed: ${error.code}: ${error.message}`, 'error');
    }
    refresh();
  };

  const read = async () => {
    const [counts, failed, schedules] = await Promise.all([
      orion.tasks.counts(),
      orion.tasks.list({ state: 'failed', limit: 100 }),
      orion.tasks.schedules.list(),
    ]);
    const { jobs, complete } = await readJobs(orion, () => workerUp);
    renderCounts(counts);
    const latest = jobs.sort(newestFirst('createdAt')).slice(0, LATEST_JOBS);
    const byId = (item) => item.id;
    renderRows($('task-jobs').tBodies[0], latest, byId, jobRow, () => emptyRow(7, 'no jobs yet'));
    const failures = failed.items.sort(newestFirst('finishedAt')).slice(0, FAILED_JOBS);
    renderRows($('task-failed').tBodies[0], failures, byId, (job) => failedRow(job, retry), () => emptyRow(6, 'no failed jobs'));
    const sorted = schedules.sort((a, b) => (a.id < b.id ? -1 : 1));
    renderRows($('task-schedules').tBodies[0], sorted, byId, scheduleRow, () => emptyRow(6, 'no schedules'));
    const stored = counts.jobs.all;
    const total = JOB_STATES.reduce((sum, state) => sum + stored[state], 0);
    const scope = complete ? '' : ` (the newest of the first ${jobs.length} by id)`;
    $('tasks-updated').textContent = `${total} ${total === 1 ? 'job' : 'jobs'} stored; showing the newest ${latest.length}${scope} and ${failures.length} of ${stored.failed} failed · read at ${new Date().toLocaleTimeString()}`;
    $('tasks-updated').dataset.read = 'ok';
  };

  // One read at a time; a request during a read asks for one more after it.
  const refresh = () => {
    if (inFlight) {
      queued = true;
      return inFlight;
    }
    inFlight = (async () => {
      do {
        queued = false;
        if (!workerUp) break;
        try {
          await read();
          lastError = null;
        } catch (error) {
          // A crash rejects the reads in flight; the worker event has said so already.
          if (!workerUp) break;
          const text = `${error.code}: ${error.message}`;
          $('tasks-updated').textContent = `could not read the tasks: ${text}`;
          $('tasks-updated').dataset.read = 'error';
          if (text !== lastError) log(`tasks: ${text}`, 'error');
          lastError = text;
        }
      } while (queued);
      inFlight = null;
    })();
    return inFlight;
  };

  orion.on('worker', (event) => {
    workerUp = event.state === 'ready';
    if (event.state === 'crashed') {
      $('tasks-updated').textContent = 'the worker crashed: the tasks are read again once it restarts';
      $('tasks-updated').dataset.read = 'error';
    } else if (event.state === 'ready') {
      refresh();
    }
  });
  orion.on('leadership', () => {
    log('this tab now leads: it runs the scheduled and queued tasks', 'event');
    refresh();
  });

  const schedule = async (what, name, payload, options) => {
    try {
      const job = await orion.tasks.simple.schedule(name, payload, { ...KEEP, ...options });
      $('tasks-scheduled').textContent = `${what}: ${job.id} (${job.state})`;
      $('tasks-scheduled').dataset.lastJob = job.id;
      log(`scheduled ${name} ${job.id}`);
    } catch (error) {
      $('tasks-scheduled').textContent = `failed: ${error.code}`;
      log(`schedule ${name} failed: ${error.code}: ${error.message}`, 'error');
    }
    refresh();
  };
  $('run-job').addEventListener('click', () => schedule('job', 'demo.tidy', { steps: 4, stepMs: 500 }));
  $('run-flaky').addEventListener('click', () => schedule('flaky job', 'demo.flaky', { mode: 'flaky' }, { attempts: 2, backoff: 1000 }));
  $('run-failing').addEventListener('click', () => schedule('failing job', 'demo.flaky', { mode: 'broken' }, { attempts: 2 }));

  // The buttons stay disabled until the tasks they schedule are defined.
  defineDemoTasks(orion)
    .then(() => {
      for (const id of ['run-job', 'run-flaky', 'run-failing']) $(id).disabled = false;
    }, (error) => log(`defining the demo tasks failed: ${error.code}: ${error.message}`, 'error'))
    .finally(() => {
      refresh();
      setInterval(() => {
        if (document.visibilityState === 'visible') refresh();
      }, 1000);
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible') refresh();
      });
    });
}

async function showMemoryStats(orion) {
  try {
    const stats = await orion.memory.stats();
    const kinds = Object.entries(stats.byKind).filter(([, n]) => n > 0).map(([kind, n]) => `${n} ${kind}`).join(', ');
    $('memory-stats').textContent = `${stats.count} ${stats.count === 1 ? 'memory' : 'memories'}${kinds ? ` (${kinds})` : ''} · budget ${stats.maxMemories} · ${stats.embeddingVersion}`;
  } catch (error) {
    $('memory-stats').textContent = `unavailable: ${error.code}: ${error.message}`;
  }
}

function setupMemory(orion) {
  const results = $('memory-results');
  const show = (items) => {
    results.replaceChildren(...items.map((item) => {
      const li = document.createElement('li');
      li.textContent = item;
      return li;
    }));
  };
  $('remember').addEventListener('click', async () => {
    try {
      const memory = await orion.memory.add($('memory-text').value, { kind: $('memory-kind').value });
      log(`remembered ${memory.id} (${memory.kind})`);
    } catch (error) {
      log(`remember failed: ${error.code}: ${error.message}`, 'error');
    }
    showMemoryStats(orion);
  });
  $('recall').addEventListener('click', async () => {
    const started = performance.now();
    try {
      const hits = await orion.memory.search($('memory-query').value, { k: 5 });
      const ms = (performance.now() - started).toFixed(1);
      show(hits.length ? hits.map((h) => `${h.similarity.toFixed(3)} · ${h.kind} · ${h.text}`) : ['nothing similar enough']);
      log(`memory search: ${hits.length} hits in ${ms} ms`);
    } catch (error) {
      show([`failed: ${error.code}: ${error.message}`]);
    }
  });
  $('forget').addEventListener('click', async () => {
    try {
      const count = await orion.memory.purge();
      show([]);
      log(`forgot ${count} memories`);
    } catch (error) {
      log(`forget failed: ${error.code}: ${error.message}`, 'error');
    }
    showMemoryStats(orion);
  });
  showMemoryStats(orion);
}

main();

// Backups: the panel lists what `orion.backups.list()` answers and runs each action through
// `orion.backups`, with `backup_progress` (export, download) and `memory_index` (restore, import)
// events on one progress bar.
const BACKUP_ACTIONS = [['verify', 'Verify'], ['restore', 'Restore'], ['download', 'Download'], ['delete', 'Delete']];

function backupRow(backup) {
  const tr = document.createElement('tr');
  tr.dataset.backupId = backup.id;
  const actions = document.createElement('td');
  actions.className = 'actions-cell';
  for (const [action, label] of BACKUP_ACTIONS) {
    const button = element('button', action === 'delete' ? 'danger' : '', label);
    button.type = 'button';
    button.dataset.action = action;
    button.setAttribute('aria-label', `${label} backup ${backup.label ?? backup.id}`);
    actions.append(button);
  }
  tr.append(
    idCell(backup.id),
    cell(backup.kind),
    cell(backup.label ?? '—'),
    timeCell(backup.createdAt),
    cell(String(backup.itemCount)),
    cell(`${(backup.bytes / MB).toFixed(2)} MB`),
    cell(backup.embeddingVersion),
    actions,
  );
  return tr;
}

/** The memories a backup file announces near its start (Dexie's `rowCount` of `memories`, which
 * ORION's files carry too), or null. */
async function announcedCount(file) {
  const head = await file.slice(0, 8192).text();
  const match = /\{"name":"memories","schema":"[^"]*","rowCount":(\d+)\}/.exec(head);
  return match ? Number(match[1]) : null;
}

function setupBackups(orion) {
  const bar = $('backup-progress');
  const controls = ['backup-create', 'backup-download-now', 'backup-import'].map($);
  const tbody = $('backup-list').tBodies[0];
  // What the progress events count towards while an action runs: null when none does.
  let tracking = null;

  const status = (phase, text) => {
    $('backup-status').dataset.phase = phase;
    $('backup-status').textContent = text;
  };
  const progress = (done, total) => {
    bar.hidden = false;
    if (total > 0) {
      bar.max = total;
      bar.value = Math.min(done, total);
    } else {
      bar.removeAttribute('value'); // indeterminate
    }
  };
  orion.on('backup_progress', (e) => {
    if (tracking === 'export') progress(e.done, e.total);
  });
  orion.on('memory_index', (e) => {
    if (tracking?.index) progress(e.loaded, tracking.total);
  });

  const refresh = async () => {
    try {
      const [list, stats] = await Promise.all([orion.backups.list(), orion.backups.stats()]);
      renderRows(tbody, list, (backup) => backup.id, backupRow, () => emptyRow(8, 'no backups yet'));
      const size = `${(stats.bytes / MB).toFixed(2)} MB`;
      $('backup-stats').textContent = `${stats.count} stored (${stats.auto} automatic, the newest ${stats.keepAuto} kept; ${stats.manual} manual) · ${size}`;
    } catch (error) {
      $('backup-stats').textContent = `could not read the backups: ${error.code}`;
    }
  };

  // Runs one action at a time: `run()` answers the text shown when it is done.
  let running = false;
  const act = async (what, track, run) => {
    if (running) return;
    running = true;
    for (const control of controls) control.disabled = true;
    for (const button of tbody.querySelectorAll('button')) button.disabled = true;
    status('working', `${what}…`);
    tracking = track;
    progress(0, track?.total ?? 0);
    try {
      const text = await run();
      status('done', text);
      log(`backups: ${text}`);
    } catch (error) {
      status('error', `${what} failed: ${error.code}: ${error.message}`);
      log(`backups: ${what} failed: ${error.code}: ${error.message}`, 'error');
    } finally {
      tracking = null;
      bar.hidden = true;
      running = false;
      for (const control of controls) control.disabled = false;
      await refresh();
      for (const button of tbody.querySelectorAll('button')) button.disabled = false;
    }
  };
  const clearExisting = () => $('backup-clear').checked;
  const restored = (report) =>
    `${report.restored} memories written (${report.replaced} replaced), ${report.skipped} skipped${report.otherVersions ? `, ${report.otherVersions} of another embedding version` : ''}`;

  $('backup-create').addEventListener('click', () =>
    act('backing up', null, async () => {
      const label = $('backup-label').value.trim();
      const backup = await orion.backups.create(label ? { label } : {});
      $('backup-label').value = '';
      return `backup ${backup.id} taken: ${backup.itemCount} memories, ${(backup.bytes / MB).toFixed(2)} MB`;
    }));
  $('backup-download-now').addEventListener('click', () =>
    act('exporting every memory', 'export', async () => `saved ${await orion.backups.download()}`));
  $('backup-import').addEventListener('change', (event) => {
    const [file] = event.target.files;
    if (!file) return;
    act(`importing ${file.name}`, { index: true, total: 0 }, async () => {
      tracking.total = (await announcedCount(file)) ?? 0;
      const report = await orion.backups.import(file, { clearExisting: clearExisting() });
      return `imported ${file.name}: ${restored(report)}`;
    }).finally(() => {
      event.target.value = '';
    });
  });
  tbody.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const id = button?.closest('tr')?.dataset.backupId;
    if (!id) return;
    const count = Number(button.closest('tr').children[4].textContent);
    const actions = {
      verify: () => act(`verifying ${id}`, null, async () => {
        const { valid, issues } = await orion.backups.verify(id);
        return valid ? `${id} is valid` : `${id} is damaged: ${issues.join('; ')}`;
      }),
      restore: () => act(`restoring ${id}`, { index: true, total: count }, async () => `restored ${id}: ${restored(await orion.backups.restore(id, { clearExisting: clearExisting() }))}`),
      download: () => act(`downloading ${id}`, 'export', async () => `saved ${await orion.backups.download(id)}`),
      delete: () => act(`deleting ${id}`, null, async () => ((await orion.backups.delete(id)) ? `deleted ${id}` : `${id} was already gone`)),
    };
    actions[button.dataset.action]?.();
  });

  for (const control of controls) control.disabled = false;
  refresh();
  // Automatic backups appear on their own: read the list again now and then.
  setInterval(() => {
    if (!running) refresh();
  }, 5000);
}
