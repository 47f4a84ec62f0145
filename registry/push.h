// imgfs — Pusher: uploads an image (config, layers, manifest) to one repository of an
// OCI/Docker registry, and PushToOciLayout: the same image into an OCI layout directory.
//
// The distribution push protocol (distribution-spec `spec.md`, "Pushing blobs", "Mounting a
// blob from another repository", "Pushing manifests"), for each blob, config first, then the
// layers in manifest order:
//   HEAD /v2/<name>/blobs/<digest>                       200 → already there, skipped
//   POST /v2/<name>/blobs/uploads/?mount=<d>&from=<repo> 201 → mounted from a repository of
//                                                        the same registry that holds it
//                                                        (202 → not mounted: continue the
//                                                        upload that session opened)
//   POST /v2/<name>/blobs/uploads/                       202 + Location: an upload session
//   monolithic (size < chunked_threshold_bytes):
//     PUT <location>?digest=<d>   body = the whole blob  201
//   chunked:
//     PATCH <location>  Content-Range: <first>-<last>    202 + the next Location, per chunk
//     PUT <location>?digest=<d>   empty body             201
// and last, once every blob it names is there:
//   PUT /v2/<name>/manifests/<tag>  Content-Type: the manifest's media type        201
//
// Blob bytes come from a PushBlobReader (the caller's store); the registry module knows
// nothing about caches. A blob the reader does not have can still be pushed when the
// registry already has it (HEAD) or can mount it; otherwise the push fails with NotFound
// naming the blob.
//
// Policy: authentication through registry/auth.h (scope `repository:NAME:pull,push`; a mount
// asks for one token covering `repository:NAME:pull,push repository:FROM:pull`, sent as one
// space-separated scope parameter as OAuth2 spells it; every 401 goes to
// Authenticator::OnChallenge and the request is repeated, the Authenticator decides when to
// give up; a mount that is refused falls back to an upload). Transport errors, 5xx and 429 are
// retried with exponential backoff (a 429/503 Retry-After honoured, capped by max_backoff) up
// to max_attempts; an upload is then restarted from a fresh session (a half-written session
// is abandoned, the registry garbage-collects it). The Authorization header is only sent to
// the registry's own origin (scheme, host, port; an upload Location may point elsewhere;
// registry/origin.h), certs.d material only to its host.
// Scheme: https; plain http only for loopback hosts and insecure_registries, where https is
// tried first (as docker does). An upload Location that downgrades https to plain http is
// refused (Corrupt) unless plain http is allowed for the registry.
//
// Errors are one line each, naming the registry and repository: PermissionDenied
// ("unauthorized: …", "denied: …"), NotFound ("blob unknown …"), Unavailable ("registry
// HOST answered 503 … after N attempts"), Corrupt (the registry reports a digest mismatch).
//
// Thread-safety: a Pusher is used by one thread at a time (the progress callback is called
// on that thread). PushToOciLayout is not safe against concurrent writers of the same layout.
#ifndef IMGFS_REGISTRY_PUSH_H_
#define IMGFS_REGISTRY_PUSH_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/auth.h"
#include "registry/credentials.h"
#include "registry/digest.h"
#include "registry/http_client.h"
#include "registry/manifest.h"

namespace imgfs::registry {

// Where the bytes of the blobs to push come from.
class PushBlobReader {
 public:
  virtual ~PushBlobReader() = default;
  // True when the reader holds the blob.
  virtual bool Has(const Digest& digest) = 0;
  // Bytes [offset, offset + length) of the blob (shorter only at its end). The Pusher
  // verifies the digest of everything it sent before it commits an upload.
  virtual Result<std::string> ReadAt(const Digest& digest, uint64_t offset, size_t length) = 0;
};

// What to push: a manifest and its blobs.
struct ImageToPush {
  std::string manifest_bytes;
  std::string manifest_media_type;
  // The config and layer descriptors of the manifest (pushed in this order: config first).
  std::vector<Descriptor> blobs;
  // Per blob: repositories of the same registry that are believed to hold it (e.g. the
  // repository an image was pulled from); tried in order with a cross-repository mount.
  std::map<Digest, std::vector<std::string>> mount_from;
};

struct PushOptions {
  // Extra CAs (--ca-cert) and an explicit client certificate; merged with certs_dir for the
  // registry's own host (other hosts get the extra CAs only; registry/origin.h).
  TlsOptions tls;
  // Docker's per-registry certificate directory (as RemoteSourceOptions::certs_dir).
  std::string certs_dir = "/etc/docker/certs.d";
  // Hosts ("host[:port]") that may be spoken to over plain HTTP besides loopback ones.
  std::vector<std::string> insecure_registries;
  std::optional<Credential> credential;
  // Blobs of at least this size are uploaded in chunks of chunk_size_bytes (PATCH); smaller
  // ones in one PUT. 64 MiB keeps memory bounded (a chunk is held in memory while it is
  // sent) while small layers take a single round trip, as containers/image does.
  int64_t chunked_threshold_bytes = 64 << 20;
  int64_t chunk_size_bytes = 16 << 20;
  std::chrono::milliseconds connect_timeout{10000};
  // Whole-request limit for requests without a large body; uploads rely on the low-speed
  // limit (1 byte/s for low_speed_time) instead.
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::seconds low_speed_time{30};
  // Attempts per request or upload (1 = no retry); waits base_backoff·2^n between them.
  int max_attempts = 4;
  std::chrono::milliseconds base_backoff{500};
  std::chrono::milliseconds max_backoff{10000};
  // A shared client; when null the Pusher owns one. Must outlive the Pusher.
  HttpClient* http = nullptr;
};

// One blob's progress.
struct PushProgress {
  enum class State {
    kWaiting,    // not started
    kExists,     // the registry has it already (HEAD)
    kMounted,    // mounted from another repository
    kUploading,  // bytes going out
    kPushed,     // upload committed
    kFailed,
  };
  size_t index = 0;  // position in ImageToPush::blobs
  size_t count = 0;
  Digest digest;
  int64_t done_bytes = 0;
  int64_t total_bytes = 0;
  State state = State::kWaiting;
  std::string mounted_from;  // kMounted: the repository the blob was mounted from
};
using PushProgressFn = std::function<void(const PushProgress&)>;

// What a push did, for tests and summaries.
struct PushReport {
  Digest manifest_digest;
  int64_t manifest_size = 0;
  int blobs_existing = 0;  // skipped after HEAD
  int blobs_mounted = 0;
  int blobs_uploaded = 0;
  int chunked_uploads = 0;
  int64_t bytes_uploaded = 0;
};

class Pusher {
 public:
  // Pushes to `repository` ("me/app") at `registry_host` ("127.0.0.1:5000"; "docker.io" is
  // spoken to at registry-1.docker.io). Does no I/O.
  Pusher(std::string registry_host, std::string repository, PushOptions options);
  ~Pusher();
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  // Pushes every blob of `image` (skipping, mounting or uploading each), then the manifest
  // under `tag` (a tag, or "" to push it by digest only). On any error the manifest is not
  // pushed (blobs already uploaded stay, as with docker).
  Result<PushReport> Push(const ImageToPush& image, const std::string& tag, PushBlobReader& reader,
                          const PushProgressFn& progress = {});

  // The building blocks of Push.
  // HEAD: true when the repository has the blob.
  Result<bool> HasBlob(const Digest& digest);
  // Uploads one blob unless present or mountable; reports what happened through
  // progress->state (and progress->mounted_from).
  Status PushBlob(const Descriptor& blob, const std::vector<std::string>& mount_from,
                  PushBlobReader& reader, const std::function<void(int64_t)>& on_bytes,
                  PushProgress* progress, PushReport* report);
  // PUT of the manifest under `tag_or_digest`.
  Status PutManifest(const std::string& tag_or_digest, const std::string& bytes,
                     const std::string& media_type);

  // "registry HOST, repository NAME"
  std::string Describe() const;

 private:
  struct Request;
  // One logical request: scheme, auth (401 → challenge → repeat), retries on transport
  // errors, 5xx and 429. `url` empty → base + path.
  Result<HttpResponse> Send(Request& request);
  Result<std::string> BaseUrl();
  Status HttpError(const HttpResponse& response, const std::string& what) const;
  // Sleeps before retry `attempt` + 1 (registry/backoff.h; `response` may carry Retry-After).
  void Backoff(int attempt, const HttpResponse* response = nullptr) const;
  // Starts an upload session (optionally trying a mount first); returns the Location, or
  // "" when the blob got mounted.
  Result<std::string> StartUpload(const Digest& digest, const std::string& mount_from,
                                  bool* mounted);
  Status UploadMonolithic(const Descriptor& blob, const std::string& location,
                          PushBlobReader& reader, const std::function<void(int64_t)>& on_bytes);
  Status UploadChunked(const Descriptor& blob, std::string location, PushBlobReader& reader,
                       const std::function<void(int64_t)>& on_bytes);
  std::string Scope() const { return "repository:" + repository_ + ":pull,push"; }

  const std::string host_;      // as given ("docker.io")
  const std::string endpoint_;  // host to contact ("registry-1.docker.io")
  const std::string repository_;
  const PushOptions options_;
  const TlsOptions tls_;             // options_.tls + certs_dir/<endpoint>: the registry's
  const TlsOptions other_host_tls_;  // options_.tls CAs only: any other host
  const bool plain_http_allowed_;    // loopback or --insecure-registry (registry/origin.h)
  std::unique_ptr<HttpClient> owned_http_;
  HttpClient* http_;
  std::unique_ptr<Authenticator> auth_;
  std::string base_url_;  // "https://HOST" once decided
};

// Writes `image` into the OCI layout `dir` (created when missing: oci-layout, index.json,
// blobs/sha256/), blobs verified against their digests, and names it `tag` in index.json
// (org.opencontainers.image.ref.name; an entry with that name is replaced). Every blob must
// be readable from `reader`. Atomic per file (blobs and index.json are renamed into place).
Status PushToOciLayout(const std::string& dir, const std::string& tag, const ImageToPush& image,
                       PushBlobReader& reader, const PushProgressFn& progress = {});

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_PUSH_H_
