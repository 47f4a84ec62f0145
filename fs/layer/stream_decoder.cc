// imgfs — StreamDecoder factory and the identity decoder for plain tar layers.
#include "fs/layer/stream_decoder.h"

#include <algorithm>
#include <cstring>

#include "fs/layer/gzip_index.h"
#include "fs/layer/zstd_index.h"

namespace imgfs::fs {
namespace {

class IdentityDecoder : public StreamDecoder {
 public:
  explicit IdentityDecoder(const Checkpoint& start) {
    in_offset_ = start.compressed_offset;
    out_offset_ = start.compressed_offset;
  }
  Status Decode(std::string_view in, size_t* consumed, char* out, size_t out_cap,
                size_t* produced) override {
    size_t n = std::min(in.size(), out_cap);
    if (n != 0) std::memcpy(out, in.data(), n);
    in_offset_ += n;
    out_offset_ += n;
    *consumed = n;
    *produced = n;
    return Status::Ok();
  }
  bool AtEnd() const override { return true; }
};

}  // namespace

Result<std::unique_ptr<StreamDecoder>> NewStreamDecoder(LayerFormat format, const Checkpoint& start,
                                                        uint8_t prev_byte,
                                                        CheckpointRecorder* recorder) {
  switch (format) {
    case LayerFormat::kTar:
      return std::unique_ptr<StreamDecoder>(std::make_unique<IdentityDecoder>(start));
    case LayerFormat::kTarGzip:
    case LayerFormat::kEstargz:  // valid gzip: readable as a stream too
      return NewGzipDecoder(start, prev_byte, recorder);
    case LayerFormat::kTarZstd:
    case LayerFormat::kZstdChunked:  // valid zstd with skippable frames
      return NewZstdDecoder(start, recorder);
  }
  return Status::Unsupported("unknown layer format");
}

}  // namespace imgfs::fs
