// imgfs — IndexedRemoteData: lazy reads of a plain tar / tar+gzip / tar+zstd layer through a
// published imgfs index (fs/convert/index_publish.h), by Range requests.
//
// The layer's blob is not in the store; its LayerIndex (file table, per-chunk sha256,
// decompression checkpoints: gzip inflate state + 32 KiB window every few MiB, zstd frame
// starts) is. A Read needs the uncompressed bytes of the chunks it overlaps (rounded to the
// LayerReader's cache blocks); those lie between checkpoint i (the last at or before them)
// and checkpoint j (the first at or after their end), so exactly the compressed span
// [checkpoint_i.offset - 1, checkpoint_j.offset + 1) is fetched (to the blob end after the
// last checkpoint; a plain tar needs only the bytes themselves), in requests of at most
// kMaxRequestBytes, missing parts only. The bytes are written at their own offsets into an
// unlinked sparse copy of the blob in STORE/tmp/, which an ordinary LayerReader (no parked
// decoders, so no decoder ever holds bytes read before they were fetched) decodes from the
// checkpoint. Fetched spans stay for the life of the mount (the page cache / disk, not RAM).
//
// Verification: every chunk a read returns is checked against its sha256 from the index
// (LayerReader::ReadChunk) before the read is answered; a mismatch is Corrupt (EIO). The
// layer digest itself cannot be checked without all of its bytes: this mode trusts the
// published index as far as its chain goes (the artifact's `subject` is the image manifest,
// the index blob's digest is the artifact's, the index names this layer and carries its own
// checksum — FindPublishedIndexes checks all of that) and every file byte against the
// index's chunk digests. Chunks without a digest (none are built by imgfs) are unverified.
//
// Thread-safety: Read and Stats may be called from any number of threads. fetch_mu_
// serialises the fetching (held across the range requests: two readers of the same span
// must not fetch it twice; one layer's misses are served one after another); state_mu_ is
// a leaf lock guarding the fetched-span map and verified-chunk bits.
#ifndef IMGFS_FS_INDEXED_FETCHER_H_
#define IMGFS_FS_INDEXED_FETCHER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "fs/filesystem.h"
#include "fs/layer/layer_index.h"
#include "fs/layer/layer_reader.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

class IndexedRemoteData : public FileDataSource {
 public:
  // Largest single Range request.
  static constexpr uint64_t kMaxRequestBytes = 8 << 20;

  // `index` (format tar, tar+gzip or tar+zstd) describes the blob index->layer_digest that
  // `source` serves. The sparse copy is created in `tmp_dir` (STORE/tmp) and unlinked at once.
  static Result<std::unique_ptr<IndexedRemoteData>> Create(
      std::shared_ptr<registry::BlobSource> source, std::shared_ptr<const LayerIndex> index,
      const std::string& tmp_dir);

  IndexedRemoteData(const IndexedRemoteData&) = delete;
  IndexedRemoteData& operator=(const IndexedRemoteData&) = delete;
  ~IndexedRemoteData() override;

  Result<std::string> Read(const FileEntry& entry, uint64_t offset, size_t length) override;
  LayerStats Stats() const override;

 private:
  IndexedRemoteData(std::shared_ptr<registry::BlobSource> source,
                    std::shared_ptr<const LayerIndex> index, UniqueFd fd,
                    std::unique_ptr<LayerReader> reader);

  // Compressed span [*begin, *end) holding uncompressed stream bytes [u0, u1).
  void SpanFor(uint64_t u0, uint64_t u1, uint64_t* begin, uint64_t* end) const;
  // Fetches what is missing of [begin, end) into the sparse copy.
  Status Ensure(uint64_t begin, uint64_t end);

  std::shared_ptr<registry::BlobSource> source_;
  std::shared_ptr<const LayerIndex> index_;
  UniqueFd fd_;  // the sparse copy, written here
  std::unique_ptr<LayerReader> reader_;
  uint64_t block_bytes_;

  std::mutex fetch_mu_;                   // serialises fetches; held across I/O (see above)
  mutable std::mutex state_mu_;           // leaf lock
  std::map<uint64_t, uint64_t> fetched_;  // guarded by state_mu_: begin → end, disjoint
  std::vector<bool> verified_;            // guarded by state_mu_: by chunk id
  std::atomic<uint64_t> bytes_fetched_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> chunks_verified_{0};
  std::atomic<uint64_t> errors_{0};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_INDEXED_FETCHER_H_
