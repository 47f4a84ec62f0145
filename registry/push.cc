// imgfs — Pusher: uploads an image to a registry repository or into an OCI layout.
#include "registry/push.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "registry/backoff.h"
#include "registry/origin.h"
#include "registry/reference.h"

namespace imgfs::registry {
namespace {

using nlohmann::json;

// Blob bytes are read from the reader in pieces of this size (monolithic bodies are then
// concatenated; OCI-layout copies stream them). 1 MiB keeps syscalls few and memory small.
constexpr size_t kReadPieceBytes = 1 << 20;

// Rounds of 401 → challenge → repeat before giving up (the Authenticator normally ends the
// dance itself after the second rejection).
constexpr int kMaxAuthRounds = 3;

std::string AppendQuery(const std::string& url, std::string_view param) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + std::string(param);
}

// The registry's error body ({"errors":[{"code":…,"message":…}]}) as "CODE: message", or "".
std::string RegistryErrors(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return "";
  auto it = j.find("errors");
  if (it == j.end() || !it->is_array()) return "";
  std::string out;
  for (const json& e : *it) {
    if (!e.is_object()) continue;
    std::string code = e.value("code", std::string());
    std::string message = e.value("message", std::string());
    if (!out.empty()) out += "; ";
    out += code.empty() ? message : code + (message.empty() ? "" : ": " + message);
  }
  return out;
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

struct Pusher::Request {
  std::string method = "GET";
  std::string path;  // below the base URL ("/v2/…"), used when url is empty
  std::string url;   // absolute (an upload Location)
  std::vector<std::string> headers;
  std::string body;
  // Repeat on transport errors, 5xx and 429. Off for upload steps: a broken upload session
  // is restarted whole by PushBlob instead.
  bool retryable = true;
  // For messages: "uploading blob sha256:…".
  std::string what;
  // The auth scope the request needs; "" = Scope(). A mount also needs pull on the source
  // repository: "repository:NAME:pull,push repository:FROM:pull" (one token for both).
  std::string scope;
};

Pusher::Pusher(std::string registry_host, std::string repository, PushOptions options)
    : host_(std::move(registry_host)),
      endpoint_(host_ == "docker.io" ? std::string("registry-1.docker.io") : host_),
      repository_(std::move(repository)),
      options_(std::move(options)),
      tls_(WithCertsDir(options_.tls, options_.certs_dir, endpoint_)),
      other_host_tls_(OtherHostTls(options_.tls)),
      plain_http_allowed_(PlainHttpAllowed(endpoint_, options_.insecure_registries) ||
                          PlainHttpAllowed(host_, options_.insecure_registries)) {
  if (options_.http != nullptr) {
    http_ = options_.http;
  } else {
    owned_http_ = std::make_unique<HttpClient>();
    http_ = owned_http_.get();
  }
  auth_ = std::make_unique<Authenticator>(http_, options_.credential, tls_, host_, other_host_tls_);
}

Pusher::~Pusher() = default;

std::string Pusher::Describe() const { return "registry " + host_ + ", repository " + repository_; }

Result<std::string> Pusher::BaseUrl() {
  if (!base_url_.empty()) return base_url_;
  if (!plain_http_allowed_) {
    base_url_ = "https://" + endpoint_;
    return base_url_;
  }
  // Loopback or insecure: https when a TLS server answers there, else plain http.
  HttpRequest probe;
  probe.method = "GET";
  probe.url = "https://" + endpoint_ + "/v2/";
  probe.connect_timeout = options_.connect_timeout;
  probe.total_timeout = std::chrono::milliseconds(10000);
  probe.tls = tls_;
  Result<HttpResponse> r = http_->Do(probe);
  base_url_ = (r.has_value() ? "https://" : "http://") + endpoint_;
  auth_->SetRegistryOverPlainHttp(!r.has_value());
  return base_url_;
}

void Pusher::Backoff(int attempt, const HttpResponse* response) const {
  const auto delay = RetryDelay(attempt + 1, options_.base_backoff, options_.max_backoff, response);
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
}

Status Pusher::HttpError(const HttpResponse& response, const std::string& what) const {
  std::string detail = RegistryErrors(response.body);
  std::string where = " (" + Describe() + ")";
  std::string tail = detail.empty() ? "" : ": " + detail;
  long status = response.status;  // NOLINT(google-runtime-int): libcurl's type
  if (status == 401) {
    return Status::PermissionDenied("unauthorized: " + what + " needs authentication" + tail +
                                    where + "; run `imgfs login " + host_ + "`");
  }
  if (status == 403) {
    return Status::PermissionDenied("denied: " + what + " refused" + tail + where);
  }
  if (status == 404) return Status::NotFound(what + ": not found" + tail + where);
  if (status >= 500 || status == 429) {
    return Status::Unavailable(what + ": registry answered HTTP " + std::to_string(status) +
                               " after " + std::to_string(options_.max_attempts) + " attempts" +
                               tail + where);
  }
  if (detail.find("DIGEST_INVALID") != std::string::npos ||
      detail.find("SIZE_INVALID") != std::string::npos) {
    return Status::Corrupt(what + ": the registry rejected the content" + tail + where);
  }
  if (detail.find("BLOB_UNKNOWN") != std::string::npos ||
      detail.find("MANIFEST_BLOB_UNKNOWN") != std::string::npos) {
    return Status::NotFound(what + ": blob unknown to the registry" + tail + where);
  }
  return Status::InvalidArgument(what + ": unexpected HTTP " + std::to_string(status) + tail +
                                 where);
}

Result<HttpResponse> Pusher::Send(Request& request) {
  IMGFS_ASSIGN_OR_RETURN(std::string base, BaseUrl());
  const std::string scope = request.scope.empty() ? Scope() : request.scope;
  int auth_rounds = 0;
  int attempt = 0;
  while (true) {
    HttpRequest out;
    out.method = request.method;
    out.url = request.url.empty() ? base + request.path : request.url;
    out.headers = request.headers;
    out.body = request.body;
    out.connect_timeout = options_.connect_timeout;
    bool large = request.body.size() > (1u << 20);
    out.total_timeout =
        large ? std::chrono::milliseconds(0) : std::chrono::milliseconds(options_.request_timeout);
    out.low_speed_time = options_.low_speed_time;
    out.tls = IsRegistryHostPort(out.url, base) ? tls_ : other_host_tls_;
    out.max_body_bytes = 1 << 20;
    if (IsSchemeDowngrade(base, out.url) && !plain_http_allowed_) {
      // An upload Location on plain http from a registry spoken to over TLS (typically a TLS
      // proxy without X-Forwarded-Proto): neither the token nor the image goes there.
      return Status::Corrupt(request.what + " (" + Describe() +
                             "): the registry sent a plain-http " + "upload location (" +
                             UrlHostPort(out.url) +
                             ") although it is spoken to over https; refusing to send the upload " +
                             "and credentials in clear text");
    }
    // Credentials only go to the registry's origin, never to a storage host behind a Location
    // nor to the registry's host over a downgraded scheme.
    const bool same_origin = MayCarryCredentials(out.url, base, plain_http_allowed_);
    std::string auth_header;
    if (same_origin) {
      auth_header = auth_->HeaderFor(scope);
      if (!auth_header.empty()) out.headers.push_back(auth_header);
    }
    Result<HttpResponse> response = http_->Do(out);
    if (!response.has_value()) {
      Status st = response.error();
      if (st.code() == StatusCode::kUnavailable && request.retryable &&
          attempt + 1 < options_.max_attempts) {
        IMGFS_LOG(kInfo) << request.what << ": " << st.ToString() << "; retrying";
        Backoff(attempt++);
        continue;
      }
      return st.WithContext(request.what + " (" + Describe() + ")");
    }
    if (response->status == 401 && same_origin && auth_rounds < kMaxAuthRounds) {
      ++auth_rounds;
      Status st = auth_->OnChallenge(response->www_authenticate, scope, auth_header);
      if (!st.ok()) return st.WithContext(request.what);
      continue;
    }
    if ((response->status >= 500 || response->status == 429) && request.retryable &&
        attempt + 1 < options_.max_attempts) {
      IMGFS_LOG(kInfo) << request.what << ": HTTP " << response->status << "; retrying";
      Backoff(attempt++, &*response);  // honours Retry-After, as pulls do
      continue;
    }
    return response;
  }
}

Result<bool> Pusher::HasBlob(const Digest& digest) {
  Request req;
  req.method = "HEAD";
  req.path = "/v2/" + repository_ + "/blobs/" + digest.String();
  req.what = "checking blob " + digest.String();
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(req));
  if (r.status == 200) return true;
  if (r.status == 404) return false;
  return HttpError(r, req.what);
}

Result<std::string> Pusher::StartUpload(const Digest& digest, const std::string& mount_from,
                                        bool* mounted) {
  *mounted = false;
  Request req;
  req.method = "POST";
  req.path = "/v2/" + repository_ + "/blobs/uploads/";
  if (!mount_from.empty()) {
    req.path += "?mount=" + UrlEncode(digest.String()) + "&from=" + UrlEncode(mount_from);
    req.what = "mounting blob " + digest.String() + " from " + mount_from;
    req.scope = Scope() + " repository:" + mount_from + ":pull";
  } else {
    req.what = "starting the upload of blob " + digest.String();
  }
  req.headers.push_back("Content-Type: application/octet-stream");
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(req));
  if (r.status == 201 && !mount_from.empty()) {
    *mounted = true;
    return std::string();
  }
  if (r.status != 202) return HttpError(r, req.what);
  std::string location = r.Header("location");
  if (location.empty()) {
    return Status::Corrupt(req.what + ": the registry sent no upload Location (" + Describe() +
                           ")");
  }
  IMGFS_ASSIGN_OR_RETURN(std::string base, BaseUrl());
  return ResolveUrl(base + req.path, location);
}

Status Pusher::UploadMonolithic(const Descriptor& blob, const std::string& location,
                                PushBlobReader& reader,
                                const std::function<void(int64_t)>& on_bytes) {
  IMGFS_ASSIGN_OR_RETURN(std::string data, ReadWholeBlob(reader, blob));
  Request req;
  req.method = "PUT";
  req.url = AppendQuery(location, "digest=" + UrlEncode(blob.digest.String()));
  req.headers.push_back("Content-Type: application/octet-stream");
  req.body = std::move(data);
  req.retryable = false;
  req.what = "uploading blob " + blob.digest.String();
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(req));
  if (r.status != 201 && r.status != 204 && r.status != 200) return HttpError(r, req.what);
  if (on_bytes) on_bytes(static_cast<int64_t>(req.body.size()));
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
    Request req;
    req.method = "PATCH";
    req.url = location;
    req.headers.push_back("Content-Type: application/octet-stream");
    req.headers.push_back("Content-Range: " + std::to_string(offset) + "-" +
                          std::to_string(offset + data.size() - 1));
    size_t n = data.size();
    req.body = std::move(data);
    req.retryable = false;
    req.what = what;
    IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(req));
    if (r.status != 202 && r.status != 204) return HttpError(r, what);
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
  Request req;
  req.method = "PUT";
  req.url = AppendQuery(location, "digest=" + UrlEncode(blob.digest.String()));
  req.headers.push_back("Content-Type: application/octet-stream");
  req.retryable = false;
  req.what = "completing the upload of blob " + blob.digest.String();
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(req));
  if (r.status != 201 && r.status != 204 && r.status != 200) return HttpError(r, req.what);
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
  auto cancel = [this](const std::string& url) {
    // Abandons an upload session (best effort; the registry also expires it).
    Request req;
    req.method = "DELETE";
    req.url = url;
    req.retryable = false;
    req.what = "cancelling an upload";
    (void)Send(req);
  };
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
      if (!location.empty()) cancel(location);
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
      cancel(*started);
    }
  }
  if (!reader.Has(blob.digest)) {
    if (!location.empty()) cancel(location);
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
    if (st.code() != StatusCode::kUnavailable || attempt + 1 >= options_.max_attempts) {
      return st;
    }
    IMGFS_LOG(kInfo) << st.ToString() << "; restarting the upload";
    if (on_bytes && sent > 0) on_bytes(-sent);
    location.clear();
    Backoff(attempt);
  }
}

Status Pusher::PutManifest(const std::string& tag_or_digest, const std::string& bytes,
                           const std::string& media_type) {
  Request req;
  req.method = "PUT";
  req.path = "/v2/" + repository_ + "/manifests/" + tag_or_digest;
  req.headers.push_back("Content-Type: " + media_type);
  req.body = bytes;
  req.what = "pushing manifest " + tag_or_digest;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse r, Send(req));
  if (r.status != 201 && r.status != 200 && r.status != 202) return HttpError(r, req.what);
  std::string echoed = r.Header("docker-content-digest");
  Digest expected = Digest::Sha256Of(bytes);
  if (!echoed.empty() && echoed != expected.String()) {
    return Status::Corrupt(req.what + ": the registry stored digest " + echoed + ", expected " +
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
  struct stat st;
  if (::stat((dir + "/oci-layout").c_str(), &st) != 0) {
    IMGFS_RETURN_IF_ERROR(WriteFileAtomic(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})")
                              .WithContext(what));
  }
  json index = {{"schemaVersion", 2}, {"manifests", json::array()}};
  Result<std::string> existing = ReadFile(dir + "/index.json");
  if (existing.has_value()) {
    index = json::parse(*existing, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) {
      return Status::Corrupt(what + ": index.json is not a JSON object");
    }
    if (!index.contains("manifests") || !index["manifests"].is_array()) {
      index["manifests"] = json::array();
    }
  } else if (existing.error().code() != StatusCode::kNotFound) {
    return existing.error().WithContext(what);
  }

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

  json kept = json::array();
  for (const json& entry : index["manifests"]) {
    if (entry.is_object() && entry.contains("annotations") && entry["annotations"].is_object() &&
        entry["annotations"].value("org.opencontainers.image.ref.name", std::string()) == tag) {
      continue;
    }
    kept.push_back(entry);
  }
  json desc = {{"mediaType", image.manifest_media_type},
               {"digest", manifest_digest.String()},
               {"size", image.manifest_bytes.size()}};
  if (!tag.empty()) desc["annotations"] = {{"org.opencontainers.image.ref.name", tag}};
  kept.push_back(desc);
  index["manifests"] = kept;
  return WriteFileAtomic(dir + "/index.json", index.dump()).WithContext(what);
}

}  // namespace imgfs::registry
