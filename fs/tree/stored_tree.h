// imgfs — the merged tree of an image, stored: a mount from the store maps it instead of
// decoding every layer's file table and merging them again.
//
// A merged NodeTable is a pure function of the layers' file tables, and for layers whose
// indexes were built from their own verified blobs, of the image manifest (which names the
// layers by digest, with the annotations the merge reads). So the tree of a manifest whose
// layers are all in the store is kept under the manifest's digest (cache/index_store.h,
// IndexKey::Tree) and reused by every later mount of that manifest. A tree made from a
// network-derived index (a TOC, a published index) is never stored: its file table is only as
// good as its source, which the next mount may not use.
//
// Encoding (little-endian, the byte order of every machine imgfs builds for; a file from
// another order fails the order mark): a fixed header (magic "IMGFSTRE", version, byte-order
// mark, record sizes, layer count, the manifest digest's 32 bytes, the record counts, the
// merge's statistics, a CRC-32 of the whole file with this field zero), then the NodeTable's
// records as they are in memory (fs/tree/node_table.h: no padding bytes), each section at an
// 8-byte aligned offset: nodes, directory entries, xattrs, the string arena. Mapped, the
// records are used where they lie: no decoding, no fresh memory.
//
// Bump kStoredTreeVersion whenever the merge's output for the same layers changes (a fixed
// merge rule, a new Node field): an older tree then fails its version check, and the mount
// merges again and replaces it.
//
// Thread-safety: pure functions; safe from any thread.
#ifndef IMGFS_FS_TREE_STORED_TREE_H_
#define IMGFS_FS_TREE_STORED_TREE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "fs/tree/node_table.h"
#include "fs/tree/overlay.h"
#include "registry/digest.h"

namespace imgfs::fs {

inline constexpr uint32_t kStoredTreeVersion = 1;

// What a stored tree says besides its table.
struct StoredTreeInfo {
  registry::Digest manifest;  // the image manifest it was merged for (sha256)
  uint32_t layer_count = 0;   // Node::layer < layer_count
  MergeStats stats;
};

struct StoredTree {
  StoredTreeInfo info;
  NodeTable table;
};

// The encoding of a table's records (NodeTable::records; see the file comment).
// InvalidArgument when `info.manifest` is not a sha256 digest.
Result<std::string> EncodeStoredTree(const NodeTable::Records& records, const StoredTreeInfo& info);

// The tree encoded in `bytes`, whose records the table uses in place: `owner` keeps `bytes`
// alive and unchanged for the table's life (a MappedFile; `bytes` must be 8-byte aligned,
// which a mapping is). Corrupt on a bad magic, version, order mark, size, checksum or on
// records that NodeTable::Adopt refuses, and when the tree is not the one of `manifest`.
// Never crashes on arbitrary bytes.
Result<StoredTree> DecodeStoredTree(std::string_view bytes, std::shared_ptr<const void> owner,
                                    const registry::Digest& manifest);

// OK when every node's data lies inside its layer: its layer a position below
// `layer_stream_sizes.size()` (or Node::kNoLayer), and a regular file's [payload_offset,
// payload_offset + size) inside that layer's uncompressed stream of the given size. A stored
// tree is checked so against the layers the mount opened; Corrupt otherwise.
Status CheckTreeData(const NodeTable& table, std::span<const uint64_t> layer_stream_sizes);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_TREE_STORED_TREE_H_
