// A case: its properties, its indices (parents it points to), and its history: the
// transactions and the forms that made them, who and when.
import { api, dpath } from '../api.js';
import { h, fields, fmtTime, table, errorBox } from '../ui.js';

function indices(base, c) {
  const list = Object.entries(c.indices || {});
  if (!list.length) return h('p', { class: 'empty' }, 'This case has no indices.');
  return h('ul', { class: 'graph', id: 'indices', 'aria-label': 'Indices of this case' },
    list.map(([name, i]) => h('li', {},
      h('span', { class: 'rel' }, `${i.relationship === 'extension' ? 'extension of' : 'child of'} `),
      h('a', { href: `${base}/cases/${encodeURIComponent(i.case_id)}` },
        `${i.case_type} ${i.case_id}`), h('span', { class: 'muted' }, ` (index “${name}”)`))));
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
      h('h2', {}, 'Indices'), indices(base, c),
      h('h2', {}, 'History'), history(base, data));
  } catch (e) {
    main.append(h('h1', {}, 'Case'), errorBox(e));
  }
}
