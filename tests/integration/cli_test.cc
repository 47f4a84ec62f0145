// imgfs — the user flows of the `imgfs` binary against a real docker-registry process:
// pull (tag, digest, -a, platform, local transports), images, inspect, rm, login/logout,
// and every bad input giving a one-line error, a non-zero exit and an untouched store.
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"

namespace imgfs::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    for (const char* tool : {"/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/umoci"}) {
      ASSERT_EQ(access(tool, X_OK), 0) << tool << " is missing: run scripts/setup.sh";
    }
    root_ = tmp_.Sub("store");
    std::filesystem::create_directories(tmp_.Sub("docker-config"));
    std::filesystem::create_directories(tmp_.Sub("xdg"));
  }

  // Runs imgfs with a private store and private credential files.
  ProcessResult Imgfs(std::vector<std::string> args, std::string_view stdin_data = {},
                      int timeout_s = 120) {
    return RunImgfs(
        root_, std::move(args),
        {"DOCKER_CONFIG=" + tmp_.Sub("docker-config"), "XDG_RUNTIME_DIR=" + tmp_.Sub("xdg"),
         "REGISTRY_AUTH_FILE=", "IMGFS_LOG=warning"},
        stdin_data, timeout_s);
  }

  // A registry logging its accesses (BlobGets), with htpasswd auth for `user` if given.
  void StartRegistry(const std::string& user = "", const std::string& pass = "") {
    RegistryServerOptions options = RegistryServerOptions::BasicAuth(user, pass);
    options.access_log = true;
    auto reg = RegistryServer::Start(options);
    ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
    registry_ = std::move(*reg);
  }

  // GET requests of blob `d` the registry answered.
  int BlobGets(const registry::Digest& d) const {
    int n = 0;
    for (const RegistryAccess& access : registry_->Accesses()) {
      if (access.method == "GET" && access.path.ends_with("/blobs/" + d.String())) ++n;
    }
    return n;
  }

  // Builds `spec` into a layout and pushes it as NAME:TAG to the registry.
  BuiltImage Push(const TestImageSpec& spec, const std::string& name, const std::string& tag) {
    ImageBuilder builder(tmp_.Sub("layout-" + std::to_string(layouts_++)));
    Result<BuiltImage> built = builder.Add(spec, tag);
    EXPECT_TRUE(built.has_value()) << built.error().ToString();
    Status pushed = PushLayout(builder.dir(), tag, registry_->host_port() + "/" + name + ":" + tag);
    EXPECT_TRUE(pushed.ok()) << pushed.ToString();
    return built.has_value() ? *built : BuiltImage{};
  }

  json IndexJson() {
    Result<std::string> text = ReadFile(root_ + "/index.json");
    if (!text.has_value()) return json::object();
    return json::parse(*text, nullptr, false);
  }

  // The store holds no partial state: tmp/ empty and every blob hashes to its name.
  void ExpectStoreConsistent() {
    for (const std::string& f : ListFilesRecursive(root_ + "/tmp")) {
      ADD_FAILURE() << "left in tmp/: " << f;
    }
    for (const std::string& f : ListFilesRecursive(root_ + "/blobs/sha256")) {
      Result<std::string> bytes = ReadFile(root_ + "/blobs/sha256/" + f);
      ASSERT_TRUE(bytes.has_value());
      EXPECT_EQ(registry::Digest::Sha256Of(*bytes).hex(), f) << "blob " << f << " is corrupt";
    }
  }

  void ExpectOneLineError(const ProcessResult& r, const std::string& must_contain) {
    EXPECT_NE(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    ASSERT_FALSE(r.err.empty());
    std::string err = r.err;
    if (err.back() == '\n') err.pop_back();
    EXPECT_EQ(err.find('\n'), std::string::npos) << "more than one line: " << r.err;
    EXPECT_TRUE(err.starts_with("imgfs: ")) << r.err;
    EXPECT_THAT(err, HasSubstr(must_contain));
  }

  // The image references (ref.name annotations) recorded in the store.
  std::vector<std::string> RecordedRefs() {
    std::vector<std::string> out;
    json index = IndexJson();
    if (!index.contains("manifests")) return out;
    for (const json& m : index["manifests"]) {
      if (m.contains("annotations") &&
          m["annotations"].contains("org.opencontainers.image.ref.name")) {
        out.push_back(m["annotations"]["org.opencontainers.image.ref.name"]);
      }
    }
    return out;
  }

  TempDir tmp_;
  std::string root_;
  std::unique_ptr<RegistryServer> registry_;
  int layouts_ = 0;
};

TestImageSpec TwoLayerImage(const std::string& base_text, const std::string& top_text) {
  TestImageSpec spec;
  spec.layers.push_back({{{"etc", "", TestFile::Kind::kDir},
                          {"etc/os-release", base_text},
                          {"bin", "", TestFile::Kind::kDir}}});
  spec.layers.push_back({{{"app", "", TestFile::Kind::kDir}, {"app/data.txt", top_text}}});
  return spec;
}

// ---- usage ----

TEST_F(CliTest, UsageErrorsExitTwoAndHelpExitsZero) {
  ProcessResult help = Imgfs({"--help"});
  EXPECT_EQ(help.exit_code, 0) << help.Describe();
  EXPECT_THAT(help.out, HasSubstr("pull"));
  EXPECT_THAT(help.out, HasSubstr("images"));

  ProcessResult pull_help = Imgfs({"pull", "--help"});
  EXPECT_EQ(pull_help.exit_code, 0);
  EXPECT_THAT(pull_help.out, HasSubstr("--platform"));

  ProcessResult version = Imgfs({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_THAT(version.out, HasSubstr("imgfs version"));

  EXPECT_EQ(Imgfs({"pull", "--bogus", "x"}).exit_code, 2);
  EXPECT_EQ(Imgfs({"pull"}).exit_code, 2);
  EXPECT_EQ(Imgfs({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(Imgfs({"rm"}).exit_code, 2);

  ProcessResult bad_ref = Imgfs({"pull", "UPPER/Case"});
  ExpectOneLineError(bad_ref, "invalid reference format");
}

// ---- registry pulls ----

TEST_F(CliTest, PullByTagThenImagesInspectRemove) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  BuiltImage img = Push(TwoLayerImage("base v1\n", "app v1\n"), "demo/app", "1.0");
  std::string ref = registry_->host_port() + "/demo/app:1.0";

  ProcessResult pull = Imgfs({"pull", ref});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  // Not a terminal: one line per finished layer, then the summary.
  EXPECT_THAT(pull.out, HasSubstr(img.layer_digests[0].Short() + ": Pull complete"));
  EXPECT_THAT(pull.out, HasSubstr(img.layer_digests[1].Short() + ": Pull complete"));
  EXPECT_THAT(pull.out, HasSubstr("Digest: " + img.manifest_digest.String()));
  EXPECT_THAT(pull.out, HasSubstr("Status: Downloaded newer image for " + ref));
  EXPECT_EQ(RecordedRefs(), std::vector<std::string>{ref});
  ExpectStoreConsistent();

  // A second pull downloads nothing.
  ProcessResult again = Imgfs({"pull", ref});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_THAT(again.out, HasSubstr("Already exists"));
  EXPECT_THAT(again.out, HasSubstr("Image is up to date"));
  EXPECT_EQ(BlobGets(img.layer_digests[0]), 1);

  ProcessResult images = Imgfs({"images"});
  ASSERT_EQ(images.exit_code, 0) << images.Describe();
  EXPECT_THAT(images.out, HasSubstr("REPOSITORY"));
  EXPECT_THAT(images.out, HasSubstr(registry_->host_port() + "/demo/app"));
  EXPECT_THAT(images.out, HasSubstr("1.0"));
  EXPECT_THAT(images.out, HasSubstr(img.config_digest.Short()));

  ProcessResult quiet = Imgfs({"images", "-q"});
  EXPECT_EQ(quiet.out, img.config_digest.Short() + "\n");

  ProcessResult digests = Imgfs({"images", "--digests"});
  EXPECT_THAT(digests.out, HasSubstr("DIGEST"));
  EXPECT_THAT(digests.out, HasSubstr(img.manifest_digest.String()));

  ProcessResult as_json = Imgfs({"images", "--format", "json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.Describe();
  json row = json::parse(as_json.out, nullptr, false);
  ASSERT_FALSE(row.is_discarded()) << as_json.out;
  EXPECT_EQ(row["Repository"], registry_->host_port() + "/demo/app");
  EXPECT_EQ(row["Tag"], "1.0");
  EXPECT_EQ(row["ID"], img.config_digest.Short());

  ProcessResult tmpl = Imgfs({"images", "--format", "{{.Repository}}:{{.Tag}}"});
  EXPECT_EQ(tmpl.out, ref + "\n");

  ProcessResult inspect = Imgfs({"inspect", ref});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.Describe();
  json arr = json::parse(inspect.out, nullptr, false);
  ASSERT_TRUE(arr.is_array()) << inspect.out;
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(arr[0]["Id"], img.config_digest.String());
  EXPECT_EQ(arr[0]["RepoTags"], json::array({ref}));
  EXPECT_EQ(arr[0]["Architecture"], "amd64");
  EXPECT_EQ(arr[0]["Os"], "linux");
  EXPECT_EQ(arr[0]["RootFS"]["Layers"],
            json::array({img.diff_ids[0].String(), img.diff_ids[1].String()}));
  EXPECT_EQ(arr[0]["Config"]["Cmd"], json::array({"/bin/sh"}));
  // image inspect is the same command.
  EXPECT_EQ(Imgfs({"image", "inspect", ref}).out, inspect.out);
  // By short ID too.
  EXPECT_EQ(Imgfs({"inspect", "--format", "{{.Id}}", img.config_digest.Short()}).out,
            img.config_digest.String() + "\n");

  ProcessResult missing = Imgfs({"inspect", "nope:1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("No such image"));

  ProcessResult rm = Imgfs({"rm", ref});
  ASSERT_EQ(rm.exit_code, 0) << rm.Describe();
  EXPECT_THAT(rm.out, HasSubstr("Untagged: " + ref));
  EXPECT_THAT(rm.out, HasSubstr("Deleted: " + img.config_digest.String()));
  EXPECT_EQ(Imgfs({"images", "-q"}).out, "");
  EXPECT_TRUE(ListFilesRecursive(root_ + "/blobs/sha256").empty())
      << "blobs left after rm of the only image";

  ProcessResult rm_again = Imgfs({"rmi", ref});
  ExpectOneLineError(rm_again, "No such image");
}

TEST_F(CliTest, PullByDigestIsVerifiedAndRecordedByDigest) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  BuiltImage img = Push(SimpleImage({{"hello.txt", "hello\n"}}), "team/app", "v1");
  std::string ref = registry_->host_port() + "/team/app@" + img.manifest_digest.String();
  ProcessResult pull = Imgfs({"pull", ref});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  EXPECT_EQ(RecordedRefs(), std::vector<std::string>{ref});
  ProcessResult images = Imgfs({"images", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"});
  EXPECT_EQ(images.out,
            registry_->host_port() + "/team/app <none> " + img.manifest_digest.String() + "\n");

  // A digest the registry does not have.
  std::string wrong = registry_->host_port() + "/team/app@sha256:" + std::string(64, 'a');
  ProcessResult bad = Imgfs({"pull", wrong});
  ExpectOneLineError(bad, "pulling");
  EXPECT_THAT(bad.err, HasSubstr(registry_->host_port()));
  EXPECT_EQ(RecordedRefs(), std::vector<std::string>{ref});
}

TEST_F(CliTest, MovedTagLeavesOldImageDanglingAndRmOfAllIdsClearsTheStore) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  std::string ref = registry_->host_port() + "/demo/app:latest";
  BuiltImage v1 = Push(SimpleImage({{"v", "1"}}), "demo/app", "latest");
  ASSERT_EQ(Imgfs({"pull", ref}).exit_code, 0);
  BuiltImage v2 = Push(SimpleImage({{"v", "2"}}), "demo/app", "latest");
  ProcessResult pull2 = Imgfs({"pull", ref});
  ASSERT_EQ(pull2.exit_code, 0) << pull2.Describe();
  EXPECT_THAT(pull2.out, HasSubstr("Downloaded newer image"));

  ProcessResult images = Imgfs({"images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"});
  EXPECT_THAT(images.out, HasSubstr(ref + " " + v2.config_digest.Short()));
  EXPECT_THAT(images.out, HasSubstr("<none>:<none> " + v1.config_digest.Short()));

  ProcessResult dangling = Imgfs({"images", "-q", "--filter", "dangling=true"});
  EXPECT_EQ(dangling.out, v1.config_digest.Short() + "\n");
  ProcessResult named = Imgfs({"images", "-q", "-f", "dangling=false"});
  EXPECT_EQ(named.out, v2.config_digest.Short() + "\n");
  ProcessResult by_ref = Imgfs({"images", "-q", "--filter", "reference=*/demo/*"});
  EXPECT_EQ(by_ref.out, v2.config_digest.Short() + "\n");

  // `imgfs rm $(imgfs images -q) -f`
  std::vector<std::string> args = {"rm"};
  std::istringstream ids(Imgfs({"images", "-q"}).out);
  for (std::string id; ids >> id;) args.push_back(id);
  ASSERT_EQ(args.size(), 3u);
  args.push_back("-f");
  ProcessResult rm = Imgfs(args);
  ASSERT_EQ(rm.exit_code, 0) << rm.Describe();
  EXPECT_EQ(Imgfs({"images", "-q"}).out, "");
  EXPECT_TRUE(ListFilesRecursive(root_ + "/blobs/sha256").empty());
}

TEST_F(CliTest, PullAllTags) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  BuiltImage a = Push(SimpleImage({{"t", "a"}}), "multi/app", "a");
  BuiltImage b = Push(SimpleImage({{"t", "b"}}), "multi/app", "b");
  ProcessResult pull = Imgfs({"pull", "-a", registry_->host_port() + "/multi/app"});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  std::vector<std::string> refs = RecordedRefs();
  std::sort(refs.begin(), refs.end());
  EXPECT_EQ(refs, (std::vector<std::string>{registry_->host_port() + "/multi/app:a",
                                            registry_->host_port() + "/multi/app:b"}));
  ProcessResult with_tag = Imgfs({"pull", "-a", registry_->host_port() + "/multi/app:a"});
  ExpectOneLineError(with_tag, "all-tags");
}

TEST_F(CliTest, SharedBaseLayerIsDownloadedOnce) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  BuiltImage one = Push(TwoLayerImage("shared base\n", "one\n"), "demo/one", "1");
  BuiltImage two = Push(TwoLayerImage("shared base\n", "two\n"), "demo/two", "1");
  ASSERT_EQ(one.layer_digests[0], two.layer_digests[0]);
  ASSERT_EQ(Imgfs({"pull", registry_->host_port() + "/demo/one:1"}).exit_code, 0);
  ProcessResult second = Imgfs({"pull", registry_->host_port() + "/demo/two:1"});
  ASSERT_EQ(second.exit_code, 0) << second.Describe();
  EXPECT_THAT(second.out, HasSubstr(one.layer_digests[0].Short() + ": Already exists"));
  EXPECT_EQ(BlobGets(one.layer_digests[0]), 1) << registry_->Log();
  EXPECT_EQ(BlobGets(two.layer_digests[1]), 1);
  ExpectStoreConsistent();
}

TEST_F(CliTest, ParallelPullsOfOverlappingImagesBothSucceed) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  TestImageSpec big_a = TwoLayerImage(std::string(3 << 20, 'x'), "a");
  TestImageSpec big_b = TwoLayerImage(std::string(3 << 20, 'x'), "b");
  BuiltImage a = Push(big_a, "par/a", "1");
  BuiltImage b = Push(big_b, "par/b", "1");
  ProcessResult ra, rb;
  std::thread ta([&] { ra = Imgfs({"pull", registry_->host_port() + "/par/a:1"}); });
  std::thread tb([&] { rb = Imgfs({"pull", registry_->host_port() + "/par/b:1"}); });
  ta.join();
  tb.join();
  ASSERT_EQ(ra.exit_code, 0) << ra.Describe();
  ASSERT_EQ(rb.exit_code, 0) << rb.Describe();
  EXPECT_EQ(RecordedRefs().size(), 2u);
  ExpectStoreConsistent();
  ProcessResult q = Imgfs({"images", "-q"});
  EXPECT_THAT(q.out, HasSubstr(a.config_digest.Short()));
  EXPECT_THAT(q.out, HasSubstr(b.config_digest.Short()));
}

TEST_F(CliTest, PlatformSelectionFromAnIndex) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  ImageBuilder builder(tmp_.Sub("multi-layout"));
  TestImageSpec amd = SimpleImage({{"arch.txt", "amd64\n"}});
  TestImageSpec arm = SimpleImage({{"arch.txt", "arm64\n"}});
  arm.architecture = "arm64";
  arm.variant = "v8";
  Result<BuiltImage> ia = builder.Add(amd, "amd");
  Result<BuiltImage> ib = builder.Add(arm, "arm");
  ASSERT_TRUE(ia.has_value() && ib.has_value());
  Result<registry::Digest> index = builder.AddIndex(
      {{*ia, {"linux", "amd64", "", ""}}, {*ib, {"linux", "arm64", "v8", ""}}}, "multi");
  ASSERT_TRUE(index.has_value());
  ProcessResult push = RunProcess({"skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false",
                                   "oci:" + builder.dir() + ":multi",
                                   "docker://" + registry_->host_port() + "/plat/app:1"});
  ASSERT_EQ(push.exit_code, 0) << push.Describe();

  std::string ref = registry_->host_port() + "/plat/app:1";
  ProcessResult arm_pull = Imgfs({"pull", "--platform", "linux/arm64", ref});
  ASSERT_EQ(arm_pull.exit_code, 0) << arm_pull.Describe();
  ProcessResult id = Imgfs({"inspect", "--format", "{{.Id}} {{.Architecture}}", ref});
  EXPECT_EQ(id.out, ib->config_digest.String() + " arm64\n");
  // RepoDigests name the index the tag resolved to.
  ProcessResult digests = Imgfs({"images", "--format", "{{.Digest}}"});
  EXPECT_EQ(digests.out, index->String() + "\n");

  ProcessResult none = Imgfs({"pull", "--platform", "linux/s390x", ref});
  ExpectOneLineError(none, "pulling");
  ProcessResult bad = Imgfs({"pull", "--platform", "nonsense", ref});
  EXPECT_EQ(bad.exit_code, 2);
}

// ---- the store is a layout other tools read ----

TEST_F(CliTest, StoreIsReadableBySkopeoAndUmoci) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  BuiltImage img = Push(TwoLayerImage("os\n", "data\n"), "demo/peer", "2");
  std::string ref = registry_->host_port() + "/demo/peer:2";
  ASSERT_EQ(Imgfs({"pull", ref}).exit_code, 0);
  ProcessResult inspect = RunProcess({"skopeo", "inspect", "oci:" + root_ + ":" + ref});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.Describe();
  json j = json::parse(inspect.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["Digest"], img.manifest_digest.String());
  ProcessResult unpack = RunProcess(
      {"umoci", "unpack", "--rootless", "--image", root_ + ":" + ref, tmp_.Sub("bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  Result<std::string> data = ReadFile(tmp_.Sub("bundle") + "/rootfs/app/data.txt");
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(*data, "data\n");
}

// ---- bad inputs ----

TEST_F(CliTest, UnknownTagFailsWithOneLineNamingReferenceAndRegistry) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry());
  Push(SimpleImage({{"f", "x"}}), "demo/app", "1.0");
  std::string ref = registry_->host_port() + "/demo/app:nope";
  ProcessResult r = Imgfs({"pull", ref});
  ExpectOneLineError(r, "pulling " + ref);
  EXPECT_THAT(r.err, HasSubstr("manifest unknown"));
  EXPECT_THAT(r.err, HasSubstr(registry_->host_port()));
  EXPECT_TRUE(RecordedRefs().empty());
  ExpectStoreConsistent();
}

TEST_F(CliTest, UnreachableRegistryFailsInBoundedTime) {
  int closed = FreePort();
  ProcessResult r = Imgfs({"pull", "127.0.0.1:" + std::to_string(closed) + "/x/y:1"}, {}, 60);
  ExpectOneLineError(r, "127.0.0.1:" + std::to_string(closed));
  EXPECT_LT(r.seconds, 30.0);
  EXPECT_TRUE(RecordedRefs().empty());
}

TEST_F(CliTest, LoginWithWrongAndRightCredentials) {
  ASSERT_NO_FATAL_FAILURE(StartRegistry("alice", "s3cret"));
  // Push needs credentials too.
  ImageBuilder builder(tmp_.Sub("auth-layout"));
  ASSERT_TRUE(builder.Add(SimpleImage({{"secret.txt", "42\n"}}), "1").has_value());
  ASSERT_TRUE(
      PushLayout(builder.dir(), "1", registry_->host_port() + "/priv/app:1", "alice:s3cret").ok());
  std::string ref = registry_->host_port() + "/priv/app:1";

  ProcessResult anon = Imgfs({"pull", ref});
  ExpectOneLineError(anon, registry_->host_port());
  ProcessResult wrong = Imgfs({"pull", "--creds", "alice:wrong", ref});
  ExpectOneLineError(wrong, registry_->host_port());
  EXPECT_TRUE(RecordedRefs().empty());

  ProcessResult bad_login =
      Imgfs({"login", "-u", "alice", "--password-stdin", registry_->host_port()}, "nope\n");
  ExpectOneLineError(bad_login, registry_->host_port());

  ProcessResult login =
      Imgfs({"login", "-u", "alice", "--password-stdin", registry_->host_port()}, "s3cret\n");
  ASSERT_EQ(login.exit_code, 0) << login.Describe();
  EXPECT_THAT(login.out, HasSubstr("Login Succeeded"));
  Result<std::string> config = ReadFile(tmp_.Sub("docker-config") + "/config.json");
  ASSERT_TRUE(config.has_value());
  EXPECT_THAT(*config, HasSubstr(registry_->host_port()));
  EXPECT_THAT(*config, Not(HasSubstr("s3cret")));  // base64'd, never plain

  ProcessResult pull = Imgfs({"pull", ref});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();

  ProcessResult logout = Imgfs({"logout", registry_->host_port()});
  ASSERT_EQ(logout.exit_code, 0) << logout.Describe();
  ASSERT_EQ(Imgfs({"rm", ref}).exit_code, 0);
  ProcessResult after = Imgfs({"pull", ref});
  ExpectOneLineError(after, registry_->host_port());
}

// A registry that cuts the layer download mid-blob, every time.
TEST_F(CliTest, ConnectionCutMidBlobLeavesNothingBehind) {
  ImageBuilder builder(tmp_.Sub("cut-layout"));
  Result<BuiltImage> img = builder.Add(SimpleImage({{"big.bin", std::string(200000, 'z')}}), "1");
  ASSERT_TRUE(img.has_value());
  std::string layer_path = "/v2/cut/app/blobs/" + img->layer_digests[0].String();
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/" || req.path == "/v2") {
      conn.Respond(200, {{"Docker-Distribution-API-Version", "registry/2.0"}}, "{}");
    } else if (req.path == "/v2/cut/app/manifests/1" ||
               req.path == "/v2/cut/app/manifests/" + img->manifest_digest.String()) {
      conn.Respond(200,
                   {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"},
                    {"Docker-Content-Digest", img->manifest_digest.String()}},
                   img->manifest);
    } else if (req.path.starts_with("/v2/cut/app/blobs/")) {
      std::string hex = req.path.substr(req.path.rfind(':') + 1);
      Result<std::string> blob = ReadFile(builder.dir() + "/blobs/sha256/" + hex);
      if (!blob.has_value()) {
        conn.Respond(404, {}, R"({"errors":[{"code":"BLOB_UNKNOWN"}]})");
      } else if (req.path == layer_path) {
        conn.RespondTruncated(200, {{"Content-Type", "application/octet-stream"}},
                              blob->substr(0, blob->size() / 3), blob->size());
      } else {
        conn.Respond(200, {{"Content-Type", "application/octet-stream"}}, *blob);
      }
    } else {
      conn.Respond(404, {}, "");
    }
  });
  ProcessResult r = Imgfs({"pull", server.host_port() + "/cut/app:1"}, {}, 90);
  ExpectOneLineError(r, "pulling " + server.host_port() + "/cut/app:1");
  EXPECT_TRUE(RecordedRefs().empty());
  ExpectStoreConsistent();
  EXPECT_FALSE(std::filesystem::exists(root_ + "/blobs/sha256/" + img->layer_digests[0].hex()));
}

// A scripted registry serving one image whose documents or blobs are broken in one way.
enum class Fault { kManifestNotJson, kArtifactConfig, kLayerWrongBytes };

class FaultRegistryTest : public CliTest, public ::testing::WithParamInterface<Fault> {};

TEST_P(FaultRegistryTest, BrokenRegistryAnswersAreRejectedCleanly) {
  ImageBuilder builder(tmp_.Sub("fault-layout"));
  Result<BuiltImage> img = builder.Add(SimpleImage({{"f.txt", std::string(5000, 'f')}}), "1");
  ASSERT_TRUE(img.has_value());
  std::string manifest = img->manifest;
  std::string expect;
  switch (GetParam()) {
    case Fault::kManifestNotJson:
      manifest = manifest.substr(0, manifest.size() / 2);
      expect = "JSON";
      break;
    case Fault::kArtifactConfig: {
      json m = json::parse(manifest);
      m["config"]["mediaType"] = "application/vnd.example.artifact.config+json";
      manifest = m.dump();
      expect = "media type";
      break;
    }
    case Fault::kLayerWrongBytes:
      expect = img->layer_digests[0].String();
      break;
  }
  registry::Digest manifest_digest = registry::Digest::Sha256Of(manifest);
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/" || req.path == "/v2") {
      conn.Respond(200, {}, "{}");
    } else if (req.path == "/v2/bad/app/manifests/1") {
      conn.Respond(200,
                   {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"},
                    {"Docker-Content-Digest", manifest_digest.String()}},
                   manifest);
    } else if (req.path.starts_with("/v2/bad/app/blobs/sha256:")) {
      std::string hex = req.path.substr(req.path.rfind(':') + 1);
      Result<std::string> blob = ReadFile(builder.dir() + "/blobs/sha256/" + hex);
      if (!blob.has_value()) {
        conn.Respond(404, {}, "");
        return;
      }
      if (GetParam() == Fault::kLayerWrongBytes && hex == img->layer_digests[0].hex()) {
        (*blob)[blob->size() / 2] ^= 0x55;
      }
      conn.Respond(200, {{"Content-Type", "application/octet-stream"}}, *blob);
    } else {
      conn.Respond(404, {}, "");
    }
  });
  ProcessResult r = Imgfs({"pull", server.host_port() + "/bad/app:1"}, {}, 90);
  ExpectOneLineError(r, "pulling " + server.host_port() + "/bad/app:1");
  EXPECT_THAT(r.err, HasSubstr(expect));
  EXPECT_TRUE(RecordedRefs().empty());
  ExpectStoreConsistent();
  EXPECT_FALSE(std::filesystem::exists(root_ + "/blobs/sha256/" + img->layer_digests[0].hex()));
}

INSTANTIATE_TEST_SUITE_P(Faults, FaultRegistryTest,
                         ::testing::Values(Fault::kManifestNotJson, Fault::kArtifactConfig,
                                           Fault::kLayerWrongBytes));

// `imgfs pull alpine` means docker.io/library/alpine:latest; without a way out (here: every
// HTTPS request goes to a proxy on a closed port) it fails cleanly and quickly.
TEST_F(CliTest, DockerHubPullFailsCleanlyOffline) {
  std::string proxy = "http://127.0.0.1:" + std::to_string(FreePort());
  ProcessResult r = RunImgfs(
      root_, {"pull", "alpine"},
      {"https_proxy=" + proxy, "HTTPS_PROXY=" + proxy, "http_proxy=" + proxy, "HTTP_PROXY=" + proxy,
       "no_proxy=", "NO_PROXY=", "DOCKER_CONFIG=" + tmp_.Sub("docker-config"),
       "XDG_RUNTIME_DIR=" + tmp_.Sub("xdg")},
      {}, 90);
  ExpectOneLineError(r, "pulling alpine:latest");
  EXPECT_THAT(r.err, HasSubstr("registry-1.docker.io"));
  EXPECT_LT(r.seconds, 60.0);
  EXPECT_TRUE(RecordedRefs().empty());
}

// On a terminal the progress is drawn as bars (run under script(1) for a pseudo-terminal).
TEST_F(CliTest, ProgressBarsOnATerminal) {
  ImageBuilder builder(tmp_.Sub("tty-layout"));
  ASSERT_TRUE(builder.Add(SimpleImage({{"a", "b"}}), "1").has_value());
  std::string cmd =
      std::string(kImgfsBinary) + " --root " + root_ + " pull oci:" + builder.dir() + ":1";
  ProcessResult r = RunProcess({"script", "-qec", cmd, "/dev/null"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("\x1b[2K"));  // lines are redrawn
  EXPECT_THAT(r.out, HasSubstr("Pull complete"));
}

// ---- local transports ----

TEST_F(CliTest, PullFromOciLayoutDockerArchiveAndOciArchive) {
  std::string fx = FixturesDir();
  ProcessResult oci = Imgfs({"pull", "oci:" + fx + "/tiny-gzip:latest"});
  ASSERT_EQ(oci.exit_code, 0) << oci.Describe();
  ProcessResult docker = Imgfs({"pull", "docker-archive:" + fx + "/tiny-docker-archive.tar"});
  ASSERT_EQ(docker.exit_code, 0) << docker.Describe();
  std::vector<std::string> refs = RecordedRefs();
  EXPECT_THAT(refs, ::testing::Contains("localhost/fixtures/tiny:latest"));

  // An oci-archive made here: a tar of a small layout.
  ImageBuilder builder(tmp_.Sub("arch-layout"));
  Result<BuiltImage> img = builder.Add(SimpleImage({{"in-archive.txt", "yes\n"}}), "v1");
  ASSERT_TRUE(img.has_value());
  ProcessResult tar = RunProcess({"tar", "-C", builder.dir(), "-cf", tmp_.Sub("img.tar"), "."});
  ASSERT_EQ(tar.exit_code, 0) << tar.Describe();
  ProcessResult arch = Imgfs({"pull", "oci-archive:" + tmp_.Sub("img.tar") + ":v1"});
  ASSERT_EQ(arch.exit_code, 0) << arch.Describe();
  ProcessResult ids = Imgfs({"images", "-q", "--no-trunc"});
  EXPECT_THAT(ids.out, HasSubstr(img->config_digest.String()));
  ExpectStoreConsistent();
}

TEST_F(CliTest, CorruptLocalInputsAreRejectedCleanly) {
  std::string fx = FixturesDir();
  ProcessResult not_json = Imgfs({"pull", "oci:" + fx + "/corrupt/manifest-not-json:latest"});
  ExpectOneLineError(not_json, "pulling");
  ProcessResult mismatch = Imgfs({"pull", "oci:" + fx + "/corrupt/layer-digest-mismatch:latest"});
  ExpectOneLineError(mismatch, "pulling");
  EXPECT_THAT(mismatch.err, HasSubstr("sha256:"));

  std::string not_tar = tmp_.Sub("not-a.tar");
  std::ofstream(not_tar) << "this is not a tar archive at all\n";
  ProcessResult bad_archive = Imgfs({"pull", "docker-archive:" + not_tar});
  ExpectOneLineError(bad_archive, not_tar);

  ProcessResult missing = Imgfs({"pull", "oci:" + tmp_.Sub("does-not-exist") + ":x"});
  ExpectOneLineError(missing, "does-not-exist");

  EXPECT_TRUE(RecordedRefs().empty());
  ExpectStoreConsistent();
}

}  // namespace
}  // namespace imgfs::testing
