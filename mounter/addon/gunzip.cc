// See gunzip.h.
#include "gunzip.h"

#ifdef UNIONBLOB_HAVE_ISAL

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>

#include <climits>
#include <new>

namespace {

enum class Phase { kHeader, kBody, kBetweenMembers, kEnded };

// The member header (RFC 1952 2.3) is parsed here, a byte at a time across steps: ISA-L 2.30
// (bookworm's) misreads a header whose file name or extra field is split between two inputs,
// so ISA-L gets the deflate data and the trailer only (ISAL_GZIP_NO_HDR_VER).
enum class Field { kFixed, kExtraLength, kExtra, kName, kComment, kHeaderCrc, kDone };

constexpr uint8_t kFlagHeaderCrc = 2, kFlagExtra = 4, kFlagName = 8, kFlagComment = 16, kFlagsReserved = 0xe0;

struct Header {
  Field field = Field::kFixed;
  uint8_t flags = 0;
  uint32_t seen = 0;   // bytes of the current field so far
  uint32_t value = 0;  // the extra field's length, the header CRC, as they come in
  uint32_t crc = 0;    // CRC-32 of the header bytes before the header CRC
};

}  // namespace

struct GunzipStream {
  inflate_state st;  // ~40 KiB: kept on the heap, never on a thread's stack
  Phase phase = Phase::kHeader;
  Header header;
};

namespace {

// ISA-L's codes in the words zlib uses for the same faults.
const char* isal_error_text(int r) {
  switch (r) {
    case ISAL_UNSUPPORTED_METHOD: return "unknown compression method";
    case ISAL_INCORRECT_CHECKSUM: return "incorrect data check";
    case ISAL_INVALID_BLOCK: return "invalid block type";
    case ISAL_INVALID_SYMBOL: return "invalid code";
    case ISAL_INVALID_LOOKBACK: return "invalid distance too far back";
    default: return "corrupt gzip data";
  }
}

// The first field present after `f`, in the order of RFC 1952.
Field field_after(Field f, uint8_t flags) {
  switch (f) {
    case Field::kFixed:
      if (flags & kFlagExtra) return Field::kExtraLength;
      [[fallthrough]];
    case Field::kExtraLength:
    case Field::kExtra:
      if (flags & kFlagName) return Field::kName;
      [[fallthrough]];
    case Field::kName:
      if (flags & kFlagComment) return Field::kComment;
      [[fallthrough]];
    case Field::kComment:
      if (flags & kFlagHeaderCrc) return Field::kHeaderCrc;
      [[fallthrough]];
    default:
      return Field::kDone;
  }
}

void next_field(Header& h, Field after) {
  h.field = field_after(after, h.flags);
  h.seen = 0;
  h.value = 0;
}

// Takes one header byte; an error in zlib's words, or nullptr.
const char* header_byte(Header& h, uint8_t b) {
  if (h.field != Field::kHeaderCrc) h.crc = crc32_gzip_refl(h.crc, &b, 1);
  switch (h.field) {
    case Field::kFixed:
      if ((h.seen == 0 && b != 0x1f) || (h.seen == 1 && b != 0x8b)) return "incorrect header check";
      if (h.seen == 2 && b != 8) return "unknown compression method";
      if (h.seen == 3) {
        if (b & kFlagsReserved) return "unknown header flags set";
        h.flags = b;
      }
      if (++h.seen == 10) next_field(h, Field::kFixed);
      return nullptr;
    case Field::kExtraLength:
      h.value |= static_cast<uint32_t>(b) << (8 * h.seen);
      if (++h.seen == 2) {
        uint32_t length = h.value;
        h.field = length ? Field::kExtra : field_after(Field::kExtra, h.flags);
        h.seen = 0;
        h.value = length;
      }
      return nullptr;
    case Field::kExtra:
      if (++h.seen == h.value) next_field(h, Field::kExtra);
      return nullptr;
    case Field::kName:
    case Field::kComment:
      if (b == 0) next_field(h, h.field);
      return nullptr;
    case Field::kHeaderCrc:
      h.value |= static_cast<uint32_t>(b) << (8 * h.seen);
      if (++h.seen == 2) {
        if (h.value != (h.crc & 0xffff)) return "header crc mismatch";
        h.field = Field::kDone;
      }
      return nullptr;
    case Field::kDone:
      return nullptr;
  }
  return nullptr;
}

void start_header(GunzipStream* s) {
  s->header = Header{};
  s->phase = Phase::kHeader;
}

void start_body(GunzipStream* s) {
  isal_inflate_reset(&s->st);
  s->st.crc_flag = ISAL_GZIP_NO_HDR_VER;  // raw deflate, then the trailer's CRC-32 and length checked
  s->phase = Phase::kBody;
}

}  // namespace

bool gunzip_available() { return true; }

GunzipStream* gunzip_new() {
  GunzipStream* s = new (std::nothrow) GunzipStream;
  if (!s) return nullptr;
  isal_inflate_init(&s->st);
  start_header(s);
  return s;
}

void gunzip_free(GunzipStream* s) { delete s; }

DecompressStep gunzip_step(GunzipStream* s, const uint8_t* in, size_t in_len, uint8_t* out, size_t out_cap) {
  DecompressStep step{DecompressStatus::kNeedMore, 0, 0, nullptr};
  // ISA-L counts in 32 bits.
  if (in_len > UINT_MAX) in_len = UINT_MAX;
  if (out_cap > UINT_MAX) out_cap = UINT_MAX;
  for (;;) {
    if (s->phase == Phase::kEnded) {
      step.status = DecompressStatus::kEnd;
      step.read = in_len;  // padding and whatever follows it
      return step;
    }
    if (s->phase == Phase::kBetweenMembers) {
      if (step.read == in_len) {
        step.status = DecompressStatus::kNeedInput;
        return step;
      }
      // node's zlib takes a zero byte after a member for padding and ignores the rest.
      if (in[step.read] == 0) {
        s->phase = Phase::kEnded;
        continue;
      }
      start_header(s);
    }
    if (s->phase == Phase::kHeader) {
      for (; step.read < in_len && s->header.field != Field::kDone; step.read++) {
        if (const char* e = header_byte(s->header, in[step.read])) {
          step.status = DecompressStatus::kError;
          step.error = e;
          return step;
        }
      }
      if (s->header.field != Field::kDone) {
        step.status = DecompressStatus::kNeedMore;
        return step;
      }
      start_body(s);
    }
    if (step.written == out_cap) {
      step.status = DecompressStatus::kOutputFull;
      return step;
    }
    s->st.next_in = const_cast<uint8_t*>(in + step.read);
    s->st.avail_in = static_cast<uint32_t>(in_len - step.read);
    s->st.next_out = out + step.written;
    s->st.avail_out = static_cast<uint32_t>(out_cap - step.written);
    int r = isal_inflate(&s->st);
    step.read = in_len - s->st.avail_in;
    step.written = out_cap - s->st.avail_out;
    if (r < 0 || r > ISAL_OUT_OVERFLOW) {  // above: a dictionary or a header field buffer it wants
      step.status = DecompressStatus::kError;
      step.error = isal_error_text(r);
      return step;
    }
    if (s->st.block_state == ISAL_BLOCK_FINISH) {
      s->phase = Phase::kBetweenMembers;
      continue;
    }
    if (step.written == out_cap) continue;  // reported as kOutputFull above
    // isal_inflate returns with room left only when the input is used up; anything else would
    // loop for ever.
    step.status = step.read == in_len ? DecompressStatus::kNeedMore : DecompressStatus::kError;
    if (step.read != in_len) step.error = "corrupt gzip data";
    return step;
  }
}

#else  // built without ISA-L

struct GunzipStream {};
bool gunzip_available() { return false; }
GunzipStream* gunzip_new() { return nullptr; }
void gunzip_free(GunzipStream*) {}
DecompressStep gunzip_step(GunzipStream*, const uint8_t*, size_t, uint8_t*, size_t) {
  return {DecompressStatus::kError, 0, 0, "built without ISA-L"};
}

#endif
