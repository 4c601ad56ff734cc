// The live arena in a real browser: a rater writes a prompt, both anonymous answers visibly grow
// while they stream, the vote buttons appear when both are done, the vote reveals the models, and the
// next battle starts; with JavaScript off the same flow works with plain form posts. The contestants
// are served by a local server that speaks the OpenAI chat-completions protocol and streams a word
// every 200 ms, so growth can be watched (and a first answer takes ~3 s: longer than any refresh delay).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN_TOKEN, api, launchBrowser, startMoat } from './harness.mjs';

const CONTESTANTS = [
  { name: 'arena-e2e-secret-one', provider: 'SecretOneLabs', upstream: 'up-one', text: 'The capital of France is Paris, on the Seine, with about two million people.' },
  { name: 'arena-e2e-hidden-two', provider: 'HiddenTwoInc', upstream: 'up-two', text: 'Paris. It has been the capital for most of the last thousand years, since 987.' },
];

let upstream;
let moat;
let browser;

function fakeUpstream() {
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (d) => (body += d));
    request.on('end', async () => {
      const { model, messages } = JSON.parse(body);
      const contestant = CONTESTANTS.find((c) => c.upstream === model);
      // A follow-up (a later user turn) gets its own answer, so the page shows it changed.
      const users = messages.filter((m) => m.role === 'user').length;
      const text = users > 1 ? `Follow-up answer ${users}: still ${contestant.text.split(' ')[0]}` : contestant.text;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (delta, finish = null) =>
        `data: ${JSON.stringify({ id: 'chatcmpl-e2e', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      response.write(chunk({ role: 'assistant', content: '' }));
      for (const word of text.split(/(?<= )/)) {
        await new Promise((r) => setTimeout(r, 200));
        if (response.destroyed) return;
        response.write(chunk({ content: word }));
      }
      response.write(chunk({}, 'stop'));
      response.end('data: [DONE]\n\n');
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

before(async () => {
  upstream = await fakeUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'moat-e2e-arena-'));
  const registry = join(dir, 'models.toml');
  writeFileSync(registry, CONTESTANTS.map((c) => `[[model]]
name = "${c.name}"
provider = "${c.provider}"
openness = "open"
kind = "openai"
base_url = "http://127.0.0.1:${upstream.address().port}/v1"
model = "${c.upstream}"
`).join('\n'));
  moat = await startMoat(['--models', registry]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  moat?.child.kill('SIGKILL');
  upstream?.close();
});

async function openArena(slug, settings = {}) {
  await api(moat.base, 'POST', '/api/v1/studies', {
    slug, title: `Arena ${slug}`, instructions: 'Ask **anything**.',
    settings: { kind: 'arena', items_per_rater: 2, reveal_after_vote: true, completion_code: `DONE-${slug}`, ...settings },
  });
  await api(moat.base, 'POST', `/api/v1/studies/${slug}/status`, { status: 'open' });
}

function assertBlind(what, text) {
  for (const c of CONTESTANTS) {
    for (const secret of [c.name, c.provider, c.upstream]) {
      assert.ok(!text.includes(secret), `${what} names ${secret} before the vote`);
    }
  }
}

test('with JavaScript: answers stream in side by side, vote, reveal, next battle', async () => {
  await openArena('live');
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const received = [];
  page.on('response', async (response) => {
    if (response.url().includes('/events')) return; // a stream; its blindness is tested in Rust
    try { received.push(await response.text()); } catch { /* redirects have no body */ }
  });
  await page.goto(`${moat.base}/s/live`);
  await page.waitForSelector('body[data-hydrated]');
  await page.check('input[name=agree]');
  await page.click('#consent');
  await page.waitForSelector('#arena-prompt');
  await page.waitForSelector('body[data-hydrated]');
  assert.match(await page.textContent('#progress'), /Battle 1 of 2/);
  await page.evaluate(() => (window.__noReload = true));
  await page.fill('#arena-prompt', 'What is the capital of France?');
  await page.click('#arena-send');

  // Both answers grow while the vote buttons are not there yet.
  await page.waitForFunction(() => (document.querySelector('#stream-a .streaming')?.textContent ?? '').length > 0
    && (document.querySelector('#stream-b .streaming')?.textContent ?? '').length > 0);
  const first = await page.evaluate(() => [document.querySelector('#stream-a .streaming').textContent.length, document.querySelector('#stream-b .streaming').textContent.length]);
  assert.equal(await page.$('#vote-left'), null, 'no vote before both answers are complete');
  await page.waitForFunction(([a, b]) => document.querySelector('#stream-a .streaming')?.textContent.length > a
    && document.querySelector('#stream-b .streaming')?.textContent.length > b, first);
  assertBlind('the page while streaming', await page.content());

  // Complete: the comparison with both answers, and the vote buttons.
  await page.waitForSelector('#vote-left');
  const a = await page.textContent('#response-a');
  const b = await page.textContent('#response-b');
  assert.ok(a.includes('Paris') && b.includes('Paris'), `${a} / ${b}`);
  assertBlind('the comparison page', await page.content());
  for (const body of received) assertBlind('a response the browser received', body);
  await page.click('#vote-left');
  await page.waitForSelector('.reveal');
  const reveal = await page.textContent('.reveal');
  assert.ok(CONTESTANTS.every((c) => reveal.includes(c.name)), reveal);
  await page.click('#next');
  await page.waitForSelector('#arena-prompt');
  assert.match(await page.textContent('#progress'), /Battle 2 of 2/);
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page never reloaded');
  assert.deepEqual(errors, []);
  await context.close();

  const report = JSON.parse(await api(moat.base, 'GET', '/api/v1/studies/live'));
  assert.equal(report.summary.votes, 1);
  assert.equal(report.battles.complete, 1);

  // The researcher sees the registry and the battles on the admin pages.
  const admin = await browser.newContext();
  const adminPage = await admin.newPage();
  const adminErrors = [];
  adminPage.on('pageerror', (e) => adminErrors.push(String(e)));
  await adminPage.goto(`${moat.base}/admin`);
  await adminPage.fill('input[name=token]', ADMIN_TOKEN);
  await adminPage.click('#login');
  await adminPage.waitForSelector('#models');
  const models = await adminPage.textContent('#models');
  for (const c of CONTESTANTS) assert.ok(models.includes(c.name) && models.includes(c.upstream), models);
  await adminPage.goto(`${moat.base}/admin/studies/live`);
  assert.match(await adminPage.textContent('#battle-summary'), /1 battles complete/);
  // The study page hydrates (its status buttons are forms, which a <p> cannot hold).
  await adminPage.waitForSelector('body[data-hydrated]');
  await adminPage.waitForTimeout(300);
  assert.deepEqual(adminErrors, []);
  await admin.close();
});

test('without JavaScript: the prompt form waits for both answers, then the vote', async () => {
  await openArena('plain');
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${moat.base}/s/plain`);
  await page.check('input[name=agree]');
  await page.click('#consent');
  await page.waitForSelector('#arena-prompt');
  await page.fill('#arena-prompt', 'Name the capital of France.');
  await Promise.all([page.waitForNavigation(), page.click('#arena-send')]);
  await page.waitForSelector('#vote-right');
  assertBlind('the no-JavaScript comparison page', await page.content());
  assert.ok((await page.textContent('#response-a')).includes('Paris'));
  await Promise.all([page.waitForNavigation(), page.click('#vote-right')]);
  await page.waitForSelector('.reveal');
  await Promise.all([page.waitForNavigation(), page.click('#next')]);
  await page.waitForSelector('#arena-prompt');
  assert.match(await page.textContent('#progress'), /Battle 2 of 2/);
  await context.close();
});

test('with JavaScript: a follow-up question streams to the same pair, then one vote on the conversation', async () => {
  await openArena('multi', { max_turns: 2 });
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${moat.base}/s/multi`);
  await page.waitForSelector('body[data-hydrated]');
  await page.check('input[name=agree]');
  await page.click('#consent');
  await page.waitForSelector('#arena-prompt');
  await page.waitForSelector('body[data-hydrated]');
  await page.fill('#arena-prompt', 'What is the capital of France?');
  await page.click('#arena-send');
  await page.waitForSelector('#vote-left');
  await page.waitForSelector('#arena-follow-up');
  await page.fill('#arena-follow-up', 'And how old is it?');
  await page.click('#arena-follow-up-send');
  // The follow-up streams below the first turn; the question is shown, no vote meanwhile.
  await page.waitForSelector('#stream-a');
  assert.equal(await page.$('#vote-left'), null, 'no vote while the follow-up is answered');
  assert.match(await page.textContent('#turn-1'), /Paris/);
  assert.ok((await page.content()).includes('And how old is it?'));
  await page.waitForFunction(() => (document.querySelector('#stream-a .streaming')?.textContent ?? '').includes('Follow-up'));
  assertBlind('the page while a follow-up streams', await page.content());
  await page.waitForSelector('#vote-left');
  assert.match(await page.textContent('#response-a'), /Follow-up answer 2/);
  assert.match(await page.textContent('#turn-1'), /Paris/);
  assert.equal(await page.$('#arena-follow-up'), null, 'max_turns 2: no third question');
  assertBlind('the two-turn comparison', await page.content());
  await page.click('#vote-left');
  await page.waitForSelector('.reveal');
  assert.deepEqual(errors, []);
  await context.close();

  const battles = await api(moat.base, 'GET', '/api/v1/studies/multi/export?format=arena');
  const row = JSON.parse(battles.trim());
  assert.equal(row.turn, 2);
  assert.equal(row.conversation_a.length, 4);
  assert.equal(row.conversation_a[2].content, 'And how old is it?');
});

test('without JavaScript: a follow-up question is a plain form post too', async () => {
  await openArena('multi-plain', { max_turns: 2 });
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${moat.base}/s/multi-plain`);
  await page.check('input[name=agree]');
  await page.click('#consent');
  await page.waitForSelector('#arena-prompt');
  await page.fill('#arena-prompt', 'Name the capital of France.');
  await Promise.all([page.waitForNavigation(), page.click('#arena-send')]);
  await page.waitForSelector('#arena-follow-up');
  await page.fill('#arena-follow-up', 'Since when?');
  await Promise.all([page.waitForNavigation(), page.click('#arena-follow-up-send')]);
  await page.waitForSelector('#vote-right');
  assert.match(await page.textContent('#turn-1'), /Paris/);
  assert.match(await page.textContent('#response-b'), /Follow-up answer 2/);
  assertBlind('the no-JavaScript two-turn comparison', await page.content());
  await Promise.all([page.waitForNavigation(), page.click('#vote-right')]);
  await page.waitForSelector('.reveal');
  await context.close();
});
