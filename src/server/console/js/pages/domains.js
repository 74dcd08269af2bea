// The domain picker: the domains the signed-in user belongs to (every domain for superusers).
import { h } from '../ui.js';

export async function render(main, ctx) {
  const list = ctx.session.domains;
  main.append(h('h1', {}, 'Choose a domain'));
  if (!list.length) {
    main.append(h('p', { class: 'empty' }, 'You are not a member of any domain.'));
    return;
  }
  main.append(h('ul', { class: 'domains' }, list.map(d =>
    h('li', {}, h('a', { href: `#/d/${encodeURIComponent(d.name)}/forms` }, d.name),
      h('span', { class: 'perms' }, d.permissions.join(', ') || 'no permissions')))));
}
