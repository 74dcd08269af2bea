// The pipeline page (live uPlot charts, the pillows' retry queues) and the tasks page (an
// export run and downloaded, a dead task requeued from the page and seen to succeed).
const assert = require('assert/strict');
const fs = require('fs');
const { ADMIN, DOMAIN } = require('./server.cjs');
const { tabWalk, tabTo } = require('./keyboard.cjs');
const { eventually, shot } = require('./util.cjs');

const chartPeak = (page, kind) => page.evaluate(k =>
  Math.max(0, ...[...document.querySelectorAll(`figure.chart.${k}`)].map(f => +f.dataset.peak)), kind);

async function pipeline(page, s) {
  await page.goto(page.url().replace(/#.*/, `#/d/${DOMAIN}/pipeline`));
  await page.waitForSelector('#total-lag[data-lag]');
  if (await page.locator('#charts-missing').count())
    throw new Error('the console was built without uPlot: run scripts/setup, then build again');
  await page.waitForSelector('figure.chart.rate canvas');
  assert.ok(await page.locator('figure.chart.lag').count() > 0, 'a lag chart per pillow');
  assert.ok(await page.locator('figure.chart.queue').count() > 0, 'a retry-queue chart per pillow');
  // Forms submitted while the page watches: the throughput chart sees them processed.
  for (let i = 0; i < 5; ++i)
    await s.submit(`c0ffeerate${Date.now().toString(16)}${i}`, { n: String(i) }, { create: true, name: `R${i}` });
  await eventually(async () => (await chartPeak(page, 'rate')) > 0, 'throughput above zero');
  await eventually(async () => (await page.getAttribute('#total-lag', 'data-lag')) === '0',
    'the pillows catch up');
  const points = await page.getAttribute('figure.chart.lag', 'data-points');
  assert.ok(+points >= 2, `the lag chart keeps its samples: ${points}`);
  assert.match(await page.getAttribute('figure.chart.rate', 'aria-label'), /Throughput of .* latest: p0/);
  assert.ok(await page.locator('section.pillow').count() > 0);
  await shot(page, '07-pipeline');
  await tabWalk(page, 'pipeline', 5);
}

// A task that dies (its saved export does not exist yet), requeued from the page once the
// export is saved: it runs again and succeeds.
async function requeueTask(page, s) {
  const headers = { Authorization: s.basic(), 'Content-Type': 'application/json' };
  let r = await fetch(`${s.base}/a/${DOMAIN}/api/tasks/`, { method: 'POST', headers,
    body: JSON.stringify({ type: 'export.run', payload: { saved: 'later' }, max_attempts: 1 }) });
  assert.equal(r.status, 201, await r.clone().text());
  const task = await r.json();
  const button = `button[aria-label="Requeue task ${task.id}"]`;
  await page.waitForSelector(button, { timeout: 30000 });
  r = await fetch(`${s.base}/a/${DOMAIN}/api/exports/saved/later`, { method: 'PUT', headers,
    body: JSON.stringify({ kind: 'case', format: 'csv', filters: { case_type: 'patient' } }) });
  assert.equal(r.status, 200, await r.text());
  await tabTo(page, button);
  await page.keyboard.press('Enter');
  await page.waitForSelector('dialog[open]');
  await page.keyboard.press('Tab');  // Cancel -> Requeue
  await page.keyboard.press('Enter');
  const row = page.locator('tr', { has: page.locator(`td:first-child:text-is("${task.id}")`) });
  await eventually(async () => (await row.locator('.badge').textContent()) === 'succeeded',
    `requeued task ${task.id} succeeds`, 30000);
  assert.equal(await row.locator('a.download').count(), 1, 'the requeued export has its file');
}

async function tasksAndExport(page, s) {
  await tabTo(page, 'nav a:text-is("Tasks and exports")');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Tasks and exports")');
  await requeueTask(page, s);
  await tabTo(page, '#f-export-type');
  await page.keyboard.type('patient');
  await page.keyboard.press('Enter');
  await eventually(async () => (await page.locator('a.download').count()) >= 2,
    'the console export finishes', 30000);
  await shot(page, '08-tasks');
  await tabWalk(page, 'tasks', 6);
  const [download] = await Promise.all([page.waitForEvent('download'),
    (async () => { await tabTo(page, 'a.download'); await page.keyboard.press('Enter'); })()]);
  const text = fs.readFileSync(await download.path(), 'utf8');
  assert.ok(text.includes('Alice'), `the export holds the case: ${text.slice(0, 200)}`);
  // The saved export's OData feed, as the page shows it for a BI tool, serves the same case.
  const service = (await page.locator('code.odata').first().textContent()).trim();
  assert.match(service, /\/api\/odata\/cases\/v1\/later\/$/);
  const auth = { headers: { Authorization: s.basic() } };
  const doc = await (await fetch(service, auth)).json();
  assert.equal(doc.value[0].url, 'feed');
  const feed = await (await fetch(service + 'feed', auth)).json();
  assert.ok(feed.value.some(row => row.name === 'Alice'), JSON.stringify(feed).slice(0, 300));
}

// The pillows' retry-queue routes over HTTP: superusers only, a bad body or pillow named.
async function checkPillowQueue(s) {
  const admin = { Authorization: s.basic() };
  const { pillows } = await (await fetch(`${s.base}/console/api/pillows`, { headers: admin })).json();
  assert.ok(pillows.length > 0, 'pillows run beside the server');
  const name = encodeURIComponent(pillows[0].pillow);
  let r = await fetch(`${s.base}/console/api/pillows/${name}/retries`, { headers: admin });
  assert.equal(r.status, 200);
  assert.ok(Array.isArray((await r.json()).retries));
  r = await fetch(`${s.base}/console/api/pillows/${name}/requeue`, { method: 'POST',
    headers: admin, body: JSON.stringify({ include_dead: true }) });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).requeued, 0, 'nothing queued: nothing requeued');
  r = await fetch(`${s.base}/console/api/pillows/${name}/requeue`, { method: 'POST',
    headers: admin, body: JSON.stringify({ include_dead: 'yes' }) });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error, /include_dead/);
  r = await fetch(`${s.base}/console/api/pillows/no-such-pillow/retries`, { headers: admin });
  assert.equal(r.status, 404);
  r = await fetch(`${s.base}/a/${DOMAIN}/api/users/`, { method: 'POST',
    headers: { ...admin, 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'worker1', password: 'pw-worker1' }) });
  assert.equal(r.status, 201, await r.text());
  const worker = { Authorization: s.basic(['worker1', 'pw-worker1']) };
  r = await fetch(`${s.base}/console/api/pillows/${name}/retries`, { headers: worker });
  assert.equal(r.status, 403, 'a pillow spans domains: superusers only');
  r = await fetch(`${s.base}/console/api/pillows/${name}/requeue`, { method: 'POST', headers: worker });
  assert.equal(r.status, 403);
}

module.exports = { pipeline, tasksAndExport, checkPillowQueue };
