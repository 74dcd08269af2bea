// Forwarding: the domain's forwarders (pause, resume) and their repeat records with state,
// attempts and each attempt's answer, resent one at a time or all failed at once. Records are
// paged by the server (25 a page, `before` the last id); refreshed every 3 seconds.
import { api, dpath } from '../api.js';
import { h, table, pager, fmtTime, select, announce, errorBox, confirmDialog, queryForm } from '../ui.js';

const kLimit = 25;
const kStates = ['pending', 'failed', 'succeeded', 'cancelled', 'empty', 'invalid_payload'];
const stateClass = { succeeded: 's-normal', pending: 't-queued', failed: 's-error',
  cancelled: 's-error', invalid_payload: 's-error', empty: 's-archived' };

async function act(path, message, refresh) {
  try {
    await api(path, { method: 'POST' });
    announce(message);
    await refresh();
  } catch (e) {
    announce(`Failed: ${e.message}`);
  }
}

function forwarderTable(domain, list, refresh) {
  const toggle = f => h('button', { type: 'button', class: f.paused ? 'resume' : 'pause',
    'aria-label': `${f.paused ? 'Resume' : 'Pause'} forwarder ${f.name}`,
    onclick: () => act(dpath(domain, `api/forwarders/${f.id}/${f.paused ? 'resume' : 'pause'}`),
      `Forwarder ${f.name} ${f.paused ? 'resumed' : 'paused'}.`, refresh) },
  f.paused ? 'Resume' : 'Pause');
  return table('Forwarders', [
    { label: 'Name', cell: f => f.name }, { label: 'Kind', cell: f => `${f.kind} (${f.format})` },
    { label: 'URL', cell: f => h('code', {}, f.url) },
    { label: 'State', cell: f => h('span', { class: `badge ${f.paused ? 's-archived' : 's-normal'}`,
      'data-forwarder': f.name }, f.paused ? 'paused' : 'active') },
    { label: 'Max attempts', cell: f => String(f.max_attempts) },
    { label: 'Action', cell: toggle }], list, 'No forwarders in this domain.');
}

// A record's attempts, read when its disclosure is opened.
function attemptLog(domain, rec) {
  const box = h('div');
  const details = h('details', { class: 'attempts' },
    h('summary', { 'aria-label': `Attempts of record ${rec.id}` }, `${rec.attempts}`), box);
  details.addEventListener('toggle', async () => {
    if (!details.open) return;
    try {
      const full = await api(dpath(domain, `api/forwarders/records/${rec.id}/`));
      box.replaceChildren(h('ol', {}, (full.attempt_log || []).map(a => h('li', {},
        `${fmtTime(a.at)} ${a.state} HTTP ${a.http_status || '—'} ${a.message || ''} (${a.duration_ms} ms)`))));
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
  });
  return details;
}

function recordTable(domain, names, list, refresh) {
  const resend = rec => h('button', { type: 'button', class: 'resend',
    'aria-label': `Resend record ${rec.id}`, onclick: async () => {
      if (!await confirmDialog(`Resend record ${rec.id}?`,
        `Send ${rec.doc_type} ${rec.doc_id} to ${names.get(rec.forwarder) || rec.forwarder} again now.`,
        'Resend')) return;
      await act(dpath(domain, `api/forwarders/records/${rec.id}/resend`),
        `Record ${rec.id} queued to be sent again.`, refresh);
    } }, 'Resend');
  return table('Repeat records, newest first', [
    { label: 'Record', cell: r => String(r.id) },
    { label: 'Forwarder', cell: r => names.get(r.forwarder) || r.forwarder },
    { label: 'Document', cell: r => h('code', {}, r.doc_id) },
    { label: 'State', cell: r => h('span', { class: `badge ${stateClass[r.state] || ''}` }, r.state) },
    { label: 'Attempts', cell: r => attemptLog(domain, r) },
    { label: 'Last tried', cell: r => fmtTime(r.last_checked) },
    { label: 'Next try', cell: r => r.state === 'failed' ? fmtTime(r.next_check) : '—' },
    { label: 'Action', cell: resend }], list, 'No records.');
}

function filters(ctx, forwarders, go) {
  const p = ctx.params;
  return queryForm({ 'aria-label': 'Filter records' }, [
    select('State', 'state', [['', 'Any state'], ...kStates.map(s => [s, s])], p.get('state') || ''),
    select('Forwarder', 'forwarder', [['', 'Any forwarder'], ...forwarders.map(f => [f.id, f.name])],
      p.get('forwarder') || '')], 'Filter', go);
}

export async function render(main, ctx) {
  const { domain } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}/forwarding`;
  const go = q => { location.hash = `${base}?${q}`; };
  const top = h('div', { id: 'forwarders' });
  const counts = h('p', { class: 'count', id: 'record-counts' });
  const records = h('div', { id: 'records' });
  main.append(h('h1', {}, 'Forwarding'), top);
  let forwarders;
  try {
    forwarders = (await api(dpath(domain, 'api/forwarders/'))).objects;
  } catch (e) {
    main.append(errorBox(e));
    return null;
  }
  const names = new Map(forwarders.map(f => [f.id, f.name]));
  const trail = (ctx.params.get('trail') || '').split(',').filter(Boolean);
  const q = new URLSearchParams({ limit: kLimit });
  for (const k of ['state', 'forwarder', 'before']) if (ctx.params.get(k)) q.set(k, ctx.params.get(k));
  const resendFailed = h('button', { type: 'button', id: 'resend-failed', onclick: async () => {
    if (!await confirmDialog('Resend every failed record?',
      'Every failed and cancelled record of this domain is sent again now.', 'Resend')) return;
    await act(dpath(domain, 'api/forwarders/records/resend_failed'), 'Failed records queued again.', refresh);
  } }, 'Resend all failed');
  main.append(h('h2', {}, 'Records'), counts, filters(ctx, forwarders, go), records,
    h('div', { class: 'actions' }, resendFailed));
  let last = '';
  async function refresh() {
    try {
      const [fw, c, page] = await Promise.all([api(dpath(domain, 'api/forwarders/')),
        api(dpath(domain, 'api/forwarders/records/counts')),
        api(dpath(domain, `api/forwarders/records/?${q}`))]);
      const seen = JSON.stringify([fw, c, page]);
      if (seen === last) return;
      last = seen;
      top.replaceChildren(forwarderTable(domain, fw.objects, refresh));
      counts.textContent = Object.entries(c).map(([k, v]) => `${k} ${v}`).join(' · ') || 'No records.';
      const list = page.objects;
      const move = (before, t) => () => {
        const n = new URLSearchParams(ctx.params);
        if (before && before !== '0') n.set('before', before); else n.delete('before');
        if (t.length) n.set('trail', t.join(',')); else n.delete('trail');
        go(n);
      };
      const here = ctx.params.get('before') || '';
      records.replaceChildren(recordTable(domain, names, list, refresh),
        pager('Record pages', ctx.params.get('before') ? move(trail.at(-1), trail.slice(0, -1)) : null,
          list.length === kLimit ? move(String(list.at(-1).id), [...trail, here || '0']) : null));
    } catch (e) {
      records.replaceChildren(errorBox(e));
    }
  }
  await refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, 3000);
  return () => clearInterval(timer);
}
