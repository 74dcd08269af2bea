// Live line charts drawn by uPlot (from npm, embedded at build time: docs/console.md). uPlot is
// loaded on first use; when the server was built without it, loadCharts() answers null.
import { h } from './ui.js';

let loading = null;

// Resolves to the uPlot constructor, or null when it was not built into this server.
export function loadCharts() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  loading ||= new Promise(resolve => {
    const script = h('script', { src: '/console/vendor/uPlot.iife.min.js' });
    script.addEventListener('load', () => {
      document.head.append(h('link', { rel: 'stylesheet', href: '/console/vendor/uPlot.min.css' }));
      resolve(window.uPlot || null);
    });
    script.addEventListener('error', () => resolve(null));
    document.head.append(script);
  });
  return loading;
}

// Colours with at least 3:1 contrast on white, told apart by dash as well as hue.
const palette = ['#0b5cad', '#a51d1d', '#1d6b2f', '#8a4b00', '#6b2d8f', '#00616b'];
const dashes = [[], [6, 3], [2, 2], [8, 3, 2, 3]];
const keep = 150;  // samples kept: five minutes at one every two seconds

// A chart of named series over time. push(t, values) appends a sample (seconds since the
// epoch, one number or null per series); the wrapper's data-peak is the largest value seen.
export class LiveChart {
  constructor(uPlot, title, unit, names) {
    this.uPlot = uPlot;
    this.title = title;
    this.unit = unit;
    this.names = names;
    this.data = [[], ...names.map(() => [])];
    this.peak = 0;
    this.el = h('figure', { class: 'chart', role: 'img', 'data-peak': '0' });
    this.caption = h('figcaption', {}, title);
    this.el.append(this.caption);
    this.plot = new uPlot(this.options(), this.data, this.el);
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.el);
  }

  options() {
    return {
      width: 320, height: 160, legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      axes: [{}, { label: this.unit, size: 56 }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [{}, ...this.names.map((n, i) => ({ label: n, width: 2,
        stroke: palette[i % palette.length], dash: dashes[i % dashes.length] }))],
    };
  }

  fit() {
    const w = Math.max(240, Math.floor(this.el.clientWidth));
    if (w !== this.plot.width) this.plot.setSize({ width: w, height: 160 });
  }

  push(t, values) {
    this.data[0].push(t);
    values.forEach((v, i) => {
      this.data[i + 1].push(v);
      if (v !== null && v > this.peak) this.peak = v;
    });
    if (this.data[0].length > keep) this.data.forEach(a => a.shift());
    this.plot.setData(this.data);
    this.el.dataset.peak = String(this.peak);
    this.el.dataset.points = String(this.data[0].length);
    const latest = values.map((v, i) => `${this.names[i]} ${v === null ? '—' : +v.toFixed(2)}`);
    this.el.setAttribute('aria-label', `${this.title}, latest: ${latest.join(', ')} ${this.unit}`);
  }

  destroy() {
    this.resize.disconnect();
    this.plot.destroy();
  }
}
