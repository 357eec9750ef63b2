// The addon's layer decompression behind compiler/layerio.ts's layerTar: gzip with ISA-L's igzip
// (mounter/addon/gunzip.cc) against node's zlib, zstd with libzstd (unzstd.cc) against
// zstd-napi, the JavaScript decompressors it replaces. The same bytes for every stream (several
// members or frames, padding, every optional gzip header field, skippable zstd frames, stored
// blocks, an output many times its input), whatever the chunking of the stored bytes; a failure
// for every stream the reference refuses (truncated anywhere, a flipped byte anywhere, bad
// trailers, garbage after a member), in its words; a consumer that stops early closes the
// source. Also: builds with the addon and with the JavaScript decompressors
// (UNIONBLOB_DECOMPRESS=js) give the same blob.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { compress as zstdCompress, DecompressStream } from 'zstd-napi';
import { layerTar, LayerReading } from '../dist/compiler/layerio.js';
import { nativeDecompressor } from '../dist/mounter/addon.js';

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

/** node's zlib: the reference for gzip. */
function reference(buf) {
  try {
    return { data: zlib.gunzipSync(buf) };
  } catch (err) {
    return { error: err.message };
  }
}

/** zstd-napi's stream, as layerTar used it: the reference for zstd. */
async function zstdReference(buf) {
  const parts = [];
  try {
    const d = new DecompressStream();
    const done = (async () => {
      for await (const c of d) parts.push(c);
    })();
    d.end(buf);
    await done;
  } catch (err) {
    return { error: err.message };
  }
  return { data: Buffer.concat(parts) };
}

/** A zstd skippable frame (RFC 8878 3.1.2): metadata any reader passes over. */
function skippable(data, variant = 0) {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(0x184d2a50 + variant, 0);
  head.writeUInt32LE(data.length, 4);
  return Buffer.concat([head, data]);
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

test('the addon decompresses gzip with ISA-L and zstd with libzstd (libisal-dev, libzstd-dev at build time; .ci/install-deps.sh installs them)', (t) => {
  t.truthy(nativeDecompressor('gzip'), 'nativeDecompressor("gzip") is null: the addon was built without ISA-L, or is not built');
  t.truthy(nativeDecompressor('zstd'), 'nativeDecompressor("zstd") is null: the addon was built without libzstd, or is not built');
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

/** layerTar gives the reference's bytes for `stream`, whatever the chunking. */
async function sameBytes(t, stream, want, referenceName) {
  t.falsy(want.error, `${referenceName} refuses the test's own stream: ${want.error}`);
  for (const [how, sizes] of CHUNKINGS) {
    const got = await inflate(stream, sizes(stream));
    t.falsy(got.error, `${how}: ${got.error}`);
    t.is(got.data?.length, want.data.length, how);
    t.true(got.data?.equals(want.data), `${how}: content differs`);
  }
}

for (const [name, stream] of STREAMS) {
  test(`the same bytes as node's zlib: ${name}`, (t) => sameBytes(t, stream, reference(stream), 'zlib'));
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

const ZSTD_STREAMS = (() => {
  const a = content(3 << 20, 11);
  const small = content(20_000, 12);
  const frames = [];
  for (let i = 0; i < 30; i++) frames.push(zstdCompress(content(i * 1499, 200 + i), { compressionLevel: 1 + (i % 19), checksumFlag: i % 2 === 0 }));
  return [
    ['3 MiB at level 3', zstdCompress(a)],
    ['3 MiB at level 19 with a checksum', zstdCompress(a, { compressionLevel: 19, checksumFlag: true })],
    ['30 frames, empty ones included', Buffer.concat(frames)],
    ['skippable frames before, between and after', Buffer.concat([skippable(Buffer.from('meta')), zstdCompress(small), skippable(Buffer.alloc(70_000, 1), 15), zstdCompress(a.subarray(0, 50_000)), skippable(Buffer.alloc(0), 3)])],
    ['96 MiB of zeros', zstdCompress(Buffer.alloc(96 << 20), { compressionLevel: 9 })],
    ['an empty frame alone', zstdCompress(Buffer.alloc(0))],
  ];
})();

for (const [name, stream] of ZSTD_STREAMS) {
  test(`zstd: the same bytes as zstd-napi: ${name}`, async (t) => sameBytes(t, stream, await zstdReference(stream), 'zstd-napi'));
}

test('zstd: truncated at every length, one byte at a time, and flipped bytes: as zstd-napi says', async (t) => {
  const first = zstdCompress(content(3000, 13), { checksumFlag: true });
  const s = Buffer.concat([first, skippable(Buffer.from('x')), zstdCompress(content(2000, 14))]);
  const whole = await inflate(s, [1]);
  t.true(whole.data?.equals((await zstdReference(s)).data), 'one byte at a time');
  let checked = 0;
  for (let n = 4; n < s.length; n++) {
    const want = await zstdReference(s.subarray(0, n));
    const got = await inflate(s.subarray(0, n), [333]);
    t.deepEqual(got.error ? { error: got.error } : { length: got.data.length }, want.error ? { error: want.error } : { length: want.data.length }, `cut at ${n} of ${s.length}`);
    checked++;
  }
  t.is(checked, s.length - 4);
  const r = rng(21);
  let refused = 0;
  let flips = 0;
  for (let pos = 4; pos < first.length; pos += 1 + Math.floor(r() * 3), flips++) {
    const bad = Buffer.from(first);
    bad[pos] ^= 1 << Math.floor(r() * 8);
    const want = await zstdReference(bad);
    const got = await inflate(bad, [100]);
    if (want.error) refused++;
    t.deepEqual(got.error ? { error: got.error } : { data: got.data.toString('hex') }, want.error ? { error: want.error } : { data: want.data.toString('hex') }, `flip at ${pos}`);
  }
  t.true(refused > flips / 2, `${refused} refusals of ${flips}`);
});

test('cfs build: the addon\'s decompressors and the JavaScript ones give the same blob (gzip and zstd layers)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-decompress-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // examples/hello-oci.tar's layers are gzip; a zstd copy of the same image is made here
  const example = path.join(ROOT, 'examples', 'hello-oci.tar');
  const layers = spawnSync('tar', ['-xOf', example, '--wildcards', 'blobs/sha256/*'], { maxBuffer: 1 << 30 });
  t.true(layers.stdout.includes(Buffer.from([0x1f, 0x8b, 8])), 'no gzip data in examples/hello-oci.tar');
  const zstdLayout = path.join(dir, 'zstd');
  const r0 = spawnSync('skopeo', ['copy', '-q', '--dest-compress-format', 'zstd', `oci-archive:${example}`, `oci:${zstdLayout}:hello`], { encoding: 'utf8' });
  t.is(r0.status, 0, r0.stderr);
  const blobs = {};
  for (const [image, kind] of [[example, 'gzip'], [`${zstdLayout}:hello`, 'zstd']]) {
    for (const mode of ['', 'js']) {
      const out = path.join(dir, `${kind}-${mode || 'native'}.ub`);
      const r = spawnSync(process.execPath, [CFS, 'build', image, '-o', out, '--store', path.join(dir, 'store')], {
        encoding: 'utf8',
        env: { ...process.env, UNIONBLOB_DECOMPRESS: mode },
      });
      t.is(r.status, 0, r.stderr);
      blobs[`${kind}-${mode || 'native'}`] = fs.readFileSync(out);
    }
  }
  t.true(blobs['gzip-native'].equals(blobs['gzip-js']), 'gzip');
  t.true(blobs['zstd-native'].equals(blobs['zstd-js']), 'zstd');
  t.true(blobs['gzip-native'].equals(blobs['zstd-native']), 'the same image whatever its compression');
});
