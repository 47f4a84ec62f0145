// imgfs tests — the end-to-end mount fixture (see e2e_fixture.h).
#include "tests/support/e2e_fixture.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "tests/support/mount_support.h"

namespace imgfs::testing {
namespace {

// How long TearDown's `imgfs umount` of a leftover mount may take before `umount -l`.
constexpr int kTearDownUmountTimeoutS = 30;

// The suite-shared registry (one suite runs at a time; gtest runs suites one after another).
std::unique_ptr<RegistryServer>& SharedRegistrySlot() {
  static std::unique_ptr<RegistryServer> registry;
  return registry;
}

struct MountInfo {
  std::string mountpoint;
  std::string fstype;
};

// The mounts of this namespace whose mountpoint is `dir` or below it, deepest first.
std::vector<MountInfo> MountsBelow(const std::string& dir) {
  std::vector<MountInfo> out;
  for (MountInfoEntry& e : ReadMountInfo()) {
    if (e.mountpoint != dir && e.mountpoint.rfind(dir + "/", 0) != 0) continue;
    out.push_back(MountInfo{std::move(e.mountpoint), std::move(e.fstype)});
  }
  std::sort(out.begin(), out.end(), [](const MountInfo& a, const MountInfo& b) {
    return a.mountpoint.size() > b.mountpoint.size();
  });
  return out;
}

}  // namespace

std::string FixturesDir() { return IMGFS_FIXTURES_DIR; }

std::string FixturePath(std::string_view name) { return FixturesDir() + "/" + std::string(name); }

void CheckMountPrerequisites() {
  ASSERT_EQ(::geteuid(), 0u) << "mount tests run as root";
  ASSERT_EQ(::access("/dev/fuse", R_OK | W_OK), 0) << "/dev/fuse is needed for mount tests";
  ASSERT_TRUE(std::filesystem::exists(FixturesDir())) << FixturesDir();
}

ProcessResult RunImgfs(const std::string& root, std::vector<std::string> args,
                       const std::vector<std::string>& env, std::string_view stdin_data,
                       int timeout_s) {
  args.insert(args.begin(), kImgfsBinary);
  std::vector<std::string> full_env = env;
  full_env.push_back("IMGFS_ROOT=" + root);
  return RunProcess(args, full_env, stdin_data, timeout_s);
}

pid_t MountDaemonPid(const std::string& root, const std::string& mountpoint) {
  const std::string dir = root + "/mounts";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".json") continue;
    auto j = nlohmann::json::parse(ReadAll(e.path()), nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.value("mountpoint", "") == mountpoint) return j.value("pid", 0);
  }
  return 0;
}

void ImgfsMountTest::TearDownTestSuite() { SharedRegistrySlot().reset(); }

void ImgfsMountTest::SetUp() {
  ASSERT_NO_FATAL_FAILURE(CheckMountPrerequisites());
  ASSERT_FALSE(dir_.path().empty()) << "no temporary directory";
  ASSERT_TRUE(MakeDirs(Mnt()).ok());
}

void ImgfsMountTest::TearDown() {
  if (dir_.path().empty()) return;
  for (const MountInfo& m : MountsBelow(dir_.path())) {
    if (m.fstype.rfind("fuse", 0) == 0) {
      RunImgfs(Root(), {"umount", m.mountpoint}, {}, {}, kTearDownUmountTimeoutS);
    }
    if (IsMounted(m.mountpoint)) RunProcess({"umount", "-l", m.mountpoint});
  }
}

std::string ImgfsMountTest::Mnt(int n) const {
  return n <= 1 ? dir_.Sub("mnt") : dir_.Sub("mnt" + std::to_string(n));
}

ProcessResult ImgfsMountTest::Imgfs(std::vector<std::string> args, int timeout_s) const {
  return RunImgfs(Root(), std::move(args), {}, {}, timeout_s);
}

void ImgfsMountTest::MountOrDie(std::vector<std::string> args, int n) {
  ASSERT_TRUE(MakeDirs(Mnt(n)).ok()) << Mnt(n);
  args.insert(args.begin(), "mount");
  args.push_back(Mnt(n));
  ProcessResult r = Imgfs(std::move(args));
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(IsMounted(Mnt(n))) << "mount returned but " << Mnt(n) << " is not mounted";
}

void ImgfsMountTest::Umount(int n) { Umount(Mnt(n)); }

void ImgfsMountTest::Umount(const std::string& mountpoint) {
  ProcessResult r = Imgfs({"umount", mountpoint});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(IsMounted(mountpoint));
}

pid_t ImgfsMountTest::DaemonPid(int n) const { return MountDaemonPid(Root(), Mnt(n)); }

pid_t ImgfsMountTest::ServingDaemon(pid_t keeper) const {
  ProcessResult r = Imgfs({"stats", "--format", "json", Mnt()}, 30);
  if (r.exit_code != 0) return 0;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return 0;
  pid_t pid = j.value("pid", 0);
  return pid != 0 && pid == ChildOf(keeper) ? pid : 0;
}

RegistryServer* ImgfsMountTest::SharedRegistry() {
  std::unique_ptr<RegistryServer>& slot = SharedRegistrySlot();
  if (slot == nullptr) {
    Result<std::unique_ptr<RegistryServer>> started = RegistryServer::Start();
    if (!started.has_value()) {
      ADD_FAILURE() << "shared registry: " << started.error().ToString();
      return nullptr;
    }
    slot = std::move(started).value();
  }
  return slot.get();
}

}  // namespace imgfs::testing
