// Create a directory and its missing parents, like `mkdir -p`.
//
// Node 20's mkdirSync(..., { recursive: true }) loops forever on a path whose parent exists but
// refuses new entries with ENOENT (/proc/x: the parent is there, so it retries the child, which
// says ENOENT again). Paths given on the command line (--store, --root, DEST) can be anything,
// so this walks up once and creates each missing level once: every error is final.

import fs from 'node:fs';
import path from 'node:path';

export function makeDirs(dir: string, mode = 0o777): void {
  const missing: string[] = [];
  for (let d = path.resolve(dir); ; ) {
    try {
      if (!fs.statSync(d).isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${dir}'`), { code: 'ENOTDIR', path: d });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    missing.push(d);
    const parent = path.dirname(d);
    if (parent === d) break;
    d = parent;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d, mode);
    } catch (err) {
      // another process made it meanwhile
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !fs.statSync(d).isDirectory()) throw err;
    }
  }
}
