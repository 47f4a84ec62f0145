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
// With Options::decode_ahead_blocks, a read that continued a parked decoder (a sequential
// reader) has the next blocks decoded into the cache on a thread of the reader's own while it
// goes on, a read needing one of them waits for it, and the decoder is parked again after them.
//
// Thread-safety: Read, ReadChunk and ReadStream may be called from any number of threads. The
// cache and decoder pool are guarded by one mutex that is never held while reading the blob or
// decompressing; two threads missing the same block may both decode it (not one being decoded
// ahead: they wait for it). The destructor stops the ahead thread; no read may run then.
#ifndef IMGFS_FS_LAYER_LAYER_READER_H_
#define IMGFS_FS_LAYER_LAYER_READER_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/byte_slices.h"
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
    // Blocks decoded ahead of a sequential reader, on a thread of this reader's own (0: none;
    // needs parked decoders): its next reads find them cached, so the decompression leaves
    // the path of a reader that waits on each read in turn (a cold `tar` of a mount). At most
    // this many blocks are cached or being decoded past the block a read ended in.
    size_t decode_ahead_blocks = 0;
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

  // ReadFile's bytes in place: views into this reader's cached blocks, which the result keeps
  // alive (a tar layer: one slice read with pread), for a reply written straight from them.
  Result<ByteSlices> ReadFileSlices(uint64_t payload_offset, uint64_t size, uint64_t offset,
                                    size_t length);

  // Chunk `chunk_index` (0-based, within the file) of `entry`, verified against its digest
  // (Corrupt on mismatch).
  Result<std::string> ReadChunk(const FileEntry& entry, uint32_t chunk_index);

  // Bytes [offset, offset + length) of the uncompressed tar stream, clipped at its end.
  Result<std::string> ReadStream(uint64_t offset, size_t length);
  Result<ByteSlices> ReadStreamSlices(uint64_t offset, size_t length);

  // Total bytes produced by decompression so far (for tests and statistics): each block once
  // for a sequential reader, decoded ahead or not.
  uint64_t decompressed_bytes() const { return decompressed_bytes_.load(); }

  const LayerIndex& index() const { return *index_; }

 private:
  struct Cursor;
  // A decoded cache block: its bytes are written by the decoder only (no zero-fill first).
  struct Block {
    std::unique_ptr<char[]> bytes;
    size_t size = 0;
    std::string_view view() const { return {bytes.get(), size}; }
  };
  using BlockPtr = std::shared_ptr<const Block>;
  struct CachedBlock {
    BlockPtr data;
    std::list<uint64_t>::iterator lru;
  };

  LayerReader(UniqueFd fd, std::shared_ptr<const LayerIndex> index, Options options);

  BlockPtr LookupBlock(uint64_t block);
  void InsertBlock(uint64_t block, BlockPtr data);
  // A decoder positioned at or before `offset`: a parked one when closer than the checkpoint
  // (*parked_one set then).
  Result<std::unique_ptr<Cursor>> CursorFor(uint64_t offset, bool* parked_one);
  void Park(std::unique_ptr<Cursor> cursor);
  void ParkLocked(std::unique_ptr<Cursor> cursor) IMGFS_REQUIRES(mu_);
  // Decodes exactly `n` bytes from `cursor` into `out` (nullptr: discard).
  Status Produce(Cursor& cursor, char* out, size_t n);
  // Decodes the blocks into the cache and *blocks; *continued: from a parked decoder.
  Status DecodeBlocks(uint64_t first_block, uint64_t last_block, std::vector<BlockPtr>* blocks,
                      bool* continued);
  // Decodes `block` (the cursor is at its start) into the cache; the block's bytes.
  Result<BlockPtr> DecodeBlock(Cursor& cursor, uint64_t block);
  std::string LayerName() const;

  // Decode-ahead (Options::decode_ahead_blocks). A read that ended before `next_block` hands
  // the decoder parked there to the ahead thread, which decodes up to the window's end into
  // the cache and parks it again; blocks being decoded are `pending_`, and a read needing one
  // waits for it (WaitForPending) instead of decoding it again from a checkpoint.
  struct AheadTask;
  void MaybeDecodeAhead(uint64_t next_block);
  void WaitForPending(uint64_t first_block, uint64_t last_block);
  void AheadLoop();

  UniqueFd fd_;
  std::shared_ptr<const LayerIndex> index_;
  Options options_;
  std::atomic<uint64_t> decompressed_bytes_{0};

  // Lock order: mu_ is a leaf lock; it is never held across pread or decompression.
  Mutex mu_;
  std::list<uint64_t> lru_ IMGFS_GUARDED_BY(mu_);  // front = newest
  std::unordered_map<uint64_t, CachedBlock> blocks_ IMGFS_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Cursor>> parked_ IMGFS_GUARDED_BY(mu_);  // back = newest
  // Decode-ahead: signalled when a task is set, a pending block is done, or on stop.
  CondVar ahead_cv_;
  std::set<uint64_t> pending_ IMGFS_GUARDED_BY(mu_);
  std::unique_ptr<AheadTask> ahead_task_ IMGFS_GUARDED_BY(mu_);  // the next task, not taken
  // Set while a task is set or being decoded: its window's end (exclusive).
  std::optional<uint64_t> ahead_window_end_ IMGFS_GUARDED_BY(mu_);
  bool ahead_stop_ IMGFS_GUARDED_BY(mu_) = false;
  std::thread ahead_thread_;  // started by the first task; joined by the destructor
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_LAYER_READER_H_
