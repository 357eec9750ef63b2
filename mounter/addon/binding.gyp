# The unionblob Node-API addon: the new mount API (fsopen/fsconfig/fsmount/move_mount) and the
# fs-verity ioctls, which Node cannot reach, and fs-verity digests over node's own OpenSSL
# (verityhash.cc, with the FUSE server's mounter/fuse/verity.c). Built by `npm run build:addon` (node-gyp, which npm
# ships; headers from nodedir=/usr) into build/Release/unionblob.node; loaded by mounter/addon.ts.
{
  'targets': [
    {
      'target_name': 'unionblob',
      'sources': ['addon.cc', 'fsmount.cc', 'fsverity.cc', 'objectfile.cc', 'syserror.cc', 'filetimes.cc', 'holes.cc', 'verityhash.cc', 'crc32c.cc', 'gunzip.cc', 'unzstd.cc', '../fuse/verity.c'],
      'include_dirs': ['../fuse'],
      'dependencies': ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      'defines': ['NAPI_VERSION=8'],
      'cflags_cc': ['-std=c++17', '-Wall', '-Wextra'],
      'cflags_c': ['-std=gnu11', '-Wall', '-Wextra'],
      # ISA-L's igzip (Debian: libisal-dev) for gzip layers; without it the compiler uses node's zlib.
      'conditions': [
        ['<!(test -f /usr/include/isa-l/igzip_lib.h && echo 1 || echo 0)==1', {
          'defines': ['UNIONBLOB_HAVE_ISAL'],
          'libraries': ['-lisal'],
        }],
        # libzstd (libzstd-dev) for zstd layers off the main thread; without it, zstd-napi.
        ['<!(test -f /usr/include/zstd.h && echo 1 || echo 0)==1', {
          'defines': ['UNIONBLOB_HAVE_ZSTD'],
          'libraries': ['-lzstd'],
        }],
      ],
    },
  ],
}
