// Tests for registry/multipart_ranges.h: Content-Range, the boundary parameter, the
// multipart/byteranges framing (as Go's net/http and nginx write it) and mapping requested
// ranges onto merged or reordered parts.
#include "registry/multipart_ranges.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

// A body the way Go's http.ServeContent writes it.
std::string Part(const std::string& boundary, uint64_t first, const std::string& data,
                 uint64_t total) {
  return "\r\n--" + boundary +
         "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " +
         std::to_string(first) + "-" + std::to_string(first + data.size() - 1) + "/" +
         std::to_string(total) + "\r\n\r\n" + data;
}

std::string Close(const std::string& boundary) { return "\r\n--" + boundary + "--\r\n"; }

TEST(MultipartRanges, ParsesContentRange) {
  Result<ContentRange> r = ParseContentRange("bytes 10-19/300");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->first, 10u);
  EXPECT_EQ(r->last, 19u);
  EXPECT_EQ(r->total, 300);
  EXPECT_EQ(r->length(), 10u);
  Result<ContentRange> star = ParseContentRange(" bytes 0-0/* ");
  ASSERT_TRUE(star.has_value());
  EXPECT_EQ(star->total, -1);
  for (const char* bad :
       {"", "bytes", "items 0-1/2", "bytes 5-4/10", "bytes 0-10/10", "bytes -1-2/3", "bytes 1-2",
        "bytes */10", "bytes 1/2-3", "bytes 99999999999999999999-1/2", "bytes 0x1-2/3"}) {
    Result<ContentRange> got = ParseContentRange(bad);
    ASSERT_FALSE(got.has_value()) << bad;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt) << bad;
  }
}

TEST(MultipartRanges, FindsTheBoundary) {
  EXPECT_EQ(*MultipartBoundary("multipart/byteranges; boundary=3d6b6a416f9b5"), "3d6b6a416f9b5");
  EXPECT_EQ(*MultipartBoundary("Multipart/ByteRanges;charset=x; BOUNDARY=\"a b:c\""), "a b:c");
  EXPECT_TRUE(IsMultipartByteranges("multipart/byteranges"));
  EXPECT_FALSE(IsMultipartByteranges("application/octet-stream"));
  for (const char* bad :
       {"application/octet-stream; boundary=x", "multipart/byteranges",
        "multipart/byteranges; boundary=", "multipart/byteranges; boundary=\"x",
        "multipart/byteranges; boundary=a\x01", "multipart/byteranges; boundary=\"a\\b\"",
        "multipart/byteranges; boundary=0123456789012345678901234567890123456789"
        "0123456789012345678901234567890123456789"}) {
    Result<std::string> got = MultipartBoundary(bad);
    ASSERT_FALSE(got.has_value()) << bad;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt) << bad;
  }
}

TEST(MultipartRanges, ParsesPartsInOrder) {
  const std::string b = "XYZ";
  // The second part's data contains the delimiter: its length comes from Content-Range.
  const std::string tricky = "ab\r\n--XYZ\r\ncd";
  const std::string body =
      "preamble" + Part(b, 5, "hello", 100) + Part(b, 50, tricky, 100) + Close(b) + "epilogue";
  Result<std::vector<RangePart>> parts = ParseMultipartByteranges(body, b);
  ASSERT_TRUE(parts.has_value()) << parts.error().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].range.first, 5u);
  EXPECT_EQ((*parts)[0].data, "hello");
  EXPECT_EQ((*parts)[1].range.first, 50u);
  EXPECT_EQ((*parts)[1].data, tricky);
  // Without a preamble, starting right at the delimiter (nginx).
  const std::string direct = "--XYZ\r\nContent-Range: bytes 0-2/3\r\n\r\nabc" + Close(b);
  parts = ParseMultipartByteranges(direct, b);
  ASSERT_TRUE(parts.has_value()) << parts.error().ToString();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data, "abc");
}

TEST(MultipartRanges, RefusesMalformedBodies) {
  const std::string b = "XYZ";
  const std::string good = Part(b, 0, "abcd", 10) + Close(b);
  ASSERT_TRUE(ParseMultipartByteranges(good, b).has_value());
  const std::vector<std::string> bad = {
      "",
      "no delimiter at all",
      Close(b),                                                           // no part
      Part(b, 0, "abcd", 10),                                             // never closed
      good.substr(0, good.size() / 2),                                    // cut
      "\r\n--XYZ\r\nContent-Type: x\r\n\r\nabcd" + Close(b),              // no Content-Range
      "\r\n--XYZ\r\n\r\nabcd" + Close(b),                                 // no headers
      "\r\n--XYZ\r\nContent-Range: bytes 0-9/10\r\n\r\nabcd" + Close(b),  // data too short
      "\r\n--XYZ\r\nContent-Range: bytes 0-1/10\r\n\r\nabcd" + Close(b),  // data too long
      "\r\n--XYZ\r\nContent-Range: bytes 0-3/10\r\nContent-Range: bytes 0-3/10\r\n\r\nabcd" +
          Close(b),
      "\r\n--XYZ\r\nContent-Range bytes 0-3/10\r\n\r\nabcd" + Close(b),   // no colon
      "\r\n--XYZ\r\nContent-Range: bytes 3-0/10\r\n\r\nabcd" + Close(b),  // bad range
      "\r\n--XYZjunk\r\nContent-Range: bytes 0-3/10\r\n\r\nabcd" + Close(b),
      "\r\n--XYZ\r\nContent-Range: bytes 0-3/10\r\n" + std::string(kMaxPartHeaderBytes, 'h') +
          "\r\n\r\nabcd" + Close(b),
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    Result<std::vector<RangePart>> got = ParseMultipartByteranges(bad[i], b);
    ASSERT_FALSE(got.has_value()) << "case " << i;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt) << "case " << i;
    EXPECT_FALSE(got.error().message().empty());
  }
  // Too many parts.
  std::string many;
  for (size_t i = 0; i <= kMaxMultipartParts; ++i) many += Part(b, i, "x", 5000);
  many += Close(b);
  EXPECT_FALSE(ParseMultipartByteranges(many, b).has_value());
}

TEST(MultipartRanges, AssemblesMergedAndReorderedParts) {
  const std::string blob = "0123456789abcdefghijklmnopqrstuvwxyz";
  auto part = [&](uint64_t first, uint64_t last) {
    return RangePart{ContentRange{first, last, static_cast<int64_t>(blob.size())},
                     std::string_view(blob).substr(first, last - first + 1)};
  };
  const std::vector<ByteRange> wanted = {{2, 3}, {6, 2}, {20, 5}, {34, 10}};
  // Reordered, the first two merged into one part, the last one cut at the blob's end.
  std::vector<RangePart> parts = {part(20, 24), part(34, 35), part(2, 7)};
  Result<std::vector<std::string>> got = AssembleRanges(parts, wanted);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, (std::vector<std::string>{"234", "67", "klmno", "yz"}));
  // A range split over two adjacent parts.
  got = AssembleRanges({part(0, 4), part(5, 9)}, {{3, 4}});
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ((*got)[0], "3456");
  // A range starting at or past the end of the blob reads as "".
  got = AssembleRanges({part(0, 4)}, {{0, 2}, {40, 3}});
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ((*got)[1], "");
  // Not covered: the server answered other bytes than asked.
  got = AssembleRanges({part(0, 4)}, {{0, 2}, {10, 3}});
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kUnsupported);
  got = AssembleRanges({part(0, 4)}, {{3, 4}});
  ASSERT_FALSE(got.has_value());
}

}  // namespace
}  // namespace imgfs::registry
