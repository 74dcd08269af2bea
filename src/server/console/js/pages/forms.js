// Submissions: the Form API's list with filters and server paging, refreshed while open.
import { api, dpath, formRow } from '../api.js';
import { h, table, pager, fmtTime, field, errorBox, queryForm } from '../ui.js';

const kLimit = 25;
const kFilters = ['xmlns', 'user_id', 'received_on_start', 'received_on_end', 'include_archived'];

function columns(domain) {
  const base = `#/d/${encodeURIComponent(domain)}/forms/`;
  return [
    { label: 'Received', cell: f => h('a', { href: base + encodeURIComponent(f.form_id) },
      fmtTime(f.received_on)) },
    { label: 'Form', cell: f => f.xmlns },
    { label: 'User', cell: f => f.username || f.user_id || '—' },
    { label: 'Outcome', cell: f => h('span', { class: `badge s-${f.state}` }, f.state) },
    { label: 'Form ID', cell: f => h('code', {}, f.form_id) },
  ];
}

function filterForm(ctx, go) {
  const p = ctx.params;
  return queryForm({ role: 'search', 'aria-label': 'Filter submissions' }, [
    field('Form xmlns', { name: 'xmlns', value: p.get('xmlns') || '' }),
    field('User ID', { name: 'user_id', value: p.get('user_id') || '' }),
    field('Received from', { name: 'received_on_start', type: 'date',
      value: p.get('received_on_start') || '' }),
    field('Received before', { name: 'received_on_end', type: 'date',
      value: p.get('received_on_end') || '' }),
    h('div', { class: 'field check' },
      h('input', { type: 'checkbox', id: 'f-archived', name: 'include_archived', value: 'true',
        checked: p.get('include_archived') === 'true' }),
      h('label', { for: 'f-archived' }, 'Include archived'))], 'Filter', go);
}

export async function render(main, ctx) {
  const { domain } = ctx;
  const offset = Number(ctx.params.get('offset') || 0);
  const go = q => { location.hash = `#/d/${encodeURIComponent(domain)}/forms?${q}`; };
  const results = h('div', { id: 'form-results', 'aria-live': 'polite' });
  main.append(h('h1', {}, 'Submissions'), filterForm(ctx, go), results);
  let last = '';
  const load = async () => {
    const q = new URLSearchParams({ limit: kLimit, offset });
    for (const k of kFilters) if (ctx.params.get(k)) q.set(k, ctx.params.get(k));
    try {
      const page = await api(dpath(domain, `api/v0.5/form/?${q}`));
      const seen = JSON.stringify(page);
      if (seen === last) return;  // unchanged: keep the table (and the focus in it)
      last = seen;
      const total = page.meta.total_count;
      const move = to => () => { const n = new URLSearchParams(ctx.params); n.set('offset', to); go(n); };
      results.replaceChildren(
        h('p', { class: 'count' }, `${total} submission${total === 1 ? '' : 's'}` +
          (total ? `, showing ${offset + 1}–${Math.min(offset + kLimit, total)}` : '')),
        table('Submissions by time received', columns(domain), page.objects.map(formRow), 'No submissions match.'),
        pager('Submission pages', offset > 0 ? move(Math.max(0, offset - kLimit)) : null,
          page.meta.next ? move(offset + kLimit) : null));
    } catch (e) {
      results.replaceChildren(errorBox(e));
    }
  };
  await load();
  const timer = setInterval(() => { if (!document.hidden) load(); }, 3000);
  return () => clearInterval(timer);
}
