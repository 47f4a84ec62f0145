// imgfs — the overlay merge: an image's layers, stacked bottom-up, become one NodeTable.
//
// Input: the file table of each layer (LayerIndex, entries in tar order, whiteouts kept as
// kWhiteout / kOpaque entries), bottom layer first. Output: the merged tree the mount shows,
// with the OCI image-spec layer semantics (layer.md "Whiteouts"; docs/SEMANTICS.md has the
// full list of promises):
//   - Each layer is applied in two steps. First its whiteouts act on the tree built from the
//     layers below: `.wh.NAME` (kWhiteout, path = the hidden path) removes that path and its
//     subtree; `.wh..wh..opq` (kOpaque, path = the directory) removes every child of that
//     directory. Both act on lower layers only, whatever their position in the tar, so they
//     never hide an entry of their own layer. A whiteout of a path that does not exist below
//     does nothing; whiteouts never create directories.
//   - Then the layer's own entries, duplicates resolved "last in tar order wins", in path
//     order: a directory over a directory keeps the lower children and takes the upper
//     attributes; any other collision replaces the lower path (a non-directory over a
//     directory drops the lower subtree; a directory over a non-directory replaces it). A
//     path with a non-directory entry anywhere in the layer drops the lower subtree even if a
//     directory entry for it comes last (an unpacker replaced the lower directory on the way).
//   - Missing parents: an entry whose parent directories are not in its layer uses the ones
//     from the layers below; where there are none (or a lower non-directory is in the way) a
//     directory 0755 root:root with the entry's mtime is synthesised.
//   - An entry below a path whose (last) entry in the same layer is not a directory is
//     ignored: the layer itself says that path is a file (umoci writes whiteouts there, see
//     the fixture quirks/umoci-dir-to-file).
//   - Hardlinks (kHardlink, link_target = a path of the same layer) resolve to the last entry
//     with that path *before* the link in tar order, following link chains; the names share
//     one inode with the target's attributes and data, nlink = names in the merged tree. The
//     data stays reachable even when the target's own name is hidden or replaced later. A
//     link to nothing earlier, to a directory or to a whiteout is ignored.
//   - Entries with an unusable path (empty, ".", "..", a name starting with ".wh.") are ignored,
//     so whiteout names are never visible. In eStargz layers the converter's root files
//     `.prefetch.landmark`, `.no.prefetch.landmark` and `stargz.index.json` are ignored.
//   - The root takes the attributes of the topmost root entry ("" / "./"), else 0755 root:root,
//     mtime 0.
// Inode numbers: 1 = root, then depth-first in name order (see fs/node_table.h).
//
// Thread-safety: MergeLayers is a pure function of its input; call it from any thread. The
// layers must stay unchanged during the call; the result does not refer to them.
#ifndef IMGFS_FS_TREE_OVERLAY_H_
#define IMGFS_FS_TREE_OVERLAY_H_

#include <cstdint>
#include <span>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "fs/tree/node_table.h"

namespace imgfs::fs {

// Counts of entries the merge ignored (for log lines and tests).
struct MergeStats {
  uint64_t entries = 0;        // entries read, all layers
  uint64_t invalid_paths = 0;  // unusable path, `.wh.` names
  uint64_t bad_hardlinks = 0;  // link to nothing earlier in the layer, to a dir or whiteout
  uint64_t shadowed = 0;       // below a non-directory of the same layer
  uint64_t landmarks = 0;      // eStargz converter files
};

// Merges `layers` (bottom first; Node::layer is the position in this span). Fails only when
// the result does not fit the NodeTable's limits (Unsupported): bad entries are ignored and
// counted in `stats` (may be null), never fatal.
Result<NodeTable> MergeLayers(std::span<const LayerIndex* const> layers,
                              MergeStats* stats = nullptr);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_TREE_OVERLAY_H_
