// Tests for the shared vocabulary of base/: time.h, random.h, strings.h (ToLower, Trim),
// mutex.h and byte_slices.h.
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/byte_slices.h"
#include "base/mutex.h"
#include "base/random.h"
#include "base/strings.h"
#include "base/time.h"

namespace imgfs {
namespace {

TEST(ByteSlicesTest, PartsStayValidWhileHeldAndGatherInOrder) {
  ByteSlices slices;
  {
    auto a = std::make_shared<const std::string>("hello, ");
    auto b = std::make_shared<const std::string>("world");
    slices.Append(*a, a);
    slices.Append(std::string_view(*b).substr(0, 0), b);  // empty: dropped
    slices.Append(std::string_view(*b).substr(1, 3), b);
  }  // only the slices hold the strings now
  ASSERT_EQ(slices.parts().size(), 2u);
  EXPECT_EQ(slices.size(), 10u);
  EXPECT_EQ(slices.parts()[1], "orl");
  ByteSlices copy = slices;
  EXPECT_EQ(std::move(slices).TakeString(), "hello, orl");
  EXPECT_EQ(slices.size(), 0u);  // NOLINT(bugprone-use-after-move): TakeString empties it
  EXPECT_EQ(std::move(copy).TakeString(), "hello, orl");
}

TEST(ByteSlicesTest, TakeStringGivesBackTheStringOfOfUnlessItWasCopied) {
  std::string big(1 << 20, 'x');
  const char* bytes = big.data();
  ByteSlices one = ByteSlices::Of(std::move(big));
  ASSERT_EQ(one.parts().size(), 1u);
  EXPECT_EQ(one.parts()[0].data(), bytes);
  ByteSlices shared = ByteSlices::Of(std::string(1 << 20, 'y'));
  ByteSlices copy = shared;
  std::string moved = std::move(one).TakeString();
  EXPECT_EQ(moved.data(), bytes);  // no copy
  std::string copied = std::move(shared).TakeString();
  EXPECT_EQ(copied, std::string(1 << 20, 'y'));
  EXPECT_EQ(std::move(copy).TakeString(), copied);  // the copy still saw its bytes
  EXPECT_EQ(ByteSlices::Of("").parts().size(), 0u);
}

TEST(TimeTest, FormatsUtcSecondsAndNanos) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(1709254800), "2024-03-01T01:00:00Z");
  EXPECT_EQ(FormatRfc3339Nanos(1709254800, 5), "2024-03-01T01:00:00.000000005Z");
  EXPECT_EQ(FormatRfc3339Nanos(1709254800, 500000000, /*go_style=*/true), "2024-03-01T01:00:00.5Z");
  EXPECT_EQ(FormatRfc3339Nanos(1709254800, 0, /*go_style=*/true), "2024-03-01T01:00:00Z");
}

TEST(TimeTest, ParsesWhatItFormatsAndOffsets) {
  int64_t sec = 0;
  uint32_t nsec = 0;
  ASSERT_TRUE(ParseRfc3339(FormatRfc3339Nanos(1709254800, 123), &sec, &nsec).ok());
  EXPECT_EQ(sec, 1709254800);
  EXPECT_EQ(nsec, 123u);
  ASSERT_TRUE(ParseRfc3339("2024-03-01T02:00:00.5+01:00", &sec, &nsec).ok());
  EXPECT_EQ(sec, 1709254800);
  EXPECT_EQ(nsec, 500000000u);
  ASSERT_TRUE(ParseRfc3339("1969-12-31T23:59:59Z", &sec, &nsec).ok());
  EXPECT_EQ(sec, -1);
  EXPECT_EQ(DaysFromCivil(2000, 3, 1), 11017);
}

TEST(TimeTest, RefusesWhatIsNotRfc3339) {
  int64_t sec = 0;
  uint32_t nsec = 0;
  for (const char* bad : {"2024-03-01 00:00:00", "2024-13-01T00:00:00Z", "2024-03-01T00:00:00",
                          "2024-03-01T00:00:00Zjunk", "2024-03-01T00:00:00.Z", "x"}) {
    Status st = ParseRfc3339(bad, &sec, &nsec);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << bad;
  }
}

TEST(RandomTest, HexOfTheAskedLengthAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string h = RandomHex(8);
    ASSERT_EQ(h.size(), 16u);
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
    seen.insert(h);
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(RandomHex(0), "");
}

TEST(StringsTest, ToLowerIsAsciiOnly) {
  EXPECT_EQ(ToLower("Registry.EXAMPLE:5000"), "registry.example:5000");
  EXPECT_EQ(ToLower("\xc3\x84"), "\xc3\x84");  // bytes of UTF-8 stay as they are
}

TEST(StringsTest, TrimRemovesAsciiSpaceAtBothEnds) {
  EXPECT_EQ(Trim(" \t a b \r\n"), "a b");
  EXPECT_EQ(Trim(" \t\r\n"), "");
  EXPECT_EQ(Trim(""), "");
  EXPECT_EQ(Trim("x"), "x");
}

TEST(MutexTest, GuardsACounterAcrossThreadsAndCondVarWakes) {
  struct Counter {
    Mutex mu;
    CondVar cv;
    int value IMGFS_GUARDED_BY(mu) = 0;
  } c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 1000; ++i) {
        MutexLock lock(&c.mu);
        ++c.value;
        c.cv.SignalAll();
      }
    });
  }
  {
    MutexLock lock(&c.mu);
    while (c.value < 4000) c.cv.Wait(&c.mu);
    EXPECT_EQ(c.value, 4000);
  }
  for (auto& t : threads) t.join();
  // A wait with nobody to signal ends at its deadline, with the lock held again.
  MutexLock lock(&c.mu);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  while (c.cv.WaitUntil(&c.mu, deadline)) {
  }
  EXPECT_GE(std::chrono::steady_clock::now(), deadline);
  EXPECT_EQ(c.value, 4000);
}

}  // namespace
}  // namespace imgfs
