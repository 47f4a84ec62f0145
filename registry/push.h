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
// Connection policy is the RegistrySession's (registry/session.h): scheme (https; plain http
// only for loopback and insecure_registries, https tried first), certs.d, the auth challenge
// rounds (scope `repository:NAME:pull,push`; a mount asks for one token covering
// `repository:NAME:pull,push repository:FROM:pull`, one space-separated scope parameter as
// OAuth2 spells it; a refused mount falls back to an upload), redirects, retries with
// Retry-After and the status mapping. Upload steps (PUT, PATCH of a session) are sent once:
// a failed upload is restarted from a fresh session, up to max_attempts (a half-written
// session is abandoned, the registry garbage-collects it). An upload Location that
// downgrades https to plain http is refused (Corrupt) unless plain http is allowed for the
// registry: neither the token nor the image goes there.
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
#include "registry/credentials.h"
#include "registry/digest.h"
#include "registry/http_client.h"
#include "registry/manifest.h"
#include "registry/session.h"

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

struct PushOptions : ConnectionOptions {
  // Blobs of at least this size are uploaded in chunks of chunk_size_bytes (PATCH); smaller
  // ones in one PUT. 64 MiB keeps memory bounded (a chunk is held in memory while it is
  // sent) while small layers take a single round trip, as containers/image does.
  int64_t chunked_threshold_bytes = 64 << 20;
  int64_t chunk_size_bytes = 16 << 20;
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
  // Pushes over `session` (shared, e.g. with a RemoteSource reading the same registry); the
  // connection fields of `options` are the session's, only the upload fields are used here.
  Pusher(std::shared_ptr<RegistrySession> session, std::string repository, PushOptions options);
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
  using Call = RegistrySession::Call;
  // A call of this repository (push scope, messages naming it): `path` below /v2/<name>/, or
  // an absolute `url` (an upload Location) when `path` is empty.
  Call NewCall(std::string method, std::string path, std::string what) const;
  // session_->Execute, refusing an upload Location that downgrades to plain http.
  Result<HttpResponse> Send(Call& call);
  // Starts an upload session (optionally trying a mount first); returns the Location, or
  // "" when the blob got mounted.
  Result<std::string> StartUpload(const Digest& digest, const std::string& mount_from,
                                  bool* mounted);
  Status UploadMonolithic(const Descriptor& blob, const std::string& location,
                          PushBlobReader& reader, const std::function<void(int64_t)>& on_bytes);
  Status UploadChunked(const Descriptor& blob, std::string location, PushBlobReader& reader,
                       const std::function<void(int64_t)>& on_bytes);
  // Abandons an upload session (best effort; the registry also expires it).
  void CancelUpload(const std::string& location);

  const std::shared_ptr<RegistrySession> session_;
  const std::string repository_;
  const PushOptions options_;
};

// Writes `image` into the OCI layout `dir` (created when missing: oci-layout, index.json,
// blobs/sha256/), blobs verified against their digests, and names it `tag` in index.json
// (org.opencontainers.image.ref.name; an entry with that name is replaced). Every blob must
// be readable from `reader`. Atomic per file (blobs and index.json are renamed into place).
Status PushToOciLayout(const std::string& dir, const std::string& tag, const ImageToPush& image,
                       PushBlobReader& reader, const PushProgressFn& progress = {});

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_PUSH_H_
