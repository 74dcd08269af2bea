// Small DOM helpers shared by the pages: element building, tables, paging, dates, dialogs.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// A table with a caption; columns: [{label, cell: row => node|text}].
export function table(caption, columns, rows, empty = 'Nothing to show.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  // A focusable, named region: a wide table scrolls sideways with the keyboard too.
  return h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, columns.map(c => h('th', { scope: 'col' }, c.label)))),
      h('tbody', {}, rows.map(r => h('tr', {}, columns.map(c => h('td', {}, c.cell(r))))))));
}

// A definition list of [label, value] pairs.
export function fields(pairs) {
  return h('dl', { class: 'fields' },
    pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v === '' || v === null ? '—' : v)]));
}

// Previous/next buttons; a missing handler disables its button.
export function pager(label, onPrev, onNext) {
  return h('nav', { class: 'pager', 'aria-label': label },
    h('button', { type: 'button', disabled: !onPrev, onclick: onPrev }, '← Previous'),
    h('button', { type: 'button', disabled: !onNext, onclick: onNext }, 'Next →'));
}

export function announce(message) {
  const s = document.getElementById('status');
  s.textContent = '';
  setTimeout(() => { s.textContent = message; }, 10);
}

export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, `Error: ${e.message || e}`);
}

// A modal confirmation (keyboard: Tab between the buttons, Escape cancels); resolves true/false.
export function confirmDialog(title, text, action) {
  return new Promise(resolve => {
    const dlg = h('dialog', { 'aria-labelledby': 'dlg-title', class: 'confirm' },
      h('h2', { id: 'dlg-title' }, title), h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { type: 'button', value: 'no', onclick: () => dlg.close('no') }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: () => dlg.close('yes') }, action)));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'yes'); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

// A labelled input.
export function field(label, attrs) {
  const id = attrs.id || `f-${attrs.name}`;
  return h('div', { class: 'field' }, h('label', { for: id }, label), h('input', { id, ...attrs }));
}

// A form of filters with its submit button: on submit, go(the non-empty fields as a query).
export function queryForm(attrs, fields, button, go) {
  const form = h('form', { class: 'filters', ...attrs }, fields,
    h('button', { type: 'submit' }, button));
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    go(q);
  });
  return form;
}

export function select(label, name, options, value) {
  const id = `f-${name}`;
  return h('div', { class: 'field' }, h('label', { for: id }, label),
    h('select', { id, name }, options.map(([v, t]) =>
      h('option', { value: v, selected: v === value }, t))));
}

export function link(href, text, attrs = {}) { return h('a', { href, ...attrs }, text); }
