// The inspection and maintenance commands: info, ls, cat, dump, extract, fsck, gc. Every test
// builds its own blob with encodeBlob from a hand-made tree and writes the objects it needs into
// a temp store named by fs-verity digest, so nothing here depends on the image compiler.
// Runs as root (extract restores owners, devices and trusted.* xattrs).
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { encodeBlob } from '../dist/format/encode.js';
import { openBlob, sourceFromBuffer } from '../dist/format/decode.js';
import { dumpBlob } from '../dist/format/dump.js';
import { verityDigest } from '../dist/format/verity.js';
import { crc32c } from '../dist/format/crc32c.js';
import { extractBlob } from '../dist/compiler/extract.js';
import { nativeSetTimes } from '../dist/mounter/addon.js';
import { fsckBlob } from '../dist/compiler/fsck.js';
import { gcStores, referencedDigests } from '../dist/compiler/gc.js';
import { addRoot, holdStoresForBuild, lockStores } from '../dist/compiler/roots.js';
import { readBlobFile, displayName, modeString } from '../dist/compiler/inspect.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = path.join(ROOT, 'bin', 'cfs');
const S = { REG: 0o100000, DIR: 0o040000, LNK: 0o120000, CHR: 0o020000, BLK: 0o060000, FIFO: 0o010000, SOCK: 0o140000 };
const T0 = 1700000000;
const hasPython = spawnSync('python3', ['-c', 'pass']).status === 0;
const nsTimes = nativeSetTimes() !== null;

function cfs(...args) {
  const r = spawnSync(process.execPath, [CFS, ...args], { encoding: 'buffer' });
  return { code: r.status, stdout: r.stdout, out: r.stdout.toString(), err: r.stderr.toString() };
}

function node(mode, extra = {}) {
  return { mode, uid: 0, gid: 0, mtimeSec: T0, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra };
}
const dir = (perm, children, extra = {}) => node(S.DIR | perm, { children: new Map(Object.entries(children)), ...extra });
const bin = (s) => Buffer.from(s, 'latin1').toString('latin1');

function content(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** Object contents by digest hex, filled by ext(). */
function makeTree() {
  const objects = new Map();
  const ext = (perm, data, extra = {}) => {
    const digest = verityDigest(data);
    objects.set(digest.toString('hex'), data);
    return node(S.REG | perm, { size: data.length, digest, ...extra });
  };
  const inl = (perm, text, extra = {}) => {
    const data = Buffer.from(text, 'latin1');
    return node(S.REG | perm, { size: data.length, inline: data, ...extra });
  };
  // v2 file capability: cap_net_raw permitted + effective.
  const capability = Buffer.from('0100000200200000000000000000000000000000', 'hex');
  // ACL user::rw- user:1000:r-- group::r-- mask::r-- other::r-- (matches mode 0644).
  const acl = Buffer.from('02000000' + '01000600ffffffff' + '02000400e8030000' + '04000400ffffffff' + '10000400ffffffff' + '20000400ffffffff', 'hex');
  const ash = ext(0o755, content(70000, 1), { xattrs: new Map([['security.selinux', Buffer.from('system_u:object_r:bin_t:s0\0')]]) });
  const tree = dir(0o755, {
    bin: dir(0o755, {
      ash,
      sh: ash, // hardlink
      ping: ext(0o4755, content(5000, 2), { xattrs: new Map([['security.capability', capability]]) }),
      wall: ext(0o2755, content(300, 3), { gid: 5 }),
    }),
    dev: dir(0o755, {
      null: node(S.CHR | 0o666, { rdevMajor: 1, rdevMinor: 3 }),
      loop0: node(S.BLK | 0o660, { gid: 6, rdevMajor: 7, rdevMinor: 0 }),
      big: node(S.CHR | 0o600, { rdevMajor: 300, rdevMinor: 70000 }),
      fifo: node(S.FIFO | 0o644),
      sock: node(S.SOCK | 0o755),
    }),
    etc: dir(0o755, {
      hostname: inl(0o644, 'unionblob\n', { mtimeNsec: 123456789 }),
      acl: inl(0o644, 'acl file\n', { xattrs: new Map([['system.posix_acl_access', acl]]) }),
      trusted: inl(0o600, 'x', { xattrs: new Map([['trusted.overlay.opaque', Buffer.from('y')], ['user.empty', Buffer.alloc(0)]]) }),
      link: node(S.LNK | 0o777, { target: '../bin/ash', size: 10, xattrs: new Map([['trusted.lnk', Buffer.from([1, 2])]]) }),
    }),
    names: dir(0o755, {
      [bin('caf\xc3\xa9')]: inl(0o644, 'utf8 name'),
      [bin('\xff\xfe new\nline\\')]: inl(0o644, 'bad utf8', { xattrs: new Map([['user.a=b', Buffer.from('v')]]) }),
    }),
    empty: node(S.REG | 0o600, { uid: 1234, gid: 5678, mtimeSec: -2, mtimeNsec: 500000000 }),
    'empty-dir': dir(0o700, {}, { mtimeSec: T0 + 5, mtimeNsec: 999999999 }),
    share: dir(0o2775, { sub: dir(0o755, {}) }, { uid: 1000, gid: 1000 }),
    tmp: dir(0o1777, {}, { mtimeSec: 0 }),
  }, { mtimeNsec: 42, xattrs: new Map([['user.root', Buffer.from('r')]]) });
  return { tree, objects };
}

function writeObject(store, hex, data) {
  const p = path.join(store, 'objects', hex.slice(0, 2), hex.slice(2));
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data);
  return p;
}

/** A temp dir with blob.ub and a store holding every object the blob needs. */
function fixture(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-cli-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { tree, objects } = makeTree();
  const blobBuf = encodeBlob(tree, { inlineThreshold: 64 });
  const blob = path.join(dir, 'blob.ub');
  fs.writeFileSync(blob, blobBuf);
  const store = path.join(dir, 'store');
  const objectPaths = new Map();
  for (const [hex, data] of objects) objectPaths.set(hex, writeObject(store, hex, data));
  return { dir, tree, objects, blob, blobBuf, store, objectPaths };
}

// ---------------------------------------------------------------------------------------------

test('info: text and --json', (t) => {
  const f = fixture(t);
  const text = cfs('info', f.blob);
  t.is(text.code, 0, text.err);
  t.regex(text.out, /^inodes: +24 \(reg 9, dir 9, lnk 1, chr 2, blk 1, fifo 1, sock 1\)$/m);
  t.regex(text.out, /^ +3 +DIGESTS +\d+ +96 +3 0x[0-9a-f]{8}$/m);
  const j = cfs('info', '--json', f.blob);
  t.is(j.code, 0, j.err);
  const info = JSON.parse(j.out);
  t.is(info.inodes, 24);
  t.is(info.dirents, 24);
  t.is(info.objects, 3);
  t.is(info.objectBytes, 75300);
  t.is(info.externalFiles, 3);
  t.is(info.emptyFiles, 1);
  t.is(info.sections.length, 6);
  t.is(info.blobSize, f.blobBuf.length);
  // the blob's fs-verity digest, as cfs mount --digest and -o digest= take it
  const digest = verityDigest(f.blobBuf).toString('hex');
  t.is(info.digest, digest);
  t.regex(text.out, new RegExp(`^fs-verity digest: ${digest}$`, 'm'));
});

test('usage errors exit 2 with a cfs: line; -o naming a directory is refused before a gc root names it', (t) => {
  for (const args of [['ls'], ['build', 'x', '--bogus'], ['info', 'a', 'b']]) {
    const r = cfs(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.err}`);
    t.regex(r.err, /^cfs: \S/);
    t.is(r.err.trim().split('\n').length, 1, r.err);
  }
  t.is(cfs('--version').code, 0);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-outdir-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = path.join(dir, 'store');
  const outDir = path.join(dir, 'out.ub');
  fs.mkdirSync(outDir);
  const r = cfs('build', debian('b'), '-o', outDir, '--store', store);
  t.is(r.code, 1);
  t.is(r.err, `cfs: ${outDir}: exists and is not a regular file (-o names the blob file to write)\n`);
  t.false(fs.existsSync(store), 'no store made, no root left');
  // a root that names a directory (left by an older cfs) is dangling, not a blob gc cannot read
  t.is(cfs('build', debian('b'), '-o', path.join(dir, 'b.ub'), '--store', store, '--json').code, 0);
  fs.symlinkSync(outDir, path.join(store, 'roots', 'from-an-old-cfs'));
  const gc = cfs('gc', '--store', store, '--dry-run');
  t.is(gc.code, 0, gc.err);
  t.regex(gc.out, new RegExp(`^would drop dangling root \\S+ -> ${outDir}$`, 'm'));
  // build --json names the blob and its fs-verity digest
  const j = JSON.parse(cfs('build', debian('b'), '-o', path.join(dir, 'b2.ub'), '--store', store, '--json').out);
  t.is(j.out, path.join(dir, 'b2.ub'));
  t.is(j.digest, verityDigest(fs.readFileSync(path.join(dir, 'b2.ub'))).toString('hex'));
  // a store named twice is one store (gc counted its objects and roots twice)
  const once = cfs('gc', '--store', store, '--dry-run').out.trim().split('\n').at(-1);
  t.is(cfs('gc', '--store', store, '--store', `${store}/`, '--dry-run').out.trim().split('\n').at(-1), once);
  // a FIFO as the blob: one line, no hang (it blocked in open())
  const fifo = path.join(dir, 'fifo.ub');
  t.is(spawnSync('mkfifo', [fifo]).status, 0);
  for (const cmd of ['info', 'ls', 'dump']) {
    const r = spawnSync(process.execPath, [CFS, cmd, fifo], { encoding: 'utf8', timeout: 20_000 });
    t.is(r.status, 1, `${cmd}: ${r.error?.message ?? r.stderr}`);
    t.is(r.stderr, `cfs: ${fifo}: not a regular file (a blob is a file)\n`);
  }
});

test('--version names the package and the blob format version that a built blob carries', (t) => {
  const f = fixture(t);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const blobVersion = /^version: +(\d+\.\d+)$/m.exec(cfs('info', f.blob).out)?.[1];
  t.truthy(blobVersion);
  for (const flag of ['--version', '-V']) {
    const r = cfs(flag);
    t.is(r.code, 0, r.err);
    t.is(r.out, `cfs ${pkg.version} (blob format ${blobVersion})\n`);
  }
});

test('info, ls, dump: a format version 1 blob is one line saying to rebuild it', (t) => {
  const f = fixture(t);
  const old = Buffer.from(f.blobBuf);
  old.writeUInt16LE(1, 12); // version_major
  old.writeUInt32LE(0, 8);
  old.writeUInt32LE(crc32c(old.subarray(0, 512)), 8); // a well-formed header of another version
  const file = f.blob.replace(/\.ub$/, '-v1.ub');
  fs.writeFileSync(file, old);
  for (const args of [['info'], ['ls'], ['dump']]) {
    const r = cfs(...args, file);
    t.is(r.code, 1, args[0]);
    t.is(r.out, '', args[0]);
    t.regex(r.err, /^[^\n]*format version 1: rebuild the blob with this cfs \(it reads version 2\)\n$/, args[0]);
  }
});

test('ls: names, long format, single entry, errors', (t) => {
  const f = fixture(t);
  t.is(cfs('ls', f.blob).out, 'bin\ndev\nempty\nempty-dir\netc\nnames\nshare\ntmp\n');
  t.is(cfs('ls', f.blob, '/names').out, 'café\n\\xff\\xfe new\\x0aline\\\\\n');
  const long = cfs('ls', '-l', f.blob, '/bin');
  t.is(long.code, 0, long.err);
  t.regex(long.out, /^-rwxr-xr-x 2 0 0 70000 2023-11-14 22:13:20 ash$/m);
  t.regex(long.out, /^-rwsr-xr-x 1 0 0 +5000 2023-11-14 22:13:20 ping$/m);
  t.regex(long.out, /^-rwxr-sr-x 1 0 5 +300 2023-11-14 22:13:20 wall$/m);
  t.regex(cfs('ls', '-l', f.blob).out, /^drwxrwxrwt +2 +0 +0 +0 1970-01-01 00:00:00 tmp$/m);
  t.regex(cfs('ls', '-l', f.blob, '/dev').out, /^crw------- 1 0 0 300, 70000 .* big$/m);
  t.regex(cfs('ls', '-l', f.blob, 'etc/link').out, /^lrwxrwxrwx 1 0 0 10 .* etc\/link -> \.\.\/bin\/ash$/m);
  const missing = cfs('ls', f.blob, '/nope');
  t.is(missing.code, 1);
  t.is(missing.err, 'cfs: /nope: no such file or directory\n');
  t.is(modeString(0o1777, 'dir'), 'drwxrwxrwt');
  t.is(modeString(0o6644, 'reg'), '-rwSr-Sr--');
  t.is(displayName(bin('a\\b\x7f\xc3')), 'a\\\\b\\x7f\\xc3');
});

test('ls and cat resolve symlinks as in a chroot of the image: followed in the middle, never out of it', (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-chroot-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  const lnk = (target) => node(S.LNK | 0o777, { target, size: Buffer.byteLength(target) });
  const text = (s) => node(S.REG | 0o644, { size: s.length, inline: Buffer.from(s) });
  const tree = dir(0o755, {
    usr: dir(0o755, { bin: dir(0o755, { sh: text('the shell\n') }), lib: dir(0o755, { 'os-release': text('NAME=test\n') }) }),
    bin: lnk('usr/bin'),
    etc: dir(0o755, { 'os-release': lnk('../usr/lib/os-release'), abs: lnk('/usr/bin/sh'), up: lnk('../../../../usr/bin/sh'), plain: text('plain\n') }),
    loop: lnk('loop'),
    ping: lnk('pong'),
    pong: lnk('ping'),
  });
  const blob = path.join(d, 'c.ub');
  fs.writeFileSync(blob, encodeBlob(tree));
  const cat = (p) => cfs('cat', blob, p);
  t.is(cat('/etc/os-release').out, 'NAME=test\n', 'a relative symlink, followed');
  t.is(cat('etc/abs').out, 'the shell\n', 'an absolute target starts at the image root');
  t.is(cat('/etc/up').out, 'the shell\n', '.. never leaves the image');
  t.is(cat('/bin/sh').out, 'the shell\n', 'a symlink in the middle');
  t.is(cat('/bin/../lib/os-release').out, 'NAME=test\n', '.. after a followed link is the target\'s parent (usr)');
  t.is(cat('/bin/../etc/plain').err, 'cfs: /bin/../etc/plain: no such file or directory\n', 'not the link\'s own parent');
  t.is(cat('/loop').err, 'cfs: /loop: too many levels of symbolic links\n');
  t.is(cat('/ping').err, 'cfs: /ping: too many levels of symbolic links\n');
  t.is(cat('/etc/plain/x').err, 'cfs: /etc/plain/x: not a directory\n');
  t.is(cat('/bin').err, 'cfs: /bin: is a directory\n');
  t.regex(cfs('ls', '-l', blob, '/bin').out, /^lrwxrwxrwx .* \/bin -> usr\/bin\n$/, 'the last link is listed, not followed');
  t.is(cfs('ls', blob, '/bin/').out, 'sh\n', 'a trailing / follows it');
  t.regex(cfs('ls', '-l', blob, '/bin/sh').out, /^-rw-r--r-- .* \/bin\/sh\n$/);
  const notDir = cfs('ls', blob, '/etc/plain/');
  t.is(notDir.code, 1);
  t.is(notDir.err, 'cfs: /etc/plain/: not a directory\n');
});

test('cat: inline, external, store order, errors', async (t) => {
  const f = fixture(t);
  t.is(cfs('cat', f.blob, '/etc/hostname').out, 'unionblob\n');
  t.is(cfs('cat', f.blob, '/empty').out, '');
  const ash = cfs('cat', f.blob, '/bin/sh', '--store', f.store);
  t.is(ash.code, 0, ash.err);
  t.true(ash.stdout.equals(content(70000, 1)));
  t.true((await readBlobFile(f.blob, '/names/café', [])).equals(Buffer.from('utf8 name')));
  // A name that is not UTF-8, given as raw bytes on the command line.
  const raw = spawnSync('bash', ['-c', `"$0" "$1" cat "$2" "$(printf '/names/\\377\\376 new\\nline\\\\')"`, process.execPath, CFS, f.blob], { encoding: 'utf8' });
  t.is(raw.stdout, 'bad utf8', raw.stderr);
  // The first store that has the object serves it.
  const empty = path.join(f.dir, 'empty-store');
  fs.mkdirSync(empty);
  t.true(cfs('cat', f.blob, '/bin/ping', '--store', empty, '--store', f.store).stdout.equals(content(5000, 2)));
  const noStore = cfs('cat', f.blob, '/bin/ping', '--store', empty);
  t.is(noStore.code, 1);
  t.regex(noStore.err, /^cfs: \/bin\/ping: object [0-9a-f]{64} not found in any store\n$/);
  t.is(cfs('cat', f.blob, '/bin').err, 'cfs: /bin: is a directory\n');
  t.true(cfs('cat', f.blob, '/etc/link', '--store', f.store).stdout.equals(content(70000, 1)), 'a symlink is followed (inside the image)');
  t.is(cfs('cat', f.blob, '/dev/null').err, 'cfs: /dev/null: not a regular file\n');
  t.not(cfs('cat', f.blob, '/bin').code, 0);
  // Output through a closed pipe ends quietly.
  const head = spawnSync('bash', ['-c', `"${process.execPath}" "${CFS}" cat "${f.blob}" /bin/ash --store "${f.store}" | head -c 10 >/dev/null; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8' });
  t.is(head.stdout.trim(), '0', head.stderr);
});

test('stores: A:B is two stores in order; a store that is not a directory is one line for cat, fsck and extract (gc: below); one that cannot be made is one line for build', (t) => {
  const f = fixture(t);
  const empty = path.join(f.dir, 'empty-store');
  fs.mkdirSync(empty);
  t.true(cfs('cat', f.blob, '/bin/ping', '--store', `${empty}:${f.store}`).stdout.equals(content(5000, 2)));
  t.is(cfs('fsck', f.blob, '--store', `${empty}:${f.store}`).code, 0);
  const missing = path.join(f.dir, 'typo');
  for (const args of [['cat', f.blob, '/bin/ping'], ['fsck', f.blob], ['extract', f.blob, path.join(f.dir, 'out')]]) {
    const r = cfs(...args, '--store', f.store, '--store', missing);
    t.is(r.code, 1, args[0]);
    t.is(r.err, `cfs: store ${missing}: no such directory\n`, args[0]);
  }
  t.false(fs.existsSync(path.join(f.dir, 'out')));
  t.is(cfs('fsck', f.blob, '--store', f.blob).err, `cfs: store ${f.blob}: not a directory\n`);
  // Node's recursive mkdir loops forever where the parent refuses new entries with ENOENT
  const image = path.join(f.dir, 'image');
  fs.mkdirSync(image);
  fs.writeFileSync(path.join(image, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const proc = spawnSync(process.execPath, [CFS, 'build', image, '-o', path.join(f.dir, 'x.ub'), '--store', '/proc/unionblob-no-such'], { encoding: 'utf8', timeout: 20000 });
  t.is(proc.signal, null, 'no hang');
  t.is(proc.status, 1);
  t.is(proc.stderr, "cfs: ENOENT: no such file or directory, mkdir '/proc/unionblob-no-such'\n");
  const ex = spawnSync(process.execPath, [CFS, 'extract', f.blob, '/proc/unionblob-no-such', '--store', f.store], { encoding: 'utf8', timeout: 20000 });
  t.is(ex.signal, null, 'extract: no hang');
  t.is(ex.stderr, "cfs: ENOENT: no such file or directory, mkdir '/proc/unionblob-no-such'\n");
});

test('dump: text is dumpBlob, --json is one stable object per dirent', (t) => {
  const f = fixture(t);
  const text = cfs('dump', f.blob);
  t.is(text.code, 0, text.err);
  t.is(text.out, dumpBlob(openBlob(sourceFromBuffer(f.blobBuf))));
  const json = cfs('dump', '--json', f.blob);
  t.is(json.code, 0, json.err);
  t.is(cfs('dump', '--json', f.blob).out, json.out);
  const lines = json.out.trimEnd().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(lines[0], { unionblob: 2, inodes: 24, dirents: 24, digests: 3, xattrsets: 7 });
  t.is(lines.length, 1 + 1 + 24);
  t.deepEqual(lines.map((l) => l.path).slice(1), text.out.trimEnd().split('\n').slice(1).map((l) => l.split(' ')[0]));
  const ping = lines.find((l) => l.path === '/bin/ping');
  t.is(ping.mode, 0o4755);
  t.is(ping.object, verityDigest(content(5000, 2)).toString('hex'));
  t.deepEqual(ping.xattrs, { 'security.capability': '0100000200200000000000000000000000000000' });
  t.like(lines.find((l) => l.path === '/dev/big'), { type: 'chr', major: 300, minor: 70000 });
  t.like(lines.find((l) => l.path === '/etc/link'), { type: 'lnk', target: '../bin/ash' });
  t.truthy(lines.find((l) => l.path === '/names/\\xff\\xfe\\x20new\\x0aline\\x5c'));
  t.regex(spawnSync('bash', ['-c', `"${process.execPath}" "${CFS}" dump "${f.blob}" | head -1`], { encoding: 'utf8' }).stdout, /^# unionblob v2 /);
});

// ---------------------------------------------------------------------------------------------

/** getfattr's view of every xattr under `root`: path (binary string) -> name -> hex. */
function getAllXattrs(root) {
  const r = spawnSync('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { encoding: 'buffer' });
  const unquote = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  const all = new Map();
  let current;
  for (const line of r.stdout.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) all.set(unquote(line.slice(8)), (current = new Map()));
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (m) current.set(unquote(m[1]), m[2]);
  }
  return all;
}

const statField = (p, fmt) => spawnSync('stat', ['-c', fmt, p], { encoding: 'utf8' }).stdout.trim();

/** Compare every entry under `tree` with the extracted `dest` (Buffer paths: names are bytes). */
function compareTree(t, tree, dest) {
  const inoOf = new Map(); // TreeNode -> st_ino of its first extracted path
  const xattrs = getAllXattrs(dest);
  const walk = (n, p, shown) => {
    const st = fs.lstatSync(p, { bigint: true });
    const type = Number(st.mode) & 0o170000;
    t.is(type, n.mode & 0o170000, `${shown}: type`);
    if (type !== S.LNK) t.is(Number(st.mode) & 0o7777, n.mode & 0o7777, `${shown}: mode`);
    t.is(Number(st.uid), n.uid, `${shown}: uid`);
    t.is(Number(st.gid), n.gid, `${shown}: gid`);
    // to the nanosecond through the addon's utimensat (built for the tests), else to the microsecond
    const wantNs = BigInt(n.mtimeSec) * 1_000_000_000n + BigInt(nsTimes ? n.mtimeNsec : Math.floor(n.mtimeNsec / 1000) * 1000);
    t.is(st.mtimeNs, wantNs, `${shown}: mtime`);
    if (inoOf.has(n)) t.is(st.ino, inoOf.get(n), `${shown}: hardlink`);
    else inoOf.set(n, st.ino);
    const want = new Map([...n.xattrs].map(([k, v]) => [k, v.toString('hex')]));
    t.deepEqual(xattrs.get(p.toString('latin1')) ?? new Map(), want, `${shown}: xattrs`);
    switch (type) {
      case S.REG:
        t.is(Number(st.size), n.size, `${shown}: size`);
        if (n.digest) t.true(verityDigest(fs.readFileSync(p)).equals(n.digest), `${shown}: content`);
        else t.true(fs.readFileSync(p).equals(n.inline ?? Buffer.alloc(0)), `${shown}: content`);
        break;
      case S.LNK:
        t.is(fs.readlinkSync(p, { encoding: 'latin1' }), n.target, `${shown}: target`);
        break;
      case S.CHR:
      case S.BLK:
        t.is(statField(p, '%t:%T'), `${n.rdevMajor.toString(16)}:${n.rdevMinor.toString(16)}`, `${shown}: rdev`);
        break;
      case S.DIR: {
        const names = fs.readdirSync(p, { encoding: 'buffer' }).map((b) => b.toString('latin1')).sort();
        t.deepEqual(names, [...n.children.keys()].sort(), `${shown}: entries`);
        for (const [name, child] of n.children) walk(child, Buffer.concat([p, Buffer.from('/' + name, 'latin1')]), `${shown}/${name}`);
      }
    }
  };
  walk(tree, Buffer.from(dest), '');
}

test('extract: the tree comes back with types, modes, owners, contents, devices, xattrs, hardlinks, times', async (t) => {
  const f = fixture(t);
  if (!hasPython) f.tree.children.get('dev').children.delete('sock');
  const dest = path.join(f.dir, 'out');
  const warnings = [];
  const r = await extractBlob(f.blob, [f.store], dest, { warn: (m) => warnings.push(m) });
  t.deepEqual(warnings, []);
  t.is(r.dirents, 24);
  t.is(r.inodes, 24);
  compareTree(t, f.tree, dest);
  t.true(fs.lstatSync(path.join(dest, 'dev/sock')).isSocket());
  t.is(fs.lstatSync(path.join(dest, 'empty'), { bigint: true }).mtimeNs, -1_500_000_000n);
  t.deepEqual(fs.readdirSync(dest).filter((n) => n.startsWith('.cfs-')), []);
  // ACL and capability are real ones, as the tools see them.
  const facl = spawnSync('getfacl', ['-n', '-c', path.join(dest, 'etc/acl')], { encoding: 'utf8' });
  if (facl.error === undefined) t.regex(facl.stdout, /^user:1000:r--$/m);
  const cap = spawnSync('getcap', [path.join(dest, 'bin/ping')], { encoding: 'utf8' });
  if (cap.error === undefined) t.regex(cap.stdout, /cap_net_raw[=+]ep/);
});

test('extract without root: owners, device nodes and privileged xattrs are skipped with warnings, the rest is the image; a failure leaves nothing', (t) => {
  const f = fixture(t);
  fs.chmodSync(f.dir, 0o755);
  const out = path.join(f.dir, 'user');
  fs.mkdirSync(out, { mode: 0o777 });
  fs.chmodSync(out, 0o777);
  const asNobody = (...args) => spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CFS, ...args], { encoding: 'utf8' });
  const r = asNobody('extract', f.blob, '--store', f.store, path.join(out, 'tree'));
  t.is(r.status, 0, r.stderr);
  t.is(r.stderr, [
    'cfs: warning: /dev/big: character device skipped (not running as root)',
    'cfs: warning: /dev/loop0: block device skipped (not running as root)',
    'cfs: warning: /dev/null: character device skipped (not running as root)',
    'cfs: warning: not running as root: file owners not restored',
    'cfs: warning: not running as root: 4 trusted.* and security.* xattrs not restored',
  ].join('\n') + '\n');
  // The tree as the image has it, but for what a user cannot make.
  const dev = f.tree.children.get('dev').children;
  for (const name of ['big', 'loop0', 'null']) dev.delete(name);
  if (!hasPython) dev.delete('sock');
  const strip = (n) => {
    n.uid = 65534;
    n.gid = 65534;
    n.xattrs = new Map([...(n.xattrs ?? new Map())].filter(([k]) => !k.startsWith('trusted.') && !k.startsWith('security.')));
    for (const c of n.children?.values() ?? []) strip(c);
  };
  strip(f.tree);
  compareTree(t, f.tree, path.join(out, 'tree'));
  // user.* xattrs on a 0444 file in a 0555 directory: a user can set them only before the modes
  const ro = dir(0o555, { note: node(S.REG | 0o444, { size: 2, inline: Buffer.from('ro'), xattrs: new Map([['user.note', Buffer.from('kept')]]) }) }, { xattrs: new Map([['user.dir', Buffer.from('d')]]) });
  const roBlob = path.join(f.dir, 'readonly.ub');
  fs.writeFileSync(roBlob, encodeBlob(dir(0o755, { ro }), { inlineThreshold: 64 }));
  fs.chmodSync(roBlob, 0o644);
  const roRun = asNobody('extract', roBlob, path.join(out, 'readonly'));
  t.is(roRun.status, 0, roRun.stderr);
  t.is(spawnSync('getfattr', ['--only-values', '-n', 'user.note', path.join(out, 'readonly/ro/note')], { encoding: 'utf8' }).stdout, 'kept');
  t.is(spawnSync('getfattr', ['--only-values', '-n', 'user.dir', path.join(out, 'readonly/ro')], { encoding: 'utf8' }).stdout, 'd');
  t.is(fs.statSync(path.join(out, 'readonly/ro')).mode & 0o7777, 0o555);
  t.is(fs.statSync(path.join(out, 'readonly/ro/note')).mode & 0o7777, 0o444);
  // A failure once directories have their image modes (0555 here): nothing is left behind.
  const { tree, objects } = makeTree();
  tree.children.get('bin').mode = S.DIR | 0o555;
  tree.children.get('etc').children.set('user-on-fifo', node(S.FIFO | 0o644, { xattrs: new Map([['user.x', Buffer.from('1')]]) }));
  const blob2 = path.join(f.dir, 'ro.ub');
  fs.writeFileSync(blob2, encodeBlob(tree, { inlineThreshold: 64 }));
  fs.chmodSync(blob2, 0o644);
  const bad = asNobody('extract', blob2, '--store', f.store, path.join(out, 'ro'));
  t.is(bad.status, 0, bad.stderr);
  t.regex(bad.stderr, /^cfs: warning: \/etc\/user-on-fifo: xattr user\.x not restored \(user\.\* on a fifo\)$/m);
  // An ACL the kernel refuses fails step 3, after bin/ got its image mode 0555: undone all the same.
  tree.children.get('etc').children.get('acl').xattrs = new Map([['system.posix_acl_access', Buffer.from('not an acl')]]);
  const blob3 = path.join(f.dir, 'bad-acl.ub');
  fs.writeFileSync(blob3, encodeBlob(tree, { inlineThreshold: 64 }));
  fs.chmodSync(blob3, 0o644);
  const gone = asNobody('extract', blob3, '--store', f.store, path.join(out, 'undone'));
  t.is(gone.status, 1);
  t.regex(gone.stderr, /^cfs: setting xattrs: setfattr failed: setfattr: .*\/undone\/etc\/acl: /m);
  t.false(fs.existsSync(path.join(out, 'undone')));
  t.is(objects.size, f.objects.size);
});

test('build --rootfs: a tree extracted from a blob builds back into that blob, byte for byte; whiteout-looking entries are taken literally', (t) => {
  const f = fixture(t);
  const tree = path.join(f.dir, 'tree');
  let r = cfs('extract', f.blob, '--store', f.store, tree);
  t.is(r.code, 0, r.err);
  // The source of the build: everything the format holds (devices, a socket, hardlinks, setuid,
  // trusted.*, security.* and ACL xattrs, odd names, times to the nanosecond) is in it.
  const out = path.join(f.dir, 'again.ub');
  r = cfs('build', '--rootfs', tree, '-o', out, '--store', path.join(f.dir, 'store2'), '--json');
  t.is(r.code, 0, r.err);
  const summary = JSON.parse(r.out);
  t.is(summary.layers, 0);
  t.is(summary.objectsNew, f.objects.size);
  if (nsTimes) t.true(fs.readFileSync(out).equals(f.blobBuf), 'the blob differs from the one extracted');
  else t.is(summary.inodes, 24);

  // Nothing in a plain tree is a whiteout: a 0/0 device, a .wh. file, an opaque marker and
  // trusted.overlay.* xattrs are the tree's own.
  const plain = path.join(f.dir, 'plain');
  fs.mkdirSync(path.join(plain, 'd'), { recursive: true });
  fs.writeFileSync(path.join(plain, '.wh.gone'), 'x');
  fs.writeFileSync(path.join(plain, 'd', '.wh..wh..opq'), '');
  spawnSync('mknod', [path.join(plain, 'zero'), 'c', '0', '0']);
  t.is(spawnSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', path.join(plain, 'd')]).status, 0);
  r = cfs('build', '--rootfs', plain, '-o', path.join(f.dir, 'plain.ub'), '--store', path.join(f.dir, 'store2'));
  t.is(r.code, 0, r.err);
  const dump = cfs('dump', path.join(f.dir, 'plain.ub')).out;
  t.regex(dump, /^\/\.wh\.gone \d+ reg /m);
  t.regex(dump, /^\/d\/\.wh\.\.wh\.\.opq \d+ reg /m);
  t.regex(dump, /^\/zero \d+ chr .* dev:0,0 /m);
  t.regex(dump, /^\/d \d+ dir .*trusted\.overlay\.opaque=/m);
});

test('build --rootfs: a missing or non-directory source, --from or --platform with it: one line, no output', (t) => {
  const f = fixture(t);
  const out = path.join(f.dir, 'x.ub');
  const cases = [
    [['--rootfs', path.join(f.dir, 'nope')], /^cfs: .*\/nope: no such directory\n$/],
    [['--rootfs', f.blob], /^cfs: .*blob\.ub: not a directory \(--rootfs takes a directory tree\)\n$/],
    [['--rootfs', '--from', f.blob, f.dir], /^cfs: --rootfs and --from do not go together/],
    [['--rootfs', '--platform', 'linux/amd64', f.dir], /^cfs: --platform picks an image of an index; a --rootfs directory has none\n$/],
  ];
  for (const [args, re] of cases) {
    const r = cfs('build', ...args, '-o', out, '--store', f.store);
    t.not(r.code, 0, args.join(' '));
    t.regex(r.err, re);
    t.false(fs.existsSync(out));
  }
  // a file the user cannot read: named, nothing written
  const tree = path.join(f.dir, 'private');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true, mode: 0o755 });
  fs.chmodSync(f.dir, 0o755);
  fs.writeFileSync(path.join(tree, 'etc', 'shadow'), 'secret', { mode: 0o600 });
  fs.writeFileSync(path.join(tree, 'etc', 'motd'), 'hello', { mode: 0o644 });
  const userStore = path.join(f.dir, 'user-store');
  fs.mkdirSync(userStore, { mode: 0o777 });
  fs.chmodSync(userStore, 0o777);
  fs.chmodSync(tree, 0o777);
  const asNobody = (...args) => spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CFS, ...args], { encoding: 'utf8' });
  let r = asNobody('build', '--rootfs', tree, '-o', path.join(tree, 'x.ub'), '--store', userStore);
  t.not(r.status, 0);
  t.regex(r.stderr, /^cfs: .*private\/etc\/shadow: EACCES/);
  t.is(r.stderr.split('\n').length, 2, r.stderr);
  t.false(fs.existsSync(path.join(tree, 'x.ub')));
  fs.rmSync(path.join(tree, 'etc', 'shadow'));
  r = asNobody('build', '--rootfs', tree, '-o', path.join(f.dir, 'user.ub'), '--store', userStore, '--json');
  t.is(r.status, 1, 'the output directory is not the user\'s');
  r = asNobody('build', '--rootfs', path.join(tree, 'etc'), '-o', path.join(tree, 'user.ub'), '--store', userStore, '--json');
  t.is(r.status, 0, r.stderr);
  t.regex(cfs('dump', path.join(tree, 'user.ub')).out, /^\/motd \d+ reg 0644 0 0 1 5 /m);
});

test('extract via the CLI: DEST must be empty, objects must exist', (t) => {
  const f = fixture(t);
  const dest = path.join(f.dir, 'out');
  fs.mkdirSync(dest);
  fs.writeFileSync(path.join(dest, 'x'), '');
  const busy = cfs('extract', f.blob, dest, '--store', f.store);
  t.is(busy.code, 1);
  t.is(busy.err, `cfs: ${dest}: directory is not empty\n`);
  const dest2 = path.join(f.dir, 'out2');
  const noStore = cfs('extract', f.blob, dest2);
  t.is(noStore.code, 1);
  t.regex(noStore.err, /^cfs: \/bin\/ash: object [0-9a-f]{64} not found in any store\n$/);
  const dest3 = path.join(f.dir, 'out3');
  const ok = cfs('extract', f.blob, dest3, '--store', f.store);
  t.is(ok.code, 0, ok.err);
  t.is(fs.readFileSync(path.join(dest3, 'etc/hostname'), 'utf8'), 'unionblob\n');
  t.is(statField(path.join(dest3, 'bin/ping'), '%A %U'), '-rwsr-xr-x root');
});

// ---------------------------------------------------------------------------------------------

test('fsck: good blob and store', async (t) => {
  const f = fixture(t);
  const r = cfs('fsck', f.blob, '--store', f.store);
  t.is(r.code, 0, r.out + r.err);
  t.regex(r.out, /: ok: 24 inodes, 24 dirents, 3 objects \(contents verified\)\n$/);
  t.deepEqual((await fsckBlob(f.blob, { stores: [f.store] })).problems, []);
});

test('fsck: missing object', (t) => {
  const f = fixture(t);
  const [hex, p] = [...f.objectPaths][0];
  fs.unlinkSync(p);
  const r = cfs('fsck', f.blob, '--store', f.store);
  t.is(r.code, 1);
  t.regex(r.out, new RegExp(`^object ${hex}: missing from every store \\(used by /\\S+\\)$`, 'm'));
  t.is(r.out.trimEnd().split('\n').length, 1);
});

test('fsck: corrupted object content (same size), wrong size; --no-content skips rehashing', (t) => {
  const f = fixture(t);
  const hexes = [...f.objectPaths.keys()];
  const p0 = f.objectPaths.get(hexes[0]);
  const data = fs.readFileSync(p0);
  data[100] ^= 0xff;
  fs.writeFileSync(p0, data);
  let r = cfs('fsck', f.blob, '--store', f.store);
  t.is(r.code, 1);
  t.regex(r.out, new RegExp(`^object ${hexes[0]}: .*: content digest is [0-9a-f]{64} \\(used by /\\S+\\)$`, 'm'));
  t.is(cfs('fsck', '--no-content', f.blob, '--store', f.store).code, 0);
  fs.appendFileSync(f.objectPaths.get(hexes[1]), 'x');
  r = cfs('fsck', '--no-content', f.blob, '--store', f.store);
  t.is(r.code, 1);
  t.regex(r.out, new RegExp(`^object ${hexes[1]}: .*: size \\d+, expected \\d+`, 'm'));
});

test('fsck: corrupted blob bytes', (t) => {
  const f = fixture(t);
  const reader = openBlob(sourceFromBuffer(f.blobBuf));
  const dirs = reader.header.sections[1];
  // The reserved byte of the root's first dirent: readers ignore it, only the CRC sees it.
  const bad = Buffer.from(f.blobBuf);
  bad[dirs.offset + 7] ^= 1;
  fs.writeFileSync(f.blob, bad);
  let r = cfs('fsck', f.blob, '--store', f.store);
  t.is(r.code, 1);
  t.regex(r.out, /^section DIRS: checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/m);
  // A byte in the header.
  const badHeader = Buffer.from(f.blobBuf);
  badHeader[60] ^= 1;
  fs.writeFileSync(f.blob, badHeader);
  r = cfs('fsck', f.blob, '--store', f.store);
  t.is(r.code, 1);
  t.regex(r.out, /blob\.ub: corrupt blob: header checksum mismatch$/m);
  // An inode's uid changed: the INODES CRC names it.
  const badInode = Buffer.from(f.blobBuf);
  badInode[reader.header.sections[0].offset + 64 + 8] ^= 1;
  fs.writeFileSync(f.blob, badInode);
  r = cfs('fsck', f.blob, '--store', f.store);
  t.is(r.code, 1);
  t.regex(r.out, /^section INODES: checksum mismatch/m);
});

// ---------------------------------------------------------------------------------------------

test('gc: removes exactly the unreferenced objects and stale temps; --dry-run removes nothing', async (t) => {
  const f = fixture(t);
  const orphanA = writeObject(f.store, verityDigest(Buffer.from('orphan a')).toString('hex'), 'orphan a');
  const orphanB = writeObject(f.store, verityDigest(Buffer.from('orphan bb')).toString('hex'), 'orphan bb');
  const objects = path.join(f.store, 'objects');
  const staleTemp = path.join(objects, '.tmp-999999999-dead');
  const freshTemp = path.join(objects, '.tmp-999999999-fresh');
  fs.writeFileSync(staleTemp, 'tmp');
  fs.utimesSync(staleTemp, new Date(Date.now() - 120_000), new Date(Date.now() - 120_000));
  fs.writeFileSync(freshTemp, 'tmp');
  const notOurs = path.join(objects, 'ab', 'README');
  fs.mkdirSync(path.dirname(notOurs), { recursive: true });
  fs.writeFileSync(notOurs, 'keep');

  const refused = cfs('gc', '--store', f.store);
  t.is(refused.code, 1);
  t.regex(refused.err, /^cfs: gc: no blob given/);

  const dry = cfs('gc', '--dry-run', '--store', f.store, f.blob);
  t.is(dry.code, 0, dry.err);
  t.is(dry.out, [
    ...[orphanA, orphanB].sort().map((p) => `would remove ${p} (${fs.statSync(p).size} bytes)`),
    `would remove ${staleTemp} (3 bytes)`,
    'would remove 2 objects and 1 temp file, 20 bytes; kept 3 objects (0 roots, 1 listed blob)', ''].join('\n'));
  for (const p of [orphanA, orphanB, staleTemp, freshTemp, ...f.objectPaths.values()]) t.true(fs.existsSync(p), p);

  const real = cfs('gc', '--store', f.store, f.blob);
  t.is(real.code, 0, real.err);
  t.is(real.out, 'removed 2 objects and 1 temp file, 20 bytes; kept 3 objects (0 roots, 1 listed blob)\n');
  for (const p of [orphanA, orphanB, staleTemp]) t.false(fs.existsSync(p), p);
  for (const p of [freshTemp, notOurs, ...f.objectPaths.values()]) t.true(fs.existsSync(p), p);
  t.is(cfs('fsck', f.blob, '--store', f.store).code, 0);

  // No blob: everything is unreferenced, but only when asked for.
  const all = await gcStores({ stores: [f.store], blobs: [], allUnreferenced: true, dryRun: true });
  t.is(all.objects.length, 3);
  await t.throwsAsync(gcStores({ stores: [f.store], blobs: [path.join(f.dir, 'missing.ub')] }), { message: /missing\.ub: no such file/ });
  t.is(fs.readdirSync(objects).filter((n) => /^[0-9a-f]{2}$/.test(n)).flatMap((d) => fs.readdirSync(path.join(objects, d))).length, 4);
});

test('gc: a root that cannot be read is named on one line and keeps every object; the rest of gc goes on', (t) => {
  const f = fixture(t);
  const orphan = writeObject(f.store, 'ee'.repeat(32), Buffer.from('unreferenced'));
  addRoot(f.store, f.blob);
  // a root whose blob path is a symlink loop (ELOOP on stat), another that leads to a dangling one
  const loop = path.join(f.dir, 'loop.ub');
  fs.symlinkSync(loop, loop);
  const loopRoot = addRoot(f.store, loop).link;
  const gone = addRoot(f.store, path.join(f.dir, 'gone.ub')).link;
  let r = cfs('gc', '--store', f.store);
  t.is(r.code, 1);
  t.is(r.err, `cfs gc: cannot read gc root ${loopRoot} -> ${loop}: ELOOP: too many symbolic links encountered, stat '${loop}'; kept every object\n`);
  t.is(r.out, `dropped dangling root ${gone} -> ${path.join(f.dir, 'gone.ub')}\nremoved 0 objects and 0 temp files, 0 bytes; kept 4 objects (1 root, 0 listed blobs)\n`);
  t.true(fs.existsSync(orphan));
  t.regex(cfs('gc', '--help').out, /A gc root that cannot be read/);

  // EACCES: gc run by an unprivileged user, the root's blob in a directory it cannot search
  if (spawnSync('setpriv', ['--version']).status === 0) {
    fs.chmodSync(f.dir, 0o755);
    const hidden = path.join(f.dir, 'hidden');
    fs.mkdirSync(hidden, { mode: 0o700 });
    fs.copyFileSync(f.blob, path.join(hidden, 'h.ub'));
    const hiddenRoot = addRoot(f.store, path.join(hidden, 'h.ub')).link;
    fs.rmSync(loopRoot);
    r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CFS, 'gc', '--dry-run', '--store', f.store], { encoding: 'utf8' });
    t.is(r.status, 1, r.stderr);
    t.is(r.stderr, `cfs gc: cannot read gc root ${hiddenRoot} -> ${path.join(hidden, 'h.ub')}: EACCES: permission denied, stat '${path.join(hidden, 'h.ub')}'; kept every object\n`);
    t.regex(r.stdout, /^would remove 0 objects and 0 temp files, 0 bytes; kept 4 objects/m);
    fs.rmSync(hiddenRoot);
  } else {
    fs.rmSync(loopRoot);
  }
  // once the unreadable roots are gone, the orphan goes
  r = cfs('gc', '--store', f.store);
  t.is(r.code, 0, r.err);
  t.false(fs.existsSync(orphan));
});

// ---------------------------------------------------------------------------------------------
// gc roots and the store lock, with real images (the Debian test images, cached)

let debianImages;
function debian(name) {
  debianImages ??= JSON.parse(fs.readFileSync(
    spawnSync('bash', [path.join(ROOT, 'test/fixtures/make-images.sh')], { encoding: 'utf8' }).stdout.trim(), 'utf8'));
  return debianImages.images[name].variants['docker-archive'];
}

function storeObjectNames(store) {
  const objects = path.join(store, 'objects');
  return fs.readdirSync(objects).filter((n) => /^[0-9a-f]{2}$/.test(n)).flatMap((d) => fs.readdirSync(path.join(objects, d)).map((n) => d + n)).sort();
}

function rootTargets(store) {
  const dir = path.join(store, 'roots');
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((n) => fs.readlinkSync(path.join(dir, n))).sort() : [];
}

const sorted = async (blob) => [...await referencedDigests([blob])].sort();

test('gc roots: cfs build registers its blob, gc keeps its objects, drops dangling roots; --no-root; bad roots stop gc', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-roots-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = path.join(dir, 'store');
  const a = path.join(dir, 'a.ub');
  const b = path.join(dir, 'b.ub');
  t.is(cfs('build', debian('a'), '-o', a, '--store', store).code, 0);
  t.is(cfs('build', debian('a'), '-o', a, '--store', store).code, 0); // again: still one root
  t.deepEqual(rootTargets(store), [a]);
  t.is(cfs('build', debian('b'), '-o', b, '--store', store, '--no-root').code, 0);
  t.deepEqual(rootTargets(store), [a]);
  const refsA = await sorted(a);
  const refsB = await sorted(b);
  const onlyB = refsB.filter((h) => !refsA.includes(h));
  t.true(onlyB.length > 0);
  t.deepEqual(storeObjectNames(store), [...new Set([...refsA, ...refsB])].sort());

  // the root plus a listed blob: nothing to remove
  let r = cfs('gc', '--store', store, b);
  t.is(r.code, 0, r.err);
  t.is(r.out, `removed 0 objects and 0 temp files, 0 bytes; kept ${storeObjectNames(store).length} objects (1 root, 1 listed blob)\n`);
  // the root alone: b's own objects go
  r = cfs('gc', '--store', store);
  t.is(r.code, 0, r.err);
  t.regex(r.out, new RegExp(`^removed ${onlyB.length} objects and 0 temp files, \\d+ bytes; kept ${refsA.length} objects \\(1 root, 0 listed blobs\\)\\n$`));
  t.deepEqual(storeObjectNames(store), refsA);
  t.is(cfs('fsck', a, '--store', store).code, 0);
  t.is(cfs('fsck', b, '--store', store).code, 1);

  // a root whose target is not a blob stops gc, as does a roots entry that is not a symlink
  t.is(cfs('build', debian('b'), '-o', path.join(dir, 'c.ub'), '--store', store).code, 0);
  fs.writeFileSync(path.join(dir, 'c.ub'), 'not a blob');
  r = cfs('gc', '--store', store);
  t.is(r.code, 1);
  t.regex(r.err, /^cfs: gc root \S+\/roots\/[0-9a-f]{32}: \S+\/c\.ub: .*nothing removed; fix the blob or remove the root\)\n$/);
  fs.rmSync(path.join(dir, 'c.ub'));
  fs.writeFileSync(path.join(store, 'roots', 'stray'), '');
  r = cfs('gc', '--store', store);
  t.is(r.code, 1);
  t.is(r.err, `cfs: ${path.join(store, 'roots', 'stray')}: not a symlink (a gc root is a symlink to a blob)\n`);
  fs.rmSync(path.join(store, 'roots', 'stray'));
  t.deepEqual(storeObjectNames(store), [...new Set([...refsA, ...refsB])].sort()); // c's build brought b's objects back

  // a's blob deleted: its root is dangling. Alone, gc refuses; with a blob, it drops the roots.
  fs.rmSync(a);
  r = cfs('gc', '--store', store);
  t.is(r.code, 1);
  t.is(r.err, `cfs: gc: no blob given and no live gc root in ${store} (2 dangling: their blobs are gone); every object would be deleted (use --all-unreferenced to mean that)\n`);
  r = cfs('gc', '--store', store, '--dry-run', b);
  t.is(r.code, 0, r.err);
  t.regex(r.out, new RegExp(`^would drop dangling root \\S+ -> ${a}$`, 'm'));
  t.is(rootTargets(store).length, 2);
  r = cfs('gc', '--store', store, b);
  t.is(r.code, 0, r.err);
  t.deepEqual(r.out.split('\n').filter((l) => l.startsWith('dropped')).map((l) => l.split(' -> ')[1]).sort(), [a, path.join(dir, 'c.ub')].sort());
  t.deepEqual(rootTargets(store), []);
  t.deepEqual(storeObjectNames(store), refsB);

  // a failed build leaves no root, and no store where there was none
  r = cfs('build', path.join(dir, 'missing.tar'), '-o', path.join(dir, 'm.ub'), '--store', store);
  t.is(r.code, 1);
  t.deepEqual(rootTargets(store), []);
  r = cfs('build', path.join(dir, 'missing.tar'), '-o', path.join(dir, 'm.ub'), '--store', path.join(dir, 'new-store'));
  t.is(r.code, 1);
  t.false(fs.existsSync(path.join(dir, 'new-store')));
  t.is(cfs('gc', '--store', path.join(dir, 'nope')).err, `cfs: gc: ${path.join(dir, 'nope')}: no such store directory\n`);
});

/** Take flock(2) on our open file description of `fd` (flock(1) on the descriptor it inherits). */
function flockDescriptor(fd, mode) {
  return spawnSync('flock', [mode === 'shared' ? '-s' : '-x', '3'], { stdio: ['ignore', 'ignore', 'inherit', fd] }).status;
}
const lockTaken = (file) => spawnSync('flock', ['-n', '-x', file, 'true']).status === 1;

test('a failed build removes the store it created only when no one else holds its lock', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-fresh-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // Another build took the fresh store's lock meanwhile: the store and its lock file stay.
  const store = path.join(dir, 'fresh');
  const hold = await holdStoresForBuild([store], path.join(dir, 'a.ub'), true);
  const other = fs.openSync(path.join(store, '.lock'), 'r');
  t.teardown(() => fs.closeSync(other));
  t.is(flockDescriptor(other, 'shared'), 0);
  await hold.failed();
  t.deepEqual(fs.readdirSync(store).sort(), ['.lock', 'roots']);
  t.deepEqual(fs.readdirSync(path.join(store, 'roots')), []); // our root went
  t.is(fs.statSync(path.join(store, '.lock')).ino, fs.fstatSync(other).ino, 'the lock file another build holds was replaced');
  t.true(lockTaken(path.join(store, '.lock')));
  // Alone, the failed build leaves nothing.
  const alone = path.join(dir, 'alone');
  await (await holdStoresForBuild([alone], path.join(dir, 'b.ub'), true)).failed();
  t.false(fs.existsSync(alone));
});

test('a locker that opened a lock file a cleanup then unlinked locks the store anew', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-relock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = path.join(dir, 'store');
  const file = path.join(store, '.lock');
  fs.mkdirSync(store);
  // Play the cleanup: hold the lock exclusively while the locker opens the file and waits...
  const cleaner = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_CREAT);
  t.is(flockDescriptor(cleaner, 'exclusive'), 0);
  let waiting;
  const waited = new Promise((resolve) => { waiting = resolve; });
  const locking = lockStores([store], 'shared', { onWait: waiting });
  await waited;
  // ...then unlink it, remove the store and let go.
  fs.rmSync(file);
  fs.rmdirSync(store);
  fs.closeSync(cleaner);
  const lock = await locking;
  t.teardown(() => lock.release());
  t.true(fs.existsSync(file), 'the locker kept a lock on the unlinked file');
  t.is(fs.statSync(file).ino, fs.fstatSync(lock.fds[0]).ino);
  t.true(lockTaken(file));
});

// Serial: the other tests' spawnSync calls would block this one's polling for whole builds.
test.serial('store lock (flock on STORE/.lock): gc waits for a build and keeps its objects; a build waits for gc', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-lock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = path.join(dir, 'store');
  const blob = path.join(dir, 'a.ub');
  const image = debian('a');
  const exited = (p) => new Promise((resolve) => p.on('exit', (code) => resolve(code)));
  const lockBusy = () => spawnSync('flock', ['-n', '-x', path.join(store, '.lock'), 'true']).status === 1;
  const objectCount = () => (fs.existsSync(path.join(store, 'objects')) ? storeObjectNames(store).length : 0);

  // Catch the build mid-write (lock held, some objects written, no blob yet) and freeze it.
  const build = spawn(process.execPath, [CFS, 'build', image, '-o', blob, '--store', store], { stdio: 'ignore' });
  const buildDone = exited(build);
  while (!(lockBusy() && objectCount() > 0) && build.exitCode === null) await sleep(10);
  build.kill('SIGSTOP');
  t.teardown(() => build.kill('SIGKILL'));
  t.is(build.exitCode, null, 'the build ended before it could be caught writing; nothing was tested');
  t.false(fs.existsSync(blob));
  const written = objectCount();

  const busy = cfs('gc', '--no-wait', '--all-unreferenced', '--store', store);
  t.is(busy.code, 1);
  t.is(busy.err, `cfs: store ${fs.realpathSync(store)} is busy: a build or snapshotter commit is writing to it (${path.join(fs.realpathSync(store), '.lock')} is locked)\n`);

  // Without the lock this gc would delete every object written so far (no blob, no live root).
  const gc = spawn(process.execPath, [CFS, 'gc', '--all-unreferenced', '--store', store], { stdio: ['ignore', 'pipe', 'pipe'] });
  let gcOut = '';
  let gcErr = '';
  gc.stdout.on('data', (d) => { gcOut += d; });
  gc.stderr.on('data', (d) => { gcErr += d; });
  const gcDone = exited(gc);
  // Until it says it waits (or ends), however loaded the machine; then a moment more for it to
  // have done anything it should not.
  const until = async (cond) => { for (const end = Date.now() + 60_000; !cond() && Date.now() < end;) await sleep(20); };
  await until(() => gcErr.includes('waiting') || gc.exitCode !== null);
  await sleep(300);
  t.is(gc.exitCode, null, 'gc must wait for the build');
  t.regex(gcErr, /^cfs gc: waiting for the build writing to \S+\n$/);
  t.true(objectCount() >= written);

  build.kill('SIGCONT');
  t.is(await buildDone, 0);
  t.is(await gcDone, 0, gcErr);
  // what goes is only what the blob does not use (contents later layers replaced)
  const refs = await sorted(blob);
  t.regex(gcOut, new RegExp(`^removed \\d+ objects and 0 temp files, \\d+ bytes; kept ${refs.length} objects \\(1 root, 0 listed blobs\\)\\n$`));
  t.is(cfs('fsck', blob, '--store', store).code, 0);
  t.deepEqual(storeObjectNames(store), refs);

  // The other way round: a build waits for a gc (here: our exclusive flock(2) on the lock file,
  // taken by flock(1) on the descriptor it inherits) and writes nothing meanwhile.
  const gcLock = fs.openSync(path.join(store, '.lock'), 'r');
  t.teardown(() => { try { fs.closeSync(gcLock); } catch { /* closed */ } });
  t.is(spawnSync('flock', ['-x', '3'], { stdio: ['ignore', 'ignore', 'inherit', gcLock] }).status, 0);
  const second = spawn(process.execPath, [CFS, 'build', debian('b'), '-o', path.join(dir, 'b.ub'), '--store', store], { stdio: ['ignore', 'ignore', 'pipe'] });
  let secondErr = '';
  second.stderr.on('data', (d) => { secondErr += d; });
  const secondDone = exited(second);
  await until(() => secondErr.includes('waiting') || second.exitCode !== null);
  await sleep(300);
  t.is(second.exitCode, null, 'the build must wait for the gc');
  t.regex(secondErr, /^cfs build: waiting for the gc running on \S+\n$/);
  t.deepEqual(storeObjectNames(store), refs);
  fs.closeSync(gcLock);
  t.is(await secondDone, 0, secondErr);
  t.deepEqual(rootTargets(store), [blob, path.join(dir, 'b.ub')].sort());
});

/**
 * A copy of the checkout's tracked files (no dist/, no addon build, times kept) with a hardlinked
 * copy of the suite's node_modules: never a symlink, through which an `npm ci` in the copy
 * (demo.sh runs one when package-lock.json is newer than node_modules) would empty the suite's own.
 */
function checkoutCopy(t) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-checkout-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  const files = spawnSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\0').filter((f) => f && fs.existsSync(path.join(ROOT, f)));
  t.true(files.includes('bin/cfs') && files.includes('package.json'), 'git ls-files lists the checkout');
  for (const f of files) {
    const [from, to] = [path.join(ROOT, f), path.join(d, f)];
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(from, to);
    const st = fs.statSync(from);
    fs.utimesSync(to, st.atime, st.mtime);
  }
  const modules = [path.join(ROOT, 'node_modules'), path.join(d, 'node_modules')];
  let cp = spawnSync('cp', ['-al', ...modules], { encoding: 'utf8' });
  if (cp.status !== 0) { // another filesystem than the checkout's: a real copy
    fs.rmSync(modules[1], { recursive: true, force: true });
    cp = spawnSync('cp', ['-a', ...modules], { encoding: 'utf8' });
  }
  t.is(cp.status, 0, cp.stderr);
  return d;
}

test('npm run demo (in a copy of the checkout): builds the bundled example, shows it, fsck passes, a rebuild is byte-identical', (t) => {
  const d = checkoutCopy(t);
  const r = spawnSync('npm', ['run', '-s', 'demo'], { cwd: d, encoding: 'utf8' });
  t.is(r.status, 0, r.stdout + r.stderr);
  for (const cmd of ['build', 'info', 'ls -l', 'cat', 'dump', 'fsck']) t.regex(r.stdout, new RegExp(`^\\$ cfs ${cmd} `, 'm'), cmd);
  t.regex(r.stdout, /^blobs are byte-identical$/m);
  const summaries = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  t.is(summaries.length, 2);
  t.true(summaries[0].objectsNew > 0);
  t.is(summaries[1].objectsNew, 0, 'the second build finds every object present');
  t.true(fs.existsSync(path.join(d, 'demo-out', 'hello.ub')));
});

test('from a checkout, the scripts npm ci runs (install, prepare) make bin/cfs work: dist/, the addon and the FUSE server built, a blob listed', (t) => {
  // `install` and `prepare` are the lifecycle scripts `npm ci` runs for the checkout once its
  // dependencies are in; `npm run X` runs the same script.
  const d = checkoutCopy(t);
  const before = spawnSync(process.execPath, [path.join(d, 'bin/cfs'), '--version'], { encoding: 'utf8' });
  t.not(before.status, 0, 'nothing built yet');
  for (const script of ['install', 'prepare']) {
    const r = spawnSync('npm', ['run', '-s', script], { cwd: d, encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    t.is(r.stderr, '', `${script}: every native part built (no note)`);
  }
  t.true(fs.existsSync(path.join(d, 'mounter/addon/build/Release/unionblob.node')));
  t.true(fs.existsSync(path.join(d, 'mounter/fuse/unionblob-fuse')));
  const v = spawnSync(process.execPath, [path.join(d, 'bin/cfs'), '--version'], { encoding: 'utf8' });
  t.is(v.status, 0, v.stderr);
  t.regex(v.stdout, /^cfs \d+\.\d+\.\d+/);
  const blob = path.join(d, 'x.ub');
  fs.writeFileSync(blob, encodeBlob(dir(0o755, { hello: node(S.REG | 0o644, { size: 2, inline: Buffer.from('hi') }) })));
  const ls = spawnSync(process.execPath, [path.join(d, 'bin/cfs'), 'ls', blob], { encoding: 'utf8' });
  t.is(ls.status, 0, ls.stderr);
  t.regex(ls.stdout, /^hello$/m);
});

test('npm pack of the checkout, installed with npm install -g: that cfs builds, checks, mounts (FUSE) and reads the example', (t) => {
  // What a user gets from a packed unionblob: dist/ and the native sources are in the tarball
  // (package.json `files`), and its install script builds the addon and the FUSE server there.
  const d = checkoutCopy(t);
  const pack = spawnSync('npm', ['pack', '--silent', '--pack-destination', d], { cwd: d, encoding: 'utf8' });
  t.is(pack.status, 0, pack.stderr);
  const tarball = path.join(d, pack.stdout.trim().split('\n').pop());
  const prefix = path.join(d, 'prefix');
  // --prefer-offline: the packages npm ci fetched for the checkout are in npm's cache
  const inst = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { encoding: 'utf8', timeout: 900_000 });
  t.is(inst.status, 0, inst.stderr);
  t.notRegex(inst.stderr, /^unionblob: /m, 'every native part built (no note from build-native.sh)');
  const pkg = path.join(prefix, 'lib/node_modules/unionblob');
  t.false(fs.existsSync(path.join(pkg, 'test')), 'tests are not packed');
  t.true(fs.existsSync(path.join(pkg, 'mounter/addon/build/Release/unionblob.node')), 'the addon built at install');
  t.true(fs.existsSync(path.join(pkg, 'mounter/fuse/unionblob-fuse')), 'the FUSE server built at install');
  const cfs = (...args) => spawnSync(path.join(prefix, 'bin/cfs'), args, { cwd: d, encoding: 'utf8' });
  const v = cfs('--version');
  t.is(v.status, 0, v.stderr);
  t.regex(v.stdout, /^cfs \d+\.\d+\.\d+/);
  const [blob, store, mnt] = ['h.ub', 'store', 'mnt'].map((f) => path.join(d, f));
  const b = cfs('build', path.join(ROOT, 'examples/hello-oci.tar'), '-o', blob, '--store', store, '--json');
  t.is(b.status, 0, b.stderr);
  t.true(JSON.parse(b.stdout).objectsNew > 0);
  const f = cfs('fsck', blob, '--store', store);
  t.is(f.status, 0, f.stderr);
  fs.mkdirSync(mnt);
  const m = cfs('mount', blob, mnt, '--store', store, '--backend', 'fuse');
  t.is(m.status, 0, m.stderr);
  try {
    const c = cfs('cat', blob, '/etc/os-release', '--store', store);
    t.is(c.status, 0, c.stderr);
    t.is(fs.readFileSync(path.join(mnt, 'etc/os-release'), 'utf8'), c.stdout, 'the mounted file reads as cfs cat shows it');
  } finally {
    const u = cfs('umount', mnt);
    t.is(u.status, 0, u.stderr);
  }
});

test('two builds of one OUT, one fails: the root of the blob the other published stays', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-tworoots-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = path.join(dir, 'store');
  const out = path.join(dir, 'out.ub');
  const rootsOf = () => fs.readdirSync(path.join(store, 'roots')).map((n) => fs.readlinkSync(path.join(store, 'roots', n)));
  // A registers OUT's root, B finds it there; B publishes OUT and ends, then A fails.
  let a = await holdStoresForBuild([store], out, true);
  let b = await holdStoresForBuild([store], out, true);
  fs.writeFileSync(out, 'the blob B wrote');
  b.done();
  await a.failed();
  t.deepEqual(rootsOf(), [out], 'A took back the root of a blob that exists');
  // A fails before B publishes: the root goes with A, and B names OUT again when it is done.
  fs.rmSync(out);
  fs.rmSync(path.join(store, 'roots'), { recursive: true });
  a = await holdStoresForBuild([store], out, true);
  b = await holdStoresForBuild([store], out, true);
  await a.failed();
  t.deepEqual(rootsOf(), []);
  fs.writeFileSync(out, 'the blob B wrote');
  b.done();
  t.deepEqual(rootsOf(), [out], 'B registered its blob again');
});

test('a rebuild replaces what stands under an object name but is no object (a symlink), so the blob it writes checks', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-notobject-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = path.join(dir, 'store');
  const image = path.join(ROOT, 'examples/hello-oci.tar');
  const first = cfs('build', image, '-o', path.join(dir, 'a.ub'), '--store', store, '--no-root');
  t.is(first.code, 0, first.err);
  const objects = [];
  for (const fan of fs.readdirSync(path.join(store, 'objects')).filter((n) => /^[0-9a-f]{2}$/.test(n))) {
    for (const name of fs.readdirSync(path.join(store, 'objects', fan))) objects.push(path.join(store, 'objects', fan, name));
  }
  t.true(objects.length > 0);
  const victim = objects[0];
  const size = fs.statSync(victim).size;
  fs.rmSync(victim);
  fs.symlinkSync('/etc/hostname', victim);
  const again = cfs('build', image, '-o', path.join(dir, 'b.ub'), '--store', store, '--no-root');
  t.is(again.code, 0, again.err);
  t.true(fs.lstatSync(victim).isFile(), 'the symlink was replaced by the object');
  t.is(fs.statSync(victim).size, size);
  const fsck = cfs('fsck', path.join(dir, 'b.ub'), '--store', store);
  t.is(fsck.code, 0, fsck.out + fsck.err);
});
