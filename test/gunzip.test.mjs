// The addon's gzip decompression (mounter/addon/gunzip.cc: ISA-L's igzip) behind
// compiler/layerio.ts's layerTar, against node's zlib as the reference: the same bytes for every
// stream (several members, padding, every optional header field, stored blocks, an output many
// times its input), whatever the chunking of the stored bytes; a failure for every stream zlib
// refuses (truncated anywhere, a flipped byte anywhere, bad trailers, garbage after a member),
// in zlib's words; a consumer that stops early closes the source. Also: a build with ISA-L and
// one with node's zlib (UNIONBLOB_GUNZIP=zlib) give the same blob.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { layerTar, LayerReading } from '../dist/compiler/layerio.js';
import { nativeGunzip } from '../dist/mounter/addon.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = path.join(ROOT, 'bin', 'cfs');

/** A deterministic pseudo-random generator (tests repeat exactly). */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s / 2 ** 32;
  };
}

/** Half random bytes, half text-like runs: deflate uses literals, matches and all block kinds. */
function content(n, seed) {
  const r = rng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; ) {
    const run = 1 + Math.floor(r() * 3000);
    if (r() < 0.5) for (let k = 0; k < run && i < n; k++) b[i++] = Math.floor(r() * 256);
    else for (let k = 0; k < run && i < n; k++) b[i++] = 0x61 + (k % 7);
  }
  return b;
}

/** The stored bytes as chunks of the given sizes (cycled), as a file or a socket hands them over. */
async function* chunked(buf, sizes) {
  let i = 0;
  for (let k = 0; i < buf.length; k++) {
    const n = sizes[k % sizes.length];
    yield buf.subarray(i, i + n);
    i += n;
  }
}

/** layerTar's output (or its error message) with the decompressor in force. */
async function inflate(buf, sizes = [buf.length]) {
  const parts = [];
  try {
    for await (const c of layerTar(chunked(buf, sizes), new LayerReading(null))) parts.push(Buffer.from(c));
  } catch (err) {
    return { error: err.message };
  }
  return { data: Buffer.concat(parts) };
}

/** node's zlib: the reference. */
function reference(buf) {
  try {
    return { data: zlib.gunzipSync(buf) };
  } catch (err) {
    return { error: err.message };
  }
}

/** A gzip member written by hand, with the optional header fields (RFC 1952) asked for. */
function member(data, { extra, name, comment, hcrc, level = 6 } = {}) {
  let flags = 0;
  const fields = [];
  if (extra) {
    flags |= 4;
    const len = Buffer.alloc(2);
    len.writeUInt16LE(extra.length);
    fields.push(len, extra);
  }
  if (name) (flags |= 8), fields.push(Buffer.from(`${name}\0`, 'latin1'));
  if (comment) (flags |= 16), fields.push(Buffer.from(`${comment}\0`, 'latin1'));
  if (hcrc) flags |= 2;
  let head = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3]), ...fields]);
  if (hcrc) {
    const c = Buffer.alloc(2);
    c.writeUInt16LE(crc32(head) & 0xffff);
    head = Buffer.concat([head, c]);
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data) >>> 0, 0);
  trailer.writeUInt32LE(data.length >>> 0, 4);
  return Buffer.concat([head, zlib.deflateRawSync(data, { level }), trailer]);
}

/** CRC-32 (gzip's), for hand-made members (node 20's zlib has no crc32). */
function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

const native = nativeGunzip();

test('the addon decompresses gzip with ISA-L (libisal-dev at build time; .ci/install-deps.sh installs it)', (t) => {
  t.truthy(native, 'nativeGunzip() is null: the addon was built without ISA-L, or is not built');
});

const STREAMS = (() => {
  const a = content(3 << 20, 1);
  const small = content(20_000, 2);
  const members = [];
  for (let i = 0; i < 40; i++) members.push(zlib.gzipSync(content(i * 997, 100 + i), { level: 1 + (i % 9) }));
  return [
    ['3 MiB at level 1', zlib.gzipSync(a, { level: 1 })],
    ['3 MiB at level 9', zlib.gzipSync(a, { level: 9 })],
    ['3 MiB in stored blocks (level 0)', zlib.gzipSync(a, { level: 0 })],
    ['20 kB', zlib.gzipSync(small)],
    ['40 members, empty ones included', Buffer.concat(members)],
    ['an empty member alone', zlib.gzipSync(Buffer.alloc(0))],
    ['every optional header field', member(small, { extra: Buffer.from('xyzzy-extra'), name: 'layer.tar', comment: 'made by hand', hcrc: true })],
    ['a file name only (gzip(1) of a file)', member(small, { name: 'layer.tar', level: 9 })],
    ['96 MiB of zeros (out 1000x in)', zlib.gzipSync(Buffer.alloc(96 << 20), { level: 9 })],
    ['zero padding after the member, then junk', Buffer.concat([zlib.gzipSync(small), Buffer.alloc(1000), Buffer.from('junk after the padding')])],
    ['two members, then zero padding', Buffer.concat([zlib.gzipSync(small), zlib.gzipSync(a.subarray(0, 100_000)), Buffer.alloc(512)])],
  ];
})();

const CHUNKINGS = [
  ['whole', (b) => [b.length]],
  ['1 MiB', () => [1 << 20]],
  ['odd sizes', () => [1, 2, 3, 5, 8, 13, 4093, 65_537, 10, 300_001]],
];

for (const [name, stream] of STREAMS) {
  test(`the same bytes as node's zlib: ${name}`, async (t) => {
    const want = reference(stream);
    t.falsy(want.error, `zlib refuses the test's own stream: ${want.error}`);
    for (const [how, sizes] of CHUNKINGS) {
      const got = await inflate(stream, sizes(stream));
      t.falsy(got.error, `${how}: ${got.error}`);
      t.is(got.data?.length, want.data.length, how);
      t.true(got.data?.equals(want.data), `${how}: content differs`);
    }
  });
}

test('one byte at a time: a stream with every header field and two members', async (t) => {
  const s = Buffer.concat([member(content(5000, 7), { extra: Buffer.from('e'), name: 'n', comment: 'c', hcrc: true }), zlib.gzipSync(content(3000, 8))]);
  const got = await inflate(s, [1]);
  t.falsy(got.error);
  t.true(got.data.equals(reference(s).data));
});

// zlib's wording, which layerTar's callers put after the layer's name.
const ZLIB_WORDS = /^(unexpected end of file|incorrect header check|incorrect data check|incorrect length check|invalid block type|invalid code|invalid distance too far back|invalid stored block lengths|invalid code lengths set|invalid literal\/lengths set|invalid distances set|invalid bit length repeat|invalid literal\/length code|invalid distance code|too many length or distance symbols|unknown compression method|unknown header flags set|header crc mismatch|need dictionary|corrupt gzip data|invalid distance too far back)$/;

test('truncated at every length: "unexpected end of file", as zlib says', async (t) => {
  const s = Buffer.concat([member(content(3000, 3), { name: 'n', comment: 'c', extra: Buffer.from('x'), hcrc: true }), zlib.gzipSync(content(2000, 4))]);
  const firstEnd = s.length - zlib.gzipSync(content(2000, 4)).length;
  let checked = 0;
  for (let n = 2; n < s.length; n++) {
    if (n === firstEnd) continue; // a whole first member: a complete stream
    const got = await inflate(s.subarray(0, n), [977]);
    t.is(got.error, 'unexpected end of file', `cut at ${n} of ${s.length}`);
    checked++;
  }
  t.true(checked > 3000);
});

test('a flipped byte anywhere: refused whenever zlib refuses, and equal bytes otherwise', async (t) => {
  const base = zlib.gzipSync(content(30_000, 5), { level: 6 });
  const r = rng(9);
  let refused = 0;
  for (let pos = 0; pos < base.length; pos += 1 + Math.floor(r() * 7)) {
    if (pos < 2) continue; // no gzip magic: not decompressed at all
    const s = Buffer.from(base);
    s[pos] ^= 1 << Math.floor(r() * 8);
    const want = reference(s);
    const got = await inflate(s, [4096]);
    if (want.error) {
      refused++;
      t.truthy(got.error, `flip at ${pos}: zlib says "${want.error}", ISA-L accepted it`);
      t.regex(got.error ?? '', ZLIB_WORDS, `flip at ${pos}`);
    } else {
      // zlib ignores some header bits (the mtime, OS, XFL bytes); so must we
      t.falsy(got.error, `flip at ${pos}: ISA-L says "${got.error}", zlib accepted it`);
      t.true(got.data?.equals(want.data), `flip at ${pos}: content differs`);
    }
  }
  t.true(refused > 1000, `${refused} refusals`);
});

test('bad trailers and garbage after a member are refused', async (t) => {
  const data = content(10_000, 6);
  const good = zlib.gzipSync(data);
  const badCrc = Buffer.from(good);
  badCrc.writeUInt32LE((badCrc.readUInt32LE(good.length - 8) ^ 1) >>> 0, good.length - 8);
  const badLen = Buffer.from(good);
  badLen.writeUInt32LE(data.length + 1, good.length - 4);
  t.is((await inflate(badCrc)).error, 'incorrect data check');
  const badHeaderCrc = member(data, { name: 'n', hcrc: true });
  badHeaderCrc[12] ^= 0x40; // in the name: the header's CRC-16 no longer matches
  t.is(reference(badHeaderCrc).error, 'header crc mismatch');
  t.is((await inflate(badHeaderCrc, [5])).error, 'header crc mismatch');
  t.regex((await inflate(badLen)).error ?? '', /^incorrect (data|length) check$/);
  for (const tail of ['xyz', 'not a gzip member at all', '\x1f\x8bnope']) {
    const s = Buffer.concat([good, Buffer.from(tail, 'latin1')]);
    t.truthy(reference(s).error, `zlib accepts garbage ${JSON.stringify(tail)}`);
    t.regex((await inflate(s, [100])).error ?? 'accepted', ZLIB_WORDS, JSON.stringify(tail));
  }
});

test('a consumer that stops early: the source is closed, nothing left running', async (t) => {
  const s = zlib.gzipSync(Buffer.alloc(16 << 20, 7), { level: 1 });
  let closed = false;
  let chunksRead = 0;
  async function* source() {
    try {
      for (let i = 0; i < s.length; i += 1000) {
        chunksRead++;
        yield s.subarray(i, i + 1000);
      }
    } finally {
      closed = true;
    }
  }
  let got = 0;
  for await (const c of layerTar(source(), new LayerReading(null))) {
    got += c.length;
    if (got >= 2 << 20) break;
  }
  t.true(closed);
  t.true(chunksRead < Math.ceil(s.length / 1000), 'read the whole source');
  // and a source that fails mid-stream fails the layer with its own error
  async function* failing() {
    yield s.subarray(0, 5000);
    throw new Error('disk on fire');
  }
  await t.throwsAsync(async () => {
    for await (const _ of layerTar(failing(), new LayerReading(null)));
  }, { message: 'disk on fire' });
});

test('cfs build: ISA-L and node\'s zlib give the same blob (examples/hello-oci.tar, gzip layers)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-gunzip-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const blobs = [];
  for (const mode of ['', 'zlib']) {
    const out = path.join(dir, `${mode || 'isal'}.ub`);
    const r = spawnSync(process.execPath, [CFS, 'build', path.join(ROOT, 'examples', 'hello-oci.tar'), '-o', out, '--store', path.join(dir, `store-${mode || 'isal'}`)], {
      encoding: 'utf8',
      env: { ...process.env, UNIONBLOB_GUNZIP: mode },
    });
    t.is(r.status, 0, r.stderr);
    blobs.push(fs.readFileSync(out));
  }
  t.true(blobs[0].equals(blobs[1]));
  // the example's layers are gzip, so ISA-L did decompress them
  const layers = spawnSync('tar', ['-xOf', path.join(ROOT, 'examples', 'hello-oci.tar'), '--wildcards', 'blobs/sha256/*'], { maxBuffer: 1 << 30 });
  t.true(layers.stdout.includes(Buffer.from([0x1f, 0x8b, 8])), 'no gzip data in examples/hello-oci.tar');
});
