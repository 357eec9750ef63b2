// Finding an image's layers in a docker-archive tarball, an oci-archive tarball or an OCI
// layout directory, without unpacking anything: a tarball's member offsets are indexed once
// (one pass over the headers, bodies skipped by seeking) and members are then read by range.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { walkTarHeaders, type IndexedMember } from './tar.js';
import { detectCompression, parseDigest, shortDigest, type FileRange, type LayerDigestCheck } from './layerio.js';

export type ImageFormat = 'docker-archive' | 'oci-archive' | 'oci-layout';

export interface LayerSource {
  /** The layer's id: descriptor digest (OCI) or diff_id (docker-archive). */
  digest: string;
  mediaType: string;
  /** Stored size in bytes. */
  size: number;
  /** What to verify while reading. */
  check: LayerDigestCheck;
  /** The stored bytes (possibly compressed). */
  open(): Readable;
  /** Where in which file open() reads them (for a reader on another thread). */
  range?(): FileRange;
}

export interface LoadedImage {
  format: ImageFormat;
  /** The tag or RepoTag that selected the image, if any. */
  ref?: string;
  /** The image config JSON. */
  config: any;
  layers: LayerSource[];
}

export interface LoadOptions {
  /** "os/arch[/variant]"; default: this machine's (linux/<arch>). */
  platform?: string;
}

/** An error about the image itself (not a layer); the message is shown as it is. */
export class ImageError extends Error {}

const MAX_JSON = 64 << 20;

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const REF_NAME = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME = 'io.containerd.image.name';

/** Layer media types we can read (compression itself is detected from the bytes). */
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

// ---------------------------------------------------------------- containers (dir or tarball)

/** Read-only access to the files of an image: a directory or an indexed tarball. */
interface Container {
  /** Size of the member, or undefined if absent. */
  size(name: string): number | undefined;
  readAll(name: string, limit: number): Buffer;
  open(name: string): Readable;
  range(name: string): FileRange;
}

/** Archive member names: no "./" prefix, no leading or repeated slashes. */
function normalizeMember(name: string): string {
  return name.split('/').filter((c) => c !== '' && c !== '.').join('/');
}

class DirContainer implements Container {
  constructor(private root: string) {}

  private file(name: string): string {
    if (name.split('/').includes('..')) throw new ImageError(`refusing path ${JSON.stringify(name)} outside the image`);
    return path.join(this.root, name);
  }

  size(name: string): number | undefined {
    const st = fs.statSync(this.file(name), { throwIfNoEntry: false });
    return st?.isFile() ? st.size : undefined;
  }

  readAll(name: string, limit: number): Buffer {
    const size = this.size(name);
    if (size === undefined) throw new ImageError(`${name}: not found in ${this.root}`);
    if (size > limit) throw new ImageError(`${name}: too large (${size} bytes)`);
    return fs.readFileSync(this.file(name));
  }

  open(name: string): Readable {
    return fs.createReadStream(this.file(name), { highWaterMark: 1 << 20 });
  }

  range(name: string): FileRange {
    return { path: this.file(name), start: 0 };
  }
}

/** A tarball indexed once; members are read by offset range, never extracted. */
class TarContainer implements Container {
  private members = new Map<string, IndexedMember>();
  private fd: number;

  constructor(private file: string) {
    this.fd = fs.openSync(file, 'r');
    try {
      const fileSize = fs.fstatSync(this.fd).size;
      const head = this.readAt(0, Math.min(fileSize, 4));
      if (detectCompression(head) !== 'none') {
        throw new ImageError(`${file}: compressed image archives are not supported (decompress it first)`);
      }
      for (const m of walkTarHeaders((off, size) => this.readAt(off, size), fileSize)) {
        this.members.set(normalizeMember(m.name), m);
      }
    } catch (err) {
      fs.closeSync(this.fd);
      if (err instanceof ImageError) throw err;
      throw new ImageError(`${file}: not a readable tar archive: ${(err as Error).message}`);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  private readAt(offset: number, size: number): Buffer {
    const b = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = fs.readSync(this.fd, b, done, size - done, offset + done);
      if (n === 0) throw new Error('truncated archive');
      done += n;
    }
    return b;
  }

  /** Follow symlinks and hardlinks inside the archive (docker save links duplicate layers). */
  private member(name: string): IndexedMember | undefined {
    let key = normalizeMember(name);
    for (let hops = 0; hops < 16; hops++) {
      const m = this.members.get(key);
      if (!m || (m.type !== 'symlink' && m.type !== 'hardlink')) return m?.type === 'file' ? m : undefined;
      const target = m.type === 'hardlink' ? m.linkname : path.posix.join(path.posix.dirname(key), m.linkname);
      key = normalizeMember(path.posix.normalize(target));
    }
    return undefined;
  }

  size(name: string): number | undefined {
    return this.member(name)?.size;
  }

  readAll(name: string, limit: number): Buffer {
    const m = this.member(name);
    if (!m) throw new ImageError(`${name}: not found in ${this.file}`);
    if (m.size > limit) throw new ImageError(`${name}: too large (${m.size} bytes)`);
    return this.readAt(m.offset, m.size);
  }

  open(name: string): Readable {
    const m = this.member(name);
    if (!m) throw new ImageError(`${name}: not found in ${this.file}`);
    // createReadStream's `end` is inclusive, so an empty member needs a stream of its own.
    if (m.size === 0) return Readable.from([]);
    return fs.createReadStream(this.file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 });
  }

  range(name: string): FileRange {
    const m = this.member(name);
    if (!m) throw new ImageError(`${name}: not found in ${this.file}`);
    return { path: this.file, start: m.offset, end: m.offset + m.size };
  }
}

function parseJson(c: Container, name: string): any {
  const buf = c.readAll(name, MAX_JSON);
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new ImageError(`${name}: invalid JSON: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------- image reference parsing

/**
 * Split "PATH[:REF]" where PATH may itself contain ':': the whole string if it exists, else the
 * longest prefix before a ':' that exists.
 */
export function splitImageRef(image: string): { file: string; ref?: string } {
  if (fs.existsSync(image)) return { file: image };
  for (let i = image.lastIndexOf(':'); i > 0; i = image.lastIndexOf(':', i - 1)) {
    const file = image.slice(0, i);
    if (fs.existsSync(file)) return { file, ref: image.slice(i + 1) };
  }
  throw new ImageError(`${image}: no such file or directory`);
}

// ---------------------------------------------------------------- platforms

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const GOARCH: Record<string, string> = {
  x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x',
  riscv64: 'riscv64', loong64: 'loong64', mips: 'mips', mipsel: 'mipsle',
};

export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new ImageError(`invalid platform ${JSON.stringify(s)} (expected os/arch[/variant])`);
  }
  return { os: parts[0], architecture: parts[1], variant: parts[2] };
}

/** This machine's platform as OCI names it (containers are Linux whatever the host). */
export function defaultPlatform(): Platform {
  const architecture = GOARCH[process.arch] ?? process.arch;
  const p: Platform = { os: 'linux', architecture };
  if (architecture === 'arm') {
    const v = (process.config.variables as any).arm_version;
    if (v) p.variant = `v${v}`;
  }
  if (architecture === 'ppc64le' && os.endianness() === 'BE') p.architecture = 'ppc64';
  return p;
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Variant as compared: arm64 without variant is v8. */
function normVariant(arch: string, v: string | undefined): string | undefined {
  return arch === 'arm64' && !v ? 'v8' : v;
}

function platformMatches(want: Platform, have: any): boolean {
  if (!have || have.os !== want.os || have.architecture !== want.architecture) return false;
  if (want.variant === undefined) return true;
  return normVariant(want.architecture, want.variant) === normVariant(have.architecture, have.variant);
}

// ---------------------------------------------------------------- OCI

function blobName(digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return `blobs/${algorithm}/${hex}`;
}

/** Read a small blob (index, manifest, config) and check its digest and size. */
function readBlob(c: Container, desc: any): Buffer {
  if (!desc || typeof desc.digest !== 'string') throw new ImageError('descriptor without a digest');
  let name: string;
  try {
    name = blobName(desc.digest);
  } catch (err) {
    throw new ImageError((err as Error).message);
  }
  const buf = c.readAll(name, MAX_JSON);
  const { algorithm, hex } = parseDigest(desc.digest);
  if (createHash(algorithm).update(buf).digest('hex') !== hex) throw new ImageError(`${desc.digest}: blob digest mismatch`);
  if (typeof desc.size === 'number' && desc.size !== buf.length) throw new ImageError(`${desc.digest}: blob size mismatch`);
  return buf;
}

function blobJson(c: Container, desc: any): any {
  const buf = readBlob(c, desc);
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new ImageError(`${desc.digest}: invalid JSON: ${(err as Error).message}`);
  }
}

function isIndex(desc: any, json: any): boolean {
  const mt = desc.mediaType ?? json.mediaType;
  if (mt === OCI_INDEX || mt === DOCKER_LIST) return true;
  if (mt === OCI_MANIFEST || mt === DOCKER_MANIFEST) return false;
  if (mt !== undefined) throw new ImageError(`${desc.digest}: unsupported media type ${mt}`);
  return Array.isArray(json.manifests);
}

function refNameOf(desc: any): string | undefined {
  return desc?.annotations?.[REF_NAME] ?? desc?.annotations?.[CONTAINERD_NAME];
}

/** Pick the top-level entry of index.json named by `ref` (or the only image). */
function selectTagged(index: any, ref: string | undefined, where: string): any[] {
  const manifests: any[] = Array.isArray(index?.manifests) ? index.manifests : [];
  if (ref !== undefined) {
    const hits = manifests.filter((m) => m?.annotations?.[REF_NAME] === ref || m?.annotations?.[CONTAINERD_NAME] === ref);
    if (hits.length === 0) throw new ImageError(`${where}: no image tagged ${JSON.stringify(ref)} (tags: ${listTags(manifests)})`);
    return [hits[0]];
  }
  const unique = [...new Map(manifests.map((m) => [m?.digest, m])).values()];
  if (unique.length === 1) return unique;
  if (unique.length === 0) throw new ImageError(`${where}: index.json lists no images`);
  // Untagged entries with platforms: index.json itself is a multi-platform index.
  if (unique.every((m) => refNameOf(m) === undefined)) return unique;
  throw new ImageError(`${where}: several images, choose one with ${where}:TAG (tags: ${listTags(manifests)})`);
}

function listTags(manifests: any[]): string {
  const tags = manifests.map(refNameOf).filter((t): t is string => typeof t === 'string');
  return tags.length ? tags.join(', ') : '(none)';
}

function isIndexDescriptor(desc: any): boolean {
  return desc?.mediaType === OCI_INDEX || desc?.mediaType === DOCKER_LIST;
}

/**
 * From a descriptor (image manifest or index) down to the image manifest for `want`: in an
 * index, an entry whose platform matches, else the first nested index (without a platform or
 * with a matching one) that has a match. Null if none; `seen` collects the platforms met.
 */
function findManifest(c: Container, desc: any, want: Platform, seen: string[], depth: number): any | null {
  if (depth > 8) throw new ImageError('image indexes nested too deep');
  const json = blobJson(c, desc);
  return isIndex(desc, json) ? pickFromIndex(c, json, want, seen, depth) : json;
}

function pickFromIndex(c: Container, json: any, want: Platform, seen: string[], depth: number): any | null {
  const manifests: any[] = Array.isArray(json.manifests) ? json.manifests : [];
  if (manifests.length === 1 && !manifests[0]?.platform) return findManifest(c, manifests[0], want, seen, depth + 1);
  for (const m of manifests) if (m?.platform) seen.push(formatPlatform(m.platform));
  const hit = manifests.find((m) => !isIndexDescriptor(m) && platformMatches(want, m?.platform));
  if (hit) return findManifest(c, hit, want, seen, depth + 1);
  for (const m of manifests) {
    if (!isIndexDescriptor(m) || (m.platform && !platformMatches(want, m.platform))) continue;
    const found = findManifest(c, m, want, seen, depth + 1);
    if (found) return found;
  }
  return null;
}

/** The image manifest for `want` among index.json's selected entries. */
function resolveManifest(c: Container, top: any[], want: Platform, where: string): any {
  const seen: string[] = [];
  const manifest = top.length === 1 ? findManifest(c, top[0], want, seen, 0) : pickFromIndex(c, { manifests: top }, want, seen, 0);
  if (manifest) return manifest;
  throw new ImageError(`${where}: no image for platform ${formatPlatform(want)} (available: ${[...new Set(seen)].join(', ') || 'none'})`);
}

function ociLayers(c: Container, manifest: any): LayerSource[] {
  if (!Array.isArray(manifest.layers)) throw new ImageError('image manifest without layers (unsupported manifest schema?)');
  return manifest.layers.map((d: any): LayerSource => {
    const digest = String(d?.digest);
    try {
      parseDigest(digest);
    } catch (err) {
      throw new ImageError((err as Error).message);
    }
    // Checked now, so a missing (e.g. foreign, never pulled) layer fails before any work.
    if (c.size(blobName(digest)) === undefined) throw new ImageError(`${shortDigest(digest)}: layer blob not found in the image`);
    return {
      digest,
      mediaType: String(d.mediaType),
      size: Number(d.size),
      check: { digest, scope: 'stored', size: typeof d.size === 'number' ? d.size : undefined },
      open: () => c.open(blobName(digest)),
      range: () => c.range(blobName(digest)),
    };
  });
}

function loadOci(c: Container, format: ImageFormat, where: string, ref: string | undefined, want: Platform): LoadedImage {
  const layout = parseJson(c, 'oci-layout');
  if (typeof layout?.imageLayoutVersion !== 'string') throw new ImageError(`${where}: invalid oci-layout file`);
  const index = parseJson(c, 'index.json');
  // Several untagged entries: index.json itself is the multi-platform index.
  const manifest = resolveManifest(c, selectTagged(index, ref, where), want, where);
  const config = blobJson(c, manifest.config);
  return { format, ref, config, layers: ociLayers(c, manifest) };
}

// ---------------------------------------------------------------- docker-archive

/** "docker.io/library/debian:12" and "debian:12" name the same image. */
function shortRepoTag(t: string): string {
  return t.replace(/^docker\.io\//, '').replace(/^library\//, '');
}

function selectDockerImage(manifest: any[], ref: string | undefined, where: string): any {
  const all = manifest.flatMap((m) => (Array.isArray(m?.RepoTags) ? m.RepoTags : []));
  if (ref === undefined) {
    if (manifest.length === 1) return manifest[0];
    throw new ImageError(`${where}: several images, choose one with ${where}:REPO:TAG (tags: ${all.join(', ') || '(none)'})`);
  }
  const wanted = [ref, /:[^/]*$/.test(ref) ? ref : `${ref}:latest`].map(shortRepoTag);
  const hit = manifest.find((m) => (m?.RepoTags ?? []).some((t: string) => wanted.includes(shortRepoTag(t))));
  if (!hit) throw new ImageError(`${where}: no image tagged ${JSON.stringify(ref)} (tags: ${all.join(', ') || '(none)'})`);
  return hit;
}

function loadDocker(c: Container, where: string, ref: string | undefined): LoadedImage {
  const manifest = parseJson(c, 'manifest.json');
  if (!Array.isArray(manifest)) throw new ImageError(`${where}: manifest.json is not a list`);
  const entry = selectDockerImage(manifest, ref, where);
  const config = parseJson(c, String(entry.Config));
  const diffIds: string[] = config?.rootfs?.diff_ids ?? [];
  const files: string[] = Array.isArray(entry.Layers) ? entry.Layers : [];
  if (diffIds.length !== files.length) {
    throw new ImageError(`${where}: ${files.length} layers but ${diffIds.length} diff_ids in the config`);
  }
  const layers = files.map((file, i): LayerSource => {
    const digest = String(diffIds[i]);
    try {
      parseDigest(digest);
    } catch (err) {
      throw new ImageError((err as Error).message);
    }
    const size = c.size(file);
    if (size === undefined) throw new ImageError(`${where}: layer ${file} not found in the archive`);
    return {
      digest,
      mediaType: 'application/vnd.docker.image.rootfs.diff.tar',
      size,
      check: { digest, scope: 'uncompressed' },
      open: () => c.open(file),
      range: () => c.range(file),
    };
  });
  return { format: 'docker-archive', ref, config, layers };
}

// ---------------------------------------------------------------- entry point

export interface OpenedImage extends LoadedImage {
  /** Release the archive's file descriptor. */
  close(): void;
}

/**
 * An image of one platform (a docker-archive, an OCI manifest without an index of platforms)
 * says its platform in its config: a --platform it is not is an error, not a silent build of
 * another architecture. A config that names no os/architecture is taken as it is.
 */
function checkConfigPlatform(img: LoadedImage, want: Platform, file: string): void {
  const c = img.config;
  if (typeof c?.os !== 'string' || typeof c?.architecture !== 'string') return;
  // a config without a variant (most arm ones) is checked on os and architecture only
  if (!platformMatches(c.variant === undefined ? { ...want, variant: undefined } : want, c)) {
    throw new ImageError(`${file}: the image is ${formatPlatform(c)}, not ${formatPlatform(want)} (--platform)`);
  }
}

/** skopeo's and umoci's transport names for the three formats cfs reads. */
const TRANSPORTS = ['oci', 'oci-archive', 'docker-archive'] as const;
type Transport = (typeof TRANSPORTS)[number];

/**
 * "oci:PATH[:TAG]", "oci-archive:PATH[:TAG]", "docker-archive:PATH[:REPO:TAG]" (skopeo's image
 * names): the transport, which must then match the format found, and the rest. A path that
 * exists as written is a path, even if it starts with "oci:".
 */
export function splitTransport(image: string): { transport?: Transport; rest: string } {
  const colon = image.indexOf(':');
  const name = image.slice(0, colon);
  if (colon <= 0 || !(TRANSPORTS as readonly string[]).includes(name) || fs.existsSync(image)) return { rest: image };
  return { transport: name as Transport, rest: image.slice(colon + 1) };
}

const TRANSPORT_FORMAT: Record<Transport, string> = { oci: 'an OCI layout', 'oci-archive': 'an oci-archive', 'docker-archive': 'a docker-archive' };

function checkTransport(transport: Transport | undefined, found: Transport, file: string): void {
  if (transport !== undefined && transport !== found) throw new ImageError(`${file}: is ${TRANSPORT_FORMAT[found]}, not ${TRANSPORT_FORMAT[transport]} (${transport}:)`);
}

/**
 * Open an image: "PATH", "PATH:TAG" (OCI) or "PATH:REPO:TAG" (docker-archive), optionally
 * prefixed by its transport as skopeo names it ("oci:", "oci-archive:", "docker-archive:").
 */
export function loadImage(image: string, opts: LoadOptions = {}): OpenedImage {
  const want = opts.platform ? parsePlatform(opts.platform) : defaultPlatform();
  const { transport, rest } = splitTransport(image);
  const { file, ref } = splitImageRef(rest);
  const st = fs.statSync(file);
  if (st.isDirectory()) {
    if (!fs.existsSync(path.join(file, 'oci-layout'))) throw new ImageError(`${file}: not an OCI layout (no oci-layout file)`);
    checkTransport(transport, 'oci', file);
    const img = loadOci(new DirContainer(file), 'oci-layout', file, ref, want);
    if (opts.platform) checkConfigPlatform(img, want, file);
    return { ...img, close: () => {} };
  }
  const c = new TarContainer(file);
  try {
    let img: LoadedImage;
    if (c.size('manifest.json') !== undefined) {
      checkTransport(transport, 'docker-archive', file);
      img = loadDocker(c, file, ref);
    } else if (c.size('oci-layout') !== undefined && c.size('index.json') !== undefined) {
      checkTransport(transport, 'oci-archive', file);
      img = loadOci(c, 'oci-archive', file, ref, want);
    } else throw new ImageError(`${file}: neither a docker-archive (manifest.json) nor an oci-archive (oci-layout, index.json)`);
    if (opts.platform) checkConfigPlatform(img, want, file);
    return { ...img, close: () => c.close() };
  } catch (err) {
    c.close();
    throw err;
  }
}

/** Throws unless every layer has a media type we can read. */
export function checkLayerTypes(layers: LayerSource[], label: (l: LayerSource) => string): void {
  for (const l of layers) {
    if (!LAYER_TYPES.has(l.mediaType)) throw new ImageError(`${label(l)}: unsupported media type ${l.mediaType}`);
  }
}
