// Streaming zstd decompression with libzstd for the compiler's layer reader
// (compiler/layerio.ts), a step at a time on libuv's threadpool like gunzip.h: zstd-napi, the
// JavaScript fallback, decompresses on the main thread, where the tar parser runs. Built only
// where libzstd-dev is installed (binding.gyp).
#pragma once

#include "decompress.h"

struct UnzstdStream;

bool unzstd_available();

// nullptr when out of memory (or built without libzstd).
UnzstdStream* unzstd_new();
void unzstd_free(UnzstdStream* s);

// Decompresses in[0, in_len) into out[0, out_cap) until the output is full or the input is used
// up. Frames in a row (skippable ones too) are one stream. Errors in libzstd's words, as
// zstd-napi reports them.
DecompressStep unzstd_step(UnzstdStream* s, const uint8_t* in, size_t in_len, uint8_t* out, size_t out_cap);
