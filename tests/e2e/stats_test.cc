// imgfs — end-to-end tests of `imgfs stats DIR` and of the background size cap: the real
// binary mounts the eStargz fixture lazily from a real docker-registry behind a counting
// proxy; after a file is read, stats (JSON and table) report what was fetched, per layer, and
// what users read. With a cap set in STORE/config.json, a running mount daemon evicts unpinned
// chunks of another image until the store is under the cap, and keeps serving its own.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"

namespace imgfs::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

int64_t DuSb(const std::string& dir) {
  ProcessResult r = RunProcess({"du", "-sb", dir});
  return r.exit_code == 0 ? std::stoll(r.out) : -1;
}

// The tests share one registry: each pushes under its own repository names.
class StatsTest : public ImgfsMountTest {
 protected:
  size_t ChunkCount() {
    size_t n = 0;
    for (const std::string& f : ListFilesRecursive(Root() + "/chunks")) {
      if (f.size() == 67) ++n;  // xx/<64 hex>
    }
    return n;
  }
};

TEST_F(StatsTest, LazyMountReportsFetchedBytesPerLayerAndBytesRead) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-estargz"), "latest", "demo/s:1").ok());
  auto proxy_stats = std::make_shared<ProxyStats>();
  HttpTestServer proxy(ProxyHandler(reg->url(), proxy_stats));
  const std::string ref = proxy.host_port() + "/demo/s:1";

  MountOrDie({"--lazy", "--prefetch", "none", ref});
  std::string random = ReadAll(Mnt() + "/data/random.bin");
  ASSERT_EQ(random.size(), 1576960u);

  ProcessResult js = Imgfs({"stats", Mnt(), "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.Describe();
  json j = json::parse(js.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << js.out;
  EXPECT_EQ(j["mountpoint"], Mnt());
  EXPECT_THAT(j["reference"].get<std::string>(), HasSubstr("demo/s:1"));
  ASSERT_EQ(j["layers"].size(), 3u);
  uint64_t image = 0;
  for (const json& l : j["layers"]) {
    EXPECT_TRUE(l["lazy"].get<bool>());
    EXPECT_THAT(l["digest"].get<std::string>(), HasSubstr("sha256:"));
    image += l["size"].get<uint64_t>();
  }
  EXPECT_EQ(j["image_size"].get<uint64_t>(), image);
  EXPECT_GT(image, 2000000u);
  EXPECT_GE(j["bytes_read"].get<uint64_t>(), random.size());
  // random.bin is incompressible: fetching it moved at least its size, and no more than the
  // proxy saw (TOCs included).
  uint64_t fetched = j["bytes_fetched"].get<uint64_t>();
  EXPECT_GE(fetched, random.size());
  EXPECT_LE(fetched, proxy_stats->blob_bytes.load());
  EXPECT_GT(j["requests"].get<uint64_t>(), 0u);
  EXPECT_GE(j["chunks_fetched"].get<uint64_t>(), 4u);  // random.bin = 4 eStargz chunks

  ProcessResult table = Imgfs({"stats", Mnt()});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_THAT(table.out, HasSubstr("Fetched:"));
  EXPECT_THAT(table.out, HasSubstr("Read by users:"));
  EXPECT_THAT(table.out, HasSubstr("LAYER"));
  EXPECT_THAT(table.out, HasSubstr("FETCHED %"));

  ProcessResult not_mounted = Imgfs({"stats", dir_.path()});
  EXPECT_EQ(not_mounted.exit_code, 1);
  EXPECT_THAT(not_mounted.err, HasSubstr("is not an imgfs mount"));
  Umount(Mnt());
  EXPECT_TRUE(ListFilesRecursive(Root() + "/control").empty()) << "control socket left behind";
}

TEST_F(StatsTest, MountDaemonEnforcesTheSizeCapOnUnpinnedChunks) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-estargz"), "latest", "demo/a:1").ok());
  ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-zstdchunked"), "latest", "demo/b:1").ok());
  const std::string a = reg->host_port() + "/demo/a:1";
  const std::string b = reg->host_port() + "/demo/b:1";

  // Image a leaves chunks behind.
  MountOrDie({"--lazy", "--prefetch", "none", a});
  ASSERT_EQ(ReadAll(Mnt() + "/data/random.bin").size(), 1576960u);
  Umount(Mnt());
  const size_t chunks_of_a = ChunkCount();
  ASSERT_GE(chunks_of_a, 4u);

  // Image b mounted; then a cap a little below the store's size, checked every second.
  MountOrDie({"--lazy", "--prefetch", "none", b}, 2);
  const int64_t size = DuSb(Root());
  const int64_t cap = size - 200000;
  ProcessResult r = Imgfs({"cache", "set", "--max-size", std::to_string(cap), "--interval", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (DuSb(Root()) > cap && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_LE(DuSb(Root()), cap) << "the mount daemon did not enforce the cap";
  EXPECT_LT(ChunkCount(), chunks_of_a);
  // Only chunks went: both images are still recorded, and b's mount serves its files.
  ProcessResult images = Imgfs({"images", "--format", "{{.Repository}}"});
  EXPECT_THAT(images.out, HasSubstr("demo/a"));
  EXPECT_THAT(images.out, HasSubstr("demo/b"));
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt(2) + "/data/random.bin")).hex(),
            "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d");
  Umount(Mnt(2));
}

}  // namespace
}  // namespace imgfs::testing
