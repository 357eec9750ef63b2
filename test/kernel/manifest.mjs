// Parse the manifest `ubt manifest` writes in the guest (test/kernel/helper/ubt.c) into the
// structure of test/lib/treeman.mjs, so a mounted blob can be diffed with umoci's tree.
import { showPath } from '../lib/treeman.mjs';

const unescape = (s) => s.replace(/\\x([0-9a-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));

/**
 * @param {string} text  the manifest file (ASCII: every byte string is \xHH-escaped)
 * @param {{ unescapeOverlay?: boolean }} [opts]  unescapeOverlay: show trusted.overlay.overlay.X
 *   (what the kernel presents, SPEC §8) as the image's trusted.overlay.X
 */
export function parseGuestManifest(text, opts = {}) {
  const entries = new Map();
  const groups = new Map();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split('\t');
    if (f.length !== 12) throw new Error(`bad manifest line: ${line.slice(0, 200)}`);
    const [rel, type, mode, uid, gid, mtime, size, sha, target, rdev, linkKey, xattrs] = f;
    const p = unescape(rel);
    const e = { type, mode, uid: Number(uid), gid: Number(gid), mtime, xattrs: {} };
    if (type === 'reg') {
      e.size = Number(size);
      e.sha256 = sha;
    } else if (type === 'lnk') e.target = unescape(target);
    else if (type === 'chr' || type === 'blk') e.rdev = rdev;
    if (xattrs !== '-') {
      const items = xattrs.split(',').map((kv) => {
        const [k, v] = kv.split('=');
        let name = unescape(k);
        if (opts.unescapeOverlay && name.startsWith('trusted.overlay.overlay.')) name = 'trusted.overlay.' + name.slice(24);
        return [name, v];
      });
      items.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      e.xattrs = Object.fromEntries(items);
    }
    entries.set(p, e);
    if (linkKey !== '-') {
      if (!groups.has(linkKey)) groups.set(linkKey, []);
      groups.get(linkKey).push(p);
    }
  }
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  const hardlinkGroups = [...groups.values()].filter((g) => g.length > 1).map((g) => g.sort(cmp)).sort((x, y) => cmp(x[0], y[0]));
  for (const g of hardlinkGroups) {
    const key = g.map(showPath).join(' ');
    for (const p of g) entries.get(p).hardlinks = key;
  }
  return { root: 'guest', entries: new Map([...entries].sort(([a], [b]) => cmp(a, b))), hardlinkGroups };
}
