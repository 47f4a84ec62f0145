// imgfs tests — TokenServer: a docker token-auth server for a real docker-registry.
//
// Implements the token protocol of distribution `docs/spec/auth/token.md` (GET
// /token?service=…&scope=…, Basic auth or anonymous) and its OAuth2 variant (`oauth.md`:
// POST /token with grant_type=password or refresh_token), over plain HTTP on 127.0.0.1.
// Tokens are JWTs signed RS256 with a key generated once per process; the header carries the
// key's self-signed certificate as `x5c`, and the same certificate, written to cert_path(),
// is the registry's `rootcertbundle` (distribution v2.8 `registry/auth/token/token.go`
// verifies x5c chains against that bundle). Claims: iss, sub, aud (= service), exp, nbf,
// iat, jti, access [{type, name, actions}], where actions = requested ∩ allowed.
//
// Policy: one user (username/password, plus an optional identity token accepted by the
// refresh_token grant). A wrong password is 401. Anonymous requests get
// `anonymous_actions` (possibly none: the registry then refuses with insufficient_scope), or
// 401 when anonymous_allowed is false.
//
// The constructor writes cert_path() into a fresh temporary directory, which the destructor
// removes. The HTTP side is an HttpTestServer (own threads, ephemeral port).
//
// Thread-safety: every method may be called from any thread while the server runs.
#ifndef IMGFS_TESTS_SUPPORT_TOKEN_SERVER_H_
#define IMGFS_TESTS_SUPPORT_TOKEN_SERVER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/http_test_server.h"

namespace imgfs::testing {

struct TokenServerOptions {
  std::string service = "imgfs-test-registry";
  std::string issuer = "imgfs-test-token-issuer";
  std::string username = "alice";
  std::string password = "s3cret-pass";
  // Accepted by POST grant_type=refresh_token ("" = that grant is refused with 401).
  std::string identity_token;
  // Actions the user may get on any repository.
  std::vector<std::string> user_actions = {"pull", "push"};
  // Actions anonymous requests get on any repository (empty: a token without access).
  std::vector<std::string> anonymous_actions = {"pull"};
  // false: anonymous token requests are answered 401.
  bool anonymous_allowed = true;
  // Lifetime of issued tokens, announced as expires_in.
  int expires_in_s = 300;
  // false: POST /token answers 404, as docker's auth server does not do OAuth2 everywhere.
  bool oauth_enabled = true;
};

class TokenServer {
 public:
  explicit TokenServer(TokenServerOptions options = {});
  ~TokenServer();
  TokenServer(const TokenServer&) = delete;
  TokenServer& operator=(const TokenServer&) = delete;

  // "http://127.0.0.1:PORT/token".
  std::string realm() const;
  const std::string& service() const { return options_.service; }
  const std::string& issuer() const { return options_.issuer; }
  // PEM certificate of the signing key: the registry's auth.token.rootcertbundle.
  const std::string& cert_path() const { return cert_path_; }
  // The `auth:` section of a docker-registry config.yml using this server (2-space YAML,
  // starting at column 0).
  std::string RegistryAuthConfig() const;

  // Token requests answered so far (any method, any outcome).
  int token_requests() const { return token_requests_.load(); }
  // Every request seen (method, target, headers, body).
  std::vector<HttpTestRequest> requests() const { return http_->requests(); }

  // Changes the lifetime of tokens issued from now on.
  void SetExpiresIn(int seconds);
  // Changes the anonymous policy for requests from now on.
  void SetAnonymous(bool allowed, std::vector<std::string> actions);

  // A signed token for `access` ({"repository:NAME:pull,push", ...}) as the user would get
  // it, for test setup that talks to the registry directly.
  std::string MintToken(const std::vector<std::string>& scopes);

  // Decodes the claims of a token (no signature check), for assertions.
  static nlohmann::json DecodeClaims(const std::string& jwt);

 private:
  struct Key;
  void Handle(const HttpTestRequest& req, HttpTestConnection& conn);
  std::string Sign(const std::string& subject, const std::vector<std::string>& scopes,
                   const std::vector<std::string>& allowed, int expires_in_s);

  TokenServerOptions options_;  // guarded by mu_ after construction
  mutable std::mutex mu_;       // leaf lock: options_ and the signing key use
  std::unique_ptr<Key> key_;
  std::string temp_dir_;
  std::string cert_path_;
  std::atomic<int> token_requests_{0};
  std::atomic<int> next_jti_{1};
  std::unique_ptr<HttpTestServer> http_;  // last: stops before the rest is destroyed
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_TOKEN_SERVER_H_
