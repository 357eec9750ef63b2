// The FUSE server (mounter/fuse/unionblob-fuse) and the mount commands (cfs mount / umount,
// mount.unionblob), issue #4. Runs as root on a host with /dev/fuse.
//
// The main oracle is the SPEC §9 dump: a Python walk of the mounted tree (lstat, readdir order,
// readlink, listxattr/getxattr, a sha256 of every regular file read through the mount) prints
// the same lines as `cfs dump`, with regular-file payloads replaced on both sides by the sha256
// of the content (or the errno of reading it). So every stat field (st_ino = index + 1, mode,
// nlink, uid, gid, size, mtime ns, rdev), every name, target, xattr and byte is compared with
// what the blob says, for trees built with encodeBlob, for the golden vectors (whose .dump files
// are the expected text, independent of our decoder) and, at the end, for the real Debian image
// against umoci's reference tree.
import test from 'ava';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const execFileP = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = process.env.CFS_BIN ?? path.join(ROOT, 'bin', 'cfs');
const FUSE_DIR = path.join(ROOT, 'mounter', 'fuse');
const SERVER = path.join(FUSE_DIR, 'unionblob-fuse');
const VECTORS = path.join(ROOT, 'format', 'vectors');
const MAKE_IMAGES = path.join(ROOT, 'test', 'fixtures', 'make-images.sh');
const HELPER_DEST = '/sbin/mount.unionblob';

const canRun = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');
const serial = canRun ? test.serial : test.serial.skip;
if (!canRun) test('FUSE tests need root and /dev/fuse', (t) => t.pass());

const dist = (p) => import(path.join(ROOT, 'dist', p));
const { encodeBlob } = canRun ? await dist('format/encode.js') : {};
const { openBlob, sourceFromFile } = canRun ? await dist('format/decode.js') : {};
const { dumpBlob } = canRun ? await dist('format/dump.js') : {};
const { INO, inodeOffset } = canRun ? await dist('format/layout.js') : {};
const { verityDigest } = canRun ? await dist('format/verity.js') : {};
const { newDir, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFDIR } = canRun ? await dist('format/tree.js') : {};
const { keyOf, logPath, statePath, runDir } = canRun ? await dist('mounter/state.js') : {};
const { readMountinfo, mountsUnder } = canRun ? await dist('mounter/mountinfo.js') : {};

// ------------------------------------------------------------------------------------------
// helpers

function cfs(args, opts = {}) {
  const r = spawnSync(process.execPath, [CFS, ...args], { encoding: 'utf8', timeout: 120_000, ...opts });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function cfsOk(t, args) {
  const r = cfs(args);
  if (r.status !== 0) t.fail(`cfs ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r;
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...opts });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

function py(script, args) {
  const r = sh('python3', ['-c', script, ...args], { maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`python helper failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

function meta(mode, extra = {}) {
  return { mode, uid: 0, gid: 0, mtimeSec: 1700000000, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra };
}

/** Stores `buf` as an object of `store` (objects/XX/62hex) and returns its digest. */
function putObject(store, buf, digest = verityDigest(buf)) {
  const hex = digest.toString('hex');
  fs.mkdirSync(path.join(store, 'objects', hex.slice(0, 2)), { recursive: true });
  fs.writeFileSync(path.join(store, 'objects', hex.slice(0, 2), hex.slice(2)), buf);
  return digest;
}

function objectFile(stores, hex) {
  for (const s of stores) {
    const p = path.join(s, 'objects', hex.slice(0, 2), hex.slice(2));
    try {
      if (fs.lstatSync(p).isFile()) return p;
    } catch {
      // not in this store
    }
  }
  return undefined;
}

/** Every mount at or below `dir`. */
function mountsBelow(dir) {
  return mountsUnder(dir, readMountinfo()).map((e) => `${e.mountPoint} (${e.fsType})`);
}

/** Files of the run dir that a mount of `target` would leave behind. */
function leftovers(target) {
  const key = keyOf(target);
  return [statePath(key), logPath(key), path.join(runDir(), 'lower', key)].filter((p) => fs.existsSync(p));
}

function readLog(target) {
  try {
    return fs.readFileSync(logPath(keyOf(target)), 'utf8');
  } catch {
    return '';
  }
}

function serverPid(target) {
  return JSON.parse(fs.readFileSync(statePath(keyOf(target)), 'utf8')).pid;
}

function errnoOf(fn) {
  try {
    fn();
    return 'OK';
  } catch (err) {
    return err.code;
  }
}

/** sha256 of every file under `dir` (path -> hash), to prove a store was not touched. */
function hashTree(dir) {
  const out = {};
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = e.isFile() ? sha256(fs.readFileSync(p)) : 'special';
    }
  };
  walk(dir);
  return out;
}

// ------------------------------------------------------------------------------------------
// The dump oracle

const DUMP_PY = String.raw`
import errno, hashlib, os, stat, sys
root = os.fsencode(sys.argv[1])
TYPES = {stat.S_IFREG: 'reg', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'lnk', stat.S_IFCHR: 'chr',
         stat.S_IFBLK: 'blk', stat.S_IFIFO: 'fifo', stat.S_IFSOCK: 'sock'}
ESCAPED = b'trusted.overlay.overlay.'

def esc(b):
    return ''.join(chr(c) if 0x21 <= c <= 0x7e and c != 0x5c else '\\x%02x' % c for c in b)

def content(p):
    h = hashlib.sha256()
    try:
        with open(p, 'rb') as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
    except OSError as e:
        return 'data:' + errno.errorcode.get(e.errno, str(e.errno))
    return 'data:' + h.hexdigest()

def xattrs(p):
    out = []
    for name in os.listxattr(p, follow_symlinks=False):
        raw = os.fsencode(name)
        value = os.getxattr(p, name, follow_symlinks=False)
        if raw.startswith(ESCAPED):
            raw = b'trusted.overlay.' + raw[len(ESCAPED):]
        elif raw.startswith(b'trusted.overlay.'):
            raw = b'UNESCAPED:' + raw
        out.append((raw, value))
    out.sort()
    return ','.join(esc(n) + '=' + v.hex() for n, v in out) or '-'

lines, inos = [], set()
def visit(rel, p):
    st = os.lstat(p)
    t = TYPES[stat.S_IFMT(st.st_mode)]
    inos.add(st.st_ino)
    payload = '-'
    if t == 'reg' and st.st_size:
        payload = content(p)
    elif t == 'dir':
        payload = 'dir:%d' % st.st_size
    elif t == 'lnk':
        payload = 'link:' + esc(os.readlink(p))
    elif t in ('chr', 'blk'):
        payload = 'dev:%d,%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
    sec, nsec = divmod(st.st_mtime_ns, 10**9)
    lines.append('%s %d %s %04o %d %d %d %d %d.%09d %s %s' % (
        esc(rel or b'/'), st.st_ino, t, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
        st.st_nlink, st.st_size, sec, nsec, payload, xattrs(p)))
    if t == 'dir':
        for name in os.listdir(p):
            visit(rel + b'/' + name, p + b'/' + name)

visit(b'', root)
print('# inodes=%d dirents=%d' % (len(inos), len(lines) - 1))
print('\n'.join(lines))
`;

/** The dump of a mounted tree, as DUMP_PY prints it. */
function dumpMount(mnt) {
  return py(DUMP_PY, [mnt]).trimEnd().split('\n');
}

function overflowId(kind) {
  try {
    return fs.readFileSync(`/proc/sys/kernel/overflow${kind}`, 'utf8').trim();
  } catch {
    return '65534';
  }
}

/**
 * A SPEC §9 dump with regular-file payloads replaced by what reading the file must give: the
 * sha256 of the inline bytes or of the object (from the first store that has it), or EIO.
 */
function normalizeDump(text, stores) {
  const overflow = [overflowId('uid'), overflowId('gid')];
  const lines = text.trimEnd().split('\n');
  const head = /inodes=(\d+) dirents=(\d+)/.exec(lines[0]);
  const out = [`# inodes=${head[1]} dirents=${head[2]}`];
  for (const line of lines.slice(1)) {
    const f = line.split(' ');
    // 4294967295 is no valid id in the VFS: every reader (kernel module too) shows the overflow id.
    if (f[4] === '4294967295') f[4] = overflow[0];
    if (f[5] === '4294967295') f[5] = overflow[1];
    // listxattr leaves out what getxattr cannot give: user.* of what is not a file or directory
    if (f[2] !== 'reg' && f[2] !== 'dir' && f[10] !== '-') {
      f[10] = f[10].split(',').filter((kv) => !kv.startsWith('user.')).join(',') || '-';
    }
    if (f[2] === 'reg') {
      if (f[9].startsWith('inline:')) f[9] = 'data:' + sha256(Buffer.from(f[9].slice(7), 'hex'));
      else if (f[9].startsWith('obj:')) {
        const file = objectFile(stores, f[9].slice(4));
        f[9] = file ? 'data:' + sha256(fs.readFileSync(file)) : 'data:EIO';
      }
    }
    out.push(f.join(' '));
  }
  return out;
}

function expectedDump(blob, stores) {
  const src = sourceFromFile(blob);
  try {
    return normalizeDump(dumpBlob(openBlob(src)), stores);
  } finally {
    src.close();
  }
}

/** Line-by-line differences, at most 40 shown. */
function dumpDiffs(expected, got) {
  const diffs = [];
  const n = Math.max(expected.length, got.length);
  for (let i = 0; i < n && diffs.length < 40; i++) {
    if (expected[i] !== got[i]) diffs.push(`line ${i}:\n  blob:  ${expected[i]}\n  mount: ${got[i]}`);
  }
  return diffs;
}

// ------------------------------------------------------------------------------------------
// Fixtures

const S = { work: null, storeA: null, storeB: null, blob: null, tree: null, contents: new Map() };

function reg(content, mode = 0o644, extra = {}, store = S.storeA) {
  const buf = Buffer.from(content);
  const n = meta(S_IFREG | mode, { size: buf.length, ...extra });
  if (buf.length > 0 && buf.length <= 64) n.inline = buf;
  else if (buf.length > 0) n.digest = putObject(store, buf);
  return n;
}

/** A valid POSIX ACL xattr value: user::rw- user:1000:r-- group::r-- mask::r-- other::r--. */
function aclValue() {
  const entries = [[0x01, 6, 0xffffffff], [0x02, 4, 1000], [0x04, 4, 0xffffffff], [0x10, 4, 0xffffffff], [0x20, 4, 0xffffffff]];
  const b = Buffer.alloc(4 + entries.length * 8);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + i * 8);
    b.writeUInt16LE(perm, 6 + i * 8);
    b.writeUInt32LE(id, 8 + i * 8);
  });
  return b;
}

/** Every kind of inode, name and xattr the format has, plus objects in two stores. */
function richTree() {
  const root = newDir(0o755);
  root.mtimeNsec = 500000000;
  const add = (dir, name, node) => { dir.children.set(name, node); return node; };
  add(root, 'empty', reg(''));
  add(root, 'small', reg('hello\n', 0o644, { uid: 1000, gid: 100, mtimeNsec: 123456789 }));
  add(root, 'exactly64', reg('6'.repeat(64)));
  add(root, 'just65', reg('7'.repeat(65)));
  const bigContent = crypto.randomBytes((1 << 20) + 123);
  const big = add(root, 'big', reg(bigContent, 0o640, { uid: 12, gid: 34 }));
  const hl = add(root, 'hl', newDir(0o755));
  add(hl, 'big-again', big);
  add(hl, 'third', big);
  add(root, 'setuid', reg(crypto.randomBytes(5000), 0o4755));
  add(root, 'setgid', reg('sg', 0o2711, { gid: 5 }));
  add(root, 'sticky', newDir(0o1777));
  add(root, 'empty-dir', newDir(0o700, 7, 8));
  // user.* on a symlink and a fifo (a tar's SCHILY.xattr can carry them): the VFS lets nobody read them
  add(root, 'link', meta(S_IFLNK | 0o777, { size: 5, target: 'small', xattrs: new Map([['user.on-link', Buffer.from('1')], ['security.test', Buffer.from('s')]]) }));
  const longTarget = 'abcdefg/'.repeat(511) + 'end1234';
  add(root, 'longlink', meta(S_IFLNK | 0o777, { size: longTarget.length, target: longTarget }));
  const devs = add(root, 'devs', newDir(0o755));
  add(devs, 'chr', meta(S_IFCHR | 0o620, { rdevMajor: 4, rdevMinor: 300 }));
  add(devs, 'blk', meta(S_IFBLK | 0o660, { rdevMajor: 259, rdevMinor: 70000 }));
  add(devs, 'null', meta(S_IFCHR | 0o666, { rdevMajor: 1, rdevMinor: 3 }));
  add(devs, 'fifo', meta(S_IFIFO | 0o644, { xattrs: new Map([['user.on-fifo', Buffer.from('2')]]) }));
  add(devs, 'sock', meta(S_IFSOCK | 0o755));
  add(root, 'old', reg('before the epoch', 0o644, { mtimeSec: -86400, mtimeNsec: 5 }));
  const x = add(root, 'x', reg('xattrs'));
  x.xattrs.set('user.foo', Buffer.from('bar'));
  x.xattrs.set('user.empty', Buffer.alloc(0));
  x.xattrs.set('trusted.overlay.opaque', Buffer.from('y'));
  x.xattrs.set('trusted.overlay.overlay.nested', Buffer.from('z'));
  x.xattrs.set('trusted.other', Buffer.from([0, 1, 2, 255]));
  x.xattrs.set('security.capability', Buffer.from('0000000220000000000000000000000000000000', 'hex'));
  const ov = add(root, 'opaque-dir', newDir(0o755));
  ov.xattrs.set('trusted.overlay.opaque', Buffer.from('y'));
  add(ov, 'inside', reg('in'));
  const acl = add(root, 'acl', reg('acl', 0o644));
  acl.xattrs.set('system.posix_acl_access', aclValue());
  // a file capability of a user namespace's root (VFS_CAP_REVISION_3: CAP_NET_RAW, root id 1000:
  // a root id of 0 would be shown as a v2 capability to the initial namespace)
  const capv3 = add(root, 'capv3', reg('v3'));
  capv3.xattrs.set('security.capability', Buffer.from('0100000300200000000000000000000000000000e8030000', 'hex'));
  const names = add(root, 'names', newDir(0o755));
  for (const n of ['sp ace', Buffer.from('ünï').toString('latin1'), '\xff\xfe', 'a\\b', '=,', 'x'.repeat(255), '-dash', '.hidden', '...']) {
    add(names, n, reg(n.slice(0, 10)));
  }
  const bigdir = add(root, 'bigdir', newDir(0o755));
  for (let i = 0; i < 1000; i++) add(bigdir, `entry-${String(i).padStart(4, '0')}-${'n'.repeat(i % 37)}`, reg(`${i}`));
  let d = root;
  for (const c of 'abcdefghij') d = add(d, c, newDir(0o755));
  add(d, 'deep-file', reg('deep'));
  // Objects: one only in store B, one in no store, one whose copy in A is wrong (same size).
  add(root, 'onlyb', reg(crypto.randomBytes(10000), 0o644, {}, S.storeB));
  const gone = crypto.randomBytes(3000);
  add(root, 'missing', meta(S_IFREG | 0o644, { size: gone.length, digest: verityDigest(gone) }));
  const good = crypto.randomBytes(20000);
  const shadowed = add(root, 'shadowed', reg(good, 0o644, {}, S.storeB));
  const bad = Buffer.from(good);
  bad[100] ^= 0xff;
  putObject(S.storeA, bad, shadowed.digest);
  S.contents.set('big', bigContent).set('shadowed-good', good).set('shadowed-bad', bad);
  return root;
}

test.before(async () => {
  if (!canRun) return;
  const make = sh('make', ['-C', FUSE_DIR, 'unionblob-fuse', 'verity-digest']);
  if (make.status !== 0) throw new Error(`make -C mounter/fuse failed:\n${make.stdout}${make.stderr}`);
  S.work = await fsp.mkdtemp(path.join(process.env.UB_TEST_TMP ?? os.tmpdir(), 'ub-fuse-'));
  S.storeA = path.join(S.work, 'storeA');
  S.storeB = path.join(S.work, 'storeB');
  fs.mkdirSync(path.join(S.storeA, 'objects'), { recursive: true });
  fs.mkdirSync(path.join(S.storeB, 'objects'), { recursive: true });
  S.tree = richTree();
  S.blob = path.join(S.work, 'rich.ub');
  fs.writeFileSync(S.blob, encodeBlob(S.tree));
});

test.after.always(() => {
  if (!S.work) return;
  // Whatever a failed test left mounted goes first, so rm never walks into a mount.
  for (const m of mountsUnder(S.work, readMountinfo()).reverse()) {
    cfs(['umount', m.mountPoint]);
    if (mountsUnder(m.mountPoint, readMountinfo()).length) sh('umount', ['-l', m.mountPoint]);
  }
  if (!process.env.UB_KEEP && mountsUnder(S.work, readMountinfo()).length === 0) {
    fs.rmSync(S.work, { recursive: true, force: true });
  }
});

function mkTarget(name) {
  const dir = path.join(S.work, name);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// ------------------------------------------------------------------------------------------
// Tests

// Pure parsing: no root needed.
const distReady = fs.existsSync(path.join(ROOT, 'dist', 'mounter', 'helper.js'));
const unit = distReady ? test : test.skip;

unit('mount.unionblob parses mount(8) helper arguments and fstab options', async (t) => {
  const { parseHelperArgs } = await dist('mounter/helper.js');
  const { request, verbose } = parseHelperArgs(['/b.ub', '/mnt', '-v', '-o', 'rw,basedir=/s1:/s2,upperdir=/u,workdir=/w,verity=try,digest=ab,backend=fuse,fuse_cache=shared,nosuid,noauto,x-systemd.automount,nofail']);
  t.true(verbose);
  t.deepEqual(request.stores, ['/s1', '/s2']);
  t.is(request.upper, '/u');
  t.is(request.work, '/w');
  t.is(request.verity, 'try');
  t.is(request.digest, 'ab');
  t.is(request.backend, 'fuse');
  t.is(request.fuseCache, 'shared');
  t.deepEqual(request.flags, ['nosuid']);
  const mapped = parseHelperArgs(['/b.ub', '/mnt', '-o', 'basedir=/s,uidmap=0:100000:65536,gidmap=0:100000:1:1:200000:10']).request;
  t.is(mapped.uidmap, '0:100000:65536');
  t.is(mapped.gidmap, '0:100000:1:1:200000:10');
  t.throws(() => parseHelperArgs(['/b.ub', '/mnt', '-o', 'basedir=/s,bogus']), { message: /unknown option bogus/ });
  // ro (or -r) with an upper: a read-only overlay, as overlayfs and mount.composefs do
  for (const args of [['-o', 'ro,basedir=/s,upperdir=/u,workdir=/w'], ['-r', '-o', 'basedir=/s,upperdir=/u,workdir=/w']]) {
    t.true(parseHelperArgs(['/b.ub', '/mnt', ...args]).request.readOnly);
  }
  t.is(parseHelperArgs(['/b.ub', '/mnt', '-o', 'ro,basedir=/s']).request.upper, undefined);
  const rw = parseHelperArgs(['/b.ub', '/mnt', '-o', 'ro,rw,basedir=/s,upperdir=/u,workdir=/w']).request;
  t.is(rw.upper, '/u');
  t.falsy(rw.readOnly);
  // libmount's quoting: a quoted value keeps its commas, the quotes go
  const quoted = parseHelperArgs(['/b.ub', '/mnt', '-o', 'basedir="/a,b":/c,upperdir="/u p",workdir=/w']).request;
  t.deepEqual(quoted.stores, ['/a,b', '/c']);
  t.is(quoted.upper, '/u p');
  t.throws(() => parseHelperArgs(['/b.ub', '/mnt', '-o', 'basedir="/a']), { message: /unbalanced double quote/ });
  // what mount(8) and fstab pass that says nothing to a read-only filesystem
  const quiet = parseHelperArgs(['/b.ub', '/mnt', '-o', 'basedir=/s,lazytime,nolazytime,iversion,nomand,helper=unionblob,uhelper=x,user=bob,_netdev,comment=x']);
  t.deepEqual(quiet.request.flags, []);
  t.false(quiet.nofail);
  // remount: the mount's current options come along (FUSE's own too); no basedir= needed
  const re = parseHelperArgs(['/b.ub', '/mnt', '-o', 'ro,relatime,remount,nosuid,user_id=0,allow_other']);
  t.true(re.remount);
  t.false(re.bind);
  t.true(re.request.flags.includes('nosuid'));
  t.is(parseHelperArgs(['/b.ub', '/mnt', '-N', '/proc/1/ns/mnt', '-o', 'basedir=/s,nofail']).namespace, '/proc/1/ns/mnt');
  t.true(parseHelperArgs(['/b.ub', '/mnt', '-o', 'basedir=/s,nofail']).nofail);
  t.notThrows(() => parseHelperArgs(['/b.ub', '/mnt', '-s', '-o', 'basedir=/s,bogus']));
  t.throws(() => parseHelperArgs(['/b.ub', '/mnt']), { message: /basedir/ });
  t.true(parseHelperArgs(['/b.ub', '/mnt', '-f', '-o', 'basedir=/s']).request.fake);
});

unit('mountinfo parsing unescapes paths and splits both option lists', async (t) => {
  const { parseMountinfo } = await dist('mounter/mountinfo.js');
  const [e] = parseMountinfo('45 27 0:40 / /tmp/a\\040b rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u\n');
  t.is(e.mountPoint, '/tmp/a b');
  t.is(e.fsType, 'overlay');
  t.is(e.device, '0:40');
  t.is(e.mountOptions, 'rw,relatime');
  t.is(e.superOptions, 'rw,lowerdir=/l,upperdir=/u');
});

serial('the server computes fs-verity digests like format/verity.ts', (t) => {
  const files = [0, 1, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 300001].map((n) => {
    const p = path.join(S.work, `v${n}`);
    fs.writeFileSync(p, crypto.randomBytes(n));
    return p;
  });
  const r = sh(path.join(FUSE_DIR, 'verity-digest'), files);
  t.is(r.status, 0, r.stderr);
  const got = r.stdout.trim().split('\n').map((l) => l.split('  ')[0]);
  t.deepEqual(got, files.map((f) => verityDigest(fs.readFileSync(f)).toString('hex')));
});

// Every page-cache mode of the FUSE server (mounter/mount.ts has the default).
const FUSE_CACHES = ['auto', 'private', 'shared'];

// mount(8)'s nosymfollow (MS_NOSYMFOLLOW: path walks through the mount do not follow its
// symlinks; readlink still reads them): libfuse 3.14 refuses the option, so cfs sets it on the
// FUSE mount once the server has mounted it; the overlay of a writable mount takes it directly.
serial('cfs mount -o nosymfollow: symlinks in the mount are not followed (FUSE, the writable overlay); the last of symfollow/nosymfollow wins', (t) => {
  const mnt = mkTarget('nosymfollow');
  const follows = (m) => errnoOf(() => fs.readFileSync(path.join(m, 'link'), 'utf8'));
  const flagsOf = (m) => readMountinfo().filter((e) => e.mountPoint === m).at(-1).mountOptions;
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--backend', 'fuse', '-o', 'nosuid,nosymfollow']);
  try {
    t.regex(flagsOf(mnt), /\bnosymfollow\b/);
    t.regex(flagsOf(mnt), /\bnosuid\b/, 'the other flags stay');
    t.is(follows(mnt), 'ELOOP', 'open through the symlink');
    t.is(fs.readlinkSync(path.join(mnt, 'link')), 'small', 'readlink still works');
    t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n');
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--backend', 'fuse', '-o', 'nosymfollow,symfollow']);
  try {
    t.notRegex(flagsOf(mnt), /\bnosymfollow\b/);
    t.is(follows(mnt), 'OK');
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  const upper = mkTarget('nosymfollow-upper');
  const work = mkTarget('nosymfollow-work');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--backend', 'fuse', '--upper', upper, '--work', work, '-o', 'nosymfollow']);
  try {
    t.regex(flagsOf(mnt), /\bnosymfollow\b/, 'the overlay');
    t.is(follows(mnt), 'ELOOP');
    fs.symlinkSync('small', path.join(mnt, 'new-link'));
    t.is(errnoOf(() => fs.readFileSync(path.join(mnt, 'new-link'))), 'ELOOP', 'a symlink made in the upper');
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  t.deepEqual(mountsBelow(mnt), []);
  t.deepEqual(leftovers(mnt), []);
  t.deepEqual(mountsBelow(upper), []);
});

for (const cache of FUSE_CACHES) serial(`cfs mount --backend auto says which backend; the tree equals the blob (stat, readdir, readlink, xattrs, data), --fuse-cache ${cache}`, (t) => {
  const mnt = mkTarget(`rich-${cache}`);
  const r = cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--backend', 'auto', '--fuse-cache', cache]);
  const kernel = /\tunionblob$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'));
  t.regex(r.stderr, kernel ? /kernel/ : /FUSE/);
  if (kernel) t.log('this host has the unionblob kernel module: the auto mount used it');
  try {
    const top = readMountinfo().filter((e) => e.mountPoint === mnt).at(-1);
    t.is(top.fsType, kernel ? 'unionblob' : 'fuse.unionblob');
    const expected = expectedDump(S.blob, [S.storeA, S.storeB]);
    const got = dumpMount(mnt);
    t.deepEqual(dumpDiffs(expected, got), []);
    t.true(got.length > 1000);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  t.deepEqual(mountsBelow(mnt), []);
  t.deepEqual(leftovers(mnt), []);
});

serial('stat fields one by one: ino, mode, nlink, uid, gid, size, mtime ns, rdev', (t) => {
  const mnt = mkTarget('stat');
  cfsOk(t, ['mount', S.blob, mnt, '--store', `${S.storeA}:${S.storeB}`, '--backend', 'fuse']);
  try {
    const st = (p) => fs.lstatSync(path.join(mnt, p), { bigint: true });
    t.is(st('.').ino, 1n, 'root is st_ino 1 (index 0 + 1)');
    t.is(st('.').nlink, 2n + BigInt([...S.tree.children.values()].filter((c) => (c.mode & 0o170000) === S_IFDIR).length));
    const big = st('big');
    t.is(big.nlink, 3n);
    t.is(st('hl/big-again').ino, big.ino);
    t.is(st('hl/third').ino, big.ino);
    t.is(big.uid, 12n);
    t.is(big.gid, 34n);
    t.is(big.size, BigInt((1 << 20) + 123));
    t.is(Number(big.mode & 0o7777n), 0o640);
    t.is(Number(st('setuid').mode & 0o7777n), 0o4755);
    t.is(Number(st('setgid').mode & 0o7777n), 0o2711);
    t.is(Number(st('sticky').mode & 0o7777n), 0o1777);
    t.is(st('small').mtimeNs, 1700000000123456789n);
    t.is(st('old').mtimeNs, -86400n * 1000000000n + 5n);
    t.is(st('small').atimeNs, st('small').mtimeNs);
    const chr = st('devs/chr');
    t.true(fs.lstatSync(path.join(mnt, 'devs/chr')).isCharacterDevice());
    t.is(chr.rdev, (4n << 8n) | (300n & 0xffn) | ((300n & ~0xffn) << 12n));
    t.true(fs.lstatSync(path.join(mnt, 'devs/blk')).isBlockDevice());
    t.true(fs.lstatSync(path.join(mnt, 'devs/fifo')).isFIFO());
    t.true(fs.lstatSync(path.join(mnt, 'devs/sock')).isSocket());
    t.is(st('longlink').size, 4095n);
    t.is(fs.readlinkSync(path.join(mnt, 'longlink')).length, 4095);
    t.is(fs.readlinkSync(path.join(mnt, 'link')), 'small');
    t.is(errnoOf(() => fs.lstatSync(path.join(mnt, 'no-such'))), 'ENOENT');
    t.is(errnoOf(() => fs.writeFileSync(path.join(mnt, 'small'), 'x')), 'EROFS');
    const sfs = py('import os,sys,json; s=os.statvfs(sys.argv[1]); print(json.dumps([s.f_bsize, s.f_namemax, s.f_files]))', [mnt]);
    const [bsize, namemax, files] = JSON.parse(sfs);
    t.is(bsize, 4096);
    t.is(namemax, 255);
    t.true(files > 1000);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

const TELLDIR_PY = String.raw`
import ctypes, json, random, sys
libc = ctypes.CDLL(None, use_errno=True)
class D(ctypes.Structure):
    _fields_ = [('ino', ctypes.c_uint64), ('off', ctypes.c_int64), ('reclen', ctypes.c_ushort),
                ('type', ctypes.c_ubyte), ('name', ctypes.c_char * 256)]
libc.opendir.restype = ctypes.c_void_p; libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.POINTER(D); libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long; libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.restype = None; libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]

def opendir(p):
    d = libc.opendir(p.encode())
    if not d:
        raise OSError(ctypes.get_errno(), 'opendir ' + p)
    return d

def listing(d):
    out = []
    while True:
        pos = libc.telldir(d)
        e = libc.readdir(d)
        if not e:
            return out
        out.append([pos, e.contents.name.hex(), e.contents.ino, e.contents.type])

d = opendir(sys.argv[1])
first = listing(d)
random.seed(4)
picks = list(range(len(first)))
random.shuffle(picks)
mismatches = []
for i in picks[:300] + [len(first) - 1, 0, 2]:
    libc.seekdir(d, first[i][0])
    e = libc.readdir(d)
    got = e.contents.name.hex() if e else None
    if got != first[i][1]:
        mismatches.append([i, first[i][1], got])
libc.closedir(d)
d = opendir(sys.argv[1])
again = listing(d)
libc.closedir(d)
print(json.dumps({'entries': first, 'mismatches': mismatches, 'again': again == first}))
`;

serial('readdir positions are SPEC §5 positions; telldir/seekdir resume anywhere (readdirplus and plain readdir)', (t) => {
  const src = sourceFromFile(S.blob);
  const reader = openBlob(src);
  const dirIno = reader.resolvePath('/bigdir');
  const entries = [...reader.readdir(dirIno)];
  src.close();
  const positions = [0, 1, 2, ...entries.slice(0, -1).map((e) => e.nextPos)];
  const names = ['.', '..', ...entries.map((e) => e.name)].map((n) => Buffer.from(n, 'latin1').toString('hex'));
  const inos = [dirIno + 1, 1, ...entries.map((e) => e.ino + 1)];
  t.true(entries.length === 1000 && positions.at(-1) > 2 + 4096, 'fixture: bigdir spans several blocks');

  for (const variant of [[], ['-o', 'noreaddirplus']]) {
    const mnt = mkTarget(`telldir${variant.length}`);
    const r = sh(SERVER, [S.blob, mnt, '-o', `basedir=${S.storeA}`, ...variant]);
    t.is(r.status, 0, r.stderr);
    try {
      const out = JSON.parse(py(TELLDIR_PY, [path.join(mnt, 'bigdir')]));
      t.deepEqual(out.entries.map((e) => e[0]), positions, `positions ${variant}`);
      t.deepEqual(out.entries.map((e) => e[1]), names, `names ${variant}`);
      t.deepEqual(out.entries.map((e) => BigInt(e[2])), inos.map(BigInt), `d_ino ${variant}`);
      t.true(out.entries.slice(2).every((e) => e[3] === 8), 'd_type DT_REG');
      t.deepEqual(out.mismatches, [], `seekdir ${variant}`);
      t.true(out.again, 'a second opendir sees the same positions');
    } finally {
      t.is(sh('umount', [mnt]).status, 0);
    }
  }
});

serial('-o max_read=N: libfuse gets the same max_read back from init(), the mount serves the whole tree', (t) => {
  // libfuse 3.14 ends the session at INIT when init() does not repeat the mount's max_read.
  const mnt = mkTarget('maxread');
  const r = sh(SERVER, [S.blob, mnt, '-o', `basedir=${S.storeA}:${S.storeB},max_read=65536`]);
  t.is(r.status, 0, r.stderr);
  try {
    const top = readMountinfo().filter((e) => e.mountPoint === mnt).at(-1);
    t.regex(top.superOptions, /(^|,)max_read=65536(,|$)/);
    t.deepEqual(dumpDiffs(expectedDump(S.blob, [S.storeA, S.storeB]), dumpMount(mnt)), []);
  } finally {
    t.is(sh('umount', [mnt]).status, 0);
  }
});

const READ_PY = String.raw`
import hashlib, json, mmap, os, sys
out = {}
for p in sys.argv[1:]:
    with open(p, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        out[os.path.basename(p)] = [hashlib.sha256(m[:]).hexdigest(), m[size // 2:size // 2 + 16].hex()]
        m.close()
print(json.dumps(out))
`;

/** Runs the server in the foreground with libfuse's debug log, runs `fn(mnt, logSoFar)`, returns the log. */
async function withDebugServer(t, name, options, fn) {
  const mnt = mkTarget(name);
  const child = spawn(SERVER, [S.blob, mnt, '-o', [`basedir=${S.storeA}`, ...options].join(','), '-d'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (c) => { log += c; });
  try {
    for (let i = 0; i < 100 && !mountsBelow(mnt).length; i++) await sleep(50);
    await fn(mnt, () => log);
    await sleep(200);
  } finally {
    sh('umount', [mnt]);
    await new Promise((resolve) => { if (child.exitCode !== null) resolve(); else child.on('exit', resolve); });
  }
  t.deepEqual(mountsBelow(mnt), []);
  return log;
}

serial('readdirplus is what the kernel uses by default (libfuse debug log)', async (t) => {
  const log = await withDebugServer(t, 'rdplus', [], async (mnt) => {
    // Asynchronously: the server's debug output must keep flowing while ls waits for it.
    const listed = await execFileP('ls', ['-l', path.join(mnt, 'names')]);
    t.regex(listed.stdout, /sp ace/);
  });
  t.regex(log, /opcode: READDIRPLUS/);
});

serial('cache=shared: the kernel reads external files from the store itself (passthrough); passthrough=off serves them', async (t) => {
  const big = S.contents.get('big');
  const readBoth = async (mnt) => {
    // Two opens at once of the same object (and of a hardlink) share one backing file.
    const fd = fs.openSync(path.join(mnt, 'big'), 'r');
    const [a, b] = await Promise.all([fsp.readFile(path.join(mnt, 'big')), fsp.readFile(path.join(mnt, 'hl/third'))]);
    fs.closeSync(fd);
    t.true(a.equals(big) && b.equals(big));
    t.is(JSON.parse(py(READ_PY, [path.join(mnt, 'big')])).big[0], sha256(big), 'mmap');
  };
  const on = await withDebugServer(t, 'pt-on', ['cache=shared'], readBoth);
  const off = await withDebugServer(t, 'pt-off', ['cache=shared', 'passthrough=off'], readBoth);
  t.regex(on, /opcode: OPEN/);
  t.regex(off, /opcode: READ \(15\)/);
  const kernelHasPassthrough = Number(os.release().split('.')[0]) * 100 + Number(os.release().split('.')[1]) >= 609;
  if (kernelHasPassthrough) t.notRegex(on, /opcode: READ \(15\)/, 'reads reached the server despite passthrough');
  else t.log(`Linux ${os.release()} has no FUSE passthrough: reads go through the server`);
});


serial('cache=private: one OPEN (answered ENOSYS), then none; warm reads and hardlinks never reach the server', async (t) => {
  const big = S.contents.get('big');
  let cut = 0;
  const log = await withDebugServer(t, 'private-debug', [], async (mnt, logSoFar) => {
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(big));
    t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n');
    const warm = async () => {
      await sleep(300);
      cut = logSoFar().length;
      // Again, through another name of the same inode, and mmapped: all from the page cache.
      t.true(fs.readFileSync(path.join(mnt, 'hl/third')).equals(big), 'hardlink content');
      t.is(JSON.parse(py(READ_PY, [path.join(mnt, 'big')])).big[0], sha256(big), 'mmap');
      t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n');
      await sleep(200);
    };
    await warm();
    // The kernel may reclaim a page of the mount's cache meanwhile (other suites fill memory
    // in CI: one READ of one page was seen once); then that read refills it, and a second
    // warm pass must reach the server not at all. A broken cache fails both passes.
    if (/opcode: (READ|OPEN) /.test(logSoFar().slice(cut))) {
      t.log(`first warm pass reached the server (page reclaim?):\n${logSoFar().slice(cut)}`);
      await warm();
    }
  });
  t.is((log.match(/opcode: OPEN \(14\)/g) ?? []).length, 1, 'exactly one OPEN');
  t.regex(log, /opcode: OPEN \(14\)[^\n]*\n\s+unique: \d+, error: -38/, 'answered ENOSYS');
  t.notRegex(log, /opcode: RELEASE \(18\)/);
  t.regex(log.slice(0, cut), /opcode: READ \(15\)/, 'the first reads are cache misses');
  t.notRegex(log.slice(cut), /opcode: (READ|OPEN) /, 'warm reads reached the server');
});

const EVICT_PY = String.raw`
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)  # dirty pages (the test just wrote the objects) cannot be dropped
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
`;

/** Bytes of `file` in the page cache, as mincore() sees them through a mapping of it (fincore). */
const residentBytes = (file) => Number(sh('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]).stdout.trim());

/** READ requests for node `ino` in a libfuse debug log. */
const readsOf = (log, ino) => (log.match(new RegExp(`opcode: READ \\(15\\), nodeid: ${ino},`, 'g')) ?? []).length;

/*
 * Passthrough, seen from the kernel: a mapping of a passed-through file is a mapping of its
 * object, so once the object's pages are dropped the mounted file shows none either; a file in
 * the mount's own page cache keeps its pages.  With passthrough_min above big's size, big must
 * behave like the small file: the check tells the two apart.
 */
for (const [min, bigPassed] of [[undefined, true], ['2M', false]]) {
  serial(`cache=auto${min ? `,passthrough_min=${min}` : ''}: big files ${bigPassed ? 'are' : 'are not'} passed through; small ones stay in the mount's page cache`, async (t) => {
    const big = S.contents.get('big');
    const bigObj = objectFile([S.storeA], S.tree.children.get('big').digest.toString('hex'));
    const smallObj = objectFile([S.storeA], S.tree.children.get('setuid').digest.toString('hex'));
    let ino;
    let cut = 0;
    const log = await withDebugServer(t, `auto-${min ?? 'default'}`, ['cache=auto', ...(min ? [`passthrough_min=${min}`] : [])], async (mnt, logSoFar) => {
      const [bigPath, smallPath] = [path.join(mnt, 'big'), path.join(mnt, 'setuid')];
      ino = { big: fs.statSync(bigPath).ino, small: fs.statSync(smallPath).ino };
      t.true(fs.readFileSync(bigPath).equals(big));
      const small = fs.readFileSync(smallPath);
      t.is(small.length, 5000);
      t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n', 'inline');
      t.is(fs.readFileSync(path.join(mnt, 'empty')).length, 0, 'empty');
      py(EVICT_PY, [bigObj, smallObj]);
      t.is(residentBytes(smallPath) > 0, true, 'the small file kept its pages in the mount');
      t.is(residentBytes(bigPath) === 0, bigPassed, `big: ${residentBytes(bigPath)} bytes resident after its object was dropped`);
      await sleep(300);
      cut = logSoFar().length;
      // Warm again: the small file's pages are kept across opens (keep_cache); big is read from the store.
      t.true(fs.readFileSync(smallPath).equals(small));
      t.true(fs.readFileSync(bigPath).equals(big));
      if (bigPassed) t.true(residentBytes(bigObj) >= big.length, "the kernel read big's object itself");
    });
    t.true(readsOf(log.slice(0, cut), ino.small) >= 1, 'the first read of the small file is a cache miss');
    t.is(readsOf(log.slice(cut), ino.small), 0, 'warm reads of the small file reached the server');
    if (bigPassed) t.is(readsOf(log, ino.big), 0, 'reads of a passed-through file reached the server');
    else t.true(readsOf(log, ino.big) >= 1);
    t.true((log.slice(cut).match(/opcode: OPEN \(14\)/g) ?? []).length >= 2, 'one OPEN per open()');
  });
}

/** A blob of `n` distinct external files in /many, and their contents. */
function manyObjectsBlob(n) {
  const root = newDir(0o755);
  const dir = newDir(0o755);
  root.children.set('many', dir);
  const contents = new Map();
  for (let i = 0; i < n; i++) {
    const buf = crypto.randomBytes(100 + ((i * 7919) % 9000));
    contents.set(`f${i}`, buf);
    dir.children.set(`f${i}`, reg(buf));
  }
  const blob = path.join(S.work, 'many.ub');
  fs.writeFileSync(blob, encodeBlob(root));
  return { blob, contents };
}

const REREAD_PY = String.raw`
import concurrent.futures, hashlib, json, os, sys
def once(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        # Drop this file's pages, so the read reaches the server again.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        h = hashlib.sha256()
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            h.update(b)
        return os.path.basename(p), h.hexdigest()
    finally:
        os.close(fd)
paths = sys.argv[2:] * int(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    got = list(ex.map(once, paths))
print(json.dumps(got))
`;

/** Fds of `pid` open on objects of `store`. */
function objectFds(pid, store) {
  return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(path.join(store, 'objects') + '/');
    } catch {
      return false;
    }
  }).length;
}

serial('cache=private: object fds are bounded by open_objects; reads after eviction, in parallel, give the right bytes', (t) => {
  const { blob, contents } = manyObjectsBlob(300);
  const mnt = mkTarget('lru');
  const pidfile = path.join(S.work, 'lru.pid');
  const r = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA},open_objects=5,pidfile=${pidfile}`]);
  t.is(r.status, 0, r.stderr);
  try {
    const pid = Number(fs.readFileSync(pidfile, 'utf8'));
    const names = [...contents.keys()];
    const got = JSON.parse(py(REREAD_PY, ['3', ...names.map((n) => path.join(mnt, 'many', n))]));
    t.is(got.length, 3 * names.length);
    const wrong = got.filter(([n, h]) => h !== sha256(contents.get(n)));
    t.deepEqual(wrong, []);
    const open = objectFds(pid, S.storeA);
    t.true(open >= 1 && open <= 5, `${open} object fds open, at most 5 allowed`);
  } finally {
    t.is(sh('umount', [mnt]).status, 0);
  }
  const bad = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA},open_objects=0`]);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /open_objects=0: expected a positive number/);
  const badCache = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA},cache=bogus`]);
  t.is(badCache.status, 1);
  t.regex(badCache.stderr, /cache=bogus: expected auto, private or shared/);
  for (const v of ['bogus', '12X', '-1', '', '99999999999G']) {
    const badMin = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA},cache=auto,passthrough_min=${v}`]);
    t.is(badMin.status, 1, `passthrough_min=${v}`);
    t.regex(badMin.stderr, /^unionblob-fuse: passthrough_min=\S*: expected a size in bytes \(suffix K, M or G allowed\)\n$/);
  }
  const badPt = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA},passthrough=bogus`]);
  t.is(badPt.status, 1);
  t.regex(badPt.stderr, /passthrough=bogus: expected auto or off/);
  t.regex(cfs(['mount', blob, mnt, '--store', S.storeA, '--fuse-cache', 'bogus']).stderr, /bogus/);
  t.deepEqual(mountsBelow(mnt), []);
});

serial('read and mmap of inline and external files, at every offset that matters', (t) => {
  const mnt = mkTarget('read');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB]);
  try {
    const big = S.contents.get('big');
    t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n');
    t.is(fs.readFileSync(path.join(mnt, 'exactly64'), 'utf8'), '6'.repeat(64));
    t.is(fs.readFileSync(path.join(mnt, 'just65'), 'utf8'), '7'.repeat(65));
    t.is(fs.readFileSync(path.join(mnt, 'empty')).length, 0);
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(big));
    // Direct I/O style preads at page edges and the end, through a fresh fd each time.
    const fd = fs.openSync(path.join(mnt, 'hl/third'), 'r');
    for (const [off, len] of [[0, 1], [1, 4095], [4095, 2], [4096, 4096], [65537, 100000], [big.length - 1, 10], [big.length, 10], [big.length + 4096, 1]]) {
      const buf = Buffer.alloc(len);
      const n = fs.readSync(fd, buf, 0, len, off);
      t.true(buf.subarray(0, n).equals(big.subarray(off, off + len)), `pread ${off}+${len}`);
    }
    fs.closeSync(fd);
    const small = fs.openSync(path.join(mnt, 'small'), 'r');
    const b = Buffer.alloc(10);
    t.is(fs.readSync(small, b, 0, 10, 3), 3);
    t.is(b.subarray(0, 3).toString(), 'lo\n');
    t.is(fs.readSync(small, b, 0, 10, 6), 0);
    fs.closeSync(small);
    const mm = JSON.parse(py(READ_PY, ['big', 'small', 'just65', 'onlyb'].map((p) => path.join(mnt, p))));
    t.is(mm.big[0], sha256(big));
    t.is(mm.big[1], big.subarray(big.length >> 1, (big.length >> 1) + 16).toString('hex'));
    t.is(mm.small[0], sha256(Buffer.from('hello\n')));
    t.is(mm.just65[0], sha256(Buffer.from('7'.repeat(65))));
    t.truthy(mm.onlyb[0], 'object only in the second store');
    // Store order: the first store's (wrong) copy of "shadowed" wins with verity off.
    t.true(fs.readFileSync(path.join(mnt, 'shadowed')).equals(S.contents.get('shadowed-bad')));
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

serial('xattrs: trusted.overlay.* escaped, others as stored (getfattr)', (t) => {
  const mnt = mkTarget('xattr');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA]);
  try {
    const r = sh('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', path.join(mnt, 'x')]);
    t.is(r.status, 0, r.stderr);
    const got = r.stdout.split('\n').filter((l) => l && !l.startsWith('#')).sort();
    t.deepEqual(got, [
      'security.capability=0x0000000220000000000000000000000000000000',
      'trusted.other=0x000102ff',
      'trusted.overlay.overlay.opaque=0x79',
      'trusted.overlay.overlay.overlay.nested=0x7a',
      'user.empty=0x',
      'user.foo=0x626172',
    ]);
    const one = (name, file = 'x') => sh('getfattr', ['-h', '--only-values', '-n', name, path.join(mnt, file)]);
    t.is(one('user.foo').stdout, 'bar');
    t.not(one('trusted.overlay.opaque').status, 0, 'the unescaped name shows nothing');
    t.regex(one('trusted.overlay.opaque').stderr, /No such attribute/);
    t.is(one('trusted.overlay.overlay.opaque', 'opaque-dir').stdout, 'y');
    // An ACL is served as stored and enforced by the kernel (default_permissions).
    const acl = sh('getfacl', ['-cn', path.join(mnt, 'acl')]);
    if (acl.status === 0) t.regex(acl.stdout, /user:1000:r--/);
    else t.is(one('system.posix_acl_access', 'acl').status, 0);
    t.is(sh('getfattr', ['-h', '-d', '-m', '-', path.join(mnt, 'small')]).stdout, '');
    // Without CAP_SYS_ADMIN (root in a container, as runtimes drop it) trusted.* is neither
    // listed nor readable, as on ext4 and through the kernel module.
    // (listxattr itself: getfattr -d skips names it cannot read)
    const list = 'import os, sys; print("\\n".join(sorted(os.listxattr(sys.argv[1], follow_symlinks=False))))';
    const names = ([cmd, ...args]) => sh(cmd, [...args, 'python3', '-c', list, path.join(mnt, 'x')]);
    const asRoot = names(['env']);
    const noAdmin = names(['setpriv', '--bounding-set', '-sys_admin']);
    t.is(noAdmin.status, 0, noAdmin.stderr);
    t.deepEqual(asRoot.stdout.trim().split('\n'), got.map((l) => l.split('=')[0]));
    t.deepEqual(noAdmin.stdout.trim().split('\n'), got.map((l) => l.split('=')[0]).filter((n) => !n.startsWith('trusted.')));
    t.not(sh('setpriv', ['--bounding-set', '-sys_admin', 'getfattr', '-h', '-n', 'trusted.other', path.join(mnt, 'x')]).status, 0);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

// A container in its own user namespace sees the image's ids through its mapping (containerd's
// uidmapping labels; the snapshotter mounts this way): every id the kernel is given, in stat, in
// ACL entries and in a v3 file capability's root id, is mapped; ids outside it are no id (65534 in stat).
serial('--uidmap/--gidmap: stat, ACL entries and v3 capabilities show mapped ids; permissions go by them', (t) => {
  const mnt = mkTarget('idmap');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--uidmap', '0:100000:65536', '--gidmap', '0:200000:65536']);
  try {
    const ids = (name) => { const st = fs.lstatSync(path.join(mnt, name)); return `${st.uid} ${st.gid}`; };
    t.is(ids('small'), '101000 200100');
    t.is(ids('big'), '100012 200034');
    t.is(ids('.'), '100000 200000');
    t.is(ids('empty-dir'), '100007 200008');
    t.is(sh('getfacl', ['-cn', path.join(mnt, 'acl')]).stdout.match(/^user:\d+:/m)?.[0], 'user:101000:');
    // read back through the kernel (cap_inode_getsecurity): still v3, its root id mapped
    const cap = sh('getfattr', ['-h', '-e', 'hex', '-n', 'security.capability', path.join(mnt, 'capv3')]);
    t.regex(cap.stdout, /^security\.capability=0x0100000300200000000000000000000000000000888a0100$/m, cap.stderr);
    // big is 0640, owner 12, group 34: readable by the mapped owner and group only
    const read = (uid, gid) => sh('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', 'head', '-c', '1', path.join(mnt, 'big')]);
    const mode = fs.statSync(S.work).mode & 0o777;
    fs.chmodSync(S.work, 0o711); // mkdtemp's 0700 would stop them on the way
    try {
      t.is(read(100012, 1).status, 0, `the mapped owner: ${read(100012, 1).stderr}`);
      t.is(read(5, 200034).status, 0, 'the mapped group');
      t.regex(read(12, 34).stderr, /Permission denied/, 'the unmapped ids are nobody here');
    } finally {
      fs.chmodSync(S.work, mode);
    }
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  // An id outside the mapping is no id: stat shows the overflow id, an ACL entry naming it is
  // left out, and an overlay cannot copy such a file up (EOVERFLOW, as from an idmapped mount)
  // where it would otherwise make a file of the host's real uid 65534.
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--uidmap', '0:100000:100', '--gidmap', '0:100000:100,100:300000:1']);
  const ov = path.join(S.work, 'idmap-ov');
  for (const d of ['up', 'wk', 'm']) fs.mkdirSync(path.join(ov, d), { recursive: true });
  try {
    t.is(fs.lstatSync(path.join(mnt, 'small')).uid, 65534);
    t.is(fs.lstatSync(path.join(mnt, 'small')).gid, 300000);
    t.is(fs.lstatSync(path.join(mnt, 'big')).uid, 100012);
    const acl = sh('getfacl', ['-cn', path.join(mnt, 'acl')]);
    t.is(acl.status, 0, acl.stderr);
    t.notRegex(acl.stdout, /^user:\d+:/m, 'the entry of unmapped user 1000 is left out');
    t.regex(acl.stdout, /^user::rw-$/m);
    t.is(sh('mount', ['-t', 'overlay', 'ov', '-o', `lowerdir=${mnt},upperdir=${ov}/up,workdir=${ov}/wk`, `${ov}/m`]).status, 0);
    try {
      t.is(errnoOf(() => fs.chmodSync(path.join(ov, 'm', 'small'), 0o600)), 'EOVERFLOW');
      fs.chmodSync(path.join(ov, 'm', 'big'), 0o600);
      t.is(fs.lstatSync(path.join(ov, 'up', 'big')).uid, 100012);
      t.false(fs.existsSync(path.join(ov, 'up', 'small')));
    } finally {
      sh('umount', [`${ov}/m`]);
    }
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  for (const [args, re] of [
    [['--uidmap', '0:1', '--gidmap', '0:1:1'], /--uidmap "0:1": expected FIRST:MAPPED:COUNT/],
    [['--uidmap', '0:1:0', '--gidmap', '0:1:1'], /a range of 0 ids/],
    [['--uidmap', '0:1:10,5:100:1', '--gidmap', '0:1:1'], /ranges overlap/],
    [['--uidmap', '0:4294967295:1', '--gidmap', '0:1:1'], /beyond 4294967294/],
    [['--uidmap', '0:0:4294967296', '--gidmap', '0:1:1'], /beyond 4294967294/],
    [['--uidmap', '0:100000:10,10:100005:10', '--gidmap', '0:1:1'], /ranges overlap/],
    [['--uidmap', '0:1:1'], /--uidmap and --gidmap go together/],
    [['--uidmap', '0:1:1', '--gidmap', '0:1:1', '--backend', 'kernel', '--upper', mnt, '--work', mnt], /with --upper are served by the FUSE server/],
  ]) {
    const r = cfs(['mount', S.blob, mnt, '--store', S.storeA, ...args]);
    t.not(r.status, 0, args.join(' '));
    t.regex(r.stderr, re);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  t.deepEqual(mountsUnder(mnt, readMountinfo()), []);
});

for (const cache of FUSE_CACHES) serial(`a missing object is EIO with one log line; everything else keeps working (cache=${cache})`, (t) => {
  const mnt = mkTarget(`missing-${cache}`);
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--fuse-cache', cache]);
  try {
    t.is(errnoOf(() => fs.readFileSync(path.join(mnt, 'missing'))), 'EIO');
    t.is(errnoOf(() => fs.readFileSync(path.join(mnt, 'missing'))), 'EIO', 'and again');
    t.is(fs.lstatSync(path.join(mnt, 'missing')).size, 3000, 'stat still works');
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(S.contents.get('big')));
    t.is(fs.readdirSync(path.join(mnt, 'bigdir')).length, 1000);
    const log = readLog(mnt);
    t.regex(log, /missing from every store/);
    // A failed open is remembered for a second or two: the kernel's retry of a failed readahead
    // and this second read ask for the same object, and get EIO without a second log line.
    t.is(log.trim().split('\n').filter((l) => l.includes('missing from every store')).length, 1);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

for (const cache of FUSE_CACHES) serial(`a store that vanishes while mounted: its objects are EIO, the rest is served (cache=${cache})`, (t) => {
  const storeC = path.join(S.work, `storeC-${cache}`);
  fs.cpSync(S.storeB, storeC, { recursive: true });
  const mnt = mkTarget(`vanish-${cache}`);
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', storeC, '--fuse-cache', cache]);
  try {
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(S.contents.get('big')));
    fs.rmSync(storeC, { recursive: true });
    t.is(errnoOf(() => fs.readFileSync(path.join(mnt, 'onlyb'))), 'EIO');
    t.true(fs.readFileSync(path.join(mnt, 'setuid')).length === 5000, 'objects of the other store still open');
    t.is(fs.readdirSync(path.join(mnt, 'bigdir')).length, 1000);
    t.regex(readLog(mnt), /missing from every store/);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

serial('verity=require refuses an object that does not match its digest; verity=try serves it without fs-verity', (t) => {
  const mnt = mkTarget('verity');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--verity', 'require']);
  try {
    t.is(errnoOf(() => fs.readFileSync(path.join(mnt, 'shadowed'))), 'EIO');
    t.regex(readLog(mnt), /does not match its digest/);
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(S.contents.get('big')), 'a good object is served');
    t.truthy(fs.readFileSync(path.join(mnt, 'onlyb')).length);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--verity', 'try']);
  try {
    // This store has no fs-verity on its files, so try has nothing to compare.
    t.is(fs.readFileSync(path.join(mnt, 'shadowed')).length, 20000);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

serial('an object changed after an earlier open: verity=require checks the new file again, a truncated one is EIO, a FIFO does not hang', (t) => {
  const { blob, contents } = manyObjectsBlob(8);
  const store = path.join(S.work, 'store-tamper');
  fs.rmSync(store, { recursive: true, force: true });
  fs.mkdirSync(store);
  for (const buf of contents.values()) putObject(store, buf);
  const objectOf = (n) => objectFile([store], verityDigest(contents.get(n)).toString('hex'));
  const file = (n) => path.join(mnt, 'many', n);
  // the kernel's copy of a file's pages goes, so the next read reaches the server
  const dropPages = (n) => py('import os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\nos.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)', [file(n)]);
  const mnt = mkTarget('tamper');
  const logFile = path.join(S.work, 'tamper.log');
  const r = sh(SERVER, [blob, mnt, '-o', `basedir=${store},verity=require,open_objects=1,logfile=${logFile}`]);
  if (r.status !== 0 && /logfile/.test(r.stderr)) return t.fail(`the server has no logfile option: ${r.stderr}`);
  t.is(r.status, 0, r.stderr);
  try {
    for (const n of ['f0', 'f1', 'f2', 'f3']) t.true(fs.readFileSync(file(n)).equals(contents.get(n)), n);
    // f0's descriptor was evicted (open_objects=1); its object is replaced by a forged file of
    // the same size (a rename: another inode), which the next open must check, not trust
    const forged = path.join(store, 'forged');
    fs.writeFileSync(forged, Buffer.alloc(contents.get('f0').length, 0x45));
    fs.renameSync(forged, objectOf('f0'));
    dropPages('f0');
    t.is(errnoOf(() => fs.readFileSync(file('f0'))), 'EIO', 'a replaced object was served unchecked');
    // f3's descriptor is the cached one: its object changed in place (same size, same inode)
    // is hashed again since its ctime moved, not served from the descriptor checked before
    const fd3 = fs.openSync(objectOf('f3'), 'r+');
    fs.writeSync(fd3, Buffer.from('XXXX'), 0, 4, 10);
    fs.closeSync(fd3);
    dropPages('f3');
    t.is(errnoOf(() => fs.readFileSync(file('f3'))), 'EIO', 'an object changed in place was served unchecked');
    // ...and truncated in place it must not shrink the file
    fs.truncateSync(objectOf('f3'), 50);
    dropPages('f3');
    t.is(errnoOf(() => fs.readFileSync(file('f3'))), 'EIO', 'a truncated object was served short');
    t.is(fs.statSync(file('f3')).size, contents.get('f3').length);
    // a FIFO in the object's place: open() must not wait for a writer
    fs.rmSync(objectOf('f2'));
    const hex = verityDigest(contents.get('f2')).toString('hex');
    t.is(sh('mkfifo', [path.join(store, 'objects', hex.slice(0, 2), hex.slice(2))]).status, 0);
    dropPages('f2');
    const started = Date.now();
    t.is(errnoOf(() => fs.readFileSync(file('f2'))), 'EIO');
    t.true(Date.now() - started < 5000);
    t.true(fs.readFileSync(file('f1')).equals(contents.get('f1')), 'a sound object still reads');
  } finally {
    t.is(sh('umount', [mnt]).status, 0);
  }
});

// Opens FILE (expecting an error) while watching NODE with inotify: did anything open NODE?
const OPENED_PY = String.raw`
import ctypes, os, select, sys
libc = ctypes.CDLL(None, use_errno=True)
ifd = libc.inotify_init1(os.O_NONBLOCK)
if ifd < 0 or libc.inotify_add_watch(ifd, sys.argv[2].encode(), 0x20) < 0:
    print('ERR inotify ' + os.strerror(ctypes.get_errno())); sys.exit(0)
try:
    open(sys.argv[1], 'rb').read()
    result = 'read'
except OSError as e:
    result = os.strerror(e.errno)
r, _, _ = select.select([ifd], [], [], 0.5)
print(result + (' opened' if r else ' not-opened'))
`;

for (const cache of FUSE_CACHES) serial(`an inode naming an object of another size is EIO, the inode sharing it reads; a device node in a store is never opened; names over 255 bytes (cache=${cache})`, (t) => {
  const store = path.join(S.work, `store-liar-${cache}`);
  fs.rmSync(store, { recursive: true, force: true });
  fs.mkdirSync(store);
  const good = crypto.randomBytes(100_000);
  const root = newDir(0o755);
  root.children.set('good', reg(good, 0o644, {}, store));
  // a corrupt blob: the same digest, one byte less (the kernel would read past its end)
  root.children.set('liar', meta(S_IFREG | 0o644, { size: good.length - 1, digest: verityDigest(good) }));
  const devContent = crypto.randomBytes(9000);
  root.children.set('dev', reg(devContent, 0o644, {}, store));
  root.children.set('tiny', reg('ten bytes!'));
  const blob = path.join(S.work, `liar-${cache}.ub`);
  fs.writeFileSync(blob, encodeBlob(root));
  const devObject = objectFile([store], verityDigest(devContent).toString('hex'));
  fs.rmSync(devObject);
  t.is(sh('mknod', [devObject, 'c', '1', '3']).status, 0);
  for (const order of [['good', 'liar'], ['liar', 'good']]) {
    const mnt = mkTarget(`liar-${cache}-${order[0]}`);
    const r = sh(SERVER, [blob, mnt, '-o', `basedir=${store},cache=${cache},passthrough_min=4096`]);
    t.is(r.status, 0, r.stderr);
    try {
      for (const name of order) {
        if (name === 'good') t.true(fs.readFileSync(path.join(mnt, 'good')).equals(good), `${order}: good reads`);
        else {
          // cat's big reads (Node's readFileSync stops at the stat size) would get the object's bytes past the inode's end
          const cat = sh('cat', [path.join(mnt, 'liar')], { encoding: 'buffer' });
          t.is(cat.status, 1, `${order}: liar read ${cat.stdout.length} bytes`);
          t.regex(cat.stderr.toString(), /Input\/output error/);
        }
      }
      t.true(fs.readFileSync(path.join(mnt, 'good')).equals(good), 'good still reads: the failure was the inode\'s, not the object\'s');
      t.is(py(OPENED_PY, [path.join(mnt, 'dev'), devObject]).trim(), 'Input/output error not-opened');
      t.is(errnoOf(() => fs.statSync(path.join(mnt, 'n'.repeat(300)))), 'ENAMETOOLONG');
      // st_blocks as ext4 and the kernel module count them: whole 4 KiB blocks
      t.is(fs.statSync(path.join(mnt, 'good')).blocks, 25 * 8);
      t.is(fs.statSync(path.join(mnt, 'tiny')).blocks, 8);
    } finally {
      t.is(sh('umount', [mnt]).status, 0);
    }
  }
});

/** struct file_handle through ctypes; `h` is the handle of argv[1] (or ERR printed and exit). */
const HANDLE_PRELUDE_PY = String.raw`
import ctypes, hashlib, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Handle(ctypes.Structure):
    _fields_ = [('handle_bytes', ctypes.c_uint), ('handle_type', ctypes.c_int), ('f_handle', ctypes.c_ubyte * 128)]
`;
const NAME_TO_HANDLE_PY = HANDLE_PRELUDE_PY + String.raw`
h = Handle(handle_bytes=128)
mount_id = ctypes.c_int()
if libc.name_to_handle_at(-100, sys.argv[1].encode(), ctypes.byref(h), ctypes.byref(mount_id), 0) != 0:
    print('ERR name_to_handle_at ' + os.strerror(ctypes.get_errno())); sys.exit(0)
`;
const BY_HANDLE_PY = NAME_TO_HANDLE_PY + String.raw`
with open('/proc/sys/vm/drop_caches', 'w') as f:
    f.write('2')  # dentries and inodes: the file's inode goes, the handle must find it again
mfd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
fd = libc.open_by_handle_at(mfd, ctypes.byref(h), os.O_RDONLY)
if fd < 0:
    print('ERR ' + os.strerror(ctypes.get_errno())); sys.exit(0)
import stat
if stat.S_ISDIR(os.fstat(fd).st_mode):
    print('DIR %d' % len(os.listdir(fd))); sys.exit(0)
d = hashlib.sha256()
while True:
    b = os.read(fd, 1 << 20)
    if not b: break
    d.update(b)
print(d.hexdigest())
`;

serial('a file reopened by its handle after its inode was dropped (export support): its bytes, not ESTALE', (t) => {
  const mnt = mkTarget('byhandle');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB]);
  try {
    t.is(py(BY_HANDLE_PY, [path.join(mnt, 'big'), mnt]).trim(), sha256(S.contents.get('big')));
    t.is(py(BY_HANDLE_PY, [path.join(mnt, 'bigdir'), mnt]).trim(), `DIR ${fs.readdirSync(path.join(mnt, 'bigdir')).length}`, 'a directory too');
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

serial('a failed overlay mount (upper and work on different filesystems) is one line: mount(8)\'s first, not its dmesg hint', (t) => {
  const mnt = mkTarget('overlay-fails');
  const upper = mkTarget('overlay-fails-upper');
  const work = fs.mkdtempSync('/dev/shm/ub-overlay-fails-');
  t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
  const r = cfs(['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--backend', 'fuse', '--upper', upper, '--work', work]);
  t.is(r.status, 1);
  t.regex(r.stderr, /^cfs: overlay mount on \S+ failed: mount: [^\n]+\n$/);
  t.notRegex(r.stderr, /dmesg/);
  t.deepEqual(mountsBelow(mnt), [], 'the lower went with the failure');
  t.deepEqual(leftovers(mnt), []);
});

// A handle names a node by its inode index and the blob's generation (ub_handle_generation): a
// handle kept across a remount of another blob at the same place is stale, not another file
// that has the same index; a byte-identical copy of the blob (a rebuild) keeps it valid.
const HANDLE_HEX_PY = NAME_TO_HANDLE_PY + String.raw`
print('%d %s' % (h.handle_type, bytes(h.f_handle[:h.handle_bytes]).hex()))
`;
const OPEN_HEX_PY = HANDLE_PRELUDE_PY + String.raw`
kind, hexbytes = sys.argv[2].split(' ')
raw = bytes.fromhex(hexbytes)
h = Handle(handle_bytes=len(raw), handle_type=int(kind))
ctypes.memmove(h.f_handle, raw, len(raw))
mfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fd = libc.open_by_handle_at(mfd, ctypes.byref(h), os.O_RDONLY)
if fd < 0:
    print('ERR ' + os.strerror(ctypes.get_errno())); sys.exit(0)
print(os.read(fd, 100).decode())
`;

serial('a file handle is stale on a mount of another blob at the same place, valid on a byte-identical copy', async (t) => {
  const F = await dist('format/index.js');
  const blobOf = (text) => {
    const root = newDir(0o755);
    const d = newDir(0o755);
    root.children.set('d', d);
    d.children.set('f', { mode: S_IFREG | 0o644, uid: 0, gid: 0, mtimeSec: 1700000000, mtimeNsec: 0, xattrs: new Map(), size: text.length, inline: Buffer.from(text) });
    return F.encodeBlob(root);
  };
  const [one, two] = ['one', 'two'].map((text) => {
    const file = path.join(S.work, `handle-${text}.ub`);
    fs.writeFileSync(file, blobOf(text));
    return file;
  });
  const copy = path.join(S.work, 'handle-one-copy.ub');
  fs.copyFileSync(one, copy);
  const mnt = mkTarget('handle-blobs');
  const mountAndOpen = (blob, handle) => {
    cfsOk(t, ['mount', blob, mnt, '--store', S.storeA, '--backend', 'fuse']);
    try {
      return py(OPEN_HEX_PY, [mnt, handle]).trim();
    } finally {
      cfsOk(t, ['umount', mnt]);
    }
  };
  cfsOk(t, ['mount', one, mnt, '--store', S.storeA, '--backend', 'fuse']);
  let handle;
  try {
    handle = py(HANDLE_HEX_PY, [path.join(mnt, 'd', 'f')]).trim();
    t.notRegex(handle, /^ERR/);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  t.is(mountAndOpen(two, handle), 'ERR Stale file handle', 'the same index in another blob');
  t.is(mountAndOpen(copy, handle), 'one', 'a byte-identical copy of the blob');
  t.deepEqual(mountsBelow(mnt), []);
});

serial('a blob whose root is not inode index 0 is refused with a message (FUSE node 1 is index 0)', async (t) => {
  const { reseal } = await import('./lib/crafted-blobs.mjs');
  const F = await dist('format/index.js');
  const root = newDir(0o755);
  root.children.set('d', newDir(0o755));
  const blob = F.encodeBlob(root);
  const r = F.openBlob(F.sourceFromBuffer(blob));
  const d = r.lookup(0, 'd');
  const inodes = r.header.sections[F.SectionId.INODES].offset;
  blob.writeUInt32LE(d, inodes + d * F.INODE_SIZE + F.INO.aux); // d is its own parent, as a root is
  blob.writeBigUInt64LE(BigInt(d), F.HDR.rootIno);
  const file = path.join(S.work, 'root-not-0.ub');
  fs.writeFileSync(file, reseal(blob));
  const mnt = mkTarget('root-not-0');
  const res = sh(SERVER, [file, mnt, '-o', `basedir=${S.storeA}`]);
  t.is(res.status, 1, res.stderr);
  t.regex(res.stderr, /the root directory is inode index 1; this server serves blobs whose root is index 0/);
  t.deepEqual(mountsBelow(mnt), []);
});

serial('a blob truncated in place while mounted: requests fail with EIO, the server lives on, umount works', (t) => {
  // the blob is mmapped: a page past the new end raised SIGBUS and killed the server (ENOTCONN)
  const blob = path.join(S.work, 'truncated.ub');
  fs.copyFileSync(S.blob, blob);
  const mnt = mkTarget('truncated');
  cfsOk(t, ['mount', blob, mnt, '--store', S.storeA, '--store', S.storeB, '--backend', 'fuse']);
  const pid = serverPid(mnt);
  let log = '';
  try {
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(S.contents.get('big')), 'read before the cut');
    fs.truncateSync(blob, 4096); // the header page stays: every inode, directory and item is gone
    // names never looked up before, so the kernel's caches cannot answer for us
    const codes = [];
    const attempt = (fn) => {
      try {
        fn();
        codes.push('ok');
      } catch (err) {
        codes.push(err.code);
      }
    };
    attempt(() => fs.readdirSync(path.join(mnt, 'bigdir')));
    attempt(() => fs.statSync(path.join(mnt, 'setuid')));
    attempt(() => fs.readFileSync(path.join(mnt, 'small')));
    attempt(() => fs.readlinkSync(path.join(mnt, 'longlink')));
    attempt(() => fs.readdirSync(path.join(mnt, 'names')));
    t.deepEqual(codes, ['EIO', 'EIO', 'EIO', 'EIO', 'EIO']);
    t.notThrows(() => process.kill(pid, 0), 'the server is alive');
    log = fs.readFileSync(logPath(keyOf(fs.realpathSync(mnt))), 'utf8');
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  t.regex(log, /the blob file shrank while mounted/);
  t.is(log.match(/shrank/g).length, 1, 'said once');
  t.deepEqual(mountsBelow(mnt), []);
});

serial('concurrent cfs mount of one target: one mounts, the others say it is mounted; concurrent umounts release it once', async (t) => {
  // without the per-target lock each saw no live state and mounted: a second FUSE server on top
  const target = mkTarget('race');
  const run = (args) => new Promise((resolve) => {
    const child = spawn(process.execPath, [CFS, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (status) => resolve({ status, stderr }));
  });
  const mounts = await Promise.all([0, 1, 2, 3].map(() => run(['mount', S.blob, target, '--store', S.storeA, '--store', S.storeB, '--backend', 'fuse'])));
  t.is(mounts.filter((r) => r.status === 0).length, 1, mounts.map((r) => r.stderr).join(''));
  for (const r of mounts.filter((r) => r.status !== 0)) t.regex(r.stderr, /is already mounted/);
  t.is(mountsBelow(target).length, 1, 'one mount at the target');
  t.true(fs.readFileSync(path.join(target, 'big')).equals(S.contents.get('big')));
  const umounts = await Promise.all([0, 1, 2].map(() => run(['umount', target])));
  t.is(umounts.filter((r) => r.status === 0).length, 1, umounts.map((r) => r.stderr).join(''));
  for (const r of umounts.filter((r) => r.status !== 0)) t.regex(r.stderr, /not mounted/);
  t.deepEqual(mountsBelow(target), []);
  const key = keyOf(fs.realpathSync(target));
  t.deepEqual(fs.readdirSync(path.join(runDir(), 'mounts')).filter((f) => f.startsWith(key)), [], 'no state or lock file left');
});

serial('cfs mount and umount touch only their own mounts: a failed mount leaves what was there, umount refuses with a mount on top', (t) => {
  // a unionblob mount made by hand (no state), then a cfs mount of the same target that fails
  const t1 = mkTarget('own-1');
  t.is(sh(SERVER, [S.blob, t1, '-o', `basedir=${S.storeA}:${S.storeB}`]).status, 0);
  try {
    const failed = cfs(['mount', S.blob, t1, '--store', S.storeA, '--store', S.storeB], { env: { ...process.env, UNIONBLOB_FUSE: '/bin/false' } });
    t.not(failed.status, 0);
    t.is(mountsBelow(t1).length, 1, 'the mount that was there before is still there');
    t.true(fs.readFileSync(path.join(t1, 'big')).equals(S.contents.get('big')));
  } finally {
    sh('umount', [t1]);
  }
  // cfs mount, then somebody mounts a tmpfs on top: cfs umount refuses and keeps the server
  const t2 = mkTarget('own-2');
  cfsOk(t, ['mount', S.blob, t2, '--store', S.storeA, '--store', S.storeB, '-o', 'nodiratime,relatime']);
  const pid = serverPid(t2);
  t.is(sh('mount', ['-t', 'tmpfs', 'tmpfs', t2]).status, 0);
  try {
    const refused = cfs(['umount', t2]);
    t.not(refused.status, 0);
    t.regex(refused.stderr, /another mount \(tmpfs\) is on top of ours/);
    t.notThrows(() => process.kill(pid, 0), 'the FUSE server still serves the mount underneath');
  } finally {
    sh('umount', [t2]);
  }
  t.true(fs.readFileSync(path.join(t2, 'big')).equals(S.contents.get('big')), 'the mount underneath still works');
  cfsOk(t, ['umount', t2]);
  t.deepEqual(mountsBelow(t2), []);
  // mounted and unmounted through a symlink to the target: the same mount, found again
  const link = path.join(S.work, 'own-2-link');
  fs.rmSync(link, { force: true });
  fs.symlinkSync(t2, link);
  cfsOk(t, ['mount', S.blob, link, '--store', S.storeA, '--store', S.storeB]);
  t.is(mountsBelow(t2).length, 1);
  cfsOk(t, ['umount', link]);
  t.deepEqual(mountsBelow(t2), []);
  t.deepEqual(leftovers(t2), []);
});

serial('--digest: the blob must have that fs-verity digest', (t) => {
  const mnt = mkTarget('digest');
  const good = verityDigest(fs.readFileSync(S.blob)).toString('hex');
  const bad = cfs(['mount', S.blob, mnt, '--store', S.storeA, '--backend', 'fuse', '--digest', '0'.repeat(64)]);
  t.not(bad.status, 0);
  t.regex(bad.stderr, /fs-verity digest is [0-9a-f]{64}, expected 0{64}/);
  t.deepEqual(mountsBelow(mnt), []);
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--backend', 'fuse', '--digest', good.toUpperCase()]);
  cfsOk(t, ['umount', mnt]);
  t.deepEqual(leftovers(mnt), []);
});

/** A copy of the rich blob with a corrupt directory block (/names) and a corrupt inode (/small). */
function corruptBlob() {
  const buf = fs.readFileSync(S.blob);
  const src = sourceFromFile(S.blob);
  const reader = openBlob(src);
  const names = reader.inode(reader.resolvePath('/names'));
  const small = reader.resolvePath('/small');
  const dirs = reader.header.sections[1].offset;
  const inodes = reader.header.sections[0].offset;
  src.close();
  buf.writeUInt16LE(3, dirs + names.payload + 4); // dirents[0].nameoff: not a multiple of 8
  buf[inodes + inodeOffset(small) + INO.layout] = 9; // layout: no such layout
  const out = path.join(S.work, 'corrupt.ub');
  fs.writeFileSync(out, buf);
  return out;
}

serial('a corrupt directory or inode is EIO at runtime; the rest of the tree is served', (t) => {
  const blob = corruptBlob();
  const mnt = mkTarget('corrupt');
  cfsOk(t, ['mount', blob, mnt, '--store', S.storeA]);
  try {
    t.is(errnoOf(() => fs.readdirSync(path.join(mnt, 'names'))), 'EIO');
    t.is(errnoOf(() => fs.lstatSync(path.join(mnt, 'names', 'sp ace'))), 'EIO');
    t.is(errnoOf(() => fs.lstatSync(path.join(mnt, 'small'))), 'EIO');
    t.true(fs.readdirSync(mnt).includes('small'), 'the root directory itself is fine');
    t.true(fs.readFileSync(path.join(mnt, 'big')).equals(S.contents.get('big')));
    t.is(fs.readdirSync(path.join(mnt, 'bigdir')).length, 1000);
    t.regex(readLog(mnt), /corrupt/);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
});

serial('a bad blob or a missing store is one clear line and no mount', (t) => {
  const mnt = mkTarget('bad');
  const garbage = path.join(S.work, 'garbage.ub');
  fs.writeFileSync(garbage, crypto.randomBytes(8192));
  const truncated = path.join(S.work, 'truncated.ub');
  fs.writeFileSync(truncated, fs.readFileSync(S.blob).subarray(0, 8192));
  for (const blob of [garbage, truncated, path.join(S.work, 'absent.ub')]) {
    const r = cfs(['mount', blob, mnt, '--store', S.storeA]);
    t.not(r.status, 0);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, blob.endsWith('absent.ub') ? /no such file/ : /not a valid unionblob blob/);
    const direct = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA}`]);
    t.is(direct.status, 1);
    t.is(direct.stderr.trim().split('\n').length, 1, direct.stderr);
  }
  // The version is read before the header crc: a version 1 header with version 2's crc still
  // says "rebuild"; version 0, which no format had, is corrupt.
  for (const [version, want] of [[1, /^[^\n]*format version 1: rebuild the blob with this cfs[^\n]*\n$/], [0, /^[^\n]*not a valid unionblob blob[^\n]*\n$/]]) {
    const blob = path.join(S.work, `v${version}-stale-crc.ub`);
    const buf = fs.readFileSync(S.blob);
    buf.writeUInt16LE(version, 12);
    fs.writeFileSync(blob, buf);
    const direct = sh(SERVER, [blob, mnt, '-o', `basedir=${S.storeA}`]);
    t.is(direct.status, 1);
    t.regex(direct.stderr, want);
  }
  const noStore = cfs(['mount', S.blob, mnt, '--store', path.join(S.work, 'no-store')]);
  t.not(noStore.status, 0);
  t.regex(noStore.stderr, /store .*no-store: no such directory/);
  const direct = sh(SERVER, [S.blob, mnt, '-o', `basedir=${path.join(S.work, 'no-store')}`]);
  t.is(direct.status, 1);
  t.regex(direct.stderr, /store .*No such file/);
  t.deepEqual(mountsBelow(mnt), []);
  t.deepEqual(leftovers(mnt), []);
});

serial('mounting twice on one target is refused; umount of nothing says so', (t) => {
  const mnt = mkTarget('twice');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA]);
  try {
    const again = cfs(['mount', S.blob, mnt, '--store', S.storeA]);
    t.not(again.status, 0);
    t.regex(again.stderr, /already mounted/);
    t.is(readMountinfo().filter((e) => e.mountPoint === mnt).length, 1);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  const none = cfs(['umount', mnt]);
  t.not(none.status, 0);
  t.regex(none.stderr, /not mounted/);
  const half = cfs(['mount', S.blob, mnt, '--store', S.storeA, '--upper', mnt]);
  t.regex(half.stderr, /--upper and --work go together/);
});

serial('a killed FUSE server leaves no hung mount: cfs umount cleans up', async (t) => {
  const mnt = mkTarget('killed');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA]);
  const pid = serverPid(mnt);
  t.true(pid > 1);
  process.kill(pid, 'SIGKILL');
  await sleep(200);
  t.is(errnoOf(() => fs.readdirSync(mnt)), 'ENOTCONN');
  const started = Date.now();
  cfsOk(t, ['umount', mnt]);
  t.true(Date.now() - started < 10_000, 'umount took too long');
  t.deepEqual(mountsBelow(mnt), []);
  t.deepEqual(leftovers(mnt), []);
  t.deepEqual(fs.readdirSync(mnt), [], 'the target is an empty directory again');
});

serial('a stopped FUSE server under an overlay: cfs umount releases overlay, lower and server', async (t) => {
  const mnt = mkTarget('stopped');
  const upper = mkTarget('stopped-upper');
  const work = mkTarget('stopped-work');
  cfsOk(t, ['mount', S.blob, mnt, '--store', S.storeA, '--upper', upper, '--work', work]);
  const pid = serverPid(mnt);
  process.kill(pid, 'SIGSTOP');
  const started = Date.now();
  const r = cfs(['umount', mnt]);
  t.is(r.status, 0, r.stderr);
  t.true(Date.now() - started < 30_000, 'umount took too long');
  t.deepEqual(mountsBelow(mnt), []);
  t.deepEqual(mountsBelow(path.join(runDir(), 'lower')).filter((m) => m.includes(keyOf(mnt))), []);
  t.deepEqual(leftovers(mnt), []);
  await sleep(100);
  const stat = sh('ps', ['-o', 'stat=', '-p', String(pid)]).stdout.trim();
  t.true(stat === '' || stat.startsWith('Z'), `server ${pid} still there: ${stat}`);
});

for (const cache of FUSE_CACHES) serial(`writable upper: changes go to the upper, persist across remounts, blob and store untouched (--fuse-cache ${cache})`, (t) => {
  const mnt = mkTarget(`rw-${cache}`);
  const upper = mkTarget(`rw-upper-${cache}`);
  const work = mkTarget(`rw-work-${cache}`);
  const blobHash = sha256(fs.readFileSync(S.blob));
  const storeHash = hashTree(S.storeA);
  const args = ['mount', S.blob, mnt, '--store', S.storeA, '--store', S.storeB, '--upper', upper, '--work', work, '--fuse-cache', cache];
  cfsOk(t, args);
  let lower;
  try {
    const top = readMountinfo().filter((e) => e.mountPoint === mnt).at(-1);
    t.is(top.fsType, 'overlay');
    lower = JSON.parse(fs.readFileSync(statePath(keyOf(mnt)), 'utf8')).lower;
    t.true(lower.startsWith(path.join(runDir(), 'lower')));
    // the overlay holds its own clone of the blob's mount: the hidden one is detached and gone
    t.regex(top.superOptions, new RegExp(`(^|,)lowerdir=${lower}(,|$)`));
    t.is(top.source, S.blob, 'the overlay names the blob as its source');
    t.deepEqual(mountsBelow(lower), []);
    t.false(fs.existsSync(lower));
    t.regex(fs.readFileSync(`/proc/${serverPid(mnt)}/cmdline`, 'latin1'), /unionblob-fuse/, 'its server still serves the overlay');
    fs.writeFileSync(path.join(mnt, 'new-file'), 'created');
    // copy-up of a symlink whose blob xattrs include user.* (overlayfs stopped at the first listed name it could not read)
    fs.lchownSync(path.join(mnt, 'link'), 5, 5);
    t.is(fs.lstatSync(path.join(mnt, 'link')).uid, 5);
    t.is(fs.readlinkSync(path.join(mnt, 'link')), 'small');
    fs.appendFileSync(path.join(mnt, 'small'), 'appended\n');
    fs.chmodSync(path.join(mnt, 'just65'), 0o600);
    fs.renameSync(path.join(mnt, 'exactly64'), path.join(mnt, 'renamed64'));
    fs.unlinkSync(path.join(mnt, 'big'));
    fs.rmSync(path.join(mnt, 'bigdir'), { recursive: true });
    fs.mkdirSync(path.join(mnt, 'new-dir'));
    fs.writeFileSync(path.join(mnt, 'new-dir', 'f'), 'x');
    fs.unlinkSync(path.join(mnt, 'new-dir', 'f'));
    t.true(fs.readFileSync(path.join(mnt, 'hl/third')).equals(S.contents.get('big')), 'other names of a deleted hardlink stay');
    t.is(fs.readdirSync(path.join(mnt, 'opaque-dir')).join(), 'inside');
    // Linux 6.7+ overlayfs unescapes trusted.overlay.overlay.X for its users: the image's own xattr.
    const [major, minor] = os.release().split('.').map(Number);
    if (major > 6 || (major === 6 && minor >= 7)) {
      const v = sh('getfattr', ['-h', '--only-values', '-n', 'trusted.overlay.opaque', path.join(mnt, 'opaque-dir')]);
      t.is(v.stdout, 'y', v.stderr);
    }
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  t.deepEqual(mountsBelow(mnt), []);
  t.deepEqual(mountsBelow(lower), []);
  t.false(fs.existsSync(lower), 'the hidden lower directory is removed');
  t.deepEqual(leftovers(mnt), []);
  // The upper holds a whiteout for the deleted lower file.
  const wh = fs.lstatSync(path.join(upper, 'big'));
  t.true(wh.isCharacterDevice() && wh.rdev === 0);

  cfsOk(t, args);
  try {
    t.is(fs.readFileSync(path.join(mnt, 'new-file'), 'utf8'), 'created');
    t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\nappended\n');
    t.is(fs.statSync(path.join(mnt, 'just65')).mode & 0o7777, 0o600);
    t.false(fs.existsSync(path.join(mnt, 'exactly64')));
    t.is(fs.readFileSync(path.join(mnt, 'renamed64'), 'utf8'), '6'.repeat(64));
    t.false(fs.existsSync(path.join(mnt, 'big')));
    t.false(fs.existsSync(path.join(mnt, 'bigdir')));
    t.deepEqual(fs.readdirSync(path.join(mnt, 'new-dir')), []);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  t.is(sha256(fs.readFileSync(S.blob)), blobHash, 'the blob was not modified');
  t.deepEqual(hashTree(S.storeA), storeHash, 'the store was not modified');
  t.deepEqual(mountsBelow(mnt), []);
});

serial('golden vectors: every .ub served through FUSE equals its .dump', (t) => {
  const vectors = fs.existsSync(VECTORS) ? fs.readdirSync(VECTORS).filter((f) => f.endsWith('.ub')).sort() : [];
  t.true(vectors.length > 0, 'no golden vectors in format/vectors');
  const store = mkTarget('empty-store');
  for (const v of vectors) {
    const blob = path.join(VECTORS, v);
    const mnt = mkTarget(`vector-${v}`);
    cfsOk(t, ['mount', blob, mnt, '--store', store, '--backend', 'fuse']);
    try {
      // The vectors' objects are fake digests with no store: reading them must be EIO.
      const expected = normalizeDump(fs.readFileSync(blob.replace(/\.ub$/, '.dump'), 'utf8'), [store]);
      t.deepEqual(dumpDiffs(expected, dumpMount(mnt)), [], v);
    } finally {
      cfsOk(t, ['umount', mnt]);
    }
  }
});

serial('mount.unionblob: mount -t unionblob and an fstab line (mount -T), via cfs install-helper', (t) => {
  const backup = fs.existsSync(HELPER_DEST) ? fs.readFileSync(HELPER_DEST) : null;
  const fuseLink = path.join(path.dirname(HELPER_DEST), 'mount.fuse.unionblob');
  const linkBackup = fs.lstatSync(fuseLink, { throwIfNoEntry: false }) ? fs.readlinkSync(fuseLink) : null;
  const mnt = mkTarget('helper');
  try {
    const inst = cfsOk(t, ['install-helper']);
    t.regex(inst.stdout, /installed \/sbin\/mount\.unionblob/);
    t.is(fs.readlinkSync(fuseLink), 'mount.unionblob', 'mount.fuse.unionblob, for what mount(8) sees as fuse.unionblob');
    const r = sh('mount', ['-t', 'unionblob', S.blob, mnt, '-o', `basedir=${S.storeA}:${S.storeB},verity=off,fuse_cache=shared`]);
    t.is(r.status, 0, r.stderr);
    t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n');
    t.regex(fs.readFileSync(`/proc/${serverPid(mnt)}/cmdline`, 'latin1'), /,cache=shared,/, 'fuse_cache= reaches the server');
    t.is(readMountinfo().filter((e) => e.mountPoint === mnt).at(-1).fsType, 'fuse.unionblob');
    cfsOk(t, ['umount', mnt]);
    t.deepEqual(mountsBelow(mnt), []);

    // umount(8) of a plain FUSE mount works too; the next mount clears the stale state.
    t.is(sh('mount', ['-t', 'unionblob', S.blob, mnt, '-o', `basedir=${S.storeA}`]).status, 0);
    t.is(sh('umount', [mnt]).status, 0);
    t.is(sh('mount', ['-t', 'unionblob', S.blob, mnt, '-o', `basedir=${S.storeA},nosuid,nodev,nosymfollow`]).status, 0);
    t.regex(readMountinfo().filter((e) => e.mountPoint === mnt).at(-1).mountOptions, /nosuid,nodev/);
    t.regex(readMountinfo().filter((e) => e.mountPoint === mnt).at(-1).mountOptions, /\bnosymfollow\b/, 'nosymfollow through the helper');
    t.is(errnoOf(() => fs.readFileSync(path.join(mnt, 'link'))), 'ELOOP');
    cfsOk(t, ['umount', mnt]);

    const upper = mkTarget('helper-upper');
    const work = mkTarget('helper-work');
    const fstab = path.join(S.work, 'fstab');
    fs.writeFileSync(fstab, `# test\n${S.blob} ${mnt} unionblob basedir=${S.storeA},upperdir=${upper},workdir=${work},nofail,x-test=1 0 0\n`);
    const m = sh('mount', ['-T', fstab, mnt]);
    t.is(m.status, 0, m.stderr);
    fs.writeFileSync(path.join(mnt, 'via-fstab'), 'yes');
    t.is(fs.readFileSync(path.join(upper, 'via-fstab'), 'utf8'), 'yes');
    // mount -a again: the overlay's source is the blob, so libmount sees the line is mounted
    const again = sh('mount', ['-a', '-T', fstab]);
    t.is(again.status, 0, again.stderr);
    t.is(readMountinfo().filter((e) => e.mountPoint === mnt).length, 1);
    t.deepEqual(fs.readdirSync(path.join(runDir(), 'lower')).filter((k) => k === keyOf(mnt)), [], 'the hidden lower is detached once the overlay holds it');
    // a plain umount(8) of the writable mount releases the stack: the overlay's lower goes with it, the server exits
    const pid = serverPid(mnt);
    t.is(sh('umount', [mnt]).status, 0);
    t.deepEqual(mountsBelow(mnt), []);
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      const st = sh('sh', ['-c', `awk '{print $3}' /proc/${pid}/stat 2>/dev/null`]).stdout.trim();
      alive = st !== '' && st !== 'Z';
      if (alive) sh('sleep', ['0.1']);
    }
    t.false(alive, 'the FUSE server exited with its last mount');
    t.is(readMountinfo().filter((e) => e.fsType === 'fuse.unionblob' && e.mountPoint.includes(keyOf(mnt))).length, 0);
    cfsOk(t, ['umount', mnt]); // the stale state: released without complaint
    t.deepEqual(leftovers(mnt), []);

    // -r with an upper: the overlay is read-only
    const ro = sh('mount', ['-r', '-T', fstab, mnt]);
    t.is(ro.status, 0, ro.stderr);
    t.is(errnoOf(() => fs.writeFileSync(path.join(mnt, 'nope'), 'x')), 'EROFS');
    t.is(fs.readFileSync(path.join(mnt, 'via-fstab'), 'utf8'), 'yes');
    cfsOk(t, ['umount', mnt]);
    t.deepEqual(mountsBelow(mnt), []);
    t.deepEqual(leftovers(mnt), []);

    // remount of a FUSE-backed mount (mount(8) runs mount.fuse.unionblob with its options)
    t.is(sh('mount', ['-t', 'unionblob', S.blob, mnt, '-o', `basedir="${S.storeA}"`]).status, 0);
    const re = sh('mount', ['-o', 'remount,noexec', mnt]);
    t.is(re.status, 0, re.stderr);
    t.regex(readMountinfo().filter((e) => e.mountPoint === mnt).at(-1).mountOptions, /\bnoexec\b/);
    t.is(fs.readFileSync(path.join(mnt, 'small'), 'utf8'), 'hello\n');
    cfsOk(t, ['umount', mnt]);

    // nofail: a blob that is not there is not an error (nothing mounted, nothing said)
    const nofail = sh('mount', ['-t', 'unionblob', path.join(S.work, 'no-such.ub'), mnt, '-o', `basedir=${S.storeA},nofail`]);
    t.is(nofail.status, 0, nofail.stderr);
    t.is(nofail.stderr, '');
    t.deepEqual(mountsBelow(mnt), []);
    const fails = sh('mount', ['-t', 'unionblob', path.join(S.work, 'no-such.ub'), mnt, '-o', `basedir=${S.storeA}`]);
    t.is(fails.status, 32);
    t.is(fails.stderr.trim().split('\n').length, 1, 'one line');

    // -N: the mount is made in that mount namespace, not in ours
    const sleeper = spawn('unshare', ['-m', '--propagation', 'private', 'sleep', '60'], { stdio: 'ignore' });
    t.teardown(() => sleeper.kill('SIGKILL'));
    let nsReady = false;
    for (let i = 0; i < 100 && !nsReady; i++) {
      nsReady = fs.existsSync(`/proc/${sleeper.pid}/ns/mnt`) && fs.readlinkSync(`/proc/${sleeper.pid}/ns/mnt`) !== fs.readlinkSync('/proc/self/ns/mnt')
        && sh('sh', ['-c', `cat /proc/${sleeper.pid}/comm`]).stdout.trim() === 'sleep';
      if (!nsReady) sh('sleep', ['0.05']);
    }
    t.true(nsReady, 'unshare made its namespace');
    const inNs = sh('mount', ['-N', String(sleeper.pid), '-t', 'unionblob', S.blob, mnt, '-o', `basedir=${S.storeA}`]);
    t.is(inNs.status, 0, inNs.stderr);
    t.deepEqual(mountsBelow(mnt), [], 'not in our namespace');
    t.true(fs.readFileSync(`/proc/${sleeper.pid}/mountinfo`, 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt), 'in its namespace');
    const outNs = sh('nsenter', [`--mount=/proc/${sleeper.pid}/ns/mnt`, process.execPath, CFS, 'umount', mnt]);
    t.is(outNs.status, 0, outNs.stderr);
    t.false(fs.readFileSync(`/proc/${sleeper.pid}/mountinfo`, 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt));
    t.deepEqual(leftovers(mnt), []);

    const bad = sh('mount', ['-t', 'unionblob', S.blob, mnt, '-o', `basedir=${S.storeA},bogus`]);
    t.not(bad.status, 0);
    t.regex(bad.stderr, /unknown option bogus/);
    const fake = sh('mount', ['-f', '-t', 'unionblob', S.blob, mnt, '-o', `basedir=${S.storeA}`]);
    t.is(fake.status, 0, fake.stderr);
    t.deepEqual(mountsBelow(mnt), [], 'mount -f mounts nothing');
  } finally {
    if (backup) fs.writeFileSync(HELPER_DEST, backup, { mode: 0o755 });
    else fs.rmSync(HELPER_DEST, { force: true });
    fs.rmSync(fuseLink, { force: true });
    if (linkBackup) fs.symlinkSync(linkBackup, fuseLink);
  }
});

/** DUMP_PY for a walker that may not list every directory: such a one gets a line saying so. */
const DUMP_AS_ANYONE_PY = DUMP_PY.replace(
  '        for name in os.listdir(p):',
  `        try:
            names = os.listdir(p)
        except OSError as e:
            names = []
            lines.append('%s listdir:%s' % (esc(rel or b'/'), errno.errorcode.get(e.errno, str(e.errno))))
        for name in names:`,
);

// composefs users ask for mounts without root (containers/composefs#409). A user other than root
// gets a FUSE mount through fusermount3 (setuid), its state in its own directory, and clear
// refusals for what needs root (the kernel backend, an overlayfs upper).
/**
 * For a test run as a user: /dev/fuse usable by users (stock Debian makes it 0666 through udev,
 * as the fuse3 package's rule says; this VM's devtmpfs leaves it 0600) and a directory they can
 * reach, unmounted and removed afterwards.
 */
function userWorkDir(t, prefix) {
  const devMode = fs.statSync('/dev/fuse').mode & 0o777;
  fs.chmodSync('/dev/fuse', 0o666);
  t.teardown(() => fs.chmodSync('/dev/fuse', devMode));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  t.teardown(() => {
    for (const m of mountsUnder(dir, readMountinfo()).reverse()) sh('umount', ['-l', m.mountPoint]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

serial('without root: cfs mount is a FUSE mount of that user, shows them what root\'s mount shows them, and cfs umount releases it', (t) => {
  const USER = 65534;
  const dir = userWorkDir(t, 'ub-fuse-user-');
  // the shared fixture lives in a 0700 directory: a copy the user can read
  const blob = path.join(dir, 'rich.ub');
  const [storeA, storeB] = [path.join(dir, 'storeA'), path.join(dir, 'storeB')];
  t.is(sh('cp', ['-a', S.blob, blob]).status, 0);
  t.is(sh('cp', ['-a', S.storeA, storeA]).status, 0);
  t.is(sh('cp', ['-a', S.storeB, storeB]).status, 0);
  t.is(sh('chmod', ['-R', 'a+rX', blob, storeA, storeB]).status, 0);
  const mnt = path.join(dir, 'mnt');
  const rootMnt = path.join(dir, 'root-mnt');
  fs.mkdirSync(mnt);
  fs.chownSync(mnt, USER, USER);
  fs.mkdirSync(rootMnt);
  const userTmp = path.join(dir, 'tmp'); // as /tmp: anyone may create, only owners remove
  fs.mkdirSync(userTmp);
  fs.chmodSync(userTmp, 0o1777);
  const env = { PATH: process.env.PATH, HOME: dir, TMPDIR: userTmp };
  const asUser = (args, extraEnv = {}) => cfs(args, { uid: USER, gid: USER, env: { ...env, ...extraEnv } });
  const dumpAsUser = (m) => {
    const r = sh('python3', ['-c', DUMP_AS_ANYONE_PY, m], { uid: USER, gid: USER, env, maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`python walk as uid ${USER} failed: ${r.stderr}`);
    return r.stdout.trimEnd().split('\n');
  };

  // fusermount3 cannot set nosymfollow, nor can a user remount: refused before anything is mounted
  const noSymfollow = asUser(['mount', blob, mnt, '--store', storeA, '-o', 'nosymfollow']);
  t.is(noSymfollow.status, 1);
  t.regex(noSymfollow.stderr, /^cfs: nosymfollow on a FUSE mount needs root[^\n]*\n$/);
  const mounted = asUser(['mount', blob, mnt, '--store', storeA, '--store', storeB]);
  t.is(mounted.status, 0, mounted.stderr);
  t.regex(mounted.stderr, /not root: using FUSE/);
  const entry = readMountinfo().filter((e) => e.mountPoint === mnt);
  t.is(entry.length, 1);
  t.is(entry[0].fsType, 'fuse.unionblob');
  t.regex(entry[0].superOptions, new RegExp(`user_id=${USER}\\b`));
  t.regex(entry[0].mountOptions, /\bnosuid\b.*\bnodev\b|\bnodev\b.*\bnosuid\b/);
  const runDirOfUser = path.join(userTmp, `unionblob-${USER}`);
  t.is(fs.statSync(runDirOfUser).uid, USER);
  t.is(fs.statSync(runDirOfUser).mode & 0o777, 0o700);
  t.true(fs.existsSync(path.join(runDirOfUser, 'mounts', `${keyOf(mnt)}.json`)), 'the state is in the user\'s own directory');
  try {
    // root's mount of the same blob (allow_other), walked as the user too: the same lines
    cfsOk(t, ['mount', blob, rootMnt, '--store', storeA, '--store', storeB, '--backend', 'fuse']);
    try {
      const mine = dumpAsUser(mnt);
      t.true(mine.length > 20, 'the walk saw the tree');
      t.deepEqual(dumpDiffs(dumpAsUser(rootMnt), mine), []);
      // an object of store B read through the user's mount: the line the blob's dump gives
      const want = expectedDump(blob, [storeA, storeB]).find((l) => l.startsWith('/onlyb '));
      t.is(mine.find((l) => l.startsWith('/onlyb ')), want);
      t.regex(mine.find((l) => l.startsWith('/big ')), / data:EACCES /, 'permissions apply: 0640 of uid 12 is not the user\'s to read');
    } finally {
      cfsOk(t, ['umount', rootMnt]);
    }
    t.is(errnoOf(() => fs.readdirSync(mnt)), 'EACCES', 'others (root too) do not see a user\'s FUSE mount');
    const again = asUser(['mount', blob, mnt, '--store', storeA]);
    t.not(again.status, 0);
    t.regex(again.stderr, /already mounted/);
  } finally {
    const u = asUser(['umount', mnt]);
    t.is(u.status, 0, u.stderr);
  }
  t.deepEqual(mountsBelow(dir), []);
  t.deepEqual(fs.readdirSync(path.join(runDirOfUser, 'mounts')), [], 'no state, pid, log or lock file left');

  // what needs root is refused in one line, and mounts nothing
  const upper = asUser(['mount', blob, mnt, '--store', storeA, '--upper', dir, '--work', dir]);
  t.not(upper.status, 0);
  t.regex(upper.stderr, /writable upper needs root/);
  const kernel = asUser(['mount', blob, mnt, '--store', storeA, '--backend', 'kernel']);
  t.not(kernel.status, 0);
  t.regex(kernel.stderr, /kernel backend needs root/);
  // a state directory someone else made is not used
  const other = fs.mkdtempSync(path.join(dir, 'other-'));
  fs.chmodSync(other, 0o1777);
  fs.mkdirSync(path.join(other, `unionblob-${USER}`), { mode: 0o700 });
  const planted = asUser(['mount', blob, mnt, '--store', storeA], { TMPDIR: other });
  t.not(planted.status, 0);
  t.regex(planted.stderr, /not a private directory of uid 65534/);
  t.deepEqual(mountsBelow(dir), []);
});

// Root of a user namespace other than the host's (a rootless container; here `unshare -Urm` run
// by a user): FUSE may be mounted in its own mount namespace, the module may not, and the host's
// /run/unionblob is not its to use (it was: "EACCES: permission denied, stat '/run/unionblob/mounts'").
serial('root of a user namespace (unshare -Urm as a user): a FUSE mount in its own mount namespace, state in its own directory, the kernel backend refused', (t) => {
  const USER = 65534;
  const dir = userWorkDir(t, 'ub-fuse-userns-');
  const blob = path.join(dir, 'rich.ub');
  const store = path.join(dir, 'store');
  t.is(sh('cp', ['-a', S.blob, blob]).status, 0);
  t.is(sh('sh', ['-c', `mkdir ${store} && cp -a ${S.storeA}/. ${S.storeB}/. ${store}/ && chmod -R a+rX ${blob} ${store}`]).status, 0);
  const [mnt, tmp] = ['mnt', 'tmp'].map((d) => path.join(dir, d));
  for (const d of [mnt, tmp]) {
    fs.mkdirSync(d);
    fs.chownSync(d, USER, USER);
  }
  const cfsIn = `${process.execPath} ${CFS}`;
  const script = [
    `${cfsIn} mount ${blob} ${mnt} --store ${store} 2>&1 | sed 's/^/mount: /'`,
    `echo "small: $(cat ${mnt}/small)"`,
    `echo "fstype: $(findmnt -n -o FSTYPE ${mnt})"`,
    `echo "state: $(ls ${tmp}/unionblob-0/mounts | grep -c json)"`,
    `${cfsIn} mount ${blob} ${dir} --store ${store} --backend kernel 2>&1 | sed 's/^/kernel: /'`,
    `${cfsIn} umount ${mnt} && echo "umount: ok"`,
    `echo "left: $(awk '$5 == "${mnt}"' /proc/self/mountinfo | wc -l) $(ls ${tmp}/unionblob-0/mounts | wc -l)"`,
  ].join('\n');
  const r = sh('unshare', ['-Urm', 'sh', '-c', script], { uid: USER, gid: USER, env: { PATH: process.env.PATH, TMPDIR: tmp, HOME: dir } });
  t.is(r.status, 0, r.stderr);
  const out = r.stdout;
  t.regex(out, /^mount: cfs: root of a user namespace: using FUSE/m);
  t.regex(out, /^small: hello$/m);
  t.regex(out, /^fstype: fuse\.unionblob$/m);
  t.regex(out, /^state: 1$/m, 'the state is in $TMPDIR/unionblob-0, not /run/unionblob');
  t.regex(out, /^kernel: cfs: the kernel backend cannot mount from a user namespace[^\n]*$/m);
  t.regex(out, /^umount: ok$/m);
  t.regex(out, /^left: 0 0$/m);
});

// A rootless container's writable rootfs: overlayfs in a user namespace keeps its bookkeeping in
// user.overlay.* (userxattr) and makes no redirects or metacopy files; `cfs build --from` reads
// such an upper with --userxattr, its default inside a user namespace.
serial('root of a user namespace: a writable upper (overlayfs with userxattr), committed by cfs build --from inside the namespace', (t) => {
  const USER = 65534;
  const dir = userWorkDir(t, 'ub-fuse-userns-upper-');
  const src = path.join(dir, 'src');
  for (const d of ['d1', 'd2', 'keep']) fs.mkdirSync(path.join(src, d), { recursive: true });
  const files = { 'f': 'gone soon\n', 'g': 'mode changes\n', 'd1/a': 'hidden by the opaque d1\n', 'd1/b': 'also hidden\n', 'd2/c': 'x'.repeat(5000), 'keep/k': 'kept\n' };
  for (const [p, c] of Object.entries(files)) fs.writeFileSync(path.join(src, p), c);
  const blob = path.join(dir, 'base.ub');
  const store = path.join(dir, 'store');
  cfsOk(t, ['build', '--rootfs', src, '-o', blob, '--store', store]);
  const [mnt, tmp, upper, work, out] = ['mnt', 'tmp', 'upper', 'work', 'out'].map((d) => path.join(dir, d));
  for (const d of [mnt, tmp, upper, work, out]) {
    fs.mkdirSync(d);
    fs.chownSync(d, USER, USER);
  }
  t.is(sh('chown', ['-R', `${USER}:${USER}`, blob, store]).status, 0); // the user's own image and store
  const cfsIn = `${process.execPath} ${CFS}`;
  const newBlob = path.join(out, 'new.ub');
  const script = [
    'set -e',
    `${cfsIn} mount ${blob} ${mnt} --store ${store} --upper ${upper} --work ${work} 2>/dev/null`,
    `echo "options: $(findmnt -n -o OPTIONS ${mnt})"`,
    `echo new > ${mnt}/new`,
    `rm ${mnt}/f`,
    `rm -r ${mnt}/d1 && mkdir ${mnt}/d1 && echo only > ${mnt}/d1/only`,
    `chmod 600 ${mnt}/g`,
    `mv ${mnt}/d2 ${mnt}/d3`, // EXDEV without redirect_dir: mv copies
    `${cfsIn} umount ${mnt}`,
    `echo "opaque: $(getfattr --only-values -n user.overlay.opaque ${upper}/d1)"`,
    `${cfsIn} build --from ${blob} ${upper} -o ${newBlob} --store ${out}/store --store ${store} >/dev/null && echo "build: ok"`,
  ].join('\n');
  const r = sh('unshare', ['-Urm', 'sh', '-c', script], { uid: USER, gid: USER, env: { PATH: process.env.PATH, TMPDIR: tmp, HOME: dir } });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stdout, /^options: .*\buserxattr\b/m);
  t.regex(r.stdout, /^opaque: y$/m, 'the overlay marked d1 opaque in user.overlay.*');
  t.regex(r.stdout, /^build: ok$/m);
  // What the container did, read back from the new blob by host root: the upper's changes on
  // the parent's tree, owned by the namespace's root (uid 0 inside), no overlay bookkeeping.
  const dest = path.join(dir, 'extracted');
  cfsOk(t, ['extract', newBlob, '--store', `${out}/store`, '--store', store, dest]);
  const tree = sh('find', [dest, '-mindepth', '1', '-printf', '%P %y %m %U\\n']).stdout.trim().split('\n').sort();
  t.deepEqual(tree, [
    'd1 d 755 0', 'd1/only f 644 0', 'd3 d 755 0', 'd3/c f 644 0', 'g f 600 0', 'keep d 755 0', 'keep/k f 644 0', 'new f 644 0',
  ]);
  t.is(fs.readFileSync(path.join(dest, 'd3/c'), 'utf8'), files['d2/c']);
  t.is(fs.readFileSync(path.join(dest, 'g'), 'utf8'), files.g);
  t.is(fs.readFileSync(path.join(dest, 'd1/only'), 'utf8'), 'only\n');
  t.notRegex(cfsOk(t, ['dump', newBlob]).stdout, /overlay\./, 'no overlay bookkeeping in the blob');
  // the host's root reading that upper as a root-mounted overlay's is told how to read it, in one line
  const wrong = cfs(['build', '--from', blob, upper, '-o', path.join(dir, 'wrong.ub'), '--store', path.join(dir, 'wrong-store')]);
  t.is(wrong.status, 1);
  t.regex(wrong.stderr, /^cfs: .*user\.overlay\.\w+: the upper of an overlay mounted with userxattr \(a user namespace's\): compile it with --userxattr\n$/);
  t.false(fs.existsSync(path.join(dir, 'wrong.ub')));
  t.deepEqual(mountsBelow(dir), []);
});

serial('no stray mounts or state are left by any test', (t) => {
  t.deepEqual(mountsBelow(S.work), []);
  const lowers = path.join(runDir(), 'lower');
  const stray = fs.existsSync(lowers) ? fs.readdirSync(lowers).filter((k) => fs.existsSync(statePath(k)) === false) : [];
  t.deepEqual(stray, []);
});

// ------------------------------------------------------------------------------------------
// A sparse file of an image (its object keeps its holes): SEEK_DATA/SEEK_HOLE through the mount
// answer from the object, so an overlay copy-up (an append in a container) and cp skip its zeros.
serial('lseek SEEK_DATA/SEEK_HOLE: a sparse file\'s holes through the mount (every cache), kept by an overlay copy-up', async (t) => {
  const { dataExtents } = await dist('mounter/addon.js');
  const src = mkTarget('sparse-src');
  const size = 64 << 20;
  const fd = fs.openSync(path.join(src, 'lastlog'), 'w');
  fs.ftruncateSync(fd, size);
  fs.writeSync(fd, Buffer.alloc(8192, 'a'), 0, 8192, 20 << 20);
  fs.writeSync(fd, Buffer.from('end'), 0, 3, size - 3);
  fs.closeSync(fd);
  fs.writeFileSync(path.join(src, 'inline'), 'small');
  const store = mkTarget('sparse-store');
  const blob = path.join(S.work, 'sparse.ub');
  cfsOk(t, ['build', '--rootfs', src, '-o', blob, '--store', store]);
  const extentsOf = (file) => {
    const f = fs.openSync(file, 'r');
    try {
      return [...dataExtents(f)];
    } finally {
      fs.closeSync(f);
    }
  };
  const want = extentsOf(path.join(src, 'lastlog'));
  t.true(want.length >= 2 && want[0][0] > 0, JSON.stringify(want));
  for (const cache of FUSE_CACHES) {
    const mnt = mkTarget(`sparse-${cache}`);
    cfsOk(t, ['mount', blob, mnt, '--store', store, '--backend', 'fuse', '--fuse-cache', cache]);
    try {
      t.deepEqual(extentsOf(path.join(mnt, 'lastlog')), want, `cache=${cache}`);
      t.deepEqual(extentsOf(path.join(mnt, 'inline')), [[0, 5]], 'inline data: no holes');
    } finally {
      cfsOk(t, ['umount', mnt]);
    }
  }
  const mnt = mkTarget('sparse-lower');
  const [upper, work, merged] = ['sparse-upper', 'sparse-work', 'sparse-merged'].map(mkTarget);
  cfsOk(t, ['mount', blob, mnt, '--store', store, '--backend', 'fuse']);
  try {
    sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${mnt},upperdir=${upper},workdir=${work},index=off,redirect_dir=on,metacopy=on`, merged]);
    fs.appendFileSync(path.join(merged, 'lastlog'), 'more');
    sh('umount', [merged]);
  } finally {
    cfsOk(t, ['umount', mnt]);
  }
  const copied = fs.statSync(path.join(upper, 'lastlog'));
  t.is(copied.size, size + 4);
  t.true(copied.blocks * 512 < 8 << 20, `the copy-up kept the holes (${copied.blocks} blocks)`);
  const back = fs.readFileSync(path.join(upper, 'lastlog'));
  t.true(back.subarray(0, size).equals(fs.readFileSync(path.join(src, 'lastlog'))));
});

// The real image: cfs build of the Debian fixture, served through FUSE, equals umoci's tree.

serial('differential: the Debian image mounted through FUSE (both caches) equals the umoci reference tree', async (t) => {
  t.timeout(30 * 60 * 1000);
  const { treeManifest, diffManifests } = await import('./lib/treeman.mjs');
  const r = sh('bash', [MAKE_IMAGES], { timeout: 30 * 60 * 1000 });
  if (r.status !== 0) t.fail(`make-images.sh failed (${r.status}):\n${r.stderr}`);
  const images = JSON.parse(fs.readFileSync(r.stdout.trim().split('\n').pop(), 'utf8'));
  const store = mkTarget('debian-store');
  const blob = path.join(S.work, 'debian-a.ub');
  cfsOk(t, ['build', images.images.a.variants['oci-layout-multitag'], '-o', blob, '--store', store]);
  const ref = await treeManifest(images.images.a.reference);
  t.true(ref.entries.size > 5000, 'the reference tree looks too small');
  for (const cache of FUSE_CACHES) {
    const mnt = mkTarget(`debian-${cache}`);
    cfsOk(t, ['mount', blob, mnt, '--store', store, '--backend', 'fuse', '--fuse-cache', cache]);
    try {
      const ours = await treeManifest(mnt);
      // The only presentation difference: an image's trusted.overlay.X shows as trusted.overlay.overlay.X.
      for (const e of ours.entries.values()) {
        e.xattrs = Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k.replace(/^trusted\.overlay\.overlay\./, 'trusted.overlay.'), v]));
      }
      const diffs = diffManifests(ref, ours, { labels: ['umoci', `fuse ${cache}`] });
      t.deepEqual(diffs.slice(0, 60), [], `cache=${cache}: ${diffs.length} difference(s)`);
    } finally {
      cfsOk(t, ['umount', mnt]);
    }
    t.deepEqual(mountsBelow(mnt), []);
  }
});
