// imgfs — ChunkStore: the deduplicated store of uncompressed file chunks.
//
// Layout: ROOT/chunks/<first 2 hex>/<64 hex>, one file per chunk, named by the sha256 of its
// uncompressed bytes. The same chunk in two layers or two images is one file. Files are
// written atomically (temp file + rename, base/file_util.h WriteFileAtomic), so readers see a
// whole chunk or none, and several processes may share the store without locks: two writers
// of one chunk write the same bytes. They are not fsynced: after a power loss a chunk may be
// missing or truncated, which Get detects (below) and the reader fetches it again.
//
// Verification: Put refuses bytes that do not match the digest; Get re-hashes what it reads
// and treats a mismatch (a corrupt or truncated file) as absent: the file is deleted and
// NotFound returned, so the caller fetches the chunk again.
//
// Last use: a chunk file's mtime is when it was last read or written (refreshed by Get at
// most once a minute); `imgfs cache prune` evicts least recently used chunks first.
//
// Thread-safety: stateless apart from counters; every method may be called from any thread.
#ifndef IMGFS_CACHE_CHUNK_STORE_H_
#define IMGFS_CACHE_CHUNK_STORE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/digest.h"

namespace imgfs::cache {

class ChunkStore {
 public:
  // `root` is the store root (the chunks/ directory is created on the first Put).
  explicit ChunkStore(std::string root);

  // The file that holds (or would hold) chunk `digest`. `digest` must be a sha256 digest.
  std::string PathFor(const registry::Digest& digest) const;

  // The chunk's bytes, verified. NotFound when absent or when the stored file was corrupt
  // (it is then deleted); InvalidArgument for a digest that is not sha256; Io on read errors.
  Result<std::string> Get(const registry::Digest& digest);

  // Stores `data` as chunk `digest` (no-op when already present). Corrupt when `data` does not
  // hash to `digest`; InvalidArgument for a digest that is not sha256; Io/NoSpace on write.
  Status Put(const registry::Digest& digest, std::string_view data);

  // True when a file for `digest` exists (unverified).
  bool Has(const registry::Digest& digest) const;

  // Stored files found corrupt and deleted by Get (for tests and statistics).
  uint64_t corrupt_dropped() const { return corrupt_dropped_.load(std::memory_order_relaxed); }

 private:
  std::string dir_;  // ROOT/chunks
  std::atomic<uint64_t> corrupt_dropped_{0};
};

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_CHUNK_STORE_H_
