// imgfs — preparing an image for a mount: resolve it in the store (pulling it first when it
// is not there), load or build every layer's index, merge the layers, open the readers.
//
// Everything that can fail for a reason the user should hear about at `imgfs mount` time —
// a bad reference, an unreachable registry, a corrupt layer, a tar with `../` names — fails
// here, before anything is mounted, with a message naming the image and the layer.
//
// Thread-safety: PrepareImage may be called from any thread; it blocks on I/O.
#ifndef IMGFS_FS_MOUNT_MOUNT_H_
#define IMGFS_FS_MOUNT_MOUNT_H_

#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "cache/store.h"
#include "fs/core/filesystem.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/index_builder.h"
#include "fs/mount/layer_data.h"
#include "fs/tree/overlay.h"
#include "registry/digest.h"

namespace imgfs::fs {

struct PrepareOptions {
  // Pull the image when the store does not have it (like `docker run`).
  bool pull_if_missing = true;
  PullOptions pull;
  ProgressFn progress;
  IndexOptions index;
  // Lazy mount (the default of `imgfs mount` and `imgfs run`; `--pull` turns it off): a
  // missing image is recorded without its layers (PullOptions::metadata_only), unless it
  // comes from a local transport (oci:, oci-archive:, docker-archive:: copied whole);
  // an eStargz or zstd:chunked layer whose blob is not in the store is served from the
  // registry chunk by chunk (its TOC index is fetched once and kept in the IndexStore under
  // (layer digest, TOC digest), its chunks in the chunk store); a plain tar/gzip/zstd layer
  // with its own index in the store (built from its blob) or an imgfs index published for
  // this manifest (fs/convert/index_publish.h; kept under (layer digest, manifest digest))
  // is served by Range requests through its checkpoints (fs/indexed_fetcher.h); other
  // missing layers are fetched whole. An index from the network serves only the image (TOC
  // digest) it was found for; a layer whose blob is in the store is always read through the
  // index built from that blob (LoadOrBuildIndex). Each MountedLayer's index carries its
  // provenance (LayerIndex::provenance / origin / subject; StoreKeyOf gives its store key).
  // Not lazy: a missing image is pulled whole, and a layer the store lacks (an image recorded
  // by an earlier lazy mount) is fetched whole before the mount. Either way, layers in the
  // store are read from there. fs/mount/layer_data.h opens each kind of layer.
  bool lazy = false;
  // Lazy mounts: an uncached read that cannot be fetched within this time fails with EIO
  // (`--fetch-timeout`); 0 means the built-in default.
  double fetch_timeout_seconds = 0;
  // Lazy mounts: what is fetched in the background after the mount (`--prefetch`):
  // nothing, the eStargz landmark files (one request per layer; on every mount, also one
  // from a stored index: the landmark is kept beside it, cache/index_store.h), or all
  // remaining data.
  enum class Prefetch { kNone, kLandmarks, kAll };
  Prefetch prefetch = Prefetch::kLandmarks;
  // Lazy mounts: an eStargz / zstd:chunked layer without the annotation that verifies its TOC
  // (found by one Range request for the footer of each unindexed tar+gzip/zstd layer) is
  // fetched whole, unless this is set (`--insecure-skip-toc-verify`): then its TOC is loaded
  // unverified and the layer is served lazily (each chunk still checked by its TOC digest).
  bool insecure_skip_toc_verify = false;
};

struct PreparedImage {
  std::unique_ptr<ImageFilesystem> filesystem;
  registry::Digest manifest_digest;
  registry::Digest image_id;  // config digest
  std::string reference;      // full reference of the record, "" when named by ID
  MergeStats merge_stats;
  size_t indexes_built = 0;  // layers whose index was not in the store yet
  size_t lazy_layers = 0;    // layers served on demand from the registry
  bool tree_stored = false;  // the merged tree came from the store (fs/tree/stored_tree.h)
  // Frees the layers' file tables, makes the indexes this mount kept durable and stores the
  // merged tree, in the background (joined when destroyed).
  std::unique_ptr<BackgroundCleanup> cleanup;
};

// Resolves `text` (a reference, image ID, or a transport like oci:DIR:TAG) and prepares it.
Result<PreparedImage> PrepareImage(cache::Store& store, std::string_view text,
                                   const PrepareOptions& options);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_MOUNT_MOUNT_H_
