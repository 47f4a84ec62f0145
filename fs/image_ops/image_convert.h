// imgfs — ConvertImage: `imgfs convert --format estargz|zstd:chunked SRC DEST`.
//
// Reads the image SRC from the store (pulling it first when it is missing or was pulled
// lazily without its layers, like a mount does), converts every layer with the lazy layer
// writers (fs/convert/layer_writer.h), and writes a new image: a config equal to the source
// config except `rootfs.diff_ids` (recomputed: the sha256 of each new layer's uncompressed
// stream), and an OCI image manifest whose layers carry the format's media type
// (`…tar+gzip` for eStargz, `…tar+zstd` for zstd:chunked) and annotations. Blobs go into the
// store (verified by the store's BlobWriter). DEST is then:
//   a registry reference ("host/repo:tag", also "docker://…")  recorded in the store's
//       index.json under that name (push it with `imgfs push`);
//   oci:DIR[:TAG]   written as an OCI layout (registry/push.h PushToOciLayout; TAG defaults to
//       "latest"); the store keeps the converted blobs until garbage collection.
// Other transports are Unsupported.
//
// Layers are converted one at a time through two temporary files in the store's tmp/ (the
// decompressed tar and the new blob), removed on every path; a store WriteGuard is held
// throughout so a concurrent `imgfs cache gc` does not take the new blobs before they are
// recorded. Every source layer's uncompressed stream is checked against the config's diff_id
// (Corrupt on a mismatch).
//
// Thread-safety: one call per thread; several processes may convert into one store.
#ifndef IMGFS_FS_IMAGE_OPS_IMAGE_CONVERT_H_
#define IMGFS_FS_IMAGE_OPS_IMAGE_CONVERT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/images.h"
#include "cache/store.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/layer_writer.h"
#include "registry/digest.h"
#include "registry/manifest.h"

namespace imgfs::fs {

struct ConvertOptions {
  LayerWriterOptions layer;
  // Pull SRC when the store does not have it (or lacks its layers).
  bool pull_if_missing = true;
  PullOptions pull;
  // Called after each layer is converted (index from 0, count).
  std::function<void(size_t index, size_t count, const WrittenLayer& layer)> on_layer;
};

struct ConvertedImage {
  std::string source_reference;   // what SRC resolved to ("" when named by ID)
  registry::Descriptor manifest;  // the new manifest (OCI), with the source's platform
  std::string manifest_bytes;
  registry::Digest config_digest;  // the new image ID
  std::vector<WrittenLayer> layers;
  std::string recorded_as;  // registry DEST: the full reference recorded in the store
};

// The image `text` names in the store; pulled first when it is missing, or completed with a
// full pull when it was recorded without its layer blobs (`pull --lazy`), if
// `pull_if_missing`. Shared by convert and `imgfs index`.
Result<cache::ResolvedImage> ResolveOrPullImage(cache::Store& store, std::string_view text,
                                                const PullOptions& pull, bool pull_if_missing);

Result<ConvertedImage> ConvertImage(cache::Store& store, std::string_view src,
                                    std::string_view dest, const ConvertOptions& options);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_IMAGE_OPS_IMAGE_CONVERT_H_
