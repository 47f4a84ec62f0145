// imgfs — hostile-input tests for issue 9, "indexes are trusted only as far as their source"
// (security review 2026-12, finding 1): an index that did not come from a layer's own verified
// bytes — an imgfs index published as an OCI referrer, an eStargz TOC served by a registry —
// may serve lazy mounts of the image it was found for, and nothing else.
//
// Everything is real: a docker-registry process on 127.0.0.1, the imgfs binary, FUSE mounts.
// The attacker's artefacts are made with the project's own code: the malicious published
// index is the genuine index of the shared base layer (fs::BuildImageIndexes), its file table
// changed and re-encoded with LayerIndex::Encode (so its checksum is valid), pushed with
// fs::PushImageIndexes for the attacker's image. The forged eStargz TOC needs answers a real
// registry cannot give (range reads of a genuine blob returning other bytes): a scripted
// proxy in front of the registry serves them for the attacker's repository only.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/store.h"
#include "fs/image_ops/index_publish.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/layer_index.h"
#include "registry/digest.h"
#include "registry/push.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/run_support.h"

namespace imgfs::testing {
namespace {

constexpr char kGenuinePasswd[] = "genuine passwd\n";
constexpr char kMotd[] = "attacker-chosen bytes that already sit in the shared layer\n";

// st_mode & 07777 of `path`, or -1 when it does not exist.
int ModeOf(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

class HostileIndexTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    auto reg = RegistryServer::Start();
    ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
    reg_ = std::move(reg).value();
  }
  ProcessResult Imgfs(const std::string& store, std::vector<std::string> args) {
    return RunImgfs(dir_.Sub(store), std::move(args));
  }
  void Mount(const std::string& store, std::vector<std::string> args) {
    args.insert(args.begin(), "mount");
    args.push_back(Mnt());
    ProcessResult r = Imgfs(store, args);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(IsMounted(Mnt()));
  }
  void UmountIn(const std::string& store) {
    ProcessResult r = Imgfs(store, {"umount", Mnt()});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
  }

  std::unique_ptr<RegistryServer> reg_;
};

// Images `good` (the base layer) and `evil` (FROM the same base layer, plus one layer of its
// own), and a valid but malicious imgfs index published for `evil`: in it, the shared base
// layer's /usr/bin/passwd is setuid and reads the bytes of /etc/motd, and an extra setuid
// /usr/bin/evil-suid exists.
class PublishedIndexPoisonTest : public HostileIndexTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(HostileIndexTest::SetUp());
    Result<TestLayer> base =
        BusyboxLayer({"sh", "cat", "test", "echo"},
                     {{"usr", "", TestFile::Kind::kDir, 0755},
                      {"usr/bin", "", TestFile::Kind::kDir, 0755},
                      {"usr/bin/passwd", kGenuinePasswd, TestFile::Kind::kFile, 0755},
                      {"etc/motd", kMotd, TestFile::Kind::kFile, 0644}});
    ASSERT_TRUE(base.has_value()) << base.error().ToString();
    TestLayer own;
    own.files.push_back({"evil.txt", "the attacker's own layer\n"});
    {
      ImageBuilder builder(dir_.Sub("layout"));
      TestImageSpec good;
      good.layers = {*base};
      Result<BuiltImage> g = builder.Add(good, "good");
      ASSERT_TRUE(g.has_value()) << g.error().ToString();
      TestImageSpec evil;
      evil.layers = {*base, own};
      Result<BuiltImage> e = builder.Add(evil, "evil");
      ASSERT_TRUE(e.has_value()) << e.error().ToString();
      ASSERT_EQ(g->layer_digests[0], e->layer_digests[0]) << "the base layer must be shared";
      base_layer_ = g->layer_digests[0];
    }
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("layout"), "good", "demo/good:1").ok());
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("layout"), "evil", "demo/evil:1").ok());
    good_ = reg_->host_port() + "/demo/good:1";
    evil_ = reg_->host_port() + "/demo/evil:1";
    ASSERT_NO_FATAL_FAILURE(PublishMaliciousIndex());
    stats_ = std::make_shared<ProxyStats>();
    proxy_ = std::make_unique<HttpTestServer>(ProxyHandler(reg_->url(), stats_));
  }

  // The attacker's side, in a store of its own: index `evil`, rewrite the base layer's file
  // table, re-encode (valid checksum), publish for evil's manifest.
  void PublishMaliciousIndex() {
    auto store = cache::Store::Open(dir_.Sub("attacker"));
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    auto indexes = fs::BuildImageIndexes(**store, evil_, fs::PullOptions{}, true);
    ASSERT_TRUE(indexes.has_value()) << indexes.error().ToString();
    bool rewrote = false;
    for (auto& layer : indexes->layers) {
      if (layer.layer.digest != base_layer_) continue;
      auto index = fs::LayerIndex::Decode(layer.encoded);
      ASSERT_TRUE(index.has_value()) << index.error().ToString();
      const fs::FileEntry* motd = nullptr;
      for (const fs::FileEntry& e : index->entries) {
        if (e.path == "etc/motd") motd = &e;
      }
      ASSERT_NE(motd, nullptr);
      const fs::FileEntry source = *motd;
      for (fs::FileEntry& e : index->entries) {
        if (e.path != "usr/bin/passwd") continue;
        e.mode = 04755;
        e.size = source.size;
        e.payload_offset = source.payload_offset;
        e.first_chunk = source.first_chunk;
        e.chunk_count = source.chunk_count;
        rewrote = true;
      }
      fs::FileEntry extra;
      extra.path = "usr/bin/evil-suid";
      extra.type = fs::EntryType::kRegular;
      extra.mode = 04755;
      index->entries.push_back(extra);
      // What a publisher writes here is not believed, whatever it says.
      index->provenance = fs::IndexProvenance::kLayerBlob;
      layer.encoded = index->Encode();
      ASSERT_TRUE(fs::LayerIndex::Decode(layer.encoded).has_value()) << "must stay valid";
    }
    ASSERT_TRUE(rewrote) << "the base layer's index has no usr/bin/passwd";
    auto source = fs::OpenRegistrySource(evil_, fs::PullOptions{});
    ASSERT_TRUE(source.has_value()) << source.error().ToString();
    auto pushed = fs::PushImageIndexes(*indexes, reg_->host_port(), "demo/evil",
                                       registry::PushOptions{}, **source);
    ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();
  }

  // The victim mounts `evil` lazily once. That is evil's own image, so it may show the
  // attacker's tree; the test checks it does (else the rest proves nothing), and that a
  // remount of the same image takes the index from the store (no referrers lookup).
  void MountEvilLazilyOnce() {
    const std::string evil_via_proxy = proxy_->host_port() + "/demo/evil:1";
    ASSERT_NO_FATAL_FAILURE(Mount("victim", {"--lazy", "--prefetch", "none", evil_via_proxy}));
    EXPECT_EQ(ModeOf(Mnt() + "/usr/bin/passwd"), 04755) << "the published index is not in use";
    EXPECT_TRUE(Exists(Mnt() + "/usr/bin/evil-suid"));
    EXPECT_EQ(ReadAll(Mnt() + "/evil.txt"), "the attacker's own layer\n");
    UmountIn("victim");
    const size_t referrers = proxy_->Count("GET", "/v2/demo/evil/referrers/") +
                             proxy_->Count("GET", "/v2/demo/evil/manifests/sha256-");
    EXPECT_GT(referrers, 0u);
    ASSERT_NO_FATAL_FAILURE(Mount("victim", {"--lazy", "--prefetch", "none", evil_via_proxy}));
    EXPECT_EQ(ModeOf(Mnt() + "/usr/bin/passwd"), 04755);
    UmountIn("victim");
    EXPECT_EQ(proxy_->Count("GET", "/v2/demo/evil/referrers/") +
                  proxy_->Count("GET", "/v2/demo/evil/manifests/sha256-"),
              referrers)
        << "a remount of the same lazy image looked its published index up again";
  }

  // The genuine tree of `good` at Mnt().
  void ExpectGenuineTree() {
    EXPECT_EQ(ModeOf(Mnt() + "/usr/bin/passwd"), 0755);
    EXPECT_EQ(ReadAll(Mnt() + "/usr/bin/passwd"), kGenuinePasswd);
    EXPECT_FALSE(Exists(Mnt() + "/usr/bin/evil-suid"));
    EXPECT_FALSE(Exists(Mnt() + "/evil.txt"));
    EXPECT_EQ(ReadAll(Mnt() + "/etc/motd"), kMotd);
  }

  registry::Digest base_layer_;
  std::string good_;
  std::string evil_;
  std::shared_ptr<ProxyStats> stats_;
  std::unique_ptr<HttpTestServer> proxy_;
};

// (1) `imgfs pull good && imgfs mount good`: the blob is verified in the store, so its index
// is the one its bytes give, not the one published for evil.
TEST_F(PublishedIndexPoisonTest, PulledImageSharingTheLayerIgnoresThePublishedIndex) {
  ASSERT_NO_FATAL_FAILURE(MountEvilLazilyOnce());
  ProcessResult r = Imgfs("victim", {"pull", good_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_NO_FATAL_FAILURE(Mount("victim", {good_}));
  ExpectGenuineTree();
  UmountIn("victim");
  // evil itself, now that the shared layer's blob is in the store, is read through the
  // layer's own index too: the published one served only lazy reads of evil.
  ASSERT_NO_FATAL_FAILURE(Mount("victim", {"--lazy", evil_}));
  EXPECT_EQ(ModeOf(Mnt() + "/usr/bin/passwd"), 0755);
  EXPECT_EQ(ReadAll(Mnt() + "/usr/bin/passwd"), kGenuinePasswd);
  EXPECT_FALSE(Exists(Mnt() + "/usr/bin/evil-suid"));
  EXPECT_EQ(ReadAll(Mnt() + "/evil.txt"), "the attacker's own layer\n");
  UmountIn("victim");
}

// (2) A lazy mount of good (nothing published for it) shares the layer digest but not the
// image: it never gets evil's index.
TEST_F(PublishedIndexPoisonTest, LazyMountOfAnotherImageSharingTheLayerIgnoresIt) {
  ASSERT_NO_FATAL_FAILURE(MountEvilLazilyOnce());
  ASSERT_NO_FATAL_FAILURE(Mount("victim", {"--lazy", good_}));
  ExpectGenuineTree();
  UmountIn("victim");
}

// (3) `imgfs run good` (root in the image, the rootfs mounted dev,suid) sees the genuine tree.
TEST_F(PublishedIndexPoisonTest, RunOfAPulledImageSharingTheLayerIgnoresIt) {
  ASSERT_NO_FATAL_FAILURE(MountEvilLazilyOnce());
  ProcessResult r = Imgfs("victim", {"run", "--rm", good_, "--", "sh", "-c",
                                     "cat /usr/bin/passwd; test -u /usr/bin/passwd && echo SUID; "
                                     "test -e /usr/bin/evil-suid && echo EVIL; true"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, kGenuinePasswd) << r.Describe();
}

// A lazy read of evil's own mount through the lying index: the tar header in front of the
// bytes the index names for /usr/bin/passwd says etc/motd, so the read is EIO and the index
// kept for evil is deleted from the store (the next mount looks it up again).
TEST_F(PublishedIndexPoisonTest, TarHeaderMismatchIsEioAndDropsTheStoredIndex) {
  ASSERT_NO_FATAL_FAILURE(MountEvilLazilyOnce());
  const std::string indexes = dir_.Sub("victim") + "/indexes";
  auto kept_for_evil = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(indexes)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(base_layer_.hex() + ".image-", 0) == 0) ++n;
    }
    return n;
  };
  ASSERT_EQ(kept_for_evil(), 1) << "the published index was not kept for evil";
  ASSERT_NO_FATAL_FAILURE(
      Mount("victim", {"--lazy", "--prefetch", "none", proxy_->host_port() + "/demo/evil:1"}));
  int fd = ::open((Mnt() + "/usr/bin/passwd").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[256];
  errno = 0;
  ssize_t n = ::read(fd, buf, sizeof(buf));
  int err = errno;
  ::close(fd);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, EIO);
  UmountIn("victim");
  EXPECT_EQ(kept_for_evil(), 0) << "the index the layer contradicts is still stored";
}

// (4) An eStargz TOC index kept for one (layer digest, toc.digest) pair is not used for a
// manifest naming the same layer with another toc.digest. The attacker's registry serves, for
// the attacker's repository only, a forged TOC at the end of the genuine layer's bytes
// (range reads are not checked against the layer digest, only the TOC against the
// annotation), and the attacker's manifest names that TOC's digest.
class TocIndexPoisonTest : public HostileIndexTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(HostileIndexTest::SetUp());
    TestLayer layer;
    layer.files.push_back({"usr", "", TestFile::Kind::kDir, 0755});
    layer.files.push_back({"usr/bin", "", TestFile::Kind::kDir, 0755});
    layer.files.push_back({"usr/bin/passwd", kGenuinePasswd, TestFile::Kind::kFile, 0755});
    layer.files.push_back({"doc", "", TestFile::Kind::kDir, 0755});
    // Files the forged TOC leaves out, so that it is smaller than the genuine one and fits
    // in its place.
    for (int i = 0; i < 200; ++i) {
      layer.files.push_back({"doc/manual-page-" + std::to_string(i) + ".txt",
                             "page " + std::to_string(i * 7919) + "\n"});
    }
    {
      ImageBuilder builder(dir_.Sub("plain"));
      TestImageSpec spec;
      spec.layers = {layer};
      Result<BuiltImage> built = builder.Add(spec, "good");
      ASSERT_TRUE(built.has_value()) << built.error().ToString();
    }
    ProcessResult r = Imgfs("convert-store", {"convert", "-q", "--format", "estargz",
                                              "oci:" + dir_.Sub("plain") + ":good",
                                              "oci:" + dir_.Sub("conv") + ":good"});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_NO_FATAL_FAILURE(ForgeEvilManifestAndBlob());
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("conv"), "good", "demo/good:1").ok());
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("conv"), "evil", "demo/evil:1").ok());
    // The attacker's registry: forged range reads of the layer in demo/evil, the rest relayed.
    stats_ = std::make_shared<ProxyStats>();
    HttpTestServer::Handler relay = ProxyHandler(reg_->url(), stats_);
    const std::string forged_path = "/v2/demo/evil/blobs/" + layer_.String();
    proxy_ = std::make_unique<HttpTestServer>([relay, forged_path, forged = forged_](
                                                  const HttpTestRequest& req,
                                                  HttpTestConnection& conn) {
      const std::string range = req.Header("range");
      unsigned long long first = 0, last = 0;
      if (req.method == "GET" && req.path == forged_path && range.find(',') == std::string::npos &&
          std::sscanf(range.c_str(), "bytes=%llu-%llu", &first, &last) == 2 && first <= last &&
          last < forged.size()) {
        conn.Respond(
            206,
            {{"Content-Type", "application/octet-stream"},
             {"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                                   std::to_string(forged.size())}},
            std::string_view(forged).substr(first, last - first + 1));
        return;
      }
      relay(req, conn);
    });
  }

  // Reads the converted image, makes the forged blob bytes (genuine data, forged TOC and
  // footer) and a manifest `evil` naming the same layer with the forged TOC's digest.
  void ForgeEvilManifestAndBlob() {
    auto index = nlohmann::json::parse(ReadAll(dir_.Sub("conv/index.json")), nullptr, false);
    ASSERT_FALSE(index.is_discarded());
    ASSERT_EQ(index["manifests"].size(), 1u);
    const std::string manifest_digest = index["manifests"][0]["digest"];
    auto manifest = nlohmann::json::parse(
        ReadAll(dir_.Sub("conv/blobs/sha256/") + manifest_digest.substr(7)), nullptr, false);
    ASSERT_FALSE(manifest.is_discarded());
    ASSERT_EQ(manifest["layers"].size(), 1u);
    auto& desc = manifest["layers"][0];
    const std::string annotation(fs::kEstargzTocDigestAnnotation);
    ASSERT_TRUE(desc["annotations"].contains(annotation)) << desc.dump();
    auto layer = registry::Digest::Parse(desc["digest"].get<std::string>());
    ASSERT_TRUE(layer.has_value());
    layer_ = *layer;
    const std::string blob = ReadAll(dir_.Sub("conv/blobs/sha256/") + layer_.hex());
    ASSERT_EQ(blob.size(), desc["size"].get<uint64_t>());

    auto footer = fs::ParseEstargzFooter(blob);
    ASSERT_TRUE(footer.has_value()) << footer.error().ToString();
    ASSERT_EQ(footer->footer_bytes, fs::kEstargzFooterBytes);
    const uint64_t toc_end = blob.size() - fs::kEstargzFooterBytes;
    auto genuine = fs::ExtractEstargzTocJson(
        std::string_view(blob).substr(footer->toc_offset, toc_end - footer->toc_offset));
    ASSERT_TRUE(genuine.has_value()) << genuine.error().ToString();
    auto toc = nlohmann::json::parse(*genuine, nullptr, false);
    ASSERT_FALSE(toc.is_discarded());
    nlohmann::json kept = nlohmann::json::array();
    bool found = false;
    for (auto& e : toc["entries"]) {
      const std::string name = e.value("name", "");
      if (name.starts_with("doc/")) continue;
      if (name == "usr/bin/passwd") {
        e["mode"] = 04700;
        found = true;
      }
      kept.push_back(e);
    }
    ASSERT_TRUE(found) << *genuine;
    toc["entries"] = kept;
    const std::string forged_json = toc.dump();
    TestLayer member;
    member.files.push_back({std::string(fs::kEstargzTocName), forged_json});
    Result<std::string> tar = BuildLayerTar(member);
    ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
    const std::string forged_toc = GzipBytes(*tar);
    ASSERT_LE(forged_toc.size(), toc_end - footer->toc_offset)
        << "the forged TOC does not fit where the genuine one is";
    const uint64_t forged_offset = toc_end - forged_toc.size();
    std::string forged_footer = blob.substr(toc_end);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(forged_offset));
    forged_footer.replace(16, 16, hex);  // gzip header (10) + XLEN (2) + "SG" + LEN (4)
    forged_ = blob.substr(0, forged_offset) + forged_toc + forged_footer;
    ASSERT_EQ(forged_.size(), blob.size());
    auto reparsed = fs::ParseEstargzFooter(forged_);
    ASSERT_TRUE(reparsed.has_value());
    ASSERT_EQ(reparsed->toc_offset, forged_offset);

    // Manifest `evil`: the same layer, the forged TOC's digest.
    desc["annotations"][annotation] = registry::Digest::Sha256Of(forged_json).String();
    ImageBuilder builder(dir_.Sub("conv"));
    const std::string bytes = manifest.dump();
    Result<registry::Digest> written = builder.WriteBlob(bytes);
    ASSERT_TRUE(written.has_value()) << written.error().ToString();
    registry::Descriptor evil;
    evil.media_type = manifest.value("mediaType", "application/vnd.oci.image.manifest.v1+json");
    evil.digest = *written;
    evil.size = static_cast<int64_t>(bytes.size());
    ASSERT_TRUE(builder.SetIndexEntry("evil", evil).ok());
  }

  registry::Digest layer_;
  std::string forged_;
  std::shared_ptr<ProxyStats> stats_;
  std::unique_ptr<HttpTestServer> proxy_;
};

TEST_F(TocIndexPoisonTest, StoredTocIndexIsNotUsedForAnotherTocDigest) {
  // The attacker's image, lazily: its (forged, but verified against its own annotation) TOC
  // is its tree.
  ASSERT_NO_FATAL_FAILURE(
      Mount("victim", {"--lazy", "--prefetch", "none", proxy_->host_port() + "/demo/evil:1"}));
  EXPECT_EQ(ModeOf(Mnt() + "/usr/bin/passwd"), 04700) << "the forged TOC is not in use";
  EXPECT_FALSE(Exists(Mnt() + "/doc/manual-page-7.txt"));
  UmountIn("victim");
  // The genuine image, lazily, from the genuine registry: its own TOC.
  ASSERT_NO_FATAL_FAILURE(Mount("victim", {"--lazy", reg_->host_port() + "/demo/good:1"}));
  EXPECT_EQ(ModeOf(Mnt() + "/usr/bin/passwd"), 0755);
  EXPECT_EQ(ReadAll(Mnt() + "/usr/bin/passwd"), kGenuinePasswd);
  EXPECT_EQ(ReadAll(Mnt() + "/doc/manual-page-7.txt"), "page " + std::to_string(7 * 7919) + "\n");
  UmountIn("victim");
}

}  // namespace
}  // namespace imgfs::testing
