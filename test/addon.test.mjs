// The Node-API addon (mounter/addon/, mounter/addon.ts), issue #4: the new mount API and
// fs-verity, against real filesystems on this host, as root. tmpfs and erofs (an image file)
// are mounted through fsopen/fsconfig/fsmount/move_mount; failures must carry the kernel's own
// fsconfig message; fs-verity is checked on a loop-mounted `mkfs.ext4 -O verity` image against
// `fsverity digest` and our userspace verityDigestOfFile; `cfs build --verity` and `cfs mount
// --backend kernel` (no unionblob module on this host) are checked end to end. The real
// kernel-backend mount runs inside the qemu guest (test/kernel.test.mjs).
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = path.join(ROOT, 'bin', 'cfs');
const ADDON = path.join(ROOT, 'mounter', 'addon', 'build', 'Release', 'unionblob.node');

const canRun = process.getuid?.() === 0;
const serial = canRun ? test.serial : test.serial.skip;
if (!canRun) test('addon tests need root', (t) => t.pass());

const dist = (p) => import(path.join(ROOT, 'dist', p));
const addon = canRun ? await dist('mounter/addon.js') : {};
const { verityDigestOfFile } = canRun ? await dist('format/verity.js') : {};
const { mountsAt, readMountinfo } = canRun ? await dist('mounter/mountinfo.js') : {};
const { MOUNT_ATTR, fsMount, fsMountDetached, moveMount, fsverityEnable, fsverityMeasure, isVerityUnsupported, mountAttrFromFlags, writeObjectFile, isTmpfileUnsupported } = addon;

// ------------------------------------------------------------------------------------------
// helpers

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function cfs(args, env = {}) {
  const r = spawnSync(process.execPath, [CFS, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const tmpRoot = canRun ? fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-addon-')) : '';
let counter = 0;
function tmpdir(name = 'd') {
  const d = path.join(tmpRoot, `${name}-${counter++}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/** The topmost mount on `dir`, or undefined. */
const topMount = (dir) => mountsAt(dir, readMountinfo()).at(-1);

/** Unmounts everything stacked on `dir` (a failed test must not leave mounts behind). */
function unmountAll(dir) {
  while (topMount(dir)) sh('umount', [dir]);
}

/** A fresh tmpfs through the addon (also where fs-verity does not exist). */
function mountTmpfs(t) {
  const dir = tmpdir('tmpfs');
  fsMount({ fstype: 'tmpfs', source: 'cfs-addon-test', options: [['size', '64M']], target: dir });
  t.teardown(() => unmountAll(dir));
  return dir;
}

/** A loop-mounted ext4 image of 4096-byte blocks (mounted through the addon, from the loop device). */
function mountExt4({ verity, megabytes = 96 }) {
  const dir = tmpdir(verity ? 'ext4-verity' : 'ext4');
  const img = `${dir}.img`;
  fs.writeFileSync(img, '');
  fs.truncateSync(img, megabytes << 20);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', ...(verity ? ['-O', 'verity'] : []), img]);
  const loop = sh('losetup', ['-f', '--show', img]).trim();
  try {
    fsMount({ fstype: 'ext4', source: loop, target: dir });
  } catch (err) {
    sh('losetup', ['-d', loop]);
    throw err;
  }
  return {
    dir,
    cleanup() {
      unmountAll(dir);
      sh('losetup', ['-d', loop]);
      fs.rmSync(img, { force: true });
    },
  };
}

/** `fsverity digest` (userspace) or `fsverity measure` (the kernel's): hex. */
function fsverityTool(cmd, file) {
  const out = sh('fsverity', [cmd, ...(cmd === 'digest' ? ['--hash-alg=sha256', '--block-size=4096'] : []), file]);
  return /^sha256:([0-9a-f]{64}) /.exec(out)[1];
}

/** An OCI layout with one uncompressed layer holding `files` (name -> Buffer). */
function ociImage(files) {
  const dir = tmpdir('image');
  const rootfs = path.join(dir, 'rootfs');
  fs.mkdirSync(rootfs);
  for (const [name, body] of Object.entries(files)) fs.writeFileSync(path.join(rootfs, name), body);
  const layerTar = path.join(dir, 'layer.tar');
  sh('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '-C', rootfs, '-cf', layerTar, '.']);
  const layout = path.join(dir, 'layout');
  const put = (buf, mediaType) => {
    const hex = crypto.createHash('sha256').update(buf).digest('hex');
    fs.mkdirSync(path.join(layout, 'blobs', 'sha256'), { recursive: true });
    fs.writeFileSync(path.join(layout, 'blobs', 'sha256', hex), buf);
    return { mediaType, digest: `sha256:${hex}`, size: buf.length };
  };
  const layer = fs.readFileSync(layerTar);
  const config = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [put(layer, 'x').digest] } };
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: put(Buffer.from(JSON.stringify(config)), 'application/vnd.oci.image.config.v1+json'),
    layers: [put(layer, 'application/vnd.oci.image.layer.v1.tar')],
  };
  const index = { schemaVersion: 2, manifests: [put(Buffer.from(JSON.stringify(manifest)), manifest.mediaType)] };
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify(index));
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  return layout;
}

/** Every object file of a store: [path, digest hex from its name]. */
function storeObjects(store) {
  const objects = path.join(store, 'objects');
  return fs.readdirSync(objects).filter((d) => /^[0-9a-f]{2}$/.test(d))
    .flatMap((d) => fs.readdirSync(path.join(objects, d)).map((n) => [path.join(objects, d, n), d + n]));
}

const random = (n) => crypto.randomBytes(n);

// Files the build tests use: an inline one, and objects from one block to a streamed 9 MiB one
// (StoreWriter.putStream); "dup" has the content of "small" (one object).
const IMAGE_FILES = canRun ? {
  inline: Buffer.from('tiny'),
  small: random(100),
  dup: null,
  block: random(4096),
  multi: random(600_000),
  big: random(9 << 20),
} : {};
if (canRun) IMAGE_FILES.dup = IMAGE_FILES.small;
const IMAGE_OBJECTS = 4;

if (canRun && !fs.existsSync(ADDON)) throw new Error(`addon not built (${ADDON}): run npm run build:addon`);
const verityFs = canRun ? mountExt4({ verity: true }) : null;
const image = canRun ? ociImage(IMAGE_FILES) : null;

/** Whether this kernel has fs-verity (CONFIG_FS_VERITY): a -O verity ext4 takes it or not. */
function probeVerity() {
  const file = path.join(verityFs.dir, 'probe');
  fs.writeFileSync(file, 'probe');
  try {
    return fsverityEnable(file);
  } catch (err) {
    if (err.code === 'EOPNOTSUPP') return false;
    throw err;
  } finally {
    fs.rmSync(file, { force: true });
  }
}
const kernelVerity = canRun && probeVerity();
const verityTest = kernelVerity ? serial : serial.skip;

test.after.always(() => {
  verityFs?.cleanup();
  if (tmpRoot) fs.rmSync(tmpRoot, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------
// Mounting

serial('fsMount: tmpfs with options and mount attributes, attached with move_mount', (t) => {
  const dir = tmpdir('target');
  const r = fsMount({
    fstype: 'tmpfs', source: 'ubtest', options: [['size', '1M'], ['mode', '0711']],
    flags: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV | MOUNT_ATTR.NOEXEC, target: dir,
  });
  t.teardown(() => unmountAll(dir));
  t.deepEqual(r.messages, []);
  const m = topMount(dir);
  t.is(m.fsType, 'tmpfs');
  t.is(m.source, 'ubtest');
  t.deepEqual(m.mountOptions.split(',').filter((o) => ['nosuid', 'nodev', 'noexec', 'rw'].includes(o)).sort(), ['nodev', 'noexec', 'nosuid', 'rw']);
  t.true(m.superOptions.split(',').includes('size=1024k'), m.superOptions);
  t.is(fs.statSync(dir).mode & 0o7777, 0o711);
  fs.writeFileSync(path.join(dir, 'f'), 'x');
  sh('umount', [dir]);
  t.is(topMount(dir), undefined);
});

// What the snapshotter does for a container in its own user namespace when the kernel module
// serves its images: an idmapped bind of the image's mount. Shown here on this host's ext4 (the
// module's own FS_ALLOW_IDMAP is checked in the kernel guest, test/kernel/guest-init.sh).
serial('idmapBind + withUserNamespace: an idmapped bind shows the ids through the mapping; the namespace\'s process is gone after', async (t) => {
  const { withUserNamespace } = await dist('mounter/userns.js');
  const src = tmpdir('idmap-src');
  const dst = tmpdir('idmap-dst');
  t.teardown(() => unmountAll(dst));
  for (const [name, uid, gid] of [['root', 0, 0], ['user', 1000, 100], ['high', 70000, 70000], ['second', 5, 7]]) {
    fs.writeFileSync(path.join(src, name), name);
    fs.chownSync(path.join(src, name), uid, gid);
  }
  fs.chmodSync(path.join(src, 'user'), 0o600);
  const uid = [{ inside: 0, outside: 100000, count: 10 }, { inside: 1000, outside: 101000, count: 1 }];
  const gid = [{ inside: 0, outside: 200000, count: 65536 }];
  let nsPid = null;
  await withUserNamespace(uid, gid, (fd) => {
    nsPid = fs.readlinkSync(`/proc/self/fd/${fd}`);
    addon.idmapBind(src, dst, fd);
  });
  t.regex(nsPid, /^user:\[\d+\]$/);
  const ids = (n) => { const st = fs.statSync(path.join(dst, n)); return `${st.uid} ${st.gid}`; };
  t.is(ids('root'), '100000 200000');
  t.is(ids('user'), '101000 200100');
  t.is(ids('second'), '100005 200007');
  t.is(ids('high'), '65534 65534', 'outside the mapping: the overflow id');
  t.is(ids('.'), `${100000 + fs.statSync(src).uid} ${200000 + fs.statSync(src).gid}`);
  t.true(topMount(dst).mountOptions.split(',').includes('idmapped'), topMount(dst).mountOptions);
  // the mapped owner reads its 0600 file; the unmapped id does not
  const asUser = (u) => spawnSync('setpriv', [`--reuid=${u}`, `--regid=${u}`, '--clear-groups', 'cat', path.join(dst, 'user')], { encoding: 'utf8' });
  fs.chmodSync(tmpRoot, 0o711);
  t.is(asUser(101000).stdout, 'user');
  t.not(asUser(1000).status, 0);
  // no unshare(1) left behind
  t.is(spawnSync('pgrep', ['-f', '^unshare --user sleep 600$']).status, 1);
  // an fd that is no user namespace: one clear error
  const err = t.throws(() => addon.idmapBind(src, dst, 0));
  t.is(err.code, 'EINVAL');
  t.regex(err.message, /mount_setattr MOUNT_ATTR_IDMAP/);
  sh('umount', [dst]);
  t.is(topMount(dst), undefined);
});

serial('fsMountDetached: invisible until moveMount; an unattached mount vanishes when closed', (t) => {
  const dir = tmpdir('target');
  // (by its source: other test files mount and unmount meanwhile)
  const detached = () => readMountinfo().filter((m) => m.source === 'detached').length;
  const before = detached();
  const { fd } = fsMountDetached({ fstype: 'tmpfs', source: 'detached', options: [['size', '1M']], flags: MOUNT_ATTR.RDONLY });
  t.true(Number.isInteger(fd) && fd > 2);
  t.is(detached(), before, 'a detached mount is in no mount table');
  moveMount(fd, dir);
  fs.closeSync(fd);
  t.teardown(() => unmountAll(dir));
  const m = topMount(dir);
  t.is(m.source, 'detached');
  t.true(m.mountOptions.split(',').includes('ro'));
  t.throws(() => fs.writeFileSync(path.join(dir, 'f'), 'x'), { code: 'EROFS' });
  sh('umount', [dir]);

  const other = fsMountDetached({ fstype: 'tmpfs', source: 'dropped' });
  fs.closeSync(other.fd);
  t.false(readMountinfo().some((e) => e.source === 'dropped'));
});

serial('fsMount: erofs from an image file (file-backed, else a loop device), read-only', (t) => {
  const src = tmpdir('erofs-src');
  fs.mkdirSync(path.join(src, 'sub'));
  const body = random(70_000);
  fs.writeFileSync(path.join(src, 'sub', 'data'), body);
  fs.symlinkSync('sub/data', path.join(src, 'link'));
  const img = path.join(tmpdir('erofs'), 'fs.erofs');
  sh('mkfs.erofs', ['--quiet', img, src]);
  const dir = tmpdir('target');
  const spec = { fstype: 'erofs', options: [['ro']], flags: MOUNT_ATTR.RDONLY, target: dir };
  try {
    fsMount({ ...spec, source: img });
  } catch (err) {
    // Kernels without file-backed erofs (CONFIG_EROFS_FS_BACKED_BY_FILE, 6.12+) want a block device.
    if (err.code !== 'ENOTBLK') throw err;
    t.log('no file-backed erofs in this kernel: mounting it from a loop device');
    const loop = sh('losetup', ['-f', '--show', '-r', img]).trim();
    t.teardown(() => sh('losetup', ['-d', loop]));
    fsMount({ ...spec, source: loop });
  }
  t.teardown(() => unmountAll(dir));
  t.is(topMount(dir).fsType, 'erofs');
  t.true(fs.readFileSync(path.join(dir, 'link')).equals(body));
  t.throws(() => fs.writeFileSync(path.join(dir, 'new'), 'x'), { code: 'EROFS' });
  sh('umount', [dir]);
  t.is(topMount(dir), undefined);
});

serial("fsMount errors: the failing step, errno and the kernel's fsconfig message", (t) => {
  const dir = tmpdir('target');
  // a failed fsMount could only have attached at its target (other test files mount meanwhile)
  const mountsAt = () => readMountinfo().filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`)).length;

  const bad = t.throws(() => fsMount({ fstype: 'tmpfs', options: [['size', '1x']], target: dir }));
  t.is(bad.code, 'EINVAL');
  t.is(bad.errno, -22);
  t.is(bad.syscall, 'fsconfig');
  t.deepEqual(bad.kernelMessages, ["e tmpfs: Bad value for 'size'"]);
  t.is(bad.message, "fsconfig size=1x: Invalid argument (EINVAL): tmpfs: Bad value for 'size'");

  const unknown = t.throws(() => fsMount({ fstype: 'tmpfs', options: [['size', '1M'], ['bogus']], target: dir }));
  t.regex(unknown.message, /^fsconfig bogus: .*\(EINVAL\): tmpfs: Unknown parameter 'bogus'$/);

  // get_tree failures come from FSCONFIG_CMD_CREATE: a missing erofs image.
  const missing = t.throws(() => fsMount({ fstype: 'erofs', source: path.join(dir, 'none.img'), options: [['ro']], target: dir }));
  t.is(missing.code, 'ENOENT');
  t.regex(missing.message, /^fsconfig FSCONFIG_CMD_CREATE \(erofs\): /);

  const nofs = t.throws(() => fsMount({ fstype: 'nosuchfs', target: dir }));
  t.is(nofs.code, 'ENODEV');
  t.is(nofs.message, 'fsopen nosuchfs: unknown filesystem type, no kernel module provides it (ENODEV)');

  const notarget = t.throws(() => fsMount({ fstype: 'tmpfs', target: path.join(dir, 'absent') }));
  t.is(notarget.code, 'ENOENT');
  t.is(notarget.syscall, 'move_mount');
  t.is(notarget.path, path.join(dir, 'absent'));

  t.is(mountsAt(), 0, 'no failure leaves a mount behind');
});

serial('fsMount: arguments are checked before any system call', (t) => {
  t.throws(() => fsMount({ target: '/nonexistent' }), { instanceOf: TypeError, message: /fstype/ });
  t.throws(() => fsMount({ fstype: 'tmpfs', options: ['size=1M'], target: '/nonexistent' }), { instanceOf: TypeError, message: /options\[0\]/ });
  t.throws(() => fsMount({ fstype: 'tmpfs', options: [['size', 1]], target: '/nonexistent' }), { instanceOf: TypeError, message: /option size/ });
  t.throws(() => fsMount({ fstype: 'tmpfs', flags: 'ro', target: '/nonexistent' }), { instanceOf: TypeError, message: /flags/ });
  t.throws(() => moveMount('x', '/nonexistent'), { instanceOf: TypeError });
  t.throws(() => fsverityMeasure(42), { instanceOf: TypeError });
});

test('crc32c: the addon\'s (the CPU\'s crc32 instruction) equals format/crc32c.ts\'s tables at every length, alignment and continuation', async (t) => {
  if (!canRun) return t.pass();
  const { crc32c, crc32cTables, useCrc32c } = await dist('format/crc32c.js');
  const native = addon.nativeCrc32c();
  t.truthy(native, 'the addon is built and this x86-64 CPU has SSE4.2');
  t.is(native(Buffer.from('123456789'), 0), 0xe3069283, 'the CRC-32C check value');
  const big = crypto.randomBytes(1 << 20);
  // every length up to 70 and some long ones, at every alignment of the start, continued or not
  for (const len of [...Array.from({ length: 71 }, (_, i) => i), 4095, 4096, 4097, 65537, (1 << 20) - 9]) {
    for (const off of [0, 1, 3, 7]) {
      const data = big.subarray(off, off + len);
      const previous = len % 3 === 0 ? 0 : crc32cTables(big.subarray(0, 100));
      t.is(native(data, previous), crc32cTables(data, previous), `len ${len} at ${off}`);
    }
  }
  // installed, crc32c takes it for big inputs and gives the same answers
  useCrc32c(native);
  try {
    t.is(crc32c(big), crc32cTables(big));
    t.is(crc32c(big.subarray(5, 300), 1234), crc32cTables(big.subarray(5, 300), 1234));
  } finally {
    useCrc32c(null);
  }
});

test('mountAttrFromFlags: mount(8) flags as MOUNT_ATTR bits and superblock flags', (t) => {
  if (!canRun) return t.pass();
  t.deepEqual(mountAttrFromFlags(['nosuid', 'nodev', 'noexec', 'noatime', 'nodiratime']), {
    attr: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV | MOUNT_ATTR.NOEXEC | MOUNT_ATTR.NOATIME | MOUNT_ATTR.NODIRATIME, sbFlags: [],
  });
  t.deepEqual(mountAttrFromFlags(['suid', 'dev', 'exec', 'relatime', 'sync', 'dirsync']), { attr: 0, sbFlags: ['sync', 'dirsync'] });
  t.deepEqual(mountAttrFromFlags(['strictatime']), { attr: MOUNT_ATTR.STRICTATIME, sbFlags: [] });
  t.deepEqual(mountAttrFromFlags(['nosymfollow', 'nosuid']), { attr: MOUNT_ATTR.NOSYMFOLLOW | MOUNT_ATTR.NOSUID, sbFlags: [] });
  // of a flag and its opposite the last one wins, as with mount(8)
  t.deepEqual(mountAttrFromFlags(['nosymfollow', 'nosuid', 'symfollow', 'suid', 'noexec']), { attr: MOUNT_ATTR.NOEXEC, sbFlags: [] });
  t.deepEqual(mountAttrFromFlags(['dev', 'nodev']), { attr: MOUNT_ATTR.NODEV, sbFlags: [] });
  // the atime family is one field: the last one given
  t.deepEqual(mountAttrFromFlags(['strictatime', 'relatime']), { attr: 0, sbFlags: [] });
  t.deepEqual(mountAttrFromFlags(['noatime', 'strictatime', 'nodiratime']), { attr: MOUNT_ATTR.STRICTATIME | MOUNT_ATTR.NODIRATIME, sbFlags: [] });
  t.deepEqual(mountAttrFromFlags(['relatime', 'noatime']), { attr: MOUNT_ATTR.NOATIME, sbFlags: [] });
  t.deepEqual(mountAttrFromFlags(['noatime', 'atime']), { attr: 0, sbFlags: [] });
  t.throws(() => mountAttrFromFlags(['bogus']), { message: 'unknown mount flag bogus' });
});

// ------------------------------------------------------------------------------------------
// fs-verity

if (canRun && !kernelVerity) {
  serial('fs-verity: this kernel has none (no CONFIG_FS_VERITY): EOPNOTSUPP even on ext4 -O verity', (t) => {
    const file = path.join(verityFs.dir, 'f');
    fs.writeFileSync(file, 'data');
    const err = t.throws(() => fsverityEnable(file));
    t.is(err.code, 'EOPNOTSUPP');
    t.regex(err.message, /not built into the kernel/);
    t.is(fsverityMeasure(file), null);
    t.log('the fs-verity tests that need a kernel with CONFIG_FS_VERITY are skipped on this host');
  });
}

verityTest('fs-verity on ext4 -O verity: enable, and the measured digest is fsverity digest and ours', async (t) => {
  const dir = path.join(verityFs.dir, 'files');
  fs.mkdirSync(dir, { recursive: true });
  for (const size of [0, 1, 4096, 4097, 600_000, (1 << 20) + 5]) {
    const file = path.join(dir, `f${size}`);
    fs.writeFileSync(file, random(size));
    t.is(fsverityMeasure(file), null, 'no fs-verity yet');
    t.true(fsverityEnable(file), `enabled on ${size} bytes`);
    t.false(fsverityEnable(file), 'already enabled');
    const digest = fsverityMeasure(file);
    t.true(Buffer.isBuffer(digest) && digest.length === 32);
    t.is(digest.toString('hex'), fsverityTool('measure', file), `kernel, ${size} bytes`);
    t.is(digest.toString('hex'), fsverityTool('digest', file), `fsverity digest, ${size} bytes`);
    t.true(digest.equals(await verityDigestOfFile(file)), `verityDigestOfFile, ${size} bytes`);
  }
  // fs-verity files are immutable.
  t.throws(() => fs.openSync(path.join(dir, 'f1'), 'r+'), { code: 'EPERM' });
});

verityTest('fs-verity: a real failure is not "unsupported" (ETXTBSY: open for writing)', (t) => {
  const file = path.join(verityFs.dir, 'busy');
  fs.writeFileSync(file, 'data');
  const fd = fs.openSync(file, 'r+');
  try {
    const err = t.throws(() => fsverityEnable(file));
    t.is(err.code, 'ETXTBSY');
    t.is(err.path, file);
    t.false(isVerityUnsupported(err));
  } finally {
    fs.closeSync(fd);
  }
  const missing = t.throws(() => fsverityMeasure(path.join(verityFs.dir, 'absent')));
  t.is(missing.code, 'ENOENT');
  t.is(missing.syscall, 'open');
});

serial('fs-verity where there is none: tmpfs (no ioctl) and ext4 without -O verity', (t) => {
  const tmp = mountTmpfs(t);
  const plain = mountExt4({ verity: false, megabytes: 16 });
  t.teardown(() => plain.cleanup());
  for (const [dir, code] of [[tmp, 'ENOTTY'], [plain.dir, 'EOPNOTSUPP']]) {
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, 'data');
    const err = t.throws(() => fsverityEnable(file));
    t.is(err.code, code, dir);
    t.true(isVerityUnsupported(err));
    t.regex(err.message, new RegExp(`^FS_IOC_ENABLE_VERITY ${file}: .*fs-verity.*\\(${code}\\)$`));
    t.is(fsverityMeasure(file), null);
  }
});

// ------------------------------------------------------------------------------------------
// cfs build --verity

function build(store, extra = []) {
  const out = path.join(tmpdir('blob'), 'image.ub');
  const r = cfs(['build', image, '-o', out, '--store', store, '--json', ...extra]);
  if (r.status !== 0) throw new Error(`cfs build failed: ${r.stderr}`);
  return { out, summary: JSON.parse(r.stdout), stderr: r.stderr };
}

verityTest('cfs build --verity: objects get fs-verity on a verity store; fsck passes; a rebuild finds them', (t) => {
  const store = path.join(verityFs.dir, 'store');
  const { out, summary } = build(store, ['--verity']);
  t.is(summary.objectsNew, IMAGE_OBJECTS);
  t.like(summary, { verityEnabled: IMAGE_OBJECTS, verityPresent: 0, verityUnsupported: 0 });
  const objects = storeObjects(store);
  t.is(objects.length, IMAGE_OBJECTS);
  for (const [file, hex] of objects) {
    t.is(fsverityTool('measure', file), hex, 'the kernel measures the digest the object is named by');
    t.is(fsverityMeasure(file).toString('hex'), hex);
  }
  const fsck = cfs(['fsck', out, '--store', store]);
  t.is(fsck.status, 0, fsck.stdout + fsck.stderr);

  const again = build(store, ['--verity']).summary;
  t.like(again, { objectsNew: 0, objectsPresent: IMAGE_OBJECTS, verityEnabled: 0, verityPresent: IMAGE_OBJECTS, verityUnsupported: 0 });
});

serial('cfs build --verity on a store without fs-verity: built, skipped and counted; no flag, no counts', (t) => {
  const store = path.join(mountTmpfs(t), 'store');
  const { out, summary, stderr } = build(store, ['--verity']);
  t.like(summary, { objectsNew: IMAGE_OBJECTS, verityEnabled: 0, verityPresent: 0, verityUnsupported: IMAGE_OBJECTS });
  t.is(stderr, `cfs: warning: --verity: ${IMAGE_OBJECTS} objects are on a filesystem without fs-verity (or read-only): left without it\n`, 'said, not only counted');
  for (const [file] of storeObjects(store)) t.is(fsverityMeasure(file), null);
  t.is(cfs(['fsck', out, '--store', store]).status, 0);

  const plain = build(path.join(tmpdir('store'), 'store')).summary;
  t.false('verityEnabled' in plain);
});

// ------------------------------------------------------------------------------------------
// Store objects as unnamed files (O_TMPFILE + linkat)

serial('writeObjectFile: named only when complete, 0444, an existing name left alone', (t) => {
  const dir = tmpdir('objects');
  const data = random(10_000);
  t.true(writeObjectFile(dir, 'x', data.subarray(1000, 9000), 0o444, true));
  t.deepEqual(fs.readFileSync(path.join(dir, 'x')), data.subarray(1000, 9000));
  t.is(fs.statSync(path.join(dir, 'x')).mode & 0o7777, 0o444);
  t.false(writeObjectFile(dir, 'x', Buffer.from('other'), 0o444, true), 'the name exists');
  t.deepEqual(fs.readFileSync(path.join(dir, 'x')), data.subarray(1000, 9000));
  t.deepEqual(fs.readdirSync(dir), ['x'], 'no temp name anywhere');
  const err = t.throws(() => writeObjectFile(path.join(dir, 'missing'), 'y', data, 0o444, false));
  t.like(err, { code: 'ENOENT', syscall: 'open' });
  t.false(isTmpfileUnsupported(err), 'a missing directory is a real error, not a reason to fall back');
});

serial('writeObjectFile into a directory descriptor: the same, and the descriptor stays usable', (t) => {
  const dir = tmpdir('objects');
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    const data = random(5000);
    t.true(writeObjectFile(fd, 'a', data, 0o444, true));
    t.true(writeObjectFile(fd, 'b', data.subarray(0, 10), 0o444, true));
    t.false(writeObjectFile(fd, 'a', Buffer.from('other'), 0o444, true), 'the name exists');
    t.deepEqual(fs.readFileSync(path.join(dir, 'a')), data);
    t.deepEqual(fs.readFileSync(path.join(dir, 'b')), data.subarray(0, 10));
    t.is(fs.statSync(path.join(dir, 'a')).mode & 0o7777, 0o444);
    t.deepEqual(fs.readdirSync(dir).sort(), ['a', 'b'], 'no temp name anywhere');
    const err = t.throws(() => writeObjectFile(fd, 'sub/c', data, 0o444, false));
    t.is(err.code, 'ENOENT', 'a name under a missing directory is an error');
  } finally {
    fs.closeSync(fd);
  }
  t.throws(() => writeObjectFile(fd, 'c', Buffer.from('x'), 0o444, false), { code: 'EBADF' });

  // Without CAP_DAC_READ_SEARCH linkat(AT_EMPTY_PATH) is refused: the /proc/self/fd way instead.
  const mine = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-addon-nobody-')); // tmpRoot is 0700
  t.teardown(() => fs.rmSync(mine, { recursive: true, force: true }));
  fs.chownSync(mine, 65534, 65534);
  const script = `import { writeObjectFile } from ${JSON.stringify(path.join(ROOT, 'dist/mounter/addon.js'))};
    import fs from 'node:fs';
    const fd = fs.openSync(process.argv[1], fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    console.log([writeObjectFile(fd, 'a', Buffer.from('one'), 0o444, true), writeObjectFile(fd, 'b', Buffer.from('two'), 0o444, true),
      writeObjectFile(fd, 'a', Buffer.from('three'), 0o444, true)].join(' '));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, mine], { uid: 65534, gid: 65534, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), 'true true false');
  t.is(fs.readFileSync(path.join(mine, 'a'), 'utf8'), 'one');
  t.is(fs.readFileSync(path.join(mine, 'b'), 'utf8'), 'two');
  t.deepEqual(fs.readdirSync(mine).sort(), ['a', 'b']);
});

serial('cfs build: objects linked in from unnamed files and, without the addon, renamed temp files are the same', async (t) => {
  const linked = path.join(tmpdir('store'), 's');
  const renamed = path.join(tmpdir('store'), 's');
  const a = build(linked);
  const outB = path.join(tmpdir('blob'), 'image.ub');
  const r = cfs(['build', image, '-o', outB, '--store', renamed, '--json'], { UNIONBLOB_ADDON: path.join(tmpRoot, 'missing.node') });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(fs.readFileSync(a.out), fs.readFileSync(outB), 'byte-identical blobs');
  t.is(a.summary.objectsNew, IMAGE_OBJECTS);
  const names = (store) => storeObjects(store).map(([, hex]) => hex).sort();
  t.deepEqual(names(linked), names(renamed));
  for (const [file, hex] of storeObjects(linked)) {
    t.is((await verityDigestOfFile(file)).toString('hex'), hex);
    t.is(fs.statSync(file).mode & 0o7777, 0o444);
  }
  for (const store of [linked, renamed]) t.deepEqual(fs.readdirSync(path.join(store, 'objects')).filter((n) => n.startsWith('.tmp-')), []);
});

// ------------------------------------------------------------------------------------------
// cfs mount --backend kernel, on a host without the unionblob module

function mountFixture() {
  const store = path.join(tmpdir('store'), 'store');
  const { out } = build(store);
  const target = tmpdir('target');
  const runDir = tmpdir('run');
  return { blob: out, store, target, env: { UNIONBLOB_RUN_DIR: runDir }, runDir };
}

serial('cfs mount --backend kernel without the module: one clear line, nothing left behind', (t) => {
  t.false(fs.readFileSync('/proc/filesystems', 'utf8').includes('\tunionblob\n'), 'this test wants a host without the module');
  const f = mountFixture();
  const r = cfs(['mount', f.blob, f.target, '--store', f.store, '--backend', 'kernel', '--verity', 'try'], f.env);
  t.is(r.status, 1);
  const lines = r.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, r.stderr);
  t.is(lines[0], `cfs: kernel mount of ${f.blob} on ${f.target} failed: fsopen unionblob: unknown filesystem type, no kernel module provides it (ENODEV)`);
  t.is(topMount(f.target), undefined);
  t.deepEqual(fs.readdirSync(path.join(f.runDir, 'mounts')), [], 'the state recorded before mounting is removed');
});

serial('without the addon: cfs mount falls back to mount(8); cfs build --verity refuses up front', (t) => {
  const f = mountFixture();
  const env = { ...f.env, UNIONBLOB_ADDON: path.join(f.runDir, 'missing.node') };
  const r = cfs(['mount', f.blob, f.target, '--store', f.store, '--backend', 'kernel'], env);
  t.is(r.status, 1);
  t.regex(r.stderr, /^cfs: the Node-API addon is not built \(npm run build:addon\): mounting with mount\(8\)\n/);
  t.regex(r.stderr, /kernel mount of .* failed: mount: .*unknown filesystem type 'unionblob'/);
  t.is(topMount(f.target), undefined);

  const out = path.join(tmpdir('blob'), 'never.ub');
  const b = cfs(['build', image, '-o', out, '--store', path.join(tmpdir('store'), 's'), '--verity'], env);
  t.is(b.status, 1);
  t.is(b.stderr, `cfs: the unionblob Node-API addon is not built (no ${env.UNIONBLOB_ADDON}): run npm run build:addon\n`);
  t.false(fs.existsSync(out));
});
