// Runs INSIDE the qemu guest of test/kernel/userspace.sh (chrooted into bookworm + node, this
// checkout at /work/main on an ext4 disk with fs-verity), as root. One console line per check:
//   UBTEST ok NAME | UBTEST fail NAME REASON | UBDIAG NAME DETAIL
// Checks, in order:
//   addon:*   the fs-verity tests of test/addon.test.mjs under ava (--match; three of them need
//             CONFIG_FS_VERITY, which this guest kernel has and the host's does not; a skip fails)
//   the kernel backend of `cfs mount` with the host-built blob /work/kb/hello.ub (+ store):
//   read-only mount and tree (= `cfs extract`), auto -> kernel, digest=, the module's fsconfig
//   messages, verity=require, the writable upper (overlayfs on the kernel mount) with remount
//   persistence, `cfs install-helper` + `mount -t unionblob` + /etc/fstab, the snapshotter with
//   the module (plain and idmapped lowers), containerd importing an image through it, and no
//   stray mounts.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';

const ROOT = '/work/main';
const KB = '/work/kb';
const T = '/work/t';
const BLOB = path.join(KB, 'hello.ub');
const STORE = path.join(KB, 'store');
const RUN = '/run/unionblob';
const { readMountinfo, mountsUnder } = await import(`${ROOT}/dist/mounter/mountinfo.js`);
const { treeManifest, diffManifests } = await import(`${ROOT}/test/lib/treeman.mjs`);

const say = (line) => process.stdout.write(`${line}\n`);
const uptime = () => fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0];

class CheckError extends Error {
  constructor(message, detail = '') { super(message); this.detail = detail; }
}
function expect(cond, message, detail = '') { if (!cond) throw new CheckError(message, detail); }
function eq(got, want, message) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new CheckError(`${message}: got ${g.slice(0, 300)}, want ${w.slice(0, 300)}`);
}

async function check(name, fn) {
  say(`UBDIAG time ${uptime()} ${name}`);
  try {
    await fn();
    say(`UBTEST ok ${name}`);
    return true;
  } catch (e) {
    say(`UBTEST fail ${name} ${String(e.message).split('\n')[0]}`);
    const detail = [e instanceof CheckError ? e.detail : e.stack].filter(Boolean).join('\n');
    for (const l of detail.split('\n').filter(Boolean).slice(0, 40)) say(`UBDIAG ${name} ${l}`);
    return false;
  }
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 180_000, ...opts });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}
const cfs = (...args) => sh(process.execPath, [path.join(ROOT, 'bin', 'cfs'), ...args]);
function ok(r, what) {
  expect(r.status === 0, `${what}: exit ${r.status}${r.error ? ` (${r.error.message})` : ''}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`,
    `${r.stdout}\n${r.stderr}`);
  return r;
}
const top = (dir) => readMountinfo().filter((e) => e.mountPoint === dir).at(-1);
function mkdir(name) {
  const d = path.join(T, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}
const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
function hashTree(dir) {
  const h = crypto.createHash('sha256');
  const walk = (d) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      h.update(`${path.relative(dir, p)} ${st.mode} ${st.size} ${st.mtimeMs}\n`);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) h.update(fs.readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex');
}
const states = () => (fs.existsSync(path.join(RUN, 'mounts')) ? fs.readdirSync(path.join(RUN, 'mounts')) : []);
function released(mnt) {
  eq(mountsUnder(mnt).map((e) => e.mountPoint), [], `mounts left at ${mnt}`);
  eq(states(), [], 'state files left in /run/unionblob/mounts');
  const lowers = path.join(RUN, 'lower');
  eq(fs.existsSync(lowers) ? fs.readdirSync(lowers) : [], [], 'hidden lower directories left');
}
function getfattr(file, name) {
  return sh('getfattr', ['-h', '--only-values', '-n', name, file]).stdout;
}

fs.mkdirSync(T, { recursive: true });
say(`UBDIAG time ${uptime()} start (node ${process.version}, kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()})`);

// ---- 1. test/addon.test.mjs (fs-verity, fsMount) before the module is loaded -----------------
{
  const r = sh(process.execPath, [path.join(ROOT, 'node_modules/ava/entrypoints/cli.mjs'), '--tap', '--timeout=5m',
    '--match', 'fs-verity*', '--match', 'cfs build --verity*', 'test/addon.test.mjs'],
    { cwd: ROOT, timeout: 600_000, env: { ...process.env, CI: '1' } });
  fs.writeFileSync('/work/ava.log', `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  const lines = r.stdout.split('\n');
  let n = 0;
  for (const [i, line] of lines.entries()) {
    const m = /^(ok|not ok) \d+ - (.*?)(?: # (SKIP|skip|TODO).*)?$/.exec(line);
    if (!m) continue;
    n++;
    const name = `addon:${m[2].replace(/[^A-Za-z0-9.=-]+/g, '-').replace(/^-|-$/g, '').slice(0, 90)}`;
    await check(name, () => {
      expect(m[1] === 'ok', 'failed in the guest', lines.slice(i + 1, i + 30).join('\n'));
      expect(!m[3], 'skipped in the guest (it must run here: the guest kernel has fs-verity)');
    });
  }
  await check('addon-ava-run', () => {
    expect(r.status === 0 && n >= 3, `ava exit ${r.status}, ${n} tests reported`, `${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  });
}

// ---- 2. the module --------------------------------------------------------------------------
const loaded = await check('module-load', () => {
  ok(sh('busybox', ['insmod', path.join(KB, 'unionblob.ko')]), 'insmod unionblob.ko');
  expect(/\tunionblob$/m.test(fs.readFileSync('/proc/filesystems', 'utf8')), 'unionblob not in /proc/filesystems');
});
if (!loaded) process.exit(0);

const blobHash = sha256(fs.readFileSync(BLOB));
const storeHash = hashTree(STORE);
const reference = path.join(T, 'extract');

// ---- 3. read-only kernel mounts -------------------------------------------------------------
await check('cfs-extract-reference', () => {
  ok(cfs('extract', BLOB, reference, '--store', STORE), 'cfs extract');
});

await check('ro-mount-kernel-tree-equals-extract', async () => {
  const mnt = mkdir('ro');
  ok(cfs('mount', BLOB, mnt, '--store', STORE, '--backend', 'kernel'), 'cfs mount --backend kernel');
  try {
    const e = top(mnt);
    eq(e?.fsType, 'unionblob', 'fs type at the target');
    eq(e.source, BLOB, 'mount source');
    expect(/^ro\b/.test(e.mountOptions), `mount options ${e.mountOptions}`);
    expect(/basedir=/.test(e.superOptions), `superblock options ${e.superOptions}`);
    const [want, got] = [await treeManifest(reference), await treeManifest(mnt)];
    expect(got.entries.size >= 25, `only ${got.entries.size} entries in the mount`);
    const diffs = diffManifests(want, got, { labels: ['extract', 'mount'], ignorePaths: (p) => p === '.' });
    eq(diffs, [], 'tree of the mount vs cfs extract');
    let err = '';
    try { fs.writeFileSync(path.join(mnt, 'etc/hostname'), 'x'); } catch (x) { err = x.code; }
    eq(err, 'EROFS', 'writing to the read-only mount');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  released(mnt);
});

await check('long-paths-kernel-mount', async () => {
  // fsconfig(2) takes string values of at most 255 bytes: a blob path and a basedir= longer than
  // that got EINVAL from the fsconfig mount; cfs mount then mounts with mount(2) (mount(8))
  const deep = mkdir(path.join('long', 'd'.repeat(120), 'e'.repeat(120)));
  const blob = path.join(deep, 'image-with-a-long-path.ub');
  fs.copyFileSync(BLOB, blob);
  const store = path.join(deep, 'store');
  ok(sh('cp', ['-a', STORE, store]), 'cp -a store');
  expect(Buffer.byteLength(blob) > 255 && Buffer.byteLength(`${store}:${STORE}`) > 255, 'the paths are long enough');
  const mnt = mkdir('long-mnt');
  const r = ok(cfs('mount', blob, mnt, '--store', store, '--store', STORE, '--backend', 'kernel'), 'cfs mount --backend kernel (long paths)');
  try {
    expect(/mount\(8\)/.test(r.stderr), `stderr does not say mount(8) was used: ${r.stderr.trim()}`);
    eq(top(mnt)?.fsType, 'unionblob', 'fs type at the target');
    const [want, got] = [await treeManifest(reference), await treeManifest(mnt)];
    eq(diffManifests(want, got, { labels: ['extract', 'mount'], ignorePaths: (p) => p === '.' }), [], 'tree of the mount vs cfs extract');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  released(mnt);
  fs.rmSync(path.join(T, 'long'), { recursive: true, force: true });
});

await check('blob-write-denied-while-mounted', () => {
  // the module holds the blob with deny_write_access(), as exec does: truncating or writing it
  // in place cannot change what a mount serves (the FUSE server maps it and copes instead)
  const blob = path.join(mkdir('trunc'), 'copy.ub');
  fs.copyFileSync(BLOB, blob);
  const mnt = mkdir('trunc-mnt');
  ok(cfs('mount', blob, mnt, '--store', STORE, '--backend', 'kernel'), 'cfs mount --backend kernel');
  let code = 'truncated';
  try {
    try { fs.truncateSync(blob, 4096); } catch (e) { code = e.code; }
    eq(fs.readFileSync(path.join(mnt, 'etc/hostname'), 'utf8'), 'example\n', 'etc/hostname');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  eq(code, 'ETXTBSY', 'truncate of the mounted blob');
  fs.truncateSync(blob, 4096); // unmounted: writable again
  released(mnt);
});

await check('auto-backend-picks-kernel-with-right-digest', () => {
  const mnt = mkdir('auto');
  const d = ok(sh('fsverity', ['digest', '--hash-alg=sha256', '--block-size=4096', '--compact', BLOB]), 'fsverity digest');
  const r = ok(cfs('mount', BLOB, mnt, '--store', STORE, '--backend', 'auto', '--digest', d.stdout.trim()), 'cfs mount --backend auto --digest');
  try {
    expect(/kernel module/.test(r.stderr), `stderr does not name the kernel module: ${r.stderr.trim()}`);
    eq(top(mnt)?.fsType, 'unionblob', 'fs type');
    eq(fs.readFileSync(path.join(mnt, 'etc/hostname'), 'utf8'), 'example\n', 'etc/hostname');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  released(mnt);
});

// cfs mount --uidmap/--gidmap on the module: an idmapped bind of a hidden mount of it (the
// kernel data path and one page cache whatever the mapping), nothing left behind after umount
await check('uidmap-kernel-idmapped-bind', () => {
  const mnt = mkdir('uidmap');
  const plain = mkdir('uidmap-plain');
  ok(cfs('mount', BLOB, plain, '--store', STORE, '--backend', 'kernel'), 'cfs mount (unmapped, for reference)');
  try {
    ok(cfs('mount', BLOB, mnt, '--store', STORE, '--backend', 'kernel', '--uidmap', '0:100000:65536', '--gidmap', '0:200000:1000', '-o', 'nosuid'), 'cfs mount --uidmap --backend kernel');
    try {
      const m = top(mnt);
      eq(m?.fsType, 'unionblob', 'fs type of the bind');
      expect(/(^|,)idmapped(,|$)/.test(m.mountOptions), `no idmapped attribute: ${m.mountOptions}`);
      expect(/(^|,)nosuid(,|$)/.test(m.mountOptions), `the flag did not reach the bind: ${m.mountOptions}`);
      for (const f of ['etc/hostname', 'etc']) {
        const want = fs.lstatSync(path.join(plain, f));
        const got = fs.lstatSync(path.join(mnt, f));
        eq([got.uid, got.gid], [want.uid + 100000, want.gid < 1000 ? want.gid + 200000 : 65534], `owner of ${f} through the mapping`);
      }
      eq(fs.readFileSync(path.join(mnt, 'etc/hostname'), 'utf8'), 'example\n', 'etc/hostname through the bind');
      eq(readMountinfo().filter((e) => e.mountPoint.startsWith(path.join(RUN, 'lower'))).map((e) => e.mountPoint), [], 'the hidden mount is detached');
    } finally {
      if (top(mnt)) ok(cfs('umount', mnt), 'cfs umount of the mapped mount');
    }
  } finally {
    ok(cfs('umount', plain), 'cfs umount');
  }
  released(mnt);
  released(plain);
});

// nosymfollow: a mount attribute (fsmount's MOUNT_ATTR_NOSYMFOLLOW), set with the module's mount
await check('nosymfollow-kernel-mount', () => {
  const mnt = mkdir('nosymfollow');
  ok(cfs('mount', BLOB, mnt, '--store', STORE, '--backend', 'kernel', '-o', 'nosymfollow,nodev'), 'cfs mount -o nosymfollow');
  try {
    const m = top(mnt);
    eq(m?.fsType, 'unionblob', 'fs type');
    expect(/(^|,)nosymfollow(,|$)/.test(m.mountOptions) && /(^|,)nodev(,|$)/.test(m.mountOptions), `mount options ${m.mountOptions}`);
    let err = 'OK';
    try { fs.readFileSync(path.join(mnt, 'app/sh-link')); } catch (x) { err = x.code; }
    eq(err, 'ELOOP', 'open through app/sh-link');
    eq(fs.readlinkSync(path.join(mnt, 'app/sh-link')), '../bin/hello', 'readlink of app/sh-link');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  released(mnt);
});

await check('digest-wrong-module-message-one-line', () => {
  const mnt = mkdir('digest-bad');
  const r = cfs('mount', BLOB, mnt, '--store', STORE, '--backend', 'kernel', '--digest', '0'.repeat(64));
  const lines = r.stderr.trim().split('\n');
  eq(r.status, 1, 'exit status');
  eq(lines.length, 1, `stderr lines (${r.stderr.trim()})`);
  expect(/^cfs: kernel mount of .* failed: fsconfig FSCONFIG_CMD_CREATE \(unionblob\): Invalid argument \(EINVAL\): unionblob: .*does not match digest=/.test(lines[0]),
    `message: ${lines[0]}`);
  released(mnt);
});

await check('fsconfig-messages-reach-the-caller', async () => {
  const { fsMount } = await import(`${ROOT}/dist/mounter/addon.js`);
  const mnt = mkdir('fsmount');
  for (const [what, options, re] of [
    ['rw', [['rw'], ['basedir', STORE]], /read-only/],
    ['no basedir', [['ro']], /basedir= is required/],
    ['bad digest=', [['ro'], ['basedir', STORE], ['digest', 'xyz']], /digest= wants 64 hex digits/],
    ['missing store', [['ro'], ['basedir', '/work/nope']], /basedir \/work\/nope/],
  ]) {
    let err;
    try {
      fsMount({ fstype: 'unionblob', source: BLOB, target: mnt, options });
    } catch (e) { err = e; }
    if (!err) sh('umount', [mnt]);
    expect(err, `${what}: mounted`);
    expect(re.test(err.message) && err.kernelMessages?.length > 0, `${what}: ${err.message} ${JSON.stringify(err.kernelMessages)}`);
  }
  released(mnt);
});

await check('verity-require-store-with-fs-verity', () => {
  const vstore = path.join(T, 'vstore');
  const vblob = path.join(T, 'v.ub');
  const b = ok(cfs('build', path.join(ROOT, 'examples/hello-oci.tar'), '-o', vblob, '--store', vstore, '--verity', '--json'), 'cfs build --verity');
  const summary = JSON.parse(b.stdout.trim().split('\n').at(-1));
  expect(summary.verityEnabled > 0, `no object got fs-verity: ${b.stdout.trim()}`);
  const mnt = mkdir('verity');
  ok(cfs('mount', vblob, mnt, '--store', vstore, '--backend', 'kernel', '--verity', 'require'), 'cfs mount --verity require');
  try {
    expect(/verity=require/.test(top(mnt)?.superOptions ?? ''), 'verity=require not in the superblock options');
    const want = fs.readFileSync(path.join(reference, 'app/LICENSE'));
    expect(fs.readFileSync(path.join(mnt, 'app/LICENSE')).equals(want), 'app/LICENSE differs');
    expect(fs.readFileSync(path.join(mnt, 'etc/passwd')).equals(fs.readFileSync(path.join(reference, 'etc/passwd'))), 'etc/passwd differs');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  released(mnt);
});

// ---- 4. the writable upper (overlayfs on the kernel mount) ----------------------------------
{
  const mnt = mkdir('rw');
  const upper = mkdir('rw-upper');
  const work = mkdir('rw-work');
  const args = ['mount', BLOB, mnt, '--store', STORE, '--upper', upper, '--work', work, '--backend', 'kernel'];
  let lower = '';
  const J = (p) => path.join(mnt, p);
  const mounted = await check('upper-mount-overlay-on-kernel-lower', () => {
    ok(cfs(...args), 'cfs mount --upper');
    eq(top(mnt)?.fsType, 'overlay', 'fs type at the target');
    lower = JSON.parse(fs.readFileSync(path.join(RUN, 'mounts', states().find((f) => f.endsWith('.json'))), 'utf8')).lower;
    expect(lower.startsWith(path.join(RUN, 'lower')), `lower ${lower}`);
    // the overlay holds its own clone of the blob's mount: the hidden one is detached
    expect(top(mnt).superOptions.split(',').includes(`lowerdir=${lower}`), `overlay options ${top(mnt).superOptions}`);
    eq(top(mnt).source, BLOB, 'source of the overlay');
    eq(top(lower), undefined, 'a mount left at the hidden lower');
    expect(!fs.existsSync(lower), 'the hidden lower directory is removed once detached');
  });
  if (mounted) {
    await check('upper-create-write-chmod-delete-rename', () => {
      fs.writeFileSync(J('new-file'), 'created');
      fs.appendFileSync(J('etc/hostname'), 'appended\n');       // inline file: copy-up
      fs.appendFileSync(J('etc/passwd'), 'x:1:1::/:/bin/sh\n'); // external object: copy-up
      fs.chmodSync(J('app/LICENSE'), 0o600);
      fs.unlinkSync(J('etc/os-release'));                        // lower file: whiteout
      fs.renameSync(J('app/config.json'), J('app/config.renamed'));
      fs.rmSync(J('var/cache/app'), { recursive: true });
      fs.unlinkSync(J('app/hello'));                             // one name of a hardlink
      fs.mkdirSync(J('new-dir'));
      fs.writeFileSync(J('new-dir/f'), 'x');
      fs.unlinkSync(J('new-dir/f'));
      eq(fs.readFileSync(J('bin/hello'), 'utf8'), fs.readFileSync(path.join(reference, 'bin/hello'), 'utf8'), 'the other name of the hardlink');
      eq(getfattr(J('app/config.renamed'), 'user.origin'), 'layer2', 'xattr of the renamed (copied-up) file');
      // the blob itself, mounted once more read-only, is unchanged
      const view = mkdir('rw-view');
      ok(cfs('mount', BLOB, view, '--store', STORE, '--backend', 'kernel'), 'cfs mount (a read-only view)');
      try {
        eq(fs.readFileSync(path.join(view, 'etc/hostname'), 'utf8'), 'example\n', 'the lower is unchanged');
        expect(fs.existsSync(path.join(view, 'etc/os-release')), 'the lower still has etc/os-release');
      } finally {
        ok(cfs('umount', view), 'cfs umount (the view)');
      }
    });
  }
  await check('upper-umount-releases-overlay-and-lower', () => {
    ok(cfs('umount', mnt), 'cfs umount');
    released(mnt);
    expect(!lower || !fs.existsSync(lower), 'the hidden lower directory is removed');
    const wh = fs.lstatSync(path.join(upper, 'etc/os-release'));
    expect(wh.isCharacterDevice() && wh.rdev === 0, 'no whiteout (0:0 char device) in the upper for etc/os-release');
  });
  await check('upper-remount-changes-persist', () => {
    ok(cfs(...args), 'cfs mount --upper (again)');
    try {
      eq(fs.readFileSync(J('new-file'), 'utf8'), 'created', 'new-file');
      eq(fs.readFileSync(J('etc/hostname'), 'utf8'), 'example\nappended\n', 'etc/hostname');
      expect(fs.readFileSync(J('etc/passwd'), 'utf8').endsWith('x:1:1::/:/bin/sh\n'), 'etc/passwd');
      eq(fs.statSync(J('app/LICENSE')).mode & 0o7777, 0o600, 'mode of app/LICENSE');
      expect(!fs.existsSync(J('etc/os-release')), 'etc/os-release is back');
      expect(!fs.existsSync(J('app/config.json')), 'app/config.json is back');
      eq(fs.readFileSync(J('app/config.renamed'), 'utf8'), fs.readFileSync(path.join(reference, 'app/config.json'), 'utf8'), 'app/config.renamed');
      expect(!fs.existsSync(J('var/cache/app')), 'var/cache/app is back');
      expect(!fs.existsSync(J('app/hello')) && fs.existsSync(J('bin/hello')), 'hardlink names');
      eq(fs.readdirSync(J('new-dir')), [], 'new-dir');
    } finally {
      ok(cfs('umount', mnt), 'cfs umount');
    }
    released(mnt);
  });
  await check('upper-blob-and-store-untouched', () => {
    eq(sha256(fs.readFileSync(BLOB)), blobHash, 'sha256 of the blob');
    eq(hashTree(STORE), storeHash, 'hash of the store tree');
  });
}

// ---- 5. mount(8): cfs install-helper, mount -t unionblob, /etc/fstab --------------------------
await check('install-helper', () => {
  const r = ok(cfs('install-helper'), 'cfs install-helper');
  expect(/installed \/sbin\/mount\.unionblob/.test(r.stdout), r.stdout);
});

await check('mount-t-unionblob-kernel', () => {
  const mnt = mkdir('helper');
  ok(sh('mount', ['-t', 'unionblob', BLOB, mnt, '-o', `basedir=${STORE}`]), 'mount -t unionblob');
  try {
    eq(top(mnt)?.fsType, 'unionblob', 'fs type');
    eq(fs.readFileSync(path.join(mnt, 'etc/passwd')), fs.readFileSync(path.join(reference, 'etc/passwd')), 'etc/passwd');
  } finally {
    ok(cfs('umount', mnt), 'cfs umount');
  }
  released(mnt);
});

await check('mount-t-unionblob-module-message', () => {
  const mnt = mkdir('helper-bad');
  const r = sh('mount', ['-t', 'unionblob', BLOB, mnt, '-o', `basedir=${STORE},digest=${'1'.repeat(64)}`]);
  expect(r.status !== 0, 'mounted');
  expect(/unionblob: .*does not match digest=/.test(r.stderr), `stderr: ${r.stderr.trim()}`);
  released(mnt);
});

await check('fstab-mount-target', () => {
  const ro = mkdir('fstab-ro');
  const rw = mkdir('fstab-rw');
  const upper = mkdir('fstab-upper');
  const work = mkdir('fstab-work');
  fs.appendFileSync('/etc/fstab', `\n${BLOB} ${ro} unionblob basedir=${STORE},nofail 0 0\n` +
    `${BLOB} ${rw} unionblob basedir=${STORE},upperdir=${upper},workdir=${work},backend=kernel,nofail 0 0\n`);
  ok(sh('mount', [ro]), `mount ${ro}`);
  try {
    eq(top(ro)?.fsType, 'unionblob', 'fs type of the read-only fstab mount');
    eq(fs.readFileSync(path.join(ro, 'etc/hostname'), 'utf8'), 'example\n', 'etc/hostname');
    ok(sh('mount', [rw]), `mount ${rw}`);
    try {
      eq(top(rw)?.fsType, 'overlay', 'fs type of the writable fstab mount');
      fs.writeFileSync(path.join(rw, 'via-fstab'), 'yes');
      eq(fs.readFileSync(path.join(upper, 'via-fstab'), 'utf8'), 'yes', 'the write reached the upper');
      const lines = fs.readFileSync('/etc/fstab', 'utf8').split('\n').filter((l) => l.startsWith(`${BLOB} `));
      const ours = path.join(T, 'fstab-ours');
      fs.writeFileSync(ours, `${lines.join('\n')}\n`);
      ok(sh('mount', ['-a', '-T', ours]), 'mount -a with both lines mounted already');
      eq(readMountinfo().filter((e) => e.mountPoint === rw).length, 1, 'mounts at the writable target after mount -a');
      // a plain umount(8) releases the whole stack: the blob's mount lived only in the overlay
      ok(sh('umount', [rw]), `umount ${rw}`);
      eq(readMountinfo().filter((e) => e.fsType === 'unionblob' && e.mountPoint !== ro).map((e) => e.mountPoint), [], 'unionblob mounts left after umount(8) of the overlay');
    } finally {
      ok(cfs('umount', rw), `cfs umount ${rw} (releases the stale state)`);
    }
  } finally {
    ok(cfs('umount', ro), `cfs umount ${ro}`);
  }
  released(ro);
  released(rw);
});

// ---- 5b. the snapshotter on the module --------------------------------------------------------
// The host's kernel cannot load the module, so test/snapshotter.test.mjs only ever sees the FUSE
// backend. Here the Snapshotter class itself (what `cfs snapshotter` serves) runs with
// the module (backend auto, as `cfs snapshotter` starts): a layer committed from its upper, a container's snapshot on it (overlay on the
// module's mount), its Commit, a view, and a container in its own user namespace (containerd's
// uidmapping labels: an idmapped bind of the module's mount, the upper's root owned by the
// mapped root); Remove and Cleanup leave no mount.
await check('snapshotter-kernel-backend', async () => {
  const { Snapshotter, LABEL_UIDMAP, LABEL_GIDMAP } = await import(`${ROOT}/dist/snapshotter/snapshotter.js`);
  const root = mkdir('sn');
  const logs = [];
  const sn = new Snapshotter({ root, stores: [mkdir('sn-store')], backend: 'auto', log: (l) => logs.push(l) });
  const mountAt = (mounts, name) => {
    const target = mkdir(name);
    for (const m of mounts) {
      const r = m.type === 'bind'
        ? sh('mount', ['--bind', ...(m.options.includes('ro') ? ['-o', 'ro'] : []), m.source, target])
        : sh('mount', ['-t', m.type, m.source, target, '-o', m.options.join(',')]);
      ok(r, `mount ${m.type} ${m.options.join(',')}`);
    }
    return target;
  };
  const umountAll = (target) => { while (top(target)) ok(sh('umount', [target]), `umount ${target}`); };
  const underRoot = () => readMountinfo().filter((e) => e.mountPoint.startsWith(root));
  try {
    expect(logs.some((l) => /mount backend: using the unionblob kernel module/.test(l)), 'auto picks the module and the log says so', logs.join('\n'));
    // layer 1: written into the bind of a parentless snapshot's upper, as containerd applies a base layer
    const l1 = mountAt(await sn.prepare('default/1/l1', '', {}), 'sn-l1');
    fs.mkdirSync(path.join(l1, 'etc'));
    fs.writeFileSync(path.join(l1, 'etc', 'hostname'), 'layer1\n');
    fs.writeFileSync(path.join(l1, 'big'), crypto.randomBytes(300_000));
    fs.mkdirSync(path.join(l1, 'home'));
    fs.mkdirSync(path.join(l1, 'home', 'user'));
    fs.chownSync(path.join(l1, 'home', 'user'), 1000, 1000);
    fs.writeFileSync(path.join(l1, 'home', 'user', 'notes'), 'mine\n');
    fs.chownSync(path.join(l1, 'home', 'user', 'notes'), 1000, 1000);
    fs.symlinkSync('etc/hostname', path.join(l1, 'link'));
    const want = await treeManifest(l1);
    umountAll(l1);
    await sn.commit('default/2/c1', 'default/1/l1', {});

    // a container's rootfs: overlay whose lower is the module's mount of c1's blob
    const ctrMounts = await sn.prepare('default/3/ctr', 'default/2/c1', {});
    eq(ctrMounts.map((m) => m.type), ['overlay'], 'a container snapshot is one overlay');
    const lower = ctrMounts[0].options.find((o) => o.startsWith('lowerdir=')).slice('lowerdir='.length);
    eq(top(lower)?.fsType, 'unionblob', `fs type of the lower ${lower}`);
    const ctr = mountAt(ctrMounts, 'sn-ctr');
    eq(diffManifests(want, await treeManifest(ctr), { labels: ['layer', 'container'], ignorePaths: (p) => p === '.' }), [], 'the container sees the committed layer');
    fs.writeFileSync(path.join(ctr, 'etc', 'hostname'), 'container\n');
    fs.rmSync(path.join(ctr, 'big'));
    umountAll(ctr);
    await sn.commit('default/4/c2', 'default/3/ctr', {});
    const view = mountAt(await sn.view('default/5/v', 'default/4/c2', {}), 'sn-view');
    eq(top(view)?.fsType, 'unionblob', 'a view is a bind of the module\'s mount of c2');
    eq(fs.readFileSync(path.join(view, 'etc', 'hostname'), 'utf8'), 'container\n', 'c2 has the container\'s change');
    expect(!fs.existsSync(path.join(view, 'big')), 'c2 lost the deleted file');
    eq(fs.readFileSync(path.join(view, 'home', 'user', 'notes'), 'utf8'), 'mine\n', 'c2 keeps the rest of c1');
    umountAll(view);

    // a container in its own user namespace: the lower is an idmapped bind of the module's mount
    const labels = { [LABEL_UIDMAP]: '0:100000:65536', [LABEL_GIDMAP]: '0:200000:65536' };
    const mappedMounts = await sn.prepare('default/6/userns', 'default/2/c1', labels);
    const mappedLower = mappedMounts[0].options.find((o) => o.startsWith('lowerdir=')).slice('lowerdir='.length);
    const ml = top(mappedLower);
    eq(ml?.fsType, 'unionblob', `fs type of the mapped lower ${mappedLower}`);
    expect(/(^|,)idmapped(,|$)/.test(ml.mountOptions), `the mapped lower is not idmapped: ${ml.mountOptions}`);
    expect(logs.some((l) => /idmapped bind of snapshot/.test(l)), 'the log says idmapped bind', logs.join('\n'));
    const userns = mountAt(mappedMounts, 'sn-userns');
    const owner = (f) => { const st = fs.lstatSync(path.join(userns, f)); return [st.uid, st.gid]; };
    eq(owner('.'), [100000, 200000], 'the root through the mapping (the upper\'s root is the mapped root\'s)');
    eq(owner('etc/hostname'), [100000, 200000], 'a root-owned file through the mapping');
    eq(owner('home/user/notes'), [101000, 201000], 'a user\'s file through the mapping');
    eq(fs.readFileSync(path.join(userns, 'home', 'user', 'notes'), 'utf8'), 'mine\n', 'content through the mapped overlay');
    umountAll(userns);
    await sn.remove('default/6/userns');
    expect(!top(mappedLower), 'Remove of the last snapshot on the mapping unmounted its idmapped bind');

    for (const k of ['default/5/v', 'default/4/c2', 'default/2/c1']) await sn.remove(k);
    await sn.cleanup();
    eq(underRoot().map((e) => `${e.mountPoint} ${e.fsType}`), [], 'mounts left under the snapshotter root after Remove + Cleanup');
  } finally {
    for (const e of underRoot().reverse()) sh('umount', ['-l', e.mountPoint]);
    for (const d of ['sn-l1', 'sn-ctr', 'sn-view', 'sn-userns']) if (top(path.join(T, d))) sh('umount', ['-l', path.join(T, d)]);
    sn.close();
  }
});

// ---- 5c. containerd driving the snapshotter on the module -------------------------------------
// containerd 1.6 (this host's, copied into the guest) with `cfs snapshotter` as its proxy plugin,
// started as test/snapshotter.test.mjs starts them: `ctr images import` of the example image
// unpacks through containerd's applier into our uppers, each layer compiled ahead and its new
// objects linked in from the upper at Commit; the module serves the committed blobs. A view of
// the image (a bind of the module's mount) equals `cfs extract` of the host-built blob of the
// same archive; every committed blob passes fsck; `ctr run` (runc) reads the image and writes
// into its rootfs, an overlay on the module's mount.
await check('snapshotter-containerd-kernel-backend', async () => {
  process.env.TMPDIR = T; // the env's directories on the work disk, not the guest's /tmp
  const { startEnv } = await import(`${ROOT}/test/lib/containerd-env.mjs`);
  const e = await startEnv({ containerdRoot: true, startTimeoutMs: 240_000 });
  const SN = ['--snapshotter', 'unionblob'];
  try {
    expect(/mount backend: using the unionblob kernel module/.test(e.log()), 'the snapshotter uses the module', e.log());
    await e.ctr(['images', 'import', ...SN, '--base-name', 'docker.io/unionblob/hello', path.join(ROOT, 'examples', 'hello-oci.tar')]);
    const commits = e.log().match(/: compiled ahead from sha256:.*/g) ?? [];
    eq(commits.length, 2, 'both layers compiled ahead');
    expect(commits.some((l) => /, [1-9]\d* objects linked /.test(l)), 'new objects linked in from the upper', commits.join('\n'));
    // the image's top chain: the committed snapshot that is nobody's parent
    const rows = (await e.ctr(['snapshots', ...SN, 'ls'])).split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((r) => r.length >= 2);
    const committed = rows.filter((r) => r.at(-1) === 'Committed').map((r) => r[0]);
    const parents = new Set(rows.map((r) => r[1]));
    const tops = committed.filter((k) => !parents.has(k));
    eq(tops.length, 1, `one top chain among ${JSON.stringify(rows)}`);
    await e.ctr(['snapshots', ...SN, 'view', 'hello-view', tops[0]]);
    const mounted = readMountinfo().filter((m) => m.mountPoint.startsWith(path.join(e.ubRoot, 'mounts') + '/'));
    eq(mounted.map((m) => m.fsType), ['unionblob'], 'the view\'s blob is mounted by the module');
    const want = await treeManifest(reference);
    const got = await treeManifest(mounted[0].mountPoint);
    eq(diffManifests(want, got, { labels: ['extract', 'containerd'], ignorePaths: (p) => p === '.' }), [], 'the image through containerd vs cfs extract');
    for (const id of fs.readdirSync(path.join(e.ubRoot, 'snapshots'))) {
      const blob = path.join(e.ubRoot, 'snapshots', id, 'blob');
      if (fs.existsSync(blob)) ok(cfs('fsck', blob, '--store', e.store), `fsck of snapshot ${id}`);
    }
    await e.ctr(['snapshots', ...SN, 'rm', 'hello-view']);
    // a container (runc through containerd's shim) on an overlay whose lower is the module's
    // mount; the image has no shell, so this guest's static busybox is bound in
    if (!readMountinfo().some((m) => m.mountPoint === '/sys/fs/cgroup')) ok(sh('mount', ['-t', 'cgroup2', 'cgroup2', '/sys/fs/cgroup']), 'mount cgroup2');
    const out = await e.ctr(['run', '--rm', '--fifo-dir', path.join(e.dir, 'fifo'), ...SN,
      '--mount', 'type=bind,src=/usr/local/bin/busybox,dst=/busybox,options=rbind:ro',
      'docker.io/unionblob/hello:latest', 'hello-ctr', '/busybox', 'sh', '-c',
      'cat /etc/hostname && echo written >/new && cat /new && /busybox grep " / " /proc/mounts'], { timeout: 300_000 });
    const lines = out.trim().split('\n');
    eq(lines.slice(0, 2), [fs.readFileSync(path.join(reference, 'etc', 'hostname'), 'utf8').trim(), 'written'], 'the container read the image and wrote into its rootfs');
    expect(/^overlay \/ overlay /.test(lines[2] ?? ''), `the container's root is an overlay: ${lines[2]}`, out);
    expect(/mounted snapshot \d+'s blob on \S+ \(kernel\)/.test(e.log()), 'the lower was the module\'s mount', e.log());
    await e.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/hello:latest']);
  } finally {
    await e.stop();
  }
  eq(readMountinfo().filter((m) => m.mountPoint.startsWith(e.dir)).map((m) => m.mountPoint), [], 'mounts left under the containerd env');
});

// ---- 6. nothing left ------------------------------------------------------------------------
await check('no-stray-mounts-or-state', () => {
  const stray = readMountinfo().filter((e) => e.mountPoint.startsWith(T) || e.mountPoint.startsWith(RUN) || /unionblob|^overlay$/.test(e.fsType));
  eq(stray.map((e) => `${e.mountPoint} ${e.fsType}`), [], 'mounts left');
  eq(states(), [], 'state files');
  eq(sha256(fs.readFileSync(BLOB)), blobHash, 'sha256 of the blob');
  eq(hashTree(STORE), storeHash, 'hash of the store tree');
});

await check('module-unload', () => {
  ok(sh('busybox', ['rmmod', 'unionblob']), 'rmmod unionblob (still in use?)');
});
say(`UBDIAG time ${uptime()} done`);
