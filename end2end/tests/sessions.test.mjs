// Rater sessions a script cannot flood or take over, in a real browser: past the study's sessions
// per address the consent page says why no session started; a participant id used from a second
// browser gets a session of its own, never the first one's comparison; the completion page shows
// the session's own code and, at the end only, which model wrote what.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, MODELS, openStudy, startMoat } from './harness.mjs';

let moat;
let browser;

before(async () => {
  moat = await startMoat();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  moat?.child.kill('SIGKILL');
});

async function consent(context, url) {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForSelector('body[data-hydrated]');
  await page.check('input[name=agree]');
  await page.click('#consent');
  return page;
}

test('a flood of sessions from one address is refused with a reason', async () => {
  await openStudy(moat.base, 'flood', 4, 2, { sessions_per_ip: 2 });
  const contexts = [];
  for (let i = 0; i < 2; i++) {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await consent(context, `${moat.base}/s/flood`);
    await page.waitForSelector('#progress');
  }
  const third = await browser.newContext();
  contexts.push(third);
  const page = await consent(third, `${moat.base}/s/flood`);
  await page.waitForSelector('p.error');
  assert.match(await page.textContent('p.error'), /already started 2 sessions from your network/);
  assert.equal(await page.locator('#progress').count(), 0, 'no comparison for the third session');
  for (const context of contexts) await context.close();
});

test('a participant id from a second browser gets its own session, not the first one', async () => {
  await openStudy(moat.base, 'takeover', 4, 2);
  const first = await browser.newContext();
  const mine = await consent(first, `${moat.base}/s/takeover?PROLIFIC_PID=carol`);
  await mine.waitForSelector('#progress');
  const myAssignment = await mine.inputValue('input[name=assignment]');
  const second = await browser.newContext();
  const theirs = await consent(second, `${moat.base}/s/takeover?PROLIFIC_PID=carol`);
  await theirs.waitForSelector('#progress');
  assert.notEqual(await theirs.inputValue('input[name=assignment]'), myAssignment,
    'the second browser never receives the first session\'s comparison');
  const cookies = (await second.cookies()).map((c) => c.value);
  const myCookies = (await first.cookies()).map((c) => c.value);
  assert.ok(!cookies.some((value) => myCookies.includes(value)), 'nor its cookie');
  // The first browser's session goes on: two votes and its own completion code.
  await mine.keyboard.press('a');
  await mine.waitForFunction(() => /Comparison 2 of 2/.test(document.querySelector('#progress')?.textContent ?? ''));
  await mine.keyboard.press('b');
  await mine.waitForSelector('#completion-code');
  const code = await mine.textContent('#completion-code');
  assert.match(code, /^DONE-takeover-[0-9A-F]{12}$/);
  const reveal = await mine.textContent('#reveals');
  assert.ok(MODELS.some((m) => reveal.includes(m.name)), 'the models are revealed at the end');
  await theirs.keyboard.press('a');
  await theirs.waitForFunction(() => /Comparison 2 of 2/.test(document.querySelector('#progress')?.textContent ?? ''));
  await theirs.keyboard.press('a');
  await theirs.waitForSelector('#completion-code');
  assert.notEqual(await theirs.textContent('#completion-code'), code, 'one code per session');
  await first.close();
  await second.close();
});
