// Tests for manifest, index and image-config decoding, encoding and platform selection, on the
// real manifests of the image fixtures (written by umoci, skopeo, podman, ctr-remote) and on
// hand-written Docker documents.
#include "registry/manifest.h"

#include <sys/utsname.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "registry/media_types.h"

namespace imgfs::registry {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = IMGFS_FIXTURES_DIR;
constexpr char kTinyManifest[] =
    "sha256:1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229";
constexpr char kTinyConfig[] =
    "sha256:0cc84c7c4c88dc2e67da0d6ca1c656feb42a95b6ddc4849e73459b9cd5df7b72";
constexpr char kMultiIndex[] =
    "sha256:fc1f88111975a5d04bb3d0feeec2e511a1e6abd28462f504c092a3f010e8a636";
constexpr char kArm64Manifest[] =
    "sha256:559f455a999750ac337b452f2359012080ad5debdcbafb6031d485a2ec9ca15b";
const std::string kD1 = "sha256:" + std::string(64, '1');
const std::string kD2 = "sha256:" + std::string(64, '2');
const std::string kD3 = "sha256:" + std::string(64, '3');

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Blob(const std::string& layout, const std::string& digest) {
  fs::path p = kFixtures / layout / "blobs/sha256" / digest.substr(7);
  EXPECT_TRUE(fs::exists(p)) << p;
  return ReadFile(p);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- classification ---------------------------------------------------------------------

TEST(ManifestTest, ClassifiesFixtureDocumentsByShapeAndMediaType) {
  // umoci writes manifests and index.json without mediaType.
  Result<DocumentKind> k = ClassifyDocument(Blob("tiny-gzip", kTinyManifest), "");
  ASSERT_TRUE(k.has_value()) << k.error().ToString();
  EXPECT_EQ(*k, DocumentKind::kManifest);
  k = ClassifyDocument(ReadFile(kFixtures / "tiny-gzip/index.json"), "");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kIndex);
  k = ClassifyDocument(Blob("tiny-multi", kMultiIndex), "application/json");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kIndex);
}

TEST(ManifestTest, ClassifyUsesContentTypeWhenNoMediaType) {
  const std::string doc = "{\"schemaVersion\":2,\"foo\":1}";
  Result<DocumentKind> k =
      ClassifyDocument(doc, "application/vnd.oci.image.index.v1+json; charset=utf-8");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kIndex);
  k = ClassifyDocument(doc, media::kDockerManifest);
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kManifest);
  k = ClassifyDocument(doc, "application/json");
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.error().code(), StatusCode::kCorrupt);
  // The declared mediaType wins over a generic content type.
  k = ClassifyDocument(
      "{\"schemaVersion\":2,\"mediaType\":\"application/"
      "vnd.docker.distribution.manifest.list.v2+json\",\"manifests\":[]}",
      "application/vnd.docker.distribution.manifest.v2+json");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kIndex);
}

TEST(ManifestTest, Schema1IsUnsupportedWithClearMessage) {
  const std::string v1 =
      R"({"schemaVersion":1,"name":"library/x","tag":"1","architecture":"amd64",)"
      R"("fsLayers":[{"blobSum":"sha256:)" +
      std::string(64, 'a') + R"("}],"history":[]})";
  for (std::string_view ct : {std::string_view(), media::kDockerManifestV1Signed}) {
    Result<DocumentKind> k = ClassifyDocument(v1, ct);
    ASSERT_FALSE(k.has_value());
    EXPECT_EQ(k.error().code(), StatusCode::kUnsupported);
    EXPECT_TRUE(Contains(k.error().message(), "schema 1 manifests are not supported"));
  }
  Result<Manifest> m = DecodeManifest(v1);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(Contains(m.error().message(), "schema 1"));
  // Known only from the content type (a signed manifest's body without schemaVersion).
  Result<DocumentKind> k = ClassifyDocument("{\"name\":\"x\"}", media::kDockerManifestV1);
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.error().code(), StatusCode::kUnsupported);
}

TEST(ManifestTest, NotJsonIsCorrupt) {
  // The fixture: the first 100 bytes of a real manifest.
  std::string cut = ReadFile(kFixtures /
                             "corrupt/manifest-not-json/blobs/sha256/"
                             "579237d060fe352f835aa40b3fcb957d8a816a235252ff5dc3e401"
                             "062ca9cbf7");
  ASSERT_EQ(cut.size(), 100u);
  for (const std::string& bad :
       {cut, std::string(""), std::string("not json"), std::string("[1,2]"), std::string("\"s\""),
        std::string("{\"a\":1}garbage"), std::string("\xff\xfe{}", 4)}) {
    SCOPED_TRACE(bad);
    Result<DocumentKind> k = ClassifyDocument(bad, media::kOciManifest);
    ASSERT_FALSE(k.has_value());
    EXPECT_EQ(k.error().code(), StatusCode::kCorrupt);
    Result<Manifest> m = DecodeManifest(bad);
    ASSERT_FALSE(m.has_value());
    EXPECT_EQ(m.error().code(), StatusCode::kCorrupt);
    EXPECT_FALSE(DecodeIndex(bad).has_value());
    EXPECT_FALSE(DecodeImageConfig(bad).has_value());
  }
  EXPECT_TRUE(Contains(DecodeManifest(cut).error().message(), "not valid JSON"));
}

// ---- manifests ----------------------------------------------------------------------------

TEST(ManifestTest, DecodesUmociManifestWithoutMediaType) {
  Result<Manifest> m = DecodeManifest(Blob("tiny-gzip", kTinyManifest));
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->schema_version, 2);
  EXPECT_EQ(m->media_type, "");
  EXPECT_EQ(m->config.media_type, media::kOciConfig);
  EXPECT_EQ(m->config.digest.String(), kTinyConfig);
  EXPECT_EQ(m->config.size, 1047);
  ASSERT_EQ(m->layers.size(), 3u);
  EXPECT_EQ(m->layers[0].digest.String(),
            "sha256:e7dd87d87aa1a43634ce074f0795fb3dcc6afbe8fae3d8dabcd3df934270ae15");
  EXPECT_EQ(m->layers[0].size, 2670629);
  EXPECT_EQ(m->layers[1].size, 448);
  EXPECT_EQ(m->layers[2].size, 449);
  for (const Descriptor& l : m->layers) {
    EXPECT_EQ(media::LayerCompression(l.media_type), media::Compression::kGzip);
  }
}

TEST(ManifestTest, KeepsLayerAnnotations) {
  Result<Manifest> zc = DecodeManifest(
      Blob("tiny-zstdchunked",
           "sha256:68ce7f9665f6186b84df93d563f7460e80546540e4f3f08ec549f751f70941d7"));
  ASSERT_TRUE(zc.has_value()) << zc.error().ToString();
  ASSERT_EQ(zc->layers.size(), 3u);
  EXPECT_EQ(zc->layers[0].annotations.at("io.containers.zstd-chunked.manifest-position"),
            "2641395:5556:25964:1");
  EXPECT_EQ(media::LayerCompression(zc->layers[0].media_type), media::Compression::kZstd);
  Result<Manifest> es = DecodeManifest(Blob(
      "tiny-estargz", "sha256:283d59a5124078ecae03b1e8db67bb1254741b48700e7614d802e0fa8519ba4b"));
  ASSERT_TRUE(es.has_value()) << es.error().ToString();
  EXPECT_EQ(es->layers[2].annotations.at("containerd.io/snapshot/stargz/toc.digest"),
            "sha256:ffcbd37e923c9e05568efe3f98683f19525fde67381f0393f9168d795cb86271");
  EXPECT_EQ(es->layers[2].annotations.at("io.containers.estargz.uncompressed-size"), "14336");
}

// Every layout: index.json -> (nested index ->) manifest -> config; every descriptor's blob
// exists with the declared size, and the config has one diff_id per layer.
TEST(ManifestTest, EveryFixtureLayoutDecodes) {
  int manifests = 0;
  for (const char* layout :
       {"tiny-gzip", "tiny-uncompressed", "tiny-zstd", "tiny-zstdchunked", "tiny-estargz",
        "tiny-multi", "quirks/padded-tar-gzip", "quirks/umoci-dir-to-file",
        "quirks/zstdchunked-padded-tar", "corrupt/layer-digest-mismatch",
        "corrupt/layer-path-escape", "corrupt/layer-truncated-gzip"}) {
    SCOPED_TRACE(layout);
    Result<Index> top = DecodeIndex(ReadFile(kFixtures / layout / "index.json"));
    ASSERT_TRUE(top.has_value()) << top.error().ToString();
    ASSERT_EQ(top->manifests.size(), 1u);
    EXPECT_EQ(top->manifests[0].annotations.at("org.opencontainers.image.ref.name"), "latest");
    std::vector<Descriptor> todo = {top->manifests[0]};
    while (!todo.empty()) {
      Descriptor d = todo.back();
      todo.pop_back();
      std::string bytes = Blob(layout, d.digest.String());
      EXPECT_EQ(static_cast<int64_t>(bytes.size()), d.size);
      EXPECT_TRUE(d.digest.Verify(bytes).ok());
      Result<DocumentKind> kind = ClassifyDocument(bytes, d.media_type);
      ASSERT_TRUE(kind.has_value()) << kind.error().ToString();
      if (*kind == DocumentKind::kIndex) {
        Result<Index> idx = DecodeIndex(bytes);
        ASSERT_TRUE(idx.has_value()) << idx.error().ToString();
        todo.insert(todo.end(), idx->manifests.begin(), idx->manifests.end());
        continue;
      }
      Result<Manifest> m = DecodeManifest(bytes);
      ASSERT_TRUE(m.has_value()) << m.error().ToString();
      ++manifests;
      std::string config_bytes = Blob(layout, m->config.digest.String());
      EXPECT_EQ(static_cast<int64_t>(config_bytes.size()), m->config.size);
      Result<ImageConfig> c = DecodeImageConfig(config_bytes);
      ASSERT_TRUE(c.has_value()) << c.error().ToString();
      EXPECT_EQ(c->diff_ids.size(), m->layers.size());
      EXPECT_EQ(c->os, "linux");
      for (const Descriptor& l : m->layers) {
        EXPECT_NE(media::LayerCompression(l.media_type), media::Compression::kUnknown);
        EXPECT_EQ(static_cast<int64_t>(
                      fs::file_size(kFixtures / layout / "blobs/sha256" / l.digest.hex())),
                  l.size);
      }
      // Encoding and decoding again gives the same manifest.
      Result<Manifest> again = DecodeManifest(EncodeManifest(*m));
      ASSERT_TRUE(again.has_value()) << again.error().ToString();
      EXPECT_EQ(*again, *m);
    }
  }
  EXPECT_EQ(manifests, 13);  // tiny-multi holds two images
}

TEST(ManifestTest, DockerSchema2Manifest) {
  const std::string doc = R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
               "size": 1469, "digest": ")" +
                          kD1 + R"("},
    "layers": [
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3623807,
       "digest": ")" + kD2 +
                          R"("},
      {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 10,
       "digest": ")" + kD3 +
                          R"(", "urls": ["https://example.com/layer"]}
    ]
  })";
  Result<DocumentKind> k = ClassifyDocument(doc, "");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kManifest);
  Result<Manifest> m = DecodeManifest(doc);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->media_type, media::kDockerManifest);
  EXPECT_EQ(m->config.media_type, media::kDockerConfig);
  EXPECT_EQ(m->config.size, 1469);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[0].digest.String(), kD2);
  EXPECT_EQ(m->layers[1].urls, std::vector<std::string>{"https://example.com/layer"});
  EXPECT_EQ(media::LayerCompression(m->layers[1].media_type), media::Compression::kGzip);
  Result<Manifest> again = DecodeManifest(EncodeManifest(*m));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *m);
}

TEST(ManifestTest, ManifestWithSubjectArtifactTypeAndAnnotations) {
  Manifest m;
  m.media_type = std::string(media::kOciManifest);
  m.artifact_type = "application/vnd.example.sbom";
  m.config = {std::string(media::kOciEmpty), *Digest::Parse(kD1), 2, {}, {}, {}, ""};
  m.layers.push_back({"application/json", *Digest::Parse(kD2), 5, {{"k", "v"}}, {}, {}, ""});
  m.subject = Descriptor{std::string(media::kOciManifest), *Digest::Parse(kD3), 7, {}, {}, {}, ""};
  m.annotations = {{"org.opencontainers.image.created", "2024-01-01T00:00:00Z"}};
  std::string encoded = EncodeManifest(m);
  // Canonical: compact, keys sorted, so encoding is stable.
  EXPECT_EQ(encoded.find(' '), std::string::npos);
  EXPECT_LT(encoded.find("\"annotations\""), encoded.find("\"artifactType\""));
  EXPECT_LT(encoded.find("\"layers\""), encoded.find("\"schemaVersion\""));
  EXPECT_EQ(EncodeManifest(*DecodeManifest(encoded)), encoded);
  Result<Manifest> back = DecodeManifest(encoded);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, m);
}

TEST(ManifestTest, WrongFieldTypesAreCorruptAndNameTheField) {
  const std::string config =
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + kD1 +
      R"(","size":2})";
  const std::pair<std::string, std::string> cases[] = {
      {R"({"schemaVersion":"2",)" + config + R"(,"layers":[]})", "schemaVersion"},
      {R"({"schemaVersion":2.0,)" + config + R"(,"layers":[]})", "schemaVersion"},
      {R"({)" + config + R"(,"layers":[]})", "missing field \"schemaVersion\""},
      {R"({"schemaVersion":2,"layers":[]})", "missing field \"config\""},
      {R"({"schemaVersion":2,"config":[],"layers":[]})", "\"config\" must be an object"},
      {R"({"schemaVersion":2,)" + config + R"(})", "missing field \"layers\""},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":{}})", "\"layers\" must be an array"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[1]})", "\"layers[0]\" must be"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[{"mediaType":"x","digest":")" + kD2 +
           R"(","size":"5"}]})",
       "layers[0].size"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[{"mediaType":"x","digest":")" + kD2 +
           R"(","size":-1}]})",
       "layers[0].size"},
      {R"({"schemaVersion":2,)" + config +
           R"(,"layers":[{"mediaType":"x","digest":"sha256:abc","size":1}]})",
       "layers[0].digest"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[{"mediaType":7,"digest":")" + kD2 +
           R"(","size":1}]})",
       "layers[0].mediaType"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[{"digest":")" + kD2 + R"(","size":1}]})",
       "missing field \"layers[0].mediaType\""},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[{"mediaType":"x","digest":")" + kD2 +
           R"(","size":1,"annotations":{"a":1}}]})",
       "layers[0].annotations.a"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[{"mediaType":"x","digest":")" + kD2 +
           R"(","size":1,"urls":"u"}]})",
       "layers[0].urls"},
      {R"({"schemaVersion":2,"mediaType":5,)" + config + R"(,"layers":[]})", "mediaType"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[],"annotations":[]})", "annotations"},
      {R"({"schemaVersion":2,)" + config + R"(,"layers":[],"subject":"x"})", "subject"},
  };
  for (const auto& [doc, field] : cases) {
    SCOPED_TRACE(doc);
    Result<Manifest> m = DecodeManifest(doc);
    ASSERT_FALSE(m.has_value());
    EXPECT_EQ(m.error().code(), StatusCode::kCorrupt);
    EXPECT_TRUE(Contains(m.error().message(), field)) << m.error().message();
  }
}

TEST(ManifestTest, ManifestAndIndexAreNotConfused) {
  Result<Manifest> m = DecodeManifest(Blob("tiny-multi", kMultiIndex));
  ASSERT_FALSE(m.has_value());
  EXPECT_TRUE(Contains(m.error().message(), "got an index"));
  Result<Index> i = DecodeIndex(
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})");
  ASSERT_FALSE(i.has_value());
  EXPECT_TRUE(Contains(i.error().message(), "got an image manifest"));
  Result<Manifest> other = DecodeManifest(
      R"({"schemaVersion":2,"mediaType":"application/vnd.example+json","layers":[]})");
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code(), StatusCode::kUnsupported);
}

// ---- indexes and platforms ----------------------------------------------------------------

TEST(ManifestTest, TinyMultiSelectsByPlatform) {
  Result<Index> idx = DecodeIndex(Blob("tiny-multi", kMultiIndex));
  ASSERT_TRUE(idx.has_value()) << idx.error().ToString();
  EXPECT_EQ(idx->media_type, media::kOciIndex);
  ASSERT_EQ(idx->manifests.size(), 2u);
  Result<Descriptor> amd64 = SelectPlatform(*idx, *Platform::Parse("linux/amd64"));
  ASSERT_TRUE(amd64.has_value()) << amd64.error().ToString();
  EXPECT_EQ(amd64->digest.String(), kTinyManifest);  // as listed in fixtures/digests.txt
  EXPECT_EQ(amd64->size, 658);
  Result<Descriptor> arm64 = SelectPlatform(*idx, *Platform::Parse("linux/arm64"));
  ASSERT_TRUE(arm64.has_value());
  EXPECT_EQ(arm64->digest.String(), kArm64Manifest);
  // arm64 without a variant is arm64/v8.
  Result<Descriptor> v8 = SelectPlatform(*idx, *Platform::Parse("linux/aarch64/v8"));
  ASSERT_TRUE(v8.has_value());
  EXPECT_EQ(v8->digest.String(), kArm64Manifest);
  Result<Manifest> arm_manifest = DecodeManifest(Blob("tiny-multi", kArm64Manifest));
  ASSERT_TRUE(arm_manifest.has_value());
  Result<ImageConfig> arm_config =
      DecodeImageConfig(Blob("tiny-multi", arm_manifest->config.digest.String()));
  ASSERT_TRUE(arm_config.has_value());
  EXPECT_EQ(arm_config->architecture, "arm64");

  Result<Descriptor> none = SelectPlatform(*idx, *Platform::Parse("linux/s390x"));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Contains(none.error().message(), "linux/s390x"));
  EXPECT_TRUE(Contains(none.error().message(), "available: linux/amd64, linux/arm64"))
      << none.error().message();
  Result<Descriptor> windows = SelectPlatform(*idx, *Platform::Parse("windows/amd64"));
  EXPECT_FALSE(windows.has_value());
}

TEST(ManifestTest, HostPlatformSelectsFromTinyMulti) {
  Platform host = Platform::Host();
  EXPECT_EQ(host.os, "linux");
  utsname u{};
  ASSERT_EQ(uname(&u), 0);
  std::string machine = u.machine;
  if (machine == "x86_64") {
    EXPECT_EQ(host.String(), "linux/amd64");
  } else if (machine == "aarch64") {
    EXPECT_EQ(host.String(), "linux/arm64");
  }
  Result<Index> idx = DecodeIndex(Blob("tiny-multi", kMultiIndex));
  ASSERT_TRUE(idx.has_value());
  if (machine == "x86_64") {
    Result<Descriptor> d = SelectPlatform(*idx, host);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->digest.String(), kTinyManifest);
  }
}

// A Docker manifest list as buildx pushes it: images plus attestation manifests.
TEST(ManifestTest, DockerManifestListSkipsAttestations) {
  const std::string doc = R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests": [
      {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 566,
       "digest": ")" + kD1 +
                          R"(",
       "platform": {"architecture": "unknown", "os": "unknown"},
       "annotations": {"vnd.docker.reference.digest": ")" +
                          kD2 + R"(",
                       "vnd.docker.reference.type": "attestation-manifest"}},
      {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
       "digest": ")" + kD2 +
                          R"(", "platform": {"architecture": "amd64", "os": "linux"}},
      {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
       "digest": ")" + kD3 +
                          R"(",
       "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}}
    ]
  })";
  Result<DocumentKind> k = ClassifyDocument(doc, "");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(*k, DocumentKind::kIndex);
  Result<Index> idx = DecodeIndex(doc);
  ASSERT_TRUE(idx.has_value()) << idx.error().ToString();
  EXPECT_EQ(idx->media_type, media::kDockerManifestList);
  ASSERT_EQ(idx->manifests.size(), 3u);
  ASSERT_TRUE(idx->manifests[2].platform.has_value());
  EXPECT_EQ(idx->manifests[2].platform->variant, "v6");
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/amd64"))->digest.String(), kD2);
  // A v7 core runs the v6 image.
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/arm/v7"))->digest.String(), kD3);
  EXPECT_EQ(SelectPlatform(*idx, *Platform::Parse("linux/arm"))->digest.String(), kD3);
  // ... but a v5 core cannot.
  EXPECT_FALSE(SelectPlatform(*idx, *Platform::Parse("linux/arm/v5")).has_value());
  // The attestation is never chosen, nor listed.
  Result<Descriptor> unknown = SelectPlatform(*idx, Platform{"unknown", "unknown", "", ""});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_TRUE(Contains(unknown.error().message(), "available: linux/amd64, linux/arm/v6"))
      << unknown.error().message();
  Result<Index> again = DecodeIndex(EncodeIndex(*idx));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *idx);
}

TEST(ManifestTest, VariantPreferences) {
  Index idx;
  idx.media_type = std::string(media::kOciIndex);
  auto add = [&](const std::string& digest, const std::string& arch, const std::string& variant) {
    Descriptor d{std::string(media::kOciManifest), *Digest::Parse(digest), 1, {}, {}, {}, ""};
    d.platform = Platform{"linux", arch, variant, ""};
    idx.manifests.push_back(d);
  };
  add(kD1, "arm", "v6");
  add(kD2, "arm", "v7");
  add(kD3, "arm64", "v8");
  EXPECT_EQ(SelectPlatform(idx, *Platform::Parse("linux/arm/v7"))->digest.String(), kD2);
  EXPECT_EQ(SelectPlatform(idx, *Platform::Parse("linux/arm/v6"))->digest.String(), kD1);
  EXPECT_EQ(SelectPlatform(idx, *Platform::Parse("linux/armhf"))->digest.String(), kD2);
  EXPECT_EQ(SelectPlatform(idx, *Platform::Parse("linux/arm64"))->digest.String(), kD3);
  Result<Descriptor> v9 = SelectPlatform(idx, *Platform::Parse("linux/arm64/v9"));
  EXPECT_FALSE(v9.has_value());
}

TEST(ManifestTest, PlatformParse) {
  Result<Platform> p = Platform::Parse("linux/amd64");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->os, "linux");
  EXPECT_EQ(p->architecture, "amd64");
  EXPECT_EQ(p->variant, "");
  p = Platform::Parse("linux/arm64/v8");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->String(), "linux/arm64/v8");
  EXPECT_EQ(Platform::Parse("Linux/x86_64")->String(), "linux/amd64");
  EXPECT_EQ(Platform::Parse("linux/armv7l")->String(), "linux/arm/v7");
  EXPECT_EQ(Platform::Parse("linux/i686")->String(), "linux/386");
  for (const char* bad : {"", "linux", "linux/", "/amd64", "linux//v7", "linux/arm/v7/x"}) {
    Result<Platform> r = Platform::Parse(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.error().message(), "os/arch[/variant]"));
  }
}

TEST(ManifestTest, IndexWrongTypes) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"schemaVersion":2})", "missing field \"manifests\""},
      {R"({"schemaVersion":2,"manifests":"x"})", "manifests"},
      {R"({"schemaVersion":2,"manifests":[{"mediaType":"m","digest":")" + kD1 +
           R"(","size":1,"platform":{"os":"linux"}}]})",
       "manifests[0].platform.architecture"},
      {R"({"schemaVersion":2,"manifests":[{"mediaType":"m","digest":")" + kD1 +
           R"(","size":1,"platform":[]}]})",
       "manifests[0].platform"},
      {R"({"schemaVersion":3,"manifests":[]})", "schemaVersion 3"},
  };
  for (const auto& [doc, field] : cases) {
    SCOPED_TRACE(doc);
    Result<Index> i = DecodeIndex(doc);
    ASSERT_FALSE(i.has_value());
    EXPECT_TRUE(Contains(i.error().message(), field)) << i.error().message();
  }
}

// ---- image configs ------------------------------------------------------------------------

TEST(ManifestTest, DecodesTinyConfig) {
  std::string bytes = Blob("tiny-gzip", kTinyConfig);
  Result<ImageConfig> c = DecodeImageConfig(bytes);
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->created, "2024-03-01T00:00:00Z");
  EXPECT_EQ(c->author, "make-fixtures.sh");
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->os, "linux");
  EXPECT_EQ(c->variant, "");
  EXPECT_EQ(c->env, std::vector<std::string>{"PATH=/bin:/usr/bin"});
  EXPECT_EQ(c->cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_TRUE(c->entrypoint.empty());
  EXPECT_EQ(c->working_dir, "/");
  EXPECT_EQ(c->user, "0:0");
  EXPECT_EQ(c->labels.at("org.opencontainers.image.title"), "tiny");
  EXPECT_EQ(c->labels.size(), 2u);
  ASSERT_EQ(c->diff_ids.size(), 3u);
  // The diff_ids are the digests of the uncompressed layers of tiny-uncompressed.
  EXPECT_EQ(c->diff_ids[0].String(),
            "sha256:38e00d1b027e96c818422989f8c660d9d7bdfd0117e81d5051b15e466eebd6b4");
  EXPECT_EQ(c->diff_ids[2].String(),
            "sha256:947dabc3c40a9b482644ac45fe1f6e49de73a06a12fac2afcac2383339648153");
  EXPECT_EQ(c->raw, bytes);
}

TEST(ManifestTest, DockerConfigWithNulls) {
  // Go marshals nil slices and maps as null; docker writes them.
  const std::string doc = R"({"architecture":"arm","variant":"v7","os":"linux",
    "config":{"Env":null,"Entrypoint":["/entry","-x"],"Cmd":null,"Labels":null,
              "WorkingDir":"","User":"","Volumes":null},
    "container_config":{"Cmd":["/bin/sh","-c","#(nop) "]},
    "rootfs":{"type":"layers","diff_ids":[")" +
                          kD1 + R"("]}})";
  Result<ImageConfig> c = DecodeImageConfig(doc);
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->variant, "v7");
  EXPECT_TRUE(c->env.empty());
  EXPECT_TRUE(c->cmd.empty());
  EXPECT_TRUE(c->labels.empty());
  EXPECT_EQ(c->entrypoint, (std::vector<std::string>{"/entry", "-x"}));
  ASSERT_EQ(c->diff_ids.size(), 1u);
  EXPECT_EQ(c->diff_ids[0].String(), kD1);
}

TEST(ManifestTest, ConfigWrongTypes) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"config":{"Env":"PATH=/bin"}})", "config.Env"},
      {R"({"config":{"Cmd":[1]}})", "config.Cmd"},
      {R"({"config":{"Labels":{"a":true}}})", "config.Labels.a"},
      {R"({"config":{"WorkingDir":1}})", "config.WorkingDir"},
      {R"({"config":"x"})", "\"config\" must be an object"},
      {R"({"created":5})", "created"},
      {R"({"rootfs":{"diff_ids":["nope"]}})", "rootfs.diff_ids[0]"},
      {R"({"rootfs":{"diff_ids":"x"}})", "rootfs.diff_ids"},
      {R"({"rootfs":1})", "rootfs"},
  };
  for (const auto& [doc, field] : cases) {
    SCOPED_TRACE(doc);
    Result<ImageConfig> c = DecodeImageConfig(doc);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().code(), StatusCode::kCorrupt);
    EXPECT_TRUE(Contains(c.error().message(), field)) << c.error().message();
  }
}

// ---- media types --------------------------------------------------------------------------

TEST(ManifestTest, LayerCompressionByMediaType) {
  using media::Compression;
  EXPECT_EQ(media::LayerCompression(media::kOciLayerTar), Compression::kNone);
  EXPECT_EQ(media::LayerCompression(media::kOciLayerNondistTar), Compression::kNone);
  EXPECT_EQ(media::LayerCompression("application/vnd.docker.image.rootfs.diff.tar"),
            Compression::kNone);
  EXPECT_EQ(media::LayerCompression(media::kOciLayerGzip), Compression::kGzip);
  EXPECT_EQ(media::LayerCompression(media::kOciLayerNondistGzip), Compression::kGzip);
  EXPECT_EQ(media::LayerCompression(media::kDockerLayerGzip), Compression::kGzip);
  EXPECT_EQ(media::LayerCompression(media::kDockerLayerForeignGzip), Compression::kGzip);
  EXPECT_EQ(media::LayerCompression(media::kOciLayerZstd), Compression::kZstd);
  EXPECT_EQ(media::LayerCompression(media::kOciLayerNondistZstd), Compression::kZstd);
  EXPECT_EQ(media::LayerCompression("application/vnd.oci.image.layer.v1.tar+gzip; x=y"),
            Compression::kGzip);
  EXPECT_EQ(media::LayerCompression(media::kOciConfig), Compression::kUnknown);
  EXPECT_EQ(media::LayerCompression(""), Compression::kUnknown);
}

}  // namespace
}  // namespace imgfs::registry
