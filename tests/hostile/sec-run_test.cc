// imgfs — hostile tests of `imgfs run` (issue 9, security review findings 3, 9, 11, 13): a
// root command in an image built here tries what gets a container out of docker's default
// confinement — mount, open a device node it made, write /proc/sys, unshare namespaces,
// use the kernel keyring, escape the root by chroot + fchdir, read masked /proc files, see
// the host's network — and a hostile image or command line tries ids that wrap to root and
// argv that is not UTF-8. Each is refused by default and (where it is a privilege, not a
// bug) allowed with --privileged. Real `imgfs run`, real namespaces, the host's static
// busybox and a small static C helper compiled here.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/run_support.h"

namespace imgfs::testing {
namespace {

const std::vector<std::string> kApplets = {
    "sh", "cat", "echo", "id",      "ls",   "mkdir", "mknod", "mount", "head", "wc",      "grep",
    "mv", "ln",  "rm",   "unshare", "test", "true",  "cut",   "tr",    "sed",  "readlink"};

// The helper: one static binary with a few modes that busybox has no applet for.
constexpr const char* kHelperSource = R"C(
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "keyctl") == 0) {
    /* KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), creating it (1). */
    long r = syscall(SYS_keyctl, 0, -3, 1);
    if (r < 0) { printf("errno=%s\n", strerrorname_np(errno)); return 1; }
    printf("ok\n");
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "open") == 0) {
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { printf("errno=%s\n", strerrorname_np(errno)); return 1; }
    char buf[512];
    ssize_t n = read(fd, buf, sizeof(buf));
    printf("read=%zd\n", n);
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "escape") == 0) {
    /* The classic chroot escape: keep a descriptor of the current directory, chroot into a
       subdirectory, fchdir back out of it, climb, chroot there. */
    int fd = open(".", O_RDONLY | O_DIRECTORY);
    mkdir("escape-jail", 0700);
    if (chroot("escape-jail") != 0) { printf("chroot: errno=%s\n", strerrorname_np(errno)); }
    if (fchdir(fd) != 0) { printf("fchdir: errno=%s\n", strerrorname_np(errno)); return 1; }
    for (int i = 0; i < 256; ++i) chdir("..");
    if (chroot(".") != 0) { printf("chroot .: errno=%s\n", strerrorname_np(errno)); }
    struct stat st;
    printf(stat(argv[2], &st) == 0 ? "escaped\n" : "contained\n");
    return 0;
  }
  fprintf(stderr, "usage: helper keyctl | open PATH | escape MARKER\n");
  return 2;
}
)C";

// major:minor of the block device holding the host's root file system, when it is one
// (/proc/partitions lists it); empty otherwise.
std::string HostRootDisk() {
  for (const MountInfoEntry& e : ReadMountInfo()) {
    if (e.mountpoint != "/") continue;
    const std::string& devno = e.device;
    std::string major = devno.substr(0, devno.find(':'));
    std::string minor = devno.substr(devno.find(':') + 1);
    std::ifstream parts("/proc/partitions");
    std::string p;
    while (std::getline(parts, p)) {
      std::istringstream pf(p);
      std::string ma, mi;
      if (pf >> ma >> mi && ma == major && mi == minor) return major + " " + minor;
    }
  }
  return "";
}

class SecRunTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    helper_dir_ = new TempDir();
    std::string src = helper_dir_->Sub("helper.c");
    ASSERT_TRUE(WriteFileAtomic(src, kHelperSource).ok());
    ProcessResult cc =
        RunProcess({"cc", "-static", "-O1", "-o", helper_dir_->Sub("helper"), src}, {}, {}, 120);
    ASSERT_EQ(cc.exit_code, 0) << "compiling the static helper: " << cc.Describe();
  }
  static void TearDownTestSuite() {
    delete helper_dir_;
    helper_dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "imgfs run needs root";
    ASSERT_NE(helper_dir_, nullptr);
    Result<std::string> helper = ReadFile(helper_dir_->Sub("helper"));
    ASSERT_TRUE(helper.has_value()) << helper.error().ToString();
    Result<TestLayer> layer =
        BusyboxLayer(kApplets, {{"mnt", "", TestFile::Kind::kDir, 0755},
                                {"bin/helper", *helper, TestFile::Kind::kFile, 0755}});
    ASSERT_TRUE(layer.has_value()) << layer.error().ToString();
    base_layer_ = *layer;
    AddImage("box", {base_layer_}, {});
  }

  // Builds `tag` from `layers` with `overrides` and pulls it into the store.
  void AddImage(const std::string& tag, const std::vector<TestLayer>& layers,
                const ConfigOverrides& overrides) {
    ImageBuilder builder(dir_.Sub("img"));
    TestImageSpec spec;
    spec.layers = layers;
    Result<BuiltImage> built = AddImageWithConfig(builder, spec, tag, overrides);
    ASSERT_TRUE(built.has_value()) << built.error().ToString();
    ProcessResult r = Imgfs({"pull", "oci:" + builder.dir() + ":" + tag});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }

  ProcessResult Imgfs(std::vector<std::string> args) {
    return RunImgfs(dir_.Sub("store"), std::move(args), {}, {}, 60);
  }

  // `imgfs run [extra…] localhost/img:box sh -c SCRIPT`.
  ProcessResult Run(const std::vector<std::string>& extra, const std::string& script,
                    const std::string& image = "localhost/img:box") {
    std::vector<std::string> args = {"run"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {image, "sh", "-c", script});
    return Imgfs(args);
  }

  static TempDir* helper_dir_;
  TempDir dir_;
  TestLayer base_layer_;
};

TempDir* SecRunTest::helper_dir_ = nullptr;

TEST_F(SecRunTest, MountIsRefusedUnlessPrivileged) {
  ProcessResult r = Run({}, "mount -t tmpfs x /mnt && echo mounted || echo refused");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "refused\n") << r.err;
  r = Run({"--privileged"}, "mount -t tmpfs x /mnt && echo mounted || echo refused");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "mounted\n") << r.err;
  // --cap-add SYS_ADMIN gives the capability and the system calls docker ties to it.
  r = Run({"--cap-add", "SYS_ADMIN"}, "mount -t tmpfs x /mnt && echo mounted || echo refused");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "mounted\n") << r.err;
}

TEST_F(SecRunTest, DeviceNodesMadeInsideCannotBeOpened) {
  // /dev/null's numbers, made where the command can write (the rootfs, /dev, /dev/shm).
  const std::string script =
      "mknod /tmp/null c 1 3 && mknod /dev/null2 c 1 3 && mknod /dev/shm/null3 c 1 3 || exit 9; "
      "helper open /tmp/null; helper open /dev/null2; helper open /dev/shm/null3; "
      "helper open /dev/null";
  ProcessResult r = Run({}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "errno=EACCES\nerrno=EACCES\nerrno=EACCES\nread=0\n") << r.err;
  r = Run({"--privileged"}, "mknod /tmp/null c 1 3 && helper open /tmp/null");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "read=0\n") << r.err;

  // The host's disk, by the numbers of the root file system's device: refused by nodev
  // (EACCES) by default; with --privileged, what the host itself gets (a device cgroup of
  // the machine running the tests may refuse it to the host's root too).
  std::string disk = HostRootDisk();
  if (!disk.empty()) {
    std::string host_node = dir_.Sub("disk");
    std::string major = disk.substr(0, disk.find(' '));
    std::string minor = disk.substr(disk.find(' ') + 1);
    ASSERT_EQ(
        mknod(host_node.c_str(), S_IFBLK | 0600, makedev(std::stoul(major), std::stoul(minor))), 0);
    ProcessResult host = RunProcess({helper_dir_->Sub("helper"), "open", host_node});
    std::string mk = "mknod /tmp/disk b " + disk + " && helper open /tmp/disk";
    r = Run({}, mk);
    EXPECT_EQ(r.out, "errno=EACCES\n") << r.Describe();
    r = Run({"--privileged"}, mk);
    EXPECT_EQ(r.out, host.out) << r.Describe();
  }
}

TEST_F(SecRunTest, ProcSysAndSysrqTriggerAreReadOnly) {
  // kernel.domainname is per UTS namespace: writing it with --privileged changes only the
  // container's.
  const std::string script =
      "echo hostile > /proc/sys/kernel/domainname && echo written || echo refused; "
      "cat /proc/sys/kernel/domainname";
  ProcessResult r = Run({}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out.substr(0, r.out.find('\n') + 1), "refused\n") << r.Describe();
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  r = Run({"--privileged"}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "written\nhostile\n") << r.err;
  if (std::filesystem::exists("/proc/sysrq-trigger")) {
    // Only the refusal is tried: with --privileged this would reach the host's kernel.
    r = Run({}, "echo h > /proc/sysrq-trigger && echo written || echo refused");
    EXPECT_EQ(r.out, "refused\n") << r.Describe();
  }
}

TEST_F(SecRunTest, UnshareIsRefusedUnlessPrivileged) {
  const std::string script =
      "unshare -m true && echo mnt-ok || echo mnt-refused; "
      "unshare -U true && echo user-ok || echo user-refused; "
      "unshare -n true && echo net-ok || echo net-refused";
  ProcessResult r = Run({}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "mnt-refused\nuser-refused\nnet-refused\n") << r.err;
  r = Run({"--privileged"}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "mnt-ok\nuser-ok\nnet-ok\n") << r.err;
}

TEST_F(SecRunTest, KeyctlIsRefusedUnlessPrivileged) {
  ProcessResult r = Run({}, "helper keyctl");
  EXPECT_EQ(r.out, "errno=EPERM\n") << r.Describe();
  r = Run({"--privileged"}, "helper keyctl");
  EXPECT_EQ(r.out, "ok\n") << r.Describe();
}

// pivot_root with the old root detached: no descriptor or ".." leads back to the host, also
// with --privileged (as in docker: the escape is a property of chroot, not of a privilege).
TEST_F(SecRunTest, ChrootEscapeByFchdirStaysInside) {
  std::string marker = dir_.Sub("host-marker");
  ASSERT_TRUE(WriteFileAtomic(marker, "host\n").ok());
  ProcessResult r = Run({}, "cd /tmp && helper escape " + marker);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "contained\n") << r.err;
  r = Run({"--privileged"}, "cd /tmp && helper escape " + marker);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "contained\n") << r.err;
}

TEST_F(SecRunTest, MaskedProcPathsReadEmpty) {
  // /proc/timer_list (exists on every kernel with timers) and /proc/kcore (when the kernel
  // has it) are masked; --privileged shows them.
  const std::string script =
      "head -c 64 /proc/timer_list | wc -c; "
      "if test -e /proc/kcore; then head -c 64 /proc/kcore | wc -c; else echo none; fi";
  ProcessResult r = Run({}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  bool kcore = std::filesystem::exists("/proc/kcore");
  EXPECT_EQ(r.out, std::string("0\n") + (kcore ? "0\n" : "none\n")) << r.err;
  r = Run({"--privileged"}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, std::string("64\n") + (kcore ? "64\n" : "none\n")) << r.err;
}

TEST_F(SecRunTest, CapabilitiesAreDockersDefaultSet) {
  // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
  // SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP = 0xa80425fb.
  const std::string script = "grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status | tr -d '\\t'";
  ProcessResult r = Run({}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "CapPrm:00000000a80425fb\nCapEff:00000000a80425fb\nCapBnd:00000000a80425fb\n"
            "CapAmb:0000000000000000\n");
  // A non-root user has none; the bounding set still limits setuid binaries.
  r = Run({"-u", "1000"}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "CapPrm:0000000000000000\nCapEff:0000000000000000\nCapBnd:00000000a80425fb\n"
            "CapAmb:0000000000000000\n");
  r = Run({"--cap-drop", "ALL", "--cap-add", "chown"}, script);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "CapPrm:0000000000000001\nCapEff:0000000000000001\nCapBnd:0000000000000001\n"
            "CapAmb:0000000000000000\n");
  r = Run({"--cap-add", "NO_SUCH_CAP"}, "true");
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_NE(r.err.find("unknown capability"), std::string::npos) << r.err;
  // no-new-privileges only when asked (docker's rule).
  r = Run({}, "grep NoNewPrivs /proc/self/status | tr -d '\\t'");
  EXPECT_EQ(r.out, "NoNewPrivs:0\n") << r.Describe();
  r = Run({"--security-opt", "no-new-privileges"},
          "grep NoNewPrivs /proc/self/status | tr -d '\\t'");
  EXPECT_EQ(r.out, "NoNewPrivs:1\n") << r.Describe();
}

TEST_F(SecRunTest, NetworkNoneHasOnlyLoopbackHostHasTheHosts) {
  ProcessResult r = Run({}, "ls /sys/class/net; grep -c : /proc/net/dev");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "lo\n1\n") << r.err;
  r = Run({"--network", "none"}, "grep -E '^ *lo:' /proc/net/dev | cut -d: -f1 | tr -d ' '");
  EXPECT_EQ(r.out, "lo\n") << r.Describe();
  std::vector<std::string> host;
  for (const auto& e : std::filesystem::directory_iterator("/sys/class/net")) {
    host.push_back(e.path().filename().string());
  }
  std::sort(host.begin(), host.end());
  std::string expected;
  for (const std::string& h : host) expected += h + "\n";
  r = Run({"--network", "host"}, "ls /sys/class/net");
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, expected);
  r = Run({"--network", "bridge"}, "true");
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
}

// The command shares no namespace with the host but the user and cgroup ones (and the
// network one with --network host).
TEST_F(SecRunTest, NamespacesAreTheContainersOwn) {
  const std::vector<std::string> kinds = {"ipc", "uts", "net", "pid", "mnt"};
  std::string script;
  for (const std::string& k : kinds) script += "readlink /proc/self/ns/" + k + "; ";
  auto host_ns = [](const std::string& kind) {
    return std::filesystem::read_symlink("/proc/self/ns/" + kind).string();
  };
  for (bool host_network : {false, true}) {
    ProcessResult r = Run(
        host_network ? std::vector<std::string>{"--network", "host"} : std::vector<std::string>{},
        script);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    std::istringstream lines(r.out);
    for (const std::string& k : kinds) {
      std::string line;
      ASSERT_TRUE(std::getline(lines, line)) << r.out;
      if (k == "net" && host_network) {
        EXPECT_EQ(line, host_ns(k));
      } else {
        EXPECT_NE(line, host_ns(k)) << k;
      }
    }
  }
}

// Finding 11: ids past 32 bits used to be truncated (4294967296 → uid 0, root); 20+ digits
// threw out of range and aborted after the container was created.
TEST_F(SecRunTest, OutOfRangeIdsAreAClearErrorNotRoot) {
  for (const std::string& id :
       {std::string("4294967296"), std::string("4294967296:0"), std::string("0:4294967296"),
        std::string("4294967295"), std::string("99999999999999999999999")}) {
    ProcessResult r = Run({"-u", id}, "id -u");
    EXPECT_EQ(r.exit_code, 125) << id << ": " << r.Describe();
    EXPECT_EQ(r.out, "") << id;
    EXPECT_NE(r.err.find("out of range"), std::string::npos) << id << ": " << r.err;
  }
  // The image's own passwd entry and config User.
  TestLayer evil;
  evil.files.push_back({"etc/passwd",
                        "root:x:0:0:root:/root:/bin/sh\n"
                        "evil:x:4294967296:4294967296:evil:/:/bin/sh\n"
                        "huge:x:123456789012345678901234567890:0::/:/bin/sh\n",
                        TestFile::Kind::kFile, 0644});
  ConfigOverrides cfg;
  cfg.user = "evil";
  AddImage("evil", {base_layer_, evil}, cfg);
  ProcessResult r = Run({}, "id -u", "localhost/img:evil");
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("out of range"), std::string::npos) << r.err;
  r = Run({"-u", "huge"}, "id -u", "localhost/img:evil");
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_NE(r.err.find("out of range"), std::string::npos) << r.err;
  // The bad lines do not matter to a run that does not select them.
  r = Run({"-u", "root"}, "id -u", "localhost/img:evil");
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "0\n");
}

// Finding 9: an argument that is not UTF-8 went into the container record's JSON and the
// encoder's exception aborted imgfs after the container was created.
TEST_F(SecRunTest, NonUtf8ArgumentsRunAndAreListed) {
  ProcessResult r = Imgfs({"run", "--name", "latin1", "localhost/img:box", "echo", "caf\xe9\xff"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "caf\xe9\xff\n");
  ProcessResult ps = Imgfs({"ps", "-a", "--no-trunc"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_NE(ps.out.find("echo caf\xef\xbf\xbd\xef\xbf\xbd"), std::string::npos) << ps.out;
  r = Imgfs({"containers", "rm", "latin1"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

// Finding 13: with --driver fuse, the mountpoints imgfs made in the upper are removed after
// the run by path; a container that replaced /etc by a symlink to a host directory made the
// host's empty resolv.conf and hosts there be unlinked.
TEST_F(SecRunTest, FuseDriverCleanupDoesNotFollowAnUpperSymlink) {
  // An image without /etc: imgfs creates /etc, /etc/resolv.conf and /etc/hosts in the upper.
  TestLayer no_etc;
  for (const TestFile& f : base_layer_.files) {
    if (f.path != "etc" && f.path.rfind("etc/", 0) != 0) no_etc.files.push_back(f);
  }
  AddImage("noetc", {no_etc}, {});
  std::string host_dir = dir_.Sub("host-etc");
  ASSERT_TRUE(MakeDirs(host_dir).ok());
  ASSERT_TRUE(WriteFileAtomic(host_dir + "/resolv.conf", "").ok());
  ASSERT_TRUE(WriteFileAtomic(host_dir + "/hosts", "").ok());
  ProcessResult r =
      Imgfs({"run", "--driver", "fuse", "--name", "swap", "localhost/img:noetc", "sh", "-c",
             "mv /etc /etc.moved && ln -s " + host_dir +
                 " /etc && "
                 "echo swapped"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "swapped\n");
  EXPECT_TRUE(std::filesystem::exists(host_dir + "/resolv.conf"));
  EXPECT_TRUE(std::filesystem::exists(host_dir + "/hosts"));
  struct stat st {};
  std::string upper = dir_.Sub("store") + "/containers/swap/upper";
  ASSERT_EQ(lstat((upper + "/etc").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
}

}  // namespace
}  // namespace imgfs::testing
