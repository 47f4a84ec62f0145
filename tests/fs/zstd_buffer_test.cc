// Tests for fs/layer/zstd_buffer.h: round trips, several frames, and the bounds on hostile
// input (bombs, cut-short frames, garbage).
#include "fs/layer/zstd_buffer.h"

#include <random>
#include <string>

#include <gtest/gtest.h>

namespace imgfs::fs {
namespace {

std::string Text(size_t n, uint32_t seed = 11) {
  std::mt19937 rng(seed);
  static const char kWords[][8] = {"usr ", "lib ", "share ", "doc ", "bin ", "etc\n"};
  std::string out;
  while (out.size() < n) out += kWords[rng() % 6];
  out.resize(n);
  return out;
}

TEST(ZstdBufferTest, RoundTripsAndPacks) {
  const std::string data = Text(1 << 20);
  Result<std::string> packed = ZstdAll(data, 9);
  ASSERT_TRUE(packed.has_value()) << packed.error().ToString();
  EXPECT_LT(packed->size(), data.size() / 4);
  Result<std::string> plain = UnzstdAll(*packed, data.size(), "data");
  ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
  EXPECT_EQ(*plain, data);
  // Empty input: one empty frame.
  Result<std::string> empty = ZstdAll("", 9);
  ASSERT_TRUE(empty.has_value());
  Result<std::string> back = UnzstdAll(*empty, 0, "data");
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, "");
}

TEST(ZstdBufferTest, SeveralFramesAreOneStream) {
  const std::string a = Text(5000, 1), b = Text(70000, 2);
  const std::string frames = *ZstdAll(a, 3) + *ZstdAll(b, 3);
  Result<std::string> all = UnzstdAll(frames, 1 << 20, "data");
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  EXPECT_EQ(*all, a + b);
  std::string range;
  ASSERT_TRUE(UnzstdRange(frames, 4000, 6000, &range).ok());
  EXPECT_EQ(range, (a + b).substr(4000, 2000));
}

TEST(ZstdBufferTest, RefusesMoreThanTheBound) {
  // 64 MiB of zeros: a few KiB packed, refused at a 1 MiB bound without decoding it all.
  const std::string bomb = *ZstdAll(std::string(64 << 20, '\0'), 3);
  ASSERT_LT(bomb.size(), 64u << 10);
  Result<std::string> all = UnzstdAll(bomb, 1 << 20, "index");
  ASSERT_FALSE(all.has_value());
  EXPECT_EQ(all.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(all.error().message().find("index decompresses to more than 1048576 bytes"),
            std::string::npos)
      << all.error().ToString();
}

TEST(ZstdBufferTest, CutShortAndGarbageAreCorrupt) {
  const std::string data = Text(200000);
  const std::string packed = *ZstdAll(data, 3);
  for (size_t cut : {size_t{1}, size_t{9}, packed.size() / 2, packed.size() - 1}) {
    Result<std::string> all = UnzstdAll(packed.substr(0, cut), 1 << 20, "index");
    ASSERT_FALSE(all.has_value()) << cut;
    EXPECT_EQ(all.error().code(), StatusCode::kCorrupt) << cut;
  }
  Result<std::string> garbage = UnzstdAll("not zstd at all", 1 << 20, "index");
  ASSERT_FALSE(garbage.has_value());
  EXPECT_EQ(garbage.error().code(), StatusCode::kCorrupt);
  // Good frames followed by garbage.
  Result<std::string> trailing = UnzstdAll(packed + "xx", 1 << 20, "index");
  ASSERT_FALSE(trailing.has_value());
  EXPECT_EQ(trailing.error().code(), StatusCode::kCorrupt);
  std::string range;
  EXPECT_EQ(UnzstdRange(packed.substr(0, packed.size() / 2), 0, data.size(), &range).code(),
            StatusCode::kCorrupt);
}

}  // namespace
}  // namespace imgfs::fs
