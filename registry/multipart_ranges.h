// imgfs — multipart/byteranges: the answer to a Range request asking for several ranges.
//
// A server that honours "Range: bytes=a-b,c-d" answers 206 with
//   Content-Type: multipart/byteranges; boundary=XYZ
// and a body of parts, each with its own Content-Range header (RFC 9110 §14.6, "Media Type
// multipart/byteranges"; framing from RFC 2046 §5.1.1):
//   [preamble] CRLF? "--XYZ" CRLF
//   Content-Type: ... CRLF
//   Content-Range: bytes 0-99/1000 CRLF
//   CRLF
//   <100 bytes> CRLF "--XYZ" ... CRLF "--XYZ--" [epilogue]
// A server may merge ranges (overlapping or near ones) into one part and may send the parts
// in any order (RFC 9110 §14.2); AssembleRanges maps the ranges a caller asked for onto the
// parts that came back.
//
// The parser is strict and bounded: every part must carry a valid Content-Range, its data is
// exactly Content-Range's length (binary data that happens to contain the boundary is read
// correctly), and every delimiter must be where the framing says. Anything else is Corrupt
// with a message naming what is wrong; no input reads outside `body`. At most kMaxParts
// parts and kMaxPartHeaderBytes of headers per part are accepted.
//
// Thread-safety: free functions without shared state.
#ifndef IMGFS_REGISTRY_MULTIPART_RANGES_H_
#define IMGFS_REGISTRY_MULTIPART_RANGES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"

namespace imgfs::registry {

// Parts accepted in one body. RemoteSource asks for at most 32 ranges per request; a server
// never answers with more parts than ranges asked, so 1024 only bounds hostile input.
inline constexpr size_t kMaxMultipartParts = 1024;
// Header bytes of one part (Content-Type + Content-Range are < 200 bytes in practice).
inline constexpr size_t kMaxPartHeaderBytes = 8192;
// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
inline constexpr size_t kMaxBoundaryLength = 70;

// A Content-Range value "bytes FIRST-LAST/TOTAL" (RFC 9110 §14.4); TOTAL may be "*".
struct ContentRange {
  uint64_t first = 0;
  uint64_t last = 0;   // inclusive
  int64_t total = -1;  // complete length, -1 when "*"

  uint64_t length() const { return last - first + 1; }
  uint64_t end() const { return last + 1; }
};

// Parses a Content-Range value. Corrupt when it is not "bytes A-B/N" or "bytes A-B/*" with
// A <= B (and B < N when N is given), or when a number overflows.
Result<ContentRange> ParseContentRange(std::string_view value);

// The boundary of a Content-Type value "multipart/byteranges; boundary=XYZ" (the media type
// is matched case-insensitively, the boundary may be quoted). Corrupt when the type is
// another one or the boundary is missing, empty, longer than 70 characters or has
// characters RFC 2046 does not allow.
Result<std::string> MultipartBoundary(std::string_view content_type);

// True when `content_type` names multipart/byteranges (whatever its parameters).
bool IsMultipartByteranges(std::string_view content_type);

// One part of a multipart/byteranges body.
struct RangePart {
  ContentRange range;
  std::string_view data;  // exactly range.length() bytes, pointing into the parsed body
};

// The parts of `body` in the order they were sent. The views point into `body`, which must
// outlive them. Corrupt on any framing error (see the header comment) or when the body has
// no part at all.
Result<std::vector<RangePart>> ParseMultipartByteranges(std::string_view body,
                                                        std::string_view boundary);

// For each range of `wanted`, its bytes taken from `parts` (parts may be merged, overlap or
// come in any order). A range is answered from the part that contains its start; when parts
// give the blob's total length, a range reaching past it is answered up to the end and one
// starting at or past it with "". Unsupported when some range is not covered (the server
// answered something else than what was asked); the caller then asks range by range.
Result<std::vector<std::string>> AssembleRanges(const std::vector<RangePart>& parts,
                                                const std::vector<ByteRange>& wanted);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_MULTIPART_RANGES_H_
