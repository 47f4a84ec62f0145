// imgfs — disk use of the store, garbage collection and the size cap (`imgfs cache
// du|gc|prune|set`).
//
// What the store holds (docs/FORMATS.md "Local store"): blobs/sha256 (manifests, configs,
// layers), indexes/<layer hex>.idx (derived per-layer file tables; beside them each image's
// merged tree, indexes/<manifest hex>.tree, reached through its manifest), chunks/xx/<hex> (the
// chunk dedup store filled by lazy mounts), containers/ (writable upper layers) and small
// metadata (index.json, locks, leases, sockets, tmp/, directories).
//
// Accounting (ScanUsage). Each file of blobs/, indexes/ and chunks/ is attributed to the
// images that reach it: an image reaches its manifests, the index its tag resolved to (when
// stored), its config, its layer blobs, the indexes of its layers and every chunk those
// indexes name. A file reached by one image is that image's unique data; one reached by
// several is shared (counted once in StoreUsage::shared_bytes); one reached by none is
// unreferenced. So, exactly:
//     sum(unique_bytes) + shared_bytes + unreferenced_bytes() == blob + index + chunk bytes
//     blob + index + chunk + containers + metadata bytes == total_bytes
// and total_bytes is what `du -sb ROOT` prints for a store nobody is writing to (every
// directory entry's apparent size, hard links counted once; like `du -x`, filesystems
// mounted inside the store — a running container's rootfs — are not counted). "metadata"
// is the slack: directories themselves, index.json, oci-layout, imgfs.json, config.json,
// lock files, leases, control sockets, tmp/ and stray temporary files (a few KiB plus
// 4 KiB per directory on ext4).
//
// Pins. A live mount (its lease, cache/leases.h) and a container (containers/<name>/
// container.json, whose "image" field is a manifest digest) pin their image: GC and prune
// never delete a file a pinned image reaches, and RemoveImage refuses a container's image
// unless forced (even then its files stay until the container is gone).
//
// Chunk references. The layer index encoding belongs to fs/ (fs/layer/layer_index.h), which
// cache/ must not include, so the caller passes an IndexChunkLister that decodes an index and
// lists its chunk digests. Without one, chunks are counted as unreferenced in ScanUsage and
// never deleted by GC (prune may still evict them: a lazy mount refetches a missing chunk).
//
// Crash safety. Deletion never leaves a reference to a missing file behind it: index.json
// entries go first (atomic rewrite), then unreferenced image indexes, then manifests, then
// the other blobs they named, then indexes of layers no image has, then chunks no remaining index
// names. The one intended exception is prune's eviction of lazily mountable layer blobs: the
// image then looks like one recorded by `pull --lazy` (its manifest names a layer the store
// does not hold), which lazy mounts serve from the registry and `imgfs pull` completes.
// GC and prune hold the exclusive gc.lock (waiting for running pulls) and index.lock.
//
// Last use. An image's last use is the modification time of its manifest blob: set when it
// was first written, and refreshed by TouchImage on every mount and pull. Chunks record
// their own last use in their mtime (cache/chunk_store.h refreshes it on reads).
//
// Thread-safety: stateless functions over a Store; safe from any thread and process.
#ifndef IMGFS_CACHE_USAGE_H_
#define IMGFS_CACHE_USAGE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/images.h"
#include "cache/store.h"
#include "registry/digest.h"

namespace imgfs::cache {

// Decodes one stored layer index (the bytes IndexStore::Get returned) and lists the chunk
// digests it names (empty digests omitted). An error means "unknown": the index's chunks are
// then neither attributed nor kept because of it.
using IndexChunkLister =
    std::function<Result<std::vector<registry::Digest>>(std::string_view encoded)>;

struct UsageOptions {
  IndexChunkLister chunk_lister;  // may be empty (see the file comment)
};

struct ImageUsage {
  registry::Digest id;        // config digest (the manifest digest when it is unreadable)
  registry::Digest manifest;  // the image's (first) manifest
  // Familiar references of its index.json entries ("alpine:3.20"); empty: <none>.
  std::vector<std::string> names;
  int64_t size_bytes = 0;    // every stored file the image reaches
  int64_t shared_bytes = 0;  // of those, the ones another image reaches too
  int64_t unique_bytes = 0;  // size_bytes - shared_bytes
  int64_t blob_bytes = 0;    // size_bytes split by kind
  int64_t index_bytes = 0;
  int64_t chunk_bytes = 0;
  int64_t image_bytes = 0;  // config + layer sizes from the manifest (what `images` shows)
  bool complete = true;     // every layer blob is stored (false after `pull --lazy`)
  std::string last_used;    // RFC 3339 UTC (manifest blob mtime); "" when unknown
  int64_t last_used_unix = 0;
  // What pins it: "mount /mnt/x", "container NAME". Empty: unpinned.
  std::vector<std::string> pinned_by;
  bool recorded = true;  // false: only a live lease keeps it (removed with rm -f)
};

struct StoreUsage {
  std::vector<ImageUsage> images;  // most recently used first
  int64_t shared_bytes = 0;        // files reached by several images, each counted once
  int64_t unreferenced_blob_bytes = 0;
  int64_t unreferenced_blobs = 0;
  int64_t unreferenced_index_bytes = 0;
  int64_t unreferenced_indexes = 0;
  int64_t unreferenced_chunk_bytes = 0;
  int64_t unreferenced_chunks = 0;
  int64_t blob_bytes = 0;  // blobs/sha256/* regular files
  int64_t blobs = 0;
  int64_t index_bytes = 0;  // indexes/*.idx and indexes/*.tree
  int64_t indexes = 0;
  int64_t chunk_bytes = 0;  // chunks/xx/<64 hex>
  int64_t chunks = 0;
  int64_t container_bytes = 0;  // containers/ (whole tree)
  // Of containers/: directories nobody will use again (cache/containers.h "Owners and
  // abandoned directories": temporary uppers of killed mount daemons, half-created
  // containers, interrupted removals). GC deletes them.
  int64_t abandoned_containers = 0;
  int64_t abandoned_container_bytes = 0;
  // containers/<entry> → bytes of that entry's tree (containers, temporary uppers, debris).
  std::map<std::string, int64_t> container_entry_bytes;
  // What the pinned images (a live mount, a container) reach, each file once: no image prune
  // or GC frees it while they are pinned.
  int64_t pinned_blob_bytes = 0;  // blobs/ and indexes/
  int64_t pinned_chunk_bytes = 0;
  int64_t pinned_chunks = 0;
  int64_t metadata_bytes = 0;  // everything else (see the file comment)
  int64_t total_bytes = 0;     // du -sb ROOT

  int64_t unreferenced_bytes() const {
    return unreferenced_blob_bytes + unreferenced_index_bytes + unreferenced_chunk_bytes;
  }
};

// Scans the store (no lock held: a concurrent writer may make the numbers a moment stale).
Result<StoreUsage> ScanUsage(const Store& store, const UsageOptions& options = {});

// `du -sb`-style apparent size of everything under the store root (cheap enough for the
// background cap check: one stat per file).
Result<int64_t> StoreSizeBytes(const Store& store);

// Manifest digests of the containers in containers/<name>/container.json ("image"), by
// container name. Unreadable files are skipped with a log line.
std::vector<std::pair<std::string, registry::Digest>> ContainerImages(const Store& store);

// GC as CollectGarbage (cache/images.h) plus unreferenced indexes and — with a chunk lister —
// chunks no kept index names, container images kept, stale control sockets removed, and the
// abandoned directories of containers/ deleted (RemoveAbandonedContainerDirs; not counted in
// GcReport, whose bytes_freed covers blobs, indexes and chunks).
Result<GcReport> CollectGarbage(Store& store, const UsageOptions& options);

struct PruneReport {
  int64_t before_bytes = 0;  // store size before (after the initial GC)
  int64_t after_bytes = 0;
  int64_t chunks_deleted = 0;
  int64_t chunk_bytes_freed = 0;
  int64_t layers_evicted = 0;  // lazily mountable layer blobs deleted
  int64_t layer_bytes_freed = 0;
  std::vector<std::string> images_removed;  // names (or short IDs) of removed images
  int64_t image_bytes_freed = 0;
  GcReport gc;               // the initial garbage collection
  bool under_limit = false;  // after_bytes <= max_bytes
};

// Brings the store under `max_bytes` (store size as StoreSizeBytes counts it): first GC, then
// least recently used chunks, then blobs of lazily mountable layers (eStargz, zstd:chunked)
// of images that have a registry reference, least recently used image first, then whole
// unpinned images, least recently used first. Never touches what a pinned image reaches.
// under_limit is false when pinned data alone exceeds the limit.
Result<PruneReport> Prune(Store& store, int64_t max_bytes, const UsageOptions& options = {});

// Marks `manifest` as used now (its blob's mtime). OK when the blob is absent.
Status TouchImage(const Store& store, const registry::Digest& manifest);

// STORE/config.json: {"max_size": BYTES, "prune_interval_seconds": N}.
struct CacheConfig {
  std::optional<int64_t> max_size_bytes;  // the size cap; none when unset
  int prune_interval_seconds = 60;        // how often each mount daemon checks the cap
};
inline constexpr std::string_view kCacheConfigFile = "config.json";
// A missing file is the default config; Corrupt when it is not a JSON object.
Result<CacheConfig> LoadCacheConfig(const Store& store);
// Atomic write.
Status SaveCacheConfig(const Store& store, const CacheConfig& config);

// "20G", "500M", "1.5GiB", "4096", "10kB": decimal units k/K/KB, M/MB, G/GB, T/TB (powers of
// 1000, like the sizes imgfs prints) and binary Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB; "B" or no
// unit is bytes. InvalidArgument for anything else (negative, empty, unknown unit).
Result<int64_t> ParseSize(std::string_view text);

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_USAGE_H_
