// imgfs — ReadAheadWindow: sequential detection, window growth and reset, full windows, and
// what is scheduled ahead (fs/readahead.h).
#include "fs/lazy/readahead.h"

#include <gtest/gtest.h>

namespace imgfs::fs {
namespace {

constexpr uint64_t kUnit = 1 << 20;  // every position is 1 MiB
const ReadAheadWindow::Length kLength = [](uint32_t) { return kUnit; };

// Positions scheduled ahead of a read ending at `last` (of 1000), as [from, to).
std::pair<uint32_t, uint32_t> Ahead(ReadAheadWindow& w, uint32_t last) {
  uint32_t from = 0;
  uint32_t to = 0;
  if (!w.Ahead(last, 1000, kLength, &from, &to)) return {0, 0};
  return {from, to};
}

TEST(ReadAheadWindowTest, SequentialReadsDoubleTheWindowUpToTheCap) {
  ReadAheadWindow w(1 * kUnit, 8 * kUnit);
  EXPECT_FALSE(w.Record(0, 0, kLength));           // the first read is not sequential
  EXPECT_EQ(Ahead(w, 0), std::make_pair(1u, 2u));  // the minimum window: one position
  std::vector<uint32_t> ahead;                     // positions scheduled ahead of each read
  for (uint32_t pos = 1; pos <= 8; ++pos) {
    ASSERT_TRUE(w.Record(pos, pos, kLength)) << pos;
    Ahead(w, pos);
    ahead.push_back(w.ahead_end() - pos - 1);
  }
  // 2, 4, 8 MiB; then capped at 8, topped up whenever less than half of it is left.
  EXPECT_EQ(ahead, (std::vector<uint32_t>{2, 4, 8, 7, 6, 5, 4, 8}));
}

TEST(ReadAheadWindowTest, ASeekResetsTheWindowAndForgetsWhatWasScheduled) {
  ReadAheadWindow w(1 * kUnit, 8 * kUnit);
  w.Record(0, 0, kLength);
  for (uint32_t p = 1; p < 5; ++p) ASSERT_TRUE(w.Record(p, p, kLength));
  EXPECT_EQ(Ahead(w, 4).second, 13u);  // 8 ahead of position 4
  EXPECT_FALSE(w.Record(500, 500, kLength));
  EXPECT_EQ(w.ahead_end(), 501u);
  // The next sequential read starts again from the minimum (doubled once).
  ASSERT_TRUE(w.Record(501, 501, kLength));
  EXPECT_EQ(Ahead(w, 501), std::make_pair(502u, 504u));
}

TEST(ReadAheadWindowTest, SlightlyOutOfOrderReadsStaySequential) {
  ReadAheadWindow w(1 * kUnit, 64 * kUnit);
  w.Record(10, 10, kLength);
  ASSERT_TRUE(w.Record(11, 20, kLength));
  // Up to kSequentialSlack positions back (another FUSE thread's request) is sequential ...
  EXPECT_TRUE(w.Record(20 - ReadAheadWindow::kSequentialSlack, 15, kLength));
  // ... further back is a seek.
  EXPECT_FALSE(w.Record(20 - ReadAheadWindow::kSequentialSlack - 1, 11, kLength));
}

TEST(ReadAheadWindowTest, TopsUpInBatchesOfAtLeastHalfAWindowAndNothingTwice) {
  ReadAheadWindow w(4 * kUnit, 4 * kUnit);
  w.Record(0, 0, kLength);
  ASSERT_TRUE(w.Record(1, 1, kLength));
  EXPECT_EQ(Ahead(w, 1), std::make_pair(2u, 6u));
  // 3 and then 2 positions (of 4) still ahead: nothing new, not one small request per read.
  ASSERT_TRUE(w.Record(2, 2, kLength));
  EXPECT_EQ(Ahead(w, 2), std::make_pair(0u, 0u));
  ASSERT_TRUE(w.Record(3, 3, kLength));
  EXPECT_EQ(Ahead(w, 3), std::make_pair(0u, 0u));
  // Less than half left: a batch up to a full window ahead, none of it scheduled before.
  ASSERT_TRUE(w.Record(4, 4, kLength));
  EXPECT_EQ(Ahead(w, 4), std::make_pair(6u, 9u));
  // At the end of the positions nothing is left.
  uint32_t from = 0;
  uint32_t to = 0;
  EXPECT_FALSE(w.Ahead(999, 1000, kLength, &from, &to));
}

TEST(ReadAheadWindowTest, FullWindowsCountSequentialBytesAtTheCap) {
  ReadAheadWindow w(2 * kUnit, 4 * kUnit);
  w.Record(0, 0, kLength);
  ASSERT_TRUE(w.Record(1, 1, kLength));  // window 4 MiB: at the cap from now on
  EXPECT_EQ(w.full_windows(), 0);
  ASSERT_TRUE(w.Record(2, 5, kLength));  // 4 MiB read at the cap
  EXPECT_EQ(w.full_windows(), 1);
  ASSERT_TRUE(w.Record(6, 9, kLength));
  EXPECT_EQ(w.full_windows(), 2);
  EXPECT_FALSE(w.Record(100, 100, kLength));  // a seek starts over
  EXPECT_EQ(w.full_windows(), 0);
}

}  // namespace
}  // namespace imgfs::fs
