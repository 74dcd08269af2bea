// The forwarding page against a loopback receiver that answers 500, then 200: the record
// fails, is resent from the page with the keyboard and succeeds, its attempt count and log
// grow; the forwarder is paused and resumed from the page.
const assert = require('assert/strict');
const http = require('http');
const { DOMAIN } = require('./server.cjs');
const { tabWalk, tabTo } = require('./keyboard.cjs');
const { eventually, shot } = require('./util.cjs');

const XMLNS = 'http://example/forwarded';

// An HTTP server on 127.0.0.1 answering its first request 500 and every later one 200.
async function receiver() {
  const rx = { hits: 0 };
  rx.server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      rx.hits += 1;
      res.writeHead(rx.hits === 1 ? 500 : 200, { 'Content-Type': 'text/plain' });
      res.end(rx.hits === 1 ? 'not yet' : 'thanks');
    });
  });
  await new Promise(resolve => rx.server.listen(0, '127.0.0.1', resolve));
  rx.url = `http://127.0.0.1:${rx.server.address().port}/in`;
  return rx;
}

async function resendByKeyboard(page, rx) {
  const failed = page.locator('#records tr', { has: page.locator('.badge:text-is("failed")') });
  await eventually(async () => (await failed.count()) === 1, 'the record fails (HTTP 500)', 30000);
  const id = (await failed.locator('td').first().textContent()).trim();
  assert.equal((await failed.locator('summary').textContent()).trim(), '1', 'one attempt');
  await tabTo(page, `button[aria-label="Resend record ${id}"]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('dialog[open]');
  await page.keyboard.press('Tab');  // Cancel -> Resend
  await page.keyboard.press('Enter');
  const row = page.locator('#records tr', { has: page.locator(`td:first-child:text-is("${id}")`) });
  await eventually(async () => (await row.locator('.badge').textContent()) === 'succeeded',
    `record ${id} succeeds once resent`, 30000);
  assert.equal((await row.locator('summary').textContent()).trim(), '2', 'the attempts grew to two');
  assert.equal(rx.hits, 2, 'the receiver was called twice');
  await tabTo(page, row.locator('summary'));
  await page.keyboard.press('Enter');
  await page.waitForSelector('details.attempts[open] li >> nth=1');
  const log = await row.locator('details.attempts ol').textContent();
  assert.ok(/HTTP 500/.test(log) && /HTTP 200/.test(log), `the attempt log: ${log}`);
}

async function forwardingPage(page, s) {
  const rx = await receiver();
  try {
    const r = await fetch(`${s.base}/a/${DOMAIN}/api/forwarders/`, { method: 'POST',
      headers: { Authorization: s.basic(), 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'loopback', url: rx.url, xmlns: [XMLNS], max_attempts: 3 }) });
    assert.equal(r.status, 201, await r.clone().text());
    const fwd = await r.json();
    await s.submit(`f0rward${Date.now().toString(16)}`, { n: '1' }, { create: true, xmlns: XMLNS });
    await tabTo(page, 'nav a:text-is("Forwarding")');
    await page.keyboard.press('Enter');
    await page.waitForSelector('h1:text("Forwarding")');
    await resendByKeyboard(page, rx);
    await shot(page, '10-forwarding');
    await tabWalk(page, 'forwarding', 8);
    for (const [verb, state, paused] of [['Pause', 'paused', true], ['Resume', 'active', false]]) {
      await tabTo(page, `button[aria-label="${verb} forwarder loopback"]`);
      await page.keyboard.press('Enter');
      await page.waitForSelector(`[data-forwarder="loopback"]:text-is("${state}")`);
      const now = await (await fetch(`${s.base}/a/${DOMAIN}/api/forwarders/${fwd.id}/`,
        { headers: { Authorization: s.basic() } })).json();
      assert.equal(now.paused, paused, `${verb} reached the server`);
    }
  } finally {
    rx.server.close();
  }
}

module.exports = { forwardingPage };
