// imgfs — RemoteSource: a BlobSource over one repository of an OCI/Docker registry.
//
// Speaks the distribution API (distribution-spec `spec.md`; FORMATS.md §2.5):
//   GET /v2/                               ping; picks http or https (below)
//   GET /v2/<name>/manifests/<tag|digest>  Accept: media::kManifestAccept
//   GET /v2/<name>/blobs/<digest>          whole (streamed, sha256-verified) or by Range
//   GET /v2/<name>/tags/list?n=…           following Link: <…>; rel="next"
//   GET /v2/<name>/referrers/<digest>      ?artifactType=…; an OCI index (spec 1.1)
//
// Policy added on top of the policy-free HttpClient:
//  - Scheme: https with TLS verification, CAs = system store + certs_dir/<host>/*.crt +
//    options.tls.ca_files, client certificate certs_dir/<host>/client.cert + client.key.
//    Plain http only for loopback hosts (IsLoopbackHost) and options.insecure_registries:
//    for those the first request probes https first and falls back to http when no TLS
//    server answers there (what docker does for insecure registries).
//  - Auth: every request carries Authenticator::HeaderFor(scope); a 401 goes to
//    Authenticator::OnChallenge and the request is repeated (the Authenticator decides when
//    to give up).
//  - Redirects (301/302/303/307/308) are followed by hand, at most kMaxRedirects; the
//    Authorization header only goes to the registry's own origin — scheme, host and
//    effective port (registry/origin.h): blob storage behind a redirect, e.g. S3, rejects a
//    second auth mechanism and must not see the token, and an https → http redirect on the
//    same host is followed without it (unless the registry is loopback or insecure). certs.d
//    material (CAs, client certificate) is used for the registry's own host and port only;
//    other hosts get the explicit options.tls CAs.
//  - Throughput: every request fails when slower than kMinBytesPerSecond
//    (kMinStreamBytesPerSecond for StreamBlobRange) for low_speed_time; a whole-blob or
//    streamed range download also has a total budget of request_timeout plus its size at
//    that rate.
//    The final URL of a blob redirect (a signed storage URL) is remembered for
//    kRedirectTtl, so the many Range reads of a lazily read layer skip the registry hop;
//    any failure there forgets it and starts again at the registry. A redirect target that
//    answers 401/403 (an expired signature) counts as a transient failure: the retry asks the
//    registry for a fresh URL.
//  - Retries with exponential backoff (base_backoff·2^n, capped at max_backoff) on transport
//    errors (Unavailable), 5xx and 429; a Retry-After of N seconds is honoured up to
//    max_backoff. An unreachable registry fails after max_attempts × connect_timeout plus
//    the backoff sleeps.
//  - Verification: manifests by digest are checked against the requested digest, every
//    manifest against Docker-Content-Digest when present; blobs streamed by FetchBlob are
//    hashed and compared with the digest before OK. Mismatches are Corrupt.
//  - Resume: when a FetchBlob transfer breaks after N bytes reached the sink, the next
//    attempt asks for "Range: bytes=N-". A 206 continues the stream; a server that answers
//    200 (ignoring Range) sends the whole blob again, and its first N bytes are skipped, so
//    the sink still sees each byte of the blob exactly once, in order (the BlobSink
//    contract is unchanged); the final digest covers exactly what the sink saw.
//  - ReadBlobRange accepts 206 or a 200 with the whole blob (sliced while streaming, so the
//    rest is not kept in memory); a 416 means the range starts at or past the end → "".
//    A 200 to a Range request (a registry or proxy that ignores Range) is remembered:
//    ignores_ranges() then tells lazy readers to stream instead of asking for ranges.
//  - StreamBlobRange streams [offset, end) of a blob to a sink in one GET (the streaming pass
//    of a lazily read layer): 206 from `offset`, or a 200 whose first `offset` bytes are
//    skipped. Retried (with backoff) only while nothing reached the sink.
//  - ReadBlobRanges sends several ranges as ONE request, "Range: bytes=a-b,c-d,..." (at most
//    kMaxRangesPerRequest ranges each; more are split over several requests). Accepted
//    answers: 206 multipart/byteranges (registry/multipart_ranges.h; parts may be merged or
//    reordered, each asked range is mapped onto the parts covering it), a 206 single part
//    covering every range (sliced), or a 200 with the whole blob. A 200 serves this call:
//    only the bytes inside the asked ranges are kept (sliced while streaming, the transfer
//    stops after the highest one). It is NOT remembered as ignores_ranges() (RFC 9110 lets
//    a server ignore a multi-range header while honouring single ranges; only ReadBlobRange
//    answers decide ignores_ranges()), but as a multi-range refusal (below), so later calls
//    go range by range instead of downloading the blob up to the highest range each time.
//    A refusal — 400, 416, 501, or a 206 that does not cover what was asked — makes this
//    call fall back to one ReadBlobRange per range. Refusals and 200s are remembered for the
//    registry host process-wide (multi_range_refused()): no later RemoteSource of this
//    process sends that host a multi-range request again. A malformed multipart body falls
//    back for this call only (it may be a transient corruption).
//
// Errors name the registry and repository (Describe()) and what was asked: NotFound
// ("manifest unknown: <name>:<tag> (registry HOST)"), PermissionDenied from the
// Authenticator, Corrupt, Unavailable (after retries). Authorization headers are never logged.
//
// Thread-safety: every method may be called from many threads at once. The scheme decision
// and the redirect cache are guarded by leaf mutexes never held across I/O.
#ifndef IMGFS_REGISTRY_REMOTE_SOURCE_H_
#define IMGFS_REGISTRY_REMOTE_SOURCE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/auth.h"
#include "registry/blob_source.h"
#include "registry/credentials.h"
#include "registry/http_client.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace imgfs::registry {

struct RemoteSourceOptions {
  // Extra CAs (--ca-cert) and an explicit client certificate; merged with certs_dir.
  TlsOptions tls;
  // Docker's per-registry certificate directory: <certs_dir>/<host[:port]>/{*.crt,
  // client.cert, client.key}. "" = do not look.
  std::string certs_dir = "/etc/docker/certs.d";
  // Hosts ("host[:port]") that may be spoken to over plain HTTP besides loopback ones.
  std::vector<std::string> insecure_registries;
  // Credential for this registry (from CredentialStore::Lookup), if any.
  std::optional<Credential> credential;

  std::chrono::milliseconds connect_timeout{10000};
  // Whole-request limit for small requests (ping, manifests, tags, ranges).
  std::chrono::milliseconds request_timeout{60000};
  // Every request fails when slower than its minimum throughput (kMinBytesPerSecond, or
  // kMinStreamBytesPerSecond for StreamBlobRange) for this long.
  std::chrono::seconds low_speed_time{30};

  // Attempts per operation (1 = no retry). Each failed attempt counts, including the ones
  // of a resumed blob download.
  int max_attempts = 4;
  // First retry waits base_backoff, then twice as long each time, at most max_backoff
  // (which also caps Retry-After).
  std::chrono::milliseconds base_backoff{500};
  std::chrono::milliseconds max_backoff{10000};

  // A shared client (connection pool) to use; when null the source owns one.
  // Must outlive the source.
  HttpClient* http = nullptr;
};

class RemoteSource : public BlobSource {
 public:
  // Redirect hops followed per request (as Go's net/http allows 10; registries use 1).
  static constexpr int kMaxRedirects = 5;
  // distribution refuses manifests above 4 MiB; anything larger is not a manifest.
  static constexpr size_t kMaxManifestBytes = 4u << 20;

  // How long a blob's redirect target is reused (stargz-snapshotter uses 60 s; S3/CDN
  // signatures given by registries live for minutes).
  static constexpr std::chrono::seconds kRedirectTtl{60};
  // Minimum throughput of a request (curl's low-speed limit, over low_speed_time) and the
  // rate a whole-blob download (FetchBlob) must average: a registry trickling a few bytes a
  // second cannot hold a pull or a reader forever. 16 KiB/s is far below any usable link
  // (a 1 Mbit/s line gives 120 KiB/s) and well above what a trickling attacker sends.
  static constexpr int64_t kMinBytesPerSecond = 16 << 10;
  // The same for StreamBlobRange, whose sink may hold a buffer back for up to 2 s to let
  // demand reads go first (fs/fetcher.cc kMaxYield): 16 KiB per 2 s is 8 KiB/s, so the floor
  // sits at half of that.
  static constexpr int64_t kMinStreamBytesPerSecond = 4 << 10;
  // Ranges per multi-range request. Go's http.ServeContent (distribution's filesystem
  // driver) and nginx answer any number, but proxies and CDNs limit the header size
  // (8 KiB is common); 32 ranges of two 12-digit offsets stay under 1 KiB.
  static constexpr size_t kMaxRangesPerRequest = 32;

  // The repository of `ref` at ref.Endpoint(). Does no I/O.
  static std::unique_ptr<RemoteSource> Create(const Reference& ref, RemoteSourceOptions options);
  // The repository `repository` ("demo/app") at `registry_host` ("127.0.0.1:5000").
  static std::unique_ptr<RemoteSource> Create(std::string registry_host, std::string repository,
                                              RemoteSourceOptions options);

  RemoteSource(const RemoteSource&) = delete;
  RemoteSource& operator=(const RemoteSource&) = delete;
  ~RemoteSource() override;

  // GET /v2/: OK when the registry answers as a v2 registry (200, or 401 asking for auth).
  Status Ping();

  // `imgfs login`: GET /v2/ with the configured credential, answering auth challenges, over
  // the scheme every other request uses (https first, also for --insecure-registry hosts).
  // OK on 200; PermissionDenied when the registry keeps refusing the credential.
  Status CheckLogin();

  Result<FetchedManifest> GetManifest(std::string_view tag_or_digest) override;
  Status FetchBlob(const Digest& digest, int64_t expected_size, const BlobSink& sink) override;
  Result<std::string> ReadBlobRange(const Digest& digest, ByteRange range) override;
  // Several ranges in as few requests as the registry allows (see above). `requests` (may be
  // null) is increased once per HTTP request made for this call (a refused multi-range
  // request counts, as does each single range of a fallback).
  Result<std::vector<std::string>> ReadBlobRanges(const Digest& digest,
                                                  const std::vector<ByteRange>& ranges,
                                                  uint64_t* requests) override;
  // Every tag of the repository (all pages), sorted. Tags that are not valid references
  // (IsValidTag: '/', "..", '?', control or escape characters, ...) are skipped with a
  // warning: they would become request paths, index.json names and terminal output.
  Result<std::vector<std::string>> ListTags() override;
  // Bytes [range.offset, range.end()) of a blob handed to `sink` as they arrive (fewer when
  // the blob ends first), unverified. One request; a 200 answer is sliced.
  Status StreamBlobRange(const Digest& digest, ByteRange range, const BlobSink& sink) override;
  // The referrers of manifest `subject` (distribution-spec 1.1 "Listing Referrers"): the
  // descriptors of the answered OCI image index, filtered client-side by `artifact_type`
  // when not "" (the server may ignore `?artifactType=`). Unsupported when the registry has
  // no referrers API (404 — callers fall back to the `sha256-<hex>` tag schema); an empty
  // list when it has one and nothing refers to `subject`.
  Result<std::vector<Descriptor>> ListReferrers(const Digest& subject,
                                                std::string_view artifact_type) override;
  // True once a single-range read (ReadBlobRange, StreamBlobRange) of this repository was
  // answered with a whole blob (200). A 200 to a multi-range request does not count.
  bool ignores_ranges() const override { return ignores_ranges_.load(std::memory_order_relaxed); }
  // True once any RemoteSource of this process saw this registry host refuse a multi-range
  // request (or answer one with the whole blob); ReadBlobRanges then asks range by range.
  bool multi_range_refused() const;
  // Forgets every host's multi-range refusal (tests: a scripted server may get the port of
  // an earlier one).
  static void ForgetMultiRangeRefusals();
  // "registry HOST, repository NAME"
  std::string Describe() const override;

  const std::string& registry_host() const { return host_; }
  const std::string& repository() const { return repository_; }
  // "https://HOST" or "http://HOST" once decided (after the first request), else "".
  std::string BaseUrl() const;

 private:
  RemoteSource(std::string registry_host, std::string repository, RemoteSourceOptions options);

  // One logical request: scheme, auth, redirects, retries. `prepare` fills the request for
  // an attempt (url is set to base + path before the call; it may add range, sink, ...).
  // `retryable_error` tells whether an error Status returned by Do may be retried.
  struct Call;
  Result<HttpResponse> Execute(Call& call);
  // One attempt: auth + redirects, no retry.
  Result<HttpResponse> Attempt(Call& call, const std::string& base_url);
  Result<std::string> EnsureBaseUrl();
  Result<HttpResponse> DoPing(const std::string& base_url);
  std::string Scope() const { return "repository:" + repository_ + ":pull"; }
  // Non-2xx final answer → Status naming `what`.
  Status HttpError(const HttpResponse& response, const std::string& what) const;
  void Backoff(int attempt, const HttpResponse* response) const;
  // request_timeout plus the time `bytes` take at `bytes_per_second` (0 = unbounded when
  // that does not fit).
  std::chrono::milliseconds BudgetFor(uint64_t bytes, int64_t bytes_per_second) const;
  // One multi-range GET for `ranges` (non-empty ranges, at least two). Either the bytes of
  // every range, or refused=true (the caller asks range by range); errors only for what a
  // single range would fail on too (NotFound, PermissionDenied, Unavailable after retries).
  struct MultiRangeAnswer;
  Result<MultiRangeAnswer> ReadMultiRange(const Digest& digest,
                                          const std::vector<ByteRange>& ranges);

  const std::string host_;
  const std::string repository_;
  const RemoteSourceOptions options_;
  TlsOptions tls_;             // options_.tls merged with certs_dir/<host>: the registry's
  TlsOptions other_host_tls_;  // options_.tls CAs only: redirect targets, token servers
  bool plain_http_allowed_;    // loopback or --insecure-registry (registry/origin.h)
  std::unique_ptr<HttpClient> owned_http_;
  HttpClient* http_;
  std::unique_ptr<Authenticator> auth_;

  mutable std::mutex scheme_mu_;  // guards base_url_ (a leaf lock, never held across I/O)
  std::string base_url_;

  struct CachedRedirect {
    std::string url;
    std::chrono::steady_clock::time_point expires;
  };
  std::mutex redirect_mu_;  // guards redirects_ (a leaf lock, never held across I/O)
  std::map<std::string, CachedRedirect> redirects_;  // registry path → final URL
  std::atomic<bool> ignores_ranges_{false};
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_REMOTE_SOURCE_H_
