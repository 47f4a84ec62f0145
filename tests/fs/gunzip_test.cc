// Tests for fs/layer/gunzip.h: libdeflate's fast path, zlib's streaming path, and the bounds
// on hostile members (lying trailers, bombs, cut-short and trailing data).
#include "fs/layer/gunzip.h"

#include <random>
#include <string>

#include <gtest/gtest.h>

#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

std::string Text(size_t n, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  static const char kWords[][8] = {"usr ", "lib ", "share ", "doc ", "bin ", "etc\n"};
  std::string out;
  while (out.size() < n) out += kWords[rng() % 6];
  out.resize(n);
  return out;
}

TEST(GunzipTest, OneMemberWholeAndSlices) {
  const std::string data = Text(300000);
  const std::string gz = testing::Gzip(data);
  Result<std::string> all = GunzipAll(gz, 1 << 20, "data");
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  EXPECT_EQ(*all, data);

  std::string part;
  Result<GunzipResult> r = GunzipRange(gz, 1000, 5000, &part);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(part, data.substr(1000, 4000));
  EXPECT_EQ(r->decoded, 5000u);
  EXPECT_FALSE(r->input_ended);  // stopped at `end`, inside the member
}

TEST(GunzipTest, SeveralMembersAreOneStream) {
  const std::string data = Text(200000, 3);
  const std::string gz = testing::Gzip(data, 6, 5);
  Result<std::string> all = GunzipAll(gz, 1 << 20, "data");
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  EXPECT_EQ(*all, data);
  // A range across the second and third members.
  std::string part;
  Result<GunzipResult> r = GunzipRange(gz, 50000, 130000, &part);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(part, data.substr(50000, 80000));
}

TEST(GunzipTest, ShortStreamSaysHowFarItWent) {
  const std::string data = Text(1000);
  std::string out;
  Result<GunzipResult> r = GunzipRange(testing::Gzip(data), 0, 5000, &out);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->decoded, 1000u);
  EXPECT_TRUE(r->input_ended);
  EXPECT_EQ(out, data);
}

TEST(GunzipTest, LyingTrailerStillGivesTheRightBytes) {
  const std::string data = Text(100000, 9);
  for (uint32_t isize : {1u, 99999u, 0xffffffffu, 0u}) {
    std::string gz = testing::Gzip(data);
    for (int i = 0; i < 4; ++i) gz[gz.size() - 4 + i] = static_cast<char>(isize >> (8 * i));
    std::string out;
    // The trailer's ISIZE is checked by both decoders: a wrong one is bad data, never wrong
    // bytes or a large allocation.
    Result<GunzipResult> r = GunzipRange(gz, 0, data.size(), &out);
    if (r.has_value()) {
      EXPECT_EQ(out, data.substr(0, out.size())) << isize;
    } else {
      EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << isize;
    }
    EXPECT_FALSE(GunzipAll(gz, 1 << 20, "data").has_value()) << isize;
  }
}

TEST(GunzipTest, BombIsRefusedAtTheBound) {
  const std::string zeros(32 << 20, '\0');
  const std::string gz = testing::Gzip(zeros, 9);
  ASSERT_LT(gz.size(), 64u << 10);
  Result<std::string> all = GunzipAll(gz, 1 << 20, "TOC");
  ASSERT_FALSE(all.has_value());
  EXPECT_EQ(all.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(all.error().message().find("TOC decompresses to more than 1048576 bytes"),
            std::string::npos)
      << all.error().ToString();
}

TEST(GunzipTest, CutShortAndTrailingGarbageAreCorrupt) {
  const std::string data = Text(100000, 5);
  const std::string gz = testing::Gzip(data);
  Result<std::string> cut = GunzipAll(gz.substr(0, gz.size() / 2), 1 << 20, "TOC");
  ASSERT_FALSE(cut.has_value());
  EXPECT_EQ(cut.error().code(), StatusCode::kCorrupt);
  // The bytes before the cut are still served to a range that ends before it.
  std::string head;
  Result<GunzipResult> r = GunzipRange(gz.substr(0, gz.size() / 2), 0, 100, &head);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(head, data.substr(0, 100));

  Result<std::string> trailing = GunzipAll(gz + "garbage!garbage!", 1 << 20, "TOC");
  ASSERT_FALSE(trailing.has_value());
  EXPECT_EQ(trailing.error().code(), StatusCode::kCorrupt);

  Result<std::string> empty = GunzipAll("", 1 << 20, "TOC");
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), StatusCode::kCorrupt);
}

TEST(GunzipTest, ZlibAloneAgreesWithTheFastPath) {
  const std::string data = Text(500000, 11);
  const std::string gz = testing::Gzip(data, 6, 3);
  Result<std::string> fast = GunzipAll(gz, 1 << 20, "data");
  Result<std::string> slow = GunzipAllWithZlib(gz, 1 << 20);
  ASSERT_TRUE(fast.has_value() && slow.has_value());
  EXPECT_EQ(*fast, *slow);
  EXPECT_EQ(*fast, data);
}

}  // namespace
}  // namespace imgfs::fs
