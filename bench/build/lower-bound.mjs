// The lower bound of `cfs build` (issue #2 §6): read every layer of an image once, decompress
// it (gzip/zstd by magic, the same decompressors as the compiler), parse it with our tar reader
// (compiler/tar.ts) and hash every regular file's body once (fs-verity SHA-256).
// Nothing is written: no store, no tree, no blob. Whatever cfs build spends above this is tree
// building, blob encoding, layer digest checks and object store writes.
//
//   node bench/build/lower-bound.mjs IMAGE [--hasher fast|verity] [--layer-digest] [--objects DIR]
//
// IMAGE as for cfs build (PATH, PATH:TAG, PATH:REPO:TAG).
// --hasher verity (default): a format/verity.ts VerityHasher per file, fed the body's chunks.
// --hasher fast: bodies up to 8 MiB read whole and hashed with the compiler's hashBuffer
//   (compiler/store.ts: the addon's fs-verity over node's OpenSSL where it loads, else
//   node:crypto one block at a time), bigger ones streamed through a VerityHasher. This is how cfs build hashes, so it is the
//   tighter bound: VerityHasher's per-file buffers cost more than the hashing on small files.
// --layer-digest also checks each layer's digest (cfs build always does; off by default so the
//   bound stays "decompress + hash the files").
// --objects DIR also writes every distinct file body over 64 bytes (the default inline threshold)
//   as an object file DIR/objects/XX/<62 hex>, the way the store does (open O_EXCL a temp name in
//   objects/, write, close, rename), on the same thread, then one `sync -f`: what the kernel's
//   file creation adds to the bound, measured apart from everything else cfs build does.
// Prints one JSON line: {seconds, layers, entries, files, fileBytes}. Needs dist/.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = (p) => import(path.join(ROOT, 'dist', p));
const { loadImage } = await dist('compiler/image.js');
const { LayerReading, layerTar } = await dist('compiler/layerio.js');
const { TarReader } = await dist('compiler/tar.js');
const { VerityHasher } = await dist('format/verity.js');
const { hashBuffer, MEMORY_OBJECT_LIMIT } = await dist('compiler/store.js');

const image = process.argv[2];
if (!image) {
  console.error('usage: node bench/build/lower-bound.mjs IMAGE [--hasher fast|verity] [--layer-digest]');
  process.exit(2);
}
const layerDigest = process.argv.includes('--layer-digest');
const hi = process.argv.indexOf('--hasher');
const hasher = hi > 0 ? process.argv[hi + 1] : 'verity';
if (hasher !== 'fast' && hasher !== 'verity') throw new Error(`--hasher fast|verity, not ${hasher}`);
const fast = hasher === 'fast';
const oi = process.argv.indexOf('--objects');
const objectsDir = oi > 0 ? path.join(process.argv[oi + 1], 'objects') : null;
const INLINE = 64;
const written = new Set();
let objects = 0;
let tempN = 0;

/** A temp file in objects/ that becomes DIR/objects/XX/YYYY... by rename, as in the store. */
function objectFile() {
  const tmp = `${objectsDir}/.tmp-${process.pid}-${tempN++}`;
  return { tmp, fd: fs.openSync(tmp, 'wx', 0o444) };
}

function writeAll(fd, buf) {
  for (let done = 0; done < buf.length; ) done += fs.writeSync(fd, buf, done, buf.length - done);
}

/** Name the temp file by its digest, or drop it if that object exists already. */
function nameObject(f, digest) {
  fs.closeSync(f.fd);
  const hex = digest.toString('hex');
  if (written.has(hex)) {
    fs.unlinkSync(f.tmp);
    return;
  }
  written.add(hex);
  fs.mkdirSync(`${objectsDir}/${hex.slice(0, 2)}`, { recursive: true });
  fs.renameSync(f.tmp, `${objectsDir}/${hex.slice(0, 2)}/${hex.slice(2)}`);
  objects++;
}

if (objectsDir) fs.mkdirSync(objectsDir, { recursive: true });

const t0 = performance.now();
const img = loadImage(image);
let entries = 0;
let files = 0;
let fileBytes = 0;
let sink = 0; // keeps the digests observable
try {
  for (const layer of img.layers) {
    const reading = new LayerReading(layerDigest ? layer.check : null);
    const reader = new TarReader(layerTar(layer.open(), reading));
    for (let e; (e = await reader.next()); ) {
      entries++;
      if (e.type !== 'file' || e.size === 0) continue;
      const object = objectsDir && e.size > INLINE;
      if (fast && e.size <= MEMORY_OBJECT_LIMIT) {
        const body = await reader.readBody();
        const digest = hashBuffer(body);
        sink ^= digest[0];
        // Written before the duplicate check, like a new object: the check is in memory anyway.
        if (object && !written.has(digest.toString('hex'))) {
          const f = objectFile();
          writeAll(f.fd, body);
          nameObject(f, digest);
        }
      } else {
        const h = new VerityHasher();
        const f = object ? objectFile() : null;
        for await (const c of reader.bodyChunks()) {
          h.update(c);
          if (f) writeAll(f.fd, c);
        }
        const digest = h.digest();
        sink ^= digest[0];
        if (f) nameObject(f, digest);
      }
      files++;
      fileBytes += e.size;
    }
    reading.verify();
  }
} finally {
  img.close();
}
if (objectsDir) spawnSync('sync', ['-f', objectsDir]);
const seconds = (performance.now() - t0) / 1000;
process.stdout.write(JSON.stringify({ seconds: Math.round(seconds * 1000) / 1000, hasher, layers: img.layers.length, entries, files, fileBytes, objects, sink }) + '\n');
