// imgfs — RemoteSource: a BlobSource over one repository of an OCI/Docker registry.
//
// Speaks the distribution API (distribution-spec `spec.md`; FORMATS.md §2.5):
//   GET /v2/                               ping; picks http or https (below)
//   GET /v2/<name>/manifests/<tag|digest>  Accept: media::kManifestAccept
//   GET /v2/<name>/blobs/<digest>          whole (streamed, sha256-verified) or by Range
//   GET /v2/<name>/tags/list?n=…           following Link: <…>; rel="next"
//   GET /v2/<name>/referrers/<digest>      ?artifactType=…; an OCI index (spec 1.1)
//
// Connection policy (scheme, certs.d, auth, redirects with their cache, retries with
// Retry-After, the HTTP status mapping) is the RegistrySession's (registry/session.h); a
// RemoteSource owns one or shares one with other sources and a Pusher of the same registry.
// On top of it:
//  - Throughput: every request fails when slower than kMinBytesPerSecond
//    (kMinStreamBytesPerSecond for StreamBlobRange) for low_speed_time; a whole-blob or
//    streamed range download also has a total budget of request_timeout plus its size at
//    that rate.
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
//  - ReadBlobRanges (registry/multi_range.cc) sends several ranges as ONE request, "Range:
//  bytes=a-b,c-d,..." (at most
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
// Thread-safety: every method may be called from many threads at once.
#ifndef IMGFS_REGISTRY_REMOTE_SOURCE_H_
#define IMGFS_REGISTRY_REMOTE_SOURCE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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
#include "registry/session.h"

namespace imgfs::registry {

// How to reach the registry (registry/session.h); nothing of its own yet.
struct RemoteSourceOptions : ConnectionOptions {};

class RemoteSource : public BlobSource {
 public:
  static constexpr int kMaxRedirects = RegistrySession::kMaxRedirects;
  // distribution refuses manifests above 4 MiB; anything larger is not a manifest.
  static constexpr size_t kMaxManifestBytes = 4u << 20;

  // The rate a whole-blob download (FetchBlob) must average, as every request's floor.
  static constexpr int64_t kMinBytesPerSecond = RegistrySession::kMinBytesPerSecond;
  // The same for StreamBlobRange, whose sink may hold a buffer back for up to 2 s to let
  // demand reads go first (the lazy readers' FetchEngine::kMaxYield): 16 KiB per 2 s is
  // 8 KiB/s, so the floor sits at half of that.
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
  // The repository `repository` of the registry `session` speaks to (shared, e.g. with a
  // Pusher: one scheme decision, one token cache).
  static std::unique_ptr<RemoteSource> Create(std::shared_ptr<RegistrySession> session,
                                              std::string repository);

  RemoteSource(const RemoteSource&) = delete;
  RemoteSource& operator=(const RemoteSource&) = delete;
  ~RemoteSource() override;

  // GET /v2/: OK when the registry answers as a v2 registry (200, or 401 asking for auth).
  Status Ping() { return session_->Ping(); }

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

  const std::string& registry_host() const { return session_->endpoint(); }
  const std::string& repository() const { return repository_; }
  // "https://HOST" or "http://HOST" once decided (after the first request), else "".
  std::string BaseUrl() const { return session_->KnownBaseUrl(); }

 private:
  using Call = RegistrySession::Call;
  RemoteSource(std::shared_ptr<RegistrySession> session, std::string repository);

  // A call of this repository (pull scope, messages naming it) for `path` below /v2/<name>/.
  Call NewCall(std::string path, std::string what) const;
  // "HOST/NAME" for messages.
  std::string Name() const { return session_->endpoint() + "/" + repository_; }
  // GET of a blob range for ReadBlobRange / StreamBlobRange: a 206 starting at or before
  // `range.offset` (sliced), or a 200 whose bytes before it are skipped and which is stopped
  // once the range is through; the range's bytes go to `sink` in order. OK on 416 (past the
  // end). `streaming`: StreamBlobRange's rate floor and budget. A broken transfer is retried
  // when nothing reached `sink` yet, or always when `restart` (which resets the sink) is set.
  Status GetRange(const Digest& digest, ByteRange range, bool streaming, const BlobSink& sink,
                  const std::function<void()>& restart);
  // One multi-range GET for `ranges` (non-empty ranges, at least two). Either the bytes of
  // every range, or refused=true (the caller asks range by range); errors only for what a
  // single range would fail on too (NotFound, PermissionDenied, Unavailable after retries).
  struct MultiRangeAnswer;
  Result<MultiRangeAnswer> ReadMultiRange(const Digest& digest,
                                          const std::vector<ByteRange>& ranges);
  Status BlobError(const HttpResponse& response, const Digest& digest,
                   const std::string& what) const;

  const std::shared_ptr<RegistrySession> session_;
  const std::string repository_;
  std::atomic<bool> ignores_ranges_{false};
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_REMOTE_SOURCE_H_
