// imgfs — end-to-end commit and push, with the kernel's overlayfs as the oracle: an image is
// unpacked with umoci, the kernel overlay is mounted over it with a container's upper as
// upperdir, changes are made through the overlay (writes, deletes, a deleted directory, a
// renamed lower directory, an opaque directory, hardlinks, symlinks, fifos, chmod/chown,
// xattrs), and then
//   imgfs commit → imgfs push → skopeo copy + umoci unpack   equals the overlay's view, and
//   imgfs mount of the committed image                        equals it too.
// A second test does the same through imgfs's own writable mount (`imgfs mount --rw`,
// committed by its mountpoint while mounted, as an eStargz layer).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/containers.h"
#include "cache/images.h"
#include "cache/store.h"
#include "registry/reference.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/test_images.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

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

TestImageSpec BaseImage() {
  using K = TestFile::Kind;
  TestImageSpec spec;
  TestLayer l1;
  l1.files = {
      {"etc", "", K::kDir, 0755}, {"etc/os-release", "ID=base\n"}, {"etc/hostname", "base\n"}};
  for (TestFile& f : ChangeableBaseTree()) l1.files.push_back(std::move(f));
  l1.files.insert(l1.files.end(), {{"shared", "", K::kDir, 0775},
                                   {"shared/old1", "old1"},
                                   {"shared/old2", "old2"},
                                   {"bin", "", K::kDir, 0755},
                                   {"bin/sh-link", "/opt/tool", K::kSymlink, 0777}});
  TestLayer l2;
  l2.files = {{"etc", "", K::kDir, 0755}, {"etc/motd", "base motd\n"}};
  spec.layers = {l1, l2};
  return spec;
}

// The changes, made through a mounted merged view at `m` (kernel overlay or imgfs --rw).
void MakeChanges(const std::string& m) {
  ASSERT_TRUE(WriteFileAtomic(m + "/etc/motd", "patched motd\n").ok());  // replace
  {
    std::ofstream out(m + "/etc/os-release", std::ios::app);  // modify in place
    out << "PATCHED=1\n";
  }
  ASSERT_EQ(::unlink((m + "/etc/hostname").c_str()), 0);              // delete a file
  ProcessResult rm = RunProcess({"rm", "-r", m + "/usr/share/doc"});  // delete a tree
  ASSERT_EQ(rm.exit_code, 0) << rm.Describe();
  ProcessResult mv = RunProcess({"mv", m + "/opt", m + "/opt2"});  // rename lower dir
  ASSERT_EQ(mv.exit_code, 0) << mv.Describe();
  ProcessResult rm2 = RunProcess({"rm", "-r", m + "/shared"});  // opaque dir:
  ASSERT_EQ(rm2.exit_code, 0) << rm2.Describe();
  ASSERT_EQ(::mkdir((m + "/shared").c_str(), 0775), 0);  // deleted, then
  ASSERT_EQ(::chmod((m + "/shared").c_str(), 0775), 0);  // made again
  ASSERT_TRUE(WriteFileAtomic(m + "/shared/new", "new").ok());
  ASSERT_TRUE(MakeDirs(m + "/srv/app").ok());  // new tree
  ASSERT_TRUE(WriteFileAtomic(m + "/srv/app/data", "data\n", 0600).ok());
  ASSERT_EQ(::link((m + "/srv/app/data").c_str(), (m + "/srv/app/data-link").c_str()), 0);
  ASSERT_EQ(::symlink("../etc/motd", (m + "/srv/motd-link").c_str()), 0);
  ASSERT_EQ(::mkfifo((m + "/srv/fifo").c_str(), 0644), 0);
  ASSERT_EQ(::chmod((m + "/srv/fifo").c_str(), 0644), 0);
  ASSERT_EQ(::chmod((m + "/bin").c_str(), 0700), 0);  // metadata only
  ASSERT_EQ(::chown((m + "/srv/app").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::setxattr((m + "/srv/app/data").c_str(), "user.note", "kept", 4, 0), 0);
  ::sync();
}

struct Env {
  TempDir dir;
  std::unique_ptr<RegistryServer> reg;
  std::vector<std::string> env;
  std::string host;
  registry::Digest base_manifest;
};

// Registry with demo/base:1, pulled into dir/store; umoci unpack of it in dir/base-bundle.
void Prepare(Env& e) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  e.reg = std::move(reg).value();
  e.host = e.reg->host_port();
  e.env = {"IMGFS_ROOT=" + e.dir.Sub("store")};
  ImageBuilder builder(e.dir.Sub("layout"));
  auto built = builder.Add(BaseImage(), "v1");
  ASSERT_TRUE(built.has_value()) << built.error().ToString();
  e.base_manifest = built->manifest_digest;
  ASSERT_TRUE(e.reg->PushOciLayout(e.dir.Sub("layout"), "v1", "demo/base:1").ok());
  ProcessResult pull = RunProcess({kImgfsBinary, "pull", e.host + "/demo/base:1"}, e.env);
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
}

ProcessResult Commit(Env& e, const std::string& source, const std::string& ref_text,
                     const std::string& format = "gzip") {
  return RunProcess({kImgfsBinary, "commit", "-m", "e2e change", "-c", "ENV PATCHED=1", "--format",
                     format, source, e.host + "/" + ref_text},
                    e.env);
}

// push → skopeo + umoci, and imgfs mount of the committed image: both equal `expected` (the
// merged view the changes were made through).
void CheckCommitted(Env& e, const std::string& ref_text,
                    const std::map<std::string, TreeEntry>& expected, const TreeOptions& options) {
  ProcessResult push = RunProcess({kImgfsBinary, "push", e.host + "/" + ref_text}, e.env);
  ASSERT_EQ(push.exit_code, 0) << push.Describe();
  // The base layers came from demo/base on the same registry: mounted, not uploaded.
  EXPECT_NE(push.out.find("Mounted from demo/base"), std::string::npos) << push.out;

  const std::string tag = ref_text.substr(ref_text.find(':') + 1);
  ProcessResult copy =
      RunProcess({"skopeo", "copy", "--src-tls-verify=false", "docker://" + e.host + "/" + ref_text,
                  "oci:" + e.dir.Sub("pulled-" + tag) + ":x"});
  ASSERT_EQ(copy.exit_code, 0) << copy.Describe();
  ProcessResult unpack =
      RunProcess({"umoci", "unpack", "--image", e.dir.Sub("pulled-" + tag) + ":x",
                  e.dir.Sub("pulled-bundle-" + tag)});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  std::string error;
  // A plain unpacker shows an eStargz layer's metadata files (imgfs mount hides them).
  TreeOptions unpacked = options;
  unpacked.ignore_paths.insert(
      {"/stargz.index.json", "/.no.prefetch.landmark", "/.prefetch.landmark"});
  auto pulled = ListTree(e.dir.Sub("pulled-bundle-" + tag + "/rootfs"), unpacked, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto diffs = CompareTrees(pulled, expected, unpacked);
  EXPECT_TRUE(diffs.empty()) << "pushed image vs merged view: " << diffs.size() << " differences:\n"
                             << Diffs(diffs);

  // The image config carries the change and the history entry.
  ProcessResult inspect = RunProcess({kImgfsBinary, "inspect", e.host + "/" + ref_text}, e.env);
  ASSERT_EQ(inspect.exit_code, 0) << inspect.Describe();
  EXPECT_NE(inspect.out.find("PATCHED=1"), std::string::npos) << inspect.out;

  const std::string mnt = e.dir.Sub("committed-mnt-" + tag);
  ASSERT_TRUE(MakeDirs(mnt).ok());
  UnmountGuard guard{mnt};
  ProcessResult mount = RunProcess({kImgfsBinary, "mount", e.host + "/" + ref_text, mnt}, e.env);
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
  auto mounted = ListTree(mnt, options, &error);
  ASSERT_TRUE(error.empty()) << error;
  diffs = CompareTrees(mounted, expected, options);
  EXPECT_TRUE(diffs.empty()) << "imgfs mount of the committed image vs merged view: "
                             << diffs.size() << " differences:\n"
                             << Diffs(diffs);
  ProcessResult umount = RunProcess({kImgfsBinary, "umount", mnt}, e.env);
  EXPECT_EQ(umount.exit_code, 0) << umount.Describe();
}

void CheckOracleSanity(const std::map<std::string, TreeEntry>& view) {
  // The merged view shows the changes (so equality with it means something).
  EXPECT_EQ(view.count("/etc/hostname"), 0u);
  EXPECT_EQ(view.count("/usr/share/doc"), 0u);
  EXPECT_EQ(view.count("/opt"), 0u);
  EXPECT_EQ(view.count("/opt2/data/x"), 1u);
  EXPECT_EQ(view.count("/shared/old1"), 0u);
  EXPECT_EQ(view.count("/shared/new"), 1u);
  ASSERT_EQ(view.count("/srv/app/data"), 1u);
  EXPECT_EQ(view.at("/srv/app/data").link_group, "/srv/app/data,/srv/app/data-link");
  EXPECT_EQ(view.at("/srv/fifo").type, 'p');
  EXPECT_EQ(view.at("/bin").mode, 0700u);
  EXPECT_EQ(view.at("/srv/app").uid, 1234u);
}

TEST(CommitE2eTest, KernelOverlayChangesCommitPushAndMountEqual) {
  ASSERT_EQ(geteuid(), 0u) << "kernel overlay mounts need root";
  Env e;
  ASSERT_NO_FATAL_FAILURE(Prepare(e));

  // The container whose upper the kernel overlay writes.
  auto store = cache::Store::Open(e.dir.Sub("store"));
  ASSERT_TRUE(store.has_value()) << store.error().ToString();
  cache::ContainerInfo info;
  info.name = "t1";
  info.image = e.base_manifest;
  info.reference = e.host + "/demo/base:1";
  auto created = cache::CreateContainer(**store, info);
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  ASSERT_TRUE(cache::MarkContainerExited(**store, "t1", 0).ok());
  const std::string upper = cache::ContainerUpperDir(**store, "t1");

  ProcessResult unpack = RunProcess(
      {"umoci", "unpack", "--image", e.dir.Sub("layout") + ":v1", e.dir.Sub("base-bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  const std::string merged = e.dir.Sub("merged");
  ASSERT_TRUE(MakeDirs(merged).ok());
  ASSERT_TRUE(MakeDirs(e.dir.Sub("store/containers/t1/work")).ok());
  std::map<std::string, TreeEntry> view;
  TreeOptions options;
  {
    UnmountGuard guard{merged};
    // redirect_dir=off and metacopy=off: the upper format commit reads (a renamed lower
    // directory is copied up, data is always in the upper).
    std::string opts = "lowerdir=" + e.dir.Sub("base-bundle/rootfs") + ",upperdir=" + upper +
                       ",workdir=" + e.dir.Sub("store/containers/t1/work") +
                       ",redirect_dir=off,metacopy=off,index=off";
    ASSERT_EQ(::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()), 0)
        << "mount -t overlay: " << std::strerror(errno);
    ASSERT_NO_FATAL_FAILURE(MakeChanges(merged));
    std::string error;
    view = ListTree(merged, options, &error);
    ASSERT_TRUE(error.empty()) << error;
    ASSERT_EQ(::umount(merged.c_str()), 0) << std::strerror(errno);
  }
  ASSERT_NO_FATAL_FAILURE(CheckOracleSanity(view));
  // The upper holds whiteouts and an opaque directory (what the commit converts).
  struct stat st;
  ASSERT_EQ(::lstat((upper + "/etc/hostname").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == 0);
  char opaque[4] = {0};
  EXPECT_EQ(::lgetxattr((upper + "/shared").c_str(), "trusted.overlay.opaque", opaque, 4), 1);

  ProcessResult commit = Commit(e, "t1", "me/patched:1");
  ASSERT_EQ(commit.exit_code, 0) << commit.Describe();
  CheckCommitted(e, "me/patched:1", view, options);
}

// `imgfs commit MNT` of a writable mount of `driver` (the same changes give the same layer).
void CommitWritableMountByMountpoint(const std::string& driver) {
  ASSERT_EQ(geteuid(), 0u) << "FUSE mounts need root";
  Env e;
  ASSERT_NO_FATAL_FAILURE(Prepare(e));
  const std::string mnt = e.dir.Sub("rw");
  ASSERT_TRUE(MakeDirs(mnt).ok());
  std::map<std::string, TreeEntry> view;
  TreeOptions options;
  {
    UnmountGuard guard{mnt};
    ProcessResult mount = RunProcess({kImgfsBinary, "mount", "--rw", "--driver", driver, "--upper",
                                      e.dir.Sub("upper"), e.host + "/demo/base:1", mnt},
                                     e.env);
    ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
    ASSERT_NO_FATAL_FAILURE(MakeChanges(mnt));
    std::string error;
    view = ListTree(mnt, options, &error);
    ASSERT_TRUE(error.empty()) << error;
    // Committed while mounted (synced first), as a lazily mountable eStargz layer.
    ProcessResult commit = Commit(e, mnt, "me/live:1", "estargz");
    ASSERT_EQ(commit.exit_code, 0) << commit.Describe();
    ProcessResult umount = RunProcess({kImgfsBinary, "umount", mnt}, e.env);
    ASSERT_EQ(umount.exit_code, 0) << umount.Describe();
  }
  ASSERT_NO_FATAL_FAILURE(CheckOracleSanity(view));
  CheckCommitted(e, "me/live:1", view, options);
}

TEST(CommitE2eTest, WritableMountCommittedByMountpoint) { CommitWritableMountByMountpoint("fuse"); }

TEST(CommitE2eTest, OverlayDriverMountCommittedByMountpoint) {
  CommitWritableMountByMountpoint("overlay");
}

TEST(CommitE2eTest, ErrorsAreOneClearLine) {
  ASSERT_EQ(geteuid(), 0u) << "FUSE mounts need root";
  Env e;
  ASSERT_NO_FATAL_FAILURE(Prepare(e));
  auto one_line = [](const ProcessResult& r) {
    return r.err.find('\n') == r.err.size() - 1;  // exactly one line
  };
  ProcessResult none = Commit(e, "no-such-container", "me/x:1");
  EXPECT_EQ(none.exit_code, 1) << none.Describe();
  EXPECT_NE(none.err.find("no container or writable mount named no-such-container"),
            std::string::npos)
      << none.err;
  EXPECT_TRUE(one_line(none)) << none.err;

  ProcessResult format = Commit(e, "whatever", "me/x:1", "bzip2");
  EXPECT_EQ(format.exit_code, 1) << format.Describe();
  EXPECT_NE(format.err.find("unknown layer format"), std::string::npos) << format.err;

  const std::string mnt = e.dir.Sub("ro");
  ASSERT_TRUE(MakeDirs(mnt).ok());
  UnmountGuard guard{mnt};
  ProcessResult mount = RunProcess({kImgfsBinary, "mount", e.host + "/demo/base:1", mnt}, e.env);
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
  ProcessResult ro = Commit(e, mnt, "me/x:1");
  EXPECT_EQ(ro.exit_code, 1) << ro.Describe();
  EXPECT_NE(ro.err.find("read-only"), std::string::npos) << ro.err;
  EXPECT_TRUE(one_line(ro)) << ro.err;
  ProcessResult umount = RunProcess({kImgfsBinary, "umount", mnt}, e.env);
  EXPECT_EQ(umount.exit_code, 0) << umount.Describe();

  // Nothing was recorded by the failed commits.
  ProcessResult images = RunProcess({kImgfsBinary, "images", "-q", e.host + "/me/x"}, e.env);
  EXPECT_EQ(images.exit_code, 0) << images.Describe();
  EXPECT_EQ(images.out, "");
}

}  // namespace
}  // namespace imgfs::testing
