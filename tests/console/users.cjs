// Users and domains administration: an admin creates a user and deactivates it with the
// keyboard (the user can then no longer authenticate); a user without manage_users sees no
// Users link, the page refuses, and so does the API.
const assert = require('assert/strict');
const { DOMAIN } = require('./server.cjs');
const { tabWalk, tabTo } = require('./keyboard.cjs');
const { shot } = require('./util.cjs');

async function status(s, user, path) {
  return (await fetch(`${s.base}${path}`, { headers: { Authorization: s.basic(user) } })).status;
}

async function usersPage(page, s) {
  const nurse = ['nurse2', 'pw-nurse2'];
  await tabTo(page, 'nav a:text-is("Users")');
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Users and domains")');
  await tabTo(page, '#f-new-username');
  await page.keyboard.type(nurse[0]);
  await page.keyboard.press('Tab');
  await page.keyboard.type(nurse[1]);
  await page.keyboard.press('Enter');
  await page.waitForSelector(`[data-user="${nurse[0]}"]:text-is("active")`);
  assert.notEqual(await status(s, nurse, `/a/${DOMAIN}/api/v0.5/form/`), 401, 'the new user signs in');
  assert.ok((await page.textContent('#domains-admin')).includes(DOMAIN), 'a superuser sees the domains');
  await shot(page, '12-users');
  await tabWalk(page, 'users', 8);
  await tabTo(page, `button[aria-label="Deactivate ${nurse[0]}"]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('dialog[open]');
  await page.keyboard.press('Tab');  // Cancel -> Deactivate
  await page.keyboard.press('Enter');
  await page.waitForSelector(`[data-user="${nurse[0]}"]:text-is("inactive")`);
  assert.equal(await status(s, nurse, `/a/${DOMAIN}/api/v0.5/form/`), 401, 'deactivated');
  const paged = await (await fetch(`${s.base}/a/${DOMAIN}/api/users/?limit=1&offset=0`,
    { headers: { Authorization: s.basic() } })).json();
  assert.equal(paged.users.length, 1);
  assert.ok(paged.total >= 2 && paged.next === 1, `server paging: ${JSON.stringify(paged)}`);
}

// Signs in as `user` (no manage_users): no Users link, the page refuses, the API too.
async function notAManager(page, s, user) {
  await page.goto(`${s.base}/`);
  await page.waitForSelector('#f-username:focus');
  await page.keyboard.type(user[0]);
  await page.keyboard.press('Tab');
  await page.keyboard.type(user[1]);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Choose a domain")');
  await page.goto(`${s.base}/#/d/${DOMAIN}/users`);
  await page.waitForSelector('h1:text("Users and domains")');
  assert.equal(await page.locator('nav a:text-is("Users")').count(), 0, 'no Users link');
  assert.equal(await page.locator('#users').count(), 0, 'no user list');
  assert.equal(await status(s, user, `/a/${DOMAIN}/api/users/`), 403, 'the API refuses');
  assert.equal(await status(s, user, '/api/domains/'), 403);
}

module.exports = { usersPage, notAManager };
