// imgfs — StreamDecoder: the decompression step shared by index building and random reads.
//
// A StreamDecoder turns the compressed bytes of a layer blob, fed in order from some starting
// point, into the uncompressed tar stream. It starts either at the beginning of the blob or at
// a Checkpoint recorded in the layer's index (fs/layer/layer_index.h), and keeps track of both
// offsets so the caller knows where it is. While indexing, a CheckpointRecorder collects the
// places where a later reader can start (gzip: deflate block boundaries and member starts;
// zstd: frame starts), at most one per `span` uncompressed bytes.
//
// Implementations: plain tar (identity), gzip (fs/layer/gzip_index.h), zstd
// (fs/layer/zstd_index.h). Thread-safety: one decoder per thread.
#ifndef IMGFS_FS_LAYER_STREAM_DECODER_H_
#define IMGFS_FS_LAYER_STREAM_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "fs/layer/layer_index.h"

namespace imgfs::fs {

// Collects checkpoints during an indexing pass, at most one per `span` uncompressed bytes.
class CheckpointRecorder {
 public:
  // REQUIRES: span_bytes > 0.
  explicit CheckpointRecorder(uint64_t span_bytes) : span_(span_bytes) {}

  // True if a checkpoint at `uncompressed_offset` should be recorded (the first one always is).
  bool Wants(uint64_t uncompressed_offset) const {
    return points_.empty() || uncompressed_offset - points_.back().uncompressed_offset >= span_;
  }
  void Add(Checkpoint cp) { points_.push_back(std::move(cp)); }
  const std::vector<Checkpoint>& points() const { return points_; }
  std::vector<Checkpoint> Take() { return std::move(points_); }

 private:
  uint64_t span_;
  std::vector<Checkpoint> points_;
};

class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;

  // Consumes a prefix of `in` and writes up to `out_cap` uncompressed bytes to `out`; sets
  // `*consumed` and `*produced`. Both are 0 only when more input is needed (or the stream
  // ended). Corrupt (naming the compressed offset) when the data is not valid.
  virtual Status Decode(std::string_view in, size_t* consumed, char* out, size_t out_cap,
                        size_t* produced) = 0;

  // True when everything fed so far ends exactly at the end of a complete stream (gzip: after
  // a member's trailer; zstd: after a frame; tar: always). False means truncated.
  virtual bool AtEnd() const = 0;

  // Blob offset of the next compressed byte to feed.
  uint64_t compressed_offset() const { return in_offset_; }
  // Offset in the uncompressed stream of the next byte to be produced.
  uint64_t uncompressed_offset() const { return out_offset_; }

 protected:
  uint64_t in_offset_ = 0;
  uint64_t out_offset_ = 0;
};

// Creates a decoder for `format` (kTar, kTarGzip or kTarZstd; Unsupported otherwise) starting
// at `start` (a default Checkpoint = the start of the blob). `prev_byte` is the blob byte at
// start.compressed_offset - 1, needed when start.bits != 0. `recorder` (may be null, not
// owned) receives checkpoints as decoding passes them.
Result<std::unique_ptr<StreamDecoder>> NewStreamDecoder(LayerFormat format, const Checkpoint& start,
                                                        uint8_t prev_byte,
                                                        CheckpointRecorder* recorder);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_STREAM_DECODER_H_
