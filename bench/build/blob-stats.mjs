// Where a blob's bytes go, per inode: `node bench/build/blob-stats.mjs BLOB` prints one JSON line
// {blobBytes, inodes, dirents, nameBytes, perInode, perInodeNoNames, sections: {NAME: bytes}}.
// nameBytes is the sum of the entry names of every directory (read back with readdir);
// perInodeNoNames = (blobBytes - nameBytes) / inodes. Section sizes are the used bytes; the
// difference to blobBytes is the header page and the rounding of each section to 4 KiB. INODES
// (format v2: 85 inodes of 48 bytes to a page) includes the 16 zero bytes that end each full page.
// Needs dist/ (npx tsc -p tsconfig.json).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { openBlob, sourceFromFile } = await import(path.join(ROOT, 'dist', 'format', 'decode.js'));
const { Layout, SECTION_NAMES } = await import(path.join(ROOT, 'dist', 'format', 'layout.js'));

export function blobStats(file) {
  const reader = openBlob(sourceFromFile(file, 4096));
  try {
    const h = reader.header;
    let nameBytes = 0;
    let dirents = 0;
    for (let i = 0; i < h.inodeCount; i++) {
      if (reader.inode(i).layout !== Layout.DIR) continue;
      for (const e of reader.readdir(i)) {
        nameBytes += e.name.length;
        dirents++;
      }
    }
    const sections = {};
    SECTION_NAMES.forEach((n, id) => { sections[n] = h.sections[id].size; });
    return {
      blobBytes: h.blobSize,
      inodes: h.inodeCount,
      dirents,
      nameBytes,
      perInode: h.blobSize / h.inodeCount,
      perInodeNoNames: (h.blobSize - nameBytes) / h.inodeCount,
      sections,
    };
  } finally {
    reader.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!process.argv[2]) {
    console.error('usage: node bench/build/blob-stats.mjs BLOB');
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(blobStats(process.argv[2])) + '\n');
}
