// imgfs — IndexBuilder: one streaming pass over a tar, tar+gzip or tar+zstd layer blob that
// produces its LayerIndex (fs/layer/layer_index.h).
//
// The pass decompresses the blob according to its media type (gzip: multi-member; zstd:
// multi-frame, skippable frames skipped), runs registry::TarReader over the uncompressed
// stream and records, in tar order, one FileEntry per tar entry (`.wh.NAME` → kWhiteout of
// NAME, `.wh..wh..opq` → kOpaque of its directory, hardlinks → kHardlink with the target
// path). Regular files are cut into chunks of `chunk_size_bytes` whose sha256 is computed on
// the way; compressed layers get checkpoints every `span_bytes` of output (gzip_index.h,
// zstd_index.h). The sha256 of the blob and of the uncompressed stream are computed too and
// compared with the expected layer digest and diff_id when those are given.
//
// Memory stays bounded whatever the layer size: a few buffers, one decompressor and the
// growing index; the layer itself is never held in memory.
//
// Two ways to drive it:
//   - BuildFromFile / BuildFromFd: the complete blob is a local file (the pulled blob);
//   - Create + Feed(bytes)... + Finish(): push interface for indexing while a layer is being
//     downloaded. The pass runs on a worker thread owned by the builder, behind a bounded
//     queue (Feed blocks while more than kMaxQueuedBytes are waiting). An error found by the
//     pass is returned by the next Feed or by Finish.
//
// Errors: Corrupt for an invalid or truncated stream, an invalid tar (TarReader's rules: path
// escapes, absurd sizes...), or a digest / diff_id mismatch; the message names the layer
// (expected digest, else "layer") and the compressed or uncompressed offset. Unsupported for
// media types other than tar, tar+gzip, tar+zstd (and their Docker / non-distributable forms).
//
// Thread-safety: an IndexBuilder is used by one thread at a time (Feed and Finish from the
// same producer); the static functions are safe from any thread.
#ifndef IMGFS_FS_LAYER_INDEX_BUILDER_H_
#define IMGFS_FS_LAYER_INDEX_BUILDER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "cache/index_store.h"
#include "fs/layer/layer_index.h"
#include "registry/digest.h"

namespace imgfs::fs {

struct IndexOptions {
  // Chunk size of regular files: 1 MiB keeps a chunk fetch and its digest check cheap while
  // the chunk table of a 1 GiB layer stays ~1000 entries (stargz-snapshotter uses 4 MiB,
  // eStargz writers default to 4 MiB too; our dedup store prefers smaller pieces).
  uint64_t chunk_size_bytes = 1 << 20;
  // Checkpoint span: 4 MiB of output between gzip/zstd checkpoints is zran.c's and SOCI's
  // default; a 32 KiB window per span costs ~0.8 % of the data.
  uint64_t span_bytes = 4 << 20;
  registry::Digest expected_digest;   // verified when not empty; names the layer in errors
  registry::Digest expected_diff_id;  // verified when not empty
  // Whether LoadOrBuildIndex returns the chunk table (it always stores it): kSkip for a
  // local layer's mount, which reads through the checkpoints alone (LayerIndex::ChunkTable).
  LayerIndex::ChunkTable chunk_table = LayerIndex::ChunkTable::kKeep;
  // The same for the file table: kSkip for a mount whose merged tree is stored.
  LayerIndex::FileTable file_table = LayerIndex::FileTable::kKeep;
};

// The LayerFormat of a layer media type; Unsupported for anything but tar, tar+gzip, tar+zstd.
Result<LayerFormat> LayerFormatForMediaType(std::string_view media_type);

class IndexBuilder {
 public:
  // Bound on compressed bytes queued between Feed and the worker thread.
  static constexpr size_t kMaxQueuedBytes = 4 << 20;

  // Starts a push-mode pass. InvalidArgument for a zero chunk size or span.
  static Result<std::unique_ptr<IndexBuilder>> Create(std::string_view media_type,
                                                      IndexOptions options);
  // Stops the worker if Finish was not called (the partial result is dropped).
  ~IndexBuilder();
  IndexBuilder(const IndexBuilder&) = delete;
  IndexBuilder& operator=(const IndexBuilder&) = delete;

  // Hands the next bytes of the blob to the pass. Returns the pass's error if it failed.
  Status Feed(std::string_view bytes);
  // Marks the end of the blob, waits for the pass, returns the index. Call once.
  Result<LayerIndex> Finish();

  // One pass over the complete blob in `path` / readable from `fd` (read sequentially from
  // its current position; the fd is not owned), on the calling thread.
  static Result<LayerIndex> BuildFromFile(const std::string& path, std::string_view media_type,
                                          const IndexOptions& options = {});
  static Result<LayerIndex> BuildFromFd(int fd, std::string_view media_type,
                                        const IndexOptions& options = {});

 private:
  struct Shared;
  IndexBuilder(std::shared_ptr<Shared> shared);

  std::shared_ptr<Shared> shared_;
};

// The index of the layer `options.expected_digest` (REQUIRED: not empty) whose blob is the
// local file `blob_path`: loaded from `store` when present, decodable and itself built from
// that blob (IndexProvenance::kLayerBlob), otherwise built from the blob (whose sha256 the
// pass checks) and saved as kLayerBlob. A stale or damaged index, one built with other
// options or for another diff_id, and any index that came from the network (a TOC, a
// published index) is rebuilt and replaced: once a layer's bytes are in the store, its file
// table is the one those bytes give.
// The IndexStore key `index` is kept under, from its provenance: kLayerBlob → the layer's own
// index, kToc → (layer, TOC digest `origin`), kPublished → (layer, image manifest `subject`).
// InvalidArgument for kUnverified (never stored) or a missing origin / subject. For a reader
// that finds the index wrong and must drop it (IndexStore::Remove).
Result<cache::IndexKey> StoreKeyOf(const LayerIndex& index);

// `encoding`, when given, is set to EncodedIndexDigest of the stored index the result was
// decoded from or just written as.
Result<LayerIndex> LoadOrBuildIndex(cache::IndexStore& store, const std::string& blob_path,
                                    std::string_view media_type, const IndexOptions& options,
                                    registry::Digest* encoding = nullptr);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_INDEX_BUILDER_H_
