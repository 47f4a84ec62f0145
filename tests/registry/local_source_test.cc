// imgfs — LocalSource tests over the real fixtures (OCI layouts written by umoci/skopeo/podman,
// a skopeo docker-archive, the corrupt layouts) and archives built in the test with TarWriter
// and GNU tar.
#include "registry/local_source.h"

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/media_types.h"
#include "registry/tar_writer.h"
#include "tests/support/temp_dir.h"

namespace imgfs::registry {
namespace {

using json = nlohmann::json;

std::string Fixture(const std::string& rel) {
  const char* env = std::getenv("IMGFS_FIXTURES");
  return std::string(env != nullptr ? env : IMGFS_FIXTURES_DIR) + "/" + rel;
}

using ::imgfs::testing::TempDir;

Digest D(const std::string& hex) { return *Digest::Parse("sha256:" + hex); }

const char kTinyGzipManifest[] = "1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229";
const char kTinyConfig[] = "0cc84c7c4c88dc2e67da0d6ca1c656feb42a95b6ddc4849e73459b9cd5df7b72";
const char* const kGzipLayers[] = {
    "e7dd87d87aa1a43634ce074f0795fb3dcc6afbe8fae3d8dabcd3df934270ae15",
    "e1d86e270a4b4d5a2c79cd6dc74b3a7f4de4706af015a3aa5b9a74affc091fcf",
    "0fcf8b1057ee606ad920e336a7a74055ff01e49d7ada5b2ebf50d76050bfc714"};
const int64_t kGzipLayerSizes[] = {2670629, 448, 449};
const char* const kDiffIds[] = {"38e00d1b027e96c818422989f8c660d9d7bdfd0117e81d5051b15e466eebd6b4",
                                "f16a55d2a8c72d0453585bc8c3ee2850b7694b22a97b6fe80b70c1cf75ed6301",
                                "947dabc3c40a9b482644ac45fe1f6e49de73a06a12fac2afcac2383339648153"};
const int64_t kDiffIdSizes[] = {5184512, 8704, 9728};

// Fetches a whole blob; returns its bytes or the error.
Result<std::string> Fetch(BlobSource& src, const Digest& d, int64_t size = -1) {
  std::string out;
  Status st = src.FetchBlob(d, size, [&](std::string_view chunk) {
    out.append(chunk);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return out;
}

// Checks that `src` serves the tiny-gzip image as its default image.
void ExpectTinyGzip(LocalSource& src) {
  Result<FetchedManifest> m = src.GetManifest("");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->digest, D(kTinyGzipManifest));
  EXPECT_EQ(m->media_type, media::kOciManifest);
  EXPECT_EQ(src.manifest_digest(), D(kTinyGzipManifest));
  json doc = json::parse(m->bytes, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  ASSERT_EQ(doc["layers"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(doc["layers"][i]["digest"], std::string("sha256:") + kGzipLayers[i]);
    Result<std::string> blob = Fetch(src, D(kGzipLayers[i]), kGzipLayerSizes[i]);
    ASSERT_TRUE(blob.has_value()) << blob.error().ToString();
    EXPECT_EQ(static_cast<int64_t>(blob->size()), kGzipLayerSizes[i]);
  }
  Result<std::string> head = src.ReadBlobRange(D(kGzipLayers[0]), ByteRange{0, 2});
  ASSERT_TRUE(head.has_value()) << head.error().ToString();
  EXPECT_EQ(*head, "\x1f\x8b");
  Result<std::string> tail = src.ReadBlobRange(D(kGzipLayers[1]), ByteRange{440, 100});
  ASSERT_TRUE(tail.has_value());
  EXPECT_EQ(tail->size(), 8u);  // shorter only at the end of the blob
  Result<std::string> config = Fetch(src, D(kTinyConfig));
  ASSERT_TRUE(config.has_value()) << config.error().ToString();
  EXPECT_NE(config->find("\"diff_ids\""), std::string::npos);
}

TEST(LocalSourceOci, TinyGzipLayout) {
  auto src = LocalSource::OpenOciLayout(Fixture("tiny-gzip"), "");
  ASSERT_TRUE(src.has_value()) << src.error().ToString();
  ExpectTinyGzip(**src);
  EXPECT_EQ((*src)->ref_name(), "latest");
  EXPECT_EQ((*src)->Describe(), "oci layout " + Fixture("tiny-gzip"));
  Result<std::vector<std::string>> tags = (*src)->ListTags();
  ASSERT_TRUE(tags.has_value());
  EXPECT_EQ(*tags, std::vector<std::string>{"latest"});
  Result<FetchedManifest> by_tag = (*src)->GetManifest("latest");
  ASSERT_TRUE(by_tag.has_value());
  EXPECT_EQ(by_tag->digest, D(kTinyGzipManifest));
  Result<FetchedManifest> by_digest =
      (*src)->GetManifest(std::string("sha256:") + kTinyGzipManifest);
  ASSERT_TRUE(by_digest.has_value());
  EXPECT_EQ(by_digest->bytes, by_tag->bytes);
  EXPECT_EQ((*src)->GetManifest("nope").error().code(), StatusCode::kNotFound);

  // Errors: unknown blob, wrong size, unknown ref, missing directory.
  Digest missing = Digest::Sha256Of("missing");
  EXPECT_EQ(Fetch(**src, missing).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(Fetch(**src, D(kGzipLayers[1]), 447).error().code(), StatusCode::kCorrupt);
  auto bad_ref = LocalSource::OpenOciLayout(Fixture("tiny-gzip"), "v2");
  ASSERT_FALSE(bad_ref.has_value());
  EXPECT_EQ(bad_ref.error().code(), StatusCode::kNotFound);
  EXPECT_NE(bad_ref.error().message().find("latest"), std::string::npos)
      << bad_ref.error().ToString();
  auto no_dir = LocalSource::OpenOciLayout("/nonexistent/layout", "");
  EXPECT_EQ(no_dir.error().code(), StatusCode::kNotFound);
}

TEST(LocalSourceOci, MultiPlatformIndexAndDigestSelection) {
  auto src = LocalSource::OpenOciLayout(Fixture("tiny-multi"), "latest");
  ASSERT_TRUE(src.has_value()) << src.error().ToString();
  Result<FetchedManifest> idx = (*src)->GetManifest("");
  ASSERT_TRUE(idx.has_value()) << idx.error().ToString();
  EXPECT_EQ(idx->media_type, media::kOciIndex);
  EXPECT_EQ(idx->digest, D("fc1f88111975a5d04bb3d0feeec2e511a1e6abd28462f504c092a3f010e8a636"));
  // A nested manifest by digest; its media type comes from the document.
  Result<FetchedManifest> arm = (*src)->GetManifest(
      "sha256:559f455a999750ac337b452f2359012080ad5debdcbafb6031d485a2ec9ca15b");
  ASSERT_TRUE(arm.has_value()) << arm.error().ToString();
  EXPECT_EQ(arm->media_type, media::kOciManifest);
  // oci:DIR@sha256:… selects a manifest that index.json does not list directly.
  auto amd = LocalSource::OpenOciLayout(Fixture("tiny-multi"),
                                        std::string("@sha256:") + kTinyGzipManifest);
  ASSERT_TRUE(amd.has_value()) << amd.error().ToString();
  ExpectTinyGzip(**amd);
  EXPECT_EQ((*amd)->ref_name(), "");
  auto absent =
      LocalSource::OpenOciLayout(Fixture("tiny-multi"), "@sha256:" + Digest::Sha256Of("x").hex());
  EXPECT_EQ(absent.error().code(), StatusCode::kNotFound);
}

TEST(LocalSourceOci, CorruptFixtures) {
  auto not_json = LocalSource::OpenOciLayout(Fixture("corrupt/manifest-not-json"), "");
  ASSERT_TRUE(not_json.has_value()) << not_json.error().ToString();
  Result<FetchedManifest> m = (*not_json)->GetManifest("");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();  // the bytes match their digest...
  EXPECT_EQ(m->bytes.size(), 100u);
  EXPECT_TRUE(json::parse(m->bytes, nullptr, false).is_discarded());  // ...but are not JSON

  auto mismatch = LocalSource::OpenOciLayout(Fixture("corrupt/layer-digest-mismatch"), "");
  ASSERT_TRUE(mismatch.has_value()) << mismatch.error().ToString();
  Digest layer = D("ee62a5ec5f244731337172f8adefa88dab4df474b9687d74eab0bbe4004727b1");
  Result<std::string> blob = Fetch(**mismatch, layer, 5928);
  ASSERT_FALSE(blob.has_value());
  EXPECT_EQ(blob.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(blob.error().message().find("digest mismatch"), std::string::npos)
      << blob.error().ToString();
  EXPECT_NE(blob.error().message().find(layer.String()), std::string::npos);

  TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/index.json", "{}").ok());
  auto no_layout = LocalSource::OpenOciLayout(dir.path(), "");
  EXPECT_EQ(no_layout.error().code(), StatusCode::kCorrupt);
}

TEST(LocalSourceDocker, SkopeoDockerArchive) {
  const std::string path = Fixture("tiny-docker-archive.tar");
  auto src = LocalSource::OpenDockerArchive(path, "");
  ASSERT_TRUE(src.has_value()) << src.error().ToString();
  EXPECT_EQ((*src)->ref_name(), "localhost/fixtures/tiny:latest");
  Result<FetchedManifest> m = (*src)->GetManifest("");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->media_type, media::kOciManifest);
  EXPECT_EQ(m->digest, Digest::Sha256Of(m->bytes));
  json doc = json::parse(m->bytes, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_EQ(doc["mediaType"], std::string(media::kOciManifest));
  EXPECT_EQ(doc["config"]["mediaType"], std::string(media::kOciConfig));
  EXPECT_EQ(doc["config"]["digest"], std::string("sha256:") + kTinyConfig);
  ASSERT_EQ(doc["layers"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    // Uncompressed members: the layer digests are the diff_ids.
    EXPECT_EQ(doc["layers"][i]["mediaType"], std::string(media::kOciLayerTar));
    EXPECT_EQ(doc["layers"][i]["digest"], std::string("sha256:") + kDiffIds[i]);
    EXPECT_EQ(doc["layers"][i]["size"], kDiffIdSizes[i]);
    Result<std::string> blob = Fetch(**src, D(kDiffIds[i]), kDiffIdSizes[i]);
    ASSERT_TRUE(blob.has_value()) << blob.error().ToString();
  }
  EXPECT_TRUE(Fetch(**src, D(kTinyConfig)).has_value());
  Result<std::string> manifest_blob = Fetch(**src, m->digest);
  ASSERT_TRUE(manifest_blob.has_value());
  EXPECT_EQ(*manifest_blob, m->bytes);
  Result<FetchedManifest> by_digest = (*src)->GetManifest(m->digest.String());
  ASSERT_TRUE(by_digest.has_value());
  EXPECT_EQ(by_digest->bytes, m->bytes);
  Result<FetchedManifest> by_tag = (*src)->GetManifest("localhost/fixtures/tiny:latest");
  ASSERT_TRUE(by_tag.has_value());
  Result<std::string> tar_head = (*src)->ReadBlobRange(D(kDiffIds[2]), ByteRange{0, 4});
  ASSERT_TRUE(tar_head.has_value());
  EXPECT_EQ(*tar_head, "etc/");

  // Selectors.
  EXPECT_TRUE(LocalSource::OpenDockerArchive(path, "localhost/fixtures/tiny").has_value());
  EXPECT_TRUE(LocalSource::OpenDockerArchive(path, "@0").has_value());
  auto normalised = LocalSource::OpenDockerArchive(path, "localhost/fixtures/tiny:latest");
  ASSERT_TRUE(normalised.has_value()) << normalised.error().ToString();
  EXPECT_EQ((*normalised)->ref_name(), "localhost/fixtures/tiny:latest");
  EXPECT_EQ(LocalSource::OpenDockerArchive(path, "@1").error().code(), StatusCode::kNotFound);
  auto other = LocalSource::OpenDockerArchive(path, "other:tag");
  EXPECT_EQ(other.error().code(), StatusCode::kNotFound);
  EXPECT_NE(other.error().message().find("localhost/fixtures/tiny:latest"), std::string::npos);

  // Concurrent readers share one descriptor.
  std::vector<std::thread> threads;
  std::vector<Status> results(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Result<std::string> b = Fetch(**src, D(kDiffIds[t % 3]));
      results[t] = b.has_value() ? Status::Ok() : b.error();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(LocalSourceDocker, GzipLayersHardlinksAndSeveralImages) {
  Result<std::string> gz = ReadFile(Fixture("tiny-gzip/blobs/sha256/") + kGzipLayers[1]);
  ASSERT_TRUE(gz.has_value()) << gz.error().ToString();
  const std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}})";
  json manifest = json::array();
  manifest.push_back({{"Config", "config.json"},
                      {"RepoTags", {"example.com/a:1", "example.com/a:latest", "busybox:1"}},
                      {"Layers", {"abc/layer.tar"}}});
  manifest.push_back(
      {{"Config", "config.json"}, {"RepoTags", nullptr}, {"Layers", {"linked/layer.tar"}}});
  TempDir dir;
  std::string tar;
  TarWriter w(&tar);
  ASSERT_TRUE(w.Add(FileEntry("config.json", 0), config).ok());
  ASSERT_TRUE(w.Add(DirEntry("abc")).ok());
  ASSERT_TRUE(w.Add(FileEntry("abc/layer.tar", 0), *gz).ok());
  TarEntry hard;
  hard.name = "linked/layer.tar";
  hard.type = TarEntryType::kHardlink;
  hard.link_target = "abc/layer.tar";
  ASSERT_TRUE(w.Add(hard).ok());
  ASSERT_TRUE(w.Add(FileEntry("manifest.json", 0), manifest.dump()).ok());
  ASSERT_TRUE(w.Finish().ok());
  const std::string path = dir.path() + "/multi.tar";
  ASSERT_TRUE(WriteFileAtomic(path, tar).ok());

  auto ambiguous = LocalSource::OpenDockerArchive(path, "");
  ASSERT_FALSE(ambiguous.has_value());
  EXPECT_EQ(ambiguous.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ambiguous.error().message().find("example.com/a:1"), std::string::npos);

  auto first = LocalSource::OpenDockerArchive(path, "example.com/a");  // :latest implied
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_EQ((*first)->ref_name(), "example.com/a:latest");  // the tag asked for
  Result<FetchedManifest> m = (*first)->GetManifest("");
  ASSERT_TRUE(m.has_value());
  json doc = json::parse(m->bytes, nullptr, false);
  EXPECT_EQ(doc["layers"][0]["mediaType"], std::string(media::kOciLayerGzip));
  EXPECT_EQ(doc["layers"][0]["digest"], std::string("sha256:") + kGzipLayers[1]);
  EXPECT_EQ(doc["config"]["digest"], Digest::Sha256Of(config).String());
  EXPECT_TRUE(Fetch(**first, D(kGzipLayers[1]), 448).has_value());

  auto by_tag = LocalSource::OpenDockerArchive(path, "example.com/a:1");
  ASSERT_TRUE(by_tag.has_value()) << by_tag.error().ToString();
  EXPECT_EQ((*by_tag)->ref_name(), "example.com/a:1");
  auto familiar = LocalSource::OpenDockerArchive(path, "docker.io/library/busybox:1");
  ASSERT_TRUE(familiar.has_value()) << familiar.error().ToString();
  EXPECT_EQ((*familiar)->ref_name(), "busybox:1");
  auto second = LocalSource::OpenDockerArchive(path, "@1");
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_EQ((*second)->ref_name(), "");
  EXPECT_TRUE(Fetch(**second, D(kGzipLayers[1]), 448).has_value());
  Result<std::vector<std::string>> tags = (*second)->ListTags();
  ASSERT_TRUE(tags.has_value());
  EXPECT_EQ(tags->size(), 3u);
}

TEST(LocalSourceDocker, RejectsWhatIsNotADockerArchive) {
  TempDir dir;
  const std::string json_file = dir.path() + "/manifest.json";
  ASSERT_TRUE(WriteFileAtomic(json_file, R"([{"Config":"x"}])").ok());
  auto r = LocalSource::OpenDockerArchive(json_file, "");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find("not a docker archive: " + json_file), std::string::npos)
      << r.error().ToString();
  // A valid tar without manifest.json, and a manifest.json that is not JSON.
  std::string tar;
  TarWriter w(&tar);
  ASSERT_TRUE(w.Add(FileEntry("hello.txt", 0), "hi").ok());
  ASSERT_TRUE(w.Finish().ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/plain.tar", tar).ok());
  auto plain = LocalSource::OpenDockerArchive(dir.path() + "/plain.tar", "");
  EXPECT_EQ(plain.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(plain.error().message().find("no manifest.json"), std::string::npos);
  std::string bad;
  TarWriter w2(&bad);
  ASSERT_TRUE(w2.Add(FileEntry("manifest.json", 0), "[{not json").ok());
  ASSERT_TRUE(w2.Finish().ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/bad.tar", bad).ok());
  EXPECT_EQ(LocalSource::OpenDockerArchive(dir.path() + "/bad.tar", "").error().code(),
            StatusCode::kCorrupt);
  // A layer symlink pointing outside the archive.
  std::string esc;
  TarWriter w3(&esc);
  TarEntry link;
  link.name = "l/layer.tar";
  link.type = TarEntryType::kSymlink;
  link.link_target = "../../../etc/passwd";
  ASSERT_TRUE(w3.Add(FileEntry("c.json", 0), "{}").ok());
  ASSERT_TRUE(w3.Add(link).ok());
  ASSERT_TRUE(
      w3.Add(FileEntry("manifest.json", 0), R"([{"Config":"c.json","Layers":["l/layer.tar"]}])")
          .ok());
  ASSERT_TRUE(w3.Finish().ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/esc.tar", esc).ok());
  EXPECT_EQ(LocalSource::OpenDockerArchive(dir.path() + "/esc.tar", "").error().code(),
            StatusCode::kCorrupt);
  EXPECT_EQ(LocalSource::OpenDockerArchive(dir.path() + "/missing.tar", "").error().code(),
            StatusCode::kNotFound);
}

TEST(LocalSourceOciArchive, TarOfLayoutFromTarWriterAndGnuTar) {
  TempDir dir;
  const std::string layout = Fixture("tiny-gzip");
  // With TarWriter: the layout's files, blobs streamed from disk.
  std::string tar;
  TarWriter w(&tar);
  for (const char* name : {"oci-layout", "index.json"}) {
    Result<std::string> data = ReadFile(layout + "/" + name);
    ASSERT_TRUE(data.has_value());
    ASSERT_TRUE(w.Add(FileEntry(name, 0), *data).ok());
  }
  ASSERT_TRUE(w.Add(DirEntry("blobs")).ok());
  ASSERT_TRUE(w.Add(DirEntry("blobs/sha256")).ok());
  std::vector<std::string> blobs = {kTinyGzipManifest, kTinyConfig, kGzipLayers[0], kGzipLayers[1],
                                    kGzipLayers[2]};
  for (const std::string& hex : blobs) {
    Result<std::string> data = ReadFile(layout + "/blobs/sha256/" + hex);
    ASSERT_TRUE(data.has_value());
    ASSERT_TRUE(w.Add(FileEntry("blobs/sha256/" + hex, 0), *data).ok());
  }
  ASSERT_TRUE(w.Finish().ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/ours.tar", tar).ok());
  auto ours = LocalSource::OpenOciArchive(dir.path() + "/ours.tar", "latest");
  ASSERT_TRUE(ours.has_value()) << ours.error().ToString();
  ExpectTinyGzip(**ours);
  EXPECT_EQ((*ours)->Describe(), "oci archive " + dir.path() + "/ours.tar");

  // With GNU tar: members named "./blobs/sha256/…".
  std::string cmd = "tar -C '" + layout + "' -cf '" + dir.path() + "/gnu.tar' . 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto gnu = LocalSource::OpenOciArchive(dir.path() + "/gnu.tar", "");
  ASSERT_TRUE(gnu.has_value()) << gnu.error().ToString();
  ExpectTinyGzip(**gnu);
  Result<std::string> range = (*gnu)->ReadBlobRange(D(kGzipLayers[0]), ByteRange{1000, 50});
  Result<std::string> direct = ReadFile(layout + "/blobs/sha256/" + kGzipLayers[0]);
  ASSERT_TRUE(range.has_value() && direct.has_value());
  EXPECT_EQ(*range, direct->substr(1000, 50));

  auto not_tar = LocalSource::OpenOciArchive(layout + "/index.json", "");
  ASSERT_FALSE(not_tar.has_value());
  EXPECT_EQ(not_tar.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(not_tar.error().message().find("not an oci archive"), std::string::npos);
}

}  // namespace
}  // namespace imgfs::registry
