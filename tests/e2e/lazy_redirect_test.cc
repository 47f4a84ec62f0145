// imgfs — end-to-end tests of lazy mounts (the real binary, real FUSE, a real docker-registry)
// for three parts of issue 4:
//  - Registry quirks: blob downloads redirected to signed storage URLs that expire
//    (tests/support/redirect_proxy.h, like S3/CDN-backed registries). A lazy mount keeps
//    reading after its remembered URLs expired: the storage host's 403 sends the client back
//    to the registry for a fresh URL, and no read fails. The registry requires auth; the
//    storage host refuses any request that carries the registry's Authorization header.
//    The same for a plain tar+gzip layer read through an imgfs index published in the
//    registry.
//  - Landmark prefetch on every mount: an eStargz image converted with --prioritize is
//    mounted, unmounted, its chunks evicted by `imgfs cache prune`, mounted again from the
//    stored TOC index: the prioritized file is fetched right after the mount, before anyone
//    reads it.
//  - Offline: an image read whole through a lazy mount mounts again and reads the same bytes
//    with the registry gone, without a single blob request.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/redirect_proxy.h"
#include "tests/support/registry_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

using std::chrono::milliseconds;

// /data/random.bin of the `tiny` image: 1 576 960 incompressible bytes in layer 1.
constexpr uint64_t kRandomSize = 1576960;
const std::string kRandomSha = "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d";
// Validity of the signed URLs in the redirect tests: longer than a lazy mount of `tiny`
// takes on a loaded machine is not needed (an expired URL is re-resolved either way), short
// enough that waiting it out keeps the test quick.
constexpr milliseconds kExpiry{1500};

// Files of `tiny` with the sha256 of their content (tiny.expected.txt), from all three layers.
const std::map<std::string, std::string>& Expected() {
  static const std::map<std::string, std::string> kFiles = {
      {"/data/random.bin", kRandomSha},
      {"/bin/busybox", "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6"},
      {"/data/zeros.bin", "106f0647ae10a6516b1ab2968038161e287ef40d1b22ca047531ed768e594ef1"},
      {"/etc/os-release", "d0f15c4d8c5d93ac7882b30873d43fa690695f342bc254ce7e4fed52166bff83"},
      {"/etc/passwd", "e0c79f05a81e5ca5f39c1e8a05146c2464d9dd4f3052c8446d04e0cf3355bd7e"},
      {"/data/changeme.txt", "be1e99b2af2a9bfa5e670bc5a55cd9c998d0739b419ad5922869313e36ddde8f"},
      {"/etc/conf.d/new.conf", "7ef249a20b7ea4991f7d38c661bc7412027ce0f75222d46b419bd9fea2946d11"},
  };
  return kFiles;
}

// sha256 hex of the file's content, or "errno N" when opening or reading it fails.
std::string ShaOrErrno(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return "errno " + std::to_string(errno);
  std::string data;
  char buf[1 << 16];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      const int err = errno;
      close(fd);
      return "errno " + std::to_string(err);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return registry::Digest::Sha256Of(data).hex();
}

// Incompressible, deterministic bytes (xorshift64).
std::string RandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + i, &x, 8);
  }
  return out;
}

// Waits until `done` holds or `timeout` passes; returns `done()`.
template <typename Pred>
bool WaitFor(Pred done, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  return done();
}

class LazyRedirectTest : public ImgfsMountTest {
 protected:
  // imgfs with the test's own docker config (for `imgfs login`).
  ProcessResult Imgfs(std::vector<std::string> args, const std::string& store = "",
                      std::string_view stdin_data = {}) {
    return RunImgfs(store.empty() ? Root() : store, std::move(args),
                    {"DOCKER_CONFIG=" + Sub("docker")}, stdin_data);
  }
  // The whole mounted tree (every file read), compared with the fixture's listing.
  std::map<std::string, TreeEntry> CheckTreeAgainstListing() {
    Result<std::string> text = ReadFile(FixturePath("tiny.expected.txt"));
    EXPECT_TRUE(text.has_value()) << text.error().ToString();
    auto listing = ParseListing(text.has_value() ? *text : std::string());
    EXPECT_GT(listing.size(), 50u);
    TreeOptions options;
    options.ignore_paths = {"/.no.prefetch.landmark", "/.prefetch.landmark", "/stargz.index.json"};
    std::string error;
    auto actual = ListTree(Mnt(), options, &error);
    EXPECT_TRUE(error.empty()) << error;
    std::vector<std::string> diffs = CompareWithListing(actual, listing, options);
    EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
    return actual;
  }
};

TEST_F(LazyRedirectTest, EstargzReadsSurviveExpiredSignedUrlsWithoutLeakingTheToken) {
  auto reg = RegistryServer::Start(RegistryServerOptions::BasicAuth("alice", "s3cret"));
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(FixturePath("tiny-estargz"), "latest", "demo/r:1").ok());
  RedirectProxy proxy((*reg)->url(), kExpiry, "alice:s3cret");
  ProcessResult r =
      Imgfs({"login", "-u", "alice", "--password-stdin", proxy.host_port()}, "", "s3cret\n");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  r = Imgfs({"mount", "--lazy", "--prefetch", "none", "--fetch-timeout", "20",
             proxy.host_port() + "/demo/r:1", Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(IsMounted(Mnt()));
  // The TOCs came from storage, through redirects.
  EXPECT_GE(proxy.redirects_issued(), 1);
  EXPECT_GE(proxy.signed_gets(), 1);
  EXPECT_EQ(ShaOrErrno(Mnt() + "/etc/os-release"), Expected().at("/etc/os-release"));
  const int redirects_before = proxy.redirects_issued();

  // Every URL signed so far expires; the client still remembers them (for 60 s).
  std::this_thread::sleep_for(kExpiry + milliseconds(500));
  for (const auto& [path, sha] : Expected()) {
    EXPECT_EQ(ShaOrErrno(Mnt() + path), sha) << path;
  }
  EXPECT_GE(proxy.expired_refusals(), 1) << "no remembered URL was used after its expiry";
  EXPECT_GT(proxy.redirects_issued(), redirects_before) << "no URL was re-resolved";
  EXPECT_GE(proxy.redirects_issued(), 2);
  EXPECT_EQ(proxy.auth_refusals(), 0) << "the registry's Authorization reached the storage";

  // Once more past expiry: the whole tree, every file read, equals the fixture's.
  std::this_thread::sleep_for(kExpiry + milliseconds(500));
  const int refusals_before = proxy.expired_refusals();
  CheckTreeAgainstListing();
  EXPECT_GT(proxy.expired_refusals(), refusals_before);
  EXPECT_EQ(proxy.auth_refusals(), 0);
  Umount();
}

TEST_F(LazyRedirectTest, PublishedIndexGzipLayerReadsSurviveExpiredSignedUrls) {
  constexpr int kBigFiles = 2;
  TestLayer layer;
  layer.files.push_back({"etc", "", TestFile::Kind::kDir, 0755});
  layer.files.push_back({"etc/small.conf", "setting = 42\n"});
  layer.files.push_back({"data", "", TestFile::Kind::kDir, 0755});
  std::vector<std::string> shas;
  for (int i = 0; i < kBigFiles; ++i) {
    std::string content = RandomBytes(5u << 20, 91 + i);
    shas.push_back(registry::Digest::Sha256Of(content).hex());
    layer.files.push_back({"data/big" + std::to_string(i) + ".bin", std::move(content)});
  }
  TestImageSpec spec;
  spec.layers.push_back(std::move(layer));
  {
    ImageBuilder builder(dir_.Sub("layout"));
    Result<BuiltImage> built = builder.Add(spec, "latest");
    ASSERT_TRUE(built.has_value()) << built.error().ToString();
  }
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(dir_.Sub("layout"), "latest", "demo/plain:1").ok());
  ProcessResult r =
      Imgfs({"index", "push", (*reg)->host_port() + "/demo/plain:1"}, dir_.Sub("publisher"));
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  RedirectProxy proxy((*reg)->url(), kExpiry);
  r = Imgfs(
      {"mount", "--lazy", "--fetch-timeout", "20", proxy.host_port() + "/demo/plain:1", Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // Config and the published index came through storage; the layer was not fetched whole.
  EXPECT_GE(proxy.redirects_issued(), 1);
  EXPECT_LT(proxy.signed_bytes(), 1u << 20) << "the mount fetched more than config and index";
  EXPECT_EQ(ShaOrErrno(Mnt() + "/etc/small.conf"),
            registry::Digest::Sha256Of("setting = 42\n").hex());
  const int redirects_before = proxy.redirects_issued();

  std::this_thread::sleep_for(kExpiry + milliseconds(500));
  for (int i = 0; i < kBigFiles; ++i) {
    EXPECT_EQ(ShaOrErrno(Mnt() + "/data/big" + std::to_string(i) + ".bin"), shas[i]) << i;
  }
  EXPECT_GE(proxy.expired_refusals(), 1) << "no remembered URL was used after its expiry";
  EXPECT_GT(proxy.redirects_issued(), redirects_before) << "no URL was re-resolved";
  EXPECT_EQ(proxy.auth_refusals(), 0);
  Umount();
}

TEST_F(LazyRedirectTest, LandmarkFilesArePrefetchedOnAMountFromTheStoredIndex) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  // tiny with /data/random.bin prioritized: first in layer 1, then the .prefetch.landmark.
  ProcessResult r =
      Imgfs({"convert", "-q", "--format", "estargz", "--prioritize", "/data/random.bin",
             "oci:" + FixturePath("tiny-gzip:latest"), "oci:" + dir_.Sub("conv") + ":conv"},
            dir_.Sub("convert-store"));
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE((*reg)->PushOciLayout(dir_.Sub("conv"), "conv", "demo/lm:1").ok());

  auto first = std::make_shared<ProxyStats>();
  {
    HttpTestServer proxy(ProxyHandler((*reg)->url(), first));
    const std::string ref = proxy.host_port() + "/demo/lm:1";
    r = Imgfs({"mount", "--lazy", "--prefetch", "landmarks", ref, Mnt()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    // The mount that fetched the TOC prefetches random.bin (and the TOCs came before).
    EXPECT_TRUE(
        WaitFor([&] { return first->blob_bytes.load() >= kRandomSize; }, milliseconds(20000)))
        << "fetched " << first->blob_bytes.load();
    Umount();
  }
  // The landmark was kept beside the TOC index.
  size_t records = 0;
  for (const std::string& f : ListFilesRecursive(Root() + "/indexes")) {
    if (f.ends_with(".landmark")) ++records;
  }
  EXPECT_EQ(records, 1u) << "one layer has a .prefetch.landmark";

  // `imgfs cache prune` evicts the chunks (the least recently used data) to get the store
  // under a limit half a chunk store below its size; index and image stay.
  const std::string random_chunk = Root() + "/chunks/" + kRandomSha.substr(0, 2) + "/" + kRandomSha;
  ASSERT_TRUE(std::filesystem::exists(random_chunk)) << "the first mount did not prefetch";
  uint64_t chunk_bytes = 0;
  for (const std::string& f : ListFilesRecursive(Root() + "/chunks")) {
    chunk_bytes += std::filesystem::file_size(Root() + "/chunks/" + f);
  }
  ProcessResult du = RunProcess({"du", "-sb", Root()});
  ASSERT_EQ(du.exit_code, 0) << du.Describe();
  const uint64_t limit = std::stoull(du.out) - chunk_bytes / 2;
  r = Imgfs({"cache", "prune", "--max-size", std::to_string(limit)});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(std::filesystem::exists(random_chunk)) << r.out;
  r = Imgfs({"images"});
  ASSERT_NE(r.out.find("demo/lm"), std::string::npos) << "prune removed the image: " << r.out;

  auto second = std::make_shared<ProxyStats>();
  HttpTestServer proxy(ProxyHandler((*reg)->url(), second));
  const std::string ref = proxy.host_port() + "/demo/lm:1";
  r = Imgfs({"mount", "--lazy", "--prefetch", "landmarks", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // No file is read: only the prefetch fetches, and it fetches the prioritized file.
  EXPECT_TRUE(
      WaitFor([&] { return second->blob_bytes.load() >= kRandomSize; }, milliseconds(20000)))
      << "nothing was prefetched on the mount from the stored index: fetched "
      << second->blob_bytes.load() << " bytes";
  // Give a runaway prefetch a moment to show itself: only the files before the landmark.
  std::this_thread::sleep_for(milliseconds(300));
  const uint64_t prefetched = second->blob_bytes.load();
  EXPECT_LT(prefetched, kRandomSize + (512u << 10)) << "more than the landmark files";
  // random.bin (smaller than one 4 MiB eStargz chunk) is in the chunk store, keyed by its
  // sha256, before anyone read it.
  EXPECT_TRUE(
      std::filesystem::exists(Root() + "/chunks/" + kRandomSha.substr(0, 2) + "/" + kRandomSha))
      << "the prioritized file's chunk was not prefetched";
  EXPECT_EQ(ShaOrErrno(Mnt() + "/data/random.bin"), kRandomSha);
  Umount();
}

// Offline: a lazily recorded image, read whole once, needs no registry any more.
class LazyOfflineTest : public LazyRedirectTest,
                        public ::testing::WithParamInterface<std::string> {};

TEST_P(LazyOfflineTest, FullyReadLazyImageMountsAndReadsWithTheRegistryDown) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(FixturesDir() + "/" + GetParam(), "latest", "demo/o:1").ok());
  auto stats = std::make_shared<ProxyStats>();
  auto faults = std::make_shared<ProxyFaults>();
  HttpTestServer proxy(FaultyProxyHandler((*reg)->url(), stats, faults));
  const std::string ref = proxy.host_port() + "/demo/o:1";

  ProcessResult r = Imgfs({"pull", "--lazy", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = Imgfs({"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::map<std::string, TreeEntry> online = CheckTreeAgainstListing();
  EXPECT_GT(stats->blob_gets.load(), 0);
  Umount();

  // The registry stops; the proxy in its place answers nothing and counts what is asked.
  faults->unreachable = true;
  reg->reset();
  const size_t blob_requests = proxy.Count("GET", "/v2/demo/o/blobs/");
  const size_t all_requests = proxy.requests().size();
  r = Imgfs({"mount", "--lazy", "--fetch-timeout", "5", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::map<std::string, TreeEntry> offline = CheckTreeAgainstListing();
  TreeOptions options;
  std::vector<std::string> diffs = CompareTrees(offline, online, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  for (const auto& [path, sha] : Expected()) {
    EXPECT_EQ(ShaOrErrno(Mnt() + path), sha) << path;
  }
  EXPECT_EQ(proxy.Count("GET", "/v2/demo/o/blobs/"), blob_requests)
      << "the offline mount asked for blobs";
  EXPECT_EQ(proxy.requests().size(), all_requests) << "the offline mount used the network";
  Umount();
}

INSTANTIATE_TEST_SUITE_P(Formats, LazyOfflineTest,
                         ::testing::Values("tiny-estargz", "tiny-zstdchunked"),
                         [](const auto& param_info) {
                           return param_info.param == "tiny-estargz" ? "Estargz" : "ZstdChunked";
                         });

}  // namespace
}  // namespace imgfs::testing
