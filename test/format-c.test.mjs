// The C reader (format/c): builds it, checks ubdump against the golden dumps of the TypeScript
// side byte for byte, runs the API test, and feeds the ASan/UBSan build thousands of corrupted
// blobs, each of which must end in exit 0 (still valid) or 1 (corruption reported), never in a
// sanitizer report, a signal or a hang.

import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prng } from './lib/prng.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CDIR = join(ROOT, 'format', 'c');
const BUILD = join(CDIR, 'build');
const VECTORS = join(ROOT, 'format', 'vectors');
const UBDUMP = join(BUILD, 'ubdump');
const UBDUMP_ASAN = join(BUILD, 'ubdump-asan');
// Thousands of short-lived variant files: tmpfs when there is one (several times faster than disk).
const SCRATCH = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

// A sanitizer finding must not look like exit 1 ("corrupt"): give each its own exit code.
const SAN_ENV = {
  ...process.env,
  ASAN_OPTIONS: 'exitcode=86:detect_leaks=0:abort_on_error=0:allocator_may_return_null=1',
  UBSAN_OPTIONS: 'exitcode=87:halt_on_error=1:print_stacktrace=1',
};

const vectors = existsSync(VECTORS)
  ? readdirSync(VECTORS).filter((f) => f.endsWith('.ub')).sort().map((f) => join(VECTORS, f))
  : [];

test.before(() => {
  const r = spawnSync('make', ['-C', CDIR], { encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) throw new Error(`make -C format/c failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
});

// ---- helpers -----------------------------------------------------------------------------

/** CRC-32C, to re-seal blobs whose structure a test corrupts on purpose. */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();
function crc32c(buf) {
  let c = ~0;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const sect = (blob, id) => {
  const e = 128 + id * 32;
  return { offset: Number(blob.readBigUInt64LE(e)), size: Number(blob.readBigUInt64LE(e + 8)) };
};

/** Recompute every section CRC and the header CRC, as a writer would. */
function reseal(blob) {
  for (let id = 0; id < 6; id++) {
    const s = sect(blob, id);
    blob.writeUInt32LE(crc32c(blob.subarray(s.offset, s.offset + s.size)), 128 + id * 32 + 24);
  }
  blob.writeUInt32LE(0, 8);
  blob.writeUInt32LE(crc32c(blob.subarray(0, 512)), 8);
  return blob;
}


function runDump(bin, file, args = []) {
  return spawnSync(bin, [...args, file], { encoding: 'latin1', timeout: 10_000, env: SAN_ENV, maxBuffer: 64 << 20 });
}

// ---- golden dumps ------------------------------------------------------------------------

test('there are golden vectors', (t) => {
  t.true(vectors.length > 0, 'no format/vectors/*.ub');
});

for (const vec of vectors) {
  const name = vec.slice(VECTORS.length + 1);
  test(`ubdump ${name} equals the golden dump`, (t) => {
    const want = readFileSync(vec.replace(/\.ub$/, '.dump'), 'latin1');
    const r = runDump(UBDUMP, vec);
    t.is(r.stderr, '');
    t.is(r.status, 0);
    t.is(r.stdout, want);
    // The sanitized build, leak checking on, agrees.
    const a = spawnSync(UBDUMP_ASAN, [vec], { encoding: 'latin1', timeout: 20_000, maxBuffer: 64 << 20 });
    t.is(a.stderr, '');
    t.is(a.status, 0);
    t.is(a.stdout, want);
  });
}

test('test_reader: API contract on every vector', (t) => {
  const r = spawnSync(join(BUILD, 'test_reader'), vectors, { encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stdout + r.stderr);
});

// ---- targeted corruption -----------------------------------------------------------------

/** A vector whose root has entries (small.ub when it qualifies). */
function sampleBlob() {
  const order = [...vectors].sort((a, b) => Number(b.endsWith('small.ub')) - Number(a.endsWith('small.ub')));
  for (const v of order) {
    const blob = readFileSync(v);
    if (rootBlock(blob) !== undefined) return blob;
  }
  throw new Error('no vector has a non-empty root directory');
}

/** Blob offset of inode `i` (SPEC §4: 48-byte inodes, 85 to a 4096-byte page). */
function inodeAt(blob, i) {
  return sect(blob, 0).offset + Math.floor(i / 85) * 4096 + (i % 85) * 48;
}

/** Blob offset of the root directory's first chunk, or undefined for an empty root. */
function rootBlock(blob) {
  const ino = inodeAt(blob, Number(blob.readBigUInt64LE(48)));
  // size (at 16) is the directory's DIRS bytes, payload (at 40) their offset
  if (blob.readBigUInt64LE(ino + 16) === 0n) return undefined;
  return sect(blob, 1).offset + Number(blob.readBigUInt64LE(ino + 40));
}

const corruptions = [
  ['bad magic', (b) => { b[0] ^= 1; }],
  ['header crc', (b) => { b[300] ^= 1; return 'nocrcfix'; }],
  ['unknown incompat feature', (b) => { b.writeUInt32LE(1, 32); }],
  ['blob_size differs', (b) => { b.writeBigUInt64LE(BigInt(b.length + 4096), 40); }],
  ['root out of range', (b) => { b.writeBigUInt64LE(b.readBigUInt64LE(56), 48); }],
  ['section 7 in use', (b) => { b.writeBigUInt64LE(4096n, 128 + 7 * 32); }],
  ['section CRC', (b) => { const s = sect(b, 0); b[s.offset + 1] ^= 0x40; return 'nosectfix'; }],
  ['root dirent names the root (cycle)', (b) => {
    const blk = rootBlock(b);
    b.writeUInt32LE(Number(b.readBigUInt64LE(48)), blk);
    b[blk + 6] = 4;
  }],
  ['dirent names an inode out of range', (b) => { b.writeUInt32LE(0xffffffff, rootBlock(b)); }],
  ['first nameoff not a multiple of 8', (b) => { b.writeUInt16LE(b.readUInt16LE(rootBlock(b) + 4) + 1, rootBlock(b) + 4); }],
  ['dirent type differs from inode', (b) => { const blk = rootBlock(b); b[blk + 6] = b[blk + 6] === 8 ? 10 : 8; }],
  ['root mode is not a directory', (b) => { b.writeUInt16LE(0o100644, inodeAt(b, 0)); }],
  ['inode reserved byte set', (b) => { b[inodeAt(b, 0) + 3] = 1; }],
  ['mtime nanoseconds of 10^9', (b) => { const o = inodeAt(b, 0) + 24; b.writeUInt32LE((b.readUInt32LE(o + 4) & 3) + 1e9 * 4, o + 4); }],
  ['INODES size not the 85-per-page size', (b) => { b.writeBigUInt64LE(b.readBigUInt64LE(128 + 8) + 16n, 128 + 8); }],
];

test('ubdump names the format version it refuses (1: rebuild, 3: too new), before the header crc', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ubc-'));
  try {
    const cases = [[1, 'rebuild the blob with this cfs', true], [1, 'rebuild the blob with this cfs', false], [3, 'too new for this reader', true]];
    for (const [version, why, sealed] of cases) {
      const blob = Buffer.from(sampleBlob());
      blob.writeUInt16LE(version, 12);
      if (sealed) reseal(blob); // else: the header crc is that of the version 2 header
      const file = join(dir, `v${version}${sealed ? '' : '-badcrc'}.ub`);
      writeFileSync(file, blob);
      for (const bin of [UBDUMP, UBDUMP_ASAN]) {
        const r = runDump(bin, file, ['-q']);
        t.is(r.status, 1, `${bin}: ${r.stderr}`);
        t.is(r.stderr, `ubdump: ${file}: format version ${version}: ${why} (this reads version 2)\n`);
      }
    }
    // no format had version 0: corrupt, not "rebuild"
    const v0 = Buffer.from(sampleBlob());
    v0.writeUInt16LE(0, 12);
    reseal(v0);
    writeFileSync(join(dir, 'v0.ub'), v0);
    for (const bin of [UBDUMP, UBDUMP_ASAN]) {
      const r = runDump(bin, join(dir, 'v0.ub'), ['-q']);
      t.is(r.status, 1, `${bin}: ${r.stderr}`);
      t.regex(r.stderr, /^ubdump: .*corrupt blob: [^\n]+\n$/);
      t.notRegex(r.stderr, /rebuild/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const [what, mutate] of corruptions) {
  test(`ubdump reports: ${what}`, (t) => {
    const blob = Buffer.from(sampleBlob());
    const how = mutate(blob);
    if (how !== 'nocrcfix') {
      if (how === 'nosectfix') {
        blob.writeUInt32LE(0, 8);
        blob.writeUInt32LE(crc32c(blob.subarray(0, 512)), 8);
      } else {
        reseal(blob);
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'ubc-'));
    try {
      const file = join(dir, 'x.ub');
      writeFileSync(file, blob);
      for (const bin of [UBDUMP, UBDUMP_ASAN]) {
        const r = runDump(bin, file, ['-q']);
        t.is(r.status, 1, `${bin}: ${r.stderr}`);
        t.regex(r.stderr, /^ubdump: .*corrupt blob: .+\n$/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

// ---- random corruption under ASan/UBSan --------------------------------------------------

/** Variants of one blob: truncations (raw and with blob_size patched) and random byte damage. */
function* variants(blob, rnd, flips) {
  const pages = blob.length / 4096;
  const patchSize = (b) => (b.length >= 48 && b.writeBigUInt64LE(BigInt(b.length), 40), b);
  for (let p = 0; p < pages; p++) {
    yield ['trunc-page', blob.subarray(0, p * 4096)];
    yield ['trunc-page-patched', patchSize(Buffer.from(blob.subarray(0, p * 4096)))];
  }
  for (let k = 0; k < 8; k++) {
    const at = Math.floor(rnd() * blob.length);
    yield ['trunc-random', blob.subarray(0, at)];
  }
  for (let k = 0; k < flips; k++) {
    const b = Buffer.from(blob);
    const n = 1 + Math.floor(rnd() * 6);
    for (let j = 0; j < n; j++) {
      // Half of the damage goes to the header page and the metadata that page-aligned
      // structures start with, where a flip changes the most.
      const r = rnd();
      const at = r < 0.25 ? Math.floor(rnd() * 512)
        : r < 0.5 ? Math.floor(rnd() * (b.length / 4096)) * 4096 + Math.floor(rnd() * 64)
        : Math.floor(rnd() * b.length);
      const kind = rnd();
      if (kind < 0.5) b[at] ^= 1 << Math.floor(rnd() * 8);
      else if (kind < 0.8) b[at] = Math.floor(rnd() * 256);
      else b[at] = [0, 0xff, 0x7f, 0x80, 1][Math.floor(rnd() * 5)];
    }
    yield ['flip', b];
  }
}

/** Run bin asynchronously; resolves to { status, signal, stderr } (status null on a signal or timeout). */
function runAsync(bin, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { env: SAN_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stderr.setEncoding('latin1');
    child.stderr.on('data', (d) => { if (stderr.length < 16384) stderr += d; });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stderr });
    });
  });
}

test('ubdump-asan survives thousands of corrupted blobs', async (t) => {
  const dir = mkdtempSync(join(SCRATCH, 'ubc-'));
  const outcomes = { 0: 0, 1: 0 };
  const failures = [];
  const started = Date.now();
  const perVector = Math.ceil(3000 / vectors.length);
  // Keep the suite fast: stop generating after the budget (the variants are deterministic, so a
  // cut run checks a prefix of the same sequence), but never before MIN_VARIANTS have run, so a
  // loaded machine takes longer instead of checking less.
  const deadline = started + 35_000;
  const MIN_VARIANTS = 1000;
  const hardDeadline = started + 300_000; // then fail with the count, well before ava's timeout
  let cut = false;
  // One deterministic sequence of (variant, arguments), round-robin over the vectors so a run
  // cut short by the time budget still covers all of them; consumed by a few parallel workers.
  function* jobs() {
    const gens = vectors.map((vec, vi) => {
      const rnd = prng(0x5eed + vi);
      return (function* () {
        for (const [kind, bytes] of variants(readFileSync(vec), rnd, perVector)) {
          // Most runs skip the CRCs so the damage reaches the structure checks.
          yield { vec, kind, bytes, args: rnd() < 0.9 ? ['-q', '--no-crc'] : ['-q'] };
        }
      })();
    });
    while (gens.length) {
      for (let g = 0; g < gens.length; g++) {
        const step = gens[g].next();
        if (step.done) gens.splice(g--, 1);
        else yield step.value;
      }
    }
  }
  const queue = jobs();
  async function worker(w) {
    const file = join(dir, `v${w}.ub`);
    for (const job of queue) {
      if (failures.length) return;
      const now = Date.now();
      if (now > hardDeadline || (now > deadline && outcomes[0] + outcomes[1] >= MIN_VARIANTS)) {
        cut = true;
        return;
      }
      writeFileSync(file, job.bytes);
      const r = await runAsync(UBDUMP_ASAN, [...job.args, file], 10_000);
      const what = `${job.vec} ${job.kind} ${job.args.join(' ')}`;
      if (r.status !== 0 && r.status !== 1) {
        const keep = join(tmpdir(), `ubdump-crash-${process.pid}-${w}.ub`);
        copyFileSync(file, keep);
        failures.push(`${what}: exit ${r.status ?? r.signal}, kept as ${keep}\n${r.stderr.slice(0, 4000)}`);
      } else if (r.status === 1 && !/^ubdump: .*(corrupt blob|format version \d+): [^\n]+\n$/.test(r.stderr)) {
        failures.push(`${what}: exit 1 without the one-line message: ${r.stderr.slice(0, 2000)}`);
      } else {
        outcomes[r.status]++;
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.max(2, Math.min(4, availableParallelism())) }, (_, w) => worker(w)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (failures.length) {
    t.fail(failures.join('\n'));
    return;
  }
  const total = outcomes[0] + outcomes[1];
  t.log(`${total} variants in ${((Date.now() - started) / 1000).toFixed(1)} s: ${outcomes[0]} still valid, ${outcomes[1]} corrupt` +
    (cut ? ' (stopped at the time budget)' : ''));
  t.true(cut || total >= 3000);
  t.true(total >= MIN_VARIANTS, `only ${total} variants ran`);
  t.true(outcomes[1] > total / 4, 'most damage should be detected');
});

// ---- libFuzzer: regression inputs, then every target for 4 s (format/c/fuzz.sh) -------------

test('fuzz.sh: regression inputs replay clean and every target runs 4 s without a crash', (t) => {
  const clang = spawnSync('sh', ['-c', 'command -v clang'], { encoding: 'utf8' });
  t.is(clang.status, 0, 'clang is required (.ci/install-deps.sh installs it)');
  t.true(readdirSync(join(CDIR, 'regress')).length > 0, 'format/c/regress/ is empty');
  const f = spawnSync('bash', [join(CDIR, 'fuzz.sh'), '4'],
    { encoding: 'utf8', timeout: 15 * 60_000, env: { ...SAN_ENV, UB_FUZZ_ARGS: '-seed=1' } });
  t.is(f.status, 0, f.stderr.slice(-4000));
  const runs = [...f.stderr.matchAll(/stat::number_of_executed_units: (\d+)/g)].map((m) => Number(m[1]));
  t.is(runs.length, 2, 'one stats block per target');
  for (const n of runs) t.true(n > 100, `only ${n} runs`);
});

// ---- rules a reader enforces itself (valid CRCs) -------------------------------------------

test('ubdump and the TypeScript reader refuse what SPEC §4, §5, §8 forbid, and accept the same blob before the patch', async (t) => {
  const { craftedBlobs } = await import('./lib/crafted-blobs.mjs');
  const F = await import('../dist/format/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'ubc-crafted-'));
  try {
    for (const [name, { blob, control }] of Object.entries(craftedBlobs())) {
      for (const [label, b, bad] of [['control', control, false], ['crafted', blob, true]]) {
        const file = join(dir, `${name}-${label}.ub`);
        writeFileSync(file, b);
        for (const bin of [UBDUMP, UBDUMP_ASAN]) {
          const r = runDump(bin, file, ['-q']);
          if (bad) {
            t.is(r.status, 1, `${name}: ${bin} accepted it: ${r.stderr}`);
            t.regex(r.stderr, /^ubdump: .*corrupt blob: .+\n$/, name);
          } else {
            t.is(r.status, 0, `${name} control: ${bin}: ${r.stderr}`);
          }
        }
        let err;
        try {
          F.dumpBlob(F.openBlob(F.sourceFromBuffer(b)));
        } catch (e) {
          err = e;
        }
        if (bad) t.true(err instanceof F.BlobError, `${name}: the TypeScript reader gave ${err}`);
        else t.is(err, undefined, `${name} control: ${err}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
