// imgfs — end-to-end tests of lazy mounts of eStargz / zstd:chunked images whose layer
// descriptors lack the annotation that verifies the TOC (toc.digest; zstd:chunked
// manifest-position/checksum). The image is `imgfs convert`ed from the tiny-gzip fixture, the
// annotations are stripped from its manifest, and it is pushed to a real docker-registry
// behind a counting proxy. `imgfs mount --lazy` must fetch such layers whole (the TOC cannot
// be verified); with --insecure-skip-toc-verify only the footers and TOCs are fetched at
// mount and a read fetches a small part of a layer.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <ostream>
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
#include "tests/support/run_support.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

constexpr char kRandomSha[] = "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d";

struct Format {
  std::string flag;  // imgfs convert --format
  std::string name;  // as the warning names it
};

void PrintTo(const Format& format, std::ostream* os) { *os << format.flag; }

class TocVerifyTest : public ImgfsMountTest, public ::testing::WithParamInterface<Format> {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    ASSERT_NO_FATAL_FAILURE(BuildUnannotatedImage());
    // The suite's registry, one repository per format (each test pushes the same image).
    reg_ = SharedRegistry();
    ASSERT_NE(reg_, nullptr);
    const std::string name =
        std::string("demo/noannot-") + (GetParam().flag == "estargz" ? "estargz" : "zstd") + ":1";
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("conv"), "conv", name).ok());
    stats_ = std::make_shared<ProxyStats>();
    proxy_ = std::make_unique<HttpTestServer>(ProxyHandler(reg_->url(), stats_));
    ref_ = proxy_->host_port() + "/" + name;
  }

  ProcessResult Imgfs(std::vector<std::string> args, const std::string& root) {
    return RunImgfs(root, std::move(args));
  }
  // `imgfs mount -f ARGS… MNT` in the background (its log on stderr), once the mount is up.
  std::unique_ptr<BackgroundProcess> MountForeground(std::vector<std::string> args) {
    args.insert(args.begin(), {kImgfsBinary, "mount", "-f"});
    args.push_back(Mnt());
    auto p =
        std::make_unique<BackgroundProcess>(args, std::vector<std::string>{"IMGFS_ROOT=" + Root()});
    if (!WaitFor([this] { return IsMounted(Mnt()); }, 60)) {
      ADD_FAILURE() << "not mounted; stderr: " << p->err();
      return nullptr;
    }
    return p;
  }
  void UmountForeground(BackgroundProcess* p) {
    Umount();
    EXPECT_EQ(p->Wait(30), 0) << p->err();
  }

  // Converts tiny-gzip into the layout conv/ (tag "conv"), then rewrites its manifest
  // without the TOC annotations and points index.json at the new manifest.
  void BuildUnannotatedImage() {
    ProcessResult r =
        Imgfs({"convert", "-q", "--format", GetParam().flag,
               "oci:" + FixturePath("tiny-gzip:latest"), "oci:" + dir_.Sub("conv") + ":conv"},
              dir_.Sub("convert-store"));
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    auto index = nlohmann::json::parse(ReadAll(dir_.Sub("conv/index.json")), nullptr, false);
    ASSERT_FALSE(index.is_discarded());
    ASSERT_EQ(index["manifests"].size(), 1u);
    std::string digest = index["manifests"][0]["digest"];
    auto manifest = nlohmann::json::parse(
        ReadAll(dir_.Sub("conv/blobs/sha256/") + digest.substr(7)), nullptr, false);
    ASSERT_FALSE(manifest.is_discarded());
    ASSERT_EQ(manifest["layers"].size(), 3u);
    for (auto& layer : manifest["layers"]) {
      ASSERT_TRUE(layer.contains("annotations")) << layer.dump();
      nlohmann::json kept = nlohmann::json::object();
      for (auto& [key, value] : layer["annotations"].items()) {
        if (key.find("stargz") == std::string::npos &&
            key.find("zstd-chunked") == std::string::npos) {
          kept[key] = value;
        }
      }
      ASSERT_LT(kept.size(), layer["annotations"].size()) << layer.dump();
      if (kept.empty()) {
        layer.erase("annotations");
      } else {
        layer["annotations"] = kept;
      }
      layer_bytes_ += layer["size"].get<uint64_t>();
    }
    ImageBuilder builder(dir_.Sub("conv"));
    const std::string bytes = manifest.dump();
    Result<registry::Digest> written = builder.WriteBlob(bytes);
    ASSERT_TRUE(written.has_value()) << written.error().ToString();
    index["manifests"][0]["digest"] = written->String();
    index["manifests"][0]["size"] = bytes.size();
    std::ofstream(dir_.Sub("conv/index.json"), std::ios::trunc) << index.dump();
  }

  RegistryServer* reg_ = nullptr;  // the suite's
  std::shared_ptr<ProxyStats> stats_;
  std::unique_ptr<HttpTestServer> proxy_;
  std::string ref_;
  uint64_t layer_bytes_ = 0;
};

TEST_P(TocVerifyTest, LazyMountFetchesUnverifiableLayersWhole) {
  ASSERT_GT(layer_bytes_, 1500000u);
  std::unique_ptr<BackgroundProcess> mount = MountForeground({"--lazy", ref_});
  ASSERT_NE(mount, nullptr);
  EXPECT_NE(mount->err().find("is " + GetParam().name + " without"), std::string::npos)
      << mount->err();
  // The three layers were fetched whole (plus one footer each) and stored.
  EXPECT_GE(stats_->blob_bytes.load(), layer_bytes_);
  EXPECT_EQ(ListFilesRecursive(Root() + "/blobs/sha256").size(), 5u);  // manifest, config, 3

  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  TreeOptions options;
  std::string error;
  auto actual = ListTree(Mnt(), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(actual.count("/stargz.index.json"), 0u);
  EXPECT_EQ(actual.count("/.prefetch.landmark"), 0u);
  options.ignore_paths = {"/.no.prefetch.landmark"};
  std::vector<std::string> diffs = CompareWithListing(actual, listing, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  UmountForeground(mount.get());
}

TEST_P(TocVerifyTest, InsecureSkipTocVerifyMountsLazily) {
  std::unique_ptr<BackgroundProcess> mount =
      MountForeground({"--lazy", "--insecure-skip-toc-verify", ref_});
  ASSERT_NE(mount, nullptr);
  EXPECT_NE(mount->err().find("its TOC is not verified"), std::string::npos) << mount->err();
  EXPECT_EQ(mount->err().find("fetching it whole"), std::string::npos) << mount->err();
  const uint64_t after_mount = stats_->blob_bytes.load();
  EXPECT_GT(after_mount, 0u);
  EXPECT_LT(after_mount, layer_bytes_ / 10) << "the mount fetched more than footers and TOCs";
  EXPECT_EQ(ListFilesRecursive(Root() + "/blobs/sha256").size(), 2u);  // manifest, config

  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  const uint64_t after_cat = stats_->blob_bytes.load();
  EXPECT_LT(after_cat - after_mount, 320u << 10) << "cat etc/os-release fetched too much";
  // A whole file still reads right: every chunk is checked against the TOC's chunk digest.
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), kRandomSha);
  UmountForeground(mount.get());
  // Neither the unverified TOCs nor a tree merged from them are kept for another mount.
  for (const std::string& f : ListFilesRecursive(Root() + "/indexes")) {
    EXPECT_FALSE(f.ends_with(".tree") || f.find(".toc-") != std::string::npos) << f;
  }

  // The `-o` form does the same.
  ProcessResult r =
      Imgfs({"mount", "-o", "lazy,insecure_skip_toc_verify", ref_, Mnt()}, dir_.Sub("store2"));
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(ListFilesRecursive(dir_.Sub("store2/blobs/sha256")).size(), 2u);
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  Umount();
  for (const std::string& f : ListFilesRecursive(dir_.Sub("store2/indexes"))) {
    EXPECT_FALSE(f.ends_with(".tree") || f.find(".toc-") != std::string::npos) << f;
  }
}

INSTANTIATE_TEST_SUITE_P(TocVerify, TocVerifyTest,
                         ::testing::Values(Format{"estargz", "eStargz"},
                                           Format{"zstd:chunked", "zstd:chunked"}),
                         [](const auto& param_info) {
                           return param_info.param.flag == "estargz" ? "Estargz" : "ZstdChunked";
                         });

}  // namespace
}  // namespace imgfs::testing
