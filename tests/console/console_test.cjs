// End-to-end test of the web console in headless Chromium (playwright-core, no browser
// download): sign in, watch a submitted form appear, open it and its case with the history and
// the graph of related cases, archive the form and see the case revert, see the pillows'
// charts move and their lag return to zero, requeue a dead task and see it succeed, run an
// export and download it, resend a failed forwarded record and see it succeed, pause and
// resume its forwarder, dry-run and run a rule and see the case it changed, create and
// deactivate a user, sign out and find no administration as a plain user; every page walked with the keyboard alone and saved as a
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
const util = require('./util.cjs');
const { eventually, shot } = util;
const { pipeline, tasksAndExport, checkPillowQueue } = require('./pipeline_tasks.cjs');
const { remindersPage } = require('./reminders.cjs');
const { forwardingPage } = require('./forwarding.cjs');
const { rulesPage } = require('./rules.cjs');
const { usersPage, notAManager } = require('./users.cjs');

const [commcare, modules, shots] = process.argv.slice(2);
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function skip(why) {
  console.error(`FAIL: ${why} (run scripts/setup, and the tests under scripts/with-test-servers)`);
  process.exit(1);
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

// A child and an extension of the case: its graph links to both, reached with the keyboard,
// and the child's graph links back to it.
async function caseGraph(page, s, ids) {
  const child = `${ids.caseId}c`, ext = `${ids.caseId}x`;
  await s.submit(child, { age: '3' }, { create: true, name: 'Bobby',
    indices: [{ name: 'parent', type: 'patient', id: ids.caseId }] });
  await s.submit(ext, {}, { create: true, name: 'Visit',
    indices: [{ name: 'host', type: 'patient', id: ids.caseId, relationship: 'extension' }] });
  const at = `#/d/${DOMAIN}/cases/${ids.caseId}`;
  await eventually(async () => {
    // The same hash again is no navigation: reload so the page asks the index afresh.
    if (page.url().endsWith(at)) await page.reload(); else await page.goto(page.url().replace(/#.*/, at));
    await page.waitForSelector('#case-graph');
    return await page.locator('#case-graph a.node.child').count() === 1 &&
      await page.locator('#case-graph a.node.extension').count() === 1;
  }, 'the child and the extension appear in the graph');
  assert.equal(await page.textContent('#case-graph a.node.extension .name'), 'Visit');
  await shot(page, '05b-case-graph');
  await tabTo(page, '#case-graph a.node.child');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Case: Bobby")');
  await page.waitForSelector(`#case-graph a.node.parent[href$="/cases/${ids.caseId}"]`);
  await tabTo(page, '#case-graph a.node.parent');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Case: Alice")');
  await searchCases(page, child);
}

// The case list: a text search typed with the keyboard finds the child by its name.
async function searchCases(page, child) {
  await tabTo(page, 'nav a:text-is("Cases")');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Cases")');
  await tabTo(page, '#f-q');
  await page.keyboard.type('Bobby');
  await page.keyboard.press('Enter');
  // The unfiltered list already shows Bobby: wait for the search's answer to replace it.
  await util.eventually(async () => await page.locator('#case-results tbody tr').count() === 1,
    'only Bobby matches');
  await page.waitForSelector(`#case-results a[href$="/cases/${child}"]`);
  await shot(page, '05c-cases');
  await tabWalk(page, 'cases', 8);
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
    page.on('pageerror', e => console.error('page error:', e.message));
    page.on('pageerror', e => errors.push(e.message));
    page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(m.text()); });
    await signIn(page, s);
    const ids = await submissionsAndCase(page, s);
    await archive(page, s, ids);
    await caseGraph(page, s, ids);
    await pipeline(page, s);
    await tasksAndExport(page, s);
    await forwardingPage(page, s);
    await rulesPage(page, s, ids.caseId);
    await remindersPage(page, s);
    await usersPage(page, s);
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(page.url().replace(/#.*/, `#/d/${DOMAIN}/forms`));
    await page.waitForSelector('#form-results table');
    await shot(page, '09-submissions-narrow');
    await signOut(page);
    await notAManager(page, s, ['worker1', 'pw-worker1']);
    await signOut(page);
    assert.deepEqual(errors, [], 'no script errors (a CSP violation is one)');
  } catch (e) {
    // What the page showed when the test failed: a screenshot, its text and script errors.
    const page = b.contexts()[0]?.pages()[0];
    if (page) {
      await shot(page, 'failure').catch(() => {});
      const text = await page.locator('main').innerText().catch(() => '(no main)');
      console.error(`at ${page.url()}\n--- page text ---\n${text.slice(0, 3000)}\n---`);
    }
    // And what the server logged: a background failure behind the page's state shows here.
    const log = fs.readFileSync(path.join(s.tmp, 'stderr.log'), 'utf8');
    console.error(`--- server log (last 4,000 characters) ---\n${log.slice(-4000)}\n---`);
    throw e;
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
  util.shots = shots;
  const s = await startServer(commcare);
  try {
    await checkAssets(s);
    await checkSessions(s);
    await checkPillowQueue(s);
    await browser(s, chromium);
    await checkThrottle(s);
    console.log('console tests passed; screenshots in', shots);
  } finally {
    s.stop();
  }
}

main().catch(e => { console.error(e); process.exit(1); });
