// imgfs — IndexStore: the derived per-layer indexes of the local store, under
// `indexes/` in the store root.
//
// Indexes are kept apart by where they came from (IndexKey), because that decides who may use
// them (fs::IndexProvenance, docs/SECURITY.md):
//   indexes/<layer hex>.idx                  built by a pass over the layer's own blob, whose
//                                            digest was verified: good for every image with
//                                            that layer (LoadOrBuildIndex)
//   indexes/<layer hex>.toc-<toc hex>.idx    from an eStargz / zstd:chunked TOC fetched from a
//                                            registry and verified against TOC digest <toc>:
//                                            only for layer descriptors naming that TOC digest
//   indexes/<layer hex>.image-<manifest hex>.idx
//                                            an imgfs index published for image manifest
//                                            <manifest>: only for lazy mounts of that image
//   indexes/<manifest hex>.tree              the merged tree of image manifest <manifest>,
//                                            with a digest of its layers' index sources
//                                            (fs/tree/stored_tree.h): kept as long as the
//                                            manifest is
// A lookup names the key it may use; an index derived from the network can never answer a
// lookup for the layer's own index or for another image's key.
//
// The files hold fs::LayerIndex encodings (fs/layer/layer_index.h). This module does not
// depend on fs/, so it checks only what every version starts with: the magic "IMGFSIDX" and
// room for the trailing sha256 of everything before it. The sum itself is checked once, by the
// decoder every reader runs (fs::LayerIndex::Decode, on another thread while it parses): a
// second check here was a sequential pass over each index on the path of every mount. When
// either step fails the index is rebuilt from the blob (indexes are derived data: deleting them
// at any time is safe).
//
// Writes are atomic (temp file + rename, base/file_util.h), so concurrent writers of the same
// index — two processes indexing the same layer — both succeed and readers see one whole file.
//
// Side records: a fact about a layer learnt while its index was made that the index encoding
// has no field for (the encoding is versioned and frozen, fs/layer/layer_index.h). Today one:
// the blob offset of an eStargz layer's `.prefetch.landmark`, found in the TOC, so that
// `--prefetch=landmarks` works on every mount, not only on the one that fetched the TOC.
// It sits beside the index as indexes/<hex>.landmark, one text line
// "imgfs-landmark 1 <decimal offset>\n", per layer digest. It is only a prefetch hint (which
// chunks to fetch early; every chunk is still checked against the TOC in use), so a record
// from another TOC of the same layer costs at most some useless prefetching, never content.
//
// Thread-safety: stateless apart from the root path; safe from any thread and process.
#ifndef IMGFS_CACHE_INDEX_STORE_H_
#define IMGFS_CACHE_INDEX_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "base/file_util.h"
#include "base/mapped_file.h"
#include "base/status.h"
#include "registry/digest.h"

namespace imgfs::cache {

// Which stored index: the layer's own (built from its verified blob), or one derived from
// the network for a given TOC digest or image manifest.
struct IndexKey {
  enum class Kind : uint8_t {
    kLayerBlob,  // indexes/<layer>.idx
    kToc,        // indexes/<layer>.toc-<origin>.idx, origin = the TOC digest
    kImage,      // indexes/<layer>.image-<origin>.idx, origin = the image manifest digest
    kTree,       // indexes/<layer>.tree, `layer` = the image manifest digest
  };
  registry::Digest layer;  // kTree: the image manifest
  Kind kind = Kind::kLayerBlob;
  registry::Digest origin;  // empty for kLayerBlob

  static IndexKey LayerBlob(registry::Digest layer) {
    return {std::move(layer), Kind::kLayerBlob, {}};
  }
  static IndexKey Toc(registry::Digest layer, registry::Digest toc) {
    return {std::move(layer), Kind::kToc, std::move(toc)};
  }
  static IndexKey Image(registry::Digest layer, registry::Digest manifest) {
    return {std::move(layer), Kind::kImage, std::move(manifest)};
  }
  static IndexKey Tree(registry::Digest manifest) { return {std::move(manifest), Kind::kTree, {}}; }
  bool operator==(const IndexKey&) const = default;
};

class IndexStore {
 public:
  // `root` is the store root (the directory holding oci-layout and indexes/).
  explicit IndexStore(std::string root);

  // The file of `key` (see the file comment); the Digest forms mean IndexKey::LayerBlob.
  std::string PathFor(const IndexKey& key) const;
  std::string PathFor(const registry::Digest& layer) const;

  // The key a file name of indexes/ stands for ("<hex>.idx", "<hex>.toc-<hex>.idx",
  // "<hex>.image-<hex>.idx", "<hex>.tree"); nullopt for any other name (side records,
  // temporaries).
  static std::optional<IndexKey> KeyOfFileName(std::string_view name);

  // Atomically writes the encoded index of `key` (creates indexes/ if needed).
  // InvalidArgument for an empty layer digest, or an origin that is not a sha256 digest for a
  // kToc / kImage key. With Durability::kUnsynced the write skips its fsyncs (a mount that is
  // waiting for the index does Sync later, off its path): a crash before that may leave a
  // torn or empty file, which Get or the decoder reports as Corrupt, never as an index.
  Status Put(const IndexKey& key, std::string_view encoded,
             Durability durability = Durability::kSynced) const;
  Status Put(const registry::Digest& layer, std::string_view encoded) const;

  // The encoded index of `key` (not kTree: Map), its checksum not yet checked: decode it with
  // fs::LayerIndex::Decode, which does. NotFound when absent; Corrupt when it does not start
  // with the magic or is too short for a checksum; Io on read errors. The caller still checks
  // that the decoded index says the same provenance as the key (a file is only as good as its
  // name).
  Result<std::string> Get(const IndexKey& key) const;
  Result<std::string> Get(const registry::Digest& layer) const;
  // The same, mapped rather than copied (base/mapped_file.h): for a caller that decodes the
  // index at once and drops the bytes, or uses them in place (a kTree file, whose decoder
  // checks its own magic). Files here are only ever replaced by rename.
  Result<MappedFile> Map(const IndexKey& key) const;
  Result<MappedFile> Map(const registry::Digest& layer) const;

  // Removes the index of `key`; OK if there was none.
  Status Remove(const IndexKey& key) const;

  // Removes the layer's own index (kLayerBlob) and its side records; OK if there were none.
  Status Remove(const registry::Digest& layer) const;

  // root/indexes/<hex>.landmark
  std::string LandmarkPathFor(const registry::Digest& layer) const;

  // Atomically records the blob offset of the eStargz `.prefetch.landmark` of `layer` (the
  // files before it are the ones the image's author marked for prefetch). InvalidArgument
  // for an empty digest or offset 0 (a landmark never starts a blob).
  // kUnsynced as for Put (a torn record reads as Corrupt).
  Status PutLandmark(const registry::Digest& layer, uint64_t blob_offset,
                     Durability durability = Durability::kSynced) const;

  // Makes a file written with Durability::kUnsynced durable: fsyncs `path` (a PathFor or
  // LandmarkPathFor result) and indexes/. OK when the file is gone (removed since: nothing
  // to keep).
  Status Sync(const std::string& path) const;

  // The recorded landmark offset of `layer`. NotFound when none was recorded (a layer without
  // a landmark, or an index made before records were kept); Corrupt when the file is not a
  // well-formed record; Io on read errors.
  Result<uint64_t> GetLandmark(const registry::Digest& layer) const;

 private:
  std::string root_;
};

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_INDEX_STORE_H_
