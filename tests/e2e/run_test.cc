// imgfs — end-to-end tests of `imgfs run`, `imgfs ps` and `imgfs containers`: the real binary
// runs real commands (the host's static busybox in images built by the test, and the
// fixtures' image `tiny`) in real mount and PID namespaces over real FUSE mounts.
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/registry_server.h"
#include "tests/support/run_support.h"

namespace imgfs::testing {
namespace {

// Applets the test images link to /bin/busybox.
const std::vector<std::string> kApplets = {"sh",    "cat",  "echo",  "id",    "env",       "pwd",
                                           "sleep", "ls",   "touch", "mkdir", "head",      "wc",
                                           "test",  "true", "false", "cut",   "sha256sum", "rm"};

std::string ReadAll(const std::string& path) {
  Result<std::string> r = ReadFile(path);
  return r.has_value() ? *r : "";
}

// Mount lines of this (the host's) mount namespace that mention `needle`.
std::vector<std::string> MountsMentioning(const std::string& needle) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) out.push_back(line);
  }
  return out;
}

// Every descendant of `root` (host pids), from /proc/*/stat parent links.
std::set<pid_t> Descendants(pid_t root) {
  std::map<pid_t, pid_t> parent;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = ReadAll(e.path().string() + "/stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    parent[std::stoi(name)] = ppid;
  }
  std::set<pid_t> out;
  bool grew = true;
  while (grew) {
    grew = false;
    for (const auto& [pid, ppid] : parent) {
      if ((ppid == root || out.count(ppid) > 0) && out.insert(pid).second) grew = true;
    }
  }
  return out;
}

// Parameter: the run's --driver (overlay or fuse).
class RunTest : public ImgfsMountTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    Result<TestLayer> layer = BusyboxLayer(
        kApplets, {
                      {"usr", "", TestFile::Kind::kDir, 0755},
                      {"usr/bin", "", TestFile::Kind::kDir, 0755},
                      {"usr/bin/not-exec", "echo never\n", TestFile::Kind::kFile, 0644},
                      {"usr/bin/workload.sh",
                       "#!/bin/sh\n"
                       "set -e\n"
                       "mkdir -p /tmp/work && cd /tmp/work\n"
                       "for i in 1 2 3 4 5; do echo \"line $i\" >> data.txt; done\n"
                       "wc -l < data.txt\n"
                       "sha256sum data.txt | cut -c1-16\n"
                       "ls /bin | wc -l\n",
                       TestFile::Kind::kFile, 0755},
                      {"srv", "", TestFile::Kind::kDir, 0755},
                  });
    ASSERT_TRUE(layer.has_value()) << layer.error().ToString();
    ImageBuilder builder(dir_.Sub("runimg"));
    TestImageSpec spec;
    spec.layers = {*layer};
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.cmd = {"/bin/sh"};
    Result<BuiltImage> plain = builder.Add(spec, "plain");
    ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
    ConfigOverrides cfg;
    cfg.entrypoint = std::vector<std::string>{"/bin/sh", "-c"};
    cfg.cmd =
        std::vector<std::string>{"echo \"$GREETING|$(pwd)|$(id -u):$(id -g)|$HOME|$(id -G)\""};
    cfg.env = std::vector<std::string>{"PATH=/usr/bin:/bin", "GREETING=hello"};
    cfg.working_dir = "/srv/app";
    cfg.user = "app";
    Result<BuiltImage> with_config = AddImageWithConfig(builder, spec, "cfg", cfg);
    ASSERT_TRUE(with_config.has_value()) << with_config.error().ToString();
    for (const char* tag : {"plain", "cfg"}) {
      ProcessResult r = Imgfs({"pull", "oci:" + builder.dir() + ":" + tag});
      ASSERT_EQ(r.exit_code, 0) << r.Describe();
    }
  }

  void TearDown() override {
    // Nothing of a run may stay mounted in this (the host's) namespace.
    EXPECT_TRUE(MountsMentioning(dir_.path()).empty())
        << "left mounted: " << MountsMentioning(dir_.path())[0];
    ImgfsMountTest::TearDown();
  }

  ProcessResult Imgfs(std::vector<std::string> args, std::vector<std::string> env = {},
                      int timeout_s = 60) {
    args = ImgfsArgv(std::move(args));
    env.push_back("IMGFS_ROOT=" + Root());
    return RunProcess(args, env, {}, timeout_s);
  }

  // The imgfs command line; a run gets the driver under test.
  std::vector<std::string> ImgfsArgv(std::vector<std::string> args) {
    if (!args.empty() && args[0] == "run") {
      args.insert(args.begin() + 1, {"--driver", GetParam()});
    }
    args.insert(args.begin(), kImgfsBinary);
    return args;
  }

  // Names of the container directories in the store (hidden removals excluded).
  std::vector<std::string> ContainerDirs() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(Root() + "/containers", ec)) {
      std::string name = e.path().filename().string();
      if (name[0] != '.') out.push_back(name);
    }
    return out;
  }

  size_t LiveLeases() {
    Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(Root());
    if (!store.has_value()) return 999;
    Result<std::vector<cache::LeaseInfo>> leases = cache::ListLiveLeases(**store);
    return leases.has_value() ? leases->size() : 999;
  }

  const std::string kPlain = "localhost/runimg:plain";
  const std::string kCfg = "localhost/runimg:cfg";
};

TEST_P(RunTest, ExitStatusIsTheCommandsAndNothingIsLeftBehind) {
  ProcessResult r = Imgfs({"run", kPlain, "--", "sh", "-c", "cat /etc/passwd | head -1; exit 3"});
  EXPECT_EQ(r.exit_code, 3) << r.Describe();
  EXPECT_EQ(r.out, "root:x:0:0:root:/root:/bin/sh\n");
  r = Imgfs({"run", kPlain, "true"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  r = Imgfs({"run", kPlain, "false"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  r = Imgfs({"run", "--rm", "--name", "gone", kPlain, "sh", "-c", "echo x > /x"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  // Unnamed (and --rm) containers are removed after the run; no mount, lease or process
  // stays.
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(LiveLeases(), 0u);
}

TEST_P(RunTest, NotFoundIs127NotExecutableIs126ImgfsErrorIs125) {
  ProcessResult r = Imgfs({"run", kPlain, "no-such-command"});
  EXPECT_EQ(r.exit_code, 127) << r.Describe();
  EXPECT_NE(r.err.find("executable file not found in $PATH"), std::string::npos) << r.err;
  r = Imgfs({"run", kPlain, "/no/such/file"});
  EXPECT_EQ(r.exit_code, 127) << r.Describe();
  r = Imgfs({"run", kPlain, "/usr/bin/not-exec"});
  EXPECT_EQ(r.exit_code, 126) << r.Describe();
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  r = Imgfs({"run", kPlain, "not-exec"});  // found in PATH, not executable
  EXPECT_EQ(r.exit_code, 126) << r.Describe();
  r = Imgfs({"run", kPlain, "/srv"});
  EXPECT_EQ(r.exit_code, 126) << r.Describe();
  r = Imgfs({"run", "-u", "nobody-here", kPlain, "true"});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_NE(r.err.find("unable to find user nobody-here"), std::string::npos) << r.err;
  r = Imgfs({"run", "--name", "bad/name", kPlain, "true"});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_TRUE(ContainerDirs().empty());
}

TEST_P(RunTest, KilledBySignalIs128PlusN) {
  ProcessResult r = Imgfs({"run", kPlain, "sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.exit_code, 128 + 9) << r.Describe();
  r = Imgfs({"run", kPlain, "sh", "-c", "kill -TERM $$"});
  EXPECT_EQ(r.exit_code, 128 + 15) << r.Describe();
}

TEST_P(RunTest, ImageConfigGivesEnvWorkdirUserEntrypointAndCmd) {
  ProcessResult r = Imgfs({"run", kCfg});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "hello|/srv/app|1234:1234|/home/app|1234 5000\n");
  // Arguments replace Cmd (the entrypoint stays).
  r = Imgfs({"run", kCfg, "echo replaced $GREETING"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "replaced hello\n");
  // --entrypoint replaces the entrypoint and drops the image's Cmd.
  r = Imgfs({"run", "--entrypoint", "/bin/echo", kCfg, "a", "b"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "a b\n");
  r = Imgfs({"run", "--entrypoint", "/bin/echo", kCfg});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "\n");
}

TEST_P(RunTest, EnvWorkdirAndUserFlags) {
  ProcessResult r = Imgfs({"run", "-e", "GREETING=bye", "-e", "FROM_HOST", "-e", "UNSET_VAR", "-w",
                           "/new/work/dir", "-u", "1000:5000", kCfg,
                           "echo \"$GREETING|$FROM_HOST|${UNSET_VAR-unset}|$(pwd)|$(id -u):$(id "
                           "-g)\""},
                          {"FROM_HOST=host value"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "bye|host value|unset|/new/work/dir|1000:5000\n");
  r = Imgfs({"run", "-u", "user", kCfg, "echo $(id -u):$(id -g):$HOME"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "1000:1000:/home/user\n");
  // --hostname: a UTS namespace of the run's own (the host's name is unchanged).
  r = Imgfs({"run", "-u", "root", "--hostname", "box1", kCfg,
             "echo $(id -u) $HOSTNAME $(cat /proc/sys/kernel/hostname)"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "0 box1 box1\n");
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  EXPECT_STRNE(host, "box1");
}

TEST_P(RunTest, VolumesReadWriteAndReadOnly) {
  std::string rw = dir_.Sub("rw");
  std::string ro = dir_.Sub("ro");
  ASSERT_TRUE(MakeDirs(rw).ok());
  ASSERT_TRUE(MakeDirs(ro).ok());
  ASSERT_TRUE(WriteFileAtomic(rw + "/in.txt", "from host\n").ok());
  ASSERT_TRUE(WriteFileAtomic(ro + "/keep.txt", "keep\n").ok());
  ProcessResult r = Imgfs({"run", "-v", rw + ":/vol", "-v", ro + ":/srv/ro:ro", kPlain, "sh", "-c",
                           "cat /vol/in.txt; echo written > /vol/out.txt; cat /srv/ro/keep.txt; "
                           "echo x > /srv/ro/new.txt; echo \"rc=$?\"; rm /srv/ro/keep.txt; echo "
                           "\"rc=$?\""});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "from host\nkeep\nrc=1\nrc=1\n");
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  EXPECT_EQ(ReadAll(rw + "/out.txt"), "written\n");
  EXPECT_FALSE(std::filesystem::exists(ro + "/new.txt"));
  EXPECT_EQ(ReadAll(ro + "/keep.txt"), "keep\n");
}

// A volume target that is a symlink in the image is resolved inside the image: an absolute
// link (or one with "..") cannot point the bind mount at a host directory.
TEST_P(RunTest, VolumeTargetsResolveSymlinksInsideTheImage) {
  std::string outside = dir_.Sub("outside");  // a host path the image's links point at
  Result<TestLayer> layer = BusyboxLayer(
      kApplets, {{"srv", "", TestFile::Kind::kDir, 0755},
                 {"srv/abs", outside, TestFile::Kind::kSymlink},
                 {"srv/rel", "../../../../../../../../.." + outside, TestFile::Kind::kSymlink}});
  ASSERT_TRUE(layer.has_value()) << layer.error().ToString();
  ImageBuilder builder(dir_.Sub("runimg"));
  TestImageSpec spec;
  spec.layers = {*layer};
  ASSERT_TRUE(builder.Add(spec, "links").has_value());
  ProcessResult r = Imgfs({"pull", "oci:" + builder.dir() + ":links"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string vol = dir_.Sub("vol");
  ASSERT_TRUE(MakeDirs(vol).ok());
  r = Imgfs(
      {"run", "-v", vol + ":/srv/abs/a", "-v", vol + ":/srv/rel/b", "localhost/runimg:links", "sh",
       "-c",
       "echo one > /srv/abs/a/one; cat /srv/rel/b/one; test -d " + outside + "/a && echo inside"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "one\ninside\n");
  EXPECT_EQ(ReadAll(vol + "/one"), "one\n");
  EXPECT_FALSE(std::filesystem::exists(outside)) << "a mount target was created on the host";
}

TEST_P(RunTest, ProcDevSysAndHostResolvConf) {
  ProcessResult r = Imgfs(
      {"run", kPlain, "sh", "-c",
       "test -r /proc/self/status && echo proc; test -d /sys/kernel && echo sys; "
       "echo x > /dev/null && echo null; head -c 5 /dev/zero | wc -c; head -c 4 /dev/urandom | "
       "wc -c; test -d /dev/pts && test -d /dev/shm && echo pts-shm; echo $$; cat "
       "/etc/resolv.conf"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // pid 1 of the command's PID namespace is imgfs's init, the command is pid 2.
  std::string expected = "proc\nsys\nnull\n5\n4\npts-shm\n2\n" + ReadAll("/etc/resolv.conf");
  EXPECT_EQ(r.out, expected);
  ASSERT_TRUE(std::filesystem::exists("/etc/resolv.conf")) << "the host needs /etc/resolv.conf";
  // The host's file is bound read-only.
  r = Imgfs({"run", kPlain, "sh", "-c", "echo evil >> /etc/resolv.conf"});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(ReadAll("/etc/resolv.conf").find("evil"), std::string::npos);
}

TEST_P(RunTest, SigtermToImgfsReachesTheCommandsTrap) {
  std::string vol = dir_.Sub("vol");
  ASSERT_TRUE(MakeDirs(vol).ok());
  BackgroundProcess run(
      ImgfsArgv({"run", "-v", vol + ":/vol", kPlain, "sh", "-c",
                 "trap 'echo trapped > /vol/trap; exit 42' TERM; echo ready > /vol/ready; "
                 "while true; do sleep 0.05; done"}),
      {"IMGFS_ROOT=" + Root()});
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(vol + "/ready"); }, 30)) << run.err();
  run.Signal(SIGTERM);
  EXPECT_EQ(run.Wait(30), 42) << run.err();
  EXPECT_EQ(ReadAll(vol + "/trap"), "trapped\n");
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(LiveLeases(), 0u);
}

// Ctrl-C on a terminal signals the whole foreground process group: the command gets SIGINT
// once (imgfs does not forward the terminal's copy a second time), and the mount daemon,
// in a session of its own, keeps serving until the command is done.
TEST_P(RunTest, CtrlCOnATerminalReachesTheCommandOnce) {
  std::string vol = dir_.Sub("vol");
  ASSERT_TRUE(MakeDirs(vol).ok());
  std::vector<std::string> args = ImgfsArgv(
      {"run", "-v", vol + ":/vol", kPlain, "sh", "-c",
       "trap 'echo int >> /vol/ints; sleep 0.3; cat /etc/passwd > /dev/null && exit 7' INT; "
       "echo ready > /vol/ready; while true; do sleep 0.05; done"});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string root_env = "IMGFS_ROOT=" + Root();
  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0) << "forkpty: " << strerror(errno);
  if (pid == 0) {
    putenv(root_env.data());
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
    execv(argv[0], argv.data());
    _exit(127);
  }
  // Drain the terminal so the run never blocks on output.
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    char buf[256];
    while (!stop) {
      pollfd p{master, POLLIN, 0};
      if (poll(&p, 1, 50) > 0 && read(master, buf, sizeof(buf)) <= 0) break;
    }
  });
  bool ready = WaitFor([&] { return std::filesystem::exists(vol + "/ready"); }, 30);
  int wstatus = 0;
  if (ready) {
    char ctrl_c = 0x03;
    EXPECT_EQ(write(master, &ctrl_c, 1), 1);
    WaitFor([&] { return waitpid(pid, &wstatus, WNOHANG) == pid; }, 30);
  } else {
    kill(pid, SIGKILL);
    waitpid(pid, &wstatus, 0);
  }
  stop = true;
  drain.join();
  close(master);
  ASSERT_TRUE(ready) << "the command did not start";
  ASSERT_TRUE(WIFEXITED(wstatus)) << "status " << wstatus;
  EXPECT_EQ(WEXITSTATUS(wstatus), 7);
  EXPECT_EQ(ReadAll(vol + "/ints"), "int\n");
}

TEST_P(RunTest, SigkillOfImgfsLeavesNoMountsAndNoProcesses) {
  std::string vol = dir_.Sub("vol");
  ASSERT_TRUE(MakeDirs(vol).ok());
  BackgroundProcess run(ImgfsArgv({"run", "-v", vol + ":/vol", kPlain, "sh", "-c",
                                   "sleep 1000 & echo ready > /vol/ready; wait"}),
                        {"IMGFS_ROOT=" + Root()});
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(vol + "/ready"); }, 30)) << run.err();
  // imgfs, its mount daemon, the init, the shell and the background sleep.
  std::set<pid_t> family = Descendants(run.pid());
  ASSERT_GE(family.size(), 4u);
  run.Signal(SIGKILL);
  EXPECT_EQ(run.Wait(10), 128 + 9);
  EXPECT_TRUE(WaitFor(
      [&] {
        for (pid_t p : family) {
          if (ProcessRuns(p)) return false;
        }
        return true;
      },
      10))
      << "processes of the killed run are still alive";
  EXPECT_TRUE(MountsMentioning(dir_.path()).empty());
  EXPECT_EQ(LiveLeases(), 0u);
  // The abandoned unnamed container is removed by the next listing.
  ProcessResult ps = Imgfs({"ps", "-a"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_TRUE(ContainerDirs().empty());
}

TEST_P(RunTest, NamedContainerKeepsItsUpperPsListsItRmRemovesIt) {
  ProcessResult r =
      Imgfs({"run", "--name", "t1", kPlain, "sh", "-c", "echo x > /x; rm /etc/group; mkdir /d"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string upper = Root() + "/containers/t1/upper";
  EXPECT_EQ(ReadAll(upper + "/x"), "x\n");
  struct stat st {};
  ASSERT_EQ(lstat((upper + "/etc/group").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) << "whiteout expected";
  EXPECT_TRUE(std::filesystem::is_directory(upper + "/d"));
  // Only the changes: no mountpoints of the run in the upper.
  EXPECT_FALSE(std::filesystem::exists(upper + "/proc"));
  EXPECT_FALSE(std::filesystem::exists(upper + "/dev"));
  EXPECT_TRUE(std::filesystem::exists(Root() + "/containers/t1/container.json"));

  ProcessResult ps = Imgfs({"ps"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_EQ(ps.out.find("t1"), std::string::npos) << ps.out;
  ps = Imgfs({"ps", "-a"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_EQ(ps.out.rfind("CONTAINER ID", 0), 0u) << ps.out;
  EXPECT_NE(ps.out.find("t1"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("Exited (0)"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("localhost/runimg:plain"), std::string::npos) << ps.out;

  // The name is taken; the image is pinned by the container.
  r = Imgfs({"run", "--name", "t1", kPlain, "true"});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_NE(r.err.find("is already in use"), std::string::npos) << r.err;
  r = Imgfs({"rm", kPlain});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.err.find("in use by container t1"), std::string::npos) << r.err;

  r = Imgfs({"containers", "rm", "t1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(std::filesystem::exists(Root() + "/containers/t1"));
  ps = Imgfs({"containers", "ls", "-a"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_EQ(ps.out.find("t1"), std::string::npos) << ps.out;
  r = Imgfs({"rm", kPlain});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

TEST_P(RunTest, RunningContainerIsListedAndRemovedOnlyWhenForced) {
  std::string vol = dir_.Sub("vol");
  ASSERT_TRUE(MakeDirs(vol).ok());
  BackgroundProcess run(ImgfsArgv({"run", "--name", "live", "-v", vol + ":/vol", kPlain, "sh", "-c",
                                   "echo ready > /vol/ready; sleep 1000"}),
                        {"IMGFS_ROOT=" + Root()});
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(vol + "/ready"); }, 30)) << run.err();
  ProcessResult ps = Imgfs({"ps"});
  ASSERT_EQ(ps.exit_code, 0) << ps.Describe();
  EXPECT_NE(ps.out.find("live"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("Up "), std::string::npos) << ps.out;
  ProcessResult q = Imgfs({"ps", "-q", "--no-trunc"});
  EXPECT_EQ(q.out.size(), 65u) << q.out;  // one full id and a newline

  ProcessResult r = Imgfs({"containers", "rm", "live"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("cannot remove a running container"), std::string::npos) << r.err;
  r = Imgfs({"containers", "rm", "-f", "live"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(run.Wait(10), 128 + 9);
  EXPECT_FALSE(std::filesystem::exists(Root() + "/containers/live"));
}

TEST_P(RunTest, ShellScriptWorkloads) {
  // A script of the test image, using busybox's coreutils.
  ProcessResult r = Imgfs({"run", kPlain, "workload.sh"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string data;
  for (int i = 1; i <= 5; ++i) data += "line " + std::to_string(i) + "\n";
  std::string sha = registry::Digest::Sha256Of(data).String().substr(7, 16);
  EXPECT_EQ(r.out, "5\n" + sha + "\n" + std::to_string(kApplets.size() + 1) + "\n");

  // The fixtures' image `tiny` (busybox with hardlinked applets, three layers with
  // whiteouts and an opaque directory), read and changed by its own shell.
  r = Imgfs({"pull", "oci:" + FixturePath("tiny-gzip:latest")});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = Imgfs({"run", "-w", "/etc/conf.d", "localhost/tiny-gzip", "sh", "-c",
             "for f in *; do echo \"$f\"; done; cat /data/added-in-layer2.txt; "
             "test -e /etc/issue || echo no-issue; echo changed > /data/changeme.txt; "
             "cat /data/changeme.txt; ls /data/layer3"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, std::string("new.conf\nsub\nadded in layer 2\nno-issue\nchanged\n") +
                       "gnu-long-name-gnu-long-name-gnu-long-name-gnu-long-name-gnu-long-name-"
                       "gnu-long-name-gnu-long-name-gnu-long-name-end.txt\nhardlink-a\n"
                       "hardlink-b\n");
}

TEST_P(RunTest, PullsAMissingImageFromARegistry) {
  Result<std::unique_ptr<RegistryServer>> registry = RegistryServer::Start();
  ASSERT_TRUE(registry.has_value()) << registry.error().ToString();
  Status pushed = (*registry)->PushOciLayout(dir_.Sub("runimg"), "cfg", "demo/run:1");
  ASSERT_TRUE(pushed.ok()) << pushed.ToString();
  std::string ref = (*registry)->host_port() + "/demo/run:1";
  ProcessResult r = Imgfs({"run", "--name", "pulled", ref});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "hello|/srv/app|1234:1234|/home/app|1234 5000\n");
  EXPECT_NE(r.err.find("Unable to find image '" + ref + "' locally"), std::string::npos) << r.err;
  ProcessResult ps = Imgfs({"ps", "-a"});
  EXPECT_NE(ps.out.find(ref), std::string::npos) << ps.out;
  ProcessResult images = Imgfs({"images"});
  EXPECT_NE(images.out.find((*registry)->host_port() + "/demo/run"), std::string::npos)
      << images.out;
}

INSTANTIATE_TEST_SUITE_P(Drivers, RunTest, ::testing::Values("overlay", "fuse"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param == "overlay" ? "Overlay" : "Fuse";
                         });

}  // namespace
}  // namespace imgfs::testing
