// imgfs — tests of fs/fuse/mount_access.h: fuse.conf as fusermount3 reads it, what each
// missing piece of the host makes CheckMountAccess say, and who gets default_permissions.
#include "fs/fuse/mount_access.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace imgfs::fs {
namespace {

TEST(FuseConfAllowsOther, ReadsTheFileAsFusermountDoes) {
  EXPECT_TRUE(FuseConfAllowsOther("user_allow_other\n"));
  EXPECT_TRUE(FuseConfAllowsOther("user_allow_other"));
  EXPECT_TRUE(FuseConfAllowsOther("# c\nmount_max = 10\n  user_allow_other \t# why\n"));
  EXPECT_TRUE(FuseConfAllowsOther("user_allow_other\r\n"));
  // Debian's default file has it commented out.
  EXPECT_FALSE(FuseConfAllowsOther("# /etc/fuse.conf\n#mount_max = 1000\n#user_allow_other\n"));
  EXPECT_FALSE(FuseConfAllowsOther(""));
  EXPECT_FALSE(FuseConfAllowsOther("user_allow_other_too\n"));
  EXPECT_FALSE(FuseConfAllowsOther("user allow other\n"));
  EXPECT_FALSE(FuseConfAllowsOther("x user_allow_other\n"));
  EXPECT_FALSE(FuseConfAllowsOther(std::string("user_allow_other\0", 17)));
}

class MountAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    // A stand-in for /dev/fuse that this (root) process can open, and a working fusermount3.
    std::ofstream(dir_.Sub("fuse")).put('x');
    std::ofstream(dir_.Sub("fusermount3")).put('x');
    ASSERT_EQ(chmod(dir_.Sub("fusermount3").c_str(), 0755), 0);
    host_.euid = 1000;
    host_.dev_fuse = dir_.Sub("fuse");
    host_.fusermount_candidates = {dir_.Sub("missing/fusermount3"), dir_.Sub("fusermount3")};
    host_.fuse_conf = dir_.Sub("fuse.conf");
  }

  void WriteConf(const std::string& text) { std::ofstream(host_.fuse_conf) << text; }

  imgfs::testing::TempDir dir_;
  MountHost host_;
};

TEST_F(MountAccessTest, UserWithWhatAMountNeeds) {
  EXPECT_TRUE(CheckMountAccess({}, host_).ok());
  EXPECT_TRUE(CheckMountAccess({"dev", "suid"}, host_).ok());
}

TEST_F(MountAccessTest, MissingDevFuseSaysToLoadTheModule) {
  host_.dev_fuse = dir_.Sub("no-such-device");
  Status st = CheckMountAccess({}, host_);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("modprobe fuse"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("--device /dev/fuse"), std::string::npos) << st.ToString();
  host_.euid = 0;  // root needs the device as well
  EXPECT_EQ(CheckMountAccess({}, host_).code(), StatusCode::kUnavailable);
}

TEST_F(MountAccessTest, MissingFusermountSaysToInstallIt) {
  host_.fusermount_candidates = {dir_.Sub("missing/fusermount3"), dir_.Sub("fuse.conf")};
  Status st = CheckMountAccess({}, host_);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("apt-get install fuse3"), std::string::npos) << st.ToString();
  host_.euid = 0;  // root mounts with mount(2) and needs no fusermount3
  EXPECT_TRUE(CheckMountAccess({}, host_).ok());
}

TEST_F(MountAccessTest, AllowOtherNeedsUserAllowOther) {
  for (const char* option : {"allow_other", "allow_root"}) {
    SCOPED_TRACE(option);
    WriteConf("#user_allow_other\n");
    Status st = CheckMountAccess({"ro", option}, host_);
    EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
    EXPECT_NE(st.message().find("user_allow_other"), std::string::npos) << st.ToString();
    EXPECT_NE(st.message().find(host_.fuse_conf), std::string::npos) << st.ToString();
    WriteConf("user_allow_other\n");
    EXPECT_TRUE(CheckMountAccess({"ro", option}, host_).ok());
  }
  host_.fuse_conf = dir_.Sub("no-fuse.conf");  // an absent file allows nothing
  EXPECT_EQ(CheckMountAccess({"allow_other"}, host_).code(), StatusCode::kPermissionDenied);
  host_.euid = 0;
  EXPECT_TRUE(CheckMountAccess({"allow_other"}, host_).ok());
}

TEST(KernelChecksPermissions, OnlyPrivateUserMountsGoWithout) {
  EXPECT_TRUE(KernelChecksPermissions({}, 0));
  EXPECT_TRUE(KernelChecksPermissions({"allow_other"}, 0));
  EXPECT_TRUE(KernelChecksPermissions({"allow_other"}, 1000));
  EXPECT_FALSE(KernelChecksPermissions({}, 1000));
  EXPECT_FALSE(KernelChecksPermissions({"allow_root"}, 1000));
}

}  // namespace
}  // namespace imgfs::fs
