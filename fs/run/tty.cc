// imgfs — the pseudo-terminal of `imgfs run -t` and its relay.
#include "fs/run/tty.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace imgfs::fs::run {
namespace {

// After the command ended, how long the final copy waits for more output when the master
// has none at hand but some slave descriptor is still open (in a run the kernel has killed
// every process of the container by then and the master reports EIO at once; the wait only
// bounds a terminal someone else still holds).
constexpr int kDrainWaitMs = 100;

// write(2) of all of `size` bytes to a descriptor in blocking mode; false on an error.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, -1);
      continue;
    }
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<Pty> Pty::Open(int pts_dir_fd) {
  UniqueFd master(::openat(pts_dir_fd, "ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master.IsValid()) return Status::FromErrno(errno, "opening the pty multiplexer");
  int unlock = 0;
  if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0) {
    return Status::FromErrno(errno, "unlocking the pty");
  }
  int number = -1;
  if (::ioctl(master.get(), TIOCGPTN, &number) != 0) {
    return Status::FromErrno(errno, "getting the pty's number");
  }
  return Pty(std::move(master), number);
}

int AttachTerminal(const char* path, uid_t uid, gid_t gid, const char** what) {
  if (::setsid() < 0) {
    *what = "setsid";
    return errno;
  }
  int fd = ::open(path, O_RDWR | O_NOCTTY | O_NOFOLLOW);
  if (fd < 0) {
    *what = "opening the terminal";
    return errno;
  }
  if (::fchown(fd, uid, gid) != 0) {
    *what = "chown of the terminal";
    return errno;
  }
  if (::ioctl(fd, TIOCSCTTY, 0) != 0) {
    *what = "TIOCSCTTY";
    return errno;
  }
  for (int target = 0; target <= 2; ++target) {
    if (::dup2(fd, target) < 0) {
      *what = "dup2 of the terminal";
      return errno;
    }
  }
  if (fd > 2) ::close(fd);
  return 0;
}

int CallerTerminal() {
  for (int fd : {STDOUT_FILENO, STDIN_FILENO, STDERR_FILENO}) {
    if (::isatty(fd) == 1) return fd;
  }
  return -1;
}

bool CopyWindowSize(int from_fd, int master_fd) {
  winsize size{};
  if (from_fd < 0 || ::ioctl(from_fd, TIOCGWINSZ, &size) != 0) return false;
  return ::ioctl(master_fd, TIOCSWINSZ, &size) == 0;
}

RawTerminal::RawTerminal(int fd) : fd_(fd) {
  if (::isatty(fd) != 1 || ::tcgetattr(fd, &saved_) != 0) return;
  termios raw = saved_;
  ::cfmakeraw(&raw);
  active_ = ::tcsetattr(fd, TCSADRAIN, &raw) == 0;
}

RawTerminal::~RawTerminal() {
  if (!active_) return;
  while (::tcsetattr(fd_, TCSADRAIN, &saved_) != 0 && errno == EINTR) {
  }
}

TtyRelay::TtyRelay(int master, int in, int out)
    : master_(master), in_(in), out_(out), in_open_(in >= 0), out_open_(out >= 0) {
  int flags = ::fcntl(master_, F_GETFL);
  if (flags >= 0) ::fcntl(master_, F_SETFL, flags | O_NONBLOCK);
}

std::optional<int> TtyRelay::Run(int control_fd,
                                 const std::function<std::optional<int>()>& on_control) {
  for (;;) {
    pollfd fds[3] = {{control_fd, POLLIN, 0}, {-1, 0, 0}, {-1, 0, 0}};
    if (master_open_) {
      fds[1].fd = master_;
      fds[1].events = POLLIN;
      if (!to_terminal_.empty() || send_eof_) fds[1].events |= POLLOUT;
    }
    // Caller input is read only while the terminal has taken what came before.
    if (in_open_ && master_open_ && to_terminal_.empty()) {
      fds[2].fd = in_;
      fds[2].events = POLLIN;
    }
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (fds[0].revents != 0) {
      if (std::optional<int> done = on_control(); done.has_value()) {
        Drain();
        return *done;
      }
    }
    if ((fds[1].revents & POLLOUT) != 0) WriteToTerminal();
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) ReadOutput();
    if (fds[2].revents != 0) ReadInput();
  }
}

void TtyRelay::ReadInput() {
  char buf[kRelayChunkBytes];
  ssize_t n = ::read(in_, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n > 0) {
    to_terminal_.append(buf, static_cast<size_t>(n));
  } else {
    // End of input (or a hung-up terminal): pass the end on once, then stop reading.
    in_open_ = false;
    send_eof_ = true;
  }
  WriteToTerminal();
}

void TtyRelay::WriteToTerminal() {
  while (!to_terminal_.empty()) {
    ssize_t n = ::write(master_, to_terminal_.data(), to_terminal_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;  // the terminal's input queue is full: later
    if (n <= 0) {
      to_terminal_.clear();  // the terminal is gone
      send_eof_ = false;
      return;
    }
    to_terminal_.erase(0, static_cast<size_t>(n));
  }
  if (!send_eof_) return;
  send_eof_ = false;
  termios t{};
  if (::tcgetattr(master_, &t) != 0 || (t.c_lflag & ICANON) == 0) return;
  if (t.c_cc[VEOF] == _POSIX_VDISABLE) return;
  to_terminal_.assign(1, static_cast<char>(t.c_cc[VEOF]));
  WriteToTerminal();
}

void TtyRelay::ReadOutput() {
  char buf[kRelayChunkBytes];
  ssize_t n = ::read(master_, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    master_open_ = false;  // EIO: every slave descriptor is closed
    return;
  }
  WriteOut(buf, static_cast<size_t>(n));
}

void TtyRelay::WriteOut(const char* data, size_t size) {
  if (out_open_ && !WriteAll(out_, data, size)) out_open_ = false;
}

void TtyRelay::Drain() {
  if (!to_terminal_.empty()) WriteToTerminal();
  char buf[kRelayChunkBytes];
  while (master_open_) {
    ssize_t n = ::read(master_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{master_, POLLIN, 0};
      if (::poll(&p, 1, kDrainWaitMs) > 0) continue;
      return;
    }
    if (n <= 0) return;
    WriteOut(buf, static_cast<size_t>(n));
  }
}

}  // namespace imgfs::fs::run
