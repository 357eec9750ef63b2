// The kernel backend end to end, from userspace (issue #4): boots Debian's kernel under qemu (TCG)
// with unionblob.ko, a bookworm userland, node and this checkout (test/kernel/userspace.sh), and
// turns every guest check (test/kernel/userspace-guest.mjs) into one AVA test "<kernel> <check>":
// `cfs mount --backend kernel` of a host-built blob (tree = `cfs extract`), `--backend auto`,
// digest= and the module's fsconfig messages in cfs's one-line error, fs-verity stores with
// verity=require, the writable upper (create, write, chmod, delete, whiteout, rename, remount:
// changes persist, blob and store untouched), `cfs install-helper` + `mount -t unionblob` +
// /etc/fstab (`mount TARGET`), `cfs umount` leaving nothing mounted, the snapshotter on the module
// (a committed layer, a container's overlay and its Commit, a view, a container in its own user
// namespace through an idmapped bind; test/snapshotter.test.mjs only sees FUSE on this host), and
// the fs-verity tests of test/addon.test.mjs (this host's kernel has no CONFIG_FS_VERITY).
//
// Env: UB_KERNELS="6.1 6.12" (which kernels; default 6.12: ~1.5-2 min each under TCG), UB_SKIP_KERNEL=1 (skip),
//      UB_CACHE (cache, default /var/cache/unionblob-test), UB_QEMU_TIMEOUT (s per boot, 420).
// The guest runs before the tests are declared (top-level await), like test/kernel.test.mjs.

import test from 'ava';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { runHarness as runHarnessScript, parseHarnessOutput as parse } from './lib/harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const runner = join(here, 'kernel', 'userspace.sh');
const flavours = (process.env.UB_KERNELS ?? '6.12').split(/\s+/).filter(Boolean);

const runHarness = (flavour) => runHarnessScript(runner, flavour, 420);

// The checks the guest must report; a missing one fails (e.g. the guest script died early).
const EXPECTED = [
  'addon-ava-run', 'module-load', 'cfs-extract-reference', 'ro-mount-kernel-tree-equals-extract',
  'long-paths-kernel-mount', 'blob-write-denied-while-mounted', 'auto-backend-picks-kernel-with-right-digest', 'uidmap-kernel-idmapped-bind', 'nosymfollow-kernel-mount', 'digest-wrong-module-message-one-line',
  'fsconfig-messages-reach-the-caller', 'verity-require-store-with-fs-verity',
  'upper-mount-overlay-on-kernel-lower', 'upper-create-write-chmod-delete-rename',
  'upper-umount-releases-overlay-and-lower', 'upper-remount-changes-persist',
  'upper-blob-and-store-untouched', 'install-helper', 'mount-t-unionblob-kernel',
  'mount-t-unionblob-module-message', 'fstab-mount-target', 'snapshotter-kernel-backend', 'no-stray-mounts-or-state',
  'module-unload', 'dmesg-clean',
];
// The addon tests that this host skips (no CONFIG_FS_VERITY): they must pass in the guest.
const ADDON_VERITY = [/^addon:fs-verity-on-ext4/, /^addon:fs-verity-a-real-failure/, /^addon:cfs-build---verity-objects-get-fs-verity/];

const runs = [];
if (!process.env.UB_SKIP_KERNEL) {
  for (const flavour of flavours) {
    const started = Date.now();
    const { code, out, err } = await runHarness(flavour);
    runs.push({ flavour, code, out, err, r: parse(out), seconds: Math.round((Date.now() - started) / 1000) });
  }
}

if (process.env.UB_SKIP_KERNEL) test.skip('kernel backend in a qemu guest (UB_SKIP_KERNEL set)', () => {});
for (const { flavour, code, out, err, r, seconds } of runs) {
  const tail = `exit ${code}; stderr tail:\n${err.split('\n').slice(-30).join('\n')}\nstdout tail:\n${out.split('\n').slice(-40).join('\n')}`;
  test(`${flavour} userspace guest booted and ran to the end (${r.release || 'no release'}, ${seconds} s)`, (t) => {
    t.true(r.ended && r.checks.length > 0, tail);
  });
  test(`${flavour} every expected guest check reported`, (t) => {
    const names = new Set(r.checks.map((c) => c.name));
    t.deepEqual(EXPECTED.filter((n) => !names.has(n)), [], tail);
    t.deepEqual(ADDON_VERITY.filter((re) => !r.checks.some((c) => re.test(c.name))).map(String), [],
      'the fs-verity tests of test/addon.test.mjs did not run in the guest');
  });
  for (const c of r.checks) {
    test(`${flavour} ${c.name}`, (t) => {
      if (c.ok) t.pass();
      else t.fail([c.reason, ...c.diag].filter(Boolean).join('\n'));
    });
  }
}
