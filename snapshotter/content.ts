// Reading layers from containerd's content store (ContentService on containerd's own socket),
// for the fast path: containerd asks for a snapshot whose chain id it names in the label
// containerd.io/snapshot.ref, and we compile the layer's tar ourselves.
//
// Which layer is that? CRI pulls annotate layers with containerd.io/snapshot/cri.layer-digest
// and the unpacker forwards it as a label; `ctr` (1.7 transfer service included) does not.
// Without it we resolve the chain id ourselves: manifests in the content store carry
// containerd.io/gc.ref.content.config (and .l.N) labels; their config lists the diff_ids, whose
// chain ids identify each layer: chain(0) = diff(0), chain(i) = sha256(chain(i-1) + " " + diff(i)).
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { lookup } from './proto.js';

export const LABEL_SNAPSHOT_REF = 'containerd.io/snapshot.ref';
export const LABEL_CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
const LABEL_GC_CONFIG = 'containerd.io/gc.ref.content.config';
const MAX_JSON = 4 << 20;

export interface LayerRef {
  /** Digest of the stored (possibly compressed) layer blob. */
  digest: string;
  size?: number;
  /** Its uncompressed digest (diff_id), when known: what the chain id was computed from. */
  diffId?: string;
  mediaType?: string;
}

interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

export class ContentClient {
  private client: any;
  /** chain id -> layer, per namespace. */
  private cache = new Map<string, LayerRef>();

  constructor(address: string, contentPkg: grpc.GrpcObject) {
    const Content = lookup(contentPkg, 'containerd.services.content.v1.Content');
    const target = address.startsWith('unix:') ? address : `unix://${address}`;
    this.client = new Content(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 64 << 20,
      // containerd's gRPC server does not accept the default "localhost" authority over unix sockets
      'grpc.default_authority': 'localhost',
    });
  }

  close(): void {
    this.client.close();
  }

  private meta(namespace: string): grpc.Metadata {
    const m = new grpc.Metadata();
    m.set('containerd-namespace', namespace);
    return m;
  }

  async list(namespace: string, filters: string[] = []): Promise<ContentInfo[]> {
    const out: ContentInfo[] = [];
    const call = this.client.List({ filters }, this.meta(namespace));
    for await (const resp of call) {
      for (const info of resp.info ?? []) out.push({ digest: info.digest, size: Number(info.size), labels: info.labels ?? {} });
    }
    return out;
  }

  /** Whether containerd has the blob committed (an ingest still being written is not). */
  has(namespace: string, digest: string): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.client.Info({ digest }, this.meta(namespace), (err: grpc.ServiceError | null) => {
        if (!err) resolve(true);
        else if (err.code === grpc.status.NOT_FOUND) resolve(false);
        else reject(err);
      });
    });
  }

  /** The blob as a stream of chunks. */
  async *read(namespace: string, digest: string): AsyncGenerator<Buffer> {
    const call = this.client.Read({ digest, offset: 0, size: 0 }, this.meta(namespace));
    try {
      for await (const resp of call) {
        if (resp.data && resp.data.length > 0) yield Buffer.from(resp.data);
      }
    } finally {
      call.cancel?.();
    }
  }

  async readAll(namespace: string, digest: string, limit = MAX_JSON): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of this.read(namespace, digest)) {
      n += c.length;
      if (n > limit) throw new Error(`${digest}: larger than ${limit} bytes`);
      parts.push(c);
    }
    return Buffer.concat(parts);
  }

  /** Find the layer whose chain id is `chainId` (see the comment at the top), or null. */
  async findLayer(namespace: string, chainId: string, labels: Record<string, string>): Promise<LayerRef | null> {
    const direct = labels[LABEL_CRI_LAYER_DIGEST];
    if (direct) return { digest: direct };
    const cached = this.cache.get(`${namespace}\0${chainId}`);
    if (cached) return cached;
    let infos = await this.list(namespace, [`labels."${LABEL_GC_CONFIG}"`]);
    if (infos.length === 0) infos = (await this.list(namespace)).filter((i) => i.size <= MAX_JSON);
    for (const info of infos) {
      let manifest: any;
      try {
        manifest = JSON.parse((await this.readAll(namespace, info.digest)).toString('utf8'));
      } catch {
        continue;
      }
      if (!manifest || !Array.isArray(manifest.layers) || !manifest.config?.digest) continue;
      let config: any;
      try {
        config = JSON.parse((await this.readAll(namespace, manifest.config.digest)).toString('utf8'));
      } catch {
        continue;
      }
      const diffIds: string[] = config?.rootfs?.diff_ids ?? [];
      if (diffIds.length !== manifest.layers.length) continue;
      let chain = '';
      for (let i = 0; i < diffIds.length; i++) {
        chain = i === 0 ? diffIds[0] : `sha256:${createHash('sha256').update(`${chain} ${diffIds[i]}`).digest('hex')}`;
        const l = manifest.layers[i];
        this.cache.set(`${namespace}\0${chain}`, { digest: l.digest, size: l.size, diffId: diffIds[i], mediaType: l.mediaType });
      }
      const hit = this.cache.get(`${namespace}\0${chainId}`);
      if (hit) return hit;
    }
    return null;
  }
}
