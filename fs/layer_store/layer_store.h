// imgfs — the Additional Layer Store of containers/storage (podman, CRI-O): a directory tree
// that a FUSE daemon serves and that containers/storage's overlay driver reads lazily pulled
// layers from (storage.conf: `additionallayerstores = ["DIR:ref"]`).
//
// The tree, as containers/storage looks it up (drivers/overlay: getAdditionalLayerPath,
// LookupAdditionalLayer, notifyUse/ReleaseAdditionalLayer):
//
//   DIR/<base64(image reference)>/<digest>/diff   the layer's own tree (not merged), with
//                                                  overlay-format whiteouts: a removed name is
//                                                  a 0/0 character device, an opaque directory
//                                                  has trusted.overlay.opaque and
//                                                  user.overlay.opaque = "y"
//   DIR/<base64(image reference)>/<digest>/info   JSON of containers/storage's Layer fields
//                                                  (LayerInfoJson)
//   DIR/<base64(image reference)>/<digest>/blob   the compressed layer, read on demand
//   DIR/<base64(image reference)>/<digest>/use    creating it takes a reference (ENOENT)
//   rmdir DIR/<base64(image reference)>/<digest>   drops a reference (ENOENT)
//
// Names are resolved on lookup, never listed from the root: the reference is the standard
// base64 of what containers/image passes (reference.Named.String(), e.g.
// "127.0.0.1:5000/lab/app:esgz"), the digest either the layer's TOC digest (what
// containers/storage ≥ 1.54 asks for) or its compressed digest (older ones, such as the
// 1.43 of Debian 12's podman 4.3.1). Only eStargz and zstd:chunked layers are served: a
// layer that cannot be read lazily is NotFound, so containers/storage pulls it itself.
//
// This module knows the tree and its layers; the FUSE adapter (fs/fuse/layer_store_ops.h)
// gives them inode numbers and answers the kernel.
//
// Thread-safety: every LayerStore method may be called from any number of threads. A layer
// being opened (network round trips) blocks only the lookups of that same layer.
#ifndef IMGFS_FS_LAYER_STORE_LAYER_STORE_H_
#define IMGFS_FS_LAYER_STORE_LAYER_STORE_H_

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_range.h"
#include "base/mutex.h"
#include "base/status.h"
#include "cache/store.h"
#include "fs/core/filesystem.h"
#include "fs/layer/layer_index.h"
#include "fs/layer_store/layer_references.h"
#include "registry/blob_source.h"
#include "registry/credentials.h"
#include "registry/digest.h"
#include "registry/manifest.h"

namespace imgfs::fs {

// Bounds on names from the kernel (any local user may look names up below the mount).
inline constexpr size_t kMaxRefElementBytes = 1400;  // base64 of a reference ≤ 1024 bytes
inline constexpr size_t kMaxDigestElementBytes = 200;

// The image reference a directory name of the root encodes: standard base64 (with padding)
// of a registry reference that parses and is not an image ID. InvalidArgument otherwise.
// The normalised reference text is returned.
Result<std::string> DecodeRefElement(std::string_view element);

// What the info file says (containers/storage's Layer JSON: compressed-diff-digest,
// compressed-size, diff-digest, toc-digest, compression, flags.expected-layer-diffid).
struct LayerInfo {
  registry::Digest compressed;
  int64_t compressed_size = 0;
  registry::Digest diff_id;  // from the image config; empty when unknown
  registry::Digest toc;      // empty when the layer has none
  enum class Compression { kGzip, kZstd } compression = Compression::kGzip;
  uint64_t diff_size = 0;  // 0 = unknown (then not written)
};
std::string LayerInfoJson(const LayerInfo& info);
// Parses an info file back (for tests and tools): Corrupt for anything that is not such a
// JSON object of at most 64 KiB (compressed-diff-digest included).
Result<LayerInfo> ParseLayerInfoJson(std::string_view json);

// `index` with overlay-format whiteouts: each `.wh.NAME` entry becomes a character device 0/0
// named NAME, each opaque marker sets trusted.overlay.opaque and user.overlay.opaque = "y" on
// its directory (an entry for it is added when the layer has none), and the layer's own
// trusted.overlay.* / user.overlay.* xattrs are dropped (only the store says what is opaque).
// Entry positions and chunks stay, so readers of the original index serve the result.
LayerIndex ToOverlayFormat(const LayerIndex& index);

// One layer of the store.
struct StoreLayer {
  std::unique_ptr<ImageFilesystem> diff;         // the diff/ tree (one layer, overlay format)
  std::string info;                              // the info file
  registry::Descriptor descriptor;               // the compressed layer
  std::shared_ptr<registry::BlobSource> source;  // where blob reads go
  registry::Digest manifest;                     // the image's manifest (what a reference pins)
  std::string reference;                         // the image's normalised reference
};

struct LayerStoreOptions {
  cache::Store* store = nullptr;  // not owned; outlives the LayerStore
  // Registry settings for pulls of image metadata and for layer reads.
  std::vector<std::string> insecure_registries;
  std::vector<std::string> ca_files;
  std::string creds;
  double fetch_timeout_seconds = 0;  // 0: the lazy readers' default
  // Where the store is mounted (absolute) and the process that owns its references
  // (fs/layer_store/layer_references.h; 0: this process).
  std::string mountpoint;
  pid_t reference_owner = 0;
};

class LayerStore {
 public:
  explicit LayerStore(LayerStoreOptions options);
  LayerStore(const LayerStore&) = delete;
  LayerStore& operator=(const LayerStore&) = delete;

  // The layer `digest_element` of the image `ref_element` (directory names as above),
  // opened on first use: the image's manifest and config are pulled into the store when it
  // lacks them (metadata only), the layer's TOC is read (or found in the store's indexes).
  // A digest the recorded manifest lacks makes the manifest be fetched again once (a tag
  // that moved in the registry).
  // NotFound when the image has no such layer, Unsupported when it is not eStargz /
  // zstd:chunked;
  // InvalidArgument for names that are not a reference / digest; the registry's error when
  // it cannot be reached. A failure is not remembered: the next lookup tries again.
  Result<std::shared_ptr<const StoreLayer>> Open(std::string_view ref_element,
                                                 std::string_view digest_element);

  // `use` created (+1) and the layer directory removed (-1): the references containers/
  // storage holds on the layer, recorded in the store as leases that pin the layer's image
  // (fs/layer_store/layer_references.h). Returns the count after the change. Use opens the
  // layer (Open's errors; NotFound too when the image left the store meanwhile). When
  // Release drops the last reference, the layer's in-memory state is freed: the next Open
  // loads it again (from the store's indexes).
  Result<int64_t> Use(std::string_view ref_element, std::string_view digest_element);
  int64_t Release(std::string_view ref_element, std::string_view digest_element);
  // The credential containers/image uses for `host` (fs/layer_store/auth_helper.h): from
  // now on the pulls and layer reads of images of that registry host use it (instead of
  // LayerStoreOptions::creds and the credential store). A changed credential reopens that
  // host's images at their next layer lookup.
  void SetRegistryCredential(const std::string& host, const registry::Credential& credential);

  // Adopts the references an earlier daemon of the same owner and mountpoint recorded (a
  // takeover). Returns how many.
  Result<size_t> RecoverReferences();
  // The references held on one layer directory now.
  int64_t References(std::string_view ref_element, std::string_view digest_element) const;
  // Layers with at least one reference (for logs, tests and pinning).
  size_t ReferencedLayers() const;

 private:
  struct Image;
  struct Pending;
  // The image `reference` names: as already opened or recorded in the store, or (`refresh`,
  // or when the store lacks it) its manifest and config fetched again from the registry.
  Result<std::shared_ptr<Image>> OpenImage(const std::string& reference, bool refresh);
  Result<std::shared_ptr<const StoreLayer>> OpenLayer(const std::string& reference,
                                                      const registry::Digest& digest);
  // The layer `digest` of `image`; NotFound when its manifest has no such layer.
  Result<std::shared_ptr<const StoreLayer>> OpenLayerOf(Image& image, const std::string& reference,
                                                        const registry::Digest& digest);

  const LayerStoreOptions options_;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Image>, std::less<>> images_ IMGFS_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Pending>, std::less<>> pending_ IMGFS_GUARDED_BY(mu_);
  std::map<std::string, registry::Credential, std::less<>> credentials_ IMGFS_GUARDED_BY(mu_);
  LayerReferences refs_;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_STORE_LAYER_STORE_H_
