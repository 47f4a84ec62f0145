// imgfs — tests of fs/upper/upper_dir.h's overlay xattrs: the opaque marker under its
// trusted.overlay.* name (root) and, where trusted.* is refused, its user.overlay.* name
// (overlayfs's userxattr mode, an upper written without root); readers accept both.
#include "fs/upper/upper_dir.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs {
namespace {

std::string Xattr(const std::string& path, const char* name) {
  char buf[64];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof(buf));
  return n < 0 ? "<none>" : std::string(buf, static_cast<size_t>(n));
}

TEST(OverlayXattrTest, BothNamespacesAreReserved) {
  EXPECT_TRUE(IsOverlayXattr("trusted.overlay.opaque"));
  EXPECT_TRUE(IsOverlayXattr("trusted.overlay.origin"));
  EXPECT_TRUE(IsOverlayXattr("user.overlay.opaque"));
  EXPECT_TRUE(IsOverlayXattr("user.overlay.redirect"));
  EXPECT_FALSE(IsOverlayXattr("user.overlayfs"));
  EXPECT_FALSE(IsOverlayXattr("user.k"));
  EXPECT_FALSE(IsOverlayXattr("security.capability"));
  EXPECT_TRUE(IsOpaqueXattr("trusted.overlay.opaque"));
  EXPECT_TRUE(IsOpaqueXattr("user.overlay.opaque"));
  EXPECT_FALSE(IsOpaqueXattr("user.overlay.origin"));
  EXPECT_TRUE(IsRedirectOrMetacopyXattr("user.overlay.redirect"));
  EXPECT_TRUE(IsRedirectOrMetacopyXattr("user.overlay.metacopy"));
  EXPECT_TRUE(IsRedirectOrMetacopyXattr("trusted.overlay.redirect"));
  EXPECT_FALSE(IsRedirectOrMetacopyXattr("user.overlay.opaque"));
}

TEST(OverlayXattrTest, IsOpaqueReadsBothNames) {
  testing::TempDir dir;
  for (const char* d : {"t", "u", "n", "plain"}) ASSERT_TRUE(MakeDirs(dir.Sub(d)).ok());
  ASSERT_EQ(::lsetxattr(dir.Sub("t").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  ASSERT_EQ(::lsetxattr(dir.Sub("u").c_str(), "user.overlay.opaque", "y", 1, 0), 0);
  ASSERT_EQ(::lsetxattr(dir.Sub("n").c_str(), "user.overlay.opaque", "n", 1, 0), 0);
  UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root.IsValid());
  EXPECT_TRUE(IsOpaqueBeneath(root.get(), "t"));
  EXPECT_TRUE(IsOpaqueBeneath(root.get(), "u"));
  EXPECT_FALSE(IsOpaqueBeneath(root.get(), "n"));
  EXPECT_FALSE(IsOpaqueBeneath(root.get(), "plain"));
}

TEST(OverlayXattrTest, RootWritesTheTrustedName) {
  ASSERT_EQ(geteuid(), 0u) << "trusted.* xattrs need root";
  testing::TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.Sub("d")).ok());
  UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_EQ(SetOpaqueBeneath(root.get(), "d"), 0);
  EXPECT_EQ(Xattr(dir.Sub("d"), "trusted.overlay.opaque"), "y");
  EXPECT_EQ(Xattr(dir.Sub("d"), "user.overlay.opaque"), "<none>");
  EXPECT_TRUE(IsOpaqueBeneath(root.get(), "d"));
}

// The upper of a mount by an ordinary user: trusted.* is refused, user.overlay.opaque is
// written instead (in a child that drops to `nobody`).
TEST(OverlayXattrTest, UnprivilegedUpperWritesTheUserName) {
  ASSERT_EQ(geteuid(), 0u) << "the test drops from root to nobody";
  passwd* pw = ::getpwnam("nobody");  // NOLINT(concurrency-mt-unsafe): single-threaded test
  ASSERT_NE(pw, nullptr) << "no user nobody";
  const uid_t uid = pw->pw_uid;
  const gid_t gid = pw->pw_gid;
  testing::TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.Sub("d")).ok());
  ASSERT_EQ(::chown(dir.path().c_str(), uid, gid), 0);
  ASSERT_EQ(::chown(dir.Sub("d").c_str(), uid, gid), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(100);
    UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root.IsValid()) _exit(101);
    int r = SetOpaqueBeneath(root.get(), "d");
    if (r != 0) _exit(r > 0 && r < 100 ? r : 102);
    _exit(IsOpaqueBeneath(root.get(), "d") ? 0 : 103);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 0) << "100 setuid, 101 open, 102/errno set, 103 not opaque";
  EXPECT_EQ(Xattr(dir.Sub("d"), "user.overlay.opaque"), "y");
  EXPECT_EQ(Xattr(dir.Sub("d"), "trusted.overlay.opaque"), "<none>");
}

}  // namespace
}  // namespace imgfs::fs
