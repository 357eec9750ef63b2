// Node-API glue: argument checking, and SysError -> Error with code/errno/syscall/path and the
// kernel's messages, shaped like node:fs errors. The kernel work is in fsmount.cc and
// fsverity.cc; the typed JavaScript API is mounter/addon.ts.
#include <napi.h>

#include "fsmount.h"
#include "filetimes.h"
#include "holes.h"
#include "fsverity.h"
#include "objectfile.h"
#include "syserror.h"
#include "verityhash.h"
#include "crc32c.h"
#include "gunzip.h"
#include "unzstd.h"

#include <atomic>

namespace {

Napi::Error to_js_error(Napi::Env env, const SysError& e) {
  Napi::Error error = Napi::Error::New(env, e.message());
  Napi::Object o = error.Value();
  o.Set("code", e.code());
  o.Set("errno", -e.err);  // negative, as in node:fs errors
  o.Set("syscall", e.syscall);
  if (!e.path.empty()) o.Set("path", e.path);
  Napi::Array lines = Napi::Array::New(env, e.kernel.size());
  for (uint32_t i = 0; i < e.kernel.size(); i++) lines.Set(i, e.kernel[i]);
  o.Set("kernelMessages", lines);
  return error;
}

// Runs f, turning a failed system call into a thrown JavaScript Error.
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F f) {
  try {
    return f();
  } catch (const SysError& e) {
    throw to_js_error(info.Env(), e);
  }
}

std::string string_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// undefined and null both mean "not given".
std::optional<std::string> optional_string(Napi::Env env, Napi::Value v, const std::string& what) {
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  if (!v.IsString()) throw Napi::TypeError::New(env, what + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// [[key], [key, value], ...]
void parse_options(Napi::Env env, Napi::Value v, FsMountSpec& spec) {
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsArray()) throw Napi::TypeError::New(env, "options must be an array of [key, value?]");
  Napi::Array list = v.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsArray() || item.As<Napi::Array>().Length() < 1) throw Napi::TypeError::New(env, "options[" + std::to_string(i) + "] must be [key, value?]");
    Napi::Array pair = item.As<Napi::Array>();
    auto key = optional_string(env, pair.Get(0u), "option key");
    if (!key || key->empty()) throw Napi::TypeError::New(env, "options[" + std::to_string(i) + "]: empty key");
    spec.options.emplace_back(*key, optional_string(env, pair.Get(1u), "option " + *key));
  }
}

FsMountSpec parse_spec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "fsMount wants {fstype, source?, options?, target?, flags?}");
  Napi::Object o = info[0].As<Napi::Object>();
  FsMountSpec spec;
  auto fstype = optional_string(env, o.Get("fstype"), "fstype");
  if (!fstype || fstype->empty()) throw Napi::TypeError::New(env, "fstype is required");
  spec.fstype = *fstype;
  spec.source = optional_string(env, o.Get("source"), "source");
  spec.target = optional_string(env, o.Get("target"), "target");
  parse_options(env, o.Get("options"), spec);
  Napi::Value flags = o.Get("flags");
  if (!flags.IsUndefined() && !flags.IsNumber()) throw Napi::TypeError::New(env, "flags must be a number (MOUNT_ATTR_*)");
  if (flags.IsNumber()) spec.attr_flags = flags.As<Napi::Number>().Uint32Value();
  return spec;
}

// fsMount(spec) -> {fd: number | undefined, messages: string[]}
Napi::Value FsMount(const Napi::CallbackInfo& info) {
  FsMountSpec spec = parse_spec(info);
  return guarded(info, [&]() -> Napi::Value {
    FsMountResult r = fs_mount(spec);
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("fd", r.fd >= 0 ? Napi::Value(Napi::Number::New(info.Env(), r.fd)) : info.Env().Undefined());
    Napi::Array lines = Napi::Array::New(info.Env(), r.messages.size());
    for (uint32_t i = 0; i < r.messages.size(); i++) lines.Set(i, r.messages[i]);
    out.Set("messages", lines);
    return out;
  });
}

// moveMount(fd, target)
Napi::Value MoveMount(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string target = string_arg(info, 1, "target");
  return guarded(info, [&]() -> Napi::Value {
    move_mount_to(fd, target);
    return info.Env().Undefined();
  });
}

// idmapBind(source, target, usernsFd)
Napi::Value IdmapBind(const Napi::CallbackInfo& info) {
  std::string source = string_arg(info, 0, "source");
  std::string target = string_arg(info, 1, "target");
  if (info.Length() < 3 || !info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "usernsFd must be a number");
  int fd = info[2].As<Napi::Number>().Int32Value();
  return guarded(info, [&]() -> Napi::Value {
    idmap_bind(source, target, fd);
    return info.Env().Undefined();
  });
}

// fsverityEnable(path) -> true (enabled now) | false (it already was)
Napi::Value FsverityEnable(const Napi::CallbackInfo& info) {
  std::string path = string_arg(info, 0, "path");
  return guarded(info, [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), fsverity_enable(path)); });
}

// fsverityMeasure(path) -> Buffer | null
Napi::Value FsverityMeasure(const Napi::CallbackInfo& info) {
  std::string path = string_arg(info, 0, "path");
  return guarded(info, [&]() -> Napi::Value {
    auto digest = fsverity_measure(path);
    if (!digest) return info.Env().Null();
    return Napi::Buffer<uint8_t>::Copy(info.Env(), digest->data(), digest->size());
  });
}

// writeObjectFile(dir | dirfd, name, data, mode, chmod) -> true (created) | false (it existed)
Napi::Value WriteObjectFile(const Napi::CallbackInfo& info) {
  bool by_fd = info.Length() > 0 && info[0].IsNumber();
  int dirfd = by_fd ? info[0].As<Napi::Number>().Int32Value() : -1;
  std::string dir = by_fd ? std::string() : string_arg(info, 0, "dir");
  std::string name = string_arg(info, 1, "name");
  if (info.Length() < 3 || !info[2].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "data must be a Uint8Array");
  Napi::Uint8Array data = info[2].As<Napi::Uint8Array>();
  if (info.Length() < 4 || !info[3].IsNumber()) throw Napi::TypeError::New(info.Env(), "mode must be a number");
  unsigned mode = info[3].As<Napi::Number>().Uint32Value() & 07777;
  bool chmod = info.Length() > 4 && info[4].ToBoolean().Value();
  return guarded(info, [&]() -> Napi::Value {
    bool created = by_fd ? write_object_file_at(dirfd, name, data.Data(), data.ByteLength(), mode, chmod)
                         : write_object_file(dir, name, data.Data(), data.ByteLength(), mode, chmod);
    return Napi::Boolean::New(info.Env(), created);
  });
}

// verityDigest(data, out): the fs-verity digest of data into out[0, 32). Synchronous: the
// callers hash on a thread of their own or a few KiB at a time.
Napi::Value VerityDigest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "verityDigest(data, out): Uint8Arrays");
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array out = info[1].As<Napi::Uint8Array>();
  if (out.ByteLength() < 32) throw Napi::RangeError::New(env, "verityDigest: out must have 32 bytes");
  if (!verity_digest_memory(data.Data(), data.ByteLength(), out.Data())) throw Napi::Error::New(env, "verityDigest: OpenSSL's SHA-256 failed");
  return env.Undefined();
}

// verityBlockHashes(data, out): the SHA-256 of each whole 4096-byte block of data (a trailing
// partial block is not hashed) into out, 32 bytes per block; returns the number of blocks.
Napi::Value VerityBlockHashes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "verityBlockHashes(data, out): Uint8Arrays");
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array out = info[1].As<Napi::Uint8Array>();
  size_t blocks = data.ByteLength() / kVerityBlock;
  if (out.ByteLength() < blocks * 32) throw Napi::RangeError::New(env, "verityBlockHashes: out must have 32 bytes per whole block of data");
  if (!verity_block_hashes(data.Data(), blocks, out.Data())) throw Napi::Error::New(env, "verityBlockHashes: OpenSSL's SHA-256 failed");
  return Napi::Number::New(env, static_cast<double>(blocks));
}

// setTimes(path: string | Buffer, sec, nsec): atime and mtime to the nanosecond, the link
// itself for a symlink. A Buffer path may be any bytes (names that are not UTF-8).
Napi::Value SetTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (info.Length() > 0 && info[0].IsBuffer()) {
    Napi::Buffer<char> b = info[0].As<Napi::Buffer<char>>();
    path.assign(b.Data(), b.Length());
  } else {
    path = string_arg(info, 0, "path");
  }
  if (path.find('\0') != std::string::npos) throw Napi::TypeError::New(env, "setTimes: path contains a NUL byte");
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber()) throw Napi::TypeError::New(env, "setTimes(path, sec, nsec): numbers");
  int64_t sec = info[1].As<Napi::Number>().Int64Value();
  int64_t nsec = info[2].As<Napi::Number>().Int64Value();
  if (nsec < 0 || nsec > 999999999) throw Napi::RangeError::New(env, "setTimes: nsec must be in 0..999999999");
  return guarded(info, [&]() -> Napi::Value {
    set_times_nofollow(path, sec, static_cast<long>(nsec));
    return env.Undefined();
  });
}

// crc32c(data: Uint8Array, previous: number): format/crc32c.ts's crc32c, with the CPU's crc32
// instruction. Exported only where the CPU has it.
Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "crc32c(data, previous): a Uint8Array");
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  uint32_t previous = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Uint32Value() : 0;
  return Napi::Number::New(env, crc32c_native(data.Data(), data.ByteLength(), previous));
}

// nextDataExtent(fd, offset): [start, end) of the next run of data at or after offset, or null
// when only a hole is left. Filesystems without holes report the whole file as data.
Napi::Value NextDataExtent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "nextDataExtent(fd, offset): numbers");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  if (offset < 0) throw Napi::RangeError::New(env, "nextDataExtent: negative offset");
  return guarded(info, [&]() -> Napi::Value {
    DataExtent x = next_data_extent(fd, offset);
    if (!x.found) return env.Null();
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, Napi::Number::New(env, static_cast<double>(x.start)));
    out.Set(1u, Napi::Number::New(env, static_cast<double>(x.end)));
    return out;
  });
}

// ---- layer decompression (gunzip.cc, unzstd.cc): each step on libuv's threadpool, as node's zlib ----

enum class Codec { kGzip, kZstd };

struct DecompressHandle {
  Codec codec;
  GunzipStream* gzip = nullptr;
  UnzstdStream* zstd = nullptr;
  std::atomic<bool> busy{false};

  DecompressStep step(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_cap) {
    return codec == Codec::kGzip ? gunzip_step(gzip, in, in_len, out, out_cap) : unzstd_step(zstd, in, in_len, out, out_cap);
  }
  ~DecompressHandle() {
    gunzip_free(gzip);
    unzstd_free(zstd);
  }
};

class DecompressWorker : public Napi::AsyncWorker {
 public:
  DecompressWorker(Napi::Env env, DecompressHandle* h, Napi::Value handle, Napi::Uint8Array in, Napi::Uint8Array out)
      : Napi::AsyncWorker(env, "unionblob:decompress"),
        deferred_(Napi::Promise::Deferred::New(env)),
        h_(h),
        in_(in.Data()),
        in_len_(in.ByteLength()),
        out_(out.Data()),
        out_cap_(out.ByteLength()) {
    // The handle and both buffers stay alive (not collected, not finalized) until the step is done.
    Napi::Array keep = Napi::Array::New(env, 3);
    keep.Set(0u, handle);
    keep.Set(1u, in);
    keep.Set(2u, out);
    keep_ = Napi::Persistent(keep.As<Napi::Object>());
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    step_ = h_->step(in_, in_len_, out_, out_cap_);
    if (step_.status == DecompressStatus::kError) SetError(step_.error);
  }

  void OnOK() override {
    h_->busy = false;
    Napi::Env env = Env();
    Napi::Array r = Napi::Array::New(env, 3);
    r.Set(0u, Napi::Number::New(env, static_cast<double>(step_.read)));
    r.Set(1u, Napi::Number::New(env, static_cast<double>(step_.written)));
    r.Set(2u, Napi::Number::New(env, static_cast<int>(step_.status)));
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override {
    h_->busy = false;
    deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  DecompressHandle* h_;
  const uint8_t* in_;
  size_t in_len_;
  uint8_t* out_;
  size_t out_cap_;
  DecompressStep step_{};
};

// decompressOpen(codec: 'gzip' | 'zstd'): a stream's state for decompressStep, or null where
// the addon was built without the codec's library (ISA-L, libzstd).
Napi::Value DecompressOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = string_arg(info, 0, "codec");
  auto* h = new DecompressHandle{};
  bool available;
  if (name == "gzip") {
    h->codec = Codec::kGzip;
    available = gunzip_available();
    if (available) h->gzip = gunzip_new();
  } else if (name == "zstd") {
    h->codec = Codec::kZstd;
    available = unzstd_available();
    if (available) h->zstd = unzstd_new();
  } else {
    delete h;
    throw Napi::TypeError::New(env, "decompressOpen: codec must be 'gzip' or 'zstd'");
  }
  if (!h->gzip && !h->zstd) {
    delete h;
    if (available) throw Napi::Error::New(env, "decompressOpen: out of memory");
    return env.Null();
  }
  return Napi::External<DecompressHandle>::New(env, h, [](Napi::Env, DecompressHandle* h) { delete h; });
}

// decompressStep(state, input, output): decompresses input into output on the threadpool;
// resolves to [input bytes read, output bytes written, status] (decompress.h), rejects with the
// codec's words for corrupt data. One step at a time per state.
Napi::Value DecompressStepJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsExternal() || !info[1].IsTypedArray() || !info[2].IsTypedArray())
    throw Napi::TypeError::New(env, "decompressStep(state, input, output): a decompressOpen() state and Uint8Arrays");
  DecompressHandle* h = info[0].As<Napi::External<DecompressHandle>>().Data();
  if (info[2].As<Napi::Uint8Array>().ByteLength() == 0) throw Napi::RangeError::New(env, "decompressStep: empty output");
  if (h->busy.exchange(true)) throw Napi::Error::New(env, "decompressStep: the previous step of this stream is still running");
  auto* w = new DecompressWorker(env, h, info[0], info[1].As<Napi::Uint8Array>(), info[2].As<Napi::Uint8Array>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("fsMount", Napi::Function::New(env, FsMount, "fsMount"));
  exports.Set("moveMount", Napi::Function::New(env, MoveMount, "moveMount"));
  exports.Set("idmapBind", Napi::Function::New(env, IdmapBind, "idmapBind"));
  exports.Set("fsverityEnable", Napi::Function::New(env, FsverityEnable, "fsverityEnable"));
  exports.Set("fsverityMeasure", Napi::Function::New(env, FsverityMeasure, "fsverityMeasure"));
  exports.Set("writeObjectFile", Napi::Function::New(env, WriteObjectFile, "writeObjectFile"));
  exports.Set("verityDigest", Napi::Function::New(env, VerityDigest, "verityDigest"));
  exports.Set("verityBlockHashes", Napi::Function::New(env, VerityBlockHashes, "verityBlockHashes"));
  exports.Set("setTimes", Napi::Function::New(env, SetTimes, "setTimes"));
  exports.Set("nextDataExtent", Napi::Function::New(env, NextDataExtent, "nextDataExtent"));
  exports.Set("decompressOpen", Napi::Function::New(env, DecompressOpen, "decompressOpen"));
  exports.Set("decompressStep", Napi::Function::New(env, DecompressStepJs, "decompressStep"));
  if (crc32c_native_available()) exports.Set("crc32c", Napi::Function::New(env, Crc32c, "crc32c"));
  return exports;
}

}  // namespace

NODE_API_MODULE(unionblob, Init)
