// Tests for base/mountinfo.h (the read-ahead write that uses MountDeviceOf is covered end to
// end by KernelCacheTest.LargeFileIsReadInRequestsLargerThanTheDefaultReadAhead).
#include "base/mountinfo.h"

#include <gtest/gtest.h>

namespace imgfs {
namespace {

constexpr char kMountinfo[] =
    "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "40 22 0:40 / /tmp/mnt rw,nosuid,nodev,relatime shared:30 - fuse.imgfs img ro\n"
    "41 22 0:41 / /tmp/with\\040space rw shared:31 - fuse.imgfs img ro\n"
    "42 22 0:42 / /tmp/back\\134slash rw shared:32 - fuse.imgfs img ro\n"
    "43 40 0:43 / /tmp/mnt rw shared:33 - fuse.imgfs img ro\n";

TEST(MountDeviceOfTest, FindsTheLastMountAtThePath) {
  EXPECT_EQ(MountDeviceOf(kMountinfo, "/"), "252:1");
  // Mounted over: the later line is the one on top.
  EXPECT_EQ(MountDeviceOf(kMountinfo, "/tmp/mnt"), "0:43");
  EXPECT_EQ(MountDeviceOf(kMountinfo, "/tmp/with space"), "0:41");
  EXPECT_EQ(MountDeviceOf(kMountinfo, "/tmp/back\\slash"), "0:42");
}

TEST(MountDeviceOfTest, NothingForOtherPathsOrBadLines) {
  EXPECT_EQ(MountDeviceOf(kMountinfo, "/tmp"), std::nullopt);
  EXPECT_EQ(MountDeviceOf(kMountinfo, "/tmp/with\\040space"), std::nullopt);
  EXPECT_EQ(MountDeviceOf("", "/"), std::nullopt);
  EXPECT_EQ(MountDeviceOf("22 1 252:1 /", "/"), std::nullopt);
  // A device field that is not MAJ:MIN never names a sysfs path.
  EXPECT_EQ(MountDeviceOf("22 1 ../../x / /m rw - ext4 x rw\n", "/m"), std::nullopt);
  EXPECT_EQ(MountDeviceOf("22 1 0:1:2 / /m rw - ext4 x rw\n", "/m"), std::nullopt);
  EXPECT_EQ(MountDeviceOf("22 1 :1 / /m rw - ext4 x rw\n", "/m"), std::nullopt);
  EXPECT_EQ(MountDeviceOf("22 1 0: / /m rw - ext4 x rw\n", "/m"), std::nullopt);
}

TEST(ParseMountInfoTest, SplitsFieldsAndUndoesEscapes) {
  std::vector<MountInfoEntry> entries = ParseMountInfo(kMountinfo);
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].device, "252:1");
  EXPECT_EQ(entries[0].fstype, "ext4");
  EXPECT_EQ(entries[0].source, "/dev/vda1");
  EXPECT_EQ(entries[1].options, "rw,nosuid,nodev,relatime");
  EXPECT_EQ(entries[1].fstype, "fuse.imgfs");
  EXPECT_EQ(entries[1].super_options, "ro");
  EXPECT_EQ(entries[2].mountpoint, "/tmp/with space");
  EXPECT_EQ(entries[3].mountpoint, "/tmp/back\\slash");
}

TEST(ParseMountInfoTest, SkipsShortLinesAndKeepsLinesWithoutTheSeparator) {
  std::vector<MountInfoEntry> entries =
      ParseMountInfo("1 2 3\n\n22 1 0:1 / /m rw\n23 1 0:2 / /n rw shared:1 -\n");
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].mountpoint, "/m");
  EXPECT_EQ(entries[0].fstype, "");
  EXPECT_EQ(entries[1].mountpoint, "/n");
  EXPECT_EQ(entries[1].fstype, "");
}

TEST(IsMountPointTest, TheRootIsOneAndAFreshDirectoryIsNot) {
  EXPECT_TRUE(IsMountPoint("/"));
  EXPECT_TRUE(IsMountPoint("/proc"));
  EXPECT_FALSE(IsMountPoint("/proc/self"));
}

}  // namespace
}  // namespace imgfs
