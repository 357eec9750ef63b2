// Objects that are only hashed (StoreWriter deferNew) and then linked in from files holding the
// same contents (StoreWriter.adopt): what the snapshotter's compile ahead does with the files
// containerd applies into an upper. References: the fs-verity digest computed here from the
// bytes, the files' inodes and modes read back with lstat.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { AdoptMismatch, StoreWriter, objectPath } from '../dist/compiler/store.js';
import { verityDigest, verityDigestOfFile } from '../dist/format/verity.js';
import { encodeBlob } from '../dist/format/encode.js';
import { childrenDeferred, openLazyTree } from '../dist/format/lazy.js';
import { filesOfObjects } from '../dist/snapshotter/snapshotter.js';

function tmpdir(t) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-adopt-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Every file under STORE/objects: fan-out entries as "xx/yyyy", anything else by its name. */
function storeFiles(store) {
  const out = [];
  const objects = path.join(store, 'objects');
  for (const e of fs.readdirSync(objects)) {
    if (/^[0-9a-f]{2}$/.test(e)) for (const n of fs.readdirSync(path.join(objects, e))) out.push(`${e}/${n}`);
    else out.push(e);
  }
  return out.sort();
}

const hexOf = (buf) => verityDigest(buf).toString('hex');

/** StoreWriter.adopt(items) by a writer of its own, closed after. */
async function adoptObjectFiles(stores, items, opts = {}) {
  const w = new StoreWriter(stores, opts);
  try {
    return await w.adopt(items);
  } finally {
    await w.close();
  }
}

for (const behind of [0, Infinity]) {
  test(`deferNew: contents are hashed (${behind === 0 ? 'on the main thread' : 'by the writer thread'}), none written; the new ones listed once with their sizes`, async (t) => {
    const store = path.join(tmpdir(t), 'store');
    const present = crypto.randomBytes(5000);
    const w0 = new StoreWriter([store], { startNow: true });
    await w0.putBuffer(present);
    await w0.flush();
    await w0.close();
    const before = storeFiles(store);
    t.deepEqual(before, [`${hexOf(present).slice(0, 2)}/${hexOf(present).slice(2)}`]);

    const small = crypto.randomBytes(3000);
    const big = Buffer.concat([crypto.randomBytes(9 << 20), Buffer.alloc(1 << 20), crypto.randomBytes(777)]);
    const w = new StoreWriter([store], { deferNew: true, writerBehindBatches: behind, batchObjects: 2, startNow: true });
    const d1 = await w.putBuffer(present);
    const d2 = await w.putBuffer(small);
    const d3 = await w.putBuffer(small);
    // streamed (over MEMORY_OBJECT_LIMIT), its zero run given as a hole
    async function* chunks() {
      yield big.subarray(0, 9 << 20);
      yield 1 << 20;
      yield big.subarray((9 << 20) + (1 << 20));
    }
    const d4 = await w.putStream(chunks(), big.length);
    await w.flush();
    await w.close();
    t.deepEqual([d1, d2, d3, d4].map((d) => d.toString('hex')), [present, small, small, big].map(hexOf));
    t.deepEqual([...w.deferred()].sort((a, b) => a.size - b.size), [{ hex: hexOf(small), size: small.length }, { hex: hexOf(big), size: big.length }]);
    t.deepEqual(storeFiles(store), before, 'nothing written, no temp file left');
    t.like(w.stats, { objectsNew: 0, objectsPresent: 1, bytesNew: 0 });
  });
}

test('adopt: files on the store\'s filesystem become objects by link (owner, 0444), marked ones are copied, present ones counted, every digest journalled', async (t) => {
  const d = tmpdir(t);
  const store = path.join(d, 'store');
  const upper = path.join(d, 'upper');
  fs.mkdirSync(path.join(store, 'objects'), { recursive: true });
  fs.mkdirSync(path.join(upper, 'bin'), { recursive: true });
  const contents = { linked: crypto.randomBytes(70000), copied: crypto.randomBytes(4097), there: crypto.randomBytes(100) };
  const files = {};
  for (const [k, c] of Object.entries(contents)) {
    files[k] = path.join(upper, 'bin', `\xe9-${k}`); // a name that is not ASCII
    fs.writeFileSync(files[k], c);
  }
  fs.chmodSync(files.linked, 0o4755);
  fs.chownSync(files.linked, 1234, 5678);
  const thereObj = objectPath(store, hexOf(contents.there));
  fs.mkdirSync(path.dirname(thereObj), { recursive: true });
  fs.writeFileSync(thereObj, contents.there, { mode: 0o444 });
  const journal = path.join(d, 'journal');
  const items = Object.entries(contents).map(([k, c]) => ({ hex: hexOf(c), size: c.length, file: Buffer.from(files[k]), copy: k === 'copied' }));
  const stats = await adoptObjectFiles([store], items, { journal });
  t.deepEqual(stats, { objectsNew: 2, objectsLinked: 1, bytesLinked: 70000, bytesNew: 70000 + 4097, objectsPresent: 1 });
  const uid = process.geteuid();
  const gid = process.getegid();
  for (const k of ['linked', 'copied']) {
    const obj = objectPath(store, hexOf(contents[k]));
    const st = fs.lstatSync(obj);
    t.is(st.mode & 0o7777, 0o444, k);
    t.deepEqual([st.uid, st.gid], [uid, gid], k);
    t.is((await verityDigestOfFile(obj)).toString('hex'), hexOf(contents[k]), `${k}: the object's content is its name`);
    t.is(st.ino === fs.lstatSync(files[k]).ino, k === 'linked', `${k}: ${k === 'linked' ? 'the same inode' : 'a copy'}`);
  }
  t.is(fs.lstatSync(thereObj).ino !== fs.lstatSync(files.there).ino, true, 'the object already there is kept');
  t.deepEqual(fs.readFileSync(journal, 'utf8').split('\n').filter(Boolean).sort(), items.map((i) => i.hex).sort());
  t.deepEqual(storeFiles(store).filter((f) => !f.includes('/')), [], 'no temp file left');
});

test('adopt: a missing file, a directory or a file of another size refuses before anything changes', async (t) => {
  const d = tmpdir(t);
  const store = path.join(d, 'store');
  fs.mkdirSync(path.join(store, 'objects'), { recursive: true });
  const good = path.join(d, 'good');
  const c = crypto.randomBytes(9000);
  fs.writeFileSync(good, c, { mode: 0o640 });
  fs.chownSync(good, 42, 43);
  const journal = path.join(d, 'journal');
  const cases = {
    missing: { hex: hexOf(c).replace(/^../, 'ff'), size: 10, file: Buffer.from(path.join(d, 'nothing')) },
    directory: { hex: hexOf(c).replace(/^../, 'fe'), size: 10, file: Buffer.from(d) },
    'another size': { hex: hexOf(c).replace(/^../, 'fd'), size: c.length + 1, file: Buffer.from(good) },
  };
  for (const [what, bad] of Object.entries(cases)) {
    const err = await t.throwsAsync(adoptObjectFiles([store], [{ hex: hexOf(c), size: c.length, file: Buffer.from(good) }, bad], { journal }), { instanceOf: AdoptMismatch }, what);
    t.regex(err.message, /nothing: missing$|\/cfs-adopt-[^/]+: not a regular file$|good: 9000 bytes, the object has 9001$/, what);
    const st = fs.lstatSync(good);
    t.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.nlink], [0o640, 42, 43, 1], `${what}: the good file is untouched`);
    t.deepEqual(storeFiles(store), [], what);
    t.false(fs.existsSync(journal), what);
  }
});

test('adopt: a file with holes is linked if its bytes are the content; a sparse stub of the right size (overlayfs metacopy) refuses', async (t) => {
  const d = tmpdir(t);
  const store = path.join(d, 'store');
  fs.mkdirSync(path.join(store, 'objects'), { recursive: true });
  const head = crypto.randomBytes(5000);
  const content = Buffer.concat([head, Buffer.alloc(3 << 20)]);
  const holey = path.join(d, 'holey');
  fs.writeFileSync(holey, head);
  fs.truncateSync(holey, content.length);
  t.true(fs.statSync(holey).blocks * 512 < content.length, 'the file has holes');
  const stub = path.join(d, 'stub');
  const other = crypto.randomBytes(content.length);
  fs.writeFileSync(stub, '');
  fs.truncateSync(stub, other.length);
  const err = await t.throwsAsync(adoptObjectFiles([store], [{ hex: hexOf(content), size: content.length, file: Buffer.from(holey) }, { hex: hexOf(other), size: other.length, file: Buffer.from(stub) }]), { instanceOf: AdoptMismatch });
  t.regex(err.message, /stub: a sparse file without the content$/);
  t.deepEqual(storeFiles(store), []);
  const stats = await adoptObjectFiles([store], [{ hex: hexOf(content), size: content.length, file: Buffer.from(holey) }]);
  t.like(stats, { objectsNew: 1, objectsLinked: 1 });
  t.is(fs.lstatSync(objectPath(store, hexOf(content))).ino, fs.lstatSync(holey).ino);
});

test('adopt: a file on another filesystem than every store is copied', async (t) => {
  const d = tmpdir(t);
  const store = path.join(d, 'store');
  fs.mkdirSync(path.join(store, 'objects'), { recursive: true });
  const elsewhere = path.join(d, 'tmpfs');
  fs.mkdirSync(elsewhere);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', elsewhere]);
  t.teardown(() => spawnSync('umount', [elsewhere]));
  const c = crypto.randomBytes(123456);
  const f = path.join(elsewhere, 'f');
  fs.writeFileSync(f, c);
  const stats = await adoptObjectFiles([store], [{ hex: hexOf(c), size: c.length, file: Buffer.from(f) }]);
  t.like(stats, { objectsNew: 1, objectsLinked: 0 });
  const obj = objectPath(store, hexOf(c));
  t.true(fs.readFileSync(obj).equals(c));
  t.is(fs.lstatSync(obj).mode & 0o7777, 0o444);
  t.is(fs.lstatSync(f).mode & 0o7777, 0o644, 'the file is left as it was');
});

test('filesOfObjects: a path of a file for each new object, never entering a lazy directory the layer did not touch', (t) => {
  const file = (content, xattrs = new Map()) => ({ mode: 0o100644, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs, size: content.length, digest: verityDigest(content) });
  const dir = (entries) => ({ mode: 0o40755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0, children: new Map(entries) });
  const old = crypto.randomBytes(5000);
  const parent = dir([['usr', dir([['lib', dir([['old', file(old)]])]])], ['etc', dir([['keep', file(crypto.randomBytes(300))]])]]);
  const tree = openLazyTree(encodeBlob(parent));
  // the layer: a new file in etc (listed), a new directory with a hardlinked pair, a file with xattrs
  const fresh = crypto.randomBytes(7000);
  const linked = file(crypto.randomBytes(8000));
  const capable = crypto.randomBytes(900);
  tree.children.get('etc').children.set('fresh', file(fresh));
  tree.children.set('new\xff', dir([['a', linked], ['b', linked], ['cap', file(capable, new Map([['security.capability', Buffer.from([1, 2])]]))]]));
  const wanted = [fresh, linked, capable, crypto.randomBytes(4000)].map((c, i) => ({ hex: i === 1 ? linked.digest.toString('hex') : hexOf(c), size: i === 1 ? linked.size : c.length }));
  const found = filesOfObjects(tree, wanted);
  t.deepEqual(found.map((f) => [f.hex, f.size, f.rel.toString('latin1'), f.xattrs]).sort(), [
    [wanted[0].hex, 7000, 'etc/fresh', false],
    [wanted[1].hex, 8000, 'new\xff/a', false],
    [wanted[2].hex, 900, 'new\xff/cap', true],
  ].sort());
  t.true(childrenDeferred(tree.children.get('usr')), 'usr was not decoded');
});
