// Incremental re-encoding (format/lazy.ts), differentially: a lazy tree over a blob
// (openLazyTree) and the fully decoded tree of the same blob (decodeTree) get the same changes,
// and encodeBlob must give byte-identical blobs for both, or an EncodeError for both. The full
// path is the reference: it is the encoder every other test checks against the SPEC.
//
// Why randomized and chained: the incremental encoder copies the parts of the parent blob nothing
// touched and renumbers them, so a bug shows only for some combination of what was opened, what
// changed and what is shared across the tree (inode numbers at first reach, nlink, DATA items,
// digests, xattr sets, directory placement). Each case builds a random tree, encodes it, then
// for a few rounds opens a lazy tree over the last blob, mutates both trees by path and compares
// the encodes. Mutations are chosen by looking at the full tree only, so the lazy tree is opened
// only along the paths a mutation walks (test/lib/treemut.mjs). Mutation kinds are listed there.
//
// Every case prints its id on failure; rerun one case with
//   REENCODE_SEED=<family>:<seed> npx ava test/reencode.test.mjs
// REENCODE_SCALE=4 runs four times as many cases.

import test from 'ava';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { openLazyTree } from '../dist/format/lazy.js';
import { encodeBlob, EncodeError } from '../dist/format/encode.js';
import { decodeTree, openBlob, sourceFromBuffer } from '../dist/format/decode.js';
import { dumpBlob } from '../dist/format/dump.js';
import { SECTION_NAMES } from '../dist/format/layout.js';
import * as CRC from '../dist/format/crc32c.js';
import { applyLayerStream, LayerError } from '../dist/compiler/layers.js';
import { applyOverlayDiff } from '../dist/compiler/overlaydiff.js';
import { ustarHeader } from './lib/ustar.mjs';
import { Values, randomTree, survey, isDir, isPlainName, showPath, Rand, S_IFREG } from './lib/randtree.mjs';
import { chooseMutation, applyMutation, describeMutation } from './lib/treemut.mjs';

const SCALE = Number(process.env.REENCODE_SCALE ?? 1);

// ---------------------------------------------------------------------------------------------
// Cases and their reports

class CaseFailure extends Error {}

/** One randomized case: its PRNG and a log of what it did, printed when it fails. */
class Case {
  constructor(family, seed, tally = new Map()) {
    this.tally = tally;
    this.family = family;
    this.seed = seed;
    this.id = `${family}:0x${seed.toString(16)}`;
    this.r = new Rand(seed);
    this.lines = [];
  }
  log(line) {
    this.lines.push(line);
  }
  fail(message) {
    throw new CaseFailure(message);
  }
  /** Count what the family exercised (logged once per family, to see the mix is sane). */
  count(what) {
    this.tally.set(what, (this.tally.get(what) ?? 0) + 1);
  }
}

/** A mutation's kind for the tally: kind, and the variant that matters. */
const kindOf = (m) => [m.kind, m.op ?? m.what ?? m.how ?? (m.invalid ? m.invalid : undefined)].filter(Boolean).join(':');

/**
 * Run `count` cases of a family (seeds base, base + 1, ...), or only the one REENCODE_SEED
 * names. All cases run; the first few failures are logged in full with their history.
 */
async function runFamily(t, family, base, count, body) {
  let seeds = Array.from({ length: Math.round(count * SCALE) }, (_, i) => base + i);
  const only = process.env.REENCODE_SEED;
  if (only) {
    const [f, s] = only.split(':');
    seeds = f === family ? [Number(s)] : [];
  }
  const failures = [];
  const tally = new Map();
  const started = Date.now();
  for (const seed of seeds) {
    const c = new Case(family, seed, tally);
    try {
      await body(c);
    } catch (err) {
      failures.push({ c, err });
    }
  }
  for (const { c, err } of failures.slice(0, 3)) {
    const why = err instanceof CaseFailure ? err.message : `unexpected error: ${err?.stack ?? err}`;
    const history = c.lines.length > 60 ? ['...', ...c.lines.slice(-60)] : c.lines;
    t.log(`FAILED case ${c.id} (rerun: REENCODE_SEED=${c.id} npx ava test/reencode.test.mjs)\n${why}\nhistory:\n  ${history.join('\n  ')}`);
  }
  t.log(`${seeds.length} cases in ${Date.now() - started} ms`);
  if (tally.size > 0) t.log([...tally].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', '));
  t.is(failures.length, 0, `${failures.length} of ${seeds.length} cases failed: ${failures.slice(0, 20).map((f) => f.c.id).join(' ')}`);
}

// ---------------------------------------------------------------------------------------------
// The two trees of one blob, and the comparison of their encodes

const open = (blob) => openBlob(sourceFromBuffer(blob));
const sha = (b) => createHash('sha256').update(b).digest('hex');

/** Both trees over `blob`; `hash` lets the round check that nothing wrote into the blob. */
function sidesOf(blob) {
  return { full: decodeTree(open(blob)), lazy: openLazyTree(blob), blob, hash: sha(blob) };
}

function encodeOutcome(root, opts) {
  const warnings = [];
  try {
    return { blob: encodeBlob(root, { ...opts, warn: (msg) => warnings.push(msg) }), warnings };
  } catch (err) {
    return { err, warnings };
  }
}

/**
 * Encode both trees with `opts` and require the same outcome: identical bytes (and the same
 * clamped-mtime warnings), or EncodeError from both. Returns the full outcome.
 */
function check(c, full, lazy, opts, label) {
  const want = encodeOutcome(full, opts);
  const got = encodeOutcome(lazy, opts);
  if (want.err) {
    if (!(want.err instanceof EncodeError)) c.fail(`${label}: the full encode threw a non-EncodeError (a bug of the test?): ${want.err.stack}`);
    if (!got.err) c.fail(`${label}: the full encode threw EncodeError "${want.err.message}" but the lazy encode returned a blob`);
    if (!(got.err instanceof EncodeError)) {
      c.fail(`${label}: the full encode threw EncodeError "${want.err.message}", the lazy one ${got.err.stack ?? got.err}`);
    }
    c.log(`${label}: both threw EncodeError (full: ${want.err.message} | lazy: ${got.err.message})`);
    return want;
  }
  if (got.err) c.fail(`${label}: the full encode succeeded, the lazy encode threw ${got.err.stack ?? got.err}`);
  if (!got.blob.equals(want.blob)) c.fail(`${label}: the lazy re-encode differs from the full encode\n${explain(want.blob, got.blob)}`);
  if (JSON.stringify(got.warnings) !== JSON.stringify(want.warnings)) {
    c.fail(`${label}: same bytes but different warnings: full ${JSON.stringify(want.warnings)}, lazy ${JSON.stringify(got.warnings)}`);
  }
  return want;
}

/** Where two blobs first differ: header field or section, and the first differing dump lines. */
function explain(want, got) {
  const lines = [`sizes: full ${want.length}, lazy ${got.length}`];
  // the CRCs (header, section table) differ whenever anything does: look past them
  const skip = (at) => (at >= 8 && at < 12) || (at >= 128 && at < 512 && (at - 128) % 32 >= 24 && (at - 128) % 32 < 28);
  let at = 0;
  while (at < want.length && at < got.length && (want[at] === got[at] || skip(at))) at++;
  lines.push(`first difference at byte ${at}: ${whereIn(want, at)} (full 0x${want[at]?.toString(16)}, lazy 0x${got[at]?.toString(16)})`);
  const a = dumpLines(want);
  const b = dumpLines(got);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  if (i === a.length && i === b.length) {
    lines.push('the dumps are equal (the difference is in placement, order or padding)');
  } else {
    // a dump line is "PATH ino type perm uid gid nlink size mtime payload xattrs"; paths can be long
    const cut = (s) => {
      if (s === undefined) return '(none)';
      const [p, ...rest] = s.split(' ');
      const line = `${p.length > 60 ? p.slice(0, 25) + '...' + p.slice(-30) : p} ${rest.join(' ')}`;
      return line.length > 300 ? line.slice(0, 300) + '...' : line;
    };
    for (let k = Math.max(0, i - 1); k < i + 3; k++) lines.push(`  dump line ${k}:\n    full: ${cut(a[k])}\n    lazy: ${cut(b[k])}`);
  }
  return lines.join('\n');
}

const HEADER_FIELDS = [[0, 'magic'], [8, 'header_crc'], [12, 'version'], [16, 'header_size'], [20, 'block_size_log2'], [24, 'features'], [36, 'inline_threshold'], [40, 'blob_size'], [48, 'root_ino'], [56, 'inode_count'], [64, 'dirent_count'], [72, 'data_bytes'], [80, 'reserved']];

function whereIn(blob, at) {
  if (at < 128) return `header field ${HEADER_FIELDS.findLast(([off]) => off <= at)[1]}`;
  if (at < 512) return `section table entry ${SECTION_NAMES[Math.floor((at - 128) / 32)] ?? Math.floor((at - 128) / 32)}, byte ${(at - 128) % 32}`;
  if (at < 4096) return 'header page padding';
  for (let id = 0; id < SECTION_NAMES.length; id++) {
    const e = 128 + id * 32;
    const off = Number(blob.readBigUInt64LE(e));
    const size = Number(blob.readBigUInt64LE(e + 8));
    if (at >= off && at < off + Math.ceil(size / 4096) * 4096) return `${SECTION_NAMES[id]} byte ${at - off} of ${size}`;
  }
  return 'past the sections';
}

function dumpLines(blob) {
  try {
    return dumpBlob(open(blob)).split('\n');
  } catch (err) {
    return [`(no dump: ${err.message})`];
  }
}

/** Apply one mutation to both trees; a throw on the full tree is a bug of the test. */
function applyBoth(c, sides, m, others) {
  try {
    applyMutation(sides.full, m, { other: () => others.full });
  } catch (err) {
    c.fail(`the mutation failed on the full tree (a bug of the test): ${err.stack}`);
  }
  try {
    applyMutation(sides.lazy, m, { other: () => others.lazy });
  } catch (err) {
    c.fail(`the mutation worked on the full tree but threw on the lazy tree: ${err.stack}`);
  }
}

function checkUnchanged(c, sides, what) {
  if (sha(sides.blob) !== sides.hash) c.fail(`${what} changed while a lazy tree over it was mutated and encoded`);
}

const inodeCount = (blob) => Number(blob.readBigUInt64LE(56));
const thresholdOf = (blob) => blob.readUInt32LE(36);

function pickThreshold(r) {
  return r.choose([[45, 64], [15, 0], [15, 4096], [15, r.range(1, 200)], [10, r.range(200, 4095)]]);
}

/** Mostly the parent's threshold; sometimes a higher one, rarely a lower one (may not fit). */
function nextThreshold(r, t) {
  return r.choose([[80, t], [t < 4096 ? 13 : 0, r.range(t + 1, 4096)], [t > 0 ? 7 : 0, r.range(0, t - 1)]]);
}

/** A random tree and its blob. */
function baseBlob(c, v) {
  const root = randomTree(v);
  const blob = encodeBlob(root, { inlineThreshold: v.threshold });
  c.log(`base: threshold ${v.threshold}, ${inodeCount(blob)} inodes, ${blob.length} bytes`);
  return blob;
}

/** A second pair of trees to graft nodes from: over the parent blob itself, or another one. */
function otherSides(c, v, parent) {
  if (c.r.chance(0.5)) {
    c.log('  grafts come from a second pair of trees over the parent blob');
    return sidesOf(parent);
  }
  const blob = encodeBlob(randomTree(v, c.r.pick(['tiny', 'small'])), { inlineThreshold: v.threshold });
  c.log(`  grafts come from another blob of ${inodeCount(blob)} inodes`);
  return sidesOf(blob);
}

/**
 * One round: both trees over `parent`, `n` random mutations (with encodes in between now and
 * then), the final encodes compared. With `invalid`, one invalid mutation comes last and both
 * encodes must throw. Returns the full outcome ({blob} or {err}).
 */
function mutationRound(c, v, parent, { label, n, invalid = false, graft = c.r.chance(0.3) }) {
  const r = c.r;
  const sides = sidesOf(parent);
  const others = graft ? otherSides(c, v, parent) : null;
  const opts = { inlineThreshold: v.threshold };
  const unchanged = () => {
    checkUnchanged(c, sides, 'the parent blob');
    if (others) checkUnchanged(c, others, 'the blob grafts came from');
  };
  for (let i = 1; i <= n; i++) {
    const m = chooseMutation(v, sides.full, { other: others?.full });
    c.log(`${label} #${i}: ${describeMutation(m)}`);
    c.count(kindOf(m));
    applyBoth(c, sides, m, others);
    // encode in the middle and keep mutating the same trees: an encode must leave a lazy tree usable
    if (r.chance(0.12)) {
      const mid = check(c, sides.full, sides.lazy, opts, `${label} after #${i}`);
      c.count('encode in the middle of a round');
      if (mid.err) {
        unchanged();
        return mid;
      }
    }
  }
  if (invalid) {
    const m = chooseMutation(v, sides.full, { invalid: true });
    c.log(`${label} #${n + 1} (invalid): ${describeMutation(m)}`);
    c.count(`invalid ${m.invalid}`);
    applyBoth(c, sides, m, others);
    const out = check(c, sides.full, sides.lazy, opts, `${label} after the invalid mutation`);
    if (!out.err) c.fail(`${label}: the invalid mutation "${m.invalid}" did not make the full encode throw (a bug of the test)`);
    unchanged();
    return out;
  }
  const out = check(c, sides.full, sides.lazy, opts, label);
  c.count(out.err ? 'round: both threw' : 'round: same bytes');
  if (!out.err) {
    // the encoder is canonical: an unchanged tree encodes to its parent blob
    if (n === 0 && v.threshold === thresholdOf(parent) && !out.blob.equals(parent)) c.fail(`${label}: no mutation, yet the full encode differs from the parent`);
    if (r.chance(0.2)) {
      // the same lazy tree encoded again, as is and with another threshold
      const again = encodeOutcome(sides.lazy, opts);
      if (again.err || !again.blob.equals(out.blob)) c.fail(`${label}: a second encode of the same lazy tree differs: ${again.err?.stack ?? explain(out.blob, again.blob)}`);
      check(c, sides.full, sides.lazy, { inlineThreshold: pickThreshold(r) }, `${label} re-encoded with another threshold`);
    }
  }
  unchanged();
  return out;
}

const mutationCount = (r) => r.choose([[8, 0], [45, r.range(1, 3)], [40, r.range(4, 12)], [7, r.range(20, 40)]]);

// ---------------------------------------------------------------------------------------------
// Families

test('an untouched or only read lazy tree re-encodes to its parent blob byte for byte', async (t) => {
  await runFamily(t, 'untouched', 0x1000_0000, 80, (c) => {
    const r = c.r;
    const v = new Values(r, pickThreshold(r));
    const parent = baseBlob(c, v);
    const opts = { inlineThreshold: v.threshold };
    const lazy = openLazyTree(parent);
    const hash = sha(parent);
    const same = (label) => {
      const out = encodeOutcome(lazy, opts);
      if (out.err) c.fail(`${label}: the lazy encode threw ${out.err.stack}`);
      if (!out.blob.equals(parent)) c.fail(`${label}: differs from the parent blob\n${explain(parent, out.blob)}`);
    };
    same('nothing read');
    // read some directories (or all), then encode again: reading changes nothing
    const full = decodeTree(open(parent));
    const reads = r.range(1, 4);
    for (let i = 0; i < reads; i++) {
      const dirs = survey(full).dirs;
      const m = r.chance(0.2) ? { kind: 'touch', dirs: [], all: true } : { kind: 'touch', dirs: dirs.filter(() => r.chance(0.3)).map((d) => d.path), all: false };
      c.log(`read ${describeMutation(m)}`);
      applyMutation(lazy, m);
      same(`after read ${i + 1}`);
    }
    // and with another threshold: the header changes, or (lower than an inline file) both throw
    check(c, full, lazy, { inlineThreshold: pickThreshold(r) }, 'another threshold');
    if (sha(parent) !== hash) c.fail('the parent blob changed');
  });
});

test('random mutation chains: the lazy re-encode equals the full encode at every round', async (t) => {
  await runFamily(t, 'chain', 0x2000_0000, 320, (c) => {
    const r = c.r;
    const v = new Values(r, pickThreshold(r));
    let parent = baseBlob(c, v);
    const rounds = r.range(1, 4);
    for (let k = 1; k <= rounds; k++) {
      v.threshold = nextThreshold(r, v.threshold);
      c.log(`round ${k}: threshold ${v.threshold}`);
      const out = mutationRound(c, v, parent, { label: `round ${k}`, n: mutationCount(r) });
      if (out.err) return; // both threw (a threshold below an inline file): the chain ends
      parent = out.blob;
    }
  });
});

test('invalid mutations make both encodes throw EncodeError', async (t) => {
  await runFamily(t, 'invalid', 0x3000_0000, 120, (c) => {
    const r = c.r;
    const v = new Values(r, pickThreshold(r));
    let parent = baseBlob(c, v);
    if (r.chance(0.3)) {
      const out = mutationRound(c, v, parent, { label: 'round 1', n: r.range(1, 6) });
      if (out.err) return;
      parent = out.blob;
    }
    const variant = r.choose([[80, 'mutation'], [10, 'options'], [10, 'threshold']]);
    if (variant === 'mutation') {
      mutationRound(c, v, parent, { label: 'last round', n: r.range(0, 4), invalid: true });
      return;
    }
    const sides = sidesOf(parent);
    if (r.chance(0.5)) applyMutation(sides.lazy, { kind: 'touch', dirs: [], all: r.chance(0.5) });
    let opts;
    if (variant === 'options') {
      opts = { inlineThreshold: r.pick([4097, -1, 1.5, NaN, '64']) };
    } else {
      // below the largest inline file, wherever it is (unread directories too)
      const inline = survey(sides.full).entries.map((e) => e.node.inline?.length ?? 0);
      const largest = Math.max(0, ...inline);
      if (largest === 0) return;
      opts = { inlineThreshold: r.range(0, largest - 1) };
    }
    c.log(`encode with options ${JSON.stringify(opts)}`);
    c.count(`invalid ${variant}`);
    const out = check(c, sides.full, sides.lazy, opts, 'invalid options');
    if (!out.err) c.fail('the full encode did not throw (a bug of the test)');
  });
});

// ---------------------------------------------------------------------------------------------
// Layers: tar streams applied with compiler/layers.ts to both trees

/** PAX extended header: records of [key, value (binary string)]. */
function pax(records) {
  const body = Buffer.concat(records.map(([k, val]) => {
    const rest = Buffer.from(` ${k}=${val}\n`, 'latin1');
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len++;
    return Buffer.concat([Buffer.from(String(len), 'latin1'), rest]);
  }));
  return Buffer.concat([ustarHeader({ name: 'PaxHeader', typeflag: 'x', size: body.length }), pad(body)]);
}

const pad = (b) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

/** One tar entry; a path or link name ustar cannot hold goes in a PAX record. */
function tarEntry({ name, typeflag, body = Buffer.alloc(0), linkname = '', mode = 0o644, mtime = 1_700_000_000, records = [] }) {
  const recs = [...records];
  const plain = (s) => s.length <= 100 && /^[\x20-\x7e]*$/.test(s);
  if (!plain(name)) recs.push(['path', name]);
  if (!plain(linkname)) recs.push(['linkpath', linkname]);
  return Buffer.concat([
    recs.length > 0 ? pax(recs) : Buffer.alloc(0),
    ustarHeader({ name: plain(name) ? name : 'long', typeflag, size: body.length, mode, mtime, linkname: plain(linkname) ? linkname : 'long' }),
    pad(body),
  ]);
}

/**
 * A random layer over the tree `root` (the full tree): whiteouts of files, subtrees and single
 * hardlinks; opaque markers; hardlinks to the parent's files; directory entries over
 * directories (new metadata, xattrs from PAX) and over files; files, symlinks, devices and fifos
 * new or over what was there; missing parents. Returns { tar, lines }.
 */
function randomLayer(v, root) {
  const r = v.r;
  const s = survey(root);
  const join = (p) => p.join('/');
  const entries = [];
  const lines = [];
  const meta = () => {
    const records = [];
    if (r.chance(0.3)) records.push(['mtime', `${r.range(0, 2 ** 33 - 1)}.${String(r.int(1e9)).padStart(9, '0')}`]);
    if (r.chance(0.2)) records.push([`SCHILY.xattr.${r.pick(['user.a', 'user.b', 'security.capability', 'trusted.x'])}`, r.pick(['', 'y', 'value'])]);
    return { mode: v.perm(), mtime: r.range(0, 2 ** 33 - 1), records };
  };
  const newPath = () => {
    const d = r.pick(s.dirs);
    const extra = r.chance(0.2) ? [v.plainName(), v.plainName()] : [];
    return [...d.path, ...extra, v.freshName(d.node.children)];
  };
  const body = () => r.build([[15, () => Buffer.alloc(0)], [v.threshold > 0 ? 45 : 0, () => v.content()], [40, () => r.bytes(v.threshold + r.range(1, 9000))]]);
  const n = r.range(1, 14);
  // a whiteout name is 4 bytes longer than what it hides, and must stay within 255
  const hideable = s.entries.filter((x) => x.name.length <= 251);
  const groups = s.groups.filter((g) => g.some((p) => p[p.length - 1].length <= 251));
  for (let i = 0; i < n; i++) {
    const e = hideable.length > 0 ? r.pick(hideable) : null;
    const file = s.entries.filter((x) => !isDir(x.node));
    const kind = r.choose([
      [e ? 12 : 0, 'whiteout'], [groups.length > 0 ? 4 : 0, 'whiteout-link'], [6, 'opaque'], [file.length > 0 ? 10 : 0, 'hardlink'],
      [10, 'dir-meta'], [e ? 4 : 0, 'over'], [18, 'file'], [5, 'symlink'], [3, 'device'], [2, 'fifo'], [2, 'root-meta'],
    ]);
    let ent;
    switch (kind) {
      case 'whiteout': ent = { name: join([...e.path.slice(0, -1), '.wh.' + e.name]), typeflag: '0' }; break;
      case 'whiteout-link': {
        const g = r.pick(groups).filter((q) => q[q.length - 1].length <= 251);
        const p = r.chance(0.5) ? g[0] : r.pick(g);
        ent = { name: join([...p.slice(0, -1), '.wh.' + p[p.length - 1]]), typeflag: '0' };
        break;
      }
      case 'opaque': ent = { name: join([...r.pick(s.dirs).path, '.wh..wh..opq']), typeflag: '0' }; break;
      case 'hardlink': ent = { name: join(newPath()), typeflag: '1', linkname: join(r.pick(file).path) }; break;
      case 'dir-meta': {
        const d = s.dirs.length > 1 ? r.pick(s.dirs.slice(1)) : null;
        ent = d ? { name: join(d.path) + '/', typeflag: '5', ...meta() } : { name: join(newPath()) + '/', typeflag: '5', ...meta() };
        break;
      }
      case 'root-meta': ent = { name: './', typeflag: '5', ...meta() }; break;
      case 'over':
        ent = isDir(e.node) ? { name: join(e.path), typeflag: '0', body: body(), ...meta() } : { name: join(e.path) + '/', typeflag: '5', ...meta() };
        break;
      case 'file': ent = { name: join(r.chance(0.2) && file.length > 0 ? r.pick(file).path : newPath()), typeflag: '0', body: body(), ...meta() }; break;
      case 'symlink': ent = { name: join(newPath()), typeflag: '2', linkname: v.target().slice(0, 300).replace(/\0/g, 'x') || 'x', ...meta() }; break;
      case 'device': ent = { name: join(newPath()), typeflag: r.pick(['3', '4']), ...meta() }; ent.records.push(['SCHILY.devmajor', String(r.int(4096))], ['SCHILY.devminor', String(r.int(1 << 20))]); break;
      case 'fifo': ent = { name: join(newPath()), typeflag: '6', ...meta() }; break;
    }
    entries.push({ kind, ent });
  }
  // hardlinks usually first, so their targets still exist when they are read (else both refuse)
  if (r.chance(0.9)) entries.sort((a, b) => (a.kind === 'hardlink' ? 0 : 1) - (b.kind === 'hardlink' ? 0 : 1));
  for (const { kind, ent } of entries) {
    lines.push(`${kind} ${showPath(ent.name.split('/').filter(Boolean))}${ent.linkname ? ' -> ' + showPath(ent.linkname.split('/')) : ''}${ent.body ? ` (${ent.body.length} bytes)` : ''}`);
  }
  return { tar: Buffer.concat([...entries.map(({ ent }) => tarEntry(ent)), Buffer.alloc(1024)]), lines };
}

test('layers applied with applyLayerStream to both trees encode the same', async (t) => {
  await runFamily(t, 'layer', 0x4000_0000, 50, async (c) => {
    const r = c.r;
    const v = new Values(r, pickThreshold(r));
    let parent = baseBlob(c, v);
    const rounds = r.range(1, 4);
    for (let k = 1; k <= rounds; k++) {
      const sides = sidesOf(parent);
      const { tar, lines } = randomLayer(v, sides.full);
      c.log(`layer ${k}:\n    ${lines.join('\n    ')}`);
      for (const line of lines) c.count(`tar ${line.split(' ')[0]}`);
      const errs = [];
      for (const root of [sides.full, sides.lazy]) {
        try {
          // store null: contents are hashed, nothing is written
          await applyLayerStream(root, Readable.from([tar]), { layer: `layer${k}`, inlineThreshold: v.threshold, store: null, stats: { entries: 0 } });
          errs.push(null);
        } catch (err) {
          errs.push(err);
        }
      }
      if (errs[0] || errs[1]) {
        if (!(errs[0] instanceof LayerError) || !(errs[1] instanceof LayerError) || errs[0].message !== errs[1].message) {
          c.fail(`layer ${k}: applyLayerStream outcomes differ: full ${errs[0]?.stack ?? 'ok'}, lazy ${errs[1]?.stack ?? 'ok'}`);
        }
        c.log(`layer ${k}: both refused: ${errs[0].message}`);
        c.count('layer refused by both');
        return;
      }
      // sometimes a few changes through the API on top of the layer
      const extra = r.chance(0.3) ? r.range(1, 4) : 0;
      for (let i = 1; i <= extra; i++) {
        const m = chooseMutation(v, sides.full);
        c.log(`layer ${k} then #${i}: ${describeMutation(m)}`);
        applyBoth(c, sides, m, null);
      }
      const out = check(c, sides.full, sides.lazy, { inlineThreshold: v.threshold }, `layer ${k}`);
      checkUnchanged(c, sides, 'the parent blob');
      if (out.err) return;
      parent = out.blob;
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Overlay uppers: real directories (mknod whiteouts, trusted.overlay.opaque) applied with
// compiler/overlaydiff.ts to both trees. Needs root for mknod and trusted.* xattrs. Mounts nothing.

const isRoot = process.getuid?.() === 0;
const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * Fill `upper` with a random overlayfs diff against `root` (the full tree): whiteouts (0/0
 * character devices), opaque directories, new and replacing files, directories over files and
 * files over directories, hardlinks inside the upper, symlinks, fifos, devices, xattrs
 * (trusted.overlay.* bookkeeping too), new metadata for merged directories. Only paths of
 * printable names are used (they go through argv). Returns log lines.
 */
function randomUpper(v, root, upper) {
  const r = v.r;
  const s = survey(root);
  const plain = (p) => p.every(isPlainName);
  const entries = s.entries.filter((e) => plain(e.path));
  const dirs = s.dirs.filter((d) => plain(d.path));
  const lines = [];
  const abs = (p) => path.join(upper, ...p);
  const exists = (p) => {
    try {
      fs.lstatSync(abs(p));
      return true;
    } catch {
      return false;
    }
  };
  const setMeta = (p, { link = false } = {}) => {
    if (!link) fs.chmodSync(abs(p), v.perm());
    fs.lchownSync(abs(p), v.id() % 70000, v.id() % 70000);
    const sec = r.range(0, 2 ** 31) + r.int(1000) / 1000;
    (link ? fs.lutimesSync : fs.utimesSync)(abs(p), sec, sec);
  };
  /** The directories of `p` in the upper, made as needed; false if a non-directory is in the way. */
  const parents = (p) => {
    for (let i = 1; i < p.length; i++) {
      const q = p.slice(0, i);
      if (!exists(q)) {
        fs.mkdirSync(abs(q));
        setMeta(q);
      } else if (!fs.lstatSync(abs(q)).isDirectory()) {
        return false;
      }
    }
    return !exists(p);
  };
  const made = [];
  const n = r.range(1, 10);
  for (let i = 0; i < n; i++) {
    const kind = r.choose([
      [entries.length > 0 ? 12 : 0, 'whiteout'], [dirs.length > 1 ? 6 : 0, 'opaque'], [15, 'file'], [entries.length > 0 ? 6 : 0, 'over'],
      [made.length > 0 ? 5 : 0, 'hardlink'], [4, 'symlink'], [3, 'fifo'], [2, 'device'], [dirs.length > 1 ? 5 : 0, 'dir-meta'], [3, 'xattr'],
    ]);
    const fresh = () => {
      const d = r.pick(dirs);
      return [...d.path, ...(r.chance(0.15) ? [v.plainName()] : []), v.freshName(d.node.children, true)];
    };
    let p;
    switch (kind) {
      case 'whiteout':
        p = r.pick(entries).path;
        if (!parents(p)) continue;
        sh('mknod', [abs(p), 'c', '0', '0']);
        break;
      case 'opaque': {
        p = r.pick(dirs.slice(1)).path;
        if (!parents(p)) continue;
        fs.mkdirSync(abs(p));
        setMeta(p);
        sh('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', abs(p)]);
        if (r.chance(0.6)) {
          const q = [...p, v.plainName()];
          fs.writeFileSync(abs(q), r.bytes(r.range(0, v.threshold + 100)));
          made.push(q);
        }
        break;
      }
      case 'file':
      case 'over': {
        const over = kind === 'over' ? r.pick(entries) : null;
        p = over ? over.path : fresh();
        if (!parents(p)) continue;
        if (over && !isDir(over.node) && r.chance(0.5)) {
          fs.mkdirSync(abs(p)); // a directory over a file (a file over a directory below)
          setMeta(p);
          break;
        }
        const size = r.choose([[15, 0], [v.threshold > 0 ? 45 : 0, r.range(1, Math.max(1, v.threshold))], [40, v.threshold + r.range(1, 9000)]]);
        fs.writeFileSync(abs(p), size > 0 && r.chance(0.3) && v.contents.length > 0 ? r.pick(v.contents) : r.bytes(size));
        setMeta(p);
        made.push(p);
        break;
      }
      case 'hardlink': {
        const from = r.pick(made);
        p = fresh();
        if (!exists(from) || !parents(p)) continue;
        fs.linkSync(abs(from), abs(p));
        break;
      }
      case 'symlink':
        p = fresh();
        if (!parents(p)) continue;
        fs.symlinkSync(r.pick(['a', '../x', '/etc/passwd', 'x'.repeat(r.range(1, 200))]), abs(p));
        setMeta(p, { link: true });
        break;
      case 'fifo':
        p = fresh();
        if (!parents(p)) continue;
        sh('mknod', [abs(p), 'p']);
        setMeta(p);
        break;
      case 'device':
        p = fresh();
        if (!parents(p)) continue;
        sh('mknod', [abs(p), r.pick(['c', 'b']), String(r.range(1, 255)), String(r.int(300))]);
        setMeta(p);
        break;
      case 'dir-meta':
        p = r.pick(dirs.slice(1)).path;
        if (!parents(p)) continue;
        fs.mkdirSync(abs(p)); // a merged directory: metadata from the upper, entries from both
        setMeta(p);
        if (r.chance(0.3)) sh('setfattr', ['-n', 'trusted.overlay.impure', '-v', 'y', abs(p)]);
        break;
      case 'xattr': {
        const q = made.length > 0 && r.chance(0.7) ? r.pick(made) : [];
        if (!exists(q) && q.length > 0) continue;
        p = q;
        sh('setfattr', ['-n', r.pick(['user.a', 'user.note', 'trusted.k']), '-v', r.pick(['x', 'yes', '0x00ff']), abs(q)]);
        break;
      }
    }
    lines.push(`${kind} ${showPath(p)}`);
  }
  if (r.chance(0.5)) setMeta([]);
  return lines;
}

test('overlay uppers applied with applyOverlayDiff to both trees encode the same', async (t) => {
  // as every test that builds real uppers (overlaydiff.test.mjs): CI runs as root
  if (!isRoot) {
    t.fail('needs root (mknod, trusted.* xattrs)');
    return;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-reencode-'));
  t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
  let serial = 0;
  await runFamily(t, 'overlay', 0x5000_0000, 8, async (c) => {
    const r = c.r;
    const v = new Values(r, pickThreshold(r));
    let parent = baseBlob(c, v);
    const rounds = r.range(1, 3);
    for (let k = 1; k <= rounds; k++) {
      const sides = sidesOf(parent);
      const upper = path.join(work, `upper${++serial}`);
      fs.mkdirSync(upper);
      const lines = randomUpper(v, sides.full, upper);
      c.log(`upper ${k}:\n    ${lines.join('\n    ')}`);
      for (const line of lines) c.count(`upper ${line.split(' ')[0]}`);
      const errs = [];
      for (const root of [sides.full, sides.lazy]) {
        try {
          await applyOverlayDiff(root, upper, { inlineThreshold: v.threshold, store: null });
          errs.push(null);
        } catch (err) {
          errs.push(err);
        }
      }
      fs.rmSync(upper, { recursive: true, force: true });
      if (errs[0]) c.fail(`upper ${k}: applyOverlayDiff failed on the full tree (a bug of the test): ${errs[0].stack}`);
      if (errs[1]) c.fail(`upper ${k}: applyOverlayDiff worked on the full tree but threw on the lazy tree: ${errs[1].stack}`);
      const out = check(c, sides.full, sides.lazy, { inlineThreshold: v.threshold }, `upper ${k}`);
      checkUnchanged(c, sides, 'the parent blob');
      if (out.err) return;
      parent = out.blob;
    }
  });
});

// Fixed cases the random ones hit rarely, each a script of mutations over one small tree,
// compared after every step.
const fixedNode = (mode, extra = {}) => ({ mode, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra });
const fixedDir = (entries) => fixedNode(0o040755, { children: new Map(entries) });
const fixedLink = (target) => fixedNode(0o120777, { target, size: target.length });

function fixedTree() {
  const f = fixedNode(S_IFREG | 0o644, { size: 5, inline: Buffer.from('hello') });
  const g = fixedNode(S_IFREG | 0o600, { size: 100000, digest: Buffer.alloc(32, 9) });
  const h = fixedNode(S_IFREG | 0o644, { size: 3, inline: Buffer.from('hhh') });
  return fixedDir([
    ['a', fixedDir([['f', f], ['g', g], ['plain', fixedNode(S_IFREG | 0o644)], ['sub', fixedDir([['deep', fixedNode(S_IFREG | 0o644)]])]])],
    ['b', fixedDir([['f2', f], ['g2', g]])],
    ['c', fixedDir([['g3', g]])],
    // h's first link is the last name of a small directory placed mid-page (first fit)
    ['d', fixedDir([['h', h]])],
    ['e', fixedDir([['h2', h]])],
  ]);
}

const FIXED = {
  // f and g are first reached in /a, which none of these opens
  'a hardlink changed and unlinked through an opened directory, its other link in an unopened one': [
    { kind: 'meta', path: ['b', 'f2'], op: 'perm', value: 0o600 },
    { kind: 'delete', path: ['b', 'g2'] },
    { kind: 'meta', path: ['c', 'g3'], op: 'uid', value: 7 },
    { kind: 'move', from: ['c'], dir: ['b'], name: 'c' },
  ],
  'a regular file of the parent made a directory, then given entries': [
    { kind: 'meta', path: ['a', 'plain'], op: 'type', bits: 0o040000 },
    { kind: 'add', dir: ['a', 'plain'], name: 'x', node: fixedLink('x') },
    { kind: 'add', dir: ['a', 'plain'], name: 'y', node: fixedLink('y') },
  ],
  'an unopened directory made an empty file, then a directory again': [
    { kind: 'clear', dir: ['a', 'sub'], how: 'new-map' },
    { kind: 'meta', path: ['a', 'sub'], op: 'type', bits: S_IFREG },
    { kind: 'meta', path: ['a', 'sub'], op: 'type', bits: 0o040000 },
    { kind: 'add', dir: ['a', 'sub'], name: 'z', node: fixedLink('z') },
  ],
  // the clamp warning names h by its first path, /d/h, read from /d's chunk (found by review)
  'an out-of-range mtime set through a second link; the first is in an unopened directory': [
    { kind: 'meta', path: ['e', 'h2'], op: 'mtime', sec: 2 ** 40, nsec: 0 },
  ],
  'children deleted (not set) on an unopened directory': [
    { kind: 'clear', dir: ['a', 'sub'], how: 'delete' },
    { kind: 'clear', dir: ['b'], how: 'delete' },
  ],
};

for (const [title, steps] of Object.entries(FIXED)) {
  test(`fixed: ${title}`, (t) => {
    const blob = encodeBlob(fixedTree(), { inlineThreshold: 64 });
    const c = new Case('fixed', 0);
    const sides = sidesOf(blob);
    for (const m of steps) {
      c.log(describeMutation(m));
      applyBoth(c, sides, m, null);
      const out = check(c, sides.full, sides.lazy, { inlineThreshold: 64 }, `after ${describeMutation(m)}`);
      t.truthy(out.blob, `after ${describeMutation(m)}: ${out.err?.message}`);
    }
    t.is(sha(blob), sides.hash, 'the parent blob is unchanged');
  });
}

// ---------------------------------------------------------------------------------------------
// A hostile parent

// `cfs build --from PARENT` takes a blob from the user, and the re-encoder copies what no
// TreeNode covers without the reader's per-inode checks (only the CRCs, which a hostile blob
// carries right). So: random bytes of a valid parent's INODES or DIRS changed and the CRCs
// resealed. The re-encoder must then throw a BlobError or EncodeError, never anything else (a
// RangeError would mean an unchecked offset); and when the reader accepts the changed parent
// whole (decodeTree), the re-encode must equal the full one, as for any parent.
test('a corrupted parent with valid checksums: the re-encode refuses it or equals the full encode', async (t) => {
  await runFamily(t, 'hostile', 0x6000_0000, 200, (c) => {
    const r = c.r;
    const v = new Values(r, pickThreshold(r));
    const blob = Buffer.from(baseBlob(c, v));
    const opts = { inlineThreshold: v.threshold };
    const section = (id) => [Number(blob.readBigUInt64LE(128 + id * 32)), Number(blob.readBigUInt64LE(128 + id * 32 + 8))];
    const flips = r.range(1, 4);
    for (let k = 0; k < flips; k++) {
      // mostly INODES and DIRS (copied raw); DIGESTS (a reader does not check their order),
      // DATA and the xattr sections (decoded) now and then
      const [off, size] = section(r.choose([[45, 0], [35, 1], [8, 3], [4, 2], [4, 4], [4, 5]]));
      if (size === 0) continue;
      const at = off + r.int(size);
      const value = r.chance(0.5) ? r.int(256) : [0, 1, 0xff, 0x40, 0x80][r.int(5)];
      c.log(`  byte ${at} (${at - off} into the section): 0x${blob[at].toString(16)} -> 0x${value.toString(16)}`);
      blob[at] = value;
    }
    reseal(blob);
    let fullOut;
    try {
      fullOut = { blob: encodeBlob(decodeTree(open(blob)), opts) };
    } catch (err) {
      fullOut = { err };
    }
    // as `cfs build --from` opens a parent it did not write: `verify` (CRCs, and names checked
    // before a directory is copied); some cases also open directories before the encode
    const lazy = (strict) => {
      try {
        const root = openLazyTree(blob, { verify: strict });
        if (r.chance(0.3)) for (const child of root.children.values()) if (child.children && r.chance(0.5)) void child.children.size;
        return { blob: encodeBlob(root, opts) };
      } catch (err) {
        return { err };
      }
    };
    for (const strict of [true, false]) {
      const lazyOut = lazy(strict);
      if (lazyOut.err && !(lazyOut.err.name === 'BlobError' || lazyOut.err instanceof EncodeError)) {
        c.fail(`the lazy encode (verify ${strict}) threw ${lazyOut.err.stack}`);
      }
      if (fullOut.blob && !lazyOut.blob) c.fail(`the reader accepts the parent but the lazy encode (verify ${strict}) threw ${lazyOut.err.message}`);
      if (fullOut.blob && !lazyOut.blob.equals(fullOut.blob)) c.fail(`the reader accepts the parent, the re-encodes differ (verify ${strict})\n${explain(fullOut.blob, lazyOut.blob)}`);
      if (!fullOut.blob && lazyOut.blob) {
        // verify: what a reader refuses is never copied into a new blob
        if (strict) {
          try {
            decodeTree(open(lazyOut.blob));
          } catch (err) {
            c.fail(`with verify, the re-encode copied what the reader refuses: ${err.message}`);
          }
        }
        c.count(`verify ${strict}: refused by the reader, the re-encode gave a blob`);
      } else {
        c.count(`verify ${strict}: ${fullOut.blob ? 'parent still valid' : 'refused by both'}`);
      }
    }
  });
});

/** Recompute the section and header CRCs (as test/lib/crafted-blobs.mjs). */
function reseal(blob) {
  const { crc32c } = CRC;
  for (let id = 0; id < 6; id++) {
    const off = Number(blob.readBigUInt64LE(128 + id * 32));
    const size = Number(blob.readBigUInt64LE(128 + id * 32 + 8));
    blob.writeUInt32LE(crc32c(blob.subarray(off, off + size)), 128 + id * 32 + 24);
  }
  blob.writeUInt32LE(0, 8);
  blob.writeUInt32LE(crc32c(blob.subarray(0, 512)), 8);
}

// A parent blob corrupt where only a layer's entry reaches it (a directory's names, CRCs valid):
// the error is the parent's (BlobError), and says which layer and entry reached it, rather than
// blaming the layer as a LayerError would.
test('a corrupt parent directory reached by a tar layer: a BlobError naming the layer and entry', async (t) => {
  const { newTree } = await import('../dist/compiler/build.js');
  const ctx = (layer) => ({ layer, inlineThreshold: 64, store: null, stats: { entries: 0 } });
  const base = newTree();
  const entries = [tarEntry({ name: 'd/', typeflag: '5', mode: 0o755 }), ...['a-file', 'b-file'].map((n) => tarEntry({ name: `d/${n}`, typeflag: '0', body: Buffer.from(`content of ${n}`.toUpperCase()) }))];
  await applyLayerStream(base, Readable.from([Buffer.concat([...entries, Buffer.alloc(1024)])]), ctx('base'));
  const blob = Buffer.from(encodeBlob(base, { inlineThreshold: 64 }));
  const at = blob.indexOf('b-file');
  t.true(at > 0 && blob.indexOf('b-file', at + 1) < 0);
  blob.write('a', at); // two entries named a-file: names no longer strictly sorted
  reseal(blob);
  t.throws(() => decodeTree(openBlob(sourceFromBuffer(blob))), { name: 'BlobError' });
  const layer = Buffer.concat([tarEntry({ name: 'd/c-file', typeflag: '0', body: Buffer.from('new') }), Buffer.alloc(1024)]);
  for (const verify of [true, false]) {
    const err = await t.throwsAsync(applyLayerStream(openLazyTree(blob, { verify }), Readable.from([layer]), ctx('top')));
    t.is(err.name, 'BlobError', `verify ${verify}: ${err.message}`);
    t.regex(err.message, /^corrupt blob: .* \(reached by layer top, entry d\/c-file\)$/);
  }
});
