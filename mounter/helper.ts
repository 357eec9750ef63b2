// The mount(8) helper behind `mount -t unionblob` and /etc/fstab lines of type unionblob:
//
//   mount.unionblob BLOB TARGET [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]
//
// OPTIONS: basedir=A[:B...] (required), digest=HEX, verity=off|try|require, upperdir=DIR,
// workdir=DIR, backend=auto|kernel|fuse, fuse_cache=auto|private|shared, generic flags (nosuid, nodev, noexec, noatime, ...),
// and fstab's bookkeeping options (defaults, noauto, nofail, x-*, ...), which are ignored.
// mounter/mount.unionblob (installed as /sbin/mount.unionblob) runs this file with node; the
// mounting itself is mountBlob(), exactly what `cfs mount` does.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GENERIC_FLAGS, MountError, mountBlob, type MountRequest } from './mount.js';

/** Exit codes of mount(8) (see its man page): 1 usage, 32 mount failure. */
export const EX_USAGE = 1;
export const EX_FAIL = 32;

export interface HelperArgs {
  request: MountRequest;
  verbose: boolean;
}

class UsageError extends Error {}

/** Options of fstab and mount(8) that say nothing to the filesystem. */
function isBookkeeping(name: string): boolean {
  return ['defaults', 'auto', 'noauto', 'nofail', 'user', 'nouser', 'users', 'owner', 'group', '_netdev', 'ro', 'rw',
    'loud', 'silent'].includes(name) || name.startsWith('x-') || name.startsWith('comment=');
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
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o' || a === '-t' || a === '-N') {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      if (a === '-o') options.push(argv[i + 1]);
      if (a === '-N') throw new UsageError('-N (mount namespaces) is not supported');
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
  for (const opt of options.join(',').split(',').filter(Boolean)) {
    if (opt === 'ro' || opt === 'rw') readOnly = opt === 'ro';
    applyOption(request, opt, sloppy);
  }
  if (request.stores.length === 0) throw new UsageError('-o basedir=STORE[:STORE...] is required');
  // the blob is read-only anyway; with an upper, ro would have been ignored: a writable overlay
  if (readOnly && request.upper) {
    throw new UsageError('ro with upperdir= would mount a writable overlay: leave out upperdir= and workdir= for a read-only mount');
  }
  return { request, verbose };
}

export async function helperMain(argv: string[]): Promise<number> {
  const say = (line: string) => process.stderr.write(`mount.unionblob: ${line}\n`);
  let args: HelperArgs;
  try {
    args = parseHelperArgs(argv);
  } catch (err: any) {
    say(err.message);
    say('usage: mount.unionblob BLOB TARGET [-sfnv] -o basedir=STORE[:STORE...][,digest=HEX][,verity=MODE]'
      + '[,upperdir=DIR,workdir=DIR][,backend=auto|kernel|fuse][,fuse_cache=auto|private|shared]');
    return EX_USAGE;
  }
  try {
    const state = await mountBlob({ ...args.request, log: say });
    if (args.verbose) say(`${state.blob} mounted on ${state.target} (${state.backend}${state.upper ? ', overlay' : ''})`);
    return 0;
  } catch (err: any) {
    say(err instanceof MountError ? err.message : String(err?.stack ?? err));
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
