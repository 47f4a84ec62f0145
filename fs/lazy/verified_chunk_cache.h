// imgfs — VerifiedChunkCache: the recently verified, decoded chunks of one lazily read layer,
// kept in memory, shared by fs/lazy/fetcher.h (keyed by chunk digest) and
// fs/lazy/indexed_fetcher.h (keyed by chunk id).
//
// The kernel reads a file 128 KiB at a time while a chunk is often 1-4 MiB: without this
// cache every such read would load and decompress the chunk again from the chunk store.
// Entries are whole chunks, already verified by the caller; the cache only bounds their total
// size (`capacity_bytes`, least recently used out first) and never checks them again. A chunk
// larger than the whole capacity is not kept. Chunks are shared pointers, so an entry
// evicted while a reader still holds it stays alive for that reader.
//
// Thread-safety: every method may be called from any number of threads at once; the
// internal lock is a leaf (no other lock is taken under it).
#ifndef IMGFS_FS_LAZY_VERIFIED_CHUNK_CACHE_H_
#define IMGFS_FS_LAZY_VERIFIED_CHUNK_CACHE_H_

#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "base/mutex.h"
#include "base/thread_annotations.h"

namespace imgfs::fs {

template <class Key>
class VerifiedChunkCache {
 public:
  using ChunkData = std::shared_ptr<const std::string>;

  explicit VerifiedChunkCache(size_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}
  VerifiedChunkCache(const VerifiedChunkCache&) = delete;
  VerifiedChunkCache& operator=(const VerifiedChunkCache&) = delete;

  // The chunk remembered under `key` (now the most recently used), or null.
  ChunkData Find(const Key& key) {
    MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.data;
  }

  // Keeps `data` (verified by the caller) under `key`, evicting the least recently used
  // chunks beyond the capacity. A key already present keeps its first chunk.
  void Insert(const Key& key, const ChunkData& data) {
    if (data == nullptr || data->size() > capacity_bytes_) return;
    MutexLock lock(&mu_);
    if (entries_.count(key) > 0) return;
    lru_.push_front(key);
    entries_.emplace(key, Entry{data, lru_.begin()});
    bytes_ += data->size();
    while (bytes_ > capacity_bytes_ && !lru_.empty()) {
      auto victim = entries_.find(lru_.back());
      bytes_ -= victim->second.data->size();
      entries_.erase(victim);
      lru_.pop_back();
    }
  }

  // Bytes of the chunks held now (at most the capacity).
  size_t bytes() {
    MutexLock lock(&mu_);
    return bytes_;
  }

 private:
  struct Entry {
    ChunkData data;
    typename std::list<Key>::iterator lru;
  };

  const size_t capacity_bytes_;
  Mutex mu_;
  std::list<Key> lru_ IMGFS_GUARDED_BY(mu_);  // front = most recently used
  std::unordered_map<Key, Entry> entries_ IMGFS_GUARDED_BY(mu_);
  size_t bytes_ IMGFS_GUARDED_BY(mu_) = 0;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_VERIFIED_CHUNK_CACHE_H_
