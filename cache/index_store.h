// imgfs — IndexStore: the derived per-layer indexes of the local store, `indexes/<hex>.idx`
// under the store root (one file per layer blob digest).
//
// The files hold fs::LayerIndex encodings (fs/layer/layer_index.h). This module does not
// depend on fs/, so it checks only the framing every version shares: the magic "IMGFSIDX" at
// the start and the trailing sha256 of everything before it. The caller decodes the bytes;
// when either step fails the index is rebuilt from the blob (indexes are derived data: deleting
// them at any time is safe).
//
// Writes are atomic (temp file + rename, base/file_util.h), so concurrent writers of the same
// index — two processes indexing the same layer — both succeed and readers see one whole file.
//
// Side records: a fact about a layer learnt while its index was made that the index encoding
// has no field for (the encoding is versioned and frozen, fs/layer/layer_index.h). Today one:
// the blob offset of an eStargz layer's `.prefetch.landmark`, found in the TOC, so that
// `--prefetch=landmarks` works on every mount, not only on the one that fetched the TOC.
// It sits beside the index as indexes/<hex>.landmark, one text line
// "imgfs-landmark 1 <decimal offset>\n". Like the index it is a function of the layer digest
// (content addressed), so a record outliving its index is never wrong, only a few bytes.
//
// Thread-safety: stateless apart from the root path; safe from any thread and process.
#ifndef IMGFS_CACHE_INDEX_STORE_H_
#define IMGFS_CACHE_INDEX_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/digest.h"

namespace imgfs::cache {

class IndexStore {
 public:
  // `root` is the store root (the directory holding oci-layout and indexes/).
  explicit IndexStore(std::string root);

  // root/indexes/<hex>.idx
  std::string PathFor(const registry::Digest& layer) const;

  // Atomically writes the encoded index of `layer` (creates indexes/ if needed).
  // InvalidArgument for an empty digest.
  Status Put(const registry::Digest& layer, std::string_view encoded) const;

  // The encoded index of `layer`. NotFound when absent; Corrupt when the framing (magic,
  // trailing checksum) is wrong; Io on read errors.
  Result<std::string> Get(const registry::Digest& layer) const;

  // Removes the index of `layer` and its side records; OK if there were none.
  Status Remove(const registry::Digest& layer) const;

  // root/indexes/<hex>.landmark
  std::string LandmarkPathFor(const registry::Digest& layer) const;

  // Atomically records the blob offset of the eStargz `.prefetch.landmark` of `layer` (the
  // files before it are the ones the image's author marked for prefetch). InvalidArgument
  // for an empty digest or offset 0 (a landmark never starts a blob).
  Status PutLandmark(const registry::Digest& layer, uint64_t blob_offset) const;

  // The recorded landmark offset of `layer`. NotFound when none was recorded (a layer without
  // a landmark, or an index made before records were kept); Corrupt when the file is not a
  // well-formed record; Io on read errors.
  Result<uint64_t> GetLandmark(const registry::Digest& layer) const;

 private:
  std::string root_;
};

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_INDEX_STORE_H_
