// imgfs — tests for cache/images.h: list/filter, resolve, inspect, rm and garbage collection.
#include "cache/images.h"

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using nlohmann::json;
using testing::ImportFixture;
using testing::MakeImage;
using testing::Ref;
using testing::SyntheticImage;
using testing::TempDir;

class ImagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto s = Store::Open(dir_.path() + "/store");
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  std::vector<ImageSummary> List(const std::vector<std::string>& filters = {}) {
    auto f = ParseImageFilters(filters);
    EXPECT_TRUE(f.has_value()) << f.error().ToString();
    auto l = ListImages(*store_, f.has_value() ? *f : ImageFilter{});
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return l.has_value() ? *l : std::vector<ImageSummary>{};
  }
  std::vector<std::string> Names(const std::vector<std::string>& filters = {}) {
    std::vector<std::string> out;
    for (const auto& s : List(filters)) out.push_back(s.repository + ":" + s.tag);
    std::sort(out.begin(), out.end());
    return out;
  }
  void Record(const std::string& ref, const SyntheticImage& img) {
    Status st = store_->RecordImage(Ref(ref), img.manifest, {});
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(ImagesTest, ListShowsFixtureImageLikeDocker) {
  registry::Descriptor desc = ImportFixture(*store_, "tiny-gzip");
  registry::Digest repo_digest = registry::Digest::Sha256Of("index bytes");
  ASSERT_TRUE(store_->RecordImage(Ref("127.0.0.1:5000/demo/app:1.0"), desc, repo_digest).ok());
  auto list = List();
  ASSERT_EQ(list.size(), 1u);
  const ImageSummary& s = list[0];
  EXPECT_EQ(s.repository, "127.0.0.1:5000/demo/app");
  EXPECT_EQ(s.tag, "1.0");
  EXPECT_EQ(s.created, "2024-03-01T00:00:00Z");
  EXPECT_FALSE(s.dangling);
  EXPECT_EQ(s.manifest_digest, desc.digest);
  // ID = config digest; size = config + layers as the manifest lists them.
  auto manifest = json::parse(*store_->ReadBlob(desc.digest));
  EXPECT_EQ(s.id.String(), manifest["config"]["digest"]);
  int64_t size = manifest["config"]["size"].get<int64_t>();
  for (const auto& l : manifest["layers"]) size += l["size"].get<int64_t>();
  EXPECT_EQ(s.size_bytes, size);
  EXPECT_GT(s.size_bytes, 1000000);
  ASSERT_EQ(s.repo_digests.size(), 1u);
  EXPECT_EQ(s.repo_digests[0], "127.0.0.1:5000/demo/app@" + repo_digest.String());
}

TEST_F(ImagesTest, ListOrdersNewestFirstAndMarksDangling) {
  auto old_img = MakeImage(*store_, {"a"}, "2020-01-01T00:00:00Z");
  auto new_img = MakeImage(*store_, {"b"}, "2025-01-01T00:00:00Z");
  Record("app:1", old_img);
  Record("app:1", new_img);  // moves: old_img becomes dangling
  Record("library/busybox", new_img);
  auto list = List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].created, "2025-01-01T00:00:00Z");
  EXPECT_EQ(list[1].created, "2025-01-01T00:00:00Z");
  EXPECT_EQ(list[2].repository, "<none>");
  EXPECT_EQ(list[2].tag, "<none>");
  EXPECT_TRUE(list[2].dangling);
  EXPECT_EQ(list[2].id, old_img.config);
  EXPECT_EQ(Names(), (std::vector<std::string>{"<none>:<none>", "app:1", "busybox:latest"}));
}

TEST_F(ImagesTest, Filters) {
  auto a = MakeImage(*store_, {"a"});
  auto b = MakeImage(*store_, {"b"});
  auto c = MakeImage(*store_, {"c"});
  Record("alpine:3.20", a);
  Record("alpine:3.19", b);
  Record("127.0.0.1:5000/demo/app:1.0", c);
  Record("ghcr.io/org/tool:v1", a);
  Record("ghcr.io/org/tool:v1", b);  // a stays named through alpine:3.20: no dangling
  Record("alpine:3.19", c);          // b stays named through ghcr.io/org/tool:v1

  EXPECT_EQ(Names({"dangling=true"}), std::vector<std::string>{});
  Record("ghcr.io/org/tool:v1", c);  // now b is dangling
  EXPECT_EQ(Names({"dangling=true"}), std::vector<std::string>{"<none>:<none>"});
  EXPECT_EQ(Names({"dangling=false"}).size(), 4u);
  EXPECT_EQ(Names({"reference=alpine"}), (std::vector<std::string>{"alpine:3.19", "alpine:3.20"}));
  EXPECT_EQ(Names({"reference=alpine:3.2*"}), std::vector<std::string>{"alpine:3.20"});
  EXPECT_EQ(Names({"reference=*:3.1?"}), std::vector<std::string>{"alpine:3.19"});
  // '*' does not cross '/', as in docker (path.Match).
  EXPECT_EQ(Names({"reference=*"}), (std::vector<std::string>{"alpine:3.19", "alpine:3.20"}));
  EXPECT_EQ(Names({"reference=ghcr.io/*/*"}), std::vector<std::string>{"ghcr.io/org/tool:v1"});
  EXPECT_EQ(Names({"reference=127.0.0.1:5000/demo/*:[0-9].*"}),
            std::vector<std::string>{"127.0.0.1:5000/demo/app:1.0"});
  // Several reference patterns are OR-ed; AND-ed with dangling.
  EXPECT_EQ(Names({"reference=alpine:3.19", "reference=ghcr.io/org/tool", "dangling=false"}),
            (std::vector<std::string>{"alpine:3.19", "ghcr.io/org/tool:v1"}));
  EXPECT_EQ(Names({"reference=alpine", "dangling=true"}), std::vector<std::string>{});

  EXPECT_EQ(ParseImageFilters({"dangling=maybe"}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseImageFilters({"label=x"}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseImageFilters({"dangling"}).error().code(), StatusCode::kInvalidArgument);
}

// docker's image prune filters: until as timetypes.GetTimestamp reads it, labels as
// MatchKVList matches them.
TEST(PruneFiltersTest, UntilAcceptsDockerTimestampsAndDurations) {
  constexpr int64_t kNow = 1714521600;  // 2024-05-01T00:00:00Z
  auto until = [](const std::string& value) -> std::optional<int64_t> {
    Result<ImagePruneFilter> f = ParsePruneFilters({"until=" + value}, kNow);
    if (!f.has_value()) return std::nullopt;
    return f->until_unix_s;
  };
  EXPECT_EQ(until("24h"), kNow - 86400);
  EXPECT_EQ(until("1h30m"), kNow - 5400);
  EXPECT_EQ(until("90s"), kNow - 90);
  EXPECT_EQ(until("1.5h"), kNow - 5400);
  EXPECT_EQ(until("500ms"), kNow);
  EXPECT_EQ(until("-1h"), kNow + 3600);
  EXPECT_EQ(until("1714521600"), kNow);
  EXPECT_EQ(until("1714521600.25"), kNow);
  EXPECT_EQ(until("0"), 0);
  EXPECT_EQ(until("2024-05-01"), kNow);
  EXPECT_EQ(until("2024-05-01T02"), kNow + 7200);
  EXPECT_EQ(until("2024-05-01T02:30"), kNow + 9000);
  EXPECT_EQ(until("2024-05-01T02:30:10"), kNow + 9010);
  EXPECT_EQ(until("2024-05-01T02:30:10Z"), kNow + 9010);
  EXPECT_EQ(until("2024-05-01T02:30:10.5Z"), kNow + 9010);
  EXPECT_EQ(until("2024-05-01T02:30:10+02:00"), kNow + 9010 - 7200);
  for (const char* bad :
       {"", "yesterday", "1d", "h", ".h", "2024-13-01", "2024-05-01Tx", "12345678901234", "1e9"}) {
    EXPECT_EQ(until(bad), std::nullopt) << bad;
  }
  EXPECT_FALSE(ParsePruneFilters({"until=1h", "until=2h"}, kNow).has_value());
}

TEST(PruneFiltersTest, LabelsAndDanglingParseAndMatchLikeDocker) {
  Result<ImagePruneFilter> f =
      ParsePruneFilters({"label=a", "label=b=c", "label!=d=e=f", "dangling=false"}, 0);
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_TRUE(f->all);
  EXPECT_EQ(f->labels, (std::vector<std::string>{"a", "b=c"}));
  EXPECT_EQ(f->not_labels, (std::vector<std::string>{"d=e=f"}));
  EXPECT_FALSE(f->until_unix_s.has_value());
  const std::map<std::string, std::string> labels = {{"a", ""}, {"b", "c"}, {"d", "e=f"}};
  EXPECT_TRUE(MatchesLabels({}, labels));
  EXPECT_TRUE(MatchesLabels({"a", "b=c"}, labels));
  EXPECT_TRUE(MatchesLabels({"a="}, labels));
  EXPECT_TRUE(MatchesLabels({"d=e=f"}, labels));
  EXPECT_FALSE(MatchesLabels({"a", "b=x"}, labels));
  EXPECT_FALSE(MatchesLabels({"z"}, labels));
  for (const char* bad : {"label=", "label!==x", "color=red", "until", "dangling=maybe"}) {
    EXPECT_FALSE(ParsePruneFilters({bad}, 0).has_value()) << bad;
  }
}

TEST_F(ImagesTest, GlobSemanticsMatchGoPathMatch) {
  ImageSummary s;
  s.reference = "docker.io/library/alpine:3.20";
  s.repository = "alpine";
  s.tag = "3.20";
  EXPECT_TRUE(MatchesReferenceFilter("alpine", s));
  EXPECT_TRUE(MatchesReferenceFilter("alpine:3.20", s));
  EXPECT_TRUE(MatchesReferenceFilter("a*", s));
  EXPECT_TRUE(MatchesReferenceFilter("[a-c]lpine", s));
  EXPECT_TRUE(MatchesReferenceFilter("[^b]lpine:*", s));
  EXPECT_TRUE(MatchesReferenceFilter("alpine:3\\.20", s));
  EXPECT_FALSE(MatchesReferenceFilter("alp", s));
  EXPECT_FALSE(MatchesReferenceFilter("docker.io/library/alpine", s));  // familiar names only
  EXPECT_FALSE(MatchesReferenceFilter("[b-z]lpine", s));
  EXPECT_FALSE(MatchesReferenceFilter("[", s));  // malformed: matches nothing
  s.dangling = true;
  s.reference.clear();
  EXPECT_FALSE(MatchesReferenceFilter("*", s));
}

TEST_F(ImagesTest, ResolveByReferenceAndId) {
  auto img = MakeImage(*store_, {"layer"});
  Record("alpine:3.20", img);
  Record("127.0.0.1:5000/demo/app@" + img.manifest.digest.String(), img);

  auto by_ref = ResolveImage(*store_, "alpine:3.20");
  ASSERT_TRUE(by_ref.has_value()) << by_ref.error().ToString();
  EXPECT_EQ(by_ref->id, img.config);
  EXPECT_EQ(by_ref->manifest.digest, img.manifest.digest);
  ASSERT_TRUE(by_ref->by_reference.has_value());
  EXPECT_EQ(by_ref->by_reference->reference, "docker.io/library/alpine:3.20");
  EXPECT_EQ(by_ref->records.size(), 2u);
  EXPECT_EQ(by_ref->config.cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_EQ(by_ref->decoded.layers.size(), 1u);

  for (std::string text : {img.config.hex(), img.config.String(), img.config.hex().substr(0, 12),
                           img.config.hex().substr(0, 4), "sha256:" + img.config.hex().substr(0, 8),
                           img.manifest.digest.String()}) {
    auto r = ResolveImage(*store_, text);
    ASSERT_TRUE(r.has_value()) << text << ": " << r.error().ToString();
    EXPECT_EQ(r->id, img.config) << text;
    EXPECT_FALSE(r->by_reference.has_value()) << text;
  }
  auto by_digest = ResolveImage(*store_, "127.0.0.1:5000/demo/app@" + img.manifest.digest.String());
  ASSERT_TRUE(by_digest.has_value());
  EXPECT_TRUE(by_digest->by_reference.has_value());

  for (std::string text : {"alpine:3.19", "alpine", "abc", "sha256:ffff", "0000000000000000"}) {
    auto r = ResolveImage(*store_, text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code(), StatusCode::kNotFound) << text;
    EXPECT_EQ(r.error().message(), "No such image: " + text);
  }
}

TEST_F(ImagesTest, AmbiguousShortIdIsRefused) {
  // Find two labels whose config digests share their first 4 hex digits (birthday bound: a
  // few hundred tries, hashed in memory), then store just those two images.
  nlohmann::json diff_ids = {registry::Digest::Sha256Of("x").String()};
  std::map<std::string, std::string> seen;  // prefix -> label
  std::string first;
  std::string second;
  for (int i = 0; i < 100000 && second.empty(); ++i) {
    std::string label = "l" + std::to_string(i);
    std::string prefix =
        registry::Digest::Sha256Of(testing::ConfigBytes(diff_ids, "2024-01-01T00:00:00Z", label))
            .hex()
            .substr(0, 4);
    auto [it, inserted] = seen.emplace(prefix, label);
    if (!inserted) {
      first = it->second;
      second = label;
    }
  }
  ASSERT_FALSE(second.empty()) << "no 4-hex collision found";
  auto a = MakeImage(*store_, {"x"}, "2024-01-01T00:00:00Z", first);
  auto b = MakeImage(*store_, {"x"}, "2024-01-01T00:00:00Z", second);
  ASSERT_EQ(a.config.hex().substr(0, 4), b.config.hex().substr(0, 4));
  Record("img:a", a);
  Record("img:b", b);
  auto r = ResolveImage(*store_, a.config.hex().substr(0, 4));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("ambiguous"), std::string::npos);
  auto full = ResolveImage(*store_, b.config.hex());
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->id, b.config);
  // Too short to be an ID: taken as a reference only.
  EXPECT_EQ(ResolveImage(*store_, a.config.hex().substr(0, 3)).error().code(),
            StatusCode::kNotFound);
}

TEST_F(ImagesTest, InspectLooksLikeDockerImageInspect) {
  registry::Descriptor desc = ImportFixture(*store_, "tiny-gzip");
  registry::Digest repo_digest = registry::Digest::Sha256Of("idx");
  ASSERT_TRUE(store_->RecordImage(Ref("tiny:latest"), desc, repo_digest).ok());
  ASSERT_TRUE(store_->RecordImage(Ref("127.0.0.1:5000/demo/app:1.0"), desc, {}).ok());
  auto text = InspectImage(*store_, "tiny");
  ASSERT_TRUE(text.has_value()) << text.error().ToString();
  json j = json::parse(*text, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << *text;
  auto manifest = json::parse(*store_->ReadBlob(desc.digest));
  EXPECT_EQ(j["Id"], manifest["config"]["digest"]);
  EXPECT_EQ(j["RepoTags"], json({"127.0.0.1:5000/demo/app:1.0", "tiny:latest"}));
  EXPECT_EQ(j["RepoDigests"], json({"127.0.0.1:5000/demo/app@" + desc.digest.String(),
                                    "tiny@" + repo_digest.String()}));
  EXPECT_EQ(j["Created"], "2024-03-01T00:00:00Z");
  EXPECT_EQ(j["Author"], "make-fixtures.sh");
  EXPECT_EQ(j["Architecture"], "amd64");
  EXPECT_EQ(j["Os"], "linux");
  EXPECT_EQ(j["Config"]["Cmd"], json({"/bin/sh"}));
  EXPECT_EQ(j["Config"]["Env"], json({"PATH=/bin:/usr/bin"}));
  EXPECT_TRUE(j["Config"]["Entrypoint"].is_null());
  EXPECT_EQ(j["Config"]["WorkingDir"], "/");
  EXPECT_EQ(j["Config"]["User"], "0:0");
  EXPECT_EQ(j["Config"]["Labels"]["org.opencontainers.image.title"], "tiny");
  EXPECT_EQ(j["RootFS"]["Type"], "layers");
  EXPECT_EQ(j["RootFS"]["Layers"].size(), 3u);
  ASSERT_EQ(j["Layers"].size(), 3u);
  EXPECT_EQ(j["Layers"][0]["MediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_EQ(j["Layers"][0]["Digest"], manifest["layers"][0]["digest"]);
  EXPECT_EQ(j["Manifest"], desc.digest.String());
  int64_t size = manifest["config"]["size"].get<int64_t>();
  for (const auto& l : manifest["layers"]) size += l["size"].get<int64_t>();
  EXPECT_EQ(j["Size"], size);
  EXPECT_NE(text->find("\n    \"Id\""), std::string::npos);  // 4-space indent
  EXPECT_EQ(InspectImage(*store_, "nope").error().code(), StatusCode::kNotFound);
}

TEST_F(ImagesTest, RemoveByReferenceUntagsThenDeletes) {
  auto img = MakeImage(*store_, {"layer-a", "layer-b"});
  Record("app:1", img);
  Record("app:2", img);
  auto rm = RemoveImage(*store_, "app:1", false);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  EXPECT_EQ(rm->untagged, std::vector<std::string>{"app:1"});
  EXPECT_TRUE(rm->deleted.empty());
  EXPECT_TRUE(store_->HasBlob(img.manifest.digest));
  EXPECT_TRUE(store_->HasBlob(img.layers[0]));
  EXPECT_EQ(Names(), std::vector<std::string>{"app:2"});

  rm = RemoveImage(*store_, "app:2", false);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  EXPECT_EQ(rm->untagged[0], "app:2");
  EXPECT_EQ(rm->deleted, std::vector<registry::Digest>{img.config});
  EXPECT_GT(rm->freed_bytes, 0);
  EXPECT_TRUE(List().empty());
  for (const auto& d : {img.manifest.digest, img.config, img.layers[0], img.layers[1]}) {
    EXPECT_FALSE(store_->HasBlob(d)) << d.String();
  }
  EXPECT_EQ(testing::CountEntries(store_->root() + "/blobs/sha256"), 0u);
  EXPECT_EQ(RemoveImage(*store_, "app:2", false).error().code(), StatusCode::kNotFound);
}

TEST_F(ImagesTest, RemoveByIdNeedsForceWhenInSeveralRepositories) {
  auto img = MakeImage(*store_, {"l"});
  Record("one:1", img);
  Record("two:1", img);
  auto rm = RemoveImage(*store_, img.config.hex().substr(0, 12), false);
  ASSERT_FALSE(rm.has_value());
  EXPECT_EQ(rm.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(rm.error().message(), "conflict: unable to delete " + img.config.Short() +
                                      " (must be forced) - image is referenced in multiple "
                                      "repositories");
  EXPECT_EQ(List().size(), 2u);

  rm = RemoveImage(*store_, img.config.String(), true);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  std::sort(rm->untagged.begin(), rm->untagged.end());
  EXPECT_EQ(rm->untagged.front(), "one:1");
  EXPECT_EQ(rm->deleted, std::vector<registry::Digest>{img.config});
  EXPECT_TRUE(List().empty());
  EXPECT_FALSE(store_->HasBlob(img.layers[0]));

  // One tag plus a digest reference of the same repository: no force needed (docker).
  auto other = MakeImage(*store_, {"m"});
  Record("three:1", other);
  Record("three@" + other.manifest.digest.String(), other);
  rm = RemoveImage(*store_, other.config.hex(), false);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  EXPECT_TRUE(List().empty());
}

TEST_F(ImagesTest, GcKeepsBlobsSharedWithOtherImages) {
  auto a = MakeImage(*store_, {"shared-base", "a-only"});
  auto b = MakeImage(*store_, {"shared-base", "b-only"});
  ASSERT_EQ(a.layers[0], b.layers[0]);
  Record("a:1", a);
  Record("b:1", b);
  auto rm = RemoveImage(*store_, "a:1", false);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  EXPECT_FALSE(store_->HasBlob(a.manifest.digest));
  EXPECT_FALSE(store_->HasBlob(a.config));
  EXPECT_FALSE(store_->HasBlob(a.layers[1]));
  EXPECT_TRUE(store_->HasBlob(b.manifest.digest));
  EXPECT_TRUE(store_->HasBlob(b.config));
  EXPECT_TRUE(store_->HasBlob(b.layers[0]));  // shared
  EXPECT_TRUE(store_->HasBlob(b.layers[1]));
  auto insp = InspectImage(*store_, "b:1");
  EXPECT_TRUE(insp.has_value());
}

TEST_F(ImagesTest, GcDeletesUnreferencedBlobsAndDerivedIndexes) {
  auto kept = MakeImage(*store_, {"kept-layer"});
  Record("kept:1", kept);
  auto orphan = store_->PutBlob("orphan blob");
  ASSERT_TRUE(orphan.has_value());
  ASSERT_TRUE(MakeDirs(store_->Subdir("indexes")).ok());
  std::string kept_idx = store_->Subdir("indexes") + "/" + kept.layers[0].hex() + ".idx";
  std::string orphan_idx = store_->Subdir("indexes") + "/" + orphan->hex() + ".idx";
  ASSERT_TRUE(WriteFileAtomic(kept_idx, "IMGFSIDX").ok());
  ASSERT_TRUE(WriteFileAtomic(orphan_idx, "IMGFSIDX").ok());
  auto gc = CollectGarbage(*store_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  EXPECT_EQ(gc->blobs_deleted, 1);
  EXPECT_EQ(gc->bytes_freed, static_cast<int64_t>(std::string("orphan blob").size() + 8));
  EXPECT_FALSE(store_->HasBlob(*orphan));
  EXPECT_TRUE(std::filesystem::exists(kept_idx));
  EXPECT_FALSE(std::filesystem::exists(orphan_idx));
  EXPECT_TRUE(store_->HasBlob(kept.layers[0]));
}

TEST_F(ImagesTest, GcKeepsTheStoredIndexARepoDigestNames) {
  auto img = MakeImage(*store_, {"platform layer"});
  json index = {{"schemaVersion", 2},
                {"mediaType", "application/vnd.oci.image.index.v1+json"},
                {"manifests",
                 {{{"mediaType", img.manifest.media_type},
                   {"digest", img.manifest.digest.String()},
                   {"size", img.manifest.size},
                   {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  auto index_digest = store_->PutBlob(index.dump());
  ASSERT_TRUE(index_digest.has_value());
  ASSERT_TRUE(store_->RecordImage(Ref("multi:1"), img.manifest, *index_digest).ok());
  auto gc = CollectGarbage(*store_);
  ASSERT_TRUE(gc.has_value());
  EXPECT_EQ(gc->blobs_deleted, 0);
  EXPECT_TRUE(store_->HasBlob(*index_digest));
  EXPECT_EQ(List()[0].repo_digests, std::vector<std::string>{"multi@" + index_digest->String()});
  ASSERT_TRUE(RemoveImage(*store_, "multi:1", false).has_value());
  EXPECT_FALSE(store_->HasBlob(*index_digest));
  EXPECT_EQ(testing::CountEntries(store_->root() + "/blobs/sha256"), 0u);
}

TEST_F(ImagesTest, GcDeletesNothingWhenAManifestIsUnreadable) {
  auto a = MakeImage(*store_, {"x"});
  Record("a:1", a);
  auto orphan = store_->PutBlob("orphan");
  ASSERT_TRUE(WriteFileAtomic(store_->BlobPath(a.manifest.digest), "garbage").ok());
  auto gc = CollectGarbage(*store_);
  ASSERT_TRUE(gc.has_value());
  EXPECT_EQ(gc->blobs_deleted, 0);
  EXPECT_TRUE(store_->HasBlob(*orphan));
  EXPECT_TRUE(store_->HasBlob(a.layers[0]));
}

TEST_F(ImagesTest, RemovingDanglingImageDeletesItsBlobs) {
  auto v1 = MakeImage(*store_, {"v1-layer"});
  auto v2 = MakeImage(*store_, {"v2-layer"});
  Record("app:latest", v1);
  Record("app:latest", v2);
  auto dangling = List({"dangling=true"});
  ASSERT_EQ(dangling.size(), 1u);
  EXPECT_EQ(dangling[0].id, v1.config);
  // RepoDigests survive on the dangling entry (docker shows them too).
  EXPECT_EQ(dangling[0].repo_digests,
            std::vector<std::string>{"app@" + v1.manifest.digest.String()});
  auto rm = RemoveImage(*store_, dangling[0].id.Short(), false);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  EXPECT_EQ(rm->deleted, std::vector<registry::Digest>{v1.config});
  EXPECT_FALSE(store_->HasBlob(v1.layers[0]));
  EXPECT_TRUE(store_->HasBlob(v2.layers[0]));
  EXPECT_EQ(Names(), std::vector<std::string>{"app:latest"});
}

TEST_F(ImagesTest, LeasePinsImageAgainstRemoveAndGc) {
  auto img = MakeImage(*store_, {"pinned-layer"});
  Record("pinned:1", img);
  auto lease = Lease::Acquire(*store_, img.manifest.digest, "/mnt/pinned", "pinned:1");
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();

  auto rm = RemoveImage(*store_, "pinned:1", false);
  ASSERT_FALSE(rm.has_value());
  EXPECT_EQ(rm.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(rm.error().message().find("image is in use by the mount at /mnt/pinned"),
            std::string::npos)
      << rm.error().message();
  EXPECT_EQ(Names(), std::vector<std::string>{"pinned:1"});

  // Untagging one of several names is allowed while mounted.
  Record("pinned:2", img);
  ASSERT_TRUE(RemoveImage(*store_, "pinned:2", false).has_value());

  // Forced: the entry goes, the blobs stay while the lease lives.
  rm = RemoveImage(*store_, "pinned:1", true);
  ASSERT_TRUE(rm.has_value()) << rm.error().ToString();
  EXPECT_TRUE(List().empty());
  EXPECT_TRUE(store_->HasBlob(img.manifest.digest));
  EXPECT_TRUE(store_->HasBlob(img.layers[0]));

  ASSERT_TRUE(lease->Release().ok());
  auto gc = CollectGarbage(*store_);
  ASSERT_TRUE(gc.has_value());
  EXPECT_EQ(gc->blobs_deleted, 3);
  EXPECT_FALSE(store_->HasBlob(img.layers[0]));
}

}  // namespace
}  // namespace imgfs::cache
