// The `cfs` command line. Each command's work lives in its own module; this file only wires
// arguments to functions, so every command can also be called from tests and other code.
import { Command, Option } from 'commander';
import { registerBuild } from './build.js';
import { registerInspect } from './inspect.js';
import { registerExtract } from './extract.js';
import { registerFsck } from './fsck.js';
import { registerGc } from './gc.js';
import { registerMount } from '../mounter/mount.js';
import { registerSnapshotter } from '../snapshotter/command.js';

export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program
    .name('cfs')
    .description('unionblob: compile container images into one metadata blob plus a content-addressed store')
    .showHelpAfterError(false)
    .exitOverride();
  registerBuild(program);
  registerInspect(program);
  registerExtract(program);
  registerFsck(program);
  registerGc(program);
  registerMount(program);
  registerSnapshotter(program);
  try {
    await program.parseAsync(argv);
  } catch (err: any) {
    // commander reports usage errors itself and throws to let us choose the exit code.
    if (err && typeof err.code === 'string' && err.code.startsWith('commander.')) {
      process.exit(err.exitCode ?? 2);
    }
    throw err;
  }
}

/** Repeatable option collector: `--store A --store B` -> ['A', 'B']. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export { Option };
