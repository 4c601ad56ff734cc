// The admin's New-study and Settings forms at a desktop and a phone width: grouped fieldsets in
// order, one labelled field per row with its help, no sideways scrolling on a phone, and a wrong
// value's error shown beside its own field. Screenshots go to end2end/screenshots/ (ignored by git),
// or to $MOAT_SCREENSHOTS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, launchBrowser, startMoat, ADMIN_TOKEN } from './harness.mjs';

const SHOTS = process.env.MOAT_SCREENSHOTS || join(dirname(fileURLToPath(import.meta.url)), '..', 'screenshots');
const LEGENDS = ['Study', 'Raters and Prolific', 'Quality checks', 'Screen-out', 'Kind of study and arena'];
const WIDTHS = [
  { name: 'desktop', width: 1280, height: 900 },
  { name: 'phone', width: 390, height: 844 },
];

let moat;
let browser;

before(async () => {
  moat = await startMoat();
  browser = await launchBrowser();
  mkdirSync(SHOTS, { recursive: true });
  await api(moat.base, 'POST', '/api/v1/studies', {
    slug: 'shots', title: 'E2E settings form', instructions: 'Pick one.',
    settings: { completion_code: 'DONE-shots', check_rate: 0.1, active_sampling: 'uncertainty' },
  });
});

after(async () => {
  await browser?.close();
  moat?.child.kill('SIGKILL');
});

/// Checks the form's layout and saves a screenshot of the page.
async function checkForm(page, form, shot) {
  const legends = await page.$$eval(`${form} fieldset > legend`, (ls) => ls.map((l) => l.textContent.trim()));
  assert.deepEqual(legends, LEGENDS, `${shot}: the fieldsets in order`);
  const problems = await page.$$eval(
    `${form} input:not([type=hidden]), ${form} select, ${form} textarea`,
    (fields) => fields.flatMap((field) => {
      const found = [];
      const label = field.id && document.querySelector(`label[for="${field.id}"]`);
      if (!label || !label.textContent.trim()) found.push(`${field.name}: no label`);
      const help = document.getElementById(field.getAttribute('aria-describedby') || '');
      if (!help || !help.textContent.trim() || !help.classList.contains('help')) found.push(`${field.name}: no help`);
      const row = field.closest('.field');
      if (!row || row.querySelectorAll('input:not([type=hidden]), select, textarea').length !== 1) {
        found.push(`${field.name}: not alone in its row`);
      } else if (!row.contains(label) || !row.contains(help)) {
        found.push(`${field.name}: label or help outside its row`);
      }
      return found;
    }),
  );
  assert.deepEqual(problems, [], `${shot}: every field has its label and help, one per row`);
  // One field per row: in each fieldset, every row starts below the one before it.
  const overlaps = await page.$$eval(`${form} fieldset`, (sets) => sets.flatMap((set) => {
    const rows = [...set.querySelectorAll(':scope > .field')].map((row) => [row.dataset.setting || row.querySelector('[name]').name, row.getBoundingClientRect()]);
    return rows.slice(1).filter(([, box], i) => box.top < rows[i][1].bottom - 1).map(([name]) => name);
  }));
  assert.deepEqual(overlaps, [], `${shot}: rows that share a line with the one before`);
  const { scroll, inner } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  assert.ok(scroll <= inner, `${shot}: the page scrolls sideways (${scroll} > ${inner})`);
  await page.screenshot({ path: join(SHOTS, `${shot}.png`), fullPage: true });
}

/// Posts the form with `max_turns` out of range (the browser's own check switched off, so the
/// server's is what answers) and waits for the error beside that field.
async function submitWrongTurns(page, form, button, shot) {
  await page.$eval(form, (element) => { element.noValidate = true; });
  await page.fill(`${form} input[name="settings[max_turns]"]`, '50');
  await page.click(button);
  const error = `${form} [data-setting=max_turns] .field-error`;
  await page.waitForSelector(error);
  assert.match(await page.textContent(error), /^must be between 1 and 20, got 50$/);
  assert.equal(await page.$$eval(`${form} .field-error`, (es) => es.length), 1, 'only the wrong field has an error');
  const { scroll, inner } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  assert.ok(scroll <= inner, `${shot}: the page scrolls sideways (${scroll} > ${inner})`);
  await page.screenshot({ path: join(SHOTS, `${shot}.png`), fullPage: true });
}

for (const { name, width, height } of WIDTHS) {
  test(`the settings forms at ${width} px (${name}): fieldsets, labelled rows with help, errors beside their field`, async () => {
    const context = await browser.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    await page.goto(`${moat.base}/admin`);
    await page.fill('input[name=token]', ADMIN_TOKEN);
    await page.click('#login');
    await page.waitForSelector('form.create-study');
    await page.waitForSelector('body[data-hydrated]');
    await checkForm(page, 'form.create-study', `new-study-${name}`);
    await page.fill('form.create-study input[name=slug]', `refused-${name}`);
    await page.fill('form.create-study input[name=title]', 'Refused');
    await submitWrongTurns(page, 'form.create-study', '#create-study', `new-study-error-${name}`);
    assert.match(await page.textContent('#create-error'), /see the messages beside the settings/);
    const studies = JSON.parse(await api(moat.base, 'GET', '/api/v1/studies'));
    assert.ok(!studies.some((s) => s.slug === `refused-${name}`), 'nothing was created');

    await page.goto(`${moat.base}/admin/studies/shots`);
    await page.waitForSelector('form.study-settings');
    await page.waitForSelector('body[data-hydrated]');
    assert.equal(await page.inputValue('form.study-settings input[name="settings[completion_code]"]'), 'DONE-shots');
    assert.equal(await page.inputValue('form.study-settings input[name="settings[check_percent]"]'), '10');
    assert.equal(await page.inputValue('form.study-settings select[name="settings[active_sampling]"]'), 'uncertainty');
    // No votes yet: the study page says how active sampling starts.
    assert.match(await page.textContent('#reward-model'), /uncertainty\. No reward model yet: .* 20 decided votes/);
    await checkForm(page, 'form.study-settings', `settings-${name}`);
    await submitWrongTurns(page, 'form.study-settings', '#save-settings', `settings-error-${name}`);
    assert.match(await page.textContent('#settings-error'), /see the messages beside the settings/);
    const study = JSON.parse(await api(moat.base, 'GET', '/api/v1/studies/shots'));
    assert.equal(study.settings.max_turns, 3, 'the refused value was not saved');
    await context.close();
  });
}
