// What both benchmarks need: headless Chromium with one context whose pages may talk only to our
// server, and pages that record page errors and CSP violations. `finish(out)` adds what was
// recorded to the figures and fails the run on any request elsewhere or any page error.
import { chromium } from '@playwright/test';
import { chromiumLaunchOptions } from '../chromium.mjs';

export async function launchGuarded(base) {
  const browser = await chromium.launch(chromiumLaunchOptions);
  const context = await browser.newContext();
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
