// imgfs — LayerReader: random-access reads of a layer's files from its complete local blob
// (the pulled blob in the store), using the layer's LayerIndex.
//
// Plain tar layers are read with pread(2). Compressed layers are decoded from the nearest
// checkpoint at or before the wanted offset (gzip: raw inflate primed with the checkpoint's
// bits and window; zstd: the frame start) and the output before the offset is discarded, so
// reading any byte costs at most LayerIndex::max_checkpoint_gap (≈ one span) of decompression
// plus one cache block.
//
// Decoded data is kept in a small per-layer LRU cache of fixed-size blocks of the uncompressed
// stream (Options::cache_bytes in total), and up to Options::max_parked_decoders decoders are
// parked where they stopped: a sequential reader continues from there instead of going back to
// the checkpoint, so reading a whole file decodes it about once.
//
// Verification: Read trusts the blob (its digest was verified when it entered the store; the
// index pass verified the compressed stream's own checksums). ReadChunk additionally checks the
// chunk's sha256 and is what a fetcher committing chunks to the chunk store should use.
//
// Thread-safety: Read, ReadChunk and ReadStream may be called from any number of threads. The
// cache and decoder pool are guarded by one mutex that is never held while reading the blob or
// decompressing; two threads missing the same block may both decode it.
#ifndef IMGFS_FS_LAYER_LAYER_READER_H_
#define IMGFS_FS_LAYER_LAYER_READER_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "fs/layer/layer_index.h"

namespace imgfs::fs {

class LayerReader {
 public:
  struct Options {
    // Cache block: the unit of decoding and caching. 256 KiB is a few FUSE reads (128 KiB
    // max_read by default) and a fraction of a span.
    size_t block_bytes = 256 << 10;
    // Total decoded bytes cached per layer: 8 MiB = two default spans.
    size_t cache_bytes = 8 << 20;
    // Decoders parked for sequential continuation (each ~44 KiB for gzip; zstd up to the
    // frame's window).
    size_t max_parked_decoders = 2;
  };

  // Opens `blob_path` (the complete blob described by `index`). NotFound if absent; Corrupt
  // if its size differs from index->compressed_size; Unsupported for formats without a
  // streamable encoding.
  static Result<std::unique_ptr<LayerReader>> Open(const std::string& blob_path,
                                                   std::shared_ptr<const LayerIndex> index);
  static Result<std::unique_ptr<LayerReader>> Open(const std::string& blob_path,
                                                   std::shared_ptr<const LayerIndex> index,
                                                   Options options);
  LayerReader(const LayerReader&) = delete;
  LayerReader& operator=(const LayerReader&) = delete;
  ~LayerReader();

  // Up to `length` bytes of regular file `entry` (an entry of this layer's index) from
  // `offset`; fewer at the end of the file, "" at or beyond it. InvalidArgument for entries
  // that are not regular files (hardlinks: pass the target's entry). Corrupt if the blob does
  // not decode (the message names the layer and offset).
  Result<std::string> Read(const FileEntry& entry, uint64_t offset, size_t length);
  // The same for a regular file of `size` bytes starting at `payload_offset` of the tar stream
  // (Read after its type check; for callers that keep no entries).
  Result<std::string> ReadFile(uint64_t payload_offset, uint64_t size, uint64_t offset,
                               size_t length);

  // Chunk `chunk_index` (0-based, within the file) of `entry`, verified against its digest
  // (Corrupt on mismatch).
  Result<std::string> ReadChunk(const FileEntry& entry, uint32_t chunk_index);

  // Bytes [offset, offset + length) of the uncompressed tar stream, clipped at its end.
  Result<std::string> ReadStream(uint64_t offset, size_t length);

  // Total bytes produced by decompression so far (for tests and statistics).
  uint64_t decompressed_bytes() const { return decompressed_bytes_.load(); }

  const LayerIndex& index() const { return *index_; }

 private:
  struct Cursor;
  struct CachedBlock {
    std::shared_ptr<const std::string> data;
    std::list<uint64_t>::iterator lru;
  };

  LayerReader(UniqueFd fd, std::shared_ptr<const LayerIndex> index, Options options);

  std::shared_ptr<const std::string> LookupBlock(uint64_t block);
  void InsertBlock(uint64_t block, std::shared_ptr<const std::string> data);
  // A decoder positioned at or before `offset`: a parked one when closer than the checkpoint.
  Result<std::unique_ptr<Cursor>> CursorFor(uint64_t offset);
  void Park(std::unique_ptr<Cursor> cursor);
  // Decodes exactly `n` bytes from `cursor` into `out` (nullptr: discard).
  Status Produce(Cursor& cursor, char* out, size_t n);
  Status DecodeBlocks(uint64_t first_block, uint64_t last_block,
                      std::vector<std::shared_ptr<const std::string>>* blocks);
  std::string LayerName() const;

  UniqueFd fd_;
  std::shared_ptr<const LayerIndex> index_;
  Options options_;
  std::atomic<uint64_t> decompressed_bytes_{0};

  // Lock order: mu_ is a leaf lock; it is never held across pread or decompression.
  Mutex mu_;
  std::list<uint64_t> lru_ IMGFS_GUARDED_BY(mu_);  // front = newest
  std::unordered_map<uint64_t, CachedBlock> blocks_ IMGFS_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Cursor>> parked_ IMGFS_GUARDED_BY(mu_);  // back = newest
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_LAYER_READER_H_
