// What both benchmarks need: headless Chromium with one context whose pages may talk only to our
// server, and pages that record page errors and CSP violations. `finish(out)` adds what was
// recorded to the figures and fails the run on any request elsewhere or any page error.
//
// `persistent: true` gives a profile on disk (a temporary directory, deleted at `browser.close()`)
// rather than an off-the-record context, whose IndexedDB lives in memory and behaves differently:
// measured with 100 000 memories, a start's first two searches took 650–790 ms there against
// 25–45 ms on disk, while the background read of the index's vectors was in flight.
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from '@playwright/test';
import { chromiumLaunchOptions } from '../chromium.mjs';

export async function launchGuarded(base, { persistent = false } = {}) {
  let browser;
  let context;
  if (persistent) {
    const dataDir = await mkdtemp(join(tmpdir(), 'orion-bench-'));
    context = await chromium.launchPersistentContext(dataDir, chromiumLaunchOptions);
    browser = {
      newBrowserCDPSession: () => context.browser().newBrowserCDPSession(),
      close: async () => {
        await context.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  } else {
    browser = await chromium.launch(chromiumLaunchOptions);
    context = await browser.newContext();
  }
  const foreign = [];
  const pageErrors = [];
  const cspViolations = [];
  let requests = 0;
  context.on('request', (request) => {
    requests += 1;
    const url = request.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith('blob:') && !url.startsWith('data:')) {
      foreign.push(url);
    }
  });

  /** A fresh page at `path`, watched for errors and CSP violations. */
  const openPage = async (path) => {
    const page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      const text = message.text();
      if (/Content.Security.Policy/i.test(text)) cspViolations.push(text);
    });
    await page.goto(`${base}${path}`);
    await page.evaluate(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) =>
        window.__csp.push(`${e.violatedDirective}: ${e.blockedURI}`),
      );
    });
    return page;
  };

  const closePage = async (page) => {
    cspViolations.push(...(await page.evaluate(() => window.__csp)));
    await page.close();
  };

  const finish = (out) => {
    out.requests = requests;
    out.foreignRequests = foreign;
    out.cspViolations = cspViolations;
    out.pageErrors = pageErrors;
    if (foreign.length > 0) throw new Error(`requests outside our server: ${foreign.join(', ')}`);
    if (pageErrors.length > 0) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  };

  return { browser, context, openPage, closePage, finish };
}

/**
 * Gives `page` `window.bench`: `text(n)`, a deterministic text of 100–200 characters from the 200
 * reference sentences, unique by its number; `query(q)`, a few words of one sentence and of
 * another, unlike any stored text; `stats(values)`, their median, p95, min, max and count.
 */
export async function installBenchText(page) {
  await page.evaluate(async () => {
    const { sentences } = await (await fetch('/reference/minilm-reference.json')).json();
    const text = (n) => {
      const a = sentences[n % sentences.length];
      const b = sentences[(Math.floor(n / sentences.length) * 7 + n * 13 + 5) % sentences.length];
      let t = `${a} ${b}`;
      for (let k = 1; t.length < 100; k++) t += ` ${sentences[(n * 31 + k * 17) % sentences.length]}`;
      if (t.length > 185) t = t.slice(0, t.lastIndexOf(' ', 185));
      return `${t} (note ${n})`;
    };
    const query = (q) => {
      const words = (s) => s.split(/\s+/);
      const a = words(sentences[(q * 37 + 3) % sentences.length]).slice(0, 5);
      const b = words(sentences[(q * 53 + 11) % sentences.length]).slice(-3);
      return [...a, ...b].join(' ');
    };
    const stats = (values) => {
      const sorted = [...values].sort((x, y) => x - y);
      const at = (p) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
      return { median: at(0.5), p95: at(0.95), min: sorted[0], max: sorted[sorted.length - 1], n: sorted.length };
    };
    window.bench = { text, query, stats, sentences: sentences.length };
  });
}

/**
 * Creates ORION in `page` as `window.orion` (the micro profile: the hashing embedder, no model
 * download) on `database` with `maxMemories`, and `backups` settings if given; resolves once its
 * index has loaded (the `memory_index` event with `done`), and `settleMs` after that.
 */
export async function createOrion(page, { database, maxMemories, settleMs = 0, backups }) {
  await page.evaluate(async ({ database, maxMemories, settleMs, backups }) => {
    const { Orion } = await import('/pkg/index.js');
    let indexDone;
    const loaded = new Promise((resolve) => {
      indexDone = resolve;
    });
    const orion = await Orion.create({
      profile: 'micro',
      database,
      memory: { maxMemories },
      ...(backups ? { backups } : {}),
      onProgress: (e) => {
        if (e.kind === 'memory_index' && e.done) indexDone();
      },
    });
    await loaded;
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    window.orion = orion;
  }, { database, maxMemories, settleMs, backups: backups ?? null });
}

/**
 * Peak resident memory of the browser's renderer processes (a page's dedicated workers run in its
 * renderer). `renderers()` lists their pids; `reset(pids)` sets the high-water mark (Linux VmHWM)
 * of those renderers (every one by default) to their current resident size, through
 * /proc/PID/clear_refs, and remembers that size; `read()` then gives the one whose peak rose most:
 * `{ pid, baseMB, peakMB, peakIncreaseMB }`. Only renderers count: IndexedDB and Blob storage live
 * in the browser's own processes.
 */
export async function rendererMemoryMeter(browser) {
  const cdp = await browser.newBrowserCDPSession();
  const kb = (pid, field) => {
    try {
      const match = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
      return match ? Number(match[1]) : null;
    } catch {
      return null; // the process ended
    }
  };
  const renderers = async () => {
    const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
    return processInfo.filter((p) => p.type === 'renderer').map((p) => p.id);
  };
  let base = new Map();
  return {
    renderers,
    async reset(pids) {
      base = new Map();
      for (const pid of pids ?? (await renderers())) {
        try {
          writeFileSync(`/proc/${pid}/clear_refs`, '5');
        } catch {
          continue;
        }
        const rss = kb(pid, 'VmRSS');
        if (rss !== null) base.set(pid, rss);
      }
    },
    read() {
      let worst = null;
      for (const [pid, rss] of base) {
        const peak = kb(pid, 'VmHWM');
        if (peak === null) continue;
        if (!worst || peak - rss > worst.peakIncreaseMB * 1024) {
          worst = { pid, baseMB: rss / 1024, peakMB: peak / 1024, peakIncreaseMB: (peak - rss) / 1024 };
        }
      }
      return worst;
    },
  };
}
