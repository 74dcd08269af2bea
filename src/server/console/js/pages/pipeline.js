// Pipeline: every pillow's lag per partition, throughput and retry/dead-letter counts as live
// charts (uPlot) sampled every two seconds, its partitions as a table, and for a superuser its
// retry queue with requeue buttons.
import { api } from '../api.js';
import { h, table, errorBox, announce, confirmDialog, fmtTime } from '../ui.js';
import { loadCharts, LiveChart } from '../charts.js';

function lagBar(p) {
  const max = Math.max(1, p.end_offset);
  return h('progress', { max, value: p.checkpoint,
    'aria-label': `${p.topic} partition ${p.partition}: ${p.checkpoint} of ${p.end_offset} processed` });
}

function summary(p) {
  return h('p', {}, h('span', { class: `badge ${p.lag ? 's-error' : 's-normal'}`,
    'data-pillow-lag': p.pillow }, `lag ${p.lag}`),
  ` · oldest unprocessed ${p.lag_seconds.toFixed(1)} s · retries ${p.retries} · dead letters ${p.dead_letters}`);
}

// The partition table, folded (a pillow reading two topics has 16 rows); its summary says how
// many partitions lag, so a folded table still shows trouble.
function partitions(p, open) {
  const lagging = p.partitions.filter(x => x.lag > 0).length;
  const d = h('details', { class: 'partitions' }, h('summary', {},
    `${p.partitions.length} partitions, ${lagging} lagging`), partitionTable(p));
  d.open = open;
  return d;
}

function partitionTable(p) {
  return table(`Partitions of ${p.pillow}`, [
    { label: 'Topic', cell: x => x.topic }, { label: 'Partition', cell: x => String(x.partition) },
    { label: 'Processed', cell: x => String(x.checkpoint) },
    { label: 'End', cell: x => String(x.end_offset) }, { label: 'Lag', cell: x => String(x.lag) },
    { label: 'Progress', cell: lagBar }], p.partitions, 'No partitions.');
}

const partKey = x => `${x.topic}/${x.partition}`;

// The three charts of a pillow, fed one sample of its status at a time.
class PillowCharts {
  constructor(uPlot, p) {
    this.keys = p.partitions.map(partKey).join(',');
    // "p3" when the pillow reads one topic; "case p3", "form p3" when it reads several.
    const several = new Set(p.partitions.map(x => x.topic)).size > 1;
    const names = p.partitions.map(x =>
      `${several ? `${x.topic.replace(/-sql$/, '')} ` : ''}p${x.partition}`);
    this.lag = new LiveChart(uPlot, `Lag of ${p.pillow} by partition`, 'changes', names);
    this.rate = new LiveChart(uPlot, `Throughput of ${p.pillow} by partition`, 'changes/s', names);
    this.queue = new LiveChart(uPlot, `Retry queue of ${p.pillow}`, 'changes',
      ['retries', 'dead letters']);
    this.lag.el.classList.add('lag');
    this.rate.el.classList.add('rate');
    this.queue.el.classList.add('queue');
    this.el = h('div', { class: 'charts' }, this.lag.el, this.rate.el, this.queue.el);
    this.prev = null;
  }

  sample(p, now) {
    const rates = p.partitions.map(x => {
      const before = this.prev?.done.get(partKey(x));
      if (before === undefined) return null;
      return Math.max(0, x.checkpoint - before) / Math.max(0.001, now - this.prev.t);
    });
    this.prev = { t: now, done: new Map(p.partitions.map(x => [partKey(x), x.checkpoint])) };
    this.lag.push(now, p.partitions.map(x => x.lag));
    this.rate.push(now, rates);
    this.queue.push(now, [p.retries, p.dead_letters]);
  }

  destroy() { [this.lag, this.rate, this.queue].forEach(c => c.destroy()); }
}

async function requeue(pillow, docId, includeDead, refresh) {
  const what = docId ? `change ${docId}` : 'every queued change';
  const ok = await confirmDialog(`Requeue in ${pillow}?`,
    `Make ${what} of ${pillow} due now with its attempts reset` +
    `${includeDead ? ', dead letters included' : ''}.`, 'Requeue');
  if (!ok) return;
  try {
    const r = await api(`/console/api/pillows/${encodeURIComponent(pillow)}/requeue`,
      { method: 'POST', body: { doc_id: docId || '', include_dead: includeDead } });
    announce(`${r.requeued} change${r.requeued === 1 ? '' : 's'} requeued in ${pillow}.`);
    await refresh();
  } catch (e) {
    announce(`Requeue failed: ${e.message}`);
  }
}

// The retry queue of a pillow (superusers: it spans domains), with requeue buttons.
async function retryQueue(p, refresh) {
  const data = await api(`/console/api/pillows/${encodeURIComponent(p.pillow)}/retries`);
  const rows = data.retries;
  return h('div', { class: 'retries' },
    h('h3', {}, `Retry queue of ${p.pillow}`),
    table(`Retry queue of ${p.pillow}`, [
      { label: 'Document', cell: e => h('code', {}, e.doc_id) },
      { label: 'Offset', cell: e => `${e.topic}/${e.partition}@${e.offset}` },
      { label: 'Attempts', cell: e => String(e.attempts) },
      { label: 'State', cell: e => h('span', { class: `badge ${e.dead ? 's-error' : 't-queued'}` },
        e.dead ? 'dead letter' : 'waiting') },
      { label: 'Next attempt', cell: e => e.dead ? '—' : fmtTime(e.next_attempt) },
      { label: 'Error', cell: e => e.error },
      { label: 'Action', cell: e => h('button', { type: 'button', class: 'requeue',
        'aria-label': `Requeue ${e.doc_id}`, onclick: () => requeue(p.pillow, e.doc_id, e.dead, refresh) },
      'Requeue') }], rows, 'The retry queue is empty.'),
    rows.length ? h('div', { class: 'actions' }, h('button', { type: 'button', class: 'requeue-all',
      onclick: () => requeue(p.pillow, '', true, refresh) },
    `Requeue all ${rows.length} of ${p.pillow}`)) : null);
}

export async function render(main, ctx) {
  const total = h('p', { id: 'total-lag', class: 'count' });
  const note = h('div');
  const body = h('div');
  main.append(h('h1', {}, 'Pipeline'), total, note, body);
  const uPlot = await loadCharts();
  if (!uPlot)
    note.append(h('p', { class: 'error', id: 'charts-missing', role: 'note' },
      'Charts were not built into this server: uPlot was not installed when it was compiled. ' +
      'Run scripts/setup (it installs uPlot with npm into third_party/console), then build again.'));
  const pillows = new Map();  // name -> {section, summary, table, queue, charts, seen}
  const load = async () => {
    try {
      const data = await api('/console/api/pillows');
      const now = Date.now() / 1000;
      const lag = data.pillows.reduce((n, p) => n + p.lag, 0);
      total.textContent = `Total lag: ${lag} change${lag === 1 ? '' : 's'} across ${data.pillows.length} pillows`;
      total.dataset.lag = lag;
      if (!data.pillows.length)
        body.replaceChildren(h('p', { class: 'empty' }, 'No pillows run beside this server.'));
      for (const p of data.pillows) await update(p, now);
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  const update = async (p, now) => {
    let s = pillows.get(p.pillow);
    if (!s) {
      s = { summary: h('div'), table: h('div'), queue: h('div'), charts: null, seen: '' };
      s.section = h('section', { class: 'pillow', 'aria-labelledby': `p-${p.pillow}` },
        h('h2', { id: `p-${p.pillow}` }, p.pillow), s.summary, s.table, s.queue);
      pillows.set(p.pillow, s);
      body.append(s.section);
    }
    if (uPlot && (!s.charts || s.charts.keys !== p.partitions.map(partKey).join(','))) {
      if (s.charts) { s.charts.destroy(); s.charts.el.remove(); }
      s.charts = new PillowCharts(uPlot, p);
      s.summary.after(s.charts.el);
    }
    if (s.charts) s.charts.sample(p, now);
    const seen = JSON.stringify(p);
    if (seen === s.seen) return;  // redraw only on change: the focus stays where it is
    s.seen = seen;
    s.summary.replaceChildren(summary(p));
    s.table.replaceChildren(partitions(p, !!s.table.querySelector('details[open]')));
    s.queue.replaceChildren();
    if (ctx.session.is_superuser && p.retries + p.dead_letters > 0)
      s.queue.replaceChildren(await retryQueue(p, load));
  };
  await load();
  const timer = setInterval(() => { if (!document.hidden) load(); }, 2000);
  return () => {
    clearInterval(timer);
    for (const s of pillows.values()) if (s.charts) s.charts.destroy();
  };
}
