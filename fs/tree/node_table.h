// imgfs — NodeTable: the merged, immutable file tree of a mounted image, with inode numbers.
//
// The overlay merge (fs/overlay.h) stacks an image's layers and hands the result to a
// NodeTable::Builder; what comes out is everything the FUSE server needs to answer lookup,
// getattr, readdir, readlink and the xattr calls without touching the layers again. File *data*
// is not here: each node names the layer and the entry of that layer's LayerIndex that carries
// its bytes (for a hardlink, the entry it links to), and the read path goes there.
//
// Inodes: 1 is the root; the others are dense (2, 3, ...) and deterministic: the merge numbers
// them in depth-first order over children sorted by name, so the same image always gets the
// same numbers. One inode per file, not per name: hardlinked names share an inode, whose nlink
// is the number of its names in the merged tree. A directory's nlink is 2 + its subdirectories.
//
// Layout (compact, for 100k-file images): one vector of fixed-size Node records indexed by
// inode, one vector of directory entries where each directory owns a contiguous range sorted by
// name (lookup is a binary search), one string arena for names, symlink targets and xattr
// names/values, one vector of xattr records. About 100 bytes per inode plus 12 bytes per name
// plus the string bytes: 100k files cost ~15 MB.
//
// A table is built (Builder) or adopted from stored records (Adopt: the merged tree of an image
// kept in the store and mapped at mount, fs/tree/stored_tree.h). The records have a fixed
// layout without padding bytes, so they are stored as they are in memory.
//
// Thread-safety: immutable once built; every const method may be called concurrently from any
// number of threads without locking. The Builder is single-threaded.
#ifndef IMGFS_FS_TREE_NODE_TABLE_H_
#define IMGFS_FS_TREE_NODE_TABLE_H_

#include <sys/stat.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "base/status.h"
#include "fs/layer/layer_index.h"

namespace imgfs::fs {

// An offset/length into the NodeTable's string arena.
struct ArenaRef {
  uint32_t offset = 0;
  uint32_t size = 0;
};

// One inode. Strings live in the table's arena: resolve them with NodeTable::Name/ReadLink/...
struct Node {
  static constexpr uint32_t kNoLayer = std::numeric_limits<uint32_t>::max();

  uint32_t parent = 0;  // inode of the directory holding `name` (root: 1, itself)
  ArenaRef name;        // the first name of this inode in inode order ("" for the root)
  EntryType type = EntryType::kRegular;  // never kHardlink, kWhiteout or kOpaque
  uint8_t reserved0[3] = {};             // zero: no padding bytes (stored as it is)
  uint32_t mode = 0;                     // permission bits (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 1;
  uint64_t size = 0;  // regular files: bytes; symlinks: target length; directories: 0
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t dev_major = 0;  // char/block devices
  uint32_t dev_minor = 0;
  // Where the data and metadata came from: layer position (0 = bottom) and the index into that
  // layer's LayerIndex::entries. For a hardlink, the entry that carries the data. kNoLayer for
  // directories that no layer describes (synthesised parents, a root no layer has).
  uint32_t layer = kNoLayer;
  uint32_t entry = 0;
  uint32_t reserved1 = 0;  // zero: no padding bytes
  // Regular files: where the bytes start in that layer's uncompressed tar stream (the entry's
  // payload_offset). A local layer's index keeps no entries once merged (LayerIndex::
  // DropEntries): its files are read by this and `size` alone.
  uint64_t payload_offset = 0;
  uint32_t first_child = 0;  // directories: range in the directory entry table
  uint32_t child_count = 0;
  ArenaRef link_target;  // symlinks
  uint32_t first_xattr = 0;
  uint32_t xattr_count = 0;
};
static_assert(std::has_unique_object_representations_v<Node> && sizeof(Node) == 104,
              "Node is stored as it is in memory: no padding, a fixed size");

// A name in a directory, as returned by ReadDir.
struct DirEntry {
  std::string_view name;
  uint64_t ino = 0;
  EntryType type = EntryType::kRegular;
};

class NodeTable {
 public:
  static constexpr uint64_t kRootIno = 1;

  class Builder;

  // A name of a directory (in its directory's range of the entry table) and a stored xattr.
  struct Dirent {
    ArenaRef name;
    uint32_t ino = 0;
  };
  struct Xattr {
    ArenaRef name;
    ArenaRef value;
  };

  // The records of a table, as Adopt takes them and the accessors below give them.
  struct Records {
    std::span<const Node> nodes;  // index = ino - 1
    std::span<const Dirent> dirents;
    std::span<const Xattr> xattrs;
    std::string_view arena;
  };

  NodeTable() = default;  // empty: no inodes at all (not even a root)
  NodeTable(NodeTable&&) noexcept = default;
  NodeTable& operator=(NodeTable&&) noexcept = default;
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;

  // Number of inodes; valid inode numbers are 1..inode_count().
  uint64_t inode_count() const { return nodes_.size(); }

  // The node of `ino`, or nullptr when `ino` is not an inode of this table.
  const Node* Get(uint64_t ino) const {
    return ino >= 1 && ino <= nodes_.size() ? &nodes_[ino - 1] : nullptr;
  }

  // The inode named `name` in directory `parent`. NotFound if there is no such name (or
  // `parent` is not an inode), InvalidArgument if `parent` is not a directory. "." and ".."
  // are not names in the table (the kernel resolves them).
  Result<uint64_t> Lookup(uint64_t parent, std::string_view name) const;

  // The attributes of `ino` as stat(2) reports them: st_ino = ino, st_mode = type | mode,
  // st_blocks = ceil(size / 512), st_blksize = 4096, atime = ctime = mtime. NotFound if `ino`
  // is not an inode.
  Result<struct stat> GetAttr(uint64_t ino) const;

  // Number of names in directory `ino`. NotFound / InvalidArgument as for Lookup.
  Result<uint64_t> ChildCount(uint64_t ino) const;
  // The `index`-th name of directory `ino` in name order (for offset-based readdir).
  // NotFound when `index` >= ChildCount(ino).
  Result<DirEntry> ChildAt(uint64_t ino, uint64_t index) const;
  // All names of directory `ino`, sorted by name (bytewise). Views point into the table.
  Result<std::vector<DirEntry>> ReadDir(uint64_t ino) const;

  // The target of symlink `ino`. InvalidArgument if `ino` is not a symlink.
  Result<std::string_view> ReadLink(uint64_t ino) const;

  // Extended attribute names of `ino`, sorted. NotFound if `ino` is not an inode.
  Result<std::vector<std::string_view>> ListXattr(uint64_t ino) const;
  // The value of xattr `name` of `ino`. NotFound if `ino` has no such attribute (the FUSE
  // adapter answers ENODATA then, not ENOENT) or `ino` is not an inode.
  Result<std::string_view> GetXattr(uint64_t ino, std::string_view name) const;

  // The first name of `ino` as it appears in the tree.
  std::string_view Name(const Node& node) const { return Str(node.name); }
  // "/a/b" path of `ino` (first names), "/" for the root; for tests and log lines.
  Result<std::string> PathOf(uint64_t ino) const;

  // Bytes of heap memory held by the table (approximate: vector capacities); 0 for an adopted
  // table, whose records are its owner's (a mapped file's pages).
  size_t MemoryBytes() const;

  // The table's records, valid while the table or the owner of its records lives.
  Records records() const { return {nodes_, dirents_, xattrs_, arena_}; }
  std::shared_ptr<const void> records_owner() const { return owner_; }

  // A table over `records`, which `owner` keeps alive and unchanged for the table's life. The
  // records come from outside (a stored file): everything a method indexes with is checked
  // first, so that no input makes one read out of bounds or loop: every string inside the
  // arena; the root a directory and its own parent; every other inode's parent a directory
  // numbered before it (directories) or any directory (other inodes); directory ranges and
  // xattr ranges inside their tables; every name of a directory a valid name naming an inode
  // other than the root, names sorted and unique; no unknown type. Corrupt otherwise.
  static Result<NodeTable> Adopt(const Records& records, std::shared_ptr<const void> owner);

 private:
  // What a built table owns.
  struct Storage {
    std::vector<Node> nodes;
    std::vector<Dirent> dirents;
    std::vector<Xattr> xattrs;
    std::string arena;
  };

  std::string_view Str(ArenaRef r) const { return arena_.substr(r.offset, r.size); }
  Result<const Node*> Dir(uint64_t ino) const;
  // Points the spans at `storage`, which the table then owns.
  void Own(std::unique_ptr<Storage> storage);

  std::span<const Node> nodes_;
  std::span<const Dirent> dirents_;
  std::span<const Xattr> xattrs_;
  std::string_view arena_;
  std::shared_ptr<const void> owner_;  // a built Storage, or the adopted records' owner
  const Storage* storage_ = nullptr;   // the built Storage, for MemoryBytes; null when adopted
};

// Builds a NodeTable. Inodes are numbered in AddInode call order starting at 1 (the root must
// be the first, a directory). Directory contents are given once per directory; Finish checks
// the shape and computes parents, first names and link counts.
class NodeTable::Builder {
 public:
  Builder() = default;
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;

  // Room for `inodes` inodes, `names` directory entries and `arena_bytes` of names, link
  // targets and xattrs: with the final sizes given, the tables are allocated once instead of
  // being copied as they grow (a hint: more or fewer may be added).
  void Reserve(size_t inodes, size_t names, size_t arena_bytes);

  // Adds an inode with the attributes of `node` (parent, name, nlink, child range, link target
  // and xattr fields are ignored: they come from the arguments and from Finish). Returns its
  // number. `xattrs` need not be sorted.
  uint64_t AddInode(const Node& node, std::string_view link_target,
                    const std::vector<std::pair<std::string, std::string>>& xattrs);

  // Sets the names in directory `dir`: (name, inode) pairs sorted by name, no duplicates, no
  // "", ".", ".." or '/' in names. InvalidArgument otherwise or if `dir` is not a directory
  // inode or already has its children set.
  Status SetChildren(uint64_t dir,
                     const std::vector<std::pair<std::string_view, uint64_t>>& children);

  // Checks that the root is inode 1 and a directory, every other inode has at least one name,
  // every directory exactly one and a larger number than its parent (so the tree has no
  // cycles); computes nlink (directories: 2 + subdirectories; others: number of names),
  // parents and first names. Internal on a violated shape, Unsupported when the arena would
  // exceed 4 GiB. The Builder is empty afterwards.
  Result<NodeTable> Finish();

 private:
  Result<ArenaRef> Append(std::string_view s);

  std::unique_ptr<Storage> table_ = std::make_unique<Storage>();
  std::vector<bool> children_set_;
  bool overflow_ = false;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_TREE_NODE_TABLE_H_
