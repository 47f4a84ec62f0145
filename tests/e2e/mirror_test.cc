// End-to-end: imgfs behind a registry mirror named in registries.conf. The mirror is a real
// Debian docker-registry in pull-through mode (`proxy: remoteurl:`) in front of the origin
// registry, both on loopback with access logs. Two stores (two machines) pulling through the
// mirror cost the origin each blob only for the first (the mirror's miss); a lazy mount reads its
// ranges through the mirror; a dead first mirror falls back to the next; a blocked registry is
// refused.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>

#include "base/file_util.h"
#include "tests/support/closed_port.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"

namespace imgfs::testing {
namespace {

// Polls `done` every 50 ms for up to 60 s (a loaded machine); true once it holds.
bool WaitFor(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// Successful blob GETs per blob path.
std::map<std::string, int> BlobGets(const RegistryServer& reg) {
  std::map<std::string, int> out;
  for (const RegistryAccess& a : reg.Accesses()) {
    if (a.IsBlob() && a.method == "GET" && (a.status == 200 || a.status == 206)) ++out[a.path];
  }
  return out;
}

class MirrorTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    RegistryServerOptions origin_options;
    origin_options.access_log = true;
    auto origin = RegistryServer::Start(origin_options);
    ASSERT_TRUE(origin.has_value()) << origin.error().ToString();
    origin_ = std::move(origin).value();
    ASSERT_TRUE(origin_->PushOciLayout(FixturePath("tiny-gzip"), "latest", "demo/m:1").ok());
    RegistryServerOptions mirror_options;
    mirror_options.access_log = true;
    mirror_options.proxy_remote_url = origin_->url();
    auto mirror = RegistryServer::Start(mirror_options);
    ASSERT_TRUE(mirror.has_value()) << mirror.error().ToString();
    mirror_ = std::move(mirror).value();
    ref_ = origin_->host_port() + "/demo/m:1";
  }

  // A registries.conf naming the origin with `mirrors` in front of it.
  std::string WriteConf(const std::vector<std::string>& mirrors, bool blocked = false) {
    std::string text = "[[registry]]\nlocation = \"" + origin_->host_port() + "\"\n";
    if (blocked) text += "blocked = true\n";
    for (const std::string& m : mirrors) text += "[[registry.mirror]]\nlocation = \"" + m + "\"\n";
    const std::string path = Sub("registries.conf");
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }

  std::unique_ptr<RegistryServer> origin_;
  std::unique_ptr<RegistryServer> mirror_;
  std::string ref_;
};

TEST_F(MirrorTest, TwoStoresPullThroughTheMirrorAndOnlyTheFirstReachesTheOrigin) {
  const std::string conf = WriteConf({mirror_->host_port()});
  ProcessResult r = RunImgfs(Sub("machine-a"), {"--registries-conf", conf, "pull", ref_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::map<std::string, int> origin_after_a = BlobGets(*origin_);
  ASSERT_GE(origin_after_a.size(), 2u);  // config and layers
  // distribution's proxy answers a miss by streaming the blob from the origin while a
  // second GET stores it: wait until every blob is in the mirror's storage and both GETs
  // are in the origin's log (which may trail the answers a little).
  for (const auto& [path, count] : origin_after_a) {
    const std::string hex = path.substr(path.rfind(':') + 1);
    const std::string data = mirror_->dir() + "/storage/docker/registry/v2/blobs/sha256/" +
                             hex.substr(0, 2) + "/" + hex + "/data";
    ASSERT_TRUE(WaitFor([&] { return ::access(data.c_str(), F_OK) == 0; }))
        << "the mirror never stored " << path;
  }
  ASSERT_TRUE(WaitFor([&] {
    origin_after_a = BlobGets(*origin_);
    for (const auto& [path, count] : origin_after_a) {
      if (count < 2) return false;
    }
    return true;
  })) << "the mirror fetched a blob from the origin fewer than twice";

  r = RunImgfs(Sub("machine-b"), {"--registries-conf", conf, "pull", ref_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = RunImgfs(Sub("machine-b"), {"images", "--format", "{{.Repository}}:{{.Tag}}"});
  EXPECT_NE(r.out.find(ref_), std::string::npos) << "recorded under the origin's name: " << r.out;
  // The second machine cost the origin nothing: every blob came from the mirror's storage.
  EXPECT_EQ(BlobGets(*origin_), origin_after_a);
  const std::map<std::string, int> mirror_gets = BlobGets(*mirror_);
  ASSERT_EQ(mirror_gets.size(), origin_after_a.size());
  for (const auto& [path, count] : mirror_gets) EXPECT_EQ(count, 2) << path;
}

TEST_F(MirrorTest, EnvironmentVariableNamesTheFileToo) {
  const std::string conf = WriteConf({mirror_->host_port()});
  ProcessResult r = RunImgfs(Root(), {"pull", ref_}, {"CONTAINERS_REGISTRIES_CONF=" + conf});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(BlobGets(*mirror_).empty());
}

TEST_F(MirrorTest, LazyMountReadsThroughTheMirror) {
  const std::string conf = WriteConf({mirror_->host_port()});
  MountOrDie({"--registries-conf", conf, "--lazy", ref_});
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  Umount();
  // Manifest and layer data came from the mirror.
  bool mirror_manifest = false;
  for (const RegistryAccess& a : mirror_->Accesses()) mirror_manifest |= a.IsManifest();
  EXPECT_TRUE(mirror_manifest);
  EXPECT_FALSE(BlobGets(*mirror_).empty());
}

TEST_F(MirrorTest, DeadFirstMirrorFallsBackToTheNext) {
  ClosedPort dead;
  const std::string conf = WriteConf({dead.host_port(), mirror_->host_port()});
  ProcessResult r = RunImgfs(Root(), {"--registries-conf", conf, "pull", ref_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(BlobGets(*mirror_).empty()) << "the second mirror served the blobs";
}

TEST_F(MirrorTest, EveryMirrorDeadFallsBackToTheOrigin) {
  ClosedPort dead;
  const std::string conf = WriteConf({dead.host_port()});
  ProcessResult r = RunImgfs(Root(), {"--registries-conf", conf, "pull", ref_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(BlobGets(*mirror_).empty());
  EXPECT_FALSE(BlobGets(*origin_).empty());
}

TEST_F(MirrorTest, BlockedRegistryIsRefused) {
  const std::string conf = WriteConf({mirror_->host_port()}, /*blocked=*/true);
  ProcessResult r = RunImgfs(Root(), {"--registries-conf", conf, "pull", ref_});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("blocked in registries.conf"), std::string::npos) << r.err;
  EXPECT_TRUE(origin_->Accesses().empty() || BlobGets(*origin_).empty());
  EXPECT_TRUE(BlobGets(*mirror_).empty());
}

TEST_F(MirrorTest, BrokenRegistriesConfFailsWithFileAndLine) {
  const std::string path = Sub("broken.conf");
  ASSERT_TRUE(WriteFileAtomic(path, "[[registry]]\nlocation = 5000\n").ok());
  ProcessResult r = RunImgfs(Root(), {"--registries-conf", path, "pull", ref_});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("broken.conf:2:"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imgfs::testing
