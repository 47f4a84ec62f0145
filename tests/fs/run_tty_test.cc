// imgfs tests — fs/run/tty.h: ptys opened on the host's devpts, a real session and
// controlling terminal in a forked child, raw mode and its restoration, window sizes, and the
// relay between pipes (the caller) and a pty (the container's terminal).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "base/unique_fd.h"
#include "fs/run/tty.h"

namespace imgfs::fs::run {
namespace {

// A pty of the host's devpts with its slave open (O_NOCTTY).
struct Pair {
  Pty pty;
  UniqueFd slave;
};

Pair OpenPair() {
  UniqueFd pts(::open("/dev/pts", O_PATH | O_DIRECTORY | O_CLOEXEC));
  EXPECT_TRUE(pts.IsValid());
  Result<Pty> pty = Pty::Open(pts.get());
  EXPECT_TRUE(pty.has_value()) << pty.error().ToString();
  UniqueFd slave(::open(pty->SlavePath().c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  EXPECT_TRUE(slave.IsValid()) << pty->SlavePath() << ": " << strerror(errno);
  return Pair{std::move(*pty), std::move(slave)};
}

// Raw mode on the slave so bytes pass unchanged (no echo, no CR/LF mapping).
void MakeRaw(int fd) {
  termios t{};
  ASSERT_EQ(tcgetattr(fd, &t), 0);
  cfmakeraw(&t);
  ASSERT_EQ(tcsetattr(fd, TCSANOW, &t), 0);
}

// Reads from `fd` until `want` bytes arrived or 10 s passed.
std::string ReadUntil(int fd, size_t want) {
  std::string got;
  char buf[4096];
  while (got.size() < want) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0) break;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
    r = UniqueFd(fds[0]);
    w = UniqueFd(fds[1]);
  }
};

TEST(RunTtyTest, PtyOpensAnUnlockedPairWhoseSlaveCarriesBytes) {
  Pair p = OpenPair();
  EXPECT_GE(p.pty.number(), 0);
  EXPECT_EQ(p.pty.SlavePath(), "/dev/pts/" + std::to_string(p.pty.number()));
  MakeRaw(p.slave.get());
  ASSERT_EQ(write(p.slave.get(), "abc", 3), 3);
  EXPECT_EQ(ReadUntil(p.pty.master(), 3), "abc");
}

TEST(RunTtyTest, PtyOpenOutsideDevptsFails) {
  UniqueFd tmp(::open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC));
  EXPECT_FALSE(Pty::Open(tmp.get()).has_value());
}

// The child becomes a session leader with the slave as controlling terminal on fds 0–2.
TEST(RunTtyTest, AttachTerminalMakesTheSlaveTheControllingTerminal) {
  Pair p = OpenPair();
  std::string path = p.pty.SlavePath();
  // p.slave stays open: a master whose slave was never opened reads EIO.
  Pipe done;  // the child stays until the parent has read its output
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    done.w.Close();
    const char* what = "";
    if (AttachTerminal(path.c_str(), 4321, 4321, &what) != 0) _exit(10);
    if (isatty(0) != 1 || isatty(1) != 1 || isatty(2) != 1) _exit(11);
    if (getsid(0) != getpid() || tcgetpgrp(0) != getpid()) _exit(12);
    struct stat st {};
    if (fstat(1, &st) != 0 || st.st_uid != 4321 || st.st_gid != 4321) _exit(14);
    // /dev/tty is now this terminal: what is written there reaches the master.
    int tty = open("/dev/tty", O_RDWR);
    if (tty < 0) _exit(13);
    if (write(tty, "ok\n", 3) != 3) _exit(15);
    char c;
    if (read(done.r.get(), &c, 1) < 0) _exit(16);
    _exit(0);
  }
  done.r.Close();
  std::string out = ReadUntil(p.pty.master(), 4);  // "ok\r\n" (the slave maps NL)
  done.w.Close();
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  EXPECT_EQ(out, "ok\r\n");
}

TEST(RunTtyTest, AttachTerminalReportsAMissingSlave) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const char* what = "";
    int err = AttachTerminal("/dev/pts/999999", 0, 0, &what);
    _exit(err == ENOENT && std::string(what) == "opening the terminal" ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
}

TEST(RunTtyTest, RawTerminalSwitchesAndRestoresTheTermios) {
  Pair p = OpenPair();
  termios before{};
  ASSERT_EQ(tcgetattr(p.slave.get(), &before), 0);
  ASSERT_NE(before.c_lflag & ICANON, 0u);
  {
    RawTerminal raw(p.slave.get());
    EXPECT_TRUE(raw.active());
    termios during{};
    ASSERT_EQ(tcgetattr(p.slave.get(), &during), 0);
    EXPECT_EQ(during.c_lflag & (ICANON | ECHO | ISIG), 0u);
    EXPECT_EQ(during.c_oflag & OPOST, 0u);
  }
  termios after{};
  ASSERT_EQ(tcgetattr(p.slave.get(), &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  EXPECT_EQ(after.c_iflag, before.c_iflag);
  EXPECT_EQ(after.c_oflag, before.c_oflag);
  EXPECT_EQ(after.c_cflag, before.c_cflag);
  EXPECT_EQ(0, memcmp(after.c_cc, before.c_cc, sizeof(before.c_cc)));
}

TEST(RunTtyTest, RawTerminalLeavesANonTerminalAlone) {
  Pipe pipe;
  RawTerminal raw(pipe.r.get());
  EXPECT_FALSE(raw.active());
}

TEST(RunTtyTest, CopyWindowSizeFollowsTheCallersTerminal) {
  Pair caller = OpenPair();
  Pair inner = OpenPair();
  winsize size{};
  size.ws_row = 33;
  size.ws_col = 97;
  ASSERT_EQ(ioctl(caller.pty.master(), TIOCSWINSZ, &size), 0);
  EXPECT_TRUE(CopyWindowSize(caller.slave.get(), inner.pty.master()));
  winsize got{};
  ASSERT_EQ(ioctl(inner.slave.get(), TIOCGWINSZ, &got), 0);
  EXPECT_EQ(got.ws_row, 33);
  EXPECT_EQ(got.ws_col, 97);
  Pipe pipe;
  EXPECT_FALSE(CopyWindowSize(pipe.r.get(), inner.pty.master()));
}

// The relay between pipes and a pty whose slave side echoes everything back in raw mode
// (as `cat` on a raw terminal does), with more data than any buffer on the way holds: the
// terminal's input queue fills while its output is not read, which must not deadlock.
TEST(RunTtyTest, RelayCarriesBothWaysWithoutDeadlock) {
  Pair p = OpenPair();
  MakeRaw(p.slave.get());
  Pipe in, out, control;
  std::thread echo([fd = p.slave.get()] {
    char buf[1024];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) return;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = write(fd, buf + off, static_cast<size_t>(n - off));
        if (w <= 0) return;
        off += w;
      }
      if (memchr(buf, '!', static_cast<size_t>(n)) != nullptr) return;
    }
  });
  const size_t total = 1 << 20;
  std::string data(total - 1, 'x');
  data += '!';
  std::thread feeder([&] {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = write(in.w.get(), data.data() + off, std::min<size_t>(4096, data.size() - off));
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  });
  std::string got;
  std::thread reader([&] {
    got = ReadUntil(out.r.get(), total);
    ASSERT_EQ(write(control.w.get(), "x", 1), 1);
  });
  TtyRelay relay(p.pty.master(), in.r.get(), out.w.get());
  std::optional<int> code = relay.Run(control.r.get(), [&]() -> std::optional<int> {
    char c;
    if (read(control.r.get(), &c, 1) == 1) return 7;
    return std::nullopt;
  });
  feeder.join();
  reader.join();
  echo.join();
  EXPECT_EQ(code, 7);
  EXPECT_EQ(got.size(), total);
  EXPECT_EQ(got, data);
}

// Without -i nothing is read from the caller; after the control says stop, the output the
// terminal still held reaches `out`.
TEST(RunTtyTest, RelayWithoutInputDrainsTheTerminalAtTheEnd) {
  Pair p = OpenPair();
  MakeRaw(p.slave.get());
  Pipe in, out, control;
  ASSERT_EQ(write(in.w.get(), "not for the terminal", 20), 20);
  ASSERT_EQ(write(p.slave.get(), "last words", 10), 10);
  p.slave.Close();  // the command has ended
  ASSERT_EQ(write(control.w.get(), "x", 1), 1);
  TtyRelay relay(p.pty.master(), -1, out.w.get());
  std::optional<int> code = relay.Run(control.r.get(), [] { return std::optional<int>(3); });
  EXPECT_EQ(code, 3);
  out.w.Close();
  EXPECT_EQ(ReadUntil(out.r.get(), 100), "last words");
  char buf[64];
  EXPECT_EQ(read(in.r.get(), buf, sizeof(buf)), 20);  // still there: never read
}

// End of the caller's input reaches a canonical terminal as its EOF character: a read on the
// slave returns the pending line, then 0.
TEST(RunTtyTest, RelayPassesEndOfInputAsEofToACanonicalTerminal) {
  Pair p = OpenPair();
  termios t{};
  ASSERT_EQ(tcgetattr(p.slave.get(), &t), 0);
  t.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ASSERT_EQ(tcsetattr(p.slave.get(), TCSANOW, &t), 0);
  Pipe in, out, control;
  ASSERT_EQ(write(in.w.get(), "line\n", 5), 5);
  in.w.Close();
  std::string first, second;
  std::thread reader([&] {
    char buf[64];
    ssize_t n = read(p.slave.get(), buf, sizeof(buf));
    if (n > 0) first.assign(buf, static_cast<size_t>(n));
    n = read(p.slave.get(), buf, sizeof(buf));
    second = n == 0 ? "EOF" : "got " + std::to_string(n);
    ASSERT_EQ(write(control.w.get(), "x", 1), 1);
  });
  TtyRelay relay(p.pty.master(), in.r.get(), out.w.get());
  std::optional<int> code = relay.Run(control.r.get(), [] { return std::optional<int>(0); });
  reader.join();
  EXPECT_EQ(code, 0);
  EXPECT_EQ(first, "line\n");
  EXPECT_EQ(second, "EOF");
}

// A caller whose stdout went away: the relay keeps reading the terminal (the command never
// blocks on its output) and ends when told to.
TEST(RunTtyTest, RelaySurvivesAClosedOutput) {
  Pair p = OpenPair();
  MakeRaw(p.slave.get());
  Pipe out, control;
  out.r.Close();
  struct sigaction ignore {
  }, saved{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &saved);
  std::thread writer([&] {
    std::string chunk(4096, 'y');
    for (int i = 0; i < 64; ++i) {
      if (write(p.slave.get(), chunk.data(), chunk.size()) <= 0) break;
    }
    ASSERT_EQ(write(control.w.get(), "x", 1), 1);
  });
  TtyRelay relay(p.pty.master(), -1, out.w.get());
  std::optional<int> code = relay.Run(control.r.get(), [] { return std::optional<int>(1); });
  writer.join();
  sigaction(SIGPIPE, &saved, nullptr);
  EXPECT_EQ(code, 1);
}

}  // namespace
}  // namespace imgfs::fs::run
