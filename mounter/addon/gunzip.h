// Streaming gzip decompression with ISA-L's igzip for the compiler's layer reader
// (compiler/layerio.ts): 2.5-3x the speed of the zlib inside node on container layers here
// (0.21 s against 0.54-0.64 s for Debian's 210 MB base layer). Member headers are parsed here
// (gunzip.cc says why), the deflate data and trailers by ISA-L. The state is plain memory; a
// step reads the input it is given and keeps no pointer to it, so the JavaScript side can hand
// over whatever chunk comes next. Built only where libisal-dev is installed (binding.gyp):
// elsewhere gunzip_available() is false and the compiler keeps node's zlib.
#pragma once

#include "decompress.h"

struct GunzipStream;

bool gunzip_available();

// nullptr when out of memory (or built without ISA-L).
GunzipStream* gunzip_new();
void gunzip_free(GunzipStream* s);

// Inflates in[0, in_len) into out[0, out_cap) until the output is full, the input is used up or
// the stream ends. Several members in a row are one stream, as gzip(1) and node's zlib read them.
// Errors in zlib's words.
DecompressStep gunzip_step(GunzipStream* s, const uint8_t* in, size_t in_len, uint8_t* out, size_t out_cap);
