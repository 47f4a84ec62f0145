// imgfs — NodeTable: attributes, lookups, directory listing, symlinks, xattrs, the Builder's
// shape checks, concurrent readers, and the memory cost of a 100k-file image.
#include "fs/tree/node_table.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fs/tree/overlay.h"

namespace imgfs::fs {
namespace {

Node MakeNode(EntryType type, uint32_t mode, uint64_t size = 0) {
  Node n;
  n.type = type;
  n.mode = mode;
  n.size = size;
  n.uid = 1000;
  n.gid = 100;
  n.mtime_sec = 1700000000;
  n.mtime_nsec = 123;
  n.layer = 0;
  n.entry = 7;
  return n;
}

// / (1): bin/ (2), dev/ (3), f (4, also named "g"), link (5)
//   bin/: tool (6)      dev/: null (7, char 1:3)
NodeTable SmallTable() {
  NodeTable::Builder b;
  std::vector<std::pair<std::string, std::string>> none;
  EXPECT_EQ(b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none), 1u);
  EXPECT_EQ(b.AddInode(MakeNode(EntryType::kDirectory, 0700), {}, none), 2u);
  EXPECT_EQ(b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none), 3u);
  EXPECT_EQ(b.AddInode(MakeNode(EntryType::kRegular, 0644, 1025), {},
                       {{"user.z", "last"}, {"user.a", std::string("\0\1", 2)}}),
            4u);
  EXPECT_EQ(b.AddInode(MakeNode(EntryType::kSymlink, 0777, 999), "../target", none), 5u);
  EXPECT_EQ(b.AddInode(MakeNode(EntryType::kRegular, 04755, 0), {}, none), 6u);
  Node dev = MakeNode(EntryType::kChar, 0666);
  dev.dev_major = 1;
  dev.dev_minor = 3;
  EXPECT_EQ(b.AddInode(dev, {}, none), 7u);
  EXPECT_TRUE(b.SetChildren(1, {{"bin", 2}, {"dev", 3}, {"f", 4}, {"g", 4}, {"link", 5}}).ok());
  EXPECT_TRUE(b.SetChildren(2, {{"tool", 6}}).ok());
  EXPECT_TRUE(b.SetChildren(3, {{"null", 7}}).ok());
  Result<NodeTable> t = b.Finish();
  EXPECT_TRUE(t.has_value()) << t.error().ToString();
  return t.has_value() ? std::move(t).value() : NodeTable();
}

TEST(NodeTable, GetAttr) {
  NodeTable t = SmallTable();
  ASSERT_EQ(t.inode_count(), 7u);
  auto root = t.GetAttr(NodeTable::kRootIno);
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->st_ino, 1u);
  EXPECT_EQ(root->st_mode, S_IFDIR | 0755u);
  EXPECT_EQ(root->st_nlink, 4u);  // 2 + bin + dev

  auto f = t.GetAttr(4);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->st_mode, S_IFREG | 0644u);
  EXPECT_EQ(f->st_nlink, 2u);  // "f" and "g"
  EXPECT_EQ(f->st_size, 1025);
  EXPECT_EQ(f->st_blocks, 3);  // ceil(1025 / 512)
  EXPECT_EQ(f->st_blksize, 4096);
  EXPECT_EQ(f->st_uid, 1000u);
  EXPECT_EQ(f->st_gid, 100u);
  EXPECT_EQ(f->st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(f->st_mtim.tv_nsec, 123);
  EXPECT_EQ(f->st_ctim.tv_sec, 1700000000);

  auto link = t.GetAttr(5);
  EXPECT_EQ(link->st_mode, S_IFLNK | 0777u);
  EXPECT_EQ(link->st_size, 9);  // the target's length, whatever size was given

  auto tool = t.GetAttr(6);
  EXPECT_EQ(tool->st_mode, S_IFREG | 04755u);
  EXPECT_EQ(tool->st_blocks, 0);

  auto dev = t.GetAttr(7);
  EXPECT_EQ(dev->st_mode, S_IFCHR | 0666u);
  EXPECT_EQ(major(dev->st_rdev), 1u);
  EXPECT_EQ(minor(dev->st_rdev), 3u);

  auto bin = t.GetAttr(2);
  EXPECT_EQ(bin->st_nlink, 2u);
  EXPECT_EQ(bin->st_size, 0);

  EXPECT_EQ(t.GetAttr(0).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.GetAttr(8).error().code(), StatusCode::kNotFound);
}

TEST(NodeTable, Lookup) {
  NodeTable t = SmallTable();
  EXPECT_EQ(*t.Lookup(1, "bin"), 2u);
  EXPECT_EQ(*t.Lookup(1, "f"), 4u);
  EXPECT_EQ(*t.Lookup(1, "g"), 4u);
  EXPECT_EQ(*t.Lookup(1, "link"), 5u);
  EXPECT_EQ(*t.Lookup(2, "tool"), 6u);
  EXPECT_EQ(*t.Lookup(3, "null"), 7u);
  EXPECT_EQ(t.Lookup(1, "nope").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.Lookup(1, "").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.Lookup(1, "bi").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.Lookup(1, "zzz").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.Lookup(4, "x").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Lookup(99, "x").error().code(), StatusCode::kNotFound);
}

TEST(NodeTable, ReadDirAndChildAt) {
  NodeTable t = SmallTable();
  auto entries = t.ReadDir(1);
  ASSERT_TRUE(entries.has_value());
  std::vector<std::string> names;
  for (const DirEntry& d : *entries) names.emplace_back(d.name);
  EXPECT_EQ(names, (std::vector<std::string>{"bin", "dev", "f", "g", "link"}));
  EXPECT_EQ((*entries)[0].type, EntryType::kDirectory);
  EXPECT_EQ((*entries)[4].type, EntryType::kSymlink);
  EXPECT_EQ(*t.ChildCount(1), 5u);
  auto third = t.ChildAt(1, 2);
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->name, "f");
  EXPECT_EQ(third->ino, 4u);
  EXPECT_EQ(t.ChildAt(1, 5).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.ReadDir(4).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.ChildCount(6).error().code(), StatusCode::kInvalidArgument);
}

TEST(NodeTable, ReadLinkAndXattrs) {
  NodeTable t = SmallTable();
  EXPECT_EQ(*t.ReadLink(5), "../target");
  EXPECT_EQ(t.ReadLink(4).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.ReadLink(42).error().code(), StatusCode::kNotFound);
  auto names = t.ListXattr(4);
  ASSERT_TRUE(names.has_value());
  EXPECT_EQ(*names, (std::vector<std::string_view>{"user.a", "user.z"}));
  EXPECT_EQ(*t.GetXattr(4, "user.a"), std::string_view("\0\1", 2));
  EXPECT_EQ(*t.GetXattr(4, "user.z"), "last");
  EXPECT_EQ(t.GetXattr(4, "user.b").error().code(), StatusCode::kNotFound);
  EXPECT_TRUE(t.ListXattr(5)->empty());
}

TEST(NodeTable, ParentsNamesAndPaths) {
  NodeTable t = SmallTable();
  EXPECT_EQ(t.Get(1)->parent, 1u);
  EXPECT_EQ(t.Get(6)->parent, 2u);
  EXPECT_EQ(t.Name(*t.Get(6)), "tool");
  EXPECT_EQ(t.Name(*t.Get(4)), "f");  // first name in directory order
  EXPECT_EQ(*t.PathOf(1), "/");
  EXPECT_EQ(*t.PathOf(7), "/dev/null");
  EXPECT_EQ(t.PathOf(0).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.Get(0), nullptr);
  EXPECT_EQ(t.Get(8), nullptr);
}

TEST(NodeTable, BuilderRejectsBadShapes) {
  std::vector<std::pair<std::string, std::string>> none;
  {
    NodeTable::Builder b;
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    b.AddInode(MakeNode(EntryType::kRegular, 0644), {}, none);
    EXPECT_EQ(b.SetChildren(1, {{"b", 2}, {"a", 2}}).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b.SetChildren(1, {{"a", 2}, {"a", 2}}).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b.SetChildren(1, {{"a/b", 2}}).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b.SetChildren(1, {{"..", 2}}).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b.SetChildren(1, {{"x", 3}}).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b.SetChildren(2, {}).code(), StatusCode::kInvalidArgument);  // not a directory
    EXPECT_TRUE(b.SetChildren(1, {{"a", 2}}).ok());
    EXPECT_EQ(b.SetChildren(1, {{"a", 2}}).code(), StatusCode::kInvalidArgument);  // twice
    EXPECT_TRUE(b.Finish().has_value());
  }
  {
    NodeTable::Builder b;  // an inode without a name
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    b.AddInode(MakeNode(EntryType::kRegular, 0644), {}, none);
    EXPECT_EQ(b.Finish().error().code(), StatusCode::kInternal);
  }
  {
    NodeTable::Builder b;  // a directory with two names
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    EXPECT_TRUE(b.SetChildren(1, {{"a", 2}, {"b", 2}}).ok());
    EXPECT_EQ(b.Finish().error().code(), StatusCode::kInternal);
  }
  {
    NodeTable::Builder b;  // a cycle: 2 and 3 name each other
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    b.AddInode(MakeNode(EntryType::kDirectory, 0755), {}, none);
    EXPECT_TRUE(b.SetChildren(2, {{"c", 3}}).ok());
    EXPECT_TRUE(b.SetChildren(3, {{"b", 2}}).ok());
    EXPECT_EQ(b.Finish().error().code(), StatusCode::kInternal);
  }
  {
    NodeTable::Builder b;  // the root must be a directory
    b.AddInode(MakeNode(EntryType::kRegular, 0644), {}, none);
    EXPECT_EQ(b.Finish().error().code(), StatusCode::kInternal);
  }
  {
    NodeTable::Builder b;  // nothing at all
    EXPECT_EQ(b.Finish().error().code(), StatusCode::kInternal);
  }
}

// A flat-ish 100k-file image: 1000 directories of 100 files, names like real ones.
LayerIndex BigLayer() {
  LayerIndex l;
  l.entries.reserve(101000);
  for (int d = 0; d < 1000; ++d) {
    FileEntry dir;
    dir.path = "usr/lib/python3/dist-packages/pkg" + std::to_string(d);
    dir.type = EntryType::kDirectory;
    dir.mode = 0755;
    l.entries.push_back(dir);
    for (int f = 0; f < 100; ++f) {
      FileEntry file;
      file.path = dir.path + "/module_" + std::to_string(f) + ".py";
      file.type = EntryType::kRegular;
      file.mode = 0644;
      file.size = 4000;
      l.entries.push_back(std::move(file));
    }
  }
  return l;
}

TEST(NodeTable, HundredThousandFilesCostTensOfMegabytes) {
  LayerIndex layer = BigLayer();
  const LayerIndex* layers[] = {&layer};
  Result<NodeTable> t = MergeLayers(layers);
  ASSERT_TRUE(t.has_value()) << t.error().ToString();
  EXPECT_EQ(t->inode_count(), 1u + 4u + 1000u + 100000u);
  const size_t bytes = t->MemoryBytes();
  std::printf("node table for %llu inodes: %zu bytes (%.1f per inode)\n",
              static_cast<unsigned long long>(t->inode_count()), bytes,
              static_cast<double>(bytes) / static_cast<double>(t->inode_count()));
  EXPECT_LT(bytes, 30u << 20);
  auto dir = t->Lookup(
      *t->Lookup(*t->Lookup(*t->Lookup(*t->Lookup(1, "usr"), "lib"), "python3"), "dist-packages"),
      "pkg517");
  ASSERT_TRUE(dir.has_value());
  EXPECT_EQ(*t->ChildCount(*dir), 100u);
  EXPECT_TRUE(t->Lookup(*dir, "module_99.py").has_value());
}

TEST(NodeTable, ConcurrentReadersSeeTheSameTree) {
  LayerIndex layer = BigLayer();
  layer.entries.resize(10100);
  const LayerIndex* layers[] = {&layer};
  Result<NodeTable> merged = MergeLayers(layers);
  ASSERT_TRUE(merged.has_value());
  const NodeTable& t = *merged;
  constexpr int kThreads = 4;
  std::vector<uint64_t> found(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&t, &found, i] {
      // Walk the whole tree by readdir + lookup + getattr, count the files.
      std::vector<uint64_t> stack = {NodeTable::kRootIno};
      while (!stack.empty()) {
        uint64_t ino = stack.back();
        stack.pop_back();
        auto entries = t.ReadDir(ino);
        if (!entries.has_value()) continue;
        for (const DirEntry& d : *entries) {
          auto again = t.Lookup(ino, d.name);
          auto st = t.GetAttr(d.ino);
          if (!again.has_value() || *again != d.ino || !st.has_value()) return;
          if (S_ISDIR(st->st_mode)) {
            stack.push_back(d.ino);
          } else {
            ++found[i];
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(found[i], 10000u) << "thread " << i;
}

}  // namespace
}  // namespace imgfs::fs
