// Fuzz target: registry multipart/byteranges parsing. Input: a Content-Type line, '\n', then
// the body. Never crashes or reads outside the input; every part's data is exactly its
// Content-Range's length and lies inside the body; assembling the parts' own ranges gives
// back their data; a Content-Range that parses is consistent.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "registry/multipart_ranges.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imgfs::registry;  // NOLINT(google-build-using-namespace)
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string_view content_type =
      std::string_view(input).substr(0, nl == std::string::npos ? input.size() : nl);
  const std::string_view body =
      nl == std::string::npos ? std::string_view() : std::string_view(input).substr(nl + 1);

  imgfs::Result<ContentRange> cr = ParseContentRange(content_type);
  if (cr.has_value()) {
    if (cr->last < cr->first) std::abort();
    if (cr->total >= 0 && cr->last >= static_cast<uint64_t>(cr->total)) std::abort();
  }

  imgfs::Result<std::string> boundary = MultipartBoundary(content_type);
  if (!boundary.has_value()) {
    if (boundary.error().message().empty()) std::abort();
    // Try the body with a fixed boundary too, so the framing is fuzzed without a header.
    boundary = std::string("XYZ");
  }
  if (boundary->empty() || boundary->size() > kMaxBoundaryLength) std::abort();
  imgfs::Result<std::vector<RangePart>> parts = ParseMultipartByteranges(body, *boundary);
  if (!parts.has_value()) {
    if (parts.error().message().empty()) std::abort();
    return 0;
  }
  if (parts->empty() || parts->size() > kMaxMultipartParts) std::abort();
  std::vector<imgfs::ByteRange> wanted;
  for (const RangePart& p : *parts) {
    if (p.data.size() != p.range.length()) std::abort();
    if (p.data.data() < body.data() || p.data.data() + p.data.size() > body.data() + body.size()) {
      std::abort();
    }
    wanted.push_back({p.range.first, p.range.length()});
  }
  imgfs::Result<std::vector<std::string>> got = AssembleRanges(*parts, wanted);
  if (!got.has_value() || got->size() != wanted.size()) std::abort();
  for (size_t i = 0; i < wanted.size(); ++i) {
    // Overlapping parts may disagree about a byte; lengths agree unless a part claims bytes
    // past the total length another part gives.
    if ((*got)[i].size() > wanted[i].length) std::abort();
  }
  return 0;
}
