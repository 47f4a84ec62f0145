// Tests for fs/layer/chunk_decoder.h on hand-made members and frames (the fixture-wide
// decoding runs in estargz_toc_test.cc and zstd_chunked_toc_test.cc).
#include "fs/layer/chunk_decoder.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "registry/digest.h"
#include "tests/fs/layer_test_util.h"
#include "tests/support/fake_blob_source.h"

namespace imgfs::fs {
namespace {

using registry::Digest;

using ::imgfs::testing::FakeBlobSource;

TEST(ChunkDecoder, ReadChunksSplitsOneReadAndNamesTheFileOnMismatch) {
  // Two zstd frames back to back, one zeros chunk between them.
  std::string a = testing::Zstd("first part ");
  std::string b = testing::Zstd("second part");
  LayerIndex index;
  index.layer_digest = Digest::Sha256Of("blob");
  index.format = LayerFormat::kZstdChunked;
  FileEntry f;
  f.path = "dir/file";
  f.size = 11 + 4 + 11;
  f.chunk_count = 3;
  index.entries.push_back(f);
  Chunk c0{0, 11, Digest::Sha256Of("first part "), 0, a.size(), 0};
  Chunk zeros{11, 4, Digest::Sha256Of(std::string(4, '\0')), 0, 0, 0};
  Chunk c2{15, 11, Digest::Sha256Of("second part"), a.size(), b.size(), 0};
  index.chunks = {c0, zeros, c2};
  FakeBlobSource blob(a + b);
  auto got = ReadChunks(blob, index, {2, 1, 0});
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(blob.requests(), 1);
  EXPECT_EQ((*got)[0], "second part");
  EXPECT_EQ((*got)[1], std::string(4, '\0'));
  EXPECT_EQ((*got)[2], "first part ");

  index.chunks[2].digest = Digest::Sha256Of("other");
  auto bad = ReadChunks(blob, index, {0, 1, 2});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(bad.error().message().find("dir/file"), std::string::npos) << bad.error().ToString();
  EXPECT_EQ(ReadChunks(blob, index, {7}).error().code(), StatusCode::kInvalidArgument);
}

TEST(ChunkDecoder, ZerosTarAndDigestMismatch) {
  Digest layer = Digest::Sha256Of("layer");
  Chunk zeros;
  zeros.size = 4096;
  zeros.digest = Digest::Sha256Of(std::string(4096, '\0'));
  auto z = DecodeChunk(LayerFormat::kZstdChunked, zeros, "", layer, "f");
  ASSERT_TRUE(z.has_value()) << z.error().ToString();
  EXPECT_EQ(*z, std::string(4096, '\0'));

  Chunk c;
  c.size = 5;
  c.inner_offset = 3;
  c.digest = Digest::Sha256Of("world");
  std::string frame = testing::Zstd("um world!");
  c.blob_length = frame.size();
  auto ok = DecodeChunk(LayerFormat::kZstdChunked, c, frame, layer, "f");
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_EQ(*ok, "world");
  std::string member = testing::Gzip("um world!");
  c.blob_length = member.size();
  EXPECT_EQ(DecodeChunk(LayerFormat::kEstargz, c, member, layer, "f").value(), "world");

  c.digest = Digest::Sha256Of("wrong");
  auto bad = DecodeChunk(LayerFormat::kEstargz, c, member, layer, "dir/file");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorrupt);
  const std::string msg = bad.error().message();
  EXPECT_NE(msg.find(layer.String()), std::string::npos) << msg;
  EXPECT_NE(msg.find("dir/file"), std::string::npos) << msg;
  EXPECT_NE(msg.find(Digest::Sha256Of("world").hex()), std::string::npos) << msg;
  EXPECT_NE(msg.find(c.digest.hex()), std::string::npos) << msg;

  // Truncated compressed data.
  c.digest = Digest::Sha256Of("world");
  std::string cut = member.substr(0, member.size() / 2);
  c.blob_length = cut.size();
  EXPECT_EQ(DecodeChunk(LayerFormat::kEstargz, c, cut, layer, "f").error().code(),
            StatusCode::kCorrupt);
  // Fewer bytes than the chunk names (short ranged read).
  c.blob_length = member.size();
  EXPECT_EQ(DecodeChunk(LayerFormat::kEstargz, c, cut, layer, "f").error().code(),
            StatusCode::kCorrupt);
}

TEST(ChunkDecoder, CoalescingSkipsZerosAndBridgesSmallGaps) {
  std::vector<Chunk> list(4);
  list[0].blob_offset = 100, list[0].blob_length = 10, list[0].size = 1;
  list[1].size = 50;  // zeros: nothing to read
  list[2].blob_offset = 110, list[2].blob_length = 10, list[2].size = 1;
  list[3].blob_offset = 200, list[3].blob_length = 10, list[3].size = 1;
  auto reads = CoalesceChunkReads(list, 0);
  ASSERT_EQ(reads.size(), 2u);
  EXPECT_EQ(reads[0].range, (ByteRange{100, 20}));
  EXPECT_EQ(reads[0].chunks, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(reads[1].chunks, (std::vector<size_t>{3}));
  reads = CoalesceChunkReads(list, 80);
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0].range, (ByteRange{100, 110}));
}

}  // namespace
}  // namespace imgfs::fs
