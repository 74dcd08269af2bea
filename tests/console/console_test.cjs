// End-to-end test of the web console in headless Chromium (playwright-core, no browser
// download): sign in, watch a submitted form appear, open it and its case with the history,
// archive the form and see the case revert, see the pillows' lag return to zero, run an
// export and download it, sign out; every page walked with the keyboard alone and saved as a
// screenshot.
// Usage: node console_test.cjs COMMCARE NODE_MODULES SCREENSHOT_DIR
// Fails, naming what is missing, when playwright-core or Chromium is not installed
// (scripts/setup installs chromium; scripts/with-test-servers installs playwright-core).
const assert = require('assert/strict');
const fs = require('fs');
const path = require('path');
const { startServer, ADMIN, DOMAIN } = require('./server.cjs');
const { checkSessions, checkThrottle, checkAssets } = require('./session_checks.cjs');
const { tabWalk, tabTo } = require('./keyboard.cjs');

const [commcare, modules, shots] = process.argv.slice(2);
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function skip(why) {
  console.error(`FAIL: ${why} (run scripts/setup, and the tests under scripts/with-test-servers)`);
  process.exit(1);
}

async function eventually(fn, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch (e) { if (Date.now() > end) throw e; }
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise(r => setTimeout(r, 250));
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, s) {
  await page.goto(`${s.base}/`);
  await page.waitForSelector('#f-username:focus');
  await shot(page, '01-sign-in');
  await page.keyboard.type(ADMIN[0]);
  await page.keyboard.press('Tab');
  await page.keyboard.type('wrong');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.error:not([hidden])');
  await page.fill('#f-password', '');
  await page.keyboard.type(ADMIN[1]);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Choose a domain")');
  await shot(page, '02-domains');
  await tabWalk(page, 'domains', 4);
  await tabTo(page, `a:text-is("${DOMAIN}")`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Submissions")');
}

async function submissionsAndCase(page, s) {
  const caseId = 'c0ffee' + Date.now().toString(16);
  const first = await s.submit(caseId, { weight: '10' }, { create: true, name: 'Alice' });
  await eventually(async () => (await page.locator(`code:text-is("${first}")`).count()) === 1,
    'the submitted form appears in the list');
  await shot(page, '03-submissions');
  await tabWalk(page, 'submissions', 8);
  const second = await s.submit(caseId, { weight: '12' });
  await eventually(async () => (await page.locator(`code:text-is("${second}")`).count()) === 1,
    'the second form appears');
  // Open the second form with the keyboard.
  const row = page.locator('tr', { has: page.locator(`code:text-is("${second}")`) });
  await tabTo(page, row.locator('a'));
  await page.keyboard.press('Enter');
  await page.waitForSelector('#form-state');
  await page.waitForSelector(`#touched a:text-is("${caseId}")`);
  assert.ok((await page.textContent('pre.xml')).includes('<weight>12</weight>'));
  await shot(page, '04-submission');
  await tabWalk(page, 'submission', 5);
  return { caseId, first, second };
}

async function openCase(page, caseId, weight, revoked) {
  await tabTo(page, `#touched a:text-is("${caseId}")`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Case: Alice")');
  const props = await page.locator('table:has(caption:text("Case properties"))').textContent();
  assert.ok(props.includes(`weight${weight}`), `weight ${weight} in ${props}`);
  const history = page.locator('table:has(caption:text("Transactions")) tbody tr');
  assert.ok(await history.count() >= 2, 'the two forms in the history');
  assert.equal(await page.locator('td .badge:text-is("revoked")').count(), revoked);
}

async function archive(page, s, ids) {
  await openCase(page, ids.caseId, '12', 0);
  await shot(page, '05-case');
  await tabWalk(page, 'case', 6);
  // Back to the second form through its history row, archive it with the keyboard.
  await page.goBack();
  await page.waitForSelector('#archive');
  await tabTo(page, '#archive');
  await page.keyboard.press('Enter');
  await page.waitForSelector('dialog[open]');
  await shot(page, '06-archive-confirm');
  await page.keyboard.press('Tab');  // Cancel -> Archive
  await page.keyboard.press('Enter');
  await page.waitForSelector('#form-state:text-is("archived")');
  await openCase(page, ids.caseId, '10', 1);
  await page.goBack();
  await page.waitForSelector('#form-state');
}

async function pipeline(page) {
  await page.goto(page.url().replace(/#.*/, `#/d/${DOMAIN}/pipeline`));
  await page.waitForSelector('#total-lag[data-lag]');
  await eventually(async () => (await page.getAttribute('#total-lag', 'data-lag')) === '0',
    'the pillows catch up');
  assert.ok(await page.locator('section.pillow').count() > 0);
  await shot(page, '07-pipeline');
  await tabWalk(page, 'pipeline', 5);
}

async function tasksAndExport(page) {
  await tabTo(page, 'nav a:text-is("Tasks and exports")');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Tasks and exports")');
  await tabTo(page, '#f-export-type');
  await page.keyboard.type('patient');
  await page.keyboard.press('Enter');
  await page.waitForSelector('a.download', { timeout: 30000 });
  await shot(page, '08-tasks');
  await tabWalk(page, 'tasks', 6);
  const [download] = await Promise.all([page.waitForEvent('download'),
    (async () => { await tabTo(page, 'a.download'); await page.keyboard.press('Enter'); })()]);
  const file = await download.path();
  const text = fs.readFileSync(file, 'utf8');
  assert.ok(text.includes('Alice'), `the export holds the case: ${text.slice(0, 200)}`);
}

async function signOut(page) {
  await tabTo(page, '#signout');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#f-username');
  const r = await page.evaluate(async () => (await fetch('/console/api/session')).status);
  assert.equal(r, 401);
}

async function browser(s, chromium) {
  const b = await chromium.launch({ executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  try {
    const ctx = await b.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', e => errors.push(e.message));
    page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(m.text()); });
    await signIn(page, s);
    const ids = await submissionsAndCase(page, s);
    await archive(page, s, ids);
    await pipeline(page);
    await tasksAndExport(page);
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(page.url().replace(/#.*/, `#/d/${DOMAIN}/forms`));
    await page.waitForSelector('#form-results table');
    await shot(page, '09-submissions-narrow');
    await signOut(page);
    assert.deepEqual(errors, [], 'no script errors (a CSP violation is one)');
  } finally {
    await b.close();
  }
}

async function main() {
  let chromium;
  try { ({ chromium } = require(path.join(modules, 'playwright-core'))); } catch (e) {
    skip(`playwright-core is not installed in ${modules}`);
  }
  if (!fs.existsSync(chromiumPath)) skip(`no Chromium at ${chromiumPath}`);
  fs.mkdirSync(shots, { recursive: true });
  const s = await startServer(commcare);
  try {
    await checkAssets(s);
    await checkSessions(s);
    await browser(s, chromium);
    await checkThrottle(s);
    console.log('console tests passed; screenshots in', shots);
  } finally {
    s.stop();
  }
}

main().catch(e => { console.error(e); process.exit(1); });
