// Pipeline: every pillow's lag per partition, retries and dead letters, refreshed every two
// seconds. (Charts over time are not drawn yet: the numbers and bars are live.)
import { api } from '../api.js';
import { h, table, errorBox } from '../ui.js';

function lagBar(p) {
  const max = Math.max(1, p.end_offset);
  return h('progress', { max, value: p.checkpoint,
    'aria-label': `${p.topic} partition ${p.partition}: ${p.checkpoint} of ${p.end_offset} processed` });
}

function pillow(p) {
  return h('section', { class: 'pillow', 'aria-labelledby': `p-${p.pillow}` },
    h('h2', { id: `p-${p.pillow}` }, p.pillow),
    h('p', {}, h('span', { class: `badge ${p.lag ? 's-error' : 's-normal'}`,
      'data-pillow-lag': p.pillow }, `lag ${p.lag}`),
    ` · oldest unprocessed ${p.lag_seconds.toFixed(1)} s · retries ${p.retries} · dead letters ${p.dead_letters}`),
    table(`Partitions of ${p.pillow}`, [
      { label: 'Topic', cell: x => x.topic }, { label: 'Partition', cell: x => String(x.partition) },
      { label: 'Processed', cell: x => String(x.checkpoint) },
      { label: 'End', cell: x => String(x.end_offset) }, { label: 'Lag', cell: x => String(x.lag) },
      { label: 'Progress', cell: lagBar }], p.partitions, 'No partitions.'));
}

export async function render(main) {
  const total = h('p', { id: 'total-lag', class: 'count' });
  const body = h('div');
  main.append(h('h1', {}, 'Pipeline'), total, body);
  let last = '';
  const load = async () => {
    try {
      const data = await api('/console/api/pillows');
      const seen = JSON.stringify(data);
      if (seen === last) return;
      last = seen;
      const lag = data.pillows.reduce((n, p) => n + p.lag, 0);
      total.textContent = `Total lag: ${lag} change${lag === 1 ? '' : 's'} across ${data.pillows.length} pillows`;
      total.dataset.lag = lag;
      body.replaceChildren(...(data.pillows.length ? data.pillows.map(pillow)
        : [h('p', { class: 'empty' }, 'No pillows run beside this server.')]));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  await load();
  const timer = setInterval(() => { if (!document.hidden) load(); }, 2000);
  return () => clearInterval(timer);
}
