// imgfs — hostile-input tests of issue 9 for the writable filesystem, commit and the store:
// host paths are resolved inside the upper without following links, and the store and uppers
// are private. Real FUSE mounts made by the real binary, an unprivileged user (uid 65534 in a
// forked child), a container-like process swapping a directory for a symlink while commit
// walks the upper, and an image carrying kernel overlayfs xattrs.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "fs/image_ops/commit.h"
#include "registry/tar_writer.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"

namespace imgfs::testing {
namespace {

using registry::TarEntry;
using registry::TarEntryType;

// The unprivileged user of these tests (nobody/nogroup on Debian).
constexpr uid_t kNobody = 65534;

// Runs `body` in a forked child as uid/gid 65534 without supplementary groups; its return
// value is the child's exit code (127 when the switch failed).
int RunAsNobody(const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
        setresuid(kNobody, kNobody, kNobody) != 0) {
      _exit(127);
    }
    _exit(body());
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Writes an OCI layout at `dir` holding one image (tag "hostile") of one gzip layer with
// exactly `entries` (PAX xattrs included).
Status WriteImage(const std::string& dir,
                  const std::vector<std::pair<TarEntry, std::string>>& entries) {
  std::string tar;
  registry::TarWriter w(&tar);
  for (const auto& [e, data] : entries) IMGFS_RETURN_IF_ERROR(w.Add(e, data));
  IMGFS_RETURN_IF_ERROR(w.Finish());
  ImageBuilder builder(dir);
  std::string gz = GzipBytes(tar);
  IMGFS_ASSIGN_OR_RETURN(registry::Digest layer, builder.WriteBlob(gz));
  nlohmann::json config = {
      {"architecture", "amd64"},
      {"os", "linux"},
      {"created", "2024-01-01T00:00:00Z"},
      {"config", {{"Cmd", {"/bin/sh"}}}},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {registry::Digest::Sha256Of(tar).String()}}}}};
  std::string config_bytes = config.dump();
  IMGFS_ASSIGN_OR_RETURN(registry::Digest config_digest, builder.WriteBlob(config_bytes));
  nlohmann::json manifest = {{"schemaVersion", 2},
                             {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                             {"config",
                              {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                               {"digest", config_digest.String()},
                               {"size", config_bytes.size()}}},
                             {"layers",
                              {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                                {"digest", layer.String()},
                                {"size", gz.size()}}}}};
  std::string manifest_bytes = manifest.dump();
  IMGFS_ASSIGN_OR_RETURN(registry::Digest manifest_digest, builder.WriteBlob(manifest_bytes));
  registry::Descriptor desc;
  desc.media_type = "application/vnd.oci.image.manifest.v1+json";
  desc.digest = manifest_digest;
  desc.size = static_cast<int64_t>(manifest_bytes.size());
  return builder.SetIndexEntry("hostile", desc);
}

TarEntry Dir(std::string name, uint32_t mode = 0755) {
  TarEntry e;
  e.name = std::move(name);
  e.type = TarEntryType::kDirectory;
  e.mode = mode;
  e.mtime_sec = 1700000000;
  return e;
}

TarEntry File(std::string name, size_t size, uint32_t mode = 0644) {
  TarEntry e;
  e.name = std::move(name);
  e.type = TarEntryType::kRegular;
  e.mode = mode;
  e.size = size;
  e.mtime_sec = 1700000000;
  return e;
}

class SecUpperTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    // Root: these tests mount, chown and switch users.
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    // Everything up to the store is traversable by others: only imgfs's own modes may keep
    // the unprivileged user out.
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
    ASSERT_TRUE(MakeDirs(Mnt(), 0755).ok());
    std::vector<std::pair<TarEntry, std::string>> entries = {
        {Dir(""), ""},    {Dir("tmp", 01777), ""},
        {Dir("bin"), ""}, {File("bin/suid", 9, 04755), "#!/bin/sh"},
        {Dir("etc"), ""}, {File("etc/motd", 6), "hello\n"},
    };
    ASSERT_TRUE(WriteImage(dir_.Sub("layout"), entries).ok());
  }
  std::string Image() const { return "oci:" + dir_.Sub("layout") + ":hostile"; }
};

// #6: the store of a pull and of a writable mount (temporary upper and work directory) is
// private; an unprivileged user reads no blob and cannot reach a copied-up setuid file.
TEST_F(SecUpperTest, StoreBlobsAndUppersAreUnreachableForOtherUsers) {
  ProcessResult r = Imgfs({"pull", Image()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  for (const char* d :
       {"", "/blobs", "/blobs/sha256", "/tmp", "/indexes", "/chunks", "/mounts", "/containers"}) {
    EXPECT_EQ(ModeOf(Root() + d), 0700u) << "store directory " << d;
  }
  std::vector<std::string> blobs;
  for (const auto& e : std::filesystem::directory_iterator(Root() + "/blobs/sha256")) {
    blobs.push_back(e.path().string());
    EXPECT_EQ(ModeOf(e.path().string()), 0600u) << e.path();
  }
  ASSERT_FALSE(blobs.empty());

  r = Imgfs({"mount", "--rw", Image(), Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // A change by root copies the setuid file up (its mode kept, as overlayfs does).
  ASSERT_EQ(utimensat(AT_FDCWD, (Mnt() + "/bin/suid").c_str(), nullptr, 0), 0);
  std::string container;
  for (const auto& e : std::filesystem::directory_iterator(Root() + "/containers")) {
    if (e.path().filename().string().starts_with("mount-")) container = e.path().string();
  }
  ASSERT_FALSE(container.empty()) << "the temporary upper of the mount";
  EXPECT_EQ(ModeOf(container), 0700u);
  EXPECT_EQ(ModeOf(container + "/.upper.imgfs-work"), 0700u) << "the work directory";
  std::string suid = container + "/upper/bin/suid";
  ASSERT_EQ(ModeOf(suid), 04755u);

  int code = RunAsNobody([&] {
    for (const std::string& b : blobs) {
      int fd = open(b.c_str(), O_RDONLY);
      if (fd >= 0) return 1;  // read a blob of a private image
    }
    struct stat st {};
    if (stat(suid.c_str(), &st) == 0) return 2;  // reached the copied-up setuid file
    if (access(suid.c_str(), X_OK) == 0) return 3;
    DIR* d = opendir((Root() + "/containers").c_str());
    if (d != nullptr) return 4;  // listed the uppers
    return 0;
  });
  EXPECT_EQ(code, 0) << "1: blob readable, 2/3: setuid copy reachable, 4: containers listable";
  r = Imgfs({"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

// #2: an unprivileged user of an allow_other writable mount makes a symlink to a host file
// and chmods it through /proc/self/fd (the way past the VFS's symlink checks on kernels
// before 6.6): refused, and the host file keeps its mode. (Kernels since 6.6 refuse the mode
// change themselves; WritableFsTest.SetModeOnAnUpperSymlinkIsRefusedAndLeavesItsTargetAlone
// checks the daemon's own answer on any kernel.)
TEST_F(SecUpperTest, ChmodThroughAnUpperSymlinkNeverReachesTheHost) {
  std::string host_file = dir_.Sub("host-file");
  ASSERT_TRUE(WriteFileAtomic(host_file, "root only\n", 0600).ok());
  ASSERT_EQ(chmod(host_file.c_str(), 0600), 0);
  ProcessResult r = Imgfs({"mount", "--rw", "--driver", "fuse", "--upper", dir_.Sub("upper"), "-o",
                           "allow_other", Image(), Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string link = Mnt() + "/tmp/x";
  int code = RunAsNobody([&] {
    if (symlink(host_file.c_str(), link.c_str()) != 0) return 10;
    int fd = open(link.c_str(), O_PATH | O_NOFOLLOW);
    if (fd < 0) return 11;
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (chmod(proc.c_str(), 04777) == 0) return 1;
    if (fchmodat(AT_FDCWD, link.c_str(), 04777, AT_SYMLINK_NOFOLLOW) == 0) return 2;
    return 0;
  });
  EXPECT_EQ(code, 0) << "10/11: setup failed; 1/2: the chmod succeeded";
  EXPECT_EQ(ModeOf(host_file), 0600u) << "the host file's mode changed";
  r = Imgfs({"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

// The fuse driver takes FUSE_HANDLE_KILLPRIV_V2, so the daemon clears setuid and setgid bits
// itself where the kernel asks: it writes as root, for whom the upper's filesystem keeps them.
// A write, truncate(2), ftruncate(2) and an O_TRUNC open by an unprivileged user clear them,
// as on the kernel's own filesystems (before, an O_TRUNC open kept them); root's write keeps
// them (CAP_FSETID); a file without group-execute keeps setgid (the kernel's FUSE rule). And
// the flag is in force: three write(2)s of one open file ask for security.capability once
// (without it, before each).
TEST_F(SecUpperTest, UnprivilegedWritesClearSetuidBitsOnTheFuseDriver) {
  ProcessResult r = Imgfs({"mount", "--rw", "--driver", "fuse", "--upper", dir_.Sub("upper"), "-o",
                           "allow_other", Image(), Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto make = [&](const std::string& path, mode_t mode) {
    ASSERT_TRUE(WriteFileAtomic(path, "#!/bin/sh\necho root\n", 0644).ok());
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
    ASSERT_EQ(ModeOf(path), mode);
  };
  const std::vector<std::pair<std::string, std::function<int(const std::string&)>>> ways = {
      {"write",
       [](const std::string& p) {
         int fd = open(p.c_str(), O_WRONLY | O_APPEND);
         bool ok = fd >= 0 && write(fd, "x", 1) == 1;
         if (fd >= 0) close(fd);
         return ok ? 0 : 1;
       }},
      {"truncate", [](const std::string& p) { return truncate(p.c_str(), 1) == 0 ? 0 : 1; }},
      {"ftruncate",
       [](const std::string& p) {
         int fd = open(p.c_str(), O_WRONLY);
         bool ok = fd >= 0 && ftruncate(fd, 2) == 0;
         if (fd >= 0) close(fd);
         return ok ? 0 : 1;
       }},
      {"o_trunc",
       [](const std::string& p) {
         int fd = open(p.c_str(), O_WRONLY | O_TRUNC);
         if (fd < 0) return 1;
         close(fd);
         return 0;
       }},
  };
  for (const auto& named_way : ways) {
    // Not a structured binding: clang 14 does not capture those in lambdas.
    const std::string& name = named_way.first;
    const std::function<int(const std::string&)>& way = named_way.second;
    const std::string path = Mnt() + "/tmp/" + name;
    ASSERT_NO_FATAL_FAILURE(make(path, 06777));
    EXPECT_EQ(RunAsNobody([&] { return way(path); }), 0) << name;
    EXPECT_EQ(ModeOf(path), 0777u) << name << " by an unprivileged user";
    const std::string no_group_exec = Mnt() + "/tmp/" + name + "-g";
    ASSERT_NO_FATAL_FAILURE(make(no_group_exec, 06767));
    EXPECT_EQ(RunAsNobody([&] { return way(no_group_exec); }), 0) << name;
    EXPECT_EQ(ModeOf(no_group_exec), 02767u) << name << ": setgid without group-execute";
    ASSERT_NO_FATAL_FAILURE(make(path, 06777));
    EXPECT_EQ(way(path), 0) << name;
    EXPECT_EQ(ModeOf(path), 06777u) << name << " by root";
  }
  // A chown clears them whoever makes it (as on Linux's own filesystems).
  const std::string owned = Mnt() + "/tmp/owned";
  ASSERT_NO_FATAL_FAILURE(make(owned, 06777));
  ASSERT_EQ(chown(owned.c_str(), kNobody, static_cast<gid_t>(-1)), 0);
  EXPECT_EQ(ModeOf(owned), 0777u) << "chown";
  // security.capability (cap_net_raw+ep, VFS_CAP_REVISION_2) goes at an unprivileged write.
  const std::string capped = Mnt() + "/tmp/capped";
  ASSERT_NO_FATAL_FAILURE(make(capped, 0777));
  const unsigned char cap[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x20};  // le32 magic, permitted
  ASSERT_EQ(setxattr(capped.c_str(), "security.capability", cap, sizeof(cap), 0), 0)
      << strerror(errno);
  ASSERT_GT(getxattr(capped.c_str(), "security.capability", nullptr, 0), 0);
  EXPECT_EQ(RunAsNobody([&] { return ways[0].second(capped); }), 0);
  errno = 0;
  EXPECT_LT(getxattr(capped.c_str(), "security.capability", nullptr, 0), 0);
  EXPECT_EQ(errno, ENODATA) << "security.capability after a write by an unprivileged user";

  auto getxattrs = [&]() -> int64_t {
    ProcessResult s = Imgfs({"stats", "--format", "json", Mnt()}, 30);
    EXPECT_EQ(s.exit_code, 0) << s.Describe();
    nlohmann::json j = nlohmann::json::parse(s.out, nullptr, false);
    if (j.is_discarded()) return -1;
    return j["fuse"]["requests"].value("getxattr", int64_t{0});
  };
  const std::string three = Mnt() + "/tmp/three";
  int fd = open(three.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_GE(fd, 0);
  const int64_t before = getxattrs();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(write(fd, "abc", 3), 3);
  const int64_t after = getxattrs();
  close(fd);
  ASSERT_GE(before, 0);
  EXPECT_LE(after - before, 1) << "getxattr requests for three writes";
  r = Imgfs({"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

// #5: a container swaps a directory of its upper for a symlink to a host directory over and
// over while commit walks the upper: the committed layer never holds a host file.
TEST_F(SecUpperTest, CommitRacingADirectorySymlinkSwapNeverReadsTheHost) {
  const std::string upper = dir_.Sub("race-upper");
  const std::string host = dir_.Sub("race-host");
  const std::string marker = "HOST-FILE-MARKER-7f3a";
  ASSERT_TRUE(MakeDirs(upper + "/d", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(upper + "/d/f", "upper data").ok());
  ASSERT_TRUE(MakeDirs(host, 0755).ok());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(WriteFileAtomic(host + "/secret" + std::to_string(i), marker).ok());
  }
  ASSERT_TRUE(WriteFileAtomic(host + "/f", marker).ok());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> swaps{0};
  std::thread swapper([&] {
    const std::string d = upper + "/d", away = upper + "/d.x";
    while (!stop.load()) {
      // mv d d.x; ln -s HOST d; rm d; mv d.x d
      if (rename(d.c_str(), away.c_str()) != 0) continue;
      symlink(host.c_str(), d.c_str());
      unlink(d.c_str());
      rename(away.c_str(), d.c_str());
      swaps.fetch_add(1);
    }
  });
  int committed = 0, leaked = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  for (int i = 0; i < 4000 && std::chrono::steady_clock::now() < deadline; ++i) {
    std::string tar;
    registry::TarWriter w(&tar);
    Status st = fs::WriteUpperLayer(upper, w);
    if (!st.ok()) continue;  // the upper changed under the walk: an error is fine
    ++committed;
    if (tar.find(marker) != std::string::npos || tar.find("secret") != std::string::npos) {
      ++leaked;
    }
  }
  stop.store(true);
  swapper.join();
  EXPECT_EQ(leaked, 0) << "commits holding host files, of " << committed;
  EXPECT_GT(swaps.load(), 100u);
  EXPECT_GT(committed, 0);
}

// #14: an image directory carrying trusted.overlay.opaque and a file carrying
// trusted.overlay.redirect: the read-only mount does not serve them, copy-up does not put
// them into the upper (the directory does not become opaque: its image entries stay
// visible), and the mount's changes commit. The same for user.overlay.opaque, the marker of
// uppers written without root.
TEST_F(SecUpperTest, ImageOverlayXattrsAreNeitherServedNorCopiedUp) {
  TarEntry opq = Dir("opq");
  opq.xattrs["trusted.overlay.opaque"] = "y";
  opq.xattrs["user.overlay.opaque"] = "y";
  opq.xattrs["user.kept"] = "1";
  TarEntry a = File("opq/a", 7);
  a.xattrs["trusted.overlay.redirect"] = "/elsewhere";
  std::vector<std::pair<TarEntry, std::string>> entries = {
      {Dir(""), ""}, {Dir("tmp", 01777), ""}, {opq, ""}, {a, "lower a"}};
  ASSERT_TRUE(WriteImage(dir_.Sub("layout"), entries).ok());

  ProcessResult r = Imgfs({"mount", Image(), Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  char value[64];
  EXPECT_LT(getxattr((Mnt() + "/opq").c_str(), "trusted.overlay.opaque", value, sizeof(value)), 0)
      << "the read-only mount serves trusted.overlay.opaque";
  EXPECT_LT(getxattr((Mnt() + "/opq").c_str(), "user.overlay.opaque", value, sizeof(value)), 0)
      << "the read-only mount serves user.overlay.opaque";
  EXPECT_GT(getxattr((Mnt() + "/opq").c_str(), "user.kept", value, sizeof(value)), 0);
  char names[256];
  ssize_t n = listxattr((Mnt() + "/opq/a").c_str(), names, sizeof(names));
  EXPECT_EQ(std::string(names, n > 0 ? static_cast<size_t>(n) : 0).find("trusted.overlay"),
            std::string::npos);
  r = Imgfs({"umount", Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  const std::string upper = dir_.Sub("upper");
  r = Imgfs({"mount", "--rw", "--driver", "fuse", "--upper", upper, Image(), Mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(WriteFileAtomic(Mnt() + "/opq/new", "new").ok());               // copies opq up
  ASSERT_EQ(utimensat(AT_FDCWD, (Mnt() + "/opq/a").c_str(), nullptr, 0), 0);  // copies a up
  EXPECT_LT(lgetxattr((upper + "/opq").c_str(), "trusted.overlay.opaque", value, sizeof(value)), 0)
      << "the copied-up directory is opaque";
  EXPECT_LT(lgetxattr((upper + "/opq").c_str(), "user.overlay.opaque", value, sizeof(value)), 0)
      << "the copied-up directory is opaque (user.overlay.opaque)";
  EXPECT_LT(lgetxattr((upper + "/opq/a").c_str(), "trusted.overlay.redirect", value, sizeof(value)),
            0);
  EXPECT_GT(lgetxattr((upper + "/opq").c_str(), "user.kept", value, sizeof(value)), 0);
  std::vector<std::string> listed;
  for (const auto& e : std::filesystem::directory_iterator(Mnt() + "/opq")) {
    listed.push_back(e.path().filename().string());
  }
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, (std::vector<std::string>{"a", "new"}));
  EXPECT_EQ(ReadAll(Mnt() + "/opq/a"), "lower a");
  r = Imgfs({"commit", Mnt(), "hostile/committed:1"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  r = Imgfs({"umount", Mnt()});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

}  // namespace
}  // namespace imgfs::testing
