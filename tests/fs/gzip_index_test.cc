// imgfs — tests for gzip decoding with zran-style checkpoints (fs/layer/gzip_index.h).
#include "fs/layer/gzip_index.h"

#include <string>

#include <gtest/gtest.h>

#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

using testing::Gzip;
using testing::TextishBytes;

// Feeds `blob` from `start` in pieces of `piece` bytes; returns all output.
Result<std::string> DecodeAll(StreamDecoder& d, std::string_view blob, size_t start, size_t piece,
                              size_t max_out = SIZE_MAX) {
  std::string out;
  std::string buf(7777, '\0');
  size_t pos = start;
  while (out.size() < max_out) {
    std::string_view in = blob.substr(pos, std::min(piece, blob.size() - pos));
    size_t consumed = 0, produced = 0;
    Status s = d.Decode(in, &consumed, buf.data(), buf.size(), &produced);
    if (!s.ok()) return s;
    pos += consumed;
    out.append(buf, 0, produced);
    if (consumed == 0 && produced == 0 && pos == blob.size()) break;
    if (consumed == 0 && produced == 0) return Status::Internal("no progress");
  }
  return out;
}

TEST(GzipIndexTest, DecodesSingleMemberAndRecordsCheckpointsEverySpan) {
  std::string data = TextishBytes(3 << 20, 1);
  std::string gz = Gzip(data);
  CheckpointRecorder rec(256 << 10);
  auto d = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  auto out = DecodeAll(**d, gz, 0, 65536);
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(*out, data);
  EXPECT_TRUE((*d)->AtEnd());
  EXPECT_EQ((*d)->compressed_offset(), gz.size());
  EXPECT_EQ((*d)->uncompressed_offset(), data.size());
  const auto& cps = rec.points();
  ASSERT_GE(cps.size(), 8u);  // 3 MiB / 256 KiB = 12 spans, block granularity loses a few
  EXPECT_EQ(cps[0].uncompressed_offset, 0u);
  EXPECT_TRUE(cps[0].window.empty());
  for (size_t i = 1; i < cps.size(); ++i) {
    EXPECT_GE(cps[i].uncompressed_offset - cps[i - 1].uncompressed_offset, 256u << 10);
    EXPECT_EQ(cps[i].window.size(), 32768u);
    EXPECT_LE(cps[i].bits, 7);
  }
}

TEST(GzipIndexTest, RestartsAtEveryCheckpoint) {
  std::string data = TextishBytes(2 << 20, 2);
  std::string gz = Gzip(data, 9);
  CheckpointRecorder rec(100 << 10);
  auto d = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(DecodeAll(**d, gz, 0, 1 << 20).has_value());
  std::vector<Checkpoint> cps = rec.Take();
  ASSERT_GT(cps.size(), 5u);
  for (const Checkpoint& cp : cps) {
    uint8_t prev =
        cp.compressed_offset > 0 ? static_cast<uint8_t>(gz[cp.compressed_offset - 1]) : 0;
    auto r = NewGzipDecoder(cp, prev, nullptr);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    auto out = DecodeAll(**r, gz, cp.compressed_offset, 4096, 50000);
    ASSERT_TRUE(out.has_value()) << out.error().ToString();
    ASSERT_GE(out->size(), std::min<size_t>(50000, data.size() - cp.uncompressed_offset));
    EXPECT_EQ(out->substr(0, 50000), data.substr(cp.uncompressed_offset, 50000))
        << "checkpoint at " << cp.uncompressed_offset;
  }
}

TEST(GzipIndexTest, MultiMemberStreamsHaveMemberStartCheckpoints) {
  std::string data = TextishBytes(1 << 20, 3);
  std::string gz = Gzip(data, 6, 4);
  CheckpointRecorder rec(250 << 10);  // just below the 256 KiB members
  auto d = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(d.has_value());
  auto out = DecodeAll(**d, gz, 0, 1000);  // small pieces: cut headers and trailers
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(*out, data);
  EXPECT_TRUE((*d)->AtEnd());
  size_t member_starts = 0;
  for (const Checkpoint& cp : rec.points()) {
    if (cp.window.empty()) {
      ++member_starts;
      EXPECT_EQ(static_cast<uint8_t>(gz[cp.compressed_offset]), 0x1f);
    }
  }
  EXPECT_GE(member_starts, 2u);
  // From a checkpoint inside the first member, decoding crosses into the next members (the
  // raw path skips the trailer) and reaches the end.
  for (const Checkpoint& cp : rec.points()) {
    if (cp.window.empty()) continue;
    auto r = NewGzipDecoder(cp, static_cast<uint8_t>(gz[cp.compressed_offset - 1]), nullptr);
    ASSERT_TRUE(r.has_value());
    auto rest = DecodeAll(**r, gz, cp.compressed_offset, 3000);
    ASSERT_TRUE(rest.has_value()) << rest.error().ToString();
    EXPECT_EQ(*rest, data.substr(cp.uncompressed_offset));
    break;
  }
}

TEST(GzipIndexTest, TruncatedStreamIsNotAtEnd) {
  std::string gz = Gzip(TextishBytes(100000, 4));
  auto d = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(DecodeAll(**d, gz.substr(0, gz.size() / 2), 0, 4096).has_value());
  EXPECT_FALSE((*d)->AtEnd());
  // Cut inside the trailer too.
  auto d2 = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  ASSERT_TRUE(DecodeAll(**d2, gz.substr(0, gz.size() - 3), 0, 4096).has_value());
  EXPECT_FALSE((*d2)->AtEnd());
}

TEST(GzipIndexTest, CorruptDataAndTrailingGarbageAreCorrupt) {
  std::string gz = Gzip(TextishBytes(100000, 5));
  std::string bad = gz;
  bad[bad.size() - 6] ^= 0x55;  // CRC-32 in the trailer
  auto d = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  auto r = DecodeAll(**d, bad, 0, 4096);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find("compressed offset"), std::string::npos);

  auto d2 = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  auto r2 = DecodeAll(**d2, gz + "garbage!", 0, 4096);
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().code(), StatusCode::kCorrupt);

  auto d3 = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  auto r3 = DecodeAll(**d3, "not gzip at all", 0, 4096);
  EXPECT_FALSE(r3.has_value());
}

TEST(GzipIndexTest, RejectsBadCheckpoint) {
  Checkpoint cp;
  cp.compressed_offset = 10;
  cp.bits = 9;
  cp.window = "x";
  EXPECT_FALSE(NewGzipDecoder(cp, 0, nullptr).has_value());
}

}  // namespace
}  // namespace imgfs::fs
