// imgfs — content-defined chunking for zstd:chunked (see content_chunker.h).
#include "fs/layer/content_chunker.h"

#include <algorithm>
#include <string>
#include <utility>

namespace imgfs::fs {
namespace {

// Zero runs are handed out in pieces of this static buffer.
constexpr size_t kZeroPiece = 64 << 10;
const std::array<char, kZeroPiece> kZeros{};

}  // namespace

Status ValidateContentChunking(const ContentChunking& options) {
  if (options.min_bytes == 0 || options.max_bytes < options.min_bytes) {
    return Status::InvalidArgument("content-defined chunks need 1 <= min (" +
                                   std::to_string(options.min_bytes) + ") <= max (" +
                                   std::to_string(options.max_bytes) + ")");
  }
  if (options.split_bits < 1 || options.split_bits > 31) {
    return Status::InvalidArgument("split bits must be 1..31, not " +
                                   std::to_string(options.split_bits));
  }
  if (options.zeros_bytes == 0) return Status::InvalidArgument("zero-run threshold must be > 0");
  return Status::Ok();
}

void RollingChecksum::Reset() {
  // As if the window held kWindow zero bytes (bup's initial state).
  s1_ = kWindow * kCharOffset;
  s2_ = kWindow * (kWindow - 1) * kCharOffset;
  window_.fill(0);
  pos_ = 0;
}

ContentChunker::ContentChunker(const ContentChunking& options, BytesFn on_bytes, CutFn on_cut)
    : options_(options), on_bytes_(std::move(on_bytes)), on_cut_(std::move(on_cut)) {}

void ContentChunker::Reset() {
  sum_.Reset();
  chunk_bytes_ = 0;
  zero_run_ = 0;
  in_zeros_ = false;
  zeros_chunk_ = 0;
}

Status ContentChunker::EmitSpan(std::string_view data, size_t* span_start, size_t end) {
  if (end <= *span_start) return Status::Ok();
  std::string_view piece = data.substr(*span_start, end - *span_start);
  *span_start = end;
  return on_bytes_(piece);
}

Status ContentChunker::Cut(ChunkKind kind) {
  chunk_bytes_ = 0;
  return on_cut_(kind);
}

Status ContentChunker::ReplayZerosAsData() {
  uint64_t pending = 0;  // zeros of the current chunk not yet handed out
  auto flush = [&]() -> Status {
    while (pending > 0) {
      const uint64_t n = std::min<uint64_t>(pending, kZeroPiece);
      IMGFS_RETURN_IF_ERROR(on_bytes_(std::string_view(kZeros.data(), n)));
      pending -= n;
    }
    return Status::Ok();
  };
  for (uint64_t k = 0; k < zero_run_; ++k) {
    sum_.Roll(0);
    ++chunk_bytes_;
    ++pending;
    if ((chunk_bytes_ >= options_.min_bytes && sum_.OnSplit(options_.split_bits)) ||
        chunk_bytes_ >= options_.max_bytes) {
      IMGFS_RETURN_IF_ERROR(flush());
      IMGFS_RETURN_IF_ERROR(Cut(ChunkKind::kData));
    }
  }
  zero_run_ = 0;
  return flush();
}

Status ContentChunker::EndZerosChunk() {
  while (zeros_chunk_ > 0) {
    const uint64_t n = std::min<uint64_t>(zeros_chunk_, kZeroPiece);
    IMGFS_RETURN_IF_ERROR(on_bytes_(std::string_view(kZeros.data(), n)));
    zeros_chunk_ -= n;
  }
  return Cut(ChunkKind::kZeros);
}

Status ContentChunker::Feed(std::string_view data) {
  size_t span_start = 0;  // data[span_start, i): rolled data bytes not yet handed out
  for (size_t i = 0; i < data.size(); ++i) {
    const auto byte = static_cast<uint8_t>(data[i]);
    if (byte == 0) {
      if (in_zeros_) {
        sum_.Roll(0);
        if (++zeros_chunk_ >= options_.max_bytes) IMGFS_RETURN_IF_ERROR(EndZerosChunk());
        continue;
      }
      if (zero_run_ == 0) IMGFS_RETURN_IF_ERROR(EmitSpan(data, &span_start, i));
      if (++zero_run_ < options_.zeros_bytes) continue;
      // A zeros run: the data chunk before it ends where it starts.
      if (chunk_bytes_ > 0) IMGFS_RETURN_IF_ERROR(Cut(ChunkKind::kData));
      for (uint64_t k = 0; k < zero_run_; ++k) sum_.Roll(0);
      in_zeros_ = true;
      zeros_chunk_ = zero_run_;
      zero_run_ = 0;
      if (zeros_chunk_ >= options_.max_bytes) IMGFS_RETURN_IF_ERROR(EndZerosChunk());
      continue;
    }
    if (in_zeros_) {
      if (zeros_chunk_ > 0) IMGFS_RETURN_IF_ERROR(EndZerosChunk());
      in_zeros_ = false;
      span_start = i;
    } else if (zero_run_ > 0) {
      IMGFS_RETURN_IF_ERROR(ReplayZerosAsData());
      span_start = i;
    }
    sum_.Roll(byte);
    ++chunk_bytes_;
    if ((chunk_bytes_ >= options_.min_bytes && sum_.OnSplit(options_.split_bits)) ||
        chunk_bytes_ >= options_.max_bytes) {
      IMGFS_RETURN_IF_ERROR(EmitSpan(data, &span_start, i + 1));
      IMGFS_RETURN_IF_ERROR(Cut(ChunkKind::kData));
    }
  }
  if (!in_zeros_ && zero_run_ == 0) {
    IMGFS_RETURN_IF_ERROR(EmitSpan(data, &span_start, data.size()));
  }
  return Status::Ok();
}

Status ContentChunker::Finish() {
  if (in_zeros_) {
    if (zeros_chunk_ > 0) IMGFS_RETURN_IF_ERROR(EndZerosChunk());
    in_zeros_ = false;
  } else if (zero_run_ > 0) {
    IMGFS_RETURN_IF_ERROR(ReplayZerosAsData());
  }
  if (chunk_bytes_ > 0) IMGFS_RETURN_IF_ERROR(Cut(ChunkKind::kData));
  return Status::Ok();
}

}  // namespace imgfs::fs
