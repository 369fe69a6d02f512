// Playwright runs ORION's end-to-end tests in Debian's Chromium (never a downloaded browser).
// `cargo xtask test` serves the repository and passes its address in ORION_BASE_URL.
import { defineConfig } from '@playwright/test';
import { chromiumLaunchOptions } from './chromium.mjs';

const baseURL = process.env.ORION_BASE_URL;
if (!baseURL) throw new Error('ORION_BASE_URL is not set: run the end-to-end tests through `cargo xtask test`');

export default defineConfig({
  testDir: './e2e',
  timeout: 180_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  outputDir: './test-results',
  use: {
    baseURL,
    launchOptions: chromiumLaunchOptions,
    // The demo page registers a service worker; only offline.spec.mjs is about it and allows it.
    // Measured here (Chromium 156): a module worker created while that service worker installs
    // never got its imported module in about 1 run in 40 (0 in 100 with service workers blocked),
    // and the other specs create extra workers on the demo page.
    serviceWorkers: 'block',
  },
});
