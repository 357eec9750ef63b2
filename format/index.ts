// Public API of the format package: the tree model, the encoder, the lazy reader, the dump,
// fs-verity digests and CRC-32C. See format/SPEC.md for the on-disk format.

export * from './tree.js';
export * from './layout.js';
export { crc32c } from './crc32c.js';
export { VerityHasher, verityDigest, verityDigestOfFile } from './verity.js';
export { encodeBlob, EncodeError, prefixIdOf, type EncodeOptions } from './encode.js';
export {
  BlobError, BlobReader, openBlob, sourceFromBuffer, sourceFromFile, objectPath, decodeTree,
  type BlobSource, type FileBlobSource, type BlobHeader, type SectionInfo, type Inode, type DirEntry, type WalkEntry,
} from './decode.js';
export { dumpBlob, escapeBytes } from './dump.js';
