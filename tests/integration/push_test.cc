// imgfs — push against a real docker-registry: what is pushed pulls back with skopeo and
// unpacks with umoci to the source tree; present blobs are skipped after a HEAD; blobs of
// another repository are mounted; large blobs go up in chunks; htpasswd auth; 5xx retries.
// Requests are counted by a forwarding proxy in front of the registry that rewrites upload
// Locations back to itself, so every request of a push (HEAD, POST, PATCH, PUT) passes it.
#include "registry/push.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/http_client.h"
#include "registry/media_types.h"
#include "registry/remote_source.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/registry_server.h"
#include "tests/support/token_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

using registry::Descriptor;
using registry::Digest;
using registry::ImageToPush;
using registry::Pusher;
using registry::PushOptions;
using registry::PushReport;

const std::string kImgfs = IMGFS_BINARY;

// Blobs of an OCI layout directory.
class LayoutReader : public registry::PushBlobReader {
 public:
  explicit LayoutReader(std::string dir) : dir_(std::move(dir)) {}
  bool Has(const Digest& digest) override {
    struct stat st;
    return ::stat(Path(digest).c_str(), &st) == 0;
  }
  Result<std::string> ReadAt(const Digest& digest, uint64_t offset, size_t length) override {
    ++reads_;
    IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(Path(digest), O_RDONLY | O_CLOEXEC));
    return PreadAll(fd.get(), offset, length);
  }
  int reads() const { return reads_; }

 private:
  std::string Path(const Digest& d) const { return dir_ + "/blobs/sha256/" + d.hex(); }
  std::string dir_;
  int reads_ = 0;
};

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

ImageToPush ToPush(const std::string& layout, const BuiltImage& built) {
  ImageToPush image;
  image.manifest_bytes = built.manifest;
  image.manifest_media_type = std::string(registry::media::kOciManifest);
  Descriptor config;
  config.media_type = std::string(registry::media::kOciConfig);
  config.digest = built.config_digest;
  config.size = FileSize(layout + "/blobs/sha256/" + built.config_digest.hex());
  image.blobs.push_back(config);
  for (size_t i = 0; i < built.layer_digests.size(); ++i) {
    Descriptor layer;
    layer.media_type = std::string(registry::media::kOciLayerGzip);
    layer.digest = built.layer_digests[i];
    layer.size = built.layer_sizes[i];
    image.blobs.push_back(layer);
  }
  return image;
}

PushOptions Fast() {
  PushOptions o;
  o.connect_timeout = std::chrono::milliseconds(3000);
  o.request_timeout = std::chrono::milliseconds(20000);
  o.max_attempts = 3;
  o.base_backoff = std::chrono::milliseconds(20);
  o.max_backoff = std::chrono::milliseconds(100);
  return o;
}

// Incompressible bytes (a deterministic PRNG), so a gzip layer stays as large as its file.
std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// A forwarding proxy that counts every request and rewrites upload Locations to itself.
class CountingProxy {
 public:
  explicit CountingProxy(std::string upstream_host_port)
      : upstream_(std::move(upstream_host_port)),
        server_([](const HttpTestRequest&, HttpTestConnection& c) { c.Respond(503); }) {
    server_.SetHandler([this](const HttpTestRequest& req, HttpTestConnection& conn) {
      if (fail_posts_ > 0 && req.method == "POST") {
        --fail_posts_;
        conn.Respond(503, {}, R"({"errors":[{"code":"UNAVAILABLE","message":"try later"}]})");
        return;
      }
      Forward(req, conn);
    });
  }
  std::string host_port() const { return server_.host_port(); }
  size_t Count(std::string_view method, std::string_view prefix) const {
    return server_.Count(method, prefix);
  }
  std::vector<HttpTestRequest> requests() const { return server_.requests(); }
  // The next `n` POSTs are answered 503.
  void FailPosts(int n) { fail_posts_ = n; }

 private:
  void Forward(const HttpTestRequest& req, HttpTestConnection& conn) {
    registry::HttpRequest out;
    out.method = req.method;
    out.url = "http://" + upstream_ + req.target;
    out.body = req.body;
    out.connect_timeout = std::chrono::milliseconds(5000);
    out.total_timeout = std::chrono::milliseconds(60000);
    for (const auto& [name, value] : req.headers) {
      if (name == "host" || name == "connection" || name == "content-length" ||
          name == "transfer-encoding" || name == "expect") {
        continue;
      }
      out.headers.push_back(name + ": " + value);
    }
    auto resp = client_.Do(out);
    if (!resp.has_value()) {
      conn.Respond(502, {}, resp.error().ToString());
      return;
    }
    HeaderList headers;
    for (const auto& [name, value] : resp->headers) {
      if (name == "content-length" || name == "transfer-encoding" || name == "connection" ||
          name == "www-authenticate") {
        continue;
      }
      std::string v = value;
      if (name == "location") {
        size_t at = v.find(upstream_);
        if (at != std::string::npos) v.replace(at, upstream_.size(), host_port());
      }
      headers.emplace_back(name, v);
    }
    for (const std::string& value : resp->www_authenticate) {
      headers.emplace_back("www-authenticate", value);
    }
    conn.Respond(static_cast<int>(resp->status), headers, resp->body, req.method == "HEAD");
  }

  std::string upstream_;
  registry::HttpClient client_;
  std::atomic<int> fail_posts_{0};
  HttpTestServer server_;
};

// Pulls `repo_and_tag` of `reg` with skopeo into an OCI layout and unpacks it with umoci;
// returns the rootfs listing.
std::map<std::string, TreeEntry> PullAndUnpack(const std::string& host_port,
                                               const std::string& repo_and_tag, const TempDir& dir,
                                               const std::string& name, std::string* error) {
  ProcessResult copy = RunProcess({"skopeo", "copy", "--src-tls-verify=false",
                                   "docker://" + host_port + "/" + repo_and_tag,
                                   "oci:" + dir.Sub(name + "-layout") + ":x"});
  if (copy.exit_code != 0) {
    *error = "skopeo copy: " + copy.Describe();
    return {};
  }
  ProcessResult unpack = RunProcess(
      {"umoci", "unpack", "--image", dir.Sub(name + "-layout") + ":x", dir.Sub(name + "-bundle")});
  if (unpack.exit_code != 0) {
    *error = "umoci unpack: " + unpack.Describe();
    return {};
  }
  return ListTree(dir.Sub(name + "-bundle/rootfs"), TreeOptions(), error);
}

std::string Diffs(const std::vector<std::string>& diffs) {
  std::string all;
  for (const std::string& d : diffs) all += d + "\n";
  return all;
}

TestImageSpec TwoLayerImage() {
  TestImageSpec spec;
  TestLayer base;
  base.files = {{"etc", "", TestFile::Kind::kDir, 0755},
                {"etc/os-release", "ID=test\n"},
                {"bin", "", TestFile::Kind::kDir, 0755},
                {"bin/tool", "#!/bin/sh\necho tool\n", TestFile::Kind::kFile, 0755}};
  TestLayer top;
  top.files = {{"etc", "", TestFile::Kind::kDir, 0755},
               {"etc/motd", "welcome\n"},
               {"link", "etc/motd", TestFile::Kind::kSymlink, 0777}};
  spec.layers = {base, top};
  return spec;
}

// A push test's world: a fresh registry (each test counts what it uploads, so none is
// shared), a counting proxy in front of it, and an image built into the layout src/ (tag v1)
// with its push description and a reader of its blobs.
class PushTest : public ::testing::Test {
 protected:
  void StartRegistry(const RegistryServerOptions& options = {}) {
    auto reg = RegistryServer::Start(options);
    ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
    reg_ = std::move(reg).value();
    proxy_ = std::make_unique<CountingProxy>(reg_->host_port());
  }
  // Builds `spec` into src/ as v1; sets built_ and image_.
  void Build(const TestImageSpec& spec) {
    ImageBuilder builder(dir_.Sub("src"));
    auto built = builder.Add(spec, "v1");
    ASSERT_TRUE(built.has_value()) << built.error().ToString();
    built_ = std::move(built).value();
    image_ = ToPush(dir_.Sub("src"), built_);
  }

  TempDir dir_;
  std::unique_ptr<RegistryServer> reg_;
  std::unique_ptr<CountingProxy> proxy_;
  BuiltImage built_;
  ImageToPush image_;
  LayoutReader reader_{dir_.Sub("src")};
};

class PushAuthTest : public PushTest {};
class PushCliTest : public PushTest {};

TEST_F(PushTest, PushedImagePullsAndUnpacksToTheSourceTree) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ASSERT_NO_FATAL_FAILURE(Build(TwoLayerImage()));

  Pusher pusher(reg_->host_port(), "me/app", Fast());
  std::vector<registry::PushProgress> events;
  auto report = pusher.Push(ToPush(dir_.Sub("src"), built_), "v1", reader_,
                            [&](const registry::PushProgress& p) { events.push_back(p); });
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->blobs_uploaded, 3);
  EXPECT_EQ(report->blobs_existing, 0);
  EXPECT_EQ(report->manifest_digest, built_.manifest_digest);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state, registry::PushProgress::State::kPushed);

  ProcessResult unpack = RunProcess(
      {"umoci", "unpack", "--image", dir_.Sub("src") + ":v1", dir_.Sub("expected-bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  std::string error;
  auto expected = ListTree(dir_.Sub("expected-bundle/rootfs"), TreeOptions(), &error);
  ASSERT_TRUE(error.empty()) << error;
  auto actual = PullAndUnpack(reg_->host_port(), "me/app:v1", dir_, "pushed", &error);
  ASSERT_TRUE(error.empty()) << error;
  auto diffs = CompareTrees(actual, expected, TreeOptions());
  EXPECT_TRUE(diffs.empty()) << Diffs(diffs);
  EXPECT_EQ(actual.count("/etc/motd"), 1u);
  EXPECT_EQ(actual["/bin/tool"].mode, 0755u);
}

TEST_F(PushTest, PresentBlobsAreSkippedAfterHead) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ASSERT_NO_FATAL_FAILURE(Build(TwoLayerImage()));

  Pusher first(proxy_->host_port(), "me/app", Fast());
  auto r1 = first.Push(image_, "v1", reader_);
  ASSERT_TRUE(r1.has_value()) << r1.error().ToString();
  EXPECT_EQ(r1->blobs_uploaded, 3);
  const size_t posts = proxy_->Count("POST", "/v2/me/app/blobs/uploads");
  const size_t puts = proxy_->Count("PUT", "/v2/me/app/blobs/uploads");
  EXPECT_EQ(posts, 3u);
  EXPECT_EQ(puts, 3u);
  EXPECT_EQ(proxy_->Count("HEAD", "/v2/me/app/blobs/"), 3u);

  const int reads_before = reader_.reads();
  Pusher second(proxy_->host_port(), "me/app", Fast());
  auto r2 = second.Push(image_, "v2", reader_);
  ASSERT_TRUE(r2.has_value()) << r2.error().ToString();
  EXPECT_EQ(r2->blobs_existing, 3);
  EXPECT_EQ(r2->blobs_uploaded, 0);
  EXPECT_EQ(r2->bytes_uploaded, 0);
  EXPECT_EQ(proxy_->Count("HEAD", "/v2/me/app/blobs/"), 6u);
  EXPECT_EQ(proxy_->Count("POST", "/v2/me/app/blobs/uploads"), posts);  // no new upload
  EXPECT_EQ(reader_.reads(), reads_before);                             // nothing read locally
  EXPECT_EQ(proxy_->Count("PUT", "/v2/me/app/manifests/v2"), 1u);
}

TEST_F(PushTest, BlobsOfAnotherRepositoryAreMounted) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ASSERT_NO_FATAL_FAILURE(Build(TwoLayerImage()));
  {
    Pusher pusher(proxy_->host_port(), "base/app", Fast());
    ASSERT_TRUE(pusher.Push(image_, "1", reader_).has_value());
  }
  for (const Descriptor& d : image_.blobs) {
    image_.mount_from[d.digest] = {"nowhere/else", "base/app"};  // the first cannot mount
  }
  Pusher pusher(proxy_->host_port(), "other/app", Fast());
  auto report = pusher.Push(image_, "1", reader_);
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->blobs_mounted, 3);
  EXPECT_EQ(report->blobs_uploaded, 0);
  size_t mounts = 0;
  for (const HttpTestRequest& r : proxy_->requests()) {
    if (r.method == "POST" && r.path == "/v2/other/app/blobs/uploads/" &&
        r.query.find("from=base%2Fapp") != std::string::npos &&
        r.query.find("mount=sha256") != std::string::npos) {
      ++mounts;
    }
  }
  EXPECT_EQ(mounts, 3u);
  EXPECT_EQ(proxy_->Count("PATCH", "/v2/other/app/"), 0u);
  // The refused mount's session is not used for data either (the blob got mounted later).
  EXPECT_EQ(proxy_->Count("PUT", "/v2/other/app/blobs/uploads"), 0u);

  std::string error;
  auto actual = PullAndUnpack(reg_->host_port(), "other/app:1", dir_, "mounted", &error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(actual.count("/etc/os-release"), 1u);
}

TEST_F(PushTest, LargeBlobsAreUploadedInChunks) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  TestImageSpec spec = SimpleImage({{"big.bin", RandomBytes(40000, 7)}, {"small", "x"}});
  ASSERT_NO_FATAL_FAILURE(Build(spec));
  ASSERT_GT(image_.blobs[1].size, 30000);

  PushOptions options = Fast();
  options.chunked_threshold_bytes = 10000;  // the layer is chunked, the config is not
  options.chunk_size_bytes = 16384;
  Pusher pusher(proxy_->host_port(), "me/chunky", options);
  auto report = pusher.Push(image_, "v1", reader_);
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->chunked_uploads, 1);
  EXPECT_EQ(report->blobs_uploaded, 2);
  const size_t expected_patches = static_cast<size_t>((image_.blobs[1].size + 16383) / 16384);
  EXPECT_EQ(proxy_->Count("PATCH", "/v2/me/chunky/blobs/uploads/"), expected_patches);
  size_t ranged = 0;
  for (const HttpTestRequest& r : proxy_->requests()) {
    if (r.method == "PATCH" && r.HasHeader("content-range")) ++ranged;
  }
  EXPECT_EQ(ranged, expected_patches);

  std::string error;
  auto actual = PullAndUnpack(reg_->host_port(), "me/chunky:v1", dir_, "chunky", &error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(actual.count("/big.bin"), 1u);
  EXPECT_EQ(actual["/big.bin"].size, "40000");
  EXPECT_EQ(actual["/big.bin"].content, Digest::Sha256Of(RandomBytes(40000, 7)).hex());
}

TEST_F(PushTest, ServerErrorsAreRetriedThenReported) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ASSERT_NO_FATAL_FAILURE(Build(SimpleImage({{"f", "retry"}})));

  proxy_->FailPosts(2);  // fewer than max_attempts: the push succeeds
  Pusher pusher(proxy_->host_port(), "me/retry", Fast());
  auto ok = pusher.Push(image_, "v1", reader_);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_EQ(ok->blobs_uploaded, 2);

  proxy_->FailPosts(1000);
  Pusher failing(proxy_->host_port(), "me/retry2", Fast());
  auto bad = failing.Push(image_, "v1", reader_);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(bad.error().message().find("503"), std::string::npos) << bad.error().ToString();
  EXPECT_NE(bad.error().message().find("after 3 attempts"), std::string::npos)
      << bad.error().ToString();
  // The manifest never went up.
  EXPECT_EQ(proxy_->Count("PUT", "/v2/me/retry2/manifests/"), 0u);
}

TEST_F(PushTest, MissingBlobIsAClearError) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ASSERT_NO_FATAL_FAILURE(Build(SimpleImage({{"f", "gone"}})));
  ASSERT_EQ(::unlink((dir_.Sub("src") + "/blobs/sha256/" + built_.layer_digests[0].hex()).c_str()),
            0);
  Pusher pusher(reg_->host_port(), "me/missing", Fast());
  auto r = pusher.Push(image_, "v1", reader_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  EXPECT_NE(r.error().message().find(built_.layer_digests[0].String()), std::string::npos);
}

TEST_F(PushAuthTest, HtpasswdRegistryNeedsTheRightCredential) {
  RegistryServerOptions options;
  options.tls = true;
  options.htpasswd_user = "alice";
  options.htpasswd_password = "wonderland";
  ASSERT_NO_FATAL_FAILURE(StartRegistry(options));
  ASSERT_NO_FATAL_FAILURE(Build(SimpleImage({{"f", "auth"}})));

  PushOptions anonymous = Fast();
  anonymous.tls.ca_files = {reg_->ca_file()};
  auto r0 = Pusher(reg_->host_port(), "private/app", anonymous).Push(image_, "v1", reader_);
  ASSERT_FALSE(r0.has_value());
  EXPECT_EQ(r0.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r0.error().message().find("imgfs login"), std::string::npos) << r0.error().ToString();

  PushOptions wrong = anonymous;
  wrong.credential = registry::Credential{"alice", "queen", ""};
  auto r1 = Pusher(reg_->host_port(), "private/app", wrong).Push(image_, "v1", reader_);
  ASSERT_FALSE(r1.has_value());
  EXPECT_EQ(r1.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r1.error().message().find("unauthorized"), std::string::npos) << r1.error().ToString();

  PushOptions right = anonymous;
  right.credential = registry::Credential{"alice", "wonderland", ""};
  auto r2 = Pusher(reg_->host_port(), "private/app", right).Push(image_, "v1", reader_);
  ASSERT_TRUE(r2.has_value()) << r2.error().ToString();
  EXPECT_EQ(r2->blobs_uploaded, 2);

  // What went up is there: the registry serves the manifest to an authenticated reader.
  registry::RemoteSourceOptions ro;
  ro.tls.ca_files = {reg_->ca_file()};
  ro.credential = right.credential;
  ro.max_attempts = 1;
  auto source = registry::RemoteSource::Create(reg_->host_port(), "private/app", ro);
  auto manifest = source->GetManifest("v1");
  ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
  EXPECT_EQ(manifest->digest, built_.manifest_digest);
}

TEST_F(PushAuthTest, TokenAuthPushAndCrossRepositoryMount) {
  TokenServer tokens;
  RegistryServerOptions options;
  options.token_auth = RegistryServerOptions::TokenAuth{tokens.realm(), tokens.service(),
                                                        tokens.issuer(), tokens.cert_path()};
  ASSERT_NO_FATAL_FAILURE(StartRegistry(options));
  ASSERT_NO_FATAL_FAILURE(Build(TwoLayerImage()));

  PushOptions anonymous = Fast();  // anonymous users may pull, not push
  auto denied = Pusher(reg_->host_port(), "base/app", anonymous).Push(image_, "1", reader_);
  ASSERT_FALSE(denied.has_value());
  EXPECT_EQ(denied.error().code(), StatusCode::kPermissionDenied) << denied.error().ToString();

  PushOptions user = Fast();
  user.credential = registry::Credential{"alice", "s3cret-pass", ""};
  auto first = Pusher(reg_->host_port(), "base/app", user).Push(image_, "1", reader_);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_EQ(first->blobs_uploaded, 3);

  // The mount needs pull on base/app besides push on other/app: one token for both.
  for (const Descriptor& d : image_.blobs) image_.mount_from[d.digest] = {"base/app"};
  auto second = Pusher(reg_->host_port(), "other/app", user).Push(image_, "1", reader_);
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_EQ(second->blobs_mounted, 3);
  EXPECT_EQ(second->blobs_uploaded, 0);
}

TEST_F(PushCliTest, PullThenPushToAnotherRepositoryMountsAndRoundTrips) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ASSERT_NO_FATAL_FAILURE(Build(TwoLayerImage()));
  const std::string host = reg_->host_port();
  ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("src"), "v1", "demo/app:1").ok());
  const std::vector<std::string> env = {"IMGFS_ROOT=" + dir_.Sub("store")};

  ProcessResult pull = RunProcess({kImgfs, "pull", host + "/demo/app:1"}, env);
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  ProcessResult push =
      RunProcess({kImgfs, "push", host + "/demo/app:1", host + "/copy/app:2"}, env);
  ASSERT_EQ(push.exit_code, 0) << push.Describe();
  EXPECT_NE(push.out.find("Mounted from demo/app"), std::string::npos) << push.out;
  EXPECT_NE(push.out.find("2: digest: " + built_.manifest_digest.String()), std::string::npos)
      << push.out;

  // Pushed again: everything exists.
  ProcessResult again =
      RunProcess({kImgfs, "push", host + "/demo/app:1", host + "/copy/app:2"}, env);
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_NE(again.out.find("Layer already exists"), std::string::npos) << again.out;
  EXPECT_EQ(again.out.find("Pushed"), std::string::npos) << again.out;

  // And to an OCI layout: umoci reads it.
  ProcessResult to_oci =
      RunProcess({kImgfs, "push", host + "/demo/app:1", "oci:" + dir_.Sub("out") + ":copy"}, env);
  ASSERT_EQ(to_oci.exit_code, 0) << to_oci.Describe();
  ProcessResult unpack =
      RunProcess({"umoci", "unpack", "--image", dir_.Sub("out") + ":copy", dir_.Sub("out-bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();

  std::string error;
  auto from_layout = ListTree(dir_.Sub("out-bundle/rootfs"), TreeOptions(), &error);
  ASSERT_TRUE(error.empty()) << error;
  auto from_registry = PullAndUnpack(host, "copy/app:2", dir_, "copy", &error);
  ASSERT_TRUE(error.empty()) << error;
  auto diffs = CompareTrees(from_registry, from_layout, TreeOptions());
  EXPECT_TRUE(diffs.empty()) << Diffs(diffs);
  EXPECT_EQ(from_registry.count("/link"), 1u);

  ProcessResult unknown = RunProcess({kImgfs, "push", host + "/nothing/here:1"}, env);
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_NE(unknown.err.find("No such image"), std::string::npos) << unknown.err;
}

}  // namespace
}  // namespace imgfs::testing
