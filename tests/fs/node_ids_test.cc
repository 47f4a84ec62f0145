// imgfs — node ids are the same in every daemon: a daemon that takes over a live mount
// (fs/fuse/takeover.h) answers for the node ids the kernel got from the daemon before it, so
// the merged tree of the same image over the same stored layer indexes must number every
// node the same way. Checked on the real fixture layers: indexes built twice from the blobs,
// indexes round-tripped through their stored encoding, and two PrepareImage calls on one
// store (the first builds and stores the indexes, the second loads them, as a new daemon does).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fs/layer/index_builder.h"
#include "fs/layer/layer_index.h"
#include "fs/mount/mount.h"
#include "fs/tree/node_table.h"
#include "fs/tree/overlay.h"
#include "tests/fs/layer_test_util.h"
#include "tests/fs/prepared_store.h"

namespace imgfs::fs {
namespace {

using testing::FixtureLayers;
using testing::kFixtures;

// Every node of `a` and `b`: same path, type, size, mode, owner, and every directory the same
// (name, ino) pairs. Returns the first difference, "" when none.
std::string Difference(const NodeTable& a, const NodeTable& b) {
  if (a.inode_count() != b.inode_count()) {
    return "inode counts " + std::to_string(a.inode_count()) + " and " +
           std::to_string(b.inode_count());
  }
  for (uint64_t ino = 1; ino <= a.inode_count(); ++ino) {
    const Node* na = a.Get(ino);
    const Node* nb = b.Get(ino);
    Result<std::string> pa = a.PathOf(ino);
    Result<std::string> pb = b.PathOf(ino);
    if (!pa.has_value() || !pb.has_value() || *pa != *pb) {
      return "ino " + std::to_string(ino) + ": " + (pa.has_value() ? *pa : "?") + " vs " +
             (pb.has_value() ? *pb : "?");
    }
    if (na->type != nb->type || na->size != nb->size || na->mode != nb->mode ||
        na->uid != nb->uid || na->gid != nb->gid || na->nlink != nb->nlink) {
      return "attributes of " + *pa;
    }
    if (na->type != EntryType::kDirectory) continue;
    Result<std::vector<DirEntry>> da = a.ReadDir(ino);
    Result<std::vector<DirEntry>> db = b.ReadDir(ino);
    if (!da.has_value() || !db.has_value() || da->size() != db->size()) return "listing of " + *pa;
    for (size_t i = 0; i < da->size(); ++i) {
      if ((*da)[i].name != (*db)[i].name || (*da)[i].ino != (*db)[i].ino) {
        return "entry " + std::string((*da)[i].name) + " of " + *pa;
      }
    }
  }
  return "";
}

std::vector<LayerIndex> IndexFixture(const std::string& name, std::string* error) {
  std::vector<LayerIndex> out;
  for (const testing::FixtureLayer& l : FixtureLayers(kFixtures + "/" + name)) {
    Result<LayerIndex> built = IndexBuilder::BuildFromFile(l.path, l.media_type);
    if (!built.has_value()) {
      *error = l.digest.String() + ": " + built.error().ToString();
      return {};
    }
    out.push_back(std::move(built).value());
  }
  return out;
}

NodeTable Merge(const std::vector<LayerIndex>& layers) {
  std::vector<const LayerIndex*> views;
  views.reserve(layers.size());
  for (const LayerIndex& l : layers) views.push_back(&l);
  Result<NodeTable> merged = MergeLayers(views);
  EXPECT_TRUE(merged.has_value()) << merged.error().ToString();
  return merged.has_value() ? std::move(merged).value() : NodeTable();
}

TEST(NodeIds, SameLayersGiveTheSameIdsFromBuiltAndFromStoredIndexes) {
  for (const char* name : {"tiny-gzip", "tiny-zstd", "tiny-estargz"}) {
    SCOPED_TRACE(name);
    std::string error;
    std::vector<LayerIndex> first = IndexFixture(name, &error);
    ASSERT_EQ(first.size(), 3u) << error;
    std::vector<LayerIndex> second = IndexFixture(name, &error);
    ASSERT_EQ(second.size(), 3u) << error;
    // What a later daemon reads back from the store's indexes/ directory.
    std::vector<LayerIndex> decoded;
    for (const LayerIndex& l : first) {
      Result<LayerIndex> back = LayerIndex::Decode(l.Encode());
      ASSERT_TRUE(back.has_value()) << back.error().ToString();
      decoded.push_back(std::move(back).value());
    }
    NodeTable a = Merge(first);
    ASSERT_GT(a.inode_count(), 50u);
    EXPECT_EQ(Difference(a, Merge(second)), "");
    EXPECT_EQ(Difference(a, Merge(decoded)), "");
  }
}

class NodeIdsOfPreparedImages : public testing::PreparedStoreTest {};

TEST_F(NodeIdsOfPreparedImages, TwoPreparationsOfOneStoredImageNumberEveryNodeAlike) {
  const std::string image = "oci:" + kFixtures + "/tiny-gzip:latest";
  // The first daemon copies the image in and builds the indexes; the next one loads them.
  Result<PreparedImage> first = Prepare(image);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_EQ(first->indexes_built, 3u);
  Result<PreparedImage> second = Prepare(image);
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_EQ(second->indexes_built, 0u) << "the second preparation rebuilt indexes";
  const NodeTable& a = first->filesystem->table();
  ASSERT_GT(a.inode_count(), 50u);
  EXPECT_EQ(Difference(a, second->filesystem->table()), "");
}

}  // namespace
}  // namespace imgfs::fs
