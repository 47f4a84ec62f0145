// imgfs — helpers for the cache/ tests: a temporary store, synthetic images and the
// tiny-gzip fixture imported through the Store API, layer indexes naming chunks, and a
// fixture holding a fresh store to scan.
#ifndef IMGFS_TESTS_CACHE_CACHE_TEST_UTIL_H_
#define IMGFS_TESTS_CACHE_CACHE_TEST_UTIL_H_

#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/store.h"
#include "cache/usage.h"
#include "fs/layer/layer_index.h"
#include "fs/mount/mount_services.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/reference.h"
#include "tests/support/temp_dir.h"

namespace imgfs::cache::testing {

inline constexpr char kFixtures[] = IMGFS_FIXTURES_DIR;
inline constexpr char kTinyManifest[] =
    "sha256:1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229";

using ::imgfs::testing::TempDir;

inline registry::Reference Ref(const std::string& text) {
  auto r = registry::Reference::Parse(text);
  EXPECT_TRUE(r.has_value()) << text << ": " << r.error().ToString();
  return r.has_value() ? *r : registry::Reference();
}

inline registry::Digest D(const std::string& text) {
  auto d = registry::Digest::Parse(text);
  EXPECT_TRUE(d.has_value()) << text;
  return d.has_value() ? *d : registry::Digest();
}

// A synthetic image: config + layers (arbitrary bytes) + OCI manifest, all stored.
struct SyntheticImage {
  registry::Descriptor manifest;
  registry::Digest config;
  std::vector<registry::Digest> layers;
};

// The config document MakeImage writes (deterministic for the same inputs).
inline std::string ConfigBytes(const nlohmann::json& diff_ids, const std::string& created,
                               const std::string& label) {
  using nlohmann::json;
  json config = {{"created", created},
                 {"author", "cache tests"},
                 {"architecture", "amd64"},
                 {"os", "linux"},
                 {"config",
                  {{"Env", {"PATH=/bin"}},
                   {"Cmd", {"/bin/sh"}},
                   {"WorkingDir", "/"},
                   {"Labels", {{"test.label", label}}}}},
                 {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  return config.dump();
}

// Stores an image whose layers have the given contents; `created` and `label` go into the
// config.
inline SyntheticImage MakeImage(Store& store, const std::vector<std::string>& layer_contents,
                                const std::string& created = "2024-01-01T00:00:00Z",
                                const std::string& label = "") {
  using nlohmann::json;
  SyntheticImage img;
  json layers = json::array();
  json diff_ids = json::array();
  for (const auto& content : layer_contents) {
    auto d = store.PutBlob(content);
    EXPECT_TRUE(d.has_value()) << d.error().ToString();
    img.layers.push_back(*d);
    layers.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar"},
                      {"digest", d->String()},
                      {"size", content.size()}});
    diff_ids.push_back(d->String());
  }
  std::string config_bytes = ConfigBytes(diff_ids, created, label);
  auto cd = store.PutBlob(config_bytes);
  EXPECT_TRUE(cd.has_value());
  img.config = *cd;
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config",
                    {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                     {"digest", cd->String()},
                     {"size", config_bytes.size()}}},
                   {"layers", layers}};
  std::string manifest_bytes = manifest.dump();
  auto md = store.PutBlob(manifest_bytes);
  EXPECT_TRUE(md.has_value());
  img.manifest.media_type = "application/vnd.oci.image.manifest.v1+json";
  img.manifest.digest = *md;
  img.manifest.size = static_cast<int64_t>(manifest_bytes.size());
  return img;
}

// Copies every blob of the fixture layout `name` into the store (streaming through a
// BlobWriter) and returns the descriptor of its one manifest.
inline registry::Descriptor ImportFixture(Store& store, const std::string& name) {
  std::string dir = std::string(kFixtures) + "/" + name;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/blobs/sha256")) {
    auto d = registry::Digest::Parse("sha256:" + e.path().filename().string());
    EXPECT_TRUE(d.has_value());
    auto data = ReadFile(e.path().string());
    EXPECT_TRUE(data.has_value());
    auto w = store.NewBlobWriter(*d, static_cast<int64_t>(data->size()));
    EXPECT_TRUE(w.has_value()) << w.error().ToString();
    // Write in pieces, as a download would.
    std::string_view rest = *data;
    while (!rest.empty()) {
      size_t n = std::min<size_t>(rest.size(), 100000);
      EXPECT_TRUE(w->Write(rest.substr(0, n)).ok());
      rest.remove_prefix(n);
    }
    Status st = w->Commit();
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  auto index = ReadFile(dir + "/index.json");
  EXPECT_TRUE(index.has_value());
  auto j = nlohmann::json::parse(*index);
  registry::Descriptor desc;
  desc.media_type = j["manifests"][0]["mediaType"].get<std::string>();
  desc.digest = *registry::Digest::Parse(j["manifests"][0]["digest"].get<std::string>());
  desc.size = j["manifests"][0]["size"].get<int64_t>();
  return desc;
}

// Runs a shell command; returns its exit status and fills `output` with stdout+stderr.
inline int RunCommand(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  output->clear();
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool HaveTool(const std::string& tool) {
  std::string out;
  return RunCommand("command -v " + tool, &out) == 0;
}

inline size_t CountEntries(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// An encoded eStargz-like layer index whose one file is made of `chunks`.
inline std::string EncodedChunkIndex(const registry::Digest& layer,
                                     const std::vector<std::string>& chunks) {
  fs::LayerIndex index;
  index.layer_digest = layer;
  index.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  index.format = fs::LayerFormat::kEstargz;
  fs::FileEntry dir;
  dir.path = "";
  dir.type = fs::EntryType::kDirectory;
  dir.mode = 0755;
  index.entries.push_back(dir);
  fs::FileEntry file;
  file.path = "f";
  file.type = fs::EntryType::kRegular;
  file.mode = 0644;
  uint64_t offset = 0;
  for (const std::string& c : chunks) {
    fs::Chunk chunk;
    chunk.file_offset = offset;
    chunk.size = c.size();
    chunk.digest = registry::Digest::Sha256Of(c);
    chunk.blob_offset = offset;
    chunk.blob_length = c.size();
    index.chunks.push_back(chunk);
    offset += c.size();
  }
  file.size = offset;
  file.chunk_count = static_cast<uint32_t>(chunks.size());
  index.entries.push_back(file);
  index.compressed_size = offset + 100;
  index.uncompressed_size = offset + 1024;
  return index.Encode();
}

// A fresh store in a TempDir, scanned with the chunk lister the mount path uses (chunks named
// by layer indexes).
class UsageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto s = Store::Open(dir_.path() + "/store");
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
    options_.chunk_lister = fs::LayerIndexChunkLister();
  }
  std::string Root() const { return store_->root(); }
  StoreUsage Scan() {
    auto u = ScanUsage(*store_, options_);
    EXPECT_TRUE(u.has_value()) << u.error().ToString();
    return u.has_value() ? *u : StoreUsage{};
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  UsageOptions options_;
};

}  // namespace imgfs::cache::testing

#endif  // IMGFS_TESTS_CACHE_CACHE_TEST_UTIL_H_
