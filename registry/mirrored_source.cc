// imgfs — MirroredSource: endpoints tried in order with fallback (see mirrored_source.h).
#include "registry/mirrored_source.h"

#include <cstdlib>
#include <optional>
#include <utility>

#include "base/log.h"

namespace imgfs::registry {
namespace {

bool AnyError(const Status&) { return true; }

// A blob that is missing, unreachable or refused at one endpoint may be at the next; wrong
// bytes are an answer.
bool BlobFallback(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kNotFound ||
         st.code() == StatusCode::kPermissionDenied;
}

}  // namespace

MirroredSource::MirroredSource(std::vector<std::unique_ptr<BlobSource>> endpoints)
    : endpoints_(std::move(endpoints)) {
  if (endpoints_.empty()) {
    IMGFS_LOG(kError) << "MirroredSource without endpoints";
    std::abort();
  }
}

Status MirroredSource::Try(std::string_view what,
                           const std::function<bool(const Status&)>& fallback,
                           const std::function<Status(BlobSource&, size_t)>& op) {
  const size_t n = endpoints_.size();
  std::string earlier;
  Status last;
  for (size_t i = current_.load(std::memory_order_relaxed); i < n; ++i) {
    last = op(*endpoints_[i], i);
    if (last.ok()) return last;
    if (last.code() == StatusCode::kUnavailable && i + 1 < n) {
      // Down: later calls start at the next endpoint (unless another thread moved on).
      size_t expected = i;
      current_.compare_exchange_strong(expected, i + 1, std::memory_order_relaxed);
    }
    if (i + 1 == n || !fallback(last)) break;
    IMGFS_LOG(kInfo) << what << ": " << endpoints_[i]->Describe() << ": " << last.message()
                     << "; trying " << endpoints_[i + 1]->Describe();
    earlier += (earlier.empty() ? "" : "; ") + endpoints_[i]->Describe() + ": " + last.message();
  }
  if (earlier.empty()) return last;
  return Status(last.code(), last.message() + " (before that: " + earlier + ")");
}

Result<FetchedManifest> MirroredSource::GetManifest(std::string_view tag_or_digest) {
  std::optional<FetchedManifest> out;
  Status st = Try("manifest " + std::string(tag_or_digest), AnyError,
                  [&](BlobSource& source, size_t index) -> Status {
                    Result<FetchedManifest> got = source.GetManifest(tag_or_digest);
                    if (!got.has_value()) return got.error();
                    out = std::move(got).value();
                    // Blobs are asked for where the manifest came from first.
                    current_.store(index, std::memory_order_relaxed);
                    return Status::Ok();
                  });
  if (!st.ok()) return st;
  return std::move(*out);
}

Status MirroredSource::TryStreaming(std::string_view what, const BlobSink& sink,
                                    const std::function<Status(BlobSource&, const BlobSink&)>& op) {
  bool delivered = false;
  const BlobSink counting = [&](std::string_view chunk) {
    if (!chunk.empty()) delivered = true;
    return sink(chunk);
  };
  return Try(
      what, [&](const Status& st) { return !delivered && BlobFallback(st); },
      [&](BlobSource& source, size_t) { return op(source, counting); });
}

Status MirroredSource::FetchBlob(const Digest& digest, int64_t expected_size,
                                 const BlobSink& sink) {
  return TryStreaming("blob " + digest.Short(), sink, [&](BlobSource& source, const BlobSink& s) {
    return source.FetchBlob(digest, expected_size, s);
  });
}

Result<std::string> MirroredSource::ReadBlobRange(const Digest& digest, ByteRange range) {
  std::string out;
  Status st = Try("blob " + digest.Short() + " range", BlobFallback,
                  [&](BlobSource& source, size_t) -> Status {
                    Result<std::string> got = source.ReadBlobRange(digest, range);
                    if (!got.has_value()) return got.error();
                    out = std::move(got).value();
                    return Status::Ok();
                  });
  if (!st.ok()) return st;
  return out;
}

Result<std::vector<std::string>> MirroredSource::ReadBlobRanges(
    const Digest& digest, const std::vector<ByteRange>& ranges, uint64_t* requests) {
  std::vector<std::string> out;
  Status st = Try("blob " + digest.Short() + " ranges", BlobFallback,
                  [&](BlobSource& source, size_t) -> Status {
                    Result<std::vector<std::string>> got =
                        source.ReadBlobRanges(digest, ranges, requests);
                    if (!got.has_value()) return got.error();
                    out = std::move(got).value();
                    return Status::Ok();
                  });
  if (!st.ok()) return st;
  return out;
}

Status MirroredSource::StreamBlobRange(const Digest& digest, ByteRange range,
                                       const BlobSink& sink) {
  return TryStreaming("blob " + digest.Short() + " stream", sink,
                      [&](BlobSource& source, const BlobSink& s) {
                        return source.StreamBlobRange(digest, range, s);
                      });
}

bool MirroredSource::ignores_ranges() const {
  return endpoints_[current_.load(std::memory_order_relaxed)]->ignores_ranges();
}

Result<std::vector<Descriptor>> MirroredSource::ListReferrers(const Digest& subject,
                                                              std::string_view artifact_type) {
  std::vector<Descriptor> out;
  Status st =
      Try("referrers of " + subject.Short(), AnyError, [&](BlobSource& source, size_t) -> Status {
        Result<std::vector<Descriptor>> got = source.ListReferrers(subject, artifact_type);
        if (!got.has_value()) return got.error();
        out = std::move(got).value();
        return Status::Ok();
      });
  if (!st.ok()) return st;
  return out;
}

Result<std::vector<std::string>> MirroredSource::ListTags() {
  std::vector<std::string> out;
  Status st = Try("tags", AnyError, [&](BlobSource& source, size_t) -> Status {
    Result<std::vector<std::string>> got = source.ListTags();
    if (!got.has_value()) return got.error();
    out = std::move(got).value();
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return out;
}

std::string MirroredSource::Describe() const {
  std::string out = endpoints_.back()->Describe();
  if (endpoints_.size() == 1) return out;
  out += " (mirrors: ";
  for (size_t i = 0; i + 1 < endpoints_.size(); ++i) {
    out += (i == 0 ? "" : ", ") + endpoints_[i]->Describe();
  }
  return out + ")";
}

}  // namespace imgfs::registry
