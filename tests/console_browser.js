// Drives framegate's console in real Chromium (tests/console.rs): the page loads with no console
// errors, shows the routes, and follows what the test does to the proxy. Where the proxy must
// change, it prints `ACT <what>` and waits for the test's `go` on stdin; it prints what it saw
// as `SAW <what> <values>` lines for the test to check.
// Usage: node console_browser.js ADMIN_URL TOKEN SCREENSHOT_DIR
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require('./node/node_modules/playwright-core');

const [admin, token, shots] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function act(what) {
  console.log(`ACT ${what}`);
  const answer = await lines.next();
  if (answer.done || answer.value !== 'go') throw new Error(`the test did not answer ${what}: ${answer.value}`);
}

const saw = (...values) => console.log(['SAW', ...values].join(' '));

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'framegate-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    httpCredentials: { username: 'operator', password: token },
    viewport: { width: 1400, height: 1000 },
  });
  const errors = [];
  try {
    const page = browser.pages()[0] || await browser.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${admin}/console`);
    await page.waitForSelector('#routes tr[data-route]');
    const routes = await page.$$eval('#routes tr[data-route]', (rows) => rows.map((r) => r.dataset.route));
    saw('routes', ...routes);

    const connections = () => page.textContent('tr[data-route="echo"] .connections');
    const before = await connections();
    await act('connect');
    await page.waitForFunction((n) => document.querySelector('tr[data-route="echo"] .connections').textContent === n, '3');
    saw('connections', before, await connections());

    const version = () => page.textContent('tr[data-filter="echo"] .version');
    const old = await version();
    await act('swap');
    await page.waitForFunction((v) => document.querySelector('tr[data-filter="echo"] .version').textContent !== v, old);
    const chained = await page.textContent('tr[data-route="echo"] [data-module="echo"] .version');
    saw('version', old, await version(), chained);

    await act('broker-down');
    await page.waitForSelector('tr[data-sink="orders"].down .reason', { timeout: 20000 });
    const badge = await page.$eval('tr[data-sink="orders"] .badge', (b) => getComputedStyle(b).backgroundColor);
    saw('down', badge.replace(/ /g, ''), await page.textContent('tr[data-sink="orders"] .reason'));

    await page.click('tr[data-route="echo"] button[data-tap]');
    await page.waitForFunction(() => document.getElementById('tap-state').textContent === 'watching echo');
    await act('send-tap');
    const sent = Date.now();
    const probe = await page.waitForSelector('#tap-log tr.tap-message[data-dir="in"] td.preview', { timeout: 1000 });
    saw('tap', Date.now() - sent, await probe.textContent());
    await page.waitForSelector('#tap-log tr.tap-message[data-dir="out"]', { timeout: 5000 });
    const meta = await page.textContent('#tap-log tr.tap-message[data-dir="in"] td.meta');
    saw('tap-meta', meta.replace(/\s+/g, ' '));

    await act('traffic'); // messages for a few seconds: rates and sparklines have points
    await page.waitForTimeout(3000);
    await page.screenshot({ path: path.join(shots, 'console.png') });
    await page.locator('#tap').screenshot({ path: path.join(shots, 'console-tap.png') });
    saw('errors', errors.length, ...errors.map((e) => JSON.stringify(e)));
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(error);
  process.exit(1);
});
