// The console's sign-in, sessions and assets over plain HTTP: cookie attributes, CSRF, origin
// checks, sign-out, throttling, the API taking the session cookie, and the assets' headers.
const assert = require('assert/strict');
const { ADMIN, DOMAIN } = require('./server.cjs');

function cookieOf(r) {
  const c = r.headers.get('set-cookie');
  assert.ok(c, 'a Set-Cookie header');
  return c;
}

async function login(s, user, password, headers = {}) {
  return fetch(`${s.base}/console/api/login`, { method: 'POST', headers: {
    'Content-Type': 'application/x-www-form-urlencoded', ...headers },
  body: new URLSearchParams({ username: user, password }) });
}

async function checkSessions(s) {
  let r = await login(s, ADMIN[0], 'wrong');
  assert.equal(r.status, 401);
  r = await login(s, ADMIN[0], ADMIN[1], { Origin: 'http://evil.example' });
  assert.equal(r.status, 403, 'a cross-origin sign-in is refused');
  r = await login(s, ADMIN[0], ADMIN[1]);
  assert.equal(r.status, 200);
  const set = cookieOf(r);
  assert.match(set, /^cc_session=[0-9a-f]{64};/);
  for (const attr of ['HttpOnly', 'SameSite=Strict', 'Path=/']) assert.ok(set.includes(attr), attr);
  assert.ok(!set.includes('Secure'), 'no Secure flag over plain HTTP');
  const { csrf_token } = await r.json();
  const cookie = set.split(';')[0];
  // The API accepts the cookie; a write without the CSRF token is refused, with it allowed.
  r = await fetch(`${s.base}/a/${DOMAIN}/api/v0.5/form/`, { headers: { Cookie: cookie } });
  assert.equal(r.status, 200);
  const body = JSON.stringify({ case_type: 'patient', case_name: 'Csrf' });
  r = await fetch(`${s.base}/a/${DOMAIN}/api/case/v2/`, { method: 'POST', body,
    headers: { Cookie: cookie, 'Content-Type': 'application/json' } });
  assert.equal(r.status, 403, 'no CSRF token');
  r = await fetch(`${s.base}/a/${DOMAIN}/api/case/v2/`, { method: 'POST', body,
    headers: { Cookie: cookie, 'Content-Type': 'application/json', 'X-CSRF-Token': 'x'.repeat(64) } });
  assert.equal(r.status, 403, 'a wrong CSRF token');
  r = await fetch(`${s.base}/a/${DOMAIN}/api/case/v2/`, { method: 'POST', body, headers: {
    Cookie: cookie, 'Content-Type': 'application/json', 'X-CSRF-Token': csrf_token } });
  assert.equal(r.status, 200, 'a write with the CSRF token (HQ answers a case write 200)');
  r = await fetch(`${s.base}/console/api/session`, { headers: { Cookie: cookie } });
  assert.equal((await r.json()).username, ADMIN[0]);
  // A forged cookie is no session; the console's 401 asks for no browser dialog.
  r = await fetch(`${s.base}/a/${DOMAIN}/api/v0.5/form/`, { headers: {
    Cookie: `cc_session=${'0'.repeat(64)}`, 'X-CommCare-Console': '1' } });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('www-authenticate'), null);
  // Sign-out needs the token, then ends the session.
  r = await fetch(`${s.base}/console/api/logout`, { method: 'POST', headers: { Cookie: cookie } });
  assert.equal(r.status, 403);
  r = await fetch(`${s.base}/console/api/logout`, { method: 'POST',
    headers: { Cookie: cookie, 'X-CSRF-Token': csrf_token } });
  assert.equal(r.status, 200);
  r = await fetch(`${s.base}/console/api/session`, { headers: { Cookie: cookie } });
  assert.equal(r.status, 401, 'signed out');
}

async function checkThrottle(s) {
  let last;
  for (let i = 0; i < 7; ++i) last = await login(s, 'nobody-here', 'wrong');
  assert.equal(last.status, 429, 'failed sign-ins are throttled by the login guard');
  assert.ok(last.headers.get('retry-after'));
}

async function checkAssets(s) {
  for (const [p, type] of [['/', 'text/html'], ['/console/', 'text/html'],
    ['/console/js/app.js', 'text/javascript'], ['/console/console.css', 'text/css']]) {
    const r = await fetch(s.base + p);
    assert.equal(r.status, 200, p);
    assert.ok(r.headers.get('content-type').startsWith(type), `${p}: ${r.headers.get('content-type')}`);
    const csp = r.headers.get('content-security-policy');
    assert.ok(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), csp);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    const again = await fetch(s.base + p, { headers: { 'If-None-Match': r.headers.get('etag') } });
    assert.equal(again.status, 304, `${p} revalidates`);
  }
  assert.equal((await fetch(`${s.base}/console/nope.js`)).status, 404);
  assert.equal((await fetch(`${s.base}/console/../meta.sqlite`)).status, 404);
  const html = await (await fetch(`${s.base}/`)).text();
  assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/.test(html), 'no inline scripts');
}

module.exports = { checkSessions, checkThrottle, checkAssets };
