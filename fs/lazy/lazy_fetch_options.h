// imgfs — LazyFetchOptions and the streaming switch: the policy both lazy readers share
// (fs/lazy/fetcher.h over eStargz / zstd:chunked chunks, fs/lazy/indexed_fetcher.h over
// checkpoint pieces of plain layers). Each reader's Options extends LazyFetchOptions with
// what only its format has.
//
// Streaming switch (ShouldStream): reading most of a layer range by range costs a round trip
// per range; one streamed GET of the rest costs one. A reader switches once
// stream_after_fraction of the layer's compressed bytes is present, or once the read-ahead
// window ran at its cap stream_after_full_windows times (a long sequential read), or at once
// when the source answers ranges with the whole blob (BlobSource::ignores_ranges()).
//
// Thread-safety: plain values and a pure function.
#ifndef IMGFS_FS_LAZY_LAZY_FETCH_OPTIONS_H_
#define IMGFS_FS_LAZY_LAZY_FETCH_OPTIONS_H_

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "fs/lazy/readahead.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

struct LazyFetchOptions {
  // How long a Read waits for its data before failing with Unavailable. 30 s: longer than a
  // healthy registry ever needs for one 8 MiB request, short enough that a program reading an
  // image whose registry vanished gets EIO instead of appearing hung.
  std::chrono::milliseconds fetch_timeout{30000};
  // Requests in flight per layer. 4: enough to fill a 200 Mbit/20 ms link with 1–8 MiB
  // requests (bandwidth-delay product 500 KB) while leaving the registry room for others.
  int max_parallel_fetches = 4;
  // Read-ahead window (compressed bytes), doubled on sequential reads (mountpoint-s3 starts
  // at 1–8 MiB and caps at 2 GiB; 64 MiB bounds what one layer holds in flight).
  bool readahead = true;
  uint64_t readahead_min_bytes = 1 << 20;
  uint64_t readahead_max_bytes = 64 << 20;
  // Largest single ranged request of a task (memory of one in-flight task).
  uint64_t max_request_bytes = 8 << 20;
  // Streaming switch (see above). 0.5: past half the layer, the rest is likely wanted too
  // and one stream beats any number of ranges.
  bool streaming = true;
  double stream_after_fraction = 0.5;
  int stream_after_full_windows = 2;
  // Verified chunks kept in memory (fs/lazy/verified_chunk_cache.h), so consecutive small
  // reads of one chunk do not decode and hash it again. 0 disables. An indexed layer keeps
  // as much again of decoded blocks (its sparse copy's LayerReader cache, at least one
  // block). A mount sets it to the layer's share of its budget (fs/mount/layer_data.h).
  size_t memory_cache_bytes = 8 << 20;
};

// Whether a reader should switch to streaming now (see above): `present_bytes` of the
// layer's `total_bytes` are present; `window` is the reader's read-ahead window.
inline bool ShouldStream(const LazyFetchOptions& options, uint64_t present_bytes,
                         uint64_t total_bytes, const ReadAheadWindow& window,
                         const registry::BlobSource& source) {
  if (!options.streaming) return false;
  return static_cast<double>(present_bytes) >=
             options.stream_after_fraction * static_cast<double>(total_bytes) ||
         window.full_windows() >= options.stream_after_full_windows || source.ignores_ranges();
}

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_LAZY_FETCH_OPTIONS_H_
