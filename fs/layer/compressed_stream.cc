// imgfs — gzip members / zstd frames as independently decodable units (see compressed_stream.h).
#include "fs/layer/compressed_stream.h"

#include <zlib.h>
#include <zstd.h>

#include <utility>

namespace imgfs::fs {
namespace {

// Output is handed to the sink in pieces of about this size: large enough that a file sink
// makes few write calls, small enough to bound memory.
constexpr size_t kSinkPieceBytes = 1 << 20;
constexpr size_t kOutBufBytes = 64 << 10;

struct CctxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

}  // namespace

struct CompressedStream::State {
  z_stream zs{};
  bool zs_init = false;
  std::unique_ptr<ZSTD_CCtx, CctxDeleter> cctx;
  ~State() {
    if (zs_init) deflateEnd(&zs);
  }
};

CompressedStream::CompressedStream(Codec codec, int level, const registry::BlobSink* sink)
    : codec_(codec), level_(level), sink_(sink), state_(std::make_unique<State>()) {}

CompressedStream::~CompressedStream() = default;

Status CompressedStream::Emit(std::string_view bytes) {
  blob_hash_.Update(bytes);
  offset_ += bytes.size();
  pending_.append(bytes);
  if (pending_.size() >= kSinkPieceBytes) {
    Status st = (*sink_)(pending_);
    pending_.clear();
    return st;
  }
  return Status::Ok();
}

Status CompressedStream::Write(std::string_view data) {
  if (data.empty()) return Status::Ok();
  diff_hash_.Update(data);
  uncompressed_ += data.size();
  char out[kOutBufBytes];
  if (codec_ == Codec::kGzip) {
    z_stream& zs = state_->zs;
    if (!state_->zs_init) {
      // windowBits 15 + 16: a gzip wrapper with a default header (no name, mtime 0).
      if (deflateInit2(&zs, level_, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return Status::Internal("deflateInit2 failed");
      }
      state_->zs_init = true;
      open_ = true;
    } else if (!open_) {
      if (deflateReset(&zs) != Z_OK) return Status::Internal("deflateReset failed");
      open_ = true;
    }
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    while (zs.avail_in > 0) {
      zs.next_out = reinterpret_cast<Bytef*>(out);
      zs.avail_out = sizeof(out);
      if (deflate(&zs, Z_NO_FLUSH) == Z_STREAM_ERROR) return Status::Internal("deflate failed");
      IMGFS_RETURN_IF_ERROR(Emit(std::string_view(out, sizeof(out) - zs.avail_out)));
    }
    return Status::Ok();
  }
  if (state_->cctx == nullptr) {
    state_->cctx.reset(ZSTD_createCCtx());
    if (state_->cctx == nullptr) return Status::Internal("ZSTD_createCCtx failed");
    size_t rc = ZSTD_CCtx_setParameter(state_->cctx.get(), ZSTD_c_compressionLevel, level_);
    if (ZSTD_isError(rc))
      return Status::Internal("zstd level: " + std::string(ZSTD_getErrorName(rc)));
    ZSTD_CCtx_setParameter(state_->cctx.get(), ZSTD_c_checksumFlag, 1);
  }
  open_ = true;
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  while (in.pos < in.size) {
    ZSTD_outBuffer ob{out, sizeof(out), 0};
    size_t rc = ZSTD_compressStream2(state_->cctx.get(), &ob, &in, ZSTD_e_continue);
    if (ZSTD_isError(rc)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(rc));
    IMGFS_RETURN_IF_ERROR(Emit(std::string_view(out, ob.pos)));
  }
  return Status::Ok();
}

Status CompressedStream::EndUnit() {
  if (!open_) return Status::Ok();
  open_ = false;
  char out[kOutBufBytes];
  if (codec_ == Codec::kGzip) {
    z_stream& zs = state_->zs;
    zs.next_in = nullptr;
    zs.avail_in = 0;
    while (true) {
      zs.next_out = reinterpret_cast<Bytef*>(out);
      zs.avail_out = sizeof(out);
      int rc = deflate(&zs, Z_FINISH);
      if (rc == Z_STREAM_ERROR) return Status::Internal("deflate failed");
      IMGFS_RETURN_IF_ERROR(Emit(std::string_view(out, sizeof(out) - zs.avail_out)));
      if (rc == Z_STREAM_END) return Status::Ok();
    }
  }
  ZSTD_inBuffer in{nullptr, 0, 0};
  while (true) {
    ZSTD_outBuffer ob{out, sizeof(out), 0};
    size_t rc = ZSTD_compressStream2(state_->cctx.get(), &ob, &in, ZSTD_e_end);
    if (ZSTD_isError(rc)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(rc));
    IMGFS_RETURN_IF_ERROR(Emit(std::string_view(out, ob.pos)));
    if (rc == 0) return Status::Ok();
  }
}

Status CompressedStream::WriteRaw(std::string_view data) {
  if (open_) return Status::Internal("CompressedStream::WriteRaw inside an open unit");
  return Emit(data);
}

Status CompressedStream::Finish() {
  if (open_) return Status::Internal("CompressedStream::Finish inside an open unit");
  if (pending_.empty()) return Status::Ok();
  Status st = (*sink_)(pending_);
  pending_.clear();
  return st;
}

Result<std::string> CompressedStream::CompressOne(Codec codec, int level, std::string_view data) {
  std::string out;
  registry::BlobSink sink = [&out](std::string_view piece) {
    out.append(piece);
    return Status::Ok();
  };
  CompressedStream stream(codec, level, &sink);
  IMGFS_RETURN_IF_ERROR(stream.Write(data));
  if (data.empty() && codec == Codec::kZstd) {
    // An empty unit is never opened by Write; produce an empty frame explicitly.
    return Status::Internal("CompressOne of empty data");
  }
  IMGFS_RETURN_IF_ERROR(stream.EndUnit());
  IMGFS_RETURN_IF_ERROR(stream.Finish());
  return out;
}

}  // namespace imgfs::fs
