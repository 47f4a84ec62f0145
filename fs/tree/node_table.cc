// imgfs — NodeTable: lookups over the immutable merged tree, and its Builder.
#include "fs/tree/node_table.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/huge_pages.h"

namespace imgfs::fs {

namespace {

constexpr uint32_t kBlockSize = 4096;  // st_blksize: the page size, what readers should use
constexpr uint64_t kSectorSize = 512;  // st_blocks unit, fixed by stat(2)

mode_t TypeBits(EntryType type) {
  switch (type) {
    case EntryType::kDirectory:
      return S_IFDIR;
    case EntryType::kSymlink:
      return S_IFLNK;
    case EntryType::kChar:
      return S_IFCHR;
    case EntryType::kBlock:
      return S_IFBLK;
    case EntryType::kFifo:
      return S_IFIFO;
    case EntryType::kRegular:
    case EntryType::kHardlink:
    case EntryType::kWhiteout:
    case EntryType::kOpaque:
      return S_IFREG;
  }
  return S_IFREG;
}

bool ValidName(std::string_view name) {
  // Two find()s rather than find_first_of, which costs a memchr per character.
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

}  // namespace

Result<const Node*> NodeTable::Dir(uint64_t ino) const {
  const Node* node = Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  if (node->type != EntryType::kDirectory) {
    return Status::InvalidArgument("inode " + std::to_string(ino) + " is not a directory");
  }
  return node;
}

Result<uint64_t> NodeTable::Lookup(uint64_t parent, std::string_view name) const {
  IMGFS_ASSIGN_OR_RETURN(const Node* dir, Dir(parent));
  auto begin = dirents_.begin() + dir->first_child;
  auto end = begin + dir->child_count;
  auto it = std::lower_bound(
      begin, end, name, [this](const Dirent& d, std::string_view n) { return Str(d.name) < n; });
  if (it == end || Str(it->name) != name) {
    return Status::NotFound(std::string(name) + ": no such name in inode " +
                            std::to_string(parent));
  }
  return uint64_t{it->ino};
}

Result<struct stat> NodeTable::GetAttr(uint64_t ino) const {
  const Node* node = Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  struct stat st;
  std::memset(&st, 0, sizeof(st));
  st.st_ino = ino;
  st.st_mode = TypeBits(node->type) | (node->mode & 07777);
  st.st_nlink = node->nlink;
  st.st_uid = node->uid;
  st.st_gid = node->gid;
  if (node->type == EntryType::kChar || node->type == EntryType::kBlock) {
    st.st_rdev = makedev(node->dev_major, node->dev_minor);
  }
  st.st_size = static_cast<off_t>(node->size);
  st.st_blksize = kBlockSize;
  st.st_blocks = static_cast<blkcnt_t>((node->size + kSectorSize - 1) / kSectorSize);
  st.st_mtim.tv_sec = node->mtime_sec;
  st.st_mtim.tv_nsec = node->mtime_nsec;
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
  return st;
}

Result<uint64_t> NodeTable::ChildCount(uint64_t ino) const {
  IMGFS_ASSIGN_OR_RETURN(const Node* dir, Dir(ino));
  return uint64_t{dir->child_count};
}

Result<DirEntry> NodeTable::ChildAt(uint64_t ino, uint64_t index) const {
  IMGFS_ASSIGN_OR_RETURN(const Node* dir, Dir(ino));
  if (index >= dir->child_count) return Status::NotFound("end of directory");
  const Dirent& d = dirents_[dir->first_child + index];
  return DirEntry{Str(d.name), d.ino, nodes_[d.ino - 1].type};
}

Result<std::vector<DirEntry>> NodeTable::ReadDir(uint64_t ino) const {
  IMGFS_ASSIGN_OR_RETURN(const Node* dir, Dir(ino));
  std::vector<DirEntry> out;
  out.reserve(dir->child_count);
  for (uint32_t i = 0; i < dir->child_count; ++i) {
    const Dirent& d = dirents_[dir->first_child + i];
    out.push_back(DirEntry{Str(d.name), d.ino, nodes_[d.ino - 1].type});
  }
  return out;
}

Result<std::string_view> NodeTable::ReadLink(uint64_t ino) const {
  const Node* node = Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  if (node->type != EntryType::kSymlink) {
    return Status::InvalidArgument("inode " + std::to_string(ino) + " is not a symlink");
  }
  return Str(node->link_target);
}

Result<std::vector<std::string_view>> NodeTable::ListXattr(uint64_t ino) const {
  const Node* node = Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  std::vector<std::string_view> names;
  names.reserve(node->xattr_count);
  for (uint32_t i = 0; i < node->xattr_count; ++i) {
    names.push_back(Str(xattrs_[node->first_xattr + i].name));
  }
  return names;
}

Result<std::string_view> NodeTable::GetXattr(uint64_t ino, std::string_view name) const {
  const Node* node = Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  for (uint32_t i = 0; i < node->xattr_count; ++i) {
    const Xattr& x = xattrs_[node->first_xattr + i];
    if (Str(x.name) == name) return Str(x.value);
  }
  return Status::NotFound("no xattr " + std::string(name) + " on inode " + std::to_string(ino));
}

Result<std::string> NodeTable::PathOf(uint64_t ino) const {
  const Node* node = Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  if (ino == kRootIno) return std::string("/");
  std::vector<std::string_view> parts;
  // Parents have smaller numbers than their directories' children, so this ends.
  while (ino != kRootIno) {
    parts.push_back(Name(*node));
    ino = node->parent;
    node = Get(ino);
    if (node == nullptr) return Status::Internal("broken parent chain");
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    path += '/';
    path += *it;
  }
  return path;
}

size_t NodeTable::MemoryBytes() const {
  if (storage_ == nullptr) return 0;
  return storage_->nodes.capacity() * sizeof(Node) + storage_->dirents.capacity() * sizeof(Dirent) +
         storage_->xattrs.capacity() * sizeof(Xattr) + storage_->arena.capacity();
}

void NodeTable::Own(std::unique_ptr<Storage> storage) {
  nodes_ = storage->nodes;
  dirents_ = storage->dirents;
  xattrs_ = storage->xattrs;
  arena_ = storage->arena;
  storage_ = storage.get();
  owner_ = std::shared_ptr<const Storage>(std::move(storage));
}

Result<NodeTable> NodeTable::Adopt(const Records& records, std::shared_ptr<const void> owner) {
  auto bad = [](const std::string& what) { return Status::Corrupt("node table: " + what); };
  const std::span<const Node> nodes = records.nodes;
  const uint64_t arena_size = records.arena.size();
  auto in_arena = [arena_size](ArenaRef r) { return uint64_t{r.offset} + r.size <= arena_size; };
  if (nodes.empty() || nodes[0].type != EntryType::kDirectory || nodes[0].parent != kRootIno) {
    return bad("inode 1 is not the root directory");
  }
  if (nodes.size() > std::numeric_limits<uint32_t>::max() ||
      records.dirents.size() > std::numeric_limits<uint32_t>::max() ||
      records.xattrs.size() > std::numeric_limits<uint32_t>::max()) {
    return bad("too many records");
  }
  for (uint64_t ino = 1; ino <= nodes.size(); ++ino) {
    const Node& n = nodes[ino - 1];
    auto at = [ino] { return "inode " + std::to_string(ino) + ": "; };
    if (n.type > EntryType::kFifo || n.type == EntryType::kHardlink) return bad(at() + "bad type");
    if (!in_arena(n.name) || !in_arena(n.link_target))
      return bad(at() + "string outside the arena");
    if (n.parent < 1 || n.parent > nodes.size() ||
        nodes[n.parent - 1].type != EntryType::kDirectory) {
      return bad(at() + "bad parent");
    }
    if (ino != kRootIno && n.type == EntryType::kDirectory && n.parent >= ino) {
      return bad(at() + "directory numbered before its parent");
    }
    if (uint64_t{n.first_xattr} + n.xattr_count > records.xattrs.size()) {
      return bad(at() + "xattrs outside the table");
    }
    if (n.type != EntryType::kDirectory) continue;
    if (uint64_t{n.first_child} + n.child_count > records.dirents.size()) {
      return bad(at() + "names outside the table");
    }
    std::string_view previous;
    for (uint32_t i = 0; i < n.child_count; ++i) {
      const Dirent& d = records.dirents[n.first_child + i];
      if (!in_arena(d.name)) return bad(at() + "name outside the arena");
      std::string_view name = records.arena.substr(d.name.offset, d.name.size);
      if (!ValidName(name) || (i > 0 && !(previous < name))) {
        return bad(at() + "names not valid, sorted and unique");
      }
      if (d.ino <= kRootIno || d.ino > nodes.size()) return bad(at() + "name of no inode");
      previous = name;
    }
  }
  for (const Xattr& x : records.xattrs) {
    if (!in_arena(x.name) || !in_arena(x.value)) return bad("xattr outside the arena");
  }
  NodeTable table;
  table.nodes_ = records.nodes;
  table.dirents_ = records.dirents;
  table.xattrs_ = records.xattrs;
  table.arena_ = records.arena;
  table.owner_ = std::move(owner);
  return table;
}

// --- Builder ---

Result<ArenaRef> NodeTable::Builder::Append(std::string_view s) {
  std::string& arena = table_->arena;
  if (arena.size() + s.size() > std::numeric_limits<uint32_t>::max()) {
    overflow_ = true;
    return Status::Unsupported("node table string arena exceeds 4 GiB");
  }
  ArenaRef ref{static_cast<uint32_t>(arena.size()), static_cast<uint32_t>(s.size())};
  arena.append(s);
  return ref;
}

void NodeTable::Builder::Reserve(size_t inodes, size_t names, size_t arena_bytes) {
  table_->nodes.reserve(inodes);
  // The mount fills the node table to its reserved size and keeps it (~8 MB for 75 000
  // inodes): half the time of numbering the tree was its page faults.
  AdviseHugePages(table_->nodes.data(), table_->nodes.capacity() * sizeof(Node));
  children_set_.reserve(inodes);
  table_->dirents.reserve(names);
  table_->arena.reserve(arena_bytes);
}

uint64_t NodeTable::Builder::AddInode(
    const Node& node, std::string_view link_target,
    const std::vector<std::pair<std::string, std::string>>& xattrs) {
  Node n = node;
  n.parent = 0;
  n.name = {};
  n.nlink = 0;
  n.first_child = 0;
  n.child_count = 0;
  n.link_target = {};
  if (n.type == EntryType::kSymlink) {
    auto ref = Append(link_target);
    if (ref.has_value()) n.link_target = *ref;
    n.size = link_target.size();
  }
  if (n.type == EntryType::kDirectory) n.size = 0;
  std::vector<const std::pair<std::string, std::string>*> sorted;
  sorted.reserve(xattrs.size());
  for (const auto& x : xattrs) sorted.push_back(&x);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto* a, const auto* b) { return a->first < b->first; });
  n.first_xattr = static_cast<uint32_t>(table_->xattrs.size());
  n.xattr_count = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    // Duplicate names: the last one given wins (as PAX records do).
    if (i + 1 < sorted.size() && sorted[i + 1]->first == sorted[i]->first) continue;
    auto name = Append(sorted[i]->first);
    auto value = Append(sorted[i]->second);
    if (!name.has_value() || !value.has_value()) break;
    table_->xattrs.push_back(Xattr{*name, *value});
    ++n.xattr_count;
  }
  table_->nodes.push_back(n);
  children_set_.push_back(false);
  return table_->nodes.size();
}

Status NodeTable::Builder::SetChildren(
    uint64_t dir, const std::vector<std::pair<std::string_view, uint64_t>>& children) {
  Node* node = dir >= 1 && dir <= table_->nodes.size() ? &table_->nodes[dir - 1] : nullptr;
  if (node == nullptr || node->type != EntryType::kDirectory) {
    return Status::InvalidArgument("SetChildren: inode " + std::to_string(dir) +
                                   " is not a directory");
  }
  if (children_set_[dir - 1]) {
    return Status::InvalidArgument("SetChildren: inode " + std::to_string(dir) + " already set");
  }
  for (size_t i = 0; i < children.size(); ++i) {
    if (!ValidName(children[i].first)) {
      return Status::InvalidArgument("SetChildren: invalid name '" +
                                     std::string(children[i].first) + "'");
    }
    if (i > 0 && !(children[i - 1].first < children[i].first)) {
      return Status::InvalidArgument("SetChildren: names not sorted or duplicated at '" +
                                     std::string(children[i].first) + "'");
    }
    if (children[i].second < 1 || children[i].second > table_->nodes.size()) {
      return Status::InvalidArgument("SetChildren: no inode " + std::to_string(children[i].second));
    }
  }
  children_set_[dir - 1] = true;
  node->first_child = static_cast<uint32_t>(table_->dirents.size());
  node->child_count = static_cast<uint32_t>(children.size());
  for (const auto& [name, ino] : children) {
    IMGFS_ASSIGN_OR_RETURN(ArenaRef ref, Append(name));
    table_->dirents.push_back(Dirent{ref, static_cast<uint32_t>(ino)});
  }
  return Status::Ok();
}

Result<NodeTable> NodeTable::Builder::Finish() {
  std::unique_ptr<Storage> table = std::exchange(table_, std::make_unique<Storage>());
  std::vector<bool> children_set = std::move(children_set_);
  children_set_.clear();
  if (overflow_) {
    overflow_ = false;
    return Status::Unsupported("node table string arena exceeds 4 GiB");
  }
  std::vector<Node>& nodes = table->nodes;
  if (nodes.empty() || nodes[0].type != EntryType::kDirectory) {
    return Status::Internal("node table: inode 1 must be the root directory");
  }
  if (nodes.size() > std::numeric_limits<uint32_t>::max()) {
    return Status::Unsupported("node table: too many inodes");
  }
  nodes[0].parent = static_cast<uint32_t>(kRootIno);
  std::vector<uint32_t> names(nodes.size(), 0);
  for (uint64_t ino = 1; ino <= nodes.size(); ++ino) {
    Node& dir = nodes[ino - 1];
    if (dir.type != EntryType::kDirectory) continue;
    if (!children_set[ino - 1]) dir.child_count = 0;
    uint32_t subdirs = 0;
    for (uint32_t i = 0; i < dir.child_count; ++i) {
      const Dirent& d = table->dirents[dir.first_child + i];
      Node& child = nodes[d.ino - 1];
      if (d.ino == kRootIno) return Status::Internal("node table: the root has a name");
      if (names[d.ino - 1]++ == 0) {
        child.parent = static_cast<uint32_t>(ino);
        child.name = d.name;
      }
      if (child.type == EntryType::kDirectory) {
        if (names[d.ino - 1] > 1) return Status::Internal("node table: directory with two names");
        if (d.ino <= ino) return Status::Internal("node table: directory numbered before parent");
        ++subdirs;
      }
    }
    dir.nlink = 2 + subdirs;
  }
  for (uint64_t ino = 2; ino <= nodes.size(); ++ino) {
    if (names[ino - 1] == 0) {
      return Status::Internal("node table: inode " + std::to_string(ino) + " has no name");
    }
    if (nodes[ino - 1].type != EntryType::kDirectory) nodes[ino - 1].nlink = names[ino - 1];
  }
  table->nodes.shrink_to_fit();
  table->dirents.shrink_to_fit();
  table->xattrs.shrink_to_fit();
  table->arena.shrink_to_fit();
  NodeTable out;
  out.Own(std::move(table));
  return out;
}

}  // namespace imgfs::fs
