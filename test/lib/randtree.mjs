// Random merged trees (format/tree.ts TreeNodes) for differential tests of the encoder, from a
// seeded PRNG so every case is reproducible from its seed.
//
// The trees are built to stress what an encoder shares and orders across the whole tree, since
// that is where an incremental re-encode can go wrong: names sorted in byte order (binary latin1
// names, 255-byte names, names that are prefixes of each other), directories spanning several
// 4096-byte chunks, inline contents and symlink targets that are the same bytes (one DATA item),
// digests repeated by several files and digests sharing their leading bytes (DIGESTS sort), xattr
// sets shared by many inodes (XATTR_INDEX order of first use), hardlinks in several directories
// (inode numbering at first reach, nlink), devices, fifos, sockets, negative and sub-second mtimes.
//
// Values come from pools that keep growing over a case, so later mutations reuse contents,
// digests, targets and xattr sets already in the tree as often as they make new ones.

import { prng } from './prng.mjs';
import {
  S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK,
} from '../../dist/format/tree.js';

export { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK };

export const isDir = (n) => (n.mode & S_IFMT) === S_IFDIR;

/** A seeded random source with the few shapes of choice the generators need. */
export class Rand {
  constructor(seed) {
    this.seed = seed >>> 0;
    this.next = prng(seed);
  }
  /** 0..n-1 */
  int(n) {
    return Math.floor(this.next() * n);
  }
  /** lo..hi inclusive */
  range(lo, hi) {
    return lo + this.int(hi - lo + 1);
  }
  chance(p) {
    return this.next() < p;
  }
  pick(a) {
    return a[this.int(a.length)];
  }
  /** [[weight, value], ...] -> a value; entries of weight 0 are never chosen. */
  choose(table) {
    let total = 0;
    for (const [w] of table) total += w;
    let x = this.next() * total;
    for (const [w, v] of table) {
      if (w <= 0) continue;
      if ((x -= w) < 0) return v;
    }
    return table.findLast(([w]) => w > 0)[1];
  }
  /** choose() over thunks: only the chosen arm is built (and draws from the PRNG). */
  build(table) {
    return this.choose(table)();
  }
  bytes(n) {
    const b = Buffer.alloc(n);
    // four bytes per draw; past 256 bytes a random block repeats (with a counter), which keeps
    // large values cheap to make and still distinct
    let w = 0;
    for (let i = 0; i < Math.min(n, 256); i++) {
      if ((i & 3) === 0) w = Math.floor(this.next() * 2 ** 32);
      b[i] = (w >>> ((i & 3) * 8)) & 0xff;
    }
    for (let i = 256; i < n; i++) b[i] = b[i & 255] ^ (i >> 8);
    return b;
  }
  /** A binary string of n bytes drawn from `alphabet` (a string). */
  str(n, alphabet) {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  shuffle(a) {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
}

const ASCII = 'abcdefghijklmnopqrstuvwxyz0123456789._-+~';
const PLAIN = 'abcdefghijklmnopqrstuvwxyz0123456789_-';
/** Every byte a name may hold: not NUL, not '/'. */
const NAME_BYTES = Array.from({ length: 255 }, (_, i) => String.fromCharCode(i + 1)).filter((c) => c !== '/').join('');
/** Every byte a symlink target may hold (not NUL). */
const TARGET_BYTES = Array.from({ length: 255 }, (_, i) => String.fromCharCode(i + 1)).join('');
const WORDS = ['a', 'b', 'bin', 'lib', 'usr', 'etc', 'share', 'x', 'README', '.hidden', 'a b', '\xc3\xa4', '-', 'Z', 'lib64', 'libc.so.6'];

/** Names the tar and overlay generators can use: printable, no whiteout prefix. */
export const isPlainName = (n) => /^[A-Za-z0-9_.+~-]{1,60}$/.test(n) && n !== '.' && n !== '..' && !n.startsWith('.wh.');

/**
 * Value generators with pools. `threshold` is the inline threshold the values must respect
 * (contents of 1..threshold bytes may be inline); the caller updates it between rounds.
 */
export class Values {
  constructor(rand, threshold) {
    this.r = rand;
    this.threshold = threshold;
    this.contents = []; // inline contents ever made (Buffers)
    this.digests = [];
    this.targets = [];
    this.xattrSets = []; // [[name, Buffer], ...]
  }

  /** A directory entry name (binary string), never ".", "..", or a whiteout. */
  name() {
    const r = this.r;
    for (;;) {
      let n;
      switch (r.choose([[38, 'word'], [25, 'ascii'], [15, 'binary'], [5, 'max'], [8, 'long'], [9, 'variant']])) {
        case 'word': n = r.pick(WORDS) + (r.chance(0.6) ? String(r.int(300)) : ''); break;
        case 'ascii': n = r.str(r.range(1, 24), ASCII); break;
        case 'binary': n = r.str(r.range(1, 40), NAME_BYTES); break;
        case 'max': n = r.str(255, r.chance(0.5) ? ASCII : NAME_BYTES); break; // the longest name there is
        case 'long': n = r.str(r.range(100, 254), ASCII); break;
        // a word and the same word with one more byte: prefixes sort first, 0x01 and 0xff at the ends
        case 'variant': n = r.pick(WORDS) + r.pick(['\x01', '\xff', '\x7f', '.', '0']); break;
      }
      if (n !== '.' && n !== '..' && !n.startsWith('.wh.')) return n;
    }
  }

  /** A short printable name (for tar layers and overlay uppers, whose paths go through argv). */
  plainName() {
    return this.r.chance(0.3) ? this.r.pick(['a', 'b', 'etc', 'lib', 'x', 'new', 'f']) + this.r.int(20) : this.r.str(this.r.range(1, 12), PLAIN);
  }

  /** A name not yet in `children` (a Map or undefined). */
  freshName(children, plain = false) {
    for (;;) {
      const n = plain ? this.plainName() : this.name();
      if (!children?.has(n)) return n;
    }
  }

  /** Inline content of 1..max bytes (max >= 1), often one already used elsewhere. */
  content(max = this.threshold) {
    const r = this.r;
    if (this.contents.length > 0 && r.chance(0.4)) {
      const fits = this.contents.filter((c) => c.length <= max);
      if (fits.length > 0) return Buffer.from(r.pick(fits));
    }
    const len = r.choose([[50, r.range(1, Math.min(max, 16))], [30, r.range(1, Math.min(max, 300))], [15, r.range(1, max)], [5, max]]);
    // text without NUL can also be a symlink target: the two then share one DATA item
    const b = r.chance(0.4) ? Buffer.from(r.str(len, ASCII + '/'), 'latin1') : r.bytes(len);
    this.contents.push(b);
    return Buffer.from(b);
  }

  digest() {
    const r = this.r;
    if (this.digests.length > 0 && r.chance(0.45)) return Buffer.from(r.pick(this.digests));
    let d = r.bytes(32);
    if (this.digests.length > 0 && r.chance(0.15)) {
      // same leading 6+ bytes as another digest: the encoder's digest sort compares these whole
      d = Buffer.from(r.pick(this.digests));
      d[r.range(6, 31)] ^= r.range(1, 255);
    }
    this.digests.push(d);
    return Buffer.from(d);
  }

  /** Size of an external file: usually above the threshold, sometimes huge, sometimes tiny. */
  externalSize() {
    const r = this.r;
    // at most 2^40: the header's data_bytes sums them and must stay an exact double
    return r.choose([[70, this.threshold + r.range(1, 1 << 20)], [15, r.range(1, 2 ** 40)], [10, r.range(1, 64)], [5, 2 ** 40 - r.int(1000)]]);
  }

  target() {
    const r = this.r;
    if (this.targets.length > 0 && r.chance(0.35)) return r.pick(this.targets);
    let t;
    switch (r.choose([[25, 'content'], [40, 'path'], [15, 'binary'], [5, 'max'], [15, 'short']])) {
      case 'content': {
        // the bytes of an inline content: symlink targets and inline files share DATA items
        const c = this.contents.find((b) => !b.includes(0) && b.length <= 4095 && r.chance(0.3));
        t = c ? c.toString('latin1') : '../' + r.str(r.range(1, 30), ASCII);
        break;
      }
      case 'path': t = (r.chance(0.5) ? '/' : '../') + r.str(r.range(1, 60), ASCII + '/'); break;
      case 'binary': t = r.str(r.range(1, 100), TARGET_BYTES); break;
      case 'max': t = r.str(r.chance(0.5) ? 4095 : r.range(3000, 4095), ASCII + '/'); break;
      case 'short': t = r.str(r.range(1, 3), ASCII); break;
    }
    this.targets.push(t);
    return t;
  }

  xattrName() {
    const r = this.r;
    switch (r.int(12)) {
      case 0: return 'user.' + r.pick(WORDS);
      case 1: return 'user.' + r.str(r.range(0, 20), ASCII); // 'user.' alone: an empty suffix
      case 2: return 'trusted.overlay.' + r.pick(['opaque', 'redirect', 'origin', 'metacopy', 'impure']);
      case 3: return 'trusted.overlay.' + r.str(r.range(1, 247 - 16), ASCII); // up to the longest allowed
      case 4: return r.pick(['security.capability', 'security.selinux', 'security.ima']);
      case 5: return r.pick(['system.posix_acl_access', 'system.posix_acl_default', 'system.posix_acl_access.x']);
      case 6: return 'trusted.' + r.str(r.range(1, 10), ASCII);
      case 7: return 'user.' + r.str(r.range(1, 30), NAME_BYTES); // binary
      case 8: return r.str(r.range(1, 20), ASCII); // no known prefix (prefix id 0)
      case 9: return 'user.' + r.str(255 - 5, ASCII); // longest name
      default: return 'user.' + r.pick(['a', 'b', 'mime_type', 'checksum']);
    }
  }

  xattrValue() {
    const r = this.r;
    return r.build([
      [20, () => Buffer.alloc(0)], [15, () => Buffer.from('y')], [62, () => r.bytes(r.range(1, 40))], [2, () => r.bytes(r.range(100, 3000))],
    ]);
  }

  /** A fresh set of 1..n entries (pooled for reuse). */
  newXattrSet() {
    const r = this.r;
    const m = new Map();
    const n = r.choose([[75, r.range(1, 3)], [23, r.range(4, 10)], [2, r.range(20, 60)]]);
    for (let i = 0; i < n; i++) m.set(this.xattrName(), this.xattrValue());
    const set = [...m];
    if (r.chance(0.03)) {
      // a value up to the largest allowed; kept out of the pool, or every encode hashes it for many inodes
      set.push(['user.big' + r.int(10), r.bytes(r.chance(0.5) ? 65536 : r.range(5000, 65536))]);
      return [...new Map(set)];
    }
    this.xattrSets.push(set);
    return set;
  }

  /** An xattrs Map of its own (as decodeTree gives every node), often equal to a pooled set. */
  xattrs() {
    const r = this.r;
    const kind = r.choose([[58, 'none'], [this.xattrSets.length > 0 ? 30 : 0, 'pooled'], [12, 'new']]);
    if (kind === 'none') return new Map();
    const set = kind === 'pooled' ? r.pick(this.xattrSets) : this.newXattrSet();
    return new Map(set.map(([k, v]) => [k, Buffer.from(v)]));
  }

  mtime() {
    const r = this.r;
    const sec = r.choose([
      [50, 1_500_000_000 + r.int(300_000_000)], [10, 0], [15, -r.range(1, 2 ** 31)], [10, r.range(0, 2 ** 33 - 1)],
      [5, -(2 ** 33)], [5, 2 ** 33 - 1], [5, -r.range(1, 2 ** 33)],
    ]);
    const nsec = r.choose([[50, 0], [40, r.int(1_000_000_000)], [10, 999_999_999]]);
    return [sec, nsec];
  }

  perm() {
    return this.r.choose([[35, 0o755], [30, 0o644], [10, 0o600], [25, this.r.int(0o10000)]]);
  }

  id() {
    return this.r.choose([[60, 0], [15, 1000], [5, 65534], [15, this.r.int(2 ** 32)], [5, 0xffffffff]]);
  }

  /** Fields every node has. */
  base(typeBits) {
    const [mtimeSec, mtimeNsec] = this.mtime();
    return { mode: typeBits | this.perm(), uid: this.id(), gid: this.id(), mtimeSec, mtimeNsec, xattrs: this.xattrs(), size: 0 };
  }

  dir() {
    return { ...this.base(S_IFDIR), children: new Map() };
  }

  /** A new non-directory of a random kind valid under the current threshold. */
  leaf(kind = this.leafKind()) {
    const r = this.r;
    switch (kind) {
      case 'empty': return this.base(S_IFREG);
      case 'inline': {
        if (this.threshold < 1) return this.leaf('external');
        const n = this.base(S_IFREG);
        n.inline = this.content();
        n.size = n.inline.length;
        return n;
      }
      case 'external': {
        const n = this.base(S_IFREG);
        n.digest = this.digest();
        n.size = this.externalSize();
        return n;
      }
      case 'symlink': {
        const n = this.base(S_IFLNK);
        n.mode = S_IFLNK | (r.chance(0.8) ? 0o777 : this.perm());
        n.target = this.target();
        n.size = n.target.length;
        return n;
      }
      case 'chr':
      case 'blk': {
        const n = this.base(kind === 'chr' ? S_IFCHR : S_IFBLK);
        n.rdevMajor = r.choose([[60, r.int(256)], [40, r.int(4096)]]);
        n.rdevMinor = r.choose([[60, r.int(256)], [40, r.int(1 << 20)]]);
        return n;
      }
      case 'fifo': return this.base(S_IFIFO);
      case 'sock': return this.base(S_IFSOCK);
    }
    throw new Error(`unknown leaf kind ${kind}`);
  }

  leafKind() {
    return this.r.choose([
      [10, 'empty'], [32, 'inline'], [28, 'external'], [16, 'symlink'], [4, 'chr'], [3, 'blk'], [4, 'fifo'], [3, 'sock'],
    ]);
  }
}

/**
 * A random tree: returns its root. Profiles from a handful of entries to a few thousand, some
 * deep chains, some directories of many entries or long names (several DIRS chunks).
 */
export function randomTree(v, profile = undefined) {
  const r = v.r;
  profile ??= r.choose([[15, 'tiny'], [45, 'small'], [27, 'medium'], [4, 'large'], [9, 'deep']]);
  // medium and up span several INODES pages (85 inodes each)
  const goal = { tiny: r.range(0, 8), small: r.range(10, 80), medium: r.range(80, 300), large: r.range(600, 1500), deep: r.range(30, 100) }[profile];
  const root = v.dir();
  const dirs = [root];
  const leaves = [];
  let count = 0;
  // new entries go to recent directories more often, so trees get deep rather than flat
  const someDir = () => (r.chance(0.5) ? dirs[Math.max(0, dirs.length - 1 - r.int(6))] : r.pick(dirs));
  const put = (dir, node) => {
    dir.children.set(v.freshName(dir.children), node);
    count++;
    if (isDir(node)) dirs.push(node);
    else leaves.push(node);
  };
  if (profile === 'deep') {
    let d = root;
    for (let depth = r.range(10, 40); depth > 0; depth--) {
      const sub = v.dir();
      put(d, sub);
      d = sub;
    }
  }
  while (count < goal) {
    switch (r.choose([[18, 'dir'], [70, 'leaf'], [leaves.length > 0 ? 8 : 0, 'hardlink'], [goal > 30 ? 2 : 0, 'big']])) {
      case 'dir': put(someDir(), v.dir()); break;
      case 'leaf': put(someDir(), v.leaf()); break;
      case 'hardlink': {
        // the same node under another name, in another directory or the same one
        const node = r.pick(leaves);
        const dir = someDir();
        dir.children.set(v.freshName(dir.children), node);
        count++;
        break;
      }
      case 'big': {
        // a directory of more than 4096 bytes of entries: several chunks
        let dir = someDir();
        if (r.chance(0.5)) {
          const fresh = v.dir();
          put(dir, fresh);
          dir = fresh;
        }
        const long = r.chance(0.4);
        for (let i = r.range(long ? 20 : 250, long ? 60 : 450); i > 0; i--) {
          const name = long ? r.str(r.range(150, 255), ASCII) : v.freshName(dir.children);
          if (dir.children.has(name)) continue;
          const node = r.chance(0.1) && leaves.length > 0 ? r.pick(leaves) : r.chance(0.05) ? v.dir() : v.leaf();
          dir.children.set(name, node);
          count++;
          if (isDir(node)) dirs.push(node);
          else leaves.push(node);
        }
        break;
      }
    }
  }
  return root;
}

/**
 * Everything in a tree, breadth-first with children in byte order (the encoder's inode order):
 * entries {path, name, node, parent}, directories {path, node} (the root first), and for each
 * non-directory the paths naming it, in the order the encoder reaches them.
 * Only nodes whose mode says directory are descended into, as the encoder does.
 */
export function survey(root) {
  const entries = [];
  const dirs = [{ path: [], node: root }];
  const links = new Map();
  for (let h = 0; h < dirs.length; h++) {
    const { path, node } = dirs[h];
    const children = node.children;
    if (!children) continue;
    for (const name of [...children.keys()].sort()) {
      const child = children.get(name);
      const p = [...path, name];
      entries.push({ path: p, name, node: child, parent: node });
      if (isDir(child)) dirs.push({ path: p, node: child });
      else if (links.has(child)) links.get(child).push(p);
      else links.set(child, [p]);
    }
  }
  const groups = [...links.values()].filter((ps) => ps.length > 1);
  return { entries, dirs, links, groups };
}

/** The node at `path` (an array of names), walking `children` from the root. */
export function resolve(root, path) {
  let n = root;
  for (let i = 0; i < path.length; i++) {
    const next = n.children?.get(path[i]);
    if (next === undefined) throw new Error(`no entry ${showPath(path.slice(0, i + 1))}`);
    n = next;
  }
  return n;
}

/** True when `a` is `b` or below it. */
export const isUnder = (a, b) => a.length >= b.length && b.every((c, i) => a[i] === c);

/** A path for messages: bytes outside 0x21..0x7e and '\' as \xHH, long names shortened. */
export function showPath(path) {
  if (path.length === 0) return '/';
  return '/' + path.map(showName).join('/');
}

export function showName(name) {
  const s = name.length > 40 ? `${name.slice(0, 16)}...(${name.length} bytes)...${name.slice(-8)}` : name;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += c >= 0x21 && c <= 0x7e && c !== 0x5c ? s[i] : '\\x' + c.toString(16).padStart(2, '0');
  }
  return out;
}

/** A deep copy of a node template (fresh Maps and Buffers; shared subnodes stay shared). */
export function materialize(spec, seen = new Map()) {
  if (seen.has(spec)) return seen.get(spec);
  const n = { ...spec, xattrs: new Map([...spec.xattrs].map(([k, val]) => [k, Buffer.from(val)])) };
  if (spec.inline) n.inline = Buffer.from(spec.inline);
  if (spec.digest) n.digest = Buffer.from(spec.digest);
  seen.set(spec, n);
  if (spec.children) n.children = new Map([...spec.children].map(([k, c]) => [k, materialize(c, seen)]));
  return n;
}
