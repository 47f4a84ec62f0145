// imgfs — imgfs indexes published beside an image: `imgfs index build|push`.
//
// A plain tar / tar+gzip / tar+zstd layer is lazily mountable once its LayerIndex (the file
// table, chunk digests and decompression checkpoints, fs/layer/layer_index.h) is known: a
// mount then reads files by Range requests like an eStargz one. `index build` makes those
// indexes for an image of the store (cache/index_store.h keeps them); `index push` publishes
// them for everyone as an OCI artifact that refers to the image (image-spec manifest.md
// "subject", distribution-spec "Listing Referrers"):
//
//   manifest  mediaType application/vnd.oci.image.manifest.v1+json
//             artifactType application/vnd.imgfs.index.v1
//             config   the empty descriptor (application/vnd.oci.empty.v1+json, "{}")
//             layers   one per indexed layer: mediaType
//                      application/vnd.imgfs.layer-index.v1+zstd, the LayerIndex encoding
//                      (versioned, checksummed) as one zstd frame — its paths and fields
//                      compress to about half, which a lazy mount fetches before its first
//                      byte — annotated io.imgfs.layer.digest = the image layer it describes
//                      (application/vnd.imgfs.layer-index.v1, the encoding itself, is what
//                      imgfs published before, and is still read)
//             subject  the image manifest
//
// pushed by digest (a registry with the referrers API lists it under the image manifest),
// and, for registries without that API, added to the referrers tag schema's index: the tag
// `sha256-<hex of the image manifest digest>` names an OCI index of the referrers (read,
// extended, written back; an older imgfs index of the same image is replaced).
// FindPublishedIndexes finds it through the referrers API (BlobSource::ListReferrers) or,
// when the registry has none (404) or the source is not a registry, through that tag, and
// returns the decoded indexes (the artifact's index blobs fetched in parallel, each decoded
// as it arrives; a zstd one decompressed to at most 256 MiB), each checked to be chained to
// the subject: the artifact's digest is the one listed, its `subject` is the image manifest,
// each index blob's digest is the artifact's descriptor of it (FetchBlob verifies), and the
// decoded index (whose own checksum LayerIndex::Decode verifies) describes the layer the
// annotation names.
//
// Layers that are eStargz / zstd:chunked (their TOC already does this) are not indexed.
//
// Thread-safety: functions are stateless; one call per thread (FindPublishedIndexes runs
// threads of its own, joined before it returns; the BlobSource must be thread-safe, as its
// contract says).
#ifndef IMGFS_FS_IMAGE_OPS_INDEX_PUBLISH_H_
#define IMGFS_FS_IMAGE_OPS_INDEX_PUBLISH_H_

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "cache/store.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/layer_index.h"
#include "registry/blob_source.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/push.h"

namespace imgfs::fs {

inline constexpr std::string_view kImgfsIndexArtifactType = "application/vnd.imgfs.index.v1";
inline constexpr std::string_view kImgfsLayerIndexMediaType =
    "application/vnd.imgfs.layer-index.v1";
inline constexpr std::string_view kImgfsLayerIndexZstdMediaType =
    "application/vnd.imgfs.layer-index.v1+zstd";
inline constexpr std::string_view kImgfsIndexLayerAnnotation = "io.imgfs.layer.digest";

struct ImageIndexes {
  std::string reference;          // the store record's reference ("" when named by ID)
  registry::Descriptor manifest;  // the image manifest (the artifact's subject)
  struct Layer {
    registry::Descriptor layer;  // the image layer
    std::string encoded;         // LayerIndex::Encode()
    size_t files = 0;
    size_t checkpoints = 0;
  };
  std::vector<Layer> layers;  // indexable layers, in manifest order
  size_t skipped = 0;         // eStargz / zstd:chunked layers
};

// Builds (or loads from the store's indexes/) the index of every plain layer of the image
// `text` names. Pulls the image when it is missing or lacks layer blobs (if pull_if_missing).
Result<ImageIndexes> BuildImageIndexes(cache::Store& store, std::string_view text,
                                       const PullOptions& pull, bool pull_if_missing);

// The artifact for `indexes`: manifest bytes and digest, and every blob it names.
struct IndexArtifact {
  std::string manifest_bytes;
  registry::Descriptor descriptor;  // of the artifact manifest (with artifactType)
  std::map<registry::Digest, std::string> blobs;
  registry::Manifest manifest;
};
IndexArtifact MakeIndexArtifact(const ImageIndexes& indexes);

// "sha256-<hex>" for the referrers tag schema.
std::string ReferrersTag(const registry::Digest& subject);

// Pushes the artifact to `repository` at `registry_host` (where the image is) and updates
// the referrers tag there. `source` reads that same repository (for the current tag index).
// Returns the artifact manifest digest.
Result<registry::Digest> PushImageIndexes(const ImageIndexes& indexes,
                                          const std::string& registry_host,
                                          const std::string& repository,
                                          const registry::PushOptions& options,
                                          registry::BlobSource& source);

// Descriptors of the imgfs index artifacts referring to `subject`: the referrers API when
// `source` has it (BlobSource::ListReferrers), else the referrers tag (both are asked at
// once, on a thread of this call). Empty when none.
Result<std::vector<registry::Descriptor>> ListImgfsReferrers(registry::BlobSource& source,
                                                             const registry::Digest& subject);

// The published indexes of image manifest `subject` in `source`'s repository, by layer
// digest; *artifact (when not null) gets the digest of the artifact manifest they came from.
// NotFound when none is published; Corrupt when one does not decode or names another layer.
//
// Trust: the chain above proves only that someone who could push to the repository published
// these indexes for `subject`; nothing binds their file tables to the layers' bytes. The
// indexes are returned as decoded (their provenance field says whatever the publisher
// wrote); a caller that uses them stamps them IndexProvenance::kPublished with `subject` and
// the artifact, and uses them only for lazy mounts of `subject` (fs/mount.cc).
Result<std::map<registry::Digest, LayerIndex>> FindPublishedIndexes(
    registry::BlobSource& source, const registry::Digest& subject,
    registry::Digest* artifact = nullptr);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_IMAGE_OPS_INDEX_PUBLISH_H_
