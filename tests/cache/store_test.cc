// imgfs — tests for cache/store.h: layout, blobs, index.json records, and that the real
// tools (skopeo, umoci) read the store.
#include "cache/store.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/chunk_store.h"
#include "cache/images.h"
#include "cache/index_store.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using nlohmann::json;
using testing::CountEntries;
using testing::D;
using testing::HaveTool;
using testing::ImportFixture;
using testing::MakeImage;
using testing::Ref;
using testing::RunCommand;
using testing::TempDir;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    root_ = dir_.path() + "/store";
    auto s = Store::Open(root_);
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  json IndexJson() {
    auto text = ReadFile(root_ + "/index.json");
    EXPECT_TRUE(text.has_value());
    return json::parse(text.has_value() ? *text : "{}");
  }

  TempDir dir_;
  std::string root_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, OpenCreatesOciLayout) {
  EXPECT_EQ(json::parse(*ReadFile(root_ + "/oci-layout")),
            json::parse(R"({"imageLayoutVersion":"1.0.0"})"));
  json idx = IndexJson();
  EXPECT_EQ(idx["schemaVersion"], 2);
  EXPECT_TRUE(idx["manifests"].is_array());
  EXPECT_TRUE(idx["manifests"].empty());
  json info = json::parse(*ReadFile(root_ + "/imgfs.json"));
  EXPECT_EQ(info["version"], kStoreFormatVersion);
  for (const char* sub : {"blobs/sha256", "tmp", "indexes", "chunks", "mounts", "containers"}) {
    EXPECT_TRUE(std::filesystem::is_directory(root_ + "/" + sub)) << sub;
  }
  // Reopening keeps what is there.
  ASSERT_TRUE(store_->PutBlob("x").has_value());
  auto again = Store::Open(root_ + "/");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)->root(), root_);
  EXPECT_TRUE((*again)->HasBlob(registry::Digest::Sha256Of("x")));
}

TEST_F(StoreTest, OpenRefusesNewerFormat) {
  ASSERT_TRUE(
      WriteFileAtomic(root_ + "/imgfs.json", R"({"format":"imgfs-store","version":99})").ok());
  auto s = Store::Open(root_);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(s.error().message().find("99"), std::string::npos);
}

TEST_F(StoreTest, DefaultRootFollowsEnvironment) {
  const char* old = ::getenv("IMGFS_ROOT");  // NOLINT(concurrency-mt-unsafe)
  std::string saved = old != nullptr ? old : "";
  ::setenv("IMGFS_ROOT", "/some/where", 1);
  EXPECT_EQ(*DefaultStoreRoot(), "/some/where");
  ::unsetenv("IMGFS_ROOT");
  if (::geteuid() == 0) {
    EXPECT_EQ(*DefaultStoreRoot(), "/var/lib/imgfs");
  } else {
    EXPECT_NE(DefaultStoreRoot()->find("imgfs"), std::string::npos);
  }
  if (old != nullptr) ::setenv("IMGFS_ROOT", saved.c_str(), 1);
}

TEST_F(StoreTest, PutBlobStoresContentAddressedAndVerifiesOnRead) {
  auto d = store_->PutBlob("hello");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(*d, registry::Digest::Sha256Of("hello"));
  EXPECT_EQ(store_->BlobPath(*d), root_ + "/blobs/sha256/" + d->hex());
  EXPECT_TRUE(store_->HasBlob(*d));
  EXPECT_EQ(*store_->BlobSize(*d), 5);
  EXPECT_EQ(*store_->ReadBlob(*d), "hello");
  // Present already: not written again (the file's inode stays).
  struct stat before {};
  ASSERT_EQ(::stat(store_->BlobPath(*d).c_str(), &before), 0);
  ASSERT_TRUE(store_->PutBlob(*d, "hello").ok());
  struct stat after {};
  ASSERT_EQ(::stat(store_->BlobPath(*d).c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  // A blob altered on disk is reported, not returned.
  ASSERT_TRUE(WriteFileAtomic(store_->BlobPath(*d), "hellO").ok());
  auto bad = store_->ReadBlob(*d);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorrupt);
  // Absent blobs.
  registry::Digest missing = registry::Digest::Sha256Of("nope");
  EXPECT_FALSE(store_->HasBlob(missing));
  EXPECT_EQ(store_->BlobSize(missing).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->ReadBlob(missing).error().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, PutBlobRejectsWrongDigest) {
  Status st = store_->PutBlob(registry::Digest::Sha256Of("a"), "b");
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_FALSE(store_->HasBlob(registry::Digest::Sha256Of("a")));
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_EQ(CountEntries(root_ + "/blobs/sha256"), 0u);
}

TEST_F(StoreTest, BlobWriterAbortLeavesNothingVisible) {
  registry::Digest d = registry::Digest::Sha256Of("abcdef");
  {
    auto w = store_->NewBlobWriter(d, 6);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE(w->Write("abc").ok());
    EXPECT_EQ(CountEntries(root_ + "/tmp"), 1u);  // in progress
    EXPECT_FALSE(store_->HasBlob(d));
  }  // destroyed without Commit
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_FALSE(store_->HasBlob(d));

  auto w = store_->NewBlobWriter(d, 6);
  ASSERT_TRUE(w.has_value());
  ASSERT_TRUE(w->Write("abc").ok());
  w->Abort();
  EXPECT_EQ(w->Write("def").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w->Commit().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_FALSE(store_->HasBlob(d));
}

TEST_F(StoreTest, BlobWriterChecksSizeAndDigest) {
  registry::Digest d = registry::Digest::Sha256Of("abcdef");
  {
    auto w = store_->NewBlobWriter(d, 6);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE(w->Write("abc").ok());
    Status st = w->Commit();  // short
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    EXPECT_NE(st.message().find("expected 6"), std::string::npos) << st.message();
  }
  {
    auto w = store_->NewBlobWriter(d, 6);
    ASSERT_TRUE(w.has_value());
    EXPECT_EQ(w->Write("abcdefg").code(), StatusCode::kCorrupt);  // too long
  }
  {
    auto w = store_->NewBlobWriter(d);  // size unknown
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE(w->Write("abcdeX").ok());
    Status st = w->Commit();
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    EXPECT_NE(st.message().find(d.String()), std::string::npos);
  }
  EXPECT_FALSE(store_->HasBlob(d));
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  {
    auto w = store_->NewBlobWriter(d);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE(w->Write("abc").ok());
    ASSERT_TRUE(w->Write("def").ok());
    EXPECT_EQ(w->bytes_written(), 6u);
    ASSERT_TRUE(w->Commit().ok());
  }
  EXPECT_EQ(*store_->ReadBlob(d), "abcdef");
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  auto sha512 = registry::Digest::Parse("sha512:" + std::string(128, 'a'));
  ASSERT_TRUE(sha512.has_value());
  EXPECT_EQ(store_->NewBlobWriter(*sha512).error().code(), StatusCode::kUnsupported);
}

TEST_F(StoreTest, ConcurrentWritersOfOneBlobBothSucceed) {
  registry::Digest d = registry::Digest::Sha256Of("same");
  auto a = store_->NewBlobWriter(d, 4);
  auto b = store_->NewBlobWriter(d, 4);
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_TRUE(a->Write("same").ok());
  ASSERT_TRUE(b->Write("same").ok());
  EXPECT_TRUE(a->Commit().ok());
  EXPECT_TRUE(b->Commit().ok());
  EXPECT_EQ(*store_->ReadBlob(d), "same");
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
}

TEST_F(StoreTest, RecordImageWritesAnnotatedEntry) {
  auto img = MakeImage(*store_, {"layer-1"});
  registry::Digest repo_digest = registry::Digest::Sha256Of("some index");
  ASSERT_TRUE(store_->RecordImage(Ref("alpine:3.20"), img.manifest, repo_digest).ok());
  json idx = IndexJson();
  ASSERT_EQ(idx["manifests"].size(), 1u);
  json e = idx["manifests"][0];
  EXPECT_EQ(e["digest"], img.manifest.digest.String());
  EXPECT_EQ(e["size"], img.manifest.size);
  EXPECT_EQ(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(e["annotations"]["org.opencontainers.image.ref.name"], "docker.io/library/alpine:3.20");
  EXPECT_EQ(e["annotations"]["io.imgfs.reference"], "docker.io/library/alpine:3.20");
  EXPECT_EQ(e["annotations"]["io.imgfs.repo-digest"], repo_digest.String());
  std::string pulled = e["annotations"]["io.imgfs.pulled"];
  EXPECT_EQ(pulled.size(), 30u) << pulled;  // 2026-01-02T03:04:05.123456789Z
  EXPECT_EQ(pulled.back(), 'Z');

  auto rec = store_->FindRecord(Ref("docker.io/library/alpine:3.20"));
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->manifest.digest, img.manifest.digest);
  EXPECT_EQ(rec->repo_digest, repo_digest);
  EXPECT_EQ(rec->repository, "docker.io/library/alpine");
  EXPECT_FALSE(rec->dangling());
  EXPECT_EQ(store_->FindRecord(Ref("alpine:3.19")).error().code(), StatusCode::kNotFound);

  // Without a repo digest the manifest digest stands in; by digest records name@digest.
  ASSERT_TRUE(store_
                  ->RecordImage(Ref("127.0.0.1:5000/demo/app@" + img.manifest.digest.String()),
                                img.manifest, registry::Digest())
                  .ok());
  auto by_digest =
      store_->FindRecord(Ref("127.0.0.1:5000/demo/app@" + img.manifest.digest.String()));
  ASSERT_TRUE(by_digest.has_value());
  EXPECT_EQ(by_digest->reference, "127.0.0.1:5000/demo/app@" + img.manifest.digest.String());
  EXPECT_EQ(by_digest->repo_digest, img.manifest.digest);
  EXPECT_EQ(store_->ListRecords()->size(), 2u);
}

TEST_F(StoreTest, TagMoveLeavesDanglingEntry) {
  auto v1 = MakeImage(*store_, {"v1"});
  auto v2 = MakeImage(*store_, {"v2"});
  ASSERT_TRUE(store_->RecordImage(Ref("app:latest"), v1.manifest, {}).ok());
  // Re-recording the same manifest changes nothing but the time.
  ASSERT_TRUE(store_->RecordImage(Ref("app:latest"), v1.manifest, {}).ok());
  EXPECT_EQ(store_->ListRecords()->size(), 1u);

  ASSERT_TRUE(store_->RecordImage(Ref("app:latest"), v2.manifest, {}).ok());
  auto records = *store_->ListRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].reference, "docker.io/library/app:latest");
  EXPECT_EQ(records[0].manifest.digest, v2.manifest.digest);
  EXPECT_TRUE(records[1].dangling());
  EXPECT_EQ(records[1].manifest.digest, v1.manifest.digest);
  EXPECT_EQ(records[1].repository, "docker.io/library/app");  // kept for RepoDigests
  json idx = IndexJson();
  EXPECT_FALSE(idx["manifests"][1]["annotations"].contains("org.opencontainers.image.ref.name"));

  // Tagging the dangling manifest again makes it a named image: the dangling entry goes.
  ASSERT_TRUE(store_->RecordImage(Ref("app:old"), v1.manifest, {}).ok());
  records = *store_->ListRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_FALSE(records[0].dangling());
  EXPECT_FALSE(records[1].dangling());

  // Moving a tag away from a manifest that another tag still names leaves no dangling entry.
  ASSERT_TRUE(store_->RecordImage(Ref("app:old"), v2.manifest, {}).ok());
  ASSERT_TRUE(store_->RecordImage(Ref("app:other"), v2.manifest, {}).ok());
  ASSERT_TRUE(store_->RecordImage(Ref("app:other"), v1.manifest, {}).ok());
  records = *store_->ListRecords();
  ASSERT_EQ(records.size(), 3u);
  for (const auto& r : records) EXPECT_FALSE(r.dangling()) << r.manifest.digest.String();
}

TEST_F(StoreTest, CorruptIndexIsReportedNotRewritten) {
  ASSERT_TRUE(WriteFileAtomic(root_ + "/index.json", "{not json").ok());
  EXPECT_EQ(store_->ListRecords().error().code(), StatusCode::kCorrupt);
  auto img = MakeImage(*store_, {"l"});
  EXPECT_EQ(store_->RecordImage(Ref("x:1"), img.manifest, {}).code(), StatusCode::kCorrupt);
  EXPECT_EQ(*ReadFile(root_ + "/index.json"), "{not json");
}

TEST_F(StoreTest, ForeignRefNameEntriesAreUnderstood) {
  // An entry written by `skopeo copy … oci:ROOT:NAME` carries only ref.name.
  auto img = MakeImage(*store_, {"l"});
  json idx = IndexJson();
  idx["manifests"].push_back(
      {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
       {"digest", img.manifest.digest.String()},
       {"size", img.manifest.size},
       {"annotations",
        {{"org.opencontainers.image.ref.name", "quay.io/x/y:2"}, {"com.example.other", "kept"}}}});
  ASSERT_TRUE(WriteFileAtomic(root_ + "/index.json", idx.dump()).ok());
  auto rec = store_->FindRecord(Ref("quay.io/x/y:2"));
  ASSERT_TRUE(rec.has_value()) << rec.error().ToString();
  EXPECT_EQ(rec->repository, "quay.io/x/y");
  // Rewriting the index keeps foreign annotations.
  auto other = MakeImage(*store_, {"m"});
  ASSERT_TRUE(store_->RecordImage(Ref("z:1"), other.manifest, {}).ok());
  EXPECT_EQ(IndexJson()["manifests"][0]["annotations"]["com.example.other"], "kept");
}

TEST_F(StoreTest, CrashLeftoversInTmpAreIgnoredAndCleaned) {
  // Left behind by a process killed mid-write.
  ASSERT_TRUE(WriteFileAtomic(root_ + "/tmp/blob-0123456789abcdef-deadbeef0000", "partial").ok());
  ASSERT_TRUE(MakeDirs(root_ + "/tmp/some-dir").ok());
  ASSERT_TRUE(WriteFileAtomic(root_ + "/index.json.tmp-123456789abc", "{").ok());
  auto img = MakeImage(*store_, {"layer"});
  ASSERT_TRUE(store_->RecordImage(Ref("a:1"), img.manifest, {}).ok());
  EXPECT_EQ(store_->ListRecords()->size(), 1u);
  auto gc = CollectGarbage(*store_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  EXPECT_EQ(gc->tmp_entries_removed, 2);
  EXPECT_EQ(gc->blobs_deleted, 0);
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/index.json.tmp-123456789abc"));
  EXPECT_TRUE(store_->HasBlob(img.manifest.digest));
}

// The on-disk encoding of index.json and imgfs.json is part of store format version 1
// (docs/FORMATS.md). If this test fails, the encoding changed: bump kStoreFormatVersion,
// document the change, and update the golden text.
TEST_F(StoreTest, GoldenEncodingOfFormatVersion1) {
  ASSERT_EQ(kStoreFormatVersion, 1);
  EXPECT_EQ(*ReadFile(root_ + "/imgfs.json"), "{\"format\":\"imgfs-store\",\"version\":1}\n");
  ImageRecord named;
  named.reference = "docker.io/library/alpine:3.20";
  named.repository = "docker.io/library/alpine";
  named.manifest.media_type = "application/vnd.oci.image.manifest.v1+json";
  named.manifest.digest = registry::Digest::Sha256Of("m");
  named.manifest.size = 7;
  named.manifest.platform = registry::Platform{"linux", "arm64", "v8", ""};
  named.repo_digest = registry::Digest::Sha256Of("i");
  named.pulled = "2026-01-02T03:04:05.000000006Z";
  ImageRecord dangling = named;
  dangling.reference.clear();
  dangling.manifest.platform.reset();
  ASSERT_TRUE(store_->WriteRecordsUnlocked({named, dangling}).ok());
  const std::string m = registry::Digest::Sha256Of("m").String();
  const std::string i = registry::Digest::Sha256Of("i").String();
  EXPECT_EQ(*ReadFile(root_ + "/index.json"),
            "{\"manifests\":[{\"annotations\":{"
            "\"io.imgfs.pulled\":\"2026-01-02T03:04:05.000000006Z\","
            "\"io.imgfs.reference\":\"docker.io/library/alpine:3.20\","
            "\"io.imgfs.repo-digest\":\"" +
                i +
                "\","
                "\"io.imgfs.repository\":\"docker.io/library/alpine\","
                "\"org.opencontainers.image.ref.name\":\"docker.io/library/alpine:3.20\"},"
                "\"digest\":\"" +
                m +
                "\","
                "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"},"
                "\"size\":7},"
                "{\"annotations\":{"
                "\"io.imgfs.pulled\":\"2026-01-02T03:04:05.000000006Z\","
                "\"io.imgfs.repo-digest\":\"" +
                i +
                "\","
                "\"io.imgfs.repository\":\"docker.io/library/alpine\"},"
                "\"digest\":\"" +
                m +
                "\","
                "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                "\"size\":7}],"
                "\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"schemaVersion\":2}\n");
  // And it reads back to the same records.
  auto back = store_->ListRecords();
  ASSERT_TRUE(back.has_value());
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].reference, named.reference);
  EXPECT_EQ((*back)[0].manifest.platform->variant, "v8");
  EXPECT_TRUE((*back)[1].dangling());
  EXPECT_EQ((*back)[1].repo_digest, named.repo_digest);
}

// The layout is readable by the real tools, with full references as names.
TEST_F(StoreTest, SkopeoAndUmociReadTheStore) {
  ASSERT_TRUE(HaveTool("skopeo")) << "skopeo is required (apt-get install skopeo)";
  ASSERT_TRUE(HaveTool("umoci")) << "umoci is required (apt-get install umoci)";
  ASSERT_TRUE(std::filesystem::exists(std::string(testing::kFixtures) + "/tiny-gzip"))
      << "fixture tiny-gzip missing";
  registry::Descriptor desc = ImportFixture(*store_, "tiny-gzip");
  EXPECT_EQ(desc.digest.String(), testing::kTinyManifest);
  ASSERT_TRUE(store_->RecordImage(Ref("127.0.0.1:5000/demo/app:1.0"), desc, {}).ok());
  ASSERT_TRUE(store_->RecordImage(Ref("tiny"), desc, {}).ok());
  ASSERT_TRUE(
      store_->RecordImage(Ref("127.0.0.1:5000/demo/app@" + desc.digest.String()), desc, {}).ok());

  std::string out;
  ASSERT_EQ(RunCommand("skopeo inspect oci:" + root_ + ":127.0.0.1:5000/demo/app:1.0", &out), 0)
      << out;
  json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["Digest"], desc.digest.String());
  EXPECT_EQ(j["Architecture"], "amd64");
  EXPECT_EQ(j["Layers"].size(), 3u);

  ASSERT_EQ(
      RunCommand("skopeo inspect oci:" + root_ + ":127.0.0.1:5000/demo/app@" + desc.digest.String(),
                 &out),
      0)
      << out;

  ASSERT_EQ(RunCommand("umoci ls --layout " + root_, &out), 0) << out;
  EXPECT_NE(out.find("docker.io/library/tiny:latest"), std::string::npos) << out;
  EXPECT_NE(out.find("127.0.0.1:5000/demo/app:1.0"), std::string::npos) << out;

  std::string bundle = dir_.path() + "/bundle";
  ASSERT_EQ(RunCommand("umoci unpack --rootless --image " + root_ +
                           ":docker.io/library/tiny:latest " + bundle,
                       &out),
            0)
      << out;
  auto os_release = ReadFile(bundle + "/rootfs/etc/os-release");
  ASSERT_TRUE(os_release.has_value());
  EXPECT_FALSE(os_release->empty());
  EXPECT_TRUE(std::filesystem::exists(bundle + "/rootfs/bin/busybox"));

  // skopeo can also copy out of the store into another layout, verifying every blob.
  std::string copy = dir_.path() + "/copy";
  ASSERT_EQ(
      RunCommand("skopeo copy oci:" + root_ + ":docker.io/library/tiny:latest oci:" + copy + ":x",
                 &out),
      0)
      << out;
}

// The store is private (issue 9): its directories 0700 when created and tightened to 0700
// when an existing (older, 0755) store is opened by its owner; blob, chunk and index files
// 0600.
TEST_F(StoreTest, StoreIsPrivate) {
  auto mode_of = [](const std::string& path) {
    struct stat st {};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  const std::vector<std::string> dirs = {"",         "/blobs",  "/blobs/sha256", "/tmp",
                                         "/indexes", "/chunks", "/mounts",       "/containers"};
  for (const std::string& d : dirs) EXPECT_EQ(mode_of(root_ + d), 0700u) << d;
  auto blob = store_->PutBlob("private content");
  ASSERT_TRUE(blob.has_value());
  EXPECT_EQ(mode_of(store_->BlobPath(*blob)), 0600u);
  ChunkStore chunks(root_);
  registry::Digest chunk = registry::Digest::Sha256Of("a chunk");
  ASSERT_TRUE(chunks.Put(chunk, "a chunk").ok());
  EXPECT_EQ(mode_of(chunks.PathFor(chunk)), 0600u);
  EXPECT_EQ(mode_of(root_ + "/chunks/" + chunk.hex().substr(0, 2)), 0700u);
  IndexStore indexes(root_);
  ASSERT_TRUE(indexes.Put(*blob, "index bytes").ok());
  EXPECT_EQ(mode_of(indexes.PathFor(*blob)), 0600u);

  // A store of an older imgfs: world-readable directories, tightened on open.
  for (const std::string& d : dirs) ASSERT_EQ(chmod((root_ + d).c_str(), 0755), 0) << d;
  store_.reset();
  auto again = Store::Open(root_);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  for (const std::string& d : dirs) EXPECT_EQ(mode_of(root_ + d), 0700u) << d;
}

}  // namespace
}  // namespace imgfs::cache
