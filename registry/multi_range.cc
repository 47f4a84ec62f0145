// imgfs — RemoteSource::ReadBlobRanges: several ranges of a blob in one multi-range request
// ("Range: bytes=a-b,c-d,..."), with the per-host memory of registries that refuse it. The
// answer's multipart/byteranges body is decoded by registry/multipart_ranges.h; the policy
// is described in remote_source.h.
#include <algorithm>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "registry/multipart_ranges.h"
#include "registry/remote_source.h"

namespace imgfs::registry {
namespace {

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

bool RemoteSource::multi_range_refused() const {
  std::scoped_lock lock(RefusalMu());
  return RefusingHosts().count(session_->endpoint()) != 0;
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
  Call call = NewCall("blobs/" + digest.String(), what);
  call.cache_redirect = true;
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
  Result<HttpResponse> resp = session_->Execute(call);
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
  if (!IsSuccessStatus(status)) return BlobError(*resp, digest, what);
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
        first = RefusingHosts().insert(session_->endpoint()).second;
      }
      if (first) {
        IMGFS_LOG(kWarning) << "GET blob " << digest.String() << " (" << Describe()
                            << "): multi-range request "
                            << (answer.refused ? "refused" : "not honoured") << " (" << answer.why
                            << "); asking registry " << session_->endpoint()
                            << " one range at a time from now on";
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

}  // namespace imgfs::registry
