// compiler/overlaydiff.ts (the snapshotter's Commit input: a parent blob + an overlayfs upper ->
// the new blob) against the kernel's own overlayfs: the same upper stacked read-only on the
// parent's tree (`mount -t overlay -o lowerdir=UPPER:LOWER`) is the reference view, and the new
// blob, extracted, must equal it on every field treeman compares. Also checked: only the
// upper's contents are stored (the parent's are not read again), and overlayfs's own xattrs
// never reach the blob. Runs as root (mknod, trusted.* xattrs, mount).
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { applyOverlayDiff } from '../dist/compiler/overlaydiff.js';
import { StoreWriter, objectPath } from '../dist/compiler/store.js';
import { extractBlob } from '../dist/compiler/extract.js';
import { nativeSetTimes } from '../dist/mounter/addon.js';
import { OVERLAY_MOUNT_OPTIONS, OVERLAY_USERNS_MOUNT_OPTIONS } from '../dist/mounter/mount.js';
import { openBlobFile } from '../dist/compiler/inspect.js';
import { newTree } from '../dist/compiler/build.js';
import { encodeBlob } from '../dist/format/encode.js';
import { decodeTree } from '../dist/format/decode.js';
import { verityDigest } from '../dist/format/verity.js';
import { treeManifest, diffManifests } from './lib/treeman.mjs';

const CFS = new URL('../bin/cfs', import.meta.url).pathname;
const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
const T = 1_600_000_000;

function file(p, content, { mode = 0o644, uid = 0, gid = 0, time = T } = {}) {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  fs.chmodSync(p, mode);
  fs.chownSync(p, uid, gid);
  fs.utimesSync(p, time, time);
}
const big = (seed, n) => Buffer.alloc(n, seed);

/** The parent layer, as containerd would have unpacked it. */
function makeLower(dir) {
  file(`${dir}/a`, big('a', 5000));
  file(`${dir}/b`, big('b', 7000), { mode: 0o600, uid: 1000, gid: 1000 });
  file(`${dir}/d/x`, big('x', 300));
  file(`${dir}/d/y`, 'small y');
  file(`${dir}/o/old1`, big('1', 4097));
  file(`${dir}/o/sub/old2`, 'old2');
  file(`${dir}/t`, big('t', 100)); // becomes a directory
  file(`${dir}/u/inside`, 'in u'); // u becomes a symlink
  file(`${dir}/h1`, big('h', 9000), { mode: 0o4755 });
  fs.linkSync(`${dir}/h1`, `${dir}/h2`);
  file(`${dir}/xa`, big('k', 200));
  sh('setfattr', ['-n', 'user.k', '-v', 'lower', `${dir}/xa`]);
  fs.symlinkSync('a', `${dir}/s`);
  sh('mkfifo', [`${dir}/fifo`]);
  sh('mknod', [`${dir}/null`, 'c', '1', '3']);
}

/** What a layer applied on top leaves in an overlayfs upper. */
function makeUpper(dir) {
  fs.mkdirSync(dir, { recursive: true });
  sh('mknod', [`${dir}/a`, 'c', '0', '0']); // whiteout of a file
  fs.mkdirSync(`${dir}/d`);
  sh('mknod', [`${dir}/d/x`, 'c', '0', '0']); // whiteout inside a merged directory
  sh('mknod', [`${dir}/gone-anyway`, 'c', '0', '0']); // whiteout of nothing
  fs.mkdirSync(`${dir}/o`);
  sh('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', `${dir}/o`]);
  file(`${dir}/o/new`, big('n', 6000));
  file(`${dir}/b`, big('B', 8000), { mode: 0o640, uid: 7, gid: 8, time: T + 5 }); // replaced content
  file(`${dir}/t/inner`, big('i', 70)); // file -> directory
  fs.symlinkSync('/elsewhere', `${dir}/u`); // directory -> symlink
  file(`${dir}/n`, big('N', 100_000), { uid: 65534, gid: 65534 });
  fs.linkSync(`${dir}/n`, `${dir}/n2`); // a hardlink made by the layer
  sh('setfattr', ['-n', 'user.note', '-v', 'upper', `${dir}/n`]);
  file(`${dir}/new/tiny`, 'tiny'); // inline-size file in a new directory
  file(`${dir}/same-as-a`, big('a', 5000)); // the parent's content again, under a new name
  sh('setfattr', ['-n', 'trusted.overlay.impure', '-v', 'y', `${dir}/d`]); // bookkeeping: never image content
  for (const d of ['d', 'o', 't', 'new']) fs.utimesSync(`${dir}/${d}`, T + 9, T + 9);
  fs.utimesSync(dir, T + 10, T + 10);
}

async function compile(tree, upper, store, whiteouts, out) {
  const w = new StoreWriter([store]);
  try {
    await applyOverlayDiff(tree, upper, { store: w, inlineThreshold: 64, whiteouts });
    await w.flush();
  } finally {
    await w.close();
  }
  fs.writeFileSync(out, encodeBlob(tree, { inlineThreshold: 64 }));
}

function storedDigests(store) {
  const out = new Set();
  const objects = path.join(store, 'objects');
  for (const fan of fs.readdirSync(objects)) {
    if (!/^[0-9a-f]{2}$/.test(fan)) continue;
    for (const name of fs.readdirSync(path.join(objects, fan))) out.add(fan + name);
  }
  return out;
}

test('applyOverlayDiff: parent blob + upper equals the kernel overlayfs view of the same upper on the parent; only the upper is stored', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-ovldiff-'));
  const merged = path.join(d, 'merged');
  t.teardown(() => {
    spawnSync('umount', [merged]);
    fs.rmSync(d, { recursive: true, force: true });
  });
  const [lower, upper, parentStore, layerStore] = ['lower', 'upper', 'store-parent', 'store-layer'].map((n) => path.join(d, n));
  makeLower(lower);
  makeUpper(upper);

  // the parent blob: the lower directory taken literally (a first layer: no whiteouts)
  const parentBlob = path.join(d, 'parent.ub');
  await compile(newTree(), lower, parentStore, false, parentBlob);
  // the new blob: the parent's tree, decoded from its blob, plus the upper
  const reader = openBlobFile(parentBlob);
  let tree;
  try {
    tree = decodeTree(reader);
  } finally {
    reader.close();
  }
  const childBlob = path.join(d, 'child.ub');
  await compile(tree, upper, layerStore, true, childBlob);

  // the reference: overlayfs itself, upper stacked on lower (read-only: no workdir)
  fs.mkdirSync(merged);
  sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${upper}:${lower}`, merged]);
  const extracted = path.join(d, 'extracted');
  await extractBlob(childBlob, [layerStore, parentStore], extracted);
  const want = await treeManifest(merged);
  const got = await treeManifest(extracted);
  t.truthy(nativeSetTimes(), 'the addon is built: extract keeps nanoseconds');
  t.deepEqual(diffManifests(want, got, { labels: ['overlayfs', 'blob'] }), []);

  // the merge did what overlayfs did (and the reference is not empty or trivially equal)
  const e = got.entries;
  for (const gone of ['a', 'd/x', 'o/old1', 'o/sub', 'u/inside', 'gone-anyway']) t.false(e.has(gone), `${gone} is gone`);
  for (const kept of ['d/y', 'h1', 'h2', 's', 'fifo', 'null', 'xa', 'o/new', 't/inner', 'new/tiny']) t.true(e.has(kept), `${kept} is there`);
  t.is(e.get('t').type, 'dir');
  t.is(e.get('u').type, 'lnk');
  t.is(e.get('b').uid, 7);
  t.deepEqual(got.hardlinkGroups.map((g) => [...g].sort()).sort(), [['h1', 'h2'], ['n', 'n2']]);
  t.deepEqual(Object.keys(e.get('d').xattrs), [], 'trusted.overlay.impure is not image content');
  t.deepEqual(Object.keys(e.get('o').xattrs), [], 'neither is trusted.overlay.opaque');

  // incremental: the layer's store (the writer was given no other) holds exactly the upper's
  // contents over the inline threshold; nothing of the parent was read and stored again
  const upperContents = ['o/new', 'b', 't/inner', 'n', 'same-as-a'].map((p) => verityDigest(fs.readFileSync(path.join(upper, p))).toString('hex'));
  t.deepEqual([...storedDigests(layerStore)].sort(), upperContents.sort());

  // the same from the command line: `cfs build --from PARENT UPPER` reads the parent blob lazily
  // (format/lazy.ts) and re-encodes it incrementally; it must give the very blob and objects the
  // whole decode above gave (verified against overlayfs)
  const cliStore = path.join(d, 'store-cli');
  const cliBlob = path.join(d, 'child-cli.ub');
  const r = spawnSync(process.execPath, [CFS, 'build', '--from', parentBlob, upper, '-o', cliBlob, '--store', cliStore, '--json', '--no-root'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.true(fs.readFileSync(cliBlob).equals(fs.readFileSync(childBlob)), 'cfs build --from gives the same blob');
  t.deepEqual([...storedDigests(cliStore)].sort(), upperContents.sort());
  t.is(JSON.parse(r.stdout).entries, 15, "the upper's entries");
  // the parent's objects are in parentStore, not in the one store given: fine (a store of the
  // diff's objects only), but said, since readers need the parent's stores too
  t.true(JSON.parse(r.stdout).parentObjectsMissing > 0);
  t.regex(r.stderr, /^cfs: warning: \d+ of the parent's objects (is|are) in none of the given stores \(first: [0-9a-f]{64}\): mount child-cli\.ub with the parent's stores too\n$/);
  // a parent that is not a blob, or an upper that is not a directory: one line, no output left
  const cases = [
    [path.join(upper, 'n'), upper, /corrupt blob: bad magic/],
    [upper, upper, /a directory, not a blob/],
    [parentBlob, path.join(upper, 'b'), /not a directory/],
  ];
  // a parent built with another inline threshold keeps it unless --inline-threshold says otherwise
  const wide = decodeTree(openBlobFile(parentBlob));
  wide.children.set('inline-100', { mode: 0o100644, uid: 0, gid: 0, mtimeSec: T, mtimeNsec: 0, xattrs: new Map(), size: 100, inline: Buffer.alloc(100, 'w') });
  const wideBlob = path.join(d, 'parent-4096.ub');
  fs.writeFileSync(wideBlob, encodeBlob(wide, { inlineThreshold: 4096 }));
  const kept = path.join(d, 'child-4096.ub');
  // --verity goes over every object the blob names: the parent's too, so both stores
  const k = spawnSync(process.execPath, [CFS, 'build', '--from', wideBlob, upper, '-o', kept, '--store', cliStore, '--store', parentStore, '--no-root', '--verity', '--json'], { encoding: 'utf8' });
  t.is(k.status, 0, k.stderr);
  t.is(JSON.parse(k.stdout).parentObjectsMissing, 0, 'both stores given: nothing missing');
  t.notRegex(k.stderr, /parent's objects/);
  t.is(fs.readFileSync(kept).readUInt32LE(36), 4096, "the parent's inline threshold");
  t.true(openBlobFile(kept).readInline(openBlobFile(kept).resolvePath('/inline-100')).equals(Buffer.alloc(100, 'w')));
  t.is(JSON.parse(k.stdout).verityEnabled + JSON.parse(k.stdout).verityPresent + JSON.parse(k.stdout).verityUnsupported > 0, true, '--verity went over the objects');
  cases.push([wideBlob, upper, /inline-100: inline size 100 exceeds the inline threshold 64/, ['--inline-threshold', '64']]);
  for (const [from, up, want, extra = []] of cases) {
    const bad = path.join(d, 'bad.ub');
    const e = spawnSync(process.execPath, [CFS, 'build', '--from', from, up, '-o', bad, '--store', cliStore, '--no-root', ...extra], { encoding: 'utf8' });
    t.not(e.status, 0);
    t.regex(e.stderr, want);
    t.is(e.stderr.trim().split('\n').length, 1, e.stderr);
    t.false(fs.existsSync(bad));
  }
});

// What containers do to an image through our writable mounts (OVERLAY_MOUNT_OPTIONS: redirect_dir
// and metacopy on): chown and chmod copy up metadata only, and directories rename in place. The
// kernel's overlay does it for real; the Commit's tree must be what the container saw, and take
// every copied-up content from the parent without reading or storing it.
test('applyOverlayDiff: renamed directories and metadata-only copy-ups (redirect_dir=on, metacopy=on) give the kernel overlay\'s view; no content read', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-ovlmeta-'));
  t.teardown(() => spawnSync('rm', ['-rf', d]));
  const lower = path.join(d, 'lower');
  makeLower(lower);
  file(`${lower}/deep/er/leaf`, big('l', 6000));
  const parentStore = path.join(d, 'store-parent');
  const parentBlob = path.join(d, 'parent.ub');
  await compile(newTree(), lower, parentStore, false, parentBlob);
  const ops = (m) => {
    fs.chmodSync(`${m}/xa`, 0o600); // metacopy of an object with an xattr
    fs.chownSync(`${m}/d/y`, 1000, 1000); // metacopy of an inline file
    fs.renameSync(`${m}/d/y`, `${m}/d/y2`); // ... then renamed: its own redirect
    fs.chmodSync(`${m}/h1`, 0o755); // a hardlinked file: the link breaks (index=off)
    fs.renameSync(`${m}/o`, `${m}/o2`); // a directory renamed in place (relative redirect)
    fs.renameSync(`${m}/o2/sub`, `${m}/o2/sub2`); // ... and one inside it
    fs.chmodSync(`${m}/o2/old1`, 0o640); // metacopy inside a renamed directory: data at o/old1
    fs.mkdirSync(`${m}/o`); // the old name again: a new, opaque directory
    fs.writeFileSync(`${m}/o/fresh`, 'fresh');
    fs.mkdirSync(`${m}/new`);
    fs.renameSync(`${m}/deep`, `${m}/new/deep`); // moved to another directory (absolute redirect)
    fs.chownSync(`${m}/new/deep/er/leaf`, 7, 8);
    fs.renameSync(`${m}/t`, `${m}/new/t`); // a file moved: metadata-only copy-up with a redirect
    fs.appendFileSync(`${m}/b`, 'more'); // a data copy-up, for contrast
  };
  const upper = overlayUpper(d, 'ctr', lower, OVERLAY_MOUNT_OPTIONS, ops);
  const xattrDump = sh('getfattr', ['-R', '-h', '-d', '-m', 'trusted.overlay', '-e', 'text', '--absolute-names', upper]).toString();
  t.regex(xattrDump, /trusted\.overlay\.redirect="\/deep"/, 'the kernel wrote an absolute redirect');
  t.regex(xattrDump, /trusted\.overlay\.redirect="o"/, 'and a relative one');
  t.regex(xattrDump, /trusted\.overlay\.metacopy/, 'and metadata-only copy-ups');

  // the reference: the same upper on the same lower, mounted again with the same options
  const merged = path.join(d, 'view');
  const work2 = path.join(d, 'work2');
  fs.mkdirSync(merged);
  fs.mkdirSync(work2);
  sh('mount', ['-t', 'overlay', 'overlay', '-o', [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work2}`, ...OVERLAY_MOUNT_OPTIONS].join(','), merged]);
  let want;
  try {
    want = await treeManifest(merged);
  } finally {
    spawnSync('umount', [merged]);
  }
  const layerStore = path.join(d, 'store-layer');
  const tree = decodeTree(openBlobFile(parentBlob));
  const childBlob = path.join(d, 'child.ub');
  await compile(tree, upper, layerStore, true, childBlob);
  const extracted = path.join(d, 'extracted');
  await extractBlob(childBlob, [layerStore, parentStore], extracted);
  const got = await treeManifest(extracted);
  t.deepEqual(diffManifests(want, got, { labels: ['overlayfs', 'blob'] }), []);
  for (const p of ['o2/sub2/old2', 'o/fresh', 'new/deep/er/leaf', 'new/t', 'd/y2', 'o2/old1']) t.true(got.entries.has(p), p);
  for (const p of ['o/old1', 'o2/sub', 'deep', 't', 'd/y']) t.false(got.entries.has(p), p);
  t.is(got.entries.get('new/deep/er/leaf').uid, 7);
  // nothing of the parent was stored again: only b's new content is in the layer's store
  t.deepEqual([...storedDigests(layerStore)], [verityDigest(Buffer.concat([big('b', 7000), Buffer.from('more')])).toString('hex')]);
  // the lazy parent of `cfs build --from` (the snapshotter's Commit) gives the same blob
  const cliBlob = path.join(d, 'child-cli.ub');
  const r = spawnSync(process.execPath, [CFS, 'build', '--from', parentBlob, upper, '-o', cliBlob, '--store', layerStore, '--store', parentStore, '--no-root'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.true(fs.readFileSync(cliBlob).equals(fs.readFileSync(childBlob)), 'cfs build --from gives the same blob');
});

/** A tiny parent: a directory to rename, a file to chmod, a hardlink pair (plain lower directory). */
function makeSmallLower(dir) {
  file(`${dir}/mvsrc/one`, big('1', 3000));
  file(`${dir}/meta`, big('m', 10000));
  file(`${dir}/hl1`, big('h', 2000));
  fs.linkSync(`${dir}/hl1`, `${dir}/hl2`);
}

/** The lower directory as a first layer's blob (taken literally). */
async function lowerTree(lower, store, d) {
  const blob = path.join(d, 'small-parent.ub');
  await compile(newTree(), lower, store, false, blob);
  return { blob };
}

/** Mount a writable overlay with `options` on `lower`, run `ops` in it, unmount; returns the upper. */
function overlayUpper(d, name, lower, options, ops) {
  const [upper, work, merged] = ['upper', 'work', 'merged'].map((n) => path.join(d, `${name}-${n}`));
  for (const p of [upper, work, merged]) fs.mkdirSync(p);
  sh('mount', ['-t', 'overlay', 'overlay', '-o', [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`, ...options].join(','), merged]);
  try {
    ops(merged);
  } finally {
    spawnSync('umount', [merged]);
  }
  return upper;
}

async function diffError(t, lower, store, upper) {
  const tree = decodeTree(openBlobFile((await lowerTree(lower, store, path.dirname(upper))).blob));
  const err = await t.throwsAsync(applyOverlayDiff(tree, upper, { store: null, inlineThreshold: 64, whiteouts: true }));
  return err.message;
}

test('applyOverlayDiff refuses what an upper cannot say alone (index links, userxattr, metacopy without data), unescapes nested trusted.overlay.*, and needs CAP_SYS_ADMIN', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-ovlfeat-'));
  t.teardown(() => spawnSync('rm', ['-rf', d]));
  const lower = path.join(d, 'lower');
  const store = path.join(d, 'store');
  makeSmallLower(lower);
  // the real kernel's overlay doing what makes it write outside the upper
  const metacopy = overlayUpper(d, 'metacopy', lower, ['redirect_dir=on', 'metacopy=on'], (m) => fs.chmodSync(`${m}/meta`, 0o600));
  const otherLower = path.join(d, 'other-lower');
  file(`${otherLower}/meta`, big('m', 9999)); // not the file that was copied up
  t.regex(await diffError(t, otherLower, store, metacopy), /\/meta: a metadata-only copy-up \(overlay metacopy=on\) whose data is not in the parent: cannot be compiled$/);
  // below an opaque directory overlayfs finds nothing in the lower layers by name: no origin
  const underOpaque = path.join(d, 'under-opaque');
  file(`${underOpaque}/mvsrc/one`, '');
  fs.truncateSync(`${underOpaque}/mvsrc/one`, 3000);
  sh('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', `${underOpaque}/mvsrc`]);
  sh('setfattr', ['-n', 'trusted.overlay.metacopy', `${underOpaque}/mvsrc/one`]);
  t.regex(await diffError(t, lower, store, underOpaque), /\/mvsrc\/one: a metadata-only copy-up \(overlay metacopy=on\) whose data is not in the parent/);
  // what overlayfs refuses to follow (EINVAL, ESTALE), refused too; hand-written uppers
  for (const [value, re] of [['/', /names the root or an ancestor/], ['/mvsrc', /names the root or an ancestor/], ['/a\0b', /holds a NUL byte/], ['/../x', /not a plain path/], ['x/y', /is not a name/]]) {
    const up = path.join(d, `redirect-${Buffer.from(value).toString('hex')}`);
    fs.mkdirSync(`${up}/mvsrc/in`, { recursive: true });
    sh('setfattr', ['-n', 'trusted.overlay.redirect', '-v', `0x${Buffer.from(value).toString('hex')}`, `${up}/mvsrc/in`]);
    t.regex(await diffError(t, lower, store, up), re, value);
  }
  // two names of one metacopy inode whose names would find different lower files
  const hl = path.join(d, 'hardlinked-metacopy');
  file(`${hl}/meta`, '');
  fs.truncateSync(`${hl}/meta`, 2000); // hl1's size: hl1 (first in order) takes the lower hl1, meta would take meta
  sh('setfattr', ['-n', 'trusted.overlay.metacopy', `${hl}/meta`]);
  fs.linkSync(`${hl}/meta`, `${hl}/hl1`);
  t.regex(await diffError(t, lower, store, hl), /\/meta: hardlinked metadata-only copy-ups \(overlay metacopy=on\) with different origins/);
  // an opaque mark on the upper's root hides nothing (overlayfs ignores it there); a metacopy
  // mark on a directory makes it a plain merged one
  const rootOpaque = path.join(d, 'root-opaque');
  fs.mkdirSync(`${rootOpaque}/mvsrc`, { recursive: true });
  sh('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', rootOpaque]);
  sh('setfattr', ['-n', 'trusted.overlay.metacopy', `${rootOpaque}/mvsrc`]);
  file(`${rootOpaque}/new`, 'n');
  const rt = decodeTree(openBlobFile((await lowerTree(lower, store, d)).blob));
  await applyOverlayDiff(rt, rootOpaque, { store: null, inlineThreshold: 64, whiteouts: true });
  t.deepEqual([...rt.children.keys()].sort(), ['hl1', 'hl2', 'meta', 'mvsrc', 'new']);
  t.deepEqual([...rt.children.get('mvsrc').children.keys()], ['one']);
  const index = overlayUpper(d, 'index', lower, ['index=on'], (m) => fs.appendFileSync(`${m}/hl1`, 'more'));
  t.regex(await diffError(t, lower, store, index), /\/hl1: has 2 links, 1 in the upper \(hardlinked from outside it, as overlay index=on does\)/);
  // the same operations with our mounts' options: compiled, and equal to what the overlay showed
  const plain = overlayUpper(d, 'plain', lower, OVERLAY_MOUNT_OPTIONS, (m) => {
    fs.chmodSync(`${m}/meta`, 0o600);
    fs.appendFileSync(`${m}/hl1`, 'more');
    fs.renameSync(`${m}/mvsrc`, `${m}/mvdst`);
  });
  const tree = decodeTree(openBlobFile((await lowerTree(lower, store, d)).blob));
  await applyOverlayDiff(tree, plain, { store: null, inlineThreshold: 64, whiteouts: true });
  t.is(tree.children.get('meta').mode & 0o7777, 0o600);
  t.true(tree.children.get('meta').digest.equals(verityDigest(big('m', 10000))), 'a chmod keeps the content');
  t.is(tree.children.get('hl1').size, 2004);
  t.deepEqual([...tree.children.get('mvdst').children.keys()], ['one']);
  t.false(tree.children.has('mvsrc'));

  // userxattr bookkeeping; an escaped trusted.overlay.X is the image's own trusted.overlay.X
  const userx = path.join(d, 'userx');
  fs.mkdirSync(`${userx}/mvsrc`, { recursive: true });
  sh('setfattr', ['-n', 'user.overlay.opaque', '-v', 'y', `${userx}/mvsrc`]);
  t.regex(await diffError(t, lower, store, userx), /\/mvsrc: user\.overlay\.opaque: the upper of an overlay mounted with userxattr/);
  const escaped = path.join(d, 'escaped');
  fs.mkdirSync(`${escaped}/nested`, { recursive: true });
  sh('setfattr', ['-n', 'trusted.overlay.overlay.opaque', '-v', 'y', `${escaped}/nested`]);
  sh('setfattr', ['-n', 'trusted.overlay.overlay.foo', '-v', 'bar', `${escaped}/nested`]);
  const t2 = decodeTree(openBlobFile((await lowerTree(lower, store, d)).blob));
  await applyOverlayDiff(t2, escaped, { store: null, inlineThreshold: 64, whiteouts: true });
  t.deepEqual([...t2.children.get('nested').xattrs].map(([k, v]) => [k, v.toString()]), [['trusted.overlay.foo', 'bar'], ['trusted.overlay.opaque', 'y']]);
  t.true(t2.children.get('mvsrc').children.has('one'), 'an escaped opaque does not make the directory opaque');

  // an upper deeper than PATH_MAX (overlayfs allows it): one short line naming the path by its two ends
  const deep = path.join(d, 'deep');
  fs.mkdirSync(deep);
  sh('bash', ['-c', 'cd "$1" && for i in $(seq 1 300); do mkdir dddddddddddddd && cd dddddddddddddd || exit 1; done; echo x > f', 'bash', deep]);
  const tooDeep = spawnSync(process.execPath, [CFS, 'build', '--from', (await lowerTree(lower, store, d)).blob, deep, '-o', path.join(d, 'deep.ub'), '--store', store, '--no-root'], { encoding: 'utf8' });
  t.is(tooDeep.status, 1);
  t.regex(tooDeep.stderr, /^cfs: \/tmp\/.*\.\.\..*dddd: ENAMETOOLONG: name too long\n$/);
  t.true(tooDeep.stderr.length < 300, tooDeep.stderr);
  sh('rm', ['-rf', deep]); // GNU rm walks by directory descriptors; Node's rm cannot name the bottom

  // without CAP_SYS_ADMIN trusted.* is invisible (an opaque directory would read as a plain one)
  for (const p of [d, lower, store]) fs.chmodSync(p, 0o755);
  const parent = (await lowerTree(lower, store, d)).blob;
  fs.chmodSync(parent, 0o644);
  const out = path.join(d, 'user-out');
  fs.mkdirSync(out, { mode: 0o777 });
  fs.chmodSync(out, 0o777);
  const r = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CFS, 'build', '--from', parent, plain,
    '-o', path.join(out, 'x.ub'), '--store', path.join(out, 'store'), '--no-root'], { encoding: 'utf8' });
  t.is(r.status, 1);
  t.is(r.stderr, `cfs: ${plain}: reading an overlay upper needs root (CAP_SYS_ADMIN): its trusted.overlay.* xattrs are hidden from others (an upper of a userxattr mount: --userxattr)\n`);
  t.false(fs.existsSync(path.join(out, 'x.ub')));
});

// A rootless container's upper: overlayfs mounted from a user namespace keeps its bookkeeping in
// user.overlay.* (userxattr) and allows neither redirects nor metacopy. The kernel's overlay, with
// the options `cfs mount --upper` uses there (OVERLAY_USERNS_MOUNT_OPTIONS), writes the upper;
// the same upper stacked read-only on the lower is the reference view.
test('applyOverlayDiff with overlayXattrs user: a userxattr overlay\'s upper gives the kernel overlay\'s view; the other kind of bookkeeping is refused either way', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-ovluserx-'));
  const merged = path.join(d, 'merged');
  t.teardown(() => {
    spawnSync('umount', [merged]);
    spawnSync('rm', ['-rf', d]);
  });
  const [lower, store] = ['lower', 'store'].map((n) => path.join(d, n));
  makeLower(lower);
  const upper = overlayUpper(d, 'userx', lower, OVERLAY_USERNS_MOUNT_OPTIONS, (m) => {
    fs.rmSync(`${m}/a`); // whiteout
    fs.rmSync(`${m}/o`, { recursive: true }); // then made again: opaque (user.overlay.opaque)
    file(`${m}/o/new`, big('n', 6000));
    fs.chmodSync(`${m}/b`, 0o644); // no metacopy here: the data is copied up
    fs.appendFileSync(`${m}/h1`, 'more'); // a hardlinked lower file: copied up alone
    t.throws(() => fs.renameSync(`${m}/d`, `${m}/d-moved`), { code: 'EXDEV' }, 'no redirects with userxattr');
    sh('setfattr', ['-n', 'user.overlay.mine', '-v', 'image', `${m}/xa`]); // escaped: the image's own
    file(`${m}/new/tiny`, 'tiny');
  });
  const names = sh('getfattr', ['-R', '-d', '-m', '-', '--absolute-names', upper]).toString();
  t.regex(names, /user\.overlay\.opaque="y"/, 'the kernel marked o opaque in user.overlay.*');
  t.notRegex(names, /trusted\.overlay\./);

  const parentBlob = path.join(d, 'parent.ub');
  await compile(newTree(), lower, store, false, parentBlob);
  const tree = decodeTree(openBlobFile(parentBlob));
  const w = new StoreWriter([store]);
  try {
    await applyOverlayDiff(tree, upper, { store: w, inlineThreshold: 64, whiteouts: true, overlayXattrs: 'user' });
    await w.flush();
  } finally {
    await w.close();
  }
  const childBlob = path.join(d, 'child.ub');
  fs.writeFileSync(childBlob, encodeBlob(tree, { inlineThreshold: 64 }));
  fs.mkdirSync(merged);
  sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${upper}:${lower},userxattr`, merged]);
  const extracted = path.join(d, 'extracted');
  await extractBlob(childBlob, [store], extracted);
  const want = await treeManifest(merged);
  const got = await treeManifest(extracted);
  t.deepEqual(diffManifests(want, got, { labels: ['overlayfs', 'blob'] }), []);
  const e = got.entries;
  for (const gone of ['a', 'o/old1', 'o/sub']) t.false(e.has(gone), `${gone} is gone`);
  for (const kept of ['o/new', 'new/tiny', 'd/x', 'h2']) t.true(e.has(kept), `${kept} is there`);
  t.deepEqual(Object.keys(e.get('xa').xattrs).sort(), ['user.k', 'user.overlay.mine'], 'the escaped user.overlay.mine is image content, the bookkeeping is not');
  t.deepEqual(Object.keys(e.get('o').xattrs), []);

  // the same upper read as a root-mounted overlay's, and a root-mounted overlay's read as userxattr: refused, one line each
  const asTrusted = await diffError(t, lower, store, upper);
  t.regex(asTrusted, /: user\.overlay\.\w+: the upper of an overlay mounted with userxattr \(a user namespace's\): compile it with --userxattr$/);
  const rooted = overlayUpper(d, 'rooted', lower, OVERLAY_MOUNT_OPTIONS, (m) => {
    fs.rmSync(`${m}/o`, { recursive: true });
    fs.mkdirSync(`${m}/o`);
  });
  const t3 = decodeTree(openBlobFile(parentBlob));
  const err = await t.throwsAsync(applyOverlayDiff(t3, rooted, { store: null, inlineThreshold: 64, whiteouts: true, overlayXattrs: 'user' }));
  t.regex(err.message, /: trusted\.overlay\.\w+: bookkeeping of an overlay mounted by the host's root, in an upper said to be a userxattr mount's$/);
  // cfs build --from: --userxattr reads it (the default only inside a user namespace)
  const cli = spawnSync(process.execPath, [CFS, 'build', '--from', parentBlob, upper, '--userxattr', '-o', path.join(d, 'cli.ub'), '--store', store, '--no-root'], { encoding: 'utf8' });
  t.is(cli.status, 0, cli.stderr);
  t.true(fs.readFileSync(path.join(d, 'cli.ub')).equals(fs.readFileSync(childBlob)), 'the CLI gives the same blob');
});

// An upper written through a uid/gid mapping (the snapshotter's snapshots of containers in their
// own user namespace) holds host ids: `unmap` turns owners, ACL entries and a v3 capability's root
// id back into the image's, and refuses an id no range maps to, naming the path.
test('applyOverlayDiff with unmap: host ids back to the image\'s (owners, ACL entries, v3 capabilities); an unmapped id is refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-unmap-'));
  try {
    const upper = path.join(dir, 'upper');
    fs.mkdirSync(upper);
    fs.chownSync(upper, 100000, 100000);
    file(`${upper}/mine`, 'x', { uid: 101000, gid: 100100 });
    file(`${upper}/acl`, 'acl', { uid: 100000, gid: 100000 });
    sh('setfacl', ['-m', 'u:101000:r,g:100050:r', `${upper}/acl`]);
    file(`${upper}/cap`, 'cap', { uid: 100000, gid: 100000 });
    // VFS_CAP_REVISION_3, CAP_NET_RAW, root id 100000 (0x186a0)
    sh('setfattr', ['-n', 'security.capability', '-v', '0x0100000300200000000000000000000000000000a0860100', `${upper}/cap`]);
    const back = (h) => (h >= 100000 && h < 165536 ? h - 100000 : null);
    const tree = newTree();
    await applyOverlayDiff(tree, upper, { store: null, inlineThreshold: 64, unmap: { uid: back, gid: back } });
    const node = (n) => tree.children.get(n);
    t.is(`${tree.uid} ${tree.gid}`, '0 0');
    t.is(`${node('mine').uid} ${node('mine').gid}`, '1000 100');
    const acl = node('acl').xattrs.get('system.posix_acl_access');
    const entries = [];
    for (let off = 4; off + 8 <= acl.length; off += 8) entries.push(`${acl.readUInt16LE(off)}:${acl.readUInt32LE(off + 4)}`);
    t.true(entries.includes('2:1000') && entries.includes('8:50'), entries.join(' '));
    t.is(node('cap').xattrs.get('security.capability').toString('hex'), '010000030020000000000000000000000000000000000000');
    // an owner no range maps (a copy-up of a file the container saw as the overflow id)
    file(`${upper}/nobody`, 'n', { uid: 65534, gid: 100000 });
    await t.throwsAsync(applyOverlayDiff(newTree(), upper, { store: null, inlineThreshold: 64, unmap: { uid: back, gid: back } }),
      { message: /\/nobody: owner 65534 is outside the snapshot's mapping: cannot be committed$/ });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('applyOverlayDiff: a sparse file in the upper (written in a container) is stored with its holes, neither read nor written', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-sparse-upper-'));
  try {
    const upper = path.join(dir, 'upper');
    fs.mkdirSync(upper);
    const f = path.join(upper, 'lastlog');
    const size = 2 ** 40; // 1 TiB: reading it would take hours
    const fd = fs.openSync(f, 'w');
    fs.ftruncateSync(fd, size);
    fs.writeSync(fd, Buffer.from('first'), 0, 5, 12345);
    fs.writeSync(fd, Buffer.from('last'), 0, 4, size - 4);
    fs.closeSync(fd);
    const store = path.join(dir, 'store');
    const w = new StoreWriter([store], { startNow: true });
    const tree = newTree();
    await applyOverlayDiff(tree, upper, { store: w, inlineThreshold: 64 });
    await w.sync();
    await w.close();
    const digest = tree.children.get('lastlog').digest;
    const obj = objectPath(store, digest);
    t.is(fs.statSync(obj).size, size);
    t.true(fs.statSync(obj).blocks < 1024, 'the object keeps the holes');
    const back = fs.openSync(obj, 'r');
    const b = Buffer.alloc(5);
    fs.readSync(back, b, 0, 5, 12345);
    t.is(b.toString(), 'first');
    fs.readSync(back, b, 0, 5, size - 5);
    t.deepEqual(b, Buffer.from('\0last'));
    fs.closeSync(back);
    // the digest without a store is the same, and fsck agrees with it (it skips the holes too)
    const plain = newTree();
    await applyOverlayDiff(plain, upper, { store: null, inlineThreshold: 64 });
    t.deepEqual(plain.children.get('lastlog').digest, digest);
    const out = path.join(dir, 'out.ub');
    fs.writeFileSync(out, encodeBlob(tree));
    const r = spawnSync(process.execPath, [CFS, 'fsck', out, '--store', store], { encoding: 'utf8' });
    t.is(r.status, 0, r.stdout + r.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
