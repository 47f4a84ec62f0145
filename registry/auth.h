// imgfs — registry authentication: WWW-Authenticate parsing and the token flow.
//
// One Authenticator per registry host. The distribution client asks it for the
// Authorization line of each request (HeaderFor) and reports every 401 to it (OnChallenge):
//
//     std::string auth = authenticator.HeaderFor(scope);      // "" at first
//     response = http.Do(request + auth);
//     if (response.status == 401) {
//       Status s = authenticator.OnChallenge(response.www_authenticate, scope, auth);
//       if (!s.ok()) return s;                                 // PermissionDenied, Unavailable
//       retry once with authenticator.HeaderFor(scope);        // 401 again → OnChallenge
//     }                                                        //   again, which gives up
//
// Bearer (distribution `docs/spec/auth/token.md`): GET realm?service=S&scope=A&scope=B with
// Basic auth when a username/password is known, anonymous otherwise; with an identity token,
// POST realm (grant_type=refresh_token, OAuth2 `oauth.md`), falling back to GET on 404/405.
// The answer {token | access_token, expires_in (default 60 s), issued_at} is cached per
// scope and refreshed once 80% of its lifetime has passed. Once a realm is known, HeaderFor
// fetches tokens for new scopes (and refreshes old ones) up front, saving a 401 round trip.
// Basic: the credential goes along with every request.
//
// A 401 that rejects the token obtained for the previous challenge (same scope) ends the
// dance with PermissionDenied: "authentication required: run `imgfs login HOST`" without a
// credential, "unauthorized: wrong username or password for HOST" when the token endpoint
// refuses the credential, "denied: HOST refused access to SCOPE" otherwise.
//
// Secrets (passwords, tokens) never appear in a log line or a Status message.
//
// Thread-safety: every method may be called from many threads at once. One mutex guards the
// token cache; it is never held across network I/O. Concurrent requests for the same scope
// share one token fetch.
#ifndef IMGFS_REGISTRY_AUTH_H_
#define IMGFS_REGISTRY_AUTH_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "registry/credentials.h"
#include "registry/http_client.h"

namespace imgfs::registry {

// One challenge of a WWW-Authenticate header (RFC 7235 §4.1).
struct Challenge {
  std::string scheme;  // lower-cased: "bearer", "basic", ...
  // auth-params; names lower-cased, quoted values unescaped.
  std::map<std::string, std::string> params;
  std::string token68;  // the token68 form ("Negotiate abc=="), else ""

  bool operator==(const Challenge& other) const = default;
};

// Parses one WWW-Authenticate header value, which may hold several challenges
// (`Bearer realm="a,b", scope="x", Basic realm="y"`). Schemes are case-insensitive,
// quoted-strings may contain commas and backslash escapes, empty list elements are skipped.
// InvalidArgument on malformed input (unterminated quote, missing scheme, junk after a
// value, a parameter repeated within one challenge).
Result<std::vector<Challenge>> ParseWwwAuthenticate(std::string_view header_value);

// Same over several header lines (HttpResponse::www_authenticate); challenges in order.
Result<std::vector<Challenge>> ParseWwwAuthenticate(const std::vector<std::string>& header_values);

class Authenticator {
 public:
  using Clock = std::chrono::steady_clock;

  // `http` must outlive the Authenticator. `registry_host` ("host[:port]") names the
  // registry in error messages (`imgfs login HOST`); "" = the realm's host. `tls` (the
  // registry's certs.d material) is used for a token server on the registry's own host and
  // port, `other_host_tls` (the explicit --ca-cert CAs) for any other token server.
  Authenticator(HttpClient* http, std::optional<Credential> cred, TlsOptions tls,
                std::string registry_host = "", TlsOptions other_host_tls = {});
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // The "Authorization: …" header line for a request needing `scope`
  // ("repository:NAME:pull", "" for the /v2/ ping), or "" when nothing is known yet
  // (or the up-front token fetch failed: the 401 that follows reports the error).
  // May do network I/O (token fetch) when a Bearer realm is known.
  std::string HeaderFor(const std::string& scope);

  // Handles a 401: `www_authenticate` are its WWW-Authenticate values, `scope` what the
  // request needed, `rejected_header` the Authorization line the request carried
  // (HeaderFor's result, "" when it carried none). Pass it: it tells a token that was just
  // rejected from one another thread already replaced. Without it (nullopt), a 401 that
  // follows a challenge-fetched token within a few seconds counts as a rejection of that
  // token. OK means "retry with HeaderFor(scope)". Errors:
  // PermissionDenied (no or wrong credential, access denied, token rejected again),
  // Unavailable (token endpoint unreachable / 5xx), Unsupported (no Bearer or Basic
  // challenge), Corrupt (unparsable challenge or token response).
  Status OnChallenge(const std::vector<std::string>& www_authenticate, const std::string& scope,
                     const std::optional<std::string>& rejected_header = std::nullopt);

  // Tells whether the registry is spoken to over plain HTTP (RemoteSource and Pusher call it
  // once they chose the scheme). Until then, and by default, the registry counts as spoken
  // to over TLS, and a plain-http token realm is refused (PermissionDenied): a plain-http
  // realm is used only for a plain-HTTP registry, and only on a loopback host or the
  // registry's own host (registry/origin.h CheckTokenRealm).
  void SetRegistryOverPlainHttp(bool plain_http);

  // Token requests sent so far (GET and POST to the realm), for tests and statistics.
  uint64_t token_requests() const;

  // Tests: replaces the clock used for token expiry.
  void SetClockForTesting(std::function<Clock::time_point()> now);

 private:
  struct Token {
    std::string header;  // "Authorization: Bearer …"
    Clock::time_point refresh_at;
    Clock::time_point expires_at;
    Clock::time_point obtained_at;
    bool from_challenge = false;  // fetched in answer to a 401 (not up front)
  };
  struct BearerRealm {
    std::string realm;
    std::string service;
  };

  Clock::time_point Now() const;
  // Network: asks the realm for a token covering `scopes`. Never called with mu_ held.
  Result<Token> FetchToken(const BearerRealm& realm, const std::vector<std::string>& scopes);
  // Fetches (single flight per scope) and caches a token; returns its header or the error.
  Result<std::string> ObtainToken(const std::string& scope, const BearerRealm& realm,
                                  const std::vector<std::string>& scopes, bool from_challenge);
  std::string Host(const std::string& realm_url) const;

  HttpClient* const http_;
  const std::optional<Credential> cred_;
  const TlsOptions tls_;
  const TlsOptions other_host_tls_;
  const std::string registry_host_;
  std::atomic<bool> registry_over_plain_http_{false};

  // Lock order: mu_ is a leaf; held only for cache bookkeeping, never across I/O.
  mutable Mutex mu_;
  CondVar fetch_done_;
  std::optional<BearerRealm> realm_ IMGFS_GUARDED_BY(mu_);
  bool basic_ IMGFS_GUARDED_BY(mu_) = false;  // a Basic challenge was answered
  std::map<std::string, Token> tokens_ IMGFS_GUARDED_BY(mu_);
  std::map<std::string, bool> fetching_ IMGFS_GUARDED_BY(mu_);  // scope → fetch in flight
  uint64_t token_requests_ IMGFS_GUARDED_BY(mu_) = 0;
  std::function<Clock::time_point()> now_;
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_AUTH_H_
