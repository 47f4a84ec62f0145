// imgfs — RegistrySession: the one HTTP status → Status mapping (a scripted server, for
// answers a real registry does not give on demand), Retry-After honoured by push as by pull,
// certs.d used by push against a real TLS docker-registry, one session shared by a
// RemoteSource and a Pusher, and the scheme decided by the first request itself (no /v2/
// probe before a manifest GET or blob HEAD; uploads still probe).
#include "registry/session.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/push.h"
#include "registry/remote_source.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/registry_server.h"
#include "tests/support/temp_dir.h"

namespace imgfs::testing {
namespace {

using registry::ConnectionOptions;
using registry::Digest;
using registry::RegistrySession;

ConnectionOptions Fast() {
  ConnectionOptions o;
  o.certs_dir = "";
  o.connect_timeout = std::chrono::milliseconds(3000);
  o.request_timeout = std::chrono::milliseconds(10000);
  o.max_attempts = 2;
  o.base_backoff = std::chrono::milliseconds(1);
  o.max_backoff = std::chrono::milliseconds(5000);
  return o;
}

// What GET /v2/demo/app/x turns into when the server answers `status` with `body`.
Status MappedStatus(int status, const std::string& body) {
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.Respond(status, {{"Content-Type", "application/json"}}, body);
  });
  RegistrySession session(server.host_port(), Fast());
  RegistrySession::Call call;
  call.path = "/v2/demo/app/x";
  call.what = "GET x";
  call.where = "registry " + server.host_port();
  call.authenticate = false;  // a 401 here is an answer, not a challenge to take up
  Result<registry::HttpResponse> resp = session.Execute(call);
  if (!resp.has_value()) return resp.error();
  return session.HttpError(*resp, call.what, call.where);
}

std::string ErrorBody(const std::string& code, const std::string& message) {
  return R"({"errors":[{"code":")" + code + R"(","message":")" + message + R"("}]})";
}

TEST(RegistrySessionTest, OneStatusMappingForEveryCaller) {
  struct Case {
    int status;
    std::string body;
    StatusCode want;
  };
  const Case cases[] = {
      {401, ErrorBody("UNAUTHORIZED", "authentication required"), StatusCode::kPermissionDenied},
      {403, ErrorBody("DENIED", "requested access to the resource is denied"),
       StatusCode::kPermissionDenied},
      {404, ErrorBody("MANIFEST_UNKNOWN", "manifest unknown"), StatusCode::kNotFound},
      {400, ErrorBody("DIGEST_INVALID", "provided digest did not match"), StatusCode::kCorrupt},
      {400, ErrorBody("SIZE_INVALID", "provided length did not match"), StatusCode::kCorrupt},
      {400, ErrorBody("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry"), StatusCode::kNotFound},
      {400, ErrorBody("MANIFEST_INVALID", "manifest invalid"), StatusCode::kInvalidArgument},
      {409, "", StatusCode::kInvalidArgument},
      {405, ErrorBody("UNSUPPORTED", "The operation is unsupported."), StatusCode::kUnsupported},
      {501, "", StatusCode::kUnavailable},  // 5xx is transient unless the caller says otherwise
      {503, "", StatusCode::kUnavailable},
      {429, ErrorBody("TOOMANYREQUESTS", "slow down"), StatusCode::kUnavailable},
      {300, "", StatusCode::kUnsupported},
  };
  for (const Case& c : cases) {
    Status st = MappedStatus(c.status, c.body);
    EXPECT_EQ(st.code(), c.want) << c.status << " " << c.body << " → " << st.ToString();
    EXPECT_NE(st.message().find("HTTP " + std::to_string(c.status)), std::string::npos)
        << st.ToString();
  }
  Status unauthorized = MappedStatus(401, "");
  EXPECT_NE(unauthorized.message().find("imgfs login 127.0.0.1:"), std::string::npos)
      << unauthorized.ToString();
  Status gave_up = MappedStatus(503, "");
  EXPECT_NE(gave_up.message().find("gave up after 2 attempts"), std::string::npos)
      << gave_up.ToString();
}

TEST(RegistrySessionTest, HostileErrorBodiesAreCutAndDefanged) {
  const std::string flood(100000, 'A');
  Status st = MappedStatus(400, ErrorBody("BAD", "\\u001b[31mred\\n" + flood));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_LT(st.message().size(), RegistrySession::kMaxErrorDetailBytes + 200) << st.message();
  EXPECT_EQ(st.message().find('\x1b'), std::string::npos) << "a terminal escape got through";
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
}

// A 503 with Retry-After: 1 to the push's HEAD: the retry waits that second, as pulls do
// (base_backoff alone would retry after 1 ms).
TEST(RegistrySessionTest, PushHonoursRetryAfter) {
  std::atomic<int> heads{0};
  HttpTestServer server([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    if (req.method == "HEAD" && ++heads == 1) {
      return conn.Respond(503, {{"Retry-After", "1"}});
    }
    conn.Respond(200, {{"Content-Length", "3"}}, "abc", /*head_only=*/true);
  });
  registry::PushOptions options;
  static_cast<ConnectionOptions&>(options) = Fast();
  registry::Pusher pusher(server.host_port(), "demo/app", options);
  const auto start = std::chrono::steady_clock::now();
  Result<bool> present = pusher.HasBlob(Digest::Sha256Of("abc"));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(present.has_value()) << present.error().ToString();
  EXPECT_TRUE(*present);
  EXPECT_EQ(heads.load(), 2);
  EXPECT_GE(took, std::chrono::milliseconds(950)) << "Retry-After was not honoured";
}

// docker's certs.d/<host:port>/ca.crt makes a TLS registry trusted for push as for pull; one
// session then serves a Pusher and a RemoteSource (one scheme decision, one token cache).
TEST(RegistrySessionTest, PushUsesCertsDirAndSharesTheSessionWithPull) {
  RegistryServerOptions tls_options;
  tls_options.tls = true;
  auto reg = RegistryServer::Start(tls_options);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  TempDir certs;
  const std::string host_dir = certs.path() + "/" + (*reg)->host_port();
  ASSERT_TRUE(MakeDirs(host_dir).ok());
  std::filesystem::copy_file((*reg)->ca_file(), host_dir + "/ca.crt");

  const std::string blob = "pushed through certs.d";
  registry::Descriptor desc;
  desc.media_type = "application/vnd.oci.image.layer.v1.tar";
  desc.digest = Digest::Sha256Of(blob);
  desc.size = static_cast<int64_t>(blob.size());
  class OneBlob : public registry::PushBlobReader {
   public:
    explicit OneBlob(const std::string& data) : data_(data) {}
    bool Has(const Digest&) override { return true; }
    Result<std::string> ReadAt(const Digest&, uint64_t offset, size_t length) override {
      return offset >= data_.size() ? std::string() : data_.substr(offset, length);
    }

   private:
    const std::string& data_;
  } reader(blob);

  // Without certs.d the registry's certificate is not trusted.
  registry::PushOptions untrusted;
  static_cast<ConnectionOptions&>(untrusted) = Fast();
  Result<bool> refused =
      registry::Pusher((*reg)->host_port(), "me/app", untrusted).HasBlob(desc.digest);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable) << refused.error().ToString();

  ConnectionOptions trusted = Fast();
  trusted.certs_dir = certs.path();
  auto session = std::make_shared<RegistrySession>((*reg)->host_port(), trusted);
  registry::Pusher pusher(session, "me/app", registry::PushOptions{});
  registry::PushProgress progress;
  registry::PushReport report;
  Status pushed = pusher.PushBlob(desc, {}, reader, {}, &progress, &report);
  ASSERT_TRUE(pushed.ok()) << pushed.ToString();
  EXPECT_EQ(report.blobs_uploaded, 1);
  EXPECT_EQ(session->KnownBaseUrl(), "https://" + (*reg)->host_port());

  std::unique_ptr<registry::RemoteSource> source =
      registry::RemoteSource::Create(session, "me/app");
  Result<std::string> back = source->ReadBlobRange(desc.digest, ByteRange{0, blob.size()});
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, blob);
}

// ---------------------------------------------------------------------------------------
// The scheme of a loopback registry (plain http allowed), decided by the first request.

// The registry's accesses from index `from` on, once one of them is a GET of `path` (it
// writes its log a moment after answering), at most 5 s later.
std::vector<RegistryAccess> AccessesUpTo(const RegistryServer& reg, size_t from,
                                         const std::string& path) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (true) {
    std::vector<RegistryAccess> all = reg.Accesses();
    std::vector<RegistryAccess> out(
        all.begin() + static_cast<std::ptrdiff_t>(std::min(from, all.size())), all.end());
    for (const RegistryAccess& a : out) {
      if (a.method == "GET" && a.path == path) return out;
    }
    if (std::chrono::steady_clock::now() >= deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// A plain-http docker-registry behind a recording proxy: the first manifest GET, sent over
// https and http at once, decides http and is the answer; no GET /v2/ goes before it. A 404
// with distribution's marks decides as well as a 200.
TEST(RegistrySessionSchemeTest, FirstManifestGetDecidesPlainHttpWithoutAProbe) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  TempDir layout;
  ImageBuilder builder(layout.path() + "/oci");
  ASSERT_TRUE(builder.Add(SimpleImage({{"f", "plain"}}), "latest").has_value());
  ASSERT_TRUE((*reg)->PushOciLayout(builder.dir(), "latest", "demo/app:1").ok());
  HttpTestServer proxy(ProxyHandler((*reg)->url(), std::make_shared<ProxyStats>()));

  auto session = std::make_shared<RegistrySession>(proxy.host_port(), Fast());
  Result<registry::FetchedManifest> m =
      registry::RemoteSource::Create(session, "demo/app")->GetManifest("1");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(session->KnownBaseUrl(), proxy.url());

  auto fresh = std::make_shared<RegistrySession>(proxy.host_port(), Fast());
  Result<registry::FetchedManifest> missing =
      registry::RemoteSource::Create(fresh, "demo/app")->GetManifest("nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound) << missing.error().ToString();
  EXPECT_EQ(fresh->KnownBaseUrl(), proxy.url());

  const std::vector<HttpTestRequest> requests = proxy.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method + " " + requests[0].path, "GET /v2/demo/app/manifests/1");
  EXPECT_EQ(requests[1].method + " " + requests[1].path, "GET /v2/demo/app/manifests/nope");
}

// Requests that start together (a mount's layers) lead to one decision: every blob HEAD
// reaches the server once, and no /v2/ probe goes.
TEST(RegistrySessionSchemeTest, ConcurrentFirstRequestsShareOneDecision) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.Respond(200, {{"Docker-Distribution-Api-Version", "registry/2.0"}}, "abc",
                 /*head_only=*/true);
  });
  auto session = std::make_shared<RegistrySession>(server.host_port(), Fast());
  registry::Pusher pusher(session, "demo/app", registry::PushOptions{});
  constexpr int kThreads = 4;
  std::atomic<int> present{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Result<bool> has = pusher.HasBlob(Digest::Sha256Of("blob " + std::to_string(i)));
      if (has.has_value() && *has) ++present;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(present.load(), kThreads);
  EXPECT_EQ(server.Count("HEAD", "/v2/demo/app/blobs/"), static_cast<size_t>(kThreads));
  EXPECT_EQ(server.Count("GET", "/v2/"), 0u);
  EXPECT_EQ(session->KnownBaseUrl(), server.url());
}

// A TLS docker-registry on loopback (plain http allowed): the raced manifest GET is answered
// over https, which wins. Without its CA the https failure is the error, not the 400 the TLS
// server gives the clear-text request.
TEST(RegistrySessionSchemeTest, HttpsWinsTheRaceAndA400OverHttpIsNoRegistry) {
  RegistryServerOptions ro;
  ro.tls = true;
  ro.access_log = true;
  auto reg = RegistryServer::Start(ro);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  TempDir layout;
  ImageBuilder builder(layout.path() + "/oci");
  ASSERT_TRUE(builder.Add(SimpleImage({{"f", "tls"}}), "latest").has_value());
  ASSERT_TRUE((*reg)->PushOciLayout(builder.dir(), "latest", "demo/app:1").ok());
  const size_t before = (*reg)->Accesses().size();
  ConnectionOptions trusted = Fast();
  trusted.tls.ca_files = {(*reg)->ca_file()};
  auto session = std::make_shared<RegistrySession>((*reg)->host_port(), trusted);
  ASSERT_TRUE(session->plain_http_allowed());
  Result<registry::FetchedManifest> m =
      registry::RemoteSource::Create(session, "demo/app")->GetManifest("1");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(session->KnownBaseUrl(), "https://" + (*reg)->host_port());
  bool manifest_seen = false;
  for (const RegistryAccess& a : AccessesUpTo(**reg, before, "/v2/demo/app/manifests/1")) {
    EXPECT_NE(a.path, "/v2/") << "a /v2/ probe went to the registry";
    manifest_seen |= a.IsManifest() && a.status == 200;
  }
  EXPECT_TRUE(manifest_seen);

  auto untrusted = std::make_shared<RegistrySession>((*reg)->host_port(), Fast());
  Result<registry::FetchedManifest> refused =
      registry::RemoteSource::Create(untrusted, "demo/app")->GetManifest("1");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable) << refused.error().ToString();
  EXPECT_EQ(refused.error().message().find("HTTP 400"), std::string::npos)
      << refused.error().ToString();
  EXPECT_EQ(untrusted->KnownBaseUrl(), "");
}

// An http answer without a registry's marks (a 409 with no body, no distribution header)
// does not decide: /v2/ is probed, as before, and the answer already in hand is the call's
// (the manifest GET reaches the server once).
TEST(RegistrySessionSchemeTest, AnAnswerWithoutRegistryMarksFallsBackToTheProbe) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.Respond(409);
  });
  RegistrySession session(server.host_port(), Fast());
  RegistrySession::Call call;
  call.path = "/v2/demo/app/manifests/1";
  call.what = "GET manifest";
  Result<registry::HttpResponse> resp = session.Execute(call);
  ASSERT_TRUE(resp.has_value()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 409);
  const std::vector<HttpTestRequest> requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].path, "/v2/demo/app/manifests/1");
  EXPECT_EQ(requests[1].path, "/v2/");
  EXPECT_EQ(session.KnownBaseUrl(), server.url());
}

// A request with a body (an upload) is not sent twice: the scheme is probed with GET /v2/
// first, then the POST goes once.
TEST(RegistrySessionSchemeTest, UploadsStillProbeFirst) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") return conn.Respond(200, {}, "{}");
    conn.Respond(202, {{"Location", "/v2/demo/app/blobs/uploads/1"}});
  });
  RegistrySession session(server.host_port(), Fast());
  RegistrySession::Call call;
  call.method = "POST";
  call.path = "/v2/demo/app/blobs/uploads/";
  call.what = "start upload";
  Result<registry::HttpResponse> resp = session.Execute(call);
  ASSERT_TRUE(resp.has_value()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 202);
  const std::vector<HttpTestRequest> requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method + " " + requests[0].path, "GET /v2/");
  EXPECT_EQ(requests[1].method + " " + requests[1].path, "POST /v2/demo/app/blobs/uploads/");
  EXPECT_EQ(session.KnownBaseUrl(), server.url());
}

}  // namespace
}  // namespace imgfs::testing
