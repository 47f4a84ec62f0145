// imgfs — HttpClient against the in-process HttpTestServer: headers, sinks, no redirect
// following, connection reuse, transport errors, and the URL helpers.
#include "registry/http_client.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>

#include "base/log.h"
#include "tests/support/closed_port.h"
#include "tests/support/http_test_server.h"

namespace imgfs::registry {
namespace {

using imgfs::testing::ClosedPort;
using imgfs::testing::HttpTestConnection;
using imgfs::testing::HttpTestRequest;
using imgfs::testing::HttpTestServer;

TEST(HttpClientTest, GetCollectsStatusHeadersAndBody) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    conn.Respond(200,
                 {{"Content-Type", "text/plain"},
                  {"X-Echo", req.Header("x-test")},
                  {"X-Multi", "a"},
                  {"X-Multi", "b"}},
                 "hello " + req.path);
  });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/v2/some/path?q=1";
  req.headers = {"X-Test: 42"};
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.has_value()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "hello /v2/some/path");
  EXPECT_EQ(resp->Header("content-type"), "text/plain");
  EXPECT_EQ(resp->Header("x-echo"), "42");
  EXPECT_EQ(resp->Header("x-multi"), "a, b");
  EXPECT_EQ(resp->effective_url, req.url);
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].query, "q=1");
  EXPECT_EQ(seen[0].Header("x-test"), "42");
}

TEST(HttpClientTest, WwwAuthenticateValuesKeptSeparately) {
  HttpTestServer server([](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.Respond(401, {{"WWW-Authenticate", "Bearer realm=\"http://a/token\",service=\"s\""},
                       {"WWW-Authenticate", "Basic realm=\"r\""}});
  });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/v2/";
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.has_value()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 401);
  ASSERT_EQ(resp->www_authenticate.size(), 2u);
  EXPECT_EQ(resp->www_authenticate[0], "Bearer realm=\"http://a/token\",service=\"s\"");
  EXPECT_EQ(resp->www_authenticate[1], "Basic realm=\"r\"");
}

TEST(HttpClientTest, SinkGetsOnlySuccessBodies) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/ok") {
      conn.Respond(206, {{"Content-Range", "bytes 0-9/100"}}, "0123456789");
    } else {
      conn.Respond(404, {}, "{\"errors\":[]}");
    }
  });
  HttpClient client;
  std::string sunk;
  long started_status = 0;  // NOLINT(google-runtime-int)
  int starts = 0;
  HttpRequest req;
  req.body_sink = [&](std::string_view chunk) {
    sunk.append(chunk);
    return Status::Ok();
  };
  req.on_body_start = [&](const HttpResponse& head) {
    ++starts;
    started_status = head.status;
    EXPECT_EQ(head.Header("content-range"), "bytes 0-9/100");
    return Status::Ok();
  };
  req.url = server.url() + "/ok";
  auto ok = client.Do(req);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_EQ(sunk, "0123456789");
  EXPECT_TRUE(ok->body.empty());
  EXPECT_EQ(starts, 1);
  EXPECT_EQ(started_status, 206);

  sunk.clear();
  req.url = server.url() + "/missing";
  auto missing = client.Do(req);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body, "{\"errors\":[]}");
  EXPECT_TRUE(sunk.empty());
  EXPECT_EQ(starts, 1);
}

TEST(HttpClientTest, SinkErrorAbortsAndIsReturnedAsIs) {
  const std::string big(1 << 20, 'x');
  HttpTestServer server(
      [&](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200, {}, big); });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/blob";
  size_t got = 0;
  req.body_sink = [&](std::string_view chunk) {
    got += chunk.size();
    return Status::NoSpace("cache full");
  };
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kNoSpace);
  EXPECT_EQ(resp.error().message(), "cache full");
  EXPECT_LT(got, big.size());
}

TEST(HttpClientTest, RedirectsAreReturnedNotFollowed) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/from") {
      conn.Respond(307, {{"Location", "/to"}});
    } else {
      conn.Respond(200, {}, "arrived");
    }
  });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/from";
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(resp->status, 307);
  EXPECT_EQ(resp->Header("location"), "/to");
  EXPECT_EQ(server.Count("GET", "/to"), 0u);
}

TEST(HttpClientTest, RangeHeaderAndMethodsAndBody) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    conn.Respond(200, {{"X-Method", req.method}, {"X-Range", req.Header("range")}}, req.body,
                 req.method == "HEAD");
  });
  HttpClient client;
  HttpRequest get;
  get.url = server.url() + "/r";
  get.range = ByteRange{100, 50};
  auto r1 = client.Do(get);
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->Header("x-range"), "bytes=100-149");

  HttpRequest put;
  put.method = "PUT";
  put.url = server.url() + "/p";
  put.body = "payload";
  auto r2 = client.Do(put);
  ASSERT_TRUE(r2.has_value()) << r2.error().ToString();
  EXPECT_EQ(r2->Header("x-method"), "PUT");
  EXPECT_EQ(r2->body, "payload");

  HttpRequest head;
  head.method = "HEAD";
  head.url = server.url() + "/h";
  auto r3 = client.Do(head);
  ASSERT_TRUE(r3.has_value()) << r3.error().ToString();
  EXPECT_EQ(r3->Header("x-method"), "HEAD");
  EXPECT_TRUE(r3->body.empty());

  HttpRequest empty_range;
  empty_range.url = server.url() + "/r";
  empty_range.range = ByteRange{5, 0};
  auto r4 = client.Do(empty_range);
  ASSERT_FALSE(r4.has_value());
  EXPECT_EQ(r4.error().code(), StatusCode::kInvalidArgument);
}

TEST(HttpClientTest, ConnectionsAreReused) {
  HttpTestServer server(
      [](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200, {}, "x"); });
  HttpClient client;
  for (int i = 0; i < 5; ++i) {
    HttpRequest req;
    req.url = server.url() + "/n" + std::to_string(i);
    auto resp = client.Do(req);
    ASSERT_TRUE(resp.has_value());
    EXPECT_EQ(resp->status, 200);
  }
  EXPECT_EQ(server.requests().size(), 5u);
  EXPECT_EQ(server.connections(), 1u);
}

TEST(HttpClientTest, ConcurrentRequestsFromManyThreads) {
  HttpTestServer server([](const HttpTestRequest& req, HttpTestConnection& conn) {
    conn.Respond(200, {}, req.path);
  });
  HttpClient client;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        HttpRequest req;
        req.url = server.url() + "/t" + std::to_string(t) + "/" + std::to_string(i);
        auto resp = client.Do(req);
        if (resp.has_value() && resp->body == "/t" + std::to_string(t) + "/" + std::to_string(i)) {
          ++good;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 40);
  EXPECT_LE(server.connections(), 4u);
}

TEST(HttpClientTest, ConnectionRefusedIsUnavailable) {
  ClosedPort port;
  HttpClient client;
  HttpRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(port.port()) + "/v2/";
  req.connect_timeout = std::chrono::milliseconds(1000);
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(resp.error().message().find(req.url), std::string::npos) << resp.error().message();
}

TEST(HttpClientTest, CutBodyIsUnavailable) {
  HttpTestServer server([](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.RespondTruncated(200, {}, "only part", 1000);
  });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/cut";
  std::string sunk;
  req.body_sink = [&](std::string_view chunk) {
    sunk.append(chunk);
    return Status::Ok();
  };
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(sunk, "only part");
}

TEST(HttpClientTest, SlowResponseTimesOut) {
  HttpTestServer server([](const HttpTestRequest&, HttpTestConnection& conn) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    conn.Respond(200, {}, "late");
  });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/slow";
  req.total_timeout = std::chrono::milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  auto resp = client.Do(req);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(resp.error().message().find("timed out"), std::string::npos);
  EXPECT_LT(elapsed, std::chrono::milliseconds(1500));  // well before the server answers
}

TEST(HttpClientTest, OversizedCollectedBodyIsCorrupt) {
  HttpTestServer server([](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.Respond(200, {}, std::string(10000, 'm'));
  });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/big";
  req.max_body_bytes = 4096;
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kCorrupt);
}

TEST(HttpClientTest, MissingCaFileIsInvalidArgument) {
  HttpClient client;
  HttpRequest req;
  req.url = "https://127.0.0.1:1/v2/";
  req.tls.ca_files = {"/nonexistent/ca.crt"};
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.has_value());
  EXPECT_EQ(resp.error().code(), StatusCode::kInvalidArgument);
}

TEST(HttpClientTest, AuthorizationIsNotLogged) {
  std::vector<std::string> lines;
  SetLogSink([&](LogLevel, std::string_view msg) { lines.emplace_back(msg); });
  const LogLevel old = GetLogLevel();
  SetLogLevel(LogLevel::kDebug);
  HttpTestServer server(
      [](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200, {}, "ok"); });
  HttpClient client;
  HttpRequest req;
  req.url = server.url() + "/secret";
  req.headers = {"Authorization: Bearer s3cr3t-token"};
  auto resp = client.Do(req);
  SetLogLevel(old);
  SetLogSink(nullptr);
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(server.requests().at(0).Header("authorization"), "Bearer s3cr3t-token");
  for (const std::string& line : lines) EXPECT_EQ(line.find("s3cr3t"), std::string::npos) << line;
}

TEST(HttpClientTest, UrlHelpers) {
  EXPECT_EQ(UrlHostPort("https://Registry.Example.com:5000/v2/x"), "registry.example.com:5000");
  EXPECT_EQ(UrlHostPort("http://127.0.0.1/v2/"), "127.0.0.1");
  EXPECT_EQ(UrlHostPort("not a url"), "");
  EXPECT_EQ(ResolveUrl("http://a:1/v2/x/blobs/y", "/other?sig=1"), "http://a:1/other?sig=1");
  EXPECT_EQ(ResolveUrl("http://a:1/v2/x/blobs/y", "https://b/z"), "https://b/z");
  EXPECT_EQ(ResolveUrl("https://a/v2/x/tags/list", "list?n=2&last=b"),
            "https://a/v2/x/tags/list?n=2&last=b");
  EXPECT_EQ(UrlEncode("repository:demo/app:pull"), "repository%3Ademo%2Fapp%3Apull");
  EXPECT_EQ(UrlEncode("a-b_c.d~e"), "a-b_c.d~e");
}

}  // namespace
}  // namespace imgfs::registry
