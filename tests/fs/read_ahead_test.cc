// Tests for fs/fuse/read_ahead.h's mountinfo lookup (the sysfs write is covered end to end
// by KernelCacheTest.LargeFileIsReadInRequestsLargerThanTheDefaultReadAhead).
#include "fs/fuse/read_ahead.h"

#include <gtest/gtest.h>

namespace imgfs::fs {
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

}  // namespace
}  // namespace imgfs::fs
