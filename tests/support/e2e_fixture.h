// imgfs tests — ImgfsMountTest: the one gtest fixture of the end-to-end tests that run the
// real `imgfs` binary and make real FUSE mounts.
//
// Each test gets a fresh TempDir holding the store (Root()) and its mountpoints (Mnt(n)).
// SetUp checks the prerequisites (root, /dev/fuse, the fixtures) and makes Mnt(); TearDown
// unmounts whatever is still mounted below the test's directory (`imgfs umount`, then
// `umount -l`). A suite whose tests can share a registry asks SharedRegistry(): one
// `docker-registry` started on first use and stopped after the suite's last test
// (TearDownTestSuite), so tests push under their own repository names and never stop it.
//
//   class StatsTest : public ImgfsMountTest {};
//   TEST_F(StatsTest, ...) {
//     RegistryServer* reg = SharedRegistry();
//     ASSERT_NE(reg, nullptr);
//     ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-estargz"), "latest", "demo/s:1").ok());
//     MountOrDie({"--lazy", reg->host_port() + "/demo/s:1"});
//   }
//
// Thread-safety: a fixture object belongs to its test's thread; Imgfs() may be called from
// several threads of one test at once.
#ifndef IMGFS_TESTS_SUPPORT_E2E_FIXTURE_H_
#define IMGFS_TESTS_SUPPORT_E2E_FIXTURE_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/image_builder.h"
#include "tests/support/registry_server.h"
#include "tests/support/temp_dir.h"

namespace imgfs::testing {

// The imgfs binary under test.
inline constexpr char kImgfsBinary[] = IMGFS_BINARY;

// The image fixtures made by real tools (tests/fixtures), and one of them by name.
std::string FixturesDir();
std::string FixturePath(std::string_view name);

// Adds a gtest failure naming what is missing unless the process is root, /dev/fuse is usable
// and the fixtures exist. Used by the fixture's SetUp; call it with ASSERT_NO_FATAL_FAILURE
// from a test that does not derive from ImgfsMountTest.
void CheckMountPrerequisites();

// `imgfs ARGS...` with IMGFS_ROOT=`root` and `env` added to the environment.
ProcessResult RunImgfs(const std::string& root, std::vector<std::string> args,
                       const std::vector<std::string>& env = {}, std::string_view stdin_data = {},
                       int timeout_s = 120);

// The pid of the daemon serving `mountpoint`, from the mount lease in `root` (0 if none).
pid_t MountDaemonPid(const std::string& root, const std::string& mountpoint);

class ImgfsMountTest : public ::testing::Test {
 public:
  // Stops the suite-shared registry (if SharedRegistry() started one).
  static void TearDownTestSuite();

 protected:
  void SetUp() override;
  void TearDown() override;

  // The test's store (IMGFS_ROOT of Imgfs()).
  std::string Root() const { return dir_.Sub("store"); }
  // Mountpoint n: "mnt", "mnt2", "mnt3", ... below the test's directory. SetUp makes Mnt(),
  // MountOrDie(…, n) makes Mnt(n).
  std::string Mnt(int n = 1) const;
  // A path below the test's directory (removed after the test).
  std::string Sub(std::string_view name) const { return dir_.Sub(name); }

  // `imgfs ARGS...` against Root().
  ProcessResult Imgfs(std::vector<std::string> args, int timeout_s = 120) const;
  // `imgfs mount ARGS... MNT(n)`; fails the test unless it exits 0 and Mnt(n) is mounted.
  void MountOrDie(std::vector<std::string> args, int n = 1);
  // `imgfs umount MNT(n)`; expects exit 0 and Mnt(n) no longer mounted.
  void Umount(int n = 1);
  void Umount(const std::string& mountpoint);
  // The daemon pid from the store's lease of Mnt(n) (0 if none).
  pid_t DaemonPid(int n = 1) const;
  // The daemon serving Mnt() under keeper `keeper`: the pid `imgfs stats` reports, once that
  // is the keeper's child (0 before, e.g. while a new daemon takes the mount over).
  pid_t ServingDaemon(pid_t keeper) const;

  // The registry this suite's tests share, started on first use; null (and a test failure)
  // when it cannot start. Tests push under their own repository names and never stop it.
  static RegistryServer* SharedRegistry();

  TempDir dir_;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_E2E_FIXTURE_H_
