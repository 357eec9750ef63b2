// Reading a layer while containerd is still writing it into its content store.
//
// containerd writes a blob it ingests to io.containerd.content.v1.content/ingest/<hash>/data and,
// once the blob is complete and verified against its digest, renames that file (the same inode)
// to blobs/<alg>/<hex>. A tail of the data file sees every byte as it is written; when the file
// has left the ingest directory we read what remains, and the bytes we hashed are that blob's
// only if a file of that name is the very inode we read, of the size we read.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

const CHUNK = 1 << 20;
/** How often a tail at the end of the data looks again, and how long it waits for a byte. */
const POLL_MS = 20;
const STALL_MS = 30_000;

/** An ingest's data file read as it grows; `finish()` reads to its end and names the blob. */
export class IngestTail {
  private pos = 0;
  private readonly hash = crypto.createHash('sha256');
  private done = false;
  /** Why finish() found no blob. */
  why = '';

  private constructor(readonly dataPath: string, private readonly fh: fsp.FileHandle, private readonly ino: bigint) {}

  static async open(dataPath: string): Promise<IngestTail> {
    const fh = await fsp.open(dataPath, 'r');
    const st = await fh.stat({ bigint: true });
    return new IngestTail(dataPath, fh, st.ino);
  }

  /** The first `n` bytes of the data file (fewer if it is shorter), without moving the tail. */
  async head(n: number): Promise<Buffer> {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await this.fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  }

  /** True while the data file is still in the ingest directory (containerd still writing it). */
  stillIngesting(): boolean {
    const st = fs.statSync(this.dataPath, { bigint: true, throwIfNoEntry: false });
    return st !== undefined && st.ino === this.ino;
  }

  /** The next bytes, waiting for containerd to write them; null at the end of the blob. */
  private async next(): Promise<Buffer | null> {
    let idle = 0;
    for (;;) {
      if (this.done) return null;
      // looked at BEFORE the read: a file that had left the ingest directory is complete
      const final = !this.stillIngesting();
      // fstat(2) of an open file does no I/O: synchronous, not a promise and a threadpool round trip per chunk
      const size = Number(fs.fstatSync(this.fh.fd, { bigint: true }).size);
      const want = Math.min(CHUNK, size - this.pos);
      const buf = want > 0 ? Buffer.allocUnsafe(want) : null;
      const { bytesRead } = buf ? await this.fh.read(buf, 0, want, this.pos) : { bytesRead: 0 };
      if (bytesRead > 0) {
        this.pos += bytesRead;
        const chunk = buf!.subarray(0, bytesRead);
        this.hash.update(chunk);
        return chunk;
      }
      if (final) {
        this.done = true;
        return null;
      }
      if ((idle += POLL_MS) > STALL_MS) throw new Error(`${this.dataPath}: no new data for ${STALL_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** The bytes as they arrive (a consumer may stop early: finish() reads the rest). */
  async *chunks(): AsyncGenerator<Buffer> {
    for (let c = await this.next(); c; c = await this.next()) yield c;
  }

  /**
   * Read to the end, then the blob these bytes are: its digest and size, if containerd
   * committed this very file under that digest in `blobsDir` (else null: aborted, or rewritten).
   */
  async finish(blobsDir: string): Promise<{ digest: string; size: number } | null> {
    try {
      while (await this.next());
      const hex = this.hash.digest('hex');
      const st = fs.statSync(path.join(blobsDir, 'sha256', hex), { bigint: true, throwIfNoEntry: false });
      const mine = await this.fh.stat({ bigint: true });
      if (!st || st.ino !== this.ino || st.dev !== mine.dev || Number(st.size) !== this.pos) {
        this.why = `read ${this.pos} bytes of sha256:${hex}; blobs has ${st ? `inode ${st.ino} (ours ${this.ino}) of ${st.size} bytes` : 'no such blob'}`;
        return null;
      }
      return { digest: `sha256:${hex}`, size: this.pos };
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    this.done = true;
    await this.fh.close().catch(() => {});
  }
}

/** True if `head` (the first 512 bytes of a blob) is a ustar or GNU tar header: an uncompressed layer. */
export function looksLikeTar(head: Buffer): boolean {
  return head.length >= 512 && head.toString('latin1', 257, 262) === 'ustar';
}

/**
 * Calls `found(dataPath)` once for each new ingest of containerd's content store (polling: the
 * ingest directory is small, and may not exist until containerd's first write).
 */
export function watchIngests(contentRoot: string, found: (dataPath: string) => void, everyMs = 100): () => void {
  const dir = path.join(contentRoot, 'ingest');
  const seen = new Set<string>();
  const timer = setInterval(() => {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return;
    }
    for (const s of [...seen]) if (!names.includes(s)) seen.delete(s);
    for (const n of names) {
      if (seen.has(n)) continue;
      seen.add(n);
      found(path.join(dir, n, 'data'));
    }
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
