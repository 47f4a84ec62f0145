// imgfs — end-to-end tests of mounts that outlive their daemon (fs/fuse/takeover.h): the real
// binary mounts an image read-only (a local image, and a lazy one from a real registry);
// reader threads stat, list and read every file and check each byte against the fixture's
// expected listing while the serving daemon is SIGKILLed again and again at random moments,
// or replaced by `imgfs mount --restart`. Each time a new daemon takes the mount over; the
// readers only pause. The same under a kernel overlay stacked on the mount (with a writer
// fsync'ing files into its upper) and inside an `imgfs run` container, whose lower mount is a
// kept `mount -f`. A restart runs the binary installed at the mount's path now. `imgfs umount`
// still ends everything. A mount whose daemon cannot come back (its store gone) answers EIO
// instead of hanging, and unmounts.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/run_support.h"
#include "tests/support/takeover_readers.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

// Kills of the serving daemon per test (each costs a daemon start, ~0.3 s of CPU on the
// 2-core CI machine).
constexpr int kKills = 12;
// Files the writer of an overlay test writes at most (20 KB each).
constexpr uint64_t kMaxWrittenFiles = 8000;

// What happens to the serving daemon: SIGKILL, or `imgfs mount --restart` (an upgrade).
enum class Takeover { kKill, kRestart };

// `kills` kills.
std::vector<Takeover> Kills(int kills) {
  return std::vector<Takeover>(static_cast<size_t>(kills), Takeover::kKill);
}

class TakeoverTest : public ImgfsMountTest {
 protected:
  std::function<void()> before_umount_;  // what KillWhileReading does before it unmounts

  // Readers over `top` (Mnt() when empty: else a directory showing the same tree, an overlay
  // over Mnt()) against `listing` until `stop`; replaces the daemon as `takeovers` say, each
  // time at a random moment once a new daemon serves. With `write_dir`, a writer creates
  // files there, each fsync'ed, and every one is checked at the end. Expects no failed
  // syscall, no wrong byte.
  void KillWhileReading(const std::map<std::string, TreeEntry>& listing,
                        const std::vector<Takeover>& takeovers = Kills(kKills),
                        std::string top = "", const std::string& write_dir = "") {
    if (top.empty()) top = Mnt();
    pid_t keeper = DaemonPid();  // the lease names the keeper
    ASSERT_GT(keeper, 0);
    pid_t daemon = 0;
    ASSERT_TRUE(WaitFor([&] { return (daemon = ServingDaemon(keeper)) != 0; }, 60));
    ASSERT_NE(daemon, keeper);

    const auto files = FilesOf(listing);
    ASSERT_GT(files.size(), 10u);
    // A descriptor held open across every kill, read again after each.
    const std::string held_path = Mnt() + "/data/random.bin";
    int held = open(held_path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(held, 0) << strerror(errno);
    const std::string held_sha = listing.at("/data/random.bin").content;

    // Slots 0-3: the readers; 4: the writer, when there is one.
    constexpr int kWriterSlot = 4;
    ReaderLog log(write_dir.empty() ? kWriterSlot : kWriterSlot + 1);
    std::atomic<bool> stop{false};
    std::vector<std::thread> readers;
    // Whole files, from the daemon each time.
    for (int t = 0; t < 2; ++t) {
      readers.emplace_back([&, t] { ReadFilesLoop(top, files, t, stop, &log); });
    }
    // stat of every path, and lookups of names that are nowhere.
    readers.emplace_back([&] { StatLoop(top, listing, 2, stop, &log); });
    // find: the whole tree listed.
    readers.emplace_back([&] { WalkLoop(top, "", 3, stop, &log); });

    // The writer: new files in a directory of the tree (each create looks the name up in the
    // lower tree, the daemon's), written and fsync'ed.
    std::vector<std::string> written;  // the writer's until it is joined
    auto content_of = [](const std::string& name) {
      std::string out;
      while (out.size() < 20000) out += name + ":" + std::to_string(out.size()) + "\n";
      return out;
    };
    if (!write_dir.empty()) {
      readers.emplace_back([&] {
        // Paced and bounded (at most ~160 MB in the test's 256 MiB tmpfs), so it writes
        // across every takeover and never fills the upper.
        for (uint64_t i = 0; !stop && i < kMaxWrittenFiles; ++i) {
          if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
          const std::string path = write_dir + "/written-" + std::to_string(i);
          const std::string data = content_of(path);
          int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
          if (fd < 0) {
            log.Fail("create " + path + ": " + strerror(errno));
            continue;
          }
          ssize_t n = write(fd, data.data(), data.size());
          if (n != static_cast<ssize_t>(data.size())) {
            log.Fail("write " + path + ": " + (n < 0 ? strerror(errno) : "short"));
          } else if (fsync(fd) != 0) {
            log.Fail("fsync " + path + ": " + strerror(errno));
          } else {
            written.push_back(path);
          }
          close(fd);
          log.Done(kWriterSlot);
        }
      });
    }

    std::mt19937 rng(std::random_device{}());
    const int count = static_cast<int>(takeovers.size());
    for (int kill_no = 0; kill_no < count && log.FailureCount() == 0; ++kill_no) {
      // A random moment: somewhere in the readers' stream of requests.
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
      const std::vector<uint64_t> before = log.Snapshot();
      if (takeovers[static_cast<size_t>(kill_no)] == Takeover::kKill) {
        ASSERT_EQ(kill(daemon, SIGKILL), 0) << "kill " << kill_no;
      } else {
        // Returns once the new daemon serves and the old one is gone.
        ProcessResult r = Imgfs({"mount", "--restart", Mnt()}, 300);
        EXPECT_EQ(r.exit_code, 0) << "restart " << kill_no << ": " << r.err;
        EXPECT_FALSE(ProcessRuns(daemon)) << "the old daemon still runs after restart " << kill_no;
      }
      pid_t next = 0;
      bool served = WaitFor(
          [&] {
            next = ServingDaemon(keeper);
            return next != 0 && next != daemon;
          },
          120);
      // Every reader goes on: a request the dead daemon had read and nobody answered would
      // keep its reader waiting (uninterruptibly) forever.
      bool moved_on = served && WaitFor([&] { return log.AllMovedOn(before); }, 120);
      if (!moved_on) {
        // Free the readers (the connection ends with its last holder) so the test can end.
        kill(keeper, SIGKILL);
        stop = true;
        for (std::thread& t : readers) t.join();
        close(held);
        FAIL() << (served ? "a reader is stuck" : "no daemon took the mount over") << " after kill "
               << kill_no;
      }
      daemon = next;
      std::string error;
      std::string data = ReadFromDaemon(held, &error);
      EXPECT_EQ(error, "") << "held descriptor after kill " << kill_no;
      EXPECT_EQ(registry::Digest::Sha256Of(data).hex(), held_sha) << "after kill " << kill_no;
    }
    stop = true;
    for (std::thread& t : readers) t.join();
    close(held);
    const std::vector<std::string> failures = log.Failures();
    EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
    EXPECT_GT(log.ops(), 0u);
    std::cout << "readers: " << log.ops() << " operations across " << count << " takeovers\n";
    if (!write_dir.empty()) {
      EXPECT_GT(written.size(), 0u);
      size_t wrong = 0;
      for (const std::string& path : written) {
        if (ReadAll(path) != content_of(path)) ++wrong;
      }
      EXPECT_EQ(wrong, 0u) << "of " << written.size() << " fsync'ed files";
      std::cout << "writer: " << written.size() << " files written, fsync'ed and kept\n";
    }

    // `imgfs umount` ends the daemon and the keeper.
    if (before_umount_) before_umount_();
    Umount();
    EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper) && !ProcessRuns(daemon); }, 30))
        << "keeper " << keeper << " or daemon " << daemon << " still runs";
  }
};

TEST_F(TakeoverTest, ReadersOfALocalImageNeverSeeAKilledDaemon) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  KillWhileReading(listing);
}

TEST_F(TakeoverTest, ReadersOfALazyImageNeverSeeAKilledDaemon) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-estargz"), "latest", "demo/takeover:1").ok());
  MountOrDie({"--lazy", reg->host_port() + "/demo/takeover:1"});
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  KillWhileReading(listing);
}

TEST_F(TakeoverTest, ReadersNeverSeeRestartsAndKillsInTurn) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  std::vector<Takeover> takeovers;
  for (int i = 0; i < 6; ++i) {
    takeovers.push_back(Takeover::kRestart);
    takeovers.push_back(Takeover::kKill);
  }
  KillWhileReading(listing, takeovers);
}

// The inode of the file a process runs (/proc/PID/exe followed), 0 if unknown.
ino_t ExeInode(pid_t pid) {
  struct stat st {};
  if (stat(("/proc/" + std::to_string(pid) + "/exe").c_str(), &st) != 0) return 0;
  return st.st_ino;
}

// Installs a different imgfs at `path` the way a package manager does: a new file renamed over
// the old one (the same program with bytes appended: another file, another inode).
void InstallNewBuild(const std::string& path) {
  const std::string tmp = path + ".new";
  std::filesystem::copy_file(kImgfsBinary, tmp, std::filesystem::copy_options::overwrite_existing);
  {
    std::ofstream out(tmp, std::ios::app | std::ios::binary);
    out << "another build";
  }
  std::filesystem::permissions(tmp, std::filesystem::perms::owner_all);
  ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0) << strerror(errno);
}

TEST_F(TakeoverTest, ARestartRunsTheBinaryInstalledNow) {
  // The mount runs from a copy of the binary, replaced by a new build before the restart.
  const std::string bin = Sub("bin/imgfs");
  std::filesystem::create_directories(Sub("bin"));
  std::filesystem::copy_file(kImgfsBinary, bin);
  std::filesystem::permissions(bin, std::filesystem::perms::owner_all);
  struct stat st {};
  ASSERT_EQ(stat(bin.c_str(), &st), 0);
  const ino_t old_build = st.st_ino;
  ProcessResult r = RunProcess({bin, "mount", "oci:" + FixturePath("tiny-gzip:latest"), Mnt()},
                               {"IMGFS_ROOT=" + Root()}, "", 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  pid_t keeper = DaemonPid();
  ASSERT_GT(keeper, 0);
  pid_t daemon = 0;
  ASSERT_TRUE(WaitFor([&] { return (daemon = ServingDaemon(keeper)) != 0; }, 60));
  EXPECT_EQ(ExeInode(daemon), old_build);

  ASSERT_NO_FATAL_FAILURE(InstallNewBuild(bin));
  ASSERT_EQ(stat(bin.c_str(), &st), 0);
  const ino_t new_build = st.st_ino;
  ASSERT_NE(new_build, old_build);
  r = RunProcess({bin, "mount", "--restart", Mnt()}, {"IMGFS_ROOT=" + Root()}, "", 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(ProcessRuns(daemon));
  pid_t restarted = 0;
  ASSERT_TRUE(WaitFor([&] { return (restarted = ServingDaemon(keeper)) != 0; }, 60));
  EXPECT_NE(restarted, daemon);
  EXPECT_EQ(ExeInode(restarted), new_build) << "the new daemon runs the new build";
  EXPECT_EQ(ExeInode(keeper), old_build) << "the keeper stays";
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(),
            listing.at("/data/random.bin").content);

  // A daemon replacing a killed one runs the installed binary too (one path for both).
  ASSERT_EQ(kill(restarted, SIGKILL), 0);
  pid_t revived = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        revived = ServingDaemon(keeper);
        return revived != 0 && revived != restarted;
      },
      120));
  EXPECT_EQ(ExeInode(revived), new_build);
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 30)) << "the keeper still runs";
}

// Unmounts (lazily) what a test mounted over its imgfs mount, also when the test fails early.
class ScopedMounts {
 public:
  ~ScopedMounts() {
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
  }
  void Add(const std::string& dir) { dirs_.push_back(dir); }
  void UnmountAll() {
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
      EXPECT_EQ(umount2(it->c_str(), 0), 0) << *it << ": " << strerror(errno);
    }
    dirs_.clear();
  }

 private:
  std::vector<std::string> dirs_;
};

TEST_F(TakeoverTest, AKernelOverlayOverAKeptMountNeverSeesAKilledDaemon) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  // overlay: lower = the imgfs mount, upper and work on a tmpfs.
  ScopedMounts mounts;
  const std::string tmp = Sub("ovl-tmpfs");
  const std::string merged = Sub("ovl");
  std::filesystem::create_directories(tmp);
  std::filesystem::create_directories(merged);
  ASSERT_EQ(mount("tmpfs", tmp.c_str(), "tmpfs", 0, "size=256m"), 0) << strerror(errno);
  mounts.Add(tmp);
  std::filesystem::create_directories(tmp + "/upper");
  std::filesystem::create_directories(tmp + "/work");
  const std::string options =
      "lowerdir=" + Mnt() + ",upperdir=" + tmp + "/upper,workdir=" + tmp + "/work";
  ASSERT_EQ(mount("overlay", merged.c_str(), "overlay", 0, options.c_str()), 0) << strerror(errno);
  mounts.Add(merged);
  before_umount_ = [&mounts] { mounts.UnmountAll(); };
  // Readers of the overlay; the writer's new files in /data, a directory of the lower tree.
  KillWhileReading(listing, Kills(20), merged, merged + "/data");
}

// `imgfs mount --rw` (the overlay driver: the kernel's overlayfs over a kept mount whose
// lower is detached): readers and a writer of the mount itself see no failure across 20 kills
// of its daemon and a `mount --restart`, and every fsync'ed file is intact.
TEST_F(TakeoverTest, AWritableOverlayDriverMountNeverSeesAKilledDaemon) {
  MountOrDie({"--rw", "--driver", "overlay", "oci:" + FixturePath("tiny-gzip:latest")});
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  std::vector<Takeover> takeovers = Kills(20);
  takeovers.insert(takeovers.begin() + 10, Takeover::kRestart);
  KillWhileReading(listing, takeovers, Mnt(), Mnt() + "/data");
}

// A container running over the kept lower mount of `imgfs run` (the default driver: a kernel
// overlay over a `mount -f`) reads files in a loop while that mount's daemon is killed.
TEST_F(TakeoverTest, AContainerKeepsRunningAcrossKillsOfItsLowerDaemon) {
  std::string a(300000, '\0');
  std::string b(70000, '\0');
  std::mt19937 rng(7);
  for (char& c : a) c = static_cast<char>(rng());
  for (char& c : b) c = static_cast<char>(rng());
  Result<TestLayer> layer =
      BusyboxLayer({"sh", "sha256sum", "test"}, {{"data", "", TestFile::Kind::kDir, 0755},
                                                 {"data/a", a, TestFile::Kind::kFile, 0644},
                                                 {"data/b", b, TestFile::Kind::kFile, 0644}});
  ASSERT_TRUE(layer.has_value()) << layer.error().ToString();
  ImageBuilder builder(Sub("runimg"));
  TestImageSpec spec;
  spec.layers = {*layer};
  spec.env = {"PATH=/bin"};
  spec.cmd = {"/bin/sh"};
  ASSERT_TRUE(builder.Add(spec, "loop").has_value());
  ProcessResult r = Imgfs({"pull", "oci:" + builder.dir() + ":loop"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string ctl = Sub("ctl");
  std::filesystem::create_directories(ctl);
  const std::string out = ctl + "/out";

  ProcessResult run;
  std::thread runner([&] {
    run = RunImgfs(Root(),
                   {"run", "-v", ctl + ":/ctl", "localhost/runimg:loop", "sh", "-c",
                    "while [ ! -e /ctl/stop ]; do sha256sum /data/a /data/b >> /ctl/out || exit 9; "
                    "done"},
                   {}, "", 600);
  });
  // The keeper: the pid of the run's mount lease (the run's lower mount, `mount -f`).
  pid_t keeper = 0;
  bool found = WaitFor(
      [&] {
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(Root() + "/mounts", ec)) {
          if (e.path().extension() != ".json") continue;
          auto j = nlohmann::json::parse(ReadAll(e.path()), nullptr, false);
          if (!j.is_discarded() && j.is_object()) keeper = j.value("pid", 0);
        }
        return keeper != 0 && ChildOf(keeper) != 0;
      },
      120);
  constexpr int kRunKills = 5;
  int kills = 0;
  for (; found && kills < kRunKills; ++kills) {
    // The container goes on: its output grows (read after the pages were dropped, so through
    // the daemon).
    std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
    const uintmax_t before = std::filesystem::exists(out) ? std::filesystem::file_size(out) : 0;
    if (!WaitFor(
            [&] {
              return std::filesystem::exists(out) && std::filesystem::file_size(out) > before;
            },
            120)) {
      ADD_FAILURE() << "the container's loop does not go on after kill " << kills;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
    const pid_t daemon = ChildOf(keeper);
    ASSERT_GT(daemon, 0);
    ASSERT_EQ(kill(daemon, SIGKILL), 0);
    if (!WaitFor([&] { return ChildOf(keeper) != 0 && ChildOf(keeper) != daemon; }, 120)) {
      ADD_FAILURE() << "no new daemon after kill " << kills;
      break;
    }
  }
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
  const uintmax_t before = std::filesystem::exists(out) ? std::filesystem::file_size(out) : 0;
  EXPECT_TRUE(WaitFor(
      [&] { return std::filesystem::exists(out) && std::filesystem::file_size(out) > before; },
      120));
  std::ofstream(ctl + "/stop") << "";
  runner.join();
  EXPECT_TRUE(found) << "no kept lower mount of the run";
  EXPECT_EQ(kills, kRunKills);
  EXPECT_EQ(run.exit_code, 0) << run.Describe();
  const std::string want = registry::Digest::Sha256Of(a).hex() + "  /data/a\n" +
                           registry::Digest::Sha256Of(b).hex() + "  /data/b\n";
  std::string text = ReadAll(out);
  ASSERT_FALSE(text.empty());
  size_t rounds = 0;
  for (size_t pos = 0; pos < text.size(); pos += want.size(), ++rounds) {
    ASSERT_EQ(text.compare(pos, want.size(), want), 0)
        << "round " << rounds << ": " << text.substr(pos, want.size());
  }
  std::cout << "container: " << rounds << " rounds of sha256sum across " << kills << " kills\n";
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 30)) << "the keeper still runs";
}

// `imgfs mount -f`: the foreground process is the keeper, the daemon its child; SIGTERM to
// it ends both and unmounts.
TEST_F(TakeoverTest, AForegroundMountIsKeptAndEndsOnSigterm) {
  BackgroundProcess fg(
      {kImgfsBinary, "mount", "-f", "oci:" + FixturePath("tiny-gzip:latest"), Mnt()},
      {"IMGFS_ROOT=" + Root()});
  ASSERT_TRUE(WaitFor([&] { return IsMounted(Mnt()); }, 120)) << fg.err();
  const pid_t keeper = fg.pid();
  pid_t daemon = 0;
  ASSERT_TRUE(WaitFor([&] { return (daemon = ServingDaemon(keeper)) != 0; }, 60)) << fg.err();
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  const std::string sha = listing.at("/data/random.bin").content;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(kill(daemon, SIGKILL), 0);
    pid_t next = 0;
    ASSERT_TRUE(
        WaitFor([&] { return (next = ServingDaemon(keeper)) != 0 && next != daemon; }, 120));
    daemon = next;
    std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
    EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), sha);
  }
  ProcessResult r = Imgfs({"mount", "--restart", Mnt()}, 300);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + "/data/random.bin")).hex(), sha);
  fg.Signal(SIGTERM);
  EXPECT_EQ(fg.Wait(60), 0) << fg.err();
  EXPECT_FALSE(IsMounted(Mnt()));
  EXPECT_NE(fg.err().find("a new daemon takes the mount over"), std::string::npos)
      << "the keeper logs on stderr: " << fg.err();
}

TEST_F(TakeoverTest, AMountWhoseDaemonCannotComeBackAnswersEioAndUnmounts) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  pid_t keeper = DaemonPid();
  ASSERT_GT(keeper, 0);
  pid_t daemon = 0;
  ASSERT_TRUE(WaitFor([&] { return (daemon = ChildOf(keeper)) != 0; }, 60));
  // The store loses the image: a new daemon cannot prepare it.
  ASSERT_TRUE(RemoveTree(Root() + "/blobs").ok());
  ASSERT_EQ(kill(daemon, SIGKILL), 0);
  // A read that reaches the daemon fails with EIO, never hangs (the test's timeout).
  int fd = open((Mnt() + "/data/random.bin").c_str(), O_RDONLY | O_CLOEXEC);
  int open_errno = fd < 0 ? errno : 0;
  std::string error;
  if (fd >= 0) {
    ReadFromDaemon(fd, &error);
    close(fd);
  }
  EXPECT_TRUE(open_errno == EIO || error == std::string("pread: ") + strerror(EIO))
      << "open: " << strerror(open_errno) << ", read: " << error;
  struct stat st {};
  EXPECT_NE(lstat((Mnt() + "/etc/missing").c_str(), &st), 0);
  EXPECT_EQ(errno, EIO);
  EXPECT_TRUE(ProcessRuns(keeper));
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 30)) << "the keeper still runs";
}

}  // namespace
}  // namespace imgfs::testing
