// The containerd snapshotter (issue #5) against real containerd 1.6 (bookworm) and 1.7 (trixie),
// real ctr, runc, and the real Debian test images. Serial: one containerd per version.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { treeManifest, diffManifests } from './lib/treeman.mjs';
import { startEnv, fetchContainerd17, mountsUnder, CFS, REPO } from './lib/containerd-env.mjs';
import { startRegistry } from './lib/registry.mjs';
import { referencedDigests } from '../dist/compiler/gc.js';
import { objectPath } from '../dist/compiler/store.js';
import { verityDigest } from '../dist/format/verity.js';
import { splitSubtrees, startPointsIn } from '../dist/snapshotter/snapshotter.js';
import { newDir } from '../dist/format/tree.js';

const images = JSON.parse(fs.readFileSync(
  execFileSync('bash', [path.join(REPO, 'test/fixtures/make-images.sh')], { encoding: 'utf8' }).trim(), 'utf8'));
const A = images.images.a.variants['docker-archive'];
const B = images.images.b.variants['docker-archive'];
const REF_A = images.images.a.reference;
const SN = ['--snapshotter', 'unionblob'];
/** Container ids are global to runc on this machine: unique per run. */
const uniq = (name) => `${name}-${process.pid}`;

for (const tool of ['containerd', 'ctr', 'runc', 'getfattr']) {
  if (spawnSync('which', [tool]).status !== 0) throw new Error(`${tool} is not installed (.ci/install-deps.sh)`);
}
if (!fs.existsSync(path.join(REPO, 'mounter/fuse/unionblob-fuse'))) throw new Error('make -C mounter/fuse first');
if (!fs.existsSync(path.join(REPO, 'dist/snapshotter/server.js'))) throw new Error('npm run build first');

const envs = [];
let registry = null;
test.after.always(async () => {
  for (const e of envs) await e.stop();
  await registry?.stop();
});

/** The test registry with image a pushed to it (once), and a's name there. */
async function registryWithA() {
  if (!registry) {
    registry = await startRegistry();
    registry.a = registry.push(A, 'unionblob/a:latest');
  }
  return registry;
}

async function env(opts) {
  const e = await startEnv(opts);
  envs.push(e);
  return e;
}

function rows(e) {
  const db = new Database(path.join(e.ubRoot, 'metadata.db'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT id, key, kind, parent_id FROM snapshots ORDER BY id').all();
  } finally {
    db.close();
  }
}

function storeObjects(store) {
  const out = [];
  const objects = path.join(store, 'objects');
  if (!fs.existsSync(objects)) return out;
  for (const fan of fs.readdirSync(objects)) {
    if (!/^[0-9a-f]{2}$/.test(fan)) continue;
    for (const n of fs.readdirSync(path.join(objects, fan))) out.push(fan + n);
  }
  return out.sort();
}

function chainIds(text) {
  return [...new Set(text.match(/sha256:[0-9a-f]{64}/g) ?? [])];
}

/**
 * The fast path's blob against the slow path's (containerd's applier) for the same image, as
 * `cfs dump` lines, minus exactly what containerd's applier is known to do differently (it
 * comes from containerd, not from the snapshotter): the root directory gets the time of the
 * unpack as mtime; times before 1970 are clamped to the epoch; trusted.* xattrs are not
 * restored (so the header's xattrset count differs), and a layer re-listing a path without an
 * xattr does not remove the xattr a lower layer set (opt/ub/xattr-reset).
 */
function applierDumpDiffs(fastDump, slowDump) {
  const parse = (text) => {
    const lines = text.split('\n').filter(Boolean);
    const header = lines.shift().replace(/ xattrsets=\d+$/, '');
    return { header, byPath: new Map(lines.map((l) => [l.split(' ')[0], l.split(' ')])) };
  };
  const xattrs = (f) => (f === '-' ? {} : Object.fromEntries(f.split(',').map((kv) => kv.split('='))));
  const MTIME = 8;
  const XATTRS = 10;
  const fast = parse(fastDump);
  const slow = parse(slowDump);
  const out = fast.header === slow.header ? [] : [`header: ${fast.header} vs ${slow.header}`];
  for (const p of new Set([...fast.byPath.keys(), ...slow.byPath.keys()])) {
    const f = fast.byPath.get(p);
    const g = slow.byPath.get(p);
    if (!f || !g) { out.push(`${p}: only in the ${f ? 'fast' : 'slow'} path's blob`); continue; }
    for (let i = 1; i < f.length; i++) {
      if (f[i] === g[i]) continue;
      if (i === MTIME && (p === '/' || (f[i].startsWith('-') && g[i] === '0.000000000'))) continue;
      if (i === XATTRS) {
        const noTrusted = Object.entries(xattrs(f[i])).filter(([k]) => !k.startsWith('trusted.'));
        const got = xattrs(g[i]);
        const same = noTrusted.length === Object.keys(got).length && noTrusted.every(([k, v]) => got[k] === v);
        const stale = p === '/opt/ub/xattr-reset' && noTrusted.every(([k, v]) => got[k] === v);
        if (same || stale) continue;
      }
      out.push(`${p}: field ${i}: fast ${f[i]} slow ${g[i]}`);
    }
  }
  return out;
}

/** Every path created under the directories while `fn` runs (inotify, recursive). */
async function pathsCreatedDuring(dirs, fn) {
  const seen = [];
  const watchers = dirs.map((d) => fs.watch(d, { recursive: true }, (_ev, name) => seen.push(path.join(d, String(name)))));
  try {
    await fn();
    await sleep(300); // the last events
  } finally {
    for (const w of watchers) w.close();
  }
  return seen;
}

/** A client of the snapshotter's own socket, for the calls ctr has no command for (Cleanup). */
async function snapshotsCall(sock, method, req) {
  const grpc = await import('@grpc/grpc-js');
  const { loadApi, lookup } = await import('../dist/snapshotter/proto.js');
  const Snapshots = lookup(loadApi().snapshots, 'containerd.services.snapshots.v1.Snapshots');
  const client = new Snapshots(`unix://${sock}`, grpc.credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) => client[method](req, (err, res) => (err ? reject(err) : resolve(res))));
  } finally {
    client.close();
  }
}

function cfs(...args) {
  const r = spawnSync(process.execPath, [CFS, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The snapshotter stopped and started again with `args`; back once containerd reaches it again. */
async function restartSnapshotter(e, args) {
  e.killSnapshotter('SIGTERM');
  await sleep(300);
  await e.startSnapshotter({ args });
  for (let i = 0; ; i++) {
    try {
      await e.ctr(['snapshots', ...SN, 'ls']);
      return;
    } catch (err) {
      if (i === 100) throw err;
      await sleep(200);
    }
  }
}

/** Kills a container's task and waits for it to go. */
async function stopTask(e, id) {
  await e.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
  for (let i = 0; i < 50; i++) {
    if (!(await e.ctr(['task', 'ls'])).includes(id)) break;
    await e.ctr(['task', 'rm', id]).catch(() => {});
    await sleep(100);
  }
}

/** stopTask, then the container goes (and its snapshot with it). */
async function stopContainer(e, id) {
  await stopTask(e, id);
  await e.ctr(['containers', 'rm', id]);
}

async function containerView(e, id) {
  return path.join(e.dir, 'state', 'io.containerd.runtime.v2.task', 'default', id, 'rootfs');
}

// ------------------------------------------------------------------------------ containerd 1.6

let e16;
/** Blob of image b that `cfs build` wrote into e16's store (a gc root there). */
let userBlob;

test.serial('1.6: import, snapshots ls/tree/mounts/usage, run, container view equals umoci', async (t) => {
  e16 = await env({});
  t.regex(await e16.ctr(['version']), /Version:\s+1\.6\./);
  // the log says which backend serves the blobs: the module where this kernel has it
  const hasModule = /\bunionblob$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'));
  t.regex(e16.log(), hasModule ? /mount backend: using the unionblob kernel module/ : /mount backend: no unionblob kernel module here: using FUSE/);
  await e16.ctr(['images', 'import', ...SN, A]);
  const tree = await e16.ctr(['snapshots', ...SN, 'tree']);
  const chain = chainIds(tree);
  t.is(chain.length, 3, tree);
  const ls = await e16.ctr(['snapshots', ...SN, 'ls']);
  t.is((ls.match(/Committed/g) ?? []).length, 3, ls);
  const usage = await e16.ctr(['snapshots', ...SN, 'usage']);
  for (const c of chain) t.true(usage.includes(c), usage);
  // one blob per committed chain, no upper left, nothing mounted once the import is done
  for (const r of rows(e16)) {
    t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'snapshots', String(r.id))), ['blob']);
  }
  t.deepEqual(mountsUnder(e16.ubRoot), []);

  // run: prints a file of the image, writes into its rootfs
  const out = await e16.ctr(['run', '--rm', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/a:latest', uniq('c1'),
    'sh', '-c', 'cat /etc/debian_version && echo written > /written-by-test && cat /written-by-test']);
  t.regex(out, /^\d+\.\d+\s+written\s*$/);

  // the container's view of the tree, while it runs
  await e16.ctr(['run', '-d', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/a:latest', uniq('c2'),
    'sh', '-c', 'echo x > /written-by-test; exec sleep 600']);
  const rootfs = await containerView(e16, uniq('c2'));
  for (let i = 0; i < 200 && !writtenLine(path.join(rootfs, 'written-by-test')); i++) await sleep(100);
  const mounts = await e16.ctr(['snapshots', ...SN, 'mounts', '/mnt', uniq('c2')]);
  t.regex(mounts, /mount -t overlay overlay \/mnt -o .*upperdir=.*lowerdir=[^:,\s]*\/mounts\/\d+(,|\s|$)/);
  // whatever the kernel's defaults: no copies hardlinked from outside the upper; metadata-only
  // copy-ups and renamed directories, which Commit takes from the parent blob
  t.regex(mounts, /-o \S*index=off,redirect_dir=on,metacopy=on/);
  const got = await treeManifest(rootfs);
  got.entries.delete('written-by-test');
  const ref = await treeManifest(REF_A);
  // each layer was compiled from containerd's content store while containerd applied it, so the
  // tree is the layers' own, not what containerd's applier made of them (applierDumpDiffs): it
  // equals umoci's but for the root's mtime (the container's upper root, which runc writes into)
  t.is((e16.log().match(/: compiled ahead from sha256:/g) ?? []).length, 3, e16.log());
  t.deepEqual(diffManifests(ref, got).filter((l) => !l.startsWith('.: mtime')), []);
  // the new objects were only hashed ahead: Commit linked containerd's files of the upper in;
  // each object's content is its name, and none still has a second name
  const commits = [...e16.log().matchAll(/compiled ahead from sha256:\S+: \d+ entries, (\d+) new objects \(([^)]*)\)/g)];
  t.is(commits.length, 3, e16.log());
  for (const m of commits) t.is(Number(/(\d+) objects linked/.exec(m[2])?.[1] ?? 0), Number(m[1]), `every new object is a link: ${m[0]}`);
  t.true(commits.some((m) => Number(m[1]) > 1000), 'the base layer\'s objects');
  for (const r of rows(e16).filter((r) => r.kind === 3)) {
    const f = cfs('fsck', path.join(e16.ubRoot, 'snapshots', String(r.id), 'blob'), '--store', e16.store);
    t.is(f.code, 0, `fsck of snapshot ${r.id}: ${f.out}${f.err}`);
  }
  const objects = storeObjects(e16.store);
  t.deepEqual(objects.filter((o) => fs.lstatSync(objectPath(e16.store, o)).nlink !== 1), [], 'an object with another name');
  t.deepEqual(objects.filter((o) => (fs.lstatSync(objectPath(e16.store, o)).mode & 0o7777) !== 0o444), [], 'an object not 0444');
  await e16.ctr(['task', 'kill', '-s', 'SIGKILL', uniq('c2')]);
  for (let i = 0; i < 50; i++) {
    if (!(await e16.ctr(['task', 'ls'])).includes(uniq('c2'))) break;
    await e16.ctr(['task', 'rm', uniq('c2')]).catch(() => {});
    await sleep(100);
  }
  await e16.ctr(['containers', 'rm', uniq('c2')]);
});

test.serial('1.6: a second image sharing layers and files: nothing stored twice', async (t) => {
  t.truthy(e16, 'needs the first test');
  const before = storeObjects(e16.store).length;
  await e16.ctr(['images', 'import', ...SN, B]);
  const objs = storeObjects(e16.store);
  // exactly the objects `cfs build` of a and b into one store has
  const ref = path.join(e16.dir, 'ref-store');
  for (const [img, name] of [[A, 'a'], [B, 'b']]) {
    execFileSync(process.execPath, [CFS, 'build', img, '-o', path.join(e16.dir, `${name}.blob`), '--store', ref]);
  }
  t.deepEqual(objs, storeObjects(ref));
  t.true(objs.length > before);
  // The user builds b into the snapshotter's store too: no new object, and a gc root that the
  // snapshotter's Cleanup must respect (checked after images rm below).
  userBlob = path.join(e16.dir, 'user-b.blob');
  execFileSync(process.execPath, [CFS, 'build', B, '-o', userBlob, '--store', e16.store]);
  t.deepEqual(storeObjects(e16.store), objs);
  t.deepEqual(fs.readdirSync(path.join(e16.store, 'roots')).map((n) => fs.readlinkSync(path.join(e16.store, 'roots', n))).filter((l) => l === userBlob), [userBlob]);
  const out = await e16.ctr(['run', '--rm', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/b:latest', uniq('c3'), 'cat', '/etc/debian_version']);
  t.regex(out, /^\d+\.\d+\s*$/);
});

// A layer's "./" entry (`tar -C dir .` by a user: 0700, 1000:1000): containerd's applier skips an
// entry that resolves to the root, so its own snapshotters show containers the root they had;
// unionblob's compiled layers must show the same (umoci applies it: not the reference here).
test.serial('1.6: a layer\'s "./" entry leaves the root as containerd\'s overlayfs shows it (compiled ahead and through the upper)', async (t) => {
  t.truthy(e16, 'needs the first test');
  const dir = path.join(e16.dir, 'rootentry');
  execFileSync('python3', [path.join(REPO, 'test/fixtures/make-rootentry-image.py'), dir]);
  const seen = {};
  for (const [sn, args] of [['overlayfs', []], ['unionblob', []], ['unionblob', ['--no-compile-ahead']]]) {
    if (sn === 'unionblob') {
      await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/rootentry:latest']).catch(() => {});
      await restartSnapshotter(e16, args);
    }
    await e16.ctr(['images', 'import', '--snapshotter', sn, path.join(dir, 'image.docker-archive.tar')]);
    seen[`${sn}${args.join('')}`] = await e16.ctr(['run', '--rm', '--fifo-dir', path.join(e16.dir, 'fifo'), '--snapshotter', sn,
      'docker.io/unionblob/rootentry:latest', uniq(`root-${sn}${args.length}`), '/bin/sh', '-c', 'id -u; stat -c "%a %u:%g" /; ls /bin | head -1; cat /hello']);
  }
  t.is(seen.overlayfs, '65534\n755 0:0\nbusybox\nhi\n');
  t.is(seen.unionblob, seen.overlayfs, 'compiled ahead');
  t.is(seen['unionblob--no-compile-ahead'], seen.overlayfs, 'compiled from the upper');
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/rootentry:latest']);
  await restartSnapshotter(e16, []);
});

// Commit links the files containerd applied into the upper in as the layer's new objects (the
// compile ahead only hashed them). An upper that does not hold the layer (here: one file of our
// own instead of busybox) is refused before anything changes, and Commit compiles the upper.
test.serial('1.6: an extraction upper that is not the layer compiled ahead: nothing linked, Commit compiles the upper as it is', async (t) => {
  t.truthy(e16, 'needs the first test');
  const dir = path.join(e16.dir, 'notlayer');
  execFileSync('python3', [path.join(REPO, 'test/fixtures/make-rootentry-image.py'), dir]);
  const archive = path.join(dir, 'image.docker-archive.tar');
  // in containerd's content store (through overlayfs), not in our store
  await e16.ctr(['images', 'import', '--snapshotter', 'overlayfs', archive]);
  const manifest = JSON.parse(execFileSync('tar', ['-xOf', archive, 'manifest.json'], { encoding: 'utf8' }))[0];
  const chain = JSON.parse(execFileSync('tar', ['-xOf', archive, manifest.Config], { encoding: 'utf8' })).rootfs.diff_ids[0];
  const objectsBefore = storeObjects(e16.store);
  const sock = path.join(e16.dir, 'ub.sock');
  const key = `default/9001/extract-notlayer ${chain}`;
  await snapshotsCall(sock, 'Prepare', { key, parent: '' });
  const id = rows(e16).find((r) => r.key === key).id;
  const mine = Buffer.from('not busybox\n');
  fs.mkdirSync(path.join(e16.ubRoot, 'snapshots', String(id), 'fs', 'bin'));
  fs.writeFileSync(path.join(e16.ubRoot, 'snapshots', String(id), 'fs', 'bin', 'other'), Buffer.concat([mine, Buffer.alloc(100)]), { mode: 0o755 });
  const name = `default/9002/${chain}`;
  await snapshotsCall(sock, 'Commit', { name, key });
  t.regex(e16.log(), new RegExp(`commit of snapshot ${id}: the upper is not the layer compiled ahead \\(.*/bin/busybox: missing\\); compiling the upper`));
  const blob = path.join(e16.ubRoot, 'snapshots', String(id), 'blob');
  t.deepEqual(cfs('ls', blob, '/bin').out.trim().split('\n'), ['other']);
  t.is(cfs('fsck', blob, '--store', e16.store).code, 0);
  t.deepEqual(storeObjects(e16.store).filter((o) => !objectsBefore.includes(o)), [verityDigest(Buffer.concat([mine, Buffer.alloc(100)])).toString('hex')], 'only the upper\'s file became an object');
  await snapshotsCall(sock, 'Remove', { key: name });
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/rootentry:latest']);
});

// A layer GNU tar wrote with --sparse (PAX sparse 1.0, which Go's archive/tar expands): compiled
// ahead like any other (sparse files were refused, and containerd's applier then made the layer
// through the upper); the container's tree equals umoci's, holes read as zeros. An old GNU 'S'
// entry fails the import in containerd's own applier, for overlayfs as for us.
test.serial('1.6: a layer of sparse files is compiled ahead; the container\'s view equals umoci\'s; old GNU sparse fails as with overlayfs', async (t) => {
  t.truthy(e16, 'needs the first test');
  const dir = path.join(e16.dir, 'sparse');
  for (const f of ['pax', 'gnu']) execFileSync('python3', [path.join(REPO, 'test/fixtures/make-sparse-image.py'), path.join(dir, f), f]);
  const before = (e16.log().match(/: compiled ahead from sha256:/g) ?? []).length;
  await e16.ctr(['images', 'import', ...SN, path.join(dir, 'pax', 'image.docker-archive.tar')]);
  t.is((e16.log().match(/: compiled ahead from sha256:/g) ?? []).length - before, 2, 'both layers compiled ahead');
  const id = uniq('sparse');
  const out = await e16.ctr(['run', '-d', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/sparse-pax:latest', id, 'sleep', '600']);
  t.is(out, '');
  const rootfs = await containerView(e16, id);
  for (let i = 0; i < 100 && !fs.existsSync(path.join(rootfs, 'big')); i++) await sleep(100);
  for (const f of ['big', 'small', 'holes']) {
    t.true(fs.readFileSync(path.join(rootfs, f)).equals(fs.readFileSync(path.join(dir, 'pax', 'src', f))), `${f}: the bytes GNU tar read`);
  }
  execFileSync('umoci', ['unpack', '--image', `${path.join(dir, 'pax', 'oci')}:latest`, path.join(dir, 'umoci')], { stdio: 'ignore' });
  const ref = await treeManifest(path.join(dir, 'umoci', 'rootfs'));
  const got = await treeManifest(rootfs);
  // runc makes /run, the image has none
  t.deepEqual(diffManifests(ref, got).filter((l) => !l.startsWith('.: mtime') && l !== 'run: only in b (dir)'), []);
  t.deepEqual(got.entries.get('r/x').xattrs, {}, 'r/x declared again without xattrs has none');
  await stopContainer(e16, id);
  for (const sn of ['overlayfs', 'unionblob']) {
    const err = await e16.ctrFails(['images', 'import', '--snapshotter', sn, path.join(dir, 'gnu', 'image.docker-archive.tar')]);
    t.regex(err, /unhandled tar header type 83/, sn);
  }
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/sparse-pax:latest', 'docker.io/unionblob/sparse-gnu:latest']).catch(() => {});
});

// A container in its own user namespace, as `ctr run --uidmap` makes one: containerd 1.6/1.7
// prepares a snapshot on the image, chowns every file through its mounts (lchown, id + 100000:
// each one a copy-up) and commits it as "CHAIN-100000-100000". Through unionblob that commit is
// one more blob over the same objects; the container's tree must be what containerd's own
// overlayfs snapshotter gives for the same command, the reference here.
test.serial('1.6: a container in its own user namespace (ctr run --uidmap): containerd\'s chown copy gives overlayfs\'s tree; with --remap-labels the image is served through the mapping, nothing copied', async (t) => {
  t.truthy(e16, 'needs the first test');
  // the container's root (host uid 100000) must reach its bundle under the test's directory
  fs.chmodSync(e16.dir, 0o755);
  await e16.ctr(['images', 'import', '--snapshotter', 'overlayfs', B]);
  const objects = storeObjects(e16.store);
  const map = ['--uidmap', '0:100000:65536', '--gidmap', '0:100000:65536'];
  const views = {};
  for (const sn of ['overlayfs', 'unionblob']) {
    const id = uniq(`userns-${sn}`);
    await e16.ctr(['run', '-d', '--fifo-dir', path.join(e16.dir, 'fifo'), '--snapshotter', sn, ...map, 'docker.io/unionblob/b:latest', id,
      'sh', '-c', '{ id -u; stat -c "%u %g" /etc/shadow; } > /seen-partly; mv /seen-partly /seen-inside; exec sleep 600']);
    const rootfs = await containerView(e16, id);
    for (let i = 0; i < 300 && !fs.existsSync(path.join(rootfs, 'seen-inside')); i++) await sleep(100);
    // inside, the image's own ids (root:shadow), and the container's root can write its rootfs
    t.is(fs.readFileSync(path.join(rootfs, 'seen-inside'), 'utf8'), '0\n0 42\n', sn);
    views[sn] = await treeManifest(rootfs);
    views[sn].entries.delete('seen-inside');
    await stopContainer(e16, id);
  }
  // seen from the host: the ids shifted, and everything else as overlayfs has it
  t.is(views.unionblob.entries.get('etc/shadow')?.uid, 100000);
  t.is(views.unionblob.entries.get('etc/shadow')?.gid, 100042);
  t.deepEqual(diffManifests(views.overlayfs, views.unionblob, { labels: ['overlayfs', 'unionblob'] }).filter((l) => !l.startsWith('.: mtime')), []);
  const remapped = rows(e16).filter((r) => r.kind === 3 && /-100000-100000$/.test(r.key));
  t.is(remapped.length, 1, JSON.stringify(rows(e16).map((r) => r.key)));
  t.deepEqual(storeObjects(e16.store), objects, 'the chowned copy stored contents again');

  // With --remap-labels containerd asks the snapshotter for the mapping (containerd.io/snapshot/
  // uidmapping labels) instead of chowning a copy: the image's blob is served through it, nothing
  // is copied or committed. The reference: umoci's tree of b with every id mapped (the setuid
  // bits the chown above cleared are kept). Two containers with one mapping share one mount.
  const committedBefore = new Set(rows(e16).filter((r) => r.kind === 3).map((r) => r.id));
  const [id, id2] = [uniq('userns-labels'), uniq('userns-labels-2')];
  const runMapped = (cid, script) => e16.ctr(['run', '-d', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, '--remap-labels', ...map,
    'docker.io/unionblob/b:latest', cid, 'sh', '-c', script]);
  // a container without a mapping on the same image: the image's plain mount
  const plain = uniq('userns-plain');
  await e16.ctr(['run', '-d', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/b:latest', plain, 'sleep', '600']);
  await runMapped(id, '{ id -u; stat -c "%u %g" /etc/shadow; } > /seen-partly; mv /seen-partly /seen-inside; exec sleep 600');
  await runMapped(id2, 'exec sleep 600');
  const rootfs = await containerView(e16, id);
  for (let i = 0; i < 300 && !fs.existsSync(path.join(rootfs, 'seen-inside')); i++) await sleep(100);
  t.is(fs.readFileSync(path.join(rootfs, 'seen-inside'), 'utf8'), '0\n0 42\n');
  t.deepEqual(rows(e16).filter((r) => r.kind === 3 && !committedBefore.has(r.id)).map((r) => r.key), [], 'a snapshot was committed for the mapping');
  const mine = rows(e16).find((r) => r.key.endsWith(`/${id}`));
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'snapshots', String(mine.id), 'fs')).sort(), ['seen-inside'], 'something was copied up');
  const view = await treeManifest(rootfs);
  view.entries.delete('seen-inside');
  const ref = await treeManifest(images.images.b.reference);
  for (const e of ref.entries.values()) {
    e.uid = e.uid < 65536 ? e.uid + 100000 : 65534;
    e.gid = e.gid < 65536 ? e.gid + 100000 : 65534;
  }
  t.deepEqual(diffManifests(ref, view, { labels: ['umoci+100000', 'unionblob'] }).filter((l) => !l.startsWith('.: mtime')), []);
  t.true([...ref.entries.values()].some((e) => /^[4-7]/.test(e.mode)), 'no setuid or setgid file in image b');
  const mappedMounts = () => fs.readdirSync(path.join(e16.ubRoot, 'mounts')).filter((n) => n.includes('-'));
  t.is(mappedMounts().length, 1, 'one mount of the image through the mapping for both containers');
  // the image's plain mount goes with the last container using it, whatever mapped ones remain
  const parentMount = path.join(e16.ubRoot, 'mounts', mappedMounts()[0].split('-')[0]);
  t.true(mountsUnder(path.join(e16.ubRoot, 'mounts')).includes(parentMount));
  await stopContainer(e16, plain);
  for (let i = 0; i < 100 && rows(e16).some((r) => r.key.endsWith(`/${plain}`)); i++) await sleep(100);
  t.false(mountsUnder(path.join(e16.ubRoot, 'mounts')).includes(parentMount), 'the plain mount kept for mapped children');
  // the first container goes: the mount stays for the second
  await stopContainer(e16, id);
  // (containerd's garbage collector removes the snapshot, soon after)
  for (let i = 0; i < 100 && rows(e16).some((r) => r.key.endsWith(`/${id}`)); i++) await sleep(100);
  t.false(rows(e16).some((r) => r.key.endsWith(`/${id}`)));
  t.is(mappedMounts().length, 1);
  t.regex(await e16.ctr(['task', 'exec', '--exec-id', 'read', id2, 'cat', '/etc/debian_version']), /^\d+\.\d+\s*$/);
  // the mapping a snapshot is mounted through cannot be relabelled away (its lower would go)
  for (const label of ['containerd.io/snapshot/uidmapping=', 'containerd.io/snapshot/gidmapping=0:200000:65536']) {
    t.regex(await e16.ctrFails(['snapshots', ...SN, 'label', id2, label]), /fixed when it is prepared/);
  }
  await e16.ctr(['snapshots', ...SN, 'label', id2, 'example.com/other=1']);
  t.is(JSON.parse(await e16.ctr(['snapshots', ...SN, 'info', id2])).Labels['example.com/other'], '1');
  // A Commit of the second (as nerdctl commit does) gets the image's ids back, not the host's:
  // a copied-up file, a new file given to a user, the root the upper was made for.
  await e16.ctr(['task', 'exec', '--exec-id', 'write', id2, 'sh', '-c', 'chmod 600 /etc/debian_version && echo n > /made && chown 1000:1000 /made']);
  await stopTask(e16, id2);
  const committed = uniq('userns-committed');
  await e16.ctr(['snapshots', ...SN, 'commit', committed, id2]);
  await e16.ctr(['containers', 'rm', '--keep-snapshot', id2]);
  const row = rows(e16).find((r) => r.key.endsWith(`/${committed}`));
  const dumped = new Map(execFileSync(process.execPath, [CFS, 'dump', '--json', path.join(e16.ubRoot, 'snapshots', String(row.id), 'blob')], { encoding: 'utf8', maxBuffer: 1 << 28 })
    .trim().split('\n').slice(1).map((l) => JSON.parse(l)).map((e) => [e.path, e]));
  const ids = (p) => `${dumped.get(p)?.uid} ${dumped.get(p)?.gid}`;
  t.is(ids('/'), '0 0');
  t.is(ids('/etc/debian_version'), '0 0');
  t.is(dumped.get('/etc/debian_version').mode & 0o7777, 0o600);
  t.is(ids('/made'), '1000 1000');
  t.is(ids('/etc/shadow'), '0 42');
  // the mapped mount went with the last snapshot using it
  t.deepEqual(mappedMounts(), []);
  t.deepEqual(mountsUnder(path.join(e16.ubRoot, 'mounts')).filter((m) => path.basename(m).includes('-')), []);
  await e16.ctr(['snapshots', ...SN, 'rm', committed]);
});

test.serial('1.6: killed mid-import, restarted, imported again: consistent', async (t) => {
  t.truthy(e16, 'needs the first test');
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/a:latest', 'docker.io/unionblob/b:latest']);
  await sleep(500);
  const logStart = e16.log().length;
  const importing = e16.ctr(['images', 'import', ...SN, A]).then(() => 'ok', (err) => String(err.stderr || err.message));
  // kill while containerd applies the base layer into its upper and the snapshotter compiles
  // it ahead from the content store: soon after the Prepare (a fixed 2.5 s let a quiet machine
  // finish the whole import first)
  for (let i = 0; i < 300 && !e16.log().slice(logStart).includes('prepare '); i++) await sleep(20);
  await sleep(300);
  e16.killSnapshotter('SIGKILL');
  t.not(await importing, 'ok');
  await e16.startSnapshotter();
  await sleep(2000); // containerd reconnects to the proxy a moment after it is back
  let ok = false;
  for (let i = 0; i < 10 && !ok; i++) {
    try {
      await e16.ctr(['images', 'import', ...SN, A]);
      ok = true;
    } catch (err) {
      t.log(`retry import: ${err.stderr || err.message}`);
      await sleep(1000);
    }
  }
  t.true(ok);
  const out = await e16.ctr(['run', '--rm', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/a:latest', uniq('c4'), 'cat', '/etc/debian_version']);
  t.regex(out, /^\d+\.\d+\s*$/);
  // consistent: what containerd lists is what the database holds, and every row has its files.
  // containerd's garbage collector may still be removing the failed import's snapshots (a
  // Remove deletes the row, then the directory): wait until no Remove is in flight.
  const dirIds = () => fs.readdirSync(path.join(e16.ubRoot, 'snapshots')).map(Number).sort((x, y) => x - y);
  for (let i = 0; i < 50 && JSON.stringify(dirIds()) !== JSON.stringify(rows(e16).map((r) => r.id)); i++) await sleep(100);
  const listed = chainIds(await e16.ctr(['snapshots', ...SN, 'ls']));
  const db = rows(e16);
  for (const c of listed) t.true(db.some((r) => r.key.endsWith(c)), `${c} listed but not in the database`);
  for (const r of db) {
    const files = fs.readdirSync(path.join(e16.ubRoot, 'snapshots', String(r.id)));
    if (r.kind === 3) t.deepEqual(files, ['blob']);
    else t.true(files.includes('fs'), `active snapshot ${r.id} has its upper: ${files}`);
  }
  t.deepEqual(dirIds(), db.map((r) => r.id));
  // every committed blob is whole and has all its objects, intact, in the store
  for (const r of db.filter((r) => r.kind === 3)) {
    const f = cfs('fsck', path.join(e16.ubRoot, 'snapshots', String(r.id), 'blob'), '--store', e16.store);
    t.is(f.code, 0, `fsck of snapshot ${r.id}: ${f.out}${f.err}`);
  }
  // and a Cleanup leaves no temp file or object journal of the killed compile
  await snapshotsCall(path.join(e16.dir, 'ub.sock'), 'Cleanup', {});
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'tmp')), []);
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'journal')), []);
});

test.serial('1.6: images rm --sync: every snapshot, mount, upper gone; objects only while a cfs build blob needs them', async (t) => {
  t.truthy(e16, 'needs the first test');
  t.truthy(userBlob, 'needs the second test');
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/a:latest']);
  for (let i = 0; i < 50 && rows(e16).length > 0; i++) await sleep(100);
  t.deepEqual(rows(e16), []);
  t.is(chainIds(await e16.ctr(['snapshots', ...SN, 'ls'])).length, 0);
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'snapshots')), []);
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'mounts')), []);
  t.deepEqual(mountsUnder(e16.ubRoot), []);
  // Every root left is the user's blob, which keeps exactly its objects (the snapshotter
  // created them all, and collected every other one).
  const roots = fs.readdirSync(path.join(e16.store, 'roots')).map((n) => fs.readlinkSync(path.join(e16.store, 'roots', n)));
  t.deepEqual(roots, [userBlob]);
  t.deepEqual(storeObjects(e16.store), [...await referencedDigests([userBlob])].sort());
  t.is(cfs('fsck', userBlob, '--store', e16.store).code, 0);
  // Once that blob is gone, the snapshotter's next Cleanup collects them; cfs gc drops the root.
  fs.rmSync(userBlob);
  await snapshotsCall(path.join(e16.dir, 'ub.sock'), 'Cleanup', {});
  t.deepEqual(storeObjects(e16.store), []);
  for (const d of ['tmp', 'journal']) t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, d)), [], `${d}/ is empty`);
  t.deepEqual(spawnSync('pgrep', ['-f', `unionblob-fuse.*${e16.ubRoot}`], { encoding: 'utf8' }).stdout.trim(), '', 'no FUSE server left running');
  const gc = cfs('gc', '--store', e16.store, '--all-unreferenced');
  t.is(gc.code, 0, gc.err);
  t.regex(gc.out, new RegExp(`^dropped dangling root \\S+ -> ${userBlob}$`, 'm'));
  t.deepEqual(fs.readdirSync(path.join(e16.store, 'roots')), []);
});

test.serial('1.6: Cleanup during an import (compile-ahead writing objects) loses track of no object', async (t) => {
  t.truthy(e16, 'needs the first test');
  t.deepEqual(storeObjects(e16.store), [], 'the store starts empty (the test before emptied it)');
  // Cleanup adopts the journals of writers that are gone; a compile-ahead still appending to its
  // own must keep it, or the objects written after the takeover are never recorded as ours and
  // no Cleanup ever deletes them.
  const sock = path.join(e16.dir, 'ub.sock');
  let importing = true;
  const imported = e16.ctr(['images', 'import', ...SN, B]).finally(() => { importing = false; });
  let cleanups = 0;
  while (importing) {
    await snapshotsCall(sock, 'Cleanup', {});
    cleanups++;
  }
  await imported;
  t.log(`${cleanups} Cleanups during the import`);
  t.true(cleanups > 3, 'Cleanup ran while the layers were compiled');
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/b:latest']);
  for (let i = 0; i < 50 && rows(e16).length > 0; i++) await sleep(100);
  t.deepEqual(rows(e16), []);
  await snapshotsCall(sock, 'Cleanup', {});
  t.deepEqual(storeObjects(e16.store), [], 'every object the import wrote was collected');
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'journal')), []);
});

// ------------------------------------------------------------------------------ containerd 1.7

test.serial('1.7: fast path (transfer service): no layer unpacked, blob equals cfs build and the slow path\'s, tree equals umoci', async (t) => {
  const bin = path.join(fetchContainerd17(), 'usr', 'bin');
  const e = await env({ bin, transfer: true });
  t.regex(await e.ctr(['version']), /Version:\s+1\.7\./);
  // Watch where a layer would be unpacked: our snapshot directories (an upper is snapshots/N/fs,
  // made as tmp/new-*/fs) and containerd's temp mounts (where its applier mounts one).
  const tmpmounts = path.join(e.dir, 'root', 'tmpmounts');
  fs.mkdirSync(tmpmounts, { recursive: true });
  const created = await pathsCreatedDuring([e.ubRoot, tmpmounts], () => e.ctr(['images', 'import', '--local=false', ...SN, A]));
  const log = e.log();
  t.is((log.match(/fast path: sha256:/g) ?? []).length, 3, log);
  t.notRegex(log, /prepare .*extract-/); // no active snapshot, so no upper directory, was ever made
  t.true(created.some((p) => /\/snapshots\/\d+\/blob$/.test(p)), `the watch saw the blobs being written: ${created.join(' ')}`);
  t.deepEqual(created.filter((p) => p.startsWith(tmpmounts) || /\/(fs|work)(\/|$)|\/tmp\/new-/.test(p)), []);
  const db = rows(e);
  t.is(db.length, 3);
  for (const r of db) t.deepEqual(fs.readdirSync(path.join(e.ubRoot, 'snapshots', String(r.id))), ['blob']);
  const snapTree = await e.ctr(['snapshots', ...SN, 'tree']);
  const chain = chainIds(snapTree);
  t.is(chain.length, 3, snapTree);
  t.is(((await e.ctr(['snapshots', ...SN, 'ls'])).match(/Committed/g) ?? []).length, 3);
  const usage = await e.ctr(['snapshots', ...SN, 'usage']);
  for (const c of chain) t.true(usage.includes(c), usage);
  const printed = await e.ctr(['run', '--rm', '--fifo-dir', path.join(e.dir, 'fifo'), ...SN, 'docker.io/unionblob/a:latest', uniq('f0'),
    'sh', '-c', 'cat /etc/debian_version && echo written > /written-by-test && cat /written-by-test']);
  t.regex(printed, /^\d+\.\d+\s+written\s*$/);
  // a container in its own user namespace: containerd 1.7 hands the mapping over (the proxy
  // plugin declares remap-ids, as examples/containerd/config.toml does) instead of chowning a copy
  fs.chmodSync(e.dir, 0o755);
  const userns = await e.ctr(['run', '--rm', '--fifo-dir', path.join(e.dir, 'fifo'), ...SN, '--remap-labels', '--uidmap', '0:100000:65536',
    '--gidmap', '0:100000:65536', 'docker.io/unionblob/a:latest', uniq('f-userns'), 'sh', '-c', 'id -u; stat -c "%u %g" /etc/shadow']);
  t.is(userns, '0\n0 42\n');
  t.false(rows(e).some((r) => /-100000-100000/.test(r.key)), 'containerd chowned a copy of the image');
  const top = db.find((r) => !db.some((c) => c.parent_id === r.id));
  const built = path.join(e.dir, 'a.blob');
  execFileSync(process.execPath, [CFS, 'build', '--ignore-root-entries', A, '-o', built, '--store', path.join(e.dir, 'ref-store')]);
  const fastBlob = path.join(e.ubRoot, 'snapshots', String(top.id), 'blob');
  t.true(fs.readFileSync(built).equals(fs.readFileSync(fastBlob)));

  // The same image through the slow path (client-side unpack in another namespace: containerd
  // applies each layer into an upper while we compile the same layer, named by the extraction
  // key's chain id, from its content store; Commit takes that): the fast path's blob exactly.
  const topBlob = (ns) => {
    const committed = rows(e).filter((r) => r.key.startsWith(`${ns}/`) && r.kind === 3);
    t.is(committed.length, 3);
    return path.join(e.ubRoot, 'snapshots', String(committed.find((r) => !committed.some((c) => c.parent_id === r.id)).id), 'blob');
  };
  await e.ctr(['-n', 'slow', 'images', 'import', '--local=true', ...SN, A]);
  t.regex(e.log(), /prepare slow\/\d+\/extract-/);
  t.is((e.log().match(/fast path: sha256:/g) ?? []).length, 3);
  t.is((e.log().match(/commit slow\/\S+ sha256:\S+ -> \S+ \(id \d+\): compiled ahead from sha256:/g) ?? []).length, 3, e.log());
  const dump = (blob) => execFileSync(process.execPath, [CFS, 'dump', blob], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const fastDump = dump(fastBlob);
  t.is(dump(topBlob('slow')), fastDump);

  await e.ctr(['run', '-d', '--fifo-dir', path.join(e.dir, 'fifo'), ...SN, 'docker.io/unionblob/a:latest', uniq('f1'),
    'sh', '-c', 'cat /etc/debian_version > /written-by-test; exec sleep 600']);
  const rootfs = await containerView(e, uniq('f1'));
  for (let i = 0; i < 200 && !writtenLine(path.join(rootfs, 'written-by-test')); i++) await sleep(100);
  t.regex(fs.readFileSync(path.join(rootfs, 'written-by-test'), 'utf8'), /^\d+\.\d+\n$/);
  t.regex(await e.ctr(['snapshots', ...SN, 'mounts', '/mnt', uniq('f1')]), /mount -t overlay overlay \/mnt -o .*upperdir=.*lowerdir=[^:,\s]*\/mounts\/\d+(,|\s|$)/);
  const got = await treeManifest(rootfs);
  got.entries.delete('written-by-test');
  // the container's root directory is the overlay's upper root: its mtime moves when runc or
  // the test writes into it
  t.deepEqual(diffManifests(await treeManifest(REF_A), got).filter((l) => !l.startsWith('.: mtime')), []);
  await e.ctr(['task', 'kill', '-s', 'SIGKILL', uniq('f1')]);

  // With --containerd-root the layers come from containerd's blob files instead of its Read RPC:
  // the same blob (an uncompressed layer's file is not hashed again: containerd checked it
  // against its name when it committed it; a compressed layer's tar still is, for the diff_id).
  t.is((e.log().match(/fast path: sha256:\S+ \(id \d+\) compiled from sha256:\S+ \(content API\)/g) ?? []).length, 3);
  // (the fast path's snapshots are named by chain id alone: the image goes first)
  await e.ctr(['task', 'rm', '-f', uniq('f1')]);
  await e.ctr(['containers', 'rm', uniq('f1')]);
  await e.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/a:latest']);
  t.false(rows(e).some((r) => r.key.startsWith('sha256:')));
  // containerd then ingests a's layers anew (a blob it still had for another namespace would
  // not be written again, so there would be nothing to speculate on)
  await e.ctr(['-n', 'slow', 'images', 'rm', '--sync', 'docker.io/unionblob/a:latest']);
  e.killSnapshotter('SIGTERM');
  await sleep(500);
  // ...and with --speculate-ingests the base layer is compiled while containerd ingests it
  // (image a's base layer is an uncompressed tar): the same blob again.
  await e.startSnapshotter({ containerdRoot: true, args: ['--no-compile-ahead', '--speculate-ingests'] });
  await e.ctr(['images', 'import', '--local=false', ...SN, A]);
  // the start-up line says how objects are made (npm test builds the addon)
  t.regex(e.log(), /serving containerd snapshots API .*; objects created with O_TMPFILE \+ linkat \(Node addon\)\)/);
  t.is((e.log().match(/fast path: sha256:\S+ \(id \d+\) compiled from sha256:\S+ \(file\)/g) ?? []).length, 2, e.log());
  t.is((e.log().match(/fast path: sha256:\S+ \(id \d+\) compiled from sha256:\S+ \(ingest, while containerd wrote it\)/g) ?? []).length, 1, e.log());
  const fileRows = rows(e).filter((r) => r.key.startsWith('sha256:'));
  t.is(fileRows.length, 3);
  const fileTop = fileRows.find((r) => !fileRows.some((c) => c.parent_id === r.id));
  t.true(fs.readFileSync(built).equals(fs.readFileSync(path.join(e.ubRoot, 'snapshots', String(fileTop.id), 'blob'))));

  // The slow path without compiling ahead: containerd applies each layer into an upper, Commit
  // compiles the upper. The same tree but for what containerd's applier changes.
  await e.ctr(['-n', 'upper', 'images', 'import', '--local=true', ...SN, A]);
  t.regex(e.log(), /commit upper\/\S+ sha256:\S+ -> \S+ \(id \d+\): \d+ upper entries/);
  t.notRegex(e.log(), /commit upper\/.*compiled ahead/);
  const upperDump = dump(topBlob('upper'));
  t.deepEqual(applierDumpDiffs(fastDump, upperDump), []);
  t.not(fastDump, upperDump); // the applier's differences are there (else this test checks nothing)

  // The slow path with both compile-ahead and --speculate-ingests: the base layer is compiled,
  // and its objects synced, while containerd ingests it, so its Commit has no syncfs to empty
  // the upper for: the upper goes to the trash (tmp/) and is deleted after the Commit returns.
  // The same blob again, and no upper left behind.
  for (const ns of ['default', 'upper']) await e.ctr(['-n', ns, 'images', 'rm', '--sync', 'docker.io/unionblob/a:latest']);
  e.killSnapshotter('SIGTERM');
  await sleep(500);
  const servedBefore = e.log().split('serving containerd snapshots API').length;
  await e.startSnapshotter({ containerdRoot: true, args: ['--speculate-ingests'] });
  for (let i = 0; i < 100 && e.log().split('serving containerd snapshots API').length === servedBefore; i++) await sleep(100);
  await e.ctr(['-n', 'spec', 'images', 'import', '--local=true', ...SN, A]);
  t.regex(e.log(), /compile ahead of snapshot \d+: sha256:\S+ was compiled while containerd ingested it/);
  const specCommits = e.log().match(/commit spec\/\S+ sha256:\S+ -> .*compiled ahead from .*/g) ?? [];
  t.is(specCommits.length, 3, e.log());
  const baseCommit = specCommits.find((l) => l.includes('read+parse while ingested'));
  t.truthy(baseCommit, e.log());
  t.notRegex(baseCommit, /upper emptied/); // not emptied before the Commit's end, then
  t.true(fs.readFileSync(built).equals(fs.readFileSync(topBlob('spec'))));
  await snapshotsCall(path.join(e.dir, 'ub.sock'), 'Cleanup', {}); // waits for the trash to be empty
  for (const r of rows(e).filter((r) => r.key.startsWith('spec/'))) {
    t.deepEqual(fs.readdirSync(path.join(e.ubRoot, 'snapshots', String(r.id))), ['blob']);
  }
  t.deepEqual(fs.readdirSync(path.join(e.ubRoot, 'tmp')), []);
});

/** True once the container's shell has written a whole line: its redirect creates the file
 * before the command writes into it, so existence alone races with the write. */
function writtenLine(file) {
  try { return fs.readFileSync(file, 'utf8').endsWith('\n'); } catch { return false; }
}

test('splitSubtrees: an upper shared out for two find(1)s, each subtree once, about evenly', (t) => {
  const file = () => ({ mode: 0o100644, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0 });
  const dir = (entries) => {
    const d = newDir();
    for (const [name, node] of Object.entries(entries)) d.children.set(Buffer.from(name, 'utf8').toString('latin1'), node);
    return d;
  };
  const many = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, file()]));
  const tree = dir({
    usr: dir({ share: dir({ doc: dir(many(20)), man: dir(many(20)), 'ünï': dir(many(5)) }), lib: dir(many(20)) }),
    etc: dir(many(10)),
    bin: file(),
  });
  tree.children.set('bad\xff', dir(many(3))); // not UTF-8: left to the last find
  const [a, b] = splitSubtrees(tree, 2);
  const all = [...a, ...b].sort();
  // 88 entries: usr (71) and usr/share (49) outweigh half a group (22), so they are split into
  // their entries, the rest is not; nothing is listed twice
  t.deepEqual(all, ['bin', 'etc', 'usr/lib', 'usr/share/doc', 'usr/share/man', 'usr/share/ünï'].sort());
  const weight = { 'usr/share/doc': 21, 'usr/share/man': 21, 'usr/lib': 21, etc: 11, 'usr/share/ünï': 6, bin: 1 };
  const [wa, wb] = [a, b].map((g) => g.reduce((sum, p) => sum + weight[p], 0));
  t.deepEqual([wa, wb].sort(), [39, 42]);
});

test('startPointsIn: no start point for find(1) behind a symlink in the upper', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-startpoints-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const upper = path.join(dir, 'upper');
  const outside = path.join(dir, 'outside');
  fs.mkdirSync(path.join(upper, 'usr', 'share'), { recursive: true });
  fs.mkdirSync(path.join(outside, 'share'), { recursive: true });
  fs.writeFileSync(path.join(outside, 'share', 'keep'), 'host file');
  fs.symlinkSync(outside, path.join(upper, 'etc')); // the tree says etc/ is a directory
  fs.symlinkSync('/nonexistent', path.join(upper, 'link')); // a start point may be a symlink
  const got = startPointsIn(upper, ['usr/share', 'etc/share', 'link', 'missing/x', 'usr/none']);
  t.deepEqual(got, [path.join(upper, 'usr', 'share'), path.join(upper, 'link')]);
  // what emptyUpper then runs: the host file behind the symlink survives, the upper empties
  execFileSync('find', [...got, '-delete']);
  execFileSync('find', [upper, '-mindepth', '1', '-delete']);
  t.is(fs.readFileSync(path.join(outside, 'share', 'keep'), 'utf8'), 'host file');
  t.deepEqual(fs.readdirSync(upper), []);
});

test('examples/containerd/config.toml: containerd 1.6 and 1.7 load it with the unionblob proxy plugin (and 1.7 its transfer unpack)', (t) => {
  const config = path.join(REPO, 'examples', 'containerd', 'config.toml');
  for (const [version, containerd] of [['1.6', 'containerd'], ['1.7', path.join(fetchContainerd17(), 'usr', 'bin', 'containerd')]]) {
    const r = spawnSync(containerd, ['--config', config, 'config', 'dump'], { encoding: 'utf8' });
    t.is(r.status, 0, `${version}: ${r.stderr}`);
    t.regex(r.stdout, /\[proxy_plugins\.unionblob\]\s+address = "\/run\/unionblob-snapshotter\/snapshotter\.sock"\s+(\w+ = \S+\s+)*type = "snapshot"/, version);
    if (version === '1.7') {
      t.regex(r.stdout, /\[\[plugins\."io\.containerd\.transfer\.v1\.local"\.unpack_config\]\][^[]*snapshotter = "unionblob"/);
      // the uid/gid mapping goes to the snapshotter instead of a chown copy
      t.regex(r.stdout, /\[proxy_plugins\.unionblob\][^[]*capabilities = \["remap-ids"\]/);
    }
  }
  // the unit starts the snapshotter on the socket the snippet names
  const unit = fs.readFileSync(path.join(REPO, 'examples', 'containerd', 'unionblob-snapshotter.service'), 'utf8').replace(/\\\n/g, ' ');
  t.regex(unit, /^ExecStart=.*\/bin\/cfs snapshotter .*--address \/run\/unionblob-snapshotter\/snapshotter\.sock /m);
  // and every option it passes is one `cfs snapshotter` takes
  const help = spawnSync(process.execPath, [CFS, 'snapshotter', '--help'], { encoding: 'utf8' }).stdout;
  const options = unit.match(/^ExecStart=(.*)$/m)[1].match(/--[a-z-]+/g);
  t.true(options.length >= 4, options.join(' '));
  for (const o of options) t.true(help.includes(`${o} `), `cfs snapshotter takes ${o}`);
});

// ------------------------------------------------------------------------------ gRPC status codes

test.serial('gRPC status codes as containerd expects', async (t) => {
  const grpc = await import('@grpc/grpc-js');
  const { loadApi, lookup } = await import('../dist/snapshotter/proto.js');
  const { serve } = await import('../dist/snapshotter/server.js');
  const dir = fs.mkdtempSync('/tmp/ubsn-codes-');
  const logged = [];
  let running = await serve({ root: path.join(dir, 'root'), address: path.join(dir, 'sock'), log: (l) => logged.push(l) });
  const Snapshots = lookup(loadApi().snapshots, 'containerd.services.snapshots.v1.Snapshots');
  let client = new Snapshots(`unix://${path.join(dir, 'sock')}`, grpc.credentials.createInsecure());
  const call = (m, req) => new Promise((resolve) => client[m](req, (err, res) => resolve(err ? { code: err.code } : { res })));
  try {
    const S = grpc.status;
    t.truthy((await call('Prepare', { key: 'ns/1/a', parent: '' })).res);
    t.is((await call('Prepare', { key: 'ns/1/a', parent: '' })).code, S.ALREADY_EXISTS);
    t.is((await call('Stat', { key: 'nope' })).code, S.NOT_FOUND);
    t.is((await call('Prepare', { key: 'ns/2/b', parent: 'nope' })).code, S.NOT_FOUND);
    t.is((await call('Prepare', { key: 'ns/2/b', parent: 'ns/1/a' })).code, S.INVALID_ARGUMENT); // parent not committed
    fs.writeFileSync(path.join(dir, 'root/snapshots/1/fs/hello'), 'hello world\n'.repeat(10)); // stored as an object
    t.truthy((await call('Commit', { name: 'ns/3/c', key: 'ns/1/a' })).res);
    // a Commit killed while writing its blob leaves blob.tmp-PID beside it: Cleanup removes it
    const committedDir = fs.readdirSync(path.join(dir, 'root/snapshots')).map((n) => path.join(dir, 'root/snapshots', n))
      .find((d) => fs.existsSync(path.join(d, 'blob')));
    fs.writeFileSync(path.join(committedDir, 'blob.tmp-4194304'), 'half a blob');
    t.truthy((await call('Cleanup', {})).res);
    t.deepEqual(fs.readdirSync(committedDir).filter((n) => n.startsWith('blob.')), [], 'no blob temp file left');
    t.is((await call('Commit', { name: 'ns/4/d', key: 'ns/3/c' })).code, S.FAILED_PRECONDITION); // not active
    t.is((await call('Mounts', { key: 'ns/3/c' })).code, S.FAILED_PRECONDITION);
    // uid/gid mapping labels: both or neither, well formed, with a parent; nothing left behind
    const U = 'containerd.io/snapshot/uidmapping';
    const G = 'containerd.io/snapshot/gidmapping';
    for (const [labels, parent] of [[{ [U]: '0:100000:65536' }, 'ns/3/c'], [{ [U]: '0:0:4294967296', [G]: '0:0:1' }, 'ns/3/c'],
      [{ [U]: '0:100000:10,5:1:1', [G]: '0:1:1' }, 'ns/3/c'], [{ [U]: '0:1:1', [G]: '0:1:1' }, '']]) {
      t.is((await call('Prepare', { key: 'ns/9/mapped', parent, labels })).code, S.INVALID_ARGUMENT, JSON.stringify(labels));
      t.is((await call('Stat', { key: 'ns/9/mapped' })).code, S.NOT_FOUND);
    }
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/mounts')).filter((n) => n.includes('-')), []);
    const v = await call('View', { key: 'ns/5/v', parent: 'ns/3/c' });
    t.is(v.res.mounts[0].type, 'bind');
    t.true(v.res.mounts[0].options.includes('ro'), v.res.mounts[0].options.join(','));
    t.is(fs.readFileSync(path.join(v.res.mounts[0].source, 'hello'), 'utf8'), 'hello world\n'.repeat(10));
    // a View is read-only down to its source: the blob's own mount refuses writes
    t.throws(() => fs.writeFileSync(path.join(v.res.mounts[0].source, 'new-file'), 'x'), { code: 'EROFS' });
    t.throws(() => fs.appendFileSync(path.join(v.res.mounts[0].source, 'hello'), 'x'), { code: 'EROFS' });
    t.is((await call('Remove', { key: 'ns/3/c' })).code, S.FAILED_PRECONDITION); // has a child
    t.is((await call('Update', { info: { name: 'ns/3/c', labels: { x: 'y' } }, update_mask: { paths: ['kind'] } })).code, S.INVALID_ARGUMENT);
    t.deepEqual((await call('Update', { info: { name: 'ns/3/c', labels: { x: 'y' } }, update_mask: { paths: ['labels.x'] } })).res.info.labels, { x: 'y' });
    // a committed snapshot's usage: its blob (4 KiB blocks) and the objects it added (one: hello)
    const blobBytes = fs.statSync(path.join(committedDir, 'blob')).size;
    const cUsage = (await call('Usage', { key: 'ns/3/c' })).res;
    t.deepEqual([Number(cUsage.size), Number(cUsage.inodes)], [Math.ceil(blobBytes / 4096) * 4096 + 120, 2]);
    t.is(fs.readdirSync(path.join(dir, 'root/store/objects')).filter((n) => !n.startsWith('.')).length, 1);

    // what containerd's own snapshotters do (snapshots/storage, filters): labels with empty
    // values are not kept; Commit replaces the labels, it does not inherit the active's; Usage of
    // an active snapshot is its upper now; a view's parent must be committed; Walk filters read
    // an absent field as "" for != and ~=, and a bad regexp matches nothing
    const overlay = (await call('Prepare', { key: 'ns/6/l', parent: 'ns/3/c', labels: { keep: 'a', empty: '' } })).res.mounts[0];
    t.is(overlay.type, 'overlay');
    const upper = overlay.options.find((o) => o.startsWith('upperdir=')).slice('upperdir='.length);
    t.deepEqual((await call('Stat', { key: 'ns/6/l' })).res.info.labels, { keep: 'a' });
    t.is((await call('View', { key: 'ns/6/v', parent: 'ns/6/l' })).code, S.INVALID_ARGUMENT);
    fs.writeFileSync(path.join(upper, 'big'), Buffer.alloc(40960, 1));
    const used = (await call('Usage', { key: 'ns/6/l' })).res;
    t.is(Number(used.inodes), 2);
    t.true(Number(used.size) >= 40960, JSON.stringify(used));
    t.truthy((await call('Commit', { name: 'ns/7/lc', key: 'ns/6/l' })).res);
    t.deepEqual((await call('Stat', { key: 'ns/7/lc' })).res.info.labels, {});
    const list = (filters) => new Promise((resolve, reject) => {
      const names = [];
      client.List({ filters }).on('data', (r) => names.push(...r.info.map((i) => i.name))).on('end', () => resolve(names.sort())).on('error', reject);
    });
    t.deepEqual(await list(['labels.x!=""']), ['ns/3/c']);
    t.deepEqual(await list(['labels.x~=^$']), ['ns/5/v', 'ns/7/lc']);
    t.deepEqual(await list(['kind==committed', 'kind==view']), ['ns/3/c', 'ns/5/v', 'ns/7/lc']);
    t.deepEqual(await list(['name~=[']), []);
    t.deepEqual(await list(['parent==ns/3/c,kind==committed']), ['ns/7/lc']);
    t.truthy((await call('Remove', { key: 'ns/7/lc' })).res);
    t.truthy((await call('Remove', { key: 'ns/5/v' })).res);
    t.truthy((await call('Remove', { key: 'ns/3/c' })).res);
    t.is((await call('Remove', { key: 'ns/3/c' })).code, S.NOT_FOUND);
    // While a writer (a cfs build) holds the store's lock, Cleanup leaves the objects alone.
    const lockFile = path.join(dir, 'root/store/.lock');
    // (flock(1) locks the descriptor it inherits, i.e. our open file description: ours until closed)
    const writer = fs.openSync(lockFile, 'r');
    t.is(spawnSync('flock', ['-s', '3'], { stdio: ['ignore', 'ignore', 'inherit', writer] }).status, 0);
    t.is(spawnSync('flock', ['-n', '-x', lockFile, 'true']).status, 1);
    t.truthy((await call('Cleanup', {})).res);
    t.is(fs.readdirSync(path.join(dir, 'root/store/objects')).filter((n) => !n.startsWith('.')).length, 2);
    t.regex(logged.join('\n'), /cleanup: objects not collected: store \S+ is busy/);
    fs.closeSync(writer);
    const objects = () => fs.readdirSync(path.join(dir, 'root/store/objects')).filter((n) => !n.startsWith('.')).flatMap((f) => fs.readdirSync(path.join(dir, 'root/store/objects', f)));
    t.truthy((await call('Cleanup', {})).res);
    t.deepEqual(objects(), []);

    // containerd calls Cleanup after removing any snapshot, mostly a container's active one,
    // which frees no object: Cleanup then skips the collection, and collects again as soon as
    // something it depends on changed (here: a committed snapshot removed).
    const cupper = (await call('Prepare', { key: 'ns/20/a', parent: '' })).res.mounts[0].source;
    fs.writeFileSync(path.join(cupper, 'obj'), 'an object of its own\n'.repeat(8));
    t.truthy((await call('Commit', { name: 'ns/21/c', key: 'ns/20/a' })).res);
    let mark = logged.length;
    t.truthy((await call('Cleanup', {})).res);
    t.regex(logged.slice(mark).join('\n'), /cleanup: 0 objects \(0 bytes\) removed/, 'a new committed snapshot: collected, its object kept');
    t.is(objects().length, 1);
    t.truthy((await call('Prepare', { key: 'ns/22/x', parent: 'ns/21/c' })).res);
    t.truthy((await call('Remove', { key: 'ns/22/x' })).res);
    mark = logged.length;
    t.truthy((await call('Cleanup', {})).res);
    t.regex(logged.slice(mark).join('\n'), /cleanup: no object can have become garbage since the last one/);
    t.is(objects().length, 1);
    t.truthy((await call('Remove', { key: 'ns/21/c' })).res);
    mark = logged.length;
    t.truthy((await call('Cleanup', {})).res);
    t.regex(logged.slice(mark).join('\n'), /cleanup: 1 objects \(\d+ bytes\) removed/);
    t.deepEqual(objects(), []);

    // Remove deletes the row and moves the directory to tmp/rm-<id>-* in one transaction. What a
    // kill leaves, restarted: a trash entry whose row is still there (the transaction did not
    // commit) is put back; a directory without a row (and any other trash) goes.
    const kupper = (await call('Prepare', { key: 'ns/8/k', parent: '' })).res.mounts[0].source;
    const kid = path.basename(path.dirname(kupper));
    fs.writeFileSync(path.join(kupper, 'kept'), 'kept by a rolled-back Remove\n'.repeat(4));
    t.truthy((await call('Commit', { name: 'ns/9/kc', key: 'ns/8/k' })).res);
    client.close();
    await running.stop();
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/snapshots')), [kid]);
    fs.renameSync(path.join(dir, 'root/snapshots', kid), path.join(dir, `root/tmp/rm-${kid}-1-x`));
    fs.mkdirSync(path.join(dir, 'root/snapshots/99/fs'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'root/tmp/rm-99-1-x'));
    running = await serve({ root: path.join(dir, 'root'), address: path.join(dir, 'sock'), log: (l) => logged.push(l) });
    client = new Snapshots(`unix://${path.join(dir, 'sock')}`, grpc.credentials.createInsecure());
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/snapshots')), [kid]);
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/tmp')), []);
    const kv = await call('View', { key: 'ns/10/kv', parent: 'ns/9/kc' });
    t.is(fs.readFileSync(path.join(kv.res.mounts[0].source, 'kept'), 'utf8'), 'kept by a rolled-back Remove\n'.repeat(4));
    t.truthy((await call('Remove', { key: 'ns/10/kv' })).res);
    t.truthy((await call('Remove', { key: 'ns/9/kc' })).res);
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/snapshots')), []);
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/tmp')), []);
  } finally {
    client.close();
    await running.stop();
    for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('a container Prepare or View on a mounted image answers while another call holds the lock (a Commit waiting for the stores)', async (t) => {
  const grpc = await import('@grpc/grpc-js');
  const { loadApi, lookup } = await import('../dist/snapshotter/proto.js');
  const { serve } = await import('../dist/snapshotter/server.js');
  const dir = fs.mkdtempSync('/tmp/ubsn-nolock-');
  const logged = [];
  // given through a symlink: mountinfo names the real path, which the snapshotter must compare with
  fs.mkdirSync(path.join(dir, 'real-root'));
  fs.symlinkSync('real-root', path.join(dir, 'root'));
  const running = await serve({ root: path.join(dir, 'root'), address: path.join(dir, 'sock'), log: (l) => logged.push(l) });
  const Snapshots = lookup(loadApi().snapshots, 'containerd.services.snapshots.v1.Snapshots');
  const client = new Snapshots(`unix://${path.join(dir, 'sock')}`, grpc.credentials.createInsecure());
  const call = (m, req) => new Promise((resolve) => client[m](req, (err, res) => resolve(err ? { code: err.code, message: err.details } : { res })));
  const within = (p, ms) => Promise.race([p, sleep(ms).then(() => 'still waiting')]);
  let gc = null;
  try {
    const base = (await call('Prepare', { key: 'ns/1/a', parent: '' })).res.mounts[0].source;
    fs.writeFileSync(path.join(base, 'hello'), 'hello from the image\n'.repeat(10));
    t.truthy((await call('Commit', { name: 'ns/2/image', key: 'ns/1/a' })).res);
    // the first container mounts the image's blob (through the lock: it was not mounted)
    t.is((await call('Prepare', { key: 'ns/3/c1', parent: 'ns/2/image' })).res.mounts[0].type, 'overlay');
    const layer = (await call('Prepare', { key: 'ns/4/layer', parent: 'ns/2/image' })).res.mounts[0];
    const upper = layer.options.find((o) => o.startsWith('upperdir=')).slice('upperdir='.length);
    fs.writeFileSync(path.join(upper, 'new'), 'a layer\'s file\n'.repeat(10));
    // a gc holds the stores: the Commit waits for them, holding the call lock
    gc = fs.openSync(path.join(dir, 'root/store/.lock'), 'r');
    t.is(spawnSync('flock', ['-x', '3'], { stdio: ['ignore', 'ignore', 'inherit', gc] }).status, 0);
    let committed = false;
    const commit = call('Commit', { name: 'ns/5/lc', key: 'ns/4/layer' }).then((r) => { committed = true; return r; });
    for (let i = 0; i < 100 && !logged.some((l) => /waiting for the gc/.test(l)); i++) await sleep(50);
    t.false(committed);
    // ...while a container of the mounted image starts, and a view of it is taken
    const c2 = await within(call('Prepare', { key: 'ns/6/c2', parent: 'ns/2/image' }), 5000);
    t.not(c2, 'still waiting', 'Prepare waited behind the Commit');
    t.is(c2.res.mounts[0].type, 'overlay');
    t.true(logged.some((l) => /^prepare ns\/6\/c2 .*no lock/.test(l)), 'taken without the lock');
    const v = await within(call('View', { key: 'ns/7/v', parent: 'ns/2/image' }), 5000);
    t.not(v, 'still waiting', 'View waited behind the Commit');
    t.is(fs.readFileSync(path.join(v.res.mounts[0].source, 'hello'), 'utf8'), 'hello from the image\n'.repeat(10));
    t.false(committed, 'the Commit still waits for the stores');
    // the snapshot made without the lock is whole: its upper is where its mounts say, with the image's root metadata
    const c2upper = c2.res.mounts[0].options.find((o) => o.startsWith('upperdir=')).slice('upperdir='.length);
    t.true(fs.statSync(c2upper).isDirectory());
    const rootOf = (p) => { const st = fs.statSync(p); return [st.mode & 0o7777, st.uid, st.gid, st.mtimeMs]; };
    t.deepEqual(rootOf(c2upper), rootOf(v.res.mounts[0].source));
    fs.closeSync(gc);
    gc = null;
    t.truthy((await commit).res);
    t.is((await call('Prepare', { key: 'ns/6/c2', parent: 'ns/2/image' })).code, grpc.status.ALREADY_EXISTS);
    // Cleanup (it unmounts what no open snapshot needs) keeps the image mounted for c1, c2 and v
    t.truthy((await call('Cleanup', {})).res);
    t.is(fs.readFileSync(path.join(v.res.mounts[0].source, 'hello'), 'utf8'), 'hello from the image\n'.repeat(10));
    // the image's FUSE server dies: the next container does not get the dead mount as its lower
    const lower = v.res.mounts[0].source;
    const server = spawnSync('pgrep', ['-f', `unionblob-fuse .* ${lower}( |$)`], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
    t.truthy(server, 'the FUSE server of the image mount');
    process.kill(Number(server), 'SIGKILL');
    for (let i = 0; i < 50; i++) { try { fs.statfsSync(lower); await sleep(50); } catch { break; } }
    t.throws(() => fs.statfsSync(lower), { code: 'ENOTCONN' });
    const c3 = await call('Prepare', { key: 'ns/8/c3', parent: 'ns/2/image' });
    t.is(c3.res.mounts[0].type, 'overlay', c3.message);
    t.notThrows(() => fs.statfsSync(lower), 'mounted again (a read of hello could come from the page cache)');
    t.is(fs.readFileSync(path.join(lower, 'hello'), 'utf8'), 'hello from the image\n'.repeat(10));
    t.truthy((await call('Remove', { key: 'ns/8/c3' })).res);
    for (const key of ['ns/7/v', 'ns/6/c2', 'ns/3/c1', 'ns/5/lc', 'ns/2/image']) t.truthy((await call('Remove', { key })).res, key);
    t.truthy((await call('Cleanup', {})).res);
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/snapshots')), []);
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/mounts')), []);
    t.deepEqual(mountsUnder(dir), []);
  } finally {
    if (gc !== null) fs.closeSync(gc);
    client.close();
    await running.stop();
    for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// What a review against containerd's snapshots package (storage, filters, labels, the testsuite)
// found: each of these failed before.
test.serial('gRPC: List errors reach the client, commit times, filters, label limits, Commit and Prepare checks', async (t) => {
  const grpc = await import('@grpc/grpc-js');
  const { loadApi, lookup } = await import('../dist/snapshotter/proto.js');
  const { serve } = await import('../dist/snapshotter/server.js');
  const dir = fs.mkdtempSync('/tmp/ubsn-semantics-');
  const running = await serve({ root: path.join(dir, 'root'), address: path.join(dir, 'sock'), log: () => {} });
  const Snapshots = lookup(loadApi().snapshots, 'containerd.services.snapshots.v1.Snapshots');
  const client = new Snapshots(`unix://${path.join(dir, 'sock')}`, grpc.credentials.createInsecure());
  const call = (m, req) => new Promise((resolve) => client[m](req, (err, res) => resolve(err ? { code: err.code } : { res })));
  const list = (filters) => new Promise((resolve) => {
    const names = [];
    client.List({ filters }, { deadline: Date.now() + 5000 })
      .on('data', (r) => names.push(...r.info.map((i) => i.name)))
      .on('end', () => resolve(names.sort()))
      .on('error', (err) => resolve({ code: err.code }));
  });
  const ns = (ts) => BigInt(ts.seconds) * 1_000_000_000n + BigInt(ts.nanos);
  try {
    const S = grpc.status;
    // a bad filter is InvalidArgument, not a call that never ends (it hung to the deadline)
    t.deepEqual(await list(['labels."unterminated']), { code: S.INVALID_ARGUMENT });

    // Commit: created = updated = the commit's time (storage.CommitActive), in nanoseconds
    t.truthy((await call('Prepare', { key: 'ns/1/a', parent: '', labels: { constructor: 'x' } })).res);
    await new Promise((r) => setTimeout(r, 20));
    const before = BigInt(Date.now()) * 1_000_000n;
    t.truthy((await call('Commit', { name: 'ns/2/c', key: 'ns/1/a', labels: { keep: 'yes' } })).res);
    const after = (BigInt(Date.now()) + 1n) * 1_000_000n;
    const info = (await call('Stat', { key: 'ns/2/c' })).res.info;
    t.is(ns(info.created_at), ns(info.updated_at));
    t.true(ns(info.created_at) >= before && ns(info.created_at) <= after, `${ns(info.created_at)} in [${before}, ${after}]`);
    const u1 = BigInt(Date.now()) * 1_000_000n;
    const updated = (await call('Update', { info: { name: 'ns/2/c', labels: { more: '1' } }, update_mask: { paths: ['labels.more'] } })).res.info;
    t.true(ns(updated.updated_at) >= u1 && ns(updated.created_at) === ns(info.created_at));
    t.true([info.created_at, updated.updated_at].some((ts) => Number(ts.nanos) % 1_000_000 !== 0), 'sub-millisecond times');

    // filters as containerd's package reads them
    t.truthy((await call('View', { key: 'ns/3/v', parent: 'ns/2/c' })).res);
    t.deepEqual(await list(['labels.constructor']), [], 'an object\'s own property, not a label');
    t.deepEqual(await list(['labels.toString', 'labels.__proto__']), []);
    t.deepEqual(await list(['name~=|^ns/3/|']), ['ns/3/v'], '|regexp| quoting');
    t.deepEqual(await list(['', 'kind==view']), ['ns/2/c', 'ns/3/v'], 'an empty filter matches everything');

    // labels: a key and its value of more than 4096 bytes are refused (labels.Validate)
    const big = { big: 'x'.repeat(4094) };
    t.is((await call('Prepare', { key: 'ns/4/a', parent: '', labels: big })).code, S.INVALID_ARGUMENT);
    t.is((await call('Update', { info: { name: 'ns/2/c', labels: big }, update_mask: { paths: ['labels.big'] } })).code, S.INVALID_ARGUMENT);
    t.truthy((await call('Prepare', { key: 'ns/4/a', parent: '', labels: { big: 'x'.repeat(4093) } })).res, '4096 bytes are fine');

    // Commit to a name that exists: AlreadyExists, whether or not the key does
    t.is((await call('Commit', { name: 'ns/2/c', key: 'no-such-key' })).code, S.ALREADY_EXISTS);

    // a Prepare whose parent cannot be mounted leaves no snapshot (a retry got AlreadyExists)
    t.truthy((await call('Remove', { key: 'ns/3/v' })).res); // the parent is unmounted with its last child
    const snaps = path.join(dir, 'root/snapshots');
    const parentDir = fs.readdirSync(snaps).map((n) => path.join(snaps, n)).find((d) => fs.existsSync(path.join(d, 'blob')));
    fs.renameSync(path.join(parentDir, 'blob'), path.join(parentDir, 'blob.away'));
    const failed = await call('Prepare', { key: 'ns/5/x', parent: 'ns/2/c' });
    t.truthy(failed.code, 'the Prepare fails');
    t.is((await call('Stat', { key: 'ns/5/x' })).code, S.NOT_FOUND, 'and leaves nothing behind');
    fs.renameSync(path.join(parentDir, 'blob.away'), path.join(parentDir, 'blob'));
    t.truthy((await call('Prepare', { key: 'ns/5/x', parent: 'ns/2/c' })).res, 'the retry works');

    // Mounts of a snapshot whose parent is mounted does not wait for the lock a long Commit or
    // fast-path compile holds (containerd asks for the mounts of every container it starts)
    let release;
    const held = running.snapshotter.lock.run(() => new Promise((r) => { release = r; }));
    const mounts = await Promise.race([call('Mounts', { key: 'ns/5/x' }), new Promise((r) => setTimeout(() => r('waited'), 10_000))]);
    release();
    await held;
    t.not(mounts, 'waited', 'Mounts waited for the lock');
    t.is(mounts.res?.mounts[0].type, 'overlay');
    for (const key of ['ns/5/x', 'ns/4/a', 'ns/2/c']) t.truthy((await call('Remove', { key })).res, key);
  } finally {
    client.close();
    await running.stop();
    for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------------ pulls from a registry

/** Committed rows of a namespace, and the blob of its top one. */
function topBlobOf(e, ns) {
  const committed = rows(e).filter((r) => r.key.startsWith(`${ns}/`) && r.kind === 3);
  const top = committed.find((r) => !committed.some((c) => c.parent_id === r.id));
  return { committed, blob: top && path.join(e.ubRoot, 'snapshots', String(top.id), 'blob') };
}

/** Run image `ref` in `e`: it prints a file of the image; its view of the tree equals umoci's. */
async function runEqualsUmoci(t, e, ref, id) {
  const fifo = path.join(e.dir, 'fifo');
  t.regex(await e.ctr(['run', '--rm', '--fifo-dir', fifo, ...SN, ref, uniq(`${id}a`), 'cat', '/etc/debian_version']), /^\d+\.\d+\s*$/);
  await e.ctr(['run', '-d', '--fifo-dir', fifo, ...SN, ref, uniq(id), 'sh', '-c', 'echo x > /written-by-test; exec sleep 600']);
  const rootfs = await containerView(e, uniq(id));
  for (let i = 0; i < 200 && !writtenLine(path.join(rootfs, 'written-by-test')); i++) await sleep(100);
  const got = await treeManifest(rootfs);
  got.entries.delete('written-by-test');
  t.deepEqual(diffManifests(await treeManifest(REF_A), got).filter((l) => !l.startsWith('.: mtime')), []);
  await e.ctr(['task', 'kill', '-s', 'SIGKILL', uniq(id)]);
  for (let i = 0; i < 50 && (await e.ctr(['task', 'ls'])).includes(uniq(id)); i++) {
    await e.ctr(['task', 'rm', uniq(id)]).catch(() => {});
    await sleep(100);
  }
  await e.ctr(['containers', 'rm', uniq(id)]);
}

test.serial('1.6: pull from a registry: every layer compiled from the content store, blob equals cfs build, container view equals umoci', async (t) => {
  const reg = await registryWithA();
  const e = await env({ env: reg.env });
  await e.ctr(['images', 'pull', '--hosts-dir', reg.hostsDir, ...SN, reg.a], { timeout: 300_000 });
  const log = e.log();
  // ctr fetches the whole image, then unpacks: each layer compiled ahead while containerd applies it
  t.is((log.match(/^cfs snapshotter: commit default\/\S+ \S+ -> \S+ \(id \d+\): compiled ahead from sha256:/gm) ?? []).length, 3, log);
  const { committed, blob } = topBlobOf(e, 'default');
  t.is(committed.length, 3);
  const built = path.join(e.dir, 'a.blob');
  execFileSync(process.execPath, [CFS, 'build', '--ignore-root-entries', A, '-o', built, '--store', path.join(e.dir, 'ref-store')]);
  // the registry's layers are gzip (skopeo compressed them), the archive's are not: the same blob
  t.true(fs.readFileSync(built).equals(fs.readFileSync(blob)));
  await runEqualsUmoci(t, e, reg.a, 'p16');
});

test.serial('1.7: pull from a registry (transfer service and client): the base layer, fetched only after its Prepare, is compiled as it arrives; blob equals cfs build', async (t) => {
  const reg = await registryWithA();
  const e = await env({ bin: path.join(fetchContainerd17(), 'usr', 'bin'), transfer: true, env: reg.env });
  // containerd's unpacker asks for the base layer before it fetches anything (pkg/unpack): the
  // fast path cannot have it then, so that layer goes the slow path, compiled from the content
  // store once containerd has fetched it (not read back from the upper containerd writes); the
  // other layers are fetched meanwhile and take the fast path (or are compiled ahead too)
  await e.ctr(['images', 'pull', '--local=false', '--platform', 'linux/amd64', ...SN, reg.a], { timeout: 300_000 });
  const log = e.log();
  t.regex(log, /fast path: sha256:\S+ is not in containerd's content store yet; slow path, compiled ahead once it arrives/);
  t.regex(log, /compile ahead of snapshot \d+: waiting for containerd to fetch sha256:/);
  t.regex(log, /compile ahead of snapshot \d+: containerd has sha256:\S+ now/);
  const ahead = (log.match(/^cfs snapshotter: commit default\/\S+ \S+ -> \S+ \(id \d+\): compiled ahead from sha256:/gm) ?? []).length;
  const fast = (log.match(/^cfs snapshotter: fast path: sha256:\S+ \(id \d+\) compiled from/gm) ?? []).length;
  t.true(ahead >= 1 && ahead + fast === 3, log);
  t.notRegex(log, /upper entries/); // no Commit read an upper
  const built = path.join(e.dir, 'a.blob');
  execFileSync(process.execPath, [CFS, 'build', '--ignore-root-entries', A, '-o', built, '--store', path.join(e.dir, 'ref-store')]);
  const fastTop = rows(e).find((r) => r.key.startsWith('sha256:') && !rows(e).some((c) => c.parent_id === r.id));
  t.true(fs.readFileSync(built).equals(fs.readFileSync(path.join(e.ubRoot, 'snapshots', String(fastTop.id), 'blob'))));
  await runEqualsUmoci(t, e, reg.a, 'p17');

  // ctr's own (client-side) pull fetches everything first: every layer compiled ahead
  await e.ctr(['-n', 'client', 'images', 'pull', '--hosts-dir', reg.hostsDir, ...SN, reg.a], { timeout: 300_000 });
  t.is((e.log().match(/^cfs snapshotter: commit client\/\S+ \S+ -> \S+ \(id \d+\): compiled ahead from sha256:/gm) ?? []).length, 3, e.log());
  t.true(fs.readFileSync(built).equals(fs.readFileSync(topBlobOf(e, 'client').blob)));
});
