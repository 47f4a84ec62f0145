// imgfs — tests for the streaming layer index builder (fs/layer/index_builder.h) over the real
// fixture layers (umoci/skopeo output) and generated layers.
#include "fs/layer/index_builder.h"

#include <filesystem>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "cache/index_store.h"
#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

using testing::FixtureLayer;
using testing::FixtureLayers;
using testing::kFixtures;

IndexOptions SmallOptions(const FixtureLayer& l) {
  IndexOptions o;
  o.chunk_size_bytes = 256 << 10;
  o.span_bytes = 512 << 10;  // below the fixtures' 1.5 MiB files: checkpoints land inside them
  o.expected_digest = l.digest;
  o.expected_diff_id = l.diff_id;
  return o;
}

const FileEntry* Find(const LayerIndex& index, std::string_view path) {
  for (const FileEntry& e : index.entries) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

class FixtureIndexTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureIndexTest, IndexesEveryLayer) {
  auto layers = FixtureLayers(kFixtures + "/" + GetParam());
  ASSERT_EQ(layers.size(), 3u) << "fixture missing: " << kFixtures << "/" << GetParam();
  std::vector<LayerIndex> indexes;
  for (const auto& l : layers) {
    auto index = IndexBuilder::BuildFromFile(l.path, l.media_type, SmallOptions(l));
    ASSERT_TRUE(index.has_value()) << l.path << ": " << index.error().ToString();
    EXPECT_EQ(index->layer_digest, l.digest);
    EXPECT_EQ(index->diff_id, l.diff_id);
    EXPECT_EQ(index->compressed_size, std::filesystem::file_size(l.path));
    indexes.push_back(std::move(index).value());
  }
  const LayerIndex& l1 = indexes[0];
  ASSERT_FALSE(l1.entries.empty());
  EXPECT_EQ(l1.entries[0].path, "");  // "." is the root
  EXPECT_EQ(l1.entries[0].type, EntryType::kDirectory);
  const FileEntry* busybox = Find(l1, "bin/busybox");
  ASSERT_NE(busybox, nullptr);
  EXPECT_EQ(busybox->type, EntryType::kRegular);
  EXPECT_EQ(busybox->size, 1982256u);
  EXPECT_EQ(busybox->mode, 0755u);
  EXPECT_EQ(busybox->chunk_count, 8u);  // 1982256 / 256 KiB, rounded up
  const FileEntry* sh = Find(l1, "bin/sh");
  ASSERT_NE(sh, nullptr);
  EXPECT_EQ(sh->type, EntryType::kHardlink);
  EXPECT_EQ(sh->link_target, "bin/busybox");
  const FileEntry* link = Find(l1, "data/link-relative");
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(link->type, EntryType::kSymlink);
  EXPECT_EQ(link->link_target, "../etc/os-release");
  const FileEntry* xattr = Find(l1, "data/xattr.txt");
  ASSERT_NE(xattr, nullptr);
  ASSERT_EQ(xattr->xattrs.size(), 2u);
  EXPECT_EQ(xattr->xattrs[0].first, "user.fixture.binary");
  EXPECT_EQ(xattr->xattrs[0].second, std::string("\x00\xff\x10", 3));
  const FileEntry* pre = Find(l1, "data/pre-epoch.txt");
  ASSERT_NE(pre, nullptr);
  EXPECT_EQ(pre->mtime_sec, -14182940);
  const FileEntry* null_dev = Find(l1, "dev/null");
  ASSERT_NE(null_dev, nullptr);
  EXPECT_EQ(null_dev->type, EntryType::kChar);
  EXPECT_EQ(null_dev->dev_major, 1u);
  EXPECT_EQ(null_dev->dev_minor, 3u);
  const FileEntry* random = Find(l1, "data/random.bin");
  ASSERT_NE(random, nullptr);
  // Chunks cover the file contiguously and carry digests.
  uint64_t off = 0;
  for (uint32_t i = 0; i < random->chunk_count; ++i) {
    const Chunk& c = l1.chunks[random->first_chunk + i];
    EXPECT_EQ(c.file_offset, off);
    EXPECT_FALSE(c.digest.empty());
    off += c.size;
  }
  EXPECT_EQ(off, random->size);

  const FileEntry* issue = Find(indexes[1], "etc/issue");
  ASSERT_NE(issue, nullptr);
  EXPECT_EQ(issue->type, EntryType::kWhiteout);
  const FileEntry* docx = Find(indexes[1], "usr/share/doc/x");
  ASSERT_NE(docx, nullptr);
  EXPECT_EQ(docx->type, EntryType::kWhiteout);
  const FileEntry* opq = Find(indexes[2], "etc/conf.d");
  ASSERT_NE(opq, nullptr);
  // The directory entry comes first, then the opaque marker with the same path.
  bool saw_opaque = false;
  for (const FileEntry& e : indexes[2].entries) {
    if (e.path == "etc/conf.d" && e.type == EntryType::kOpaque) saw_opaque = true;
  }
  EXPECT_TRUE(saw_opaque);
  const FileEntry* hb = Find(indexes[2], "data/layer3/hardlink-b");
  ASSERT_NE(hb, nullptr);
  EXPECT_EQ(hb->type, EntryType::kHardlink);
  EXPECT_EQ(hb->link_target, "data/layer3/hardlink-a");

  if (l1.format == LayerFormat::kTar) {
    EXPECT_TRUE(l1.checkpoints.empty());
    EXPECT_EQ(l1.uncompressed_size, l1.compressed_size);
  } else {
    ASSERT_FALSE(l1.checkpoints.empty());
    EXPECT_EQ(l1.checkpoints[0].uncompressed_offset, 0u);
    EXPECT_GE(l1.max_checkpoint_gap, 1u);
    if (l1.format == LayerFormat::kTarGzip) {
      // ~5 MiB of output with a 512 KiB span.
      EXPECT_GE(l1.checkpoints.size(), 5u);
      EXPECT_LT(l1.max_checkpoint_gap, 2u * (512 << 10));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureIndexTest,
                         ::testing::Values("tiny-gzip", "tiny-zstd", "tiny-uncompressed"));

TEST(IndexBuilderTest, SameEntriesInEveryEncoding) {
  std::vector<std::vector<FileEntry>> all;
  for (const char* f : {"tiny-gzip", "tiny-zstd", "tiny-uncompressed"}) {
    auto layers = FixtureLayers(kFixtures + "/" + f);
    ASSERT_EQ(layers.size(), 3u) << f;
    auto index = IndexBuilder::BuildFromFile(layers[0].path, layers[0].media_type);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    all.push_back(index->entries);
  }
  // skopeo's re-encodings keep the tar stream byte for byte, so even offsets agree.
  EXPECT_EQ(all[0], all[1]);
  EXPECT_EQ(all[0], all[2]);
}

TEST(IndexBuilderTest, FeedGivesTheSameIndexAsBuildFromFile) {
  for (const char* f : {"tiny-gzip", "tiny-zstd", "tiny-uncompressed"}) {
    auto layers = FixtureLayers(kFixtures + "/" + f);
    ASSERT_EQ(layers.size(), 3u) << f;
    const FixtureLayer& l = layers[0];
    auto want = IndexBuilder::BuildFromFile(l.path, l.media_type, SmallOptions(l));
    ASSERT_TRUE(want.has_value());
    auto builder = IndexBuilder::Create(l.media_type, SmallOptions(l));
    ASSERT_TRUE(builder.has_value()) << builder.error().ToString();
    std::string blob = testing::ReadWhole(l.path);
    for (size_t pos = 0; pos < blob.size(); pos += 12345) {
      ASSERT_TRUE((*builder)->Feed(std::string_view(blob).substr(pos, 12345)).ok());
    }
    auto got = (*builder)->Finish();
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    EXPECT_EQ(*got, *want) << f;
  }
}

TEST(IndexBuilderTest, FeedReportsCorruptionAndDestructorStopsTheWorker) {
  auto layers = FixtureLayers(kFixtures + "/corrupt/layer-truncated-gzip");
  ASSERT_EQ(layers.size(), 1u);
  auto builder = IndexBuilder::Create(layers[0].media_type, {});
  ASSERT_TRUE(builder.has_value());
  ASSERT_TRUE((*builder)->Feed(testing::ReadWhole(layers[0].path)).ok());
  auto r = (*builder)->Finish();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);

  // Abandoned mid-stream: the destructor must not hang.
  auto abandoned = IndexBuilder::Create(layers[0].media_type, {});
  ASSERT_TRUE(abandoned.has_value());
  ASSERT_TRUE((*abandoned)->Feed(testing::ReadWhole(layers[0].path).substr(0, 100)).ok());
  abandoned->reset();
}

TEST(IndexBuilderTest, TruncatedGzipLayerIsCorruptNamingTheLayer) {
  auto layers = FixtureLayers(kFixtures + "/corrupt/layer-truncated-gzip");
  ASSERT_EQ(layers.size(), 1u);
  IndexOptions o;
  o.expected_digest = layers[0].digest;
  auto r = IndexBuilder::BuildFromFile(layers[0].path, layers[0].media_type, o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find(layers[0].digest.hex()), std::string::npos)
      << r.error().ToString();
  EXPECT_NE(r.error().message().find("offset"), std::string::npos) << r.error().ToString();
}

TEST(IndexBuilderTest, PathEscapeLayerIsCorruptNamingTheLayer) {
  auto layers = FixtureLayers(kFixtures + "/corrupt/layer-path-escape");
  ASSERT_EQ(layers.size(), 1u);
  IndexOptions o;
  o.expected_digest = layers[0].digest;
  auto r = IndexBuilder::BuildFromFile(layers[0].path, layers[0].media_type, o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find(layers[0].digest.hex()), std::string::npos)
      << r.error().ToString();
}

TEST(IndexBuilderTest, DigestAndDiffIdMismatchesAreCorrupt) {
  auto layers = FixtureLayers(kFixtures + "/corrupt/layer-digest-mismatch");
  ASSERT_EQ(layers.size(), 1u);
  IndexOptions o;
  o.expected_digest = layers[0].digest;
  o.expected_diff_id = layers[0].diff_id;
  auto r = IndexBuilder::BuildFromFile(layers[0].path, layers[0].media_type, o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find("digest mismatch"), std::string::npos);

  auto good = FixtureLayers(kFixtures + "/tiny-gzip");
  ASSERT_EQ(good.size(), 3u);
  IndexOptions wrong;
  wrong.expected_diff_id = good[0].diff_id;  // layer 1's diff_id for layer 2
  auto r2 = IndexBuilder::BuildFromFile(good[1].path, good[1].media_type, wrong);
  ASSERT_FALSE(r2.has_value());
  EXPECT_NE(r2.error().message().find("diff_id mismatch"), std::string::npos);
}

TEST(IndexBuilderTest, RejectsUnknownMediaTypesAndBadOptions) {
  EXPECT_EQ(LayerFormatForMediaType("application/vnd.oci.image.layer.v1.tar+bzip2").error().code(),
            StatusCode::kUnsupported);
  EXPECT_EQ(*LayerFormatForMediaType("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            LayerFormat::kTarGzip);
  IndexOptions o;
  o.span_bytes = 0;
  EXPECT_EQ(IndexBuilder::Create("application/vnd.oci.image.layer.v1.tar", o).error().code(),
            StatusCode::kInvalidArgument);
}

TEST(IndexBuilderTest, GeneratedMultiMemberLayerChunksAndWhiteouts) {
  testing::TarWriter tar;
  tar.Dir("a/");
  std::string big = testing::TextishBytes(700000, 11);
  tar.File("a/big", big);
  tar.File("a/.wh.gone", "");
  tar.File("a/.wh..wh..opq", "");
  tar.File(".wh.top", "");
  tar.Hardlink("a/big2", "a/big");
  std::string stream = tar.Finish();
  std::string gz = testing::Gzip(stream, 6, 3);
  std::string path = ::testing::TempDir() + "/imgfs_multimember.tar.gz";
  ASSERT_TRUE(testing::WriteWhole(path, gz));
  IndexOptions o;
  o.chunk_size_bytes = 100000;
  o.span_bytes = 128 << 10;
  o.expected_diff_id = registry::Digest::Sha256Of(stream);
  o.expected_digest = registry::Digest::Sha256Of(gz);
  auto index = IndexBuilder::BuildFromFile(path, "application/vnd.oci.image.layer.v1.tar+gzip", o);
  std::filesystem::remove(path);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  ASSERT_EQ(index->entries.size(), 6u);
  EXPECT_EQ(index->entries[2].type, EntryType::kWhiteout);
  EXPECT_EQ(index->entries[2].path, "a/gone");
  EXPECT_EQ(index->entries[3].type, EntryType::kOpaque);
  EXPECT_EQ(index->entries[3].path, "a");
  EXPECT_EQ(index->entries[4].type, EntryType::kWhiteout);
  EXPECT_EQ(index->entries[4].path, "top");
  const FileEntry& e = index->entries[1];
  ASSERT_EQ(e.chunk_count, 7u);
  for (uint32_t i = 0; i < e.chunk_count; ++i) {
    const Chunk& c = index->chunks[e.first_chunk + i];
    EXPECT_EQ(c.digest,
              registry::Digest::Sha256Of(std::string_view(big).substr(c.file_offset, c.size)));
  }
  EXPECT_EQ(stream.substr(e.payload_offset, big.size()), big);
  EXPECT_EQ(index->uncompressed_size, stream.size());
}

TEST(IndexBuilderTest, LoadOrBuildIndexUsesAndRepairsTheStore) {
  auto layers = FixtureLayers(kFixtures + "/tiny-gzip");
  ASSERT_EQ(layers.size(), 3u);
  std::string root = ::testing::TempDir() + "/imgfs_index_store_" + std::to_string(getpid());
  cache::IndexStore store(root);
  IndexOptions o = SmallOptions(layers[1]);
  auto built = LoadOrBuildIndex(store, layers[1].path, layers[1].media_type, o);
  ASSERT_TRUE(built.has_value()) << built.error().ToString();
  std::string file = store.PathFor(layers[1].digest);
  ASSERT_TRUE(std::filesystem::exists(file));
  // Loaded, not rebuilt: works even when the blob path is bogus.
  auto loaded = LoadOrBuildIndex(store, "/nonexistent", layers[1].media_type, o);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().ToString();
  EXPECT_EQ(*loaded, *built);
  // A damaged index is rebuilt from the blob.
  ASSERT_TRUE(testing::WriteWhole(file, "IMGFSIDX garbage"));
  auto repaired = LoadOrBuildIndex(store, layers[1].path, layers[1].media_type, o);
  ASSERT_TRUE(repaired.has_value());
  EXPECT_EQ(*repaired, *built);
  EXPECT_TRUE(store.Get(layers[1].digest).has_value());
  EXPECT_EQ(repaired->provenance, IndexProvenance::kLayerBlob);
  std::filesystem::remove_all(root);
}

// An index in the layer's slot that was not built from its blob — same layer digest, diff_id,
// chunk size and span (fields anyone can write), another file table — is rebuilt, not
// trusted (security review 2026-12, finding 1).
TEST(IndexBuilderTest, LoadOrBuildIndexTrustsOnlyIndexesBuiltFromTheBlob) {
  auto layers = FixtureLayers(kFixtures + "/tiny-gzip");
  ASSERT_EQ(layers.size(), 3u);
  std::string root = ::testing::TempDir() + "/imgfs_index_trust_" + std::to_string(getpid());
  cache::IndexStore store(root);
  IndexOptions o = SmallOptions(layers[1]);
  auto built = LoadOrBuildIndex(store, layers[1].path, layers[1].media_type, o);
  ASSERT_TRUE(built.has_value()) << built.error().ToString();
  ASSERT_FALSE(built->entries.empty());
  for (IndexProvenance p :
       {IndexProvenance::kUnverified, IndexProvenance::kToc, IndexProvenance::kPublished}) {
    LayerIndex forged = *built;
    forged.provenance = p;
    forged.origin = registry::Digest::Sha256Of("artifact");
    forged.subject = registry::Digest::Sha256Of("manifest");
    forged.entries.back().mode = 04755;
    ASSERT_TRUE(store.Put(layers[1].digest, forged.Encode()).ok());
    auto loaded = LoadOrBuildIndex(store, layers[1].path, layers[1].media_type, o);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().ToString();
    EXPECT_EQ(*loaded, *built) << static_cast<int>(p);
    auto kept = LayerIndex::Decode(*store.Get(layers[1].digest));
    ASSERT_TRUE(kept.has_value());
    EXPECT_EQ(*kept, *built) << "the forged index was not replaced";
  }
  std::filesystem::remove_all(root);
}

TEST(IndexBuilderTest, StoreKeyFollowsProvenance) {
  LayerIndex x;
  x.layer_digest = registry::Digest::Sha256Of("layer");
  EXPECT_FALSE(StoreKeyOf(x).has_value());  // kUnverified: never stored
  x.provenance = IndexProvenance::kLayerBlob;
  EXPECT_TRUE(*StoreKeyOf(x) == cache::IndexKey::LayerBlob(x.layer_digest));
  x.provenance = IndexProvenance::kToc;
  EXPECT_FALSE(StoreKeyOf(x).has_value());  // no TOC digest
  x.origin = registry::Digest::Sha256Of("toc");
  EXPECT_TRUE(*StoreKeyOf(x) == cache::IndexKey::Toc(x.layer_digest, x.origin));
  x.provenance = IndexProvenance::kPublished;
  EXPECT_FALSE(StoreKeyOf(x).has_value());  // no image manifest
  x.subject = registry::Digest::Sha256Of("manifest");
  EXPECT_TRUE(*StoreKeyOf(x) == cache::IndexKey::Image(x.layer_digest, x.subject));
}

}  // namespace
}  // namespace imgfs::fs
