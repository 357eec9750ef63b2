// Command-line option parsers shared by every cfs command.

import fs from 'node:fs';

/**
 * `--store A --store B` and `--store A:B` both give ['A', 'B']: one ordered list of stores, as
 * composefs's basedir= and the mount helper's option take it (a store path cannot hold ':').
 */
export function collectStores(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(':').filter((s) => s !== '')];
}

/** Throws (makeError's error) unless P is a directory: "WHAT P: no such directory". */
export function checkDirectory(what: string, p: string, makeError = (message: string): Error => new Error(message)): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw makeError(`${what} ${p}: ${e.code === 'ENOENT' ? 'no such directory' : e.message}`);
  }
  if (!st.isDirectory()) throw makeError(`${what} ${p}: not a directory`);
}

/**
 * Readers (cat, extract, fsck) refuse a store that is not a directory: a mistyped path would
 * otherwise read as "every object missing". (gc says it in its own words.)
 */
export function checkStoresExist(stores: readonly string[]): void {
  for (const s of stores) checkDirectory('store', s);
}
