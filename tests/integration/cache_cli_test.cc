// imgfs — integration tests of the store maintenance commands through the real binary:
// `imgfs cache du|gc|prune|set` (tables, JSON that adds up to `du -sb`), `imgfs pull --lazy`
// against a real docker-registry (then `images` and `cache du` show the image as lazy and a
// plain pull completes it), and `imgfs rm` refusing a container's image.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/registry_server.h"

namespace imgfs::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kFixtures = IMGFS_FIXTURES_DIR;

int64_t DuSb(const std::string& dir) {
  ProcessResult r = RunProcess({"du", "-sb", dir});
  return r.exit_code == 0 ? std::stoll(r.out) : -1;
}

class CacheCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kFixtures + "/tiny-gzip")) << kFixtures;
  }
  std::string Root() const { return dir_.Sub("store"); }
  ProcessResult Imgfs(std::vector<std::string> args, int timeout_s = 120) {
    return RunImgfs(Root(), std::move(args), {}, {}, timeout_s);
  }
  // Pulls the tiny-gzip fixture from its OCI layout; returns the familiar name it got.
  std::string PullFixture() {
    ProcessResult r = Imgfs({"pull", "oci:" + kFixtures + "/tiny-gzip:latest"});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    ProcessResult names = Imgfs({"images", "--format", "{{.Repository}}:{{.Tag}}"});
    EXPECT_EQ(names.exit_code, 0) << names.Describe();
    std::string name = names.out.substr(0, names.out.find('\n'));
    EXPECT_FALSE(name.empty());
    return name;
  }
  size_t BlobCount() { return ListFilesRecursive(Root() + "/blobs/sha256").size(); }

  TempDir dir_;
};

TEST_F(CacheCliTest, DuGcPruneAndSetPrintWhatTheyDo) {
  const std::string name = PullFixture();
  ASSERT_TRUE(
      WriteFileAtomic(Root() + "/blobs/sha256/" + registry::Digest::Sha256Of("junk").hex(), "junk")
          .ok());

  ProcessResult du = Imgfs({"cache", "du"});
  ASSERT_EQ(du.exit_code, 0) << du.Describe();
  EXPECT_THAT(du.out, HasSubstr("IMAGE"));
  EXPECT_THAT(du.out, HasSubstr("SHARED"));
  EXPECT_THAT(du.out, HasSubstr("UNIQUE"));
  EXPECT_THAT(du.out, HasSubstr(name));
  EXPECT_THAT(du.out, HasSubstr("Blobs (blobs/)"));
  EXPECT_THAT(du.out, HasSubstr("Chunks (chunks/)"));
  EXPECT_THAT(du.out, HasSubstr("Indexes (indexes/)"));
  EXPECT_THAT(du.out, HasSubstr("6 (1 unreferenced)"));
  EXPECT_THAT(du.out, HasSubstr("Total"));

  ProcessResult js = Imgfs({"cache", "du", "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.Describe();
  json j = json::parse(js.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << js.out;
  ASSERT_EQ(j["images"].size(), 1u);
  EXPECT_EQ(j["images"][0]["names"][0], name);
  EXPECT_TRUE(j["images"][0]["complete"].get<bool>());
  EXPECT_EQ(j["images"][0]["shared"], 0);
  EXPECT_EQ(j["unreferenced"]["blobs"], 1);
  EXPECT_EQ(j["unreferenced"]["blob_bytes"], 4);
  int64_t unique = j["images"][0]["unique"];
  int64_t data = j["blobs"]["bytes"].get<int64_t>() + j["indexes"]["bytes"].get<int64_t>() +
                 j["chunks"]["bytes"].get<int64_t>();
  EXPECT_EQ(unique + j["shared"].get<int64_t>() + j["unreferenced"]["bytes"].get<int64_t>(), data);
  EXPECT_EQ(data + j["containers"].get<int64_t>() + j["metadata"].get<int64_t>(),
            j["total"].get<int64_t>());
  EXPECT_EQ(j["total"].get<int64_t>(), DuSb(Root()));

  ProcessResult gc = Imgfs({"cache", "gc"});
  ASSERT_EQ(gc.exit_code, 0) << gc.Describe();
  EXPECT_THAT(gc.out, HasSubstr("Deleted 1 blobs, 0 indexes, 0 chunks"));
  EXPECT_THAT(gc.out, HasSubstr("Total reclaimed space: 4B"));
  EXPECT_EQ(BlobCount(), 5u);

  ProcessResult set = Imgfs({"cache", "set", "--max-size", "1.5GiB", "--interval", "7"});
  ASSERT_EQ(set.exit_code, 0) << set.Describe();
  EXPECT_THAT(set.out, HasSubstr("1610612736 bytes"));
  EXPECT_THAT(set.out, HasSubstr("interval: 7s"));
  json config = json::parse(*ReadFile(Root() + "/config.json"), nullptr, false);
  EXPECT_EQ(config["max_size"], 1610612736);
  EXPECT_EQ(config["prune_interval_seconds"], 7);
  EXPECT_EQ(Imgfs({"cache", "set", "--max-size", "lots"}).exit_code, 2);
  EXPECT_EQ(Imgfs({"cache", "set", "--interval", "0"}).exit_code, 2);
  ProcessResult show = Imgfs({"cache", "set"});
  EXPECT_THAT(show.out, HasSubstr("max-size: 1.611GB"));

  // Under the configured cap: nothing to do.
  ProcessResult noop = Imgfs({"cache", "prune"});
  ASSERT_EQ(noop.exit_code, 0) << noop.Describe();
  EXPECT_THAT(noop.out, HasSubstr("Images removed: 0"));
  EXPECT_EQ(BlobCount(), 5u);
  // 100 kB: the image has to go.
  ProcessResult prune = Imgfs({"cache", "prune", "--max-size", "100k"});
  ASSERT_EQ(prune.exit_code, 0) << prune.Describe();
  EXPECT_THAT(prune.out, HasSubstr("Removed image: " + name));
  EXPECT_THAT(prune.out, HasSubstr("(limit 100kB)"));
  EXPECT_EQ(BlobCount(), 0u);
  EXPECT_LE(DuSb(Root()), 100000);
  EXPECT_EQ(Imgfs({"images", "-q"}).out, "");

  ProcessResult help = Imgfs({"cache", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("config.json"));
  EXPECT_THAT(help.out, HasSubstr("--max-size"));
  EXPECT_EQ(Imgfs({"cache", "bogus"}).exit_code, 2);
  EXPECT_EQ(Imgfs({"cache", "prune", "--max-size", "-1"}).exit_code, 2);
}

TEST_F(CacheCliTest, RmRefusesAContainersImageAndGcKeepsIt) {
  const std::string name = PullFixture();
  json manifest_index = json::parse(*ReadFile(Root() + "/index.json"), nullptr, false);
  ASSERT_FALSE(manifest_index.is_discarded());
  std::string manifest = manifest_index["manifests"][0]["digest"];
  ASSERT_TRUE(MakeDirs(Root() + "/containers/web/upper").ok());
  json container = {{"version", 1}, {"name", "web"}, {"image", manifest}};
  ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/web/container.json", container.dump()).ok());

  ProcessResult rm = Imgfs({"rm", name});
  EXPECT_EQ(rm.exit_code, 1) << rm.Describe();
  EXPECT_THAT(rm.err, HasSubstr("image is in use by container web"));
  ProcessResult forced = Imgfs({"rm", "-f", name});
  ASSERT_EQ(forced.exit_code, 0) << forced.Describe();
  ASSERT_EQ(Imgfs({"cache", "gc"}).exit_code, 0);
  EXPECT_EQ(BlobCount(), 5u) << "the container's image must stay";
  ProcessResult du = Imgfs({"cache", "du"});
  EXPECT_THAT(du.out, HasSubstr("container web"));
  std::filesystem::remove_all(Root() + "/containers/web");
  ASSERT_EQ(Imgfs({"cache", "gc"}).exit_code, 0);
  EXPECT_EQ(BlobCount(), 0u);
}

TEST_F(CacheCliTest, PullLazyRecordsMetadataOnlyAndAPullCompletesIt) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(kFixtures + "/tiny-estargz", "latest", "demo/lazy:1").ok());
  const std::string ref = (*reg)->host_port() + "/demo/lazy:1";

  ProcessResult pull = Imgfs({"pull", "--lazy", ref});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  EXPECT_THAT(pull.out, HasSubstr("for lazy mounts"));
  EXPECT_EQ(BlobCount(), 2u);  // manifest and config
  ProcessResult images = Imgfs({"images"});
  ASSERT_EQ(images.exit_code, 0) << images.Describe();
  EXPECT_THAT(images.out, HasSubstr("kB local)"));
  ProcessResult as_json = Imgfs({"images", "--format", "json"});
  EXPECT_THAT(as_json.out, HasSubstr("\"Complete\":false"));
  ProcessResult du = Imgfs({"cache", "du", "--format", "json"});
  json j = json::parse(du.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << du.out;
  EXPECT_FALSE(j["images"][0]["complete"].get<bool>());
  EXPECT_LT(j["images"][0]["size"].get<int64_t>(), 100000);
  EXPECT_GT(j["images"][0]["image_size"].get<int64_t>(), 2000000);

  ProcessResult local = Imgfs({"pull", "--lazy", "oci:" + kFixtures + "/tiny-estargz:latest"});
  EXPECT_EQ(local.exit_code, 2) << local.Describe();
  EXPECT_THAT(local.err, HasSubstr("--lazy needs a registry reference"));

  ProcessResult full = Imgfs({"pull", ref});
  ASSERT_EQ(full.exit_code, 0) << full.Describe();
  EXPECT_EQ(BlobCount(), 5u);
  images = Imgfs({"images"});
  EXPECT_THAT(images.out, Not(HasSubstr("local)")));
}

}  // namespace
}  // namespace imgfs::testing
