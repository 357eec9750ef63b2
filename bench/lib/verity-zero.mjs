// fs-verity digests of mostly-zero files without reading them: for the >2 TB sparse objects
// of bench/scale. Same definition as format/verity.ts (SHA-256, 4096-byte blocks, no salt),
// but each Merkle level is kept run-length encoded: a run of identical hashes packs into
// identical blocks, so a level costs O(number of runs), and an all-zero file of any size costs
// O(log size) hashes instead of size / 4096.
import { createHash } from 'node:crypto';

const BLOCK = 4096;
const HASH = 32;
const PER_BLOCK = BLOCK / HASH;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

const sha256 = (b) => createHash('sha256').update(b).digest();

/** Append `count` copies of `hash` to a run-length list [{hash, count}]. */
function pushRun(runs, hash, count) {
  if (count <= 0) return;
  const last = runs[runs.length - 1];
  if (last && last.hash.equals(hash)) last.count += count;
  else runs.push({ hash, count });
}

/** The hash of a block holding `entries` (hashes, in order), zero-padded. */
function hashBlockOf(entries) {
  const b = Buffer.alloc(BLOCK);
  entries.forEach((h, i) => h.copy(b, i * HASH));
  return sha256(b);
}

/** One Merkle level up: runs of hashes -> runs of the hashes of their 4096-byte blocks. */
function nextLevel(runs) {
  const out = [];
  const full = new Map(); // hex of a hash -> hash of a block of 128 copies of it
  let partial = []; // entries of the block being filled when it straddles runs
  for (const { hash, count } of runs) {
    let left = count;
    while (left > 0 && partial.length > 0) {
      partial.push(hash);
      left--;
      if (partial.length === PER_BLOCK) { pushRun(out, hashBlockOf(partial), 1); partial = []; }
    }
    const whole = Math.floor(left / PER_BLOCK);
    if (whole > 0) {
      const key = hash.toString('hex');
      if (!full.has(key)) full.set(key, hashBlockOf(new Array(PER_BLOCK).fill(hash)));
      pushRun(out, full.get(key), whole);
    }
    for (let i = 0; i < left - whole * PER_BLOCK; i++) partial.push(hash);
  }
  if (partial.length) pushRun(out, hashBlockOf(partial), 1);
  return out;
}

function descriptorDigest(size, root) {
  const d = Buffer.alloc(256);
  d[0] = 1; d[1] = 1; d[2] = 12; d[3] = 0;
  d.writeBigUInt64LE(BigInt(size), 8);
  root.copy(d, 16);
  return sha256(d);
}

/**
 * fs-verity digest of a file of `size` bytes that is all zeros except `chunks`:
 * [{offset, data}], offsets multiples of 4096, sorted, not overlapping, inside the file.
 */
export function sparseVerityDigest(size, chunks = []) {
  if (size === 0) return descriptorDigest(0, Buffer.alloc(HASH));
  const zeroHash = sha256(ZERO_BLOCK);
  const blocks = Math.ceil(size / BLOCK);
  let runs = [];
  let at = 0; // next block index
  for (const { offset, data } of chunks) {
    if (offset % BLOCK || offset < at * BLOCK || offset + data.length > size) {
      throw new Error(`sparseVerityDigest: chunk at ${offset} is not 4096-aligned, sorted and inside the file`);
    }
    pushRun(runs, zeroHash, offset / BLOCK - at);
    for (let o = 0; o < data.length; o += BLOCK) {
      const b = Buffer.alloc(BLOCK);
      data.copy(b, 0, o, Math.min(data.length, o + BLOCK));
      pushRun(runs, sha256(b), 1);
    }
    at = offset / BLOCK + Math.ceil(data.length / BLOCK);
  }
  pushRun(runs, zeroHash, blocks - at);
  while (runs.length > 1 || runs[0].count > 1) runs = nextLevel(runs);
  return descriptorDigest(size, runs[0].hash);
}
