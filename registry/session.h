// imgfs — RegistrySession: how imgfs talks to one registry host, for pull (RemoteSource),
// push (Pusher), `imgfs login` and index publishing alike. The endpoints (what to ask) live
// in their callers; the session owns the connection policy (how to ask):
//  - Scheme: https with TLS verification, CAs = system store + certs_dir/<host>/*.crt +
//    options.tls.ca_files, client certificate certs_dir/<host>/client.cert + client.key.
//    Plain http only for loopback hosts and options.insecure_registries (registry/origin.h):
//    for those the scheme is https whenever a TLS server answers, else http when a registry
//    answers over http (what docker does). The first request decides it. A GET or HEAD
//    without body, sink or prepare hook (a manifest GET, a blob HEAD: sending it twice has
//    no effect) is itself sent over https and http at once, without credentials, and the
//    chosen scheme's answer is the call's first answer (auth challenges, redirects and
//    retries then go on as for any answer): no round trip is spent before it. When http
//    answers something that is no registry's answer (no 2xx/401, no distribution error body
//    nor Docker-Distribution-Api-Version header: a TLS server answering clear text with 400,
//    a scripted server), and for every other first request (uploads, streamed blob GETs),
//    the scheme is probed as `GET /v2/` over both schemes at once first. One request decides
//    at a time: requests that start while it races or probes wait for its outcome
//    (probe_mu_), a failure included.
//  - Auth: every request to the registry's origin carries Authenticator::HeaderFor(scope); a
//    401 goes to Authenticator::OnChallenge and the request is repeated (the Authenticator
//    decides when to give up; kMaxAuthRounds bounds a server and an Authenticator that keep
//    agreeing to try again).
//  - Redirects (301/302/303/307/308 for GET and HEAD, 307/308 for requests with a body, which
//    keep their method) are followed by hand, at most kMaxRedirects; the Authorization header
//    only goes to the registry's own origin, certs.d material only to its host and port
//    (other hosts get the explicit options.tls CAs). With Call::cache_redirect the final URL
//    is remembered for kRedirectTtl (signed blob-storage URLs), forgotten on any failure; a
//    redirect target answering 401/403 (an expired signature) is a transient failure.
//  - Retries with exponential backoff (registry/backoff.h: base_backoff·2^n capped at
//    max_backoff, a Retry-After of N seconds honoured up to max_backoff) on transport errors
//    (Unavailable), 5xx and 429, up to max_attempts per call (Call::retry = false: once).
//  - One HTTP status → Status mapping (HttpError) for every caller.
//
// Thread-safety: every method may be called from many threads at once. The scheme decision
// and the redirect cache are guarded by leaf mutexes never held across I/O.
#ifndef IMGFS_REGISTRY_SESSION_H_
#define IMGFS_REGISTRY_SESSION_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "registry/auth.h"
#include "registry/credentials.h"
#include "registry/http_client.h"

namespace imgfs::registry {

// Everything about reaching a registry; RemoteSourceOptions and PushOptions extend it.
struct ConnectionOptions {
  // Extra CAs (--ca-cert) and an explicit client certificate; merged with certs_dir for the
  // registry's own host (other hosts get the extra CAs only; registry/origin.h).
  TlsOptions tls;
  // Docker's per-registry certificate directory: <certs_dir>/<host[:port]>/{*.crt,
  // client.cert, client.key}. "" = do not look.
  std::string certs_dir = "/etc/docker/certs.d";
  // Hosts ("host[:port]") that may be spoken to over plain HTTP besides loopback ones.
  std::vector<std::string> insecure_registries;
  // Credential for this registry (ResolveCredential), if any.
  std::optional<Credential> credential;

  std::chrono::milliseconds connect_timeout{10000};
  // Whole-request limit for requests without a large body (ping, manifests, tags, ranges,
  // HEAD, upload steps of at most kLargeBodyBytes).
  std::chrono::milliseconds request_timeout{60000};
  // Every request fails when slower than its minimum throughput (Call::min_bytes_per_second)
  // for this long.
  std::chrono::seconds low_speed_time{30};

  // Attempts per call (1 = no retry). Each failed attempt counts.
  int max_attempts = 4;
  // First retry waits base_backoff, then twice as long each time, at most max_backoff
  // (which also caps Retry-After).
  std::chrono::milliseconds base_backoff{500};
  std::chrono::milliseconds max_backoff{10000};

  // A shared client (connection pool) to use; when null the session owns one.
  // Must outlive the session.
  HttpClient* http = nullptr;
};

// "registry-1.docker.io" for "docker.io", else `registry_host` lower-cased: the host[:port]
// a registry named by the user is spoken to at.
std::string RegistryEndpoint(std::string_view registry_host);

class RegistrySession {
 public:
  // Redirect hops followed per request (as Go's net/http allows 10; registries use 1).
  static constexpr int kMaxRedirects = 5;
  // Rounds of 401 → challenge → repeat per request (the Authenticator normally ends the
  // dance itself after the second rejection).
  static constexpr int kMaxAuthRounds = 3;
  // How long a redirect target is reused (stargz-snapshotter uses 60 s; S3/CDN signatures
  // given by registries live for minutes).
  static constexpr std::chrono::seconds kRedirectTtl{60};
  // Default minimum throughput of a request (curl's low-speed limit, over low_speed_time): a
  // registry trickling a few bytes a second cannot hold a pull or a reader forever. 16 KiB/s
  // is far below any usable link and well above what a trickling attacker sends.
  static constexpr int64_t kMinBytesPerSecond = 16 << 10;
  // Request bodies above this size (uploads) get no whole-request limit, only the low-speed
  // floor: a 64 MiB layer on a slow uplink legitimately takes minutes.
  static constexpr size_t kLargeBodyBytes = 1u << 20;
  // Error bodies are read up to this size; their distribution error text (HttpError) is cut
  // to kMaxErrorDetailBytes so a hostile registry cannot flood messages and logs.
  static constexpr size_t kMaxErrorBodyBytes = 1u << 20;
  static constexpr size_t kMaxErrorDetailBytes = 512;

  // The registry `registry_host` as the user names it ("docker.io", "127.0.0.1:5000");
  // spoken to at RegistryEndpoint(registry_host). Does no I/O.
  RegistrySession(std::string_view registry_host, ConnectionOptions options);
  ~RegistrySession();
  RegistrySession(const RegistrySession&) = delete;
  RegistrySession& operator=(const RegistrySession&) = delete;

  // One logical request and the hooks its retries need.
  struct Call {
    std::string method = "GET";
    std::string path;  // "/v2/…" relative to the base URL
    std::string url;   // absolute URL instead of path (pagination links, upload Locations)
    std::vector<std::string> headers;
    std::string body;
    std::string what;             // for messages: "GET manifest demo/app:1"
    std::string where;            // for messages: "registry HOST, repository NAME"
    std::string scope;            // the auth scope ("repository:NAME:pull"; "" for /v2/)
    bool authenticate = true;     // send Authorization / answer 401 challenges
    bool retry = true;            // false: one attempt (the caller restarts a whole upload)
    bool cache_redirect = false;  // remember the redirect target (blob GETs)
    bool streaming = false;       // no request_timeout; stream_budget instead
    // Low-speed floor of each attempt, bytes/s over low_speed_time.
    int64_t min_bytes_per_second = kMinBytesPerSecond;
    // For streaming calls: the whole-attempt budget (0 = none); BudgetFor(expected bytes).
    std::chrono::milliseconds stream_budget{0};
    size_t max_body_bytes = kMaxErrorBodyBytes;
    // A 5xx status that is an answer, not a transient failure (501 to a multi-range request).
    long final_status = 0;  // NOLINT(google-runtime-int): libcurl's type
    // Sets up an attempt (range, sink, ...); called before every attempt.
    std::function<void(HttpRequest&)> prepare;
    // Whether an error Status from the transport may be retried (default: Unavailable).
    std::function<bool(const Status&)> retryable;
    // Checks a 2xx answer; an Unavailable result retries, any other error is returned.
    std::function<Status(const HttpResponse&)> finish;
  };

  // Runs `call`: scheme, auth, redirects, retries. The final answer of the registry, whatever
  // its status, except that 5xx/429 after the last attempt become Unavailable (HttpError,
  // "gave up after N attempts"). Transport errors are returned as they come (Unavailable).
  Result<HttpResponse> Execute(Call& call);

  // A non-2xx answer as a Status, the one mapping of imgfs: 401 and 403 → PermissionDenied
  // (401 says to run `imgfs login HOST`); distribution errors DIGEST_INVALID, SIZE_INVALID →
  // Corrupt, BLOB_UNKNOWN, MANIFEST_BLOB_UNKNOWN and 404 → NotFound; 429 and 5xx →
  // Unavailable; 405 and 501 → Unsupported; other 4xx → InvalidArgument; anything else →
  // Unsupported. The message is "WHAT (WHERE): HTTP N: CODE: message".
  Status HttpError(const HttpResponse& response, const std::string& what,
                   const std::string& where) const;

  // "https://HOST" or "http://HOST": decided by the first call, the same for every later
  // one. Here (no call to race) a /v2/ probe when plain http is allowed. Unavailable when
  // neither answers.
  Result<std::string> BaseUrl();
  // The decided base URL, or "" before the first request.
  std::string KnownBaseUrl() const;

  // GET /v2/ without credentials: OK when a v2 registry answers (200, or 401 asking for
  // auth).
  Status Ping();
  // `imgfs login`: GET /v2/ with the configured credential, answering auth challenges, over
  // the scheme every other request uses. OK on 200; PermissionDenied when the registry keeps
  // refusing the credential.
  Status CheckLogin();

  // request_timeout plus the time `bytes` take at `bytes_per_second` (0 = unbounded when
  // that does not fit): the budget of a streaming call.
  std::chrono::milliseconds BudgetFor(uint64_t bytes, int64_t bytes_per_second) const;
  // Sleeps before retry number `retry` (1 = the first); `response` may carry Retry-After.
  void Backoff(int retry, const HttpResponse* response) const;

  const std::string& registry_host() const { return registry_host_; }  // "docker.io"
  const std::string& endpoint() const { return endpoint_; }            // "registry-1.docker.io"
  bool plain_http_allowed() const { return plain_http_allowed_; }
  const ConnectionOptions& options() const { return options_; }

 private:
  // One attempt of `call` at `base_url`: auth rounds and redirects. `first`, when set, is
  // the answer to its first hop, already sent by RaceScheme.
  Result<HttpResponse> Attempt(Call& call, const std::string& base_url,
                               std::optional<Result<HttpResponse>> first);
  // The request of one hop of `call` to `url`, without Authorization and prepare().
  HttpRequest NewRequest(const Call& call, const std::string& url,
                         const std::string& base_url) const;
  Result<HttpResponse> Probe(const std::string& base_url);
  // The base URL, deciding the scheme if not yet done: by racing `call` (RaceScheme) when
  // it may be sent twice, else by ProbeScheme. `call` may be null (BaseUrl). On a race,
  // `*first` receives the answer to the call's first hop, unless it was dropped.
  Result<std::string> DecideScheme(const Call* call, std::optional<Result<HttpResponse>>* first);
  // Whether `call` may be sent over https and http at once: a GET or HEAD to the registry
  // with no body, no streaming and no prepare hook (which may set a sink or reset state).
  static bool MayRace(const Call& call);
  // Sends the first hop of `call` (no Authorization: nothing goes over plain http before
  // the scheme is known) over https and http at once and chooses by ChooseScheme. When http
  // answered but not like a registry, falls back to ProbeScheme; the http answer is kept if
  // the probe then chooses http.
  Result<std::string> RaceScheme(const Call& call, std::optional<Result<HttpResponse>>* first);
  // The scheme of a registry that may speak plain http, from GET /v2/ over both at once (a
  // plain-http registry answers while the https probe fails its handshake), so a choice
  // costs one probe's time.
  Result<std::string> ProbeScheme();
  // The one decision, from the answers to one request sent over https (`tls`) and plain
  // http (`plain`) at once: https whenever a TLS server answered; else http when `plain`
  // looks like a registry's answer (LooksLikeRegistry in session.cc); else Unavailable
  // when neither answered, or the https failure when http answered something else.
  Result<std::string> ChooseScheme(const Result<HttpResponse>& tls,
                                   const Result<HttpResponse>& plain) const;
  // Records `chosen` as the scheme unless one was recorded already; the recorded one.
  std::string DecideLocked(const std::string& chosen) IMGFS_REQUIRES(scheme_mu_);

  const std::string registry_host_;
  const std::string endpoint_;
  const ConnectionOptions options_;
  const TlsOptions tls_;             // options_.tls merged with certs_dir/<endpoint>
  const TlsOptions other_host_tls_;  // options_.tls CAs only: redirect targets, token servers
  const bool plain_http_allowed_;    // loopback or --insecure-registry (registry/origin.h)
  std::unique_ptr<HttpClient> owned_http_;
  HttpClient* http_;
  std::unique_ptr<Authenticator> auth_;

  mutable Mutex scheme_mu_;  // a leaf lock, never held across I/O
  std::string base_url_ IMGFS_GUARDED_BY(scheme_mu_);
  uint64_t probes_done_ IMGFS_GUARDED_BY(scheme_mu_) = 0;
  Status last_probe_error_ IMGFS_GUARDED_BY(scheme_mu_);  // of the last probe, when it failed
  // Held across the scheme race or probe (taken before scheme_mu_), so requests that start
  // together wait for one decision instead of each deciding.
  Mutex probe_mu_;

  struct CachedRedirect {
    std::string url;
    std::chrono::steady_clock::time_point expires;
  };
  Mutex redirect_mu_;  // a leaf lock, never held across I/O
  // Start URL → final URL.
  std::map<std::string, CachedRedirect> redirects_ IMGFS_GUARDED_BY(redirect_mu_);
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_SESSION_H_
