// imgfs — RegistrySession: scheme, certs.d, auth rounds, redirects, retries and the HTTP
// status mapping shared by every registry request (see session.h).
#include "registry/session.h"

#include <algorithm>
#include <cctype>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/strings.h"
#include "base/thread.h"
#include "registry/backoff.h"
#include "registry/origin.h"

namespace imgfs::registry {
namespace {

// Probing the scheme is one small request; it gets its own short limit so an unanswered
// https port of an insecure registry does not hold the first request for request_timeout.
constexpr std::chrono::milliseconds kProbeTimeout{10000};

bool IsRedirect(long status, const std::string& method) {  // NOLINT(google-runtime-int)
  if (status == 307 || status == 308) return true;         // the method and body are kept
  // 301/302/303 turn a request with a body into a GET: not what an upload means.
  return (status == 301 || status == 302 || status == 303) && (method == "GET" || method == "HEAD");
}

bool IsRetryableStatus(long status) {  // NOLINT(google-runtime-int)
  return status == 429 || (status >= 500 && status <= 599);
}

// The entries of a distribution error body ({"errors":[{"code":…,"message":…}]}) as
// "CODE: message; CODE: message", or "". Control bytes become '?' (the text ends up on a
// terminal) and the result is cut at `max_bytes`.
std::string RegistryErrorDetail(const std::string& body, size_t max_bytes) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return "";
  auto errors = doc.find("errors");
  if (errors == doc.end() || !errors->is_array()) return "";
  std::string out;
  for (const nlohmann::json& e : *errors) {
    if (!e.is_object() || out.size() >= max_bytes) continue;
    auto text = [&e](const char* key) {
      auto it = e.find(key);
      return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const std::string code = text("code");
    const std::string message = text("message");
    if (code.empty() && message.empty()) continue;
    if (!out.empty()) out += "; ";
    out += code.empty() ? message : code + (message.empty() ? "" : ": " + message);
  }
  if (out.size() > max_bytes) out = out.substr(0, max_bytes) + "...";
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}

// Whether a plain-http answer comes from a registry (not, say, a TLS server answering clear
// text with 400 "Client sent an HTTP request to an HTTPS server"): 2xx or 401 (what /v2/
// answers, and a manifest or blob that exists or needs a token), or any status carrying
// distribution's marks, the Docker-Distribution-Api-Version header (distribution sends it on
// every answer) or a distribution error body (404 MANIFEST_UNKNOWN, 403 DENIED, ...).
bool LooksLikeRegistry(const HttpResponse& resp) {
  if (IsSuccessStatus(resp.status) || resp.status == 401) return true;
  if (!resp.Header("docker-distribution-api-version").empty()) return true;
  return !RegistryErrorDetail(resp.body, RegistrySession::kMaxErrorDetailBytes).empty();
}

}  // namespace

std::string RegistryEndpoint(std::string_view registry_host) {
  std::string host = ToLower(registry_host);
  return host == "docker.io" ? std::string("registry-1.docker.io") : host;
}

RegistrySession::RegistrySession(std::string_view registry_host, ConnectionOptions options)
    : registry_host_(ToLower(registry_host)),
      endpoint_(RegistryEndpoint(registry_host_)),
      options_(std::move(options)),
      tls_(WithCertsDir(options_.tls, options_.certs_dir, endpoint_)),
      other_host_tls_(OtherHostTls(options_.tls)),
      plain_http_allowed_(PlainHttpAllowed(endpoint_, options_.insecure_registries) ||
                          PlainHttpAllowed(registry_host_, options_.insecure_registries)) {
  if (options_.http == nullptr) {
    owned_http_ = std::make_unique<HttpClient>();
    http_ = owned_http_.get();
  } else {
    http_ = options_.http;
  }
  auth_ = std::make_unique<Authenticator>(http_, options_.credential, tls_, registry_host_,
                                          other_host_tls_);
}

RegistrySession::~RegistrySession() = default;

std::string RegistrySession::KnownBaseUrl() const {
  MutexLock lock(&scheme_mu_);
  return base_url_;
}

Status RegistrySession::Ping() {
  Call call;
  call.path = "/v2/";
  call.what = "ping";
  call.where = "registry " + registry_host_;
  call.authenticate = false;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
  if (resp.status == 200 || resp.status == 401) return Status::Ok();
  return HttpError(resp, call.what, call.where);
}

Status RegistrySession::CheckLogin() {
  Call call;
  call.path = "/v2/";
  call.what = "logging in to " + registry_host_;
  call.where = "registry " + endpoint_;
  call.scope = "";  // the /v2/ base endpoint: no repository scope
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
  if (resp.status == 200) return Status::Ok();
  if (resp.status == 401) {
    return Status::PermissionDenied("unauthorized: wrong username or password for " +
                                    registry_host_);
  }
  return HttpError(resp, call.what, call.where);
}

Result<HttpResponse> RegistrySession::Probe(const std::string& base_url) {
  HttpRequest req;
  req.url = base_url + "/v2/";
  req.connect_timeout = options_.connect_timeout;
  req.total_timeout = std::min(options_.request_timeout, kProbeTimeout);
  req.tls = tls_;
  req.max_body_bytes = kMaxErrorBodyBytes;
  return http_->Do(req);
}

Result<std::string> RegistrySession::ChooseScheme(const Result<HttpResponse>& tls,
                                                  const Result<HttpResponse>& plain) const {
  if (tls.has_value()) return "https://" + endpoint_;
  if (!plain.has_value()) {
    return Status::Unavailable("registry " + endpoint_ + ": no answer over https (" +
                               tls.error().message() + ") nor http (" + plain.error().message() +
                               ")");
  }
  // Not a registry over http: the https failure is the real story.
  if (!LooksLikeRegistry(*plain)) return tls.error().WithContext("registry " + endpoint_);
  return "http://" + endpoint_;
}

Result<std::string> RegistrySession::ProbeScheme() {
  Result<HttpResponse> plain = Status::Unavailable("not probed");
  std::thread plain_probe = StartThread("probe-http", [this, &plain]() -> Status {
    plain = Probe("http://" + endpoint_);
    return Status::Ok();
  });
  Result<HttpResponse> tls = Probe("https://" + endpoint_);
  plain_probe.join();  // bounded by kProbeTimeout, like the https probe
  return ChooseScheme(tls, plain);
}

bool RegistrySession::MayRace(const Call& call) {
  return (call.method == "GET" || call.method == "HEAD") && call.body.empty() && call.url.empty() &&
         !call.streaming && !call.prepare;
}

Result<std::string> RegistrySession::RaceScheme(const Call& call,
                                                std::optional<Result<HttpResponse>>* first) {
  const std::string tls_base = "https://" + endpoint_;
  const std::string plain_base = "http://" + endpoint_;
  HttpRequest plain_req = NewRequest(call, plain_base + call.path, plain_base);
  // As for the /v2/ probe: a TLS server that never answers clear text holds the call for
  // kProbeTimeout at most (the https leg has the connect timeout for its handshake).
  plain_req.total_timeout = std::min(options_.request_timeout, kProbeTimeout);
  Result<HttpResponse> plain = Status::Unavailable("not sent");
  std::thread plain_leg = StartThread("race-http", [this, &plain, &plain_req]() -> Status {
    plain = http_->Do(plain_req);
    return Status::Ok();
  });
  Result<HttpResponse> tls = http_->Do(NewRequest(call, tls_base + call.path, tls_base));
  plain_leg.join();
  Result<std::string> chosen = ChooseScheme(tls, plain);
  if (chosen.has_value()) {
    *first = *chosen == tls_base ? std::move(tls) : std::move(plain);
    return chosen;
  }
  if (!plain.has_value()) return chosen;  // neither answered
  // http answered, but not like a registry: /v2/ tells (a scripted server, or a TLS server
  // answering clear text with 400, whose https failure ProbeScheme then reports).
  IMGFS_LOG(kDebug) << call.what << ": http answer " << plain->status
                    << " shows no registry; probing /v2/";
  IMGFS_ASSIGN_OR_RETURN(std::string probed, ProbeScheme());
  if (probed == plain_base) *first = std::move(plain);  // a registry's answer after all
  return probed;
}

Result<std::string> RegistrySession::BaseUrl() { return DecideScheme(nullptr, nullptr); }

Result<std::string> RegistrySession::DecideScheme(const Call* call,
                                                  std::optional<Result<HttpResponse>>* first) {
  uint64_t probes_seen = 0;
  {
    MutexLock lock(&scheme_mu_);
    if (!base_url_.empty()) return base_url_;
    probes_seen = probes_done_;
  }
  if (!plain_http_allowed_) {
    MutexLock lock(&scheme_mu_);
    return DecideLocked("https://" + endpoint_);
  }
  // One decision at a time: requests that start together (a mount's layers) wait for one
  // race or probe and take its outcome, a failure too, instead of each deciding.
  MutexLock probing(&probe_mu_);
  {
    MutexLock lock(&scheme_mu_);
    if (!base_url_.empty()) return base_url_;
    if (probes_done_ != probes_seen) return last_probe_error_;
  }
  Result<std::string> chosen =
      call != nullptr && MayRace(*call) ? RaceScheme(*call, first) : ProbeScheme();
  MutexLock lock(&scheme_mu_);
  // The outcome and the count change in one step, so a waiter sees both or neither.
  ++probes_done_;
  if (!chosen.has_value()) {
    last_probe_error_ = chosen.error();
    return chosen.error();
  }
  return DecideLocked(*chosen);
}

std::string RegistrySession::DecideLocked(const std::string& chosen) {
  if (base_url_.empty()) {
    base_url_ = chosen;
    // Plain-http token realms are acceptable only for a registry spoken to in clear text.
    auth_->SetRegistryOverPlainHttp(base_url_.starts_with("http://"));
  }
  return base_url_;
}

std::chrono::milliseconds RegistrySession::BudgetFor(uint64_t bytes,
                                                     int64_t bytes_per_second) const {
  // Saturating: a size near 2^63 gives "no budget" rather than an overflow.
  const auto rate = static_cast<uint64_t>(bytes_per_second);
  const uint64_t ms = bytes / rate * 1000 + bytes % rate * 1000 / rate;
  const auto base = static_cast<uint64_t>(options_.request_timeout.count());
  constexpr uint64_t kMaxMs = uint64_t{1} << 40;  // ~35 years: beyond it, no budget at all
  if (ms >= kMaxMs || base >= kMaxMs) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(static_cast<int64_t>(base + ms));
}

void RegistrySession::Backoff(int retry, const HttpResponse* response) const {
  const auto delay = RetryDelay(retry, options_.base_backoff, options_.max_backoff, response);
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
}

HttpRequest RegistrySession::NewRequest(const Call& call, const std::string& url,
                                        const std::string& base_url) const {
  HttpRequest req;
  req.method = call.method;
  req.url = url;
  req.headers = call.headers;
  req.body = call.body;
  req.connect_timeout = options_.connect_timeout;
  if (call.streaming) {
    req.total_timeout = call.stream_budget;
  } else {
    req.total_timeout = call.body.size() > kLargeBodyBytes ? std::chrono::milliseconds(0)
                                                           : options_.request_timeout;
  }
  req.low_speed_bytes = call.min_bytes_per_second;
  req.low_speed_time = options_.low_speed_time;
  req.max_body_bytes = call.max_body_bytes;
  // certs.d material only for the registry's own host and port (blob storage, CDNs and
  // token servers get the explicit --ca-cert CAs only).
  req.tls = IsRegistryHostPort(url, base_url) ? tls_ : other_host_tls_;
  return req;
}

Result<HttpResponse> RegistrySession::Attempt(Call& call, const std::string& base_url,
                                              std::optional<Result<HttpResponse>> first) {
  const std::string start_url = call.url.empty() ? base_url + call.path : call.url;
  std::string url = start_url;
  bool from_cache = false;
  if (call.cache_redirect && !first.has_value()) {
    MutexLock lock(&redirect_mu_);
    auto it = redirects_.find(start_url);
    if (it != redirects_.end()) {
      if (it->second.expires > std::chrono::steady_clock::now()) {
        url = it->second.url;
        from_cache = true;
      } else {
        redirects_.erase(it);
      }
    }
  }
  auto forget_redirect = [&] {
    MutexLock lock(&redirect_mu_);
    redirects_.erase(start_url);
  };
  int hops = 0;
  int challenges = 0;
  while (true) {
    // Credentials only for the registry's origin.
    const bool same_origin = MayCarryCredentials(url, base_url, plain_http_allowed_);
    std::string auth_line;
    Result<HttpResponse> result = Status::Internal("no answer");
    if (first.has_value()) {
      // Sent by the scheme race: no Authorization, no prepare (MayRace), as answered.
      result = std::move(*first);
      first.reset();
    } else {
      HttpRequest req = NewRequest(call, url, base_url);
      if (call.authenticate && same_origin) {
        auth_line = auth_->HeaderFor(call.scope);
        if (!auth_line.empty()) req.headers.push_back(auth_line);
      }
      if (call.prepare) call.prepare(req);
      result = http_->Do(req);
    }
    if (from_cache && (!result.has_value() || !IsSuccessStatus(result->status))) {
      // The remembered URL no longer works (expired, moved, unreachable): start over at
      // the registry. Nothing reached a sink (sinks only see 2xx bodies).
      if (!result.has_value() && result.error().code() != StatusCode::kUnavailable) {
        return result.error();  // a sink's verdict, not the URL's fault
      }
      forget_redirect();
      IMGFS_LOG(kDebug) << call.what << ": cached redirect target failed; asking the registry";
      from_cache = false;
      url = start_url;
      continue;
    }
    IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, std::move(result));
    if (resp.status == 401 && call.authenticate && same_origin && challenges < kMaxAuthRounds) {
      ++challenges;
      Status st = auth_->OnChallenge(resp.www_authenticate, call.scope, auth_line);
      if (!st.ok()) return st.WithContext(call.what);
      continue;
    }
    if (IsRedirect(resp.status, call.method)) {
      const std::string location = resp.Header("location");
      if (location.empty()) return resp;
      if (++hops > kMaxRedirects) {
        return Status::Corrupt(call.what + " (" + call.where + "): more than " +
                               std::to_string(kMaxRedirects) + " redirects");
      }
      const std::string next = ResolveUrl(url, location);
      if (IsSchemeDowngrade(url, next) && call.authenticate &&
          !MayCarryCredentials(next, base_url, plain_http_allowed_)) {
        // Followed (the bytes are verified by digest), but without the Authorization header.
        IMGFS_LOG(kInfo) << call.what << ": redirected from https to plain http on host "
                         << UrlHostPort(next) << "; following without credentials";
      }
      url = next;
      IMGFS_LOG(kDebug) << call.what << ": redirected to host " << UrlHostPort(url);
      continue;
    }
    if (hops > 0 && !same_origin && (resp.status == 401 || resp.status == 403)) {
      // Blob storage refusing a URL the registry just signed: most likely expired.
      return Status::Unavailable(call.what + " (" + call.where + "): redirect target " +
                                 UrlHostPort(url) + " refused access: HTTP " +
                                 std::to_string(resp.status));
    }
    if (hops > 0 && call.cache_redirect && !same_origin && IsSuccessStatus(resp.status)) {
      MutexLock lock(&redirect_mu_);
      redirects_[start_url] = {url, std::chrono::steady_clock::now() + kRedirectTtl};
    }
    return resp;
  }
}

Result<HttpResponse> RegistrySession::Execute(Call& call) {
  const int attempts = call.retry ? std::max(1, options_.max_attempts) : 1;
  Status last;
  std::optional<HttpResponse> last_response;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) {
      IMGFS_LOG(kInfo) << call.what << " (" << call.where << "): attempt " << attempt - 1
                       << " failed: " << last.message() << "; retrying";
      Backoff(attempt - 1, last_response ? &*last_response : nullptr);
    }
    last_response.reset();
    std::optional<Result<HttpResponse>> first;  // the first hop's answer, when raced
    Result<std::string> base = DecideScheme(&call, &first);
    if (!base.has_value()) {
      last = base.error();
      if (last.code() == StatusCode::kUnavailable) continue;
      return last;
    }
    Result<HttpResponse> resp = Attempt(call, *base, std::move(first));
    if (!resp.has_value()) {
      last = resp.error();
      const bool retry =
          call.retryable ? call.retryable(last) : last.code() == StatusCode::kUnavailable;
      if (retry) continue;
      return last;
    }
    if (IsRetryableStatus(resp->status) && resp->status != call.final_status) {
      last = HttpError(*resp, call.what, call.where);
      resp->body.clear();
      last_response = std::move(*resp);
      continue;
    }
    if (IsSuccessStatus(resp->status) && call.finish) {
      Status st = call.finish(*resp);
      if (!st.ok()) {
        last = st;
        if (st.code() == StatusCode::kUnavailable) continue;
        return st;
      }
    }
    return resp;
  }
  return Status(last.code(), last.message() + " (gave up after " + std::to_string(attempts) +
                                 (attempts == 1 ? " attempt)" : " attempts)"));
}

Status RegistrySession::HttpError(const HttpResponse& response, const std::string& what,
                                  const std::string& where) const {
  const std::string detail = RegistryErrorDetail(response.body, kMaxErrorDetailBytes);
  const long status = response.status;  // NOLINT(google-runtime-int): libcurl's type
  std::string text = what + " (" + where + "): HTTP " + std::to_string(status);
  if (!detail.empty()) text += ": " + detail;
  auto has_code = [&detail](std::string_view code) {
    return detail.find(code) != std::string::npos;
  };
  if (status == 401) {
    return Status::PermissionDenied("unauthorized: " + text + "; run `imgfs login " +
                                    registry_host_ + "`");
  }
  if (status == 403) return Status::PermissionDenied("denied: " + text);
  if (has_code("DIGEST_INVALID") || has_code("SIZE_INVALID")) {
    return Status::Corrupt("the registry rejected the content: " + text);
  }
  if (status == 404 || has_code("BLOB_UNKNOWN")) return Status::NotFound(text);
  if (IsRetryableStatus(status)) return Status::Unavailable(text);
  if (status == 405 || status == 501) return Status::Unsupported(text);
  if (status >= 400 && status < 500) return Status::InvalidArgument(text);
  return Status::Unsupported(text);
}

}  // namespace imgfs::registry
