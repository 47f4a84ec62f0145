// imgfs — end-to-end tests of `imgfs mount`: real FUSE mounts made by the real binary, read
// with real syscalls, compared file by file with `umoci unpack` of the same image (the oracle)
// and with the fixtures' expected listing.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "cache/leases.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

// The expected tree of the fixture image `tiny`, from umoci unpack of tiny-gzip (once).
class UmociOracle {
 public:
  static UmociOracle& Get() {
    static UmociOracle oracle;
    return oracle;
  }
  const std::string& rootfs() const { return rootfs_; }
  const std::string& error() const { return error_; }

 private:
  UmociOracle() {
    ProcessResult r = RunProcess(
        {"umoci", "unpack", "--image", FixturePath("tiny-gzip:latest"), dir_.Sub("bundle")});
    if (r.exit_code != 0) {
      error_ = "umoci unpack failed: " + r.Describe();
      return;
    }
    rootfs_ = dir_.Sub("bundle/rootfs");
  }
  TempDir dir_;
  std::string rootfs_;
  std::string error_;
};

class MountTest : public ImgfsMountTest {};

TEST_F(MountTest, EveryFixtureEncodingEqualsUmociUnpack) {
  const UmociOracle& oracle = UmociOracle::Get();
  ASSERT_TRUE(oracle.error().empty()) << oracle.error();
  TreeOptions options;
  std::string error;
  auto expected = ListTree(oracle.rootfs(), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_GT(expected.size(), 50u);
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);

  // zstd layouts: umoci cannot read them; they have the same diff_ids as tiny-gzip, so the
  // gzip image's unpack is their oracle too. eStargz: the converter's two root files are
  // hidden by an eStargz-aware reader, and umoci shows them; leave them out of the oracle.
  std::vector<std::string> images = {
      "oci:" + FixturePath("tiny-gzip:latest"),
      "oci:" + FixturePath("tiny-uncompressed:latest"),
      "oci:" + FixturePath("tiny-zstd:latest"),
      "oci:" + FixturePath("tiny-zstdchunked:latest"),
      "oci:" + FixturePath("tiny-estargz:latest"),
      "oci:" + FixturePath("tiny-multi:latest"),
      "docker-archive:" + FixturePath("tiny-docker-archive.tar"),
  };
  for (const std::string& image : images) {
    SCOPED_TRACE(image);
    MountOrDie({image});
    TreeOptions mount_options;
    mount_options.ignore_paths = {"/.no.prefetch.landmark", "/.prefetch.landmark",
                                  "/stargz.index.json"};
    auto actual = ListTree(Mnt(), mount_options, &error);
    ASSERT_TRUE(error.empty()) << error;
    std::vector<std::string> diffs = CompareTrees(actual, expected, mount_options);
    EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
    diffs = CompareWithListing(actual, listing, mount_options);
    EXPECT_TRUE(diffs.empty()) << diffs.size()
                               << " differences from tiny.expected.txt, first: " << diffs.front();
    Umount();
  }
}

TEST_F(MountTest, AttributesLinksXattrsAndCapabilities) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  struct stat a {
  }, b{};
  ASSERT_EQ(stat((Mnt() + "/bin/sh").c_str(), &a), 0);
  ASSERT_EQ(stat((Mnt() + "/bin/busybox").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "hardlinks share an inode";
  EXPECT_EQ(a.st_nlink, 6u);
  EXPECT_EQ(a.st_blocks, static_cast<blkcnt_t>((1982256 + 511) / 512));
  struct stat dev {};
  ASSERT_EQ(lstat((Mnt() + "/dev/null").c_str(), &dev), 0);
  EXPECT_TRUE(S_ISCHR(dev.st_mode));
  EXPECT_EQ(dev.st_rdev, makedev(1, 3));
  struct stat pre {};
  ASSERT_EQ(stat((Mnt() + "/data/pre-epoch.txt").c_str(), &pre), 0);
  EXPECT_EQ(pre.st_mtim.tv_sec, -14182940);
  char cap[64];
  ssize_t n =
      getxattr((Mnt() + "/usr/bin/netcap-tool").c_str(), "security.capability", cap, sizeof(cap));
  ASSERT_EQ(n, 20) << strerror(errno);
  ProcessResult getcap = RunProcess({"getcap", Mnt() + "/usr/bin/netcap-tool"});
  EXPECT_NE(getcap.out.find("cap_net_raw=ep"), std::string::npos) << getcap.Describe();
  char small[2];
  EXPECT_EQ(
      getxattr((Mnt() + "/data/xattr.txt").c_str(), "user.fixture.comment", small, sizeof(small)),
      -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(getxattr((Mnt() + "/data/xattr.txt").c_str(), "user.none", small, sizeof(small)), -1);
  EXPECT_EQ(errno, ENODATA);
  // Read-only: writes are refused with EROFS.
  int fd = open((Mnt() + "/etc/passwd").c_str(), O_WRONLY);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(mkdir((Mnt() + "/newdir").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(ReadAll(Mnt() + "/data/link-relative"), ReadAll(Mnt() + "/etc/os-release"));
  Umount();
}

TEST_F(MountTest, ImageWithoutXattrsReportsNoXattrSupport) {
  ImageBuilder builder(dir_.Sub("plain-layout"));
  Result<BuiltImage> built = builder.Add(SimpleImage({{"hello.txt", "hello\n"}}), "plain");
  ASSERT_TRUE(built.has_value()) << built.error().ToString();
  MountOrDie({"oci:" + dir_.Sub("plain-layout") + ":plain"});
  char buf[64];
  EXPECT_EQ(getxattr((Mnt() + "/hello.txt").c_str(), "security.capability", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_EQ(listxattr((Mnt() + "/hello.txt").c_str(), buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_EQ(ReadAll(Mnt() + "/hello.txt"), "hello\n");
  Umount();
}

TEST_F(MountTest, ChrootRunsTheImageShell) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  ProcessResult r = RunProcess(
      {"chroot", Mnt(), "/bin/sh", "-c", "ls /bin | head -2; echo $((6*7)); cat /etc/os-release"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("busybox\ncat\n42\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ID=tiny"), std::string::npos) << r.out;
  Umount();
}

TEST_F(MountTest, ConcurrentRandomReadsMatchTheOracle) {
  const UmociOracle& oracle = UmociOracle::Get();
  ASSERT_TRUE(oracle.error().empty()) << oracle.error();
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  const std::vector<std::string> files = {"/bin/busybox", "/data/random.bin", "/data/zeros.bin",
                                          "/etc/os-release", "/data/layer3/hardlink-a"};
  std::map<std::string, std::string> want;
  for (const auto& f : files) want[f] = ReadAll(oracle.rootfs() + f);
  std::atomic<int> checked{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1234 + t);
      for (int i = 0; i < 200; ++i) {
        const std::string& f = files[rng() % files.size()];
        const std::string& data = want[f];
        int fd = open((Mnt() + f).c_str(), O_RDONLY);
        if (fd < 0) {
          ++bad;
          continue;
        }
        size_t off = data.empty() ? 0 : rng() % data.size();
        size_t len = 1 + rng() % (256 * 1024);
        std::string buf(len, '\0');
        ssize_t n = pread(fd, buf.data(), len, static_cast<off_t>(off));
        close(fd);
        size_t expect = std::min(len, data.size() - off);
        if (n != static_cast<ssize_t>(expect) || buf.compare(0, expect, data, off, expect) != 0) {
          ++bad;
        }
        ++checked;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(checked.load(), 8 * 200);
  EXPECT_EQ(bad.load(), 0);
  Umount();
}

TEST_F(MountTest, RemoveIsRefusedWhileMountedAndLeaseIsReleased) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  ProcessResult rm = Imgfs({"rm", "localhost/tiny-gzip:latest"});
  EXPECT_NE(rm.exit_code, 0);
  EXPECT_NE(rm.err.find("image is in use by the mount at " + Mnt()), std::string::npos)
      << rm.Describe();
  EXPECT_GT(DaemonPid(), 0);
  Umount();
  EXPECT_EQ(DaemonPid(), 0) << "lease released at umount";
  rm = Imgfs({"rm", "localhost/tiny-gzip:latest"});
  EXPECT_EQ(rm.exit_code, 0) << rm.Describe();
}

TEST_F(MountTest, ForcedRemoveUnmountsFirst) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  ProcessResult rm = Imgfs({"rm", "-f", "localhost/tiny-gzip:latest"});
  EXPECT_EQ(rm.exit_code, 0) << rm.Describe();
  EXPECT_NE(rm.out.find("Unmounted: " + Mnt()), std::string::npos) << rm.Describe();
  EXPECT_FALSE(IsMounted(Mnt()));
  EXPECT_EQ(DaemonPid(), 0);
  ProcessResult images = Imgfs({"images", "-q"});
  EXPECT_EQ(images.out, "") << images.Describe();
}

TEST_F(MountTest, SigtermUnmountsCleanly) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  pid_t pid = DaemonPid();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  for (int i = 0; i < 500 && (cache::ProcessIsAlive(pid, "") || IsMounted(Mnt())); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(IsMounted(Mnt()));
  EXPECT_FALSE(cache::ProcessIsAlive(pid, "")) << "daemon still running";
  EXPECT_EQ(DaemonPid(), 0) << "lease left behind";
}

TEST_F(MountTest, StaleLeaseOfAKilledDaemonIsCleared) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  pid_t pid = DaemonPid();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  for (int i = 0; i < 500 && cache::ProcessIsAlive(pid, ""); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The dead daemon's lease no longer pins the image.
  ProcessResult rm = Imgfs({"rm", "localhost/tiny-gzip:latest"});
  EXPECT_EQ(rm.exit_code, 0) << rm.Describe();
  // The dead mount (ENOTCONN) can still be unmounted.
  ProcessResult um = Imgfs({"umount", Mnt()});
  EXPECT_EQ(um.exit_code, 0) << um.Describe();
  EXPECT_FALSE(IsMounted(Mnt()));
}

TEST_F(MountTest, MountCommandAndFstabLine) {
  ProcessResult pull = Imgfs({"pull", "oci:" + FixturePath("tiny-gzip:latest")});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  // mount(8) runs mount.fuse3, which runs `imgfs` from the default PATH (/usr/local/bin …).
  // In a private mount namespace, bind a directory holding `imgfs` over /usr/local/bin, as an
  // installed imgfs would be, without touching the host.
  std::string bin = dir_.Sub("bin");
  ASSERT_TRUE(MakeDirs(bin).ok());
  ASSERT_EQ(symlink(kImgfsBinary, (bin + "/imgfs").c_str()), 0);
  std::string fstab = dir_.Sub("fstab");
  ASSERT_TRUE(WriteFileAtomic(fstab, "localhost/tiny-gzip:latest " + Mnt() +
                                         " fuse.imgfs defaults,nofail,root=" + Root() + " 0 0\n")
                  .ok());
  std::string script = "set -e; trap 'umount -l " + Mnt() + " 2>/dev/null || true' EXIT\n" +
                       "mount --bind " + bin +
                       " /usr/local/bin\n"
                       // mount -t fuse.imgfs REF DIR
                       "mount -t fuse.imgfs -o root=" +
                       Root() + " localhost/tiny-gzip:latest " + Mnt() +
                       "\n"
                       "grep ' " +
                       Mnt() +
                       " ' /proc/self/mountinfo | grep -q 'fuse.imgfs'\n"
                       "cat " +
                       Mnt() +
                       "/etc/os-release\n"
                       "umount " +
                       Mnt() +
                       "\n"
                       "if grep -q ' " +
                       Mnt() +
                       " ' /proc/self/mountinfo; then echo still-mounted; exit 1; fi\n"
                       // the fstab line
                       "mount -T " +
                       fstab + " " + Mnt() +
                       "\n"
                       "cat " +
                       Mnt() +
                       "/etc/passwd\n"
                       "umount " +
                       Mnt() + "\n";
  ProcessResult r = RunProcess({"unshare", "-m", "--propagation", "private", "sh", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << "\nstdout: " << r.out;
  EXPECT_NE(r.out.find("ID=tiny"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("root:x:0:0"), std::string::npos) << r.out;
}

TEST_F(MountTest, MountFromARegistryPullsFirstAndReusesTheIndex) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(FixturePath("tiny-zstd"), "latest", "demo/app:1.0").ok());
  const std::string ref = (*reg)->host_port() + "/demo/app:1.0";
  MountOrDie({"--pull", ref});  // not in the store: pulled, indexed, mounted
  EXPECT_NE(ReadAll(Mnt() + "/etc/os-release").find("ID=tiny"), std::string::npos);
  ProcessResult images = Imgfs({"images", "--format", "{{.Repository}}:{{.Tag}}"});
  EXPECT_NE(images.out.find("demo/app:1.0"), std::string::npos) << images.Describe();
  Umount();
  // The layer indexes and the merged tree are in the store: a second mount does not index
  // again (and works with the registry gone).
  std::vector<std::string> indexes = ListFilesRecursive(Root() + "/indexes");
  EXPECT_EQ(std::count_if(indexes.begin(), indexes.end(),
                          [](const std::string& f) { return f.ends_with(".idx"); }),
            3);
  EXPECT_EQ(std::count_if(indexes.begin(), indexes.end(),
                          [](const std::string& f) { return f.ends_with(".tree"); }),
            1);
  EXPECT_EQ(indexes.size(), 4u);
  reg->reset();
  MountOrDie({ref});
  EXPECT_NE(ReadAll(Mnt() + "/etc/passwd").find("root:"), std::string::npos);
  EXPECT_EQ(ListFilesRecursive(Root() + "/indexes"), indexes);
  Umount();
}

TEST_F(MountTest, CorruptStoredIndexIsRebuiltNotTrusted) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  Umount();
  std::vector<std::string> indexes = ListFilesRecursive(Root() + "/indexes");
  ASSERT_FALSE(indexes.empty());
  for (const std::string& f : indexes) {
    ASSERT_TRUE(WriteFileAtomic(Root() + "/indexes/" + f, "garbage").ok());
  }
  MountOrDie({"localhost/tiny-gzip:latest"});
  const UmociOracle& oracle = UmociOracle::Get();
  ASSERT_TRUE(oracle.error().empty()) << oracle.error();
  EXPECT_EQ(ReadAll(Mnt() + "/data/random.bin"), ReadAll(oracle.rootfs() + "/data/random.bin"));
  Umount();
  for (const std::string& f : indexes) {
    EXPECT_NE(ReadAll(Root() + "/indexes/" + f), "garbage") << f << " was not rebuilt";
  }
}

TEST_F(MountTest, BadImagesFailBeforeMountingWithAClearMessage) {
  struct Case {
    std::string image;
    std::string message;
  };
  std::vector<Case> cases = {
      {"oci:" + FixturePath("corrupt/layer-path-escape:latest"), "sha256:510f67e2"},
      {"oci:" + FixturePath("corrupt/layer-truncated-gzip:latest"), "sha256:c6d514cc"},
      {"oci:" + FixturePath("corrupt/layer-digest-mismatch:latest"), "sha256:ee62a5ec"},
      {"oci:" + FixturePath("corrupt/manifest-not-json:latest"), "manifest"},
      {"no_such_transport:/x", "no_such_transport"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.image);
    ProcessResult r = Imgfs({"mount", c.image, Mnt()}, 60);
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.Describe();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_FALSE(IsMounted(Mnt()));
  }
  // Nothing unverified is kept: no blob of the corrupt layers in the store.
  for (const std::string& f : ListFilesRecursive(Root() + "/blobs")) {
    EXPECT_EQ(f.find("ee62a5ec5f24"), std::string::npos) << f;
  }
}

TEST_F(MountTest, PathsThatAreNotUtf8FailWithAClearMessage) {
  // A path may be any bytes, but the daemon's configuration is JSON text (UTF-8 only).
  const std::string odd = Mnt() + "-\xff";
  ASSERT_EQ(mkdir(odd.c_str(), 0755), 0);
  const std::string image = "oci:" + FixturePath("tiny-gzip:latest");
  ProcessResult r = Imgfs({"mount", image, odd}, 60);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("the mountpoint"), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find("\\xff\" is not valid UTF-8"), std::string::npos) << r.Describe();
  EXPECT_FALSE(IsMounted(odd));

  const std::string upper = Mnt() + "-upper-\xfe";
  r = Imgfs({"mount", "--rw", "--upper", upper, image, Mnt()}, 60);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("--upper"), std::string::npos) << r.Describe();
  EXPECT_FALSE(IsMounted(Mnt()));
  EXPECT_NE(access(upper.c_str(), F_OK), 0) << "nothing is made before the check";

  // A credential's value is never shown, not even in this error.
  r = Imgfs({"--creds",
             "user:hidden\xff"
             "word",
             "mount", image, Mnt()},
            60);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("is not valid UTF-8"), std::string::npos) << r.Describe();
  EXPECT_EQ(r.err.find("hidden"), std::string::npos) << r.Describe();
  EXPECT_FALSE(IsMounted(Mnt()));

  // The layer store's directory too.
  r = Imgfs({"layer-store", odd}, 60);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("\\xff\" is not valid UTF-8"), std::string::npos) << r.Describe();
  EXPECT_FALSE(IsMounted(odd));
  rmdir(odd.c_str());
}

}  // namespace
}  // namespace imgfs::testing
