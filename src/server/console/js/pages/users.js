// Users and domains, for those allowed (the admin API decides: manage_users in the domain; a
// superuser for domains): the domain's users, server-paged, with activate/deactivate and their
// role; a form to create one; the domain's roles; and for a superuser every domain and a form
// to create one.
import { api, dpath } from '../api.js';
import { h, table, pager, field, select, announce, errorBox, confirmDialog } from '../ui.js';

const kLimit = 25;

// Whether the session may manage the domain's users (the page and its link are shown then).
export function allowed(session, domain) {
  return !!session && (session.is_superuser || (session.domains || []).some(d =>
    d.name === domain && d.permissions.includes('manage_users')));
}

async function setActive(domain, u, active, refresh) {
  if (!active && !await confirmDialog(`Deactivate ${u.username}?`,
    `${u.username} can no longer sign in, sync or use the API; their sessions end.`, 'Deactivate'))
    return;
  try {
    await api(dpath(domain, `api/users/${encodeURIComponent(u.username)}`),
      { method: 'PUT', body: { is_active: active, _rev: u._rev } });
    announce(`${u.username} ${active ? 'activated' : 'deactivated'}.`);
    await refresh();
  } catch (e) {
    announce(`Failed: ${e.message}`);
  }
}

function usersTable(domain, roles, list, refresh) {
  const role = u => roles.get((u.role_ids || {})[domain]) || (u.role_ids || {})[domain] || '—';
  return table('Users', [
    { label: 'Username', cell: u => u.username },
    { label: 'Kind', cell: u => u.is_superuser ? 'superuser' : u.web_user ? 'web user' : 'mobile worker' },
    { label: 'Role', cell: role },
    { label: 'Permissions', cell: u => (u.permissions || []).join(', ') || '—' },
    { label: 'State', cell: u => h('span', { class: `badge ${u.is_active ? 's-normal' : 's-error'}`,
      'data-user': u.username }, u.is_active ? 'active' : 'inactive') },
    { label: 'Action', cell: u => u.is_superuser ? '' : h('button', { type: 'button',
      class: u.is_active ? 'danger' : '', 'aria-label': `${u.is_active ? 'Deactivate' : 'Activate'} ${u.username}`,
      onclick: () => setActive(domain, u, !u.is_active, refresh) },
    u.is_active ? 'Deactivate' : 'Activate') }], list, 'No users.');
}

function createForm(domain, roleList, refresh) {
  const form = h('form', { class: 'filters', 'aria-label': 'Create a user' },
    field('Username', { name: 'username', id: 'f-new-username', required: true, autocomplete: 'off' }),
    field('Password', { name: 'password', id: 'f-new-password', type: 'password', required: true,
      minlength: 4, autocomplete: 'new-password' }),
    select('Role', 'role_id', [['', 'No role'], ...roleList.map(r => [r.id, r.name || r.id])], ''),
    h('div', { class: 'field check' }, h('input', { type: 'checkbox', id: 'f-web-user', name: 'web_user' }),
      h('label', { for: 'f-web-user' }, 'Web user')),
    h('button', { type: 'submit' }, 'Create user'));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const d = new FormData(form);
    const body = { username: d.get('username'), password: d.get('password'), web_user: !!d.get('web_user') };
    if (d.get('role_id')) body.role_id = d.get('role_id');
    try {
      await api(dpath(domain, 'api/users/'), { method: 'POST', body });
      announce(`User ${body.username} created.`);
      form.reset();
      await refresh();
    } catch (e) {
      announce(`Create failed: ${e.message}`);
      form.querySelector('.error')?.remove();
      form.append(errorBox(e));
    }
  });
  return form;
}

async function domainsSection(refresh) {
  const { domains } = await api('/api/domains/');
  const form = h('form', { class: 'filters', 'aria-label': 'Create a domain' },
    field('Domain name', { name: 'name', id: 'f-new-domain', required: true }),
    h('button', { type: 'submit' }, 'Create domain'));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const name = new FormData(form).get('name');
    try {
      await api('/api/domains/', { method: 'POST', body: { name } });
      announce(`Domain ${name} created.`);
      await refresh();
    } catch (e) {
      announce(`Create failed: ${e.message}`);
    }
  });
  return [h('h2', {}, 'Domains'), table('Domains', [{ label: 'Name', cell: d => d.name },
    { label: 'Secure submissions', cell: d => d.secure_submissions ? 'yes' : 'no' }], domains), form];
}

export async function render(main, ctx) {
  const { domain, session } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}/users`;
  main.append(h('h1', {}, 'Users and domains'));
  if (!allowed(session, domain)) {
    main.append(h('p', { class: 'error' }, `You may not manage the users of ${domain}.`));
    return null;
  }
  const users = h('div', { id: 'users' }), rolesBox = h('div', { id: 'roles' }), create = h('div');
  const domainsBox = h('div', { id: 'domains-admin' });
  main.append(h('h2', {}, 'Users'), users, h('h2', {}, 'Create a user'), create,
    h('h2', {}, 'Roles'), rolesBox, domainsBox);
  const offset = Number(ctx.params.get('offset') || 0);
  const move = to => () => { location.hash = `${base}?offset=${to}`; };
  let last = '';
  async function refresh() {
    try {
      const [u, r] = await Promise.all([
        api(dpath(domain, `api/users/?limit=${kLimit}&offset=${offset}`)), api(dpath(domain, 'api/roles/'))]);
      const seen = JSON.stringify([u, r]);
      if (seen !== last) {
        const roles = new Map(r.roles.map(x => [x.id, x.name || x.id]));
        if (!last) create.replaceChildren(createForm(domain, r.roles, refresh));
        last = seen;
        users.replaceChildren(h('p', { class: 'count' }, `${u.total} user${u.total === 1 ? '' : 's'}`),
          usersTable(domain, roles, u.users, refresh),
          pager('User pages', offset > 0 ? move(Math.max(0, offset - kLimit)) : null,
            u.next ? move(u.next) : null));
        rolesBox.replaceChildren(table('Roles', [{ label: 'Role', cell: x => x.name || x.id },
          { label: 'ID', cell: x => h('code', {}, x.id) }], r.roles, 'No roles in this domain.'));
      }
      if (session.is_superuser) domainsBox.replaceChildren(...await domainsSection(refresh));
    } catch (e) {
      users.replaceChildren(errorBox(e));
    }
  }
  await refresh();
  return null;
}
