// imgfs — tests for zstd decoding with frame-start checkpoints (fs/layer/zstd_index.h).
#include "fs/layer/zstd_index.h"

#include <string>

#include <gtest/gtest.h>

#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

using testing::TextishBytes;
using testing::Zstd;

Result<std::string> DecodeAll(StreamDecoder& d, std::string_view blob, size_t start, size_t piece) {
  std::string out;
  std::string buf(5000, '\0');
  size_t pos = start;
  while (true) {
    std::string_view in = blob.substr(pos, std::min(piece, blob.size() - pos));
    size_t consumed = 0, produced = 0;
    Status s = d.Decode(in, &consumed, buf.data(), buf.size(), &produced);
    if (!s.ok()) return s;
    pos += consumed;
    out.append(buf, 0, produced);
    if (consumed == 0 && produced == 0) {
      if (pos == blob.size()) break;
      return Status::Internal("no progress");
    }
  }
  return out;
}

TEST(ZstdIndexTest, MultiFrameWithSkippableFramesCheckpointsAtFrameStarts) {
  std::string data = TextishBytes(2 << 20, 7);
  std::string z = Zstd(data, 16, /*skippable=*/true);  // 128 KiB frames
  CheckpointRecorder rec(300 << 10);
  auto d = NewZstdDecoder(Checkpoint{}, &rec);
  ASSERT_TRUE(d.has_value());
  auto out = DecodeAll(**d, z, 0, 10000);
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(*out, data);
  EXPECT_TRUE((*d)->AtEnd());
  const auto& cps = rec.points();
  ASSERT_GE(cps.size(), 4u);
  for (size_t i = 0; i < cps.size(); ++i) {
    EXPECT_TRUE(cps[i].window.empty());
    if (i > 0) {
      EXPECT_GE(cps[i].uncompressed_offset - cps[i - 1].uncompressed_offset, 300u << 10);
    }
    // Every checkpoint is a frame start: decoding from it gives the rest of the data.
    auto r = NewZstdDecoder(cps[i], nullptr);
    ASSERT_TRUE(r.has_value());
    auto rest = DecodeAll(**r, z, cps[i].compressed_offset, 65536);
    ASSERT_TRUE(rest.has_value()) << rest.error().ToString();
    EXPECT_EQ(*rest, data.substr(cps[i].uncompressed_offset));
  }
}

TEST(ZstdIndexTest, SingleFrameHasOnlyTheStartCheckpoint) {
  std::string data = TextishBytes(1 << 20, 8);
  std::string z = Zstd(data, 1);
  CheckpointRecorder rec(64 << 10);
  auto d = NewZstdDecoder(Checkpoint{}, &rec);
  auto out = DecodeAll(**d, z, 0, 777);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(*out, data);
  ASSERT_EQ(rec.points().size(), 1u);
  EXPECT_EQ(rec.points()[0].uncompressed_offset, 0u);
}

TEST(ZstdIndexTest, TruncatedAndCorruptStreams) {
  std::string z = Zstd(TextishBytes(200000, 9), 2);
  auto d = NewZstdDecoder(Checkpoint{}, nullptr);
  ASSERT_TRUE(DecodeAll(**d, z.substr(0, z.size() - 5), 0, 4096).has_value());
  EXPECT_FALSE((*d)->AtEnd());

  auto d2 = NewZstdDecoder(Checkpoint{}, nullptr);
  auto r = DecodeAll(**d2, "definitely not zstd", 0, 4096);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);

  Checkpoint mid;
  mid.compressed_offset = 5;
  mid.window = PackedWindow::Pack("x");
  EXPECT_EQ(NewZstdDecoder(mid, nullptr).error().code(), StatusCode::kInvalidArgument);
}

TEST(ZstdIndexTest, DecodesZstdChunkedFixtureLayersToTheirDiffIds) {
  // zstd:chunked layers: many frames plus skippable frames holding the TOC and footer.
  auto layers = testing::FixtureLayers(testing::kFixtures + "/tiny-zstdchunked");
  ASSERT_EQ(layers.size(), 3u) << "fixture missing: tiny-zstdchunked";
  for (const auto& l : layers) {
    std::string blob = testing::ReadWhole(l.path);
    CheckpointRecorder rec(256 << 10);
    auto d = NewZstdDecoder(Checkpoint{}, &rec);
    auto out = DecodeAll(**d, blob, 0, 65536);
    ASSERT_TRUE(out.has_value()) << out.error().ToString();
    EXPECT_TRUE((*d)->AtEnd());
    EXPECT_EQ(registry::Digest::Sha256Of(*out), l.diff_id) << l.path;
  }
}

}  // namespace
}  // namespace imgfs::fs
