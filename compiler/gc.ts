// `cfs gc --store DIR... [BLOB...]`: delete the objects that neither a gc root of the stores
// (STORE/roots/, see roots.ts) nor a listed blob needs, dangling roots, and temp files that
// killed builds left in `objects/`.
//
// Safety rules:
//   - gc holds every store's lock exclusively (roots.ts) from reading the roots to the last
//     unlink, so a build or snapshotter commit writing into a store (shared lock) is either
//     finished, with its root registered, or not started;
//   - the referenced set is the union of the DIGESTS sections of the listed blobs and of every
//     live root's blob; a listed blob or a root's blob that is not a valid blob stops gc
//     (nothing removed);
//   - a root that cannot be read (EACCES, ELOOP, EIO... on its link, its blob's path or its
//     blob) may need any object of any store: gc names it on one line, removes no object,
//     still drops dangling roots and stale temp files, and exits 1;
//   - with no blob and no live root, gc refuses (it would delete every object) unless
//     --all-unreferenced;
//   - a temp file (`objects/.tmp-*`) goes only when unwritten for a minute and its writer's pid
//     is gone, or after a day (the rule of store.ts's cleanStaleTemps, so a slow live build
//     keeps its temp file);
//   - only names of the store layout are touched (`objects/XX/62hex`, `objects/.tmp-*`,
//     `roots/*`); fan-out directories stay, since a concurrent writer may be about to rename
//     into one.
// A crash mid-gc leaves a store with fewer unreferenced objects, never a missing referenced one.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { OBJECTS_DIR, isTempName } from './store.js';
import { dropDeadRoots, lockStores, readRoots, type Root, type UnreadableRoot } from './roots.js';
import { withBlob, writeStdout } from './inspect.js';
import { collectStores } from './options.js';

export interface GcOptions {
  stores: string[];
  blobs: string[];
  dryRun?: boolean;
  /** Allow running with no blob and no live root: every object is unreferenced. */
  allUnreferenced?: boolean;
  /** Wait for builds holding a store's lock (default); false: fail at once. */
  wait?: boolean;
  onWait?: (store: string) => void;
  /** Clock for temp file ages (tests). */
  now?: number;
}

export interface GcItem {
  path: string;
  size: number;
}

export interface GcResult {
  /** Objects removed (or, with dryRun, that would be). */
  objects: GcItem[];
  temps: GcItem[];
  bytesFreed: number;
  /** Objects kept because a blob references them. */
  kept: number;
  /** Roots whose blobs were kept. */
  roots: Root[];
  /** Dangling roots removed (or, with dryRun, that would be). */
  rootsDropped: Root[];
  /** Roots that could not be read; when there is one, no object was removed. */
  unreadable: UnreadableRoot[];
  dryRun: boolean;
}

const FANOUT = /^[0-9a-f]{2}$/;
const OBJECT = /^[0-9a-f]{62}$/;
const STALE_TEMP_MS = 60_000;
const ABANDONED_TEMP_MS = 24 * 3600_000;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err: any) {
    return err.code === 'EPERM';
  }
}

function isStaleTemp(name: string, mtimeMs: number, now: number): boolean {
  const age = now - mtimeMs;
  const pid = Number(/^\.tmp-(\d+)-/.exec(name)?.[1] ?? NaN);
  const dead = !Number.isInteger(pid) || !pidAlive(pid);
  return (dead && age > STALE_TEMP_MS) || age > ABANDONED_TEMP_MS;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir)).sort();
  } catch (err: any) {
    if (err.code === 'ENOENT') return [];
    throw err;
  }
}

/** Digests (hex) listed in the blobs' DIGESTS sections. */
export async function referencedDigests(blobs: string[]): Promise<Set<string>> {
  const refs = new Set<string>();
  for (const blob of blobs) {
    await withBlob(blob, (r) => {
      for (const hex of r.digestsHex()) refs.add(hex);
    });
  }
  return refs;
}

/**
 * Add the digests the blobs of live roots reference; the roots whose blob cannot be read (a
 * system error: it may be fine, we cannot tell) are returned. A root whose blob is read but is
 * not a blob stops everything.
 */
export async function rootDigests(roots: Root[], into: Set<string>): Promise<UnreadableRoot[]> {
  const unreadable: UnreadableRoot[] = [];
  for (const r of roots) {
    try {
      for (const hex of await referencedDigests([r.blob])) into.add(hex);
    } catch (err: any) {
      if (typeof err.code === 'string') unreadable.push({ link: r.link, blob: r.blob, reason: err.message });
      else throw new Error(`gc root ${r.link}: ${err.message} (nothing removed; fix the blob or remove the root)`);
    }
  }
  return unreadable;
}

/** Remove unreferenced objects, dangling roots and stale temp files from every store. */
export async function gcStores(options: GcOptions): Promise<GcResult> {
  // one store named twice (or by two paths) is one store: its objects and roots counted once
  const opts = { ...options, stores: distinctPaths(options.stores) };
  if (opts.stores.length === 0) throw new Error('gc: at least one --store DIR is required');
  for (const s of opts.stores) if (!fs.statSync(s, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`gc: ${s}: no such store directory`);
  const lock = await lockStores(opts.stores, 'exclusive', { wait: opts.wait, onWait: opts.onWait });
  try {
    return await collect(opts);
  } finally {
    lock.release();
  }
}

async function collect(opts: GcOptions): Promise<GcResult> {
  const roots = readRoots(opts.stores);
  if (opts.blobs.length === 0 && roots.live.length === 0 && roots.unreadable.length === 0 && !opts.allUnreferenced) {
    const dangling = roots.dangling.length > 0 ? ` (${roots.dangling.length} dangling: their blobs are gone)` : '';
    throw new Error(`gc: no blob given and no live gc root in ${opts.stores.join(', ')}${dangling}; every object would be deleted (use --all-unreferenced to mean that)`);
  }
  const refs = await referencedDigests(opts.blobs);
  const unreadable = [...roots.unreadable, ...await rootDigests(roots.live, refs)];
  const keepAll = unreadable.length > 0;
  const now = opts.now ?? Date.now();
  const dryRun = !!opts.dryRun;
  if (!dryRun) dropDeadRoots(roots);
  const result: GcResult = { objects: [], temps: [], bytesFreed: 0, kept: 0, dryRun, roots: roots.live, rootsDropped: roots.dangling, unreadable };
  const remove = async (list: GcItem[], p: string, size: number) => {
    if (!dryRun) {
      try {
        await fsp.unlink(p);
      } catch (err: any) {
        if (err.code === 'ENOENT') return; // someone else removed it meanwhile
        throw err;
      }
    }
    list.push({ path: p, size });
    result.bytesFreed += size;
  };

  for (const store of opts.stores) {
    const objectsDir = path.join(store, OBJECTS_DIR);
    for (const fan of await readdirOrEmpty(objectsDir)) {
      const fanPath = path.join(objectsDir, fan);
      const st = await fsp.lstat(fanPath);
      if (isTempName(fan)) {
        if (!st.isDirectory() && isStaleTemp(fan, st.mtimeMs, now)) await remove(result.temps, fanPath, st.size);
        continue;
      }
      if (!FANOUT.test(fan) || !st.isDirectory()) continue;
      for (const name of await readdirOrEmpty(fanPath)) {
        if (!OBJECT.test(name)) continue;
        const p = path.join(fanPath, name);
        const ost = await fsp.lstat(p);
        if (ost.isDirectory()) continue;
        if (keepAll || refs.has(fan + name)) result.kept++;
        else await remove(result.objects, p, ost.size);
      }
    }
  }
  return result;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function registerGc(program: Command): void {
  program
    .command('gc')
    .description('delete the objects that no gc root of the stores (STORE/roots/: blobs cfs build and the ' +
      'snapshotter registered) and no listed blob references; drop roots whose blob is gone; remove stale temp files')
    .argument('[blobs...]', 'more blobs whose objects must be kept, besides the roots')
    .option('--store <dir>', 'object store (repeatable)', collectStores, [])
    .option('-n, --dry-run', 'list what would be removed, remove nothing')
    .option('--no-wait', 'fail at once instead of waiting while a build writes to a store')
    .option('--all-unreferenced', 'allow running with no blob and no live root: remove every object')
    .addHelpText('after', '\nA gc root that cannot be read (EACCES, ELOOP, EIO... on its link or its blob) may need any\n' +
      'object: gc names it on stderr, one line per root, removes no object (it still drops dangling\n' +
      'roots and stale temp files) and exits 1. A root whose blob is read but is not a blob stops gc.')
    .action(async (blobs: string[], o: { store: string[]; dryRun?: boolean; wait: boolean; allUnreferenced?: boolean }) => {
      const onWait = (s: string) => process.stderr.write(`cfs gc: waiting for the build writing to ${s}\n`);
      const r = await gcStores({ stores: o.store, blobs, dryRun: o.dryRun, allUnreferenced: o.allUnreferenced, wait: o.wait, onWait });
      const drop = r.dryRun ? 'would drop' : 'dropped';
      for (const root of r.rootsDropped) await writeStdout(`${drop} dangling root ${root.link} -> ${root.blob}\n`);
      if (r.dryRun) for (const item of [...r.objects, ...r.temps]) await writeStdout(`would remove ${item.path} (${item.size} bytes)\n`);
      await writeStdout(`${r.dryRun ? 'would remove' : 'removed'} ${plural(r.objects.length, 'object')} and` +
        ` ${plural(r.temps.length, 'temp file')}, ${r.bytesFreed} bytes; kept ${plural(r.kept, 'object')}` +
        ` (${plural(r.roots.length, 'root')}, ${plural(blobs.length, 'listed blob')})\n`);
      for (const u of r.unreadable) {
        process.stderr.write(`cfs gc: cannot read gc root ${u.link}${u.blob ? ` -> ${u.blob}` : ''}: ${u.reason}; kept every object\n`);
      }
      if (r.unreadable.length > 0) process.exitCode = 1;
    });
}

/** Paths in their order, each real path once. */
function distinctPaths(paths: string[]): string[] {
  const seen = new Set<string>();
  return paths.filter((p) => {
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch {
      real = path.resolve(p);
    }
    if (seen.has(real)) return false;
    seen.add(real);
    return true;
  });
}
