// imgfs — end-to-end tests of `imgfs mount --lazy`: the real binary mounts an eStargz or
// zstd:chunked image from a real docker-registry through a counting proxy. The mount fetches
// only the TOCs, a read fetches only the chunks it touches, the tree equals the fixtures'
// expected listing, and after umount a second lazy mount with the registry gone serves the
// fetched files from the chunk store (and EIO, not a hang, for the others).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

constexpr char kRandomSha[] = "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d";

// errno of reading the first byte of `path` (0 on success).
int ReadErrno(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return errno;
  char c = 0;
  ssize_t n = read(fd, &c, 1);
  int err = n < 0 ? errno : 0;
  close(fd);
  return err;
}

uint64_t ImageLayerBytes(const std::string& layout) {
  auto index = nlohmann::json::parse(ReadAll(layout + "/index.json"), nullptr, false);
  if (index.is_discarded()) return 0;
  std::string digest = index["manifests"][0]["digest"];
  auto manifest =
      nlohmann::json::parse(ReadAll(layout + "/blobs/sha256/" + digest.substr(7)), nullptr, false);
  if (manifest.is_discarded()) return 0;
  uint64_t total = 0;
  for (const auto& l : manifest["layers"]) total += l["size"].get<uint64_t>();
  return total;
}

// WholeTreeEqualsTheExpectedListing uses the suite's shared registry; the offline test stops
// its registry and so starts its own.
class LazyMountTest : public ImgfsMountTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(LazyMountTest, FetchesOnlyWhatIsReadAndServesItOfflineLater) {
  const std::string layout = FixturePath(GetParam());
  const uint64_t image_bytes = ImageLayerBytes(layout);
  ASSERT_GT(image_bytes, 2000000u);
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(layout, "latest", "demo/x:1").ok());
  auto stats = std::make_shared<ProxyStats>();
  auto proxy = std::make_unique<HttpTestServer>(ProxyHandler((*reg)->url(), stats));
  const std::string ref = proxy->host_port() + "/demo/x:1";

  ProcessResult r = Imgfs({"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(IsMounted(Mnt()));
  uint64_t after_mount = stats->blob_bytes.load();
  EXPECT_GT(after_mount, 0u);
  EXPECT_LT(after_mount, image_bytes / 10) << "the mount fetched more than the TOCs";
  EXPECT_TRUE(ListFilesRecursive(Root() + "/blobs/sha256").size() < 4u)
      << "layer blobs were downloaded";

  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  uint64_t after_cat = stats->blob_bytes.load();
  // The file's chunk plus its neighbours in the blob (fetches are widened by 256 KiB).
  EXPECT_LT(after_cat - after_mount, 320u << 10) << "cat etc/os-release fetched too much";

  std::string random = ReadAll(Mnt() + "/data/random.bin");
  EXPECT_EQ(random.size(), 1576960u);
  EXPECT_EQ(registry::Digest::Sha256Of(random).hex(), kRandomSha);
  EXPECT_LT(stats->blob_bytes.load(), image_bytes);
  Umount();

  // Registry and proxy gone: what was fetched is served from the chunk store; the rest is EIO.
  reg->reset();
  proxy.reset();
  r = Imgfs({"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  // A file of another layer that nothing read, widened or streamed.
  EXPECT_EQ(ReadErrno(Mnt() + "/etc/conf.d/new.conf"), EIO);
  Umount();
}

TEST_P(LazyMountTest, WholeTreeEqualsTheExpectedListing) {
  const std::string layout = FixturePath(GetParam());
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  ASSERT_TRUE(reg->PushOciLayout(layout, "latest", "demo/" + GetParam() + ":1").ok());
  const std::string ref = reg->host_port() + "/demo/" + GetParam() + ":1";
  ProcessResult r = Imgfs({"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  TreeOptions options;
  options.ignore_paths = {"/.no.prefetch.landmark", "/.prefetch.landmark", "/stargz.index.json"};
  std::string error;
  auto actual = ListTree(Mnt(), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  std::vector<std::string> diffs = CompareWithListing(actual, listing, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  Umount();

  // The lazily recorded image is completed by a pull and then mounts from its blobs.
  r = Imgfs({"pull", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(ListFilesRecursive(Root() + "/blobs/sha256").size(), 5u);  // manifest, config, 3
  r = Imgfs({"mount", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  Umount();
}

// The merged tree of a lazy mount is stored beside the TOC indexes and used by the next lazy
// mount (`imgfs stats` says "tree":"stored"; the file is kept, not replaced); once the layers
// are pulled, the mount's sources differ (the blobs' own indexes), so it merges again and
// replaces the tree, which the next mount uses. Every mount shows the same tree and reads the
// same bytes.
TEST_P(LazyMountTest, ARemountUsesTheStoredTreeUntilAPullChangesItsLayers) {
  const std::string layout = FixturePath(GetParam());
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  const std::string repo = "demo/" + GetParam() + "-tree";
  ASSERT_TRUE(reg->PushOciLayout(layout, "latest", repo + ":1").ok());
  const std::string ref = reg->host_port() + "/" + repo + ":1";
  TreeOptions options;
  options.ignore_paths = {"/.no.prefetch.landmark", "/.prefetch.landmark", "/stargz.index.json"};
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  // Mounts `ref` (with `extra` flags), checks its tree and a file's bytes, unmounts; what
  // `imgfs stats` said of the merged tree ("stored" or "merged").
  auto mount_and_check = [&](const std::vector<std::string>& extra) -> std::string {
    std::vector<std::string> args = {"mount"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(ref);
    args.push_back(Mnt());
    ProcessResult r = Imgfs(args);
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    if (r.exit_code != 0) return "not mounted";
    ProcessResult stats = Imgfs({"stats", "--format", "json", Mnt()});
    EXPECT_EQ(stats.exit_code, 0) << stats.Describe();
    auto j = nlohmann::json::parse(stats.out, nullptr, false);
    const std::string tree = j.is_object() ? j.value("tree", std::string("?")) : "?";
    std::string error;
    auto actual = ListTree(Mnt(), options, &error);
    EXPECT_TRUE(error.empty()) << error;
    std::vector<std::string> diffs = CompareWithListing(actual, listing, options);
    EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
    EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
    Umount();
    return tree;
  };
  // The one .tree file of the store: its inode (a replaced file is a new one), 0 if none.
  auto tree_inode = [&]() -> ino_t {
    ino_t ino = 0;
    int trees = 0;
    for (const std::string& f : ListFilesRecursive(Root() + "/indexes")) {
      if (!f.ends_with(".tree")) continue;
      struct stat st {};
      if (::stat((Root() + "/indexes/" + f).c_str(), &st) == 0) ino = st.st_ino;
      ++trees;
    }
    EXPECT_LE(trees, 1);
    return ino;
  };

  EXPECT_EQ(mount_and_check({"--lazy"}), "merged");
  const ino_t lazy_tree = tree_inode();
  ASSERT_NE(lazy_tree, 0u) << "the lazy mount stored no tree";
  EXPECT_EQ(ListFilesRecursive(Root() + "/blobs/sha256").size(), 2u) << "layers were pulled";
  EXPECT_EQ(mount_and_check({"--lazy"}), "stored");
  EXPECT_EQ(tree_inode(), lazy_tree) << "the stored tree was replaced";

  ProcessResult r = Imgfs({"pull", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(mount_and_check({}), "merged") << "the lazy tree was used for the pulled layers";
  const ino_t local_tree = tree_inode();
  EXPECT_NE(local_tree, 0u);
  EXPECT_NE(local_tree, lazy_tree);
  EXPECT_EQ(mount_and_check({}), "stored");
  EXPECT_EQ(tree_inode(), local_tree);
}

INSTANTIATE_TEST_SUITE_P(Formats, LazyMountTest,
                         ::testing::Values("tiny-estargz", "tiny-zstdchunked"),
                         [](const auto& param_info) {
                           return param_info.param == "tiny-estargz" ? "Estargz" : "ZstdChunked";
                         });

// Byte accounting on a big image: a ≥ 200 MB eStargz layer (written by `imgfs convert` from
// a generated gzip image), mounted lazily through a counting proxy. Reading one small file
// fetches under 1 MB besides the TOC; a second image sharing files with the first is served
// those files from the chunk store (stored and fetched once).
class BigLazyImageTest : public ImgfsMountTest {};

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

TEST_F(BigLazyImageTest, SmallFileOfA200MbLayerFetchesUnder1MbAndSharedFilesAreFetchedOnce) {
  constexpr int kBigFiles = 25;  // × 8 MiB = 200 MiB of incompressible data
  TestLayer big;
  big.files.push_back({"etc", "", TestFile::Kind::kDir, 0755});
  big.files.push_back({"etc/small.conf", "setting = 42\n"});
  big.files.push_back({"shared", "", TestFile::Kind::kDir, 0755});
  for (int i = 0; i < kBigFiles; ++i) {
    big.files.push_back(
        {"shared/big" + std::to_string(10 + i) + ".bin", RandomBytes(8u << 20, 1000 + i)});
  }
  const std::string shared_sha = registry::Digest::Sha256Of(big.files[3].content).hex();
  TestLayer small;  // image B: one of the big files (last in its blob) and its own file
  small.files.push_back({"etc", "", TestFile::Kind::kDir, 0755});
  small.files.push_back({"etc/b.txt", "image b\n"});
  small.files.push_back({"shared", "", TestFile::Kind::kDir, 0755});
  small.files.push_back(big.files[3]);
  {
    ImageBuilder builder(dir_.Sub("layout"));
    TestImageSpec a;
    a.layers.push_back(std::move(big));
    ASSERT_TRUE(builder.Add(a, "a").has_value());
    TestImageSpec b;
    b.layers.push_back(std::move(small));
    ASSERT_TRUE(builder.Add(b, "b").has_value());
  }
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  const std::string convert_root = dir_.Sub("convert-store");
  for (const char* tag : {"a", "b"}) {
    ProcessResult c =
        RunImgfs(convert_root,
                 {"convert", "-q", "--format", "estargz", "oci:" + dir_.Sub("layout") + ":" + tag,
                  "docker://" + (*reg)->host_port() + "/big/" + tag + ":1"});
    ASSERT_EQ(c.exit_code, 0) << c.Describe();
  }
  std::filesystem::remove_all(convert_root);
  std::filesystem::remove_all(dir_.Sub("layout"));

  auto stats = std::make_shared<ProxyStats>();
  HttpTestServer proxy(ProxyHandler((*reg)->url(), stats));
  const std::string root = Root();
  ASSERT_TRUE(MakeDirs(Mnt(2)).ok());
  ProcessResult r =
      Imgfs({"mount", "--lazy", "--prefetch", "none", proxy.host_port() + "/big/a:1", Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const uint64_t after_mount = stats->blob_bytes.load();
  EXPECT_EQ(ReadAll(Mnt() + "/etc/small.conf"), "setting = 42\n");
  const uint64_t small_cost = stats->blob_bytes.load() - after_mount;
  EXPECT_LT(small_cost, 1u << 20) << "one small file of a 200 MB layer";
  EXPECT_LT(after_mount, 1u << 20) << "the mount fetched more than the TOC";

  // A shared file read through image A ...
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/shared/big10.bin")).hex(), shared_sha);
  const size_t chunk_files = ListFilesRecursive(root + "/chunks").size();
  EXPECT_GE(chunk_files, 2u);  // 8 MiB in 4 MiB chunks

  // ... is not fetched again through image B (another layer blob, same chunk digests).
  r = Imgfs({"mount", "--lazy", "--prefetch", "none", proxy.host_port() + "/big/b:1", Mnt(2)});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const uint64_t before_b = stats->blob_bytes.load();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt(2) + "/shared/big10.bin")).hex(), shared_sha);
  EXPECT_LT(stats->blob_bytes.load() - before_b, 1u << 20)
      << "a file both images share was fetched twice";
  EXPECT_EQ(ReadAll(Mnt(2) + "/etc/b.txt"), "image b\n");
  EXPECT_LE(ListFilesRecursive(root + "/chunks").size(), chunk_files + 4)
      << "shared chunks stored twice";
  Umount(Mnt());
  Umount(Mnt(2));
}

}  // namespace
}  // namespace imgfs::testing
