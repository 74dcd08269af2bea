// Tasks and exports: the domain's tasks with progress, export downloads and a requeue button
// for a dead or cancelled task, a form to run a case export, and the saved exports with their
// daily schedules. Refreshed every two seconds.
import { api, dpath } from '../api.js';
import { h, table, fmtTime, field, select, announce, errorBox, confirmDialog } from '../ui.js';

function progress(t) {
  const { done, total } = t.progress;
  if (t.state === 'succeeded') return h('progress', { max: 1, value: 1, 'aria-label': 'done' });
  if (!total) return h('span', { class: 'muted' }, t.progress.message || '—');
  return h('progress', { max: total, value: done, 'aria-label': `${done} of ${total}` });
}

function download(domain, t) {
  if (t.type !== 'export.run' || t.state !== 'succeeded') return '—';
  const file = t.result && t.result.file ? t.result.file : 'export';
  return h('a', { href: dpath(domain, `api/exports/${t.id}/download`), download: file,
    class: 'download' }, `Download ${file}`);
}

function exportForm(domain, refresh) {
  const form = h('form', { class: 'filters', 'aria-label': 'Run a case export' },
    field('Case type (empty: all)', { name: 'case_type', id: 'f-export-type' }),
    select('Format', 'format', [['csv', 'CSV'], ['xlsx', 'Excel (xlsx)']], 'csv'),
    h('button', { type: 'submit' }, 'Run case export'));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const d = new FormData(form);
    const def = { kind: 'case', name: 'console-export', format: d.get('format'), filters: {} };
    if (d.get('case_type')) def.filters.case_type = d.get('case_type');
    try {
      const t = await api(dpath(domain, 'api/exports/'), { method: 'POST', body: def });
      announce(`Export queued as task ${t.id}.`);
      await refresh();
    } catch (e) {
      announce(`Export failed: ${e.message}`);
    }
  });
  return form;
}

// Queues a dead or cancelled task again (POST .../tasks/{id}/retry) after a confirmation.
function requeueButton(domain, t, refresh) {
  if (t.state !== 'dead' && t.state !== 'cancelled') return '';
  return h('button', { type: 'button', class: 'requeue', 'aria-label': `Requeue task ${t.id}`,
    onclick: async () => {
      if (!await confirmDialog(`Requeue task ${t.id}?`,
        `Run ${t.type} task ${t.id} again, its attempts reset.`, 'Requeue')) return;
      try {
        await api(dpath(domain, `api/tasks/${t.id}/retry`), { method: 'POST' });
        announce(`Task ${t.id} queued again.`);
        await refresh();
      } catch (e) {
        announce(`Requeue failed: ${e.message}`);
      }
    } }, 'Requeue');
}

function taskTable(domain, list, refresh) {
  return table('Tasks, newest first', [
    { label: 'Task', cell: t => String(t.id) }, { label: 'Type', cell: t => t.type },
    { label: 'State', cell: t => h('span', { class: `badge t-${t.state}` }, t.state) },
    { label: 'Progress', cell: progress }, { label: 'Attempts', cell: t => String(t.attempts) }, { label: 'Created', cell: t => fmtTime(t.created_at) },
    { label: 'File', cell: t => download(domain, t) },
    { label: 'Error', cell: t => t.last_error || '' },
    { label: 'Action', cell: t => requeueButton(domain, t, refresh) }], list, 'No tasks in this domain.');
}

function savedTable(domain, list) {
  return table('Saved exports', [
    { label: 'Name', cell: s => s.name },
    { label: 'Kind', cell: s => s.kind || 'case' },
    { label: 'Schedule', cell: s => s.schedule
      ? `${s.schedule.cron} (${s.schedule.time_zone || 'UTC'})` : 'none' },
    { label: 'Latest file', cell: s => s.latest ? h('a', { href: dpath(domain,
      `api/exports/saved/${encodeURIComponent(s.name)}/download`) }, 'Download') : '—' },
    // What Power BI, Tableau or Excel is given (docs/exports.md, "OData feeds").
    { label: 'OData feed', cell: s => h('code', { class: 'odata' }, location.origin + dpath(domain,
      `api/odata/${s.kind === 'form' ? 'forms' : 'cases'}/v1/${encodeURIComponent(s.name)}/`)) }],
  list, 'No saved exports.');
}

export async function render(main, ctx) {
  const { domain } = ctx;
  const tasks = h('div', { id: 'tasks' });
  const saved = h('div', { id: 'saved' });
  let last = '';
  const refresh = async () => {
    try {
      const [t, s] = await Promise.all([api(dpath(domain, 'api/tasks/?limit=50')),
        api(dpath(domain, 'api/exports/saved/'))]);
      const seen = JSON.stringify([t, s]);
      if (seen === last) return;
      last = seen;
      tasks.replaceChildren(taskTable(domain, t.objects, refresh));
      saved.replaceChildren(savedTable(domain, s.objects));
    } catch (e) {
      tasks.replaceChildren(errorBox(e));
    }
  };
  main.append(h('h1', {}, 'Tasks and exports'), h('h2', {}, 'Run an export'),
    exportForm(domain, refresh), h('h2', {}, 'Tasks'), tasks, h('h2', {}, 'Saved exports'), saved);
  await refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, 2000);
  return () => clearInterval(timer);
}
