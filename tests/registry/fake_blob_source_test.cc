// Tests for tests/support/fake_blob_source.h, the in-memory BlobSource the lazy-reader tests
// build on: each knob does what its comment says, so a test failing through it fails for the
// reason the test names.
#include "tests/support/fake_blob_source.h"

#include <chrono>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::testing {
namespace {

using registry::Digest;

const Digest kAny = Digest::Sha256Of("any");

TEST(FakeBlobSource, AnswersRangesAndCountsRequestsBytesAndRanges) {
  FakeBlobSource source("0123456789");
  auto a = source.ReadBlobRange(kAny, ByteRange{2, 3});
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, "234");
  auto b = source.ReadBlobRange(kAny, ByteRange{8, 10});  // cut at the end
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(*b, "89");
  auto c = source.ReadBlobRange(kAny, ByteRange{20, 1});  // past the end
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(*c, "");
  EXPECT_EQ(source.requests(), 3);
  EXPECT_EQ(source.bytes(), 5u);
  ASSERT_EQ(source.Ranges().size(), 3u);
  EXPECT_EQ(source.Ranges()[1], (ByteRange{8, 10}));
  EXPECT_TRUE(source.NoOverlaps());
  ASSERT_TRUE(source.ReadBlobRange(kAny, ByteRange{3, 1}).has_value());
  EXPECT_FALSE(source.NoOverlaps());
  source.ResetCounts();
  EXPECT_EQ(source.requests(), 0);
  EXPECT_EQ(source.bytes(), 0u);
  EXPECT_TRUE(source.Ranges().empty());
  EXPECT_FALSE(source.GetManifest("latest").has_value());
}

TEST(FakeBlobSource, WholeBlobFetchesCanBeRefused) {
  FakeBlobSource source("blob");
  std::string got;
  auto sink = [&](std::string_view piece) {
    got += piece;
    return Status::Ok();
  };
  ASSERT_TRUE(source.FetchBlob(kAny, 4, sink).ok());
  EXPECT_EQ(got, "blob");
  EXPECT_EQ(source.whole_blob_fetches(), 1);
  source.set_whole_blob(false);
  EXPECT_EQ(source.FetchBlob(kAny, 4, sink).code(), StatusCode::kUnsupported);
}

TEST(FakeBlobSource, CorruptsFlipsFailsAndThrowsAsAsked) {
  FakeBlobSource source(std::string(10, 'a'));
  source.CorruptNext(1);
  EXPECT_NE(*source.ReadBlobRange(kAny, ByteRange{0, 10}), std::string(10, 'a'));
  EXPECT_EQ(*source.ReadBlobRange(kAny, ByteRange{0, 10}), std::string(10, 'a'));

  source.FlipAt(7, 2);
  EXPECT_EQ(*source.ReadBlobRange(kAny, ByteRange{0, 5}), std::string(5, 'a'));  // not held
  std::string flipped = *source.ReadBlobRange(kAny, ByteRange{5, 5});
  EXPECT_NE(flipped[2], 'a');
  EXPECT_EQ(flipped.substr(0, 2) + flipped.substr(3), std::string(4, 'a'));
  EXPECT_NE(*source.ReadBlobRange(kAny, ByteRange{6, 2}), "aa");
  EXPECT_EQ(*source.ReadBlobRange(kAny, ByteRange{6, 2}), "aa");  // twice only

  source.set_fail(true);
  auto failed = source.ReadBlobRange(kAny, ByteRange{0, 1});
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().code(), StatusCode::kUnavailable);
  source.set_fail(false);

  source.ThrowNext(1);
  EXPECT_THROW((void)source.ReadBlobRange(kAny, ByteRange{0, 1}), std::bad_alloc);
  EXPECT_TRUE(source.ReadBlobRange(kAny, ByteRange{0, 1}).has_value());
}

TEST(FakeBlobSource, MultiRangeIsOneRequestOrRefusedIntoOnePerRange) {
  FakeBlobSource source("0123456789");
  const std::vector<ByteRange> ranges = {{0, 2}, {5, 0}, {8, 2}};
  uint64_t made = 0;
  auto refused = source.ReadBlobRanges(kAny, ranges, &made);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(*refused, (std::vector<std::string>{"01", "", "89"}));
  EXPECT_EQ(made, 2u);
  EXPECT_EQ(source.requests(), 2);
  EXPECT_EQ(source.multi_range_requests(), 0);

  source.ResetCounts();
  source.set_multi_range(true);
  made = 0;
  auto one = source.ReadBlobRanges(kAny, ranges, &made);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(*one, (std::vector<std::string>{"01", "", "89"}));
  EXPECT_EQ(made, 1u);
  EXPECT_EQ(source.requests(), 1);
  EXPECT_EQ(source.multi_range_requests(), 1);
  EXPECT_EQ(source.Ranges().size(), 2u);
}

TEST(FakeBlobSource, HangHoldsReadsUntilReleaseAndInFlightIsCounted) {
  FakeBlobSource source("0123456789");
  source.Hang();
  std::vector<std::thread> readers;
  std::vector<std::string> got(3);
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&, i] {
      auto r = source.ReadBlobRange(kAny, ByteRange{static_cast<uint64_t>(i), 1});
      if (r.has_value()) got[i] = *r;
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (source.Ranges().size() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(source.Ranges().size(), 3u);
  EXPECT_EQ(source.bytes(), 0u);  // all three are held
  source.Release();
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(got, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_EQ(source.max_in_flight(), 3);
  EXPECT_EQ(source.bytes(), 3u);
}

TEST(FakeBlobSource, ForwardsToAnInnerSourceWithTheKnobsApplied) {
  auto inner = std::make_shared<FakeBlobSource>("inner bytes");
  FakeBlobSource outer(inner);
  outer.CorruptNext(1);
  EXPECT_NE(*outer.ReadBlobRange(kAny, ByteRange{0, 5}), "inner");
  EXPECT_EQ(*outer.ReadBlobRange(kAny, ByteRange{0, 5}), "inner");
  EXPECT_EQ(inner->requests(), 2);
  EXPECT_EQ(outer.Describe(), inner->Describe());
}

}  // namespace
}  // namespace imgfs::testing
