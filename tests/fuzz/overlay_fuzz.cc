// imgfs — fuzz target for the overlay merge: random layer stacks decoded from the input bytes
// (paths from a small alphabet that includes hostile names, every entry type, hardlinks to
// anything) must merge without crashing, and the merged tree must keep its invariants:
// every name is reachable from the root, lookup of every readdir name returns that inode,
// every parent is a directory, no `.wh.` name is visible, link counts match the names, and
// merging the same input twice gives the same inode numbers.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "fs/layer/layer_index.h"
#include "fs/tree/node_table.h"
#include "fs/tree/overlay.h"

namespace {

using imgfs::fs::DirEntry;
using imgfs::fs::EntryType;
using imgfs::fs::FileEntry;
using imgfs::fs::LayerFormat;
using imgfs::fs::LayerIndex;
using imgfs::fs::Node;
using imgfs::fs::NodeTable;

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

const char* const kNames[] = {
    "a", "b", "c", "d", ".wh.x", "..", ".", "", "stargz.index.json", ".no.prefetch.landmark",
    "e", "a"};

std::string Path(Input& in) {
  int depth = in.Byte() % 5;
  std::string p;
  for (int i = 0; i < depth; ++i) {
    if (i) p += '/';
    p += kNames[in.Byte() % (sizeof(kNames) / sizeof(kNames[0]))];
  }
  if (in.Byte() % 16 == 0) p = "/" + p;  // a leading slash now and then
  return p;
}

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "overlay invariant violated: %s\n", what);
  std::abort();
}

void Check(bool ok, const char* what) {
  if (!ok) Fail(what);
}

std::vector<std::string> Walk(const NodeTable& t) {
  std::vector<std::string> lines;
  std::vector<uint32_t> names(t.inode_count() + 1, 0);
  std::vector<bool> seen(t.inode_count() + 1, false);
  std::vector<uint64_t> stack = {NodeTable::kRootIno};
  seen[NodeTable::kRootIno] = true;
  while (!stack.empty()) {
    uint64_t dir = stack.back();
    stack.pop_back();
    const Node* d = t.Get(dir);
    Check(d != nullptr && d->type == EntryType::kDirectory, "parent is a directory");
    auto entries = t.ReadDir(dir);
    Check(entries.has_value(), "readdir of a directory");
    uint32_t subdirs = 0;
    std::string_view prev;
    for (size_t i = 0; i < entries->size(); ++i) {
      const DirEntry& e = (*entries)[i];
      Check(!e.name.empty() && e.name != "." && e.name != "..", "valid name");
      Check(e.name.substr(0, 4) != ".wh.", "no whiteout names");
      Check(i == 0 || prev < e.name, "sorted, unique names");
      prev = e.name;
      auto found = t.Lookup(dir, e.name);
      Check(found.has_value() && *found == e.ino, "lookup returns the readdir inode");
      const Node* n = t.Get(e.ino);
      Check(n != nullptr, "inode exists");
      Check(n->type == e.type, "readdir type");
      auto st = t.GetAttr(e.ino);
      Check(st.has_value(), "getattr");
      ++names[e.ino];
      if (n->type == EntryType::kDirectory) {
        ++subdirs;
        Check(!seen[e.ino], "a directory has one name");
        Check(n->parent == dir, "directory parent");
        stack.push_back(e.ino);
      } else if (n->type == EntryType::kSymlink) {
        Check(t.ReadLink(e.ino).has_value(), "readlink");
      }
      Check(t.Get(n->parent) != nullptr && t.Get(n->parent)->type == EntryType::kDirectory,
            "every parent is a directory");
      seen[e.ino] = true;
      lines.push_back(std::to_string(dir) + "/" + std::string(e.name) + "=" +
                      std::to_string(e.ino));
    }
    Check(d->nlink == 2 + subdirs, "directory nlink");
  }
  for (uint64_t ino = 2; ino <= t.inode_count(); ++ino) {
    Check(seen[ino], "every inode is reachable");
    const Node* n = t.Get(ino);
    if (n->type != EntryType::kDirectory) Check(n->nlink == names[ino], "file nlink = names");
  }
  return lines;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  std::vector<LayerIndex> layers(1 + in.Byte() % 4);
  for (LayerIndex& layer : layers) {
    layer.format = in.Byte() % 4 == 0 ? LayerFormat::kEstargz : LayerFormat::kTar;
    int count = in.Byte() % 24;
    for (int i = 0; i < count && !in.empty(); ++i) {
      FileEntry e;
      e.type = static_cast<EntryType>(in.Byte() % 9);
      e.path = Path(in);
      e.mode = static_cast<uint32_t>(in.Byte()) << 4 | in.Byte();
      e.uid = in.Byte();
      e.size = in.Byte();
      e.mtime_sec = static_cast<int8_t>(in.Byte());
      if (e.type == EntryType::kSymlink || e.type == EntryType::kHardlink) e.link_target = Path(in);
      if (in.Byte() % 8 == 0) e.xattrs = {{"user.k", "v"}, {"user.k", "w"}};
      layer.entries.push_back(std::move(e));
    }
  }
  std::vector<const LayerIndex*> ptrs;
  for (const LayerIndex& l : layers) ptrs.push_back(&l);
  imgfs::fs::MergeStats stats;
  auto first = imgfs::fs::MergeLayers(ptrs, &stats);
  Check(first.has_value(), "merge succeeds");
  auto second = imgfs::fs::MergeLayers(ptrs);
  Check(second.has_value(), "merge succeeds twice");
  Check(Walk(*first) == Walk(*second), "deterministic inode numbers");
  return 0;
}
