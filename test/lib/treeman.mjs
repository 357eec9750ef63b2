// treeman: a normalized manifest of a directory tree, and the differences between two of them.
//
//   const m = await treeManifest('/some/root');
//   const diffs = diffManifests(refManifest, m, { labels: ['umoci', 'cfs'] });   // string[]
//
// Command line (for debugging):  node test/lib/treeman.mjs DIR            prints the manifest
//                                node test/lib/treeman.mjs DIR_A DIR_B    prints the differences
//
// Paths are byte strings: every name is read as a Buffer and kept as a latin1 ("binary") string,
// one char per byte, so names that are not UTF-8 survive and JavaScript's string order is the
// byte (memcmp) order. For display they are escaped like `cfs dump` does: bytes outside
// 0x21..0x7e and `\` as \xHH. The root is ".", everything else is relative ("a/b").
//
// Per path: type, mode (07777), uid, gid, size (regular), sha256 (regular), symlink target,
// rdev major:minor (char/block), xattrs (all namespaces, values in hex), mtime, and
// the hardlink group (all paths of the same (dev, ino), for non-directories with nlink > 1).
// Xattrs come from ONE `getfattr -R` run over the whole tree. mtime is "SEC.NSEC9" in the
// struct timespec form (as stat(1) and `cfs dump`): SEC = floor of the time, NSEC in 0..999999999,
// so 0.5 s before the epoch is "-1.500000000".
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);

/** Every field a manifest entry can have, in the order diffs report them. */
export const FIELDS = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'rdev', 'xattrs', 'hardlinks', 'mtime'];

const S_IFMT = 0o170000n;
const TYPES = new Map([
  [0o140000n, 'sock'], [0o120000n, 'lnk'], [0o100000n, 'reg'], [0o060000n, 'blk'],
  [0o040000n, 'dir'], [0o020000n, 'chr'], [0o010000n, 'fifo'],
]);

/** Escape a binary-string path for display (as `cfs dump`). */
export function showPath(p) {
  let s = '';
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    s += c >= 0x21 && c <= 0x7e && c !== 0x5c ? p[i] : '\\x' + c.toString(16).padStart(2, '0');
  }
  return s;
}

/** glibc's gnu_dev_major/minor of a bigint st_rdev. */
export function devMajorMinor(rdev) {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

async function sha256File(file) {
  const h = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk);
  return h.digest('hex');
}

/** Decode getfattr's quoting: `\ooo` octal escapes (it escapes \, newline, CR, and = in names). */
function unquoteGetfattr(s) {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Parse `getfattr -R -h -d -m - -e hex --absolute-names .` output (read as latin1).
 * @returns {Map<string, Map<string, string>>} relative path -> (xattr name -> hex value)
 */
export function parseGetfattr(text) {
  const out = new Map();
  let cur = null;
  for (const line of text.split('\n')) {
    if (line === '') { cur = null; continue; }
    if (line.startsWith('# file: ')) {
      let p = unquoteGetfattr(line.slice(8));
      p = p === '.' ? '.' : p.startsWith('./') ? p.slice(2) : p;
      cur = new Map();
      out.set(p, cur);
      continue;
    }
    if (!cur) throw new Error(`getfattr output: attribute line outside a file block: ${JSON.stringify(line)}`);
    const eq = line.indexOf('=');
    const name = unquoteGetfattr(eq < 0 ? line : line.slice(0, eq));
    const raw = eq < 0 ? '' : line.slice(eq + 1);
    if (raw !== '' && !/^0x[0-9a-f]*$/i.test(raw)) throw new Error(`getfattr output: value of ${name} not hex: ${raw.slice(0, 40)}`);
    cur.set(name, raw.slice(2).toLowerCase());
  }
  return out;
}

/** All xattrs of a tree, by relative path (paths with none are absent). */
export async function treeXattrs(root) {
  let stdout;
  try {
    ({ stdout } = await execFileP('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '.'], {
      cwd: root, encoding: 'buffer', maxBuffer: 1 << 30, env: { ...process.env, LC_ALL: 'C' },
    }));
  } catch (err) {
    // getfattr exits 1 when it could not read something; its output is then incomplete.
    throw new Error(`getfattr -R failed in ${root}: ${err.stderr ? err.stderr.toString() : err.message}`);
  }
  return parseGetfattr(stdout.toString('latin1'));
}

/**
 * Build the manifest of the tree at `root`.
 * @param {string} root
 * @param {{ xattrs?: boolean }} [opts]  xattrs: false skips getfattr (e.g. where it is missing)
 * @returns {Promise<{ root: string, entries: Map<string, object>, hardlinkGroups: string[][] }>}
 */
export async function treeManifest(root, opts = {}) {
  const entries = new Map();
  const byInode = new Map();
  const rootBuf = Buffer.from(path.resolve(root));

  async function visit(rel, abs) {
    const st = await fsp.lstat(abs, { bigint: true });
    const type = TYPES.get(st.mode & S_IFMT);
    if (!type) throw new Error(`unknown file type at ${showPath(rel)}`);
    const sec = st.mtimeNs / 1000000000n - (st.mtimeNs % 1000000000n < 0n ? 1n : 0n);
    const nsec = st.mtimeNs - sec * 1000000000n;
    const e = {
      type,
      mode: (Number(st.mode) & 0o7777).toString(8).padStart(4, '0'),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: `${sec}.${nsec.toString().padStart(9, '0')}`,
      xattrs: {},
    };
    if (type === 'reg') {
      e.size = Number(st.size);
      e.sha256 = await sha256File(abs);
    } else if (type === 'lnk') {
      e.target = (await fsp.readlink(abs, { encoding: 'buffer' })).toString('latin1');
    } else if (type === 'chr' || type === 'blk') {
      e.rdev = devMajorMinor(st.rdev);
    }
    entries.set(rel, e);
    if (type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      if (!byInode.has(key)) byInode.set(key, []);
      byInode.get(key).push(rel);
    }
    if (type === 'dir') {
      const names = await fsp.readdir(abs, { encoding: 'buffer' });
      for (const name of names) {
        const childRel = (rel === '.' ? '' : rel + '/') + name.toString('latin1');
        await visit(childRel, Buffer.concat([abs, Buffer.from('/'), name]));
      }
    }
  }
  await visit('.', rootBuf);

  const hardlinkGroups = [...byInode.values()].filter((g) => g.length > 1).map((g) => g.sort(cmp)).sort((x, y) => cmp(x[0], y[0]));
  for (const g of hardlinkGroups) {
    const key = g.map(showPath).join(' ');
    for (const p of g) entries.get(p).hardlinks = key;
  }
  if (opts.xattrs !== false) {
    for (const [p, xs] of await treeXattrs(root)) {
      const e = entries.get(p);
      if (!e) throw new Error(`getfattr reported ${showPath(p)}, which the walk did not find`);
      e.xattrs = Object.fromEntries([...xs].sort(([a], [b]) => cmp(a, b)));
    }
  }
  const sorted = new Map([...entries].sort(([a], [b]) => cmp(a, b)));
  return { root: path.resolve(root), entries: sorted, hardlinkGroups };
}

function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

function showValue(field, v) {
  if (v === undefined) return '(none)';
  if (field === 'target') return showPath(v);
  if (field === 'xattrs') {
    const parts = Object.entries(v).map(([k, x]) => `${showPath(k)}=${x.length > 48 ? `${x.slice(0, 48)}…(${x.length / 2} bytes)` : x}`);
    return parts.length ? parts.join(',') : '(none)';
  }
  return String(v);
}

/**
 * Differences between two manifests, one line each: paths present on one side only, and for
 * each common path every field that differs (both values shown).
 * @param {object} a  manifest (e.g. the reference)
 * @param {object} b  manifest (e.g. what we extracted)
 * @param {{ labels?: [string, string], ignore?: string[], ignorePaths?: (p: string, e: object) => boolean,
 *           mtimePrecision?: 'ns' | 'us' }} [opts]
 *   ignore: fields not to compare (see FIELDS); ignorePaths: paths to leave out on both sides;
 *   mtimePrecision 'us': compare mtimes truncated to microseconds (nsec digits 7-9 dropped)
 */
export function diffManifests(a, b, opts = {}) {
  const [la, lb] = opts.labels ?? ['a', 'b'];
  const ignore = new Set(opts.ignore ?? []);
  const skip = opts.ignorePaths ?? (() => false);
  const us = opts.mtimePrecision === 'us';
  const out = [];
  const paths = [...new Set([...a.entries.keys(), ...b.entries.keys()])].sort(cmp);
  for (const p of paths) {
    const ea = a.entries.get(p);
    const eb = b.entries.get(p);
    if ((ea && skip(p, ea)) || (eb && skip(p, eb))) continue;
    if (!eb) { out.push(`${showPath(p)}: only in ${la} (${ea.type})`); continue; }
    if (!ea) { out.push(`${showPath(p)}: only in ${lb} (${eb.type})`); continue; }
    for (const f of FIELDS) {
      if (ignore.has(f)) continue;
      let va = f === 'xattrs' ? JSON.stringify(ea.xattrs) : ea[f];
      let vb = f === 'xattrs' ? JSON.stringify(eb.xattrs) : eb[f];
      if (f === 'mtime' && us) { va = va.slice(0, -3); vb = vb.slice(0, -3); }
      if (va !== vb) out.push(`${showPath(p)}: ${f}: ${la}=${showValue(f, ea[f])} ${lb}=${showValue(f, eb[f])}`);
    }
  }
  return out;
}

/** One line per path, for printing or for diffing with other tools. */
export function formatManifest(m) {
  const lines = [];
  for (const [p, e] of m.entries) {
    const bits = [showPath(p), e.type, e.mode, `${e.uid}:${e.gid}`, e.mtime];
    if (e.type === 'reg') bits.push(`size=${e.size}`, `sha256=${e.sha256}`);
    if (e.target !== undefined) bits.push(`-> ${showPath(e.target)}`);
    if (e.rdev) bits.push(`rdev=${e.rdev}`);
    if (Object.keys(e.xattrs).length) bits.push(`xattrs=${showValue('xattrs', e.xattrs)}`);
    if (e.hardlinks) bits.push(`links=[${e.hardlinks}]`);
    lines.push(bits.join(' '));
  }
  return lines.join('\n') + '\n';
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [dirA, dirB] = process.argv.slice(2);
  if (!dirA) { console.error('usage: treeman.mjs DIR [DIR_B]'); process.exit(2); }
  const ma = await treeManifest(dirA);
  if (!dirB) process.stdout.write(formatManifest(ma));
  else {
    const d = diffManifests(ma, await treeManifest(dirB), { labels: [dirA, dirB] });
    for (const line of d) console.log(line);
    console.error(`${d.length} difference(s)`);
    process.exit(d.length ? 1 : 0);
  }
}
