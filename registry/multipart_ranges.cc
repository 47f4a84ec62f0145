// imgfs — multipart/byteranges parsing (RFC 9110 §14.6, RFC 2046 §5.1.1).
#include "registry/multipart_ranges.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#include "base/strings.h"

namespace imgfs::registry {
namespace {

constexpr std::string_view kCrlf = "\r\n";

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimSpace(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Decimal digits only, no sign, no overflow past int64 (Content-Range numbers are lengths).
bool ParseNumber(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 19) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = v;
  return true;
}

// RFC 2046 bchars: DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-" / "." / "/" / ":"
// / "=" / "?" and space (not as the last character).
bool IsBoundaryChar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

// body.substr that never throws: "" past the end.
std::string_view At(std::string_view body, size_t pos, size_t n) {
  return pos > body.size() ? std::string_view() : body.substr(pos, n);
}

}  // namespace

Result<ContentRange> ParseContentRange(std::string_view value) {
  std::string_view v = TrimSpace(value);
  auto bad = [&](std::string_view why) {
    return Status::Corrupt("bad Content-Range " + QuoteForMessage(value, 40) + ": " +
                           std::string(why));
  };
  if (v.size() < 6 || !EqualsIgnoreCase(v.substr(0, 6), "bytes ")) {
    return bad("unit is not \"bytes\"");
  }
  v = TrimSpace(v.substr(6));
  const size_t dash = v.find('-');
  const size_t slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return bad("not FIRST-LAST/LENGTH");
  }
  ContentRange out;
  if (!ParseNumber(v.substr(0, dash), &out.first) ||
      !ParseNumber(v.substr(dash + 1, slash - dash - 1), &out.last)) {
    return bad("positions are not decimal numbers below 2^63 (at most 19 digits)");
  }
  if (out.last < out.first) return bad("last position before first");
  const std::string_view total = v.substr(slash + 1);
  if (total != "*") {
    uint64_t n = 0;
    if (!ParseNumber(total, &n)) {
      return bad("length is not * or a decimal number below 2^63 (at most 19 digits)");
    }
    if (out.last >= n) return bad("range reaches past the length");
    out.total = static_cast<int64_t>(n);
  }
  return out;
}

bool IsMultipartByteranges(std::string_view content_type) {
  const std::string_view type = TrimSpace(content_type.substr(0, content_type.find(';')));
  return EqualsIgnoreCase(type, "multipart/byteranges");
}

Result<std::string> MultipartBoundary(std::string_view content_type) {
  if (!IsMultipartByteranges(content_type)) {
    return Status::Corrupt("Content-Type " + QuoteForMessage(content_type, 40) +
                           " is not multipart/byteranges");
  }
  std::string_view params = content_type;
  const size_t semi = params.find(';');
  params = semi == std::string_view::npos ? std::string_view() : params.substr(semi + 1);
  while (!params.empty()) {
    std::string value;
    params = TrimSpace(params);
    const size_t eq = params.find('=');
    if (eq == std::string_view::npos) break;
    const std::string_view name = TrimSpace(params.substr(0, eq));
    params.remove_prefix(eq + 1);
    params = TrimSpace(params);
    if (!params.empty() && params.front() == '"') {
      // quoted-string (RFC 9110 §5.6.4); a boundary never needs escapes, refuse them.
      const size_t close = params.find('"', 1);
      if (close == std::string_view::npos) {
        return Status::Corrupt("Content-Type " + QuoteForMessage(content_type, 40) +
                               ": unterminated quote");
      }
      value = std::string(params.substr(1, close - 1));
      if (value.find('\\') != std::string::npos) {
        return Status::Corrupt("Content-Type " + QuoteForMessage(content_type, 40) +
                               ": escaped characters in the boundary");
      }
      params.remove_prefix(close + 1);
      const size_t next = params.find(';');
      params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
    } else {
      const size_t next = params.find(';');
      value = std::string(TrimSpace(params.substr(0, next)));
      params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
    }
    if (!EqualsIgnoreCase(name, "boundary")) continue;
    if (value.empty() || value.size() > kMaxBoundaryLength || value.back() == ' ' ||
        !std::all_of(value.begin(), value.end(), IsBoundaryChar)) {
      return Status::Corrupt("Content-Type " + QuoteForMessage(content_type, 40) +
                             ": boundary is empty, longer than 70 characters or not RFC 2046");
    }
    return value;
  }
  return Status::Corrupt("Content-Type " + QuoteForMessage(content_type, 40) + " has no boundary");
}

Result<std::vector<RangePart>> ParseMultipartByteranges(std::string_view body,
                                                        std::string_view boundary) {
  if (boundary.empty() || boundary.size() > kMaxBoundaryLength) {
    return Status::Corrupt("multipart/byteranges: bad boundary length");
  }
  const std::string dash_boundary = "--" + std::string(boundary);
  auto bad = [&](size_t at, std::string_view why) {
    return Status::Corrupt("multipart/byteranges body (" + std::to_string(body.size()) +
                           " bytes) at byte " + std::to_string(at) + ": " + std::string(why));
  };
  // The first delimiter: at the very start, or after a preamble ending in CRLF.
  size_t pos = 0;
  if (At(body, 0, dash_boundary.size()) == dash_boundary) {
    pos = dash_boundary.size();
  } else {
    const size_t at = body.find(std::string(kCrlf) + dash_boundary);
    if (at == std::string_view::npos) return bad(0, "no boundary delimiter");
    pos = at + kCrlf.size() + dash_boundary.size();
  }
  std::vector<RangePart> parts;
  while (true) {
    // After a delimiter: "--" closes the body, else optional padding and CRLF.
    if (At(body, pos, 2) == "--") {
      if (parts.empty()) return bad(pos, "closing delimiter before any part");
      return parts;  // the epilogue is ignored (RFC 2046)
    }
    while (pos < body.size() && IsSpace(body[pos])) ++pos;
    if (At(body, pos, 2) != kCrlf) return bad(pos, "delimiter not followed by CRLF");
    pos += 2;
    if (parts.size() >= kMaxMultipartParts) {
      return bad(pos, "more than " + std::to_string(kMaxMultipartParts) + " parts");
    }
    // Part headers, up to an empty line.
    const size_t headers_end = body.find("\r\n\r\n", pos);
    // A part without headers starts with the empty line right away.
    const bool no_headers = At(body, pos, 2) == kCrlf;
    if (no_headers) return bad(pos, "part without Content-Range");
    if (headers_end == std::string_view::npos) return bad(pos, "part headers do not end");
    if (headers_end - pos > kMaxPartHeaderBytes) return bad(pos, "part headers too long");
    std::string_view headers = body.substr(pos, headers_end - pos);
    bool have_range = false;
    ContentRange range;
    while (!headers.empty()) {
      const size_t eol = headers.find(kCrlf);
      const std::string_view line = headers.substr(0, eol);
      headers = eol == std::string_view::npos ? std::string_view() : headers.substr(eol + 2);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        return bad(pos, "part header line without a name: " + QuoteForMessage(line, 40));
      }
      const std::string_view name = line.substr(0, colon);
      if (IsSpace(name.back()) || IsSpace(name.front())) {
        return bad(pos, "white space around a part header name");
      }
      if (EqualsIgnoreCase(name, "content-range")) {
        if (have_range) return bad(pos, "part with two Content-Range headers");
        Result<ContentRange> parsed = ParseContentRange(line.substr(colon + 1));
        if (!parsed.has_value()) return parsed.error().WithContext("multipart/byteranges part");
        range = *parsed;
        have_range = true;
      }
    }
    if (!have_range) return bad(pos, "part without Content-Range");
    pos = headers_end + 4;
    if (range.length() > body.size() - pos) {
      return bad(pos, "part data shorter than its Content-Range (" +
                          std::to_string(range.length()) + " bytes)");
    }
    parts.push_back(RangePart{range, body.substr(pos, range.length())});
    pos += range.length();
    if (At(body, pos, 2) != kCrlf || At(body, pos + 2, dash_boundary.size()) != dash_boundary) {
      return bad(pos, "part data not followed by CRLF and the boundary delimiter");
    }
    pos += 2 + dash_boundary.size();
  }
}

Result<std::vector<std::string>> AssembleRanges(const std::vector<RangePart>& parts,
                                                const std::vector<ByteRange>& wanted) {
  int64_t total = -1;
  for (const RangePart& p : parts) {
    if (p.range.total >= 0) total = p.range.total;
  }
  std::vector<std::string> out;
  out.reserve(wanted.size());
  for (const ByteRange& w : wanted) {
    std::string bytes;
    uint64_t end = w.end();
    if (total >= 0) end = std::min<uint64_t>(end, static_cast<uint64_t>(total));
    uint64_t cur = w.offset;
    while (cur < end) {
      const RangePart* found = nullptr;
      for (const RangePart& p : parts) {
        if (p.range.first <= cur && cur < p.range.end()) {
          // The part reaching furthest: fewest pieces when parts overlap.
          if (found == nullptr || p.range.end() > found->range.end()) found = &p;
        }
      }
      if (found == nullptr) {
        return Status::Unsupported("multipart/byteranges answer does not cover bytes " +
                                   std::to_string(w.offset) + "-" + std::to_string(w.end() - 1) +
                                   " (missing byte " + std::to_string(cur) + ")");
      }
      const uint64_t take = std::min(end, found->range.end()) - cur;
      bytes.append(found->data.substr(cur - found->range.first, take));
      cur += take;
    }
    out.push_back(std::move(bytes));
  }
  return out;
}

}  // namespace imgfs::registry
