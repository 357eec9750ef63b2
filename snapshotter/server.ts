// `cfs snapshotter`: the containerd snapshots API (containerd.services.snapshots.v1.Snapshots)
// over gRPC on a unix socket, served by the Snapshotter (snapshotter.ts). Register it with
//   [proxy_plugins.unionblob]  type = "snapshot"  address = "<SOCK>"
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { makeDirs } from '../compiler/mkdirs.js';
import { ContentClient } from './content.js';
import { SnapshotError } from './db.js';
import { loadApi, lookup } from './proto.js';
import { Snapshotter, type Mount, type SnapshotInfo } from './snapshotter.js';
import { addonBuilt } from '../mounter/addon.js';

const CODES: Record<SnapshotError['code'], grpc.status> = {
  NotFound: grpc.status.NOT_FOUND,
  AlreadyExists: grpc.status.ALREADY_EXISTS,
  FailedPrecondition: grpc.status.FAILED_PRECONDITION,
  InvalidArgument: grpc.status.INVALID_ARGUMENT,
  Unavailable: grpc.status.UNAVAILABLE,
};

function timestamp(ns: bigint): { seconds: number; nanos: number } {
  return { seconds: Number(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) };
}

function wireInfo(i: SnapshotInfo): object {
  return { name: i.name, parent: i.parent, kind: i.kind, created_at: timestamp(i.createdNs), updated_at: timestamp(i.updatedNs), labels: i.labels };
}

function wireMounts(ms: Mount[]): object {
  return { mounts: ms.map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: m.options })) };
}

function grpcError(err: unknown, log: (l: string) => void, what: string): grpc.ServiceError {
  if (err instanceof SnapshotError) {
    return Object.assign(new Error(err.message), { code: CODES[err.code], details: err.message, metadata: new grpc.Metadata() });
  }
  const msg = (err as Error)?.stack ?? String(err);
  log(`${what} failed: ${msg}`);
  return Object.assign(new Error((err as Error)?.message ?? String(err)), {
    code: grpc.status.UNKNOWN, details: (err as Error)?.message ?? String(err), metadata: new grpc.Metadata(),
  });
}

export interface ServeOptions {
  root: string;
  address: string;
  stores?: string[];
  containerdAddress?: string;
  /** containerd's root directory (the fast path then reads layer blobs from its files). */
  containerdRoot?: string;
  backend?: 'auto' | 'kernel' | 'fuse';
  /** See SnapshotterOptions.compileAhead. */
  compileAhead?: boolean;
  /** See SnapshotterOptions.speculateIngests. */
  speculateIngests?: boolean;
  log?: (line: string) => void;
}

export interface RunningServer {
  snapshotter: Snapshotter;
  stop(): Promise<void>;
}

export async function serve(opts: ServeOptions): Promise<RunningServer> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`cfs snapshotter: ${l}\n`));
  const api = loadApi();
  const content = opts.containerdAddress ? new ContentClient(opts.containerdAddress, api.content) : undefined;
  const sn = new Snapshotter({ root: opts.root, stores: opts.stores, containerdAddress: opts.containerdAddress, containerdRoot: opts.containerdRoot, contentClient: content, backend: opts.backend, compileAhead: opts.compileAhead, speculateIngests: opts.speculateIngests, log });
  await sn.recover();

  // CFS_SNAPSHOTTER_TRACE=1: one log line per call (start time, duration), to see where an import's time goes.
  const trace = !!process.env.CFS_SNAPSHOTTER_TRACE;
  const unary = <Req, Res>(what: string, fn: (req: Req) => Promise<Res> | Res) =>
    (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
      const t0 = performance.now();
      const at = trace ? new Date().toISOString().slice(11, 23) : ''; // wall clock: lines up with containerd's log
      const done = (how: string) => {
        if (trace) log(`trace ${at} ${what} ${JSON.stringify((call.request as any)?.key ?? (call.request as any)?.name ?? '')} ${how} ${((performance.now() - t0) / 1000).toFixed(3)} s`);
      };
      Promise.resolve()
        .then(() => fn(call.request))
        .then((r) => { done('ok'); cb(null, r); }, (err) => { done(err?.code ?? 'error'); cb(grpcError(err, log, what)); });
    };

  const service = lookup(api.snapshots, 'containerd.services.snapshots.v1.Snapshots').service;
  const server = new grpc.Server();
  server.addService(service, {
    Prepare: unary('Prepare', async (r: any) => wireMounts(await sn.prepare(r.key, r.parent, r.labels ?? {}))),
    View: unary('View', async (r: any) => wireMounts(await sn.view(r.key, r.parent, r.labels ?? {}))),
    Mounts: unary('Mounts', async (r: any) => wireMounts(await sn.mounts(r.key))),
    Commit: unary('Commit', async (r: any) => { await sn.commit(r.name, r.key, r.labels ?? {}); return {}; }),
    Remove: unary('Remove', async (r: any) => { await sn.remove(r.key); return {}; }),
    Stat: unary('Stat', (r: any) => ({ info: wireInfo(sn.stat(r.key)) })),
    Update: unary('Update', async (r: any) => {
      const info = await sn.update(r.info?.name ?? '', r.info?.labels ?? {}, r.update_mask?.paths ?? []);
      return { info: wireInfo(info) };
    }),
    Usage: unary('Usage', async (r: any) => sn.usage(r.key)),
    Cleanup: unary('Cleanup', async () => { await sn.cleanup(); return {}; }),
    List: (call: grpc.ServerWritableStream<any, any>) => {
      try {
        const infos = sn.list(call.request.filters ?? []);
        for (let i = 0; i < infos.length; i += 100) call.write({ info: infos.slice(i, i + 100).map(wireInfo) });
        call.end();
      } catch (err) {
        // emit, not destroy: destroy() ends the stream without a status, and the client waits
        call.emit('error', grpcError(err, log, 'List'));
      }
    },
  });

  const sock = path.resolve(opts.address);
  makeDirs(path.dirname(sock));
  fs.rmSync(sock, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  log(`serving containerd snapshots API on ${sock} (root ${sn.root}, stores ${sn.stores.join(':')}, ` +
    `fast path ${content ? `via ${opts.containerdAddress}${opts.containerdRoot ? ` and the files under ${opts.containerdRoot}` : ''}` : 'off (no --containerd-address)'}` +
    `${content && opts.compileAhead !== false ? '; slow path: layers compiled ahead of Commit' : ''}` +
    `${content && opts.containerdRoot && opts.speculateIngests ? '; base layers compiled while containerd ingests them' : ''}` +
    `; objects created ${addonBuilt() ? 'with O_TMPFILE + linkat (Node addon)' : 'through temp names + rename (Node addon not built: npm run build:addon)'})`);
  return {
    snapshotter: sn,
    stop: async () => {
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      sn.close();
    },
  };
}
