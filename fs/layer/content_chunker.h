// imgfs — ContentChunker: content-defined chunk boundaries for zstd:chunked file payloads.
//
// The splitting follows containers/storage's zstd:chunked compressor
// (pkg/chunked/compressor): a bup/librsync-style rolling checksum (two sums s1, s2 over a
// 64-byte window, character offset 31) is rolled over every byte of a file; a data chunk
// ends after a byte at which the low `split_bits` bits of s2 are all ones (16 bits there: a
// 64 KiB average). Runs of at least `zeros_bytes` zero bytes (1 KiB there) are not data:
// the data chunk before the run ends where the run starts, and the run becomes a chunk of
// its own that the TOC marks `chunkType: "zeros"` (readers produce zeros without fetching).
// Shorter zero runs are data like any other bytes. The rolling state depends only on the last
// 64 bytes, so an insertion or deletion changes the boundaries around it only: the chunks
// after the next unchanged boundary are the same bytes, with the same digests, as before.
//
// containers/storage bounds neither end; this chunker adds both (defaults 8 KiB / 1 MiB):
//  - a checksum boundary is taken only when the chunk has at least `min_bytes` (fewer tiny
//    frames and TOC entries; a boundary kept is still one containers/storage would cut at);
//  - every chunk (data or zeros) ends after at most `max_bytes` (readers decode a chunk in
//    memory). A data chunk may be shorter than `min_bytes` only when it ends the file or a
//    zeros run follows it.
// The rolling state is reset at the start of each file (as containers/storage does) and is
// not reset at boundaries. Output is deterministic.
//
// Use: Reset() per file, Feed() the file's bytes in pieces of any size, Finish(). The
// callbacks receive every byte of the file exactly once, in order: `on_bytes` with the bytes
// of the current chunk (zero runs arrive as pieces of a static zero buffer), `on_cut` when
// the current chunk is complete (never for an empty chunk). A callback's error stops the
// call and is returned.
//
// Thread-safety: one chunker per thread.
#ifndef IMGFS_FS_LAYER_CONTENT_CHUNKER_H_
#define IMGFS_FS_LAYER_CONTENT_CHUNKER_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string_view>

#include "base/status.h"

namespace imgfs::fs {

struct ContentChunking {
  uint64_t min_bytes = 8 << 10;    // >= 1
  uint64_t max_bytes = 1 << 20;    // >= min_bytes
  uint32_t split_bits = 16;        // 1..31: average data chunk about 2^split_bits bytes
  uint64_t zeros_bytes = 1 << 10;  // >= 1: zero runs at least this long are "zeros" chunks
};

// InvalidArgument when the bounds are inconsistent.
Status ValidateContentChunking(const ContentChunking& options);

enum class ChunkKind { kData, kZeros };

// The bup rolling checksum (window 64, character offset 31).
class RollingChecksum {
 public:
  static constexpr uint32_t kWindow = 64;
  static constexpr uint32_t kCharOffset = 31;

  RollingChecksum() { Reset(); }
  void Reset();
  void Roll(uint8_t byte) {
    const uint8_t drop = window_[pos_];
    s1_ += static_cast<uint32_t>(byte) - drop;
    s2_ += s1_ - kWindow * (static_cast<uint32_t>(drop) + kCharOffset);
    window_[pos_] = byte;
    pos_ = (pos_ + 1) & (kWindow - 1);
  }
  // The low `bits` bits of s2 are all ones.
  bool OnSplit(uint32_t bits) const {
    const uint32_t mask = (uint32_t{1} << bits) - 1;
    return (s2_ & mask) == mask;
  }
  uint32_t s1() const { return s1_; }
  uint32_t s2() const { return s2_; }

 private:
  uint32_t s1_ = 0;
  uint32_t s2_ = 0;
  std::array<uint8_t, kWindow> window_{};
  uint32_t pos_ = 0;
};

class ContentChunker {
 public:
  using BytesFn = std::function<Status(std::string_view)>;
  using CutFn = std::function<Status(ChunkKind)>;

  // REQUIRES: ValidateContentChunking(options).ok().
  ContentChunker(const ContentChunking& options, BytesFn on_bytes, CutFn on_cut);

  // Starts a new file.
  void Reset();
  Status Feed(std::string_view data);
  // Ends the file: the pending bytes (if any) become the last chunk(s).
  Status Finish();

 private:
  Status EmitSpan(std::string_view data, size_t* span_start, size_t end);
  Status Cut(ChunkKind kind);
  // The pending zero run is data after all (a non-zero byte or the file end came first).
  Status ReplayZerosAsData();
  Status EndZerosChunk();

  ContentChunking options_;
  BytesFn on_bytes_;
  CutFn on_cut_;
  RollingChecksum sum_;
  uint64_t chunk_bytes_ = 0;  // bytes of the current data chunk handed to on_bytes_
  uint64_t zero_run_ = 0;     // zeros seen but not yet classified (below zeros_bytes)
  bool in_zeros_ = false;     // inside a zero run of at least zeros_bytes
  uint64_t zeros_chunk_ = 0;  // zeros of the current zeros chunk not yet handed out
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_CONTENT_CHUNKER_H_
