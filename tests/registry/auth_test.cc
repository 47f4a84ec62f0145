// imgfs — WWW-Authenticate parsing (table tests) and the Authenticator's token flow against
// the in-process TokenServer over a real HttpClient (127.0.0.1 only).
#include "registry/auth.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "registry/http_client.h"
#include "tests/support/token_server.h"

namespace imgfs::registry {
namespace {

using imgfs::testing::HttpTestRequest;
using imgfs::testing::TokenServer;
using imgfs::testing::TokenServerOptions;

// ---------------------------------------------------------------------------------------
// ParseWwwAuthenticate

struct ParseCase {
  const char* name;
  const char* input;
  std::vector<Challenge> want;
};

class ParseWwwAuthenticateTest : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseWwwAuthenticateTest, Parses) {
  const ParseCase& c = GetParam();
  Result<std::vector<Challenge>> got = ParseWwwAuthenticate(std::string_view(c.input));
  ASSERT_TRUE(got.has_value()) << c.input << ": " << got.error().ToString();
  EXPECT_EQ(*got, c.want) << c.input;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseWwwAuthenticateTest,
    ::testing::Values(
        ParseCase{"DockerHub",
                  R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",)"
                  R"(scope="repository:library/alpine:pull")",
                  {{"bearer",
                    {{"realm", "https://auth.docker.io/token"},
                     {"service", "registry.docker.io"},
                     {"scope", "repository:library/alpine:pull"}},
                    ""}}},
        ParseCase{"SchemeIsCaseInsensitive",
                  R"(BEARER Realm="r", SERVICE=svc)",
                  {{"bearer", {{"realm", "r"}, {"service", "svc"}}, ""}}},
        ParseCase{
            "CommaInsideQuotes",
            R"(Bearer realm="https://a/token",scope="repository:x:pull,push")",
            {{"bearer", {{"realm", "https://a/token"}, {"scope", "repository:x:pull,push"}}, ""}}},
        ParseCase{"EscapesInQuotes",
                  R"(Basic realm="say \"hi\" \\ there")",
                  {{"basic", {{"realm", R"(say "hi" \ there)"}}, ""}}},
        ParseCase{
            "TwoChallenges",
            R"(Basic realm="simple", Newauth realm="apps", type=1, title="Login to \"apps\"")",
            {{"basic", {{"realm", "simple"}}, ""},
             {"newauth", {{"realm", "apps"}, {"type", "1"}, {"title", R"(Login to "apps")"}}, ""}}},
        ParseCase{"Token68", "Negotiate abc+/def==", {{"negotiate", {}, "abc+/def=="}}},
        ParseCase{"Token68ThenChallenge",
                  "Negotiate abc=, Basic realm=x",
                  {{"negotiate", {}, "abc="}, {"basic", {{"realm", "x"}}, ""}}},
        ParseCase{"BareSchemes", "Basic, Bearer", {{"basic", {}, ""}, {"bearer", {}, ""}}},
        ParseCase{"SpacesAroundEquals",
                  "Bearer realm = \"r\" ,  service\t=\ts",
                  {{"bearer", {{"realm", "r"}, {"service", "s"}}, ""}}},
        ParseCase{
            "EmptyListElements", " , ,Basic realm=\"a\",, ,", {{"basic", {{"realm", "a"}}, ""}}},
        ParseCase{"EmptyQuotedValue",
                  R"(Bearer realm="r",error="")",
                  {{"bearer", {{"realm", "r"}, {"error", ""}}, ""}}},
        // RFC 7235: "a=" is a token68, not a parameter without a value.
        ParseCase{"Token68LooksLikeParam", "Bearer realm=", {{"bearer", {}, "realm="}}},
        ParseCase{"Empty", "", {}}),
    [](const ::testing::TestParamInfo<ParseCase>& param_info) { return param_info.param.name; });

TEST(ParseWwwAuthenticateErrorTest, RejectsMalformedInput) {
  for (const char* bad : {
           R"(Bearer realm="unterminated)",
           R"(Bearer realm="a" junk)",
           R"(Bearer realm="a", realm="b")",
           R"(="x")",
           R"(Bearer"x")",
           "Bearer realm=\"a\x01\"",
           R"(Bearer realm="a\)",
       }) {
    Result<std::vector<Challenge>> got = ParseWwwAuthenticate(std::string_view(bad));
    ASSERT_FALSE(got.has_value()) << bad;
    EXPECT_EQ(got.error().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseWwwAuthenticateTest, SeveralHeaderLinesKeepOrder) {
  Result<std::vector<Challenge>> got =
      ParseWwwAuthenticate(std::vector<std::string>{"Basic realm=a", "Bearer realm=b"});
  ASSERT_TRUE(got.has_value());
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].scheme, "basic");
  EXPECT_EQ((*got)[1].params.at("realm"), "b");
}

// ---------------------------------------------------------------------------------------
// Authenticator against the TokenServer

constexpr char kScope[] = "repository:demo/app:pull";
constexpr char kHost[] = "registry.test:5000";

std::string BearerChallenge(const TokenServer& server, const std::string& scope,
                            const std::string& error = "") {
  std::string v = "Bearer realm=\"" + server.realm() + "\",service=\"" + server.service() +
                  "\",scope=\"" + scope + "\"";
  if (!error.empty()) v += ",error=\"" + error + "\"";
  return v;
}

std::string TokenOf(const std::string& header) {
  const std::string prefix = "Authorization: Bearer ";
  return header.rfind(prefix, 0) == 0 ? header.substr(prefix.size()) : "";
}

std::vector<HttpTestRequest> TokenRequests(const TokenServer& server) {
  std::vector<HttpTestRequest> out;
  for (const HttpTestRequest& r : server.requests()) {
    if (r.path == "/token") out.push_back(r);
  }
  return out;
}

Credential Alice() { return Credential{"alice", "s3cret-pass", ""}; }

TEST(AuthenticatorTest, AnonymousBearerFlowGetsPullToken) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);    // the TokenServer speaks plain http
  EXPECT_EQ(auth.HeaderFor(kScope), "");  // nothing known yet

  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  std::string header = auth.HeaderFor(kScope);
  std::string token = TokenOf(header);
  ASSERT_FALSE(token.empty()) << header;

  nlohmann::json claims = TokenServer::DecodeClaims(token);
  EXPECT_EQ(claims["aud"], server.service());
  EXPECT_EQ(claims["sub"], "");
  EXPECT_EQ(claims["access"][0]["name"], "demo/app");
  EXPECT_EQ(claims["access"][0]["actions"], nlohmann::json::array({"pull"}));

  std::vector<HttpTestRequest> reqs = TokenRequests(server);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "GET");
  EXPECT_FALSE(reqs[0].HasHeader("authorization"));
  EXPECT_NE(reqs[0].query.find("service=imgfs-test-registry"), std::string::npos);
  EXPECT_NE(reqs[0].query.find("scope=repository%3Ademo%2Fapp%3Apull"), std::string::npos)
      << reqs[0].query;
}

TEST(AuthenticatorTest, CredentialGoesAsBasicToTheTokenEndpoint) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  nlohmann::json claims = TokenServer::DecodeClaims(TokenOf(auth.HeaderFor(kScope)));
  EXPECT_EQ(claims["sub"], "alice");
  std::vector<HttpTestRequest> reqs = TokenRequests(server);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].Header("authorization"), "Basic YWxpY2U6czNjcmV0LXBhc3M=");
}

TEST(AuthenticatorTest, WrongPasswordIsPermissionDeniedWithoutTheSecret) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Credential{"alice", "wrong-password-xyz", ""}, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  Status s = auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("unauthorized: wrong username or password for ") + kHost);
  EXPECT_EQ(s.message().find("wrong-password-xyz"), std::string::npos);
  EXPECT_EQ(auth.HeaderFor(kScope).find("Bearer"), std::string::npos);
}

TEST(AuthenticatorTest, AnonymousRefusedAsksForLogin) {
  TokenServerOptions opts;
  opts.anonymous_allowed = false;
  TokenServer server(opts);
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  Status s = auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("authentication required: run `imgfs login ") + kHost + "`");
}

TEST(AuthenticatorTest, TokenRejectedAgainGivesUp) {
  TokenServerOptions opts;
  opts.anonymous_actions = {};  // tokens without access: the registry keeps refusing
  TokenServer server(opts);
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  std::string sent = auth.HeaderFor(kScope);
  ASSERT_FALSE(TokenOf(sent).empty());
  Status s =
      auth.OnChallenge({BearerChallenge(server, kScope, "insufficient_scope")}, kScope, sent);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("imgfs login registry.test:5000"), std::string::npos) << s.message();
  EXPECT_EQ(server.token_requests(), 1);

  // Without the rejected header the rule is "a token fetched for a challenge moments ago".
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  Status again = auth.OnChallenge({BearerChallenge(server, kScope, "insufficient_scope")}, kScope);
  EXPECT_EQ(again.code(), StatusCode::kPermissionDenied);
}

TEST(AuthenticatorTest, CredentialedRejectionSaysDenied) {
  TokenServerOptions opts;
  opts.user_actions = {"push"};  // no pull
  TokenServer server(opts);
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  Status s = auth.OnChallenge({BearerChallenge(server, kScope, "insufficient_scope")}, kScope,
                              auth.HeaderFor(kScope));
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("denied"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("s3cret-pass"), std::string::npos);
}

TEST(AuthenticatorTest, TokensAreCachedPerScope) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  std::string first = auth.HeaderFor(kScope);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(auth.HeaderFor(kScope), first);
  EXPECT_EQ(auth.token_requests(), 1u);
  EXPECT_EQ(server.token_requests(), 1);

  // A new scope on the same registry: fetched up front (realm known), no 401 needed.
  std::string other = auth.HeaderFor("repository:other/app:pull");
  nlohmann::json claims = TokenServer::DecodeClaims(TokenOf(other));
  EXPECT_EQ(claims["access"][0]["name"], "other/app");
  EXPECT_EQ(server.token_requests(), 2);
  EXPECT_EQ(auth.HeaderFor(kScope), first);
  EXPECT_EQ(server.token_requests(), 2);
}

TEST(AuthenticatorTest, RefreshesAtEightyPercentOfLifetime) {
  TokenServerOptions opts;
  opts.expires_in_s = 100;
  TokenServer server(opts);
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  auto t0 = Authenticator::Clock::now();
  std::atomic<int64_t> offset_s{0};
  auth.SetClockForTesting([&] { return t0 + std::chrono::seconds(offset_s.load()); });

  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  std::string first = auth.HeaderFor(kScope);
  offset_s = 79;
  EXPECT_EQ(auth.HeaderFor(kScope), first);
  EXPECT_EQ(server.token_requests(), 1);
  offset_s = 81;
  std::string second = auth.HeaderFor(kScope);
  EXPECT_EQ(server.token_requests(), 2);
  EXPECT_FALSE(TokenOf(second).empty());
  offset_s = 100;  // 19 s after the refresh: still fresh
  EXPECT_EQ(auth.HeaderFor(kScope), second);
  EXPECT_EQ(server.token_requests(), 2);
}

TEST(AuthenticatorTest, MissingExpiresInDefaultsToSixtySeconds) {
  // A server without expires_in: scripted with the plain test server.
  imgfs::testing::HttpTestServer server(
      [](const HttpTestRequest&, imgfs::testing::HttpTestConnection& conn) {
        conn.Respond(200, {{"Content-Type", "application/json"}}, R"({"access_token":"abc"})");
      });
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  auto t0 = Authenticator::Clock::now();
  std::atomic<int64_t> offset_s{0};
  auth.SetClockForTesting([&] { return t0 + std::chrono::seconds(offset_s.load()); });
  ASSERT_TRUE(
      auth.OnChallenge({"Bearer realm=\"" + server.url() + "/t\",service=s"}, kScope, "").ok());
  EXPECT_EQ(auth.HeaderFor(kScope), "Authorization: Bearer abc");
  offset_s = 47;  // 80 % of 60 s is 48 s
  auth.HeaderFor(kScope);
  EXPECT_EQ(server.Count("GET", "/t"), 1u);
  offset_s = 49;
  auth.HeaderFor(kScope);
  EXPECT_EQ(server.Count("GET", "/t"), 2u);
}

TEST(AuthenticatorTest, ChallengeScopeIsRequestedToo) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(
      auth.OnChallenge({BearerChallenge(server, "repository:base/img:pull")}, kScope, "").ok());
  std::vector<HttpTestRequest> reqs = TokenRequests(server);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_NE(reqs[0].query.find("scope=repository%3Ademo%2Fapp%3Apull"), std::string::npos);
  EXPECT_NE(reqs[0].query.find("scope=repository%3Abase%2Fimg%3Apull"), std::string::npos);
  nlohmann::json claims = TokenServer::DecodeClaims(TokenOf(auth.HeaderFor(kScope)));
  EXPECT_EQ(claims["access"].size(), 2u);
}

TEST(AuthenticatorTest, IdentityTokenUsesOAuthPost) {
  TokenServerOptions opts;
  opts.identity_token = "refresh-me-123";
  TokenServer server(opts);
  HttpClient http;
  Authenticator auth(&http, Credential{"", "", "refresh-me-123"}, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  nlohmann::json claims = TokenServer::DecodeClaims(TokenOf(auth.HeaderFor(kScope)));
  EXPECT_EQ(claims["sub"], "alice");
  std::vector<HttpTestRequest> reqs = TokenRequests(server);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_NE(reqs[0].body.find("grant_type=refresh_token"), std::string::npos);
  EXPECT_NE(reqs[0].body.find("refresh_token=refresh-me-123"), std::string::npos);
}

TEST(AuthenticatorTest, OAuthPostFallsBackToGetOn404) {
  TokenServerOptions opts;
  opts.oauth_enabled = false;
  TokenServer server(opts);
  HttpClient http;
  Authenticator auth(&http, Credential{"alice", "s3cret-pass", "some-identity-token"}, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  std::vector<HttpTestRequest> reqs = TokenRequests(server);
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[1].method, "GET");
  EXPECT_EQ(TokenServer::DecodeClaims(TokenOf(auth.HeaderFor(kScope)))["sub"], "alice");
}

TEST(AuthenticatorTest, ConcurrentCallersShareOneTokenFetch) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  const std::string scope = "repository:many/readers:pull";
  std::vector<std::thread> threads;
  std::vector<std::string> got(8);
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = auth.HeaderFor(scope); });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& h : got) EXPECT_EQ(h, got[0]);
  EXPECT_FALSE(TokenOf(got[0]).empty());
  EXPECT_EQ(server.token_requests(), 2);  // the challenge's and one for the new scope
}

TEST(AuthenticatorTest, StaleRejectionAfterAnotherThreadRefreshedIsRetried) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  std::string current = auth.HeaderFor(kScope);
  // A request that went out before any token existed, or with an older token.
  EXPECT_TRUE(auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "").ok());
  EXPECT_TRUE(
      auth.OnChallenge({BearerChallenge(server, kScope)}, kScope, "Authorization: Bearer old")
          .ok());
  EXPECT_EQ(auth.HeaderFor(kScope), current);
  EXPECT_EQ(server.token_requests(), 1);
}

TEST(AuthenticatorTest, BasicChallenge) {
  HttpClient http;
  Authenticator anonymous(&http, std::nullopt, {}, kHost);
  anonymous.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  Status s = anonymous.OnChallenge({R"(Basic realm="Registry Realm")"}, kScope, "");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("authentication required: run `imgfs login ") + kHost + "`");

  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(auth.OnChallenge({R"(Basic realm="Registry Realm")"}, kScope, "").ok());
  std::string header = auth.HeaderFor(kScope);
  EXPECT_EQ(header, "Authorization: Basic YWxpY2U6czNjcmV0LXBhc3M=");
  EXPECT_EQ(auth.HeaderFor("repository:other:pull"), header);
  Status again = auth.OnChallenge({R"(Basic realm="Registry Realm")"}, kScope, header);
  EXPECT_EQ(again.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(again.message(), std::string("unauthorized: wrong username or password for ") + kHost);
}

TEST(AuthenticatorTest, DockerHubIsNamedAsUsersLogIn) {
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, "registry-1.docker.io");
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  Status s = auth.OnChallenge({R"(Basic realm="hub")"}, kScope, "");
  EXPECT_EQ(s.message(), "authentication required: run `imgfs login docker.io`");
}

TEST(AuthenticatorTest, BearerPreferredOverBasic) {
  TokenServer server;
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  ASSERT_TRUE(
      auth.OnChallenge({"Basic realm=x", BearerChallenge(server, kScope)}, kScope, "").ok());
  EXPECT_FALSE(TokenOf(auth.HeaderFor(kScope)).empty());
}

TEST(AuthenticatorTest, UnsupportedAndMalformedChallenges) {
  HttpClient http;
  Authenticator auth(&http, Alice(), {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  EXPECT_EQ(auth.OnChallenge({"Negotiate abc=="}, kScope, "").code(), StatusCode::kUnsupported);
  EXPECT_EQ(auth.OnChallenge({}, kScope, "").code(), StatusCode::kUnsupported);
  EXPECT_EQ(auth.OnChallenge({R"(Bearer realm="x)"}, kScope, "").code(), StatusCode::kCorrupt);
  EXPECT_EQ(auth.OnChallenge({R"(Bearer service="s")"}, kScope, "").code(), StatusCode::kCorrupt);
  // Plain-http token server on a foreign host: credentials would travel in clear text.
  EXPECT_EQ(
      auth.OnChallenge({R"(Bearer realm="http://auth.example.com/token")"}, kScope, "").code(),
      StatusCode::kPermissionDenied);
}

TEST(AuthenticatorTest, TokenServerDownIsUnavailable) {
  std::string realm;
  {
    TokenServer gone;
    realm = gone.realm();
  }
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  Status s = auth.OnChallenge({"Bearer realm=\"" + realm + "\",service=x"}, kScope, "");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ(auth.HeaderFor(kScope), "");  // the up-front fetch fails too: no header
}

TEST(AuthenticatorTest, BadTokenResponsesAreCorrupt) {
  std::atomic<int> which{0};
  imgfs::testing::HttpTestServer server(
      [&](const HttpTestRequest&, imgfs::testing::HttpTestConnection& conn) {
        switch (which.load()) {
          case 0:
            conn.Respond(200, {}, "not json");
            break;
          case 1:
            conn.Respond(200, {}, R"({"expires_in":30})");
            break;
          default:
            conn.Respond(503, {}, "");
            break;
        }
      });
  HttpClient http;
  Authenticator auth(&http, std::nullopt, {}, kHost);
  auth.SetRegistryOverPlainHttp(true);  // the TokenServer speaks plain http
  std::string challenge = "Bearer realm=\"" + server.url() + "/token\"";
  EXPECT_EQ(auth.OnChallenge({challenge}, kScope, "").code(), StatusCode::kCorrupt);
  which = 1;
  EXPECT_EQ(auth.OnChallenge({challenge}, kScope, "").code(), StatusCode::kCorrupt);
  which = 2;
  EXPECT_EQ(auth.OnChallenge({challenge}, kScope, "").code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace imgfs::registry
