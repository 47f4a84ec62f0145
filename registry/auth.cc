// imgfs — registry authentication (see auth.h).
#include "registry/auth.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "base/log.h"
#include "base/strings.h"
#include "registry/origin.h"

namespace imgfs::registry {
namespace {

// A 401 within this time after a token was fetched for a challenge, when the caller cannot
// say which token was rejected, is taken as a rejection of that token (auth.h).
constexpr std::chrono::seconds kJustObtained{10};
// distribution `docs/spec/auth/token.md`: "expires_in … if omitted, 60 seconds".
constexpr int64_t kDefaultExpiresInS = 60;
// Refresh once this fraction of a token's lifetime has passed (FORMATS.md §2.5: ~80 %).
constexpr double kRefreshFraction = 0.8;
// A token endpoint that takes longer is treated as unavailable.
constexpr std::chrono::milliseconds kTokenTimeout{30000};

bool IsTChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken68Char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("-._~+/").find(c) != std::string_view::npos;
}

// RFC 7230 §3.2.6 / RFC 7235 §2.1 scanner over one header value.
class ChallengeParser {
 public:
  explicit ChallengeParser(std::string_view text) : s_(text) {}

  Result<std::vector<Challenge>> Parse() {
    std::vector<Challenge> out;
    while (true) {
      SkipListSeparators();
      if (AtEnd()) break;
      std::string_view scheme = ReadToken();
      if (scheme.empty()) return Error("expected an authentication scheme");
      Challenge challenge;
      challenge.scheme = ToLower(scheme);
      size_t spaces = SkipSpaces();
      if (AtEnd() || Peek() == ',') {
        out.push_back(std::move(challenge));
        continue;
      }
      if (spaces == 0) return Error("expected a space after the scheme");
      if (TryToken68(&challenge.token68)) {
        out.push_back(std::move(challenge));
        continue;
      }
      Status params = ParseParams(&challenge);
      if (!params.ok()) return params;
      out.push_back(std::move(challenge));
    }
    return out;
  }

 private:
  bool AtEnd() const { return pos_ >= s_.size(); }
  char Peek() const { return s_[pos_]; }

  Status Error(std::string_view what) const {
    return Status::InvalidArgument("malformed WWW-Authenticate header: " + std::string(what) +
                                   " at offset " + std::to_string(pos_));
  }

  size_t SkipSpaces() {
    size_t start = pos_;
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t')) ++pos_;
    return pos_ - start;
  }

  void SkipListSeparators() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == ',')) ++pos_;
  }

  std::string_view ReadToken() {
    size_t start = pos_;
    while (!AtEnd() && IsTChar(Peek())) ++pos_;
    return s_.substr(start, pos_ - start);
  }

  // token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=", and it must be
  // the whole challenge body (followed by the end or a comma).
  bool TryToken68(std::string* token68) {
    size_t start = pos_;
    size_t p = pos_;
    while (p < s_.size() && IsToken68Char(s_[p])) ++p;
    if (p == start) return false;
    while (p < s_.size() && s_[p] == '=') ++p;
    size_t end = p;
    while (p < s_.size() && (s_[p] == ' ' || s_[p] == '\t')) ++p;
    if (p < s_.size() && s_[p] != ',') return false;
    *token68 = std::string(s_.substr(start, end - start));
    pos_ = p;
    return true;
  }

  Result<std::string> ReadQuoted() {
    ++pos_;  // opening quote
    std::string value;
    while (!AtEnd()) {
      char c = Peek();
      ++pos_;
      if (c == '"') return value;
      if (c == '\\') {
        if (AtEnd()) break;
        c = Peek();
        ++pos_;
      }
      auto uc = static_cast<unsigned char>(c);
      if ((uc < 0x20 && c != '\t') || uc == 0x7f) return Error("control character in a quote");
      value.push_back(c);
    }
    return Error("unterminated quoted string");
  }

  // #auth-param after the scheme. Stops before the next challenge (a token not followed by
  // "=") or at the end.
  Status ParseParams(Challenge* challenge) {
    while (true) {
      std::string_view name = ReadToken();
      if (name.empty()) return Error("expected a parameter name");
      SkipSpaces();
      if (AtEnd() || Peek() != '=') return Error("expected '=' after a parameter name");
      ++pos_;
      SkipSpaces();
      std::string value;
      if (!AtEnd() && Peek() == '"') {
        Result<std::string> quoted = ReadQuoted();
        if (!quoted.has_value()) return quoted.error();
        value = std::move(*quoted);
      } else {
        std::string_view token = ReadToken();
        if (token.empty()) return Error("expected a parameter value");
        value = std::string(token);
      }
      if (!challenge->params.emplace(ToLower(name), std::move(value)).second) {
        return Error("parameter repeated");
      }
      SkipSpaces();
      if (AtEnd()) return Status::Ok();
      if (Peek() != ',') return Error("expected ',' after a parameter");
      SkipListSeparators();
      if (AtEnd()) return Status::Ok();
      // Another parameter ("name =") or the next challenge ("Scheme ...")?
      size_t mark = pos_;
      std::string_view next = ReadToken();
      SkipSpaces();
      bool is_param = !next.empty() && !AtEnd() && Peek() == '=';
      pos_ = mark;
      if (!is_param) return Status::Ok();
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
};

std::string Base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

bool HasPassword(const std::optional<Credential>& cred) {
  return cred.has_value() && !cred->username.empty() && !cred->password.empty();
}

std::string JoinScopes(const std::vector<std::string>& scopes) {
  std::string out;
  for (const std::string& s : scopes) {
    if (s.empty()) continue;
    if (!out.empty()) out += ' ';
    out += s;
  }
  return out.empty() ? "(none)" : out;
}

// Splits a scope parameter ("a b") into its scopes.
std::vector<std::string> SplitScopes(std::string_view text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    if (end > pos) out.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

}  // namespace

Result<std::vector<Challenge>> ParseWwwAuthenticate(std::string_view header_value) {
  return ChallengeParser(header_value).Parse();
}

Result<std::vector<Challenge>> ParseWwwAuthenticate(const std::vector<std::string>& header_values) {
  std::vector<Challenge> all;
  for (const std::string& value : header_values) {
    IMGFS_ASSIGN_OR_RETURN(std::vector<Challenge> some, ParseWwwAuthenticate(value));
    for (Challenge& c : some) all.push_back(std::move(c));
  }
  return all;
}

Authenticator::Authenticator(HttpClient* http, std::optional<Credential> cred, TlsOptions tls,
                             std::string registry_host, TlsOptions other_host_tls)
    : http_(http),
      cred_(std::move(cred)),
      tls_(std::move(tls)),
      other_host_tls_(std::move(other_host_tls)),
      registry_host_(std::move(registry_host)) {}

void Authenticator::SetRegistryOverPlainHttp(bool plain_http) {
  registry_over_plain_http_.store(plain_http, std::memory_order_relaxed);
}

uint64_t Authenticator::token_requests() const {
  MutexLock lock(&mu_);
  return token_requests_;
}

void Authenticator::SetClockForTesting(std::function<Clock::time_point()> now) {
  MutexLock lock(&mu_);
  now_ = std::move(now);
}

Authenticator::Clock::time_point Authenticator::Now() const {
  std::function<Clock::time_point()> now;
  {
    MutexLock lock(&mu_);
    now = now_;
  }
  return now ? now() : Clock::now();
}

std::string Authenticator::Host(const std::string& realm_url) const {
  // Docker Hub's API host is registry-1.docker.io; users log in to "docker.io".
  if (NormalizeRegistryHost(registry_host_) == "docker.io") return "docker.io";
  if (!registry_host_.empty()) return registry_host_;
  std::string host = UrlHostPort(realm_url);
  return host.empty() ? "the registry" : host;
}

std::string Authenticator::HeaderFor(const std::string& scope) {
  Clock::time_point now = Now();
  std::optional<BearerRealm> realm;
  std::string fallback;
  {
    MutexLock lock(&mu_);
    auto it = tokens_.find(scope);
    if (it != tokens_.end()) {
      if (now < it->second.refresh_at) return it->second.header;
      if (now < it->second.expires_at) fallback = it->second.header;
    }
    if (!realm_.has_value()) {
      if (basic_ && HasPassword(cred_)) {
        return "Authorization: Basic " + Base64(cred_->username + ":" + cred_->password);
      }
      return "";
    }
    realm = realm_;
  }
  // A realm is known: fetch (or refresh) up front instead of waiting for the 401.
  Result<std::string> header = ObtainToken(scope, *realm, {scope}, /*from_challenge=*/false);
  if (header.has_value()) return *header;
  IMGFS_LOG(kInfo) << "token for " << Host(realm->realm) << " (" << JoinScopes({scope})
                   << ") not refreshed up front: " << header.error().ToString();
  return fallback;
}

Status Authenticator::OnChallenge(const std::vector<std::string>& www_authenticate,
                                  const std::string& scope,
                                  const std::optional<std::string>& rejected_header) {
  Result<std::vector<Challenge>> parsed = ParseWwwAuthenticate(www_authenticate);
  if (!parsed.has_value()) {
    return Status::Corrupt("registry " + Host("") + " answered 401 with " +
                           parsed.error().message());
  }
  const Challenge* bearer = nullptr;
  const Challenge* basic = nullptr;
  for (const Challenge& c : *parsed) {
    if (c.scheme == "bearer" && bearer == nullptr) bearer = &c;
    if (c.scheme == "basic" && basic == nullptr) basic = &c;
  }

  if (bearer != nullptr) {
    auto realm_it = bearer->params.find("realm");
    if (realm_it == bearer->params.end() || realm_it->second.empty()) {
      return Status::Corrupt("registry " + Host("") + " sent a Bearer challenge without a realm");
    }
    BearerRealm realm{realm_it->second, ""};
    if (auto it = bearer->params.find("service"); it != bearer->params.end()) {
      realm.service = it->second;
    }
    if (Status st = CheckTokenRealm(realm.realm, registry_host_,
                                    registry_over_plain_http_.load(std::memory_order_relaxed));
        !st.ok()) {
      if (st.code() == StatusCode::kCorrupt) {
        return Status::Corrupt("registry " + Host("") + " sent an unusable token realm");
      }
      return st.WithContext("registry " + Host(realm.realm));
    }
    std::vector<std::string> scopes{scope};
    if (auto it = bearer->params.find("scope"); it != bearer->params.end()) {
      for (std::string& s : SplitScopes(it->second)) {
        if (std::find(scopes.begin(), scopes.end(), s) == scopes.end()) {
          scopes.push_back(std::move(s));
        }
      }
    }
    std::string error;
    if (auto it = bearer->params.find("error"); it != bearer->params.end()) error = it->second;

    Clock::time_point now = Now();
    {
      MutexLock lock(&mu_);
      realm_ = realm;
      auto it = tokens_.find(scope);
      if (it != tokens_.end()) {
        const Token& token = it->second;
        bool rejected_this = rejected_header.has_value() ? *rejected_header == token.header
                                                         : now - token.obtained_at < kJustObtained;
        if (rejected_header.has_value() && rejected_header->empty() && now < token.expires_at) {
          return Status::Ok();  // the request carried no token, but one is here now
        }
        if (rejected_header.has_value() && !rejected_this && now < token.expires_at) {
          return Status::Ok();  // another thread replaced the rejected token already
        }
        if (rejected_this && token.from_challenge && now - token.obtained_at < kJustObtained) {
          tokens_.erase(it);
          if (!cred_.has_value()) {
            return Status::PermissionDenied("authentication required: run `imgfs login " +
                                            Host(realm.realm) + "`");
          }
          return Status::PermissionDenied(
              "denied: " + Host(realm.realm) + " refused access to " + JoinScopes({scope}) +
              (error.empty() ? "" : " (" + error + ")") + " with the configured credentials");
        }
        tokens_.erase(it);
      }
    }
    Result<std::string> header = ObtainToken(scope, realm, scopes, /*from_challenge=*/true);
    return header.error();
  }

  if (basic != nullptr) {
    std::string host = Host("");
    if (!HasPassword(cred_)) {
      return Status::PermissionDenied("authentication required: run `imgfs login " + host + "`");
    }
    std::string header = "Authorization: Basic " + Base64(cred_->username + ":" + cred_->password);
    MutexLock lock(&mu_);
    bool rejected_this = rejected_header.has_value() ? *rejected_header == header : basic_;
    if (rejected_this) {
      return Status::PermissionDenied("unauthorized: wrong username or password for " + host);
    }
    basic_ = true;
    return Status::Ok();
  }

  std::string schemes;
  for (const Challenge& c : *parsed) schemes += (schemes.empty() ? "" : ", ") + c.scheme;
  return Status::Unsupported("registry " + Host("") + " asks for unsupported authentication (" +
                             (schemes.empty() ? std::string("no challenge") : schemes) + ")");
}

Result<std::string> Authenticator::ObtainToken(const std::string& scope, const BearerRealm& realm,
                                               const std::vector<std::string>& scopes,
                                               bool from_challenge) {
  {
    MutexLock lock(&mu_);
    auto fresh = [&]() -> const Token* {
      mu_.AssertHeld();  // called only under the lock above
      auto it = tokens_.find(scope);
      if (it != tokens_.end() && (now_ ? now_() : Clock::now()) < it->second.refresh_at) {
        return &it->second;
      }
      return nullptr;
    };
    // A caller that found no usable token may have lost the race to one that fetched it since.
    if (!from_challenge) {
      if (const Token* t = fresh()) return t->header;
    }
    while (fetching_[scope]) {
      fetch_done_.Wait(&mu_);
      if (fetching_[scope]) continue;
      // A concurrent fetch finished; use its token unless it failed.
      if (const Token* t = fresh()) return t->header;
    }
    fetching_[scope] = true;
  }
  Result<Token> token = FetchToken(realm, scopes);
  MutexLock lock(&mu_);
  fetching_.erase(scope);
  fetch_done_.SignalAll();
  if (!token.has_value()) return token.error();
  token->from_challenge = from_challenge;
  std::string header = token->header;
  tokens_[scope] = std::move(*token);
  return header;
}

Result<Authenticator::Token> Authenticator::FetchToken(const BearerRealm& realm,
                                                       const std::vector<std::string>& scopes) {
  const std::string host = Host(realm.realm);
  const std::string realm_host = UrlHostPort(realm.realm);
  Clock::time_point start = Now();

  auto make_get = [&]() {
    HttpRequest request;
    request.method = "GET";
    std::string url = realm.realm;
    char sep = url.find('?') == std::string::npos ? '?' : '&';
    if (!realm.service.empty()) {
      url += sep;
      url += "service=" + UrlEncode(realm.service);
      sep = '&';
    }
    for (const std::string& s : scopes) {
      if (s.empty()) continue;
      url += sep;
      url += "scope=" + UrlEncode(s);
      sep = '&';
    }
    request.url = std::move(url);
    if (cred_.has_value() && !cred_->username.empty() && !cred_->password.empty()) {
      request.headers.push_back("Authorization: Basic " +
                                Base64(cred_->username + ":" + cred_->password));
    }
    return request;
  };

  HttpRequest request;
  bool oauth = cred_.has_value() && !cred_->identity_token.empty();
  if (oauth) {
    request.method = "POST";
    request.url = realm.realm;
    request.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    std::string scope_text;
    for (const std::string& s : scopes) {
      if (s.empty()) continue;
      scope_text += (scope_text.empty() ? "" : " ") + s;
    }
    request.body = "grant_type=refresh_token&client_id=imgfs&access_type=offline&service=" +
                   UrlEncode(realm.service) + "&refresh_token=" + UrlEncode(cred_->identity_token);
    if (!scope_text.empty()) request.body += "&scope=" + UrlEncode(scope_text);
  } else {
    request = make_get();
  }

  Result<HttpResponse> response = Status::Internal("no token request sent");
  for (int attempt = 0; attempt < 2; ++attempt) {
    // The registry's certs.d material only when the token server is the registry itself.
    request.tls =
        !registry_host_.empty() && IsRegistryHostPort(realm.realm, "https://" + registry_host_)
            ? tls_
            : other_host_tls_;
    request.total_timeout = kTokenTimeout;
    {
      MutexLock lock(&mu_);
      ++token_requests_;
    }
    IMGFS_LOG(kDebug) << request.method << " token from " << realm_host << " for "
                      << JoinScopes(scopes);
    response = http_->Do(request);
    if (!response.has_value()) {
      return response.error().WithContext("token request to " + realm_host);
    }
    if (oauth && attempt == 0 && (response->status == 404 || response->status == 405)) {
      request = make_get();  // no OAuth2 endpoint: docker's GET flow
      continue;
    }
    break;
  }

  long status = response->status;  // NOLINT(google-runtime-int): libcurl's type
  if (status == 401) {
    if (cred_.has_value()) {
      return Status::PermissionDenied("unauthorized: wrong username or password for " + host);
    }
    return Status::PermissionDenied("authentication required: run `imgfs login " + host + "`");
  }
  if (status == 403) {
    return Status::PermissionDenied("denied: the token server of " + host + " refused access to " +
                                    JoinScopes(scopes));
  }
  if (status == 408 || status == 429 || status >= 500) {
    return Status::Unavailable("token server " + realm_host + " answered HTTP " +
                               std::to_string(status));
  }
  if (status != 200) {
    return Status::Corrupt("token server " + realm_host + " answered HTTP " +
                           std::to_string(status));
  }

  nlohmann::json doc = nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Corrupt("token server " + realm_host + " answered with invalid JSON");
  }
  std::string token;
  for (const char* key : {"token", "access_token"}) {
    auto it = doc.find(key);
    if (it != doc.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
      token = it->get<std::string>();
      break;
    }
  }
  if (token.empty()) {
    return Status::Corrupt("token server " + realm_host + " answered without a token");
  }
  if (token.find_first_of("\r\n") != std::string::npos) {
    return Status::Corrupt("token server " + realm_host + " answered with a malformed token");
  }
  int64_t expires_in_s = kDefaultExpiresInS;
  if (auto it = doc.find("expires_in"); it != doc.end() && it->is_number()) {
    double v = it->get<double>();
    // Clamp to a day: longer lifetimes buy nothing and overflow nothing.
    if (v > 0) expires_in_s = static_cast<int64_t>(std::min(v, 86400.0));
  }
  // issued_at is not used: lifetimes count from when we asked, which is immune to clock skew
  // between us and the token server (and errs on the early side).
  Token out;
  out.header = "Authorization: Bearer " + token;
  out.obtained_at = start;
  auto lifetime = std::chrono::milliseconds(expires_in_s * 1000);
  out.expires_at = start + lifetime;
  out.refresh_at = start + std::chrono::duration_cast<Clock::duration>(lifetime * kRefreshFraction);
  return out;
}

}  // namespace imgfs::registry
