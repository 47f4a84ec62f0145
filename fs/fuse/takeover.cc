// imgfs — the keeper of a FUSE connection and the raw protocol a takeover needs (see
// takeover.h).
#include "fs/fuse/takeover.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include <linux/fuse.h>

#include "base/log.h"
#include "fs/fuse/session.h"

namespace imgfs::fs {
namespace {

// Linux include/uapi/linux/fuse.h, protocol 7.40 (Linux 6.9): "notify_resend". The headers
// this builds against may be older.
constexpr int32_t kFuseNotifyResend = 7;

// The largest INIT request we accept from a daemon (the kernel's is 104 bytes in 7.40).
constexpr size_t kMaxInitBytes = 4096;
constexpr std::string_view kConnectionTag = "CONN\n";

// A request buffer large enough for any request of a connection libfuse negotiated: the kernel
// refuses reads into less than max_write + headers, and libfuse 3.14 asks for 1 MiB writes at
// most (FUSE_MAX_MAX_PAGES pages).
constexpr size_t kRequestBufferBytes = (2u << 20) + 4096;

// The keeper's state its signal handler reads.
std::atomic<pid_t> g_daemon{0};
volatile sig_atomic_t g_stop = 0;

void OnStopSignal(int) {
  g_stop = 1;
  const pid_t pid = g_daemon.load();
  if (pid > 0) ::kill(pid, SIGTERM);
}

void InstallStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR and the loop looks at g_stop
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
}

// One record from the channel: its bytes and the descriptor it carried, if any. 0 at the end
// of the channel, -1 on error (errno set; EINTR possible).
ssize_t Receive(int channel, std::string* text, UniqueFd* fd) {
  std::vector<char> buf(kMaxInitBytes + 1024);
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      int received = -1;
      std::memcpy(&received, CMSG_DATA(c), sizeof(int));
      *fd = UniqueFd(received);
    }
  }
  text->assign(buf.data(), static_cast<size_t>(n));
  while (!text->empty() && text->back() == '\n' && text->rfind(kConnectionTag, 0) != 0) {
    text->pop_back();
  }
  return n;
}

// Writes `line` to `*status_fd` (where `imgfs mount` waits) and closes it; nothing when it
// was answered already.
void Answer(int* status_fd, const std::string& line) {
  if (*status_fd < 0) return;
  std::string text = line + "\n";
  ssize_t ignored = ::write(*status_fd, text.data(), text.size());
  (void)ignored;
  ::close(*status_fd);
  *status_fd = -1;
}

// Answers every request of the connection with EIO until it ends (the mount is unmounted or
// the keeper is asked to stop: then it unmounts lazily first).
void ServeErrors(int fuse_fd, const std::string& mountpoint) {
  IMGFS_LOG(kError) << "the mount at " << mountpoint
                    << " has no daemon any more: every request fails with EIO until it is "
                       "unmounted (imgfs umount "
                    << mountpoint << ")";
  Status resent = NotifyResend(fuse_fd);
  if (!resent.ok()) IMGFS_LOG(kWarning) << "requeueing requests: " << resent.ToString();
  bool unmounted = false;
  std::vector<char> buf(kRequestBufferBytes);
  for (;;) {
    if (g_stop != 0 && !unmounted) {
      unmounted = true;
      Status st = Unmount(mountpoint, /*lazy=*/true);
      if (!st.ok()) IMGFS_LOG(kWarning) << "unmounting " << mountpoint << ": " << st.ToString();
    }
    ssize_t n = ::read(fuse_fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
      if (errno != ENODEV) {
        IMGFS_LOG(kError) << "reading FUSE requests of " << mountpoint << ": " << strerror(errno);
      }
      return;
    }
    if (static_cast<size_t>(n) < sizeof(fuse_in_header)) continue;
    fuse_in_header in{};
    std::memcpy(&in, buf.data(), sizeof(in));
    if (in.opcode == FUSE_FORGET || in.opcode == FUSE_BATCH_FORGET || in.opcode == FUSE_INTERRUPT) {
      continue;  // no reply expected
    }
    fuse_out_header out{};
    out.len = sizeof(out);
    out.error = -EIO;
    out.unique = in.unique;
    ssize_t ignored = ::write(fuse_fd, &out, sizeof(out));  // ENOENT: interrupted meanwhile
    (void)ignored;
  }
}

}  // namespace

Status SendConnection(int channel, int fuse_fd, std::string_view init_request) {
  if (init_request.size() > kMaxInitBytes) {
    return Status::InvalidArgument("INIT request of " + std::to_string(init_request.size()) +
                                   " bytes");
  }
  std::string text = std::string(kConnectionTag) + std::string(init_request);
  iovec iov{text.data(), text.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fuse_fd, sizeof(int));
  for (;;) {
    if (::sendmsg(channel, &msg, MSG_NOSIGNAL) >= 0) return Status::Ok();
    if (errno != EINTR) return Status::FromErrno(errno, "handing the FUSE connection over");
  }
}

Status SendMessage(int channel, std::string_view message) {
  for (;;) {
    if (::send(channel, message.data(), message.size(), MSG_NOSIGNAL) >= 0) return Status::Ok();
    if (errno != EINTR) return Status::FromErrno(errno, "writing to the keeper");
  }
}

Status NotifyResend(int fuse_fd) {
  fuse_out_header out{};
  out.len = sizeof(out);
  out.error = kFuseNotifyResend;  // a notification: unique 0, error = its code
  out.unique = 0;
  if (::write(fuse_fd, &out, sizeof(out)) == static_cast<ssize_t>(sizeof(out))) {
    return Status::Ok();
  }
  if (errno == EINVAL || errno == ENOSYS) {
    return Status::Unsupported(
        "the kernel cannot resend the requests a dead daemon had read (FUSE_NOTIFY_RESEND "
        "needs Linux 6.9): their processes wait until the mount goes away");
  }
  return Status::FromErrno(errno, "FUSE_NOTIFY_RESEND");
}

bool ConnectionGone(int fuse_fd) {
  pollfd p{fuse_fd, 0, 0};  // POLLERR is reported whatever is asked
  if (::poll(&p, 1, 0) < 0) return false;
  return (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

int RunKeeper(const KeeperOptions& options) {
  InstallStopHandlers();
  int status_fd = options.status_fd;
  const std::string& mountpoint = options.mountpoint;
  UniqueFd connection;  // daemon 1's /dev/fuse descriptor, once handed over
  Handover handover;
  std::deque<std::chrono::steady_clock::time_point> deaths;
  bool first = true;
  for (;;) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      Status st = Status::FromErrno(errno, "socketpair");
      Answer(&status_fd, "ERR " + st.ToString());
      if (connection.IsValid()) ServeErrors(connection.get(), mountpoint);
      return kKeeperFailed;
    }
    UniqueFd mine(pair[0]);
    UniqueFd theirs(pair[1]);
    const pid_t keeper_pid = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
      // The daemon dies with its keeper: nothing would take it over, and a killed keeper
      // leaves the mount as a killed daemon did without one.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != keeper_pid) ::_exit(kKeeperFailed);
      mine.Close();
      if (status_fd >= 0) ::close(status_fd);  // the keeper answers `imgfs mount`
      // libfuse installs its signal handlers only over the default disposition.
      for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
      ::_exit(options.serve(theirs.get(), connection.IsValid() ? &handover : nullptr));
    }
    const int spawn_errno = errno;
    theirs.Close();
    if (pid < 0) {
      Status st = Status::FromErrno(spawn_errno, "starting the mount daemon");
      IMGFS_LOG(kError) << st.ToString();
      Answer(&status_fd, "ERR " + st.ToString());
      if (connection.IsValid()) ServeErrors(connection.get(), mountpoint);
      return kKeeperFailed;
    }
    g_daemon.store(pid);
    if (g_stop != 0) ::kill(pid, SIGTERM);
    if (first) {
      first = false;
      // Daemon 1 writes to the terminal of `imgfs mount` until it serves; the keeper never
      // does, and must not keep it open (whoever waits for the command's output).
      int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      if (devnull >= 0) {
        ::dup2(devnull, STDIN_FILENO);
        ::dup2(devnull, STDOUT_FILENO);
        ::dup2(devnull, STDERR_FILENO);
        ::close(devnull);
      }
    }

    bool served = false;
    std::string error;
    for (;;) {
      std::string text;
      UniqueFd fd;
      ssize_t n = Receive(mine.get(), &text, &fd);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (text.rfind(kConnectionTag, 0) == 0) {
        if (fd.IsValid() && !connection.IsValid()) {
          connection = std::move(fd);
          handover.fuse_fd = connection.get();
          handover.init_request = text.substr(kConnectionTag.size());
        }
      } else if (text == "OK") {
        served = true;
        Answer(&status_fd, "OK");
      } else if (text.rfind("ERR ", 0) == 0) {
        error = text.substr(4);
        if (!connection.IsValid()) Answer(&status_fd, text);
      } else if (text.rfind("LEASE ", 0) == 0) {
        handover.lease_id = text.substr(6);
      } else if (text.rfind("IMAGE ", 0) == 0) {
        handover.image = text.substr(6);
      }
    }
    mine.Close();
    int wstatus = 0;
    while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    g_daemon.store(0);

    if (WIFEXITED(wstatus) && (served || !connection.IsValid())) {
      // The mount ended (unmounted, or stopped by a signal), or daemon 1 failed before it
      // mounted anything.
      Answer(&status_fd, "ERR " + (error.empty() ? "the mount daemon exited before the mount "
                                                   "was ready (status " +
                                                       std::to_string(WEXITSTATUS(wstatus)) + ")"
                                                 : error));
      return WEXITSTATUS(wstatus);
    }
    const std::string how = WIFSIGNALED(wstatus)
                                ? "was killed by signal " + std::to_string(WTERMSIG(wstatus))
                                : "exited with status " + std::to_string(WEXITSTATUS(wstatus)) +
                                      " before serving" +
                                      (error.empty() ? std::string() : ": " + error);
    if (!connection.IsValid()) {
      Answer(&status_fd, "ERR the mount daemon " + how + " before the mount was ready");
      return kKeeperFailed;
    }
    if (ConnectionGone(connection.get())) {
      IMGFS_LOG(kInfo) << "the daemon of " << mountpoint << " (pid " << pid << ") " << how
                       << "; the mount is gone";
      Answer(&status_fd, "ERR the mount daemon " + how);
      return kKeeperFailed;
    }
    if (g_stop != 0 || !WIFSIGNALED(wstatus)) {
      IMGFS_LOG(kError) << "the daemon of " << mountpoint << " (pid " << pid << ") " << how
                        << (g_stop != 0 ? " while stopping" : "; no daemon can take over");
      Answer(&status_fd, "ERR the mount daemon " + how);
      ServeErrors(connection.get(), mountpoint);
      return kKeeperFailed;
    }
    const auto now = std::chrono::steady_clock::now();
    deaths.push_back(now);
    while (!deaths.empty() && now - deaths.front() > options.restart_window) deaths.pop_front();
    if (static_cast<int>(deaths.size()) > options.max_restarts) {
      IMGFS_LOG(kError) << "the daemons of " << mountpoint << " died " << deaths.size()
                        << " times within " << options.restart_window.count() << " s; the last one "
                        << how;
      Answer(&status_fd, "ERR the mount daemon " + how);
      ServeErrors(connection.get(), mountpoint);
      return kKeeperFailed;
    }
    IMGFS_LOG(kWarning) << "the daemon of " << mountpoint << " (pid " << pid << ") " << how
                        << ": a new daemon takes the mount over";
  }
}

}  // namespace imgfs::fs
