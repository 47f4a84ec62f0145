// imgfs — RangeIgnoring<Source>: a test source whose registry answers every range with the
// whole blob (BlobSource::ignores_ranges()), so a lazy reader must stream the rest through
// StreamBlobRange — here BlobSource's default, Source::ReadBlobRange piece by piece.
// Thread-safety: as Source.
#ifndef IMGFS_TESTS_FS_RANGE_IGNORING_SOURCE_H_
#define IMGFS_TESTS_FS_RANGE_IGNORING_SOURCE_H_

#include <atomic>

#include "registry/blob_source.h"

namespace imgfs::fs {

template <class Source>
class RangeIgnoring : public Source {
 public:
  using Source::Source;
  bool ignores_ranges() const override { return true; }
  Status StreamBlobRange(const registry::Digest& digest, ByteRange range,
                         const registry::BlobSink& sink) override {
    streams.fetch_add(1);
    return registry::BlobSource::StreamBlobRange(digest, range, sink);
  }
  std::atomic<int> streams{0};  // StreamBlobRange calls
};

}  // namespace imgfs::fs

#endif  // IMGFS_TESTS_FS_RANGE_IGNORING_SOURCE_H_
