// The `moat` binary alone: copied into an empty folder and started there without --site-root, it
// serves the whole app, hydration module included (embedded at build time), under content-hashed
// names with year-long cache lifetimes, gzipped for a browser that accepts it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { launchBrowser, openStudy, startMoat } from './harness.mjs';

let moat;
let browser;

before(async () => {
  moat = await startMoat([], { standalone: true });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  moat?.child.kill('SIGKILL');
});

test('a copied binary in an empty folder serves a hydrated page', async () => {
  await openStudy(moat.base, 'alone', 3, 2);
  const context = await browser.newContext();
  const page = await context.newPage();
  const assets = [];
  page.on('response', (response) => {
    if (new URL(response.url()).pathname.startsWith('/pkg/')) assets.push(response);
  });
  await page.goto(`${moat.base}/s/alone?PROLIFIC_PID=standalone-1`);
  await page.waitForSelector('body[data-hydrated]', { timeout: 15000 });

  const paths = assets.map((r) => new URL(r.url()).pathname);
  const script = assets.find((r) => /^\/pkg\/moat-[0-9a-f]{16}\.js$/.test(new URL(r.url()).pathname));
  const wasm = assets.find((r) => /^\/pkg\/moat-[0-9a-f]{16}_bg\.wasm$/.test(new URL(r.url()).pathname));
  assert.ok(script && wasm, `hashed module names: ${paths.join(', ')}`);
  for (const response of [script, wasm]) {
    assert.equal(response.status(), 200);
    const headers = await response.allHeaders();
    assert.equal(headers['cache-control'], 'public, max-age=31536000, immutable');
    assert.equal(headers['content-encoding'], 'gzip', `${response.url()} gzipped`);
  }
  assert.equal((await wasm.allHeaders())['content-type'], 'application/wasm');

  // The folder it ran in holds only the binary: nothing was read from or written to it.
  assert.deepEqual(readdirSync(moat.cwd), ['moat']);
  await context.close();
});
