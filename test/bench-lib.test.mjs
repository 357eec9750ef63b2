// bench/lib: the run-length fs-verity digest of sparse files (checked against format/verity.ts
// on real bytes) and the SVG plots of docs/evaluation.md.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verityDigest, verityDigestOfFile } from '../dist/format/verity.js';
import { sparseVerityDigest } from '../bench/lib/verity-zero.mjs';
import { linePlot, barChart, logTicks, linearTicks } from '../bench/lib/svg.mjs';
import { percentile, pairedRatio, summarize } from '../bench/lib/stats.mjs';

const B = 4096;
// Sizes around every boundary of the Merkle tree: one block, one full level-1 block (128
// hashes), one more, two levels full (128*128 blocks) and a ragged tail.
const SIZES = [0, 1, 4095, B, B + 1, 127 * B, 128 * B, 128 * B + 1, 129 * B + 7, 128 * 128 * B, 128 * 128 * B + 3 * B + 5];

test('all-zero files: the run-length digest equals format/verity.ts on the bytes', (t) => {
  for (const size of SIZES) {
    t.is(sparseVerityDigest(size).toString('hex'), verityDigest(Buffer.alloc(size)).toString('hex'), `size ${size}`);
  }
});

test('zeros with data chunks at the start, middle and end', (t) => {
  const marker = (s, n) => Buffer.from(s.repeat(Math.ceil(n / s.length)).slice(0, n));
  for (const size of [5 * B, 200 * B + 9, 128 * 128 * B + 2 * B]) {
    const chunks = [
      { offset: 0, data: marker('head', 5000) },
      { offset: Math.floor(size / B / 2) * B, data: marker('mid', B) },
      { offset: Math.floor((size - 1) / B) * B, data: marker('tail', size - Math.floor((size - 1) / B) * B) },
    ];
    const bytes = Buffer.alloc(size);
    for (const c of chunks) c.data.copy(bytes, c.offset);
    t.is(sparseVerityDigest(size, chunks).toString('hex'), verityDigest(bytes).toString('hex'), `size ${size}`);
  }
});

test('a real sparse file made with truncate hashes the same as its digest from the bytes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-benchlib-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'sparse');
  const size = 300 * B + 123;
  const head = Buffer.from('object 7\n');
  fs.writeFileSync(f, head);
  fs.truncateSync(f, size);
  t.is(sparseVerityDigest(size, [{ offset: 0, data: head }]).toString('hex'), (await verityDigestOfFile(f)).toString('hex'));
});

test('misplaced chunks are refused', (t) => {
  t.throws(() => sparseVerityDigest(2 * B, [{ offset: 10, data: Buffer.from('x') }]), { message: /4096-aligned/ });
  t.throws(() => sparseVerityDigest(B, [{ offset: 0, data: Buffer.alloc(B + 1) }]), { message: /inside the file/ });
});

test('stats: percentile, spread and paired ratios', (t) => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  t.is(percentile(xs, 50), 50);
  t.is(percentile(xs, 99), 99);
  t.deepEqual(summarize([9, 10, 12]).median, 10);
  t.is(summarize([9, 10, 12]).spread, 0.2);
  const r = pairedRatio([2, 4, 6], [1, 2, 3]);
  t.is(r.median, 2);
  t.is(r.spread, 0);
});

test('svg axes: log ticks are the powers of ten, linear ticks round steps', (t) => {
  t.deepEqual(logTicks(1e4, 1e7), [1e4, 1e5, 1e6, 1e7]);
  t.deepEqual(logTicks(2e4, 3e5), [1e4, 1e5, 1e6]);
  t.deepEqual(linearTicks(0, 2.1), [0, 0.5, 1, 1.5, 2, 2.5]); // the last tick covers the top
});

test('svg line plot: points placed on the log-x axis, one polyline per series', (t) => {
  const svg = linePlot({ title: 'a<b', xLabel: 'files', yLabel: 'ms', series: [
    { name: 's1', points: [[1e4, 1], [1e5, 2], [1e6, 3]] },
    { name: 's2', points: [[1e4, 2], [1e6, NaN]] },
  ] });
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  t.true(svg.includes('a&lt;b'));
  t.is(svg.match(/<polyline/g).length, 1); // s2 has one finite point: no line
  t.is(svg.match(/<circle/g).length, 4);
  // x: 1e4 at the left margin, 1e6 at the right end of the plot area, 1e5 half way
  const cx = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].map((m) => Number(m[1]));
  t.deepEqual(cx.slice(0, 3), [70, 310, 550]);
  t.throws(() => linePlot({ title: 'x', xLabel: '', yLabel: '', series: [{ name: 'e', points: [] }] }), { message: /no points/ });
});

test('svg bar chart: one bar per value, whiskers for spread, native line at 1', (t) => {
  const svg = barChart({ title: 'r', yLabel: '× native', groups: [
    { label: 'walk', bars: [{ name: 'a', value: 1.5, spread: 0.1 }, { name: 'b', value: 0.5, spread: 0 }] },
    { label: 'read', bars: [{ name: 'a', value: 2, spread: NaN }] },
  ] });
  t.is(svg.match(/<rect x="[\d.]+" y="[\d.]+" width/g).length, 3 + 2); // 3 bars + 2 legend boxes
  t.is(svg.match(/stroke-dasharray/g).length, 1);
  t.is(svg.match(/<line x1="([\d.]+)" x2="\1" y1/g).length, 2); // the y axis and one whisker
});
