// The demo's first screen: worker status, the health table and a log of events.
import { Orion } from '/pkg/index.js';

const $ = (id) => document.getElementById(id);
const MAX_LOG = 200;

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

async function refreshHealth(orion) {
  try {
    renderHealth(await orion.health());
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

async function main() {
  let orion;
  try {
    // debug: the demo shows crash recovery, so it allows the debug `crash` request.
    orion = await Orion.create({
      debug: true,
      models: { embedding: '/models/all-MiniLM-L6-v2/' },
      onProgress: (e) => {
        if (e.kind === 'memory_index') {
          $('memory-stats').textContent = e.done ? `index loaded: ${e.loaded} memories` : `loading the index: ${e.loaded} memories…`;
          return;
        }
        if (e.kind !== 'model_progress') return;
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
    if (!['model_progress', 'memory_progress', 'memory_index'].includes(event.kind)) refreshHealth(orion);
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

  setupMemory(orion);

  await refreshHealth(orion);
  setInterval(() => refreshHealth(orion), 5000);
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
