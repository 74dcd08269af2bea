// A submission: its metadata, the cases it touched (from its XML), attachments and XML;
// archive and unarchive with a confirmation.
import { api, dpath, formRow } from '../api.js';
import { h, fields, fmtTime, table, confirmDialog, announce, errorBox } from '../ui.js';

// The case ids of the case blocks in a form's XML.
function touchedCases(xml) {
  const doc = new DOMParser().parseFromString(xml, 'application/xml');
  const ids = new Set();
  for (const el of doc.getElementsByTagName('*'))
    if (el.localName === 'case' && el.getAttribute('case_id')) ids.add(el.getAttribute('case_id'));
  return [...ids];
}

function archiveButton(ctx, f, reload) {
  const archived = f.state === 'archived';
  const label = archived ? 'Unarchive' : 'Archive';
  return h('button', { type: 'button', class: archived ? '' : 'danger', id: 'archive',
    onclick: async () => {
      const text = archived
        ? 'Unarchiving replays this form: the cases it touched get its changes back.'
        : 'Archiving revokes this form: the cases it touched are rebuilt without its changes.';
      if (!await confirmDialog(`${label} this submission?`, text, label)) return;
      try {
        await api(dpath(ctx.domain, `api/console/form/${encodeURIComponent(f.form_id)}/` +
          (archived ? 'unarchive' : 'archive')), { method: 'POST' });
        announce(archived ? 'Submission unarchived.' : 'Submission archived.');
        await reload();
      } catch (e) {
        announce(`Failed: ${e.message}`);
      }
    } }, `${label}…`);
}

export async function render(main, ctx) {
  const { domain, id } = ctx;
  const base = `#/d/${encodeURIComponent(domain)}`;
  const body = h('div');
  main.append(h('p', {}, h('a', { href: `${base}/forms` }, '← Submissions')),
    h('h1', {}, 'Submission'), body);
  const reload = async () => {
    try {
      const f = formRow(await api(dpath(domain, `api/v0.5/form/${encodeURIComponent(id)}/`)));
      const xml = await api(dpath(domain, `api/v0.5/form/${encodeURIComponent(id)}/xml`),
        { text: true });
      const attUrl = a => dpath(domain,
        `api/form/attachment/${encodeURIComponent(id)}/${encodeURIComponent(a.name)}`);
      body.replaceChildren(
        fields([['Form ID', h('code', {}, f.form_id)], ['Outcome', h('span',
          { class: `badge s-${f.state}`, id: 'form-state' }, f.state)], ['xmlns', f.xmlns],
        ['User', f.username || f.user_id], ['Received', fmtTime(f.received_on)],
        ['Device', f.device_id], ['App', f.app_id], ['Problem', f.problem || '']]),
        h('div', { class: 'actions' }, archiveButton(ctx, f, reload)),
        h('h2', {}, 'Cases touched'),
        h('ul', { id: 'touched' }, touchedCases(xml).map(c =>
          h('li', {}, h('a', { href: `${base}/cases/${encodeURIComponent(c)}` }, c)))),
        h('h2', {}, 'Attachments'),
        table('Attachments', [
          { label: 'Name', cell: a => h('a', { href: attUrl(a), download: a.name }, a.name) },
          { label: 'Type', cell: a => a.content_type },
          { label: 'Bytes', cell: a => String(a.length) }], f.attachments, 'No attachments.'),
        h('h2', {}, 'XML'),
        h('pre', { class: 'xml', tabindex: '0', 'aria-label': 'Form XML' }, xml));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  await reload();
}
