// imgfs — end-to-end `imgfs diff`: the changes made through a real `imgfs mount --rw` and by a
// container of `imgfs run`, listed as docker diff lists them (A/C/D, sorted by path).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "tests/support/e2e_fixture.h"

namespace imgfs::testing {
namespace {

constexpr char kTiny[] = "localhost/tiny-gzip:latest";

class DiffTest : public ImgfsMountTest {
 protected:
  void PullTiny() {
    ProcessResult r = Imgfs({"pull", "-q", "oci:" + FixturePath("tiny-gzip") + ":latest"});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
};

TEST_F(DiffTest, WritableMountShowsAddedChangedAndDeletedPaths) {
  ASSERT_NO_FATAL_FAILURE(PullTiny());
  MountOrDie({"--rw", kTiny});
  const std::string mnt = Mnt();
  // Nothing changed yet: no lines.
  ProcessResult none = Imgfs({"diff", mnt});
  ASSERT_EQ(none.exit_code, 0) << none.Describe();
  EXPECT_EQ(none.out, "");

  ASSERT_TRUE(WriteFileAtomic(mnt + "/new.txt", "added\n").ok());
  {
    std::ofstream passwd(mnt + "/etc/passwd", std::ios::app);
    passwd << "extra:x:1000:1000::/:/bin/sh\n";
    ASSERT_TRUE(passwd.good());
  }
  ASSERT_EQ(::unlink((mnt + "/data/changeme.txt").c_str()), 0);
  ASSERT_EQ(::mkdir((mnt + "/newdir").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFileAtomic(mnt + "/newdir/f", "in a new directory\n").ok());

  const std::string expected =
      "C /data\n"
      "D /data/changeme.txt\n"
      "C /etc\n"
      "C /etc/passwd\n"
      "A /new.txt\n"
      "A /newdir\n"
      "A /newdir/f\n";
  ProcessResult diff = Imgfs({"diff", mnt});
  ASSERT_EQ(diff.exit_code, 0) << diff.Describe();
  EXPECT_EQ(diff.out, expected);
  ProcessResult container_diff = Imgfs({"container", "diff", mnt});
  ASSERT_EQ(container_diff.exit_code, 0) << container_diff.Describe();
  EXPECT_EQ(container_diff.out, expected);
  Umount();
}

// A lazily mounted image (recorded without its layers) is compared through its indexes.
TEST_F(DiffTest, LazyWritableMountOfARegistryImage) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-estargz"), "latest", "diff/lazy:1").ok());
  MountOrDie({"--lazy", "--rw", reg->host_port() + "/diff/lazy:1"});
  ASSERT_TRUE(WriteFileAtomic(Mnt() + "/etc/conf.d/sub/added.conf", "x\n").ok());
  ASSERT_EQ(::unlink((Mnt() + "/etc/os-release").c_str()), 0);
  ProcessResult diff = Imgfs({"diff", Mnt()});
  ASSERT_EQ(diff.exit_code, 0) << diff.Describe();
  EXPECT_EQ(diff.out,
            "C /etc\n"
            "C /etc/conf.d\n"
            "C /etc/conf.d/sub\n"
            "A /etc/conf.d/sub/added.conf\n"
            "D /etc/os-release\n");
  Umount();
}

TEST_F(DiffTest, ContainerOfRunShowsItsChanges) {
  ASSERT_NO_FATAL_FAILURE(PullTiny());
  // tiny's busybox has no applet links for rm and mkdir: they are called through busybox.
  ProcessResult run = Imgfs({"run", "--name", "t1", kTiny, "sh", "-c",
                             "echo x > /x; echo more >> /etc/passwd; busybox rm /etc/group; "
                             "busybox mkdir -p /d/e"});
  ASSERT_EQ(run.exit_code, 0) << run.Describe();
  ProcessResult diff = Imgfs({"diff", "t1"});
  ASSERT_EQ(diff.exit_code, 0) << diff.Describe();
  EXPECT_EQ(diff.out,
            "A /d\n"
            "A /d/e\n"
            "C /etc\n"
            "D /etc/group\n"
            "C /etc/passwd\n"
            "A /x\n");
}

TEST_F(DiffTest, UsageAndUnknownSource) {
  ProcessResult usage = Imgfs({"diff"});
  EXPECT_EQ(usage.exit_code, 2) << usage.Describe();
  ProcessResult help = Imgfs({"diff", "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.Describe();
  EXPECT_EQ(help.out.rfind("Usage: imgfs diff CONTAINER|MOUNTPOINT", 0), 0u) << help.out;
  ProcessResult unknown = Imgfs({"diff", "no-such-container"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_NE(unknown.err.find("no container or writable mount named no-such-container"),
            std::string::npos)
      << unknown.err;
  EXPECT_EQ(unknown.out, "");
}

}  // namespace
}  // namespace imgfs::testing
