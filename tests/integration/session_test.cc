// imgfs — RegistrySession: the one HTTP status → Status mapping (a scripted server, for
// answers a real registry does not give on demand), Retry-After honoured by push as by pull,
// certs.d used by push against a real TLS docker-registry, and one session shared by a
// RemoteSource and a Pusher.
#include "registry/session.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/push.h"
#include "registry/remote_source.h"
#include "tests/support/http_test_server.h"
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

}  // namespace
}  // namespace imgfs::testing
