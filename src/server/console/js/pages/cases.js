// Cases: search through the Case API (the case-search index), cursor paging.
import { api, dpath } from '../api.js';
import { h, table, pager, fmtTime, field, select, errorBox, queryForm } from '../ui.js';

const kLimit = 25;
const kFilters = ['q', 'case_type', 'owner_id', 'closed'];

function searchForm(ctx, go) {
  const p = ctx.params;
  return queryForm({ role: 'search', 'aria-label': 'Search cases' }, [
    field('Text', { name: 'q', type: 'search', value: p.get('q') || '' }),
    field('Case type', { name: 'case_type', value: p.get('case_type') || '' }),
    field('Owner ID', { name: 'owner_id', value: p.get('owner_id') || '' }),
    select('Status', 'closed', [['', 'Open and closed'], ['false', 'Open'], ['true', 'Closed']],
      p.get('closed') || '')], 'Search', go);
}

export async function render(main, ctx) {
  const { domain } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}`;
  const go = q => { location.hash = `${base}/cases?${q}`; };
  const results = h('div', { id: 'case-results' });
  main.append(h('h1', {}, 'Cases'), searchForm(ctx, go), results);
  // Cursors of the pages before this one, so "Previous" can go back.
  const cursors = (ctx.params.get('trail') || '').split(',').filter(Boolean);
  const q = new URLSearchParams({ limit: kLimit });
  for (const k of kFilters) if (ctx.params.get(k)) q.set(k, ctx.params.get(k));
  if (ctx.params.get('cursor')) q.set('cursor', ctx.params.get('cursor'));
  try {
    const page = await api(dpath(domain, `api/case/v2/?${q}`));
    const to = (cursor, trail) => () => {
      const n = new URLSearchParams(ctx.params);
      if (cursor) n.set('cursor', cursor); else n.delete('cursor');
      if (trail.length) n.set('trail', trail.join(',')); else n.delete('trail');
      go(n);
    };
    const next = page.next ? new URL(page.next, location.origin).searchParams.get('cursor') : null;
    const here = ctx.params.get('cursor') || '';
    results.replaceChildren(
      table('Matching cases', [
        { label: 'Name', cell: c => h('a', { href: `${base}/cases/${encodeURIComponent(c.case_id)}` },
          c.case_name || '(no name)') },
        { label: 'Type', cell: c => c.case_type },
        { label: 'Owner', cell: c => h('code', {}, c.owner_id) },
        { label: 'Modified', cell: c => fmtTime(c.last_modified) },
        { label: 'Status', cell: c => c.closed ? 'closed' : 'open' }], page.cases, 'No cases match.'),
      pager('Case pages', ctx.params.get('cursor') ? to(cursors.at(-1), cursors.slice(0, -1)) : null,
        next ? to(next, [...cursors, here]) : null));
  } catch (e) {
    results.replaceChildren(errorBox(e));
  }
}
