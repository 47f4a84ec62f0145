// imgfs — transport parsing, opening local sources and the names they are recorded under.
#include "registry/transport.h"

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/tar_writer.h"

namespace imgfs::registry {
namespace {

std::string Fixture(const std::string& rel) {
  const char* env = std::getenv("IMGFS_FIXTURES");
  return std::string(env != nullptr ? env : IMGFS_FIXTURES_DIR) + "/" + rel;
}

const char kAmd64[] = "sha256:1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229";

TEST(Transport, ParsesLocalTransports) {
  struct Case {
    std::string arg;
    Transport transport;
    std::string path;
    std::string selector;
  };
  const std::string digest = kAmd64;
  const Case cases[] = {
      {"oci:/tmp/layout", Transport::kOciLayout, "/tmp/layout", ""},
      {"oci:./rel:latest", Transport::kOciLayout, "./rel", "latest"},
      {"oci:dir:example.com/app:1.0", Transport::kOciLayout, "dir", "example.com/app:1.0"},
      {"oci:dir@" + digest, Transport::kOciLayout, "dir", "@" + digest},
      {"oci:dir:@" + digest, Transport::kOciLayout, "dir", "@" + digest},
      {"oci-archive:/x/img.tar", Transport::kOciArchive, "/x/img.tar", ""},
      {"oci-archive:img.tar:v2", Transport::kOciArchive, "img.tar", "v2"},
      {"docker-archive:/x/s.tar", Transport::kDockerArchive, "/x/s.tar", ""},
      {"docker-archive:s.tar:busybox:latest", Transport::kDockerArchive, "s.tar", "busybox:latest"},
      {"docker-archive:s.tar:@1", Transport::kDockerArchive, "s.tar", "@1"},
  };
  for (const Case& c : cases) {
    Result<SourceSpec> s = ParseSourceSpec(c.arg);
    ASSERT_TRUE(s.has_value()) << c.arg << ": " << s.error().ToString();
    EXPECT_EQ(s->transport, c.transport) << c.arg;
    EXPECT_TRUE(s->IsLocal()) << c.arg;
    EXPECT_EQ(s->path, c.path) << c.arg;
    EXPECT_EQ(s->selector, c.selector) << c.arg;
    EXPECT_EQ(s->text, c.arg);
  }
  EXPECT_EQ(TransportName(Transport::kOciArchive), "oci-archive");
}

TEST(Transport, ParsesRegistryReferences) {
  Result<SourceSpec> plain = ParseSourceSpec("alpine:3.20");
  ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
  EXPECT_EQ(plain->transport, Transport::kRegistry);
  EXPECT_FALSE(plain->IsLocal());
  EXPECT_EQ(plain->reference.String(), "docker.io/library/alpine:3.20");
  Result<SourceSpec> explicit_docker = ParseSourceSpec("docker://127.0.0.1:5000/demo/app:1");
  ASSERT_TRUE(explicit_docker.has_value()) << explicit_docker.error().ToString();
  EXPECT_EQ(explicit_docker->reference.domain(), "127.0.0.1:5000");
  EXPECT_EQ(explicit_docker->reference.path(), "demo/app");
  EXPECT_EQ(explicit_docker->reference.tag(), "1");
  Result<SourceSpec> host_port = ParseSourceSpec("localhost:5000/x");
  ASSERT_TRUE(host_port.has_value()) << host_port.error().ToString();
  EXPECT_EQ(host_port->reference.String(), "localhost:5000/x:latest");
}

TEST(Transport, RejectsBadArguments) {
  EXPECT_EQ(ParseSourceSpec("").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSourceSpec("oci:").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSourceSpec("oci::latest").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSourceSpec("docker-archive:").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSourceSpec("oci:dir@sha256:1234").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSourceSpec("dir:/tmp/x").error().code(), StatusCode::kUnsupported);
  EXPECT_EQ(ParseSourceSpec("containers-storage:alpine").error().code(), StatusCode::kUnsupported);
  EXPECT_EQ(ParseSourceSpec("Not/Valid:REF!").error().code(), StatusCode::kInvalidArgument);
  Result<SourceSpec> remote = ParseSourceSpec("alpine");
  ASSERT_TRUE(remote.has_value());
  EXPECT_EQ(OpenLocalSource(*remote).error().code(), StatusCode::kInvalidArgument);
}

TEST(Transport, OpensFixturesAndNamesThem) {
  struct Case {
    std::string arg;
    std::string want_ref;
  };
  const std::string multi_dir = Fixture("tiny-multi");
  const Case cases[] = {
      // A bare tag as ref name: podman's localhost/<dir>:<tag>.
      {"oci:" + Fixture("tiny-gzip"), "localhost/tiny-gzip:latest"},
      {"oci:" + Fixture("tiny-gzip") + ":latest", "localhost/tiny-gzip:latest"},
      {"oci:" + multi_dir + "@" + kAmd64, std::string("localhost/tiny-multi@") + kAmd64},
      {"docker-archive:" + Fixture("tiny-docker-archive.tar"), "localhost/fixtures/tiny:latest"},
  };
  for (const Case& c : cases) {
    Result<SourceSpec> spec = ParseSourceSpec(c.arg);
    ASSERT_TRUE(spec.has_value()) << c.arg << ": " << spec.error().ToString();
    Result<std::unique_ptr<LocalSource>> src = OpenLocalSource(*spec);
    ASSERT_TRUE(src.has_value()) << c.arg << ": " << src.error().ToString();
    Result<FetchedManifest> m = (*src)->GetManifest("");
    ASSERT_TRUE(m.has_value()) << c.arg << ": " << m.error().ToString();
    Result<Reference> ref = LocalImageReference(*spec, **src);
    ASSERT_TRUE(ref.has_value()) << c.arg << ": " << ref.error().ToString();
    EXPECT_EQ(ref->String(), c.want_ref) << c.arg;
  }
  // The result is usable as a BlobSource.
  Result<SourceSpec> spec = ParseSourceSpec("oci:" + Fixture("tiny-gzip"));
  ASSERT_TRUE(spec.has_value());
  Result<std::unique_ptr<LocalSource>> opened = OpenLocalSource(*spec);
  ASSERT_TRUE(opened.has_value());
  std::unique_ptr<BlobSource> as_blob_source = std::move(*opened);
  EXPECT_EQ(as_blob_source->Describe(), "oci layout " + Fixture("tiny-gzip"));
}

TEST(Transport, OciRefNamesThatAreReferences) {
  // An oci-archive whose index.json entries are named like images (as skopeo writes for
  // oci-archive:FILE:example.com/app:1.0) and one with an odd file name.
  char tmpl[] = "/tmp/imgfs-transport-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  struct Cleanup {
    std::string path;
    ~Cleanup() { (void)RemoveTree(path); }
  } cleanup{dir};
  const std::string layout = Fixture("tiny-gzip");
  Result<std::string> manifest = ReadFile(layout + "/blobs/sha256/" + std::string(kAmd64 + 7));
  ASSERT_TRUE(manifest.has_value());
  std::string index = R"({"schemaVersion":2,"manifests":[)";
  index += R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
           std::string(kAmd64) + R"(","size":)" + std::to_string(manifest->size()) +
           R"(,"annotations":{"org.opencontainers.image.ref.name":"example.com/app:1.0"}},)";
  index += R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
           std::string(kAmd64) + R"(","size":)" + std::to_string(manifest->size()) +
           R"(,"annotations":{"org.opencontainers.image.ref.name":"v2"}}]})";
  std::string tar;
  TarWriter w(&tar);
  ASSERT_TRUE(w.Add(FileEntry("oci-layout", 0), R"({"imageLayoutVersion":"1.0.0"})").ok());
  ASSERT_TRUE(w.Add(FileEntry("index.json", 0), index).ok());
  ASSERT_TRUE(w.Add(FileEntry(std::string("blobs/sha256/") + (kAmd64 + 7), 0), *manifest).ok());
  ASSERT_TRUE(w.Finish().ok());
  const std::string file = dir + "/My Image.tar";
  ASSERT_TRUE(WriteFileAtomic(file, tar).ok());

  auto name_of = [&](const std::string& arg) -> std::string {
    Result<SourceSpec> spec = ParseSourceSpec(arg);
    if (!spec.has_value()) return "parse: " + spec.error().ToString();
    Result<std::unique_ptr<LocalSource>> src = OpenLocalSource(*spec);
    if (!src.has_value()) return "open: " + src.error().ToString();
    Result<Reference> ref = LocalImageReference(*spec, **src);
    return ref.has_value() ? ref->String() : "name: " + ref.error().ToString();
  };
  EXPECT_EQ(name_of("oci-archive:" + file + ":example.com/app:1.0"), "example.com/app:1.0");
  EXPECT_EQ(name_of("oci-archive:" + file + ":v2"), "localhost/my-image:v2");
  // Two entries and no REF: the error lists both refs.
  std::string ambiguous = name_of("oci-archive:" + file);
  EXPECT_NE(ambiguous.find("example.com/app:1.0"), std::string::npos) << ambiguous;
  EXPECT_NE(ambiguous.find("v2"), std::string::npos) << ambiguous;
}

}  // namespace
}  // namespace imgfs::registry
