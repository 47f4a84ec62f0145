// Hostile registries and credential leaks (issue 9, "Credentials go only where they belong";
// security review 2026-12 findings #4, #10, #12, #15, #17, #18, #19, #21).
//
// Scripted servers (tests/support/http_test_server.h) play the registry where a real one
// cannot misbehave the way a test needs; a real docker-registry where it can. Everything
// listens on 127.0.0.1.
//
// Same host, two schemes: a TlsFront (tests/support/tls_front.h) puts a scripted https
// registry and a recording plain-http listener on ONE host:port. The registry is addressed
// as `reg.localhost:PORT`: libcurl (>= 7.78) resolves every *.localhost name to loopback
// itself, while imgfs's loopback check deliberately does not count *.localhost as loopback
// (glibc sends such names to DNS). So to imgfs it is an ordinary TLS registry for which plain
// HTTP is not allowed, and the connection still stays on 127.0.0.1.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/store.h"
#include "fs/image_ops/pull.h"
#include "registry/credentials.h"
#include "registry/digest.h"
#include "registry/push.h"
#include "registry/reference.h"
#include "registry/remote_source.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/tls_front.h"

namespace imgfs::testing {
namespace {

using registry::Credential;
using registry::Digest;
using registry::RemoteSource;
using registry::RemoteSourceOptions;

constexpr char kUser[] = "alice";
constexpr char kPassword[] = "s3cret-hostile-pw";
const std::string kFixtures = IMGFS_FIXTURES_DIR;
const std::string kImgfs = IMGFS_BINARY;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A self-signed certificate for reg.localhost and 127.0.0.1 (trusted as its own CA).
struct SelfSigned {
  std::string cert;
  std::string key;
};

Result<SelfSigned> MakeSelfSigned(const TempDir& dir) {
  SelfSigned out{dir.Sub("reg.crt"), dir.Sub("reg.key")};
  ProcessResult r =
      RunProcess({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", out.key, "-out", out.cert, "-days", "2", "-subj",
                  "/CN=reg.localhost", "-addext", "subjectAltName=DNS:reg.localhost,IP:127.0.0.1"});
  if (r.exit_code != 0) return Status::Internal("openssl req: " + r.Describe());
  return out;
}

// A scripted https registry and a recording plain-http listener on one host:port.
class TwoFacedRegistry {
 public:
  explicit TwoFacedRegistry(HttpTestServer::Handler tls_handler)
      : tls_side_(std::move(tls_handler)),
        plain_side_([](const HttpTestRequest& req, HttpTestConnection& conn) {
          // Whatever arrives in clear text is recorded; answer like storage would.
          if (req.method == "PUT") return conn.Respond(201);
          if (req.method == "PATCH") return conn.Respond(202);
          conn.Respond(200, {}, kBlob);
        }) {}

  Status Start() {
    IMGFS_ASSIGN_OR_RETURN(pki_, MakeSelfSigned(dir_));
    IMGFS_ASSIGN_OR_RETURN(
        front_, TlsFront::Start(pki_.cert, pki_.key, tls_side_.port(), plain_side_.port()));
    return Status::Ok();
  }

  // "reg.localhost:PORT"
  std::string host() const { return "reg.localhost:" + std::to_string(front_->port()); }
  const std::string& ca_file() const { return pki_.cert; }
  const std::string& key_file() const { return pki_.key; }
  HttpTestServer& tls_side() { return tls_side_; }
  HttpTestServer& plain_side() { return plain_side_; }

  RemoteSourceOptions RemoteOptions() const {
    RemoteSourceOptions o;
    o.tls.ca_files = {pki_.cert};
    o.certs_dir = "";
    o.credential = Credential{kUser, kPassword, ""};
    o.max_attempts = 1;
    o.connect_timeout = std::chrono::milliseconds(3000);
    o.request_timeout = std::chrono::milliseconds(10000);
    return o;
  }

  // Requests the plain-http side received with an Authorization header.
  size_t PlainRequestsWithAuthorization() const {
    size_t n = 0;
    for (const HttpTestRequest& r : plain_side_.requests()) n += r.HasHeader("authorization");
    return n;
  }
  size_t TlsRequestsWithAuthorization() const {
    size_t n = 0;
    for (const HttpTestRequest& r : tls_side_.requests()) n += r.HasHeader("authorization");
    return n;
  }

  static constexpr char kBlob[] = "hello, blob behind a redirect";

 private:
  TempDir dir_;
  SelfSigned pki_;
  HttpTestServer tls_side_;
  HttpTestServer plain_side_;
  std::unique_ptr<TlsFront> front_;
};

// Answers 401 Basic until the request carries credentials, then calls `then`.
HttpTestServer::Handler WithBasicAuth(HttpTestServer::Handler then) {
  return [then](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    if (!req.HasHeader("authorization")) {
      return conn.Respond(401, {{"WWW-Authenticate", "Basic realm=\"imgfs-test\""}});
    }
    then(req, conn);
  };
}

void CheckCurlResolvesLocalhostNames() {
  // The premise of TwoFacedRegistry: libcurl resolves reg.localhost without DNS.
  HttpTestServer probe([](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200); });
  registry::HttpClient http;
  registry::HttpRequest req;
  req.url = "http://reg.localhost:" + std::to_string(probe.port()) + "/";
  req.total_timeout = std::chrono::milliseconds(5000);
  Result<registry::HttpResponse> r = http.Do(req);
  ASSERT_TRUE(r.has_value()) << "libcurl does not resolve *.localhost to loopback: "
                             << r.error().ToString();
}

// #4: a registry spoken to over https redirects a blob GET to http:// on its own host and
// port. The redirect is followed (the blob is verified by digest) but without credentials.
// Before: "same host" compared host[:port] only, so the Basic password went to port P in
// clear text and the plain listener recorded it.
TEST(SecRegistryTest, PullRedirectToPlainHttpOnTheSameHostCarriesNoAuthorization) {
  CheckCurlResolvesLocalhostNames();
  std::atomic<int> port{0};
  TwoFacedRegistry reg(WithBasicAuth([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path.starts_with("/v2/demo/app/blobs/")) {
      return conn.Respond(307, {{"Location", "http://reg.localhost:" + std::to_string(port.load()) +
                                                 "/v2/demo/app/blobs/storage"}});
    }
    conn.Respond(404);
  }));
  ASSERT_TRUE(reg.Start().ok());
  port = std::stoi(reg.host().substr(reg.host().rfind(':') + 1));

  auto source = RemoteSource::Create(reg.host(), "demo/app", reg.RemoteOptions());
  const std::string blob = TwoFacedRegistry::kBlob;
  std::string got;
  Status st = source->FetchBlob(Digest::Sha256Of(blob), static_cast<int64_t>(blob.size()),
                                [&](std::string_view chunk) {
                                  got.append(chunk);
                                  return Status::Ok();
                                });
  EXPECT_GT(reg.TlsRequestsWithAuthorization(), 0u) << "the registry itself got credentials";
  ASSERT_GT(reg.plain_side().requests().size(), 0u) << "the redirect was followed";
  EXPECT_EQ(reg.PlainRequestsWithAuthorization(), 0u)
      << "credentials went over plain http after an https -> http redirect";
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, blob);
}

// #16: the registry's certs.d material (here: the CA that signed its certificate) is for the
// registry's own host and port only. A token realm on another host whose certificate the
// same CA signed is not trusted through certs.d: the token request fails TLS verification
// and never reaches the token server. Before, the registry's TLS options (certs.d CAs and
// client certificate) went to every token server and redirect target.
TEST(SecRegistryTest, CertsDirMaterialIsOnlyForTheRegistryHost) {
  CheckCurlResolvesLocalhostNames();
  HttpTestServer token_server([](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.Respond(200, {{"Content-Type", "application/json"}}, R"({"token":"t0k3n"})");
  });
  std::atomic<int> token_port{0};
  TwoFacedRegistry reg([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.Respond(401, {{"WWW-Authenticate",
                        "Bearer realm=\"https://127.0.0.1:" + std::to_string(token_port.load()) +
                            "/token\",service=\"imgfs-test\""}});
  });
  ASSERT_TRUE(reg.Start().ok());
  // The token server sits behind TLS with the same certificate (valid for 127.0.0.1).
  Result<std::unique_ptr<TlsFront>> token_front =
      TlsFront::Start(reg.ca_file(), reg.key_file(), token_server.port(), token_server.port());
  ASSERT_TRUE(token_front.has_value()) << token_front.error().ToString();
  token_port = (*token_front)->port();

  TempDir certs;
  const std::string host_dir = certs.Sub(reg.host());
  ASSERT_TRUE(MakeDirs(host_dir).ok());
  std::filesystem::copy_file(reg.ca_file(), host_dir + "/ca.crt");
  RemoteSourceOptions o = reg.RemoteOptions();
  o.tls.ca_files.clear();  // trust comes from certs.d/<reg.localhost:PORT>/ca.crt only
  o.certs_dir = certs.path();
  auto source = RemoteSource::Create(reg.host(), "demo/app", o);
  Result<registry::FetchedManifest> m = source->GetManifest("1");
  ASSERT_FALSE(m.has_value());
  EXPECT_TRUE(Contains(m.error().message(), "TLS verification failed")) << m.error().ToString();
  EXPECT_EQ(token_server.requests().size(), 0u)
      << "the registry's certs.d CA was trusted for another host";
  EXPECT_GT(reg.tls_side().requests().size(), 0u) << "certs.d is used for the registry itself";
}

// In-memory blobs for the Pusher.
class MemoryReader : public registry::PushBlobReader {
 public:
  explicit MemoryReader(std::string data) : data_(std::move(data)) {}
  bool Has(const Digest&) override { return true; }
  Result<std::string> ReadAt(const Digest&, uint64_t offset, size_t length) override {
    if (offset >= data_.size()) return std::string();
    return data_.substr(offset, length);
  }

 private:
  std::string data_;
};

// #4 on push: the registry (over https) hands out an upload Location on http:// of its own
// host and port (a TLS proxy without X-Forwarded-Proto). Before: the PUT went there with the
// Basic password. Now the upload is refused with an error naming the downgrade, and nothing
// reaches the plain listener.
TEST(SecRegistryTest, PushUploadLocationOnPlainHttpIsRefusedWithoutSendingCredentials) {
  CheckCurlResolvesLocalhostNames();
  std::atomic<int> port{0};
  TwoFacedRegistry reg(WithBasicAuth([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.method == "HEAD" && req.path.starts_with("/v2/demo/app/blobs/")) {
      return conn.Respond(404);
    }
    if (req.method == "POST" && req.path == "/v2/demo/app/blobs/uploads/") {
      return conn.Respond(202, {{"Location", "http://reg.localhost:" + std::to_string(port.load()) +
                                                 "/v2/demo/app/blobs/uploads/u1"}});
    }
    conn.Respond(500);
  }));
  ASSERT_TRUE(reg.Start().ok());
  port = std::stoi(reg.host().substr(reg.host().rfind(':') + 1));

  registry::PushOptions options;
  options.tls.ca_files = {reg.ca_file()};
  options.certs_dir = "";
  options.credential = Credential{kUser, kPassword, ""};
  options.max_attempts = 1;
  registry::Pusher pusher(reg.host(), "demo/app", options);
  const std::string data = "layer bytes to push";
  registry::Descriptor blob;
  blob.media_type = "application/vnd.oci.image.layer.v1.tar";
  blob.digest = Digest::Sha256Of(data);
  blob.size = static_cast<int64_t>(data.size());
  MemoryReader reader(data);
  registry::PushProgress progress;
  registry::PushReport report;
  Status st = pusher.PushBlob(blob, {}, reader, {}, &progress, &report);
  EXPECT_GT(reg.TlsRequestsWithAuthorization(), 0u);
  EXPECT_EQ(reg.PlainRequestsWithAuthorization(), 0u)
      << "credentials went over plain http to an upload Location";
  EXPECT_EQ(reg.plain_side().requests().size(), 0u) << "the upload went over plain http";
  EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "plain-http")) << st.ToString();
}

// #10: a registry spoken to over TLS names a plain-http token realm: one whose name merely
// starts with "127." (the old private loopback check accepted it) and one on the registry's
// own host (accepted before as "the registry's host"). Both are refused before any token
// request; the credentials never travel in clear text.
TEST(SecRegistryTest, PlainHttpTokenRealmOfATlsRegistryIsRefused) {
  CheckCurlResolvesLocalhostNames();
  std::atomic<int> port{0};
  std::atomic<int> which{0};
  TwoFacedRegistry reg([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    const std::string realm =
        which.load() == 0 ? "http://127.0.0.1.example/token"
                          : "http://reg.localhost:" + std::to_string(port.load()) + "/token";
    conn.Respond(401,
                 {{"WWW-Authenticate", "Bearer realm=\"" + realm + "\",service=\"imgfs-test\""}});
  });
  ASSERT_TRUE(reg.Start().ok());
  port = std::stoi(reg.host().substr(reg.host().rfind(':') + 1));

  for (int i = 0; i < 2; ++i) {
    which = i;
    auto source = RemoteSource::Create(reg.host(), "demo/app", reg.RemoteOptions());
    Result<registry::FetchedManifest> m = source->GetManifest("1");
    ASSERT_FALSE(m.has_value()) << "realm " << i;
    EXPECT_EQ(m.error().code(), StatusCode::kPermissionDenied) << m.error().ToString();
    EXPECT_TRUE(Contains(m.error().message(), "plain-http")) << m.error().ToString();
  }
  EXPECT_EQ(reg.plain_side().requests().size(), 0u) << "a token request went over plain http";
}

// #10: `imgfs login` to an --insecure-registry that speaks TLS uses TLS. Before, CheckLogin
// went straight to http:// for loopback and insecure hosts: the TLS registry answered 400
// (and a plain-http listener would have received the password).
TEST(SecRegistryTest, LoginToAnInsecureRegistryThatSpeaksTlsUsesTls) {
  RegistryServerOptions ro;
  ro.tls = true;
  ro.htpasswd_user = kUser;
  ro.htpasswd_password = kPassword;
  auto reg = RegistryServer::Start(ro);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  fs::PullOptions options;
  options.insecure_registries = {(*reg)->host_port()};
  options.ca_files = {(*reg)->ca_file()};
  Status ok = fs::CheckLogin((*reg)->host_port(), Credential{kUser, kPassword, ""}, options);
  EXPECT_TRUE(ok.ok()) << ok.ToString();
  Status bad = fs::CheckLogin((*reg)->host_port(), Credential{kUser, "wrong", ""}, options);
  EXPECT_EQ(bad.code(), StatusCode::kPermissionDenied) << bad.ToString();
  EXPECT_FALSE(Contains(bad.ToString(), kPassword));
}

// #12: /tags/list answers with tags that are not tags. They are skipped (with a log line);
// the valid ones are kept. Before, every string was returned and became a request path and
// an index.json name.
TEST(SecRegistryTest, InvalidTagsFromTagsListAreSkipped) {
  const std::vector<std::string> hostile = {
      "../x",  "a/b",  "..", "ok?x=1", "\x1b[31mred",        "line\nbreak",
      "-lead", ".dot", "",   "tab\t",  std::string(129, 'a')};
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    if (req.path == "/v2/demo/app/tags/list") {
      nlohmann::json tags = nlohmann::json::array({"1.0", "latest"});
      for (const std::string& t : hostile) tags.push_back(t);
      return conn.Respond(200, {{"Content-Type", "application/json"}},
                          nlohmann::json{{"name", "demo/app"}, {"tags", tags}}.dump());
    }
    conn.Respond(404);
  });
  RemoteSourceOptions o;
  o.certs_dir = "";
  o.max_attempts = 1;
  auto source = RemoteSource::Create(server.host_port(), "demo/app", o);
  Result<std::vector<std::string>> tags = source->ListTags();
  ASSERT_TRUE(tags.has_value()) << tags.error().ToString();
  EXPECT_EQ(*tags, (std::vector<std::string>{"1.0", "latest"}));

  Result<registry::Reference> ref = registry::Reference::Parse(server.host_port() + "/demo/app");
  ASSERT_TRUE(ref.has_value());
  for (const std::string& t : hostile) {
    Result<registry::Reference> tagged = ref->WithTag(t);
    EXPECT_FALSE(tagged.has_value()) << "WithTag accepted a hostile tag";
    if (!tagged.has_value()) {
      EXPECT_EQ(tagged.error().message().find('\x1b'), std::string::npos)
          << "the error message carries a raw escape character";
    }
  }
}

// #18: a 206 whose Content-Range numbers have 25 digits. Before, ContentRangeStart
// accumulated them in an int64_t (signed overflow: undefined behaviour, flagged by UBSan);
// in practice it wrapped to 2003764205206896640, the bytes fell outside the asked range and
// ReadBlobRange returned "" as a success. Now it is Corrupt naming the 19-digit bound.
TEST(SecRegistryTest, ContentRangeWithHugeNumbersIsAClearError) {
  const std::string huge = "1000000000000000000000000";  // 25 digits
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.Respond(206, {{"Content-Range", "bytes " + huge + "-" + huge.substr(0, 24) + "9/" + huge}},
                 "0123456789");
  });
  RemoteSourceOptions o;
  o.certs_dir = "";
  o.max_attempts = 1;
  auto source = RemoteSource::Create(server.host_port(), "demo/app", o);
  const Digest d = Digest::Sha256Of("whatever");
  Result<std::string> r = source->ReadBlobRange(d, ByteRange{0, 10});
  ASSERT_FALSE(r.has_value()) << "accepted Content-Range " << huge;
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << r.error().ToString();
  EXPECT_TRUE(Contains(r.error().message(), "19 digits")) << r.error().ToString();

  Status streamed =
      source->StreamBlobRange(d, ByteRange{0, 10}, [](std::string_view) { return Status::Ok(); });
  EXPECT_EQ(streamed.code(), StatusCode::kCorrupt) << streamed.ToString();
  EXPECT_TRUE(Contains(streamed.message(), "19 digits")) << streamed.ToString();
}

// #19: a credential helper that closes its stdout and keeps running. Before, the EOF ended
// the read loop and waitpid() then blocked until the helper chose to exit (20 s here, forever
// in general). Now the deadline covers the exit too and the process group is killed.
TEST(SecRegistryTest, CredentialHelperThatClosesStdoutAndSleepsIsBounded) {
  TempDir dir;
  const std::string helper = dir.Sub("docker-credential-stuck");
  {
    std::ofstream out(helper);
    out << "#!/bin/sh\nexec >&-\nsleep 20\n";
  }
  ASSERT_EQ(chmod(helper.c_str(), 0755), 0);
  {
    std::ofstream out(dir.Sub("config.json"));
    out << R"({"credHelpers": {"reg.example.com": "stuck"}})";
  }
  registry::CredentialStoreOptions o;
  o.docker_config_path = dir.Sub("config.json");
  o.helper_dir = dir.path();
  o.helper_timeout = std::chrono::milliseconds(1000);
  registry::CredentialStore store(o);
  const auto start = std::chrono::steady_clock::now();
  Result<std::optional<Credential>> got = store.Lookup("reg.example.com");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(5)) << "the helper wait was not bounded";
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kUnavailable) << got.error().ToString();
  EXPECT_TRUE(Contains(got.error().message(), "timed out")) << got.error().ToString();
}

// #15: manifests whose config or layer descriptors have no usable size. Before, size 0 meant
// "unknown, unlimited" and the config was downloaded (to disk) before anything refused it;
// now the manifest is refused before any blob request.
TEST(SecRegistryTest, SizelessOrHugeConfigDescriptorsAreRefusedBeforeAnyDownload) {
  const std::string config =
      R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
  const Digest config_digest = Digest::Sha256Of(config);
  std::atomic<int64_t> config_size{0};
  std::atomic<int64_t> layer_size{100};
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    if (req.path == "/v2/demo/app/manifests/1") {
      nlohmann::json m = {{"schemaVersion", 2},
                          {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                          {"config",
                           {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                            {"digest", config_digest.String()},
                            {"size", config_size.load()}}},
                          {"layers",
                           {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                             {"digest", Digest::Sha256Of("layer").String()},
                             {"size", layer_size.load()}}}}};
      return conn.Respond(200, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}},
                          m.dump());
    }
    if (req.path.starts_with("/v2/demo/app/blobs/")) return conn.Respond(200, {}, config);
    conn.Respond(404);
  });
  TempDir dir;
  auto store = cache::Store::Open(dir.Sub("store"));
  ASSERT_TRUE(store.has_value()) << store.error().ToString();
  fs::PullOptions options;
  options.max_attempts = 1;
  struct Case {
    int64_t config;
    int64_t layer;
    std::string expect;
  };
  const std::vector<Case> cases = {{0, 100, "must be > 0"},
                                   {-1, 100, "size"},
                                   {(8 << 20) + 1, 100, "kMaxConfigBytes"},
                                   {int64_t{1} << 60, 100, "kMaxConfigBytes"},
                                   {static_cast<int64_t>(config.size()), 0, "must be > 0"}};
  for (const Case& c : cases) {
    config_size = c.config;
    layer_size = c.layer;
    fs::Puller puller(store->get(), options);
    Result<std::vector<fs::PulledImage>> pulled = puller.Pull(server.host_port() + "/demo/app:1");
    ASSERT_FALSE(pulled.has_value()) << "config size " << c.config << ", layer size " << c.layer;
    EXPECT_EQ(pulled.error().code(), StatusCode::kCorrupt) << pulled.error().ToString();
    EXPECT_TRUE(Contains(pulled.error().message(), c.expect)) << pulled.error().ToString();
    EXPECT_EQ(server.Count("GET", "/v2/demo/app/blobs/"), 0u)
        << "a blob was downloaded for config size " << c.config << ", layer size " << c.layer;
  }
}

// #21: a registry trickling a blob at 20 bytes/s. Before, the only floor was 1 byte/s and the
// download went on for as long as the registry liked (10 s here, days for a real layer);
// now it fails once it stays below the minimum rate for low_speed_time.
TEST(SecRegistryTest, TricklingRegistryFailsWithinTheMinimumRateWindow) {
  const std::string blob(200, 'x');
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.WriteRaw("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(blob.size()) + "\r\n\r\n");
    for (size_t i = 0; i < blob.size() && !conn.closed(); ++i) {
      conn.WriteRaw(blob.substr(i, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  RemoteSourceOptions o;
  o.certs_dir = "";
  o.max_attempts = 1;
  o.low_speed_time = std::chrono::seconds(2);
  auto source = RemoteSource::Create(server.host_port(), "demo/app", o);
  const auto start = std::chrono::steady_clock::now();
  Status st = source->FetchBlob(Digest::Sha256Of(blob), static_cast<int64_t>(blob.size()),
                                [](std::string_view) { return Status::Ok(); });
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_LT(took, std::chrono::seconds(8)) << "the trickle was not cut";
}

// #17: `imgfs mount --creds USER:PASS` daemonises with fork(): the daemon kept the password
// in /proc/PID/cmdline, readable by every local user for the life of the mount. Now the
// secret part is overwritten in the process's argument memory right after parsing.
TEST(SecRegistryTest, MountDaemonCmdlineDoesNotShowThePassword) {
  ASSERT_EQ(access("/dev/fuse", R_OK | W_OK), 0) << "/dev/fuse is needed for mount tests";
  ASSERT_EQ(geteuid(), 0u) << "mount tests run as root";
  RegistryServerOptions ro;
  ro.htpasswd_user = kUser;
  ro.htpasswd_password = kPassword;
  auto reg = RegistryServer::Start(ro);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  PushOptions push;
  push.creds = std::string(kUser) + ":" + kPassword;
  ASSERT_TRUE((*reg)->PushOciLayout(kFixtures + "/tiny-gzip", "latest", "demo/tiny:1", push).ok());

  TempDir dir;
  const std::string mnt = dir.Sub("mnt");
  ASSERT_TRUE(MakeDirs(mnt).ok());
  const std::vector<std::string> env = {"IMGFS_ROOT=" + dir.Sub("store")};
  ProcessResult r = RunProcess({kImgfs, "mount", "--creds", std::string(kUser) + ":" + kPassword,
                                (*reg)->host_port() + "/demo/tiny:1", mnt},
                               env);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(IsMounted(mnt));
  // Every imgfs process serving this mountpoint (the daemon) and what `ps` shows of it.
  std::vector<std::string> cmdlines;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadAll(e.path().string() + "/cmdline");
    if (Contains(cmdline, mnt) && Contains(cmdline, "mount")) cmdlines.push_back(cmdline);
  }
  ProcessResult ps = RunProcess({"ps", "-eo", "args"});
  RunProcess({kImgfs, "umount", mnt}, env);
  if (IsMounted(mnt)) RunProcess({"umount", "-l", mnt});
  ASSERT_FALSE(cmdlines.empty()) << "no daemon found for " << mnt;
  for (const std::string& c : cmdlines) {
    EXPECT_FALSE(Contains(c, kPassword)) << "the password is in /proc/PID/cmdline";
    EXPECT_TRUE(Contains(c, std::string(kUser) + ":")) << "the user name stays visible";
  }
  EXPECT_FALSE(Contains(ps.out, kPassword)) << "ps shows the password";

  // --creds-stdin: the secret never reaches the command line at all.
  r = RunProcess({kImgfs, "mount", "--creds-stdin", (*reg)->host_port() + "/demo/tiny:1", mnt}, env,
                 std::string(kUser) + ":" + kPassword + "\n");
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  if (IsMounted(mnt)) {
    RunProcess({kImgfs, "umount", mnt}, env);
    if (IsMounted(mnt)) RunProcess({"umount", "-l", mnt});
  }
}

}  // namespace
}  // namespace imgfs::testing
