// imgfs — the references containers/storage holds on the layers of an Additional Layer Store
// (fs/layer_store/layer_store.h), recorded in the imgfs store as mount leases
// (cache/leases.h) so that they pin what the layers need.
//
// Each reference is one lease: `use` created in a layer directory writes one, an rmdir of
// the directory removes one. A lease pins its image's manifest, so `imgfs cache gc` and
// `imgfs cache prune` keep the manifest, config, layer indexes and cached chunks the layer
// reads from, and `imgfs rmi` refuses the image, exactly as for a mounted image. The lease
// names:
//   pid         the owner: the process whose life bounds the references (the keeper of a
//               kept layer store, whose daemons come and go; the daemon itself under -f)
//   mountpoint  MOUNTPOINT/<reference element>/<digest element>: the layer directory
//   manifest    the manifest of the image the layer belongs to
//   reference   the image reference the directory name encodes
// A daemon that takes a layer store over (fs/fuse/takeover.h) reads its predecessor's
// references back with Recover. When the owner dies, the leases are stale and go the way of
// any stale lease (ListLiveLeases removes them): the pins end with the layer store.
//
// Thread-safety: every method may be called from any thread; lease files are written and
// removed outside the object's lock.
#ifndef IMGFS_FS_LAYER_STORE_LAYER_REFERENCES_H_
#define IMGFS_FS_LAYER_STORE_LAYER_REFERENCES_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "cache/store.h"
#include "registry/digest.h"

namespace imgfs::fs {

class LayerReferences {
 public:
  // References on the layer directories below `mountpoint` (absolute), owned by `owner`
  // (a live process). `store` is not owned and outlives this object.
  LayerReferences(const cache::Store* store, pid_t owner, std::string mountpoint);
  LayerReferences(const LayerReferences&) = delete;
  LayerReferences& operator=(const LayerReferences&) = delete;
  // Removes the leases still held: the layer store is gone (a daemon that is killed runs no
  // destructor, so its references stay for the next one).
  ~LayerReferences();

  // Adopts the live leases of `owner` below `mountpoint` (an earlier daemon's references).
  // Returns how many.
  Result<size_t> Recover();

  // One more reference on the layer directory `key` ("<reference element>/<digest element>")
  // of the image `manifest` (`reference`: its normalised reference). NotFound when the
  // manifest is no longer in the store (a concurrent rmi won). Returns the count after it.
  Result<int64_t> Take(std::string_view key, const registry::Digest& manifest,
                       const std::string& reference);
  // One reference less on `key` (none held: nothing changes). Returns the count after it.
  // An error removing the lease file is logged: the count drops anyway.
  int64_t Drop(std::string_view key);

  int64_t Count(std::string_view key) const;
  // Layer directories with at least one reference.
  size_t Referenced() const;

  // The lease mountpoint recorded for `key`.
  std::string LayerPath(std::string_view key) const;

 private:
  const cache::Store* store_;
  const pid_t owner_;
  const std::string mountpoint_;
  mutable Mutex mu_;
  // key → the ids of its leases, oldest first.
  std::map<std::string, std::vector<std::string>, std::less<>> leases_ IMGFS_GUARDED_BY(mu_);
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_STORE_LAYER_REFERENCES_H_
