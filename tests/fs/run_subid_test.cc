// imgfs — unit tests of fs/run/subid: /etc/subuid and /etc/subgid lines, by name and by uid,
// and the hostile ones (overflow, zero counts, junk) skipped.
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "fs/run/subid.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs::run {
namespace {

using Ranges = std::vector<SubordinateRange>;

TEST(SubordinateRangesTest, MatchesByNameAndByUidInFileOrder) {
  constexpr const char* kText =
      "# administrators' comment\n"
      "\n"
      "alice:100000:65536\n"
      "bob:165536:65536\n"
      "1000:231072:1000\n"
      "alice:300000:10\r\n";
  EXPECT_EQ(ParseSubordinateRanges(kText, "alice", 1000),
            (Ranges{{100000, 65536}, {231072, 1000}, {300000, 10}}));
  EXPECT_EQ(ParseSubordinateRanges(kText, "bob", 1001), (Ranges{{165536, 65536}}));
  EXPECT_EQ(ParseSubordinateRanges(kText, "", 1000), (Ranges{{231072, 1000}}));
  EXPECT_TRUE(ParseSubordinateRanges(kText, "carol", 1002).empty());
  EXPECT_TRUE(ParseSubordinateRanges("", "alice", 1000).empty());
  // A last line without a newline counts.
  EXPECT_EQ(ParseSubordinateRanges("alice:1:2", "alice", 5), (Ranges{{1, 2}}));
}

TEST(SubordinateRangesTest, SkipsBrokenAndHostileLines) {
  constexpr const char* kText =
      "alice:100000:0\n"                // an empty range
      "alice:4294967295:1\n"            // reaches the invalid id
      "alice:4294967200:96\n"           // its last id is the invalid one
      "alice:4294967296:1\n"            // start beyond 32 bits
      "alice:1:99999999999999999999\n"  // count beyond 64 bits
      "alice:-1:10\n"                   // a sign
      "alice: 1:10\n"                   // a space
      "alice:0x10:10\n"                 // hex
      "alice:1:10:extra\n"              // a fourth field
      "alice:1\n"                       // two fields
      "alice\n"                         // one
      "alice::10\n"                     // an empty start
      " alice:1:10\n"                   // another owner (" alice")
      "4294967296:1:10\n"               // an owner id beyond 32 bits is no uid
      "alice:4294967199:96\n";          // the last id below 2^32-1: kept
  EXPECT_EQ(ParseSubordinateRanges(kText, "alice", 0), (Ranges{{4294967199u, 96}}));
}

TEST(SubordinateRangesTest, KeepsAtMostTheKernelsLineLimit) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "u:" + std::to_string(100000 + i * 10) + ":10\n";
  Ranges r = ParseSubordinateRanges(text, "u", 7);
  ASSERT_EQ(r.size(), kMaxSubordinateRanges);
  EXPECT_EQ(r.front(), (SubordinateRange{100000, 10}));
}

TEST(SubordinateRangesTest, ReadsFilesUpToTheLimit) {
  testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.Sub("subuid");
  ASSERT_TRUE(WriteFileAtomic(path, "nobody:100000:65536\n").ok());
  Result<Ranges> r = ReadSubordinateRanges(path, "nobody", 65534);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, (Ranges{{100000, 65536}}));

  Result<Ranges> missing = ReadSubordinateRanges(dir.Sub("none"), "nobody", 65534);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);

  std::string big(kMaxSubordinateFileBytes + 1, '#');
  ASSERT_TRUE(WriteFileAtomic(path, big).ok());
  Result<Ranges> too_big = ReadSubordinateRanges(path, "nobody", 65534);
  ASSERT_FALSE(too_big.has_value());
  EXPECT_EQ(too_big.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.error().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace imgfs::fs::run
