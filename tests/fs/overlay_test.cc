// imgfs — overlay merge conformance: table-driven OCI whiteout / opaque / replacement cases,
// the exact tree of the fixture image `tiny`, and a seeded reference-model check against layers
// applied naively to a real directory.
#include "fs/tree/overlay.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "fs/layer/index_builder.h"
#include "fs/tree/node_table.h"

namespace imgfs::fs {
namespace {

constexpr int64_t kT0 = 1704067200;  // 2024-01-01T00:00:00Z
constexpr int64_t kT2 = 1706745600;  // 2024-02-01T00:00:00Z
constexpr int64_t kT3 = 1709251200;  // 2024-03-01T00:00:00Z

FileEntry Make(std::string path, EntryType type, uint32_t mode, int64_t mtime = kT0) {
  FileEntry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = mode;
  e.mtime_sec = mtime;
  return e;
}
FileEntry Dir(std::string path, uint32_t mode = 0755, int64_t mtime = kT0) {
  return Make(std::move(path), EntryType::kDirectory, mode, mtime);
}
FileEntry File(std::string path, uint64_t size = 1, uint32_t mode = 0644, int64_t mtime = kT0) {
  FileEntry e = Make(std::move(path), EntryType::kRegular, mode, mtime);
  e.size = size;
  return e;
}
FileEntry Sym(std::string path, std::string target, int64_t mtime = kT0) {
  FileEntry e = Make(std::move(path), EntryType::kSymlink, 0777, mtime);
  e.link_target = std::move(target);
  return e;
}
FileEntry Hard(std::string path, std::string target, int64_t mtime = kT0) {
  FileEntry e = Make(std::move(path), EntryType::kHardlink, 0644, mtime);
  e.link_target = std::move(target);
  return e;
}
FileEntry Wh(std::string path) { return Make(std::move(path), EntryType::kWhiteout, 0, 0); }
FileEntry Opq(std::string path) { return Make(std::move(path), EntryType::kOpaque, 0, 0); }
FileEntry Fifo(std::string path, uint32_t mode = 0644) {
  return Make(std::move(path), EntryType::kFifo, mode);
}
FileEntry Chr(std::string path, uint32_t major, uint32_t minor, uint32_t mode = 0666) {
  FileEntry e = Make(std::move(path), EntryType::kChar, mode);
  e.dev_major = major;
  e.dev_minor = minor;
  return e;
}
FileEntry Owned(FileEntry e, uint32_t uid, uint32_t gid) {
  e.uid = uid;
  e.gid = gid;
  return e;
}

LayerIndex Layer(std::vector<FileEntry> entries, LayerFormat format = LayerFormat::kTar) {
  LayerIndex l;
  l.format = format;
  l.entries = std::move(entries);
  return l;
}

NodeTable MergeOrDie(const std::vector<LayerIndex>& layers, MergeStats* stats = nullptr) {
  std::vector<const LayerIndex*> ptrs;
  for (const auto& l : layers) ptrs.push_back(&l);
  Result<NodeTable> t = MergeLayers(ptrs, stats);
  EXPECT_TRUE(t.has_value()) << t.error().ToString();
  return t.has_value() ? std::move(t).value() : NodeTable();
}

char TypeChar(EntryType t) {
  switch (t) {
    case EntryType::kDirectory:
      return 'd';
    case EntryType::kSymlink:
      return 'l';
    case EntryType::kChar:
      return 'c';
    case EntryType::kBlock:
      return 'b';
    case EntryType::kFifo:
      return 'p';
    default:
      return 'f';
  }
}

std::string Octal(uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", mode & 07777);
  return buf;
}

// Compact dump, one line per name: "/path type mode nlink source", source "L<layer>E<entry>"
// or "syn"; symlinks add "->target".
void DumpInto(const NodeTable& t, uint64_t dir, const std::string& prefix,
              std::vector<std::string>* out) {
  auto entries = t.ReadDir(dir);
  ASSERT_TRUE(entries.has_value());
  for (const DirEntry& d : *entries) {
    const Node* n = t.Get(d.ino);
    ASSERT_NE(n, nullptr);
    std::string path = prefix + "/" + std::string(d.name);
    std::string line = path + " " + TypeChar(n->type) + " " + Octal(n->mode) + " n" +
                       std::to_string(n->nlink) + " " +
                       (n->layer == Node::kNoLayer
                            ? std::string("syn")
                            : "L" + std::to_string(n->layer) + "E" + std::to_string(n->entry));
    if (n->type == EntryType::kSymlink) line += " ->" + std::string(*t.ReadLink(d.ino));
    out->push_back(line);
    if (n->type == EntryType::kDirectory) DumpInto(t, d.ino, path, out);
  }
}

std::vector<std::string> Dump(const NodeTable& t) {
  std::vector<std::string> out;
  const Node* root = t.Get(NodeTable::kRootIno);
  if (root == nullptr) return out;
  out.push_back("/ d " + Octal(root->mode) + " n" + std::to_string(root->nlink) + " " +
                (root->layer == Node::kNoLayer
                     ? std::string("syn")
                     : "L" + std::to_string(root->layer) + "E" + std::to_string(root->entry)));
  DumpInto(t, NodeTable::kRootIno, "", &out);
  return out;
}

// --- Table-driven conformance ---

struct Case {
  std::string name;
  std::vector<LayerIndex> layers;
  std::vector<std::string> expected;  // Dump() without the root line
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  c.push_back({"whiteout_file",
               {Layer({Dir("a"), File("a/b"), File("a/c")}), Layer({Dir("a"), Wh("a/b")})},
               {"/a d 0755 n2 L1E0", "/a/c f 0644 n1 L0E2"}});
  c.push_back({"whiteout_dir_subtree",
               {Layer({Dir("a"), Dir("a/b"), Dir("a/b/c"), File("a/b/c/bar"), File("a/x")}),
                Layer({Wh("a/b")})},
               {"/a d 0755 n2 L0E0", "/a/x f 0644 n1 L0E4"}});
  c.push_back({"whiteout_then_recreate_same_layer",
               {Layer({Dir("a"), File("a/old")}), Layer({Wh("a"), Dir("a", 0700), File("a/new")})},
               {"/a d 0700 n2 L1E1", "/a/new f 0644 n1 L1E2"}});
  c.push_back({"whiteout_after_own_entry_in_tar_order",
               {Layer({Dir("a"), File("a/b")}), Layer({File("a/b", 2), Wh("a/b")})},
               {"/a d 0755 n2 L0E0", "/a/b f 0644 n1 L1E0"}});
  c.push_back({"whiteout_of_absent_path_is_harmless",
               {Layer({Dir("a"), File("a/b")}),
                Layer({Wh("nothere"), Wh("x/y/z"), Wh("a/b/c"), Wh("a/zz")})},
               {"/a d 0755 n2 L0E0", "/a/b f 0644 n1 L0E1"}});
  c.push_back({"whiteout_hides_only_lower_not_upper",
               {Layer({File("f")}), Layer({Wh("f")}), Layer({File("f", 3)})},
               {"/f f 0644 n1 L2E0"}});
  c.push_back({"opaque_before_own_entries",
               {Layer({Dir("d"), File("d/x"), Dir("d/y"), File("d/y/z")}),
                Layer({Dir("d", 0711), Opq("d"), File("d/n")})},
               {"/d d 0711 n2 L1E0", "/d/n f 0644 n1 L1E2"}});
  c.push_back({"opaque_after_own_entries_in_tar_order",
               {Layer({Dir("d"), File("d/x"), Dir("d/y"), File("d/y/z")}),
                Layer({Dir("d", 0711), File("d/n"), Opq("d")})},
               {"/d d 0711 n2 L1E0", "/d/n f 0644 n1 L1E1"}});
  c.push_back({"opaque_recreated_subdir",
               {Layer({Dir("d"), File("d/x"), Dir("d/y"), File("d/y/z")}),
                Layer({Dir("d"), Opq("d"), Dir("d/y"), File("d/y/w")})},
               {"/d d 0755 n3 L1E0", "/d/y d 0755 n2 L1E2", "/d/y/w f 0644 n1 L1E3"}});
  c.push_back({"opaque_without_dir_entry_keeps_lower_attributes",
               {Layer({Dir("d", 0700), File("d/x")}), Layer({Opq("d")})},
               {"/d d 0700 n2 L0E0"}});
  c.push_back(
      {"opaque_only_hides_lower_layers",
       {Layer({Dir("d"), File("d/x")}), Layer({Opq("d"), File("d/y")}), Layer({File("d/z")})},
       {"/d d 0755 n2 L0E0", "/d/y f 0644 n1 L1E1", "/d/z f 0644 n1 L2E0"}});
  c.push_back({"dir_replaced_by_file",
               {Layer({Dir("a"), Dir("a/b"), File("a/b/c")}), Layer({File("a", 5)})},
               {"/a f 0644 n1 L1E0"}});
  c.push_back({"dir_replaced_by_symlink",
               {Layer({Dir("a"), File("a/x")}), Layer({Sym("a", "elsewhere")})},
               {"/a l 0777 n1 L1E0 ->elsewhere"}});
  c.push_back({"file_replaced_by_dir",
               {Layer({File("a")}), Layer({Dir("a", 0750), File("a/x")})},
               {"/a d 0750 n2 L1E0", "/a/x f 0644 n1 L1E1"}});
  c.push_back({"dir_over_dir_merges_children_takes_upper_attributes",
               {Layer({Dir("a", 0700), File("a/x")}), Layer({Dir("a", 0755), File("a/y")})},
               {"/a d 0755 n2 L1E0", "/a/x f 0644 n1 L0E1", "/a/y f 0644 n1 L1E1"}});
  c.push_back({"implicit_parents_from_lower",
               {Layer({Dir("u", 0700), Dir("u/s", 0750)}), Layer({File("u/s/doc")})},
               {"/u d 0700 n3 L0E0", "/u/s d 0750 n2 L0E1", "/u/s/doc f 0644 n1 L1E0"}});
  c.push_back({"implicit_parents_synthesised",
               {Layer({}), Layer({File("p/q/r")})},
               {"/p d 0755 n3 syn", "/p/q d 0755 n2 syn", "/p/q/r f 0644 n1 L1E0"}});
  c.push_back({"implicit_parent_replaces_lower_file",
               {Layer({File("p")}), Layer({File("p/q")})},
               {"/p d 0755 n2 syn", "/p/q f 0644 n1 L1E0"}});
  c.push_back({"duplicates_last_wins",
               {Layer({File("f", 1, 0600), File("f", 2, 0640)})},
               {"/f f 0640 n1 L0E1"}});
  c.push_back({"duplicate_dir_then_file_drops_children",
               {Layer({Dir("a"), File("a/x"), File("a")})},
               {"/a f 0644 n1 L0E2"}});
  c.push_back({"duplicate_file_then_dir_keeps_children",
               {Layer({File("a"), Dir("a", 0701), File("a/x")})},
               {"/a d 0701 n2 L0E1", "/a/x f 0644 n1 L0E2"}});
  c.push_back(
      {"duplicate_file_then_dir_drops_lower_subtree",
       {Layer({Dir("a"), File("a/old")}), Layer({File("a"), Dir("a", 0701), File("a/new")})},
       {"/a d 0701 n2 L1E1", "/a/new f 0644 n1 L1E2"}});
  c.push_back({"hardlink_group_nlink",
               {Layer({Dir("bin"), File("bin/busybox", 10, 0755), Hard("bin/sh", "bin/busybox"),
                       Hard("bin/ls", "bin/busybox"), Hard("bin/cat", "/bin/busybox")})},
               {"/bin d 0755 n2 L0E0", "/bin/busybox f 0755 n4 L0E1", "/bin/cat f 0755 n4 L0E1",
                "/bin/ls f 0755 n4 L0E1", "/bin/sh f 0755 n4 L0E1"}});
  c.push_back({"hardlink_chain",
               {Layer({File("a"), Hard("b", "a"), Hard("c", "b")})},
               {"/a f 0644 n3 L0E0", "/b f 0644 n3 L0E0", "/c f 0644 n3 L0E0"}});
  c.push_back({"hardlink_target_whited_out_keeps_data",
               {Layer({File("x"), Hard("y", "x")}), Layer({Wh("x")})},
               {"/y f 0644 n1 L0E0"}});
  c.push_back({"hardlink_target_replaced_later_in_layer",
               {Layer({File("x"), Hard("y", "x"), File("x", 7)})},
               {"/x f 0644 n1 L0E2", "/y f 0644 n1 L0E0"}});
  c.push_back({"hardlink_partly_replaced_by_upper",
               {Layer({File("x"), Hard("y", "x"), Hard("z", "x")}), Layer({File("y")})},
               {"/x f 0644 n2 L0E0", "/y f 0644 n1 L1E0", "/z f 0644 n2 L0E0"}});
  c.push_back({"hardlink_to_symlink",
               {Layer({Sym("s", "t"), Hard("h", "s")})},
               {"/h l 0777 n2 L0E0 ->t", "/s l 0777 n2 L0E0 ->t"}});
  c.push_back({"hardlink_bad_targets_ignored",
               {Layer({Dir("d"), Hard("h1", "d"), Hard("h2", "missing"), Hard("h3", "later"),
                       File("later")})},
               {"/d d 0755 n2 L0E0", "/later f 0644 n1 L0E4"}});
  c.push_back({"umoci_whiteouts_below_file_of_same_layer",
               {Layer({Dir("opt"), Dir("opt/app"), File("opt/app/config"), Dir("opt/app/lib"),
                       File("opt/app/lib/x")}),
                Layer({Dir("opt"), File("opt/app", 40), Wh("opt/app/config"), Wh("opt/app/lib")})},
               {"/opt d 0755 n2 L1E0", "/opt/app f 0644 n1 L1E1"}});
  c.push_back({"entries_below_file_of_same_layer_ignored",
               {Layer({File("a"), File("a/b"), Dir("a/c")})},
               {"/a f 0644 n1 L0E0"}});
  c.push_back({"invalid_paths_and_wh_names_ignored",
               {Layer({File(".wh.x"), File("a/.wh.y"), File("../escape"), File("a/./b"),
                       File("a//b"), File("ok")})},
               {"/ok f 0644 n1 L0E5"}});
  c.push_back({"root_entry_attributes_topmost",
               {Layer({Dir("", 0700), File("f")}), Layer({Dir("", 0751)})},
               {"/f f 0644 n1 L0E1"}});
  c.push_back({"estargz_landmarks_hidden_at_root_only",
               {Layer({File(".no.prefetch.landmark"), File("a"), File(".prefetch.landmark"),
                       Dir("sub"), File("sub/stargz.index.json"), File("stargz.index.json")},
                      LayerFormat::kEstargz),
                Layer({File("stargz.index.json")}, LayerFormat::kTarGzip)},
               {"/a f 0644 n1 L0E1", "/stargz.index.json f 0644 n1 L1E0", "/sub d 0755 n2 L0E3",
                "/sub/stargz.index.json f 0644 n1 L0E4"}});
  c.push_back({"special_files",
               {Layer({Dir("dev"), Chr("dev/null", 1, 3), Fifo("fifo")})},
               {"/dev d 0755 n2 L0E0", "/dev/null c 0666 n1 L0E1", "/fifo p 0644 n1 L0E2"}});
  // Paths are placed in bytewise order, where '-' and '.' sort before '/': a directory's
  // subtree can come after a sibling that extends its name.
  c.push_back({"sorted_order_shadow_after_longer_sibling",
               {Layer({File("a/b"), Dir("a/b-c"), File("a/b-c/z"), File("a/b/x")})},
               {"/a d 0755 n3 syn", "/a/b f 0644 n1 L0E0", "/a/b-c d 0755 n2 L0E1",
                "/a/b-c/z f 0644 n1 L0E2"}});
  c.push_back({"sorted_order_lower_dir_found_again_after_sibling",
               {Layer({Dir("a"), Dir("a/b"), File("a/b/old")}),
                Layer({File("a/b/x"), File("a/b-c"), File("a/b.d/y"), File("a/b/z")})},
               {"/a d 0755 n4 L0E0", "/a/b d 0755 n2 L0E1", "/a/b/old f 0644 n1 L0E2",
                "/a/b/x f 0644 n1 L1E0", "/a/b/z f 0644 n1 L1E3", "/a/b-c f 0644 n1 L1E1",
                "/a/b.d d 0755 n2 syn", "/a/b.d/y f 0644 n1 L1E2"}});
  c.push_back({"sorted_order_file_then_dir_of_same_layer_below_sibling",
               {Layer({Dir("a"), Dir("a/b"), File("a/b/old")}),
                Layer({File("a/b"), File("a/b!"), Dir("a/b", 0700), File("a/b/new")})},
               {"/a d 0755 n3 L0E0", "/a/b d 0700 n2 L1E2", "/a/b/new f 0644 n1 L1E3",
                "/a/b! f 0644 n1 L1E1"}});
  c.push_back(
      {"dir_nlink_counts_subdirs",
       {Layer({Dir("a"), Dir("a/b"), Dir("a/c"), File("a/f")})},
       {"/a d 0755 n4 L0E0", "/a/b d 0755 n2 L0E1", "/a/c d 0755 n2 L0E2", "/a/f f 0644 n1 L0E3"}});
  return c;
}

TEST(OverlayConformance, TableDriven) {
  for (const Case& tc : Cases()) {
    SCOPED_TRACE(tc.name);
    NodeTable t = MergeOrDie(tc.layers);
    std::vector<std::string> got = Dump(t);
    ASSERT_FALSE(got.empty());
    got.erase(got.begin());  // the root line is checked separately
    EXPECT_EQ(got, tc.expected);
  }
}

LayerIndex RandomLayer(std::mt19937& rng);

// LayerMerge with each layer's input prepared beforehand (as a mount does on its loading
// threads) gives the same tree and counts as MergeLayers preparing them itself.
TEST(OverlayConformance, PreparedInputsMergeTheSame) {
  auto same = [](const std::vector<LayerIndex>& layers) {
    LayerMerge merge;
    for (const auto& l : layers) {
      const MergeInput input = PrepareMergeInput(l);
      ASSERT_TRUE(merge.Add(&l, input).ok());
    }
    MergeStats direct_stats, prepared_stats;
    NodeTable direct = MergeOrDie(layers, &direct_stats);
    Result<NodeTable> prepared = merge.Finish(&prepared_stats);
    ASSERT_TRUE(prepared.has_value()) << prepared.error().ToString();
    EXPECT_EQ(Dump(*prepared), Dump(direct));
    EXPECT_EQ(prepared_stats.entries, direct_stats.entries);
    EXPECT_EQ(prepared_stats.invalid_paths, direct_stats.invalid_paths);
    EXPECT_EQ(prepared_stats.bad_hardlinks, direct_stats.bad_hardlinks);
    EXPECT_EQ(prepared_stats.shadowed, direct_stats.shadowed);
    EXPECT_EQ(prepared_stats.landmarks, direct_stats.landmarks);
  };
  for (const Case& tc : Cases()) {
    SCOPED_TRACE(tc.name);
    same(tc.layers);
  }
  std::mt19937 rng(12345);
  for (int s = 0; s < 200; ++s) {
    SCOPED_TRACE("random stack " + std::to_string(s));
    std::vector<LayerIndex> layers;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) layers.push_back(RandomLayer(rng));
    same(layers);
  }
  // Inputs that do not belong to the layers are refused, never read out of bounds.
  std::vector<LayerIndex> two = {Layer({Dir("a"), File("a/f")}), Layer({File("g")})};
  LayerMerge swapped;
  EXPECT_EQ(swapped.Add(&two[0], PrepareMergeInput(two[1])).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(swapped.Add(&two[1], PrepareMergeInput(two[0])).code(), StatusCode::kInvalidArgument);
  // Nothing after Finish.
  LayerMerge finished;
  ASSERT_TRUE(finished.Add(&two[0]).ok());
  ASSERT_TRUE(finished.Finish().has_value());
  EXPECT_EQ(finished.Add(&two[1]).code(), StatusCode::kInternal);
}

// PrepareMergeInput sorts by merging the input's ascending runs (tar order is a few long ones):
// the order must be exactly std::stable_sort's by path, duplicates in index order, however
// the runs fall. Names with bytes below '/' ("a-b", "a.h", "a b") break a tar walk's order.
TEST(OverlayConformance, PreparedOrderIsAStableSortByPath) {
  const std::vector<std::string> names = {"a", "a-b", "a.h", "a b", "b", "a0", "c"};
  std::mt19937 rng(777);
  for (int s = 0; s < 300; ++s) {
    SCOPED_TRACE("random layer " + std::to_string(s));
    std::vector<FileEntry> entries;
    const int n = static_cast<int>(rng() % 200);
    std::string prev;
    for (int i = 0; i < n; ++i) {
      std::string path;
      if (!prev.empty() && rng() % 3 != 0) path = prev.substr(0, prev.rfind('/') + 1);
      if (path.empty() && rng() % 2 == 0 && !prev.empty()) path = prev + "/";
      if (std::count(path.begin(), path.end(), '/') > 3) path.clear();
      path += names[rng() % names.size()];
      entries.push_back(rng() % 4 == 0 ? File(path) : Dir(path));
      prev = path;
    }
    const LayerIndex layer = Layer(entries);
    const MergeInput input = PrepareMergeInput(layer);
    std::vector<MergeInput::PathEntry> expected;
    for (uint32_t i = 0; i < layer.entries.size(); ++i) {
      expected.push_back({layer.entries[i].path, i});
    }
    std::stable_sort(expected.begin(), expected.end(),
                     [](const auto& a, const auto& b) { return a.path < b.path; });
    ASSERT_EQ(input.sorted.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(input.sorted[i].path, expected[i].path) << i;
      EXPECT_EQ(input.sorted[i].index, expected[i].index) << i;
    }
  }
}

TEST(OverlayConformance, RootAttributes) {
  NodeTable none = MergeOrDie({Layer({File("f")})});
  EXPECT_EQ(Dump(none)[0], "/ d 0755 n2 syn");
  NodeTable top = MergeOrDie({Layer({Dir("", 0700)}), Layer({Dir("", 0751), Dir("x")})});
  EXPECT_EQ(Dump(top)[0], "/ d 0751 n3 L1E0");
  NodeTable empty = MergeOrDie({});
  EXPECT_EQ(empty.inode_count(), 1u);
  EXPECT_EQ(Dump(empty)[0], "/ d 0755 n2 syn");
}

TEST(OverlayConformance, SynthesisedParentTakesEntryMtime) {
  NodeTable t = MergeOrDie({Layer({Owned(File("p/q", 1, 0600, 12345), 7, 8)})});
  auto p = t.Lookup(NodeTable::kRootIno, "p");
  ASSERT_TRUE(p.has_value());
  auto st = t.GetAttr(*p);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->st_mode, S_IFDIR | 0755u);
  EXPECT_EQ(st->st_uid, 0u);
  EXPECT_EQ(st->st_gid, 0u);
  EXPECT_EQ(st->st_mtim.tv_sec, 12345);
  auto q = t.Lookup(*p, "q");
  ASSERT_TRUE(q.has_value());
  auto qs = t.GetAttr(*q);
  EXPECT_EQ(qs->st_uid, 7u);
  EXPECT_EQ(qs->st_gid, 8u);
  EXPECT_EQ(qs->st_mode, S_IFREG | 0600u);
}

// A synthesised parent takes the mtime of the first entry below it in path order (bytewise,
// not tar order): here "d/a-b", although "d/a/x" comes first in the tar.
TEST(OverlayConformance, SynthesisedParentMtimeFollowsPathOrder) {
  NodeTable t = MergeOrDie({Layer({File("d/a/x", 1, 0644, kT3), File("d/a-b", 1, 0644, kT2)})});
  auto d = t.Lookup(NodeTable::kRootIno, "d");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(t.GetAttr(*d)->st_mtim.tv_sec, kT2);
  auto a = t.Lookup(*d, "a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(t.GetAttr(*a)->st_mtim.tv_sec, kT3);
}

// One directory with many names spread over two layers, the upper one's names between the
// lower one's and in reverse tar order, some replacing lower ones.
TEST(OverlayConformance, WideDirectoryAcrossLayers) {
  constexpr int kNames = 40000;
  auto name = [](int i) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "n%05d", i);
    return std::string(buf);
  };
  std::vector<FileEntry> lower = {Dir("w")};
  std::vector<FileEntry> upper;
  for (int i = 0; i < kNames; i += 2) lower.push_back(File("w/" + name(i), 1));
  for (int i = kNames - 1; i > 0; i -= 2) upper.push_back(File("w/" + name(i), 2));
  for (int i = 0; i < kNames; i += 10) upper.push_back(File("w/" + name(i), 3));
  NodeTable t = MergeOrDie({Layer(std::move(lower)), Layer(std::move(upper))});
  auto w = t.Lookup(NodeTable::kRootIno, "w");
  ASSERT_TRUE(w.has_value());
  auto names = t.ReadDir(*w);
  ASSERT_TRUE(names.has_value());
  ASSERT_EQ(names->size(), static_cast<size_t>(kNames));
  for (int i = 0; i < kNames; ++i) {
    const DirEntry& d = (*names)[i];
    ASSERT_EQ(d.name, name(i));
    const Node* n = t.Get(d.ino);
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->size, i % 10 == 0 ? 3u : (i % 2 == 1 ? 2u : 1u)) << d.name;
    EXPECT_EQ(n->layer, i % 2 == 0 && i % 10 != 0 ? 0u : 1u) << d.name;
  }
}

TEST(OverlayConformance, HardlinksShareOneInode) {
  NodeTable t = MergeOrDie({Layer({File("a", 99, 0700), Hard("b", "a"), Hard("c", "b")})});
  auto a = t.Lookup(NodeTable::kRootIno, "a");
  auto b = t.Lookup(NodeTable::kRootIno, "b");
  auto c = t.Lookup(NodeTable::kRootIno, "c");
  ASSERT_TRUE(a.has_value() && b.has_value() && c.has_value());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*a, *c);
  EXPECT_EQ(t.inode_count(), 2u);
  auto st = t.GetAttr(*b);
  EXPECT_EQ(st->st_size, 99);
  EXPECT_EQ(st->st_nlink, 3u);
  EXPECT_EQ(st->st_mode, S_IFREG | 0700u);
}

TEST(OverlayConformance, StatsCountIgnoredEntries) {
  MergeStats stats;
  MergeOrDie({Layer({File(".wh.x"), Hard("h", "missing"), File("f"), File("f/g"),
                     File(".no.prefetch.landmark")},
                    LayerFormat::kEstargz)},
             &stats);
  EXPECT_EQ(stats.entries, 5u);
  EXPECT_EQ(stats.invalid_paths, 1u);
  EXPECT_EQ(stats.bad_hardlinks, 1u);
  EXPECT_EQ(stats.shadowed, 1u);
  EXPECT_EQ(stats.landmarks, 1u);
}

TEST(OverlayConformance, DeterministicInodeNumbers) {
  std::vector<LayerIndex> layers = {
      Layer({Dir("z"), File("z/1"), Dir("a"), File("a/2"), File("m")}),
      Layer({File("b"), Dir("a/c")})};
  NodeTable t1 = MergeOrDie(layers);
  NodeTable t2 = MergeOrDie(layers);
  ASSERT_EQ(t1.inode_count(), t2.inode_count());
  // Depth-first in name order: / a a/2 a/c b m z z/1.
  std::vector<std::string> paths;
  for (uint64_t ino = 1; ino <= t1.inode_count(); ++ino) {
    paths.push_back(*t1.PathOf(ino));
    EXPECT_EQ(*t1.PathOf(ino), *t2.PathOf(ino));
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"/", "/a", "/a/2", "/a/c", "/b", "/m", "/z", "/z/1"}));
}

// --- The fixture image `tiny` ---

int64_t ParseTime(const std::string& iso) {
  struct tm tm = {};
  if (strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm) == nullptr) return INT64_MIN;
  return timegm(&tm);
}

std::string FormatTime(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Hex(std::string_view bytes) {
  std::string out;
  char buf[3];
  for (unsigned char ch : bytes) {
    std::snprintf(buf, sizeof(buf), "%02x", ch);
    out += buf;
  }
  return out;
}

// The listing format of tiny.expected.txt (list-tree.py), with the content column of regular
// files replaced by "*" (the merge does not read data).
void ListTreeInto(const NodeTable& t, uint64_t ino, const std::string& path,
                  std::vector<std::string>* out) {
  const Node* n = t.Get(ino);
  ASSERT_NE(n, nullptr);
  auto st = t.GetAttr(ino);
  ASSERT_TRUE(st.has_value());
  std::string size = "-", content = "-", nlink = "-", xattrs = "-";
  char type = TypeChar(n->type);
  if (type == 'f') {
    size = std::to_string(n->size);
    content = "*";
    nlink = std::to_string(n->nlink);
  } else if (type == 'l') {
    size = std::to_string(n->size);
    content = std::string(*t.ReadLink(ino));
  } else if (type == 'c' || type == 'b') {
    content = std::to_string(major(st->st_rdev)) + ":" + std::to_string(minor(st->st_rdev));
  }
  auto names = t.ListXattr(ino);
  ASSERT_TRUE(names.has_value());
  if (!names->empty()) {
    xattrs.clear();
    for (std::string_view name : *names) {
      if (!xattrs.empty()) xattrs += ",";
      xattrs += std::string(name) + "=0x" + Hex(*t.GetXattr(ino, name));
    }
  }
  out->push_back(path + "\t" + type + "\t" + Octal(n->mode) + "\t" + std::to_string(n->uid) + ":" +
                 std::to_string(n->gid) + "\t" + size + "\t" + content + "\t" +
                 FormatTime(n->mtime_sec) + "\t" + nlink + "\t" + xattrs);
  if (n->type != EntryType::kDirectory) return;
  auto children = t.ReadDir(ino);
  ASSERT_TRUE(children.has_value());
  for (const DirEntry& d : *children) {
    ListTreeInto(t, d.ino, (path == "/" ? "" : path) + "/" + std::string(d.name), out);
  }
}

std::vector<std::string> ListTree(const NodeTable& t) {
  std::vector<std::string> out;
  ListTreeInto(t, NodeTable::kRootIno, "/", &out);
  std::sort(out.begin(), out.end());
  return out;
}

// The image fixtures made by real tools (tests/fixtures): $IMGFS_FIXTURES_DIR, else the committed
// ones.
std::string FixturesDir() {
  const char* env = std::getenv("IMGFS_FIXTURES_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (env != nullptr && *env != '\0') return env;
  return IMGFS_FIXTURES_DIR;
}

std::vector<std::string> ExpectedTiny() {
  std::vector<std::string> out;
  std::ifstream in(std::string(FixturesDir()) + "/tiny.expected.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string col;
    while (std::getline(ss, col, '\t')) cols.push_back(col);
    if (cols.size() == 9 && cols[1] == "f") cols[5] = "*";
    std::string joined;
    for (size_t i = 0; i < cols.size(); ++i) joined += (i ? "\t" : "") + cols[i];
    out.push_back(joined);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The three layers of `tiny` as tests/fixtures/README.md describes them.
std::vector<LayerIndex> TinyLayers() {
  const int64_t os_release = ParseTime("2001-02-03T04:05:06Z");
  std::vector<FileEntry> l1 = {
      Dir(""),
      Dir("bin"),
      File("bin/busybox", 1982256, 0755),
      Hard("bin/cat", "bin/busybox"),
      Hard("bin/echo", "bin/busybox"),
      Hard("bin/env", "bin/busybox"),
      Hard("bin/ls", "bin/busybox"),
      Hard("bin/sh", "bin/busybox"),
      Dir("data"),
      File("data/changeme.txt", 20),
      Dir("data/deep"),
      Dir("data/deep/a"),
      Dir("data/deep/a/b"),
      Dir("data/deep/a/b/c"),
      Dir("data/deep/a/b/c/d"),
      Dir("data/deep/a/b/c/d/e"),
      Dir("data/deep/a/b/c/d/e/f"),
      Dir("data/deep/a/b/c/d/e/f/g"),
      Dir("data/deep/a/b/c/d/e/f/g/h"),
      File("data/deep/a/b/c/d/e/f/g/h/long-file-name-long-file-name-long-file-name-long-file-"
           "name-long-file-name-long-file-name-long-file-name-long-file-name-long-file-name-"
           "long-file-name-end.txt",
           35),
      File("data/empty", 0),
      Fifo("data/fifo"),
      File("data/héllo wörld.txt", 11),
      Sym("data/link-absolute", "/etc/passwd"),
      Sym("data/link-dangling", "/nonexistent/target"),
      Sym("data/link-relative", "../etc/os-release", ParseTime("2022-12-31T23:59:59Z")),
      Sym("data/link-to-dir", "deep/a/b"),
      File("data/name with spaces.txt", 19),
      File("data/pre-epoch.txt", 18, 0644, -14182940),
      File("data/random.bin", 1576960, 0644, ParseTime("2020-02-02T02:02:02Z")),
      File("data/xattr.txt", 22),
      File("data/zeros.bin", 1572864, 0644, ParseTime("2019-09-09T09:09:09Z")),
      Dir("dev"),
      Chr("dev/null", 1, 3),
      Dir("etc"),
      Dir("etc/conf.d"),
      File("etc/conf.d/a.conf"),
      File("etc/conf.d/b.conf"),
      Dir("etc/conf.d/sub"),
      File("etc/conf.d/sub/c.conf"),
      File("etc/group", 23),
      File("etc/issue", 10),
      File("etc/motd", 10),
      File("etc/os-release", 90, 0644, os_release),
      File("etc/passwd", 79),
      Dir("home"),
      Owned(Dir("home/user", 0750), 1000, 1000),
      Owned(File("home/user/.profile", 16), 1000, 1000),
      Owned(File("home/user/notes.txt", 26, 0600, ParseTime("2023-06-15T12:34:56Z")), 1000, 1000),
      Dir("opt"),
      Dir("opt/app"),
      File("opt/app/config"),
      Dir("opt/app/lib"),
      File("opt/app/lib/libapp.so.1"),
      Dir("root", 0700),
      Dir("tmp", 01777),
      Dir("usr"),
      Dir("usr/bin"),
      File("usr/bin/netcap-tool", 33, 0755),
      File("usr/bin/setuid-tool", 29, 04755),
      Dir("usr/share"),
      Dir("usr/share/doc"),
      Dir("usr/share/doc/x"),
      File("usr/share/doc/x/README"),
      File("usr/share/doc/x/copyright"),
      Dir("usr/share/doc/x/examples"),
      File("usr/share/doc/x/examples/example.txt"),
  };
  for (FileEntry& e : l1) {
    if (e.path == "data/xattr.txt") {
      e.xattrs = {{"user.fixture.binary", std::string("\x00\xff\x10", 3)},
                  {"user.fixture.comment", "hello xattr"}};
    }
    if (e.path == "usr/bin/netcap-tool") {
      e.xattrs = {{"security.capability",
                   std::string("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                               "\x00\x00\x00\x00",
                               20)}};
    }
  }
  std::vector<FileEntry> l2 = {
      Dir("data", 0755, kT2),
      File("data/added-in-layer2.txt", 17, 0644, kT2),
      File("data/changeme.txt", 31, 0600, kT2),
      Dir("etc", 0755, kT2),
      Wh("etc/issue"),
      Dir("etc/motd", 0755, kT2),
      File("etc/motd/README", 35, 0644, kT2),
      Dir("opt", 0755, kT2),
      File("opt/app", 40, 0644, kT2),
      Dir("usr/share/doc", 0755, kT2),
      Wh("usr/share/doc/x"),
  };
  std::vector<FileEntry> l3 = {
      Dir("etc", 0755, kT3),
      Dir("etc/conf.d", 0755, kT3),
      Opq("etc/conf.d"),
      File("etc/conf.d/new.conf", 6, 0644, kT3),
      Dir("etc/conf.d/sub", 0755, kT3),
      File("etc/conf.d/sub/d.conf", 4, 0644, kT3),
      Dir("data", 0755, kT3),
      Dir("data/layer3", 0755, kT3),
      File("data/layer3/hardlink-a", 31, 0644, kT3),
      Hard("data/layer3/hardlink-b", "data/layer3/hardlink-a", kT3),
      File("data/layer3/gnu-long-name-gnu-long-name-gnu-long-name-gnu-long-name-gnu-long-name-"
           "gnu-long-name-gnu-long-name-gnu-long-name-end.txt",
           30, 0644, kT3),
  };
  std::vector<LayerIndex> layers;
  layers.push_back(Layer(std::move(l1), LayerFormat::kTarGzip));
  layers.push_back(Layer(std::move(l2), LayerFormat::kTarGzip));
  layers.push_back(Layer(std::move(l3), LayerFormat::kTarGzip));
  return layers;
}

TEST(OverlayTiny, HandBuiltLayersGiveExpectedTree) {
  std::vector<std::string> expected = ExpectedTiny();
  ASSERT_EQ(expected.size(), 63u) << "cannot read " << FixturesDir() << "/tiny.expected.txt";
  NodeTable t = MergeOrDie(TinyLayers());
  EXPECT_EQ(ListTree(t), expected);
  // The six busybox names are one inode; hardlink-a/-b another.
  auto bin = t.Lookup(NodeTable::kRootIno, "bin");
  ASSERT_TRUE(bin.has_value());
  auto busybox = t.Lookup(*bin, "busybox");
  ASSERT_TRUE(busybox.has_value());
  for (const char* name : {"sh", "ls", "cat", "echo", "env"}) {
    EXPECT_EQ(*t.Lookup(*bin, name), *busybox) << name;
  }
}

// The real fixture blobs through the layer indexer, then the merge.
std::vector<LayerIndex> IndexLayout(const std::string& layout, std::string* error) {
  std::vector<LayerIndex> layers;
  auto index = ReadFile(layout + "/index.json");
  if (!index.has_value()) {
    *error = index.error().ToString();
    return {};
  }
  auto idx = nlohmann::json::parse(*index, nullptr, false);
  std::string mdigest = idx["manifests"][0]["digest"].get<std::string>();
  auto manifest = ReadFile(layout + "/blobs/sha256/" + mdigest.substr(7));
  if (!manifest.has_value()) {
    *error = manifest.error().ToString();
    return {};
  }
  auto m = nlohmann::json::parse(*manifest, nullptr, false);
  for (const auto& l : m["layers"]) {
    std::string digest = l["digest"].get<std::string>();
    auto built = IndexBuilder::BuildFromFile(layout + "/blobs/sha256/" + digest.substr(7),
                                             l["mediaType"].get<std::string>());
    if (!built.has_value()) {
      *error = digest + ": " + built.error().ToString();
      return {};
    }
    layers.push_back(std::move(built).value());
  }
  return layers;
}

TEST(OverlayTiny, IndexedFixtureLayersGiveExpectedTree) {
  std::vector<std::string> expected = ExpectedTiny();
  ASSERT_EQ(expected.size(), 63u);
  for (const char* layout : {"tiny-gzip", "tiny-uncompressed", "tiny-zstd"}) {
    SCOPED_TRACE(layout);
    std::string error;
    std::vector<LayerIndex> layers = IndexLayout(std::string(FixturesDir()) + "/" + layout, &error);
    ASSERT_EQ(layers.size(), 3u) << error;
    EXPECT_EQ(ListTree(MergeOrDie(layers)), expected);
  }
}

TEST(OverlayTiny, EstargzLandmarksHiddenOnRealLayers) {
  std::string error;
  std::vector<LayerIndex> layers =
      IndexLayout(std::string(FixturesDir()) + "/tiny-estargz", &error);
  ASSERT_EQ(layers.size(), 3u) << error;
  // Indexed as plain tar+gzip, the converter's files are ordinary entries...
  NodeTable plain = MergeOrDie(layers);
  EXPECT_TRUE(plain.Lookup(NodeTable::kRootIno, "stargz.index.json").has_value());
  EXPECT_TRUE(plain.Lookup(NodeTable::kRootIno, ".no.prefetch.landmark").has_value());
  // ...and hidden once the layers are known to be eStargz.
  for (LayerIndex& l : layers) l.format = LayerFormat::kEstargz;
  EXPECT_EQ(ListTree(MergeOrDie(layers)), ExpectedTiny());
}

// --- Reference model: random stacks applied naively to a real directory ---

struct TempDir {
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base != nullptr ? base : "/tmp") + "/imgfs-overlay-test-XXXXXX";
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    char* made = mkdtemp(buf.data());
    path = made != nullptr ? made : "";
  }
  ~TempDir() {
    if (!path.empty()) (void)RemoveTree(path);
  }
  std::string path;
};

const char* kNames[] = {"a", "b", "c", "d"};

std::string RandomPath(std::mt19937& rng) {
  int depth = 1 + static_cast<int>(rng() % 3);
  std::string p;
  for (int i = 0; i < depth; ++i) {
    if (i) p += "/";
    p += kNames[rng() % 4];
  }
  return p;
}

std::vector<std::string> Ancestors(const std::string& path) {
  std::vector<std::string> out;
  for (size_t pos = path.find('/'); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    out.push_back(path.substr(0, pos));
  }
  return out;
}

// A random layer. Hardlinks are kept only where a tar unpacker working in path order and the
// merge must agree: the target is an earlier entry (tar order and path order), the only entry
// of its path, and not below a non-directory of the layer.
LayerIndex RandomLayer(std::mt19937& rng) {
  std::vector<FileEntry> entries;
  int n = static_cast<int>(rng() % 12);
  const uint32_t modes[] = {0755, 0700, 0644, 0600, 04755, 01777};
  for (int i = 0; i < n; ++i) {
    int kind = static_cast<int>(rng() % 100);
    std::string path = RandomPath(rng);
    FileEntry e;
    if (kind < 28) {
      e = Dir(path, modes[rng() % 6]);
    } else if (kind < 52) {
      e = File(path, rng() % 100, modes[rng() % 6]);
    } else if (kind < 60) {
      e = Sym(path, RandomPath(rng));
    } else if (kind < 64) {
      e = Fifo(path);
    } else if (kind < 76) {
      e = Hard(path, entries.empty() ? "x" : entries[rng() % entries.size()].path);
    } else if (kind < 90) {
      e = Wh(path);
    } else if (kind < 97) {
      e = Opq(rng() % 5 == 0 ? "" : path);
    } else {
      e = Dir("", modes[rng() % 6]);
    }
    e.uid = static_cast<uint32_t>(rng() % 3);
    e.gid = static_cast<uint32_t>(rng() % 3);
    if (e.type != EntryType::kWhiteout && e.type != EntryType::kOpaque) {
      e.mtime_sec = 1000000 + static_cast<int64_t>(rng() % 1000);
    }
    entries.push_back(std::move(e));
  }
  // Drop hardlinks that do not meet the conditions above, until none is dropped.
  for (bool changed = true; changed;) {
    changed = false;
    std::map<std::string, int> count;
    std::map<std::string, size_t> last;
    for (size_t i = 0; i < entries.size(); ++i) {
      const FileEntry& e = entries[i];
      if (e.type == EntryType::kWhiteout || e.type == EntryType::kOpaque) continue;
      ++count[e.path];
      last[e.path] = i;
    }
    auto shadowed = [&](const std::string& p) {
      for (const std::string& a : Ancestors(p)) {
        auto it = last.find(a);
        if (it != last.end() && entries[it->second].type != EntryType::kDirectory) return true;
      }
      return false;
    };
    for (size_t i = 0; i < entries.size() && !changed; ++i) {
      const FileEntry& e = entries[i];
      if (e.type != EntryType::kHardlink) continue;
      const std::string& t = e.link_target;
      auto it = last.find(t);
      bool ok = it != last.end() && count[t] == 1 && it->second < i && t < e.path &&
                entries[it->second].type != EntryType::kDirectory && !shadowed(t);
      if (!ok) {
        entries.erase(entries.begin() + static_cast<long>(i));
        changed = true;
      }
    }
  }
  return Layer(std::move(entries));
}

// Applies `layers` to directory `root` the way an unpacker would, with the semantics of
// docs/SEMANTICS.md: whiteouts first (rm -rf below), then entries in path order (stable, so
// duplicates in tar order), parents created 0755 root:root. Regular files contain
// "L<layer>E<entry>" so the test can check where data comes from. Mtimes are applied at the
// end (creating children changes a directory's mtime on a real filesystem).
class NaiveUnpacker {
 public:
  explicit NaiveUnpacker(std::string root) : root_(std::move(root)) {
    chmod(root_.c_str(), 0755);
    mtime_[""] = 0;
  }

  void Apply(uint32_t pos, const LayerIndex& layer) {
    const auto& entries = layer.entries;
    for (const FileEntry& e : entries) {
      if (e.type == EntryType::kWhiteout && IsRealDirChain(e.path, false)) Rm(e.path);
    }
    for (const FileEntry& e : entries) {
      if (e.type != EntryType::kOpaque) continue;
      if (!e.path.empty() && !IsRealDirChain(e.path, true)) continue;
      DIR* d = opendir(Full(e.path).c_str());
      if (d == nullptr) continue;
      std::vector<std::string> names;
      while (dirent* de = readdir(d)) {
        std::string name = de->d_name;
        if (name != "." && name != "..") names.push_back(name);
      }
      closedir(d);
      for (const std::string& name : names) Rm(e.path.empty() ? name : e.path + "/" + name);
    }
    std::vector<uint32_t> order;
    for (uint32_t i = 0; i < entries.size(); ++i) {
      if (entries[i].type != EntryType::kWhiteout && entries[i].type != EntryType::kOpaque) {
        order.push_back(i);
      }
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return entries[a].path < entries[b].path; });
    // Synthesised parents take the mtime of the winning (last) entry of the path that needs them.
    std::map<std::string, int64_t> winner_mtime;
    for (uint32_t i : order) winner_mtime[entries[i].path] = entries[i].mtime_sec;
    std::set<std::string> created;  // non-directories made by this layer
    std::map<std::string, std::string> content;
    for (uint32_t i : order) {
      const FileEntry& e = entries[i];
      bool skip = false;
      for (const std::string& a : Ancestors(e.path)) {
        struct stat st;
        if (lstat(Full(a).c_str(), &st) == 0) {
          if (S_ISDIR(st.st_mode)) continue;
          if (created.count(a)) {
            skip = true;
            break;
          }
          Rm(a);
        }
        ASSERT_EQ(mkdir(Full(a).c_str(), 0755), 0) << a;
        ASSERT_EQ(chmod(Full(a).c_str(), 0755), 0);
        ASSERT_EQ(lchown(Full(a).c_str(), 0, 0), 0);
        mtime_[a] = winner_mtime[e.path];
      }
      if (skip) continue;
      std::string full = Full(e.path);
      struct stat st;
      bool exists = lstat(full.c_str(), &st) == 0;
      if (e.type == EntryType::kDirectory) {
        if (exists && !S_ISDIR(st.st_mode)) Rm(e.path);
        if (!exists || !S_ISDIR(st.st_mode)) {
          ASSERT_EQ(mkdir(full.c_str(), 0755), 0) << e.path;
        }
        created.erase(e.path);
      } else {
        if (exists) Rm(e.path);
        created.insert(e.path);
      }
      switch (e.type) {
        case EntryType::kDirectory:
          break;
        case EntryType::kRegular: {
          std::string tag = "L" + std::to_string(pos) + "E" + std::to_string(i);
          ASSERT_TRUE(WriteFileAtomic(full, tag).ok());
          break;
        }
        case EntryType::kSymlink:
          ASSERT_EQ(symlink(e.link_target.c_str(), full.c_str()), 0);
          break;
        case EntryType::kFifo:
          ASSERT_EQ(mkfifo(full.c_str(), 0644), 0);
          break;
        case EntryType::kHardlink:
          ASSERT_EQ(link(Full(e.link_target).c_str(), full.c_str()), 0)
              << e.path << " -> " << e.link_target;
          mtime_[e.path] = mtime_[e.link_target];
          continue;  // attributes are the target's
        default:
          FAIL() << "unexpected type";
      }
      if (e.type != EntryType::kSymlink) {
        ASSERT_EQ(chmod(full.c_str(), e.mode), 0);
      }
      ASSERT_EQ(lchown(full.c_str(), e.uid, e.gid), 0);
      if (e.type != EntryType::kSymlink && (e.mode & 06000) != 0) {
        ASSERT_EQ(chmod(full.c_str(), e.mode), 0);  // chown clears setuid/setgid
      }
      mtime_[e.path] = e.mtime_sec;
    }
  }

  // Sets recorded mtimes, deepest paths first.
  void Finish() {
    for (auto it = mtime_.rbegin(); it != mtime_.rend(); ++it) {
      // Stale records of removed paths may now lead through a symlink: skip those.
      if (!IsRealDirChain(it->first, false)) continue;
      struct timespec ts[2] = {{it->second, 0}, {it->second, 0}};
      (void)utimensat(AT_FDCWD, Full(it->first).c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
  }

 private:
  std::string Full(const std::string& rel) const { return rel.empty() ? root_ : root_ + "/" + rel; }

  // True when every ancestor of `rel` (and `rel` itself if `self`) is a real directory.
  bool IsRealDirChain(const std::string& rel, bool self) const {
    std::vector<std::string> chain = Ancestors(rel);
    if (self) chain.push_back(rel);
    for (const std::string& a : chain) {
      struct stat st;
      if (lstat(Full(a).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    }
    return true;
  }

  void Rm(const std::string& rel) { ASSERT_TRUE(RemoveTree(Full(rel)).ok()); }

  std::string root_;
  std::map<std::string, int64_t> mtime_;  // sorted: parents before children
};

// "path type mode uid:gid mtime nlink extra" for every path under `root`, with hardlink
// groups named by their first path.
void ListReal(const std::string& root, const std::string& rel, std::map<ino_t, std::string>* groups,
              std::vector<std::string>* out) {
  std::string full = rel.empty() ? root : root + "/" + rel;
  struct stat st;
  ASSERT_EQ(lstat(full.c_str(), &st), 0) << full;
  std::string line = "/" + rel + " ";
  std::string extra;
  if (S_ISDIR(st.st_mode)) {
    line += "d";
  } else if (S_ISLNK(st.st_mode)) {
    line += "l";
    char buf[4096];
    ssize_t n = readlink(full.c_str(), buf, sizeof(buf));
    extra = "->" + std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  } else if (S_ISFIFO(st.st_mode)) {
    line += "p";
  } else {
    line += "f";
    extra = *ReadFile(full);
  }
  if (!S_ISDIR(st.st_mode)) {
    auto [it, inserted] = groups->try_emplace(st.st_ino, "/" + rel);
    extra += " group=" + it->second;
  }
  line += " " + Octal(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
          std::to_string(st.st_gid) + " t" + std::to_string(st.st_mtim.tv_sec) + " n" +
          std::to_string(st.st_nlink) + " " + extra;
  out->push_back(line);
  if (!S_ISDIR(st.st_mode)) return;
  std::vector<std::string> names;
  DIR* d = opendir(full.c_str());
  ASSERT_NE(d, nullptr);
  while (dirent* de = readdir(d)) {
    std::string name = de->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names)
    ListReal(root, rel.empty() ? name : rel + "/" + name, groups, out);
}

void ListMerged(const NodeTable& t, uint64_t ino, const std::string& rel,
                std::map<uint64_t, std::string>* groups, std::vector<std::string>* out) {
  const Node* n = t.Get(ino);
  ASSERT_NE(n, nullptr);
  auto st = t.GetAttr(ino);
  ASSERT_TRUE(st.has_value());
  std::string line = "/" + rel + " " + TypeChar(n->type);
  std::string extra;
  if (n->type == EntryType::kSymlink) {
    extra = "->" + std::string(*t.ReadLink(ino));
  } else if (n->type == EntryType::kRegular) {
    extra = "L" + std::to_string(n->layer) + "E" + std::to_string(n->entry);
  }
  if (n->type != EntryType::kDirectory) {
    auto [it, inserted] = groups->try_emplace(ino, "/" + rel);
    extra += " group=" + it->second;
  }
  line += " " + Octal(n->mode) + " " + std::to_string(n->uid) + ":" + std::to_string(n->gid) +
          " t" + std::to_string(n->mtime_sec) + " n" + std::to_string(st->st_nlink) + " " + extra;
  out->push_back(line);
  if (n->type != EntryType::kDirectory) return;
  auto children = t.ReadDir(ino);
  ASSERT_TRUE(children.has_value());
  for (const DirEntry& d : *children) {
    EXPECT_EQ(*t.Lookup(ino, d.name), d.ino);
    ListMerged(t, d.ino, rel.empty() ? std::string(d.name) : rel + "/" + std::string(d.name),
               groups, out);
  }
}

TEST(OverlayReferenceModel, RandomStacksMatchNaiveUnpack) {
  ASSERT_EQ(geteuid(), 0u) << "the reference model needs root (chown, setuid bits)";
  const char* seed_env = std::getenv("IMGFS_OVERLAY_SEED");
  const uint32_t seed = seed_env != nullptr
                            ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 10))
                            : static_cast<uint32_t>(std::random_device()());
  std::printf("overlay reference model seed: %u (IMGFS_OVERLAY_SEED=%u to repeat)\n", seed, seed);
  std::mt19937 rng(seed);
  constexpr int kStacks = 100;
  for (int s = 0; s < kStacks; ++s) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " stack " + std::to_string(s));
    std::vector<LayerIndex> layers;
    int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) layers.push_back(RandomLayer(rng));
    TempDir dir;
    ASSERT_FALSE(dir.path.empty());
    NaiveUnpacker unpacker(dir.path);
    for (uint32_t i = 0; i < layers.size(); ++i) {
      unpacker.Apply(i, layers[i]);
      ASSERT_FALSE(HasFatalFailure());
    }
    unpacker.Finish();
    std::vector<std::string> real, merged;
    std::map<ino_t, std::string> real_groups;
    std::map<uint64_t, std::string> merged_groups;
    ListReal(dir.path, "", &real_groups, &real);
    NodeTable t = MergeOrDie(layers);
    ListMerged(t, NodeTable::kRootIno, "", &merged_groups, &merged);
    if (real != merged) {
      std::string desc;
      for (size_t i = 0; i < layers.size(); ++i) {
        desc += "layer " + std::to_string(i) + ":\n";
        for (const FileEntry& e : layers[i].entries) {
          desc += "  " + std::to_string(static_cast<int>(e.type)) + " '" + e.path + "' " +
                  Octal(e.mode) + (e.link_target.empty() ? "" : " -> " + e.link_target) + "\n";
        }
      }
      ASSERT_EQ(real, merged) << desc;
    }
  }
}

}  // namespace
}  // namespace imgfs::fs
