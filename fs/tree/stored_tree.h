// imgfs — the merged tree of an image, stored: a mount from the store maps it instead of
// decoding every layer's file table and merging them again.
//
// A merged NodeTable is a pure function of the layers' file tables, and so of the image
// manifest (which names the layers by digest, with the annotations the merge reads) and of
// where each layer's index came from: the layer's own blob, or for a layer read lazily its TOC
// or a published index (LayerIndex provenance and origin). So the tree of a manifest is kept
// under the manifest's digest (cache/index_store.h, IndexKey::Tree) with a digest of those
// sources (StoredTreeSources), and reused by every later mount of that manifest whose layers
// open from the same sources; a mount whose sources differ (a layer pulled since, another
// published index) merges again and replaces it. A layer whose index is unverified
// (--insecure-skip-toc-verify) is never part of a stored tree.
//
// Encoding (little-endian, the byte order of every machine imgfs builds for; a file from
// another order fails the order mark): a fixed header (magic "IMGFSTRE", version, byte-order
// mark, record sizes, layer count, the manifest digest's 32 bytes, the record counts, the
// merge's statistics, a CRC-32 of the whole file with this field zero, the sources digest),
// then the NodeTable's
// records as they are in memory (fs/tree/node_table.h: no padding bytes), each section at an
// 8-byte aligned offset: nodes, directory entries, xattrs, the string arena. Mapped, the
// records are used where they lie: no decoding, no fresh memory.
//
// Bump kStoredTreeVersion whenever the merge's output for the same sources changes (a fixed
// merge rule, a new Node field, another file table from the same TOC or blob): an older tree
// then fails its version check, and the mount merges again and replaces it. Version 1 had no
// sources digest (trees of local layers only).
//
// Thread-safety: pure functions; safe from any thread.
#ifndef IMGFS_FS_TREE_STORED_TREE_H_
#define IMGFS_FS_TREE_STORED_TREE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "fs/tree/node_table.h"
#include "fs/tree/overlay.h"
#include "registry/digest.h"

namespace imgfs::fs {

inline constexpr uint32_t kStoredTreeVersion = 2;

// The sources digest of a tree merged from layers whose indexes are described, bottom first,
// by `layer_sources` (one text per layer, naming its index's source exactly; the mount makes
// them, fs/mount/mount.cc): sha256 of the texts, each prefixed by its length.
registry::Digest StoredTreeSources(std::span<const std::string> layer_sources);

// What a stored tree says besides its table.
struct StoredTreeInfo {
  registry::Digest manifest;  // the image manifest it was merged for (sha256)
  uint32_t layer_count = 0;   // Node::layer < layer_count
  registry::Digest sources;   // StoredTreeSources of its layers (sha256)
  MergeStats stats;
};

struct StoredTree {
  StoredTreeInfo info;
  NodeTable table;
};

// The encoding of a table's records (NodeTable::records; see the file comment).
// InvalidArgument when `info.manifest` or `info.sources` is not a sha256 digest.
Result<std::string> EncodeStoredTree(const NodeTable::Records& records, const StoredTreeInfo& info);

// The tree encoded in `bytes`, whose records the table uses in place: `owner` keeps `bytes`
// alive and unchanged for the table's life (a MappedFile; `bytes` must be 8-byte aligned,
// which a mapping is). Corrupt on a bad magic, version, order mark, size, checksum or on
// records that NodeTable::Adopt refuses, and when the tree is not the one of `manifest`.
// Never crashes on arbitrary bytes.
Result<StoredTree> DecodeStoredTree(std::string_view bytes, std::shared_ptr<const void> owner,
                                    const registry::Digest& manifest);

// One layer as a mount opened it, for CheckTreeData.
struct TreeLayer {
  uint64_t stream_size = 0;  // bytes of the layer's uncompressed tar stream (LayerIndex)
  // The layer's file table when its reader looks files up there (a lazy layer reads a file's
  // chunks through Node::entry); null for a local layer, read by Node::payload_offset alone.
  const std::vector<FileEntry>* entries = nullptr;
};

// OK when every node fits the layer it names: a position below `layers.size()` (or
// Node::kNoLayer). For a layer with entries, the node's entry must be one of them and say
// what the merge would have copied from it: the type, mode, owner and mtime, and for a file its
// size and payload_offset, for a symlink its target, for a device its numbers (a lazy file's data
// is then where its entry says). For a layer without, a regular file's [payload_offset,
// payload_offset + size) lies inside the layer's stream. A stored tree is checked so against the
// layers the mount opened; Corrupt otherwise.
Status CheckTreeData(const NodeTable& table, std::span<const TreeLayer> layers);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_TREE_STORED_TREE_H_
