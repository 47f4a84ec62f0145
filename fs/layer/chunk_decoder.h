// imgfs — decoding and verifying one chunk of a lazily mountable layer, and planning the
// ranged reads that fetch many chunks at once.
//
// A Chunk (fs/layer/layer_index.h) of an eStargz or zstd:chunked layer names compressed
// bytes [blob_offset, blob_offset + blob_length) of the blob: one or more gzip members
// (eStargz) or zstd frames (zstd:chunked) whose decompressed output holds the chunk's bytes at
// [inner_offset, inner_offset + size). A zstd:chunked chunk with blob_length == 0 and
// size > 0 is a "zeros" chunk (`chunkType: "zeros"`): nothing is fetched, its content is
// `size` zero bytes. Plain tar chunks (LayerFormat::kTar) are stored bytes.
//
// Every decoded chunk is verified against its digest when it has one: a mismatch is Corrupt
// naming the layer, the file and both digests; never wrong bytes.
//
// Coalescing: chunks sorted by blob offset whose compressed ranges are adjacent or separated
// by at most `max_gap_bytes` share one ranged read; the bytes are then split back per chunk.
//
// Thread-safety: stateless functions; safe to call concurrently.
#ifndef IMGFS_FS_LAYER_CHUNK_DECODER_H_
#define IMGFS_FS_LAYER_CHUNK_DECODER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

// Default gap bridged when coalescing: a wasted 64 KiB costs less than another HTTP
// round-trip (stargz-snapshotter merges ranges in fs/remote/blob.go for the same reason).
inline constexpr uint64_t kDefaultCoalesceGapBytes = 64 << 10;

// True for a chunk with nothing to fetch (zstd:chunked zeros chunk).
inline bool IsZerosChunk(const Chunk& c) { return c.blob_length == 0 && c.size > 0; }

// Decodes `chunk` of a layer in `format` from `compressed` = blob bytes
// [chunk.blob_offset, chunk.blob_offset + chunk.blob_length) ("" for a zeros chunk) and
// verifies it. `layer` and `file` name the chunk in errors. Corrupt on bad or short data or a
// digest mismatch, and for a chunk larger than kMaxChunkBytes (fs/layer/layer_index.h; a
// zeros chunk too: callers serve those in slices instead); Unsupported for formats without
// per-chunk compressed ranges. Memory grows with the bytes actually decoded, never with
// the chunk's declared size.
Result<std::string> DecodeChunk(LayerFormat format, const Chunk& chunk, std::string_view compressed,
                                const registry::Digest& layer, std::string_view file);

// One ranged read serving several chunks.
struct CoalescedRead {
  ByteRange range;             // of the blob
  std::vector<size_t> chunks;  // positions in the input list, ascending blob offset
};

// Groups `chunks` (sorted by blob_offset; zeros chunks are skipped: they need no read) into
// ranged reads: a chunk joins the current read when it starts at most `max_gap_bytes` after
// the read's end. Overlapping chunks share the read.
std::vector<CoalescedRead> CoalesceChunkReads(const std::vector<Chunk>& chunks,
                                              uint64_t max_gap_bytes);

// The bytes of chunk `c` inside the bytes of `read` (which must contain it).
std::string_view SliceChunk(const CoalescedRead& read, std::string_view read_bytes, const Chunk& c);

// Fetches and decodes chunks `chunk_ids` (indexes into index.chunks) of `index`'s layer with
// as few ranged reads as CoalesceChunkReads gives. Returns the decoded bytes in the order of
// `chunk_ids`. Errors as DecodeChunk, or the BlobSource's.
Result<std::vector<std::string>> ReadChunks(registry::BlobSource& source, const LayerIndex& index,
                                            const std::vector<uint32_t>& chunk_ids,
                                            uint64_t max_gap_bytes = kDefaultCoalesceGapBytes);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_CHUNK_DECODER_H_
