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
const HASH_PER_BLOCK = BLOCK / HASH;

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

/** One Merkle level while it is built: the block being filled with hashes, and how many it has had. */
interface Level {
  block: Buffer;
  /** Hashes in `block` now (0..127). */
  fill: number;
  /** Hashes this level has had in all. */
  count: number;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK);
let zeroBlockHash: Buffer | null = null;

/**
 * SHA-256 of each whole 4096-byte block of `data` into `out` (32 bytes per block), returning the
 * number of blocks: what a native hasher (the addon's) gives VerityHasher for the first level.
 */
export type BlockHasher = (data: Uint8Array, out: Uint8Array) => number;

/** Blocks handed to a BlockHasher per call: 1 MiB of data, 8 KiB of hashes. */
const BLOCKS_PER_CALL = 256;

/**
 * Streaming fs-verity digest. Feed any chunk sizes with update(), runs of zero bytes (the holes
 * of a sparse file) with updateZeros(); digest() finishes (once).
 *
 * Every level of the tree is built as the data arrives: a level keeps only the block it is
 * filling, so memory is O(log size). A run of identical hashes that fills whole blocks gives a
 * run of identical hashes one level up, computed once: a hole of any size costs O(log size)
 * hashes, not size / 4096 (a hostile layer can declare a sparse file of petabytes in a few bytes).
 */
export class VerityHasher {
  /** Partial data block waiting for more bytes. */
  private readonly pending = Buffer.alloc(BLOCK);
  private pendingLength = 0;
  private readonly levels: Level[] = [];
  /** Hash of a block of 128 copies of a hash (hex of that hash -> it): holes repeat a few. */
  private readonly runBlockHashes = new Map<string, Buffer>();
  private totalSize = 0;
  private finished = false;
  /** First-level hashes of a BlockHasher call. */
  private readonly leafHashes: Buffer | null;

  /**
   * `hashBlocks`: hash the first level natively (one call per MiB instead of one node:crypto
   * call per 4 KiB block, which costs as much as the hashing); the digest is the same.
   */
  constructor(private readonly hashBlocks: BlockHasher | null = null) {
    this.leafHashes = hashBlocks ? Buffer.allocUnsafe(BLOCKS_PER_CALL * HASH) : null;
  }

  update(chunk: Uint8Array): void {
    this.checkOpen();
    this.totalSize += chunk.length;
    let pos = 0;
    if (this.pendingLength > 0) {
      const take = Math.min(BLOCK - this.pendingLength, chunk.length);
      this.pending.set(chunk.subarray(0, take), this.pendingLength);
      this.pendingLength += take;
      pos = take;
      if (this.pendingLength < BLOCK) return;
      this.addHash(0, sha256(this.pending));
      this.pendingLength = 0;
    }
    // Whole blocks straight from the caller's chunk: no copy, only a view per block.
    if (this.hashBlocks) pos = this.updateBlocks(chunk, pos);
    while (chunk.length - pos >= BLOCK) {
      this.addHash(0, sha256(chunk.subarray(pos, pos + BLOCK)));
      pos += BLOCK;
    }
    if (pos < chunk.length) {
      this.pending.set(chunk.subarray(pos), 0);
      this.pendingLength = chunk.length - pos;
    }
  }

  /** update()'s whole blocks from `pos` on through the BlockHasher; returns where they end. */
  private updateBlocks(chunk: Uint8Array, pos: number): number {
    const out = this.leafHashes!;
    while (chunk.length - pos >= BLOCK) {
      const blocks = Math.min(BLOCKS_PER_CALL, Math.floor((chunk.length - pos) / BLOCK));
      const n = this.hashBlocks!(chunk.subarray(pos, pos + blocks * BLOCK), out);
      if (n !== blocks) throw new Error(`VerityHasher: the block hasher hashed ${n} of ${blocks} blocks`);
      this.addLeafHashes(out, blocks);
      pos += blocks * BLOCK;
    }
    return pos;
  }

  /** `count` consecutive first-level hashes from `hashes`, copied a level block's room at a time. */
  private addLeafHashes(hashes: Buffer, count: number): void {
    const level = this.level(0);
    for (let k = 0; k < count; ) {
      const take = Math.min(HASH_PER_BLOCK - level.fill, count - k);
      hashes.copy(level.block, level.fill * HASH, k * HASH, (k + take) * HASH);
      level.fill += take;
      level.count += take;
      k += take;
      if (level.fill === HASH_PER_BLOCK) {
        level.fill = 0;
        this.addHash(1, sha256(level.block));
      }
    }
  }

  /** The same as update() with `n` zero bytes, without hashing each of their blocks. */
  updateZeros(n: number): void {
    this.checkOpen();
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`VerityHasher: bad zero run length ${n}`);
    this.totalSize += n;
    if (this.pendingLength > 0) {
      const take = Math.min(BLOCK - this.pendingLength, n);
      this.pending.fill(0, this.pendingLength, this.pendingLength + take);
      this.pendingLength += take;
      n -= take;
      if (this.pendingLength < BLOCK) return;
      this.addHash(0, sha256(this.pending));
      this.pendingLength = 0;
    }
    zeroBlockHash ??= sha256(ZERO_BLOCK);
    this.addRun(0, zeroBlockHash, Math.floor(n / BLOCK));
    const rest = n % BLOCK;
    if (rest > 0) {
      this.pending.fill(0, 0, rest);
      this.pendingLength = rest;
    }
  }

  /** The 32-byte fs-verity digest of everything passed to update() and updateZeros(). */
  digest(): Buffer {
    this.checkOpen();
    this.finished = true;
    if (this.pendingLength > 0) {
      this.pending.fill(0, this.pendingLength);
      this.addHash(0, sha256(this.pending));
      this.pendingLength = 0;
    }
    const root = Buffer.alloc(HASH);
    if (this.totalSize > 0) this.root().copy(root);
    return sha256(descriptor(this.totalSize, root));
  }

  private checkOpen(): void {
    if (this.finished) throw new Error('VerityHasher: used after digest()');
  }

  /** Close every level's last block (zero-padded) into the next, up to the level of one hash. */
  private root(): Buffer {
    for (let i = 0; ; i++) {
      const level = this.levels[i];
      if (level.count === 1) return level.block.subarray(0, HASH);
      if (level.fill > 0) {
        level.block.fill(0, level.fill * HASH);
        this.addHash(i + 1, sha256(level.block));
        level.fill = 0;
      }
    }
  }

  private level(i: number): Level {
    return (this.levels[i] ??= { block: Buffer.alloc(BLOCK), fill: 0, count: 0 });
  }

  private addHash(i: number, hash: Buffer): void {
    const level = this.level(i);
    hash.copy(level.block, level.fill * HASH);
    level.count++;
    if (++level.fill < HASH_PER_BLOCK) return;
    level.fill = 0;
    this.addHash(i + 1, sha256(level.block));
  }

  /** `count` copies of `hash` at level i: whole blocks of them become one run a level up. */
  private addRun(i: number, hash: Buffer, count: number): void {
    const level = this.level(i);
    while (count > 0 && level.fill !== 0) {
      this.addHash(i, hash);
      count--;
    }
    const blocks = Math.floor(count / HASH_PER_BLOCK);
    if (blocks > 0) {
      level.count += blocks * HASH_PER_BLOCK;
      this.addRun(i + 1, this.runBlockHash(hash), blocks);
    }
    for (let left = count % HASH_PER_BLOCK; left > 0; left--) this.addHash(i, hash);
  }

  private runBlockHash(hash: Buffer): Buffer {
    const key = hash.toString('latin1');
    let h = this.runBlockHashes.get(key);
    if (!h) {
      const block = Buffer.alloc(BLOCK);
      for (let k = 0; k < HASH_PER_BLOCK; k++) hash.copy(block, k * HASH);
      this.runBlockHashes.set(key, (h = sha256(block)));
    }
    return h;
  }
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

/** fs-verity digest of a file, read in 1 MiB chunks (see VerityHasher for `hashBlocks`). */
export async function verityDigestOfFile(path: string, hashBlocks: BlockHasher | null = null): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const h = new VerityHasher(hashBlocks);
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
