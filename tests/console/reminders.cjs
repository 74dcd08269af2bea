// The reminders page against a loopback SMS gateway: an alert is checked from the page with
// the keyboard, its message to the case's phone is sent once and logged as succeeded, and the
// log's filters find it (or nothing).
const assert = require('assert/strict');
const http = require('http');
const { DOMAIN } = require('./server.cjs');
const { tabWalk, tabTo } = require('./keyboard.cjs');
const { eventually, shot } = require('./util.cjs');

// An SMS gateway on 127.0.0.1 that answers every request 200 "OK" and keeps the URLs asked.
async function gateway() {
  const gw = { urls: [] };
  gw.server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      gw.urls.push(req.url);
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('OK');
    });
  });
  await new Promise(resolve => gw.server.listen(0, '127.0.0.1', resolve));
  gw.url = `http://127.0.0.1:${gw.server.address().port}/send?to={to}&text={message}`;
  return gw;
}

async function filterBy(page, outcome) {
  await page.selectOption('#f-outcome', outcome);
  await tabTo(page, 'form.filters button[type="submit"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(o => location.hash.includes(`outcome=${o}`), outcome);
}

async function remindersPage(page, s) {
  const gw = await gateway();
  try {
    const caseId = `r3m1nd${Date.now().toString(16)}`;
    const today = new Date().toISOString().slice(0, 10);
    await s.submit(caseId, { risk: 'high', phone: '5551234', edd: today },
      { create: true, name: 'Rhoda' });
    const alert = { name: 'anc', case_type: 'patient', channel: 'sms', recipient: '{phone}',
      criteria: [{ property_name: 'risk', match_type: 'EQUAL', property_value: 'high' }],
      start: { property: 'edd', time: '00:00' }, time_zone: 'UTC',
      message: 'Hello {case_name}, your visit is due on {edd}.',
      gateway: { url: gw.url, success: { status: 200, contains: 'OK' } } };
    const r = await fetch(`${s.base}/a/${DOMAIN}/api/alerts/anc`, { method: 'PUT',
      headers: { Authorization: s.basic(), 'Content-Type': 'application/json' },
      body: JSON.stringify(alert) });
    assert.equal(r.status, 201, await r.text());
    await tabTo(page, 'nav a:text-is("Reminders")');
    await page.keyboard.press('Enter');
    await page.waitForSelector('h1:text("Reminders")');
    await tabTo(page, 'button[aria-label="Check anc now"]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('dialog[open]');
    await page.keyboard.press('Tab');  // Cancel -> Check
    await page.keyboard.press('Enter');
    const row = page.locator('#messages tr', { has: page.locator(`a:text-is("${caseId}")`) });
    await eventually(async () => (await row.locator('.badge').textContent()) === 'succeeded',
      'the alert message is sent and logged as succeeded', 30000);
    assert.match(await row.textContent(), /Hello Rhoda, your visit is due on/);
    assert.equal(gw.urls.length, 1, `the gateway was called once: ${gw.urls}`);
    assert.match(gw.urls[0], /to=5551234/);
    await shot(page, '13-reminders');
    await tabWalk(page, 'reminders', 6);
    await filterBy(page, 'dead');
    await page.waitForSelector('#messages p.empty');
    await filterBy(page, 'succeeded');
    await page.waitForSelector(`#messages a:text-is("${caseId}")`);
  } finally {
    gw.server.close();
  }
}

module.exports = { remindersPage };
