// CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value ~0, final xor ~0 —
// the checksum of ext4, erofs and iSCSI. Slicing-by-8: eight 256-entry tables let the loop
// consume 8 bytes per iteration, which is what makes checksumming a 100 MB blob affordable.

const POLY = 0x82f63b78;

/** TABLE[k * 256 + b]: CRC of byte b followed by k zero bytes (k = 0..7). One array for locality. */
const TABLE = buildTable();

function buildTable(): Uint32Array {
  const t = new Uint32Array(8 * 256);
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[b] = c >>> 0;
  }
  for (let k = 1; k < 8; k++) {
    for (let b = 0; b < 256; b++) {
      const prev = t[(k - 1) * 256 + b];
      t[k * 256 + b] = (t[prev & 0xff] ^ (prev >>> 8)) >>> 0;
    }
  }
  return t;
}

/** A faster implementation of the same function, installed by useCrc32c (the addon's). */
let native: ((data: Uint8Array, previous: number) => number) | null = null;

/**
 * Route crc32c through `fn` (same result, e.g. the CPU's crc32 instruction: mounter/addon.ts's
 * nativeCrc32c) for inputs big enough to pay for the call; null goes back to the tables.
 */
export function useCrc32c(fn: ((data: Uint8Array, previous: number) => number) | null): void {
  native = fn;
}

/**
 * CRC-32C of `data`. Pass the result of a previous call as `previous` to continue a checksum
 * over several chunks: crc32c(b, crc32c(a)) === crc32c(a ++ b).
 */
export function crc32c(data: Uint8Array, previous = 0): number {
  if (native !== null && data.length >= 256) return native(data, previous);
  return crc32cTables(data, previous);
}

/** crc32c with the slicing-by-8 tables (what useCrc32c's function must equal). */
export function crc32cTables(data: Uint8Array, previous = 0): number {
  const t = TABLE;
  let crc = ~previous;
  let i = 0;
  const n = data.length;
  const end8 = n - (n % 8);
  while (i < end8) {
    const lo = crc ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    crc =
      t[1792 + (lo & 0xff)] ^
      t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^
      t[1024 + (lo >>> 24)] ^
      t[768 + data[i + 4]] ^
      t[512 + data[i + 5]] ^
      t[256 + data[i + 6]] ^
      t[data[i + 7]];
    i += 8;
  }
  while (i < n) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
