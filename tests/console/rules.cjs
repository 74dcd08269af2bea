// The rules page: a rule's dry run lists the one case it would change, "Run now" (keyboard,
// confirmation) runs it, the run shows what it scanned and changed, and the changed case is
// listed and carries the rule's update.
const assert = require('assert/strict');
const { DOMAIN } = require('./server.cjs');
const { tabWalk, tabTo } = require('./keyboard.cjs');
const { eventually, shot } = require('./util.cjs');

async function rulesPage(page, s, caseId) {
  const headers = { Authorization: s.basic(), 'Content-Type': 'application/json' };
  const rule = { name: 'flag-ten', case_type: 'patient',
    criteria: [{ property_name: 'weight', match_type: 'EQUAL', property_value: '10' }],
    actions: { update: [{ name: 'flag', value: 'checked' }] } };
  const r = await fetch(`${s.base}/a/${DOMAIN}/api/rules/`, { method: 'POST', headers,
    body: JSON.stringify(rule) });
  assert.ok(r.status === 201 || r.status === 200, await r.text());
  await tabTo(page, 'nav a:text-is("Rules")');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Rules")');
  await tabTo(page, 'button[aria-label="Dry run flag-ten"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector(`#dry-run a:text-is("${caseId}")`);
  assert.equal(await page.locator('#dry-run tbody tr').count(), 1, 'only the case weighing 10');
  await tabTo(page, 'button[aria-label="Run flag-ten now"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('dialog[open]');
  await page.keyboard.press('Tab');  // Cancel -> Run
  await page.keyboard.press('Enter');
  const run = page.locator('#rule-runs tbody tr').first();
  await eventually(async () => (await run.locator('.badge').textContent()) === 'succeeded',
    'the rule run succeeds', 30000);
  const cells = await run.locator('td').allTextContents();
  assert.equal(cells[1], 'flag-ten');
  assert.equal(cells[6], '1', `one case changed: ${cells}`);
  await eventually(async () => (await page.locator(`#rule-changes a:text-is("${caseId}")`).count()) === 1,
    'the changed case is listed', 20000);
  await shot(page, '11-rules');
  await tabWalk(page, 'rules', 8);
  await tabTo(page, `#rule-changes a:text-is("${caseId}")`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Case: Alice")');
  const props = await page.locator('table:has(caption:text("Case properties"))').textContent();
  assert.ok(props.includes('flagchecked'), `the rule's update on the case: ${props}`);
}

module.exports = { rulesPage };
