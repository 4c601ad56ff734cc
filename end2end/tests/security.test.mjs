// Cross-site request forgery and the Content Security Policy in a real browser. A page on another
// origin of the same site (another port of 127.0.0.1, so the admin's SameSite=Lax cookie still goes
// along) posts a form to Moat: refused by the origin check. Moat's own pages hydrate and post under
// their policy without a single violation.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { api, launchBrowser, openStudy, startMoat, ADMIN_TOKEN } from './harness.mjs';

let moat;
let browser;
let attacker;
let attackerBase;

before(async () => {
  moat = await startMoat();
  browser = await launchBrowser();
  // The attacker's page: a form that closes the study, submitted as soon as the page loads.
  attacker = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!DOCTYPE html><title>Win a prize</title>
      <form method="post" action="${moat.base}/rpc/set_study_status">
        <input name="slug" value="csrf"><input name="status" value="closed">
      </form>
      <script>document.forms[0].submit()</script>`);
  });
  await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  attackerBase = `http://127.0.0.1:${attacker.address().port}`;
});

after(async () => {
  await browser?.close();
  attacker?.close();
  moat?.child.kill('SIGKILL');
});

async function studyStatus(slug) {
  return JSON.parse(await api(moat.base, 'GET', `/api/v1/studies/${slug}`)).summary.status;
}

test('a form on another origin cannot change a study with the admin cookie; the admin page can', async () => {
  await openStudy(moat.base, 'csrf', 2, 2);
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = [];
  page.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) violations.push(message.text());
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${page.url()}: ${e}`));

  await page.goto(`${moat.base}/admin`);
  await page.waitForSelector('body[data-hydrated]');
  await page.fill('input[name=token]', ADMIN_TOKEN);
  await page.click('#login');
  await page.waitForSelector('a[href="/admin/studies/csrf"]');
  assert.ok((await context.cookies(moat.base)).some((c) => c.name === 'moat_admin'), 'logged in');

  const forged = page.waitForResponse((r) => r.url() === `${moat.base}/rpc/set_study_status`);
  await page.goto(`${attackerBase}/`);
  const response = await forged;
  const sent = await response.request().allHeaders();
  assert.equal(sent.origin, attackerBase, 'the browser names the attacker as the origin');
  assert.match(sent.cookie ?? '', /moat_admin=/, 'the browser sent the admin cookie along (same site)');
  assert.equal(response.status(), 403);
  assert.match(await response.text(), /cross-origin request refused/);
  assert.equal(await studyStatus('csrf'), 'open', 'the forged post changed nothing');

  // The admin's own page closes the study with the button (a same-origin post).
  await page.goto(`${moat.base}/admin/studies/csrf`);
  await page.click('#status-closed');
  await page.waitForFunction(() => document.querySelector('#study-status')?.textContent === 'closed');
  assert.equal(await studyStatus('csrf'), 'closed');

  // The rater's page of the closed study: neutral, and hydrated under the policy without an error.
  errors.length = 0;
  await page.goto(`${moat.base}/s/csrf`);
  await page.waitForSelector('body[data-hydrated]');
  assert.equal((await page.textContent('#not-open')).trim(), 'This study is not open.');
  assert.ok(!(await page.content()).includes('E2E csrf'), 'no title on a closed study');

  assert.deepEqual(violations, [], 'no Content Security Policy violation');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the admin cookie holds a session, not the token; logging out ends it on the server', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${page.url()}: ${e}`));
  await page.goto(`${moat.base}/admin`);
  await page.waitForSelector('body[data-hydrated]');
  await page.fill('input[name=token]', ADMIN_TOKEN);
  await page.click('#login');
  await page.waitForSelector('#logout');
  assert.match(await page.textContent('#whoami'), /Logged in as owner \(owner\)/);
  const cookie = (await context.cookies(moat.base)).find((c) => c.name === 'moat_admin');
  assert.ok(cookie, 'logged in');
  assert.notEqual(cookie.value, ADMIN_TOKEN, 'the cookie is not the token');
  assert.ok(!cookie.value.includes(ADMIN_TOKEN), 'nor contains it');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Lax');
  const session = `moat_admin=${cookie.value}`;
  const whoami = () => fetch(`${moat.base}/api/v1/whoami`, { headers: { cookie: session } });
  assert.equal((await whoami()).status, 200);

  // The owner's token section: a new token is shown once, and works for its holder.
  await page.fill('.create-token input[name=name]', 'alice');
  await page.selectOption('.create-token select[name=role]', 'viewer');
  await page.click('#create-token');
  const token = (await (await page.waitForSelector('#new-token code')).textContent()).trim();
  assert.match(token, /^moat_at_[0-9a-f]{48}$/);
  await page.waitForSelector('table.admin-tokens >> text=alice');
  // The owner's audit section lists this login (as text: nothing in it is markup).
  const audit = await page.textContent('table.audit-log tbody');
  assert.match(audit, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s*owner\s*login\s*admin\s*owner/);
  const asAlice = await fetch(`${moat.base}/api/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
  assert.deepEqual(await asAlice.json(), { name: 'alice', role: 'viewer', token_id: 1 });
  // Her row's form replaces the studies she may read (a viewer with none reads all).
  await api(moat.base, 'POST', '/api/v1/studies', { slug: 'granted', title: 'Granted' });
  const aliceStudies = async () => (await (await fetch(`${moat.base}/api/v1/studies`, {
    headers: { authorization: `Bearer ${token}` },
  })).json()).map((study) => study.slug);
  assert.ok((await aliceStudies()).length > 1, 'a viewer without studies reads all');
  const row = page.locator('table.admin-tokens tr', { hasText: 'alice' });
  await row.locator('input[name=studies]').fill('granted');
  await row.locator('button.save-token-studies').click();
  await page.waitForFunction(() => document.querySelector('table.admin-tokens input[name=studies]')?.value === 'granted');
  for (let i = 0; i < 50 && (await aliceStudies()).length !== 1; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(await aliceStudies(), ['granted']);

  await page.click('#logout');
  await page.waitForSelector('input[name=token]');
  assert.equal((await whoami()).status, 401, 'the old cookie no longer works anywhere');
  assert.deepEqual(errors, []);
  await context.close();
});
