// The unionblob snapshotter: containerd's snapshot model on top of unionblob blobs.
//
// Kinds and what each one is on disk (ROOT/snapshots/<id>/):
//   committed  blob                 the whole chain up to this layer, ONE unionblob blob
//   active     fs/ (+ work/)        a writable upper; with a parent: overlay on the parent's blob mount
//   view       fs/ (empty, no parent) or nothing: a read-only bind of the parent's blob mount
// A committed snapshot's blob is mounted at ROOT/mounts/<id> (kernel module, else FUSE) while
// active or view snapshots sit on it, and unmounted when the last one goes.
//
// State machine (containerd's rules):
//   Prepare(key, parent) -> active     View(key, parent) -> view       parent must be committed
//   Commit(name, key): active -> committed (the upper is compiled onto the parent's tree into a
//   new blob, then dropped)             Remove(key): any kind without children -> gone
//
// Sharing the object store with `cfs build` (compiler/roots.ts): every committed blob is a gc
// root of each store (registered before the blob is written, dropped with its snapshot), and
// steps that write objects hold the stores' lock shared, so `cfs gc --store S` keeps what
// snapshots need and never runs in the middle of a commit. Cleanup, the other way round, only
// deletes objects this snapshotter created, keeps those any root of the store (a `cfs build`
// blob) references, and holds the lock exclusively while it does.
//
// Crash safety: rows are the truth. Directories are created under a temp name and renamed to
// their id inside the transaction that inserts the row; blobs are durable (objects synced,
// blob fsynced and renamed) before the transaction that marks a snapshot committed; removals
// delete the row first. Leftovers of an interrupted step (a directory without a row, an upper
// of a committed snapshot, a mount nobody needs, objects no blob references) are exactly what
// Cleanup (and startup) remove. All mutating calls are serialized by one async lock.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { decodeTree } from '../format/decode.js';
import { encodeBlob } from '../format/encode.js';
import type { TreeNode } from '../format/tree.js';
import { writeFileAtomic } from '../compiler/build.js';
import { referencedDigests, rootDigests } from '../compiler/gc.js';
import { openBlobFile } from '../compiler/inspect.js';
import { LayerReading, layerTar, type LayerDigestCheck } from '../compiler/layerio.js';
import { DEFAULT_INLINE_THRESHOLD, applyLayerStream, newTree } from '../compiler/layers.js';
import { applyOverlayDiff } from '../compiler/overlaydiff.js';
import { addRoot, lockStores, readRoots, removeRoot } from '../compiler/roots.js';
import { StoreWriter, findObject, hashBuffer, objectPath } from '../compiler/store.js';
import { chooseBackend, mountBlob, umountTarget } from '../mounter/mount.js';
import { isMountPoint, readMountinfo } from '../mounter/mountinfo.js';
import type { Backend } from '../mounter/state.js';
import { ContentClient, LABEL_SNAPSHOT_REF, type LayerRef } from './content.js';
import { Kind, MetaStore, SnapshotError, type KindValue, type SnapshotRow } from './db.js';
import { matches, parseFilters } from './filters.js';

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: 'VIEW' | 'ACTIVE' | 'COMMITTED' | 'UNKNOWN';
  createdNs: bigint;
  updatedNs: bigint;
  labels: Record<string, string>;
}

export interface SnapshotterOptions {
  root: string;
  /** Object stores (default ROOT/store); new objects go to the one with most free space. */
  stores?: string[];
  backend?: Backend | 'auto';
  /** containerd's gRPC socket, for the fast path (reading layers from its content store). */
  containerdAddress?: string;
  contentClient?: ContentClient;
  inlineThreshold?: number;
  log?: (line: string) => void;
}

const KIND_NAMES: Record<number, SnapshotInfo['kind']> = { 0: 'UNKNOWN', 1: 'VIEW', 2: 'ACTIVE', 3: 'COMMITTED' };

/** A StoreWriter that remembers which objects it created (they are ours to collect later). */
// The ownership is recorded BEFORE the object is handed to the writer, so a snapshotter killed
// mid-commit leaves no object that is on disk but unknown (Cleanup collects it). Streamed
// contents (> 8 MiB) are only known after they are renamed into place: a kill in that window
// can leak one object.
class OwnedStoreWriter extends StoreWriter {
  readonly created = new Set<string>();

  constructor(stores: string[], private readonly own: (hex: string) => void) {
    super(stores);
  }

  override async putBuffer(content: Buffer): Promise<Buffer> {
    const digest = hashBuffer(content);
    const hex = digest.toString('hex');
    if (!this.created.has(hex) && !findObject(this.stores, digest)) {
      this.own(hex);
      this.created.add(hex);
    }
    return super.putBuffer(content);
  }

  override async putStream(chunks: AsyncIterable<Buffer>, size: number): Promise<Buffer> {
    const before = this.stats.objectsNew;
    const digest = await super.putStream(chunks, size);
    if (this.stats.objectsNew > before) {
      this.own(digest.toString('hex'));
      this.created.add(digest.toString('hex'));
    }
    return digest;
  }
}

/** One-at-a-time lock for the mutating calls. */
class Lock {
  private tail: Promise<void> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(() => undefined, () => undefined);
    return result;
  }
}

export class Snapshotter {
  readonly root: string;
  readonly stores: string[];
  readonly db: MetaStore;
  readonly backend: Backend;
  readonly content: ContentClient | null;
  private readonly inlineThreshold: number;
  private readonly log: (line: string) => void;
  private readonly lock = new Lock();
  /** Counters for tests and logs. */
  readonly counters = { fastPath: 0, slowCommits: 0, upperDirs: 0 };

  constructor(opts: SnapshotterOptions) {
    this.root = path.resolve(opts.root);
    this.log = opts.log ?? (() => {});
    for (const d of ['snapshots', 'mounts', 'tmp']) fs.mkdirSync(path.join(this.root, d), { recursive: true, mode: 0o700 });
    this.stores = (opts.stores && opts.stores.length > 0 ? opts.stores : [path.join(this.root, 'store')]).map((s) => path.resolve(s));
    for (const s of this.stores) fs.mkdirSync(s, { recursive: true });
    this.db = new MetaStore(path.join(this.root, 'metadata.db'));
    this.backend = chooseBackend(opts.backend ?? 'auto', (l) => this.log(`mount backend: ${l}`));
    this.content = opts.contentClient ?? null;
    this.inlineThreshold = opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD;
  }

  // ------------------------------------------------------------------------------- paths

  private dir(id: number): string { return path.join(this.root, 'snapshots', String(id)); }
  private upper(id: number): string { return path.join(this.dir(id), 'fs'); }
  private work(id: number): string { return path.join(this.dir(id), 'work'); }
  private blob(id: number): string { return path.join(this.dir(id), 'blob'); }
  private mountPoint(id: number): string { return path.join(this.root, 'mounts', String(id)); }
  private tmpPath(what: string): string {
    return path.join(this.root, 'tmp', `${what}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
  }

  // ------------------------------------------------------------------------------- startup

  /** After a restart: what Cleanup does, except the object collection (cheap and safe to run). */
  async recover(): Promise<void> {
    await this.lock.run(async () => {
      await this.sweepDirs();
      await this.sweepMounts();
      await this.syncRoots();
      for (const row of this.db.all()) {
        if (row.kind !== Kind.COMMITTED && row.parentId !== null) await this.ensureMounted(row.parentId);
      }
    });
  }

  close(): void {
    this.content?.close();
    this.db.close();
  }

  // ------------------------------------------------------------------------------- queries

  info(row: SnapshotRow): SnapshotInfo {
    return { name: row.key, parent: row.parent, kind: KIND_NAMES[row.kind], createdNs: row.createdNs, updatedNs: row.updatedNs, labels: row.labels };
  }

  stat(key: string): SnapshotInfo {
    return this.info(this.db.mustGet(key));
  }

  list(filters: string[]): SnapshotInfo[] {
    let parsed;
    try {
      parsed = parseFilters(filters);
    } catch (err: any) {
      throw new SnapshotError('InvalidArgument', err.message);
    }
    return this.db.all().map((r) => this.info(r)).filter((i) => matches({ ...i, kind: i.kind.toLowerCase() }, parsed));
  }

  async mounts(key: string): Promise<Mount[]> {
    const row = this.db.mustGet(key);
    if (row.kind !== Kind.ACTIVE && row.kind !== Kind.VIEW) {
      throw new SnapshotError('FailedPrecondition', `snapshot ${key} is not active or a view`);
    }
    if (row.parentId !== null) await this.lock.run(() => this.ensureMounted(row.parentId!));
    return this.mountsOf(row);
  }

  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const row = this.db.mustGet(key);
    if (row.kind === Kind.ACTIVE) return diskUsage(this.upper(row.id));
    return { size: row.size, inodes: row.inodes };
  }

  private mountsOf(row: SnapshotRow): Mount[] {
    if (row.kind === Kind.VIEW) {
      const src = row.parentId === null ? this.upper(row.id) : this.mountPoint(row.parentId);
      return [{ type: 'bind', source: src, options: ['ro', 'rbind'] }];
    }
    if (row.parentId === null) return [{ type: 'bind', source: this.upper(row.id), options: ['rw', 'rbind'] }];
    const options = [`workdir=${this.work(row.id)}`, `upperdir=${this.upper(row.id)}`, `lowerdir=${this.mountPoint(row.parentId)}`];
    // containerd applies a layer straight into an overlay's upperdir when it can find that
    // option, and then fails on a hardlink whose target is in a lower layer (its own overlayfs
    // snapshotter too). For layer extraction we hand the options over as ONE string (the kernel
    // sees the same option text), so containerd mounts the overlay and applies through it.
    if (isExtractKey(row.key)) return [{ type: 'overlay', source: 'overlay', options: [options.join(',')] }];
    return [{ type: 'overlay', source: 'overlay', options }];
  }

  // ------------------------------------------------------------------------------- Prepare / View

  prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.lock.run(() => this.create(Kind.ACTIVE, key, parent, storedLabels(labels)));
  }

  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.lock.run(() => this.create(Kind.VIEW, key, parent, storedLabels(labels)));
  }

  private parentRow(parent: string): SnapshotRow | null {
    if (!parent) return null;
    const p = this.db.get(parent);
    if (!p) throw new SnapshotError('NotFound', `parent snapshot ${parent} does not exist`);
    if (p.kind !== Kind.COMMITTED) throw new SnapshotError('InvalidArgument', `parent ${parent} is not a committed snapshot`);
    return p;
  }

  private async create(kind: KindValue, key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    if (!key) throw new SnapshotError('InvalidArgument', 'empty snapshot key');
    const target = labels[LABEL_SNAPSHOT_REF];
    if (kind === Kind.ACTIVE && target && this.content) {
      const done = this.db.get(target);
      if (done && done.kind === Kind.COMMITTED) {
        throw new SnapshotError('AlreadyExists', `target snapshot ${target} already exists`);
      }
      if (!this.db.get(key) && await this.fastPath(key, target, parent, labels)) {
        throw new SnapshotError('AlreadyExists', `target snapshot ${target} already exists (compiled from containerd's content store)`);
      }
    }
    if (this.db.get(key)) throw new SnapshotError('AlreadyExists', `snapshot ${key} already exists`);
    const p = this.parentRow(parent);
    const needsDir = kind === Kind.ACTIVE || p === null;
    const tmp = this.tmpPath('new');
    if (needsDir) {
      await fsp.mkdir(path.join(tmp, 'fs'), { recursive: true, mode: 0o755 });
      if (kind === Kind.ACTIVE && p) {
        await fsp.mkdir(path.join(tmp, 'work'), { mode: 0o700 });
        // The upper's root starts as the parent's root, so a commit without a "./" entry keeps it.
        copyRootMetadata(this.rootOf(p), path.join(tmp, 'fs'));
      }
    }
    let id: number;
    try {
      id = this.db.tx(() => {
        const newId = this.db.insert(key, p?.id ?? null, kind, labels);
        if (needsDir) {
          fs.rmSync(this.dir(newId), { recursive: true, force: true }); // an orphan of a rolled-back insert
          fs.renameSync(tmp, this.dir(newId));
        }
        return newId;
      });
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
    if (needsDir && kind === Kind.ACTIVE) this.counters.upperDirs++;
    if (p) await this.ensureMounted(p.id);
    const row = this.db.byId(id)!;
    this.log(`${kind === Kind.ACTIVE ? 'prepare' : 'view'} ${key} (id ${id}) on ${parent || '(no parent)'}`);
    return this.mountsOf(row);
  }

  /** Root directory metadata of a committed snapshot's tree (cheap: the root inode only). */
  private rootOf(row: SnapshotRow): { mode: number; uid: number; gid: number; mtimeSec: number; mtimeNsec: number } {
    const r = openBlobFile(this.blob(row.id));
    try {
      const it = r.walk().next();
      const inode = it.value!.inode;
      return { mode: inode.mode, uid: inode.uid, gid: inode.gid, mtimeSec: Number(inode.mtimeSec), mtimeNsec: inode.mtimeNsec };
    } finally {
      r.close();
    }
  }

  private loadTree(p: SnapshotRow | null): TreeNode {
    if (!p) return newTree();
    const r = openBlobFile(this.blob(p.id));
    try {
      return decodeTree(r);
    } finally {
      r.close();
    }
  }

  // ------------------------------------------------------------------------------- fast path

  /**
   * containerd names the chain id it wants (containerd.io/snapshot.ref): find that layer in
   * containerd's content store, compile its tar onto the parent's tree, commit under the chain
   * id. Nothing is unpacked to disk. False when the layer cannot be found (slow path then).
   */
  private async fastPath(key: string, target: string, parent: string, labels: Record<string, string>): Promise<boolean> {
    const namespace = key.split('/')[0];
    const p = this.parentRow(parent);
    let layer;
    try {
      layer = await this.content!.findLayer(namespace, target, labels);
    } catch (err: any) {
      this.log(`fast path: cannot search containerd's content store (${err.message}); applying the slow path`);
      return false;
    }
    if (!layer) {
      this.log(`fast path: no layer with chain id ${target} in namespace ${namespace}; slow path`);
      return false;
    }
    await this.writing(() => this.compileLayer(namespace, layer, target, p, labels));
    return true;
  }

  /** The fast path's work, under the stores' shared lock: layer tar + parent tree -> committed blob. */
  private async compileLayer(namespace: string, layer: LayerRef, target: string, p: SnapshotRow | null, labels: Record<string, string>): Promise<void> {
    const started = performance.now();
    const check: LayerDigestCheck = layer.diffId
      ? { digest: layer.diffId, scope: 'uncompressed' }
      : { digest: layer.digest, scope: 'stored', size: layer.size };
    const reading = new LayerReading(check);
    const tree = this.loadTree(p);
    const store = new OwnedStoreWriter(this.stores, (hex) => this.db.ownObject(hex));
    const stats = { entries: 0 };
    const tmp = this.tmpPath('blob');
    try {
      await applyLayerStream(tree, layerTar(this.content!.read(namespace, layer.digest), reading), {
        layer: layer.digest.slice(7, 19), inlineThreshold: this.inlineThreshold, store, stats,
      });
      reading.verify();
      await store.sync();
      await writeFileAtomic(tmp, encodeBlob(tree, { inlineThreshold: this.inlineThreshold }));
      const id = this.db.tx(() => {
        if (this.db.get(target)) throw new SnapshotError('AlreadyExists', `snapshot ${target} already exists`);
        const newId = this.db.insert(target, p?.id ?? null, Kind.COMMITTED, labels);
        this.db.markCommitted(newId, target, labels, reading.tarBytes, stats.entries);
        fs.rmSync(this.dir(newId), { recursive: true, force: true });
        fs.mkdirSync(this.dir(newId), { mode: 0o700 });
        this.addRoots(newId);
        fs.renameSync(tmp, this.blob(newId));
        return newId;
      });
      this.counters.fastPath++;
      this.log(`fast path: ${target} (id ${id}) compiled from ${layer.digest}: ${stats.entries} entries, ` +
        `${store.created.size} new objects, ${((performance.now() - started) / 1000).toFixed(2)} s`);
    } catch (err) {
      await store.abort();
      await fsp.rm(tmp, { force: true });
      throw err;
    } finally {
      await store.close();
    }
  }

  // ------------------------------------------------------------------------------- Commit

  commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    return this.lock.run(async () => {
      const row = this.db.mustGet(key);
      if (row.kind !== Kind.ACTIVE) throw new SnapshotError('FailedPrecondition', `snapshot ${key} is not active`);
      if (this.db.get(name)) throw new SnapshotError('AlreadyExists', `snapshot ${name} already exists`);
      const started = performance.now();
      const p = row.parentId === null ? null : this.db.byId(row.parentId)!;
      const { diff, created } = await this.writing(() => this.compileUpper(row, p, name, key, storedLabels(labels)));
      this.counters.slowCommits++;
      // The upper is in the blob and the store now.
      await fsp.rm(this.upper(row.id), { recursive: true, force: true });
      await fsp.rm(this.work(row.id), { recursive: true, force: true });
      if (p && this.db.openChildren(p.id) === 0) await this.unmount(p.id);
      this.log(`commit ${key} -> ${name} (id ${row.id}): ${diff.entries} upper entries, ${diff.whiteouts} whiteouts, ` +
        `${created} new objects, ${((performance.now() - started) / 1000).toFixed(2)} s`);
    });
  }

  /** Commit's work, under the stores' shared lock: upper + parent tree -> blob, row committed. */
  private async compileUpper(row: SnapshotRow, p: SnapshotRow | null, name: string, key: string, labels: Record<string, string>) {
    const tree = this.loadTree(p);
    const store = new OwnedStoreWriter(this.stores, (hex) => this.db.ownObject(hex));
    let diff;
    try {
      diff = await applyOverlayDiff(tree, this.upper(row.id), { store, inlineThreshold: this.inlineThreshold, whiteouts: p !== null });
      await store.sync();
      this.addRoots(row.id);
      await writeFileAtomic(this.blob(row.id), encodeBlob(tree, { inlineThreshold: this.inlineThreshold }));
    } catch (err) {
      await store.abort();
      throw err;
    } finally {
      await store.close();
    }
    this.db.tx(() => {
      const again = this.db.get(key);
      if (!again || again.id !== row.id || again.kind !== Kind.ACTIVE) throw new SnapshotError('FailedPrecondition', `snapshot ${key} changed during commit`);
      if (this.db.get(name)) throw new SnapshotError('AlreadyExists', `snapshot ${name} already exists`);
      // containerd replaces the labels at commit, it does not inherit the active snapshot's
      this.db.markCommitted(row.id, name, labels, diff.diskBytes, diff.inodes);
    });
    return { diff, created: store.created.size };
  }

  // ------------------------------------------------------------------------------- Update

  update(name: string, labels: Record<string, string>, paths: string[]): Promise<SnapshotInfo> {
    return this.lock.run(async () => {
      const row = this.db.mustGet(name);
      let next: Record<string, string>;
      if (paths.length === 0) {
        next = { ...labels };
      } else {
        next = { ...row.labels };
        for (const p of paths) {
          if (p === 'labels') next = { ...labels };
          else if (p.startsWith('labels.')) {
            const k = p.slice('labels.'.length);
            if (labels[k]) next[k] = labels[k];
            else delete next[k];
          } else throw new SnapshotError('InvalidArgument', `cannot update field ${JSON.stringify(p)} of snapshot ${name}`);
        }
      }
      this.db.setLabels(row.id, storedLabels(next));
      return this.info(this.db.byId(row.id)!);
    });
  }

  // ------------------------------------------------------------------------------- Remove / Cleanup

  remove(key: string): Promise<void> {
    return this.lock.run(async () => {
      const row = this.db.mustGet(key);
      if (this.db.children(row.id).length > 0) throw new SnapshotError('FailedPrecondition', `cannot remove snapshot ${key}: it has children`);
      this.db.tx(() => this.db.delete(row.id));
      if (row.kind === Kind.COMMITTED) {
        this.removeRoots(row.id);
        await this.unmount(row.id);
      }
      await this.removeDir(this.dir(row.id));
      if (row.parentId !== null && this.db.openChildren(row.parentId) === 0) await this.unmount(row.parentId);
      this.log(`remove ${key} (id ${row.id})`);
    });
  }

  /** Reclaims what no snapshot needs: directories, mounts, and objects we created. */
  cleanup(): Promise<{ objects: number; bytes: number }> {
    return this.lock.run(async () => {
      await this.sweepDirs();
      await this.sweepMounts();
      await this.syncRoots();
      const r = await this.collectObjects();
      this.log(`cleanup: ${r.objects} objects (${r.bytes} bytes) removed`);
      return r;
    });
  }

  private async removeDir(dir: string): Promise<void> {
    if (!fs.existsSync(dir)) return;
    const trash = this.tmpPath('rm');
    await fsp.rename(dir, trash);
    await fsp.rm(trash, { recursive: true, force: true });
  }

  /** Directories without a row, uppers of committed snapshots, temp files. */
  private async sweepDirs(): Promise<void> {
    const rows = new Map(this.db.all().map((r) => [String(r.id), r]));
    for (const name of await fsp.readdir(path.join(this.root, 'snapshots'))) {
      const row = rows.get(name);
      if (!row) {
        this.log(`cleanup: removing snapshots/${name} (no such snapshot)`);
        await this.removeDir(path.join(this.root, 'snapshots', name));
      } else if (row.kind === Kind.COMMITTED) {
        await fsp.rm(this.upper(row.id), { recursive: true, force: true });
        await fsp.rm(this.work(row.id), { recursive: true, force: true });
      }
    }
    for (const name of await fsp.readdir(path.join(this.root, 'tmp'))) {
      await fsp.rm(path.join(this.root, 'tmp', name), { recursive: true, force: true });
    }
  }

  /** Unmount every blob mount that no active or view snapshot needs. */
  private async sweepMounts(): Promise<void> {
    const needed = new Set<string>();
    for (const r of this.db.all()) if (r.kind !== Kind.COMMITTED && r.parentId !== null) needed.add(String(r.parentId));
    for (const name of await fsp.readdir(path.join(this.root, 'mounts'))) {
      if (!needed.has(name)) await this.unmountPath(path.join(this.root, 'mounts', name));
    }
  }

  /**
   * Objects this snapshotter created that neither a committed blob nor a root of the stores (a
   * `cfs build` blob) references any more. Skipped, and said so, while a build writes to a store
   * or when a root's blob cannot be read: the next Cleanup collects them.
   */
  private async collectObjects(): Promise<{ objects: number; bytes: number }> {
    let lock;
    try {
      lock = await lockStores(this.stores, 'exclusive', { wait: false });
    } catch (err: any) {
      this.log(`cleanup: objects not collected: ${err.message}`);
      return { objects: 0, bytes: 0 };
    }
    try {
      const refs = await this.neededObjects();
      return refs ? this.deleteOwnedExcept(refs) : { objects: 0, bytes: 0 };
    } finally {
      lock.release();
    }
  }

  /** Digests our committed blobs and the stores' roots reference; null when a root is unreadable. */
  private async neededObjects(): Promise<Set<string> | null> {
    const blobs = this.db.all().filter((r) => r.kind === Kind.COMMITTED).map((r) => this.blob(r.id));
    const refs = await referencedDigests(blobs);
    try {
      const ours = new Set(blobs);
      const roots = readRoots(this.stores);
      const unreadable = [...roots.unreadable, ...await rootDigests(roots.live.filter((r) => !ours.has(r.blob)), refs)];
      if (unreadable.length > 0) throw new Error(`cannot read gc root ${unreadable[0].link}: ${unreadable[0].reason}`);
    } catch (err: any) {
      this.log(`cleanup: objects not collected: ${err.message}`);
      return null;
    }
    return refs;
  }

  private deleteOwnedExcept(refs: Set<string>): { objects: number; bytes: number } {
    const gone: string[] = [];
    let bytes = 0;
    for (const hex of this.db.objects()) {
      if (refs.has(hex)) continue;
      for (const s of this.stores) {
        const p = objectPath(s, hex);
        try {
          bytes += fs.lstatSync(p).size;
          fs.unlinkSync(p);
        } catch (err: any) {
          if (err.code !== 'ENOENT') throw err;
        }
      }
      gone.push(hex);
    }
    this.db.dropObjects(gone);
    return { objects: gone.length, bytes };
  }

  // ------------------------------------------------------------------------------- store roots and lock

  /** Run a step that writes objects and a blob with the stores' lock held shared. */
  private async writing<T>(fn: () => Promise<T>): Promise<T> {
    const lock = await lockStores(this.stores, 'shared', { onWait: (s) => this.log(`waiting for the gc running on ${s}`) });
    try {
      return await fn();
    } finally {
      lock.release();
    }
  }

  private addRoots(id: number): void {
    for (const s of this.stores) addRoot(s, this.blob(id));
  }

  private removeRoots(id: number): void {
    for (const s of this.stores) removeRoot(s, this.blob(id));
  }

  /**
   * Our roots are exactly our committed blobs: add the missing (a crash, or a store from before
   * roots existed), drop those of snapshots that are gone (a crash between row and root).
   */
  private async syncRoots(): Promise<void> {
    const committed = this.db.all().filter((r) => r.kind === Kind.COMMITTED);
    await this.writing(async () => {
      for (const r of committed) this.addRoots(r.id);
    });
    const mine = new Set(committed.map((r) => this.blob(r.id)));
    const prefix = path.join(this.root, 'snapshots') + path.sep;
    try {
      const roots = readRoots(this.stores);
      for (const r of [...roots.live, ...roots.dangling]) {
        if (r.blob.startsWith(prefix) && !mine.has(r.blob)) fs.rmSync(r.link, { force: true });
      }
    } catch (err: any) {
      this.log(`cannot read the stores' gc roots: ${err.message}`);
    }
  }

  // ------------------------------------------------------------------------------- blob mounts

  private async ensureMounted(id: number): Promise<void> {
    const at = this.mountPoint(id);
    if (isMountPoint(at)) return;
    await fsp.mkdir(at, { recursive: true, mode: 0o755 });
    await mountBlob({ blob: this.blob(id), target: at, stores: this.stores, backend: this.backend, log: (l) => this.log(l) });
    this.log(`mounted snapshot ${id}'s blob on ${at} (${this.backend})`);
  }

  private async unmount(id: number): Promise<void> {
    await this.unmountPath(this.mountPoint(id));
  }

  private async unmountPath(at: string): Promise<void> {
    if (!fs.existsSync(at)) return;
    if (isMountPoint(at, readMountinfo())) {
      await umountTarget(at, { log: (l) => this.log(l) });
      this.log(`unmounted ${at}`);
    }
    try {
      await fsp.rmdir(at);
    } catch (err: any) {
      if (err.code !== 'ENOENT') this.log(`cannot remove ${at}: ${err.message}`);
    }
  }
}

/** containerd does not keep labels with empty values (boltutil.WriteLabels): neither do we. */
function storedLabels(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ''));
}

/** containerd's unpack keys: "<ns>/<seq>/extract-<nonce> <chain id>". */
export function isExtractKey(key: string): boolean {
  return /(^|\/)extract-[^/]* sha256:[0-9a-f]{64}$/.test(key);
}

/** st_blocks-based usage of a tree, each inode once (containerd's fs.DiskUsage). */
export async function diskUsage(dir: string): Promise<{ size: number; inodes: number }> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (p: Buffer) => {
    const st = await fsp.lstat(p, { bigint: true });
    const k = `${st.dev}:${st.ino}`;
    if (!seen.has(k)) {
      seen.add(k);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const n of await fsp.readdir(p, { encoding: 'buffer' })) await visit(Buffer.concat([p, Buffer.from('/'), n]));
    }
  };
  try {
    await visit(Buffer.from(dir));
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err;
  }
  return { size, inodes: seen.size };
}

function copyRootMetadata(src: { mode: number; uid: number; gid: number; mtimeSec: number; mtimeNsec: number }, dir: string): void {
  fs.chmodSync(dir, src.mode & 0o7777);
  fs.chownSync(dir, src.uid, src.gid);
  // touch(1) keeps nanoseconds; utimes() from JavaScript goes through a double.
  const r = spawnSync('touch', ['-d', `@${src.mtimeSec}.${String(src.mtimeNsec).padStart(9, '0')}`, dir]);
  if (r.status !== 0) throw new Error(`touch ${dir}: ${r.stderr?.toString().trim()}`);
}
