// imgfs — tests for base/huge_pages.h.
#include "base/huge_pages.h"

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs {
namespace {

// A hint only: whatever the kernel does, the memory keeps its contents and stays usable, and
// blocks without a whole huge page inside (or none at all) are left alone.
TEST(HugePagesTest, AdvisedMemoryKeepsItsBytes) {
  std::vector<char> small(4096, 'a');
  AdviseHugePages(small.data(), small.size());
  AdviseHugePages(nullptr, 0);
  EXPECT_EQ(small[4095], 'a');
  std::vector<char> large(9u << 20, 'b');
  AdviseHugePages(large.data(), large.size());
  std::memset(large.data() + (3u << 20), 'c', 1u << 20);
  EXPECT_EQ(large.front(), 'b');
  EXPECT_EQ(large[(3u << 20) + 5], 'c');
  EXPECT_EQ(large.back(), 'b');
}

}  // namespace
}  // namespace imgfs
