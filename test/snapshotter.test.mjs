// The containerd snapshotter (issue #5) against real containerd 1.6 (bookworm) and 1.7 (trixie),
// real ctr, runc, and the real Debian test images. Serial: one containerd per version.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { treeManifest, diffManifests, FIELDS } from './lib/treeman.mjs';
import { startEnv, fetchContainerd17, mountsUnder, CFS, REPO } from './lib/containerd-env.mjs';

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
test.after.always(async () => {
  for (const e of envs) await e.stop();
});

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
 * Differences between the umoci reference and a tree containerd's own applier produced (our
 * slow path), minus what that applier is known to do differently (these come from containerd,
 * not from the snapshotter; the fast path has none of them):
 *  - the root directory gets the time of the unpack as mtime;
 *  - times before 1970 are clamped to the epoch;
 *  - trusted.* xattrs are not restored, and a layer re-listing a path without an xattr does not
 *    remove the xattr a lower layer set.
 */
function slowPathDiffs(ref, got) {
  const out = [];
  for (const p of new Set([...ref.entries.keys(), ...got.entries.keys()])) {
    const r = ref.entries.get(p);
    const g = got.entries.get(p);
    if (!r || !g) { out.push(`${p}: only in ${r ? 'reference' : 'snapshot'}`); continue; }
    for (const f of FIELDS) {
      const rv = f === 'xattrs' ? JSON.stringify(r.xattrs) : r[f];
      const gv = f === 'xattrs' ? JSON.stringify(g.xattrs) : g[f];
      if (rv === gv) continue;
      if (f === 'mtime' && p === '.') continue;
      if (f === 'mtime' && r.mtime.startsWith('-') && g.mtime === '0.000000000') continue;
      if (f === 'xattrs') {
        const noTrusted = Object.fromEntries(Object.entries(r.xattrs).filter(([k]) => !k.startsWith('trusted.')));
        const sameButTrusted = JSON.stringify(noTrusted) === JSON.stringify(g.xattrs);
        const stale = Object.entries(noTrusted).every(([k, v]) => g.xattrs[k] === v);
        if (sameButTrusted || (p === 'opt/ub/xattr-reset' && stale)) continue;
      }
      out.push(`${p}: ${f}: reference=${rv} snapshot=${gv}`);
    }
  }
  return out;
}

async function containerView(e, id) {
  return path.join(e.dir, 'state', 'io.containerd.runtime.v2.task', 'default', id, 'rootfs');
}

// ------------------------------------------------------------------------------ containerd 1.6

let e16;

test.serial('1.6: import, snapshots ls/tree/mounts/usage, run, container view equals umoci', async (t) => {
  e16 = await env({});
  t.regex(await e16.ctr(['version']), /Version:\s+1\.6\./);
  t.regex(e16.log(), /mount backend: .*(kernel module|FUSE)/);
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
  t.regex(mounts, /mount -t overlay overlay \/mnt -o .*upperdir=.*lowerdir=.*\/mounts\/\d+/);
  const got = await treeManifest(rootfs);
  got.entries.delete('written-by-test');
  const ref = await treeManifest(REF_A);
  t.deepEqual(slowPathDiffs(ref, got), []);
  t.log(`slow path vs umoci, all differences (containerd applier): ${diffManifests(ref, got).length}`);
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
  const out = await e16.ctr(['run', '--rm', '--fifo-dir', path.join(e16.dir, 'fifo'), ...SN, 'docker.io/unionblob/b:latest', uniq('c3'), 'cat', '/etc/debian_version']);
  t.regex(out, /^\d+\.\d+\s*$/);
});

test.serial('1.6: killed mid-import, restarted, imported again: consistent', async (t) => {
  t.truthy(e16, 'needs the first test');
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/a:latest', 'docker.io/unionblob/b:latest']);
  await sleep(500);
  const logStart = e16.log().length;
  const importing = e16.ctr(['images', 'import', ...SN, A]).then(() => 'ok', (err) => String(err.stderr || err.message));
  // kill while the base layer's upper is being compiled
  for (let i = 0; i < 300 && !e16.log().slice(logStart).includes('prepare '); i++) await sleep(50);
  await sleep(2500);
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
  // consistent: what containerd lists is what the database holds, and every row has its files
  const listed = chainIds(await e16.ctr(['snapshots', ...SN, 'ls']));
  const db = rows(e16);
  for (const c of listed) t.true(db.some((r) => r.key.endsWith(c)), `${c} listed but not in the database`);
  for (const r of db) {
    const files = fs.readdirSync(path.join(e16.ubRoot, 'snapshots', String(r.id)));
    t.deepEqual(files, r.kind === 3 ? ['blob'] : files.includes('fs') ? files : ['fs']);
  }
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'snapshots')).map(Number).sort((x, y) => x - y), db.map((r) => r.id));
});

test.serial('1.6: images rm --sync: every snapshot, mount, upper and object gone', async (t) => {
  t.truthy(e16, 'needs the first test');
  await e16.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/a:latest']);
  for (let i = 0; i < 50 && rows(e16).length > 0; i++) await sleep(100);
  t.deepEqual(rows(e16), []);
  t.is(chainIds(await e16.ctr(['snapshots', ...SN, 'ls'])).length, 0);
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'snapshots')), []);
  t.deepEqual(fs.readdirSync(path.join(e16.ubRoot, 'mounts')), []);
  t.deepEqual(mountsUnder(e16.ubRoot), []);
  t.deepEqual(storeObjects(e16.store), []);
});

// ------------------------------------------------------------------------------ containerd 1.7

test.serial('1.7: fast path (transfer service): no layer unpacked, blob equals cfs build, tree equals umoci', async (t) => {
  const bin = path.join(fetchContainerd17(), 'usr', 'bin');
  const e = await env({ bin, transfer: true });
  t.regex(await e.ctr(['version']), /Version:\s+1\.7\./);
  await e.ctr(['images', 'import', '--local=false', ...SN, A]);
  const log = e.log();
  t.is((log.match(/fast path: sha256:/g) ?? []).length, 3, log);
  t.notRegex(log, /prepare .*extract-/); // no active snapshot, so no upper directory, was ever made
  const db = rows(e);
  t.is(db.length, 3);
  for (const r of db) t.deepEqual(fs.readdirSync(path.join(e.ubRoot, 'snapshots', String(r.id))), ['blob']);
  const top = db.find((r) => !db.some((c) => c.parent_id === r.id));
  const built = path.join(e.dir, 'a.blob');
  execFileSync(process.execPath, [CFS, 'build', A, '-o', built, '--store', path.join(e.dir, 'ref-store')]);
  t.true(fs.readFileSync(built).equals(fs.readFileSync(path.join(e.ubRoot, 'snapshots', String(top.id), 'blob'))));

  await e.ctr(['run', '-d', '--fifo-dir', path.join(e.dir, 'fifo'), ...SN, 'docker.io/unionblob/a:latest', uniq('f1'),
    'sh', '-c', 'cat /etc/debian_version > /written-by-test; exec sleep 600']);
  const rootfs = await containerView(e, uniq('f1'));
  for (let i = 0; i < 200 && !writtenLine(path.join(rootfs, 'written-by-test')); i++) await sleep(100);
  t.regex(fs.readFileSync(path.join(rootfs, 'written-by-test'), 'utf8'), /^\d+\.\d+\n$/);
  const got = await treeManifest(rootfs);
  got.entries.delete('written-by-test');
  // the container's root directory is the overlay's upper root: its mtime moves when runc or
  // the test writes into it
  t.deepEqual(diffManifests(await treeManifest(REF_A), got).filter((l) => !l.startsWith('.: mtime')), []);
  await e.ctr(['task', 'kill', '-s', 'SIGKILL', uniq('f1')]);
});

/** True once the container's shell has written a whole line: its redirect creates the file
 * before the command writes into it, so existence alone races with the write. */
function writtenLine(file) {
  try { return fs.readFileSync(file, 'utf8').endsWith('\n'); } catch { return false; }
}

// ------------------------------------------------------------------------------ gRPC status codes

test.serial('gRPC status codes as containerd expects', async (t) => {
  const grpc = await import('@grpc/grpc-js');
  const { loadApi, lookup } = await import('../dist/snapshotter/proto.js');
  const { serve } = await import('../dist/snapshotter/server.js');
  const dir = fs.mkdtempSync('/tmp/ubsn-codes-');
  const running = await serve({ root: path.join(dir, 'root'), address: path.join(dir, 'sock'), log: () => {} });
  const Snapshots = lookup(loadApi().snapshots, 'containerd.services.snapshots.v1.Snapshots');
  const client = new Snapshots(`unix://${path.join(dir, 'sock')}`, grpc.credentials.createInsecure());
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
    t.is((await call('Commit', { name: 'ns/4/d', key: 'ns/3/c' })).code, S.FAILED_PRECONDITION); // not active
    t.is((await call('Mounts', { key: 'ns/3/c' })).code, S.FAILED_PRECONDITION);
    const v = await call('View', { key: 'ns/5/v', parent: 'ns/3/c' });
    t.is(v.res.mounts[0].type, 'bind');
    t.is(fs.readFileSync(path.join(v.res.mounts[0].source, 'hello'), 'utf8'), 'hello world\n'.repeat(10));
    t.is((await call('Remove', { key: 'ns/3/c' })).code, S.FAILED_PRECONDITION); // has a child
    t.is((await call('Update', { info: { name: 'ns/3/c', labels: { x: 'y' } }, update_mask: { paths: ['kind'] } })).code, S.INVALID_ARGUMENT);
    t.deepEqual((await call('Update', { info: { name: 'ns/3/c', labels: { x: 'y' } }, update_mask: { paths: ['labels.x'] } })).res.info.labels, { x: 'y' });
    t.is((await call('Usage', { key: 'ns/3/c' })).res.inodes, 1);
    t.is(fs.readdirSync(path.join(dir, 'root/store/objects')).filter((n) => !n.startsWith('.')).length, 1);
    t.truthy((await call('Remove', { key: 'ns/5/v' })).res);
    t.truthy((await call('Remove', { key: 'ns/3/c' })).res);
    t.is((await call('Remove', { key: 'ns/3/c' })).code, S.NOT_FOUND);
    t.truthy((await call('Cleanup', {})).res);
    t.deepEqual(fs.readdirSync(path.join(dir, 'root/store/objects')).filter((n) => !n.startsWith('.')).flatMap((f) => fs.readdirSync(path.join(dir, 'root/store/objects', f))), []);
  } finally {
    client.close();
    await running.stop();
    for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
