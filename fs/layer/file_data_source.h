// imgfs — FileDataSource: where a mounted layer's file data comes from.
//
// Three implementations: LocalLayerData (a complete local blob, below), the chunk reader of
// eStargz / zstd:chunked layers (fs/lazy/fetcher.h) and the indexed reader of plain layers
// with a stored or published index (fs/lazy/indexed_fetcher.h). The filesystem core and the
// lazy readers meet at this interface, so neither depends on the other.
#ifndef IMGFS_FS_LAYER_FILE_DATA_SOURCE_H_
#define IMGFS_FS_LAYER_FILE_DATA_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/byte_slices.h"
#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "fs/layer/layer_reader.h"

namespace imgfs::fs {

// Where a layer's file data comes from: the complete local blob (LayerReader) or, for a
// lazily mounted eStargz / zstd:chunked layer, chunks fetched on demand (fs/lazy/fetcher.h).
// Read has LayerReader::Read's contract. Implementations are thread-safe.
// Fetch counters of one layer, for `imgfs stats` (all zero for a complete local blob).
struct LayerStats {
  bool lazy = false;            // served from the registry on demand
  uint64_t blob_size = 0;       // compressed size of the layer blob
  uint64_t bytes_fetched = 0;   // bytes received from the registry (TOCs included)
  uint64_t requests = 0;        // HTTP requests sent for this layer
  uint64_t chunks_fetched = 0;  // chunks fetched and verified
  uint64_t cache_hits = 0;      // chunk reads served from memory or the chunk store
  uint64_t errors = 0;          // reads that failed (EIO)
};

// The counters behind LayerStats, kept by a lazy reader while it runs. Each is bumped with
// relaxed atomics from any thread; Snapshot reads them (not as one atomic whole: `imgfs stats`
// shows a moment's counts, not a transaction).
struct LayerCounters {
  std::atomic<uint64_t> bytes_fetched{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> chunks_fetched{0};
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> errors{0};

  // The counts now, as the LayerStats of a lazy layer of `blob_size` compressed bytes.
  LayerStats Snapshot(uint64_t blob_size) const {
    LayerStats s;
    s.lazy = true;
    s.blob_size = blob_size;
    s.bytes_fetched = bytes_fetched.load(std::memory_order_relaxed);
    s.requests = requests.load(std::memory_order_relaxed);
    s.chunks_fetched = chunks_fetched.load(std::memory_order_relaxed);
    s.cache_hits = cache_hits.load(std::memory_order_relaxed);
    s.errors = errors.load(std::memory_order_relaxed);
    return s;
  }
};

// A regular file of a layer as the filesystem asks for it (from its merged node): `entry`, its
// position in the layer's LayerIndex::entries (a hardlink's: the linked entry's); `size` and
// `payload_offset`, where its bytes are in the uncompressed tar stream. A local layer's index
// keeps no entries once merged (LayerIndex::DropEntries), so LocalLayerData reads by the place
// alone; the lazy readers keep their entries and look `entry` up.
struct FileRef {
  uint32_t entry = 0;
  uint64_t size = 0;
  uint64_t payload_offset = 0;
};

// The entry `file` names in `index` (for readers that keep their entries): InvalidArgument when
// there is no such entry.
inline Result<const FileEntry*> EntryOf(const LayerIndex& index, const FileRef& file) {
  if (file.entry >= index.entries.size()) {
    return Status::InvalidArgument("no entry " + std::to_string(file.entry) + " in the index of " +
                                   index.layer_digest.String());
  }
  return &index.entries[file.entry];
}

class FileDataSource {
 public:
  virtual ~FileDataSource() = default;
  // Up to `length` bytes of `file` from `offset`, as LayerReader::Read. InvalidArgument when
  // `entry` is not a regular file of this layer's index (readers that keep entries).
  virtual Result<std::string> Read(const FileRef& file, uint64_t offset, size_t length) = 0;
  // The same bytes in place where the source keeps them (no gathering copy); by default the
  // string Read returns.
  virtual Result<ByteSlices> ReadSlices(const FileRef& file, uint64_t offset, size_t length) {
    IMGFS_ASSIGN_OR_RETURN(std::string data, Read(file, offset, length));
    return ByteSlices::Of(std::move(data));
  }
  virtual LayerStats Stats() const { return {}; }
};

// FileDataSource over a complete local blob.
class LocalLayerData : public FileDataSource {
 public:
  explicit LocalLayerData(std::unique_ptr<LayerReader> reader) : reader_(std::move(reader)) {}
  Result<std::string> Read(const FileRef& file, uint64_t offset, size_t length) override {
    return reader_->ReadFile(file.payload_offset, file.size, offset, length);
  }
  Result<ByteSlices> ReadSlices(const FileRef& file, uint64_t offset, size_t length) override {
    return reader_->ReadFileSlices(file.payload_offset, file.size, offset, length);
  }

 private:
  std::unique_ptr<LayerReader> reader_;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_FILE_DATA_SOURCE_H_
