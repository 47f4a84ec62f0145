// imgfs — end-to-end tests of `imgfs convert`: the real binary converts the tiny-gzip fixture
// to eStargz and zstd:chunked; `umoci unpack` of the result (for zstd:chunked, which umoci
// 0.4 cannot read, after `skopeo copy` to a gzip layout) equals `umoci unpack` of the source,
// and the converted image, pushed by skopeo to a real docker-registry (or by convert itself,
// DEST docker://…), mounts lazily, equals the source tree, and reading one small file fetches
// a small fraction of the image through a counting proxy. zstd:chunked: content-defined
// chunks and --prioritize order in the TOC. Also `imgfs index push`.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/index_store.h"
#include "fs/image_ops/index_publish.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/zstd_chunked_toc.h"
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

std::string Join(const std::vector<std::string>& lines) {
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  return all;
}

// The manifest named `tag` in the OCI layout `dir`.
nlohmann::json LayoutManifest(const std::string& dir, const std::string& tag) {
  auto index = nlohmann::json::parse(ReadAll(dir + "/index.json"), nullptr, false);
  if (index.is_discarded()) return {};
  for (const auto& m : index["manifests"]) {
    if (m["annotations"]["org.opencontainers.image.ref.name"] == tag) {
      std::string digest = m["digest"];
      return nlohmann::json::parse(ReadAll(dir + "/blobs/sha256/" + digest.substr(7)), nullptr,
                                   false);
    }
  }
  return {};
}

struct Format {
  std::string flag;        // --format value
  std::string media;       // layer media type
  std::string annotation;  // one annotation every layer must carry
};

class ConvertTest : public ImgfsMountTest, public ::testing::WithParamInterface<Format> {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    for (const char* tool : {"umoci", "skopeo"}) {
      ProcessResult r = RunProcess({"sh", "-c", std::string("command -v ") + tool});
      ASSERT_EQ(r.exit_code, 0) << tool << " is needed by the convert tests";
    }
  }
  ProcessResult Imgfs(const std::string& root, std::vector<std::string> args) {
    return RunImgfs(root, std::move(args));
  }
  // umoci unpack of the source image, listed (computed once per test).
  std::map<std::string, TreeEntry> SourceTree() {
    ProcessResult r = RunProcess(
        {"umoci", "unpack", "--image", FixturePath("tiny-gzip:latest"), dir_.Sub("src-bundle")});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    std::string error;
    auto tree = ListTree(dir_.Sub("src-bundle/rootfs"), TreeOptions{}, &error);
    EXPECT_TRUE(error.empty()) << error;
    return tree;
  }
  // Converts tiny-gzip into the layout conv/ as tag "conv".
  void ConvertToLayout(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"convert", "--format", GetParam().flag};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("oci:" + FixturePath("tiny-gzip:latest"));
    args.push_back("oci:" + dir_.Sub("conv") + ":conv");
    ProcessResult r = Imgfs(dir_.Sub("store"), args);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
};

TEST_P(ConvertTest, UmociUnpackOfTheResultEqualsTheSource) {
  ASSERT_NO_FATAL_FAILURE(ConvertToLayout());
  nlohmann::json manifest = LayoutManifest(dir_.Sub("conv"), "conv");
  ASSERT_TRUE(manifest.is_object());
  ASSERT_EQ(manifest["layers"].size(), 3u);
  for (const auto& l : manifest["layers"]) {
    EXPECT_EQ(l["mediaType"], GetParam().media);
    EXPECT_TRUE(l["annotations"].contains(GetParam().annotation)) << l.dump();
  }
  // The new config's diff_ids are the layers' uncompressed digests; history is kept.
  std::string config_digest = manifest["config"]["digest"];
  auto config =
      nlohmann::json::parse(ReadAll(dir_.Sub("conv/blobs/sha256/") + config_digest.substr(7)));
  EXPECT_EQ(config["rootfs"]["diff_ids"].size(), 3u);

  std::string image = dir_.Sub("conv") + ":conv";
  TreeOptions options;
  if (GetParam().flag == "zstd:chunked") {
    // umoci 0.4 reads no zstd layers: skopeo recompresses them to gzip first.
    ProcessResult copy = RunProcess({"skopeo", "copy", "--dest-compress", "--dest-compress-format",
                                     "gzip", "oci:" + image, "oci:" + dir_.Sub("gz") + ":gz"});
    ASSERT_EQ(copy.exit_code, 0) << copy.Describe();
    image = dir_.Sub("gz") + ":gz";
  } else {
    // umoci shows the converter's two files at the root, like it does for ctr-remote's output.
    options.ignore_paths = {"/.no.prefetch.landmark", "/stargz.index.json"};
  }
  ProcessResult unpack = RunProcess({"umoci", "unpack", "--image", image, dir_.Sub("bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  std::string error;
  auto actual = ListTree(dir_.Sub("bundle/rootfs"), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto expected = SourceTree();
  ASSERT_GT(expected.size(), 50u);
  std::vector<std::string> diffs = CompareTrees(actual, expected, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:\n" << Join(diffs);
  if (GetParam().flag == "estargz") {
    std::string error2;
    auto all = ListTree(dir_.Sub("bundle/rootfs"), TreeOptions{}, &error2);
    EXPECT_EQ(all.count("/stargz.index.json"), 1u);
  }
}

TEST_P(ConvertTest, PushedBySkopeoItMountsLazilyAndReadsFetchLittle) {
  ASSERT_NO_FATAL_FAILURE(ConvertToLayout({"--chunk-size", "256k"}));
  nlohmann::json manifest = LayoutManifest(dir_.Sub("conv"), "conv");
  ASSERT_TRUE(manifest.is_object());
  uint64_t image_bytes = 0;
  for (const auto& l : manifest["layers"]) image_bytes += l["size"].get<uint64_t>();
  ASSERT_GT(image_bytes, 2000000u);

  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  Status pushed = PushLayout(dir_.Sub("conv"), "conv", (*reg)->host_port() + "/demo/conv:1");
  ASSERT_TRUE(pushed.ok()) << pushed.ToString();
  auto stats = std::make_shared<ProxyStats>();
  auto proxy = std::make_unique<HttpTestServer>(ProxyHandler((*reg)->url(), stats));
  const std::string ref = proxy->host_port() + "/demo/conv:1";

  const std::string root = dir_.Sub("mount-store");
  ProcessResult r = Imgfs(root, {"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(IsMounted(Mnt()));
  uint64_t after_mount = stats->blob_bytes.load();
  EXPECT_LT(after_mount, image_bytes / 10) << "the mount fetched more than the TOCs";
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  uint64_t after_cat = stats->blob_bytes.load();
  EXPECT_LT(after_cat - after_mount, 16u << 10) << "reading etc/os-release fetched too much";
  EXPECT_LT(after_cat, image_bytes / 10);

  // Every file equals the source (read through the chunks, each verified).
  TreeOptions options;
  std::string error;
  auto actual = ListTree(Mnt(), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(actual.count("/stargz.index.json"), 0u);
  EXPECT_EQ(actual.count("/.no.prefetch.landmark"), 0u);
  auto expected = SourceTree();
  std::vector<std::string> diffs = CompareTrees(actual, expected, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:\n" << Join(diffs);
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  r = Imgfs(root, {"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

TEST_P(ConvertTest, DockerDestinationIsRecordedAndPushedByConvert) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  const std::string ref = (*reg)->host_port() + "/demo/direct:1";
  ProcessResult r =
      Imgfs(dir_.Sub("store"), {"convert", "--format", GetParam().flag,
                                "oci:" + FixturePath("tiny-gzip:latest"), "docker://" + ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // Recorded in the converting store.
  r = Imgfs(dir_.Sub("store"), {"inspect", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find(GetParam().media), std::string::npos);
  // And in the registry: a fresh store mounts it lazily.
  const std::string root = dir_.Sub("mount-store");
  r = Imgfs(root, {"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  r = Imgfs(root, {"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

TEST_P(ConvertTest, BadArgumentsAreUsageErrors) {
  const std::string root = dir_.Sub("store");
  EXPECT_EQ(Imgfs(root, {"convert", "--format", "squashfs", "a", "b"}).exit_code, 2);
  EXPECT_EQ(Imgfs(root, {"convert", "a", "b"}).exit_code, 2);
  EXPECT_EQ(Imgfs(root, {"convert", "--format", GetParam().flag, "--chunk-size", "0", "a", "b"})
                .exit_code,
            2);
  ProcessResult r =
      Imgfs(root, {"convert", "--format", GetParam().flag,
                   "oci:" + dir_.Sub("missing-layout") + ":x", "oci:" + dir_.Sub("x") + ":y"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
}

// SRC from a registry, recorded by `imgfs pull --lazy` without its layers: convert completes
// the pull first, then converts.
TEST(ConvertSourceTest, LazilyPulledRegistrySourceIsCompletedThenConverted) {
  ASSERT_EQ(geteuid(), 0u) << "e2e tests run as root";
  TempDir dir;
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(FixturePath("tiny-gzip"), "latest", "demo/src:1").ok());
  const std::string ref = (*reg)->host_port() + "/demo/src:1";
  auto imgfs = [&](std::vector<std::string> args) {
    return RunImgfs(dir.Sub("store"), std::move(args));
  };
  ProcessResult r = imgfs({"pull", "--lazy", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  size_t blobs_before = ListFilesRecursive(dir.Sub("store/blobs/sha256")).size();
  EXPECT_EQ(blobs_before, 2u);  // manifest and config only
  r = imgfs({"convert", "--format", "zstd:chunked", ref, "localhost/converted:zc"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // The 3 source layers were fetched, and 3 layers, a config and a manifest were added.
  EXPECT_EQ(ListFilesRecursive(dir.Sub("store/blobs/sha256")).size(), blobs_before + 3 + 5);
  r = imgfs({"inspect", "localhost/converted:zc"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("application/vnd.oci.image.layer.v1.tar+zstd"), std::string::npos) << r.out;
  // It mounts from the store (not lazily) and shows the source's files.
  ASSERT_TRUE(MakeDirs(dir.Sub("mnt")).ok());
  r = imgfs({"mount", "localhost/converted:zc", dir.Sub("mnt")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(dir.Sub("mnt/data/random.bin"))).hex(), kRandomSha);
  r = imgfs({"umount", dir.Sub("mnt")});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  if (IsMounted(dir.Sub("mnt"))) RunProcess({"umount", "-l", dir.Sub("mnt")});
}

// zstd:chunked through the CLI: files are cut at content-defined boundaries, and
// --prioritize puts the named files (with their parent directories) first in each layer that
// has them, in the order given; the image still unpacks (umoci, after skopeo made it gzip) to
// the source tree and mounts lazily.
TEST(ConvertZstdChunkedTest, PrioritizedFilesLeadTheTocInTheGivenOrder) {
  ASSERT_EQ(geteuid(), 0u) << "e2e tests run as root";
  for (const char* tool : {"umoci", "skopeo"}) {
    ProcessResult r = RunProcess({"sh", "-c", std::string("command -v ") + tool});
    ASSERT_EQ(r.exit_code, 0) << tool << " is needed by the convert tests";
  }
  TempDir dir;
  auto imgfs = [&](std::vector<std::string> args) {
    return RunImgfs(dir.Sub("store"), std::move(args));
  };
  ProcessResult r =
      imgfs({"convert", "--format", "zstd:chunked", "--prioritize", "etc/os-release",
             "--prioritize", "/data/random.bin", "--prioritize", "data/changeme.txt",
             "oci:" + FixturePath("tiny-gzip:latest"), "oci:" + dir.Sub("conv") + ":conv"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  nlohmann::json manifest = LayoutManifest(dir.Sub("conv"), "conv");
  ASSERT_TRUE(manifest.is_object());
  ASSERT_EQ(manifest["layers"].size(), 3u);
  auto toc_of = [&](size_t layer) {
    const auto& l = manifest["layers"][layer];
    std::string blob =
        ReadAll(dir.Sub("conv/blobs/sha256/") + l["digest"].get<std::string>().substr(7));
    auto pos = fs::ParseZstdChunkedPosition(
        l["annotations"]["io.github.containers.zstd-chunked.manifest-position"].get<std::string>());
    EXPECT_TRUE(pos.has_value());
    if (!pos.has_value()) return nlohmann::json();
    auto json = fs::DecompressZstdChunkedToc(
        std::string_view(blob).substr(pos->offset, pos->compressed_length),
        pos->uncompressed_length);
    EXPECT_TRUE(json.has_value());
    return json.has_value() ? nlohmann::json::parse(*json) : nlohmann::json();
  };
  auto names_of = [](const nlohmann::json& toc) {
    std::vector<std::string> names;
    for (const auto& e : toc["entries"]) {
      if (e["type"] != "chunk") names.push_back(e["name"]);
    }
    return names;
  };
  nlohmann::json toc1 = toc_of(0);
  std::vector<std::string> layer1 = names_of(toc1);
  ASSERT_GT(layer1.size(), 6u);
  EXPECT_EQ(std::vector<std::string>(layer1.begin(), layer1.begin() + 6),
            (std::vector<std::string>{".", "etc/", "etc/os-release", "data/", "data/random.bin",
                                      "data/changeme.txt"}));
  EXPECT_EQ(layer1[6], "bin/");  // then the layer order
  std::vector<std::string> layer2 = names_of(toc_of(1));
  ASSERT_GT(layer2.size(), 2u);
  EXPECT_EQ(layer2[0], "data/");
  EXPECT_EQ(layer2[1], "data/changeme.txt");
  // data/random.bin (1.5 MiB of random bytes): content-defined chunks of varying sizes.
  std::set<uint64_t> sizes;
  for (const auto& e : toc1["entries"]) {
    if (e["name"] == "data/random.bin" && e.contains("chunkSize"))
      sizes.insert(e["chunkSize"].get<uint64_t>());
  }
  EXPECT_GT(sizes.size(), 10u);

  ProcessResult copy =
      RunProcess({"skopeo", "copy", "--dest-compress", "--dest-compress-format", "gzip",
                  "oci:" + dir.Sub("conv") + ":conv", "oci:" + dir.Sub("gz") + ":gz"});
  ASSERT_EQ(copy.exit_code, 0) << copy.Describe();
  ProcessResult unpack =
      RunProcess({"umoci", "unpack", "--image", dir.Sub("gz") + ":gz", dir.Sub("bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  unpack = RunProcess(
      {"umoci", "unpack", "--image", FixturePath("tiny-gzip:latest"), dir.Sub("src-bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  std::string error;
  auto actual = ListTree(dir.Sub("bundle/rootfs"), TreeOptions{}, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto expected = ListTree(dir.Sub("src-bundle/rootfs"), TreeOptions{}, &error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_GT(expected.size(), 50u);
  std::vector<std::string> diffs = CompareTrees(actual, expected, TreeOptions{});
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:\n" << Join(diffs);

  // Lazily mounted from a registry, it shows the same files.
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  Status pushed = PushLayout(dir.Sub("conv"), "conv", (*reg)->host_port() + "/demo/prio:1");
  ASSERT_TRUE(pushed.ok()) << pushed.ToString();
  ASSERT_TRUE(MakeDirs(dir.Sub("mnt")).ok());
  r = RunProcess(
      {kImgfsBinary, "mount", "--lazy", (*reg)->host_port() + "/demo/prio:1", dir.Sub("mnt")},
      {"IMGFS_ROOT=" + dir.Sub("mount-store")}, {}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto mounted = ListTree(dir.Sub("mnt"), TreeOptions{}, &error);
  EXPECT_TRUE(error.empty()) << error;
  diffs = CompareTrees(mounted, expected, TreeOptions{});
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:\n" << Join(diffs);
  r = RunProcess({kImgfsBinary, "umount", dir.Sub("mnt")}, {"IMGFS_ROOT=" + dir.Sub("mount-store")},
                 {}, 60);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  if (IsMounted(dir.Sub("mnt"))) RunProcess({"umount", "-l", dir.Sub("mnt")});
}

// `imgfs index push`: the plain gzip image's layer indexes are published beside it and found
// again through the referrers tag; publishing twice keeps one imgfs entry.
TEST(IndexCommandTest, PushPublishesTheStoreIndexesFoundThroughTheReferrersTag) {
  ASSERT_EQ(geteuid(), 0u) << "e2e tests run as root";
  TempDir dir;
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(FixturePath("tiny-gzip"), "latest", "demo/plain:1").ok());
  const std::string ref = (*reg)->host_port() + "/demo/plain:1";
  const registry::Digest manifest =
      registry::Digest::Parse(
          "sha256:1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229")
          .value();
  auto imgfs = [&](std::vector<std::string> args) {
    return RunImgfs(dir.Sub("store"), std::move(args));
  };
  for (int round = 0; round < 2; ++round) {
    ProcessResult r = imgfs({"index", "push", ref});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_NE(r.out.find("sha256-" + manifest.hex()), std::string::npos) << r.out;
  }
  auto source = fs::OpenRegistrySource(ref, fs::PullOptions{});
  ASSERT_TRUE(source.has_value()) << source.error().ToString();
  auto tag = (*source)->GetManifest("sha256-" + manifest.hex());
  ASSERT_TRUE(tag.has_value()) << tag.error().ToString();
  auto listed = registry::DecodeIndex(tag->bytes);
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->manifests.size(), 1u);
  EXPECT_EQ(listed->manifests[0].artifact_type, fs::kImgfsIndexArtifactType);

  auto found = fs::FindPublishedIndexes(**source, manifest);
  ASSERT_TRUE(found.has_value()) << found.error().ToString();
  ASSERT_EQ(found->size(), 3u);
  cache::IndexStore store_indexes(dir.Sub("store"));
  for (const auto& [layer, index] : *found) {
    auto stored = store_indexes.Get(layer);
    ASSERT_TRUE(stored.has_value()) << stored.error().ToString();
    EXPECT_TRUE(*stored == index.Encode()) << layer.String();
    EXPECT_EQ(index.format, fs::LayerFormat::kTarGzip);
    EXPECT_FALSE(index.entries.empty());
  }
  // Nothing published for another manifest.
  EXPECT_EQ(fs::FindPublishedIndexes(**source, registry::Digest::Sha256Of("other")).error().code(),
            StatusCode::kNotFound);

  // eStargz layers need no index; `index` without a subcommand is a usage error.
  ProcessResult r = imgfs({"index", "build", "oci:" + FixturePath("tiny-estargz:latest")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("3 layer(s) need no index"), std::string::npos) << r.out;
  EXPECT_EQ(imgfs({"index"}).exit_code, 2);
  EXPECT_EQ(imgfs({"index", "frobnicate", ref}).exit_code, 2);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, ConvertTest,
    ::testing::Values(Format{"estargz", "application/vnd.oci.image.layer.v1.tar+gzip",
                             "containerd.io/snapshot/stargz/toc.digest"},
                      Format{"zstd:chunked", "application/vnd.oci.image.layer.v1.tar+zstd",
                             "io.github.containers.zstd-chunked.manifest-checksum"}),
    [](const auto& param_info) {
      return param_info.param.flag == "estargz" ? "Estargz" : "ZstdChunked";
    });

}  // namespace
}  // namespace imgfs::testing
