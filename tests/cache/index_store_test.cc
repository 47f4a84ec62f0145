// imgfs — tests for the per-layer index files of the store (cache/index_store.h).
#include "cache/index_store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::cache {
namespace {

// A minimal well-framed index: magic, some body, trailing raw sha256 of both.
std::string Framed(std::string_view body) {
  std::string out = "IMGFSIDX" + std::string(body);
  std::string hex = registry::Digest::Sha256Of(out).hex();
  for (size_t i = 0; i < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

class IndexStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/imgfs_index_store_test_" + std::to_string(getpid());
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string root_;
};

TEST_F(IndexStoreTest, PutGetRemove) {
  IndexStore store(root_);
  registry::Digest layer = registry::Digest::Sha256Of("layer");
  EXPECT_EQ(store.PathFor(layer), root_ + "/indexes/" + layer.hex() + ".idx");
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kNotFound);
  std::string data = Framed("body bytes");
  ASSERT_TRUE(store.Put(layer, data).ok());
  auto got = store.Get(layer);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  Result<MappedFile> mapped = store.Map(layer);
  ASSERT_TRUE(mapped.has_value()) << mapped.error().ToString();
  EXPECT_EQ(mapped->bytes(), data);
  // Replacing is atomic and leaves no temporary files behind.
  ASSERT_TRUE(store.Put(layer, Framed("newer")).ok());
  EXPECT_EQ(*store.Get(layer), Framed("newer"));
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(root_ + "/indexes")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
  ASSERT_TRUE(store.Remove(layer).ok());
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Map(layer).error().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store.Remove(layer).ok());
}

// Get checks the magic and the length; the checksum is the decoder's (every reader decodes
// with fs::LayerIndex::Decode, whose tests cover a flipped byte), so a damaged body comes back
// as stored.
TEST_F(IndexStoreTest, DamagedFilesAreCorrupt) {
  IndexStore store(root_);
  registry::Digest layer = registry::Digest::Sha256Of("layer");
  std::string data = Framed("body bytes");
  data[2] ^= 1;  // in the magic
  ASSERT_TRUE(store.Put(layer, data).ok());
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(store.Map(layer).error().code(), StatusCode::kCorrupt);
  data = Framed("body bytes");
  data[10] ^= 1;  // in the body
  ASSERT_TRUE(store.Put(layer, data).ok());
  ASSERT_TRUE(store.Get(layer).has_value());
  EXPECT_EQ(*store.Get(layer), data);
  ASSERT_TRUE(store.Put(layer, "short").ok());
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kCorrupt);
  ASSERT_TRUE(store.Put(layer, "").ok());
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(store.Map(layer).error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(store.Put(registry::Digest(), "x").code(), StatusCode::kInvalidArgument);
}

// Indexes derived from the network live apart from the layer's own, one file per (layer,
// TOC digest) or (layer, image manifest): no key reads another key's file.
TEST_F(IndexStoreTest, NetworkDerivedIndexesAreKeptApartByOrigin) {
  IndexStore store(root_);
  auto layer = registry::Digest::Sha256Of("layer");
  auto toc = registry::Digest::Sha256Of("toc");
  auto manifest = registry::Digest::Sha256Of("manifest");
  const IndexKey own = IndexKey::LayerBlob(layer);
  const IndexKey by_toc = IndexKey::Toc(layer, toc);
  const IndexKey by_image = IndexKey::Image(layer, manifest);
  EXPECT_EQ(store.PathFor(own), root_ + "/indexes/" + layer.hex() + ".idx");
  EXPECT_EQ(store.PathFor(by_toc),
            root_ + "/indexes/" + layer.hex() + ".toc-" + toc.hex() + ".idx");
  EXPECT_EQ(store.PathFor(by_image),
            root_ + "/indexes/" + layer.hex() + ".image-" + manifest.hex() + ".idx");
  ASSERT_TRUE(store.Put(by_toc, Framed("toc")).ok());
  ASSERT_TRUE(store.Put(by_image, Framed("published")).ok());
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Get(IndexKey::Toc(layer, manifest)).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Get(IndexKey::Image(layer, toc)).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store.Get(by_toc), Framed("toc"));
  EXPECT_EQ(*store.Get(by_image), Framed("published"));
  ASSERT_TRUE(store.Put(layer, Framed("own")).ok());
  EXPECT_EQ(*store.Get(own), Framed("own"));
  EXPECT_EQ(*store.Get(by_toc), Framed("toc"));
  ASSERT_TRUE(store.Remove(by_toc).ok());
  EXPECT_EQ(store.Get(by_toc).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store.Get(by_image), Framed("published"));
  // A network-derived key needs a sha256 origin (garbage collection parses the name).
  EXPECT_EQ(store.Put(IndexKey::Toc(layer, registry::Digest()), "x").code(),
            StatusCode::kInvalidArgument);

  // File names map back to their keys; anything else is not an index.
  for (const IndexKey& key : {own, by_toc, by_image}) {
    auto parsed =
        IndexStore::KeyOfFileName(std::filesystem::path(store.PathFor(key)).filename().string());
    ASSERT_TRUE(parsed.has_value());
    EXPECT_TRUE(*parsed == key);
  }
  for (std::string bad : {layer.hex() + ".landmark", layer.hex() + ".idx.tmp-1",
                          layer.hex() + ".other-" + toc.hex() + ".idx",
                          layer.hex() + ".toc-" + toc.hex().substr(1) + ".idx",
                          layer.hex().substr(1) + ".idx", std::string("x.idx")}) {
    EXPECT_FALSE(IndexStore::KeyOfFileName(bad).has_value()) << bad;
  }
}

// The merged tree of an image (fs/tree/stored_tree.h) lives under its manifest's digest,
// beside the layers' indexes, mapped as it is: its own decoder checks its bytes.
TEST_F(IndexStoreTest, AMergedTreeIsKeyedByItsManifest) {
  IndexStore store(root_);
  const registry::Digest manifest = registry::Digest::Sha256Of("manifest");
  const IndexKey key = IndexKey::Tree(manifest);
  EXPECT_EQ(store.PathFor(key), root_ + "/indexes/" + manifest.hex() + ".tree");
  std::optional<IndexKey> parsed = IndexStore::KeyOfFileName(manifest.hex() + ".tree");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_TRUE(*parsed == key);
  for (std::string bad :
       {manifest.hex().substr(1) + ".tree", manifest.hex() + ".tree.tmp-1",
        manifest.hex() + ".toc-" + manifest.hex() + ".tree", std::string("x.tree")}) {
    EXPECT_FALSE(IndexStore::KeyOfFileName(bad).has_value()) << bad;
  }
  EXPECT_EQ(store.Map(key).error().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store.Put(key, "not a layer index").ok());
  Result<MappedFile> mapped = store.Map(key);
  ASSERT_TRUE(mapped.has_value()) << mapped.error().ToString();
  EXPECT_EQ(mapped->bytes(), "not a layer index");
  EXPECT_EQ(store.Put(IndexKey::Tree(registry::Digest()), "x").code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(store.Remove(key).ok());
  EXPECT_EQ(store.Map(key).error().code(), StatusCode::kNotFound);
}

TEST_F(IndexStoreTest, LandmarkRecordLivesBesideTheIndex) {
  IndexStore store(root_);
  registry::Digest layer = registry::Digest::Sha256Of("layer");
  EXPECT_EQ(store.LandmarkPathFor(layer), root_ + "/indexes/" + layer.hex() + ".landmark");
  EXPECT_EQ(store.GetLandmark(layer).error().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store.PutLandmark(layer, 123456789012ull).ok());
  auto got = store.GetLandmark(layer);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, 123456789012ull);
  std::ifstream in(store.LandmarkPathFor(layer));
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "imgfs-landmark 1 123456789012");
  // Replacing keeps one file; the index itself is untouched by the record.
  ASSERT_TRUE(store.PutLandmark(layer, 42).ok());
  EXPECT_EQ(*store.GetLandmark(layer), 42u);
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kNotFound);
  // Remove takes the index and its side record.
  ASSERT_TRUE(store.Put(layer, Framed("body")).ok());
  ASSERT_TRUE(store.Remove(layer).ok());
  EXPECT_EQ(store.GetLandmark(layer).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Get(layer).error().code(), StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/indexes"));
  // Offset 0 and an empty digest are refused.
  EXPECT_EQ(store.PutLandmark(layer, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.PutLandmark(registry::Digest(), 5).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.GetLandmark(registry::Digest()).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(IndexStoreTest, MalformedLandmarkRecordsAreCorrupt) {
  IndexStore store(root_);
  registry::Digest layer = registry::Digest::Sha256Of("layer");
  ASSERT_TRUE(store.PutLandmark(layer, 7).ok());
  for (const std::string& bad : std::vector<std::string>{
           "", "imgfs-landmark 1 \n", "imgfs-landmark 1 12", "imgfs-landmark 1 0\n",
           "imgfs-landmark 2 12\n", "imgfs-landmark 1 -3\n", "imgfs-landmark 1 12x\n",
           "imgfs-landmark 1 99999999999999999999999\n",
           "imgfs-landmark 1 " + std::string(80, '1') + "\n"}) {
    std::ofstream(store.LandmarkPathFor(layer), std::ios::trunc) << bad;
    EXPECT_EQ(store.GetLandmark(layer).error().code(), StatusCode::kCorrupt) << bad;
  }
}

}  // namespace
}  // namespace imgfs::cache
