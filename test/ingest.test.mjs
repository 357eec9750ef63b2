// snapshotter/ingest.ts: reading a blob while containerd writes it, on real files: the head is
// read without moving the tail, and finish() names the blob only if the very inode was committed.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IngestTail, looksLikeTar } from '../dist/snapshotter/ingest.js';

function content() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-ingest-'));
  fs.mkdirSync(path.join(dir, 'ingest', 'x'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  return { dir, data: path.join(dir, 'ingest', 'x', 'data'), blobs: path.join(dir, 'blobs') };
}

test('head() reads the start through the tail\'s descriptor, after the file left the ingest directory too', async (t) => {
  const c = content();
  t.teardown(() => fs.rmSync(c.dir, { recursive: true, force: true }));
  const bytes = crypto.randomBytes(3 << 20);
  bytes.write('ustar', 257, 'latin1');
  fs.writeFileSync(c.data, bytes.subarray(0, 1000));
  const tail = await IngestTail.open(c.data);
  t.true(looksLikeTar(await tail.head(512)));
  t.true((await tail.head(4096)).equals(bytes.subarray(0, 1000)));
  // containerd writes the rest, then commits the same inode under its digest
  fs.appendFileSync(c.data, bytes.subarray(1000));
  const hex = crypto.createHash('sha256').update(bytes).digest('hex');
  fs.renameSync(c.data, path.join(c.blobs, 'sha256', hex));
  t.true((await tail.head(512)).equals(bytes.subarray(0, 512)));
  const got = [];
  for await (const chunk of tail.chunks()) got.push(Buffer.from(chunk));
  t.true(Buffer.concat(got).equals(bytes), 'head() did not move the tail');
  t.deepEqual(await tail.finish(c.blobs), { digest: `sha256:${hex}`, size: bytes.length });
});

test('finish() refuses a blob that is another inode than the one read', async (t) => {
  const c = content();
  t.teardown(() => fs.rmSync(c.dir, { recursive: true, force: true }));
  const bytes = crypto.randomBytes(5000);
  fs.writeFileSync(c.data, bytes);
  const tail = await IngestTail.open(c.data);
  const hex = crypto.createHash('sha256').update(bytes).digest('hex');
  fs.writeFileSync(path.join(c.blobs, 'sha256', hex), bytes); // same bytes, another file
  fs.rmSync(c.data);
  t.is(await tail.finish(c.blobs), null);
  t.regex(tail.why, /inode/);
});
