// imgfs — Pusher: uploads an image to a registry repository or into an OCI layout.
#include "registry/push.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "base/file_util.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "registry/oci_layout.h"
#include "registry/origin.h"
#include "registry/reference.h"

namespace imgfs::registry {
namespace {

// Blob bytes are read from the reader in pieces of this size (monolithic bodies are then
// concatenated; OCI-layout copies stream them). 1 MiB keeps syscalls few and memory small.
constexpr size_t kReadPieceBytes = 1 << 20;

std::string AppendQuery(const std::string& url, std::string_view param) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + std::string(param);
}

// Reads a whole blob from the reader (`size` bytes) and checks its digest.
Result<std::string> ReadWholeBlob(PushBlobReader& reader, const Descriptor& blob) {
  std::string data;
  uint64_t offset = 0;
  while (true) {
    size_t want = kReadPieceBytes;
    if (blob.size > 0) {
      uint64_t left = static_cast<uint64_t>(blob.size) - std::min<uint64_t>(offset, blob.size);
      want = static_cast<size_t>(std::min<uint64_t>(left + 1, kReadPieceBytes));
    }
    IMGFS_ASSIGN_OR_RETURN(std::string piece, reader.ReadAt(blob.digest, offset, want));
    if (piece.empty()) break;
    offset += piece.size();
    data += piece;
    if (blob.size > 0 && offset > static_cast<uint64_t>(blob.size)) break;
  }
  if (blob.size > 0 && data.size() != static_cast<uint64_t>(blob.size)) {
    return Status::Corrupt("blob " + blob.digest.String() + " has " + std::to_string(data.size()) +
                           " bytes locally, the manifest says " + std::to_string(blob.size));
  }
  IMGFS_RETURN_IF_ERROR(blob.digest.Verify(data));
  return data;
}

}  // namespace

Pusher::Pusher(std::string registry_host, std::string repository, PushOptions options)
    : Pusher(std::make_shared<RegistrySession>(std::move(registry_host), options),
             std::move(repository), options) {}

Pusher::Pusher(std::shared_ptr<RegistrySession> session, std::string repository,
               PushOptions options)
    : session_(std::move(session)),
      repository_(std::move(repository)),
      options_(std::move(options)) {}

Pusher::~Pusher() = default;

std::string Pusher::Describe() const {
  return "registry " + session_->registry_host() + ", repository " + repository_;
}

Pusher::Call Pusher::NewCall(std::string method, std::string path, std::string what) const {
  Call call;
  call.method = std::move(method);
  if (!path.empty()) call.path = "/v2/" + repository_ + "/" + path;
  call.what = std::move(what);
  call.where = Describe();
  call.scope = "repository:" + repository_ + ":pull,push";
  return call;
}

Result<HttpResponse> Pusher::Send(Call& call) {
  if (!call.url.empty()) {
    IMGFS_ASSIGN_OR_RETURN(std::string base, session_->BaseUrl());
    if (IsSchemeDowngrade(base, call.url) && !session_->plain_http_allowed()) {
      // An upload Location on plain http from a registry spoken to over TLS (typically a TLS
      // proxy without X-Forwarded-Proto): neither the token nor the image goes there.
      return Status::Corrupt(call.what + " (" + Describe() +
                             "): the registry sent a plain-http upload location (" +
                             UrlHostPort(call.url) +
                             ") although it is spoken to over https; refusing to send the upload "
                             "and credentials in clear text");
    }
  }
  return session_->Execute(call);
}

Result<bool> Pusher::HasBlob(const Digest& digest) {
  Call call = NewCall("HEAD", "blobs/" + digest.String(), "checking blob " + digest.String());
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status == 200) return true;
  if (r.status == 404) return false;
  return session_->HttpError(r, call.what, call.where);
}

Result<std::string> Pusher::StartUpload(const Digest& digest, const std::string& mount_from,
                                        bool* mounted) {
  *mounted = false;
  Call call = NewCall("POST", "blobs/uploads/", "starting the upload of blob " + digest.String());
  if (!mount_from.empty()) {
    call.path += "?mount=" + UrlEncode(digest.String()) + "&from=" + UrlEncode(mount_from);
    call.what = "mounting blob " + digest.String() + " from " + mount_from;
    call.scope += " repository:" + mount_from + ":pull";
  }
  call.headers.push_back("Content-Type: application/octet-stream");
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status == 201 && !mount_from.empty()) {
    *mounted = true;
    return std::string();
  }
  if (r.status != 202) return session_->HttpError(r, call.what, call.where);
  std::string location = r.Header("location");
  if (location.empty()) {
    return Status::Corrupt(call.what + ": the registry sent no upload Location (" + Describe() +
                           ")");
  }
  const std::string from =
      r.effective_url.empty() ? session_->KnownBaseUrl() + call.path : r.effective_url;
  return ResolveUrl(from, location);
}

void Pusher::CancelUpload(const std::string& location) {
  Call call = NewCall("DELETE", "", "cancelling an upload");
  call.url = location;
  call.retry = false;
  (void)Send(call);
}

Status Pusher::UploadMonolithic(const Descriptor& blob, const std::string& location,
                                PushBlobReader& reader,
                                const std::function<void(int64_t)>& on_bytes) {
  IMGFS_ASSIGN_OR_RETURN(std::string data, ReadWholeBlob(reader, blob));
  Call call = NewCall("PUT", "", "uploading blob " + blob.digest.String());
  call.url = AppendQuery(location, "digest=" + UrlEncode(blob.digest.String()));
  call.headers.push_back("Content-Type: application/octet-stream");
  call.body = std::move(data);
  call.retry = false;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status != 201 && r.status != 204 && r.status != 200) {
    return session_->HttpError(r, call.what, call.where);
  }
  if (on_bytes) on_bytes(static_cast<int64_t>(call.body.size()));
  return Status::Ok();
}

Status Pusher::UploadChunked(const Descriptor& blob, std::string location, PushBlobReader& reader,
                             const std::function<void(int64_t)>& on_bytes) {
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(options_.chunk_size_bytes, 4096));
  Sha256 hasher;
  uint64_t offset = 0;
  const std::string what = "uploading blob " + blob.digest.String() + " in chunks";
  while (true) {
    IMGFS_ASSIGN_OR_RETURN(std::string data, reader.ReadAt(blob.digest, offset, chunk));
    if (data.empty()) break;
    hasher.Update(data);
    Call call = NewCall("PATCH", "", what);
    call.url = location;
    call.headers.push_back("Content-Type: application/octet-stream");
    call.headers.push_back("Content-Range: " + std::to_string(offset) + "-" +
                           std::to_string(offset + data.size() - 1));
    size_t n = data.size();
    call.body = std::move(data);
    call.retry = false;
    IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
    if (r.status != 202 && r.status != 204) return session_->HttpError(r, what, call.where);
    std::string next = r.Header("location");
    if (!next.empty()) location = ResolveUrl(location, next);
    offset += n;
    if (on_bytes) on_bytes(static_cast<int64_t>(n));
    if (n < chunk) break;
  }
  Digest sent = hasher.Finish();
  if (sent != blob.digest || (blob.size > 0 && offset != static_cast<uint64_t>(blob.size))) {
    return Status::Corrupt("blob " + blob.digest.String() + " changed while it was read: sent " +
                           std::to_string(offset) + " bytes hashing to " + sent.String());
  }
  Call call = NewCall("PUT", "", "completing the upload of blob " + blob.digest.String());
  call.url = AppendQuery(location, "digest=" + UrlEncode(blob.digest.String()));
  call.headers.push_back("Content-Type: application/octet-stream");
  call.retry = false;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status != 201 && r.status != 204 && r.status != 200) {
    return session_->HttpError(r, call.what, call.where);
  }
  return Status::Ok();
}

Status Pusher::PushBlob(const Descriptor& blob, const std::vector<std::string>& mount_from,
                        PushBlobReader& reader, const std::function<void(int64_t)>& on_bytes,
                        PushProgress* progress, PushReport* report) {
  PushProgress::State* state = &progress->state;
  IMGFS_ASSIGN_OR_RETURN(bool present, HasBlob(blob.digest));
  if (present) {
    *state = PushProgress::State::kExists;
    ++report->blobs_existing;
    return Status::Ok();
  }
  std::string location;  // an upload session a refused mount opened
  for (const std::string& from : mount_from) {
    if (from.empty() || from == repository_) continue;
    bool mounted = false;
    Result<std::string> started = StartUpload(blob.digest, from, &mounted);
    if (!started.has_value()) {
      // A mount the registry cannot do is no reason to fail: upload instead.
      IMGFS_LOG(kInfo) << started.error().ToString();
      continue;
    }
    if (mounted) {
      if (!location.empty()) CancelUpload(location);
      *state = PushProgress::State::kMounted;
      progress->mounted_from = from;
      ++report->blobs_mounted;
      return Status::Ok();
    }
    // Not mounted: the registry opened an ordinary upload session instead. Keep the first
    // one for the upload, drop the others.
    if (location.empty()) {
      location = std::move(started).value();
    } else {
      CancelUpload(*started);
    }
  }
  if (!reader.Has(blob.digest)) {
    if (!location.empty()) CancelUpload(location);
    return Status::NotFound("blob " + blob.digest.String() + " is not in the local store and " +
                            Describe() +
                            " does not have it: pull the image fully (imgfs pull) first");
  }
  *state = PushProgress::State::kUploading;
  const bool chunked = blob.size >= options_.chunked_threshold_bytes;
  for (int attempt = 0;; ++attempt) {
    if (location.empty()) {
      bool mounted = false;
      IMGFS_ASSIGN_OR_RETURN(location, StartUpload(blob.digest, "", &mounted));
    }
    int64_t sent = 0;
    auto count = [&](int64_t n) {
      sent += n;
      if (on_bytes) on_bytes(n);
    };
    Status st = chunked ? UploadChunked(blob, location, reader, count)
                        : UploadMonolithic(blob, location, reader, count);
    if (st.ok()) {
      *state = PushProgress::State::kPushed;
      ++report->blobs_uploaded;
      if (chunked) ++report->chunked_uploads;
      report->bytes_uploaded += sent;
      return Status::Ok();
    }
    if (st.code() != StatusCode::kUnavailable || attempt + 1 >= session_->options().max_attempts) {
      return st;
    }
    IMGFS_LOG(kInfo) << st.ToString() << "; restarting the upload";
    if (on_bytes && sent > 0) on_bytes(-sent);
    location.clear();
    session_->Backoff(attempt + 1, nullptr);
  }
}

Status Pusher::PutManifest(const std::string& tag_or_digest, const std::string& bytes,
                           const std::string& media_type) {
  Call call = NewCall("PUT", "manifests/" + tag_or_digest, "pushing manifest " + tag_or_digest);
  call.headers.push_back("Content-Type: " + media_type);
  call.body = bytes;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (r.status != 201 && r.status != 200 && r.status != 202) {
    return session_->HttpError(r, call.what, call.where);
  }
  std::string echoed = r.Header("docker-content-digest");
  Digest expected = Digest::Sha256Of(bytes);
  if (!echoed.empty() && echoed != expected.String()) {
    return Status::Corrupt(call.what + ": the registry stored digest " + echoed + ", expected " +
                           expected.String() + " (" + Describe() + ")");
  }
  return Status::Ok();
}

Result<PushReport> Pusher::Push(const ImageToPush& image, const std::string& tag,
                                PushBlobReader& reader, const PushProgressFn& progress) {
  PushReport report;
  for (size_t i = 0; i < image.blobs.size(); ++i) {
    const Descriptor& blob = image.blobs[i];
    PushProgress p;
    p.index = i;
    p.count = image.blobs.size();
    p.digest = blob.digest;
    p.total_bytes = blob.size;
    if (progress) progress(p);
    std::vector<std::string> from;
    if (auto it = image.mount_from.find(blob.digest); it != image.mount_from.end()) {
      from = it->second;
    }
    auto on_bytes = [&](int64_t n) {
      p.done_bytes += n;
      p.state = PushProgress::State::kUploading;
      if (progress) progress(p);
    };
    Status st = PushBlob(blob, from, reader, on_bytes, &p, &report);
    if (!st.ok()) {
      p.state = PushProgress::State::kFailed;
      if (progress) progress(p);
      return st;
    }
    p.done_bytes = blob.size;
    if (progress) progress(p);
  }
  Digest manifest_digest = Digest::Sha256Of(image.manifest_bytes);
  IMGFS_RETURN_IF_ERROR(PutManifest(tag.empty() ? manifest_digest.String() : tag,
                                    image.manifest_bytes, image.manifest_media_type));
  report.manifest_digest = manifest_digest;
  report.manifest_size = static_cast<int64_t>(image.manifest_bytes.size());
  return report;
}

// ---- OCI layout ----

namespace {

// Copies one blob from the reader into DIR/blobs/<alg>/<hex> through a temporary file,
// verifying its digest before the rename.
Status CopyBlobToLayout(const std::string& dir, const Descriptor& blob, PushBlobReader& reader,
                        const std::function<void(int64_t)>& on_bytes) {
  const std::string final_path =
      dir + "/blobs/" + blob.digest.algorithm() + "/" + blob.digest.hex();
  struct stat st;
  if (::stat(final_path.c_str(), &st) == 0) return Status::Ok();
  if (!reader.Has(blob.digest)) {
    return Status::NotFound("blob " + blob.digest.String() +
                            " is not in the local store: pull the image fully (imgfs pull) first");
  }
  const std::string tmp_path = final_path + ".tmp." + std::to_string(::getpid());
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC));
  struct Cleanup {
    std::string path;
    bool keep = false;
    ~Cleanup() {
      if (!keep) ::unlink(path.c_str());
    }
  } cleanup{tmp_path};
  Sha256 hasher;
  uint64_t offset = 0;
  while (true) {
    IMGFS_ASSIGN_OR_RETURN(std::string piece, reader.ReadAt(blob.digest, offset, kReadPieceBytes));
    if (piece.empty()) break;
    hasher.Update(piece);
    IMGFS_RETURN_IF_ERROR(WriteAll(fd.get(), piece));
    offset += piece.size();
    if (on_bytes) on_bytes(static_cast<int64_t>(piece.size()));
  }
  Digest got = hasher.Finish();
  if (got != blob.digest) {
    return Status::Corrupt("blob " + blob.digest.String() + " reads as " + got.String());
  }
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + tmp_path);
  if (fd.Close() != 0) return Status::FromErrno(errno, "close " + tmp_path);
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    return Status::FromErrno(errno, "rename to " + final_path);
  }
  cleanup.keep = true;
  return Status::Ok();
}

}  // namespace

Status PushToOciLayout(const std::string& dir, const std::string& tag, const ImageToPush& image,
                       PushBlobReader& reader, const PushProgressFn& progress) {
  const std::string what = "writing oci layout " + dir;
  IMGFS_RETURN_IF_ERROR(MakeDirs(dir + "/blobs/sha256").WithContext(what));
  IMGFS_RETURN_IF_ERROR(InitOciLayout(dir).WithContext(what));
  IMGFS_ASSIGN_OR_RETURN(Index index, ReadOciIndex(dir));

  for (size_t i = 0; i < image.blobs.size(); ++i) {
    PushProgress p;
    p.index = i;
    p.count = image.blobs.size();
    p.digest = image.blobs[i].digest;
    p.total_bytes = image.blobs[i].size;
    auto on_bytes = [&](int64_t n) {
      p.done_bytes += n;
      p.state = PushProgress::State::kUploading;
      if (progress) progress(p);
    };
    Status copied = CopyBlobToLayout(dir, image.blobs[i], reader, on_bytes);
    if (!copied.ok()) return copied.WithContext(what);
    p.state = p.done_bytes > 0 ? PushProgress::State::kPushed : PushProgress::State::kExists;
    p.done_bytes = p.total_bytes;
    if (progress) progress(p);
  }
  Digest manifest_digest = Digest::Sha256Of(image.manifest_bytes);
  const std::string manifest_path = dir + "/blobs/sha256/" + manifest_digest.hex();
  IMGFS_RETURN_IF_ERROR(WriteFileAtomic(manifest_path, image.manifest_bytes).WithContext(what));

  Descriptor manifest;
  manifest.media_type = image.manifest_media_type;
  manifest.digest = manifest_digest;
  manifest.size = static_cast<int64_t>(image.manifest_bytes.size());
  NameInOciIndex(&index, std::move(manifest), tag);
  return WriteOciIndex(dir, std::move(index)).WithContext(what);
}

}  // namespace imgfs::registry
