// Rules: the domain's case update rules (run now, dry run: the cases it would change), their
// runs (rule.run tasks with what they scanned, matched and changed), and the cases they changed
// (the rules' system forms, server-paged). Refreshed every 3 seconds.
import { api, dpath, formRow } from '../api.js';
import { h, table, pager, fmtTime, announce, errorBox, confirmDialog } from '../ui.js';

const kRuleXmlns = 'http://commcarehq.org/hq_case_update_rule';
const kLimit = 25;

function summary(rule) {
  const a = rule.actions || {};
  const parts = (a.update || []).map(u => `set ${u.name}`);
  if (a.close_case) parts.push('close');
  return `${(rule.criteria || []).length} criteria; ${parts.join(', ') || 'no action'}`;
}

async function dryRun(domain, base, rule, out) {
  try {
    const r = await api(dpath(domain, `api/rules/${encodeURIComponent(rule.name)}/dry_run?limit=50`));
    out.replaceChildren(h('h3', {}, `Dry run of ${rule.name}`),
      h('p', { class: 'count', id: 'dry-run-summary' }, `${r.summary.matched} matched, ` +
        `${r.summary.changed} would change, ${r.summary.unchanged} unchanged` +
        (r.truncated ? ' (first 50 shown)' : '')),
      table(`Cases ${rule.name} would change`, [
        { label: 'Case', cell: c => h('a', { href: `${base}/cases/${encodeURIComponent(c.case_id)}` }, c.case_id) },
        { label: 'Update', cell: c => Object.entries(c.update).map(([k, v]) => `${k}=${v}`).join(', ') },
        { label: 'Close', cell: c => c.close ? 'yes' : 'no' }], r.changes, 'No case would change.'));
    out.querySelector('h3').tabIndex = -1;
    out.querySelector('h3').focus();
  } catch (e) {
    out.replaceChildren(errorBox(e));
  }
}

async function runNow(domain, rule, refresh) {
  if (!await confirmDialog(`Run ${rule.name} now?`,
    `Apply ${rule.name} to every matching ${rule.case_type} case.`, 'Run')) return;
  try {
    const t = await api(dpath(domain, `api/rules/${encodeURIComponent(rule.name)}/run`), { method: 'POST' });
    announce(`Rule ${rule.name} queued as task ${t.id}.`);
    await refresh();
  } catch (e) {
    announce(`Run failed: ${e.message}`);
  }
}

function rulesTable(domain, base, list, out, refresh) {
  return table('Rules', [
    { label: 'Name', cell: r => r.name }, { label: 'Case type', cell: r => r.case_type },
    { label: 'What it does', cell: summary },
    { label: 'Schedule', cell: r => `${r.schedule || '0 0 * * *'} (${r.time_zone || 'UTC'})` +
      (r.run_on_change ? ', and on each change' : '') },
    { label: 'Next run', cell: r => r.enabled === false ? '—' : fmtTime(r.next_run_at) },
    { label: 'Last run', cell: r => fmtTime(r.last_run_at) },
    { label: 'Active', cell: r => r.enabled === false || r.active === false ? 'no' : 'yes' },
    { label: 'Actions', cell: r => h('span', { class: 'buttons' },
      h('button', { type: 'button', 'aria-label': `Dry run ${r.name}`,
        onclick: () => dryRun(domain, base, r, out) }, 'Dry run'),
      h('button', { type: 'button', 'aria-label': `Run ${r.name} now`,
        onclick: () => runNow(domain, r, refresh) }, 'Run now')) }], list, 'No rules in this domain.');
}

function runsTable(list) {
  const res = t => (t.result && typeof t.result === 'object' ? t.result : null);  // the summary
  return table('Rule runs, newest first', [
    { label: 'Task', cell: t => String(t.id) },
    { label: 'Rule', cell: t => res(t)?.rule || '—' },
    { label: 'State', cell: t => h('span', { class: `badge t-${t.state}` }, t.state) },
    { label: 'Finished', cell: t => fmtTime(t.finished_at) },
    { label: 'Scanned', cell: t => String(res(t)?.scanned ?? '—') },
    { label: 'Matched', cell: t => String(res(t)?.matched ?? '—') },
    { label: 'Changed', cell: t => String(res(t)?.changed ?? '—') },
    { label: 'Error', cell: t => t.last_error || '' }], list, 'No rule has run yet.');
}

function changesTable(base, list) {
  return table('Cases changed by rules, newest first', [
    { label: 'Received', cell: f => fmtTime(f.received_on) },
    { label: 'Rule', cell: f => f.form['@name'] || '—' },
    { label: 'Case', cell: f => {
      const id = f.form.case?.['@case_id'];
      return id ? h('a', { href: `${base}/cases/${encodeURIComponent(id)}` }, id) : '—';
    } },
    { label: 'Form', cell: f => h('a', { href: `${base}/forms/${encodeURIComponent(f.form_id)}` }, 'Open') }],
  list, 'No rule has changed a case yet.');
}

export async function render(main, ctx) {
  const { domain } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}`;
  const rules = h('div', { id: 'rules' }), dry = h('div', { id: 'dry-run' });
  const runs = h('div', { id: 'rule-runs' }), changes = h('div', { id: 'rule-changes' });
  main.append(h('h1', {}, 'Rules'), rules, dry, h('h2', {}, 'Runs'), runs,
    h('h2', {}, 'Cases changed'), changes);
  const offset = Number(ctx.params.get('offset') || 0);
  const move = to => () => { location.hash = `${base}/rules?offset=${to}`; };
  let last = '';
  async function refresh() {
    try {
      const q = new URLSearchParams({ xmlns: kRuleXmlns, limit: kLimit, offset });
      const [r, t, f] = await Promise.all([api(dpath(domain, 'api/rules/')),
        api(dpath(domain, 'api/tasks/?type=rule.run&limit=25')),
        api(dpath(domain, `api/v0.5/form/?${q}`))]);
      const seen = JSON.stringify([r, t, f]);
      if (seen === last) return;
      last = seen;
      // Each listed rule is {rule, schedule (its schedule's name), next_run_at, last_run_at, enabled}.
      const list = r.objects.map(o => ({ ...o.rule, next_run_at: o.next_run_at,
        last_run_at: o.last_run_at, enabled: o.enabled }));
      rules.replaceChildren(rulesTable(domain, base, list, dry, refresh));
      runs.replaceChildren(runsTable(t.objects));
      changes.replaceChildren(changesTable(base, f.objects.map(formRow)),
        pager('Pages of changed cases', offset > 0 ? move(Math.max(0, offset - kLimit)) : null,
          f.meta.next ? move(offset + kLimit) : null));
    } catch (e) {
      rules.replaceChildren(errorBox(e));
    }
  }
  await refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, 3000);
  return () => clearInterval(timer);
}
