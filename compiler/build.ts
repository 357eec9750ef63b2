// `cfs build`: image layers -> one merged tree -> one blob, file contents into the object store.
//
// Each layer is read once, as a stream (decompressed, digest-checked and tar-parsed on the
// fly), and applied onto the in-memory tree; memory grows with the number of inodes, not with
// content bytes. Publishing order makes a crash harmless: objects (each renamed into place
// complete) -> one syncfs per store -> blob to OUT.tmp-<pid>, fsync, rename to OUT, fsync dir.
// On error no OUT is written (an existing one is untouched) and our temp files are removed.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { InvalidArgumentError, type Command } from 'commander';
import { encodeBlob } from '../format/encode.js';
import type { TreeNode } from '../format/tree.js';
import { S_IFMT, S_IFREG } from '../format/tree.js';
import { HDR, INO, Layout, SEC, SECTION_ENTRY_SIZE, SectionId, inodeOffset } from '../format/layout.js';
import { loadImage, checkLayerTypes, type LayerSource, type LoadedImage } from './image.js';
import { LayerFileReader, LayerReading, layerTar, shortDigest } from './layerio.js';
import { DEFAULT_INLINE_THRESHOLD, LayerError, MAX_INLINE_THRESHOLD, applyLayerStream, newTree, type LayerStats } from './layers.js';
import { StoreWriter, findObject, hashFile, hasObject, objectPath, pidAlive } from './store.js';
import { childrenDeferred, lazyBlobOf, openLazyTree } from '../format/lazy.js';
import { applyOverlayDiff } from './overlaydiff.js';
import { addonBuilt, fsverityEnable, isVerityUnsupported, loadAddon } from '../mounter/addon.js';
import { collectStores } from './options.js';
import { inInitialUserNamespace } from '../mounter/state.js';

export { applyLayerStream, newTree, LayerError } from './layers.js';
export { loadImage } from './image.js';

export interface BuildProgress {
  /** What the build is doing; layer counters apply to 'layers'. */
  phase: 'layers' | 'syncing' | 'writing';
  /** 1-based index of the layer being read. */
  layer: number;
  layers: number;
  /** Tar entries processed so far (all layers). */
  entries: number;
  /** Stored (possibly compressed) layer bytes read so far, and in all. */
  bytesRead: number;
  bytesTotal: number;
}

export interface BuildSummary {
  /** Tar entries processed, all layers. */
  entries: number;
  /** Inodes of the merged tree (the root included). */
  inodes: number;
  /** Content bytes of the merged tree's regular files (its apparent size). */
  bytes: number;
  objectsNew: number;
  objectsPresent: number;
  /** --rootfs --reflink: of objectsNew, those cloned from the tree's files (no data written). */
  objectsCloned?: number;
  /** Regular files whose content is inlined in the blob. */
  inlineFiles: number;
  blobBytes: number;
  seconds: number;
  layers: number;
  /** --verity: objects given fs-verity now, that had it already, on a filesystem without it. */
  verityEnabled?: number;
  verityPresent?: number;
  verityUnsupported?: number;
  /** --from: objects of the parent in none of the given stores (readers need the parent's stores too). */
  parentObjectsMissing?: number;
}

export interface BuildOptions {
  /** "PATH", "PATH:TAG" (OCI) or "PATH:REPO:TAG" (docker-archive). */
  image: string;
  out: string;
  stores: string[];
  inlineThreshold?: number;
  platform?: string;
  onProgress?: (p: BuildProgress) => void;
  /** Enable fs-verity on the blob's objects where the store's filesystem supports it. */
  verity?: boolean;
  /**
   * A blob to start from: `image` is then an overlayfs upper directory (whiteouts are 0/0
   * character devices, opaque directories carry trusted.overlay.opaque=y) applied onto it, as the
   * snapshotter's Commit does. Its objects must be in `stores` already; only the upper's are added.
   */
  from?: string;
  /**
   * With `from`: the overlay that wrote the upper kept its bookkeeping in user.overlay.* (mounted
   * with `userxattr`, from a user namespace). Default: so inside a user namespace (where such an
   * overlay is the only kind, and trusted.* cannot be read), trusted.overlay.* elsewhere.
   */
  userxattr?: boolean;
  /**
   * `image` is a plain directory tree, a root filesystem taken as it is (modes, owners, times,
   * xattrs, devices, hardlinks), as mkcomposefs takes one: nothing is interpreted as a whiteout.
   */
  rootfs?: boolean;
  /**
   * With `rootfs`: new objects of 256 KiB or more are clones of the tree's files where a store
   * is on the tree's filesystem and it clones (XFS with reflink, btrfs): no data written, the
   * space shared. As fast as copying here; not the default (measured on one VM only).
   */
  reflink?: boolean;
  /** A layer's "./" entry: applied to the image's root (default, as umoci and docker), or ignored (as containerd). */
  rootEntries?: 'apply' | 'ignore';
}

export interface TreeOptions {
  image: string;
  /** No stores: contents are hashed but stored nowhere (tests, dry runs). */
  store?: StoreWriter | null;
  inlineThreshold?: number;
  platform?: string;
  onProgress?: (p: BuildProgress) => void;
}

function checkThreshold(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > MAX_INLINE_THRESHOLD) {
    throw new Error(`--inline-threshold must be an integer in 0..${MAX_INLINE_THRESHOLD}, got ${n}`);
  }
  return n;
}

/** Label of a layer in messages: short digest (docker's 12 hex digits). */
function layerLabel(l: LayerSource): string {
  return shortDigest(l.digest);
}

/** After a failure inside a layer, a digest mismatch explains it better: re-read and check. */
async function digestMismatch(layer: LayerSource): Promise<string | null> {
  const reading = new LayerReading(layer.check);
  try {
    if (layer.check.scope === 'stored') {
      for await (const c of layer.open()) reading.stored(c as Buffer);
    } else {
      for await (const _ of layerTar(layer.open(), reading)) { /* hashing */ }
    }
  } catch {
    return null; // unreadable: keep the original error
  }
  try {
    reading.verify();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Read one stored layer (decompress by magic, verify its digest) and apply it onto `tree`. */
export async function applyLayer(
  tree: TreeNode,
  layer: LayerSource,
  opts: {
    store: StoreWriter | null;
    inlineThreshold: number;
    stats: LayerStats;
    onEntry?: () => void;
    onBytes?: (stored: number) => void;
    /** Reads (and digests) the layer file on another thread, when the layer says where it is. */
    files?: LayerFileReader | null;
    rootEntries?: 'apply' | 'ignore';
  },
): Promise<void> {
  const label = layerLabel(layer);
  const reading = new LayerReading(layer.check);
  let raw: Readable | AsyncGenerator<Buffer> | null = null;
  try {
    raw = opts.files && layer.range ? opts.files.read(layer.range(), reading) : layer.open();
    const ctx = {
      layer: label,
      inlineThreshold: opts.inlineThreshold,
      store: opts.store,
      stats: opts.stats,
      rootEntries: opts.rootEntries,
      onEntry: () => {
        opts.onBytes?.(reading.storedBytes);
        opts.onEntry?.();
      },
    };
    await applyLayerStream(tree, layerTar(raw, reading), ctx);
    reading.verify();
  } catch (err) {
    if (raw && 'destroy' in raw) raw.destroy();
    else await raw?.return(undefined);
    const mismatch = await digestMismatch(layer);
    if (mismatch) throw new LayerError(label, undefined, mismatch);
    if (err instanceof LayerError) throw err;
    throw new LayerError(label, undefined, (err as Error)?.message ?? String(err));
  }
}

/** Apply every layer of an opened image onto a new tree. */
export async function compileLayers(
  image: LoadedImage,
  opts: { store: StoreWriter | null; inlineThreshold: number; onProgress?: (p: BuildProgress) => void; rootEntries?: 'apply' | 'ignore' },
): Promise<{ root: TreeNode; entries: number }> {
  checkLayerTypes(image.layers, layerLabel);
  const root = newTree();
  const stats: LayerStats = { entries: 0 };
  const sizeOf = (l: LayerSource) => (Number.isFinite(l.size) ? l.size : 0);
  const bytesTotal = image.layers.reduce((s, l) => s + sizeOf(l), 0);
  let bytesBefore = 0;
  let layerBytes = 0;
  let lastReport = 0;
  const layers = image.layers.length;
  const files = image.layers.some((l) => l.range) ? new LayerFileReader() : null;
  try {
    for (let i = 0; i < layers; i++) {
      const report = (force: boolean) => {
        const now = Date.now();
        if (!opts.onProgress || (!force && now - lastReport < 100)) return;
        lastReport = now;
        opts.onProgress({ phase: 'layers', layer: i + 1, layers, entries: stats.entries, bytesRead: bytesBefore + layerBytes, bytesTotal });
      };
      layerBytes = 0;
      report(true);
      await applyLayer(root, image.layers[i], {
        store: opts.store,
        inlineThreshold: opts.inlineThreshold,
        stats,
        onBytes: (n) => { layerBytes = n; },
        // The clock is read every 64 entries; the display itself is limited to 10 updates a second.
        onEntry: () => { if ((stats.entries & 63) === 0) report(false); },
        files,
        rootEntries: opts.rootEntries,
      });
      bytesBefore += sizeOf(image.layers[i]);
      layerBytes = 0;
    }
  } finally {
    await files?.close();
  }
  return { root, entries: stats.entries };
}

/** Load an image and compile its merged tree (contents stored when a store is given). */
export async function buildTree(opts: TreeOptions): Promise<{ root: TreeNode; entries: number; image: LoadedImage }> {
  const inlineThreshold = checkThreshold(opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD);
  const image = loadImage(opts.image, { platform: opts.platform });
  try {
    const r = await compileLayers(image, { store: opts.store ?? null, inlineThreshold, onProgress: opts.onProgress });
    return { ...r, image };
  } finally {
    image.close();
  }
}

/** Counts read back from the encoded blob (its header and INODES section), so they are exact. */
export function blobStats(blob: Buffer): { inodes: number; bytes: number; inlineFiles: number } {
  const inodes = Number(blob.readBigUInt64LE(HDR.inodeCount));
  const inodesAt = Number(blob.readBigUInt64LE(HDR.sections + SectionId.INODES * SECTION_ENTRY_SIZE + SEC.offset));
  let inlineFiles = 0;
  for (let i = 0; i < inodes; i++) {
    const at = inodesAt + inodeOffset(i);
    if ((blob.readUInt32LE(at + INO.mode) & S_IFMT) === S_IFREG && blob[at + INO.layout] === Layout.INLINE) inlineFiles++;
  }
  return { inodes, bytes: Number(blob.readBigUInt64LE(HDR.dataBytes)), inlineFiles };
}

/** OUT is replaced by rename(): it may be absent or a regular file, nothing else (a directory: EISDIR after the whole build). */
export function checkOutput(out: string): void {
  const st = fs.lstatSync(out, { throwIfNoEntry: false });
  if (st && !st.isFile()) throw new Error(`${out}: exists and is not a regular file (-o names the blob file to write)`);
}

/** Remove `OUT.tmp-<pid>` files that killed builds of the same OUT left behind. */
function removeStaleBlobTemps(out: string): void {
  const dir = path.dirname(out);
  const prefix = path.basename(out) + '.tmp-';
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (Number.isInteger(pid) && pid !== process.pid && !pidAlive(pid)) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** Write `data` to `file` so that `file` is either absent/old or complete, and durable. */
export async function writeFileAtomic(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fh = await fsp.open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  const dir = await fsp.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Compile an image into OUT plus objects in the stores; returns the summary. */
export async function buildImage(opts: BuildOptions): Promise<BuildSummary> {
  const started = performance.now();
  // --from without a threshold keeps the parent's (applyUpperOnto): its inline files stay inline
  let inlineThreshold = checkThreshold(opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD);
  if (!opts.stores || opts.stores.length === 0) throw new Error('at least one --store is required');
  const out = path.resolve(opts.out);
  const outDir = path.dirname(out);
  if (!fs.statSync(outDir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${outDir}: no such directory`);
  checkOutput(out);
  removeStaleBlobTemps(out);
  if (opts.verity) loadAddon(); // not built: say so before the work, not after
  if (opts.rootfs && opts.from !== undefined) throw new Error('--rootfs and --from do not go together (--from takes an overlay upper)');
  if (opts.reflink && !opts.rootfs) throw new Error('--reflink goes with --rootfs (it clones the files of a directory tree)');
  if (opts.rootfs && opts.platform !== undefined) throw new Error('--platform picks an image of an index; a --rootfs directory has none');
  if (opts.rootEntries === 'ignore' && (opts.rootfs || opts.from !== undefined)) throw new Error('--ignore-root-entries is about image layers; --rootfs and --from take a directory');
  const image = opts.from === undefined && !opts.rootfs ? loadImage(opts.image, { platform: opts.platform }) : null;
  let store: StoreWriter | null = null;
  try {
    store = new StoreWriter(opts.stores, { startNow: true });
    let compiled: { root: TreeNode; entries: number };
    let parentMissing = 0;
    let parentFirstMissing = '';
    if (image) {
      compiled = await compileLayers(image, { store, inlineThreshold, onProgress: opts.onProgress, rootEntries: opts.rootEntries });
    } else if (opts.rootfs) {
      compiled = await compileRootfs(opts.image, store, inlineThreshold, opts.reflink ?? false);
    } else {
      const applied = await applyUpperOnto(opts.from!, opts.image, store, opts.inlineThreshold, opts.userxattr ?? !inInitialUserNamespace());
      inlineThreshold = applied.inlineThreshold;
      compiled = applied;
      parentMissing = applied.parentMissing.count;
      parentFirstMissing = applied.parentMissing.first;
    }
    const { root, entries } = compiled;
    const layers = image?.layers.length ?? 0;
    const layerBytes = image?.layers.reduce((n, l) => n + l.size, 0) ?? 0;
    const finishing = { layer: layers, layers, entries, bytesRead: layerBytes, bytesTotal: layerBytes };
    opts.onProgress?.({ phase: 'syncing', ...finishing });
    await store.flush();
    // Before the syncfs, which then also makes the Merkle trees durable.
    const verity = opts.verity ? enableObjectVerity(root, store.stores) : {};
    // The syncfs runs in a child process: encode the blob meanwhile (seconds for a million
    // inodes), and publish it only once the objects it names are durable.
    const synced = store.startSync();
    opts.onProgress?.({ phase: 'writing', ...finishing });
    let blob: Buffer;
    try {
      blob = encodeBlob(root, { inlineThreshold, warn: (m) => process.stderr.write(`cfs: warning: ${m}\n`) });
    } catch (err) {
      await synced.catch(() => {});
      throw err;
    }
    await synced;
    await writeFileAtomic(out, blob);
    if (parentMissing > 0) {
      // said once the blob is written (a failed build says only why it failed)
      process.stderr.write(`cfs: warning: ${parentMissing} of the parent's objects ${parentMissing === 1 ? 'is' : 'are'} in none of the given stores (first: ${parentFirstMissing}): mount ${path.basename(out)} with the parent's stores too\n`);
    }
    const st = blobStats(blob);
    return {
      entries,
      inodes: st.inodes,
      bytes: st.bytes,
      objectsNew: store.stats.objectsNew,
      objectsPresent: store.stats.objectsPresent,
      inlineFiles: st.inlineFiles,
      blobBytes: blob.length,
      seconds: Math.round(performance.now() - started) / 1000,
      layers,
      ...(opts.from !== undefined ? { parentObjectsMissing: parentMissing } : {}),
      ...(opts.reflink ? { objectsCloned: store.stats.objectsCloned } : {}),
      ...verity,
    };
  } catch (err) {
    await store?.abort();
    throw err;
  } finally {
    await store?.close();
    image?.close();
  }
}

/** `cfs build --rootfs DIR`: the directory tree as it is, onto an empty tree. */
async function compileRootfs(dir: string, store: StoreWriter, inlineThreshold: number, reflink: boolean): Promise<{ root: TreeNode; entries: number }> {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (!st) throw new Error(`${dir}: no such directory`);
  if (!st.isDirectory()) throw new Error(`${dir}: not a directory (--rootfs takes a directory tree)`);
  const root = newTree();
  // --reflink: the files' extents shared with the store's objects where the filesystem can
  // (StoreWriter.putClone); a tree that stays, unlike an upper about to go
  const stats = await applyOverlayDiff(root, dir, { store, inlineThreshold, whiteouts: false, clone: reflink });
  return { root, entries: stats.entries };
}

/**
 * `cfs build --from PARENT UPPER`: the upper applied onto a tree over the parent blob, which
 * the encoder then re-encodes incrementally (format/lazy.ts): what the upper does not touch is
 * copied from the parent, never decoded.
 */
async function applyUpperOnto(
  parentBlob: string, upper: string, store: StoreWriter, threshold: number | undefined, userxattr: boolean,
): Promise<{ root: TreeNode; entries: number; inlineThreshold: number; parentMissing: { count: number; first: string } }> {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(parentBlob);
  } catch (err: any) {
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'a directory, not a blob' : err.message;
    throw new Error(`${parentBlob}: ${why}`);
  }
  const root = openLazyTree(bytes, { verify: true });
  const inlineThreshold = threshold ?? bytes.readUInt32LE(HDR.inlineThreshold); // checked by openLazyTree
  if (!fs.statSync(upper, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${upper}: not a directory`);
  const stats = await applyOverlayDiff(root, upper, { store, inlineThreshold, whiteouts: true, overlayXattrs: userxattr ? 'user' : 'trusted' });
  return { root, entries: stats.entries, inlineThreshold, parentMissing: parentObjectsMissing(root, store.stores) };
}

/**
 * The new blob names the parent's objects: those in none of the given stores must be in a store
 * its readers are given (a new store for the diff's objects only is a fair use), or reads give
 * EIO and only fsck says why; `cfs build` warns. One lstat per object of the parent (what the
 * writer pays to see an object is present).
 */
function parentObjectsMissing(root: TreeNode, stores: string[]): { count: number; first: string } {
  const lazy = lazyBlobOf(root);
  let count = 0;
  let first = '';
  for (const hex of lazy?.reader.digestsHex() ?? []) {
    if (findObject(stores, hex) !== null) continue;
    if (count++ === 0) first = hex;
  }
  return { count, first };
}

/** Digests of the objects a tree uses, each once (hardlinks share a node). */
function objectDigests(root: TreeNode): Buffer[] {
  const seen = new Map<string, Buffer>();
  // A tree over a parent blob (--from): the parent's digests, read from its DIGESTS section,
  // stand for the directories nobody opened (walking them would decode the whole parent); a
  // digest the layer dropped gets fs-verity too, which costs nothing to what stays correct.
  const lazy = lazyBlobOf(root);
  if (lazy) for (const hex of lazy.reader.digestsHex()) seen.set(Buffer.from(hex, 'hex').toString('latin1'), Buffer.from(hex, 'hex'));
  const stack = [root];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (node.digest && !node.inline) seen.set(node.digest.toString('latin1'), node.digest);
    if (childrenDeferred(node)) continue;
    for (const child of node.children?.values() ?? []) stack.push(child);
  }
  return [...seen.values()];
}

/**
 * --verity, as a pass after the objects are written: StoreWriter writes them from two places
 * (here and its worker thread) and keeps no list, so this enables fs-verity on every object the
 * blob uses, new or not, in the first store holding it. A store whose filesystem has no
 * fs-verity, or is read-only, is skipped after its first refusal, and counted.
 */
function enableObjectVerity(root: TreeNode, stores: string[]): { verityEnabled: number; verityPresent: number; verityUnsupported: number } {
  const counts = { verityEnabled: 0, verityPresent: 0, verityUnsupported: 0 };
  const unsupported = new Set<string>();
  for (const digest of objectDigests(root)) {
    const store = stores.find((s) => hasObject(s, digest));
    if (store === undefined) throw new Error(`object ${digest.toString('hex')} vanished from the stores`);
    if (unsupported.has(store)) {
      counts.verityUnsupported++;
      continue;
    }
    try {
      if (fsverityEnable(objectPath(store, digest))) counts.verityEnabled++;
      else counts.verityPresent++;
    } catch (err) {
      if (!isVerityUnsupported(err) && (err as NodeJS.ErrnoException).code !== 'EROFS') throw err;
      unsupported.add(store);
      counts.verityUnsupported++;
    }
  }
  return counts;
}

// ---------------------------------------------------------------- command line

function mib(n: number): string {
  return (n / (1 << 20)).toFixed(1);
}

/** A one-line progress display on stderr when it is a terminal; nothing otherwise. */
function progressDisplay(): { onProgress?: (p: BuildProgress) => void; clear: () => void } {
  const tty = process.stderr;
  if (!tty.isTTY) return { clear: () => {} };
  // Said where a person watches: where the addon could not be built (npm ci tries, in the
  // prepare script), the build still works, only slower (the --json summary and scripts stay as they are).
  if (!addonBuilt()) tty.write('cfs build: the Node addon is not built (npm run build:addon): objects are written through temp files and renames, which is slower\n');
  let shown = false;
  return {
    onProgress: (p) => {
      const pct = p.bytesTotal > 0 ? ` (${Math.floor((100 * p.bytesRead) / p.bytesTotal)}%)` : '';
      const phase = p.phase === 'syncing' ? '  syncing objects' : p.phase === 'writing' ? '  writing blob' : '';
      const line = `layer ${p.layer}/${p.layers}  ${mib(p.bytesRead)}/${mib(p.bytesTotal)} MiB${pct}  ${p.entries} entries${phase}`;
      // Cut to the terminal width: a wrapped line would not be overwritten by the next \r.
      tty.write(`\r\x1b[K${line.slice(0, Math.max(20, (tty.columns || 80) - 1))}`);
      shown = true;
    },
    clear: () => {
      if (shown) tty.write('\r\x1b[K');
      shown = false;
    },
  };
}

function parseThreshold(value: string): number {
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!(n <= MAX_INLINE_THRESHOLD)) throw new InvalidArgumentError(`expected an integer in 0..${MAX_INLINE_THRESHOLD}`);
  return n;
}

export function registerBuild(program: Command): void {
  program
    .command('build')
    .description('compile a container image (docker-archive, oci-archive or OCI layout) into a blob and objects')
    .argument('<image>', 'PATH, PATH:TAG (OCI) or PATH:REPO:TAG (docker-archive); skopeo\'s oci:, oci-archive: and docker-archive: prefixes are accepted')
    .requiredOption('-o, --output <file>', 'blob to write')
    .option('--store <dir>', 'object store (repeatable; new objects go to the one with most free space)', collectStores)
    .option('--inline-threshold <n>', 'inline files of 1..N bytes into the blob (0..4096)', parseThreshold, DEFAULT_INLINE_THRESHOLD)
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image (default: this machine)')
    .option('--json', 'print a JSON summary on stdout')
    .option('--verity', "enable fs-verity on the objects where the store's filesystem supports it")
    .option('--rootfs', 'IMAGE is a plain directory tree (a root filesystem), taken as it is: modes, owners, times, xattrs, devices, hardlinks (as mkcomposefs takes one; no whiteouts)')
    .option('--reflink', 'with --rootfs: new objects of 256 KiB or more are clones of the files (no data written, space shared) where a store is on the tree\'s filesystem and it can clone (XFS, btrfs)')
    .option('--ignore-root-entries', "skip a layer's entry for the root directory (\"./\") as containerd does, where umoci and docker apply it (the default): the blob the snapshotter makes of the image")
    .option('--from <blob>', 'IMAGE is an overlayfs upper directory (0/0 char device whiteouts, trusted.overlay.opaque) to apply onto this blob, incrementally; its objects must be in the stores; the inline threshold defaults to the blob\'s')
    .option('--userxattr', 'with --from: the overlay was mounted with userxattr (from a user namespace: user.overlay.opaque); the default inside a user namespace')
    .option('--no-userxattr', 'with --from: the overlay kept its bookkeeping in trusted.overlay.* (mounted by the host\'s root); the default outside a user namespace')
    .action(async (image: string, o: { output: string; store?: string[]; inlineThreshold: number; platform?: string; json?: boolean; verity?: boolean; from?: string; rootfs?: boolean; ignoreRootEntries?: boolean; userxattr?: boolean; reflink?: boolean }, cmd: Command) => {
      if (o.userxattr !== undefined && o.from === undefined) throw new Error('--userxattr and --no-userxattr go with --from (an overlay upper)');
      const stores = o.store ?? [];
      if (stores.length === 0) throw new Error('build: at least one --store DIR is required');
      const progress = progressDisplay();
      let summary: BuildSummary;
      try {
        summary = await buildImage({
          image,
          out: o.output,
          stores,
          // with --from, no --inline-threshold means the parent's
          inlineThreshold: o.from && cmd.getOptionValueSource('inlineThreshold') === 'default' ? undefined : o.inlineThreshold,
          platform: o.platform,
          onProgress: progress.onProgress,
          verity: o.verity,
          from: o.from,
          userxattr: o.userxattr,
          rootfs: o.rootfs,
          reflink: o.reflink,
          rootEntries: o.ignoreRootEntries ? 'ignore' : 'apply',
        });
      } finally {
        progress.clear();
      }
      if (summary.verityUnsupported) {
        process.stderr.write(`cfs: warning: --verity: ${summary.verityUnsupported} objects are on a filesystem without fs-verity (or read-only): left without it\n`);
      }
      // the blob's fs-verity digest: what cfs mount --digest / -o digest= pin
      if (o.json) process.stdout.write(JSON.stringify({ ...summary, out: path.resolve(o.output), digest: (await hashFile(o.output)).toString('hex') }) + '\n');
    });
}
