// The console's frame: the session, the navigation and a hash router over the pages.
import { api, setCsrf } from './api.js';
import { h, errorBox } from './ui.js';
import * as login from './pages/login.js';
import * as domains from './pages/domains.js';
import * as forms from './pages/forms.js';
import * as form from './pages/form.js';
import * as cases from './pages/cases.js';
import * as caseDetail from './pages/case.js';
import * as pipeline from './pages/pipeline.js';
import * as tasks from './pages/tasks.js';
import * as forwarding from './pages/forwarding.js';
import * as rules from './pages/rules.js';
import * as reminders from './pages/reminders.js';
import * as users from './pages/users.js';

const routes = [
  [/^#\/login$/, login, 'Sign in'],
  [/^#\/domains$/, domains, 'Domains'],
  [/^#\/d\/([^/]+)\/forms$/, forms, 'Submissions'],
  [/^#\/d\/([^/]+)\/forms\/([^/]+)$/, form, 'Submission'],
  [/^#\/d\/([^/]+)\/cases$/, cases, 'Cases'],
  [/^#\/d\/([^/]+)\/cases\/([^/]+)$/, caseDetail, 'Case'],
  [/^#\/d\/([^/]+)\/pipeline$/, pipeline, 'Pipeline'],
  [/^#\/d\/([^/]+)\/tasks$/, tasks, 'Tasks and exports'],
  [/^#\/d\/([^/]+)\/forwarding$/, forwarding, 'Forwarding'],
  [/^#\/d\/([^/]+)\/rules$/, rules, 'Rules'],
  [/^#\/d\/([^/]+)\/reminders$/, reminders, 'Reminders'],
  [/^#\/d\/([^/]+)\/users$/, users, 'Users and domains'],
];
const sections = [['forms', 'Submissions'], ['cases', 'Cases'], ['pipeline', 'Pipeline'],
  ['tasks', 'Tasks and exports'], ['forwarding', 'Forwarding'],
  ['rules', 'Rules'], ['reminders', 'Reminders'], ['users', 'Users', users.allowed]];

const state = { session: null, cleanup: null };

async function loadSession() {
  try {
    state.session = await api('/console/api/session');
    setCsrf(state.session.csrf_token);
  } catch (e) {
    state.session = null;
  }
}

function frame(domain, current) {
  const top = document.getElementById('top');
  top.hidden = !state.session;
  if (!state.session) return;
  document.getElementById('who').textContent = state.session.username;
  const nav = document.getElementById('nav');
  const items = [h('a', { href: '#/domains', 'aria-current': current === 'domains' ? 'page' : null },
    domain ? `Domain: ${domain}` : 'Domains')];
  if (domain)
    for (const [key, label, shown] of sections) {
      if (shown && !shown(state.session, domain)) continue;  // e.g. Users: managers only
      items.push(h('a', { href: `#/d/${encodeURIComponent(domain)}/${key}`,
        'aria-current': current === key ? 'page' : null }, label));
    }
  nav.replaceChildren(...items);
}

async function route() {
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  let hash = location.hash.split('?')[0];
  if (!state.session && hash !== '#/login') await loadSession();
  if (!state.session && hash !== '#/login') { location.hash = '#/login'; return; }
  if (hash === '' || hash === '#' || hash === '#/') { location.hash = '#/domains'; return; }
  const main = document.getElementById('main');
  for (const [re, page, title] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    const domain = m[1] ? decodeURIComponent(m[1]) : null;
    const ctx = { domain, id: m[2] ? decodeURIComponent(m[2]) : null, session: state.session,
      params: new URLSearchParams(location.hash.split('?')[1] || ''), onSignIn };
    document.title = `${title}${domain ? ` · ${domain}` : ''} · CommCare console`;
    frame(domain, hash.split('/')[3] || hash.slice(2));
    main.replaceChildren();
    try {
      state.cleanup = (await page.render(main, ctx)) || null;
    } catch (e) {
      main.append(errorBox(e));
    }
    const heading = main.querySelector('h1');
    if (heading) { heading.tabIndex = -1; heading.focus(); }
    return;
  }
  main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/domains' }, 'Domains')));
}

async function onSignIn() {
  await loadSession();
  location.hash = '#/domains';
}

async function signOut() {
  try { await api('/console/api/logout', { method: 'POST' }); } catch (e) { /* gone already */ }
  state.session = null;
  setCsrf('');
  location.hash = '#/login';
}

window.addEventListener('hashchange', route);
document.getElementById('signout').addEventListener('click', signOut);
route();
