// imgfs — opening the layers of an image for a mount: for each layer, its file table
// (LayerIndex) and the FileDataSource its file data is read through, whatever kind of layer
// it is:
//   local       its blob is in the store: the index built from that blob (LoadOrBuildIndex,
//               kept in the IndexStore), data read from the blob file (LocalLayerData);
//   lazy TOC    eStargz / zstd:chunked, blob not in the store, lazy mount: the TOC index
//               (from the IndexStore, else footer + TOC by two Range requests, then kept),
//               data chunk by chunk from the registry (LazyLayerReader);
//   indexed     plain tar / tar+gzip / tar+zstd, blob not in the store, lazy mount, with an
//               index of its own in the store or one published for the image: data by Range
//               requests through its checkpoints (IndexedRemoteData);
//   whole       any other missing layer (and every missing layer of a mount that is not
//               lazy): fetched whole into the store (verified against its digest), then
//               opened as a local layer.
// The rules on which index may serve which layer (provenance, TOC digest, image manifest)
// are in PrepareOptions::lazy (fs/mount/mount.h) and cache/index_store.h.
//
// OpenAll opens every layer of an image at once on up to kMaxParallelLayers threads, so a
// lazy mount waits for the round trips of its slowest layer instead of the sum over layers.
// Its answer does not depend on the interleaving: all layers, or the error of the lowest
// layer that failed.
//
// Thread-safety: OpenLayerData may run for several layers at once (OpenAll does that); the
// opener is otherwise read-only, apart from the lookup of published indexes (done once, by
// the first layer that needs it; the others wait for it) and the progress callback (called
// under a lock, one call at a time).
#ifndef IMGFS_FS_MOUNT_LAYER_DATA_H_
#define IMGFS_FS_MOUNT_LAYER_DATA_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "cache/chunk_store.h"
#include "cache/index_store.h"
#include "cache/store.h"
#include "fs/core/filesystem.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/index_builder.h"
#include "fs/layer/layer_index.h"
#include "fs/lazy/fetcher.h"
#include "fs/lazy/indexed_fetcher.h"
#include "fs/tree/overlay.h"
#include "fs/tree/stored_tree.h"
#include "registry/blob_source.h"
#include "registry/digest.h"
#include "registry/manifest.h"

namespace imgfs::fs {

// 16 MiB: a 4-layer image gets 4 MiB per layer (sixteen 256 KiB blocks). With it, reading
// all of a 6-layer image of 144 MiB peaked at 47 MB of daemon RSS (32 MiB budget: 61 MB).
inline constexpr size_t kDefaultCacheBudgetBytes = 16 << 20;
// One layer's floor: four 256 KiB blocks, so sequential reads still hit the cache.
inline constexpr size_t kMinLayerCacheBytes = 1 << 20;

struct LayerOpenerOptions {
  cache::Store* store = nullptr;           // not owned; outlives the opener and the opened layers
  std::string image;                       // the user's text, for messages
  registry::Digest manifest;               // the image manifest: which published indexes fit it
  std::vector<registry::Digest> diff_ids;  // from the config; empty when it has none
  // The registry repository of the image's blobs; null when it could not be opened (or the
  // image has no registry reference): a layer whose blob is missing then fails with
  // `source_error`.
  std::shared_ptr<registry::BlobSource> source;
  Status source_error;
  // Shared by every lazy layer (chunks of eStargz / zstd:chunked and indexed layers).
  std::shared_ptr<cache::ChunkStore> chunks;
  // Lazy mount: missing layers are read on demand where they can be. Otherwise each
  // missing layer is fetched whole.
  bool lazy = true;
  bool insecure_skip_toc_verify = false;  // see PrepareOptions
  IndexOptions index;                     // for indexes built from local blobs
  LazyFetchOptions fetch;                 // the lazy readers' shared policy
  // Memory for every layer's caches together (decoded blocks of local layers, verified
  // chunks and decoded blocks of lazy ones): each layer gets an equal share, at least
  // kMinLayerCacheBytes, so the daemon's memory does not grow with the layer count.
  size_t cache_budget_bytes = kDefaultCacheBudgetBytes;
  // Called for whole-layer fetches, one call at a time (from any of OpenAll's threads).
  ProgressFn progress;
};

// One opened layer.
struct OpenedLayer {
  enum class Kind { kLocal, kLazyToc, kIndexed, kFetchedWhole };
  MountedLayer mounted;
  Kind kind = Kind::kLocal;
  bool index_built = false;  // its index was not in the store yet (TOC fetched or built)
  // EncodedIndexDigest of the stored index its file table comes from (read, or written now);
  // empty when the index is not kept (unverified, or verified against a digest that is not
  // sha256): a merged tree names its layers' indexes by it (fs/tree/stored_tree.h).
  registry::Digest index_encoding;
  // Background work for after the mount (non-owning; into `mounted.reader`):
  LazyLayerReader* toc_reader = nullptr;  // kLazyToc
  uint64_t landmark = 0;                  // kLazyToc: eStargz landmark offset, 0 = none
  IndexedRemoteData* indexed = nullptr;   // kIndexed
  // kLocal: the index of `mounted` (the same object), for LayerIndex::DropEntries once the
  // layers are merged: a local layer's data is read by the node's place in the tar stream.
  std::shared_ptr<LayerIndex> entries_droppable;
  // IndexStore files written for this layer without fsync (the mount was waiting for them):
  // for a BackgroundCleanup.
  std::vector<std::string> unsynced;
  // The layer's part of the merge, made on the thread that opened it (OpenAll with an
  // `in_order`, which merges): the merge proper, sequential, starts with less to do (~28
  // bytes an entry until it is done).
  MergeInput merge_input;

  // Read from a complete local blob (in the store, or fetched whole now), by the place of a
  // file in the tar stream; else lazily, by its entry in the file table.
  bool local() const { return kind == Kind::kLocal || kind == Kind::kFetchedWhole; }
};

// Appends to `out` the IndexStore files the openings of `layers` wrote without fsync
// (OpenedLayer::unsynced), in layer order.
void AppendUnsynced(const std::vector<OpenedLayer>& layers, std::vector<std::string>* out);

// What a prepared mount's first answer need not wait for, done on a thread of its own (the
// destructor waits for it): freeing the local layers' file tables, which the merged NodeTable
// replaces (~2 ms for 81 000 entries), then fsyncing the IndexStore files written with
// Durability::kUnsynced. Until those are synced a crash may leave such a file torn:
// IndexStore::Get or the decoder then says Corrupt and the next mount fetches the index
// again, it never serves it.
//
// And storing the merged tree of an image (fs/tree/stored_tree.h) from the table's records,
// which `owner` keeps alive after the table has gone.
struct TreeToStore {
  StoredTreeInfo info;
  NodeTable::Records records;
  std::shared_ptr<const void> owner;
};

class BackgroundCleanup {
 public:
  BackgroundCleanup(std::vector<std::vector<FileEntry>> spent_entries, cache::IndexStore store,
                    std::vector<std::string> unsynced,
                    std::optional<TreeToStore> tree = std::nullopt);
  ~BackgroundCleanup();
  BackgroundCleanup(const BackgroundCleanup&) = delete;
  BackgroundCleanup& operator=(const BackgroundCleanup&) = delete;

 private:
  std::thread thread_;
};

class LayerOpener {
 public:
  // Layers opened concurrently by OpenAll. 8: a typical image has 3–15 layers, a mount's
  // index loads are two small requests each (footer, TOC), and 8 connections to one registry
  // stay well under what registries allow per client; the rest queue behind them. Without a
  // source (every blob in the store) the opening is CPU work alone: then no more threads than the
  // process may use CPUs, so that the lower layers are open (and merge, `in_order`) while the upper
  // ones load, rather than all of them finishing together.
  static constexpr size_t kMaxParallelLayers = 8;

  explicit LayerOpener(LayerOpenerOptions options);
  LayerOpener(const LayerOpener&) = delete;
  LayerOpener& operator=(const LayerOpener&) = delete;

  // Opens layer `position` (0 = bottom) described by `desc` as the file comment says.
  // Errors name the image, the layer position and digest.
  Result<OpenedLayer> OpenLayerData(size_t position, const registry::Descriptor& desc);

  // Opens every layer of `layers` (bottom first), concurrently; the opened layers in the same
  // order, or the error of the lowest layer that failed (layers above a failed one may be
  // skipped). `in_order`, when set, is called on the calling thread with each opened layer,
  // bottom first, as soon as it and those below it are open, while the threads open the
  // others (the mount merges there); its error is OpenAll's, and no further layer is opened.
  using InOrder = std::function<Status(size_t position, OpenedLayer& layer)>;
  Result<std::vector<OpenedLayer>> OpenAll(const std::vector<registry::Descriptor>& layers,
                                           const InOrder& in_order = nullptr);

 private:
  // A layer whose blob is not in the store: opened lazily, or (nullopt) fetched whole into
  // the store (then opened by OpenLocal).
  Result<std::optional<OpenedLayer>> OpenMissing(size_t position, const registry::Descriptor& desc);
  Result<OpenedLayer> OpenLocal(size_t position, const registry::Descriptor& desc);
  Status FetchWhole(size_t position, const registry::Descriptor& desc);
  // The indexes published in the registry for options_.manifest (looked up on first use).
  const std::map<registry::Digest, LayerIndex>& Published();
  std::shared_ptr<const LayerIndex> PlainLazyIndex(const registry::Descriptor& desc,
                                                   std::vector<std::string>* unsynced,
                                                   registry::Digest* encoding);

  const LayerOpenerOptions options_;
  const cache::IndexStore index_store_;
  // Layers of the image, for progress reports and cache shares: set by OpenAll before its
  // threads start.
  size_t layer_count_ = 0;
  // One layer's share of options_.cache_budget_bytes.
  size_t CacheShare() const;

  std::once_flag published_once_;
  std::map<registry::Digest, LayerIndex> published_;  // written once under published_once_

  std::mutex progress_mu_;  // held only around options_.progress calls
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_MOUNT_LAYER_DATA_H_
