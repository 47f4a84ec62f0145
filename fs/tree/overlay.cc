// imgfs — the overlay merge (see fs/overlay.h for the semantics).
//
// The merge builds a temporary tree of MNodes whose names are views into the layers' entry
// paths (the layers outlive the merge), applies each layer in turn, then numbers the tree
// depth-first in name order into a NodeTable::Builder.
#include "fs/tree/overlay.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "base/log.h"

namespace imgfs::fs {

namespace {

constexpr uint32_t kNone = Node::kNoLayer;
// Deepest path accepted. PATH_MAX (4096) allows at most 2048 components, so no real image
// comes near; the bound keeps the merge's recursion (tree destruction) shallow on hostile input.
constexpr size_t kMaxDepth = 2048;
constexpr uint32_t kSynthesisedDirMode = 0755;

struct MNode {
  // The entry whose attributes the node shows (for a hardlink: the linked entry). nullptr for
  // a synthesised directory.
  const FileEntry* attrs = nullptr;
  uint32_t layer = kNone;  // position of the layer of `attrs`
  uint32_t entry = 0;      // index of `attrs` in that layer
  EntryType type = EntryType::kDirectory;
  int64_t mtime_sec = 0;  // synthesised directories only
  uint32_t mtime_nsec = 0;
  std::map<std::string_view, std::unique_ptr<MNode>> children;  // directories only
  uint64_t ino = 0;
};

// Splits "a/b/c" into components; false when the path is unusable.
bool SplitPath(std::string_view path, std::vector<std::string_view>* parts) {
  parts->clear();
  if (path.empty()) return true;  // the root
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view part = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty() || part == "." || part == ".." || part.starts_with(".wh.") ||
        part.find('\0') != std::string_view::npos) {
      return false;
    }
    parts->push_back(part);
    if (parts->size() > kMaxDepth) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

// Hardlink names as some writers store them: "/a/b", "./a/b".
std::string_view TrimLinkTarget(std::string_view target) {
  while (true) {
    if (target.starts_with("./")) {
      target.remove_prefix(2);
    } else if (target.starts_with("/")) {
      target.remove_prefix(1);
    } else {
      return target;
    }
  }
}

bool IsEstargzLandmark(std::string_view path) {
  return path == ".prefetch.landmark" || path == ".no.prefetch.landmark" ||
         path == "stargz.index.json";
}

bool IsNonDirType(EntryType t) {
  switch (t) {
    case EntryType::kRegular:
    case EntryType::kSymlink:
    case EntryType::kHardlink:
    case EntryType::kChar:
    case EntryType::kBlock:
    case EntryType::kFifo:
      return true;
    case EntryType::kDirectory:
    case EntryType::kWhiteout:
    case EntryType::kOpaque:
      return false;
  }
  return false;
}

// The node at `parts`, walking through directories only; nullptr if absent.
MNode* Find(MNode* root, const std::vector<std::string_view>& parts) {
  MNode* cur = root;
  for (std::string_view part : parts) {
    if (cur->type != EntryType::kDirectory) return nullptr;
    auto it = cur->children.find(part);
    if (it == cur->children.end()) return nullptr;
    cur = it->second.get();
  }
  return cur;
}

class Merger {
 public:
  explicit Merger(MergeStats* stats) : stats_(stats) {}

  void ApplyLayer(uint32_t pos, const LayerIndex& layer);
  Result<NodeTable> Build();

 private:
  void Place(uint32_t pos, const std::vector<FileEntry>& entries, uint32_t index,
             uint32_t data_index, const std::vector<std::string_view>& parts, bool merge_lower);
  static void SetFrom(MNode* node, uint32_t pos, const std::vector<FileEntry>& entries,
                      uint32_t data_index);

  MergeStats* stats_;
  MNode root_;
  // The inode given to each entry of each layer (0: none yet), so that the names of a
  // hardlink group, which share their data entry, share one inode. Dense: no allocation per
  // file, unlike a map.
  std::vector<std::vector<uint64_t>> inode_of_entry_;
  std::vector<std::string_view> parts_;  // scratch
};

void Merger::SetFrom(MNode* node, uint32_t pos, const std::vector<FileEntry>& entries,
                     uint32_t data_index) {
  const FileEntry& data = entries[data_index];
  node->attrs = &data;
  node->layer = pos;
  node->entry = data_index;
  node->type = data.type;
}

void Merger::ApplyLayer(uint32_t pos, const LayerIndex& layer) {
  const std::vector<FileEntry>& entries = layer.entries;
  if (inode_of_entry_.size() <= pos) inode_of_entry_.resize(pos + 1);
  inode_of_entry_[pos].assign(entries.size(), 0);
  const bool estargz = layer.format == LayerFormat::kEstargz;
  // Winning entry per path (last in tar order), and for hardlinks the entry with the data.
  std::unordered_map<std::string_view, uint32_t> last;
  last.reserve(entries.size());
  // Paths that have a non-directory entry anywhere in the layer: even when a directory entry
  // for the path comes last, an unpacker replaced the lower directory on the way.
  std::unordered_set<std::string_view> non_dirs;
  std::vector<uint32_t> data(entries.size(), kNone);
  std::vector<std::vector<std::string_view>> whiteouts;
  std::vector<std::vector<std::string_view>> opaques;
  std::vector<std::string_view> parts;
  for (uint32_t i = 0; i < entries.size(); ++i) {
    const FileEntry& e = entries[i];
    ++stats_->entries;
    if (!SplitPath(e.path, &parts)) {
      ++stats_->invalid_paths;
      continue;
    }
    if (estargz && IsEstargzLandmark(e.path)) {
      ++stats_->landmarks;
      continue;
    }
    switch (e.type) {
      case EntryType::kWhiteout:
        if (parts.empty()) {
          ++stats_->invalid_paths;  // the root cannot be hidden
        } else {
          whiteouts.push_back(parts);
        }
        break;
      case EntryType::kOpaque:
        opaques.push_back(parts);
        break;
      case EntryType::kDirectory:
        last[e.path] = i;
        data[i] = i;
        break;
      case EntryType::kHardlink: {
        auto it = parts.empty() ? last.end() : last.find(TrimLinkTarget(e.link_target));
        if (it == last.end() || data[it->second] == kNone ||
            entries[data[it->second]].type == EntryType::kDirectory) {
          ++stats_->bad_hardlinks;
          IMGFS_LOG(kDebug) << "layer " << pos << ": ignoring hardlink " << e.path << " -> "
                            << e.link_target;
          break;
        }
        data[i] = data[it->second];
        last[e.path] = i;
        non_dirs.insert(e.path);
        break;
      }
      case EntryType::kRegular:
      case EntryType::kSymlink:
      case EntryType::kChar:
      case EntryType::kBlock:
      case EntryType::kFifo:
        if (parts.empty()) {
          ++stats_->invalid_paths;  // the root must be a directory
        } else {
          last[e.path] = i;
          data[i] = i;
          non_dirs.insert(e.path);
        }
        break;
      default:
        ++stats_->invalid_paths;
        break;
    }
  }

  // 1. Whiteouts act on the layers below only, wherever they sit in the tar.
  for (const auto& p : whiteouts) {
    parts_ = p;
    std::string_view name = parts_.back();
    parts_.pop_back();
    MNode* parent = Find(&root_, parts_);
    if (parent != nullptr && parent->type == EntryType::kDirectory) parent->children.erase(name);
  }
  for (const auto& p : opaques) {
    MNode* dir = Find(&root_, p);
    if (dir != nullptr && dir->type == EntryType::kDirectory) dir->children.clear();
  }

  // 2. The layer's own entries, parents before children.
  std::vector<std::pair<std::string_view, uint32_t>> order(last.begin(), last.end());
  std::sort(order.begin(), order.end());
  for (const auto& [path, index] : order) {
    (void)SplitPath(path, &parts);
    // Ignored when an ancestor is a non-directory in this very layer.
    bool shadowed = false;
    size_t prefix = 0;
    for (size_t k = 0; k + 1 < parts.size() && !shadowed; ++k) {
      prefix += parts[k].size() + (k > 0 ? 1 : 0);
      auto it = last.find(path.substr(0, prefix));
      shadowed = it != last.end() && IsNonDirType(entries[it->second].type);
    }
    if (shadowed) {
      ++stats_->shadowed;
      continue;
    }
    Place(pos, entries, index, data[index], parts, non_dirs.count(path) == 0);
  }
}

void Merger::Place(uint32_t pos, const std::vector<FileEntry>& entries, uint32_t index,
                   uint32_t data_index, const std::vector<std::string_view>& parts,
                   bool merge_lower) {
  const FileEntry& e = entries[index];
  if (parts.empty()) {  // the root: a directory (checked when classifying)
    SetFrom(&root_, pos, entries, index);
    return;
  }
  MNode* cur = &root_;
  for (size_t k = 0; k + 1 < parts.size(); ++k) {
    std::unique_ptr<MNode>& child = cur->children[parts[k]];
    if (child == nullptr || child->type != EntryType::kDirectory) {
      child = std::make_unique<MNode>();  // synthesised parent
      child->mtime_sec = e.mtime_sec;
      child->mtime_nsec = e.mtime_nsec;
    }
    cur = child.get();
  }
  std::unique_ptr<MNode>& slot = cur->children[parts.back()];
  if (e.type == EntryType::kDirectory && merge_lower && slot != nullptr &&
      slot->type == EntryType::kDirectory) {
    SetFrom(slot.get(), pos, entries, index);  // dir over dir: keep the lower children
    return;
  }
  slot = std::make_unique<MNode>();
  SetFrom(slot.get(), pos, entries, data_index);
}

Result<NodeTable> Merger::Build() {
  NodeTable::Builder builder;
  {
    // The table's final sizes (hardlinked names counted as inodes: a slight over-estimate).
    size_t inodes = 0, names = 0, arena_bytes = 0;
    std::vector<const MNode*> walk = {&root_};
    while (!walk.empty()) {
      const MNode* n = walk.back();
      walk.pop_back();
      ++inodes;
      if (n->attrs != nullptr) {
        if (n->type == EntryType::kSymlink) arena_bytes += n->attrs->link_target.size();
        for (const auto& [name, value] : n->attrs->xattrs) {
          arena_bytes += name.size() + value.size();
        }
      }
      for (const auto& [name, child] : n->children) {
        ++names;
        arena_bytes += name.size();
        walk.push_back(child.get());
      }
    }
    builder.Reserve(inodes, names, arena_bytes);
  }
  std::vector<MNode*> dirs;
  std::vector<MNode*> stack = {&root_};
  static const std::vector<std::pair<std::string, std::string>> kNoXattrs;
  while (!stack.empty()) {
    MNode* n = stack.back();
    stack.pop_back();
    if (n->type != EntryType::kDirectory) {
      uint64_t& inode = inode_of_entry_[n->layer][n->entry];  // hardlink groups share it
      if (inode != 0) {
        n->ino = inode;
        continue;
      }
      Node node;
      const FileEntry& e = *n->attrs;
      node.type = e.type;
      node.mode = e.mode & 07777;
      node.uid = e.uid;
      node.gid = e.gid;
      node.size = e.type == EntryType::kRegular ? e.size : 0;
      node.payload_offset = e.type == EntryType::kRegular ? e.payload_offset : 0;
      node.mtime_sec = e.mtime_sec;
      node.mtime_nsec = e.mtime_nsec;
      node.dev_major = e.dev_major;
      node.dev_minor = e.dev_minor;
      node.layer = n->layer;
      node.entry = n->entry;
      n->ino = builder.AddInode(node, e.link_target, e.xattrs);
      inode = n->ino;
      continue;
    }
    Node node;
    node.type = EntryType::kDirectory;
    if (n->attrs != nullptr) {
      const FileEntry& e = *n->attrs;
      node.mode = e.mode & 07777;
      node.uid = e.uid;
      node.gid = e.gid;
      node.mtime_sec = e.mtime_sec;
      node.mtime_nsec = e.mtime_nsec;
      node.layer = n->layer;
      node.entry = n->entry;
    } else {
      node.mode = kSynthesisedDirMode;
      node.mtime_sec = n->mtime_sec;
      node.mtime_nsec = n->mtime_nsec;
    }
    n->ino = builder.AddInode(node, {}, n->attrs != nullptr ? n->attrs->xattrs : kNoXattrs);
    dirs.push_back(n);
    for (auto it = n->children.rbegin(); it != n->children.rend(); ++it) {
      stack.push_back(it->second.get());
    }
  }
  std::vector<std::pair<std::string_view, uint64_t>> kids;
  for (MNode* d : dirs) {
    kids.clear();
    kids.reserve(d->children.size());
    for (const auto& [name, child] : d->children) kids.emplace_back(name, child->ino);
    Status s = builder.SetChildren(d->ino, kids);
    if (!s.ok()) return Status::Internal("overlay merge: " + s.ToString());
  }
  return builder.Finish();
}

}  // namespace

Result<NodeTable> MergeLayers(std::span<const LayerIndex* const> layers, MergeStats* stats) {
  MergeStats local;
  if (stats == nullptr) stats = &local;
  *stats = MergeStats();
  if (layers.size() >= kNone) return Status::Unsupported("overlay merge: too many layers");
  Merger merger(stats);
  for (uint32_t pos = 0; pos < layers.size(); ++pos) {
    if (layers[pos] != nullptr) merger.ApplyLayer(pos, *layers[pos]);
  }
  Result<NodeTable> table = merger.Build();
  if (table.has_value() && (stats->invalid_paths + stats->bad_hardlinks + stats->shadowed) > 0) {
    IMGFS_LOG(kInfo) << "overlay merge: ignored " << stats->invalid_paths
                     << " entries with unusable paths, " << stats->bad_hardlinks
                     << " unresolvable hardlinks, " << stats->shadowed
                     << " entries below a non-directory of their layer";
  }
  return table;
}

}  // namespace imgfs::fs
