// imgfs — hostile published indexes read lazily (issue 9, trust of published indexes): an
// index pushed beside an image can say anything its chunk digests do not contradict — that a
// file's bytes are another file's, that a file is setuid. IndexedRemoteData (fs/indexed_fetcher.h)
// checks the tar headers its fetched stream carries past against the index: a mismatch is a
// Corrupt read (EIO) with a log line, and the index is dropped (every later read of the layer
// fails, the owner is told once). An honest index of the same layer — long PAX names, modes,
// owners — reads every file and is never dropped.
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "fs/layer/index_builder.h"
#include "fs/layer/layer_reader.h"
#include "fs/lazy/indexed_fetcher.h"
#include "registry/digest.h"
#include "registry/media_types.h"
#include "tests/support/fake_blob_source.h"
#include "tests/support/image_builder.h"

namespace imgfs::fs {
namespace {

using ::imgfs::testing::FakeBlobSource;

class HostileIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::TestLayer layer;
    auto file = [&](const std::string& path, std::string content, uint32_t mode) {
      files_[path] = content;
      layer.files.push_back({path, std::move(content), testing::TestFile::Kind::kFile, mode});
    };
    auto dir = [&](const std::string& path) {
      layer.files.push_back({path, "", testing::TestFile::Kind::kDir, 0755});
    };
    dir("etc");
    file("etc/motd", "welcome\n", 0644);
    dir("usr");
    dir("usr/bin");
    file("usr/bin/evil", std::string(20000, 'E'), 0755);
    file("usr/bin/tool", std::string(30000, 'T'), 0755);
    dir("usr/share");
    dir("usr/share/a-directory-name-long-enough-that-ustar-cannot-hold-it-in-its-name-field");
    file(
        "usr/share/a-directory-name-long-enough-that-ustar-cannot-hold-it-in-its-name-field/"
        "and-a-long-file-name-too-so-that-the-writer-needs-a-pax-path-record.txt",
        std::string(5000, 'L'), 0600);
    Result<std::string> tar = testing::BuildLayerTar(layer);
    ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
    blob_ = testing::GzipBytes(*tar);
    const std::string path = dir_.Sub("blob");
    {
      std::FILE* f = std::fopen(path.c_str(), "wb");
      ASSERT_NE(f, nullptr);
      ASSERT_EQ(std::fwrite(blob_.data(), 1, blob_.size(), f), blob_.size());
      std::fclose(f);
    }
    IndexOptions options;
    options.expected_digest = registry::Digest::Sha256Of(blob_);
    Result<LayerIndex> index =
        IndexBuilder::BuildFromFile(path, registry::media::kOciLayerGzip, options);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    honest_ = std::move(index).value();
  }

  FileEntry& Entry(LayerIndex& index, const std::string& path) {
    for (FileEntry& e : index.entries) {
      if (e.path == path) return e;
    }
    ADD_FAILURE() << "no entry " << path;
    return index.entries.front();
  }

  // A lazy reader of the layer through `index`; counts the drops it reports.
  std::unique_ptr<IndexedRemoteData> Open(LayerIndex index) {
    IndexedRemoteData::Options options;
    options.readahead = false;
    options.streaming = false;
    options.on_index_mismatch = [this](const Status& st) {
      drops_.fetch_add(1);
      EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    };
    index_ = std::make_shared<const LayerIndex>(std::move(index));
    auto data = IndexedRemoteData::Create(std::make_shared<FakeBlobSource>(blob_), index_,
                                          dir_.Sub("tmp"), nullptr, options);
    EXPECT_TRUE(data.has_value()) << data.error().ToString();
    return data.has_value() ? std::move(data).value() : nullptr;
  }

  Result<std::string> ReadWhole(IndexedRemoteData& data, const std::string& path) {
    for (const FileEntry& e : index_->entries) {
      if (e.path == path) return data.Read(e, 0, e.size + 1);
    }
    return Status::NotFound(path);
  }

  testing::TempDir dir_;
  std::string blob_;
  LayerIndex honest_;
  std::shared_ptr<const LayerIndex> index_;
  std::map<std::string, std::string> files_;
  std::atomic<int> drops_{0};
};

TEST_F(HostileIndexTest, AnHonestIndexReadsEveryFileAndIsKept) {
  auto data = Open(honest_);
  ASSERT_NE(data, nullptr);
  for (const auto& [path, content] : files_) {
    Result<std::string> got = ReadWhole(*data, path);
    ASSERT_TRUE(got.has_value()) << path << ": " << got.error().ToString();
    EXPECT_TRUE(*got == content) << path;
  }
  EXPECT_EQ(drops_.load(), 0);
  EXPECT_EQ(data->Stats().errors, 0u);
}

// The index names the tar's /usr/bin/evil /usr/bin/sudo: every chunk digest matches the bytes
// it points at, only the tar header says whose bytes they are.
TEST_F(HostileIndexTest, AFileGivenAnotherFilesBytesIsEioAndTheIndexIsDropped) {
  LayerIndex lying = honest_;
  Entry(lying, "usr/bin/evil").path = "usr/bin/sudo";
  auto data = Open(std::move(lying));
  ASSERT_NE(data, nullptr);
  Result<std::string> got = ReadWhole(*data, "usr/bin/sudo");
  ASSERT_FALSE(got.has_value()) << "served another file's bytes as /usr/bin/sudo";
  EXPECT_EQ(got.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(got.error().message().find("/usr/bin/evil"), std::string::npos)
      << got.error().ToString();
  EXPECT_EQ(drops_.load(), 1);
  // Dropped: the honest entries of the layer are not served either.
  got = ReadWhole(*data, "etc/motd");
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(drops_.load(), 1) << "the owner is told once";
}

TEST_F(HostileIndexTest, AModeOrOwnerTheTarDoesNotSayIsEio) {
  for (int field = 0; field < 2; ++field) {
    LayerIndex lying = honest_;
    FileEntry& tool = Entry(lying, "usr/bin/tool");
    if (field == 0) {
      tool.mode = 04755;  // setuid
    } else {
      tool.uid = 1000;  // the tar says root
    }
    drops_ = 0;
    auto data = Open(std::move(lying));
    ASSERT_NE(data, nullptr);
    Result<std::string> got = ReadWhole(*data, "usr/bin/tool");
    ASSERT_FALSE(got.has_value()) << "field " << field;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt);
    EXPECT_NE(got.error().message().find(field == 0 ? "mode" : "uid"), std::string::npos)
        << got.error().ToString();
    EXPECT_EQ(drops_.load(), 1);
  }
}

// An index whose payload offsets leave no room for a header (here: two files at one payload)
// or lie off tar's 512-byte grid is dropped before anything is fetched.
TEST_F(HostileIndexTest, APayloadThatNoHeaderCanPrecedeIsEio) {
  for (int lie = 0; lie < 2; ++lie) {
    LayerIndex lying = honest_;
    FileEntry& tool = Entry(lying, "usr/bin/tool");
    const FileEntry& evil = Entry(lying, "usr/bin/evil");
    if (lie == 0) {
      tool.size = evil.size;
      tool.payload_offset = evil.payload_offset;
      tool.first_chunk = evil.first_chunk;
      tool.chunk_count = evil.chunk_count;
    } else {
      tool.payload_offset += 100;
    }
    drops_ = 0;
    auto data = Open(std::move(lying));
    ASSERT_NE(data, nullptr);
    Result<std::string> got = ReadWhole(*data, "usr/bin/tool");
    ASSERT_FALSE(got.has_value()) << "lie " << lie;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt);
    EXPECT_NE(got.error().message().find("cannot follow a tar header"), std::string::npos)
        << got.error().ToString();
    EXPECT_EQ(drops_.load(), 1);
  }
}

// No false alarm on what real tools write: every plain tar / tar+gzip / tar+zstd layer of the
// shared fixtures (umoci, GNU tar --format=gnu with long names and hardlinks, skopeo, padded
// tars) is indexed honestly and every regular file read lazily equals a local read; no index
// is dropped.
TEST(HostileIndexFixturesTest, RealToolLayersReadEveryFileWithoutAMismatch) {
  const std::string fixtures = IMGFS_FIXTURES_DIR;
  int layers = 0;
  int files = 0;
  for (const char* layout : {"tiny-gzip", "tiny-uncompressed", "tiny-zstd",
                             "quirks/padded-tar-gzip", "quirks/umoci-dir-to-file"}) {
    const std::string dir = fixtures + "/" + layout;
    auto blob_path = [&](const std::string& digest) {
      return dir + "/blobs/sha256/" + digest.substr(digest.find(':') + 1);
    };
    Result<std::string> index_json = ReadFile(dir + "/index.json");
    ASSERT_TRUE(index_json.has_value()) << dir;
    auto top = nlohmann::json::parse(*index_json);
    Result<std::string> manifest_json =
        ReadFile(blob_path(top["manifests"][0]["digest"].get<std::string>()));
    ASSERT_TRUE(manifest_json.has_value()) << dir;
    const nlohmann::json manifest = nlohmann::json::parse(*manifest_json);
    for (const auto& layer : manifest["layers"]) {
      const std::string path = blob_path(layer["digest"].get<std::string>());
      const std::string media = layer["mediaType"].get<std::string>();
      IndexOptions options;
      options.chunk_size_bytes = 64 << 10;
      options.span_bytes = 256 << 10;  // several checkpoints even in these small layers
      Result<LayerIndex> built = IndexBuilder::BuildFromFile(path, media, options);
      ASSERT_TRUE(built.has_value()) << path << ": " << built.error().ToString();
      auto index = std::make_shared<const LayerIndex>(std::move(built).value());
      Result<std::unique_ptr<LayerReader>> local = LayerReader::Open(path, index);
      ASSERT_TRUE(local.has_value()) << local.error().ToString();
      Result<std::string> blob = ReadFile(path);
      ASSERT_TRUE(blob.has_value());
      testing::TempDir tmp;
      std::atomic<int> drops{0};
      IndexedRemoteData::Options lazy_options;
      lazy_options.on_index_mismatch = [&drops](const Status&) { drops.fetch_add(1); };
      auto data = IndexedRemoteData::Create(std::make_shared<FakeBlobSource>(std::move(*blob)),
                                            index, tmp.Sub("tmp"), nullptr, lazy_options);
      ASSERT_TRUE(data.has_value()) << data.error().ToString();
      ++layers;
      for (const FileEntry& e : index->entries) {
        if (e.type != EntryType::kRegular) continue;
        Result<std::string> got = (*data)->Read(e, 0, e.size + 1);
        ASSERT_TRUE(got.has_value()) << layout << " /" << e.path << ": " << got.error().ToString();
        Result<std::string> want = (*local)->Read(e, 0, e.size + 1);
        ASSERT_TRUE(want.has_value());
        EXPECT_TRUE(*got == *want) << layout << " /" << e.path;
        ++files;
      }
      EXPECT_EQ(drops.load(), 0) << path;
    }
  }
  EXPECT_GE(layers, 9);
  EXPECT_GE(files, 20);
}

}  // namespace
}  // namespace imgfs::fs
