// imgfs — end-to-end tests of the mount default: `imgfs mount REF DIR` of an image the store
// lacks mounts its eStargz layers lazily (a small share of the image fetched, no layer blob in
// the store), `--pull` / `-o pull` fetches every layer first (also completing an image an
// earlier lazy mount recorded), `imgfs run` is lazy the same way, a local transport is copied
// whole, and the TOCs of the layers are fetched concurrently (seen by a proxy that holds the
// first ranged blob GETs until several are in flight at once).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"

namespace imgfs::testing {
namespace {

using nlohmann::json;

constexpr char kRandomSha[] = "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d";

// Sum of the layer sizes of the single image of OCI layout `layout`.
uint64_t ImageLayerBytes(const std::string& layout) {
  json index = json::parse(ReadAll(layout + "/index.json"), nullptr, false);
  if (index.is_discarded()) return 0;
  std::string digest = index["manifests"][0]["digest"];
  json manifest =
      json::parse(ReadAll(layout + "/blobs/sha256/" + digest.substr(7)), nullptr, false);
  if (manifest.is_discarded()) return 0;
  uint64_t total = 0;
  for (const json& l : manifest["layers"]) total += l["size"].get<uint64_t>();
  return total;
}

// What `imgfs stats DIR --format json` says of each layer: lazy or not.
std::vector<bool> LazyLayers(const ProcessResult& stats) {
  std::vector<bool> out;
  json j = json::parse(stats.out, nullptr, false);
  if (j.is_discarded() || !j.contains("layers")) return out;
  for (const json& l : j["layers"]) out.push_back(l["lazy"].get<bool>());
  return out;
}

// A counting proxy that also holds each of the first `gate` ranged blob GETs until `gate`
// of them have arrived (at most kMaxHold, so a loader that asks one at a time is slowed,
// not hung, and fails the test), and records the most ranged blob GETs in flight at once.
class GatedProxy {
 public:
  static constexpr std::chrono::seconds kMaxHold{10};

  GatedProxy(const std::string& upstream, int gate)
      : gate_(gate),
        stats_(std::make_shared<ProxyStats>()),
        forward_(ProxyHandler(upstream, stats_)),
        server_(
            [this](const HttpTestRequest& req, HttpTestConnection& conn) { Handle(req, conn); }) {}

  std::string host_port() const { return server_.host_port(); }
  const ProxyStats& stats() const { return *stats_; }
  // Whether all of the first `gate` ranged GETs were in flight at once.
  bool gate_opened() const {
    std::scoped_lock lock(mu_);
    return opened_;
  }
  int max_in_flight() const {
    std::scoped_lock lock(mu_);
    return max_in_flight_;
  }
  // GET /v2/ requests (scheme probes and pings).
  int pings() const { return pings_.load(); }

 private:
  void Handle(const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.method == "GET" && req.path == "/v2/") ++pings_;
    const bool ranged = req.method == "GET" && req.path.find("/blobs/") != std::string::npos &&
                        req.HasHeader("range");
    if (!ranged) return forward_(req, conn);
    {
      std::unique_lock lock(mu_);
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      if (arrived_ < gate_) {
        if (++arrived_ == gate_) {
          opened_ = true;
          cv_.notify_all();
        }
        cv_.wait_for(lock, kMaxHold, [this] { return arrived_ >= gate_; });
      }
    }
    forward_(req, conn);
    std::scoped_lock lock(mu_);
    --in_flight_;
  }

  const int gate_;
  std::shared_ptr<ProxyStats> stats_;
  HttpTestServer::Handler forward_;
  mutable std::mutex mu_;  // a leaf lock over the fields below
  std::condition_variable cv_;
  int arrived_ = 0;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  bool opened_ = false;
  std::atomic<int> pings_{0};
  HttpTestServer server_;  // last: stopped first, while the fields above live
};

class LazyDefaultTest : public ImgfsMountTest {
 protected:
  // Pushes fixture `name` as demo/<repo>:1 to the shared registry; its reference.
  std::string Push(const std::string& name, const std::string& repo) {
    RegistryServer* reg = SharedRegistry();
    if (reg == nullptr) return "";
    Status pushed = reg->PushOciLayout(FixturePath(name), "latest", "demo/" + repo + ":1");
    EXPECT_TRUE(pushed.ok()) << pushed.ToString();
    return "demo/" + repo + ":1";
  }
  size_t StoredBlobs() { return ListFilesRecursive(Root() + "/blobs/sha256").size(); }
};

TEST_F(LazyDefaultTest, DefaultMountOfAnEstargzImageIsLazy) {
  const std::string repo = Push("tiny-estargz", "lazydefault");
  ASSERT_FALSE(repo.empty());
  const uint64_t image_bytes = ImageLayerBytes(FixturePath("tiny-estargz"));
  ASSERT_GT(image_bytes, 2000000u);
  auto stats = std::make_shared<ProxyStats>();
  HttpTestServer proxy(ProxyHandler(SharedRegistry()->url(), stats));
  const std::string ref = proxy.host_port() + "/" + repo;

  MountOrDie({"--prefetch", "none", ref});
  EXPECT_LT(stats->blob_bytes.load(), image_bytes / 10) << "the mount fetched more than TOCs";
  EXPECT_EQ(StoredBlobs(), 2u) << "more than the manifest and the config were stored";
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  EXPECT_LT(stats->blob_bytes.load(), image_bytes / 5);
  ProcessResult js = Imgfs({"stats", Mnt(), "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.Describe();
  EXPECT_EQ(LazyLayers(js), std::vector<bool>(3, true)) << js.out;
  EXPECT_EQ(StoredBlobs(), 2u);
  Umount();

  // The image recorded without its layers: --pull completes it before mounting.
  MountOrDie({"--pull", ref});
  EXPECT_EQ(StoredBlobs(), 5u);  // manifest, config, 3 layers
  js = Imgfs({"stats", Mnt(), "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.Describe();
  EXPECT_EQ(LazyLayers(js), std::vector<bool>(3, false)) << js.out;
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  Umount();
}

TEST_F(LazyDefaultTest, PullFetchesEveryLayerFirst) {
  const std::string repo = Push("tiny-estargz", "pullfirst");
  ASSERT_FALSE(repo.empty());
  const uint64_t image_bytes = ImageLayerBytes(FixturePath("tiny-estargz"));
  auto stats = std::make_shared<ProxyStats>();
  HttpTestServer proxy(ProxyHandler(SharedRegistry()->url(), stats));
  const std::string ref = proxy.host_port() + "/" + repo;

  ProcessResult both = Imgfs({"mount", "--pull", "--lazy", ref, Mnt()});
  EXPECT_EQ(both.exit_code, 2) << both.Describe();
  EXPECT_NE(both.err.find("contradict"), std::string::npos) << both.err;

  MountOrDie({"-o", "pull", ref});
  EXPECT_GE(stats->blob_bytes.load(), image_bytes);
  EXPECT_EQ(StoredBlobs(), 5u);
  ProcessResult js = Imgfs({"stats", Mnt(), "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.Describe();
  EXPECT_EQ(LazyLayers(js), std::vector<bool>(3, false)) << js.out;
  Umount();

  // In the store whole: the default mount serves it from there, without a blob request.
  const int gets = stats->blob_gets.load();
  MountOrDie({ref});
  EXPECT_EQ(stats->blob_gets.load(), gets);
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  Umount();
}

TEST_F(LazyDefaultTest, LocalTransportIsCopiedWhole) {
  MountOrDie({"oci:" + FixturePath("tiny-estargz") + ":latest"});
  EXPECT_EQ(StoredBlobs(), 5u);
  ProcessResult js = Imgfs({"stats", Mnt(), "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.Describe();
  EXPECT_EQ(LazyLayers(js), std::vector<bool>(3, false)) << js.out;
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  Umount();
}

TEST_F(LazyDefaultTest, RunIsLazyAndRunPullFetchesEveryLayer) {
  const std::string repo = Push("tiny-estargz", "lazyrun");
  ASSERT_FALSE(repo.empty());
  const std::string ref = SharedRegistry()->host_port() + "/" + repo;
  ProcessResult r = Imgfs({"run", "--rm", ref, "cat", "/etc/os-release"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("ID=tiny"), std::string::npos) << r.out;
  EXPECT_EQ(StoredBlobs(), 2u) << "a layer blob was stored";
  // The image is in the store without its layers: --pull completes it first.
  r = Imgfs({"run", "--rm", "--pull", ref, "cat", "/etc/os-release"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("ID=tiny"), std::string::npos) << r.out;
  EXPECT_EQ(StoredBlobs(), 5u);
}

TEST_F(LazyDefaultTest, TocsOfAllLayersAreFetchedConcurrently) {
  const std::string repo = Push("tiny-estargz", "paralleltoc");
  ASSERT_FALSE(repo.empty());
  // The first ranged GET of each layer (its footer) is held until all three arrived: a mount
  // that loads one layer after the other could not get past the first before kMaxHold.
  GatedProxy proxy(SharedRegistry()->url(), 3);
  MountOrDie({"--prefetch", "none", proxy.host_port() + "/" + repo});
  EXPECT_TRUE(proxy.gate_opened()) << "the layers' first requests were not in flight at once";
  EXPECT_GE(proxy.max_in_flight(), 3);
  // One scheme decision for everything, made by the manifest GET itself (no /v2/ probe): the
  // layers read through the session that recorded the image. Layers with a session of their
  // own would each probe /v2/ first (their ranged GETs are not sent twice to decide).
  EXPECT_EQ(proxy.pings(), 0);
  EXPECT_EQ(StoredBlobs(), 2u);
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  Umount();
}

}  // namespace
}  // namespace imgfs::testing
