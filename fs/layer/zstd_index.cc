// imgfs — zstd decoding with frame-start checkpoints.
#include "fs/layer/zstd_index.h"

#include <zstd.h>

#include <string>

namespace imgfs::fs {
namespace {

struct DCtxDeleter {
  void operator()(ZSTD_DCtx* ctx) const { ZSTD_freeDCtx(ctx); }
};

class ZstdDecoder : public StreamDecoder {
 public:
  ZstdDecoder(ZSTD_DCtx* ctx, const Checkpoint& start, CheckpointRecorder* recorder)
      : ctx_(ctx), recorder_(recorder) {
    in_offset_ = start.compressed_offset;
    out_offset_ = start.uncompressed_offset;
  }

  Status Decode(std::string_view in, size_t* consumed, char* out, size_t out_cap,
                size_t* produced) override {
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    ZSTD_outBuffer output{out, out_cap, 0};
    while (output.pos < output.size) {
      if (between_frames_) {
        if (input.pos == input.size) break;
        if (recorder_ != nullptr && recorder_->Wants(out_offset_)) {
          recorder_->Add(Checkpoint{in_offset_, out_offset_, 0, {}});
        }
        between_frames_ = false;
      }
      size_t in_before = input.pos;
      size_t out_before = output.pos;
      size_t ret = ZSTD_decompressStream(ctx_.get(), &output, &input);
      in_offset_ += input.pos - in_before;
      out_offset_ += output.pos - out_before;
      if (ZSTD_isError(ret)) {
        return Status::Corrupt("zstd stream invalid near compressed offset " +
                               std::to_string(in_offset_) + ": " + ZSTD_getErrorName(ret));
      }
      if (ret == 0) {
        between_frames_ = true;
        ++frames_;
        continue;
      }
      if (input.pos == in_before && output.pos == out_before) break;
    }
    *consumed = input.pos;
    *produced = output.pos;
    return Status::Ok();
  }

  bool AtEnd() const override { return between_frames_ && frames_ > 0; }

 private:
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> ctx_;
  CheckpointRecorder* recorder_;
  bool between_frames_ = true;
  uint64_t frames_ = 0;  // frames completed (skippable ones included)
};

}  // namespace

Result<std::unique_ptr<StreamDecoder>> NewZstdDecoder(const Checkpoint& start,
                                                      CheckpointRecorder* recorder) {
  if (!start.window.empty() || start.bits != 0) {
    return Status::InvalidArgument("zstd decoding can only start at a frame start");
  }
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  if (ctx == nullptr) return Status::Internal("ZSTD_createDCtx failed");
  return std::unique_ptr<StreamDecoder>(std::make_unique<ZstdDecoder>(ctx, start, recorder));
}

}  // namespace imgfs::fs
