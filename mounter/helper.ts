// The mount(8) helper behind `mount -t unionblob` and /etc/fstab lines of type unionblob:
//
//   mount.unionblob BLOB TARGET [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]
//
// OPTIONS: basedir=A[:B...] (required), digest=HEX, verity=off|try|require, upperdir=DIR,
// workdir=DIR, backend=auto|kernel|fuse, fuse_cache=auto|private|shared, uidmap=/gidmap=FIRST:MAPPED:COUNT[:...]
// (FUSE), generic flags (nosuid, nodev, noexec, noatime, ...),
// and fstab's bookkeeping options (defaults, noauto, nofail, x-*, ...), which are ignored.
// Values may be double-quoted, as libmount allows (basedir="/a,b"). `remount` changes the
// flags of the mount at TARGET (umount(8) and mount(8) reach a FUSE mount's helper as
// mount.fuse.unionblob, which cfs install-helper links here). -N NS runs the helper in that
// mount namespace. With nofail, a blob that does not exist is not an error (as for a device).
// mounter/mount.unionblob (installed as /sbin/mount.unionblob) runs this file with node; the
// mounting itself is mountBlob(), exactly what `cfs mount` does.
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GENERIC_FLAGS, MountError, mountBlob, type MountRequest } from './mount.js';

/** Exit codes of mount(8) (see its man page): 1 usage, 32 mount failure. */
export const EX_USAGE = 1;
export const EX_FAIL = 32;

export interface HelperArgs {
  request: MountRequest;
  verbose: boolean;
  /** -o remount: change the flags of the mount at the target instead of mounting (bind: its own only). */
  remount: boolean;
  bind: boolean;
  /** nofail: a missing blob is not an error. */
  nofail: boolean;
  /** -N: the mount namespace to run in (a path such as /proc/PID/ns/mnt or /proc/PID/fd/N). */
  namespace?: string;
}

class UsageError extends Error {}

/**
 * Options of fstab and mount(8) that say nothing to a read-only filesystem: bookkeeping,
 * libmount's own markers (helper=, uhelper=, user=NAME), and inode-update policies.
 */
function isBookkeeping(name: string): boolean {
  return ['defaults', 'auto', 'noauto', 'nofail', 'user', 'nouser', 'users', 'owner', 'group', '_netdev', 'ro', 'rw',
    'loud', 'silent', 'lazytime', 'nolazytime', 'iversion', 'noiversion', 'mand', 'nomand', 'bind', 'remount'].includes(name)
    || /^(x-|comment=|helper=|uhelper=|user=)/.test(name);
}

/**
 * Split an option string as libmount does: commas inside double quotes belong to the value,
 * and the quotes are dropped (basedir="/srv/a,b" is the directory /srv/a,b).
 */
export function splitOptions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of text) {
    if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw new UsageError(`unbalanced double quote in options ${text}`);
  out.push(cur);
  return out.filter(Boolean);
}

function applyOption(req: MountRequest, opt: string, sloppy: boolean): void {
  const eq = opt.indexOf('=');
  const name = eq < 0 ? opt : opt.slice(0, eq);
  const value = eq < 0 ? '' : opt.slice(eq + 1);
  switch (name) {
    case 'basedir': req.stores.push(...value.split(':').filter(Boolean)); return;
    case 'digest': req.digest = value; return;
    case 'verity': req.verity = value as MountRequest['verity']; return;
    case 'upperdir': req.upper = value; return;
    case 'workdir': req.work = value; return;
    case 'backend': req.backend = value as MountRequest['backend']; return;
    case 'fuse_cache': req.fuseCache = value as MountRequest['fuseCache']; return;
    case 'uidmap': req.uidmap = value; return;
    case 'gidmap': req.gidmap = value; return;
  }
  if (GENERIC_FLAGS.has(opt)) req.flags!.push(opt);
  else if (!isBookkeeping(opt) && !sloppy) throw new UsageError(`unknown option ${opt}`);
}

export function parseHelperArgs(argv: string[]): HelperArgs {
  const positional: string[] = [];
  const options: string[] = [];
  let sloppy = false;
  let fake = false;
  let verbose = false;
  let readOnly = false;
  let namespace: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o' || a === '-t' || a === '-N') {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      if (a === '-o') options.push(argv[i + 1]);
      if (a === '-N') namespace = argv[i + 1];
      i++;
    } else if (/^-[sfnvrw]+$/.test(a)) {
      sloppy ||= a.includes('s');
      fake ||= a.includes('f');
      verbose ||= a.includes('v');
      if (a.includes('r')) readOnly = true;
      if (a.includes('w')) readOnly = false;
    } else if (a.startsWith('-')) {
      throw new UsageError(`unknown flag ${a}`);
    } else {
      positional.push(a);
    }
  }
  if (positional.length !== 2) throw new UsageError('expected BLOB TARGET');
  const request: MountRequest = { blob: positional[0], target: positional[1], stores: [], flags: [], fake };
  const opts = options.flatMap(splitOptions);
  // a remount is handed the mount's current options too (FUSE's user_id=, allow_other, ...)
  if (opts.includes('remount')) sloppy = true;
  for (const opt of opts) {
    if (opt === 'ro' || opt === 'rw') readOnly = opt === 'ro';
    applyOption(request, opt, sloppy);
  }
  const remount = opts.includes('remount');
  if (request.stores.length === 0 && !remount) throw new UsageError('-o basedir=STORE[:STORE...] is required');
  // the blob is read-only anyway; with an upper, ro makes the overlay read-only too (as overlayfs)
  if (readOnly && request.upper) request.readOnly = true;
  return { request, verbose, remount, bind: opts.includes('bind'), nofail: opts.includes('nofail'), namespace };
}

/**
 * `mount -o remount,FLAGS TARGET` of one of our mounts (mount(8) runs the helper of its type):
 * the same remount without the helper. The blob stays read-only whatever rw says.
 */
function remountFlags(args: HelperArgs): number {
  const flags = ['remount', ...(args.bind ? ['bind'] : []), 'ro', ...args.request.flags!];
  const r = spawnSync('mount', ['-i', '-o', flags.join(','), args.request.target], { stdio: ['ignore', 'inherit', 'inherit'] });
  return r.status === 0 ? 0 : EX_FAIL;
}

/** -N: the same helper, run by nsenter inside that mount namespace. */
function inNamespace(ns: string, argv: string[]): number {
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-N') i++;
    else rest.push(argv[i]);
  }
  const r = spawnSync('nsenter', [`--mount=${ns}`, '--', process.execPath, fileURLToPath(import.meta.url), ...rest], { stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`mount.unionblob: nsenter: ${r.error.message}\n`);
    return EX_FAIL;
  }
  return r.status ?? EX_FAIL;
}

export async function helperMain(argv: string[]): Promise<number> {
  const say = (line: string) => process.stderr.write(`mount.unionblob: ${line}\n`);
  let args: HelperArgs;
  try {
    args = parseHelperArgs(argv);
  } catch (err: any) {
    say(err.message);
    say('usage: mount.unionblob BLOB TARGET [-sfnv] -o basedir=STORE[:STORE...][,digest=HEX][,verity=MODE]'
      + '[,upperdir=DIR,workdir=DIR][,backend=auto|kernel|fuse][,fuse_cache=auto|private|shared][,uidmap=MAP,gidmap=MAP]');
    return EX_USAGE;
  }
  if (args.namespace !== undefined) return inNamespace(args.namespace, argv);
  if (args.remount) return remountFlags(args);
  if (args.nofail && !existsSync(args.request.blob)) {
    if (args.verbose) say(`${args.request.blob}: no such file (nofail: not mounted)`);
    return 0;
  }
  try {
    // what backend was chosen and why is said with -v only (boot logs get no line per mount)
    const state = await mountBlob({ ...args.request, log: args.verbose ? say : () => {} });
    if (args.verbose) say(`${state.blob} mounted on ${state.target} (${state.backend}${state.upper ? ', overlay' : ''})`);
    return 0;
  } catch (err: any) {
    say(err?.message ?? String(err));
    return EX_FAIL;
  }
}

/** Run as a program (by mount.unionblob), not imported (by tests). */
function isMain(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isMain()) {
  helperMain(process.argv.slice(2)).then((code) => process.exit(code));
}
