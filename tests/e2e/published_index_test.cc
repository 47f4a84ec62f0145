// imgfs — end-to-end tests of lazy mounts of a plain tar+gzip image through an imgfs index
// published in the registry (`imgfs index push`, fs/convert/index_publish.h): a fresh store
// mounts it with `imgfs mount --lazy` through a counting proxy; the mount fetches manifest,
// config and the index artifact but no layer; reading a small file fetches about one
// checkpoint span (4 MiB of output); the tree equals a normal mount's and reading all of it
// fetches no byte of the layer twice. A corrupt published
// index is refused: the layer is fetched whole (and the log says so).
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "cache/store.h"
#include "fs/image_ops/index_publish.h"
#include "fs/image_ops/pull.h"
#include "registry/digest.h"
#include "registry/push.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

constexpr int kBigFiles = 4;  // × 4 MiB of incompressible data: four checkpoint spans

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

class PublishedIndexTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    for (const char* m : {"mnt-full", "mnt-lazy"}) ASSERT_TRUE(MakeDirs(dir_.Sub(m)).ok());
    TestLayer layer;
    layer.files.push_back({"etc", "", TestFile::Kind::kDir, 0755});
    layer.files.push_back({"etc/small.conf", "setting = 42\n"});
    layer.files.push_back({"data", "", TestFile::Kind::kDir, 0755});
    for (int i = 0; i < kBigFiles; ++i) {
      layer.files.push_back(
          {"data/big" + std::to_string(i) + ".bin", RandomBytes(4u << 20, 77 + i)});
    }
    last_sha_ = registry::Digest::Sha256Of(layer.files.back().content).hex();
    TestImageSpec spec;
    spec.layers.push_back(std::move(layer));
    {
      ImageBuilder builder(dir_.Sub("layout"));
      Result<BuiltImage> built = builder.Add(spec, "latest");
      ASSERT_TRUE(built.has_value()) << built.error().ToString();
      layer_size_ = static_cast<uint64_t>(built->layer_sizes.at(0));
      manifest_ = built->manifest_digest;
    }
    // The suite's registry: every test pushes the same (deterministic) image.
    reg_ = SharedRegistry();
    ASSERT_NE(reg_, nullptr);
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("layout"), "latest", "demo/plain:1").ok());
    std::filesystem::remove_all(dir_.Sub("layout"));
    ref_ = reg_->host_port() + "/demo/plain:1";
    stats_ = std::make_shared<ProxyStats>();
    proxy_ = std::make_unique<HttpTestServer>(ProxyHandler(reg_->url(), stats_));
  }
  ProcessResult Imgfs(const std::string& store, std::vector<std::string> args) {
    return RunImgfs(dir_.Sub(store), std::move(args));
  }
  void Umount(const std::string& store, const std::string& mnt) {
    ProcessResult r = Imgfs(store, {"umount", dir_.Sub(mnt)});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
  }

  RegistryServer* reg_ = nullptr;  // the suite's
  std::shared_ptr<ProxyStats> stats_;
  std::unique_ptr<HttpTestServer> proxy_;
  std::string ref_;
  std::string last_sha_;
  uint64_t layer_size_ = 0;
  registry::Digest manifest_;
};

TEST_F(PublishedIndexTest, FreshStoreMountsLazilyThroughThePublishedIndex) {
  ProcessResult r = Imgfs("publisher", {"index", "push", ref_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_NE(r.out.find("sha256-" + manifest_.hex()), std::string::npos) << r.out;

  const std::string lazy_ref = proxy_->host_port() + "/demo/plain:1";
  r = Imgfs("fresh", {"mount", "--lazy", lazy_ref, dir_.Sub("mnt-lazy")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(IsMounted(dir_.Sub("mnt-lazy")));
  const uint64_t after_mount = stats_->blob_bytes.load();
  EXPECT_GT(after_mount, 0u);  // config + the index blob
  EXPECT_LT(after_mount, 1u << 20) << "the mount fetched more than config and index";
  const std::vector<std::string> blobs = ListFilesRecursive(dir_.Sub("fresh") + "/blobs/sha256");
  EXPECT_LE(blobs.size(), 2u) << "the layer blob was downloaded";

  EXPECT_EQ(ReadAll(dir_.Sub("mnt-lazy") + "/etc/small.conf"), "setting = 42\n");
  const uint64_t small_cost = stats_->blob_bytes.load() - after_mount;
  EXPECT_GT(small_cost, 0u);
  // One checkpoint span (4 MiB of output, here incompressible) and a cache block.
  EXPECT_LT(small_cost, (4u << 20) + (512u << 10)) << "a small file cost more than a span";
  EXPECT_LT(small_cost, layer_size_ / 2);

  const uint64_t before_last = stats_->blob_bytes.load();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(dir_.Sub("mnt-lazy") + "/data/big" +
                                               std::to_string(kBigFiles - 1) + ".bin"))
                .hex(),
            last_sha_);
  // A 4 MiB file straddles two 4 MiB checkpoint spans.
  EXPECT_LT(stats_->blob_bytes.load() - before_last, (8u << 20) + (512u << 10))
      << "the last file cost more than its spans";

  // The tree equals a normal mount of the pulled image.
  r = Imgfs("publisher", {"mount", ref_, dir_.Sub("mnt-full")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string error;
  auto full = ListTree(dir_.Sub("mnt-full"), TreeOptions{}, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto lazy = ListTree(dir_.Sub("mnt-lazy"), TreeOptions{}, &error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_GT(full.size(), 5u);
  std::vector<std::string> diffs = CompareTrees(lazy, full, TreeOptions{});
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  // Reading everything fetched no byte of the layer twice (pieces are claimed before they
  // are fetched, by demand reads, read-ahead and the streaming pass alike).
  EXPECT_LE(stats_->blob_bytes.load() - after_mount, layer_size_)
      << "a byte of the layer was fetched twice";
  Umount("publisher", "mnt-full");
  Umount("fresh", "mnt-lazy");
}

TEST_F(PublishedIndexTest, PrefetchAllFetchesThePlainLayerAndARemountReusesItsChunks) {
  ProcessResult r = Imgfs("publisher", {"index", "push", ref_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string lazy_ref = proxy_->host_port() + "/demo/plain:1";
  // What a lazy mount of a fresh store costs without the layer (config, index blob): the
  // background pass starts while the mount is still being answered, so its first bytes may
  // arrive before `mount` returns; the baseline is taken before the mount instead.
  const uint64_t before_probe = stats_->blob_bytes.load();
  r = Imgfs("probe", {"mount", "--lazy", "--prefetch", "none", lazy_ref, dir_.Sub("mnt-lazy")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  Umount("probe", "mnt-lazy");
  const uint64_t mount_cost = stats_->blob_bytes.load() - before_probe;
  EXPECT_LT(mount_cost, 1u << 20) << "a lazy mount fetched more than config and index";

  const uint64_t before_mount = stats_->blob_bytes.load();
  r = Imgfs("fresh", {"mount", "--lazy", "--prefetch", "all", lazy_ref, dir_.Sub("mnt-lazy")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // Without a single read, the background pass fetches the whole layer, each byte once.
  const uint64_t want = mount_cost + layer_size_;
  for (int i = 0; i < 600 && stats_->blob_bytes.load() - before_mount < want; ++i) {
    usleep(100 * 1000);
  }
  EXPECT_EQ(stats_->blob_bytes.load() - before_mount, want)
      << "--prefetch=all did not fetch exactly the layer";
  Umount("fresh", "mnt-lazy");

  // A new mount on the same store serves every file from the chunk store: no layer bytes. Its
  // tree is the one the first mount merged from the published index and stored.
  r = Imgfs("fresh", {"mount", "--lazy", "--prefetch", "none", lazy_ref, dir_.Sub("mnt-lazy")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ProcessResult stats = Imgfs("fresh", {"stats", "--format", "json", dir_.Sub("mnt-lazy")});
  EXPECT_NE(stats.out.find("\"tree\": \"stored\""), std::string::npos) << stats.Describe();
  const uint64_t before_reads = stats_->blob_bytes.load();
  EXPECT_EQ(ReadAll(dir_.Sub("mnt-lazy") + "/etc/small.conf"), "setting = 42\n");
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(dir_.Sub("mnt-lazy") + "/data/big" +
                                               std::to_string(kBigFiles - 1) + ".bin"))
                .hex(),
            last_sha_);
  for (int i = 0; i < kBigFiles; ++i) {
    EXPECT_EQ(ReadAll(dir_.Sub("mnt-lazy") + "/data/big" + std::to_string(i) + ".bin").size(),
              4u << 20);
  }
  EXPECT_EQ(stats_->blob_bytes.load() - before_reads, 0u)
      << "files already verified and stored were fetched again";
  Umount("fresh", "mnt-lazy");
}

TEST_F(PublishedIndexTest, CorruptPublishedIndexIsRefusedAndTheLayerFetchedWhole) {
  {
    auto store = cache::Store::Open(dir_.Sub("publisher"));
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    auto indexes = fs::BuildImageIndexes(**store, ref_, fs::PullOptions{}, true);
    ASSERT_TRUE(indexes.has_value()) << indexes.error().ToString();
    ASSERT_EQ(indexes->layers.size(), 1u);
    std::string& encoded = indexes->layers[0].encoded;
    encoded[encoded.size() / 2] ^= 0x5a;  // breaks the index's own checksum
    auto source = fs::OpenRegistrySource(ref_, fs::PullOptions{});
    ASSERT_TRUE(source.has_value()) << source.error().ToString();
    auto pushed = fs::PushImageIndexes(*indexes, reg_->host_port(), "demo/plain",
                                       registry::PushOptions{}, **source);
    ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();
    // What the mount does with it: the lookup refuses the artifact as Corrupt.
    auto found = fs::FindPublishedIndexes(**source, manifest_);
    ASSERT_FALSE(found.has_value());
    EXPECT_EQ(found.error().code(), StatusCode::kCorrupt) << found.error().ToString();
  }
  const std::string lazy_ref = proxy_->host_port() + "/demo/plain:1";
  ProcessResult r = Imgfs("fresh", {"mount", "--lazy", lazy_ref, dir_.Sub("mnt-lazy")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // The mount daemon logs the refusal (to /dev/null when detached) and fetches the layer
  // whole into the store, where it is indexed locally.
  EXPECT_GE(stats_->blob_bytes.load(), layer_size_) << "the layer was not fetched whole";
  const std::vector<std::string> blobs = ListFilesRecursive(dir_.Sub("fresh") + "/blobs/sha256");
  EXPECT_GE(blobs.size(), 3u) << "manifest, config and the layer";
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(dir_.Sub("mnt-lazy") + "/data/big" +
                                               std::to_string(kBigFiles - 1) + ".bin"))
                .hex(),
            last_sha_);
  EXPECT_EQ(ReadAll(dir_.Sub("mnt-lazy") + "/etc/small.conf"), "setting = 42\n");
  Umount("fresh", "mnt-lazy");
}

// The fixtures made by real tools (plain tar, tar+gzip, tar+zstd): published, then mounted
// lazily from a fresh store; the mount fetches no layer, the tree equals the fixtures'
// expected listing and a file's bytes are right.
// The fixtures share the suite's registry, each in its own repository.
class PublishedFixtureTest : public ImgfsMountTest,
                             public ::testing::WithParamInterface<std::string> {};

TEST_P(PublishedFixtureTest, LazyMountEqualsTheExpectedListing) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  const std::string name = "demo/" + GetParam() + ":1";
  ASSERT_TRUE(reg->PushOciLayout(FixturePath(GetParam()), "latest", name).ok());
  const std::string publisher = Sub("publisher");
  ProcessResult r = RunImgfs(publisher, {"index", "push", reg->host_port() + "/" + name});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto stats = std::make_shared<ProxyStats>();
  HttpTestServer proxy(ProxyHandler(reg->url(), stats));
  MountOrDie({"--lazy", proxy.host_port() + "/" + name});
  const uint64_t after_mount = stats->blob_bytes.load();
  EXPECT_LE(ListFilesRecursive(Root() + "/blobs/sha256").size(), 2u)
      << "layer blobs were downloaded at mount";
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(),
            "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d");
  EXPECT_GT(stats->blob_bytes.load(), after_mount);
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  std::string error;
  auto actual = ListTree(Mnt(), TreeOptions{}, &error);
  ASSERT_TRUE(error.empty()) << error;
  std::vector<std::string> diffs = CompareWithListing(actual, listing, TreeOptions{});
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  r = Imgfs({"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PublishedFixtureTest,
                         ::testing::Values("tiny-uncompressed", "tiny-gzip", "tiny-zstd"),
                         [](const auto& param_info) {
                           std::string name = param_info.param.substr(5);
                           name[0] = static_cast<char>(name[0] - 'a' + 'A');
                           return name;
                         });

}  // namespace
}  // namespace imgfs::testing
