// imgfs — end-to-end test of abandoned temporary uppers: a SIGKILLed `imgfs mount --rw`
// daemon (no --upper) leaves STORE/containers/mount-<16 hex>/ behind; `imgfs cache gc`
// deletes it (its owner process is gone) and keeps the temporary upper of a live mount.
// Real FUSE mounts made by the real binary.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"

namespace imgfs::testing {
namespace {

const std::string kTiny = "oci:" + FixturePath("tiny-gzip:latest");

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// The lease of the mount at `mountpoint`: its daemon pid and upper directory.
struct MountLease {
  pid_t pid = 0;
  std::string upper;
};

class LeftoversTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ImgfsMountTest::SetUp();
    ASSERT_TRUE(MakeDirs(Mnt(2)).ok());
  }
  void TearDown() override {
    ImgfsMountTest::TearDown();
    if (killed_pid_ > 0) ::kill(killed_pid_, SIGKILL);
  }

  MountLease LeaseOf(const std::string& mountpoint) {
    MountLease out;
    std::string dir = Root() + "/mounts";
    if (!std::filesystem::exists(dir)) return out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() != ".json") continue;
      Result<std::string> text = ReadFile(e.path().string());
      if (!text.has_value()) continue;
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;
      if (j.value("mountpoint", "") != mountpoint) continue;
      out.pid = j.value("pid", 0);
      out.upper = j.value("upper", "");
    }
    return out;
  }

  pid_t killed_pid_ = 0;
};

TEST_F(LeftoversTest, GcRemovesTheTemporaryUpperOfAKilledDaemonAndKeepsALiveOne) {
  const std::string live = Mnt();
  const std::string killed = Mnt(2);
  for (const std::string& mnt : {live, killed}) {
    ProcessResult r = Imgfs({"mount", "--rw", "--driver", "fuse", kTiny, mnt});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(IsMounted(mnt));
    ASSERT_TRUE(WriteFileAtomic(mnt + "/scratch", "changed in " + mnt).ok());
  }
  MountLease live_lease = LeaseOf(live);
  MountLease killed_lease = LeaseOf(killed);
  ASSERT_GT(live_lease.pid, 0);
  ASSERT_GT(killed_lease.pid, 0);
  const std::string containers = Root() + "/containers/";
  for (const MountLease* l : {&live_lease, &killed_lease}) {
    ASSERT_TRUE(l->upper.starts_with(containers + "mount-")) << l->upper;
    ASSERT_TRUE(Exists(l->upper + "/scratch")) << l->upper;
  }
  const std::string live_dir = std::filesystem::path(live_lease.upper).parent_path().string();
  const std::string killed_dir = std::filesystem::path(killed_lease.upper).parent_path().string();
  // The owner record names the daemon.
  Result<std::string> owner = ReadFile(killed_dir + "/owner");
  ASSERT_TRUE(owner.has_value()) << owner.error().ToString();
  auto oj = nlohmann::json::parse(*owner, nullptr, false);
  ASSERT_TRUE(oj.is_object()) << *owner;
  EXPECT_EQ(oj.value("pid", 0), killed_lease.pid);

  // SIGKILL: no cleanup runs, the upper stays behind.
  killed_pid_ = killed_lease.pid;
  ASSERT_EQ(::kill(killed_pid_, SIGKILL), 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::kill(killed_pid_, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  killed_pid_ = 0;
  RunProcess({"umount", "-l", killed});
  ASSERT_TRUE(Exists(killed_dir + "/upper/scratch")) << "the killed daemon cleaned up after all";

  ProcessResult gc = Imgfs({"cache", "gc"});
  ASSERT_EQ(gc.exit_code, 0) << gc.Describe();
  EXPECT_FALSE(Exists(killed_dir)) << "gc removes the killed daemon's temporary upper";
  // No hidden removal debris either.
  for (const auto& e : std::filesystem::directory_iterator(containers)) {
    EXPECT_FALSE(e.path().filename().string().starts_with(".rm-")) << e.path();
  }
  // The live mount's upper is kept and the mount still serves its change.
  ASSERT_TRUE(Exists(live_lease.upper + "/scratch"));
  Result<std::string> data = ReadFile(live + "/scratch");
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  EXPECT_EQ(*data, "changed in " + live);
  ASSERT_TRUE(WriteFileAtomic(live + "/after-gc", "x").ok());
  EXPECT_TRUE(Exists(live_lease.upper + "/after-gc"));

  ProcessResult um = Imgfs({"umount", live});
  EXPECT_EQ(um.exit_code, 0) << um.Describe();
  // The daemon removes its temporary upper as it exits.
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Exists(live_dir) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(Exists(live_dir)) << "an unmounted temporary upper is removed by its daemon";
}

}  // namespace
}  // namespace imgfs::testing
