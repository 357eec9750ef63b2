// fs-verity file digest with SHA-256, 4096-byte Merkle blocks and no salt: the value
// `fsverity digest FILE` prints and composefs names objects by.
//
// Merkle tree: level 0 is the SHA-256 of every 4096-byte data block (the last one zero-padded);
// each next level packs the previous level's hashes into 4096-byte blocks (128 hashes each,
// the last block zero-padded) and hashes those, until a level has a single hash: the root.
// A file of one block has the hash of that block as root; an empty file has an all-zero root.
// The digest is SHA-256 over the 256-byte fsverity_descriptor:
//   u8 version=1, u8 hash_algorithm=1 (SHA-256), u8 log_blocksize=12, u8 salt_size=0,
//   le32 reserved, le64 data_size, u8 root_hash[64], u8 salt[32], u8 reserved[144].

import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

const BLOCK = 4096;
const HASH = 32;
const DESCRIPTOR_SIZE = 256;

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

/**
 * Streaming fs-verity digest. Feed any chunk sizes with update(); digest() finishes (once).
 * Memory: the level-0 hashes only (size / 128 bytes); the upper levels are computed at the end.
 */
export class VerityHasher {
  /** Partial data block waiting for more bytes. */
  private readonly pending = Buffer.alloc(BLOCK);
  private pendingLength = 0;
  /** Level-0 hashes, packed; grows by doubling. */
  private level0 = Buffer.alloc(HASH * 64);
  private level0Length = 0;
  private totalSize = 0;
  private finished = false;

  update(chunk: Uint8Array): void {
    if (this.finished) throw new Error('VerityHasher: update() after digest()');
    this.totalSize += chunk.length;
    let pos = 0;
    if (this.pendingLength > 0) {
      const take = Math.min(BLOCK - this.pendingLength, chunk.length);
      this.pending.set(chunk.subarray(0, take), this.pendingLength);
      this.pendingLength += take;
      pos = take;
      if (this.pendingLength < BLOCK) return;
      this.addLevel0(this.pending);
      this.pendingLength = 0;
    }
    // Whole blocks straight from the caller's chunk: no copy, only a view per block.
    while (chunk.length - pos >= BLOCK) {
      this.addLevel0(chunk.subarray(pos, pos + BLOCK));
      pos += BLOCK;
    }
    if (pos < chunk.length) {
      this.pending.set(chunk.subarray(pos), 0);
      this.pendingLength = chunk.length - pos;
    }
  }

  /** The 32-byte fs-verity digest of everything passed to update(). */
  digest(): Buffer {
    if (this.finished) throw new Error('VerityHasher: digest() called twice');
    this.finished = true;
    if (this.pendingLength > 0) {
      this.pending.fill(0, this.pendingLength);
      this.addLevel0(this.pending);
      this.pendingLength = 0;
    }
    const root = Buffer.alloc(HASH);
    if (this.totalSize > 0) merkleRoot(this.level0.subarray(0, this.level0Length)).copy(root);
    return sha256(descriptor(this.totalSize, root));
  }

  private addLevel0(block: Uint8Array): void {
    if (this.level0Length + HASH > this.level0.length) {
      const bigger = Buffer.alloc(this.level0.length * 2);
      this.level0.copy(bigger, 0, 0, this.level0Length);
      this.level0 = bigger;
    }
    createHash('sha256').update(block).digest().copy(this.level0, this.level0Length);
    this.level0Length += HASH;
  }
}

/** Reduce packed hashes level by level until one remains. */
function merkleRoot(hashes: Buffer): Buffer {
  let level = hashes;
  const block = Buffer.alloc(BLOCK);
  while (level.length > HASH) {
    const blocks = Math.ceil(level.length / BLOCK);
    const next = Buffer.alloc(blocks * HASH);
    for (let b = 0; b < blocks; b++) {
      const part = level.subarray(b * BLOCK, Math.min(level.length, (b + 1) * BLOCK));
      let input: Buffer = part;
      if (part.length < BLOCK) {
        block.fill(0);
        part.copy(block);
        input = block;
      }
      sha256(input).copy(next, b * HASH);
    }
    level = next;
  }
  return level;
}

function descriptor(dataSize: number, rootHash: Buffer): Buffer {
  const d = Buffer.alloc(DESCRIPTOR_SIZE);
  d[0] = 1; // version
  d[1] = 1; // FS_VERITY_HASH_ALG_SHA256
  d[2] = 12; // log2(4096)
  d[3] = 0; // salt size
  d.writeBigUInt64LE(BigInt(dataSize), 8);
  rootHash.copy(d, 16);
  return d;
}

/** fs-verity digest of an in-memory buffer. */
export function verityDigest(data: Uint8Array): Buffer {
  const h = new VerityHasher();
  h.update(data);
  return h.digest();
}

/** fs-verity digest of a file, read in 1 MiB chunks. */
export async function verityDigestOfFile(path: string): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const h = new VerityHasher();
    // The hasher copies what it keeps, so one read buffer is reused for the whole file.
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const { bytesRead } = await file.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return h.digest();
  } finally {
    await file.close();
  }
}
