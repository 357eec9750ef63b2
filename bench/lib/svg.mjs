// SVG plots for docs/evaluation.md, with no dependencies: line plots (log-x, for the scale
// series against the number of files) and grouped bar charts (ratios against the native
// limit, with the spread as a whisker and the native level as a dashed line at 1).
// Output is plain deterministic text: the same data gives the same file.

const W = 720, H = 360;
const M = { left: 70, right: 170, top: 40, bottom: 80 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (x) => (Math.round(x * 100) / 100).toString();

/** Short tick labels: 1e4 -> "10k", 0.5 -> "0.5". */
export function tickLabel(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

/** Ticks of a linear axis: about 5 round steps covering [lo, hi]. */
export function linearTicks(lo, hi) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  if (out[out.length - 1] < hi) out.push(+(out[out.length - 1] + step).toPrecision(12));
  return out;
}

/** Ticks of a log axis: the powers of ten covering [lo, hi]. */
export function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
  return out;
}

function scaleOf(kind, lo, hi, from, to) {
  if (kind === 'log') {
    const a = Math.log10(lo), b = Math.log10(hi);
    return (v) => from + ((Math.log10(v) - a) / (b - a || 1)) * (to - from);
  }
  return (v) => from + ((v - lo) / (hi - lo || 1)) * (to - from);
}

function frame(title, xLabel, yLabel) {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.left}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="${(M.left + W - M.right) / 2}" y="${H - 15}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text transform="translate(16 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  ];
}

function yAxis(out, ticks, y, fmt) {
  for (const t of ticks) {
    out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${num(y(t))}" y2="${num(y(t))}" stroke="#ddd"/>`);
    out.push(`<text x="${M.left - 6}" y="${num(y(t) + 4)}" text-anchor="end">${esc(fmt(t))}</text>`);
  }
  out.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${H - M.bottom}" stroke="black"/>`);
  out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${H - M.bottom}" y2="${H - M.bottom}" stroke="black"/>`);
}

function legend(out, names) {
  names.forEach((n, i) => {
    const y = M.top + 10 + i * 18;
    out.push(`<rect x="${W - M.right + 12}" y="${y - 9}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${W - M.right + 30}" y="${y + 1}">${esc(n)}</text>`);
  });
}

/**
 * Line plot. series: [{name, points: [[x, y], ...]}]; x on a log axis; y linear unless
 * opts.logY. Missing points (y null/NaN) are left out.
 */
export function linePlot({ title, xLabel, yLabel, series, logY = false }) {
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && Number.isFinite(y) && (!logY || y > 0));
  if (!pts.length) throw new Error(`linePlot "${title}": no points`);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const xt = logTicks(Math.min(...xs), Math.max(...xs));
  const yt = logY ? logTicks(Math.min(...ys), Math.max(...ys)) : linearTicks(Math.min(0, ...ys), Math.max(...ys) * 1.05);
  const x = scaleOf('log', xt[0], xt[xt.length - 1], M.left, W - M.right);
  const y = scaleOf(logY ? 'log' : 'lin', yt[0], yt[yt.length - 1], H - M.bottom, M.top);
  const out = frame(title, xLabel, yLabel);
  yAxis(out, yt, y, tickLabel);
  for (const t of xt) {
    out.push(`<line x1="${num(x(t))}" x2="${num(x(t))}" y1="${H - M.bottom}" y2="${H - M.bottom + 5}" stroke="black"/>`);
    out.push(`<text x="${num(x(t))}" y="${H - M.bottom + 18}" text-anchor="middle">${esc(tickLabel(t))}</text>`);
  }
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const p = s.points.filter(([px, py]) => px > 0 && Number.isFinite(py) && (!logY || py > 0));
    if (p.length > 1) out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${p.map(([px, py]) => `${num(x(px))},${num(y(py))}`).join(' ')}"/>`);
    for (const [px, py] of p) out.push(`<circle cx="${num(x(px))}" cy="${num(y(py))}" r="3.5" fill="${c}"><title>${esc(`${s.name}: ${tickLabel(px)} -> ${+py.toPrecision(4)}`)}</title></circle>`);
  });
  legend(out, series.map((s) => s.name));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * Grouped bar chart of ratios against native. groups: [{label, bars: [{name, value, spread}]}]
 * (spread relative, drawn as a whisker of ±value*spread). A dashed line marks 1 (native).
 */
export function barChart({ title, yLabel, groups, reference = 1 }) {
  const names = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const tops = groups.flatMap((g) => g.bars.map((b) => b.value)).filter(Number.isFinite);
  if (!tops.length) throw new Error(`barChart "${title}": no values`);
  // The axis fits the bars; whiskers of very noisy runs are cut at the top of the plot.
  const yt = linearTicks(0, Math.max(reference, ...tops) * 1.15);
  const yMax = yt[yt.length - 1];
  const y = scaleOf('lin', 0, yMax, H - M.bottom, M.top);
  const out = frame(title, '', yLabel);
  yAxis(out, yt, y, tickLabel);
  const gw = (W - M.left - M.right) / groups.length;
  const bw = Math.min(28, (gw * 0.8) / names.length);
  groups.forEach((g, gi) => {
    const x0 = M.left + gi * gw + (gw - bw * names.length) / 2;
    g.bars.forEach((b) => {
      if (!Number.isFinite(b.value)) return;
      const i = names.indexOf(b.name);
      const bx = x0 + i * bw;
      out.push(`<rect x="${num(bx)}" y="${num(y(b.value))}" width="${num(bw - 2)}" height="${num(y(0) - y(b.value))}" fill="${COLORS[i % COLORS.length]}"><title>${esc(`${g.label}, ${b.name}: ×${b.value.toFixed(2)}`)}</title></rect>`);
      if (Number.isFinite(b.spread) && b.spread > 0) {
        const cx = bx + (bw - 2) / 2;
        out.push(`<line x1="${num(cx)}" x2="${num(cx)}" y1="${num(y(Math.min(yMax, b.value * (1 + b.spread))))}" y2="${num(y(Math.max(0, b.value * (1 - b.spread))))}" stroke="black"/>`);
      }
    });
    // many groups: labels slanted so they do not run into each other
    const lx = num(M.left + gi * gw + gw / 2), ly = H - M.bottom + 14;
    out.push(groups.length > 5
      ? `<text x="${lx}" y="${ly}" text-anchor="end" font-size="11" transform="rotate(-35 ${lx} ${ly})">${esc(g.label)}</text>`
      : `<text x="${lx}" y="${ly + 2}" text-anchor="middle" font-size="11">${esc(g.label)}</text>`);
  });
  out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${num(y(reference))}" y2="${num(y(reference))}" stroke="black" stroke-dasharray="5,4"/>`);
  legend(out, names);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
