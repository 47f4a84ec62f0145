// imgfs — RemoteSource implementation: the distribution endpoints and their verification,
// over a RegistrySession (connection policy) and registry/multi_range.cc (ReadBlobRanges).
#include "registry/remote_source.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/strings.h"
#include "registry/digest.h"
#include "registry/media_types.h"
#include "registry/multipart_ranges.h"

namespace imgfs::registry {
namespace {

// Pages asked of /tags/list; distribution caps n at 1000 by default.
constexpr int kTagsPageSize = 1000;
// Refuse to follow more pages than this (a loop in Link headers).
constexpr int kMaxTagPages = 10000;
// Largest /tags/list page read. A registry may ignore n= and answer every tag at once:
// 64 MiB is half a million tags of 128 bytes, and still a bound.
constexpr size_t kMaxTagsPageBytes = 64u << 20;

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

}  // namespace

RemoteSource::RemoteSource(std::shared_ptr<RegistrySession> session, std::string repository)
    : session_(std::move(session)), repository_(std::move(repository)) {}

RemoteSource::~RemoteSource() = default;

std::unique_ptr<RemoteSource> RemoteSource::Create(const Reference& ref,
                                                   RemoteSourceOptions options) {
  return Create(ref.domain(), ref.path(), std::move(options));
}

std::unique_ptr<RemoteSource> RemoteSource::Create(std::string registry_host,
                                                   std::string repository,
                                                   RemoteSourceOptions options) {
  return Create(std::make_shared<RegistrySession>(std::move(registry_host), std::move(options)),
                std::move(repository));
}

std::unique_ptr<RemoteSource> RemoteSource::Create(std::shared_ptr<RegistrySession> session,
                                                   std::string repository) {
  return std::unique_ptr<RemoteSource>(new RemoteSource(std::move(session), std::move(repository)));
}

std::string RemoteSource::Describe() const {
  return "registry " + session_->endpoint() + ", repository " + repository_;
}

RemoteSource::Call RemoteSource::NewCall(std::string path, std::string what) const {
  Call call;
  call.path = "/v2/" + repository_ + "/" + path;
  call.what = std::move(what);
  call.where = Describe();
  call.scope = "repository:" + repository_ + ":pull";
  return call;
}

Status RemoteSource::BlobError(const HttpResponse& response, const Digest& digest,
                               const std::string& what) const {
  if (response.status == 404) {
    return Status::NotFound("blob unknown: " + digest.String() + " (" + Describe() + ")");
  }
  return session_->HttpError(response, what, Describe());
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
  const std::string display = Name() + (wanted ? "@" : ":") + ref;
  Call call = NewCall("manifests/" + ref, "GET manifest " + display);
  call.headers.push_back("Accept: " + std::string(media::kManifestAccept));
  call.max_body_bytes = kMaxManifestBytes;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, session_->Execute(call));
  if (resp.status == 404) {
    return Status::NotFound("manifest unknown: " + display + " (" + Describe() + ")");
  }
  if (!IsSuccessStatus(resp.status)) return session_->HttpError(resp, call.what, Describe());

  FetchedManifest out;
  out.digest = Digest::Sha256Of(resp.body);
  if (wanted && out.digest != *wanted) {
    return Status::Corrupt("manifest " + display + " (" + Describe() + "): content has digest " +
                           out.digest.String());
  }
  const std::string header_digest = resp.Header("docker-content-digest");
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
  Call call =
      NewCall("referrers/" + subject.String(), "GET referrers " + Name() + "@" + subject.String());
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
  call.max_body_bytes = kMaxManifestBytes;
  IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, session_->Execute(call));
  if (resp.status == 404) {
    return Status::Unsupported("no referrers API at " + Describe());
  }
  if (!IsSuccessStatus(resp.status)) return session_->HttpError(resp, call.what, Describe());
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

  Call call = NewCall("blobs/" + digest.String(), what);
  call.streaming = true;
  call.cache_redirect = true;
  if (expected_size >= 0) {
    call.stream_budget =
        session_->BudgetFor(static_cast<uint64_t>(expected_size), kMinBytesPerSecond);
  }
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
  Result<HttpResponse> resp = session_->Execute(call);
  if (!fatal.ok()) return fatal;
  if (!resp.has_value()) return resp.error();
  if (!IsSuccessStatus(resp->status)) return BlobError(*resp, digest, what);
  const Digest got = hasher.Finish();
  if (got != digest) {
    return Status::Corrupt(what + " (" + Describe() + "): content has digest " + got.String() +
                           " (" + std::to_string(delivered) + " bytes)");
  }
  return Status::Ok();
}

Status RemoteSource::GetRange(const Digest& digest, ByteRange range, bool streaming,
                              const BlobSink& sink, const std::function<void()>& restart) {
  if (range.empty()) return Status::Ok();
  const std::string what = "GET blob " + digest.String() + " bytes " +
                           std::to_string(range.offset) + "-" + std::to_string(range.end() - 1);
  uint64_t pos = 0;        // blob offset of the next body byte
  uint64_t delivered = 0;  // bytes handed to `sink` by this attempt
  bool complete = false;
  bool whole = false;  // a 200: the whole blob, stopped once the range is through
  Status fatal;
  Call call = NewCall("blobs/" + digest.String(), what);
  call.cache_redirect = true;
  if (streaming) {
    call.streaming = true;
    call.min_bytes_per_second = kMinStreamBytesPerSecond;
    call.stream_budget = session_->BudgetFor(range.length, kMinStreamBytesPerSecond);
  }
  call.prepare = [&](HttpRequest& req) {
    if (restart) restart();
    delivered = 0;
    complete = false;
    req.range = range;
    req.on_body_start = [&](const HttpResponse& head) -> Status {
      whole = head.status != 206;
      if (whole) {
        pos = 0;
        if (!ignores_ranges_.exchange(true)) {
          IMGFS_LOG(kWarning) << what << " (" << Describe()
                              << "): answered with the whole blob (Range ignored)";
        }
        return Status::Ok();
      }
      const Result<uint64_t> start = ContentRangeStart(head.Header("content-range"));
      if (!start.has_value()) {
        fatal = start.error().WithContext(what + " (" + Describe() + ")");
      } else if (*start > range.offset) {
        fatal = Status::Corrupt(what + " (" + Describe() + "): got Content-Range " +
                                head.Header("content-range"));
      } else {
        pos = *start;
      }
      return fatal;
    };
    req.body_sink = [&](std::string_view chunk) -> Status {
      const uint64_t begin = std::max(pos, range.offset);
      const uint64_t end = std::min(pos + chunk.size(), range.end());
      if (begin < end) {
        Status st = sink(chunk.substr(begin - pos, end - begin));
        if (!st.ok()) {
          fatal = st;
          return st;
        }
        delivered += end - begin;
      }
      pos += chunk.size();
      if (whole && pos >= range.end()) {
        complete = true;  // stop a whole-blob answer once the range is in hand
        return Status::Internal("range complete");
      }
      return Status::Ok();
    };
  };
  call.retryable = [&](const Status& st) {
    return !complete && fatal.ok() && (delivered == 0 || restart) &&
           st.code() == StatusCode::kUnavailable;
  };
  Result<HttpResponse> resp = session_->Execute(call);
  if (complete) return Status::Ok();
  if (!fatal.ok()) return fatal;
  if (!resp.has_value()) return resp.error();
  if (resp->status == 416) return Status::Ok();  // the range starts past the end
  if (!IsSuccessStatus(resp->status)) return BlobError(*resp, digest, what);
  return Status::Ok();  // the blob ended inside the range
}

Result<std::string> RemoteSource::ReadBlobRange(const Digest& digest, ByteRange range) {
  std::string out;
  IMGFS_RETURN_IF_ERROR(GetRange(
      digest, range, /*streaming=*/false,
      [&out](std::string_view chunk) {
        out.append(chunk);
        return Status::Ok();
      },
      [&out] { out.clear(); }));
  return out;
}

Status RemoteSource::StreamBlobRange(const Digest& digest, ByteRange range, const BlobSink& sink) {
  return GetRange(digest, range, /*streaming=*/true, sink, nullptr);
}

Result<std::vector<std::string>> RemoteSource::ListTags() {
  std::vector<std::string> tags;
  Call call = NewCall("tags/list?n=" + std::to_string(kTagsPageSize), "GET tags of " + Name());
  call.max_body_bytes = kMaxTagsPageBytes;
  for (int page = 0; page < kMaxTagPages; ++page) {
    IMGFS_ASSIGN_OR_RETURN(HttpResponse resp, session_->Execute(call));
    if (resp.status == 404) {
      return Status::NotFound("repository unknown: " + Name() + " (" + Describe() + ")");
    }
    if (!IsSuccessStatus(resp.status)) return session_->HttpError(resp, call.what, Describe());
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
