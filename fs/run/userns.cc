// imgfs — the user namespace of a rootless run.
#include "fs/run/userns.h"

#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <sstream>
#include <string_view>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace imgfs::fs::run {
namespace {

// The largest id plus one: (uid_t)-1 is no id.
constexpr uint64_t kIdLimit = 4294967295u;
// What is kept of newuidmap's and newgidmap's messages.
constexpr size_t kMaxHelperOutput = 4096;

// Exit statuses of the helper process.
constexpr int kHelperOk = 0;
constexpr int kHelperAborted = 1;  // the parent gave up before asking
constexpr int kHelperUidMapFailed = 2;
constexpr int kHelperGidMapFailed = 3;

// The number in a /proc/sys file, or -1 when it cannot be read.
int64_t ReadSysctl(const std::string& path) {
  Result<std::string> text = ReadFile(path);
  if (!text.has_value()) return -1;
  std::string_view digits(*text);
  while (!digits.empty() && (digits.back() == '\n' || digits.back() == ' ')) {
    digits.remove_suffix(1);
  }
  int64_t v = -1;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  return ec == std::errc() && end == digits.data() + digits.size() ? v : -1;
}

std::vector<std::string> MapArgs(const std::string& tool, pid_t pid,
                                 const std::vector<IdMapping>& maps) {
  std::vector<std::string> args = {tool, std::to_string(pid)};
  for (const IdMapping& m : maps) {
    args.push_back(std::to_string(m.inside));
    args.push_back(std::to_string(m.outside));
    args.push_back(std::to_string(m.count));
  }
  return args;
}

// Runs argv (prepared by the caller) and returns whether it exited with 0. In the helper:
// fork, exec, wait only.
bool RunTool(std::vector<char*>& argv) {
  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
}

std::vector<char*> Pointers(std::vector<std::string>& args) {
  std::vector<char*> out;
  out.reserve(args.size() + 1);
  for (std::string& a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

std::string FirstExisting(const std::vector<std::string>& candidates) {
  for (const std::string& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  return candidates.front();
}

}  // namespace

std::vector<IdMapping> RootlessMappings(uint32_t caller,
                                        const std::vector<SubordinateRange>& ranges) {
  std::vector<IdMapping> out = {{0, caller, 1}};
  uint64_t next = 1;
  for (const SubordinateRange& r : ranges) {
    if (next >= kIdLimit) break;
    uint64_t count = std::min<uint64_t>(r.count, kIdLimit - next);
    out.push_back({static_cast<uint32_t>(next), r.start, static_cast<uint32_t>(count)});
    next += count;
  }
  return out;
}

RootlessHost RootlessHost::Current() {
  RootlessHost host;
  host.uid = ::getuid();
  host.gid = ::getgid();
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(host.uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    host.user_name = pw.pw_name;
  }
  host.newuidmap = FirstExisting({"/usr/bin/newuidmap", "/bin/newuidmap"});
  host.newgidmap = FirstExisting({"/usr/bin/newgidmap", "/bin/newgidmap"});
  return host;
}

Result<RootlessMaps> PlanRootlessMaps(const RootlessHost& host) {
  const std::string who =
      host.user_name.empty() ? "uid " + std::to_string(host.uid) : host.user_name;
  if (ReadSysctl(host.max_user_namespaces) == 0) {
    return Status::Unsupported(
        "user namespaces are disabled (" + host.max_user_namespaces +
        " is 0), and imgfs run without root needs one: an administrator can enable them with "
        "`sysctl -w user.max_user_namespaces=15000`, or run as root");
  }
  if (ReadSysctl(host.unprivileged_userns_clone) == 0) {
    return Status::Unsupported("user namespaces are disabled for users other than root (" +
                               host.unprivileged_userns_clone +
                               " is 0): an administrator can enable them with `sysctl -w "
                               "kernel.unprivileged_userns_clone=1`, or run as root");
  }
  for (const std::string& tool : {host.newuidmap, host.newgidmap}) {
    if (::access(tool.c_str(), X_OK) != 0) {
      return Status::Unavailable(
          tool +
          " is not installed: imgfs run without root maps the image's users with "
          "newuidmap and newgidmap; install the uidmap package (Debian: apt-get install "
          "uidmap), or run as root");
    }
  }
  RootlessMaps maps;
  struct Source {
    const std::string* path;
    uint32_t id;
    std::vector<IdMapping>* out;
    const char* kind;
    const char* flag;
  };
  const Source sources[] = {{&host.subuid, host.uid, &maps.uids, "uid", "--add-subuids"},
                            {&host.subgid, host.gid, &maps.gids, "gid", "--add-subgids"}};
  for (const Source& s : sources) {
    Result<std::vector<SubordinateRange>> ranges =
        ReadSubordinateRanges(*s.path, host.user_name, host.uid);
    if (!ranges.has_value() && ranges.error().code() != StatusCode::kNotFound) {
      return ranges.error();
    }
    if (!ranges.has_value() || ranges->empty()) {
      const std::string name = host.user_name.empty() ? std::to_string(host.uid) : host.user_name;
      return Status::PermissionDenied(
          "no subordinate " + std::string(s.kind) + " range for " + who + " in " + *s.path +
          ": imgfs run without root maps the image's users to it; add a range to " + *s.path +
          ", e.g. `usermod " + s.flag + " 100000-165535 " + name +
          "` (as root; podman needs the same), or run as root");
    }
    *s.out = RootlessMappings(s.id, *ranges);
  }
  return maps;
}

Status EnterUserNamespace(const RootlessHost& host, const RootlessMaps& maps) {
  int go_pipe[2];
  int out_pipe[2];
  if (::pipe2(go_pipe, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd go_read(go_pipe[0]);
  UniqueFd go_write(go_pipe[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd out_read(out_pipe[0]);
  UniqueFd out_write(out_pipe[1]);
  // Everything the helper needs, made before it is forked.
  const pid_t self = ::getpid();
  std::vector<std::string> uid_args = MapArgs(host.newuidmap, self, maps.uids);
  std::vector<std::string> gid_args = MapArgs(host.newgidmap, self, maps.gids);
  std::vector<char*> uid_argv = Pointers(uid_args);
  std::vector<char*> gid_argv = Pointers(gid_args);
  pid_t helper = ::fork();
  if (helper < 0) return Status::FromErrno(errno, "fork");
  if (helper == 0) {
    go_write.Close();
    out_read.Close();
    ::dup2(out_write.get(), STDOUT_FILENO);
    ::dup2(out_write.get(), STDERR_FILENO);
    char byte = 0;
    ssize_t n = 0;
    do {
      n = ::read(go_read.get(), &byte, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(kHelperAborted);
    if (!RunTool(uid_argv)) ::_exit(kHelperUidMapFailed);
    if (!RunTool(gid_argv)) ::_exit(kHelperGidMapFailed);
    ::_exit(kHelperOk);
  }
  go_read.Close();
  out_write.Close();
  Status st = Status::Ok();
  if (::unshare(CLONE_NEWUSER) != 0) {
    int err = errno;
    st = Status::FromErrno(err, "unshare (new user namespace)");
    if (err == ENOSPC) {
      st = Status::Unsupported("no user namespace left (" + host.max_user_namespaces +
                               " reached): " + st.message());
    }
  } else {
    char byte = 1;
    if (::write(go_write.get(), &byte, 1) != 1) st = Status::FromErrno(errno, "waking the helper");
  }
  go_write.Close();  // the helper gives up when it was not asked
  std::string output;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(out_read.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < kMaxHelperOutput) output.append(buf, static_cast<size_t>(n));
  }
  int wstatus = 0;
  while (::waitpid(helper, &wstatus, 0) < 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "waiting for the uid map helper");
  }
  if (!st.ok()) return st;
  const int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (code != kHelperOk) {
    const std::string& tool = code == kHelperGidMapFailed ? host.newgidmap : host.newuidmap;
    return Status::PermissionDenied(tool + " failed to map the user namespace" +
                                    (output.empty() ? std::string() : ": " + output));
  }
  // The maps are written: this process is uid and gid 0 in the namespace.
  if (::setresgid(0, 0, 0) != 0) return Status::FromErrno(errno, "setresgid 0");
  if (::setresuid(0, 0, 0) != 0) return Status::FromErrno(errno, "setresuid 0");
  return Status::Ok();
}

bool InInitialUserNamespace() {
  Result<std::string> map = ReadFile("/proc/self/uid_map");
  if (!map.has_value()) return true;
  // The initial namespace's map is the single line "0 0 4294967295".
  std::istringstream in(*map);
  uint64_t inside = 1;
  uint64_t outside = 1;
  uint64_t count = 0;
  if (!(in >> inside >> outside >> count)) return true;
  std::string more;
  in >> more;
  return inside == 0 && outside == 0 && count == kIdLimit && more.empty();
}

}  // namespace imgfs::fs::run
