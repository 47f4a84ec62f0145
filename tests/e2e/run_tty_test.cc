// imgfs — end-to-end tests of `imgfs run -t` and `-i`: the real binary on a real terminal
// (a pty pair the test opens with posix_openpt, its slave the caller's controlling terminal)
// running the host's static busybox in an image built by the test.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/unique_fd.h"
#include "tests/support/image_builder.h"
#include "tests/support/run_support.h"

namespace imgfs::testing {
namespace {

const std::string kImgfs = IMGFS_BINARY;
const std::string kImage = "localhost/ttyimg:sh";

// The caller's side: a terminal whose slave is the controlling terminal of `imgfs run`.
class CallerTerminal {
 public:
  CallerTerminal() {
    master_ = UniqueFd(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    EXPECT_TRUE(master_.IsValid());
    EXPECT_EQ(grantpt(master_.get()), 0);
    EXPECT_EQ(unlockpt(master_.get()), 0);
    slave_path_ = ptsname(master_.get());
    // The test's own handle, to look at the termios while imgfs runs and after it ended.
    slave_ = UniqueFd(open(slave_path_.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    EXPECT_TRUE(slave_.IsValid());
  }

  void Resize(unsigned short rows, unsigned short cols) {
    winsize size{};
    size.ws_row = rows;
    size.ws_col = cols;
    ASSERT_EQ(ioctl(master_.get(), TIOCSWINSZ, &size), 0);
  }

  termios Termios() const {
    termios t{};
    EXPECT_EQ(tcgetattr(slave_.get(), &t), 0);
    return t;
  }

  // Starts `argv` as the session leader of this terminal (stdin, stdout, stderr on it).
  pid_t Start(std::vector<std::string> argv, const std::string& root) {
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::string root_env = "IMGFS_ROOT=" + root;
    pid_t pid = fork();
    if (pid == 0) {
      for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      setsid();
      int fd = open(slave_path_.c_str(), O_RDWR);
      if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) != 0) _exit(120);
      for (int target = 0; target <= 2; ++target) dup2(fd, target);
      putenv(root_env.data());
      execv(args[0], args.data());
      _exit(127);
    }
    return pid;
  }

  void Write(const std::string& text) {
    ASSERT_EQ(write(master_.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }

  // Reads the terminal until `pattern` matches what arrived since the last call (true), or
  // 30 s passed.
  bool ReadUntil(const std::string& pattern, std::smatch* match = nullptr) {
    std::regex re(pattern);
    for (int waited_ms = 0; waited_ms < 30000;) {
      std::smatch m;
      if (std::regex_search(pending_, m, re)) {
        if (match != nullptr) *match = m;
        std::string rest = m.suffix();
        pending_ = rest;
        return true;
      }
      pollfd p{master_.get(), POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) {
        waited_ms += 100;
        continue;
      }
      char buf[4096];
      ssize_t n = read(master_.get(), buf, sizeof(buf));
      if (n <= 0) return false;
      seen_.append(buf, static_cast<size_t>(n));
      pending_.append(buf, static_cast<size_t>(n));
    }
    return false;
  }

  // Drains output while waiting for `pid`; its exit status (128+N for a signal), or -1.
  int Wait(pid_t pid) {
    for (int waited_ms = 0; waited_ms < 60000; waited_ms += 20) {
      int wstatus = 0;
      if (waitpid(pid, &wstatus, WNOHANG) == pid) {
        return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
      }
      pollfd p{master_.get(), POLLIN, 0};
      if (poll(&p, 1, 20) > 0) {
        char buf[4096];
        ssize_t n = read(master_.get(), buf, sizeof(buf));
        if (n > 0) seen_.append(buf, static_cast<size_t>(n));
      }
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return -1;
  }

  const std::string& seen() const { return seen_; }

 private:
  UniqueFd master_;
  UniqueFd slave_;
  std::string slave_path_;
  std::string pending_;
  std::string seen_;
};

void ExpectSameTermios(const termios& a, const termios& b) {
  EXPECT_EQ(a.c_iflag, b.c_iflag);
  EXPECT_EQ(a.c_oflag, b.c_oflag);
  EXPECT_EQ(a.c_cflag, b.c_cflag);
  EXPECT_EQ(a.c_lflag, b.c_lflag);
  EXPECT_EQ(0, memcmp(a.c_cc, b.c_cc, sizeof(a.c_cc)));
}

class RunTtyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "imgfs run needs root";
    ASSERT_EQ(access("/dev/fuse", R_OK | W_OK), 0) << "/dev/fuse is needed for run tests";
    Result<TestLayer> layer =
        BusyboxLayer({"sh", "tty", "stty", "echo", "cat", "sleep", "test", "true"});
    ASSERT_TRUE(layer.has_value()) << layer.error().ToString();
    ImageBuilder builder(dir_.Sub("ttyimg"));
    TestImageSpec spec;
    spec.layers = {*layer};
    spec.env = {"PATH=/bin"};
    spec.cmd = {"/bin/sh"};
    ASSERT_TRUE(builder.Add(spec, "sh").has_value());
    ProcessResult r = Imgfs({"pull", "oci:" + builder.dir() + ":sh"}, "");
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }

  std::string Root() const { return dir_.Sub("store"); }

  ProcessResult Imgfs(const std::vector<std::string>& args, std::string_view stdin_data) {
    std::vector<std::string> argv = {kImgfs};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, {"IMGFS_ROOT=" + Root()}, stdin_data, 60);
  }

  TempDir dir_;
};

// `imgfs run -it IMAGE /bin/sh` on a terminal: the shell's terminal is a /dev/pts of the
// container with the caller's window size and TERM=xterm, a resize reaches it, the caller's
// terminal is raw while the run lasts and restored after it, and the exit status is the
// shell's.
TEST_F(RunTtyTest, InteractiveShellOnARealTerminal) {
  CallerTerminal term;
  term.Resize(33, 97);
  const termios before = term.Termios();
  ASSERT_NE(before.c_lflag & ICANON, 0u);
  pid_t pid = term.Start({kImgfs, "run", "-it", kImage, "/bin/sh"}, Root());
  ASSERT_GT(pid, 0);
  term.Write("tty; stty size; echo \"term=$TERM\"\n");
  std::smatch m;
  bool got_tty = term.ReadUntil(R"(\n(/dev/pts/[0-9]+)\r)", &m);
  std::string tty = got_tty ? m[1].str() : "";
  bool got_size = term.ReadUntil(R"(\n33 97\r)");
  bool got_term = term.ReadUntil(R"(\nterm=xterm\r)");
  // The caller's terminal is raw while the shell runs.
  termios during = term.Termios();
  EXPECT_EQ(during.c_lflag & (ICANON | ECHO | ISIG), 0u);
  // A resize of the caller's terminal signals imgfs (SIGWINCH), which resizes the shell's.
  term.Resize(40, 120);
  term.Write("stty size\n");
  bool got_resize = term.ReadUntil(R"(\n40 120\r)");
  term.Write("exit 3\n");
  int code = term.Wait(pid);
  EXPECT_TRUE(got_tty) << term.seen();
  EXPECT_TRUE(got_size) << term.seen();
  EXPECT_TRUE(got_term) << term.seen();
  EXPECT_TRUE(got_resize) << term.seen();
  EXPECT_EQ(code, 3) << term.seen();
  ExpectSameTermios(term.Termios(), before);
}

// SIGTERM to imgfs reaches the command; the caller's terminal is restored all the same.
TEST_F(RunTtyTest, SigtermEndsTheRunAndRestoresTheTerminal) {
  CallerTerminal term;
  const termios before = term.Termios();
  pid_t pid =
      term.Start({kImgfs, "run", "-it", kImage, "sh", "-c", "echo started; sleep 1000"}, Root());
  ASSERT_GT(pid, 0);
  bool started = term.ReadUntil("started");
  EXPECT_EQ(term.Termios().c_lflag & ICANON, 0u);
  kill(pid, SIGTERM);
  int code = term.Wait(pid);
  EXPECT_TRUE(started) << term.seen();
  EXPECT_EQ(code, 128 + SIGTERM) << term.seen();
  ExpectSameTermios(term.Termios(), before);
}

// A command that cannot start: docker's 127, and the terminal restored.
TEST_F(RunTtyTest, FailedExecRestoresTheTerminal) {
  CallerTerminal term;
  const termios before = term.Termios();
  pid_t pid = term.Start({kImgfs, "run", "-it", kImage, "/no/such/command"}, Root());
  ASSERT_GT(pid, 0);
  EXPECT_EQ(term.Wait(pid), 127) << term.seen();
  ExpectSameTermios(term.Termios(), before);
}

// -t without -i on a terminal: a pty for the command, stdin not read, the caller's termios
// untouched.
TEST_F(RunTtyTest, TtyWithoutInteractiveLeavesTheCallersTerminalAlone) {
  CallerTerminal term;
  const termios before = term.Termios();
  pid_t pid = term.Start({kImgfs, "run", "-t", kImage, "tty"}, Root());
  ASSERT_GT(pid, 0);
  bool got_tty = term.ReadUntil(R"(/dev/pts/[0-9]+)");
  int code = term.Wait(pid);
  EXPECT_TRUE(got_tty) << term.seen();
  EXPECT_EQ(code, 0) << term.seen();
  ExpectSameTermios(term.Termios(), before);
}

// No terminal on the caller's side: -t still gives the command one; -it relays stdin into it.
TEST_F(RunTtyTest, WithoutACallerTerminalTheCommandStillGetsOne) {
  ProcessResult t =
      Imgfs({"run", "-t", kImage, "sh", "-c", "tty; test -t 0 && echo in-tty"}, "ignored\n");
  EXPECT_EQ(t.exit_code, 0) << t.Describe();
  EXPECT_TRUE(std::regex_search(t.out, std::regex(R"(^/dev/pts/[0-9]+\r\nin-tty\r\n$)"))) << t.out;
  ProcessResult it = Imgfs({"run", "-it", kImage, "/bin/sh"}, "echo from-$((6*7))\nexit 4\n");
  EXPECT_EQ(it.exit_code, 4) << it.Describe();
  EXPECT_NE(it.out.find("from-42"), std::string::npos) << it.out;
}

// docker's stdin: without -i the command reads /dev/null, with -i the caller's stdin.
TEST_F(RunTtyTest, StdinIsPassedOnlyWithInteractive) {
  ProcessResult with = Imgfs({"run", "-i", kImage, "cat"}, "hello\n");
  EXPECT_EQ(with.exit_code, 0) << with.Describe();
  EXPECT_EQ(with.out, "hello\n");
  ProcessResult without = Imgfs({"run", kImage, "cat"}, "hello\n");
  EXPECT_EQ(without.exit_code, 0) << without.Describe();
  EXPECT_EQ(without.out, "");
}

}  // namespace
}  // namespace imgfs::testing
