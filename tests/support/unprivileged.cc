// imgfs tests — running parts of a test as an ordinary user (see unprivileged.h).
#include "tests/support/unprivileged.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace imgfs::testing {
namespace {

constexpr char kDevFuse[] = "/dev/fuse";
constexpr char kSystemPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Exit codes of CallAsUser's child.
constexpr int kChildCannotDrop = 126;
constexpr int kChildThrew = 125;

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

Result<UnprivilegedUser> TestUser() {
  passwd pw{};
  passwd* found = nullptr;
  char buf[4096];
  if (getpwnam_r("nobody", &pw, buf, sizeof(buf), &found) != 0 || found == nullptr) {
    return Status::NotFound("this system has no user \"nobody\"");
  }
  if (pw.pw_uid == 0) return Status::InvalidArgument("\"nobody\" is uid 0");
  return UnprivilegedUser{pw.pw_name, pw.pw_uid, pw.pw_gid};
}

Status GiveTo(const std::string& path, const UnprivilegedUser& user) {
  if (::lchown(path.c_str(), user.uid, user.gid) != 0) {
    return Status::FromErrno(errno, "chown " + path);
  }
  return Status::Ok();
}

ProcessResult RunAsUser(const UnprivilegedUser& user, const std::vector<std::string>& argv,
                        const std::vector<std::string>& env, int timeout_s) {
  std::vector<std::string> full = {"setpriv",
                                   "--reuid=" + std::to_string(user.uid),
                                   "--regid=" + std::to_string(user.gid),
                                   "--clear-groups",
                                   "--",
                                   "env",
                                   "-i"};
  bool has_path = std::any_of(env.begin(), env.end(),
                              [](const std::string& e) { return e.rfind("PATH=", 0) == 0; });
  if (!has_path) full.emplace_back(kSystemPath);
  full.insert(full.end(), env.begin(), env.end());
  full.insert(full.end(), argv.begin(), argv.end());
  return RunProcess(full, {}, {}, timeout_s);
}

Result<std::string> CallAsUser(const UnprivilegedUser& user, const std::function<std::string()>& fn,
                               int timeout_s) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    read_end.Close();
    if (setgroups(0, nullptr) != 0 || setgid(user.gid) != 0 || setuid(user.uid) != 0 ||
        getuid() != user.uid || geteuid() != user.uid) {
      _exit(kChildCannotDrop);
    }
    try {
      std::string out = fn();
      _exit(WriteAll(write_end.get(), out) ? 0 : 1);
    } catch (...) {
      _exit(kChildThrew);
    }
  }
  write_end.Close();
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0) continue;
    char buf[65536];
    ssize_t n = ::read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return Status::Internal("still running after " + std::to_string(timeout_s) + "s");
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) return out;
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == kChildCannotDrop) {
    return Status::Internal("cannot become uid " + std::to_string(user.uid));
  }
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == kChildThrew) {
    return Status::Internal("the function threw");
  }
  return Status::Internal("the child failed (wait status " + std::to_string(wstatus) + ")");
}

DevFuseMode::DevFuseMode(mode_t mode) {
  // O_NOFOLLOW and the owner check: /tmp is everyone's, and the file is trusted to hold a mode.
  int fd = ::open(kDevFuseLockPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    status_ = Status::FromErrno(errno, std::string("open ") + kDevFuseLockPath);
    return;
  }
  lock_fd_ = UniqueFd(fd);
  struct stat lock_st {};
  if (fstat(fd, &lock_st) != 0 || !S_ISREG(lock_st.st_mode) || lock_st.st_uid != geteuid()) {
    status_ = Status::PermissionDenied(std::string(kDevFuseLockPath) + " is not our regular file");
    lock_fd_.Close();
    return;
  }
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      status_ = Status::FromErrno(errno, std::string("flock ") + kDevFuseLockPath);
      lock_fd_.Close();
      return;
    }
  }
  // A record left by a guard that never restored (its test was killed) is the real original.
  char record[16] = {};
  ssize_t n = pread(fd, record, sizeof(record) - 1, 0);
  char* end = nullptr;
  long recorded = n > 0 ? std::strtol(record, &end, 8) : -1;
  struct stat dev {};
  if (::stat(kDevFuse, &dev) != 0) {
    status_ = Status::FromErrno(errno, std::string("stat ") + kDevFuse);
    return;
  }
  original_ = recorded >= 0 && recorded <= 07777 && end != record
                  ? static_cast<mode_t>(recorded)
                  : static_cast<mode_t>(dev.st_mode & 07777);
  char text[16];
  int len = snprintf(text, sizeof(text), "%o\n", static_cast<unsigned>(original_));
  if (ftruncate(fd, 0) != 0 || pwrite(fd, text, static_cast<size_t>(len), 0) != len) {
    status_ = Status::FromErrno(errno, std::string("write ") + kDevFuseLockPath);
    return;
  }
  if (::chmod(kDevFuse, mode) != 0) {
    status_ = Status::FromErrno(errno, std::string("chmod ") + kDevFuse);
    if (ftruncate(fd, 0) != 0) status_ = status_.WithContext("and cannot clear the record");
    return;
  }
  changed_ = true;
}

DevFuseMode::~DevFuseMode() { Restore(); }

void DevFuseMode::Restore() {
  if (changed_ && ::chmod(kDevFuse, original_) == 0) {
    // Restored: the record goes, so the next guard reads the device's mode again.
    if (ftruncate(lock_fd_.get(), 0) != 0) {
      // The stale record names the same original mode: harmless.
    }
  }
  changed_ = false;
  lock_fd_.Close();
}

}  // namespace imgfs::testing
