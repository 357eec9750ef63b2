// Snapshot metadata in SQLite (better-sqlite3): keys, parents, kinds, labels, usage, and the
// store objects this snapshotter created. Every change is one transaction; the journal is WAL
// with synchronous=FULL, so a killed (or power-cut) snapshotter restarts from the last
// committed state. Directories and mounts are derived from rows (ids), never the other way
// round: whatever exists on disk without a row is garbage that Cleanup removes.
import Database from 'better-sqlite3';

export const Kind = { UNKNOWN: 0, VIEW: 1, ACTIVE: 2, COMMITTED: 3 } as const;
export type KindValue = (typeof Kind)[keyof typeof Kind];

export interface SnapshotRow {
  id: number;
  key: string;
  parentId: number | null;
  /** Key of the parent ('' for none), joined in for convenience. */
  parent: string;
  kind: KindValue;
  createdNs: bigint;
  updatedNs: bigint;
  labels: Record<string, string>;
  size: number;
  inodes: number;
}

/** An error that maps to one gRPC status (see server.ts). */
export class SnapshotError extends Error {
  constructor(readonly code: 'NotFound' | 'AlreadyExists' | 'FailedPrecondition' | 'InvalidArgument' | 'Unavailable', message: string) {
    super(message);
    this.name = 'SnapshotError';
  }
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  key        TEXT NOT NULL UNIQUE,
  parent_id  INTEGER REFERENCES snapshots(id),
  kind       INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  labels     TEXT NOT NULL DEFAULT '{}',
  size       INTEGER NOT NULL DEFAULT 0,
  inodes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS objects (
  digest TEXT PRIMARY KEY
) WITHOUT ROWID;
`;

interface RawRow {
  id: number;
  key: string;
  parent_id: number | null;
  parent: string | null;
  kind: number;
  created_ns: bigint;
  updated_ns: bigint;
  labels: string;
  size: bigint;
  inodes: bigint;
}

const SELECT = `SELECT s.id, s.key, s.parent_id, p.key AS parent, s.kind, s.created_ns, s.updated_ns, s.labels, s.size, s.inodes
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

function rowOf(r: RawRow): SnapshotRow {
  return {
    id: Number(r.id),
    key: r.key,
    parentId: r.parent_id === null ? null : Number(r.parent_id),
    parent: r.parent ?? '',
    kind: Number(r.kind) as KindValue,
    createdNs: BigInt(r.created_ns),
    updatedNs: BigInt(r.updated_ns),
    labels: JSON.parse(r.labels),
    size: Number(r.size),
    inodes: Number(r.inodes),
  };
}

/**
 * Wall-clock time in nanoseconds, at the monotonic clock's resolution (Date.now() has
 * milliseconds; containerd compares snapshot times with its own clock in nanoseconds).
 */
let clockBase: bigint | null = null;

export function nowNs(): bigint {
  const hr = process.hrtime.bigint();
  clockBase ??= BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6)) - hr;
  const wall = BigInt(Date.now()) * 1_000_000n;
  // the wall clock was set since: follow it (more than 2 ms away from the estimate)
  if (absNs(clockBase + hr - wall) > 2_000_000n) clockBase = wall - hr;
  return clockBase + hr;
}

const absNs = (n: bigint): bigint => (n < 0n ? -n : n);

export class MetaStore {
  readonly db: Database.Database;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.defaultSafeIntegers(true);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
  }

  close(): void {
    this.db.close();
  }

  /** Run `fn` in one IMMEDIATE transaction (all or nothing). */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  get(key: string): SnapshotRow | undefined {
    const r = this.db.prepare(`${SELECT} WHERE s.key = ?`).get(key) as RawRow | undefined;
    return r && rowOf(r);
  }

  byId(id: number): SnapshotRow | undefined {
    const r = this.db.prepare(`${SELECT} WHERE s.id = ?`).get(id) as RawRow | undefined;
    return r && rowOf(r);
  }

  mustGet(key: string): SnapshotRow {
    const row = this.get(key);
    if (!row) throw new SnapshotError('NotFound', `snapshot ${key} does not exist`);
    return row;
  }

  all(): SnapshotRow[] {
    return (this.db.prepare(`${SELECT} ORDER BY s.id`).all() as RawRow[]).map(rowOf);
  }

  children(id: number): SnapshotRow[] {
    return (this.db.prepare(`${SELECT} WHERE s.parent_id = ?`).all(id) as RawRow[]).map(rowOf);
  }

  /** Active and view snapshots on top of `id` (those that need its blob mounted). */
  openChildren(id: number): number {
    const r = this.db.prepare('SELECT count(*) AS n FROM snapshots WHERE parent_id = ? AND kind IN (1, 2)').get(id) as { n: bigint };
    return Number(r.n);
  }

  insert(key: string, parentId: number | null, kind: KindValue, labels: Record<string, string>): number {
    const t = nowNs();
    const r = this.db
      .prepare('INSERT INTO snapshots (key, parent_id, kind, created_ns, updated_ns, labels) VALUES (?, ?, ?, ?, ?, ?)')
      .run(key, parentId, kind, t, t, JSON.stringify(labels));
    return Number(r.lastInsertRowid);
  }

  /**
   * Active `id` becomes committed under `name`, with its labels and usage. A committed
   * snapshot is created when it is committed (containerd's storage.CommitActive: created =
   * updated = now).
   */
  markCommitted(id: number, name: string, labels: Record<string, string>, size: number, inodes: number): void {
    const t = nowNs();
    this.db
      .prepare('UPDATE snapshots SET key = ?, kind = 3, labels = ?, size = ?, inodes = ?, created_ns = ?, updated_ns = ? WHERE id = ?')
      .run(name, JSON.stringify(labels), size, inodes, t, t, id);
  }

  setLabels(id: number, labels: Record<string, string>): void {
    this.db.prepare('UPDATE snapshots SET labels = ?, updated_ns = ? WHERE id = ?').run(JSON.stringify(labels), nowNs(), id);
  }

  delete(id: number): void {
    this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(id);
  }

  addObjects(digests: Iterable<string>): void {
    const ins = this.db.prepare('INSERT OR IGNORE INTO objects (digest) VALUES (?)');
    this.tx(() => {
      for (const d of digests) ins.run(d);
    });
  }

  objects(): string[] {
    return (this.db.prepare('SELECT digest FROM objects').all() as { digest: string }[]).map((r) => r.digest);
  }

  objectCount(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM objects').get() as { n: number }).n;
  }

  dropObjects(digests: string[]): void {
    const del = this.db.prepare('DELETE FROM objects WHERE digest = ?');
    this.tx(() => {
      for (const d of digests) del.run(d);
    });
  }
}
