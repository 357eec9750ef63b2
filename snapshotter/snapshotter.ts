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
//   For containerd's extraction snapshots ("extract-… <chain id>") Prepare starts compiling that
//   layer from containerd's content store, and Commit takes the result, linking the layer's new
//   objects in from the files containerd applied into the upper (see compileAhead, linkDeferred).
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
// blob fsynced and renamed) before the transaction that marks a snapshot committed; Remove
// deletes the row and moves the directory to tmp/rm-<id>-* in one transaction (a trash entry
// whose row survived a rolled-back Remove is put back at startup). Leftovers of an interrupted step (a directory without a row, an upper
// of a committed snapshot, a committed upper still in tmp/ being deleted in the background, a
// mount nobody needs, objects no blob references) are exactly what Cleanup (and startup)
// remove. Mutating calls are serialized by one async lock, except a Prepare/View on a committed
// parent whose blob is mounted (createUnlocked): its checks and its row are one synchronous step
// (better-sqlite3 is synchronous), and whatever a locked call decides from the rows (Remove's
// no-children check, an unmount's no-open-child check, Cleanup's orphan directories, an insert's
// free key) it decides again in the same synchronous step as it acts.
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import crypto from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { childrenDeferred, openLazyTree } from '../format/lazy.js';
import { encodeBlob } from '../format/encode.js';
import { S_IFDIR, S_IFMT, S_IFREG, type TreeNode } from '../format/tree.js';
import { writeFileAtomic } from '../compiler/build.js';
import { referencedDigests, rootDigests } from '../compiler/gc.js';
import { openBlobFile } from '../compiler/inspect.js';
import { LayerFileReader, LayerReading, layerTar, parseDigest, type LayerDigestCheck } from '../compiler/layerio.js';
import { DEFAULT_INLINE_THRESHOLD, applyLayerStream, newTree } from '../compiler/layers.js';
import { makeDirs } from '../compiler/mkdirs.js';
import { applyOverlayDiff } from '../compiler/overlaydiff.js';
import { ROOTS_DIR, addRoot, fsyncDir, lockStores, readRoots, removeRoot, type StoreLock } from '../compiler/roots.js';
import { AdoptMismatch, StoreWriter, objectPath, syncStores } from '../compiler/store.js';
import { MountError, OVERLAY_MOUNT_OPTIONS, chooseBackend, mapId, mountBlob, parseIdMap, serverAlive, umountTarget, type IdRange } from '../mounter/mount.js';
import { isMountPoint, readMountinfo } from '../mounter/mountinfo.js';
import { addonBuilt, idmapBind } from '../mounter/addon.js';
import { withUserNamespace } from '../mounter/userns.js';
import type { Backend } from '../mounter/state.js';
import { ContentClient, LABEL_SNAPSHOT_REF, type LayerRef } from './content.js';
import { IngestTail, looksLikeTar, watchIngests } from './ingest.js';
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
  /**
   * containerd's root directory: the fast path reads a layer blob from the content store's file
   * (io.containerd.content.v1.content/blobs/<alg>/<hex>) on a reader thread, instead of
   * streaming it through containerd's Read RPC (which costs both processes most of an import).
   */
  containerdRoot?: string;
  inlineThreshold?: number;
  /**
   * Slow path: when Prepare makes containerd's extraction snapshot of a layer we can find in its
   * content store, compile that layer while containerd applies it (default true); see compileAhead().
   */
  compileAhead?: boolean;
  /**
   * Fast path: compile an uncompressed base layer from containerd's ingest file while containerd
   * is still writing it (needs containerdRoot; default false: it compiles every such blob
   * containerd ingests, whichever snapshotter will unpack it). See speculate().
   */
  speculateIngests?: boolean;
  log?: (line: string) => void;
}

/** A base layer compiled from an ingest before containerd asked for it (see speculate). */
interface Speculated {
  digest: string;
  size: number;
  tree: TreeNode;
  blob: Buffer;
  entries: number;
  objectsNew: number;
  bytesNew: number;
  /** The stores' shared lock, held until the result is used or dropped: the objects have no gc root yet. */
  lock: StoreLock;
  phases: Phases;
  /**
   * The stores' syncfs, started as soon as the objects were written (before the blob was
   * encoded): by the time containerd's Prepare arrives it is mostly done. Covers every object
   * of the result; publishSpeculated() waits for it (and starts another if it failed).
   */
  synced: Promise<void>;
  timer?: NodeJS.Timeout;
}

/** Ingests compiled at once; later ones are not speculated on. */
const MAX_SPECULATIONS = 3;
/** An unused speculation is dropped after this long (its objects become garbage for Cleanup). */
const SPECULATION_TTL_MS = 120_000;

/** A layer compiled ahead of its Commit: everything but the durable steps (see compileAhead). */
interface AheadResult {
  chain: string;
  layer: LayerRef;
  tree: TreeNode;
  blob: Buffer;
  entries: number;
  tarBytes: number;
  objectsNew: number;
  bytesNew: number;
  /** The stores' shared lock, held until the Commit or Remove: the objects have no gc root yet. */
  lock: StoreLock;
  phases: Phases;
  /**
   * The syncfs that already covers every object of the result (a speculation's, see
   * Speculated.synced); without it, Commit syncs the stores itself.
   */
  synced?: Promise<void>;
  /**
   * The layer's new objects, not written (compileAhead's writer defers them): the same contents
   * are in the upper once containerd has applied the layer, and Commit links those files in.
   */
  deferred?: DeferredFile[];
  /** Bytes of the objects Commit linked in from the upper (see linkDeferred). */
  bytesLinked?: number;
}

/** A new object of a layer compiled ahead, and a path of the layer's file with that content. */
interface DeferredFile {
  hex: string;
  size: number;
  /** Relative to the upper, binary-safe. */
  rel: Buffer;
  /** The file has xattrs (an object must not): copied rather than linked. */
  xattrs: boolean;
}

const execFileP = promisify(execFile);
const KIND_NAMES: Record<number, SnapshotInfo['kind']> = { 0: 'UNKNOWN', 1: 'VIEW', 2: 'ACTIVE', 3: 'COMMITTED' };

/** Elapsed time per step, for the log: "a 0.12, b 0.40". */
class Phases {
  private readonly cpu0 = process.cpuUsage();
  private last = performance.now();
  private readonly parts: string[] = [];
  mark(what: string): void {
    const now = performance.now();
    this.parts.push(`${what} ${((now - this.last) / 1000).toFixed(2)}`);
    this.last = now;
  }
  toString(): string {
    const cpu = process.cpuUsage(this.cpu0);
    return `${this.parts.join(', ')}; cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s`;
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
  private readonly containerdRoot: string | null;
  /** Reader thread for layer files under containerdRoot, started on first use. */
  private files: LayerFileReader | null = null;
  private readonly inlineThreshold: number;
  private readonly log: (line: string) => void;
  private readonly lock = new Lock();
  /**
   * The tree of the last blob the fast path or a Commit compiled, for the next layer of the
   * same chain (containerd unpacks an image's layers in order): decoding the parent's blob again costs
   * more than compiling a small layer. Taken (set to null) by its user, since applying a layer
   * changes it; a committed blob never changes, so the tree stays valid while its snapshot lives.
   */
  private lastTree: { id: number; tree: TreeNode } | null = null;
  /**
   * What the last complete Cleanup saw of everything that decides which objects are garbage and
   * which gc roots to fix (see cleanupState); while it is unchanged, Cleanup skips both steps.
   */
  private cleanedState: string | null = null;
  /** Journals of store writers still running (ownedStore until adoptJournal): not adopted by Cleanup. */
  private readonly liveJournals = new Set<string>();
  /** Compiles started by Prepare for extraction snapshots, by snapshot id (see compileAhead). */
  private readonly ahead = new Map<number, Promise<AheadResult | null>>();
  /** Snapshots whose compile ahead must not wait any longer for its layer to arrive (see layerArrived). */
  private readonly stopWaiting = new Set<number>();
  private closed = false;
  /** Names in tmp/ of snapshot directories createUnlocked is preparing: Cleanup leaves them. */
  private readonly creating = new Set<string>();
  /** Mount points being unmounted: createUnlocked does not put a child on them. */
  private readonly unmounting = new Set<string>();
  /** Directories trash() is deleting in the background. */
  private readonly trashing = new Set<Promise<void>>();
  private readonly compileAheadOn: boolean;
  /** The ingests being compiled, each with its file (whether containerd still writes it). */
  private readonly speculating = new Set<{ done: Promise<void>; tail: IngestTail | null }>();
  /** Speculations that completed, by the digest of their blob. */
  private readonly speculated = new Map<string, Speculated>();
  private stopWatching: (() => void) | null = null;
  /** Counters for tests and logs. */
  readonly counters = { fastPath: 0, slowCommits: 0, upperDirs: 0, compiledAhead: 0 };

  constructor(opts: SnapshotterOptions) {
    // canonical: mountinfo names mount points by their real path, and isMountPoint compares with it
    makeDirs(path.resolve(opts.root), 0o700);
    this.root = fs.realpathSync(path.resolve(opts.root));
    this.log = opts.log ?? (() => {});
    for (const d of ['snapshots', 'mounts', 'tmp', 'journal']) makeDirs(path.join(this.root, d), 0o700);
    this.stores = (opts.stores && opts.stores.length > 0 ? opts.stores : [path.join(this.root, 'store')]).map((s) => path.resolve(s));
    for (const s of this.stores) makeDirs(s);
    this.db = new MetaStore(path.join(this.root, 'metadata.db'));
    this.backend = chooseBackend(opts.backend ?? 'auto', (l) => this.log(`mount backend: ${l}`));
    this.content = opts.contentClient ?? null;
    this.containerdRoot = opts.containerdRoot ? path.resolve(opts.containerdRoot) : null;
    this.inlineThreshold = opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD;
    this.compileAheadOn = opts.compileAhead ?? true;
    if (opts.speculateIngests && this.containerdRoot && this.content) {
      this.stopWatching = watchIngests(path.join(this.containerdRoot, 'io.containerd.content.v1.content'), (d) => this.onIngest(d));
    }
  }

  // ------------------------------------------------------------------------------- paths

  private dir(id: number): string { return path.join(this.root, 'snapshots', String(id)); }
  private upper(id: number): string { return path.join(this.dir(id), 'fs'); }
  private work(id: number): string { return path.join(this.dir(id), 'work'); }
  private blob(id: number): string { return path.join(this.dir(id), 'blob'); }
  private mountPoint(id: number): string { return path.join(this.root, 'mounts', String(id)); }
  /** Where an active or view snapshot's lower is: its parent's blob mount, or the mapped one its labels ask for. */
  private lowerOf(row: SnapshotRow): string {
    const m = idMapOf(row.labels);
    return m ? this.mappedMountPoint(row.parentId!, m) : this.mountPoint(row.parentId!);
  }
  /** The parent's blob shown through a uid/gid mapping: one mount per parent and mapping. */
  private mappedMountPoint(parentId: number, m: IdMapLabels): string {
    return path.join(this.root, 'mounts', `${parentId}-${m.tag}`);
  }
  private tmpPath(what: string): string {
    return path.join(this.root, 'tmp', `${what}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
  }

  // ------------------------------------------------------------------------------- startup

  /** After a restart: what Cleanup does, except the object collection (cheap and safe to run). */
  async recover(): Promise<void> {
    await this.lock.run(async () => {
      this.adoptJournals();
      await this.sweepDirs();
      await this.sweepMounts();
      await this.syncRoots();
      for (const row of this.db.all()) {
        if (row.kind !== Kind.COMMITTED && row.parentId !== null) await this.ensureLower(row.parentId, idMapOf(row.labels));
      }
    });
  }

  close(): void {
    this.closed = true;
    this.stopWatching?.();
    for (const r of this.speculated.values()) r.lock.release();
    this.speculated.clear();
    void this.files?.close();
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

  mounts(key: string): Promise<Mount[]> {
    // containerd asks for the mounts of every container it starts: while its parent is mounted
    // (it stays mounted while it has open children) the answer needs no lock, so a start does
    // not wait behind a layer being compiled (seconds) for another image.
    const quick = this.db.get(key);
    if (quick && (quick.kind === Kind.ACTIVE || quick.kind === Kind.VIEW) &&
        (quick.parentId === null || isLiveMount(this.lowerOf(quick)))) {
      return Promise.resolve(this.mountsOf(quick));
    }
    // else under the lock: a Remove queued before this call must not have the parent mounted again
    return this.lock.run(async () => {
      const row = this.db.mustGet(key);
      if (row.kind !== Kind.ACTIVE && row.kind !== Kind.VIEW) {
        throw new SnapshotError('FailedPrecondition', `snapshot ${key} is not active or a view`);
      }
      if (row.parentId !== null) await this.ensureLower(row.parentId, idMapOf(row.labels));
      return this.mountsOf(row);
    });
  }

  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const row = this.db.mustGet(key);
    if (row.kind === Kind.ACTIVE) return diskUsage(this.upper(row.id));
    return { size: row.size, inodes: row.inodes };
  }

  private mountsOf(row: SnapshotRow): Mount[] {
    if (row.kind === Kind.VIEW) {
      const src = row.parentId === null ? this.upper(row.id) : this.lowerOf(row);
      return [{ type: 'bind', source: src, options: ['ro', 'rbind'] }];
    }
    if (row.parentId === null) return [{ type: 'bind', source: this.upper(row.id), options: ['rw', 'rbind'] }];
    // features that would put part of a Commit's diff outside the upper, off (compiler/overlaydiff.ts)
    const options = [`workdir=${this.work(row.id)}`, `upperdir=${this.upper(row.id)}`, `lowerdir=${this.lowerOf(row)}`, ...OVERLAY_MOUNT_OPTIONS];
    // containerd applies a layer straight into an overlay's upperdir when it can find that
    // option, and then fails on a hardlink whose target is in a lower layer (its own overlayfs
    // snapshotter too). For layer extraction we hand the options over as ONE string (the kernel
    // sees the same option text), so containerd mounts the overlay and applies through it.
    if (isExtractKey(row.key)) return [{ type: 'overlay', source: 'overlay', options: [options.join(',')] }];
    return [{ type: 'overlay', source: 'overlay', options }];
  }

  // ------------------------------------------------------------------------------- Prepare / View

  prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.createOrQueue(Kind.ACTIVE, key, parent, storedLabels(labels));
  }

  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.createOrQueue(Kind.VIEW, key, parent, storedLabels(labels));
  }

  /**
   * A container's snapshot (or a view) on an image whose blob is mounted needs nothing the call
   * lock guards: it is created at once, so a container start does not wait behind another
   * image's layer being compiled (seconds). Everything else, and this too when its parent is not
   * mounted or being unmounted, queues for the lock.
   */
  private async createOrQueue(kind: KindValue, key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const quick = await this.createUnlocked(kind, key, parent, labels);
    return quick ?? this.lock.run(() => this.create(kind, key, parent, labels));
  }

  /** What createOrQueue creates without the lock; null when the call must queue for it instead. */
  private async createUnlocked(kind: KindValue, key: string, parent: string, labels: Record<string, string>): Promise<Mount[] | null> {
    if (!key || !parent || isExtractKey(key) || (kind === Kind.ACTIVE && labels[LABEL_SNAPSHOT_REF] && this.content)) return null;
    if (labels[LABEL_UIDMAP] !== undefined || labels[LABEL_GIDMAP] !== undefined) return null; // its own mount: under the lock
    const p = this.db.get(parent);
    const parentUsable = (): boolean => {
      const now = this.db.get(parent);
      return now !== undefined && p !== undefined && now.id === p.id && now.kind === Kind.COMMITTED &&
        !this.unmounting.has(this.mountPoint(p.id)) && isLiveMount(this.mountPoint(p.id));
    };
    if (!parentUsable() || this.db.get(key)) return null;
    checkLabels(labels);
    const tmp = kind === Kind.ACTIVE ? this.tmpPath('new') : null;
    let id: number | null = null;
    if (tmp) this.creating.add(path.basename(tmp));
    try {
      if (tmp) {
        await fsp.mkdir(path.join(tmp, 'fs'), { recursive: true, mode: 0o755 });
        await fsp.mkdir(path.join(tmp, 'work'), { mode: 0o700 });
        copyRootMetadata(this.rootOf(p!), path.join(tmp, 'fs'));
      }
      // From here to the insert nothing awaits: the checks and the row are one step for every
      // other call (a Remove of the parent, an unmount deciding no open child needs it).
      if (!parentUsable() || this.db.get(key)) return null;
      id = this.insertWithDir(kind, key, p!, labels, tmp);
    } catch {
      return null; // the parent went meanwhile, or worse: the locked path says what
    } finally {
      if (tmp) {
        if (id === null) fs.rm(tmp, { recursive: true, force: true }, () => {}); // else Cleanup's, once not in creating
        this.creating.delete(path.basename(tmp));
      }
    }
    if (tmp) this.counters.upperDirs++;
    this.log(`${kind === Kind.ACTIVE ? 'prepare' : 'view'} ${key} (id ${id}) on ${parent} (parent mounted: no lock)`);
    return this.mountsOf(this.db.byId(id)!);
  }

  /**
   * The row and, for a snapshot with a directory (tmp: prepared in tmp/), its directory under
   * the row's id, in one transaction; the directory is durable before the row is (after a power
   * cut, no active row without its upper). tmp is removed if the insert fails.
   */
  private insertWithDir(kind: KindValue, key: string, p: SnapshotRow | null, labels: Record<string, string>, tmp: string | null): number {
    try {
      return this.db.tx(() => {
        // again: the other path (with or without the lock) may have created it since the caller's check
        if (this.db.get(key)) throw new SnapshotError('AlreadyExists', `snapshot ${key} already exists`);
        const newId = this.db.insert(key, p?.id ?? null, kind, labels);
        if (tmp) {
          fs.rmSync(this.dir(newId), { recursive: true, force: true }); // an orphan of a rolled-back insert
          fs.renameSync(tmp, this.dir(newId));
          fsyncDir(path.dirname(this.dir(newId)));
        }
        return newId;
      });
    } catch (err) {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
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
    checkLabels(labels);
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
    const idmap = idMapOf(labels);
    if (idmap && !p) throw new SnapshotError('InvalidArgument', `snapshot ${key}: a uid/gid mapping needs a parent (an image to show through it)`);
    // Before anything is created: a parent that cannot be mounted fails the call and leaves no
    // snapshot behind (a retry with the key would get AlreadyExists), as overlay's rolls back.
    if (p) await this.ensureLower(p.id, idmap);
    const needsDir = kind === Kind.ACTIVE || p === null;
    const tmp = this.tmpPath('new');
    if (needsDir) {
      await fsp.mkdir(path.join(tmp, 'fs'), { recursive: true, mode: 0o755 });
      if (kind === Kind.ACTIVE && p) {
        await fsp.mkdir(path.join(tmp, 'work'), { mode: 0o700 });
        // The upper's root starts as the parent's root, so a commit without a "./" entry keeps it;
        // through a mapping it is the mapped owner's, as the lower's root shows (the container's root can write it).
        const root = this.rootOf(p);
        if (idmap) {
          const [uid, gid] = [mapId(idmap.uid, root.uid), mapId(idmap.gid, root.gid)];
          if (uid === null || gid === null) {
            await fsp.rm(tmp, { recursive: true, force: true });
            // containerd 1.7+ chowns a copy first (named PARENT-UID-GID) unless the proxy plugin
            // declares the remap-ids capability, and still sends the labels for it
            const chowned = p.key.endsWith(`-${mapId(idmap.uid, 0)}-${mapId(idmap.gid, 0)}`);
            throw new SnapshotError('InvalidArgument', `snapshot ${key}: the image's root directory (${root.uid}:${root.gid}) is outside the uid/gid mapping` +
              (chowned ? `; its parent ${p.key} is containerd's chowned copy: declare capabilities = ["remap-ids"] for the proxy plugin (examples/containerd/config.toml)` : ''));
          }
          Object.assign(root, { uid, gid });
        }
        copyRootMetadata(root, path.join(tmp, 'fs'));
      }
    }
    const id = this.insertWithDir(kind, key, p, labels, needsDir ? tmp : null);
    if (needsDir && kind === Kind.ACTIVE) this.counters.upperDirs++;
    const chain = kind === Kind.ACTIVE && this.content && this.compileAheadOn ? extractChain(key) : null;
    if (chain) {
      const started = this.compileAhead(id, key.split('/')[0], chain, p);
      started.catch(() => {}); // compileAhead answers null on failure; this only keeps a bug from going unhandled
      this.ahead.set(id, started);
    }
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

  /**
   * The parent's tree over its blob (format/lazy.ts): directories are decoded when a layer
   * reaches them and encodeBlob copies the rest, so a Commit costs what its layer touches plus
   * a copy of the parent's bytes, not a decode and encode of every inode (a million inodes:
   * ~0.7 s against ~5.5 s). Read whole and its checksums checked: the encoder copies its bytes.
   */
  private loadTree(p: SnapshotRow | null): TreeNode {
    if (!p) return newTree();
    return openLazyTree(fs.readFileSync(this.blob(p.id)), { verify: true });
  }

  /** The next layer on snapshot `id` starts from this blob, without reading it back. */
  private keepTree(id: number, blob: Buffer): void {
    this.lastTree = { id, tree: openLazyTree(blob) };
  }

  /** The parent's tree: the one the fast path kept if it is this parent's, else decoded from its blob. */
  private takeTree(p: SnapshotRow | null): TreeNode {
    const kept = this.lastTree;
    this.lastTree = null;
    return kept && p && kept.id === p.id ? kept.tree : this.loadTree(p);
  }

  // ------------------------------------------------------------------------------- fast path

  /**
   * containerd names the chain id it wants (containerd.io/snapshot.ref): find that layer in
   * containerd's content store, compile its tar onto the parent's tree, commit under the chain
   * id. Nothing is unpacked to disk. False when the layer cannot be found (slow path then).
   */
  private async fastPath(key: string, target: string, parent: string, labels: Record<string, string>): Promise<boolean> {
    const namespace = key.split('/')[0];
    if (this.db.get(target)) {
      this.log(`fast path: ${target} exists and is not committed; slow path`);
      return false;
    }
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
    try {
      if (!(await this.content!.has(namespace, layer.digest))) {
        // containerd's unpacker fetches layers only once this Prepare returns (see layerArrived)
        this.log(`fast path: ${layer.digest} is not in containerd's content store yet; slow path, compiled ahead once it arrives`);
        return false;
      }
    } catch (err: any) {
      this.log(`fast path: cannot ask containerd for ${layer.digest} (${err.message}); slow path`);
      return false;
    }
    try {
      const spec = p ? null : await this.takeSpeculation(layer);
      if (spec) await this.publishSpeculated(layer, target, labels, spec);
      else await this.writing(() => this.compileLayer(namespace, layer, target, p, labels));
    } catch (err: any) {
      if (err instanceof SnapshotError) throw err;
      // containerd's unpacker gives up on any other answer than AlreadyExists or mounts: a layer
      // we cannot compile (read error, digest mismatch, a store busy) is left to containerd
      this.log(`fast path: ${layer.digest}: ${err.message}; slow path`);
      return false;
    }
    return true;
  }

  /** The fast path's work, under the stores' shared lock: layer tar + parent tree -> committed blob. */
  private async compileLayer(namespace: string, layer: LayerRef, target: string, p: SnapshotRow | null, labels: Record<string, string>): Promise<void> {
    const started = performance.now();
    const phases = new Phases();
    const tree = this.takeTree(p);
    const { store, journal } = this.ownedStore();
    const tmp = this.tmpPath('blob');
    try {
      phases.mark('parent tree');
      const { stats, reading } = await this.applyLayer(namespace, layer, tree, store);
      phases.mark('read+parse');
      await store.flush();
      phases.mark('objects written');
      // The stores' syncfs runs (a child process) while this thread encodes the blob.
      const synced = this.syncStores();
      synced.catch(() => {}); // awaited below; an early failure must not go unhandled meanwhile
      const blob = encodeBlob(tree, { inlineThreshold: this.inlineThreshold });
      phases.mark('encode');
      const id = await this.publishLayer(target, p, labels, blob, tmp, synced, committedUsage(blob, store.stats), phases);
      this.keepTree(id, blob);
      this.counters.fastPath++;
      this.log(`fast path: ${target} (id ${id}) compiled from ${layer.digest} (${reading.source}): ${stats.entries} entries, ` +
        `${store.stats.objectsNew} new objects, ${((performance.now() - started) / 1000).toFixed(2)} s (${phases})`);
    } catch (err) {
      await store.abort();
      await fsp.rm(tmp, { force: true });
      throw err;
    } finally {
      await store.close();
      this.adoptJournal(journal);
    }
  }

  /**
   * The fast path's durable steps: the blob written and fsynced while the stores' syncfs
   * (`synced`) runs; once both are on disk, the committed row, its directory and the blob's name
   * in one transaction.
   */
  private async publishLayer(target: string, p: SnapshotRow | null, labels: Record<string, string>, blob: Buffer, tmp: string,
    synced: Promise<void>, usage: Usage, phases: Phases): Promise<number> {
    writeFileDurable(tmp, blob);
    phases.mark('blob written');
    await synced;
    phases.mark('syncfs');
    const id = this.db.tx(() => {
      if (this.db.get(target)) throw new SnapshotError('AlreadyExists', `snapshot ${target} already exists`);
      const newId = this.db.insert(target, p?.id ?? null, Kind.COMMITTED, labels);
      this.db.markCommitted(newId, target, labels, usage.size, usage.inodes);
      fs.rmSync(this.dir(newId), { recursive: true, force: true });
      fs.mkdirSync(this.dir(newId), { mode: 0o700 });
      this.addRoots(newId);
      fs.renameSync(tmp, this.blob(newId));
      fsyncDir(this.dir(newId));
      fsyncDir(path.dirname(this.dir(newId)));
      return newId;
    });
    phases.mark('committed');
    return id;
  }

  // ------------------------------------------------------------------------------- speculation (fast path)

  /**
   * containerd asks for a layer (Prepare with snapshot.ref) only once it has ingested the whole
   * image, so compiling it then puts our whole compile after the ingest. With speculateIngests,
   * an uncompressed tar that containerd starts ingesting is compiled onto an empty tree as its
   * bytes arrive, on the core containerd leaves idle; the result is the blob of any base layer
   * whose blob turns out to be exactly those bytes (IngestTail.finish: same inode, same size,
   * sha256 over what we read). Nothing durable happens here (objects written under the stores'
   * shared lock, the blob encoded in memory); publishSpeculated() does the rest as the fast
   * path does. A few ingests at a time (an image's small layers may come first); failures only
   * cost the speculation.
   */
  private onIngest(dataPath: string): void {
    if (this.speculating.size >= MAX_SPECULATIONS) return;
    const entry: { done: Promise<void>; tail: IngestTail | null } = { done: Promise.resolve(), tail: null };
    entry.done = (async () => {
      try {
        const r = await this.speculate(dataPath, (t) => { entry.tail = t; });
        if (r) {
          r.timer = setTimeout(() => this.dropSpeculation(r, 'not asked for'), SPECULATION_TTL_MS);
          r.timer.unref();
          // the same bytes ingested again before the first result was used: keep one, release the other's lock
          const earlier = this.speculated.get(r.digest);
          if (earlier) this.dropSpeculation(earlier, 'superseded');
          this.speculated.set(r.digest, r);
        }
      } catch (err: any) {
        this.log(`speculation on ${dataPath}: ${err.message}`);
      } finally {
        this.speculating.delete(entry);
      }
    })();
    this.speculating.add(entry);
  }

  private async speculate(dataPath: string, opened: (t: IngestTail) => void): Promise<Speculated | null> {
    // the ingest's data file appears and grows: wait for its first tar block
    for (let waited = 0; ; waited += 20) {
      const st = fs.statSync(dataPath, { throwIfNoEntry: false });
      if (st && st.size >= 512) break;
      if (waited > 10_000 || !fs.existsSync(path.dirname(dataPath))) return null;
      await new Promise((r) => setTimeout(r, 20));
    }
    // the head is read through the tail's own descriptor: the data file may leave the ingest
    // directory any moment, and a second open() of its name would then fail with the tail open
    const tail = await IngestTail.open(dataPath);
    let isTar = false;
    try {
      isTar = looksLikeTar(await tail.head(512));
    } finally {
      if (!isTar) await tail.close();
    }
    if (!isTar) return null;
    opened(tail);
    const phases = new Phases();
    const lock = await lockStores(this.stores, 'shared', { onWait: (s) => this.log(`waiting for the gc running on ${s}`) }).catch(async (err) => {
      await tail.close();
      throw err;
    });
    const { store, journal } = this.ownedStore();
    const tree = newTree();
    const stats = { entries: 0 };
    try {
      await applyLayerStream(tree, tail.chunks(), { layer: 'ingest', inlineThreshold: this.inlineThreshold, store, stats, rootEntries: 'ignore' });
      const blob = await tail.finish(path.join(this.containerdRoot!, 'io.containerd.content.v1.content', 'blobs'));
      if (!blob) throw new Error(`containerd did not commit the bytes we read (${tail.why})`);
      phases.mark('read+parse while ingested');
      await store.flush();
      phases.mark('objects written');
      const synced = this.syncStores();
      synced.catch(() => {});
      const encoded = encodeBlob(tree, { inlineThreshold: this.inlineThreshold });
      phases.mark('encode');
      return { digest: blob.digest, size: blob.size, tree, blob: encoded, entries: stats.entries, objectsNew: store.stats.objectsNew, bytesNew: store.stats.bytesNew, lock, phases, synced };
    } catch (err) {
      await store.abort();
      lock.release();
      throw err;
    } finally {
      await tail.close();
      await store.close();
      this.adoptJournal(journal);
    }
  }

  /**
   * The speculation whose bytes are `layer`'s tar, taken. A speculation still running is waited
   * for only if containerd has committed its file (then it may be this layer; one whose file
   * is still being ingested is not: containerd asks for layers it has).
   */
  private async takeSpeculation(layer: LayerRef): Promise<Speculated | null> {
    for (const running of [...this.speculating]) if (running.tail && !running.tail.stillIngesting()) await running.done;
    // an uncompressed layer: its blob's digest is its diff_id, which its chain id comes from
    if (layer.diffId !== undefined && layer.diffId !== layer.digest) return null;
    const r = this.speculated.get(layer.digest);
    if (!r || (layer.size !== undefined && layer.size !== r.size)) return null;
    this.speculated.delete(r.digest);
    clearTimeout(r.timer);
    return r;
  }

  private dropSpeculation(r: Speculated, why: string): void {
    if (this.speculated.get(r.digest) !== r) return;
    this.speculated.delete(r.digest);
    clearTimeout(r.timer);
    r.lock.release();
    this.log(`speculation on ${r.digest} dropped (${why})`);
  }

  /** The fast path with a speculated base layer: only the durable steps are left. */
  private async publishSpeculated(layer: LayerRef, target: string, labels: Record<string, string>, r: Speculated): Promise<void> {
    const phases = r.phases;
    phases.mark('until Prepare');
    const tmp = this.tmpPath('blob');
    let id;
    try {
      // the syncfs the speculation started; a failed one is tried again (its error may have passed)
      const synced = r.synced.catch(() => this.syncStores());
      synced.catch(() => {});
      id = await this.publishLayer(target, null, labels, r.blob, tmp, synced, committedUsage(r.blob, r), phases);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    } finally {
      r.lock.release();
    }
    this.keepTree(id, r.blob);
    this.counters.fastPath++;
    this.log(`fast path: ${target} (id ${id}) compiled from ${layer.digest} (ingest, while containerd wrote it): ${r.entries} entries, ` +
      `${r.objectsNew} new objects (${phases})`);
  }

  /** Read `layer` (checked as digestCheck() says) and apply it onto `tree`, objects into `store`. */
  private async applyLayer(namespace: string, layer: LayerRef, tree: TreeNode, store: StoreWriter): Promise<{ stats: { entries: number }; reading: LayerReading }> {
    const file = this.contentFile(layer.digest);
    const reading = new LayerReading(digestCheck(layer, file !== null));
    const stats = { entries: 0 };
    await applyLayerStream(tree, layerTar(this.layerBytes(namespace, layer, file, reading), reading), {
      layer: layer.digest.slice(7, 19), inlineThreshold: this.inlineThreshold, store, stats,
      // as containerd's applier (and so its own snapshotters and our slow path): a layer's "./" is skipped
      rootEntries: 'ignore',
    });
    reading.verify();
    if (layer.size !== undefined && reading.storedBytes !== layer.size) {
      throw new Error(`layer ${layer.digest}: ${reading.storedBytes} bytes read, its descriptor says ${layer.size}`);
    }
    return { stats, reading };
  }

  // ------------------------------------------------------------------------------- compile ahead (slow path)

  /**
   * containerd's unpack without snapshot.ref (1.6's `ctr images import`, 1.7's local one) names
   * the layer's chain id in the extraction key, then applies the layer into our upper and calls
   * Commit; compiling the upper only then puts our whole compile after containerd's apply. The
   * chain id names the layer's content exactly (it is computed from the diff_ids), so we compile
   * that layer from containerd's content store WHILE containerd applies it, on the other core,
   * and Commit takes the result instead of reading the upper back (the tree then equals the fast
   * path's, without containerd's applier differences). Nothing durable happens here, and no
   * object is written: the contents are hashed (the stores' shared lock stays held until Commit),
   * the new ones listed, and the blob encoded in memory. Commit links the upper's files that hold
   * the new contents into the store (linkDeferred: containerd has written each of them once
   * already; writing copies here, on the cores containerd applies on, cost ~0.45 s of image b's
   * base layer), syncs, writes the blob and commits the row, as compileUpper does. Null when
   * the layer is not in the content store or anything fails: Commit
   * then compiles the upper. Runs outside the call lock (Commit and Remove await it).
   */
  private async compileAhead(id: number, namespace: string, chain: string, p: SnapshotRow | null): Promise<AheadResult | null> {
    const phases = new Phases();
    const tree = this.takeTree(p); // before any await: the parent's tree as Prepare saw it
    let layer: LayerRef | null;
    try {
      layer = await this.content!.findLayer(namespace, chain, {});
    } catch (err: any) {
      this.log(`compile ahead: cannot search containerd's content store (${err.message}); Commit reads the upper`);
      return null;
    }
    if (!layer) {
      this.log(`compile ahead: no layer with chain id ${chain} in namespace ${namespace}; Commit reads the upper`);
      return null;
    }
    const spec = p ? null : await this.takeSpeculation(layer);
    if (spec) {
      this.log(`compile ahead of snapshot ${id}: ${layer.digest} was compiled while containerd ingested it`);
      return { chain, layer, tree: spec.tree, blob: spec.blob, entries: spec.entries, tarBytes: spec.size, objectsNew: spec.objectsNew, bytesNew: spec.bytesNew, lock: spec.lock, phases: spec.phases, synced: spec.synced };
    }
    if (!(await this.layerArrived(id, namespace, layer))) return null;
    let lock: StoreLock;
    try {
      lock = await lockStores(this.stores, 'shared', { onWait: (s) => this.log(`waiting for the gc running on ${s}`) });
    } catch (err: any) {
      this.log(`compile ahead of snapshot ${id}: ${err.message}; Commit reads the upper`);
      return null;
    }
    // new objects are only hashed here: Commit links containerd's files of the upper in (see commitAhead)
    const { store, journal } = this.ownedStore({ deferNew: true });
    try {
      phases.mark('find layer');
      const { stats, reading } = await this.applyLayer(namespace, layer, tree, store);
      phases.mark('read+parse');
      await store.flush();
      const deferred = filesOfObjects(tree, store.deferred());
      phases.mark('hashed');
      const blob = encodeBlob(tree, { inlineThreshold: this.inlineThreshold });
      phases.mark('encode');
      return { chain, layer, tree, blob, entries: stats.entries, tarBytes: reading.tarBytes, objectsNew: store.stats.objectsNew, bytesNew: store.stats.bytesNew, lock, phases, deferred };
    } catch (err: any) {
      await store.abort();
      lock.release();
      this.log(`compile ahead of snapshot ${id} (${chain}) failed: ${err.message}; Commit reads the upper`);
      return null;
    } finally {
      await store.close();
      this.adoptJournal(journal);
    }
  }

  /**
   * containerd's unpacker (pkg/unpack: 1.7's transfer service, every pull in 2.x) calls Prepare for the
   * first layer an image lacks BEFORE it fetches any layer (its fetch starts once that Prepare
   * returns), so a pull's base layer is not in the content store yet: wait until containerd has
   * committed it, which it does before it applies the layer and calls Commit. Polls Info, every
   * 20 ms at first, then every 250 ms. False (Commit reads the upper) if containerd cannot say,
   * or Commit finds it still absent, or Remove or the end of the process comes first.
   */
  private async layerArrived(id: number, namespace: string, layer: LayerRef): Promise<boolean> {
    let waited = false;
    for (let delay = 20; ; delay = Math.min(2 * delay, 250)) {
      let present: boolean;
      try {
        present = await this.content!.has(namespace, layer.digest);
      } catch (err: any) {
        this.log(`compile ahead of snapshot ${id}: cannot ask containerd for ${layer.digest} (${err.message}); Commit reads the upper`);
        return false;
      }
      if (present) {
        if (waited) this.log(`compile ahead of snapshot ${id}: containerd has ${layer.digest} now`);
        return true;
      }
      if (this.stopWaiting.has(id) || this.closed) {
        this.log(`compile ahead of snapshot ${id}: ${layer.digest} never reached containerd's content store; Commit reads the upper`);
        return false;
      }
      if (!waited) this.log(`compile ahead of snapshot ${id}: waiting for containerd to fetch ${layer.digest}`);
      waited = true;
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  /** Snapshot `id`'s compile ahead, if any: told to stop waiting for its layer, awaited, forgotten. */
  private async takeAhead(id: number): Promise<AheadResult | null> {
    const pending = this.ahead.get(id);
    this.ahead.delete(id);
    if (!pending) return null;
    this.stopWaiting.add(id);
    try {
      return await pending;
    } finally {
      this.stopWaiting.delete(id);
    }
  }

  /**
   * Commit of a layer compiled ahead: its new objects, only hashed then, are the upper's files
   * now that containerd has applied the layer, linked into the store (StoreWriter.adopt: chown,
   * chmod 0444, link; files with xattrs copied) rather than written again. False, with nothing
   * changed, when a file is missing, of another size, or holey without the content (containerd
   * did not apply what we read): Commit then compiles the upper as it is.
   */
  private async linkDeferred(id: number, r: AheadResult): Promise<boolean> {
    r.phases.mark('until Commit');
    if (!r.deferred || r.deferred.length === 0) return true;
    const upper = Buffer.from(`${this.upper(id)}/`);
    const items = r.deferred.map((d) => ({ hex: d.hex, size: d.size, file: Buffer.concat([upper, d.rel]), copy: d.xattrs }));
    // The bytes of those files must reach the disk whatever happens next: their writeback starts
    // now, beside the links, and Commit's own syncfs then has little left but the metadata.
    if (2 * items.reduce((n, it) => n + it.size, 0) >= r.tarBytes) this.syncStores().catch(() => {});
    const { store, journal } = this.ownedStore();
    try {
      const added = await store.adopt(items);
      r.objectsNew += added.objectsNew;
      r.bytesNew += added.bytesNew;
      r.bytesLinked = added.bytesLinked;
      r.phases.mark(`${added.objectsLinked} objects linked`);
      return true;
    } catch (err: any) {
      if (!(err instanceof AdoptMismatch)) throw err;
      this.log(`commit of snapshot ${id}: the upper is not the layer compiled ahead (${err.message}); compiling the upper`);
      return false;
    } finally {
      await store.close();
      this.adoptJournal(journal);
    }
  }

  /** Wait for snapshot `id`'s compile ahead, if any, and give up its result. */
  private async dropAhead(id: number): Promise<void> {
    (await this.takeAhead(id))?.lock.release();
  }

  /**
   * Commit with the layer compiled ahead: the upper holds what containerd applied, which is the
   * same layer; it is emptied BEFORE the stores' syncfs (see emptyUpper), then the blob is
   * written while syncfs runs, and the row commits once both are durable. When a speculation's
   * syncfs already made the objects durable, there is no syncfs to empty the upper for: it goes
   * to the trash after the commit (dropUpper), and this Commit does not wait for its unlinks.
   */
  private async commitAhead(row: SnapshotRow, name: string, key: string, labels: Record<string, string>, r: AheadResult): Promise<void> {
    const phases = r.phases;
    try {
      const durable = r.synced !== undefined && (await r.synced.then(() => true, () => false));
      let synced = Promise.resolve();
      if (!durable) {
        // When most of the upper's bytes are objects now (linked), the syncfs must write them
        // anyway: no emptying first, the upper goes to the trash after the commit.
        if ((r.bytesLinked ?? 0) * 2 < r.tarBytes) {
          await this.emptyUpper(row.id, r.tree);
          phases.mark('upper emptied');
        }
        synced = this.syncStores();
        synced.catch(() => {});
      }
      this.addRoots(row.id);
      await writeFileAtomic(this.blob(row.id), r.blob);
      phases.mark('blob written');
      await synced;
      phases.mark('syncfs');
      this.markCommitted(row, name, key, labels, committedUsage(r.blob, r));
      phases.mark('committed');
    } finally {
      r.lock.release();
    }
    this.keepTree(row.id, r.blob);
    this.counters.compiledAhead++;
    this.log(`commit ${key} -> ${name} (id ${row.id}): compiled ahead from ${r.layer.digest}: ${r.entries} entries, ${r.objectsNew} new objects (${phases})`);
  }

  /**
   * The layer's stored bytes: from containerd's content store file (`file`, from contentFile())
   * on the reader thread, else through the content API. The caller verifies what digestCheck() asked.
   */
  private layerBytes(namespace: string, layer: LayerRef, file: string | null, reading: LayerReading): AsyncIterable<Buffer> {
    reading.source = file ? 'file' : 'content API';
    if (file) {
      this.files ??= new LayerFileReader();
      return this.files.read({ path: file, start: 0 }, reading);
    }
    return this.content!.read(namespace, layer.digest);
  }

  /** containerd's file for a blob, if we were told its root and can read it; else null. */
  private contentFile(digest: string): string | null {
    if (!this.containerdRoot) return null;
    const { algorithm, hex } = parseDigest(digest);
    const file = path.join(this.containerdRoot, 'io.containerd.content.v1.content', 'blobs', algorithm, hex);
    try {
      fs.closeSync(fs.openSync(file, 'r'));
      return file;
    } catch (err: any) {
      this.log(`fast path: cannot open ${file} (${err.code ?? err.message}); reading ${digest} through the content API`);
      return null;
    }
  }

  // ------------------------------------------------------------------------------- Commit

  commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    return this.lock.run(async () => {
      checkLabels(labels);
      // the name first, as containerd's storage.CommitActive checks it
      if (this.db.get(name)) throw new SnapshotError('AlreadyExists', `snapshot ${name} already exists`);
      const row = this.db.mustGet(key);
      if (row.kind !== Kind.ACTIVE) throw new SnapshotError('FailedPrecondition', `snapshot ${key} is not active`);
      const started = performance.now();
      const p = row.parentId === null ? null : this.db.byId(row.parentId)!;
      const ahead = await this.takeAhead(row.id);
      let linked = false;
      if (ahead && name.endsWith(`/${ahead.chain}`)) {
        try {
          linked = await this.linkDeferred(row.id, ahead);
        } catch (err) {
          ahead.lock.release();
          throw err;
        }
      }
      if (ahead && linked) {
        await this.commitAhead(row, name, key, storedLabels(labels), ahead);
        await this.dropUpper(row, p);
        return;
      }
      ahead?.lock.release(); // not the layer containerd names in this Commit, or not what it applied
      const phases = new Phases();
      const { diff, created } = await this.writing(() => this.compileUpper(row, p, name, key, storedLabels(labels), phases));
      this.counters.slowCommits++;
      await this.dropUpper(row, p);
      if (p) await this.dropMappedLower(p.id, row.labels); // row: as it was before the Commit
      phases.mark('upper removed');
      this.log(`commit ${key} -> ${name} (id ${row.id}): ${diff.entries} upper entries, ${diff.whiteouts} whiteouts, ` +
        `${created} new objects, ${((performance.now() - started) / 1000).toFixed(2)} s (${phases})`);
    });
  }

  /** After a Commit: the upper is in the blob and the store now; the parent's mount may go. */
  private async dropUpper(row: SnapshotRow, p: SnapshotRow | null): Promise<void> {
    this.trash(this.upper(row.id));
    this.trash(this.work(row.id));
    if (p && this.plainChildren(p.id) === 0) await this.unmount(p.id);
  }

  /**
   * Move `dir` into tmp/ and delete it there in the background: a Commit need not wait for a
   * layer's thousands of unlinks (0.14 s for image b's base layer on a journalled ext4). Every
   * syncfs waits until the trash is empty (syncStores), so that it never writes out the pages
   * of files about to go; startup and Cleanup sweep tmp/ should we die first.
   */
  private trash(dir: string): void {
    const to = this.tmpPath('trash');
    try {
      fs.renameSync(dir, to);
    } catch (err: any) {
      if (err.code === 'ENOENT') return;
      throw err;
    }
    const gone: Promise<void> = execFileP('find', [to, '-delete'])
      .then(() => {}, () => fsp.rm(to, { recursive: true, force: true }))
      .catch((err) => this.log(`cannot delete ${to}: ${err.message}`))
      .finally(() => this.trashing.delete(gone));
    this.trashing.add(gone);
  }

  /** Until the directories trash() is deleting are gone. */
  private async trashEmptied(): Promise<void> {
    while (this.trashing.size > 0) await Promise.all([...this.trashing]);
  }

  /** One syncfs per store, once the trash is empty (see trash()). */
  private async syncStores(): Promise<void> {
    await this.trashEmptied();
    await syncStores(this.stores);
  }

  /** Commit's work, under the stores' shared lock: upper + parent tree -> blob, row committed. */
  private async compileUpper(row: SnapshotRow, p: SnapshotRow | null, name: string, key: string, labels: Record<string, string>, phases: Phases) {
    const tree = this.takeTree(p);
    phases.mark('parent tree');
    const { store, journal } = this.ownedStore();
    let diff;
    let blob: Buffer;
    try {
      // an upper written through a mapping holds host ids: the image's go into the blob
      const idmap = p ? idMapOf(row.labels) : null;
      const unmap = idmap ? { uid: (h: number) => unmapId(idmap.uid, h), gid: (h: number) => unmapId(idmap.gid, h) } : undefined;
      diff = await applyOverlayDiff(tree, this.upper(row.id), { store, inlineThreshold: this.inlineThreshold, whiteouts: p !== null, unmap });
      phases.mark('upper read');
      await store.flush();
      phases.mark('objects written');
      if (isExtractKey(key)) {
        await this.emptyUpper(row.id, tree);
        phases.mark('upper emptied');
      }
      const synced = this.syncStores(); // while the blob is encoded (see compileLayer)
      synced.catch(() => {});
      this.addRoots(row.id);
      blob = encodeBlob(tree, { inlineThreshold: this.inlineThreshold });
      phases.mark('encode');
      await writeFileAtomic(this.blob(row.id), blob);
      phases.mark('blob written');
      await synced;
      phases.mark('syncfs');
    } catch (err) {
      await store.abort();
      throw err;
    } finally {
      await store.close();
      this.adoptJournal(journal);
    }
    this.markCommitted(row, name, key, labels, committedUsage(blob, store.stats));
    phases.mark('committed');
    this.keepTree(row.id, blob);
    return { diff, created: store.stats.objectsNew };
  }

  /** The row of active snapshot `key` becomes committed snapshot `name` (its blob is durable). */
  private markCommitted(row: SnapshotRow, name: string, key: string, labels: Record<string, string>, usage: Usage): void {
    this.db.tx(() => {
      const again = this.db.get(key);
      if (!again || again.id !== row.id || again.kind !== Kind.ACTIVE) throw new SnapshotError('FailedPrecondition', `snapshot ${key} changed during commit`);
      if (this.db.get(name)) throw new SnapshotError('AlreadyExists', `snapshot ${name} already exists`);
      // containerd replaces the labels at commit, it does not inherit the active snapshot's
      this.db.markCommitted(row.id, name, labels, usage.size, usage.inodes);
    });
  }

  /**
   * Empty a layer extraction's upper once its files are objects, BEFORE the stores' syncfs: the
   * upper usually lives on the same filesystem, and syncfs would first write out every byte
   * containerd just unpacked into it (a layer's worth of dirty pages) only for us to delete it
   * right after; files unlinked before writeback are never written. Only for containerd's
   * extract snapshots: if this Commit fails, containerd removes that snapshot (an upper that
   * anyone could commit again must stay whole). The directory stays, empty, as an active
   * snapshot's upper is. find(1) deletes a layer's thousands of files several times faster than
   * fs.rm (2.7 s for image b's base layer on a loaded machine). Two of them at once, on halves
   * of the upper weighed by `tree` (the layer's tree, or its whole image's): unlinks in
   * different directories run on both cores while containerd waits for this Commit (b's base
   * layer on a journalled ext4: 0.125 -> 0.075 s); a last one removes what they left.
   */
  private async emptyUpper(id: number, tree: TreeNode): Promise<void> {
    const upper = this.upper(id);
    const halves = splitSubtrees(tree, 2).map((rels) => startPointsIn(upper, rels));
    await Promise.all(halves.filter((h) => h.length > 0).map((h) => execFileP('find', [...h, '-delete']).catch(() => {})));
    await execFileP('find', [upper, '-mindepth', '1', '-delete']);
  }

  // ------------------------------------------------------------------------------- object ownership

  /**
   * A StoreWriter whose writer thread journals each object it adds (ROOT/journal/*) before the
   * object exists, so a snapshotter killed mid-commit leaves no object on disk that Cleanup
   * does not know is ours. adoptJournal() moves the journal into the database afterwards.
   */
  private ownedStore(opts: { deferNew?: boolean } = {}): { store: StoreWriter; journal: string } {
    const journal = path.join(this.root, 'journal', path.basename(this.tmpPath('objects')));
    this.liveJournals.add(journal);
    return { store: new StoreWriter(this.stores, { journal, startNow: true, deferNew: opts.deferNew }), journal };
  }

  /** Record a journal's objects as ours (one transaction), then drop it. */
  private adoptJournal(file: string): void {
    try {
      let text;
      try {
        text = fs.readFileSync(file, 'latin1');
      } catch (err: any) {
        if (err.code === 'ENOENT') return; // no new object
        throw err;
      }
      // a killed writer may have left half a line: a digest is all 64 hex digits or nothing
      this.db.addObjects(text.split('\n').filter((l) => /^[0-9a-f]{64}$/.test(l)));
      fs.rmSync(file, { force: true });
    } finally {
      this.liveJournals.delete(file);
    }
  }

  /**
   * Journals left by writers that are gone: killed commits, and this process's finished ones.
   * A journal a writer still appends to is skipped: compileAhead and speculate write objects
   * outside the lock, and taking their journal away would lose the lines written after it.
   */
  private adoptJournals(): void {
    const dir = path.join(this.root, 'journal');
    for (const name of fs.readdirSync(dir)) {
      const file = path.join(dir, name);
      if (!this.liveJournals.has(file)) this.adoptJournal(file);
    }
  }

  // ------------------------------------------------------------------------------- Update

  update(name: string, labels: Record<string, string>, paths: string[]): Promise<SnapshotInfo> {
    return this.lock.run(async () => {
      checkLabels(labels);
      const row = this.db.mustGet(name);
      let next: Record<string, string>;
      const mappingOf = (l: Record<string, string>): string => `${l[LABEL_UIDMAP] ?? ''}|${l[LABEL_GIDMAP] ?? ''}`;
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
      next = storedLabels(next);
      // what an active snapshot or a view is mounted through is fixed when it is made: its lower is mounted so
      if (row.kind !== Kind.COMMITTED && mappingOf(next) !== mappingOf(row.labels)) {
        throw new SnapshotError('FailedPrecondition', `snapshot ${name}: its uid/gid mapping (${LABEL_UIDMAP}, ${LABEL_GIDMAP}) is fixed when it is prepared`);
      }
      this.db.setLabels(row.id, next);
      return this.info(this.db.byId(row.id)!);
    });
  }

  // ------------------------------------------------------------------------------- Remove / Cleanup

  remove(key: string): Promise<void> {
    return this.lock.run(async () => {
      const row = this.db.mustGet(key);
      if (this.db.children(row.id).length > 0) throw new SnapshotError('FailedPrecondition', `cannot remove snapshot ${key}: it has children`);
      await this.dropAhead(row.id);
      // The row goes and the directory moves to the trash in one transaction: a kill before it
      // commits leaves both, after it neither (startup empties the trash, see sweepDirs).
      const trash = this.tmpPath(`rm-${row.id}`);
      try {
        this.db.tx(() => {
          // again: a Prepare without the lock may have put a child on it since the check above
          if (this.db.children(row.id).length > 0) throw new SnapshotError('FailedPrecondition', `cannot remove snapshot ${key}: it has children`);
          this.db.delete(row.id);
          if (fs.existsSync(this.dir(row.id))) fs.renameSync(this.dir(row.id), trash);
        });
      } catch (err) {
        if (fs.existsSync(trash)) fs.renameSync(trash, this.dir(row.id)); // the row is still there
        throw err;
      }
      if (this.lastTree?.id === row.id) this.lastTree = null;
      // The key is gone: what fails from here is logged and left to Cleanup (sweepDirs,
      // sweepMounts), as containerd's overlay snapshotter does; an error would tell containerd's
      // GC (which tolerates FailedPrecondition only) the Remove failed, and stop its run.
      try {
        if (row.kind === Kind.COMMITTED) {
          this.removeRoots(row.id);
          await this.unmount(row.id);
        }
        await fsp.rm(trash, { recursive: true, force: true });
        if (row.parentId !== null && this.plainChildren(row.parentId) === 0) await this.unmount(row.parentId);
        if (row.parentId !== null && row.kind !== Kind.COMMITTED) await this.dropMappedLower(row.parentId, row.labels);
      } catch (err) {
        this.log(`remove ${key} (id ${row.id}): ${(err as Error).message}; left to Cleanup`);
      }
      this.log(`remove ${key} (id ${row.id})`);
    });
  }

  /** Reclaims what no snapshot needs: directories, mounts, and objects we created. */
  cleanup(): Promise<{ objects: number; bytes: number }> {
    return this.lock.run(async () => {
      this.adoptJournals();
      await this.sweepDirs();
      await this.sweepMounts();
      if (this.cleanedState !== null && this.cleanedState === this.cleanupState()) {
        this.log('cleanup: no object can have become garbage since the last one');
        return { objects: 0, bytes: 0 };
      }
      await this.syncRoots();
      const r = await this.collectObjects();
      this.log(`cleanup: ${r.objects} objects (${r.bytes} bytes) removed`);
      return r;
    });
  }

  /**
   * containerd calls Cleanup after every garbage collection that removed a snapshot, most often
   * a container's active one, which frees no object; collecting (every committed blob's digests
   * read) and checking the roots cost ~65 ms on the Debian image, and the next container's
   * Prepare waited for them. The objects that are garbage are those we created that neither a
   * committed blob of ours nor a gc root of the stores references: they can change only when
   * our committed snapshots change (blobs never change), when we record new objects (collection
   * is the only thing that drops them), or when the stores' roots or the blobs they name change.
   * This string covers all of those; the caller compares it with the one after the last
   * Cleanup that completed.
   */
  private cleanupState(withObjectCount = true): string {
    const committed = this.db.all().filter((r) => r.kind === Kind.COMMITTED).map((r) => r.id);
    const parts = [committed.join(','), withObjectCount ? String(this.db.objectCount()) : ''];
    for (const s of this.stores) {
      const dir = path.join(s, ROOTS_DIR);
      parts.push(`${s}:${statKey(dir)}`);
      for (const name of listDir(dir)) parts.push(`${name}:${statKey(path.join(dir, name))}`);
    }
    return parts.join('|');
  }

  /** Moves `dir` to the trash at once (no await between the caller's check and the move), then deletes it. */
  private async removeDir(dir: string): Promise<void> {
    if (!fs.existsSync(dir)) return;
    const trash = this.tmpPath('gone');
    fs.renameSync(dir, trash);
    await fsp.rm(trash, { recursive: true, force: true });
  }

  /** Directories without a row, uppers of committed snapshots, temp files. */
  private async sweepDirs(): Promise<void> {
    await this.trashEmptied(); // not deleting the same files twice at once
    // Each entry's row is read right before acting on it, with no await between: a Prepare
    // without the lock (createUnlocked) may have created snapshot N since the readdir.
    const rowOf = (name: string): SnapshotRow | undefined => (/^\d+$/.test(name) ? this.db.byId(Number(name)) : undefined);
    for (const name of await fsp.readdir(path.join(this.root, 'snapshots'))) {
      const row = rowOf(name);
      if (!row) {
        this.log(`cleanup: removing snapshots/${name} (no such snapshot)`);
        await this.removeDir(path.join(this.root, 'snapshots', name));
      } else {
        if (row.kind === Kind.COMMITTED) {
          await fsp.rm(this.upper(row.id), { recursive: true, force: true });
          await fsp.rm(this.work(row.id), { recursive: true, force: true });
        }
        // a Commit killed while writing its blob (writeFileAtomic's temp name); under the lock no
        // Commit is writing one now
        for (const f of await fsp.readdir(this.dir(row.id)).catch(() => [] as string[])) {
          if (f.startsWith(`${path.basename(this.blob(row.id))}.tmp-`)) await fsp.rm(path.join(this.dir(row.id), f), { force: true });
        }
      }
    }
    for (const name of await fsp.readdir(path.join(this.root, 'tmp'))) {
      if (this.creating.has(name)) continue; // a snapshot directory being prepared without the lock
      // a Remove killed before its transaction committed: the row is still there, so is its directory
      const removed = /^rm-(\d+)-/.exec(name);
      const row = removed ? rowOf(removed[1]) : undefined;
      if (row && !fs.existsSync(this.dir(row.id))) {
        this.log(`cleanup: restoring snapshots/${row.id} (its Remove did not complete)`);
        await fsp.rename(path.join(this.root, 'tmp', name), this.dir(row.id));
        continue;
      }
      await fsp.rm(path.join(this.root, 'tmp', name), { recursive: true, force: true });
    }
  }

  /** Unmount every blob mount that no active or view snapshot needs. */
  private async sweepMounts(): Promise<void> {
    for (const name of await fsp.readdir(path.join(this.root, 'mounts'))) {
      // asked again right before each unmount (no await between): a child created meanwhile without the lock keeps it
      const needed = (/^\d+$/.test(name) && this.plainChildren(Number(name)) > 0) || this.mappedMountsNeeded().has(name);
      if (!needed) await this.unmountPath(path.join(this.root, 'mounts', name));
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
      // What the roots were read under: a root released while they were read (a blob deleted:
      // no lock needed) may have been counted as referencing its objects, so the state is
      // recorded as collected only if nothing but our own deletions changed it meanwhile.
      const before = this.cleanupState(false);
      const refs = await this.neededObjects();
      if (!refs) return { objects: 0, bytes: 0 };
      const r = this.deleteOwnedExcept(refs);
      this.cleanedState = this.cleanupState(false) === before ? this.cleanupState() : null;
      return r;
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
    if (isLiveMount(at)) return;
    // a FUSE mount whose server died (ENOTCONN) would be handed out as an empty lower: replaced
    if (isMountPoint(at)) await this.unmountPath(at);
    await fsp.mkdir(at, { recursive: true, mode: 0o755 });
    await mountBlob({ blob: this.blob(id), target: at, stores: this.stores, backend: this.backend, log: (l) => this.log(l) });
    this.log(`mounted snapshot ${id}'s blob on ${at} (${this.backend})`);
  }

  /** The lower a child of `parentId` needs: the parent's blob mount, or one through the child's uid/gid mapping. */
  private async ensureLower(parentId: number, idmap: IdMapLabels | null): Promise<void> {
    if (!idmap) return this.ensureMounted(parentId);
    const at = this.mappedMountPoint(parentId, idmap);
    if (isLiveMount(at)) return;
    if (isMountPoint(at)) await this.unmountPath(at);
    await fsp.mkdir(at, { recursive: true, mode: 0o755 });
    const how = `uid map ${idmap.uidText}, gid map ${idmap.gidText}`;
    try {
      if (this.backend === 'kernel' && addonBuilt()) {
        // an idmapped bind of the module's mount: the kernel data path and one page cache for
        // every mapping (kmod: FS_ALLOW_IDMAP)
        await this.ensureMounted(parentId);
        await withUserNamespace(idmap.uid, idmap.gid, (fd) => idmapBind(this.mountPoint(parentId), at, fd));
        this.log(`idmapped bind of snapshot ${parentId}'s mount on ${at} (${how})`);
        return;
      }
      // FUSE (also without the addon): the server maps the ids itself (-o uidmap=,gidmap=)
      await mountBlob({ blob: this.blob(parentId), target: at, stores: this.stores, backend: 'fuse',
        uidmap: idmap.uidText, gidmap: idmap.gidText, log: (l) => this.log(l) });
      this.log(`mounted snapshot ${parentId}'s blob on ${at} through ${how} (fuse)`);
    } catch (err) {
      if (!isMountPoint(at)) await fsp.rmdir(at).catch(() => {}); // no empty mount point left for Cleanup
      throw err;
    }
  }

  /** Open snapshots (active, views) on `id` that use its plain blob mount, not one through a mapping. */
  private plainChildren(id: number): number {
    return this.db.children(id).filter((r) => (r.kind === Kind.ACTIVE || r.kind === Kind.VIEW) &&
      r.labels[LABEL_UIDMAP] === undefined && r.labels[LABEL_GIDMAP] === undefined).length;
  }

  /** After a snapshot with these labels went (or was committed): its mapped lower, unless another open one uses it. */
  private async dropMappedLower(parentId: number, labels: Record<string, string>): Promise<void> {
    const idmap = idMapOf(labels);
    if (!idmap) return;
    const at = this.mappedMountPoint(parentId, idmap);
    if (!this.mappedMountsNeeded().has(path.basename(at))) await this.unmountPath(at);
  }

  /** Names under mounts/ of the mapped lowers that open snapshots use. */
  private mappedMountsNeeded(): Set<string> {
    const out = new Set<string>();
    for (const r of this.db.all()) {
      if ((r.kind === Kind.ACTIVE || r.kind === Kind.VIEW) && r.parentId !== null) {
        const m = idMapOf(r.labels);
        if (m) out.add(path.basename(this.mappedMountPoint(r.parentId, m)));
      }
    }
    return out;
  }

  private async unmount(id: number): Promise<void> {
    await this.unmountPath(this.mountPoint(id));
  }

  /**
   * Marks `at` as going before its first await: a caller that found no open child of the mount
   * and calls this in the same step cannot have createUnlocked put one on it meanwhile.
   */
  private async unmountPath(at: string): Promise<void> {
    if (!pathPresent(at)) return;
    this.unmounting.add(at);
    try {
      if (isMountPoint(at, readMountinfo())) {
        await umountTarget(at, { log: (l) => this.log(l) });
        this.log(`unmounted ${at}`);
      }
    } catch (err: any) {
      this.log(`cannot unmount ${at}: ${err.message} (Cleanup tries again)`);
      return;
    } finally {
      this.unmounting.delete(at);
    }
    try {
      await fsp.rmdir(at);
    } catch (err: any) {
      if (err.code !== 'ENOENT') this.log(`cannot remove ${at}: ${err.message}`);
    }
  }
}

/** Whether something is at `at`, even a mount point whose FUSE server died (stat: ENOTCONN). */
function pathPresent(at: string): boolean {
  try {
    fs.lstatSync(at);
    return true;
  } catch (err: any) {
    return err.code !== 'ENOENT';
  }
}

/**
 * A mount point still served: a FUSE mount whose server died (ENOTCONN for anything not in the
 * kernel's caches) is not. Asked of the mount's state and /proc (serverAlive), never of the mount:
 * a stat or statfs there would block this whole process if the server is stopped.
 */
function isLiveMount(at: string): boolean {
  return isMountPoint(at) && serverAlive(at);
}

/**
 * What a layer's bytes must be checked against. A file of containerd's content store
 * (blobs/<alg>/<hex>) holds what containerd verified against that digest when it committed the
 * blob, and committed blobs never change: hashing it again only costs a read of the layer's
 * worth of sha256 (~0.5 s CPU for a 200 MB layer). So a layer read from there is hashed only
 * when its diff_id covers other bytes than the file's (a compressed layer: the tar inside must
 * match the diff_id its chain id was computed from). Through the content API everything is checked.
 */
function digestCheck(layer: LayerRef, fromContentFile: boolean): LayerDigestCheck | null {
  if (layer.diffId && !(fromContentFile && layer.diffId === layer.digest)) return { digest: layer.diffId, scope: 'uncompressed' };
  if (layer.diffId || fromContentFile) return null;
  return { digest: layer.digest, scope: 'stored', size: layer.size };
}

/** containerd does not keep labels with empty values (boltutil.WriteLabels): neither do we. */
interface Usage {
  size: number;
  inodes: number;
}

/**
 * What a committed snapshot itself takes on disk, the same whichever path committed it: its
 * blob (in 4 KiB blocks) and the objects it added to the store (files of content no earlier
 * image had: deduplicated content costs a layer nothing), one inode each.
 */
function committedUsage(blob: Buffer, added: { objectsNew: number; bytesNew: number }): Usage {
  return { size: Math.ceil(blob.length / 4096) * 4096 + added.bytesNew, inodes: 1 + added.objectsNew };
}

/**
 * containerd's labels for a snapshot seen from a user namespace (ctr run --remap-labels, the CRI
 * plugin for pods without host users): the image's ids FIRST.. are shown as MAPPED.. .
 */
export const LABEL_UIDMAP = 'containerd.io/snapshot/uidmapping';
export const LABEL_GIDMAP = 'containerd.io/snapshot/gidmapping';

interface IdMapLabels {
  uid: IdRange[];
  gid: IdRange[];
  uidText: string;
  gidText: string;
  /** Names the mapped mount of a parent (mounts/PARENT-TAG). */
  tag: string;
}

/** The image's id that host id `h` shows through `ranges`; null when no range maps to it. */
function unmapId(ranges: IdRange[], h: number): number | null {
  for (const r of ranges) if (h >= r.outside && h - r.outside < r.count) return r.inside + (h - r.outside);
  return null;
}

/** The uid/gid mapping a snapshot's labels ask for; null without one. Both labels or neither. */
function idMapOf(labels: Record<string, string>): IdMapLabels | null {
  const u = labels[LABEL_UIDMAP];
  const g = labels[LABEL_GIDMAP];
  if (u === undefined && g === undefined) return null;
  if (u === undefined || g === undefined) {
    throw new SnapshotError('InvalidArgument', `labels ${LABEL_UIDMAP} and ${LABEL_GIDMAP} go together`);
  }
  try {
    const uid = parseIdMap(LABEL_UIDMAP, u);
    const gid = parseIdMap(LABEL_GIDMAP, g);
    const canon = (rs: IdRange[]): string => rs.map((r) => `${r.inside}:${r.outside}:${r.count}`).join(',');
    const uidText = canon(uid);
    const gidText = canon(gid);
    const tag = crypto.createHash('sha256').update(`${uidText}/${gidText}`).digest('hex').slice(0, 16);
    return { uid, gid, uidText, gidText, tag };
  } catch (err) {
    if (err instanceof MountError) throw new SnapshotError('InvalidArgument', err.message);
    throw err;
  }
}

/** containerd's label limit (labels.Validate): a key and its value, 4096 bytes together. */
const LABEL_MAX_BYTES = 4096;

function checkLabels(labels: Record<string, string>): void {
  for (const [k, v] of Object.entries(labels)) {
    const size = Buffer.byteLength(k) + Buffer.byteLength(v ?? '');
    if (size > LABEL_MAX_BYTES) {
      throw new SnapshotError('InvalidArgument', `label ${JSON.stringify(k.slice(0, 64))}: key and value of ${size} bytes, more than ${LABEL_MAX_BYTES}`);
    }
  }
}

function storedLabels(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ''));
}

/** The chain id an extraction key names, else null. */
export function extractChain(key: string): string | null {
  return isExtractKey(key) ? key.slice(key.lastIndexOf(' ') + 1) : null;
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

/** Write `file` and fsync it (a temp name: the caller renames it into place). */
function writeFileDurable(file: string, data: Buffer): void {
  const fd = fs.openSync(file, 'w', 0o644);
  try {
    for (let at = 0; at < data.length; ) at += fs.writeSync(fd, data, at, data.length - at);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function copyRootMetadata(src: { mode: number; uid: number; gid: number; mtimeSec: number; mtimeNsec: number }, dir: string): void {
  fs.chmodSync(dir, src.mode & 0o7777);
  fs.chownSync(dir, src.uid, src.gid);
  // touch(1) keeps nanoseconds; utimes() from JavaScript goes through a double.
  const r = spawnSync('touch', ['-d', `@${src.mtimeSec}.${String(src.mtimeNsec).padStart(9, '0')}`, dir]);
  if (r.status !== 0) throw new Error(`touch ${dir}: ${r.stderr?.toString().trim()}`);
}

/**
 * For each object of `wanted` (new objects of a layer compiled ahead), a path of a regular file
 * of `tree` with that content, relative, binary-safe. Directories a lazy tree has not decoded
 * are not entered: the layer did not touch them, so their files are the parent's, whose
 * objects are in the store already. An object with no file (a file the layer added and then
 * removed again) is left out: the blob does not need it.
 */
export function filesOfObjects(tree: TreeNode, wanted: readonly { hex: string; size: number }[]): DeferredFile[] {
  const bySlot = new Map<string, { hex: string; size: number }>();
  for (const w of wanted) bySlot.set(Buffer.from(w.hex, 'hex').toString('latin1'), w);
  const found: DeferredFile[] = [];
  const walk = (dir: TreeNode, rel: string) => {
    for (const [name, child] of dir.children!) {
      if (bySlot.size === 0) return;
      const here = rel === '' ? name : `${rel}/${name}`;
      const type = child.mode & S_IFMT;
      if (type === S_IFDIR) {
        // (reading a lazy directory's children would decode them)
        if (!childrenDeferred(child)) walk(child, here);
        continue;
      }
      if (type !== S_IFREG || child.digest === undefined) continue;
      const key = child.digest.toString('latin1');
      const w = bySlot.get(key);
      if (w === undefined) continue;
      bySlot.delete(key);
      found.push({ hex: w.hex, size: w.size, rel: Buffer.from(here, 'latin1'), xattrs: child.xattrs.size > 0 });
    }
  };
  if (bySlot.size > 0 && tree.children) walk(tree, '');
  return found;
}

/**
 * Paths (relative, '/'-separated) of subtrees of `tree` in `n` groups with about as many entries
 * each: the tree's entries, a directory split into its own entries while it outweighs half a
 * group, then shared out greedily, biggest first. Names that are not valid UTF-8 are left out
 * (a command line cannot carry them), and so is everything below them.
 */
export function splitSubtrees(tree: TreeNode, n: number): string[][] {
  type Part = { rel: string; weight: number };
  const seen = new Map<TreeNode, number>();
  const total = countEntries(tree, seen);
  const parts: Part[] = [];
  const expand = (rel: string, node: TreeNode) => {
    for (const [name, child] of node.children ?? []) {
      const utf8 = Buffer.from(name, 'latin1').toString('utf8');
      if (Buffer.from(utf8, 'utf8').toString('latin1') !== name) continue;
      const p = { rel: rel ? `${rel}/${utf8}` : utf8, weight: countEntries(child, seen) };
      if (p.weight > total / (2 * n) && !childrenDeferred(child) && child.children && child.children.size > 0) expand(p.rel, child);
      else parts.push(p);
    }
  };
  expand('', tree);
  parts.sort((a, b) => b.weight - a.weight);
  const groups = Array.from({ length: n }, () => ({ rels: [] as string[], weight: 0 }));
  for (const p of parts) {
    const lightest = groups.reduce((a, b) => (b.weight < a.weight ? b : a));
    lightest.rels.push(p.rel);
    lightest.weight += p.weight;
  }
  return groups.map((g) => g.rels);
}

/**
 * The paths of `rels` that are in `dir` itself: each leading component a real directory, not a
 * symlink (the kernel would follow one, and find would delete where it points: the tree that
 * named these paths is not what is on disk, and a layer may put a symlink where the tree has a
 * directory). The last component may be anything; find(1) (-P) does not follow a start point.
 */
export function startPointsIn(dir: string, rels: string[]): string[] {
  const out: string[] = [];
  const realDirs = new Map<string, boolean>();
  const isRealDir = (p: string) => {
    let ok = realDirs.get(p);
    if (ok === undefined) {
      ok = fs.lstatSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
      realDirs.set(p, ok);
    }
    return ok;
  };
  for (const rel of rels) {
    const parts = rel.split('/');
    let at = dir;
    let inside = true;
    for (const part of parts.slice(0, -1)) {
      at = path.join(at, part);
      if (!isRealDir(at)) {
        inside = false;
        break;
      }
    }
    const p = path.join(dir, rel);
    if (inside && fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined) out.push(p);
  }
  return out;
}

/**
 * Entries in `node`'s subtree, itself included (memoized in `seen` while a split runs). A
 * directory of a lazy tree that its layer never opened counts 1: it is not in the upper, and
 * opening it would decode the parent's whole subtree.
 */
function countEntries(node: TreeNode, seen: Map<TreeNode, number>): number {
  let count = seen.get(node);
  if (count !== undefined) return count;
  count = 1;
  if (childrenDeferred(node)) return count;
  for (const child of node.children?.values() ?? []) count += countEntries(child, seen);
  seen.set(node, count);
  return count;
}

/** A file's identity and last change (following symlinks: a root names its blob), or why not. */
function statKey(p: string): string {
  try {
    const st = fs.statSync(p, { bigint: true });
    return `${st.dev}/${st.ino}/${st.mtimeNs}/${st.ctimeNs}/${st.size}`;
  } catch (err: any) {
    return err.code ?? 'error';
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}
