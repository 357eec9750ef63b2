// node cmp.mjs ARCHIVE=REF ... [--transfer]: import each docker/oci archive with both snapshotters, run, diff the views.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEnv, fetchContainerd17 } from '../../lib/containerd-env.mjs';
import { treeManifest, diffManifests } from '../../lib/treeman.mjs';
const T = process.argv.includes('--transfer');
const pairs = process.argv.slice(2).filter((a) => !a.startsWith('--')).map((a) => a.split('='));
const e = await startEnv(T ? { bin: path.join(fetchContainerd17(), 'usr', 'bin'), transfer: true } : {});
fs.chmodSync(e.dir, 0o755);
let n = 0;
try {
  for (const [archive, ref] of pairs) {
    const views = {};
    for (const sn of ['overlayfs', 'unionblob']) {
      const id = `c${n++}`;
      try {
        await e.ctr(['images', 'import', ...(T ? ['--local=false'] : []), '--snapshotter', sn, archive]);
        await e.ctr(['run', '-d', '--fifo-dir', path.join(e.dir, 'fifo'), '--snapshotter', sn, ref, id, '/bin/sleep', '600']);
        const rootfs = path.join(e.dir, 'state', 'io.containerd.runtime.v2.task', 'default', id, 'rootfs');
        for (let i = 0; i < 100 && !fs.existsSync(path.join(rootfs, 'bin')); i++) await sleep(100);
        views[sn] = await treeManifest(rootfs);
        await e.ctr(['task', 'kill', '-s', 'SIGKILL', id]).catch(() => {});
        await sleep(300);
        await e.ctr(['task', 'rm', '-f', id]).catch(() => {});
        await e.ctr(['containers', 'rm', id]).catch(() => {});
      } catch (err) {
        views[sn] = 'FAILED: ' + String(err.stderr || err.message).trim().split('\n').pop().slice(0, 400);
      }
    }
    await e.ctr(['images', 'rm', ref]).catch(() => {});
    if (typeof views.overlayfs === 'string' || typeof views.unionblob === 'string') {
      console.log(`${archive}: overlayfs: ${typeof views.overlayfs === 'string' ? views.overlayfs : 'ok'} | unionblob: ${typeof views.unionblob === 'string' ? views.unionblob : 'ok'}`);
      continue;
    }
    const d = diffManifests(views.overlayfs, views.unionblob, { labels: ['overlayfs', 'unionblob'], ignorePaths: (p) => /^(dev|proc|sys)\//.test(p) })
      .filter((l) => !/^(\.|dev|proc|sys|etc|r): mtime/.test(l));
    console.log(`${archive}: ${d.length} differences`);
    const bundle = path.join(path.dirname(archive), 'bundle', 'rootfs');
    if (fs.existsSync(bundle)) {
      const du = diffManifests(await treeManifest(bundle), views.unionblob, { labels: ['umoci', 'unionblob'], ignorePaths: (p) => /^(dev|proc|sys)\//.test(p) })
        .filter((l) => !/^(\.|dev|proc|sys|etc|r|run): mtime/.test(l) && !/^(run|\.): /.test(l));
      console.log(`   vs umoci: ${du.length} differences`);
      for (const l of du.slice(0, 10)) console.log('   U', l.slice(0, 300));
    }
    for (const l of d.slice(0, 20)) console.log('  ', l.slice(0, 300));
  }
  console.log(e.log().split('\n').filter((l) => /fails?|refused|error/i.test(l)).slice(-10).join('\n'));
} finally {
  await e.stop();
}
