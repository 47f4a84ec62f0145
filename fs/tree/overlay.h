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
#include <memory>
#include <span>
#include <string_view>
#include <vector>

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

// The part of the merge that depends on one layer alone: its entries checked, classified and
// sorted by path, its hardlinks resolved. MergeLayers makes one per layer in turn; a caller
// that loads layers on several threads makes each on the thread that loaded it
// (PrepareMergeInput) and hands them in, so the merge proper, which is sequential, has less to
// do (fs/mount/layer_data.cc). Refers to the layer's entries: valid while they are unchanged.
// Filled by PrepareMergeInput, read by MergeLayers; nothing else looks inside.
struct MergeInput {
  struct PathEntry {
    std::string_view path;  // a view of the entry's path
    uint32_t index;         // the entry's position in LayerIndex::entries
  };
  // Directories and non-directories (hardlinks resolved) by (path, index): the last of a path
  // wins.
  std::vector<PathEntry> sorted;
  // Per entry, the entry with its data (for a hardlink, the linked one); kNoLayer: ignored.
  std::vector<uint32_t> data;
  std::vector<std::string_view> whiteouts;  // paths hidden in the layers below
  std::vector<std::string_view> opaques;    // directories whose lower children are hidden
  MergeStats stats;                         // entries, invalid_paths, bad_hardlinks, landmarks
};

// Prepares `layer` for MergeLayers. Never fails: bad entries are left out and counted.
MergeInput PrepareMergeInput(const LayerIndex& layer);

// The merge one layer at a time, bottom first, for a caller whose upper layers are still
// loading while the lower ones merge (fs/mount/mount.cc); MergeLayers is Add for each layer,
// then Finish. Node::layer is the position of the Add. The layers must stay unchanged and
// alive until Finish returns; inputs only during their Add.
// Thread-safety: one thread at a time.
class LayerMerge {
 public:
  LayerMerge();
  ~LayerMerge();
  LayerMerge(const LayerMerge&) = delete;
  LayerMerge& operator=(const LayerMerge&) = delete;

  // Applies the next layer up, with its PrepareMergeInput (made now by the first form). A
  // null layer takes a position and adds nothing. InvalidArgument for an input made from
  // another layer; Unsupported past the NodeTable's layer limit; Internal after Finish.
  Status Add(const LayerIndex* layer);
  Status Add(const LayerIndex* layer, const MergeInput& input);
  // The merged table (stats: what was ignored, may be null). Call once, after the last Add.
  Result<NodeTable> Finish(MergeStats* stats = nullptr);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Merges `layers` (bottom first; Node::layer is the position in this span). Fails only when
// the result does not fit the NodeTable's limits (Unsupported): bad entries are ignored and
// counted in `stats` (may be null), never fatal.
Result<NodeTable> MergeLayers(std::span<const LayerIndex* const> layers,
                              MergeStats* stats = nullptr);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_TREE_OVERLAY_H_
