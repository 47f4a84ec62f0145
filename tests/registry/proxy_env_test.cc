// Tests for registry/proxy_env.h and HttpClient's use of it: which proxy a URL gets, the
// no-proxy list always keeping loopback direct, and real requests through a proxy (an
// HttpTestServer answering absolute-form requests, as an HTTP proxy receives them).
#include "registry/proxy_env.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <netinet/in.h>

#include "registry/http_client.h"
#include "tests/support/closed_port.h"
#include "tests/support/http_test_server.h"

namespace imgfs::registry {
namespace {

using imgfs::testing::ClosedPort;
using imgfs::testing::HttpTestConnection;
using imgfs::testing::HttpTestRequest;
using imgfs::testing::HttpTestServer;

// Sets proxy variables for one test and clears every one of them afterwards.
// NOLINTBEGIN(concurrency-mt-unsafe): tests set the environment before making clients.
class ProxyEnvTest : public ::testing::Test {
 protected:
  static constexpr const char* kVars[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                          "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
  void SetUp() override { Clear(); }
  void TearDown() override { Clear(); }
  static void Clear() {
    for (const char* v : kVars) unsetenv(v);
  }
  static void Set(const char* name, const std::string& value) { setenv(name, value.c_str(), 1); }
};
// NOLINTEND(concurrency-mt-unsafe)

TEST_F(ProxyEnvTest, ProxyPerSchemeLowerCaseFirstAllProxyLast) {
  Set("HTTP_PROXY", "http://upper:1");
  Set("https_proxy", "http://lower-tls:2");
  Set("HTTPS_PROXY", "http://upper-tls:3");
  ProxyConfig config = ProxyConfigFromEnvironment();
  EXPECT_EQ(ProxyFor(config, "http://r.example/v2/"), "http://upper:1");
  EXPECT_EQ(ProxyFor(config, "HTTPS://r.example/v2/"), "http://lower-tls:2");
  EXPECT_EQ(ProxyFor(config, "ftp://r.example/"), "");
  Clear();
  Set("ALL_PROXY", "http://all:4");
  config = ProxyConfigFromEnvironment();
  EXPECT_EQ(ProxyFor(config, "http://r.example/"), "http://all:4");
  EXPECT_EQ(ProxyFor(config, "https://r.example/"), "http://all:4");
}

TEST_F(ProxyEnvTest, LoopbackIsAlwaysInTheNoProxyList) {
  EXPECT_EQ(NoProxyList(ProxyConfig{}), "localhost,127.0.0.0/8,::1");
  Set("NO_PROXY", " corp.example,10.0.0.0/8 ");
  EXPECT_EQ(NoProxyList(ProxyConfigFromEnvironment()),
            "corp.example,10.0.0.0/8,localhost,127.0.0.0/8,::1");
  Set("no_proxy", "*");
  EXPECT_EQ(NoProxyList(ProxyConfigFromEnvironment()), "*");
}

TEST_F(ProxyEnvTest, NonLoopbackRequestsGoThroughTheProxy) {
  HttpTestServer proxy([](const HttpTestRequest& req, HttpTestConnection& conn) {
    conn.Respond(200, {{"Content-Type", "text/plain"}}, "proxied " + req.target);
  });
  Set("HTTP_PROXY", proxy.url());  // upper case: honoured (curl alone would not)
  HttpClient client;
  HttpRequest req;
  // ".invalid" never resolves (RFC 2606): only the proxy can answer for it.
  req.url = "http://registry.invalid:5000/v2/";
  Result<HttpResponse> resp = client.Do(req);
  ASSERT_TRUE(resp.has_value()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "proxied http://registry.invalid:5000/v2/");
  ASSERT_EQ(proxy.requests().size(), 1u);
  EXPECT_EQ(proxy.requests()[0].target, "http://registry.invalid:5000/v2/");
}

TEST_F(ProxyEnvTest, LoopbackRegistryIsNeverProxied) {
  HttpTestServer registry(
      [](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200, {}, "direct"); });
  ClosedPort dead_proxy;
  const std::string dead = "http://127.0.0.1:" + std::to_string(dead_proxy.port());
  Set("http_proxy", dead);
  Set("HTTPS_PROXY", dead);
  Set("ALL_PROXY", dead);
  Set("NO_PROXY", "corp.example");  // a list without loopback does not change that
  HttpClient client;
  for (const std::string& host :
       {std::string("127.0.0.1"), std::string("localhost"), std::string("127.0.0.1")}) {
    HttpRequest req;
    req.url = "http://" + host + ":" + std::to_string(registry.port()) + "/v2/";
    Result<HttpResponse> resp = client.Do(req);
    ASSERT_TRUE(resp.has_value()) << host << ": " << resp.error().ToString();
    EXPECT_EQ(resp->body, "direct");
  }
  // The dead proxy does get non-loopback traffic: the request fails at the proxy.
  HttpRequest req;
  req.url = "http://registry.invalid/v2/";
  req.connect_timeout = std::chrono::seconds(10);
  Result<HttpResponse> resp = client.Do(req);
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace imgfs::registry
