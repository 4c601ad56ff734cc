// A rater completes a study in a real browser, with JavaScript on (keyboard, no reloads) and off
// (plain form posts); the admin sees the votes and the export holds the decided ones.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, launchBrowser, MODELS, openStudy, startMoat, ADMIN_TOKEN } from './harness.mjs';

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

async function exportRows(slug) {
  const text = await api(moat.base, 'GET', `/api/v1/studies/${slug}/export?format=trl`);
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

async function adminSeesVotes(page, slug, votes) {
  await page.goto(`${moat.base}/admin`);
  await page.fill('input[name=token]', ADMIN_TOKEN);
  await page.click('#login');
  await page.waitForSelector(`a[href="/admin/studies/${slug}"]`);
  await page.goto(`${moat.base}/admin/studies/${slug}`);
  const summary = await page.textContent('#progress-summary');
  assert.match(summary, new RegExp(`, ${votes} votes`), summary);
  const results = await page.textContent('#results');
  for (const model of MODELS) assert.ok(results.includes(model.name), `results table lists ${model.name}`);
}

test('with JavaScript: three comparisons by keyboard, completion code, admin results, export', async () => {
  await openStudy(moat.base, 'js', 5, 3);
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${moat.base}/s/js?PROLIFIC_PID=alice`);
  await page.waitForSelector('body[data-hydrated]');
  await page.check('input[name=agree]');
  await page.click('#consent');
  await page.waitForSelector('#progress');
  await page.waitForSelector('body[data-hydrated]');
  assert.match(await page.textContent('#progress'), /Comparison 1 of 3/);
  const html = await page.content();
  for (const model of MODELS) {
    assert.ok(!html.includes(model.name) && !html.includes(model.provider), `${model.name} is hidden`);
  }
  assert.ok(html.includes('<pre><code'), 'code blocks render');
  // A marker on window survives only if the page never reloads.
  await page.evaluate(() => (window.__noReload = true));
  for (const [key, next] of [['a', /Comparison 2 of 3/], ['b', /Comparison 3 of 3/]]) {
    await page.keyboard.press(key);
    await page.waitForFunction((re) => new RegExp(re).test(document.querySelector('#progress')?.textContent ?? ''), next.source);
  }
  await page.keyboard.press('t');
  await page.waitForSelector('#completion-code');
  // Each session gets its own code, the study's code and 12 hex digits.
  assert.match(await page.textContent('#completion-code'), /^DONE-js-[0-9A-F]{12}$/);
  // The reveal at the end (a static study's default) names the models only now.
  assert.equal(await page.locator('#reveals tbody tr').count(), 3);
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page did not reload');
  assert.deepEqual(errors, []);

  await adminSeesVotes(page, 'js', 3);
  const rows = await exportRows('js');
  assert.equal(rows.length, 2, 'the tie is left out of the TRL export');
  for (const row of rows) {
    assert.ok(['llama-e2e-secret', 'gpt-e2e-hidden'].includes(row.model_chosen));
    assert.notEqual(row.model_chosen, row.model_rejected);
    assert.match(row.prompt, /^Prompt \d: explain recursion\.$/);
  }

  // The admin excludes the rater: their votes leave the export.
  await page.click('#raters button');
  await page.waitForFunction(() => document.querySelector('#raters')?.textContent.includes('excluded'));
  assert.equal((await exportRows('js')).length, 0, 'an excluded rater is left out of the export');
  await context.close();
});

test('without JavaScript: the same study by plain form posts', async () => {
  await openStudy(moat.base, 'nojs', 5, 3);
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${moat.base}/s/nojs?PROLIFIC_PID=bob`);
  await page.check('input[name=agree]');
  await Promise.all([page.waitForURL(/\/s\/nojs\/compare/), page.click('#consent')]);
  for (const [button, position] of [['#vote-left', 1], ['#vote-right', 2], ['#vote-both_bad', 3]]) {
    assert.match(await page.textContent('#progress'), new RegExp(`Comparison ${position} of 3`));
    await Promise.all([page.waitForLoadState('load'), page.click(button)]);
  }
  await page.waitForSelector('#completion-code');
  assert.match(await page.textContent('#completion-code'), /^DONE-nojs-[0-9A-F]{12}$/);
  await adminSeesVotes(page, 'nojs', 3);
  const rows = await exportRows('nojs');
  assert.equal(rows.length, 2, 'both-bad is left out of the TRL export');
  await context.close();
});

test('quality checks: set in the admin form, shown to a rater like any comparison, failed, counted; settings edited; screened out', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${moat.base}/admin`);
  await page.fill('input[name=token]', ADMIN_TOKEN);
  await page.click('#login');
  await page.waitForSelector('form.create-study');
  await page.waitForSelector('body[data-hydrated]');
  await page.fill('input[name=slug]', 'checks');
  await page.fill('input[name=title]', 'E2E checks');
  await page.fill('input[name="settings[items_per_rater]"]', '2');
  await page.fill('input[name="settings[check_percent]"]', '50');
  await page.fill('input[name="settings[max_failed_checks]"]', '0');
  await page.fill('input[name="settings[completion_code]"]', 'DONE-checks');
  await Promise.all([page.waitForURL(/\/admin\/studies\/checks$/), page.click('#create-study')]);
  await page.waitForSelector('#check-settings');
  assert.match(await page.textContent('#check-settings'),
    /50% of each rater's comparisons, from 0 check items; raters who fail more than 0 are excluded automatically/);

  const lines = [JSON.stringify({ models: MODELS })];
  for (let i = 0; i < 2; i++) {
    lines.push(JSON.stringify({ id: `p${i}`, prompt: `Prompt ${i}: explain recursion.`,
      responses: { 'llama-e2e-secret': `Answer one to ${i}.`, 'gpt-e2e-hidden': `Answer two to ${i}.` } }));
  }
  lines.push(JSON.stringify({ id: 'check', prompt: 'Please prefer the answer that says PICK ME.',
    responses: { 'llama-e2e-secret': 'PICK ME', 'gpt-e2e-hidden': 'Something else.' },
    check: { kind: 'attention', better: 'llama-e2e-secret' } }));
  await api(moat.base, 'POST', '/api/v1/studies/checks/import', lines.join('\n') + '\n');
  await api(moat.base, 'POST', '/api/v1/studies/checks/status', { status: 'open' });

  // A careless rater (JavaScript off): two comparisons, one of them the check, answered wrongly.
  const raterContext = await browser.newContext({ javaScriptEnabled: false });
  const rater = await raterContext.newPage();
  await rater.goto(`${moat.base}/s/checks?PROLIFIC_PID=carol`);
  await rater.check('input[name=agree]');
  await Promise.all([rater.waitForURL(/\/s\/checks\/compare/), rater.click('#consent')]);
  let checks = 0;
  for (const position of [1, 2]) {
    assert.match(await rater.textContent('#progress'), new RegExp(`Comparison ${position} of 2`));
    const html = await rater.content();
    for (const model of MODELS) assert.ok(!html.includes(model.name), `${model.name} is hidden`);
    assert.ok(!/attention|gold/i.test(html), 'nothing marks the check');
    let button = '#vote-left';
    if ((await rater.textContent('main')).includes('Please prefer the answer that says PICK ME')) {
      checks += 1;
      const expectedLeft = (await rater.textContent('#response-a')).includes('PICK ME');
      button = expectedLeft ? '#vote-right' : '#vote-left';
    }
    await Promise.all([rater.waitForLoadState('load'), rater.click(button)]);
  }
  assert.equal(checks, 1, 'round(50% of 2) = 1 check');
  await rater.waitForSelector('#completion-code');

  await page.reload();
  await page.waitForSelector('#raters');
  const row = await page.textContent('#raters tbody tr');
  assert.match(row, /excluded/);
  const cells = await page.$$eval('#raters tbody tr td', (tds) => tds.map((td) => td.textContent.trim()));
  assert.deepEqual([cells[1], cells[2], cells[5], cells[6]], ['excluded', '2', '0', '1'], `status, votes, checks passed, failed: ${cells}`);
  assert.match(cells[3], /^\d+\.\d$/, `mean seconds per vote: ${cells}`);
  assert.match(cells[4], /^\d+%$/, `left-side share: ${cells}`);

  // The settings form shows the current values and saves changes.
  await page.waitForSelector('body[data-hydrated]');
  assert.equal(await page.inputValue('form.study-settings input[name="settings[check_percent]"]'), '50');
  assert.equal(await page.inputValue('form.study-settings input[name="settings[completion_code]"]'), 'DONE-checks');
  await page.fill('form.study-settings input[name="settings[check_percent]"]', '0');
  await page.fill('form.study-settings input[name=title]', 'E2E checks, no more checks');
  await page.click('#save-settings');
  await page.waitForFunction(() => document.querySelector('#check-settings')?.textContent.includes('No quality checks'));
  assert.match(await page.textContent('#check-settings'), /\(1 check item imported;/);
  assert.match(await page.textContent('h1'), /no more checks/);
  const study = JSON.parse(await api(moat.base, 'GET', '/api/v1/studies/checks'));
  assert.equal(study.settings.check_rate, 0);
  assert.equal(study.settings.items_per_rater, 2, 'unchanged fields stay');
  assert.equal(study.settings.ratings_per_item, 3, 'unchanged fields stay');
  assert.equal(study.settings.max_failed_checks, 0);

  // Ending excluded raters' sessions: carol (excluded) now gets the screen-out page and its code.
  await api(moat.base, 'PUT', '/api/v1/studies/checks', {
    title: study.summary.title, instructions: study.instructions,
    settings: { ...study.settings, end_excluded_sessions: true, screen_out_code: 'SCREENED-OUT' },
  });
  await rater.reload();
  await rater.waitForSelector('#screened-out');
  assert.equal(await rater.textContent('#completion-code'), 'SCREENED-OUT');
  await raterContext.close();
  await context.close();
});
