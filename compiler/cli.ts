// The `cfs` command line. Each command's work lives in its own module; this file only wires
// arguments to functions, so every command can also be called from tests and other code.
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { VERSION_MAJOR, VERSION_MINOR } from '../format/layout.js';
import path from 'node:path';
import { checkOutput, registerBuild } from './build.js';
import { registerInspect } from './inspect.js';
import { registerExtract } from './extract.js';
import { registerFsck } from './fsck.js';
import { registerGc } from './gc.js';
import { holdStoresForBuild, type BuildHold } from './roots.js';
import { registerMount } from '../mounter/mount.js';
import { nativeCrc32c } from '../mounter/addon.js';
import { useCrc32c } from '../format/crc32c.js';
import { registerSnapshotter } from '../snapshotter/command.js';

export async function main(argv: string[]): Promise<void> {
  // blobs written, read back and checked: the CPU's crc32 where it has one (the addon is loaded
  // at start-up anyway, by compiler/store.ts for its fs-verity digests)
  useCrc32c(nativeCrc32c());
  const program = new Command();
  program
    .name('cfs')
    .description('unionblob: compile container images into one metadata blob plus a content-addressed store')
    .version(versionLine(), '-V, --version', 'print the version of cfs and of the blob format it writes')
    .showHelpAfterError(false)
    // usage errors in the form of every other error: "cfs: ..." (subcommands inherit this)
    .configureOutput({ outputError: (text, write) => write(`cfs: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  registerBuild(program);
  const buildHold = plumbBuildRoots(program);
  registerInspect(program);
  registerExtract(program);
  registerFsck(program);
  registerGc(program);
  registerMount(program);
  registerSnapshotter(program);
  try {
    await program.parseAsync(argv);
  } catch (err: any) {
    await buildHold.failed();
    // commander reports usage errors itself and throws to let us choose the exit code: 0 for
    // --help and --version, 2 for a usage error (as most tools), 1 stays for failures.
    if (err && typeof err.code === 'string' && err.code.startsWith('commander.')) {
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    throw err;
  }
}

/**
 * `cfs build` registers OUT as a gc root of its stores and holds their locks shared while it
 * writes (roots.ts), unless --no-root (then only the lock). Wired here, around the build
 * command's action: before it, the lock and root; after it, the release; on failure, the root
 * goes again (main's catch calls failed()).
 */
function plumbBuildRoots(program: Command): { failed(): Promise<void> } {
  const build = program.commands.find((c) => c.name() === 'build')!;
  let hold: BuildHold | null = null;
  build
    .option('--no-root', 'do not register OUT as a gc root of the stores (cfs gc then removes its objects unless OUT is listed)')
    .hook('preAction', async (cmd) => {
      const o = cmd.opts() as { output: string; store?: string[]; root: boolean };
      if (!o.store || o.store.length === 0) return; // the build itself says what is missing
      if (o.output) checkOutput(path.resolve(o.output)); // before a root names it
      const onWait = (s: string) => process.stderr.write(`cfs build: waiting for the gc running on ${s}\n`);
      hold = await holdStoresForBuild(o.store, o.output, o.root, onWait);
    })
    .hook('postAction', () => {
      hold?.done();
      hold = null;
    });
  return {
    failed: async () => {
      const h = hold;
      hold = null;
      await h?.failed();
    },
  };
}

/** "cfs 0.1.0 (blob format 2.0)": the package's version, from package.json beside dist/. */
function versionLine(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return `cfs ${pkg.version} (blob format ${VERSION_MAJOR}.${VERSION_MINOR})`;
}

export { Option };
