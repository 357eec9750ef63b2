// Random mutations of a merged tree, as data: a mutation names what it changes by path (arrays of
// names), so one mutation can be applied to two trees that have the same content but are made
// differently (a fully decoded tree and a lazy one) and must then encode to the same bytes.
//
//   const m = chooseMutation(values, fullRoot, { other });      // looks at the full tree only
//   applyMutation(fullRoot, m, fullSide); applyMutation(lazyRoot, m, lazySide);
//
// Choosing looks only at the full tree, so the lazy tree is touched only where a mutation
// applies: a path is resolved by walking `children` from the root each time, which opens the
// directories on the way and nothing else (a moved directory keeps its entries unread, a
// hardlink's other directories stay closed). Nodes a mutation adds are built fresh for each
// tree from a template (materialize), so the two trees never share an object.
//
// Kinds (VALID below): add a new node (leaf, empty or small directory, a directory of hundreds
// of entries) anywhere, the root included; replace an entry by a node of another type (directory
// by file, file by directory); delete a file, a subtree, one link of a hardlink group, the
// first-reached link of a group; clear a directory (Map.clear, a new Map, undefined); filter its
// entries in place or into a new Map; replace its children wholesale before reading them;
// metadata in place (permission bits, uid, gid, mtime incl. out of range, xattrs replaced, set,
// deleted, cleared, shared with another node's Map, inline content, file to external / inline /
// empty with stale fields, digest new or already in the tree, size, symlink target, rdev, type
// changes that stay valid); bytes of inline/digest/xattr Buffers changed in place; a new hardlink
// to an existing node; move or rename (directories move unread); swap two entries; only read
// directories; a shallow copy ({...node}) under a new name; graft a node from another tree; no-op.
// Mutations marked `invalid` (INVALID below) make the tree unencodable: bad names, bad modes,
// ids, times, file/symlink/device fields, xattrs, non-Map children, non-TreeNode children, a
// hardlinked directory, cycles, a non-directory with entries; encodeBlob must throw EncodeError.

import {
  S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, isDir, isUnder, materialize, resolve, showName, showPath, survey,
} from './randtree.mjs';

const typeBits = (n) => n.mode & S_IFMT;

/** A template of a new node: a leaf, or a directory with a few entries (maybe many). */
function newSpec(v, dirChance = 0.2) {
  const r = v.r;
  if (!r.chance(dirChance)) return v.leaf();
  const d = v.dir();
  const n = r.choose([[40, 0], [45, r.range(1, 4)], [15, r.range(200, 400)]]);
  const leaves = [];
  for (let i = 0; i < n; i++) {
    // a hardlink inside the new subtree: the same template twice stays one node
    const child = leaves.length > 0 && r.chance(0.1) ? r.pick(leaves) : r.chance(0.1) ? v.dir() : v.leaf();
    if ((child.mode & S_IFMT) !== S_IFDIR) leaves.push(child);
    d.children.set(v.freshName(d.children), child);
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// Metadata changes of one node, valid for its type under the current threshold.

function metaOp(v, node, s, isRoot) {
  const r = v.r;
  const type = typeBits(node);
  const ops = [
    [10, 'perm'], [5, 'uid'], [5, 'gid'], [10, 'mtime'], [8, 'xattrs'], [8, 'xattr-set'],
    [node.xattrs?.size > 0 ? 6 : 0, 'xattr-delete'], [node.xattrs?.size > 0 ? 3 : 0, 'xattr-clear'], [3, 'xattrs-share'],
  ];
  if (!isRoot) {
    if (type === S_IFREG) {
      ops.push([v.threshold > 0 ? 10 : 0, 'inline'], [8, 'external'], [node.digest && node.size > 0 ? 8 : 0, 'digest'], [4, 'empty']);
      ops.push([node.digest && node.size > 0 ? 3 : 0, 'size']);
    }
    if (type === S_IFLNK) ops.push([15, 'target']);
    if (type === S_IFCHR || type === S_IFBLK) ops.push([10, 'rdev']);
    ops.push([4, 'type']);
  }
  const op = r.choose(ops);
  switch (op) {
    case 'perm': return { op, value: r.chance(0.1) ? node.mode & 0o7777 : v.perm() };
    case 'uid':
    case 'gid': return { op, value: r.chance(0.1) ? node[op] : v.id() };
    case 'mtime': {
      let [sec, nsec] = v.mtime();
      // out of the format's range: clamped, and encodeBlob warns once naming the first such path
      if (r.chance(0.08)) [sec, nsec] = r.pick([[2 ** 33, 0], [-(2 ** 33) - 1, 5], [1e12, 1], [-1e12, 0]]);
      return { op, sec, nsec };
    }
    case 'xattrs': return { op, entries: [...v.xattrs()] };
    case 'xattr-set': {
      const name = node.xattrs?.size > 0 && r.chance(0.4) ? r.pick([...node.xattrs.keys()]) : v.xattrName();
      return { op, name, value: v.xattrValue() };
    }
    case 'xattr-delete': return { op, name: r.pick([...node.xattrs.keys()]) };
    case 'xattr-clear': return { op };
    // another node's xattrs Map itself: two nodes share one Map from then on
    case 'xattrs-share': return { op, from: r.pick(s.entries)?.path ?? [] };
    case 'inline': return { op, value: v.content() };
    case 'external': return { op, digest: r.chance(0.5) ? existingDigest(v, s) : v.digest(), size: v.externalSize() };
    case 'digest': return { op, digest: r.chance(0.5) ? existingDigest(v, s) : v.digest() };
    case 'size': return { op, value: v.externalSize() };
    // stale: size 0 but the old digest (or an empty inline Buffer) left on the node; ignored
    case 'empty': return { op, stale: r.chance(0.5) };
    case 'target': {
      const contents = v.contents.filter((c) => !c.includes(0) && c.length <= 4095);
      // the bytes of an inline file already in the tree: one DATA item for both
      const value = contents.length > 0 && r.chance(0.3) ? r.pick(contents).toString('latin1') : v.target();
      return { op, value };
    }
    case 'rdev': return { op, major: r.int(4096), minor: r.chance(0.5) ? r.int(256) : r.int(1 << 20) };
    case 'type': {
      // type changes that stay encodable
      const links = s.links.get(node)?.length ?? 0;
      const choices = {
        [S_IFIFO]: [S_IFSOCK, S_IFCHR], [S_IFSOCK]: [S_IFIFO], [S_IFCHR]: [S_IFBLK, S_IFIFO], [S_IFBLK]: [S_IFCHR],
        // a directory becomes a file or fifo only when empty; a file a directory only if not hardlinked
        [S_IFDIR]: (node.children?.size ?? 0) === 0 ? [S_IFREG, S_IFIFO] : [],
        [S_IFREG]: node.size === 0 && links <= 1 ? [S_IFDIR, S_IFIFO] : links <= 1 ? [S_IFDIR] : [],
      }[type] ?? [];
      if (choices.length === 0) return { op: 'perm', value: v.perm() };
      return { op, bits: r.pick(choices) };
    }
  }
  throw new Error(op);
}

function existingDigest(v, s) {
  const files = s.entries.filter((e) => e.node.digest && e.node.size > 0);
  return files.length > 0 ? Buffer.from(v.r.pick(files).node.digest) : v.digest();
}

function applyMeta(root, node, m) {
  // nodes a tar layer made share one read-only empty Map (compiler/tar.ts): those get their own
  if (m.op.startsWith('xattr-') && node.xattrs?.constructor !== Map) node.xattrs = new Map(node.xattrs);
  switch (m.op) {
    case 'perm': node.mode = (node.mode & S_IFMT) | m.value; break;
    case 'uid': node.uid = m.value; break;
    case 'gid': node.gid = m.value; break;
    case 'mtime': node.mtimeSec = m.sec; node.mtimeNsec = m.nsec; break;
    case 'xattrs': node.xattrs = new Map(m.entries.map(([k, val]) => [k, Buffer.from(val)])); break;
    case 'xattr-set': node.xattrs.set(m.name, Buffer.from(m.value)); break;
    case 'xattr-delete': node.xattrs.delete(m.name); break;
    case 'xattr-clear': node.xattrs.clear(); break;
    case 'xattrs-share': node.xattrs = resolve(root, m.from).xattrs; break;
    case 'inline':
      node.inline = Buffer.from(m.value);
      node.size = m.value.length;
      delete node.digest;
      break;
    case 'external':
      delete node.inline;
      node.digest = Buffer.from(m.digest);
      node.size = m.size;
      break;
    case 'digest': node.digest = Buffer.from(m.digest); break;
    case 'size': node.size = m.value; break;
    case 'empty':
      node.size = 0;
      if (!m.stale) {
        delete node.inline;
        delete node.digest;
      } else if (node.inline) {
        node.inline = Buffer.alloc(0);
      }
      break;
    case 'target': node.target = m.value; node.size = m.value.length; break;
    case 'rdev': node.rdevMajor = m.major; node.rdevMinor = m.minor; break;
    case 'type': node.mode = m.bits | (node.mode & 0o7777); break;
    default: throw new Error(`unknown meta op ${m.op}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Valid mutations: [weight, chooser]. A chooser returns a mutation or null (not applicable here).

const pickEntry = (r, s, pred = () => true) => {
  const es = s.entries.filter(pred);
  return es.length > 0 ? r.pick(es) : null;
};
const pickDir = (r, s, pred = () => true) => {
  const ds = s.dirs.filter(pred);
  return ds.length > 0 ? r.pick(ds) : null;
};
const nonDir = (e) => !isDir(e.node);

const VALID = [
  // a new node in an existing directory (the root, a deep one, a big one)
  [14, (v, s) => {
    const d = v.r.chance(0.15) ? s.dirs[0] : pickDir(v.r, s);
    return { kind: 'add', dir: d.path, name: v.freshName(d.node.children), node: newSpec(v) };
  }],
  // an existing name gets a new node: a directory replaced by a file, a file by a directory, ...
  [7, (v, s) => {
    const e = pickEntry(v.r, s);
    if (!e) return null;
    return { kind: 'add', what: 'replace', dir: e.path.slice(0, -1), name: e.name, node: newSpec(v, isDir(e.node) ? 0.15 : 0.6) };
  }],
  [6, (v, s) => {
    const e = pickEntry(v.r, s);
    return e && { kind: 'delete', path: e.path };
  }],
  [3, (v, s) => {
    const e = pickEntry(v.r, s, (x) => isDir(x.node));
    return e && { kind: 'delete', path: e.path, what: 'subtree' };
  }],
  // one link of a hardlink group; the first-reached one moves the inode's number
  [4, (v, s) => s.groups.length > 0 && { kind: 'delete', path: v.r.pick(v.r.pick(s.groups)), what: 'a link' }],
  [4, (v, s) => s.groups.length > 0 && { kind: 'delete', path: v.r.pick(s.groups)[0], what: 'the first-reached link' }],
  // opaque: everything below goes, by three means
  [3, (v, s) => {
    const d = pickDir(v.r, s);
    return { kind: 'clear', dir: d.path, how: v.r.pick(['clear', 'new-map', 'undefined']) };
  }],
  [3, (v, s) => {
    const d = pickDir(v.r, s, (x) => x.node.children?.size > 0);
    if (!d) return null;
    const keep = [...d.node.children.keys()].filter(() => v.r.chance(0.6));
    return { kind: 'filter', dir: d.path, keep, how: v.r.pick(['in-place', 'new-map']) };
  }],
  // children replaced wholesale before anything read them
  [2, (v, s) => {
    const d = pickDir(v.r, s);
    const n = v.r.range(0, 3);
    const entries = [];
    for (let i = 0; i < n; i++) entries.push([v.name(), newSpec(v)]);
    return { kind: 'set-children', dir: d.path, entries: [...new Map(entries)] };
  }],
  [24, (v, s) => {
    const e = v.r.chance(0.08) ? { path: [], node: s.dirs[0].node } : pickEntry(v.r, s);
    if (!e) return null;
    return { kind: 'meta', path: e.path, ...metaOp(v, e.node, s, e.path.length === 0) };
  }],
  // bytes of a node's Buffers changed in place (decodeTree hands out copies)
  [3, (v, s) => {
    const r = v.r;
    const e = pickEntry(r, s, (x) => (x.node.inline?.length > 0 && x.node.size > 0) || (x.node.digest && x.node.size > 0) || [...x.node.xattrs.values()].some((b) => b.length > 0));
    if (!e) return null;
    const n = e.node;
    const what = r.choose([[n.inline?.length > 0 && n.size > 0 ? 1 : 0, 'inline'], [n.digest && n.size > 0 ? 1 : 0, 'digest'], [[...n.xattrs.values()].some((b) => b.length > 0) ? 1 : 0, 'xattr']]);
    const name = what === 'xattr' ? r.pick([...n.xattrs].filter(([, b]) => b.length > 0))[0] : undefined;
    const len = what === 'inline' ? n.inline.length : what === 'digest' ? 32 : n.xattrs.get(name).length;
    return { kind: 'poke', path: e.path, what, name, index: r.int(len), xor: r.range(1, 255) };
  }],
  // a new hardlink: an existing node under another name, often in another directory
  [7, (v, s) => {
    const e = pickEntry(v.r, s, nonDir);
    if (!e) return null;
    const d = v.r.chance(0.2) ? { path: e.path.slice(0, -1), node: e.parent } : pickDir(v.r, s);
    const over = d.node.children?.size > 0 && v.r.chance(0.15) ? v.r.pick([...d.node.children.keys()]) : null;
    return { kind: 'link', from: e.path, dir: d.path, name: over ?? v.freshName(d.node.children) };
  }],
  // rename / move; directories move with their entries unread
  [8, (v, s) => {
    const e = pickEntry(v.r, s, v.r.chance(0.5) ? (x) => isDir(x.node) : () => true);
    if (!e) return null;
    const d = v.r.chance(0.3) ? { path: e.path.slice(0, -1), node: e.parent } : pickDir(v.r, s, (x) => !isUnder(x.path, e.path));
    if (!d) return null;
    const names = [...(d.node.children?.keys() ?? [])].filter((n) => !isUnder(d.path.concat(n), e.path) && !isUnder(e.path, d.path.concat(n)));
    const over = names.length > 0 && v.r.chance(0.2) ? v.r.pick(names) : null;
    return { kind: 'move', from: e.path, dir: d.path, name: over ?? v.freshName(d.node.children) };
  }],
  [2, (v, s) => {
    const d = pickDir(v.r, s, (x) => x.node.children?.size >= 2);
    if (!d) return null;
    const [a, b] = v.r.shuffle([...d.node.children.keys()]);
    return { kind: 'swap', dir: d.path, a, b };
  }],
  // only reading: opens directories of the lazy tree, changes nothing
  [5, (v, s) => {
    const all = v.r.chance(0.1);
    const dirs = all ? [] : Array.from({ length: v.r.range(1, 6) }, () => pickDir(v.r, s).path);
    return { kind: 'touch', dirs, all };
  }],
  // a shallow copy ({...node}) under a new name: a new inode with the same fields
  [3, (v, s) => {
    const r = v.r;
    const e = r.chance(0.3) ? pickDir(r, s) : pickEntry(r, s, nonDir);
    if (!e) return null;
    const d = pickDir(r, s);
    return { kind: 'clone', from: e.path, dir: d.path, name: v.freshName(d.node.children) };
  }],
  [5, (v, s, ctx) => {
    if (!ctx.other) return null;
    const o = survey(ctx.other);
    const e = pickEntry(v.r, o);
    if (!e) return null;
    const d = pickDir(v.r, s);
    return { kind: 'graft', from: e.path, dir: d.path, name: v.freshName(d.node.children) };
  }],
  [2, () => ({ kind: 'noop' })],
];

// ---------------------------------------------------------------------------------------------
// Invalid mutations: each makes encodeBlob throw EncodeError.

const BAD_NAMES = ['a/b', '/', '', '.', '..', 'x\0y', 'n'.repeat(256), 'caf\u00e9\u0100', '\u2603'];

const INVALID = [
  [4, (v, s) => {
    const d = pickDir(v.r, s);
    return { kind: 'add', dir: d.path, name: v.r.pick(BAD_NAMES), node: v.leaf(), invalid: 'bad name' };
  }],
  // an existing entry renamed to a bad name
  [2, (v, s) => {
    const e = pickEntry(v.r, s);
    return e && { kind: 'move', from: e.path, dir: e.path.slice(0, -1), name: v.r.pick(BAD_NAMES), invalid: 'bad name' };
  }],
  [5, (v, s) => {
    const e = v.r.chance(0.1) ? { path: [] } : pickEntry(v.r, s) ?? { path: [] };
    const value = v.r.pick([0, 0o170755, 0o070644, 0x10000 | S_IFREG, S_IFREG + 0.5, -1, NaN, '33188', undefined]);
    return { kind: 'set', path: e.path, field: 'mode', value, invalid: 'bad mode' };
  }],
  [3, (v, s) => {
    const e = pickEntry(v.r, s) ?? { path: [] };
    const field = v.r.pick(['uid', 'gid', 'mtimeSec', 'mtimeNsec']);
    const value = {
      uid: [-1, 2 ** 32, 1.5, undefined], gid: [-1, 2 ** 32, NaN], mtimeSec: [1.5, 2 ** 53, NaN, undefined], mtimeNsec: [1e9, -1, 0.5],
    }[field];
    return { kind: 'set', path: e.path, field, value: v.r.pick(value), invalid: `bad ${field}` };
  }],
  [5, (v, s) => {
    const e = pickEntry(v.r, s, (x) => typeBits(x.node) === S_IFREG);
    if (!e) return null;
    const cases = [
      ['inline length differs from size', { inline: Buffer.from('abc'), size: 4, digest: undefined }],
      ['both inline and digest', { inline: Buffer.from('a'), size: 1, digest: Buffer.alloc(32, 1) }],
      ['neither inline nor digest', { inline: undefined, digest: undefined, size: 10 }],
      ['digest of 31 bytes', { inline: undefined, digest: Buffer.alloc(31, 2), size: 100000 }],
      ['negative size', { size: -1 }],
      ['inline not a Buffer', { inline: 'abc', digest: undefined, size: 3 }],
    ];
    if (v.threshold < 4096) {
      // one byte over the threshold of this encode
      cases.push(['inline over the threshold', { inline: Buffer.alloc(v.threshold + 1, 7), digest: undefined, size: v.threshold + 1 }]);
    }
    const [why, fields] = v.r.pick(cases);
    return { kind: 'assign', path: e.path, fields, invalid: why };
  }],
  [3, (v, s) => {
    const e = pickEntry(v.r, s, (x) => typeBits(x.node) === S_IFLNK);
    if (!e) return null;
    const [why, fields] = v.r.pick([
      ['empty target', { target: '', size: 0 }], ['NUL in target', { target: 'a\0b', size: 3 }],
      ['target of 4096 bytes', { target: 'x'.repeat(4096), size: 4096 }], ['size differs from target', { target: 'abc', size: 4 }],
      ['non-byte target', { target: '\u0100', size: 1 }], ['no target', { target: undefined }],
    ]);
    return { kind: 'assign', path: e.path, fields, invalid: why };
  }],
  [2, (v, s) => {
    const e = pickEntry(v.r, s, (x) => typeBits(x.node) === S_IFCHR || typeBits(x.node) === S_IFBLK);
    if (!e) return null;
    const [why, fields] = v.r.pick([['major 4096', { rdevMajor: 4096 }], ['minor 2^20', { rdevMinor: 1 << 20 }], ['minor -1', { rdevMinor: -1 }]]);
    return { kind: 'assign', path: e.path, fields, invalid: why };
  }],
  [5, (v, s) => {
    const e = v.r.chance(0.1) ? { path: [] } : pickEntry(v.r, s) ?? { path: [] };
    const [why, name, value] = v.r.pick([
      ['empty xattr name', '', Buffer.from('v')],
      ['xattr name of 256 bytes', 'user.' + 'n'.repeat(251), Buffer.alloc(0)],
      ['trusted.overlay.* name of 248 bytes', 'trusted.overlay.' + 'o'.repeat(232), Buffer.alloc(0)],
      ['NUL in xattr name', 'user.a\0b', Buffer.alloc(0)],
      ['non-byte xattr name', 'user.\u0100', Buffer.alloc(0)],
      ['xattr value not a Buffer', 'user.s', 'string'],
      ['xattr value of 65537 bytes', 'user.big', Buffer.alloc(65537)],
    ]);
    return { kind: 'bad-xattr', path: e.path, name, value, invalid: why };
  }],
  [1, (v, s) => {
    const e = v.r.chance(0.2) ? { path: [] } : pickEntry(v.r, s) ?? { path: [] };
    return { kind: 'set', path: e.path, field: 'xattrs', value: 'object', invalid: 'xattrs not a Map' };
  }],
  [2, (v, s) => {
    const d = pickDir(v.r, s);
    return { kind: 'set', path: d.path, field: 'children', value: v.r.pick(['object', 'array']), invalid: 'children not a Map' };
  }],
  [2, (v, s) => {
    const d = pickDir(v.r, s);
    return { kind: 'bad-child', dir: d.path, name: v.freshName(d.node.children), value: v.r.pick(['null', 'object', 'number', 'mode-string']), invalid: 'child not a TreeNode' };
  }],
  // a directory under a second name: a hardlinked directory
  [3, (v, s) => {
    const e = pickEntry(v.r, s, (x) => isDir(x.node));
    if (!e) return null;
    const d = pickDir(v.r, s);
    return { kind: 'link', from: e.path, dir: d.path, name: v.freshName(d.node.children), invalid: 'directory reached twice' };
  }],
  // a cycle: a directory (or the root) placed inside itself or below
  [3, (v, s) => {
    const e = v.r.chance(0.3) ? { path: [], node: s.dirs[0].node } : pickEntry(v.r, s, (x) => isDir(x.node)) ?? { path: [], node: s.dirs[0].node };
    const d = pickDir(v.r, s, (x) => isUnder(x.path, e.path));
    return { kind: 'link', from: e.path, dir: d.path, name: v.freshName(d.node.children), invalid: 'cycle' };
  }],
  // a non-directory with entries
  [2, (v, s) => {
    const e = pickEntry(v.r, s, nonDir);
    return e && { kind: 'set-children', dir: e.path, entries: [[v.name(), v.leaf()]], invalid: 'a non-directory with children' };
  }],
  [2, (v, s) => {
    const e = pickEntry(v.r, s, (x) => isDir(x.node) && x.node.children?.size > 0);
    return e && { kind: 'meta', path: e.path, op: 'type', bits: v.r.pick([S_IFREG, S_IFIFO, S_IFLNK]), invalid: 'a non-empty directory made a non-directory' };
  }],
  [1, (v, s) => {
    const g = [...s.links].find(([node, ps]) => ps.length > 1 && typeBits(node) === S_IFREG)?.[1];
    return g && { kind: 'meta', path: v.r.pick(g), op: 'type', bits: S_IFDIR, invalid: 'a hardlinked file made a directory' };
  }],
];

/**
 * A random mutation of `root` (a full tree). ctx: { invalid: choose an invalid one, other: a
 * second tree whose nodes may be grafted in }.
 */
export function chooseMutation(v, root, ctx = {}) {
  const s = survey(root);
  const table = ctx.invalid ? INVALID : VALID;
  for (;;) {
    const m = v.r.choose(table)(v, s, ctx);
    if (m) return m;
  }
}

/** Put `node` under `name` in the directory at `dirPath` (creating its Map if it has none). */
function place(root, dirPath, name, node) {
  const d = resolve(root, dirPath);
  (d.children ??= new Map()).set(name, node);
}

function detach(root, path) {
  const parent = resolve(root, path.slice(0, -1));
  const node = parent.children.get(path[path.length - 1]);
  parent.children.delete(path[path.length - 1]);
  return node;
}

const BAD_VALUES = { object: () => ({}), array: () => [], null: () => null, number: () => 5, 'mode-string': () => ({ mode: 'x' }) };

/**
 * Apply `m` to the tree at `root`. `side.other()` returns this side's second tree (grafts).
 */
export function applyMutation(root, m, side = {}) {
  switch (m.kind) {
    case 'add':
      place(root, m.dir, m.name, materialize(m.node));
      break;
    case 'delete':
      detach(root, m.path);
      break;
    case 'clear': {
      const d = resolve(root, m.dir);
      if (m.how === 'clear') d.children?.clear();
      else if (m.how === 'delete') delete d.children; // removes a lazy getter without calling its setter
      else d.children = m.how === 'new-map' ? new Map() : undefined;
      break;
    }
    case 'filter': {
      const d = resolve(root, m.dir);
      const keep = new Set(m.keep);
      if (m.how === 'in-place') {
        for (const name of [...d.children.keys()]) if (!keep.has(name)) d.children.delete(name);
      } else {
        const old = d.children;
        d.children = new Map([...old].filter(([name]) => keep.has(name)));
        old.clear(); // the Map the directory had is no longer its children
      }
      break;
    }
    case 'set-children': {
      const seen = new Map();
      resolve(root, m.dir).children = new Map(m.entries.map(([name, spec]) => [name, materialize(spec, seen)]));
      break;
    }
    case 'meta':
      applyMeta(root, resolve(root, m.path), m);
      break;
    case 'poke': {
      const n = resolve(root, m.path);
      const buf = m.what === 'inline' ? n.inline : m.what === 'digest' ? n.digest : n.xattrs.get(m.name);
      buf[m.index] ^= m.xor;
      break;
    }
    case 'link':
      place(root, m.dir, m.name, resolve(root, m.from));
      break;
    case 'move':
      place(root, m.dir, m.name, detach(root, m.from));
      break;
    case 'swap': {
      const d = resolve(root, m.dir);
      const a = d.children.get(m.a);
      d.children.set(m.a, d.children.get(m.b));
      d.children.set(m.b, a);
      break;
    }
    case 'touch': {
      const dirs = m.all ? survey(root).dirs.map((d) => d.path) : m.dirs;
      let sum = 0;
      for (const p of dirs) {
        const d = resolve(root, p);
        for (const [name, child] of d.children ?? []) sum += name.length + child.mode + child.size + (child.xattrs?.size ?? 0);
      }
      return sum;
    }
    case 'clone': {
      const n = resolve(root, m.from);
      const copy = isDir(n) ? { ...n, children: new Map([...(n.children ?? [])].filter(([, c]) => !isDir(c))) } : { ...n };
      place(root, m.dir, m.name, copy);
      break;
    }
    case 'graft':
      place(root, m.dir, m.name, detach(side.other(), m.from));
      break;
    case 'noop':
      break;
    // invalid ones
    case 'set':
      resolve(root, m.path)[m.field] = m.value === 'object' ? {} : m.value === 'array' ? [] : m.value;
      break;
    case 'assign': {
      const n = resolve(root, m.path);
      for (const [k, val] of Object.entries(m.fields)) {
        if (val === undefined) delete n[k];
        else n[k] = Buffer.isBuffer(val) ? Buffer.from(val) : val;
      }
      break;
    }
    case 'bad-xattr': {
      const n = resolve(root, m.path);
      (n.xattrs ??= new Map()).set(m.name, Buffer.isBuffer(m.value) ? Buffer.from(m.value) : m.value);
      break;
    }
    case 'bad-child':
      place(root, m.dir, m.name, BAD_VALUES[m.value]());
      break;
    default:
      throw new Error(`unknown mutation kind ${m.kind}`);
  }
  return undefined;
}

/** One line for a log: paths escaped, Buffers and node templates summarized. */
export function describeMutation(m) {
  const parts = [m.kind];
  for (const [k, val] of Object.entries(m)) {
    if (k === 'kind') continue;
    parts.push(`${k}=${show(k, val)}`);
  }
  return parts.join(' ');
}

function show(key, val) {
  if (val === undefined) return 'undefined';
  if (Buffer.isBuffer(val)) return `<${val.length} bytes ${val.subarray(0, 8).toString('hex')}>`;
  if (['dir', 'path', 'from'].includes(key) && Array.isArray(val)) return showPath(val);
  if (key === 'dirs') return `[${val.map(showPath).join(' ')}]`;
  if (key === 'keep') return `[${val.map(showName).join(' ')}]`;
  if (key === 'node') return summarize(val);
  if (key === 'entries' && Array.isArray(val)) return `[${val.map(([k, x]) => `${showName(String(k))}:${typeof x === 'object' && x?.mode !== undefined ? summarize(x) : show('', x)}`).join(' ')}]`;
  if (typeof val === 'string') return JSON.stringify(showName(val));
  if (typeof val === 'number') return Number.isInteger(val) && val > 7 && key !== 'sec' && key !== 'size' ? `${val} (0${val.toString(8)})` : String(val);
  if (val && typeof val === 'object') return `{${Object.entries(val).map(([k, x]) => `${k}:${show(k, x)}`).join(',')}}`;
  return String(val);
}

function summarize(n) {
  const t = { [S_IFDIR]: 'dir', [S_IFREG]: 'reg', [S_IFLNK]: 'lnk', [S_IFCHR]: 'chr', [S_IFBLK]: 'blk', [S_IFIFO]: 'fifo', [S_IFSOCK]: 'sock' }[typeBits(n)] ?? '?';
  let s = `${t}:0${(n.mode & 0o7777).toString(8)}`;
  if (n.inline) s += ` inline:${n.inline.length}`;
  if (n.digest) s += ` digest:${n.digest.subarray(0, 4).toString('hex')} size:${n.size}`;
  if (n.target !== undefined) s += ` ->${showName(n.target)}`;
  if (n.children) s += ` entries:${n.children.size}`;
  if (n.xattrs?.size) s += ` xattrs:${n.xattrs.size}`;
  return `(${s})`;
}
