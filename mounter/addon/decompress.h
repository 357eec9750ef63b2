// What the compiler's layer decompressors (gunzip.cc: gzip with ISA-L; unzstd.cc: zstd with
// libzstd) share: a step inflates what input it is given into what output it is given, keeps
// no pointer to either, and says why it stopped. Steps run on libuv's threadpool (addon.cc), so
// the tar parser on the main thread never decompresses (compiler/layerio.ts).
#pragma once

#include <cstddef>
#include <cstdint>

enum class DecompressStatus : int {
  kOutputFull = 0,   // out is full; call again with the input left
  kNeedInput = 1,    // input used up at the end of a member/frame: the stream may end here
  kNeedMore = 2,     // input used up inside a member/frame: more must come
  kEnd = 3,          // gzip: zero bytes after a member, padding; the rest of the input is ignored
  kError = 4,
};

struct DecompressStep {
  DecompressStatus status;
  size_t read;        // input bytes consumed
  size_t written;     // output bytes produced
  const char* error;  // kError: the words of the library the JavaScript fallback uses
};
