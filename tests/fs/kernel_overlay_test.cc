// imgfs — the kernel overlayfs mount of fs/upper/kernel_overlay.h: its options, and a real
// mount over layer paths holding the characters overlayfs treats specially.
#include "fs/upper/kernel_overlay.h"

#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs {
namespace {

TEST(KernelOverlayTest, OptionValuesEscapeCommaColonAndBackslash) {
  EXPECT_EQ(EscapeOverlayOption("/plain/path"), "/plain/path");
  EXPECT_EQ(EscapeOverlayOption("/a,b:c\\d"), "/a\\,b\\:c\\\\d");
  EXPECT_EQ(EscapeOverlayOption(""), "");
}

TEST(KernelOverlayTest, OptionsAreDockersOrTheKernelDefaults) {
  KernelOverlay o;
  o.lower_dirs = {"/init", "/l,1"};
  o.upper_dir = "/u";
  o.work_dir = "/w";
  EXPECT_EQ(KernelOverlayOptions(o),
            "lowerdir=/init:/l\\,1,upperdir=/u,workdir=/w,redirect_dir=off,index=off,metacopy=off");
  EXPECT_EQ(KernelOverlayOptions(o, /*kernel_defaults=*/true),
            "lowerdir=/init:/l\\,1,upperdir=/u,workdir=/w");
  o.userxattr = true;
  EXPECT_EQ(KernelOverlayOptions(o),
            "lowerdir=/init:/l\\,1,upperdir=/u,workdir=/w,userxattr,"
            "redirect_dir=nofollow,index=off,metacopy=off");
}

TEST(KernelOverlayTest, NoLowerIsAnInvalidArgument) {
  KernelOverlay o;
  o.upper_dir = "/u";
  o.work_dir = "/w";
  EXPECT_EQ(MountKernelOverlay(o, "/nonexistent").code(), StatusCode::kInvalidArgument);
}

TEST(KernelOverlayTest, MountsLayersWhosePathsHoldSpecialCharacters) {
  if (::geteuid() != 0) GTEST_SKIP() << "the kernel's overlayfs needs root";
  testing::TempDir dir;
  const std::string base = dir.Sub("a,b:c");
  KernelOverlay o;
  o.lower_dirs = {base + "/lower"};
  o.upper_dir = base + "/upper";
  o.work_dir = base + "/work";
  const std::string merged = base + "/merged";
  for (const std::string& d : {o.lower_dirs[0], o.upper_dir, o.work_dir, merged}) {
    ASSERT_TRUE(MakeDirs(d, 0755).ok()) << d;
  }
  ASSERT_TRUE(WriteFileAtomic(o.lower_dirs[0] + "/from-lower", "lower\n").ok());
  Status mounted = MountKernelOverlay(o, merged);
  ASSERT_TRUE(mounted.ok()) << mounted.ToString();
  Result<std::string> read = ReadFile(merged + "/from-lower");
  EXPECT_TRUE(read.has_value() && *read == "lower\n");
  EXPECT_TRUE(WriteFileAtomic(merged + "/new", "upper\n").ok());
  EXPECT_EQ(::umount2(merged.c_str(), 0), 0);
  Result<std::string> upper = ReadFile(o.upper_dir + "/new");
  EXPECT_TRUE(upper.has_value() && *upper == "upper\n");
}

}  // namespace
}  // namespace imgfs::fs
