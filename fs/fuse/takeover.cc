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

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include <linux/fuse.h>

#include "base/fd_passing.h"
#include "base/log.h"
#include "fs/fuse/fd_store.h"
#include "fs/fuse/request_counts.h"
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

// The largest start record (keeper → daemon): configuration, INIT bytes, lease, image.
constexpr size_t kMaxStartBytes = 64 * 1024;
constexpr std::string_view kStartTag = "START ";

// What the keeper's signal handlers tell its loop.
volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_restart = 0;

void OnStopSignal(int) { g_stop = 1; }  // the loop passes it on to the daemon

void OnRestartSignal(int) { g_restart = 1; }

void OnChildSignal(int) {}  // interrupts the keeper's ppoll: a daemon ended

// The signals the keeper's loop waits for: blocked except inside its ppoll, so that none
// arrives between a look at the flags and the wait.
sigset_t KeeperSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, kRestartSignal, SIGCHLD}) sigaddset(&set, sig);
  return set;
}

void InstallKeeperHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR and the loop looks at g_stop
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
  struct sigaction restart {};
  restart.sa_handler = OnRestartSignal;
  sigemptyset(&restart.sa_mask);
  sigaction(kRestartSignal, &restart, nullptr);
  struct sigaction child {};
  child.sa_handler = OnChildSignal;
  sigemptyset(&child.sa_mask);
  child.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &child, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
}

// One record from the channel: its bytes and the descriptor it carried, if any. 0 at the end
// of the channel, -1 on error (errno set; EINTR and, with MSG_DONTWAIT, EAGAIN possible).
ssize_t Receive(int channel, std::string* text, UniqueFd* fd, int flags = 0,
                size_t max_bytes = kMaxInitBytes + 1024) {
  std::vector<UniqueFd> fds;
  const ssize_t n = ReceiveWithFds(channel, max_bytes, text, &fds, flags);
  if (n <= 0) return n;
  if (fds.size() > 1) {  // a record carries at most the /dev/fuse descriptor
    errno = EMSGSIZE;
    return -1;
  }
  if (!fds.empty()) *fd = std::move(fds.front());
  while (!text->empty() && text->back() == '\n' && text->rfind(kConnectionTag, 0) != 0) {
    text->pop_back();
  }
  return n;
}

// Writes `line` to `*status_fd` (where `imgfs mount` waits) and closes it; nothing when it
// was answered already.
void AnswerOnce(int* status_fd, const std::string& line) {
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
    if (in.opcode == FUSE_INIT && static_cast<size_t>(n) >= sizeof(in) + sizeof(fuse_init_in)) {
      // The mount's daemon died before it answered INIT. An error here would make the kernel
      // refuse every later request with ECONNREFUSED: accept the connection with nothing
      // negotiated, so that each request fails with EIO like any other.
      fuse_init_in init{};
      std::memcpy(&init, buf.data() + sizeof(in), sizeof(init));
      struct {
        fuse_out_header header;
        fuse_init_out init;
      } reply{};
      reply.header.len = sizeof(reply);
      reply.header.unique = in.unique;
      reply.init.major = FUSE_KERNEL_VERSION;
      reply.init.minor = std::min<uint32_t>(init.minor, FUSE_KERNEL_MINOR_VERSION);
      reply.init.max_readahead = init.max_readahead;
      reply.init.max_write = 4096;
      reply.init.time_gran = 1;
      ssize_t ignored = ::write(fuse_fd, &reply, sizeof(reply));
      (void)ignored;
      continue;
    }
    fuse_out_header out{};
    out.len = sizeof(out);
    out.error = -EIO;
    out.unique = in.unique;
    ssize_t ignored = ::write(fuse_fd, &out, sizeof(out));  // ENOENT: interrupted meanwhile
    (void)ignored;
  }
}

// Sends `bytes` as one record on `channel`, with the descriptor `fd` beside it (SCM_RIGHTS)
// unless it is -1. `what` names the message in errors.
Status SendRecord(int channel, std::string_view bytes, int fd, const char* what) {
  if (fd < 0) return SendWithFds(channel, bytes, {}, what);
  const int fds[] = {fd};
  return SendWithFds(channel, bytes, fds, what);
}

}  // namespace

Status SendConnection(int channel, int fuse_fd, std::string_view init_request) {
  if (init_request.size() > kMaxInitBytes) {
    return Status::InvalidArgument("INIT request of " + std::to_string(init_request.size()) +
                                   " bytes");
  }
  return SendRecord(channel, std::string(kConnectionTag) + std::string(init_request), fuse_fd,
                    "handing the FUSE connection over");
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

namespace {

// Sends the start record (EncodeStartRecord), with the /dev/fuse descriptor (SCM_RIGHTS) for
// a takeover.
Status SendStart(int channel, std::string_view config, const Handover* handover) {
  std::string text = EncodeStartRecord(config, handover);
  if (text.size() > kMaxStartBytes) {
    return Status::InvalidArgument("a daemon's start record of " + std::to_string(text.size()) +
                                   " bytes");
  }
  return SendRecord(channel, text, handover != nullptr ? handover->fuse_fd : -1,
                    "sending a daemon its start record");
}

// "how" a daemon ended, for log lines.
std::string HowItEnded(int wstatus, bool served, const std::string& error) {
  if (WIFSIGNALED(wstatus)) return "was killed by signal " + std::to_string(WTERMSIG(wstatus));
  return "exited with status " + std::to_string(WEXITSTATUS(wstatus)) +
         (served ? std::string() : " before serving") +
         (error.empty() ? std::string() : ": " + error);
}

// One daemon of the keeper.
struct Daemon {
  pid_t pid = -1;
  UniqueFd channel;  // closed once the daemon closed its end
  bool served = false;
  std::string error;      // its "ERR" message
  std::string lease_id;   // its mount lease
  bool stopping = false;  // sent SIGTERM (once: a second one could kill it mid-unmount)
  bool running() const { return pid > 0; }
};

// The keeper (see takeover.h): at most two daemons, the one serving (`current_`) and, during a
// restart, its successor (`next_`) until that one serves.
class Keeper {
 public:
  explicit Keeper(const KeeperOptions& options)
      : options_(options), status_fd_(options.status_fd), mountpoint_(options.mountpoint) {}

  int Run();
  // Drops the keeper's entries from the service manager's fd store (the mount has ended).
  void LeaveStore();

 private:
  // A daemon serves: the first time, the connection goes to the service manager's fd store
  // and the manager hears READY=1 (when there is one).
  void OnServing(const Daemon& d);
  // Forks (and execs) a daemon; a takeover when `handover` is set. On failure returns the
  // error and `*out` is untouched.
  Status Spawn(const Handover* handover, Daemon* out);
  // Handles every message `d` has sent so far (without waiting).
  void Drain(Daemon& d);
  // The wait status of `d` once it has ended (reaped), nullopt while it runs.
  static std::optional<int> Reap(const Daemon& d, bool wait);
  // After the serving daemon ended: nullopt when a new daemon should take the mount over,
  // else the keeper's exit status (the mount ended, or nobody can serve it any more).
  std::optional<int> AfterDeath(const Daemon& d, int wstatus);
  // Answers every request with EIO until the mount ends (with the signals unblocked: a stop
  // request interrupts its read).
  int ServeErrorsUntilUnmounted();
  // Writes `line` to `imgfs mount` (once); in the foreground, an error the daemon did not
  // print itself goes to the log.
  void Answer(const std::string& line, bool daemon_printed = false);

  const KeeperOptions& options_;
  int status_fd_;
  const std::string& mountpoint_;
  sigset_t wait_mask_{};  // the mask inside ppoll (the one RunKeeper was called with)
  UniqueFd connection_;   // daemon 1's /dev/fuse descriptor, once handed over
  Handover handover_;
  std::deque<std::chrono::steady_clock::time_point> deaths_;
  Daemon current_;
  Daemon next_;
  std::string notify_socket_;           // the service manager's (NOTIFY_SOCKET), "" if none
  bool stored_ = false;                 // our entries are in its fd store
  bool ready_ = false;                  // it heard READY=1
  SharedFuseCounts* counts_ = nullptr;  // shared with the daemons (request_counts.h)
  int counts_fd_ = -1;                  // its memfd, inherited by the daemons
};

void Keeper::OnServing(const Daemon& d) {
  if (notify_socket_.empty() || ready_) return;
  ready_ = true;
  if (!stored_ && connection_.IsValid()) {
    // Each entry on its own (FDNAME names every descriptor of its message).
    Handover state = handover_;
    state.lease_id = d.lease_id;
    Result<std::string> text = EncodeKeptState(mountpoint_, options_.kept_config, state);
    Result<UniqueFd> memfd =
        text.has_value() ? KeptStateMemfd(*text) : Result<UniqueFd>(text.error());
    std::vector<NamedFd> entries;
    if (memfd.has_value()) {
      entries.push_back({std::string(kFuseFdName), connection_.get()});
      entries.push_back({std::string(kStateFdName), memfd->get()});
      if (counts_fd_ >= 0) entries.push_back({std::string(kCountsFdName), counts_fd_});
      entries.insert(entries.end(), options_.kept_fds.begin(), options_.kept_fds.end());
    } else {
      IMGFS_LOG(kError) << "the mount at " << mountpoint_
                        << " will not outlive its keeper: " << memfd.error().ToString();
    }
    for (const NamedFd& e : entries) {
      Status st = NotifyServiceManager(notify_socket_, "FDSTORE=1\nFDNAME=" + e.name, {e.fd});
      if (!st.ok()) {
        IMGFS_LOG(kError) << "storing " << e.name << " with the service manager: " << st.ToString();
      } else {
        stored_ = true;
      }
    }
  }
  Status st = NotifyServiceManager(notify_socket_, "READY=1");
  if (!st.ok()) IMGFS_LOG(kError) << "telling the service manager: " << st.ToString();
}

void Keeper::LeaveStore() {
  if (notify_socket_.empty() || !stored_) return;
  // A connection still alive (a keeper that failed to start a daemon) stays for the next one.
  if (connection_.IsValid() && !ConnectionGone(connection_.get())) return;
  std::vector<std::string> names = {std::string(kFuseFdName), std::string(kStateFdName),
                                    std::string(kCountsFdName)};
  for (const NamedFd& e : options_.kept_fds) names.push_back(e.name);
  for (const std::string& name : names) {
    Status st = NotifyServiceManager(notify_socket_, "FDSTOREREMOVE=1\nFDNAME=" + name);
    if (!st.ok()) IMGFS_LOG(kWarning) << "the service manager's fd store: " << st.ToString();
  }
  stored_ = false;
}

void Keeper::Answer(const std::string& line, bool daemon_printed) {
  if (status_fd_ < 0) {
    if (options_.foreground && !daemon_printed && line.rfind("ERR ", 0) == 0) {
      IMGFS_LOG(kError) << line.substr(4);
    }
    return;
  }
  AnswerOnce(&status_fd_, line);
}

Status Keeper::Spawn(const Handover* handover, Daemon* out) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return Status::FromErrno(errno, "socketpair");
  }
  UniqueFd mine(pair[0]);
  UniqueFd theirs(pair[1]);
  // Everything the child needs is made before the fork (it only execs or serves). Daemon 1 of
  // a new mount serves in the forked child when it can (KeeperOptions::serve): nothing can
  // have been installed since the command started, and an exec is a few ms of every mount.
  const bool new_program = options_.daemon_argv && (handover != nullptr || !options_.serve);
  std::vector<std::string> args;
  std::vector<char*> argv;
  if (new_program) {
    args = options_.daemon_argv(theirs.get());
    if (args.empty()) return Status::InvalidArgument("no daemon program");
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
  }
  // Counted before the daemon runs: its stats never show the takeover it is not in.
  if (handover != nullptr && counts_ != nullptr) {
    counts_->takeovers.fetch_add(1, std::memory_order_relaxed);
  }
  const pid_t keeper_pid = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The daemon dies with its keeper: nothing would take it over, and a killed keeper
    // leaves the mount as a killed daemon did without one.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != keeper_pid) ::_exit(kKeeperFailed);
    mine.Close();
    if (status_fd_ >= 0) ::close(status_fd_);  // the keeper answers `imgfs mount`
    // libfuse installs its signal handlers only over the default disposition.
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, kRestartSignal, SIGCHLD}) {
      ::signal(sig, SIG_DFL);
    }
    ::sigprocmask(SIG_SETMASK, &wait_mask_, nullptr);
    if (argv.empty()) {
      ::_exit(options_.serve(theirs.get(), handover));
    }
    ::fcntl(theirs.get(), F_SETFD, 0);  // inherited across exec
    ::execv(argv[0], argv.data());
    const int exec_errno = errno;
    Status sent = SendMessage(
        theirs.get(), "ERR cannot run " + args[0] + ": " + std::string(strerror(exec_errno)));
    (void)sent;
    ::_exit(kKeeperFailed);
  }
  const int spawn_errno = errno;
  theirs.Close();
  if (pid < 0) return Status::FromErrno(spawn_errno, "starting the mount daemon");
  if (new_program) {
    Status sent = SendStart(mine.get(), options_.daemon_config, handover);
    if (!sent.ok()) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      return sent;
    }
  }
  *out = Daemon{};
  out->pid = pid;
  out->channel = std::move(mine);
  return Status::Ok();
}

void Keeper::Drain(Daemon& d) {
  while (d.channel.IsValid()) {
    std::string text;
    UniqueFd fd;
    ssize_t n = Receive(d.channel.get(), &text, &fd, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      d.channel.Close();  // the daemon closed it (it serves, or it ended)
      return;
    }
    if (text.rfind(kConnectionTag, 0) == 0) {
      if (fd.IsValid() && !connection_.IsValid()) {
        connection_ = std::move(fd);
        handover_.fuse_fd = connection_.get();
        handover_.init_request = text.substr(kConnectionTag.size());
      }
    } else if (text == "OK") {
      d.served = true;
      Answer("OK");
      OnServing(d);
    } else if (text.rfind("ERR ", 0) == 0) {
      d.error = text.substr(4);
      if (!connection_.IsValid()) Answer(text, /*daemon_printed=*/true);
    } else if (text.rfind("LEASE ", 0) == 0) {
      d.lease_id = text.substr(6);
    } else if (text.rfind("IMAGE ", 0) == 0) {
      if (handover_.image.empty()) handover_.image = text.substr(6);
    }
  }
}

std::optional<int> Keeper::Reap(const Daemon& d, bool wait) {
  int wstatus = 0;
  for (;;) {
    const pid_t r = ::waitpid(d.pid, &wstatus, wait ? 0 : WNOHANG);
    if (r == d.pid) return wstatus;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return 0;  // not our child any more: nothing to wait for
    return std::nullopt;
  }
}

int Keeper::ServeErrorsUntilUnmounted() {
  ::sigprocmask(SIG_SETMASK, &wait_mask_, nullptr);
  if (connection_.IsValid()) ServeErrors(connection_.get(), mountpoint_);
  return kKeeperFailed;
}

std::optional<int> Keeper::AfterDeath(const Daemon& d, int wstatus) {
  if (WIFEXITED(wstatus) && (d.served || !connection_.IsValid())) {
    // The mount ended (unmounted, or stopped by a signal), or daemon 1 failed before it
    // mounted anything.
    if (d.served) return WEXITSTATUS(wstatus);
    if (d.error.empty()) {
      Answer("ERR the mount daemon exited before the mount was ready (status " +
             std::to_string(WEXITSTATUS(wstatus)) + ")");
    } else {
      Answer("ERR " + d.error, /*daemon_printed=*/true);
    }
    return WEXITSTATUS(wstatus);
  }
  const std::string how = HowItEnded(wstatus, d.served, d.error);
  if (!connection_.IsValid()) {
    Answer("ERR the mount daemon " + how + " before the mount was ready");
    return kKeeperFailed;
  }
  if (ConnectionGone(connection_.get())) {
    IMGFS_LOG(kInfo) << "the daemon of " << mountpoint_ << " (pid " << d.pid << ") " << how
                     << "; the mount is gone";
    Answer("ERR the mount daemon " + how);
    return kKeeperFailed;
  }
  if (g_stop != 0 || !WIFSIGNALED(wstatus)) {
    IMGFS_LOG(kError) << "the daemon of " << mountpoint_ << " (pid " << d.pid << ") " << how
                      << (g_stop != 0 ? " while stopping" : "; no daemon can take over");
    Answer("ERR the mount daemon " + how, /*daemon_printed=*/true);
    return ServeErrorsUntilUnmounted();
  }
  const auto now = std::chrono::steady_clock::now();
  deaths_.push_back(now);
  while (!deaths_.empty() && now - deaths_.front() > options_.restart_window) deaths_.pop_front();
  if (static_cast<int>(deaths_.size()) > options_.max_restarts) {
    IMGFS_LOG(kError) << "the daemons of " << mountpoint_ << " died " << deaths_.size()
                      << " times within " << options_.restart_window.count() << " s; the last one "
                      << how;
    Answer("ERR the mount daemon " + how, /*daemon_printed=*/true);
    return ServeErrorsUntilUnmounted();
  }
  IMGFS_LOG(kWarning) << "the daemon of " << mountpoint_ << " (pid " << d.pid << ") " << how
                      << ": a new daemon takes the mount over";
  return std::nullopt;
}

int Keeper::Run() {
  InstallKeeperHandlers();
  const sigset_t waited = KeeperSignals();
  ::sigprocmask(SIG_BLOCK, &waited, &wait_mask_);
  if (options_.service_manager) notify_socket_ = ServiceManagerSocket();
  // The daemons' request counts outlive each of them: they inherit and map these (the
  // previous keeper's, when the service manager kept them).
  if (options_.resume != nullptr && options_.resume_counts_fd >= 0) {
    UniqueFd counts(::fcntl(options_.resume_counts_fd, F_DUPFD, 3));
    if (counts.IsValid() && (counts_ = MapSharedFuseCounts(counts.get())) != nullptr) {
      counts_fd_ = counts.Release();
    }
  }
  if (counts_fd_ < 0) counts_fd_ = CreateSharedFuseCounts(&counts_);
  if (counts_fd_ >= 0) {
    ::setenv(kSharedCountsEnv, std::to_string(counts_fd_).c_str(), 1);
  } else {
    IMGFS_LOG(kWarning) << "the request counts of " << mountpoint_
                        << " restart with each daemon: " << strerror(errno);
  }
  if (options_.resume != nullptr) {
    // A keeper the service manager started again: the connection is live, daemon 1 takes it
    // over, and the store holds our entries already.
    connection_ = UniqueFd(::fcntl(options_.resume->fuse_fd, F_DUPFD_CLOEXEC, 3));
    if (!connection_.IsValid()) {
      Status st = Status::FromErrno(errno, "taking over the kept connection");
      IMGFS_LOG(kError) << st.ToString();
      Answer("ERR " + st.ToString(), /*daemon_printed=*/options_.foreground);
      return kKeeperFailed;
    }
    handover_ = *options_.resume;
    handover_.fuse_fd = connection_.get();
    stored_ = !notify_socket_.empty();
    IMGFS_LOG(kInfo) << "taking over the live mount at " << mountpoint_
                     << " from the service manager's fd store";
  }
  if (Status st = Spawn(options_.resume != nullptr ? &handover_ : nullptr, &current_); !st.ok()) {
    IMGFS_LOG(kError) << st.ToString();
    Answer("ERR " + st.ToString(), /*daemon_printed=*/options_.foreground);
    return kKeeperFailed;
  }
  if (!options_.foreground) {
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
  for (;;) {
    if (g_stop != 0 && !current_.stopping) {
      // The daemon unmounts and exits; a successor still starting just ends.
      current_.stopping = true;
      ::kill(current_.pid, SIGTERM);
      if (next_.running()) ::kill(next_.pid, SIGKILL);
    }
    if (g_restart != 0 && g_stop == 0 && !next_.running() && current_.served &&
        connection_.IsValid()) {
      // An upgrade: a new daemon takes over while this one goes on serving.
      g_restart = 0;
      handover_.lease_id = current_.lease_id;
      IMGFS_LOG(kInfo) << "restarting the daemon of " << mountpoint_ << " (pid " << current_.pid
                       << ")";
      if (Status st = Spawn(&handover_, &next_); !st.ok()) {
        IMGFS_LOG(kError) << "restarting the daemon of " << mountpoint_ << ": " << st.ToString();
      }
    } else if (g_restart != 0 && next_.running()) {
      g_restart = 0;  // one restart at a time: this one runs the binary installed now
    }
    pollfd fds[2];
    nfds_t n = 0;
    for (const Daemon* d : {&current_, &next_}) {
      if (d->running() && d->channel.IsValid()) fds[n++] = pollfd{d->channel.get(), POLLIN, 0};
    }
    if (::ppoll(fds, n, nullptr, &wait_mask_) < 0 && errno != EINTR) {
      IMGFS_LOG(kError) << "the keeper of " << mountpoint_ << ": ppoll: " << strerror(errno);
    }
    Drain(current_);
    if (next_.running()) Drain(next_);

    if (next_.running() && next_.served) {
      // The new daemon serves: the old one stops, and the requests it had read come again.
      ::kill(current_.pid, SIGKILL);
      Reap(current_, /*wait=*/true);
      Status resent = NotifyResend(connection_.get());
      if (!resent.ok()) IMGFS_LOG(kWarning) << "restarting: " << resent.ToString();
      IMGFS_LOG(kInfo) << "the daemon of " << mountpoint_ << " (pid " << next_.pid
                       << ") took the mount over from pid " << current_.pid;
      current_ = std::move(next_);
      next_ = Daemon{};
      continue;
    }
    if (next_.running()) {
      if (std::optional<int> ended = Reap(next_, /*wait=*/false); ended.has_value()) {
        Drain(next_);
        IMGFS_LOG(kError) << "restarting the daemon of " << mountpoint_ << ": the new daemon (pid "
                          << next_.pid << ") " << HowItEnded(*ended, false, next_.error) << "; pid "
                          << current_.pid << " goes on serving";
        next_ = Daemon{};
      }
    }
    std::optional<int> ended = Reap(current_, /*wait=*/false);
    if (!ended.has_value()) continue;
    Drain(current_);
    if (next_.running()) {
      if (g_stop == 0 && WIFSIGNALED(*ended) && !ConnectionGone(connection_.get())) {
        // Killed during a restart: its successor, already taking over, goes on.
        IMGFS_LOG(kWarning) << "the daemon of " << mountpoint_ << " (pid " << current_.pid << ") "
                            << HowItEnded(*ended, true, "")
                            << " during a restart: the new daemon takes the mount over";
        Status resent = NotifyResend(connection_.get());
        if (!resent.ok()) IMGFS_LOG(kWarning) << "restarting: " << resent.ToString();
        current_ = std::move(next_);
        next_ = Daemon{};
        continue;
      }
      ::kill(next_.pid, SIGKILL);
      Reap(next_, /*wait=*/true);
      next_ = Daemon{};
    }
    if (std::optional<int> status = AfterDeath(current_, *ended); status.has_value()) {
      return *status;
    }
    handover_.lease_id = current_.lease_id;
    if (Status st = Spawn(&handover_, &current_); !st.ok()) {
      IMGFS_LOG(kError) << st.ToString();
      Answer("ERR " + st.ToString());
      return ServeErrorsUntilUnmounted();
    }
  }
}

}  // namespace

std::string EncodeStartRecord(std::string_view config, const Handover* handover) {
  std::string_view init;
  std::string_view lease;
  std::string_view image;
  if (handover != nullptr) {
    init = handover->init_request;
    lease = handover->lease_id;
    image = handover->image;
  }
  std::string text = std::string(kStartTag) + (handover != nullptr ? "1" : "0");
  for (std::string_view field : {config, init, lease, image}) {
    text += " " + std::to_string(field.size());
  }
  text += "\n";
  for (std::string_view field : {config, init, lease, image}) text += field;
  return text;
}

Result<DaemonStart> ParseStartRecord(std::string_view text, UniqueFd fuse_fd) {
  auto corrupt = [] { return Status::Corrupt("malformed start record from the keeper"); };
  const size_t eol = text.find('\n');
  if (text.size() > kMaxStartBytes || text.rfind(kStartTag, 0) != 0 ||
      eol == std::string_view::npos) {
    return corrupt();
  }
  // "<takeover> <n1> <n2> <n3> <n4>": decimal without leading zeros, single spaces.
  const std::string_view header = text.substr(kStartTag.size(), eol - kStartTag.size());
  size_t values[5] = {};
  const char* p = header.data();
  const char* end = header.data() + header.size();
  for (size_t i = 0; i < 5; ++i) {
    if (i > 0) {
      if (p == end || *p != ' ') return corrupt();
      ++p;
    }
    if (p == end || *p < '0' || *p > '9') return corrupt();
    auto [next, ec] = std::from_chars(p, end, values[i]);
    if (ec != std::errc() || (*p == '0' && next - p > 1)) return corrupt();
    p = next;
  }
  if (p != end || values[0] > 1) return corrupt();
  size_t offset = eol + 1;
  std::string fields[4];
  for (size_t i = 0; i < 4; ++i) {
    if (values[i + 1] > text.size() - offset) return corrupt();
    fields[i] = std::string(text.substr(offset, values[i + 1]));
    offset += values[i + 1];
  }
  if (offset != text.size()) return corrupt();
  DaemonStart start;
  start.config = std::move(fields[0]);
  start.takeover = values[0] == 1;
  if (start.takeover) {
    if (!fuse_fd.IsValid()) {
      return Status::Corrupt("a takeover's start record without its descriptor");
    }
    start.fuse_fd = std::move(fuse_fd);
    start.handover.fuse_fd = start.fuse_fd.get();
    start.handover.init_request = std::move(fields[1]);
    start.handover.lease_id = std::move(fields[2]);
    start.handover.image = std::move(fields[3]);
  } else if (!fields[1].empty() || !fields[2].empty() || !fields[3].empty()) {
    return corrupt();
  }
  return start;
}

Result<DaemonStart> ReceiveStart(int channel) {
  std::string text;
  UniqueFd fd;
  ssize_t n = -1;
  do {
    n = Receive(channel, &text, &fd, 0, kMaxStartBytes);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Status::FromErrno(errno, "reading the start record from the keeper");
  if (n == 0) return Status::Corrupt("the keeper closed the channel before the start record");
  return ParseStartRecord(text, std::move(fd));
}

void ServeErrorsUntilUnmounted(int fuse_fd, const std::string& mountpoint) {
  InstallKeeperHandlers();
  const sigset_t signals = KeeperSignals();
  ::sigprocmask(SIG_UNBLOCK, &signals, nullptr);
  ServeErrors(fuse_fd, mountpoint);
}

int RunKeeper(const KeeperOptions& options) {
  Keeper keeper(options);
  const int status = keeper.Run();
  keeper.LeaveStore();
  return status;
}

}  // namespace imgfs::fs
