// imgfs end-to-end tests — imgfs without root: an ordinary user pulls into a store under their
// home, lists images, mounts (pulled and lazy) through fusermount3, reads the image as it is
// stored, asks a lazy mount for its stats and unmounts; and the errors that say what to do
// when the host lacks something (an unusable /dev/fuse, allow_other without
// user_allow_other, unmounting what is not mounted).
//
// The test process is root; every imgfs command runs as `nobody` with a private HOME below
// the test's directory and a clean environment (tests/support/unprivileged.h). Where
// /dev/fuse is root-only, a DevFuseMode guard opens it for the test and puts its mode back in
// TearDown (and in its destructor, should the test end early).
//
// `imgfs run` without root (RootlessRunTest): the user gets a subordinate id range in
// /etc/subuid and /etc/subgid for the test (a SubidFiles guard puts both files back exactly as
// they were, or removes them if they were absent), and runs commands of the fixture image
// `tiny` (busybox) as root of a user namespace: id 0, files it writes owned by 0 inside,
// chown to another id working (what apt-get needs), the exit status passed through, nothing
// left mounted; and the error that says how to add a missing range.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "fs/fuse/mount_access.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/mount_support.h"
#include "tests/support/run_support.h"
#include "tests/support/tree_compare.h"
#include "tests/support/unprivileged.h"

namespace imgfs::testing {
namespace {

// The mount at `dir`, when it is a mount point.
std::optional<MountInfoEntry> MountAt(const std::string& dir) {
  for (MountInfoEntry& e : ReadMountInfo()) {
    if (e.mountpoint == dir) return std::move(e);
  }
  return std::nullopt;
}

class RootlessTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    Result<UnprivilegedUser> user = TestUser();
    ASSERT_TRUE(user.has_value()) << user.error().ToString();
    user_ = *user;
    // The user reaches the test's directory and owns its home and mountpoints.
    ASSERT_TRUE(GiveTo(dir_.path(), user_).ok());
    ASSERT_TRUE(MakeDirs(Home(), 0700).ok());
    ASSERT_TRUE(GiveTo(Home(), user_).ok());
    ASSERT_TRUE(GiveTo(Mnt(), user_).ok());
    // The binary under test, or a copy of it when the build tree is closed to the user (a
    // checkout under /root).
    binary_ = kImgfsBinary;
    Result<std::string> can_run = CallAsUser(
        user_, [&] { return std::string(access(binary_.c_str(), X_OK) == 0 ? "y" : "n"); });
    ASSERT_TRUE(can_run.has_value()) << can_run.error().ToString();
    if (*can_run != "y") {
      binary_ = Sub("imgfs");
      std::error_code ec;
      std::filesystem::copy_file(kImgfsBinary, binary_, ec);
      ASSERT_FALSE(ec) << ec.message();
      ASSERT_EQ(chmod(binary_.c_str(), 0755), 0);
    }
  }

  void TearDown() override {
    ImgfsMountTest::TearDown();  // unmounts leftovers (as root)
    fuse_mode_.reset();          // /dev/fuse gets its mode back even when the test failed
  }

  // Opens /dev/fuse to every user for the rest of the test.
  void OpenDevFuse() {
    fuse_mode_.emplace(0666);
    ASSERT_TRUE(fuse_mode_->ok()) << fuse_mode_->status().ToString();
  }

  std::string Home() const { return Sub("home"); }
  std::string UserStore() const { return Home() + "/.local/share/imgfs"; }

  // `imgfs ARGS...` as the user, with HOME and `env` only.
  ProcessResult UserImgfs(std::vector<std::string> args, std::vector<std::string> env = {}) {
    args.insert(args.begin(), binary_);
    env.push_back("HOME=" + Home());
    return RunAsUser(user_, args, env);
  }

  // Mountpoint n, made and given to the user.
  std::string UserMnt(int n) {
    std::string dir = Mnt(n);
    EXPECT_TRUE(MakeDirs(dir).ok());
    EXPECT_TRUE(GiveTo(dir, user_).ok());
    return dir;
  }

  // The mount at `dir` listed by the user, in the list-tree.py format.
  std::map<std::string, TreeEntry> ListAsUser(const std::string& dir, std::string* error) {
    Result<std::string> text = CallAsUser(user_, [&] {
      std::string list_error;
      std::map<std::string, TreeEntry> tree = ListTree(dir, TreeOptions{}, &list_error);
      if (!list_error.empty()) return "ERROR " + list_error;
      std::string out;
      for (const auto& [path, entry] : tree) out += entry.Line(path) + "\n";
      return out;
    });
    if (!text.has_value()) {
      *error = text.error().ToString();
      return {};
    }
    if (text->rfind("ERROR ", 0) == 0) {
      *error = *text;
      return {};
    }
    return ParseListing(*text);
  }

  std::string Push(const std::string& fixture, const std::string& name) {
    RegistryServer* reg = SharedRegistry();
    if (reg == nullptr) return "";
    Status pushed = reg->PushOciLayout(FixturePath(fixture), "latest", name);
    EXPECT_TRUE(pushed.ok()) << pushed.ToString();
    return reg->host_port() + "/" + name;
  }

  UnprivilegedUser user_;
  std::string binary_;
  std::optional<DevFuseMode> fuse_mode_;
};

TEST_F(RootlessTest, PullImagesMountReadAndUmountAsAUser) {
  const std::string ref = Push("tiny-gzip", "rootless/gzip:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());

  ProcessResult pulled = UserImgfs({"pull", ref});
  ASSERT_EQ(pulled.exit_code, 0) << pulled.Describe();
  struct stat store {};
  ASSERT_EQ(stat(UserStore().c_str(), &store), 0) << "the store goes under ~/.local/share";
  EXPECT_EQ(store.st_uid, user_.uid);
  EXPECT_EQ(store.st_mode & 07777, 0700u);
  ProcessResult images = UserImgfs({"images"});
  ASSERT_EQ(images.exit_code, 0) << images.Describe();
  EXPECT_NE(images.out.find("rootless/gzip"), std::string::npos) << images.out;

  ProcessResult mounted = UserImgfs({"mount", ref, Mnt()});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
  const std::optional<MountInfoEntry> info = MountAt(Mnt());
  ASSERT_TRUE(info.has_value()) << Mnt() << " is not mounted";
  EXPECT_EQ(info->fstype, "fuse.imgfs");
  const std::string& options = info->super_options;
  EXPECT_NE(options.find("user_id=" + std::to_string(user_.uid)), std::string::npos) << options;
  // A private mount: no default_permissions, so its owner reads the root-only files too.
  EXPECT_EQ(options.find("default_permissions"), std::string::npos) << options;
  EXPECT_EQ(options.find("allow_other"), std::string::npos) << options;

  // The user sees the image as stored: owners 0:0, modes, content, root-only files readable.
  std::string error;
  auto actual = ListAsUser(Mnt(), &error);
  ASSERT_TRUE(error.empty()) << error;
  auto expected = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(expected.size(), 50u);
  std::vector<std::string> diffs = CompareWithListing(actual, expected, TreeOptions{});
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  ASSERT_TRUE(actual.count("/data/changeme.txt") > 0);
  EXPECT_EQ(actual["/data/changeme.txt"].mode, 0600u);
  EXPECT_EQ(actual["/data/changeme.txt"].uid, 0u);

  // No allow_other: the kernel keeps everyone else out, root included.
  struct stat st {};
  EXPECT_NE(stat((Mnt() + "/bin").c_str(), &st), 0);
  EXPECT_EQ(errno, EACCES);

  ProcessResult unmounted = UserImgfs({"umount", Mnt()});
  ASSERT_EQ(unmounted.exit_code, 0) << unmounted.Describe();
  EXPECT_FALSE(IsMounted(Mnt()));
  // `umount` waited for the daemon: its lease is gone.
  EXPECT_EQ(MountDaemonPid(UserStore(), Mnt()), 0);
  EXPECT_TRUE(ListFilesRecursive(UserStore() + "/mounts").empty());
}

TEST_F(RootlessTest, LazyMountServesStatsThroughItsControlSocket) {
  const std::string ref = Push("tiny-estargz", "rootless/estargz:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());

  const std::string mnt = UserMnt(2);
  ProcessResult mounted = UserImgfs({"mount", "--lazy", ref, mnt});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
  ASSERT_TRUE(IsMounted(mnt));
  Result<std::string> busybox = CallAsUser(user_, [&] {
    std::string list_error;
    auto tree = ListTree(mnt + "/bin", TreeOptions{}, &list_error);
    auto it = tree.find("/busybox");
    return it == tree.end() ? "ERROR " + list_error : it->second.content;
  });
  ASSERT_TRUE(busybox.has_value()) << busybox.error().ToString();
  EXPECT_EQ(*busybox, "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6");

  ProcessResult stats = UserImgfs({"stats", mnt});
  ASSERT_EQ(stats.exit_code, 0) << stats.Describe();
  EXPECT_NE(stats.out.find("rootless/estargz:1"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("Fetched"), std::string::npos) << stats.out;

  ProcessResult unmounted = UserImgfs({"umount", mnt});
  ASSERT_EQ(unmounted.exit_code, 0) << unmounted.Describe();
  EXPECT_FALSE(IsMounted(mnt));
}

// Names in `dir` (sorted, without . and ..), or "ERROR …".
std::string NamesIn(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(e.path().filename());
  }
  if (ec) return "ERROR " + ec.message();
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& n : names) out += n + " ";
  return out;
}

std::string XattrOf(const std::string& path, const char* name) {
  char buf[64];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof(buf));
  return n < 0 ? "<none>" : std::string(buf, static_cast<size_t>(n));
}

// A copy-on-write mount by a user: trusted.* xattrs are refused, so the directory made over
// a deleted one is marked opaque with user.overlay.opaque; a remount of the upper and a commit
// read it back.
TEST_F(RootlessTest, WritableMountMarksOpaqueDirectoriesWithUserXattrs) {
  const std::string ref = Push("tiny-gzip", "rootless/rw:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());
  const std::string upper = Home() + "/upper";

  ProcessResult mounted = UserImgfs({"mount", "--rw", "--upper", upper, ref, Mnt()});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
  const std::string m = Mnt();
  Result<std::string> changed = CallAsUser(user_, [&] {
    std::error_code ec;
    std::ofstream(m + "/new.txt") << "hi";
    std::filesystem::remove(m + "/etc/passwd", ec);
    if (ec) return "ERROR rm passwd: " + ec.message();
    std::filesystem::remove_all(m + "/etc/conf.d", ec);
    if (ec) return "ERROR rm -r conf.d: " + ec.message();
    if (::mkdir((m + "/etc/conf.d").c_str(), 0755) != 0) {
      return "ERROR mkdir conf.d: " + std::string(std::strerror(errno));
    }
    std::ofstream(m + "/etc/conf.d/z") << "z";
    // A root-only file of the image: its owner (the user) may change it in a private mount.
    std::ofstream(m + "/data/changeme.txt", std::ios::app) << "more";
    return NamesIn(m + "/etc/conf.d") + "| " + ReadAll(m + "/data/changeme.txt");
  });
  ASSERT_TRUE(changed.has_value()) << changed.error().ToString();
  EXPECT_EQ(changed->substr(0, 4), "z | ") << *changed;
  EXPECT_EQ(changed->substr(changed->size() - 4), "more") << *changed;
  ProcessResult unmounted = UserImgfs({"umount", Mnt()});
  ASSERT_EQ(unmounted.exit_code, 0) << unmounted.Describe();

  // The upper as an unprivileged overlayfs upper looks: a 0/0 whiteout, userxattr opaque.
  struct stat wh {};
  ASSERT_EQ(lstat((upper + "/etc/passwd").c_str(), &wh), 0);
  EXPECT_TRUE(S_ISCHR(wh.st_mode) && wh.st_rdev == makedev(0, 0));
  EXPECT_EQ(XattrOf(upper + "/etc/conf.d", "user.overlay.opaque"), "y");
  EXPECT_EQ(XattrOf(upper + "/etc/conf.d", "trusted.overlay.opaque"), "<none>");

  // Mounted again over the same upper: the lower conf.d stays hidden.
  ProcessResult again = UserImgfs({"mount", "--rw", "--upper", upper, ref, Mnt()});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  Result<std::string> seen = CallAsUser(user_, [&] {
    return NamesIn(m + "/etc/conf.d") + "| " + ReadAll(m + "/new.txt") + " | " +
           std::to_string(std::filesystem::exists(m + "/etc/passwd"));
  });
  ASSERT_TRUE(seen.has_value()) << seen.error().ToString();
  EXPECT_EQ(*seen, "z | hi | 0");

  // The commit of the mount turns the marker into an opaque whiteout.
  ProcessResult committed = UserImgfs({"commit", Mnt(), "rootless/committed:1"});
  ASSERT_EQ(committed.exit_code, 0) << committed.Describe();
  ProcessResult unmounted_again = UserImgfs({"umount", Mnt()});
  ASSERT_EQ(unmounted_again.exit_code, 0) << unmounted_again.Describe();
  const std::string mnt2 = UserMnt(2);
  ProcessResult image = UserImgfs({"mount", "rootless/committed:1", mnt2});
  ASSERT_EQ(image.exit_code, 0) << image.Describe();
  Result<std::string> committed_tree = CallAsUser(
      user_, [&] { return NamesIn(mnt2 + "/etc/conf.d") + "| " + ReadAll(mnt2 + "/new.txt"); });
  ASSERT_TRUE(committed_tree.has_value()) << committed_tree.error().ToString();
  EXPECT_EQ(*committed_tree, "z | hi");
  ProcessResult unmounted_image = UserImgfs({"umount", mnt2});
  EXPECT_EQ(unmounted_image.exit_code, 0) << unmounted_image.Describe();
}

// A user's copy-on-write mount (the fuse driver, the default without root) is kept: its
// daemon killed three times, each time the next one takes over, and every file the user
// wrote and fsync'ed before a kill is there after it; the temporary upper goes at umount.
TEST_F(RootlessTest, AWritableMountOutlivesKilledDaemons) {
  const std::string ref = Push("tiny-gzip", "rootless/rwkill:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());
  ProcessResult mounted = UserImgfs({"mount", "--rw", ref, Mnt()});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
  const pid_t keeper = MountDaemonPid(UserStore(), Mnt());  // the lease names the keeper
  ASSERT_GT(keeper, 0);
  const std::string m = Mnt();
  std::string want;
  for (int round = 0; round < 3; ++round) {
    pid_t daemon = 0;
    ASSERT_TRUE(WaitFor([&] { return (daemon = ChildOf(keeper)) != 0; }, 60)) << round;
    const std::string name = m + "/etc/round-" + std::to_string(round);
    Result<std::string> wrote = CallAsUser(user_, [&] {
      const std::string text = "round " + std::to_string(round) + "\n";
      int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) return "ERROR open: " + std::string(std::strerror(errno));
      bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                ::fsync(fd) == 0;
      ::close(fd);
      return ok ? std::string("ok") : "ERROR write: " + std::string(std::strerror(errno));
    });
    ASSERT_TRUE(wrote.has_value()) << wrote.error().ToString();
    ASSERT_EQ(*wrote, "ok") << round;
    want += "round " + std::to_string(round) + "\n";
    ASSERT_EQ(::kill(daemon, SIGKILL), 0);
    ASSERT_TRUE(WaitFor([&] { return ChildOf(keeper) != 0 && ChildOf(keeper) != daemon; }, 120))
        << "no daemon took the mount over after kill " << round;
  }
  Result<std::string> seen = CallAsUser(user_, [&] {
    return ReadAll(m + "/etc/round-0") + ReadAll(m + "/etc/round-1") + ReadAll(m + "/etc/round-2");
  });
  ASSERT_TRUE(seen.has_value()) << seen.error().ToString();
  EXPECT_EQ(*seen, want);
  ProcessResult unmounted = UserImgfs({"umount", Mnt()});
  ASSERT_EQ(unmounted.exit_code, 0) << unmounted.Describe();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 60)) << "the keeper still runs";
  EXPECT_TRUE(ListFilesRecursive(UserStore() + "/containers").empty())
      << "the temporary upper goes with the mount";
}

TEST_F(RootlessTest, StoreFollowsXdgDataHome) {
  const std::string ref = Push("tiny-gzip", "rootless/xdg:1");
  ASSERT_FALSE(ref.empty());
  const std::string data_home = Sub("data");
  ASSERT_TRUE(MakeDirs(data_home, 0700).ok());
  ASSERT_TRUE(GiveTo(data_home, user_).ok());

  ProcessResult pulled = UserImgfs({"pull", ref}, {"XDG_DATA_HOME=" + data_home});
  ASSERT_EQ(pulled.exit_code, 0) << pulled.Describe();
  EXPECT_NE(ReadAll(data_home + "/imgfs/index.json").find("rootless/xdg:1"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(UserStore())) << "XDG_DATA_HOME wins over HOME";
  ProcessResult images = UserImgfs({"images"}, {"XDG_DATA_HOME=" + data_home});
  ASSERT_EQ(images.exit_code, 0) << images.Describe();
  EXPECT_NE(images.out.find("rootless/xdg"), std::string::npos) << images.out;
}

TEST_F(RootlessTest, UnusableDevFuseSaysWhatToDo) {
  const std::string ref = Push("tiny-gzip", "rootless/nofuse:1");
  ASSERT_FALSE(ref.empty());
  fuse_mode_.emplace(0600);  // root-only, as some hosts have it
  ASSERT_TRUE(fuse_mode_->ok()) << fuse_mode_->status().ToString();

  ProcessResult mounted = UserImgfs({"mount", ref, Mnt()});
  EXPECT_NE(mounted.exit_code, 0) << mounted.Describe();
  EXPECT_NE(mounted.err.find("/dev/fuse (mode 0600"), std::string::npos) << mounted.err;
  EXPECT_NE(mounted.err.find("chmod 0666 /dev/fuse"), std::string::npos) << mounted.err;
  EXPECT_FALSE(IsMounted(Mnt()));
  EXPECT_TRUE(ListFilesRecursive(UserStore() + "/mounts").empty()) << "no lease left behind";
  EXPECT_EQ(ReadAll(UserStore() + "/index.json").find("rootless/nofuse"), std::string::npos)
      << "the check comes before the pull";
}

TEST_F(RootlessTest, AllowOtherNeedsUserAllowOther) {
  const std::string ref = Push("tiny-gzip", "rootless/other:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());
  Result<std::string> conf = ReadFile("/etc/fuse.conf");
  const bool allowed = conf.has_value() && fs::FuseConfAllowsOther(*conf);

  ProcessResult mounted = UserImgfs({"mount", "-o", "allow_other", ref, Mnt()});
  if (allowed) {
    // This host allows it: everyone reaches the mount, with the image's permissions.
    ASSERT_EQ(mounted.exit_code, 0) << mounted.Describe();
    const std::optional<MountInfoEntry> info = MountAt(Mnt());
    ASSERT_TRUE(info.has_value()) << Mnt() << " is not mounted";
    EXPECT_NE(info->super_options.find("default_permissions"), std::string::npos);
    EXPECT_EQ(ReadAll(Mnt() + "/etc/group").size(), 23u);
  } else {
    EXPECT_NE(mounted.exit_code, 0) << mounted.Describe();
    EXPECT_NE(mounted.err.find("user_allow_other"), std::string::npos) << mounted.err;
    EXPECT_NE(mounted.err.find("/etc/fuse.conf"), std::string::npos) << mounted.err;
    EXPECT_FALSE(IsMounted(Mnt()));
  }
}

TEST_F(RootlessTest, UmountOfWhatIsNotMountedSaysSo) {
  ProcessResult unmounted = UserImgfs({"umount", Mnt()});
  EXPECT_NE(unmounted.exit_code, 0) << unmounted.Describe();
  EXPECT_NE(unmounted.err.find("is not mounted"), std::string::npos) << unmounted.err;
}

// The lock that keeps two tests from changing /etc/subuid and /etc/subgid at once.
constexpr char kSubidLockPath[] = "/tmp/imgfs-test-subid.lock";

// Sets /etc/subuid and /etc/subgid to `content` for its lifetime (written in place, so that
// mode and owner stay) and puts them back exactly: the same bytes, or no file when there was
// none.
class SubidFiles {
 public:
  explicit SubidFiles(const std::string& content) {
    lock_fd_ = UniqueFd(open(kSubidLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_fd_.IsValid() || flock(lock_fd_.get(), LOCK_EX) != 0) {
      status_ = Status::FromErrno(errno, kSubidLockPath);
      return;
    }
    for (const char* path : {"/etc/subuid", "/etc/subgid"}) {
      Saved saved{path, false, "", {}};
      struct stat st {};
      if (stat(path, &st) == 0) {
        saved.times[0] = st.st_atim;
        saved.times[1] = st.st_mtim;
      }
      Result<std::string> text = ReadFile(path);
      if (text.has_value()) {
        saved.existed = true;
        saved.content = *text;
      } else if (text.error().code() != StatusCode::kNotFound) {
        status_ = text.error();
        return;
      }
      saved_.push_back(saved);
      status_ = WriteInPlace(path, content);
      if (!status_.ok()) return;
    }
  }
  ~SubidFiles() {
    for (const Saved& s : saved_) {
      if (s.existed) {
        Status st = WriteInPlace(s.path, s.content);
        if (!st.ok()) ADD_FAILURE() << "restoring " << s.path << ": " << st.ToString();
        utimensat(AT_FDCWD, s.path.c_str(), s.times, 0);
      } else if (unlink(s.path.c_str()) != 0 && errno != ENOENT) {
        ADD_FAILURE() << "removing " << s.path << ": " << std::strerror(errno);
      }
    }
  }
  SubidFiles(const SubidFiles&) = delete;
  SubidFiles& operator=(const SubidFiles&) = delete;

  const Status& status() const { return status_; }

 private:
  struct Saved {
    std::string path;
    bool existed;
    std::string content;
    timespec times[2];  // atime, mtime
  };

  static Status WriteInPlace(const std::string& path, const std::string& content) {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd.IsValid()) return Status::FromErrno(errno, "opening " + path);
    if (write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
      return Status::FromErrno(errno, "writing " + path);
    }
    return Status::Ok();
  }

  UniqueFd lock_fd_;
  std::vector<Saved> saved_;
  Status status_;
};

class RootlessRunTest : public RootlessTest {
 protected:
  // The user's range, 65536 ids as `usermod --add-subuids` would give.
  void GiveSubordinateIds() {
    subids_.emplace(user_.name + ":100000:65536\n");
    ASSERT_TRUE(subids_->status().ok()) << subids_->status().ToString();
  }

  // The mounts whose mount point is in the user's store (the run's are all there).
  std::vector<std::string> MountsInStore() {
    std::vector<std::string> out;
    for (const MountInfoEntry& e : ReadMountInfo()) {
      if (e.mountpoint.rfind(UserStore() + "/", 0) == 0) out.push_back(e.mountpoint);
    }
    return out;
  }

  void TearDown() override {
    RootlessTest::TearDown();
    subids_.reset();
  }

  std::optional<SubidFiles> subids_;
};

TEST_F(RootlessRunTest, RunsAsRootOfItsUserNamespace) {
  const std::string ref = Push("tiny-gzip", "rootless/run:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());
  ASSERT_NO_FATAL_FAILURE(GiveSubordinateIds());
  // The script: the ids, a new file's owner, a chown to another id of the namespace (the
  // image's file is copied up by root of the namespace), and an exit status of its own.
  const std::string script =
      "busybox id -u; busybox id -g; busybox echo hi > /data/new.txt; "
      "busybox stat -c %u:%g /data/new.txt; "
      "busybox chown 1:1 /data/changeme.txt && busybox stat -c %u:%g /data/changeme.txt; "
      "busybox cat /data/changeme.txt > /dev/null && busybox echo read; exit 7";
  for (const char* driver : {"overlay", "fuse"}) {
    SCOPED_TRACE(driver);
    ProcessResult run = UserImgfs({"run", "--driver", driver, ref, "/bin/sh", "-c", script});
    EXPECT_EQ(run.exit_code, 7) << run.Describe();
    EXPECT_EQ(run.out, "0\n0\n0:0\n1:1\nread\n") << run.Describe();
    EXPECT_TRUE(MountsInStore().empty()) << MountsInStore().front();
    EXPECT_TRUE(ListFilesRecursive(UserStore() + "/mounts").empty()) << "the daemon's lease";
    // Auto-removed, subordinate-owned files included.
    EXPECT_TRUE(ListFilesRecursive(UserStore() + "/containers").empty());
  }

  // A named container keeps its upper; the user removes it (files of id 1 included).
  ProcessResult kept = UserImgfs({"run", "--name", "kept", ref, "/bin/sh", "-c",
                                  "busybox mkdir /data/d && busybox echo x > /data/d/f && "
                                  "busybox chown -R 2:2 /data/d && busybox chmod 700 /data/d"});
  ASSERT_EQ(kept.exit_code, 0) << kept.Describe();
  struct stat st {};
  ASSERT_EQ(lstat((UserStore() + "/containers/kept/upper/data/d").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100001u) << "id 2 inside is the range's second id on the host";
  // diff and commit read the upper as root of such a namespace (the directory is 0700 for id
  // 2), and the committed layer keeps the ids the container saw.
  ProcessResult diff = UserImgfs({"diff", "kept"});
  EXPECT_EQ(diff.exit_code, 0) << diff.Describe();
  EXPECT_NE(diff.out.find("A /data/d/f\n"), std::string::npos) << diff.Describe();
  ProcessResult commit = UserImgfs({"commit", "kept", "rootless/committed:1"});
  ASSERT_EQ(commit.exit_code, 0) << commit.Describe();
  ProcessResult owner = UserImgfs(
      {"run", "--rm", "rootless/committed:1", "/bin/sh", "-c", "busybox stat -c %u:%g /data/d/f"});
  EXPECT_EQ(owner.out, "2:2\n") << owner.Describe();
  ProcessResult removed = UserImgfs({"containers", "rm", "kept"});
  EXPECT_EQ(removed.exit_code, 0) << removed.Describe();
  EXPECT_TRUE(ListFilesRecursive(UserStore() + "/containers").empty());
}

TEST_F(RootlessRunTest, WithoutASubordinateRangeTheErrorSaysHowToAddOne) {
  const std::string ref = Push("tiny-gzip", "rootless/norange:1");
  ASSERT_FALSE(ref.empty());
  ASSERT_NO_FATAL_FAILURE(OpenDevFuse());
  SubidFiles others("someone-else:100000:65536\n");
  ASSERT_TRUE(others.status().ok()) << others.status().ToString();

  ProcessResult run = UserImgfs({"run", ref, "/bin/sh", "-c", "exit 0"});
  EXPECT_EQ(run.exit_code, 125) << run.Describe();
  EXPECT_NE(run.err.find("no subordinate uid range for " + user_.name + " in /etc/subuid"),
            std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("usermod --add-subuids 100000-165535 " + user_.name), std::string::npos)
      << run.err;
  EXPECT_TRUE(MountsInStore().empty());
}

}  // namespace
}  // namespace imgfs::testing
