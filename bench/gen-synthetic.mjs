// Synthetic image generator for benchmarks: `node bench/gen-synthetic.mjs N OUTDIR [--big BYTES]`
// writes an OCI layout directory (one uncompressed layer, tag `latest`) holding N small files
// spread over directories of 1,000 entries. Sizes follow a fixed, seeded distribution that
// resembles a distribution image: 30% of files are 0..64 bytes (inlined in the blob), most of the
// rest 65 bytes..16 KiB, and 15% repeat the content of an earlier file (stored once).
// `--big BYTES` adds one file of that size (for sequential-read benchmarks).
// `--lean` (the scale series, up to 10^7 files): every file holds only its decimal index
// (1-8 bytes, unique, inlined in the blob), so the tar costs 1 KiB per file and no objects.
// The output is deterministic: the same N gives the same bytes.
import { createHash } from 'node:crypto';
import { mkdirSync, openSync, writeSync, closeSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ustarHeader } from '../test/lib/ustar.mjs';

const n = Number(process.argv[2]);
const outDir = process.argv[3];
const bigIdx = process.argv.indexOf('--big');
const bigBytes = bigIdx > 0 ? Number(process.argv[bigIdx + 1]) : 0;
const lean = process.argv.includes('--lean');
if (!Number.isInteger(n) || n < 1 || !outDir) {
  console.error('usage: node bench/gen-synthetic.mjs N OUTDIR [--big BYTES] [--lean]');
  process.exit(2);
}

// xorshift32: a tiny seeded PRNG so the image is reproducible.
let seed = 0x9e3779b9;
function rand() {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 0x100000000;
}

function tarHeader(name, size, mode, type) {
  return ustarHeader({ name, size, mode, typeflag: type, mtime: 1704067200 });
}

const blobsDir = join(outDir, 'blobs', 'sha256');
mkdirSync(blobsDir, { recursive: true });
const tmpLayer = join(blobsDir, 'layer.tmp');
const fd = openSync(tmpLayer, 'w');
const hash = createHash('sha256');
let pending = [];
let pendingBytes = 0;
function emit(buf) {
  hash.update(buf);
  pending.push(buf);
  pendingBytes += buf.length;
  if (pendingBytes > 8 << 20) flush();
}
function flush() {
  if (pending.length) writeSync(fd, Buffer.concat(pending));
  pending = []; pendingBytes = 0;
}
function pad(size) {
  const rem = size % 512;
  if (rem) emit(Buffer.alloc(512 - rem));
}

const pool = Buffer.alloc(16 << 20);
for (let j = 0; j + 4 <= pool.length; j += 4) pool.writeUInt32LE((rand() * 0x100000000) >>> 0, j);
const contents = [];
const perDir = 1000;
emit(tarHeader('data/', 0, 0o755, '5'));
for (let i = 0; i < n; i++) {
  if (i % perDir === 0) emit(tarHeader(`data/d${(i / perDir) | 0}/`, 0, 0o755, '5'));
  let body;
  const r = lean ? 1 : rand();
  if (lean) {
    body = Buffer.from(String(i));
  } else if (contents.length > 0 && r < 0.15) {
    body = contents[(rand() * contents.length) | 0];
  } else {
    const size = r < 0.45 ? ((rand() * 65) | 0) : 65 + ((rand() * rand() * 16320) | 0);
    // A slice of a fixed random pool, made unique by the file's index in its first bytes.
    const start = (rand() * (pool.length - size)) | 0;
    body = Buffer.from(pool.subarray(start, start + size));
    if (size >= 8) body.writeUInt32LE(i, 0);
    if (contents.length < 50000) contents.push(body);
  }
  emit(tarHeader(`data/d${(i / perDir) | 0}/f${i}`, body.length, 0o644, '0'));
  if (body.length) { emit(body); pad(body.length); }
}
if (bigBytes > 0) {
  emit(tarHeader('data/big', bigBytes, 0o644, '0'));
  const chunk = Buffer.alloc(1 << 20);
  for (let off = 0; off < bigBytes; off += chunk.length) {
    for (let j = 0; j + 4 <= chunk.length; j += 4) chunk.writeUInt32LE((rand() * 0x100000000) >>> 0, j);
    emit(off + chunk.length <= bigBytes ? Buffer.from(chunk) : chunk.subarray(0, bigBytes - off));
  }
  pad(bigBytes);
}
emit(Buffer.alloc(1024));
flush();
closeSync(fd);
const layerDigest = hash.digest('hex');
renameSync(tmpLayer, join(blobsDir, layerDigest));
const { size: layerSize } = await import('node:fs').then((fs) => fs.statSync(join(blobsDir, layerDigest)));

function putBlob(obj) {
  const buf = Buffer.from(JSON.stringify(obj));
  const d = createHash('sha256').update(buf).digest('hex');
  writeFileSync(join(blobsDir, d), buf);
  return { digest: `sha256:${d}`, size: buf.length };
}
const config = putBlob({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] }, config: {} });
const manifest = putBlob({
  schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layerSize }],
});
writeFileSync(join(outDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
writeFileSync(join(outDir, 'index.json'), JSON.stringify({
  schemaVersion: 2,
  manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
}));
console.log(JSON.stringify({ files: n, layerBytes: layerSize, out: outDir }));
