// imgfs — init, command and signal forwarding of `imgfs run`.
#include "fs/run/exec.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <optional>
#include <vector>

#include <linux/close_range.h>

#include "base/unique_fd.h"
#include "fs/run/root_path.h"
#include "fs/run/sandbox.h"
#include "fs/run/tty.h"

namespace imgfs::fs::run {
namespace {

// Signals forwarded to the command.
constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

std::string ErrnoText(int err) { return std::strerror(err); }

int ExitCodeOf(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return kExitRunError;
}

// Waits for `child` while forwarding the signals of `set` to it (they are blocked by the
// caller); returns its exit status (128+N for signal N). `reap_all`: also reap every other
// child (pid 1 of a PID namespace inherits orphans).
int WaitForwarding(pid_t child, const sigset_t& set, bool reap_all) {
  for (;;) {
    siginfo_t info{};
    int sig = ::sigwaitinfo(&set, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      return kExitRunError;
    }
    if (sig == SIGCHLD) {
      for (;;) {
        int wstatus = 0;
        pid_t r = ::waitpid(reap_all ? -1 : child, &wstatus, WNOHANG);
        if (r <= 0) break;
        if (r == child) return ExitCodeOf(wstatus);
      }
      continue;  // another child (the mount daemon, an orphan) changed state
    }
    // A terminal's signal (si_code SI_KERNEL) went to the whole foreground process group,
    // the command included; anything else is forwarded.
    if (info.si_code == SI_KERNEL && (sig == SIGINT || sig == SIGQUIT || sig == SIGWINCH)) {
      continue;
    }
    ::kill(child, sig);
  }
}

// SIGPIPE ignored for the object's lifetime: a caller's stdout that went away must not kill
// imgfs while the caller's terminal is raw (the relay sees EPIPE instead). The command gets
// the default back (ExecCommand resets every signal).
class IgnoreSigpipe {
 public:
  IgnoreSigpipe() {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, &saved_);
  }
  IgnoreSigpipe(const IgnoreSigpipe&) = delete;
  IgnoreSigpipe& operator=(const IgnoreSigpipe&) = delete;
  ~IgnoreSigpipe() { ::sigaction(SIGPIPE, &saved_, nullptr); }

 private:
  struct sigaction saved_ {};
};

// A new pty on the devpts instance at the rootfs's /dev/pts (made by RunSession: nothing of
// the image is on that path, and it is resolved inside the rootfs all the same).
Result<Pty> OpenContainerPty(const std::string& rootfs) {
  UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.IsValid()) return Status::FromErrno(errno, "opening the rootfs");
  IMGFS_ASSIGN_OR_RETURN(UniqueFd pts, OpenInRoot(root.get(), "/dev/pts"));
  return Pty::Open(pts.get());
}

// WaitForwarding for a run with a terminal: relays it (fs/run/tty.h) while waiting for
// `child`; the signals come through `signal_fd` (a signalfd of `set`). SIGWINCH resizes the
// pty to the caller's terminal (the kernel then signals the command's foreground group);
// every other signal is forwarded, a terminal's too: the command is not in the caller's
// foreground process group.
int WaitRelaying(pid_t child, const sigset_t& set, int signal_fd, const Pty& pty,
                 bool interactive) {
  const int caller = CallerTerminal();
  TtyRelay relay(pty.master(), interactive ? STDIN_FILENO : -1, STDOUT_FILENO);
  auto on_signal = [&]() -> std::optional<int> {
    signalfd_siginfo info{};
    while (::read(signal_fd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGCHLD) {
        int wstatus = 0;
        if (::waitpid(child, &wstatus, WNOHANG) == child) return ExitCodeOf(wstatus);
      } else if (sig == SIGWINCH) {
        CopyWindowSize(caller, pty.master());
      } else {
        ::kill(child, sig);
      }
    }
    return std::nullopt;
  };
  std::optional<int> code = relay.Run(signal_fd, on_signal);
  return code.has_value() ? *code : WaitForwarding(child, set, /*reap_all=*/false);
}

// Everything the command's process needs, prepared before any fork.
struct ExecPlan {
  const ContainerProcess* where = nullptr;
  std::string file;
  std::vector<std::string> candidates;  // paths to try, in PATH order
  std::vector<std::string> argv_storage;
  std::vector<std::string> env_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
  std::string workdir;
  ExecUser user;
  std::string terminal;      // -t: the slave's path inside the container
  int terminal_master = -1;  // imgfs's end, closed in the init
};

// Writes "CODE\tmessage" to `err_fd` and exits with CODE.
[[noreturn]] void Fail(int err_fd, int code, const std::string& message) {
  std::string line = std::to_string(code) + "\t" + message;
  ssize_t ignored = ::write(err_fd, line.data(), line.size());
  (void)ignored;
  ::_exit(code);
}

// The command's side of the fork: confinement, credentials, chdir, exec. Never returns.
[[noreturn]] void ExecCommand(const ExecPlan& plan, int err_fd) {
  for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  const Confinement& c = plan.where->confinement;
  const char* what = "";
  if (!plan.terminal.empty()) {
    if (int err = AttachTerminal(plan.terminal.c_str(), plan.user.uid, plan.user.gid, &what);
        err != 0) {
      Fail(err_fd, kExitRunError, std::string(what) + ": " + ErrnoText(err));
    }
  } else if (!plan.where->interactive) {
    // docker without -i: the command reads nothing from the caller.
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0) {
      Fail(err_fd, kExitRunError, "opening /dev/null as stdin: " + ErrnoText(errno));
    }
    if (null_fd != STDIN_FILENO) ::close(null_fd);
  }
  if (int err = ApplyBeforeUserSwitch(c, &what); err != 0) {
    Fail(err_fd, kExitRunError, std::string(what) + ": " + ErrnoText(err));
  }
  if (::setgroups(plan.user.groups.size(), plan.user.groups.data()) != 0) {
    Fail(err_fd, kExitRunError, "setgroups: " + ErrnoText(errno));
  }
  if (::setgid(plan.user.gid) != 0) Fail(err_fd, kExitRunError, "setgid: " + ErrnoText(errno));
  if (::setuid(plan.user.uid) != 0) Fail(err_fd, kExitRunError, "setuid: " + ErrnoText(errno));
  if (int err = ApplyAfterUserSwitch(c, &what); err != 0) {
    Fail(err_fd, kExitRunError, std::string(what) + ": " + ErrnoText(err));
  }
  if (::chdir(plan.workdir.c_str()) != 0) {
    Fail(err_fd, kExitRunError,
         "chdir to the working directory " + plan.workdir + ": " + ErrnoText(errno));
  }
  int denied = 0;
  int last = ENOENT;
  for (const std::string& candidate : plan.candidates) {
    ::execve(candidate.c_str(), plan.argv.data(), plan.envp.data());
    last = errno;
    if (errno == EACCES || errno == ENOEXEC || errno == EISDIR) denied = errno;
  }
  if (denied != 0) {
    Fail(err_fd, kExitNotExecutable, "exec: \"" + plan.file + "\": " + ErrnoText(denied));
  }
  if (plan.file.find('/') != std::string::npos) {
    Fail(err_fd, kExitNotFound, "exec: \"" + plan.file + "\": " + ErrnoText(last));
  }
  Fail(err_fd, kExitNotFound, "exec: \"" + plan.file + "\": executable file not found in $PATH");
}

// pid 1 of the command's namespaces: host name, loopback, /proc and /sys, pivot_root, then forks
// the command, forwards signals to it, reaps orphans, and exits with the command's status.
[[noreturn]] void RunInit(const ExecPlan& plan, UniqueFd err_write, const sigset_t& set) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The terminal's master is imgfs's: the container never holds it.
  if (plan.terminal_master >= 0) ::close(plan.terminal_master);
  const ContainerProcess& where = *plan.where;
  const int err_fd = err_write.get();
  if (!where.hostname.empty() && ::sethostname(where.hostname.data(), where.hostname.size()) != 0) {
    Fail(err_fd, kExitRunError, "sethostname " + where.hostname + ": " + ErrnoText(errno));
  }
  if (where.network == NetworkMode::kNone) {
    if (Status st = BringUpLoopback(); !st.ok()) Fail(err_fd, kExitRunError, st.ToString());
  }
  UniqueFd rootfs(::open(where.rootfs.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!rootfs.IsValid()) Fail(err_fd, kExitRunError, "opening the rootfs: " + ErrnoText(errno));
  if (Status st = MountKernelFileSystems(rootfs.get(), where.confinement.confine); !st.ok()) {
    Fail(err_fd, kExitRunError, "mounting /proc and /sys: " + st.ToString());
  }
  if (Status st = EnterRoot(rootfs.get()); !st.ok()) {
    Fail(err_fd, kExitRunError, "entering the rootfs: " + st.ToString());
  }
  rootfs.Close();
  // No descriptor of imgfs (the store, a lock, a pipe) may reach the command: a directory
  // fd from outside the root would be a way out of it.
  ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
  pid_t pid = ::fork();
  if (pid < 0) Fail(err_fd, kExitRunError, "fork: " + ErrnoText(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ExecCommand(plan, err_fd);
  }
  err_write.Close();
  ::_exit(WaitForwarding(pid, set, /*reap_all=*/true));
}

}  // namespace

sigset_t RunSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kForwardedSignals) sigaddset(&set, s);
  sigaddset(&set, SIGCHLD);
  return set;
}

int RunCommand(const ContainerProcess& where, const ProcessSpec& spec, const ExecUser& user) {
  const sigset_t set = RunSignals();
  ExecPlan plan;
  plan.where = &where;
  plan.file = spec.argv[0];
  if (plan.file.find('/') != std::string::npos) {
    plan.candidates.push_back(plan.file);
  } else {
    std::string path = GetEnv(spec.env, "PATH");
    size_t start = 0;
    for (;;) {
      size_t colon = path.find(':', start);
      std::string dir = path.substr(start, colon == std::string::npos ? colon : colon - start);
      if (dir.empty()) dir = ".";
      plan.candidates.push_back(dir + "/" + plan.file);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  plan.argv_storage = spec.argv;
  for (std::string& a : plan.argv_storage) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);
  plan.env_storage = spec.env;
  for (std::string& e : plan.env_storage) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);
  plan.workdir = spec.workdir;
  plan.user = user;

  // -t: the pty, and the signals as a descriptor for the relay's poll loop.
  std::optional<Pty> pty;
  UniqueFd signal_fd;
  if (where.tty) {
    Result<Pty> opened = OpenContainerPty(where.rootfs);
    if (!opened.has_value()) {
      std::cerr << "imgfs: " << opened.error().ToString() << std::endl;
      return kExitRunError;
    }
    pty.emplace(std::move(*opened));
    plan.terminal = pty->SlavePath();
    plan.terminal_master = pty->master();
    CopyWindowSize(CallerTerminal(), pty->master());
    signal_fd = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd.IsValid()) {
      std::cerr << "imgfs: signalfd: " << ErrnoText(errno) << std::endl;
      return kExitRunError;
    }
  }

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    std::cerr << "imgfs: pipe: " << ErrnoText(errno) << std::endl;
    return kExitRunError;
  }
  UniqueFd err_read(err_pipe[0]);
  UniqueFd err_write(err_pipe[1]);

  // A signal that arrived while the run was being set up ends it before the command starts.
  timespec no_wait{};
  sigset_t stop_set;
  sigemptyset(&stop_set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&stop_set, s);
  if (int sig = ::sigtimedwait(&stop_set, nullptr, &no_wait); sig > 0) return 128 + sig;

  std::cout.flush();
  std::cerr.flush();
  // Restored on every return below (the children leave by _exit and never restore).
  std::optional<IgnoreSigpipe> no_sigpipe;
  std::optional<RawTerminal> raw;
  if (where.tty) {
    no_sigpipe.emplace();
    if (where.interactive) raw.emplace(STDIN_FILENO);
  }
  // clone(2) with no new stack behaves like fork(2). (unshare(CLONE_NEWPID) would also move
  // every later child of this process into the namespace, which cannot take new processes
  // once its init has exited.) The mount namespace is new so that pivot_root changes
  // nothing for imgfs and its mount daemon.
  uint64_t flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
  if (where.network == NetworkMode::kNone) flags |= CLONE_NEWNET;
  pid_t pid = static_cast<pid_t>(::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr));
  if (pid < 0) {
    int err = errno;
    std::cerr << "imgfs: clone (new namespaces): " << ErrnoText(err) << std::endl;
    return kExitRunError;
  }
  if (pid == 0) {
    err_read.Close();
    RunInit(plan, std::move(err_write), set);
  }
  err_write.Close();
  std::string failure;
  char buf[1024];
  for (;;) {
    ssize_t n = ::read(err_read.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    failure.append(buf, static_cast<size_t>(n));
  }
  // The command has opened its terminal by now (or failed before it could).
  int exit_code = pty.has_value() ? WaitRelaying(pid, set, signal_fd.get(), *pty, where.interactive)
                                  : WaitForwarding(pid, set, /*reap_all=*/false);
  raw.reset();
  if (!failure.empty()) {
    size_t tab = failure.find('\t');
    std::cerr << "imgfs: " << (tab == std::string::npos ? failure : failure.substr(tab + 1))
              << std::endl;
  }
  return exit_code;
}

}  // namespace imgfs::fs::run
