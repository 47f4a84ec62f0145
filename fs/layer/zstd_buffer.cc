// imgfs — whole-buffer zstd (see zstd_buffer.h).
#include "fs/layer/zstd_buffer.h"

#include <zstd.h>

#include <algorithm>
#include <memory>

namespace imgfs::fs {
namespace {

struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// Appends the part of `piece` (decompressed output at stream position *pos) that falls in
// [begin, end) to *out.
void Keep(const char* piece, size_t n, uint64_t* pos, uint64_t begin, uint64_t end,
          std::string* out) {
  uint64_t from = std::max(*pos, begin);
  uint64_t to = std::min(*pos + n, end);
  if (from < to) out->append(piece + (from - *pos), static_cast<size_t>(to - from));
  *pos += n;
}

}  // namespace

Status UnzstdRange(std::string_view in, uint64_t begin, uint64_t end, std::string* out) {
  std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return Status::Internal("ZSTD_createDCtx failed");
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  std::string buf(ZSTD_DStreamOutSize(), '\0');
  uint64_t pos = 0;
  while (pos < end) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    size_t in_before = ib.pos;
    size_t rc = ZSTD_decompressStream(dctx.get(), &ob, &ib);
    if (ZSTD_isError(rc))
      return Status::Corrupt(std::string("bad zstd data: ") + ZSTD_getErrorName(rc));
    Keep(buf.data(), ob.pos, &pos, begin, end, out);
    if (ob.pos == 0 && ib.pos == in_before) break;  // input exhausted
  }
  if (pos < end) return Status::Corrupt("zstd data ends before the chunk's end");
  return Status::Ok();
}

Result<std::string> UnzstdAll(std::string_view in, uint64_t max_out, std::string_view what) {
  std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return Status::Internal("ZSTD_createDCtx failed");
  std::string out;
  std::string buf(ZSTD_DStreamOutSize(), '\0');
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  while (true) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    const size_t in_before = ib.pos;
    const size_t rc = ZSTD_decompressStream(dctx.get(), &ob, &ib);
    if (ZSTD_isError(rc)) {
      return Status::Corrupt("bad zstd data in " + std::string(what) + ": " +
                             ZSTD_getErrorName(rc));
    }
    if (ob.pos > max_out - out.size()) {
      return Status::Corrupt(std::string(what) + " decompresses to more than " +
                             std::to_string(max_out) + " bytes");
    }
    out.append(buf.data(), ob.pos);
    // rc == 0: a frame ended exactly here; more input may hold further frames.
    if (rc == 0 && ib.pos == ib.size) break;
    if (ib.pos == in_before && ob.pos == 0) {
      return Status::Corrupt(std::string(what) + " is cut short");
    }
  }
  return out;
}

Result<std::string> ZstdAll(std::string_view in, int level) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), level);
  if (ZSTD_isError(n)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

}  // namespace imgfs::fs
