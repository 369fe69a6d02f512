// What both benchmarks need: headless Chromium with one context whose pages may talk only to our
// server, and pages that record page errors and CSP violations. `finish(out)` adds what was
// recorded to the figures and fails the run on any request elsewhere or any page error.
//
// `persistent: true` gives a profile on disk (a temporary directory, deleted at `browser.close()`)
// rather than an off-the-record context, whose IndexedDB lives in memory and behaves differently:
// measured with 100 000 memories, a start's first two searches took 650–790 ms there against
// 25–45 ms on disk, while the background read of the index's vectors was in flight.
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
