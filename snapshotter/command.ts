// The `cfs snapshotter` command. Kept apart from server.ts so that every other `cfs` command
// starts without loading gRPC and protobufjs (hundreds of milliseconds on a slow machine).
import type { Command } from 'commander';
import { collectStores } from '../compiler/options.js';


export function registerSnapshotter(program: Command): void {
  program
    .command('snapshotter')
    .description('serve the containerd snapshots API (proxy plugin): image chains as unionblob blobs')
    .requiredOption('--root <dir>', 'state directory (metadata.db, snapshots/, mounts/)')
    .requiredOption('--address <sock>', 'unix socket to listen on')
    .option('--store <dir>', 'object store, shared with cfs build (repeatable, or A:B; default ROOT/store)', collectStores, [])
    .option('--containerd-address <sock>', "containerd's gRPC socket: enables the fast path (layers read from its content store)")
    .option('--containerd-root <dir>', "containerd's root directory: the fast path reads layer blobs straight from its content store's files (else through --containerd-address)")
    .option('--backend <b>', 'auto | kernel | fuse', 'auto')
    .option('--no-compile-ahead', "slow path: compile a layer only from the upper at Commit, not from containerd's content store while containerd applies it")
    .option('--speculate-ingests', "fast path: compile an uncompressed base layer while containerd ingests it (needs --containerd-root; compiles every such blob containerd ingests, whichever snapshotter unpacks it)")
    .action(async (o: { root: string; address: string; store: string[]; containerdAddress?: string; containerdRoot?: string; backend: 'auto' | 'kernel' | 'fuse'; compileAhead: boolean; speculateIngests?: boolean }) => {
      const { serve } = await import('./server.js');
      const running = await serve({
        root: o.root, address: o.address, stores: o.store, containerdAddress: o.containerdAddress, containerdRoot: o.containerdRoot, backend: o.backend,
        compileAhead: o.compileAhead, speculateIngests: o.speculateIngests,
      });
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      await running.stop();
    });
}
