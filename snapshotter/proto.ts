// containerd's own API definitions, loaded at runtime from the Debian packages
// golang-github-containerd-containerd-dev and golang-github-gogo-protobuf-dev (never retyped).
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const GOCODE = process.env.UNIONBLOB_GOCODE || '/usr/share/gocode/src';
const API = 'github.com/containerd/containerd/api';
export const SNAPSHOTS_PROTO = `${API}/services/snapshots/v1/snapshots.proto`;
export const CONTENT_PROTO = `${API}/services/content/v1/content.proto`;

export function loadApi(): { snapshots: grpc.GrpcObject; content: grpc.GrpcObject } {
  const includeDirs = [GOCODE, path.join(GOCODE, 'github.com/gogo/protobuf'), '/usr/share/gocode/src/github.com/gogo/protobuf/protobuf', '/usr/include'];
  for (const p of [SNAPSHOTS_PROTO, CONTENT_PROTO]) {
    if (!fs.existsSync(path.join(GOCODE, p))) {
      throw new Error(`${path.join(GOCODE, p)} is missing: apt-get install golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev`);
    }
  }
  const opts: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs };
  const snapshots = grpc.loadPackageDefinition(protoLoader.loadSync(SNAPSHOTS_PROTO, opts));
  const content = grpc.loadPackageDefinition(protoLoader.loadSync(CONTENT_PROTO, opts));
  return { snapshots, content };
}

/** Walk "a.b.c" in a loaded package. */
export function lookup(obj: grpc.GrpcObject, dotted: string): any {
  let o: any = obj;
  for (const part of dotted.split('.')) {
    o = o?.[part];
    if (o === undefined) throw new Error(`${dotted} not found in the loaded protos`);
  }
  return o;
}
