// A case: its properties, its related cases as a small graph (parents and hosts it points to,
// children and extensions pointing to it), and its history: the transactions and the forms
// that made them, who and when.
import { api, dpath } from '../api.js';
import { h, fields, fmtTime, table, errorBox } from '../ui.js';

const kGraphLimit = 50;  // related cases shown per kind; the rest are counted

// The cases whose index `identifier` points at id (the case-search index): children for
// "parent", extensions for "host".
async function pointing(domain, id, identifier) {
  const q = new URLSearchParams({ [`indices.${identifier}`]: id, limit: kGraphLimit });
  return (await api(dpath(domain, `api/case/v2/?${q}`))).cases;
}

function node(base, c, rel) {
  return h('li', {}, h('a', { href: `${base}/cases/${encodeURIComponent(c.case_id)}`,
    class: `node ${rel.replace(/ .*/, '')}` }, h('span', { class: 'rel' }, rel),
  h('span', { class: 'name' }, c.case_name || c.case_id), h('span', { class: 'muted' }, c.case_type)));
}

function tier(label, cls, items) {
  return h('div', { class: `tier ${cls}` }, h('h3', {}, label),
    items.length ? h('ul', { 'aria-label': label }, items) : h('p', { class: 'empty' }, 'None.'));
}

// The case's neighbourhood as a small graph: the cases it points to above (parents, hosts),
// itself, and the cases pointing to it below (children, extensions); every node a link.
async function graph(domain, base, c) {
  const up = Object.entries(c.indices || {}).map(([name, i]) => node(base,
    { case_id: i.case_id, case_type: i.case_type, case_name: '' },
    `${i.relationship === 'extension' ? 'host' : 'parent'} (index “${name}”)`));
  let children = [], extensions = [];
  try {
    [children, extensions] = await Promise.all([pointing(domain, c.case_id, 'parent'),
      pointing(domain, c.case_id, 'host')]);
  } catch (e) {
    return h('div', { id: 'case-graph' }, tier('Points to', 'up', up), errorBox(e));
  }
  const down = [...children.map(x => node(base, x, 'child')),
    ...extensions.map(x => node(base, x, 'extension'))];
  return h('figure', { class: 'case-graph', id: 'case-graph', 'aria-label': 'Related cases' },
    tier('Points to', 'up', up),
    h('div', { class: 'tier self' }, h('span', { class: 'node self', 'aria-current': 'page' },
      h('span', { class: 'rel' }, 'this case'), h('span', { class: 'name' }, c.case_name || c.case_id),
      h('span', { class: 'muted' }, c.case_type))),
    tier('Pointed to by', 'down', down));
}

function history(base, data) {
  const forms = new Map(data.forms.map(f => [f.form_id, f]));
  return table('Transactions, oldest first', [
    { label: 'Server date', cell: t => fmtTime(t.server_date) },
    { label: 'Kind', cell: t => (t.types || []).join(', ') || String(t.type) },
    { label: 'Form', cell: t => t.form_id
      ? h('a', { href: `${base}/forms/${encodeURIComponent(t.form_id)}` },
        forms.get(t.form_id)?.xmlns || t.form_id) : (t.reason || '—') },
    { label: 'By', cell: t => forms.get(t.form_id)?.username || '—' },
    { label: 'State', cell: t => t.revoked ? h('span', { class: 'badge s-archived' }, 'revoked')
      : h('span', { class: 'badge s-normal' }, 'applied') }], data.transactions, 'No history.');
}

export async function render(main, ctx) {
  const { domain, id } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}`;
  main.append(h('p', {}, h('a', { href: `${base}/cases` }, '← Cases')));
  try {
    const data = await api(dpath(domain, `api/console/case/${encodeURIComponent(id)}/history`));
    const c = data.case;
    const props = Object.entries(c.properties).sort(([a], [b]) => a.localeCompare(b));
    main.append(h('h1', {}, `Case: ${c.case_name || c.case_id}`),
      fields([['Case ID', h('code', {}, c.case_id)], ['Type', c.case_type],
        ['Owner', c.owner_id], ['Status', c.closed ? 'closed' : 'open'],
        ['Opened', fmtTime(c.date_opened)], ['Modified', fmtTime(c.last_modified)],
        ['External ID', c.external_id]]),
      h('h2', {}, 'Properties'),
      table('Case properties', [{ label: 'Property', cell: p => p[0] },
        { label: 'Value', cell: p => p[1] }], props, 'No properties.'),
      h('h2', {}, 'Related cases'), await graph(domain, base, c),
      h('h2', {}, 'History'), history(base, data));
  } catch (e) {
    main.append(h('h1', {}, 'Case'), errorBox(e));
  }
}
