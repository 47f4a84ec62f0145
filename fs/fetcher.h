// imgfs — LazyLayerReader: file data of an eStargz or zstd:chunked layer, fetched on demand.
//
// Serves reads of a layer whose blob is not in the store, using only its TOC index
// (fs/layer/estargz_toc.h, fs/layer/zstd_chunked_toc.h) and a BlobSource (the registry, or a
// local source in tests). Read(entry, offset, length) needs the chunks of `entry` covering the
// range; each comes from the chunk store (cache/chunk_store.h) when present, else it is
// fetched:
//  - single flight: concurrent readers of the same missing chunk share one fetch (a map
//    chunk key → shared future; the key is the chunk digest);
//  - the missing chunks one reader owns are fetched together, adjacent ones coalesced into
//    one ranged read (fs/layer/chunk_decoder.h ReadChunks), decoded and verified against
//    their digests, then written to the chunk store;
//  - a fetch or verification failure is retried once; a second failure is returned (Corrupt
//    or Unavailable: EIO at the FUSE boundary) with a log line naming layer, file and chunk.
// The last few verified chunks are also kept in memory (Options::memory_cache_bytes).
// Zeros chunks (zstd:chunked) are produced without any I/O. Chunks without a digest (allowed
// by eStargz) are fetched and verified by their decoder but not stored.
//
// Thread-safety: Read may be called from any number of threads. The in-flight map is guarded
// by one mutex that is never held across network or disk I/O; a thread first completes the
// fetches it owns and only then waits for others, so readers cannot deadlock.
#ifndef IMGFS_FS_FETCHER_H_
#define IMGFS_FS_FETCHER_H_

#include <atomic>
#include <cstdint>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "cache/chunk_store.h"
#include "fs/filesystem.h"
#include "fs/layer/chunk_decoder.h"
#include "fs/layer/layer_index.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

class LazyLayerReader : public FileDataSource {
 public:
  struct Options {
    uint64_t max_gap_bytes = kDefaultCoalesceGapBytes;
    int max_attempts = 2;  // one retry
    // Verified chunks kept in memory (most recently used first), so consecutive small reads
    // of one chunk do not re-read and re-hash it from the chunk store. 0 disables.
    size_t memory_cache_bytes = 8 << 20;
  };

  // `index` must be an eStargz or zstd:chunked index (chunks with blob ranges). `source`
  // serves the blob index->layer_digest; `chunks` is shared by every layer of every mount.
  LazyLayerReader(std::shared_ptr<registry::BlobSource> source,
                  std::shared_ptr<const LayerIndex> index,
                  std::shared_ptr<cache::ChunkStore> chunks);
  LazyLayerReader(std::shared_ptr<registry::BlobSource> source,
                  std::shared_ptr<const LayerIndex> index,
                  std::shared_ptr<cache::ChunkStore> chunks, Options options);
  LazyLayerReader(const LazyLayerReader&) = delete;
  LazyLayerReader& operator=(const LazyLayerReader&) = delete;

  // Up to `length` bytes of regular file `entry` (an entry of this layer's index) from
  // `offset`; fewer at the end of the file, "" at or beyond it. InvalidArgument for entries
  // that are not regular files.
  Result<std::string> Read(const FileEntry& entry, uint64_t offset, size_t length) override;

  // Chunks decoded from fetched blob bytes, and ranged-read batches issued (tests, stats).
  uint64_t chunks_fetched() const { return chunks_fetched_.load(std::memory_order_relaxed); }
  uint64_t fetch_batches() const { return fetch_batches_.load(std::memory_order_relaxed); }

  const LayerIndex& index() const { return *index_; }

 private:
  using ChunkData = std::shared_ptr<const std::string>;
  using ChunkResult = Result<ChunkData>;

  // The bytes of chunks `ids` (indexes into index_->chunks), in that order.
  Result<std::vector<ChunkData>> GetChunks(const FileEntry& entry,
                                           const std::vector<uint32_t>& ids);
  // Completes (*results)[k] for each owned position owned[k] of `ids`: from the chunk store
  // or fetched.
  void FillOwned(const FileEntry& entry, const std::vector<uint32_t>& ids,
                 const std::vector<size_t>& owned, std::vector<ChunkResult>* results);
  // Fetches `ids` (with one retry), stores them, returns them in order.
  std::vector<ChunkResult> FetchOwned(const FileEntry& entry, const std::vector<uint32_t>& ids);
  std::string KeyOf(uint32_t id) const;
  ChunkData Recent(const std::string& key);
  void Remember(const std::string& key, const ChunkData& data);

  std::shared_ptr<registry::BlobSource> source_;
  std::shared_ptr<const LayerIndex> index_;
  std::shared_ptr<cache::ChunkStore> chunks_;
  Options options_;
  std::atomic<uint64_t> chunks_fetched_{0};
  std::atomic<uint64_t> fetch_batches_{0};

  // Leaf lock; never held across I/O.
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_future<ChunkResult>> inflight_;  // guarded by mu_
  struct RecentChunk {
    ChunkData data;
    std::list<std::string>::iterator lru;
  };
  std::list<std::string> lru_;                           // guarded by mu_; front = newest
  std::unordered_map<std::string, RecentChunk> recent_;  // guarded by mu_
  size_t recent_bytes_ = 0;                              // guarded by mu_
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FETCHER_H_
