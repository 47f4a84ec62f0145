// imgfs — RemoteSource implementation: distribution API requests with retry, redirect,
// auth and verification policy.
#include "registry/remote_source.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/strings.h"
#include "registry/backoff.h"
#include "registry/digest.h"
#include "registry/media_types.h"
#include "registry/multipart_ranges.h"
#include "registry/origin.h"

namespace imgfs::registry {
namespace {

// Pages asked of /tags/list; distribution caps n at 1000 by default.
constexpr int kTagsPageSize = 1000;
// Refuse to follow more pages than this (a loop in Link headers).
constexpr int kMaxTagPages = 10000;

std::string ToLower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

bool IsRedirect(long status) {  // NOLINT(google-runtime-int)
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool IsSuccess(long status) {  // NOLINT(google-runtime-int)
  return status >= 200 && status < 300;
}

bool IsRetryableStatus(long status) {  // NOLINT(google-runtime-int)
  return status == 429 || (status >= 500 && status <= 599);
}

// The first position of a 206's Content-Range ("bytes 10-20/300" → 10), through the bounded
// parser of multipart_ranges.h: numbers of more than 19 digits or above 2^63-1 are Corrupt,
// never an overflow.
Result<uint64_t> ContentRangeStart(const std::string& value) {
  IMGFS_ASSIGN_OR_RETURN(ContentRange range, ParseContentRange(value));
  return range.first;
}

// The URL of rel="next" in a Link header value, or "".
std::string NextLink(std::string_view link) {
  // Link: <url>; rel="next"[, <url2>; rel="prev"]
  while (!link.empty()) {
    const size_t open = link.find('<');
    const size_t close = link.find('>', open);
    if (open == std::string_view::npos || close == std::string_view::npos) return "";
    std::string_view url = link.substr(open + 1, close - open - 1);
    link.remove_prefix(close + 1);
    const size_t next_entry = link.find('<');
    std::string params = ToLower(link.substr(0, next_entry));
    if (params.find("rel=\"next\"") != std::string::npos ||
        params.find("rel=next") != std::string::npos) {
      return std::string(url);
    }
    if (next_entry == std::string_view::npos) break;
    link.remove_prefix(next_entry);
  }
  return "";
}

// "code: message" of the first entry of a distribution error body, or "".
std::string RegistryErrorDetail(const std::string& body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return "";
  auto errors = doc.find("errors");
  if (errors == doc.end() || !errors->is_array() || errors->empty()) return "";
  const nlohmann::json& first = (*errors)[0];
  if (!first.is_object()) return "";
  std::string out;
  auto code = first.find("code");
  if (code != first.end() && code->is_string()) out = code->get<std::string>();
  auto message = first.find("message");
  if (message != first.end() && message->is_string()) {
    if (!out.empty()) out += ": ";
    out += message->get<std::string>();
  }
  return out;
}

// Registry hosts that refused a multi-range request, for the whole process: a refusal is a
// property of the registry (or the proxy in front of it), not of one repository or mount.
std::mutex& RefusalMu() {
  static std::mutex mu;
  return mu;
}
std::set<std::string>& RefusingHosts() {
  static std::set<std::string> hosts;  // guarded by RefusalMu(), a leaf lock
  return hosts;
}

// "a-b,c-d,..." for a Range header.
std::string RangeSpec(const std::vector<ByteRange>& ranges) {
  std::string spec;
  for (const ByteRange& r : ranges) {
    if (!spec.empty()) spec += ',';
    spec += std::to_string(r.offset) + "-" + std::to_string(r.end() - 1);
  }
  return spec;
}

}  // namespace

// The outcome of one multi-range request.
struct RemoteSource::MultiRangeAnswer {
  std::vector<std::string> ranges;  // one per asked range, when !refused
  bool refused = false;
  // The registry does not do multi-range (not a one-off broken body): remember the host.
  // Also set with !refused when a 200 with the whole blob served this call.
  bool remember = false;
  std::string why;
};

// One logical request and the hooks its retries need.
struct RemoteSource::Call {
  std::string method = "GET";
  std::string path;  // "/v2/…" relative to the base URL
  std::string url;   // absolute URL instead of path (pagination links), may be ""
  std::vector<std::string> headers;
  std::string what;        // for messages: "GET manifest demo/app:1"
  bool streaming = false;  // no request_timeout; the minimum rates below instead
  // Low-speed floor of each attempt, bytes/s over low_speed_time.
  int64_t min_bytes_per_second = kMinBytesPerSecond;
  // For streaming calls: the whole-attempt budget (0 = none); request_timeout plus the
  // expected bytes at the minimum rate, so slow bursts cannot stretch it without bound.
  std::chrono::milliseconds stream_budget{0};
  bool authenticate = true;          // send Authorization / answer 401 challenges
  std::optional<std::string> scope;  // the auth scope; nullopt = Scope() (pull)
  bool cache_redirect = false;       // remember the redirect target (blob GETs)
  size_t max_body_bytes = 64u << 20;
  // A 5xx status that is an answer, not a transient failure (501 to a multi-range request).
  long final_status = 0;  // NOLINT(google-runtime-int): libcurl's type
  // Sets up an attempt (range, sink, ...); called before every attempt.
  std::function<void(HttpRequest&)> prepare;
  // Whether an error Status from the transport may be retried (default: Unavailable).
  std::function<bool(const Status&)> retryable;
  // Checks a 2xx answer; an Unavailable result retries, any other error is returned.
  std::function<Status(const HttpResponse&)> finish;
};

RemoteSource::RemoteSource(std::string registry_host, std::string repository,
                           RemoteSourceOptions options)
    : host_(ToLower(registry_host)),
      repository_(std::move(repository)),
      options_(std::move(options)),
      tls_(WithCertsDir(options_.tls, options_.certs_dir, host_)),
      other_host_tls_(OtherHostTls(options_.tls)),
      plain_http_allowed_(PlainHttpAllowed(host_, options_.insecure_registries)) {
  if (options_.http == nullptr) {
    owned_http_ = std::make_unique<HttpClient>();
    http_ = owned_http_.get();
  } else {
    http_ = options_.http;
  }
  auth_ = std::make_unique<Authenticator>(http_, options_.credential, tls_, host_, other_host_tls_);
}

RemoteSource::~RemoteSource() = default;

std::unique_ptr<RemoteSource> RemoteSource::Create(const Reference& ref,
                                                   RemoteSourceOptions options) {
  return Create(ref.Endpoint(), ref.path(), std::move(options));
}

std::unique_ptr<RemoteSource> RemoteSource::Create(std::string registry_host,
                                                   std::string repository,
                                                   RemoteSourceOptions options) {
  return std::unique_ptr<RemoteSource>(
      new RemoteSource(std::move(registry_host), std::move(repository), std::move(options)));
}

std::string RemoteSource::Describe() const {
  return "registry " + host_ + ", repository " + repository_;
}

std::string RemoteSource::BaseUrl() const {
  std::scoped_lock lock(scheme_mu_);
  return base_url_;
}

Status RemoteSource::Ping() {
  Call call;
  call.path = "/v2/";
  call.what = "ping";
  call.authenticate = false;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
  if (resp.status == 200 || resp.status == 401) return Status::Ok();
  return HttpError(resp, "ping");
}

Status RemoteSource::CheckLogin() {
  Call call;
  call.path = "/v2/";
  call.what = "logging in to " + host_;
  call.scope = "";  // the /v2/ base endpoint: no repository scope
  call.max_body_bytes = 1u << 20;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
  if (resp.status == 200) return Status::Ok();
  if (resp.status == 401) {
    return Status::PermissionDenied("unauthorized: wrong username or password for " + host_);
  }
  return HttpError(resp, call.what);
}

Result<HttpResponse> RemoteSource::DoPing(const std::string& base_url) {
  HttpRequest req;
  req.url = base_url + "/v2/";
  req.connect_timeout = options_.connect_timeout;
  req.total_timeout = options_.request_timeout;
  req.tls = tls_;
  req.max_body_bytes = 1u << 20;
  return http_->Do(req);
}

Result<std::string> RemoteSource::EnsureBaseUrl() {
  {
    std::scoped_lock lock(scheme_mu_);
    if (!base_url_.empty()) return base_url_;
  }
  std::string chosen = "https://" + host_;
  if (plain_http_allowed_) {
    // Probe without holding the lock; two racing probes decide the same way.
    Result<HttpResponse> tls = DoPing(chosen);
    if (!tls.has_value()) {
      Result<HttpResponse> plain = DoPing("http://" + host_);
      if (!plain.has_value()) {
        return Status::Unavailable(Describe() + ": no answer over https (" + tls.error().message() +
                                   ") nor http (" + plain.error().message() + ")");
      }
      if (plain->status != 200 && plain->status != 401) {
        // Not a registry over http (typically a TLS server answering 400 "Client sent an
        // HTTP request to an HTTPS server"): the https failure is the real story.
        return tls.error().WithContext(Describe());
      }
      chosen = "http://" + host_;
    }
  }
  std::scoped_lock lock(scheme_mu_);
  if (base_url_.empty()) {
    base_url_ = chosen;
    // Plain-http token realms are acceptable only for a registry spoken to in clear text.
    auth_->SetRegistryOverPlainHttp(base_url_.starts_with("http://"));
  }
  return base_url_;
}

std::chrono::milliseconds RemoteSource::BudgetFor(uint64_t bytes, int64_t bytes_per_second) const {
  // Saturating: a size near 2^63 gives "no budget" rather than an overflow.
  const uint64_t ms = bytes / static_cast<uint64_t>(bytes_per_second) * 1000 +
                      bytes % static_cast<uint64_t>(bytes_per_second) * 1000 /
                          static_cast<uint64_t>(bytes_per_second);
  const auto base = static_cast<uint64_t>(options_.request_timeout.count());
  constexpr uint64_t kMaxMs = uint64_t{1} << 40;  // ~35 years: beyond it, no budget at all
  if (ms >= kMaxMs || base >= kMaxMs) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(static_cast<int64_t>(base + ms));
}

void RemoteSource::Backoff(int attempt, const HttpResponse* response) const {
  const auto delay = RetryDelay(attempt, options_.base_backoff, options_.max_backoff, response);
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
}

Result<HttpResponse> RemoteSource::Attempt(Call& call, const std::string& base_url) {
  const std::string start_url = call.url.empty() ? base_url + call.path : call.url;
  std::string url = start_url;
  const std::string scope = call.scope ? *call.scope : Scope();
  bool from_cache = false;
  if (call.cache_redirect) {
    std::scoped_lock lock(redirect_mu_);
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
    std::scoped_lock lock(redirect_mu_);
    redirects_.erase(start_url);
  };
  int hops = 0;
  int challenges = 0;
  while (true) {
    HttpRequest req;
    req.method = call.method;
    req.url = url;
    req.headers = call.headers;
    req.connect_timeout = options_.connect_timeout;
    req.total_timeout = call.streaming ? call.stream_budget : options_.request_timeout;
    req.low_speed_bytes = call.min_bytes_per_second;
    req.low_speed_time = options_.low_speed_time;
    req.max_body_bytes = call.max_body_bytes;
    // certs.d material only for the registry's own host and port (blob storage, CDNs and
    // token servers get the explicit --ca-cert CAs only); credentials only for its origin.
    req.tls = IsRegistryHostPort(url, base_url) ? tls_ : other_host_tls_;
    const bool same_origin = MayCarryCredentials(url, base_url, plain_http_allowed_);
    std::string auth_line;
    if (call.authenticate && same_origin) {
      auth_line = auth_->HeaderFor(scope);
      if (!auth_line.empty()) req.headers.push_back(auth_line);
    }
    if (call.prepare) call.prepare(req);
    Result<HttpResponse> result = http_->Do(req);
    if (from_cache && (!result.has_value() || !IsSuccess(result->status))) {
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
    // The Authenticator decides when a repeated 401 means "give up"; the bound here only
    // protects against a server and an Authenticator that keep agreeing to try again.
    if (resp.status == 401 && call.authenticate && same_origin && challenges < 3) {
      ++challenges;
      Status st = auth_->OnChallenge(resp.www_authenticate, scope, auth_line);
      if (!st.ok()) return st;
      continue;
    }
    if (IsRedirect(resp.status)) {
      const std::string location = resp.Header("location");
      if (location.empty()) return resp;
      if (++hops > kMaxRedirects) {
        return Status::Corrupt(call.what + " (" + Describe() + "): more than " +
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
      return Status::Unavailable(call.what + " (" + Describe() + "): redirect target " +
                                 UrlHostPort(url) + " refused access: HTTP " +
                                 std::to_string(resp.status));
    }
    if (hops > 0 && call.cache_redirect && !same_origin && IsSuccess(resp.status)) {
      std::scoped_lock lock(redirect_mu_);
      redirects_[start_url] = {url, std::chrono::steady_clock::now() + kRedirectTtl};
    }
    return resp;
  }
}

Result<HttpResponse> RemoteSource::Execute(Call& call) {
  const int attempts = std::max(1, options_.max_attempts);
  Status last;
  std::optional<HttpResponse> last_response;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) {
      IMGFS_LOG(kInfo) << call.what << " (" << Describe() << "): attempt " << attempt - 1
                       << " failed: " << last.message() << "; retrying";
      Backoff(attempt - 1, last_response ? &*last_response : nullptr);
    }
    last_response.reset();
    Result<std::string> base = EnsureBaseUrl();
    if (!base.has_value()) {
      last = base.error();
      if (last.code() == StatusCode::kUnavailable) continue;
      return last;
    }
    Result<HttpResponse> resp = Attempt(call, *base);
    if (!resp.has_value()) {
      last = resp.error();
      const bool retry =
          call.retryable ? call.retryable(last) : last.code() == StatusCode::kUnavailable;
      if (retry) continue;
      return last;
    }
    if (IsRetryableStatus(resp->status) && resp->status != call.final_status) {
      last = HttpError(*resp, call.what);
      resp->body.clear();
      last_response = std::move(*resp);
      continue;
    }
    if (IsSuccess(resp->status) && call.finish) {
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

Status RemoteSource::HttpError(const HttpResponse& response, const std::string& what) const {
  std::string detail = RegistryErrorDetail(response.body);
  std::string where = what + " (" + Describe() + "): HTTP " + std::to_string(response.status);
  if (!detail.empty()) where += ": " + detail;
  switch (response.status) {
    case 401:
      return Status::PermissionDenied("unauthorized: " + where + "; run `imgfs login " + host_ +
                                      "`");
    case 403:
      return Status::PermissionDenied("denied: " + where);
    case 404:
      return Status::NotFound(where);
    case 400:
      return Status::InvalidArgument(where);
    default:
      break;
  }
  if (IsRetryableStatus(response.status)) return Status::Unavailable(where);
  return Status::Unsupported(where);
}

Result<FetchedManifest> RemoteSource::GetManifest(std::string_view tag_or_digest) {
  const std::string ref(tag_or_digest);
  std::optional<Digest> wanted;
  if (ref.find(':') != std::string::npos) {
    IMGFS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(ref));
    if (d.algorithm() != "sha256") {
      return Status::Unsupported("manifest " + ref + ": only sha256 digests are supported");
    }
    wanted = std::move(d);
  } else if (ref.empty()) {
    return Status::InvalidArgument("manifest request without a tag or digest (" + Describe() + ")");
  }
  const std::string display = host_ + "/" + repository_ + (wanted ? "@" : ":") + ref;
  Call call;
  call.path = "/v2/" + repository_ + "/manifests/" + ref;
  call.headers.push_back("Accept: " + std::string(media::kManifestAccept));
  call.what = "GET manifest " + display;
  call.max_body_bytes = kMaxManifestBytes;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
  if (resp.status == 404) {
    return Status::NotFound("manifest unknown: " + display + " (" + Describe() + ")");
  }
  if (!IsSuccess(resp.status)) return HttpError(resp, call.what);

  FetchedManifest out;
  out.digest = Digest::Sha256Of(resp.body);
  if (wanted && out.digest != *wanted) {
    return Status::Corrupt("manifest " + display + " (" + Describe() + "): content has digest " +
                           out.digest.String());
  }
  const std::string header_digest(Trim(resp.Header("docker-content-digest")));
  if (!header_digest.empty()) {
    Result<Digest> d = Digest::Parse(header_digest);
    if (!d.has_value()) {
      return Status::Corrupt("manifest " + display + " (" + Describe() +
                             "): invalid Docker-Content-Digest " + header_digest);
    }
    if (d->algorithm() == "sha256" && *d != out.digest) {
      return Status::Corrupt("manifest " + display + " (" + Describe() + "): content has digest " +
                             out.digest.String() + " but Docker-Content-Digest says " +
                             d->String());
    }
  }
  std::string content_type = resp.Header("content-type");
  content_type = std::string(Trim(content_type.substr(0, content_type.find(';'))));
  out.media_type = content_type;
  out.bytes = std::move(resp.body);
  return out;
}

Result<std::vector<Descriptor>> RemoteSource::ListReferrers(const Digest& subject,
                                                            std::string_view artifact_type) {
  if (subject.algorithm() != "sha256") {
    return Status::Unsupported("referrers of " + subject.String() +
                               ": only sha256 digests are supported");
  }
  Call call;
  call.path = "/v2/" + repository_ + "/referrers/" + subject.String();
  if (!artifact_type.empty()) {
    // A media type is token/token(+suffix): only '/' and '+' need escaping in a query.
    std::string escaped;
    for (char c : artifact_type) {
      if (c == '/') {
        escaped += "%2F";
      } else if (c == '+') {
        escaped += "%2B";
      } else {
        escaped += c;
      }
    }
    call.path += "?artifactType=" + escaped;
  }
  call.headers.push_back("Accept: " + std::string(media::kOciIndex));
  call.what = "GET referrers " + host_ + "/" + repository_ + "@" + subject.String();
  call.max_body_bytes = kMaxManifestBytes;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
  if (resp.status == 404) {
    return Status::Unsupported("no referrers API at " + Describe());
  }
  if (!IsSuccess(resp.status)) return HttpError(resp, call.what);
  Result<Index> index = DecodeIndex(resp.body);
  if (!index.has_value()) {
    return index.error().WithContext(call.what + " (" + Describe() + ")");
  }
  std::vector<Descriptor> out;
  for (Descriptor& d : index->manifests) {
    if (artifact_type.empty() || d.artifact_type == artifact_type) out.push_back(std::move(d));
  }
  return out;
}

Status RemoteSource::FetchBlob(const Digest& digest, int64_t expected_size, const BlobSink& sink) {
  const std::string what = "GET blob " + digest.String();
  if (digest.algorithm() != "sha256") {
    return Status::Unsupported(what + " (" + Describe() + "): only sha256 digests are supported");
  }
  Sha256 hasher;
  uint64_t delivered = 0;  // bytes handed to `sink` so far (over all attempts)
  uint64_t skip = 0;       // bytes of the current body to drop (a 200 after a break)
  Status fatal;            // a non-retryable error raised inside the callbacks

  Call call;
  call.path = "/v2/" + repository_ + "/blobs/" + digest.String();
  call.what = what;
  call.streaming = true;
  call.cache_redirect = true;
  if (expected_size >= 0)
    call.stream_budget = BudgetFor(static_cast<uint64_t>(expected_size), kMinBytesPerSecond);
  call.prepare = [&](HttpRequest& req) {
    skip = 0;
    if (delivered > 0) req.headers.push_back("Range: bytes=" + std::to_string(delivered) + "-");
    req.on_body_start = [&](const HttpResponse& head) -> Status {
      if (head.status == 206) {
        const Result<uint64_t> start = ContentRangeStart(head.Header("content-range"));
        if (!start.has_value()) {
          fatal = start.error().WithContext(what + " (" + Describe() + ")");
          return fatal;
        }
        if (*start != delivered) {
          fatal = Status::Corrupt(what + " (" + Describe() + "): asked to resume at byte " +
                                  std::to_string(delivered) + ", got Content-Range " +
                                  head.Header("content-range"));
          return fatal;
        }
      } else {
        // 200: the whole blob again; the sink already has the first `delivered` bytes.
        if (delivered > 0) {
          IMGFS_LOG(kInfo) << what << ": server ignored Range; skipping " << delivered
                           << " bytes already received";
        }
        skip = delivered;
      }
      return Status::Ok();
    };
    req.body_sink = [&](std::string_view chunk) -> Status {
      if (skip > 0) {
        const uint64_t n = std::min<uint64_t>(skip, chunk.size());
        chunk.remove_prefix(n);
        skip -= n;
        if (chunk.empty()) return Status::Ok();
      }
      if (expected_size >= 0 && delivered + chunk.size() > static_cast<uint64_t>(expected_size)) {
        fatal = Status::Corrupt(what + " (" + Describe() + "): larger than the expected " +
                                std::to_string(expected_size) + " bytes");
        return fatal;
      }
      hasher.Update(chunk);
      Status st = sink(chunk);
      if (!st.ok()) {
        fatal = st;
        return st;
      }
      delivered += chunk.size();
      return Status::Ok();
    };
  };
  call.retryable = [&](const Status& st) {
    return fatal.ok() && st.code() == StatusCode::kUnavailable;
  };
  call.finish = [&](const HttpResponse&) -> Status {
    if (skip > 0) {
      return Status::Unavailable(what + " (" + Describe() + "): whole-blob answer ended before " +
                                 "the resume point");
    }
    if (expected_size >= 0 && delivered < static_cast<uint64_t>(expected_size)) {
      return Status::Unavailable(what + " (" + Describe() + "): body ended after " +
                                 std::to_string(delivered) + " of " +
                                 std::to_string(expected_size) + " bytes");
    }
    return Status::Ok();
  };
  Result<HttpResponse> resp = Execute(call);
  if (!fatal.ok()) return fatal;
  if (!resp.has_value()) return resp.error();
  if (resp->status == 404) {
    return Status::NotFound("blob unknown: " + digest.String() + " (" + Describe() + ")");
  }
  if (!IsSuccess(resp->status)) return HttpError(*resp, what);
  const Digest got = hasher.Finish();
  if (got != digest) {
    return Status::Corrupt(what + " (" + Describe() + "): content has digest " + got.String() +
                           " (" + std::to_string(delivered) + " bytes)");
  }
  return Status::Ok();
}

Result<std::string> RemoteSource::ReadBlobRange(const Digest& digest, ByteRange range) {
  if (range.empty()) return std::string();
  const std::string what = "GET blob " + digest.String() + " bytes " +
                           std::to_string(range.offset) + "-" + std::to_string(range.end() - 1);
  std::string out;
  uint64_t pos = 0;  // blob offset of the next body byte
  bool complete = false;
  bool whole = false;  // the server ignored Range and sends the whole blob
  Status fatal;
  Call call;
  call.path = "/v2/" + repository_ + "/blobs/" + digest.String();
  call.what = what;
  call.cache_redirect = true;
  call.max_body_bytes = 1u << 20;  // error bodies only; 2xx bodies go to the sink
  call.prepare = [&](HttpRequest& req) {
    out.clear();
    complete = false;
    req.range = range;
    req.on_body_start = [&](const HttpResponse& head) -> Status {
      if (head.status == 206) {
        const Result<uint64_t> start = ContentRangeStart(head.Header("content-range"));
        if (!start.has_value()) {
          fatal = start.error().WithContext(what + " (" + Describe() + ")");
          return fatal;
        }
        pos = *start;
        whole = false;
      } else {
        pos = 0;  // 200: the whole blob, sliced below
        whole = true;
        if (!ignores_ranges_.exchange(true)) {
          IMGFS_LOG(kWarning) << what << " (" << Describe()
                              << "): answered with the whole blob (Range ignored)";
        }
      }
      return Status::Ok();
    };
    req.body_sink = [&](std::string_view chunk) -> Status {
      const uint64_t begin = std::max(pos, range.offset);
      const uint64_t end = std::min(pos + chunk.size(), range.end());
      if (begin < end) out.append(chunk.substr(begin - pos, end - begin));
      pos += chunk.size();
      if (whole && pos >= range.end()) {
        complete = true;  // stop a whole-blob answer once the range is in hand
        return Status::Internal("range complete");
      }
      return Status::Ok();
    };
  };
  call.retryable = [&](const Status& st) {
    return !complete && fatal.ok() && st.code() == StatusCode::kUnavailable;
  };
  Result<HttpResponse> resp = Execute(call);
  if (complete) return out;
  if (!fatal.ok()) return fatal;
  if (!resp.has_value()) return resp.error();
  if (resp->status == 416) return std::string();  // range starts past the end
  if (resp->status == 404) {
    return Status::NotFound("blob unknown: " + digest.String() + " (" + Describe() + ")");
  }
  if (!IsSuccess(resp->status)) return HttpError(*resp, what);
  return out;  // the blob ended inside the range
}

bool RemoteSource::multi_range_refused() const {
  std::scoped_lock lock(RefusalMu());
  return RefusingHosts().count(host_) != 0;
}

void RemoteSource::ForgetMultiRangeRefusals() {
  std::scoped_lock lock(RefusalMu());
  RefusingHosts().clear();
}

Result<RemoteSource::MultiRangeAnswer> RemoteSource::ReadMultiRange(
    const Digest& digest, const std::vector<ByteRange>& ranges) {
  uint64_t lo = ranges.front().offset;
  uint64_t hi = ranges.front().end();
  uint64_t sum = 0;
  for (const ByteRange& r : ranges) {
    lo = std::min(lo, r.offset);
    hi = std::max(hi, r.end());
    sum += r.length;
  }
  const std::string what = "GET blob " + digest.String() + " (" + std::to_string(ranges.size()) +
                           " ranges in " + std::to_string(lo) + "-" + std::to_string(hi - 1) + ")";
  // A 206 body larger than this is not an answer to what was asked: the ranges, what a
  // server merging near ranges may add between them (up to 1 MiB), and part headers.
  const uint64_t max_body =
      std::min(hi - lo, sum + (uint64_t{1} << 20)) + 4096 + 512 * ranges.size();
  std::string body;                 // a 206 body
  std::vector<std::string> slices;  // a 200: the bytes of each asked range, sliced on the fly
  uint64_t pos = 0;                 // blob offset of the next body byte of a whole-blob answer
  bool whole = false;
  bool complete = false;
  bool too_large = false;
  std::string content_type;
  std::string content_range;
  Call call;
  call.path = "/v2/" + repository_ + "/blobs/" + digest.String();
  call.what = what;
  call.cache_redirect = true;
  call.max_body_bytes = 1u << 20;  // error bodies only; 2xx bodies go to the sink
  call.headers.push_back("Range: bytes=" + RangeSpec(ranges));
  call.final_status = 501;  // Not Implemented: multi-range refused, not worth a retry
  call.prepare = [&](HttpRequest& req) {
    body.clear();
    slices.assign(ranges.size(), std::string());
    pos = 0;
    whole = false;
    complete = false;
    too_large = false;
    req.on_body_start = [&](const HttpResponse& head) -> Status {
      content_type = head.Header("content-type");
      content_range = head.Header("content-range");
      // Not 206: the server ignored the multi-range header (RFC 9110 allows that while it
      // still honours single ranges, so ignores_ranges_ is not set here).
      whole = head.status != 206;
      return Status::Ok();
    };
    req.body_sink = [&](std::string_view chunk) -> Status {
      if (whole) {  // keep only the asked ranges of the blob, stop once they are in hand
        const uint64_t chunk_end = pos + chunk.size();
        for (size_t i = 0; i < ranges.size(); ++i) {
          const uint64_t begin = std::max(pos, ranges[i].offset);
          const uint64_t end = std::min(chunk_end, ranges[i].end());
          if (begin < end) slices[i].append(chunk.substr(begin - pos, end - begin));
        }
        pos = chunk_end;
        if (pos >= hi) {
          complete = true;
          return Status::Internal("ranges complete");
        }
        return Status::Ok();
      }
      if (body.size() + chunk.size() > max_body) {
        too_large = true;
        return Status::Corrupt(what + " (" + Describe() + "): 206 body larger than " +
                               std::to_string(max_body) + " bytes");
      }
      body.append(chunk);
      return Status::Ok();
    };
  };
  call.retryable = [&](const Status& st) {
    return !complete && !too_large && st.code() == StatusCode::kUnavailable;
  };
  Result<HttpResponse> resp = Execute(call);
  MultiRangeAnswer answer;
  auto refuse = [&](bool remember, std::string why) -> Result<MultiRangeAnswer> {
    answer.refused = true;
    answer.remember = remember;
    answer.why = std::move(why);
    return std::move(answer);
  };
  if (too_large) return refuse(false, "206 body larger than the ranges asked for");
  if (complete || (resp.has_value() && resp->status == 200 && whole)) {
    // A whole blob (cut short where the blob ends before a range does): this call is
    // served, and the host is remembered as one that does not do multi-range.
    answer.ranges = std::move(slices);
    answer.remember = true;
    answer.why = "HTTP 200 with the whole blob";
    return answer;
  }
  if (!resp.has_value()) return resp.error();
  const long status = resp->status;  // NOLINT(google-runtime-int)
  if (status == 400 || status == 416 || status == 501) {
    return refuse(true, "HTTP " + std::to_string(status));
  }
  if (status == 404) {
    return Status::NotFound("blob unknown: " + digest.String() + " (" + Describe() + ")");
  }
  if (!IsSuccess(status)) return HttpError(*resp, what);
  if (status != 206) return refuse(false, "HTTP " + std::to_string(status));
  std::vector<RangePart> parts;
  if (IsMultipartByteranges(content_type)) {
    Result<std::string> boundary = MultipartBoundary(content_type);
    if (!boundary.has_value()) return refuse(false, boundary.error().message());
    Result<std::vector<RangePart>> parsed = ParseMultipartByteranges(body, *boundary);
    if (!parsed.has_value()) return refuse(false, parsed.error().message());
    parts = std::move(parsed).value();
  } else {
    // One part for all (a server that merged every range into one).
    Result<ContentRange> cr = ParseContentRange(content_range);
    if (!cr.has_value()) return refuse(false, cr.error().message());
    if (cr->length() != body.size()) {
      return refuse(false, "206 body of " + std::to_string(body.size()) +
                               " bytes for Content-Range " + content_range);
    }
    parts.push_back(RangePart{*cr, body});
  }
  Result<std::vector<std::string>> assembled = AssembleRanges(parts, ranges);
  if (!assembled.has_value()) return refuse(true, assembled.error().message());
  answer.ranges = std::move(assembled).value();
  return answer;
}

Result<std::vector<std::string>> RemoteSource::ReadBlobRanges(const Digest& digest,
                                                              const std::vector<ByteRange>& ranges,
                                                              uint64_t* requests) {
  std::vector<std::string> out(ranges.size());
  std::vector<size_t> todo;  // indices of non-empty ranges
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (!ranges[i].empty()) todo.push_back(i);
  }
  auto count = [&] {
    if (requests != nullptr) ++*requests;
  };
  for (size_t next = 0; next < todo.size();) {
    const size_t n = std::min(kMaxRangesPerRequest, todo.size() - next);
    bool single = n < 2 || multi_range_refused();
    if (!single) {
      std::vector<ByteRange> group;
      group.reserve(n);
      for (size_t k = next; k < next + n; ++k) group.push_back(ranges[todo[k]]);
      count();
      IMGFS_ASSIGN_OR_RETURN(MultiRangeAnswer answer, ReadMultiRange(digest, group));
      bool first = false;
      if (answer.remember) {
        std::scoped_lock lock(RefusalMu());
        first = RefusingHosts().insert(host_).second;
      }
      if (first) {
        IMGFS_LOG(kWarning) << "GET blob " << digest.String() << " (" << Describe()
                            << "): multi-range request "
                            << (answer.refused ? "refused" : "not honoured") << " (" << answer.why
                            << "); asking registry " << host_ << " one range at a time from now on";
      }
      if (!answer.refused) {
        for (size_t k = 0; k < n; ++k) out[todo[next + k]] = std::move(answer.ranges[k]);
        next += n;
        continue;
      }
      single = true;
      if (!first) {
        IMGFS_LOG(kInfo) << "GET blob " << digest.String() << " (" << Describe()
                         << "): multi-range answer unusable (" << answer.why
                         << "); asking these ranges one at a time";
      }
    }
    for (size_t k = next; k < next + n; ++k) {
      count();
      IMGFS_ASSIGN_OR_RETURN(out[todo[k]], ReadBlobRange(digest, ranges[todo[k]]));
    }
    next += n;
  }
  return out;
}

Status RemoteSource::StreamBlobRange(const Digest& digest, ByteRange range, const BlobSink& sink) {
  if (range.empty()) return Status::Ok();
  const std::string what = "GET blob " + digest.String() + " bytes " +
                           std::to_string(range.offset) + "-" + std::to_string(range.end() - 1);
  uint64_t pos = 0;        // blob offset of the next body byte
  uint64_t delivered = 0;  // bytes handed to `sink`
  bool complete = false;
  bool whole = false;  // a 200: stop once the range is through
  Status fatal;
  Call call;
  call.path = "/v2/" + repository_ + "/blobs/" + digest.String();
  call.what = what;
  call.streaming = true;
  call.cache_redirect = true;
  call.max_body_bytes = 1u << 20;
  call.min_bytes_per_second = kMinStreamBytesPerSecond;
  call.stream_budget = BudgetFor(range.length, kMinStreamBytesPerSecond);
  call.prepare = [&](HttpRequest& req) {
    req.range = range;
    req.on_body_start = [&](const HttpResponse& head) -> Status {
      if (head.status == 206) {
        const Result<uint64_t> start = ContentRangeStart(head.Header("content-range"));
        if (!start.has_value()) {
          fatal = start.error().WithContext(what + " (" + Describe() + ")");
          return fatal;
        }
        if (*start != range.offset) {
          fatal = Status::Corrupt(what + " (" + Describe() + "): got Content-Range " +
                                  head.Header("content-range"));
          return fatal;
        }
        pos = range.offset;
        whole = false;
      } else {
        pos = 0;
        whole = true;
        ignores_ranges_.store(true, std::memory_order_relaxed);
      }
      return Status::Ok();
    };
    req.body_sink = [&](std::string_view chunk) -> Status {
      const uint64_t begin = std::max(pos, range.offset);
      const uint64_t end = std::min(pos + chunk.size(), range.end());
      pos += chunk.size();
      if (begin < end) {
        Status st = sink(chunk.substr(begin - (pos - chunk.size()), end - begin));
        if (!st.ok()) {
          fatal = st;
          return st;
        }
        delivered += end - begin;
      }
      if (whole && pos >= range.end()) {
        complete = true;
        return Status::Internal("range complete");
      }
      return Status::Ok();
    };
  };
  call.retryable = [&](const Status& st) {
    return !complete && fatal.ok() && delivered == 0 && st.code() == StatusCode::kUnavailable;
  };
  Result<HttpResponse> resp = Execute(call);
  if (complete) return Status::Ok();
  if (!fatal.ok()) return fatal;
  if (!resp.has_value()) return resp.error();
  if (resp->status == 416) return Status::Ok();
  if (resp->status == 404) {
    return Status::NotFound("blob unknown: " + digest.String() + " (" + Describe() + ")");
  }
  if (!IsSuccess(resp->status)) return HttpError(*resp, what);
  return Status::Ok();
}

Result<std::vector<std::string>> RemoteSource::ListTags() {
  std::vector<std::string> tags;
  Call call;
  call.path = "/v2/" + repository_ + "/tags/list?n=" + std::to_string(kTagsPageSize);
  call.what = "GET tags of " + host_ + "/" + repository_;
  for (int page = 0; page < kMaxTagPages; ++page) {
    IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, Execute(call));
    if (resp.status == 404) {
      return Status::NotFound("repository unknown: " + host_ + "/" + repository_ + " (" +
                              Describe() + ")");
    }
    if (!IsSuccess(resp.status)) return HttpError(resp, call.what);
    nlohmann::json doc = nlohmann::json::parse(resp.body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      return Status::Corrupt(call.what + " (" + Describe() + "): answer is not a JSON object");
    }
    auto list = doc.find("tags");
    if (list != doc.end() && !list->is_null()) {
      if (!list->is_array()) {
        return Status::Corrupt(call.what + " (" + Describe() + "): \"tags\" is not an array");
      }
      for (const nlohmann::json& t : *list) {
        if (!t.is_string()) {
          return Status::Corrupt(call.what + " (" + Describe() + "): a tag is not a string");
        }
        std::string tag = t.get<std::string>();
        if (!IsValidTag(tag)) {
          // A tag becomes a request path, a name in index.json and terminal output: one with
          // '/', "..", '?', control or escape characters is none of those.
          IMGFS_LOG(kWarning) << call.what << " (" << Describe() << "): skipping invalid tag "
                              << QuoteForMessage(tag, 160);
          continue;
        }
        tags.push_back(std::move(tag));
      }
    }
    const std::string next = NextLink(resp.Header("link"));
    if (next.empty()) {
      std::sort(tags.begin(), tags.end());
      tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
      return tags;
    }
    const std::string from = resp.effective_url.empty() ? call.url : resp.effective_url;
    call.url = ResolveUrl(from, next);
  }
  return Status::Corrupt(call.what + " (" + Describe() + "): more than " +
                         std::to_string(kMaxTagPages) + " pages");
}

}  // namespace imgfs::registry
