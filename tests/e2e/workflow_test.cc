// imgfs — end-to-end user workflows of the copy-on-write features, chained the way a user
// runs them against a real docker-registry and real FUSE mounts:
//   1. `imgfs run --name t1 IMAGE -- sh -c CHANGES` (driver overlay and fuse) → `imgfs commit
//      t1 REF` → `imgfs push REF` → `skopeo copy` + `umoci unpack` equals the container's
//      tree (the container's upper mounted over the image with `imgfs mount --rw --upper`),
//      file by file; `imgfs rm` of the base image is refused while t1 exists and works after
//      `imgfs containers rm t1`; the committed image runs again (a new file, and the Env/Cmd
//      set by `commit --change`), also after it was removed locally and pulled back.
//   2. `imgfs mount --rw IMAGE DIR`, changes through the host's shell, `imgfs commit DIR REF`
//      while mounted, `imgfs umount`, `imgfs mount REF DIR2` shows what DIR showed.
// The image is built by the test: the host's static busybox plus a few lower files and
// directories for the changes to act on.
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/run_support.h"
#include "tests/support/test_images.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

const std::vector<std::string> kApplets = {"sh",    "cat",   "echo", "rm",    "mv",
                                           "chmod", "chown", "ln",   "touch", "mkfifo",
                                           "mkdir", "true",  "ls",   "env"};

// The changes a container makes: a new file (owner and mtime set), a modified lower file, a
// deleted lower file, a deleted lower tree, a renamed lower directory, chmod of a lower file
// and a lower directory, a symlink, hardlinks (to a lower and to a new file), a fifo.
const char kChanges[] =
    "set -e\n"
    "echo new > /srv/new.txt\n"
    "chown 1234:1234 /srv/new.txt\n"
    "echo appended >> /etc/motd\n"
    "rm /etc/old.conf\n"
    "rm -r /usr/share/doc\n"
    "mv /opt /opt2\n"
    "chmod 0600 /data/secret\n"
    "chmod 0700 /srv/app\n"
    "ln -s ../srv/new.txt /etc/new-link\n"
    "ln /data/keep /data/keep-link\n"
    "ln /srv/new.txt /srv/new-hard\n"
    "mkfifo /srv/fifo\n"
    "touch -d '2020-01-02 03:04:05' /srv/new.txt\n";

// Unmounts `dir` (lazily) when the test ends, however it ends.
struct UnmountGuard {
  std::string dir;
  ~UnmountGuard() {
    if (IsMounted(dir)) RunProcess({"umount", "-l", dir});
  }
};

std::string Diffs(const std::vector<std::string>& diffs) {
  std::string all;
  for (const std::string& d : diffs) all += d + "\n";
  return all;
}

class WorkflowTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    auto reg = RegistryServer::Start();
    ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
    reg_ = std::move(reg).value();
    using K = TestFile::Kind;
    std::vector<TestFile> extra = {{"etc/motd", "base motd\n"}, {"etc/old.conf", "old\n"}};
    for (TestFile& f : ChangeableBaseTree()) extra.push_back(std::move(f));
    extra.insert(extra.end(), {{"data", "", K::kDir, 0755},
                               {"data/secret", "secret\n", K::kFile, 0644},
                               {"data/keep", "keep\n"},
                               {"srv", "", K::kDir, 0755},
                               {"srv/app", "", K::kDir, 0755},
                               {"srv/app/run", "app\n"}});
    Result<TestLayer> layer = BusyboxLayer(kApplets, extra);
    ASSERT_TRUE(layer.has_value()) << layer.error().ToString();
    ImageBuilder builder(dir_.Sub("layout"));
    TestImageSpec spec;
    spec.layers = {*layer};
    spec.env = {"PATH=/usr/bin:/bin", "GREETING=base"};
    spec.cmd = {"/bin/sh"};
    auto built = builder.Add(spec, "v1");
    ASSERT_TRUE(built.has_value()) << built.error().ToString();
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("layout"), "v1", "demo/base:1").ok());
    base_ = reg_->host_port() + "/demo/base:1";
    ProcessResult pull = Imgfs({"pull", base_});
    ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  }

  void TearDown() override {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
      EXPECT_EQ(line.find(dir_.path()), std::string::npos) << "left mounted: " << line;
    }
    ImgfsMountTest::TearDown();
  }

  std::string Ref(const std::string& name_and_tag) const {
    return reg_->host_port() + "/" + name_and_tag;
  }

  // The tree of `ref` as skopeo and umoci see it after pulling it from the registry.
  std::map<std::string, TreeEntry> PulledTree(const std::string& ref, const std::string& name,
                                              const TreeOptions& options) {
    ProcessResult copy = RunProcess({"skopeo", "copy", "--src-tls-verify=false", "docker://" + ref,
                                     "oci:" + dir_.Sub("pulled-" + name) + ":x"});
    EXPECT_EQ(copy.exit_code, 0) << copy.Describe();
    ProcessResult unpack =
        RunProcess({"umoci", "unpack", "--image", dir_.Sub("pulled-" + name) + ":x",
                    dir_.Sub("bundle-" + name)});
    EXPECT_EQ(unpack.exit_code, 0) << unpack.Describe();
    std::string error;
    auto tree = ListTree(dir_.Sub("bundle-" + name + "/rootfs"), options, &error);
    EXPECT_TRUE(error.empty()) << error;
    return tree;
  }

  // The tree of `ref` through a read-only imgfs mount.
  std::map<std::string, TreeEntry> MountedTree(const std::string& ref, const std::string& name,
                                               const TreeOptions& options) {
    const std::string mnt = dir_.Sub("ro-" + name);
    EXPECT_TRUE(MakeDirs(mnt).ok());
    UnmountGuard guard{mnt};
    ProcessResult mount = Imgfs({"mount", ref, mnt});
    EXPECT_EQ(mount.exit_code, 0) << mount.Describe();
    if (mount.exit_code != 0) return {};
    std::string error;
    auto tree = ListTree(mnt, options, &error);
    EXPECT_TRUE(error.empty()) << error;
    ProcessResult umount = Imgfs({"umount", mnt});
    EXPECT_EQ(umount.exit_code, 0) << umount.Describe();
    return tree;
  }

  std::unique_ptr<RegistryServer> reg_;
  std::string base_;
};

// The container's changes are all visible in `view` (so equality with it means something).
void CheckChangesVisible(const std::map<std::string, TreeEntry>& view) {
  EXPECT_GT(view.size(), 30u);  // the whole image, not just the changes
  ASSERT_EQ(view.count("/srv/new.txt"), 1u);
  const TreeEntry& made = view.at("/srv/new.txt");
  EXPECT_EQ(made.uid, 1234u);
  EXPECT_EQ(made.gid, 1234u);
  EXPECT_EQ(made.mtime_sec, 1577934245);  // 2020-01-02 03:04:05 UTC
  EXPECT_EQ(made.link_group, "/srv/new-hard,/srv/new.txt");
  EXPECT_EQ(view.count("/etc/old.conf"), 0u);
  EXPECT_EQ(view.count("/usr/share/doc"), 0u);
  EXPECT_EQ(view.count("/usr/share/doc/a.txt"), 0u);
  EXPECT_EQ(view.count("/usr/share"), 1u);
  EXPECT_EQ(view.count("/opt"), 0u);
  EXPECT_EQ(view.count("/opt/tool"), 0u);
  ASSERT_EQ(view.count("/opt2/data/x"), 1u);
  EXPECT_EQ(view.at("/opt2/data").mode, 0750u);
  EXPECT_EQ(view.at("/opt2/tool").mode, 0755u);
  EXPECT_EQ(view.at("/data/secret").mode, 0600u);
  EXPECT_EQ(view.at("/srv/app").mode, 0700u);
  EXPECT_EQ(view.count("/srv/app/run"), 1u);
  ASSERT_EQ(view.count("/etc/new-link"), 1u);
  EXPECT_EQ(view.at("/etc/new-link").type, 'l');
  EXPECT_EQ(view.at("/etc/new-link").content, "../srv/new.txt");
  ASSERT_EQ(view.count("/data/keep"), 1u);
  EXPECT_EQ(view.at("/data/keep").link_group, "/data/keep,/data/keep-link");
  ASSERT_EQ(view.count("/srv/fifo"), 1u);
  EXPECT_EQ(view.at("/srv/fifo").type, 'p');
  ASSERT_EQ(view.count("/etc/motd"), 1u);
  EXPECT_EQ(view.at("/etc/motd").size, "19");  // "base motd\nappended\n"
}

// Parameter: the run's --driver.
class RunCommitPushTest : public WorkflowTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(RunCommitPushTest, ContainerChangesCommitPushPullAndRunAgain) {
  const std::string driver = GetParam();
  ProcessResult run =
      Imgfs({"run", "--driver", driver, "--name", "t1", base_, "--", "sh", "-c", kChanges});
  ASSERT_EQ(run.exit_code, 0) << run.Describe();
  ProcessResult ps = Imgfs({"ps", "-a"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_NE(ps.out.find("t1"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("Exited (0)"), std::string::npos) << ps.out;
  const std::string upper = Root() + "/containers/t1/upper";
  ASSERT_TRUE(std::filesystem::is_directory(upper)) << upper;
  // A user xattr on a new file: the upper file's own xattrs are the file's xattrs.
  ASSERT_EQ(::lsetxattr((upper + "/srv/new.txt").c_str(), "user.note", "kept", 4, 0), 0);

  // The container's tree: its upper over the image, through a writable mount.
  TreeOptions options;
  std::map<std::string, TreeEntry> view;
  {
    const std::string mnt = dir_.Sub("container-view");
    ASSERT_TRUE(MakeDirs(mnt).ok());
    UnmountGuard guard{mnt};
    ProcessResult mount = Imgfs({"mount", "--rw", "--upper", upper, base_, mnt});
    ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
    std::string error;
    view = ListTree(mnt, options, &error);
    ASSERT_TRUE(error.empty()) << error;
    ProcessResult umount = Imgfs({"umount", mnt});
    ASSERT_EQ(umount.exit_code, 0) << umount.Describe();
  }
  ASSERT_NO_FATAL_FAILURE(CheckChangesVisible(view));
  ASSERT_EQ(view.count("/srv/new.txt"), 1u);
  EXPECT_EQ(view.at("/srv/new.txt").xattrs, "user.note=0x6b657074");
  {
    // The kernel reads the same upper the same way: a read-only overlay of the upper over
    // `umoci unpack` of the base image (two lower layers: nothing is written to the upper).
    ProcessResult unpack = RunProcess(
        {"umoci", "unpack", "--image", dir_.Sub("layout") + ":v1", dir_.Sub("base-bundle")});
    ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
    const std::string merged = dir_.Sub("kernel-view");
    ASSERT_TRUE(MakeDirs(merged).ok());
    UnmountGuard guard{merged};
    ProcessResult mount =
        RunProcess({"mount", "-t", "overlay", "overlay", "-o",
                    "ro,lowerdir=" + upper + ":" + dir_.Sub("base-bundle/rootfs"), merged});
    ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
    std::string error;
    auto kernel = ListTree(merged, options, &error);
    ASSERT_TRUE(error.empty()) << error;
    ProcessResult umount = RunProcess({"umount", merged});
    ASSERT_EQ(umount.exit_code, 0) << umount.Describe();
    auto diffs = CompareTrees(view, kernel, options);
    EXPECT_TRUE(diffs.empty()) << "imgfs --upper view vs the kernel's overlay of the same upper: "
                               << diffs.size() << " differences:\n"
                               << Diffs(diffs);
  }

  const std::string ref = Ref("me/x:patched-" + driver);
  ProcessResult commit =
      Imgfs({"commit", "-m", "workflow", "-c", "ENV GREETING=patched", "-c",
             "CMD [\"/bin/sh\", \"-c\", \"echo $GREETING; cat /srv/new.txt\"]", "t1", ref});
  ASSERT_EQ(commit.exit_code, 0) << commit.Describe();
  ProcessResult push = Imgfs({"push", ref});
  ASSERT_EQ(push.exit_code, 0) << push.Describe();
  // The base layer is in demo/base of the same registry: mounted, not uploaded again.
  EXPECT_NE(push.out.find("Mounted from demo/base"), std::string::npos) << push.out;

  auto pulled = PulledTree(ref, driver, options);
  auto diffs = CompareTrees(pulled, view, options);
  EXPECT_TRUE(diffs.empty()) << "pushed image (skopeo + umoci) vs the container's tree: "
                             << diffs.size() << " differences:\n"
                             << Diffs(diffs);
  auto mounted = MountedTree(ref, driver, options);
  diffs = CompareTrees(mounted, view, options);
  EXPECT_TRUE(diffs.empty()) << "imgfs mount of the committed image vs the container's tree: "
                             << diffs.size() << " differences:\n"
                             << Diffs(diffs);

  // The base image is pinned by t1 until the container is removed.
  ProcessResult rm = Imgfs({"rm", base_});
  EXPECT_NE(rm.exit_code, 0) << rm.Describe();
  EXPECT_NE(rm.err.find("in use by container t1"), std::string::npos) << rm.err;
  ProcessResult images = Imgfs({"images", "-q", base_});
  EXPECT_EQ(images.exit_code, 0) << images.Describe();
  EXPECT_FALSE(images.out.empty()) << "the refused rm removed the image";
  ProcessResult crm = Imgfs({"containers", "rm", "t1"});
  ASSERT_EQ(crm.exit_code, 0) << crm.Describe();
  EXPECT_FALSE(std::filesystem::exists(Root() + "/containers/t1"));
  rm = Imgfs({"rm", base_});
  EXPECT_EQ(rm.exit_code, 0) << rm.Describe();

  // The committed image runs: its new file, and the config changed by --change.
  ProcessResult cat = Imgfs({"run", "--driver", driver, "--rm", ref, "--", "cat", "/srv/new.txt"});
  EXPECT_EQ(cat.exit_code, 0) << cat.Describe();
  EXPECT_EQ(cat.out, "new\n");
  ProcessResult dflt = Imgfs({"run", "--driver", driver, "--rm", ref});
  EXPECT_EQ(dflt.exit_code, 0) << dflt.Describe();
  EXPECT_EQ(dflt.out, "patched\nnew\n");

  // Removed locally, it is pulled back from the registry by run.
  rm = Imgfs({"rm", ref});
  ASSERT_EQ(rm.exit_code, 0) << rm.Describe();
  ProcessResult again = Imgfs({"run", "--driver", driver, "--rm", ref, "--", "sh", "-c",
                               "echo $GREETING; ls /opt2/data; test ! -e /etc/old.conf"});
  EXPECT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_EQ(again.out, "patched\nx\n");
}

INSTANTIATE_TEST_SUITE_P(Drivers, RunCommitPushTest, ::testing::Values("overlay", "fuse"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST_F(WorkflowTest, WritableMountCommittedByMountpointMountsAgainEqual) {
  const std::string mnt = dir_.Sub("rw");
  ASSERT_TRUE(MakeDirs(mnt).ok());
  const std::string ref = Ref("me/x:live");
  TreeOptions options;
  std::map<std::string, TreeEntry> view;
  {
    UnmountGuard guard{mnt};
    // The fuse driver: the view's hardlink groups are compared, and on the overlay driver (as
    // on overlayfs with index=off) a new name of a copied-up image file has its own st_ino.
    ProcessResult mount = Imgfs({"mount", "--rw", "--driver", "fuse", base_, mnt});
    ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
    // The same changes through the host's shell (paths below the mountpoint).
    std::string script = kChanges;
    std::string rooted;
    for (size_t i = 0; i < script.size(); ++i) {
      // Every absolute path of the script (a '/' after a space) gets the mountpoint prefix.
      if (script[i] == '/' && i > 0 && script[i - 1] == ' ') rooted += mnt;
      rooted += script[i];
    }
    ProcessResult changes = RunProcess({"sh", "-c", rooted}, {"TZ=UTC"});
    ASSERT_EQ(changes.exit_code, 0) << changes.Describe() << "\n" << rooted;
    ASSERT_EQ(::lsetxattr((mnt + "/srv/new.txt").c_str(), "user.note", "kept", 4, 0), 0);
    std::string error;
    view = ListTree(mnt, options, &error);
    ASSERT_TRUE(error.empty()) << error;
    ProcessResult commit = Imgfs({"commit", "-c", "ENV GREETING=live", mnt, ref});
    ASSERT_EQ(commit.exit_code, 0) << commit.Describe();
    // Still mounted and still writable after the commit.
    EXPECT_TRUE(IsMounted(mnt));
    EXPECT_TRUE(WriteFileAtomic(mnt + "/after-commit", "later\n").ok());
    ProcessResult umount = Imgfs({"umount", mnt});
    ASSERT_EQ(umount.exit_code, 0) << umount.Describe();
  }
  ASSERT_NO_FATAL_FAILURE(CheckChangesVisible(view));
  EXPECT_EQ(view.at("/srv/new.txt").xattrs, "user.note=0x6b657074");
  EXPECT_EQ(view.count("/after-commit"), 0u);

  auto mounted = MountedTree(ref, "live", options);
  auto diffs = CompareTrees(mounted, view, options);
  EXPECT_TRUE(diffs.empty()) << "imgfs mount of the committed image vs the writable mount: "
                             << diffs.size() << " differences:\n"
                             << Diffs(diffs);
  // The temporary upper went with the unmount; no container was left behind.
  ProcessResult ps = Imgfs({"ps", "-a", "-q"});
  EXPECT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_EQ(ps.out, "");
  ProcessResult run =
      Imgfs({"run", "--rm", ref, "--", "sh", "-c", "echo $GREETING; cat /etc/motd"});
  EXPECT_EQ(run.exit_code, 0) << run.Describe();
  EXPECT_EQ(run.out, "live\nbase motd\nappended\n");
}

}  // namespace
}  // namespace imgfs::testing
