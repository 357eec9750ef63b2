// What a Commit's metadata costs as the parent image grows (issue #5: "cost proportional to
// the diff, not to the image"). For parents of N inodes (synthetic: 20 x 50-file directories per
// top-level directory, every file a distinct object), the same small layer (a new file, a
// replaced file, a whiteout, a new directory with an inline file) is applied to
//   - incremental: openLazyTree(parent blob) + encodeBlob (what the snapshotter does), and
//   - whole: decodeTree(parent blob) + encodeBlob (what it did before),
// each run in a child process of its own (a fresh heap: a 1M-inode decoded tree leaves ~1 GB of
// garbage whose collection would otherwise land in whichever run comes next), alternating, the
// parent blob already read into memory; the two outputs are checked byte-identical (sha256).
// Prints the medians and the ratio.
// Run: `npx tsc -p tsconfig.json && node bench/containerd/commit-scale.mjs [N...]`.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { encodeBlob } from '../../dist/format/encode.js';
import { decodeTree, openBlob, sourceFromBuffer } from '../../dist/format/decode.js';
import { openLazyTree } from '../../dist/format/lazy.js';
import { useCrc32c } from '../../dist/format/crc32c.js';
import { nativeCrc32c } from '../../dist/mounter/addon.js';

const REPS = 3;

const dir = () => ({ mode: 0o40755, uid: 0, gid: 0, mtimeSec: 1e9, mtimeNsec: 0, xattrs: new Map(), size: 0, children: new Map() });
const file = (size, digest) => ({ mode: 0o100644, uid: 0, gid: 0, mtimeSec: 1e9, mtimeNsec: 5, xattrs: new Map(), size, digest });

function parentBlob(n) {
  const root = dir();
  const rnd = crypto.randomBytes(32 * n);
  for (let made = 0, d = 0; made < n; d++) {
    const top = dir();
    root.children.set(`d${d}`, top);
    for (let j = 0; j < 20 && made < n; j++) {
      const sub = dir();
      top.children.set(`sub${j}`, sub);
      for (let k = 0; k < 50 && made < n; k++, made++) sub.children.set(`file-${k}.txt`, file(100 + (made % 5000), rnd.subarray(32 * made, 32 * made + 32)));
    }
  }
  return encodeBlob(root);
}

/** The layer: the same edits on either kind of tree. */
function applyLayer(root) {
  const sub = root.children.get('d0').children.get('sub2');
  sub.children.set('new-file', file(9999, Buffer.alloc(32, 0x5a)));
  sub.children.set('file-7.txt', file(1234, Buffer.alloc(32, 0xa5)));
  sub.children.delete('file-3.txt');
  const etc = dir();
  etc.children.set('hostname', { ...file(4), digest: undefined, inline: Buffer.from('host') });
  root.children.set('etc', etc);
}

// Child: `--run lazy|whole FILE` prints "MS SHA256".
const at = process.argv.indexOf('--run');
if (at > 0) {
  const [how, blobFile] = process.argv.slice(at + 1);
  useCrc32c(nativeCrc32c()); // as the cfs CLI (and so the snapshotter) does where the addon is built
  const parent = fs.readFileSync(blobFile);
  const t = performance.now();
  const root = how === 'lazy' ? openLazyTree(parent) : decodeTree(openBlob(sourceFromBuffer(parent)));
  applyLayer(root);
  const out = encodeBlob(root);
  const ms = performance.now() - t;
  console.log(`${ms.toFixed(1)} ${crypto.createHash('sha256').update(out).digest('hex')}`);
  process.exit(0);
}

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
if (sizes.length === 0) sizes.push(10_000, 100_000, 1_000_000);
const self = fileURLToPath(import.meta.url);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'commit-scale-'));
const run = (how, blobFile) => {
  const [ms, sha] = execFileSync(process.execPath, [self, '--run', how, blobFile], { encoding: 'utf8', maxBuffer: 1 << 20 }).trim().split(' ');
  return { ms: Number(ms), sha };
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  console.log('| parent inodes | blob MiB | incremental (lazy tree + encode) | whole (decode + encode) | whole / incremental |');
  console.log('|---|---|---|---|---|');
  for (const n of sizes) {
    const parent = parentBlob(n);
    const blobFile = path.join(work, `parent-${n}.ub`);
    fs.writeFileSync(blobFile, parent);
    const lazy = [];
    const whole = [];
    for (let r = 0; r < REPS; r++) {
      const a = run('lazy', blobFile);
      const b = run('whole', blobFile);
      if (a.sha !== b.sha) throw new Error(`N=${n}: the incremental blob differs from the whole re-encode`);
      lazy.push(a.ms);
      whole.push(b.ms);
    }
    const l = median(lazy);
    const w = median(whole);
    console.log(`| ${n.toLocaleString('en')} | ${(parent.length / 2 ** 20).toFixed(1)} | ${(l / 1000).toFixed(3)} s | ${(w / 1000).toFixed(3)} s | x${(w / l).toFixed(1)} |`);
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
