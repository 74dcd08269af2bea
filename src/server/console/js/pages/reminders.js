// Reminders: the domain's conditional alerts (what they watch, when they check next) with
// "Check now", and the message log: every message an alert queued, to whom, for which case,
// and what became of it. The log is paged by the server (25 a page); refreshed every 3 seconds.
import { api, dpath } from '../api.js';
import { h, table, pager, fmtTime, field, select, announce, errorBox, confirmDialog, queryForm } from '../ui.js';

const kLimit = 25;
const kOutcomes = ['queued', 'succeeded', 'retrying', 'dead', 'skipped'];
const outcomeClass = o => (o === 'succeeded' ? 's-normal' : o === 'dead' ? 's-error'
  : o.startsWith('skipped') ? 's-archived' : 't-queued');

async function checkNow(domain, alert, refresh) {
  if (!await confirmDialog(`Check ${alert.name} now?`,
    `Queue every message of ${alert.name} that is due now (each case's message is sent once).`,
    'Check')) return;
  try {
    const t = await api(dpath(domain, `api/alerts/${encodeURIComponent(alert.name)}/check`),
      { method: 'POST' });
    announce(`Alert ${alert.name} is being checked as task ${t.id}.`);
    await refresh();
  } catch (e) {
    announce(`Check failed: ${e.message}`);
  }
}

function when(a) {
  const r = a.repeat || {};
  const s = a.start || {};
  const offset = s.offset_days ? ` ${s.offset_days > 0 ? '+' : ''}${s.offset_days} days` : '';
  const times = (r.occurrences || 1) > 1 ? `, ${r.occurrences} times every ${r.every_days} days` : '';
  return `${s.property || '—'}${offset} at ${s.time || '00:00'}${times}`;
}

function alertTable(domain, list, refresh) {
  return table('Alerts', [
    { label: 'Name', cell: a => a.name }, { label: 'Case type', cell: a => a.case_type },
    { label: 'Criteria', cell: a => String((a.criteria || []).length) },
    { label: 'When', cell: when },
    { label: 'Channel', cell: a => `${a.channel || 'email'} to ${a.recipient || 'owner'}` },
    { label: 'Checks', cell: a => `${a.check || '*/15 * * * *'} (${a.time_zone || 'UTC'})` },
    { label: 'Next check', cell: a => a.enabled === false ? '—' : fmtTime(a.next_run_at) },
    { label: 'Last check', cell: a => fmtTime(a.last_run_at) },
    { label: 'Action', cell: a => h('button', { type: 'button', 'aria-label': `Check ${a.name} now`,
      onclick: () => checkNow(domain, a, refresh) }, 'Check now') }], list,
  'No alerts in this domain.');
}

function messageTable(base, list) {
  return table('Messages, newest first', [
    { label: 'Queued', cell: m => fmtTime(m.queued_at) }, { label: 'Alert', cell: m => m.alert },
    { label: 'Case', cell: m => h('a', { href: `${base}/cases/${encodeURIComponent(m.case_id)}` }, m.case_id) },
    { label: 'Message', cell: m => `${m.occurrence + 1}: ${m.message}` },
    { label: 'Due', cell: m => fmtTime(m.due_at) },
    { label: 'To', cell: m => `${m.channel} ${m.recipient || '—'}` },
    { label: 'Outcome', cell: m => h('span', { class: `badge ${outcomeClass(m.outcome)}` }, m.outcome) }],
  list, 'No message has been queued yet.');
}

function filters(ctx, alerts, go) {
  const p = ctx.params;
  return queryForm({ 'aria-label': 'Filter messages' }, [
    select('Alert', 'alert', [['', 'Any alert'], ...alerts.map(a => [a.name, a.name])], p.get('alert') || ''),
    select('Outcome', 'outcome', [['', 'Any outcome'], ...kOutcomes.map(o => [o, o])], p.get('outcome') || ''),
    field('Case ID', { name: 'case_id', value: p.get('case_id') || '' })], 'Filter', go);
}

export async function render(main, ctx) {
  const { domain } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}`;
  const go = q => { location.hash = `${base}/reminders?${q}`; };
  const top = h('div', { id: 'alerts' }), log = h('div', { id: 'messages' });
  main.append(h('h1', {}, 'Reminders'), top);
  let alerts;
  try {
    alerts = (await api(dpath(domain, 'api/alerts/'))).objects;
  } catch (e) {
    main.append(errorBox(e));
    return null;
  }
  main.append(h('h2', {}, 'Messages'), filters(ctx, alerts.map(o => o.alert), go), log);
  const offset = Number(ctx.params.get('offset') || 0);
  const q = new URLSearchParams({ limit: kLimit, offset });
  for (const k of ['alert', 'outcome', 'case_id']) if (ctx.params.get(k)) q.set(k, ctx.params.get(k));
  const move = to => () => { const n = new URLSearchParams(ctx.params); n.set('offset', to); go(n); };
  let last = '';
  async function refresh() {
    try {
      const [a, m] = await Promise.all([api(dpath(domain, 'api/alerts/')),
        api(dpath(domain, `api/alerts/messages/?${q}`))]);
      const seen = JSON.stringify([a, m]);
      if (seen === last) return;  // redraw only on change: the focus stays where it is
      last = seen;
      // Each listed alert is {alert, schedule (its name), next_run_at, last_run_at, enabled}.
      top.replaceChildren(alertTable(domain, a.objects.map(o => ({ ...o.alert,
        next_run_at: o.next_run_at, last_run_at: o.last_run_at, enabled: o.enabled })), refresh));
      log.replaceChildren(messageTable(base, m.objects),
        pager('Message pages', offset > 0 ? move(Math.max(0, offset - kLimit)) : null,
          m.meta.next ? move(offset + kLimit) : null));
    } catch (e) {
      log.replaceChildren(errorBox(e));
    }
  }
  await refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, 3000);
  return () => clearInterval(timer);
}
