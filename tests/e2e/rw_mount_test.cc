// imgfs — end-to-end tests of writable mounts (`imgfs mount --rw [--upper DIR]`): real FUSE
// mounts made by the real binary, changed with real syscalls and shell tools, and compared
// with the kernel's overlayfs over `umoci unpack` of the same image (the oracle), with a plain
// directory (randomised operation sequences), and with themselves after a remount.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/run_support.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

const std::string kTiny = "oci:" + FixturePath("tiny-gzip:latest");

using Tree = std::map<std::string, TreeEntry>;

// Times set "now" by the operations differ between two trees by a few milliseconds: entries
// changed since `since` get mtime 0 on both sides (a difference remains if only one side was
// changed).
void ForgetRecentTimes(Tree* tree, time_t since) {
  for (auto& [path, e] : *tree) {
    if (e.mtime_sec >= since) {
      e.mtime_sec = 0;
      e.mtime_nsec = 0;
    }
  }
}

std::string FirstDiffs(const std::vector<std::string>& diffs) {
  std::string out;
  for (size_t i = 0; i < diffs.size() && i < 30; ++i) out += "\n  " + diffs[i];
  return out;
}

class RwMountTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ImgfsMountTest::SetUp();
    start_ = time(nullptr) - 1;
  }

  void MountRw(const std::string& upper, const std::string& image = kTiny) {
    std::vector<std::string> args = {"mount", "--rw", "--driver", "fuse"};
    if (!upper.empty()) {
      args.push_back("--upper");
      args.push_back(upper);
    }
    args.push_back(image);
    args.push_back(Mnt());
    ProcessResult r = Imgfs(args);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(IsMounted(Mnt()));
  }

  // `umoci unpack` of tiny-gzip: the lower of the kernel overlayfs and the seed of reference
  // directories.
  std::string Unpacked() {
    std::string rootfs = dir_.Sub("bundle/rootfs");
    if (std::filesystem::exists(rootfs)) return rootfs;
    ProcessResult r = RunProcess(
        {"umoci", "unpack", "--image", FixturePath("tiny-gzip:latest"), dir_.Sub("bundle")});
    EXPECT_EQ(r.exit_code, 0) << "umoci unpack: " << r.Describe();
    return rootfs;
  }

  // The kernel overlayfs of `upper` over the unpacked image at dir_/ovl. index=on keeps
  // hardlinks together across copy-up (what imgfs does); redirect_dir=off as in imgfs.
  std::string MountOverlay(const std::string& upper, const std::string& work) {
    std::string lower = Unpacked();
    std::string mnt = dir_.Sub("ovl");
    EXPECT_TRUE(MakeDirs(mnt).ok());
    EXPECT_TRUE(MakeDirs(upper).ok());
    EXPECT_TRUE(MakeDirs(work).ok());
    std::string opts = "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work +
                       ",index=on,redirect_dir=off,metacopy=off";
    ProcessResult r = RunProcess({"mount", "-t", "overlay", "overlay", "-o", opts, mnt});
    EXPECT_EQ(r.exit_code, 0) << "mount -t overlay: " << r.Describe();
    return mnt;
  }

  void UmountOverlay() {
    ProcessResult r = RunProcess({"umount", dir_.Sub("ovl")});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
  }

  Tree List(const std::string& root) {
    TreeOptions options;
    options.compare_root_mtime = false;
    std::string error;
    Tree tree = ListTree(root, options, &error);
    EXPECT_TRUE(error.empty()) << error;
    ForgetRecentTimes(&tree, start_);
    return tree;
  }

  std::vector<std::string> Compare(const Tree& actual, const Tree& expected) {
    TreeOptions options;
    options.compare_root_mtime = false;
    return CompareTrees(actual, expected, options);
  }

  time_t start_ = 0;
};

// Every operation of the list, as shell commands run in the root of both trees; each prints
// its exit status (and its error message, which names the same relative paths on both).
const char kScript[] = R"(
echo hello > newfile; echo "1 $?"
printf more >> etc/passwd; echo "2 $?"
truncate -s 10 data/random.bin; echo "3 $?"
rm etc/group; echo "4 $?"
rm -r etc/conf.d; echo "5 $?"
mkdir etc/conf.d; echo "6 $?"
echo x > etc/conf.d/again; echo "7 $?"
rmdir home; echo "8 $?"
mv data/layer3 data/L3; echo "9 $?"
mv opt/app opt/app2; echo "10 $?"
mv newfile etc/newfile2; echo "11 $?"
mkdir -p a/b/c && echo deep > a/b/c/f && mv a z; echo "12 $?"
ln etc/passwd passwd.link; echo "13 $?"
ln -s ../etc/passwd home/pw; echo "14 $?"
chmod 600 etc/os-release; echo "15 $?"
chmod 700 bin/sh; echo "16 $?"
chown 1000:1000 opt; echo "17 $?"
touch -d '2020-01-01 00:00:00' data/zeros.bin; echo "18 $?"
setfattr -n user.test -v 1 data/xattr.txt; echo "19 $?"
setfattr -x user.fixture.binary data/xattr.txt; echo "20 $?"
mknod dev/zero c 1 5; echo "21 $?"
mkfifo tmp/fifo; echo "22 $?"
sync etc/passwd; echo "23 $?"
rm dev/null; echo "24 $?"
rmdir root; echo "25 $?"
rm data/L3/hardlink-a; echo "26 $?"
rm bin/ls; echo "27 $?"
rmdir nothing 2>/dev/null; echo "28 $?"
mkdir etc 2>/dev/null; echo "29 $?"
ln etc etc2 2>/dev/null; echo "30 $?"
echo x > etc/motd 2>/dev/null; echo "31 $?"
mkdir root; echo "32 $?"
ls root; echo "33 $?"
touch -m -d '2021-02-03 04:05:06' usr/bin/setuid-tool; echo "34 $?"
chmod u-s usr/bin/setuid-tool; echo "35 $?"
mv etc/motd/README etc/README.moved; echo "36 $?"
rm -rf usr/share; echo "37 $?"
cat etc/passwd | wc -c; echo "38 $?"
ls data/L3; echo "39 $?"
ls etc/conf.d; echo "40 $?"
stat -f -c %S .; echo "41 $?"
)";

TEST_F(RwMountTest, SameOperationsGiveTheSameResultsAsKernelOverlayfs) {
  MountRw(dir_.Sub("upper"));
  std::string ovl = MountOverlay(dir_.Sub("ovl-upper"), dir_.Sub("ovl-work"));
  ProcessResult ours = RunProcess({"sh", "-c", std::string("cd ") + Mnt() + " && " + kScript});
  ProcessResult kernel = RunProcess({"sh", "-c", std::string("cd ") + ovl + " && " + kScript});
  EXPECT_EQ(ours.out, kernel.out);
  EXPECT_EQ(ours.err, kernel.err);
  EXPECT_NE(ours.out.find("\n8 1\n"), std::string::npos) << "rmdir of a non-empty dir fails";
  Tree a = List(Mnt());
  Tree b = List(ovl);
  ASSERT_GT(a.size(), 50u);
  std::vector<std::string> diffs = Compare(a, b);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:" << FirstDiffs(diffs);
  // rename(2) of a lower directory: imgfs copies it up (no redirects); overlayfs without
  // redirect_dir says EXDEV and leaves the copy to the caller (mv did it above).
  EXPECT_EQ(rename((Mnt() + "/usr").c_str(), (Mnt() + "/usr2").c_str()), 0) << strerror(errno);
  EXPECT_EQ(rename((ovl + "/usr").c_str(), (ovl + "/usr2").c_str()), -1);
  EXPECT_EQ(errno, EXDEV);
  UmountOverlay();
  Umount();
}

// Persistence: the upper written by imgfs shows the same tree after a remount, and under the
// kernel's overlayfs (the format contract with `imgfs commit` and `imgfs run`).
TEST_F(RwMountTest, UpperPersistsAcrossRemountAndWorksWithKernelOverlayfs) {
  std::string upper = dir_.Sub("upper");
  MountRw(upper);
  ProcessResult r = RunProcess({"sh", "-c", std::string("cd ") + Mnt() + " && " + kScript});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  Tree before = List(Mnt());
  // The lease names the upper, for `imgfs commit DIR`.
  bool lease_has_upper = false;
  for (const auto& e : std::filesystem::directory_iterator(Root() + "/mounts")) {
    auto j = nlohmann::json::parse(ReadAll(e.path()), nullptr, false);
    if (!j.is_discarded() && j.value("mountpoint", "") == Mnt()) {
      lease_has_upper = j.value("upper", "") == upper;
    }
  }
  EXPECT_TRUE(lease_has_upper);
  Umount();
  EXPECT_FALSE(std::filesystem::exists(dir_.Sub(".upper.imgfs-work")))
      << "the work directory is removed at unmount";

  MountRw(upper);
  std::vector<std::string> diffs = Compare(List(Mnt()), before);
  EXPECT_TRUE(diffs.empty()) << "after remount: " << diffs.size()
                             << " differences:" << FirstDiffs(diffs);
  Umount();

  std::string ovl = MountOverlay(upper, dir_.Sub("ovl-work"));
  diffs = Compare(List(ovl), before);
  EXPECT_TRUE(diffs.empty()) << "kernel overlayfs over the upper: " << diffs.size()
                             << " differences:" << FirstDiffs(diffs);
  UmountOverlay();
}

TEST_F(RwMountTest, DefaultUpperIsTemporary) {
  MountRw("");
  ASSERT_TRUE(WriteFileAtomic(Mnt() + "/etc/scratch", "x").ok());
  std::string containers = Root() + "/containers";
  std::vector<std::string> files = ListFilesRecursive(containers);
  bool found = false;
  for (const std::string& f : files) found = found || f.find("upper/etc/scratch") != f.npos;
  EXPECT_TRUE(found) << "the temporary upper lives in STORE/containers/mount-*/upper";
  Umount();
  EXPECT_TRUE(ListFilesRecursive(containers).empty()) << "and is removed at unmount";
  // mount(8)'s plain `rw` keeps a read-only mount (fstab "defaults,rw").
  ProcessResult r = Imgfs({"mount", "-o", "defaults,rw", kTiny, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(mkdir((Mnt() + "/x").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  Umount();
  // `-o upper=DIR` makes it writable.
  r = Imgfs({"mount", "-o", "rw,upper=" + dir_.Sub("up2"), kTiny, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(mkdir((Mnt() + "/x").c_str(), 0755), 0) << strerror(errno);
  Umount();
  struct stat st {};
  EXPECT_EQ(stat(dir_.Sub("up2/x").c_str(), &st), 0);
}

// The overlay driver (the default as root): the kernel's overlayfs at DIR over a read-only
// imgfs mount nobody else sees. A plain umount(8) of DIR ends the daemon and the keeper, and
// the temporary upper and the private lower go with them; with --upper, the upper stays and
// the overlay's work directory goes.
TEST_F(RwMountTest, OverlayDriverEndsWithAPlainUmount) {
  ProcessResult r = Imgfs({"mount", "--rw", kTiny, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string fstype;
  for (const MountInfoEntry& e : ReadMountInfo()) {
    if (e.mountpoint == Mnt()) fstype = e.fstype;
  }
  EXPECT_EQ(fstype, "overlay");
  ASSERT_TRUE(WriteFileAtomic(Mnt() + "/etc/scratch", "x").ok());
  EXPECT_EQ(ReadAll(Mnt() + "/etc/scratch"), "x");
  const pid_t keeper = DaemonPid();  // the lease names the keeper
  ASSERT_GT(keeper, 0);
  std::istringstream children(
      ReadAll("/proc/" + std::to_string(keeper) + "/task/" + std::to_string(keeper) + "/children"));
  pid_t daemon = 0;
  children >> daemon;
  ASSERT_GT(daemon, 0) << "the keeper's daemon";
  const std::string containers = Root() + "/containers";
  bool found = false;
  for (const std::string& f : ListFilesRecursive(containers)) {
    found = found || f.find("upper/etc/scratch") != f.npos;
  }
  EXPECT_TRUE(found) << "the temporary upper lives in STORE/containers/mount-*/upper";
  r = RunProcess({"umount", Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper) && !ProcessRuns(daemon); }, 60))
      << "keeper " << keeper << " or daemon " << daemon << " still runs";
  EXPECT_TRUE(WaitFor([&] { return ListFilesRecursive(containers).empty(); }, 60))
      << "the temporary upper is removed";
  EXPECT_FALSE(IsMounted(Mnt()));

  // With --upper: `imgfs umount` waits for the keeper; the upper is kept, the work directory
  // beside it is not.
  const std::string upper = dir_.Sub("upper");
  r = Imgfs({"mount", "--rw", "--upper", upper, kTiny, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_EQ(mkdir((Mnt() + "/made").c_str(), 0755), 0) << strerror(errno);
  Umount();
  struct stat st {};
  EXPECT_EQ(stat((upper + "/made").c_str(), &st), 0);
  EXPECT_NE(stat(dir_.Sub(".upper.imgfs-work").c_str(), &st), 0);
  EXPECT_TRUE(ListFilesRecursive(containers).empty());
}

// Changed paths are never served stale from the kernel's caches, also when the change comes
// through another name (a lower hardlink group copied up as one inode); `-f` (foreground, as
// `imgfs run` uses it) serves writable mounts too.
TEST_F(RwMountTest, ForegroundMountServesFreshAttributesAndData) {
  std::string upper = dir_.Sub("upper");
  BackgroundProcess fg(
      {kImgfsBinary, "mount", "-f", "--rw", "--driver", "fuse", "--upper", upper, kTiny, Mnt()},
      {"IMGFS_ROOT=" + Root()});
  WaitFor([&] { return IsMounted(Mnt()) || fg.Wait(0) >= 0; }, 60);
  ASSERT_TRUE(IsMounted(Mnt())) << "imgfs mount -f --rw did not mount: " << fg.err();
  // Fill the kernel's caches through one name of the busybox group, change it through another.
  struct stat before {};
  ASSERT_EQ(stat((Mnt() + "/bin/busybox").c_str(), &before), 0);
  std::string head = ReadAll(Mnt() + "/bin/busybox").substr(0, 4);
  int fd = open((Mnt() + "/bin/sh").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(pwrite(fd, "ABCD", 4, 0), 4);
  ASSERT_EQ(write(fd, "", 0), 0);
  close(fd);
  struct stat after {};
  ASSERT_EQ(stat((Mnt() + "/bin/busybox").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_NE(after.st_mtim.tv_sec, before.st_mtim.tv_sec) << "fresh attributes";
  EXPECT_EQ(ReadAll(Mnt() + "/bin/busybox").substr(0, 4), "ABCD")
      << "fresh data (was " << head << ")";
  // A file's size after an append, and after a truncate through another name.
  ASSERT_EQ(stat((Mnt() + "/etc/passwd").c_str(), &before), 0);
  ASSERT_EQ(link((Mnt() + "/etc/passwd").c_str(), (Mnt() + "/pw").c_str()), 0);
  ASSERT_EQ(truncate((Mnt() + "/pw").c_str(), 3), 0);
  ASSERT_EQ(stat((Mnt() + "/etc/passwd").c_str(), &after), 0);
  EXPECT_EQ(after.st_size, 3);
  EXPECT_EQ(ReadAll(Mnt() + "/etc/passwd").size(), 3u);
  ProcessResult r = Imgfs({"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(fg.Wait(60), 0) << fg.err();
}

// `imgfs mount -f --rw` on the overlay driver stays in the foreground until the mount ends;
// SIGTERM unmounts the overlay, the daemon and keeper end, and the foreground process exits 0
// having removed the temporary upper.
TEST_F(RwMountTest, ForegroundOverlayDriverMountEndsOnSigterm) {
  BackgroundProcess fg({kImgfsBinary, "mount", "-f", "--rw", "--driver", "overlay", kTiny, Mnt()},
                       {"IMGFS_ROOT=" + Root()});
  ASSERT_TRUE(WaitFor([&] { return IsMounted(Mnt()) || fg.Wait(0) >= 0; }, 60));
  ASSERT_EQ(fg.Wait(0), -1) << "imgfs mount -f --rw ended before it mounted: " << fg.err();
  ASSERT_TRUE(WriteFileAtomic(Mnt() + "/etc/scratch", "x").ok());
  const pid_t keeper = DaemonPid();
  ASSERT_GT(keeper, 0);
  EXPECT_NE(keeper, fg.pid()) << "the keeper is a child of the foreground process";
  fg.Signal(SIGTERM);
  EXPECT_EQ(fg.Wait(60), 0) << "after SIGTERM: " << fg.err();
  EXPECT_FALSE(IsMounted(Mnt()));
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 60)) << "the keeper still runs";
  EXPECT_TRUE(ListFilesRecursive(Root() + "/containers").empty());
}

// The image's own shell changes its root through the mount; an unprivileged caller (with
// allow_other) creates files it owns and is refused what the image's modes refuse.
TEST_F(RwMountTest, ChrootShellAndUnprivilegedCaller) {
  std::string upper = dir_.Sub("upper");
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);  // the caller must reach the mountpoint
  ProcessResult r = Imgfs(
      {"mount", "--rw", "--driver", "fuse", "--upper", upper, "-o", "allow_other", kTiny, Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = RunProcess({"chroot", Mnt(), "/bin/sh", "-c",
                  "echo hi > /tmp/x && cat /tmp/x && mkdir /root/d && ls /root && rm /etc/passwd "
                  "&& ls /etc && mv /data /data2 && ls /data2/deep"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "hi\nd\nconf.d\ngroup\nmotd\nos-release\na\n");
  r = RunProcess({"setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c",
                  "cd " + Mnt() +
                      " && echo mine > tmp/user.txt && { echo no > etc/os-release; } 2>/dev/null"
                      " || echo refused; mkdir root/x 2>/dev/null || echo refused;"
                      " wc -c < home/user/.profile"});
  EXPECT_EQ(r.out, "refused\nrefused\n16\n") << r.Describe();
  struct stat st {};
  ASSERT_EQ(lstat((upper + "/tmp/user.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  ASSERT_EQ(lstat((Mnt() + "/tmp/user.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_NE(lstat((upper + "/etc/os-release").c_str(), &st), 0) << "a refused write copies nothing";
  Umount();
}

// Random operations on the mount and on a plain directory that starts as a copy of the
// image: same results (errno) and, after each batch, the same tree.
class RandomOps {
 public:
  RandomOps(std::string a, std::string b, uint32_t seed) : a_(std::move(a)), b_(std::move(b)) {
    rng_.seed(seed);
  }

  void AddPath(const std::string& p) { paths_.push_back(p); }

  // One random operation on both trees; "" when both agree, else what differed.
  std::string Step(int n) {
    std::string p = Pick();
    std::string q = Pick();
    int op = static_cast<int>(rng_() % 12);
    std::string what = std::to_string(n) + ": ";
    int ra = 0, rb = 0;
    switch (op) {
      case 0:
      case 1: {
        if (!Writable(p)) return "";
        int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK;
        if (rng_() % 3 == 0) flags |= O_TRUNC;
        if (rng_() % 4 == 0) flags |= O_APPEND;
        std::string data(1 + rng_() % 5000, static_cast<char>('a' + rng_() % 26));
        off_t off = static_cast<off_t>(rng_() % 4096);
        what += "write " + p;
        ra = WriteFile(a_ + "/" + p, flags, data, off);
        rb = WriteFile(b_ + "/" + p, flags, data, off);
        break;
      }
      case 2:
        what += "unlink " + p;
        ra = Sys(unlink((a_ + "/" + p).c_str()));
        rb = Sys(unlink((b_ + "/" + p).c_str()));
        break;
      case 3:
        what += "rmdir " + p;
        ra = Sys(rmdir((a_ + "/" + p).c_str()));
        rb = Sys(rmdir((b_ + "/" + p).c_str()));
        break;
      case 4:
        what += "mkdir " + p;
        ra = Sys(mkdir((a_ + "/" + p).c_str(), 0750));
        rb = Sys(mkdir((b_ + "/" + p).c_str(), 0750));
        break;
      case 5:
      case 6:
        what += "rename " + p + " " + q;
        ra = Sys(rename((a_ + "/" + p).c_str(), (a_ + "/" + q).c_str()));
        rb = Sys(rename((b_ + "/" + p).c_str(), (b_ + "/" + q).c_str()));
        break;
      case 7: {
        struct stat st {};
        if (lstat((b_ + "/" + p).c_str(), &st) != 0 || S_ISLNK(st.st_mode)) return "";
        mode_t mode = static_cast<mode_t>(rng_() % 01000) | 0400;
        what += "chmod " + p;
        ra = Sys(chmod((a_ + "/" + p).c_str(), mode));
        rb = Sys(chmod((b_ + "/" + p).c_str(), mode));
        break;
      }
      case 8:
        what += "symlink " + p;
        ra = Sys(symlink("nowhere", (a_ + "/" + p).c_str()));
        rb = Sys(symlink("nowhere", (b_ + "/" + p).c_str()));
        break;
      case 9:
        what += "link " + p + " " + q;
        ra = Sys(link((a_ + "/" + p).c_str(), (a_ + "/" + q).c_str()));
        rb = Sys(link((b_ + "/" + p).c_str(), (b_ + "/" + q).c_str()));
        break;
      case 10: {
        if (!Writable(p)) return "";
        off_t size = static_cast<off_t>(rng_() % 70000);
        what += "truncate " + p;
        ra = Truncate(a_ + "/" + p, size);
        rb = Truncate(b_ + "/" + p, size);
        break;
      }
      default: {
        struct stat st {};
        if (lstat((b_ + "/" + p).c_str(), &st) != 0 ||
            !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
          return "";
        }
        std::string v = std::to_string(rng_() % 1000);
        what += "setxattr " + p;
        ra = Sys(lsetxattr((a_ + "/" + p).c_str(), "user.r", v.data(), v.size(), 0));
        rb = Sys(lsetxattr((b_ + "/" + p).c_str(), "user.r", v.data(), v.size(), 0));
        break;
      }
    }
    if (ra != rb) {
      return what + ": mount says " + strerror(ra) + ", reference says " + strerror(rb);
    }
    return "";
  }

 private:
  static int Sys(int rc) { return rc == 0 ? 0 : errno; }

  // Write only where both trees can: regular files, directories (EISDIR) or new names
  // (device nodes open differently on a nodev mount; FIFOs never block with O_NONBLOCK).
  bool Writable(const std::string& p) {
    struct stat st {};
    if (lstat((b_ + "/" + p).c_str(), &st) != 0) return true;
    return S_ISREG(st.st_mode) || S_ISDIR(st.st_mode);
  }

  static int Truncate(const std::string& path, off_t size) {
    int fd = open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return errno;
    int err = ftruncate(fd, size) == 0 ? 0 : errno;
    close(fd);
    return err;
  }

  static int WriteFile(const std::string& path, int flags, const std::string& data, off_t off) {
    int fd = open(path.c_str(), flags, 0640);
    if (fd < 0) return errno;
    ssize_t n = (flags & O_APPEND) != 0 ? write(fd, data.data(), data.size())
                                        : pwrite(fd, data.data(), data.size(), off);
    int err = n < 0 ? errno : 0;
    close(fd);
    return err;
  }

  std::string Pick() {
    // Mostly existing names, sometimes a new name in an existing directory.
    std::string p = paths_[rng_() % paths_.size()];
    if (rng_() % 4 == 0) {
      size_t slash = p.rfind('/');
      std::string dir = slash == std::string::npos ? "" : p.substr(0, slash + 1);
      p = dir + "n" + std::to_string(rng_() % 6);
      paths_.push_back(p);
    }
    return p;
  }

  std::string a_, b_;
  std::mt19937 rng_;
  std::vector<std::string> paths_;
};

TEST_F(RwMountTest, RandomOperationsMatchAPlainDirectory) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::string upper = dir_.Sub("upper-" + std::to_string(seed));
    std::string ref = dir_.Sub("ref-" + std::to_string(seed));
    ProcessResult cp = RunProcess({"cp", "-a", Unpacked(), ref});
    ASSERT_EQ(cp.exit_code, 0) << cp.Describe();
    MountRw(upper);
    RandomOps ops(Mnt(), ref, seed);
    for (const auto& [path, e] : List(ref)) {
      if (path != "/") ops.AddPath(path.substr(1));
    }
    int n = 0;
    for (int batch = 0; batch < 4; ++batch) {
      for (int i = 0; i < 30; ++i) {
        std::string diff = ops.Step(n++);
        ASSERT_TRUE(diff.empty()) << diff;
      }
      std::vector<std::string> diffs = Compare(List(Mnt()), List(ref));
      ASSERT_TRUE(diffs.empty()) << "after " << n << " operations: " << diffs.size()
                                 << " differences:" << FirstDiffs(diffs);
      if (batch == 1) {  // halfway: the upper alone carries the state over a remount
        Umount();
        MountRw(upper);
      }
    }
    Umount();
  }
}

TEST_F(RwMountTest, FullUpperGivesEnospcAndNoPartialFile) {
  std::string small = dir_.Sub("tmpfs");
  ASSERT_TRUE(MakeDirs(small).ok());
  ProcessResult m = RunProcess({"mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small});
  ASSERT_EQ(m.exit_code, 0) << m.Describe();
  MountRw(small + "/upper");
  // Copy-up of a 1.5 MB file cannot fit: ENOSPC, and the file stays the lower one.
  int fd = open((Mnt() + "/data/random.bin").c_str(), O_WRONLY);
  int err = errno;
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(err, ENOSPC);
  if (fd >= 0) close(fd);
  struct stat st {};
  EXPECT_NE(lstat((small + "/upper/data/random.bin").c_str(), &st), 0);
  EXPECT_EQ(ReadAll(Mnt() + "/data/random.bin").size(), 1576960u);
  // Nothing but the mount's journal and the shared whiteout every whiteout links to.
  EXPECT_EQ(ListFilesRecursive(small + "/.upper.imgfs-work"),
            (std::vector<std::string>{"journal", "whiteout"}));
  // Writing a new file until the upper is full.
  fd = open((Mnt() + "/big").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::string chunk(64 * 1024, 'x');
  int write_err = 0;
  for (int i = 0; i < 64 && write_err == 0; ++i) {
    if (write(fd, chunk.data(), chunk.size()) < 0) write_err = errno;
  }
  close(fd);
  EXPECT_EQ(write_err, ENOSPC);
  struct statvfs vfs {};
  ASSERT_EQ(statvfs(Mnt().c_str(), &vfs), 0);
  EXPECT_EQ(vfs.f_blocks * vfs.f_frsize, 1024u * 1024u) << "statfs is the upper's";
  Umount();
  RunProcess({"umount", small});
}

TEST_F(RwMountTest, KilledDaemonDuringCopyUpLeavesNoPartialFile) {
  // An image with one big file: copy-up takes long enough to be interrupted.
  std::string big;
  big.reserve(24 << 20);
  for (uint32_t i = 0; big.size() < (24u << 20); ++i) big += std::to_string(i * 2654435761u) + "\n";
  big.resize(24 << 20);
  ImageBuilder builder(dir_.Sub("layout"));
  TestImageSpec spec = SimpleImage({{"big.bin", big}, {"small.txt", "small\n"}});
  ASSERT_TRUE(builder.Add(spec, "big").has_value());
  std::string image = "oci:" + dir_.Sub("layout") + ":big";
  std::string upper = dir_.Sub("upper");
  std::string work = dir_.Sub(".upper.imgfs-work");
  bool interrupted = false;
  for (int delay_ms : {40, 120, 300, 600}) {
    ProcessResult r = Imgfs({"mount", "--rw", "--driver", "fuse", "--upper", upper, image, Mnt()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    const pid_t keeper = DaemonPid();  // the mount is kept: the lease names the keeper
    ASSERT_GT(keeper, 0);
    pid_t daemon = 0;
    ASSERT_TRUE(WaitFor([&] { return (daemon = ChildOf(keeper)) != 0; }, 60));
    std::atomic<int> open_errno{0};
    std::thread writer([&] {
      int fd = open((Mnt() + "/big.bin").c_str(), O_WRONLY);
      open_errno = fd < 0 ? errno : 0;
      if (fd >= 0) close(fd);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    bool copying = false;
    for (const std::string& name : ListFilesRecursive(work)) copying |= name.rfind("tmp-", 0) == 0;
    kill(daemon, SIGKILL);
    writer.join();
    // The open the dead daemon never answered is sent again to the next one, which copies
    // the file up whole.
    EXPECT_EQ(open_errno.load(), 0) << strerror(open_errno.load());
    interrupted = interrupted || copying;
    // Never a partial file in the upper: a complete copy.
    struct stat st {};
    ASSERT_EQ(lstat((upper + "/big.bin").c_str(), &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(big.size()));
    EXPECT_TRUE(ReadAll(upper + "/big.bin") == big);
    EXPECT_EQ(ReadAll(Mnt() + "/small.txt"), "small\n");
    Umount();
    EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 60));
    if (interrupted) break;
    ASSERT_TRUE(RemoveTree(upper).ok());  // copy up again in the next round
  }
  EXPECT_TRUE(interrupted) << "no attempt killed the daemon in the middle of the copy-up";
}

}  // namespace
}  // namespace imgfs::testing
