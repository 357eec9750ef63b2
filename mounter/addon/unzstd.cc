// See unzstd.h.
#include "unzstd.h"

#ifdef UNIONBLOB_HAVE_ZSTD

#include <zstd.h>

struct UnzstdStream {
  ZSTD_DCtx* dctx;
  // The last call ended a frame (or none began): the stream may end here.
  bool at_frame_end;
};

bool unzstd_available() { return true; }

UnzstdStream* unzstd_new() {
  // libzstd's default window limit (128 MiB, as zstd-napi's) bounds what a hostile frame can
  // make us allocate.
  ZSTD_DCtx* d = ZSTD_createDCtx();
  if (!d) return nullptr;
  return new UnzstdStream{d, false};
}

void unzstd_free(UnzstdStream* s) {
  if (!s) return;
  ZSTD_freeDCtx(s->dctx);
  delete s;
}

DecompressStep unzstd_step(UnzstdStream* s, const uint8_t* in, size_t in_len, uint8_t* out, size_t out_cap) {
  ZSTD_inBuffer src{in, in_len, 0};
  ZSTD_outBuffer dst{out, out_cap, 0};
  for (;;) {
    // Only here: a frame that ended on the last step's last byte. Otherwise at least one call,
    // even without input: after kOutputFull, libzstd may hold decoded bytes. (A call without
    // input after a frame's end would start the next frame and lose the boundary.)
    if (src.pos == src.size && s->at_frame_end) return {DecompressStatus::kNeedInput, src.pos, dst.pos, nullptr};
    size_t before_in = src.pos, before_out = dst.pos;
    size_t r = ZSTD_decompressStream(s->dctx, &dst, &src);
    if (ZSTD_isError(r)) return {DecompressStatus::kError, src.pos, dst.pos, ZSTD_getErrorName(r)};
    s->at_frame_end = r == 0;
    if (dst.pos == dst.size) return {DecompressStatus::kOutputFull, src.pos, dst.pos, nullptr};
    if (src.pos == src.size) {
      DecompressStatus st = s->at_frame_end ? DecompressStatus::kNeedInput : DecompressStatus::kNeedMore;
      return {st, src.pos, dst.pos, nullptr};
    }
    // A frame ended with input left: the next one follows. No progress would loop for ever.
    if (src.pos == before_in && dst.pos == before_out) return {DecompressStatus::kError, src.pos, dst.pos, "corrupt zstd data"};
  }
}

#else  // built without libzstd

struct UnzstdStream {};
bool unzstd_available() { return false; }
UnzstdStream* unzstd_new() { return nullptr; }
void unzstd_free(UnzstdStream*) {}
DecompressStep unzstd_step(UnzstdStream*, const uint8_t*, size_t, uint8_t*, size_t) {
  return {DecompressStatus::kError, 0, 0, "built without libzstd"};
}

#endif
