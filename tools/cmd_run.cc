// imgfs — run, ps and containers: chroot-based runs of a command in an image.
//
// `imgfs run [OPTIONS] IMAGE [COMMAND [ARG...]]`, step by step:
//   1. resolve IMAGE in the store (pulling it when missing), read its config;
//   2. create the container ROOT/containers/<name>/ (cache/containers.h) with its upper/;
//   3. unshare(CLONE_NEWNS) and make every mount private: whatever is mounted from here on
//      exists only in this process's mount namespace and vanishes with its last process, so
//      the host's mount table never sees it, even when imgfs is killed with SIGKILL;
//   4. start the mount daemon as a child (`imgfs mount -f --no-pull DIGEST lower/`) in its
//      own session (terminal signals do not reach it) with PR_SET_PDEATHSIG = SIGTERM, and
//      wait until lower/ is a mount point;
//   5. mount the kernel's overlayfs at rootfs/: lowerdir = init/ (the mountpoints /proc,
//      /sys, /dev, /etc/resolv.conf, /etc/hosts, with the image's own attributes, so they
//      never land in the upper layer) over lower/, upperdir = upper/ (overlayfs conventions,
//      with redirect_dir, index and metacopy off: whiteouts are 0/0 character devices,
//      opaque directories carry trusted.overlay.opaque="y", renamed lower directories are
//      copied up whole, every changed file is complete in the upper).
//      `--driver fuse` replaces 4–5 by imgfs's own copy-on-write mount (`imgfs mount -f --rw
//      --upper upper/ DIGEST rootfs/`); the mountpoints the image lacks are then created in
//      it and taken out of the upper again after the run;
//   6. mount /sys (read-only), a minimal /dev (tmpfs: null zero full random urandom tty,
//      devpts, shm), bind the host's /etc/resolv.conf and /etc/hosts read-only, and the -v
//      volumes (target paths are resolved inside the rootfs: an image's symlink cannot point
//      a mount outside it);
//   7. clone an init into a new PID namespace (like `docker run --init`): it mounts that
//      namespace's /proc, forks the command (chroot, setgroups/setgid/setuid, chdir, exec
//      with a PATH search inside the image), forwards signals and reaps orphans. A failure
//      before exec is reported through a close-on-exec pipe (docker's statuses: 125 imgfs
//      error, 126 not executable, 127 not found). Init and command die with SIGKILL when
//      their parent does (PR_SET_PDEATHSIG), and when the init exits the kernel kills
//      whatever is left in the namespace: nothing of a run outlives imgfs;
//   8. forward signals (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH sent to imgfs
//      reach the command; a terminal's SIGINT/SIGQUIT/SIGWINCH already reached it, being
//      sent to the whole foreground process group, and are not sent twice), wait, unmount
//      everything, stop the daemon, record the exit status (128+N for a signal), return it.
// imgfs run needs root (mount namespaces, overlayfs, chroot).
// Containers without --name (or with --rm) are removed when the run ends — docker's --rm
// default, inverted: a run keeps its upper only when it is given a name. A container of a
// killed run is marked exited (137) when next listed; auto-removed ones are deleted by the
// next `imgfs run` or `imgfs ps`.
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "cache/containers.h"
#include "cache/images.h"
#include "cache/store.h"
#include "fs/mount.h"
#include "registry/reference.h"
#include "tools/cli.h"

extern char** environ;

namespace imgfs::tools {
namespace {

// docker's exit statuses for failures of the runner itself and of exec.
constexpr int kExitRunError = 125;
constexpr int kExitNotExecutable = 126;
constexpr int kExitNotFound = 127;

// docker's default PATH when the image sets none.
constexpr std::string_view kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// How long to wait for the mount daemon to make the image's mount (the image is in the store
// and indexed by then; this bounds a stuck daemon).
constexpr auto kMountWait = std::chrono::seconds(60);
// How long the daemon gets to exit after its mount is gone before it is killed.
constexpr auto kDaemonExitWait = std::chrono::seconds(5);
// Linux's limit on symlinks followed while resolving one path (MAXSYMLINKS).
constexpr int kMaxSymlinks = 40;

constexpr std::string_view kRunUsage =
    "Usage: imgfs run [OPTIONS] IMAGE [COMMAND [ARG...]]\n\n"
    "Run a command in an image: the image is mounted copy-on-write in a private mount\n"
    "namespace, with /proc, /sys, /dev, the host's /etc/resolv.conf and /etc/hosts, and the\n"
    "command runs chrooted into it. The exit status is the command's (128+N when killed by\n"
    "signal N; 125 when imgfs fails, 126 when the command cannot be executed, 127 when it\n"
    "is not found).\n"
    "The changes are kept as container NAME with --name (see 'imgfs ps -a'); without a name\n"
    "(or with --rm) the container is removed when the command ends.";

constexpr std::string_view kPsUsage =
    "Usage: imgfs ps [OPTIONS]\n\nList containers (running ones; -a for all).";

constexpr std::string_view kContainersUsage =
    "Usage: imgfs containers COMMAND\n\n"
    "Manage containers.\n\n"
    "Commands:\n"
    "  ls [-a] [-q] [--no-trunc]   List containers\n"
    "  rm [-f] CONTAINER...        Remove containers (-f: also running ones)";

const std::vector<OptionSpec>& RunSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"name", 0, true, "NAME", "keep the container under this name"},
      {"rm", 0, false, "", "remove the container when the command ends (also with --name)"},
      {"env", 'e', true, "KEY=VALUE", "set an environment variable (KEY alone: the host's)"},
      {"workdir", 'w', true, "DIR", "working directory inside the image"},
      {"user", 'u', true, "USER[:GROUP]", "user (name or uid) and group inside the image"},
      {"volume", 'v', true, "HOST:CTR[:ro]", "bind-mount a host path (repeatable)"},
      {"entrypoint", 0, true, "CMD", "override the image's entrypoint (\"\" clears it)"},
      {"hostname", 0, true, "NAME", "host name of the command (private UTS namespace)"},
      {"interactive", 'i', false, "", "accepted for docker compatibility (stdin is always passed)"},
      {"platform", 0, true, "OS/ARCH[/VARIANT]", "platform to pull when not in the store"},
      {"driver", 0, true, "overlay|fuse",
       "copy-on-write by the kernel's overlayfs over a read-only imgfs mount (default), or by "
       "imgfs mount --rw"},
  };
  return specs;
}

const std::vector<OptionSpec>& PsSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"all", 'a', false, "", "show all containers (default: running ones)"},
      {"quiet", 'q', false, "", "only display container IDs"},
      {"no-trunc", 0, false, "", "do not truncate output"},
  };
  return specs;
}

// ---- small helpers ----

std::string ErrnoText(int err) { return std::strerror(err); }

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return out;
}

bool IsAllDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decodes the octal escapes (\040 …) of a /proc/self/mountinfo field.
std::string UnescapeMountField(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const std::string oct = field.substr(i + 1, 3);
      if (std::all_of(oct.begin(), oct.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += field[i];
  }
  return out;
}

// True when `path` is a mount point in this process's mount namespace.
bool IsMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mountpoint;
    if (!(fields >> id >> parent >> devno >> root >> mountpoint)) continue;
    if (UnescapeMountField(mountpoint) == path) return true;
  }
  return false;
}

// Resolves `path` (absolute, inside the container) to a host path under `root`, following
// symlinks as if `root` were "/" (".." never climbs above it). Components that do not exist
// are kept as they are. InvalidArgument after too many symlinks.
Result<std::string> ResolveInRoot(const std::string& root, const std::string& path) {
  std::vector<std::string> todo;  // components still to resolve, in reverse order
  auto push_path = [&todo](const std::string& p) {
    std::vector<std::string> parts = Split(p, '/');
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (!it->empty() && *it != ".") todo.push_back(*it);
    }
  };
  push_path(path);
  std::vector<std::string> done;
  int links = 0;
  auto joined = [&]() {
    std::string out = root;
    for (const std::string& c : done) out += "/" + c;
    return out;
  };
  while (!todo.empty()) {
    std::string comp = todo.back();
    todo.pop_back();
    if (comp == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    std::string candidate = joined() + "/" + comp;
    struct stat st {};
    if (::lstat(candidate.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      if (++links > kMaxSymlinks) {
        return Status::InvalidArgument("too many levels of symbolic links in " + path);
      }
      char buf[PATH_MAX];
      ssize_t n = ::readlink(candidate.c_str(), buf, sizeof(buf) - 1);
      if (n < 0) return Status::FromErrno(errno, "readlink " + candidate);
      std::string target(buf, static_cast<size_t>(n));
      if (!target.empty() && target[0] == '/') done.clear();
      push_path(target);
      continue;
    }
    done.push_back(comp);
  }
  return joined();
}

// Escapes an overlayfs option value (',' ':' and '\' are special there).
std::string EscapeOverlayPath(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == ',' || c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

Status Mount(const std::string& source, const std::string& target, const char* type,
             unsigned long flags, const std::string& data = "") {
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) !=
      0) {
    return Status::FromErrno(errno, "mounting " + source + " at " + target);
  }
  return Status::Ok();
}

// Creates an empty regular file (and its parents) when nothing exists at `path`.
Status EnsureFile(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return Status::Ok();
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0)
    IMGFS_RETURN_IF_ERROR(MakeDirs(path.substr(0, slash)));
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "creating " + path);
  ::close(fd);
  return Status::Ok();
}

// Bind-mounts `source` at `target`, read-only when asked.
Status Bind(const std::string& source, const std::string& target, bool read_only) {
  IMGFS_RETURN_IF_ERROR(Mount(source, target, nullptr, MS_BIND | MS_REC));
  if (read_only) {
    IMGFS_RETURN_IF_ERROR(
        Mount(source, target, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV));
  }
  return Status::Ok();
}

// ---- the image's users and groups ----

struct PasswdEntry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
};

struct GroupEntry {
  std::string name;
  gid_t gid = 0;
  std::vector<std::string> members;
};

std::vector<PasswdEntry> ReadPasswd(const std::string& path) {
  std::vector<PasswdEntry> out;
  Result<std::string> text = ReadFile(path);
  if (!text.has_value()) return out;
  for (const std::string& line : Split(*text, '\n')) {
    std::vector<std::string> f = Split(line, ':');
    if (f.size() < 7 || !IsAllDigits(f[2]) || !IsAllDigits(f[3])) continue;
    out.push_back(
        {f[0], static_cast<uid_t>(std::stoul(f[2])), static_cast<gid_t>(std::stoul(f[3])), f[5]});
  }
  return out;
}

std::vector<GroupEntry> ReadGroups(const std::string& path) {
  std::vector<GroupEntry> out;
  Result<std::string> text = ReadFile(path);
  if (!text.has_value()) return out;
  for (const std::string& line : Split(*text, '\n')) {
    std::vector<std::string> f = Split(line, ':');
    if (f.size() < 4 || !IsAllDigits(f[2])) continue;
    GroupEntry g{f[0], static_cast<gid_t>(std::stoul(f[2])), {}};
    for (const std::string& m : Split(f[3], ',')) {
      if (!m.empty()) g.members.push_back(m);
    }
    out.push_back(std::move(g));
  }
  return out;
}

struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string home = "/";
};

// docker's rules: USER[:GROUP], names looked up in the image's /etc/passwd and /etc/group,
// numeric ids accepted whether listed or not; supplementary groups from /etc/group.
Result<ExecUser> ResolveUser(const std::string& rootfs, const std::string& spec) {
  ExecUser out;
  if (spec.empty()) return out;
  std::string user = spec;
  std::string group;
  size_t colon = spec.find(':');
  bool has_group = colon != std::string::npos;
  if (has_group) {
    user = spec.substr(0, colon);
    group = spec.substr(colon + 1);
  }
  IMGFS_ASSIGN_OR_RETURN(std::string passwd_path, ResolveInRoot(rootfs, "/etc/passwd"));
  IMGFS_ASSIGN_OR_RETURN(std::string group_path, ResolveInRoot(rootfs, "/etc/group"));
  std::vector<PasswdEntry> passwd = ReadPasswd(passwd_path);
  std::vector<GroupEntry> groups = ReadGroups(group_path);
  const PasswdEntry* found = nullptr;
  if (!user.empty()) {
    for (const PasswdEntry& p : passwd) {
      if (IsAllDigits(user) ? p.uid == std::stoul(user) : p.name == user) {
        found = &p;
        break;
      }
    }
    if (found == nullptr && !IsAllDigits(user)) {
      return Status::NotFound("unable to find user " + user +
                              ": no matching entries in passwd file");
    }
    if (found != nullptr) {
      out.uid = found->uid;
      out.gid = found->gid;
      if (!found->home.empty()) out.home = found->home;
    } else {
      out.uid = static_cast<uid_t>(std::stoul(user));
    }
  }
  if (has_group && !group.empty()) {
    if (IsAllDigits(group)) {
      out.gid = static_cast<gid_t>(std::stoul(group));
    } else {
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const GroupEntry& g) { return g.name == group; });
      if (it == groups.end()) {
        return Status::NotFound("unable to find group " + group +
                                ": no matching entries in group file");
      }
      out.gid = it->gid;
    }
  } else if (found != nullptr) {
    for (const GroupEntry& g : groups) {
      if (g.gid != out.gid &&
          std::find(g.members.begin(), g.members.end(), found->name) != g.members.end()) {
        out.groups.push_back(g.gid);
      }
    }
  }
  return out;
}

// ---- environment ----

// KEY=VALUE list with later entries replacing earlier ones of the same key, order kept.
void SetEnv(std::vector<std::string>* env, const std::string& entry) {
  std::string key = entry.substr(0, entry.find('='));
  for (std::string& e : *env) {
    if (e.substr(0, e.find('=')) == key) {
      e = entry;
      return;
    }
  }
  env->push_back(entry);
}

std::string GetEnv(const std::vector<std::string>& env, const std::string& key) {
  for (const std::string& e : env) {
    size_t eq = e.find('=');
    if (eq != std::string::npos && e.compare(0, eq, key) == 0 && eq == key.size()) {
      return e.substr(eq + 1);
    }
  }
  return "";
}

bool HasEnv(const std::vector<std::string>& env, const std::string& key) {
  return std::any_of(env.begin(), env.end(), [&](const std::string& e) {
    return e.size() > key.size() && e.compare(0, key.size(), key) == 0 && e[key.size()] == '=';
  });
}

// ---- argument splitting: options, then IMAGE, then the command (never parsed) ----

struct SplitResult {
  std::vector<std::string> options;
  std::string image;
  std::vector<std::string> command;
};

// docker's rule: options end at the first non-option word (the image); everything after it
// is the command, a leading "--" dropped.
SplitResult SplitRunArgs(const std::vector<std::string>& args) {
  std::vector<OptionSpec> specs = RunSpecs();
  for (const OptionSpec& g : GlobalOptionSpecs()) specs.push_back(g);
  auto takes_value_long = [&](const std::string& name) {
    return std::any_of(specs.begin(), specs.end(),
                       [&](const OptionSpec& s) { return s.long_name == name && s.takes_value; });
  };
  auto takes_value_short = [&](char c) {
    return std::any_of(specs.begin(), specs.end(),
                       [&](const OptionSpec& s) { return s.short_name == c && s.takes_value; });
  };
  SplitResult out;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    out.options.push_back(a);
    if (a.starts_with("--")) {
      if (a.find('=') == std::string::npos && takes_value_long(a.substr(2)) &&
          i + 1 < args.size()) {
        out.options.push_back(args[++i]);
      }
    } else if (a.size() == 2 && takes_value_short(a[1]) && i + 1 < args.size()) {
      out.options.push_back(args[++i]);
    }
  }
  if (i < args.size()) out.image = args[i++];
  if (i < args.size() && args[i] == "--") ++i;
  out.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return out;
}

// ---- what runs ----

struct VolumeSpec {
  std::string host;
  std::string target;
  bool read_only = false;
};

Result<VolumeSpec> ParseVolume(const std::string& text) {
  std::vector<std::string> parts = Split(text, ':');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return Status::InvalidArgument("invalid volume specification: '" + text +
                                   "' (expected HOST:CONTAINER[:ro|rw])");
  }
  VolumeSpec v{parts[0], parts[1], false};
  if (v.host[0] != '/') {
    return Status::InvalidArgument("invalid volume specification: '" + text +
                                   "': the host path must be absolute (named volumes are not "
                                   "supported)");
  }
  if (v.target[0] != '/') {
    return Status::InvalidArgument("invalid volume specification: '" + text +
                                   "': the container path must be absolute");
  }
  if (parts.size() == 3) {
    for (const std::string& o : Split(parts[2], ',')) {
      if (o == "ro") {
        v.read_only = true;
      } else if (o == "rw" || o == "z" || o == "Z" || o.empty()) {
        continue;
      } else {
        return Status::InvalidArgument("invalid volume specification: '" + text +
                                       "': unknown mode " + o);
      }
    }
  }
  return v;
}

// How the image is made writable (--driver).
enum class Driver {
  kOverlay,  // a read-only imgfs mount under the kernel's overlayfs (the default)
  kFuse,     // imgfs's own copy-on-write mount (`imgfs mount --rw --upper`)
};

struct RunRequest {
  Driver driver = Driver::kOverlay;
  std::string image;
  std::string name;
  bool remove = false;
  std::vector<std::string> env_args;
  std::string workdir;
  std::optional<std::string> user;
  std::vector<VolumeSpec> volumes;
  std::optional<std::string> entrypoint;
  std::string hostname;
  std::optional<registry::Platform> platform;  // for a pull
  std::vector<std::string> command;
};

// Everything the command's process needs, computed before the fork.
struct ProcessSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string workdir = "/";
  std::string user;  // USER[:GROUP] spec, resolved once the rootfs is mounted
};

Result<ProcessSpec> BuildProcessSpec(const RunRequest& req, const registry::ImageConfig& config) {
  ProcessSpec spec;
  std::vector<std::string> entrypoint = config.entrypoint;
  std::vector<std::string> cmd = config.cmd;
  if (req.entrypoint.has_value()) {
    // docker: --entrypoint replaces the entrypoint and resets the image's Cmd.
    entrypoint.clear();
    if (!req.entrypoint->empty()) entrypoint.push_back(*req.entrypoint);
    cmd.clear();
  }
  if (!req.command.empty()) cmd = req.command;
  spec.argv = entrypoint;
  spec.argv.insert(spec.argv.end(), cmd.begin(), cmd.end());
  if (spec.argv.empty()) {
    return Status::InvalidArgument("no command specified (the image has no Entrypoint or Cmd)");
  }
  for (const std::string& e : config.env) SetEnv(&spec.env, e);
  if (!HasEnv(spec.env, "PATH")) SetEnv(&spec.env, "PATH=" + std::string(kDefaultPath));
  if (!req.hostname.empty()) SetEnv(&spec.env, "HOSTNAME=" + req.hostname);
  for (const std::string& e : req.env_args) {
    if (e.find('=') != std::string::npos) {
      if (e[0] == '=') return Status::InvalidArgument("invalid environment variable: " + e);
      SetEnv(&spec.env, e);
    } else if (const char* host = std::getenv(e.c_str()); host != nullptr) {
      SetEnv(&spec.env, e + "=" + host);
    }
  }
  spec.workdir = !req.workdir.empty() ? req.workdir : config.working_dir;
  if (spec.workdir.empty()) spec.workdir = "/";
  if (spec.workdir[0] != '/') {
    if (!req.workdir.empty()) {
      return Status::InvalidArgument("the working directory '" + req.workdir +
                                     "' is invalid, it needs to be an absolute path");
    }
    spec.workdir = "/" + spec.workdir;
  }
  spec.user = req.user.has_value() ? *req.user : config.user;
  return spec;
}

std::string Quote(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`;&|<>()*?[]{}~#") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) {
        if (c == '\'') {
          out += "'\\''";
        } else {
          out += c;
        }
      }
      out += '\'';
    }
  }
  return out;
}

// ---- the run itself ----

// The mounts and processes of one run; destroying it tears everything down.
class RunSession {
 public:
  RunSession(std::string container_dir, std::string root_flag)
      : dir_(std::move(container_dir)), root_flag_(std::move(root_flag)) {}
  RunSession(const RunSession&) = delete;
  RunSession& operator=(const RunSession&) = delete;
  ~RunSession() { TearDown(); }

  std::string rootfs() const { return dir_ + "/rootfs"; }
  std::string lower() const { return dir_ + "/lower"; }
  std::string init() const { return dir_ + "/init"; }
  std::string work() const { return dir_ + "/work"; }
  std::string upper() const { return dir_ + "/upper"; }
  std::string mount_log() const { return dir_ + "/mount.log"; }

  // Steps 3–6 of the header comment.
  Status Setup(const std::string& manifest_digest, const RunRequest& req) {
    fuse_rw_ = req.driver == Driver::kFuse;
    for (const std::string& d : {rootfs(), lower(), init(), work()}) {
      IMGFS_RETURN_IF_ERROR(MakeDirs(d, 0755));
    }
    int flags = CLONE_NEWNS | (req.hostname.empty() ? 0 : CLONE_NEWUTS);
    if (::unshare(flags) != 0) return Status::FromErrno(errno, "unshare (new mount namespace)");
    IMGFS_RETURN_IF_ERROR(Mount("none", "/", nullptr, MS_REC | MS_PRIVATE));
    if (!req.hostname.empty() && ::sethostname(req.hostname.data(), req.hostname.size()) != 0) {
      return Status::FromErrno(errno, "sethostname " + req.hostname);
    }
    if (fuse_rw_) {
      // imgfs's own copy-on-write mount over the upper; the mountpoints are made in it and
      // taken out of the upper again after the run (RemoveMountpointsFromUpper).
      IMGFS_RETURN_IF_ERROR(StartDaemon(manifest_digest, {"--rw", "--upper", upper()}, rootfs()));
      rootfs_mounted_ = true;
      IMGFS_RETURN_IF_ERROR(MakeMountpoints());
      IMGFS_RETURN_IF_ERROR(MountSystem());
      for (const VolumeSpec& v : SortedVolumes(req.volumes)) IMGFS_RETURN_IF_ERROR(MountVolume(v));
      return Status::Ok();
    }
    IMGFS_RETURN_IF_ERROR(StartDaemon(manifest_digest, {}, lower()));
    IMGFS_RETURN_IF_ERROR(MakeInitLayer());
    std::string options = "lowerdir=" + EscapeOverlayPath(init()) + ":" +
                          EscapeOverlayPath(lower()) + ",upperdir=" + EscapeOverlayPath(upper()) +
                          ",workdir=" + EscapeOverlayPath(work());
    Status st = Mount("overlay", rootfs(), "overlay", 0,
                      options + ",redirect_dir=off,index=off,metacopy=off");
    if (!st.ok()) {
      IMGFS_LOG(kInfo) << st.ToString() << "; retrying with the kernel's default options";
      st = Mount("overlay", rootfs(), "overlay", 0, options);
    }
    IMGFS_RETURN_IF_ERROR(st);
    rootfs_mounted_ = true;
    IMGFS_RETURN_IF_ERROR(MountSystem());
    for (const VolumeSpec& v : SortedVolumes(req.volumes)) IMGFS_RETURN_IF_ERROR(MountVolume(v));
    return Status::Ok();
  }

  // Unmounts everything and stops the daemon (idempotent).
  void TearDown() {
    if (rootfs_mounted_) {
      if (::umount2(rootfs().c_str(), MNT_DETACH) != 0) {
        IMGFS_LOG(kWarning) << "unmounting " << rootfs() << ": " << ErrnoText(errno);
      }
      rootfs_mounted_ = false;
    }
    if (daemon_pid_ > 0) {
      if (IsMountPoint(lower()) && ::umount2(lower().c_str(), MNT_DETACH) != 0) {
        IMGFS_LOG(kWarning) << "unmounting " << lower() << ": " << ErrnoText(errno);
      }
      // Unmounted, the daemon ends by itself; SIGTERM, then SIGKILL, if it does not.
      if (!WaitDaemon(std::chrono::seconds(2))) {
        ::kill(daemon_pid_, SIGTERM);
        if (!WaitDaemon(kDaemonExitWait)) {
          ::kill(daemon_pid_, SIGKILL);
          WaitDaemon(kDaemonExitWait);
        }
      }
      daemon_pid_ = -1;
    }
    if (fuse_rw_) RemoveMountpointsFromUpper();
  }

  // Removes the scratch directories of a kept container (upper/ and container.json stay).
  void RemoveScratch() {
    for (const std::string& d : {rootfs(), lower(), init(), work()}) {
      Status st = RemoveTree(d);
      if (!st.ok()) IMGFS_LOG(kWarning) << "removing " << d << ": " << st.ToString();
    }
    ::unlink(mount_log().c_str());
  }

 private:
  // Waits for the daemon to exit; false on timeout.
  bool WaitDaemon(std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int wstatus = 0;
      pid_t r = ::waitpid(daemon_pid_, &wstatus, WNOHANG);
      if (r == daemon_pid_ || (r < 0 && errno == ECHILD)) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Starts `imgfs mount -f --no-pull EXTRA… DIGEST MOUNTPOINT` and waits for the mount.
  Status StartDaemon(const std::string& manifest_digest, const std::vector<std::string>& extra,
                     const std::string& mountpoint) {
    std::vector<std::string> args = {"imgfs", "--root",    root_flag_, "mount",
                                     "-f",    "--no-pull", "-o",       "allow_other,dev,suid"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(manifest_digest);
    args.push_back(mountpoint);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    UniqueFd log_fd(::open(mount_log().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!log_fd.IsValid()) return Status::FromErrno(errno, "creating " + mount_log());
    pid_t parent = ::getpid();
    std::cout.flush();
    std::cerr.flush();
    pid_t pid = ::fork();
    if (pid < 0) return Status::FromErrno(errno, "fork");
    if (pid == 0) {
      ::setsid();  // terminal signals (Ctrl-C) are for the command, not for the daemon
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(kExitRunError);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      ::dup2(log_fd.get(), STDOUT_FILENO);
      ::dup2(log_fd.get(), STDERR_FILENO);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execv("/proc/self/exe", argv.data());
      ::_exit(kExitRunError);
    }
    daemon_pid_ = pid;
    auto deadline = std::chrono::steady_clock::now() + kMountWait;
    for (;;) {
      if (IsMountPoint(mountpoint)) return Status::Ok();
      int wstatus = 0;
      if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
        daemon_pid_ = -1;
        return Status::Internal("the mount daemon exited before the image was mounted: " +
                                DaemonLog());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::Unavailable("the image was not mounted within " +
                                   std::to_string(kMountWait.count()) + " s: " + DaemonLog());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  std::string DaemonLog() const {
    Result<std::string> text = ReadFile(mount_log());
    if (!text.has_value() || text->empty()) return "(no output)";
    std::string out = *text;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    if (out.rfind("imgfs: ", 0) == 0) out = out.substr(7);
    return out;
  }

  // init/: the mountpoints, each with the attributes of the image's own entry when it has
  // one (the topmost lower layer's directory attributes win in overlayfs).
  Status MakeInitLayer() {
    struct Entry {
      const char* path;
      bool dir;
      mode_t mode;
    };
    static const Entry kEntries[] = {
        {"proc", true, 0555},
        {"sys", true, 0555},
        {"dev", true, 0755},
        {"etc", true, 0755},
        {"etc/resolv.conf", false, 0644},
        {"etc/hosts", false, 0644},
    };
    // Create everything first, then set attributes deepest first: creating a child changes
    // its parent's mtime.
    std::vector<std::pair<std::string, struct stat>> image_attrs;
    std::vector<std::string> skipped;
    for (const Entry& e : kEntries) {
      std::string rel = e.path;
      bool parent_skipped = std::any_of(skipped.begin(), skipped.end(), [&](const std::string& p) {
        return rel.rfind(p + "/", 0) == 0;
      });
      std::string path = init() + "/" + rel;
      struct stat image_st {};
      bool in_image = ::lstat((lower() + "/" + rel).c_str(), &image_st) == 0;
      if (parent_skipped || (in_image && S_ISDIR(image_st.st_mode) != e.dir)) {
        skipped.push_back(rel);  // e.g. /etc a symlink in the image: leave it alone
        continue;
      }
      if (e.dir) {
        if (::mkdir(path.c_str(), e.mode) != 0 && errno != EEXIST) {
          return Status::FromErrno(errno, "creating " + path);
        }
      } else {
        IMGFS_RETURN_IF_ERROR(EnsureFile(path));
      }
      if (::chmod(path.c_str(), e.mode) != 0) return Status::FromErrno(errno, "chmod " + path);
      if (in_image) image_attrs.emplace_back(path, image_st);
    }
    for (auto it = image_attrs.rbegin(); it != image_attrs.rend(); ++it) {
      const auto& [path, image_st] = *it;
      if (::lchown(path.c_str(), image_st.st_uid, image_st.st_gid) != 0 ||
          ::chmod(path.c_str(), image_st.st_mode & 07777) != 0) {
        return Status::FromErrno(errno, "setting the attributes of " + path);
      }
      timespec times[2] = {image_st.st_atim, image_st.st_mtim};
      ::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
    return Status::Ok();
  }

  // FUSE driver: creates the mountpoints the image lacks inside the writable mount,
  // remembering what the upper did not have before, so it can be taken out again.
  Status MakeMountpoints() {
    static const std::pair<const char*, bool> kPoints[] = {{"/proc", true},
                                                           {"/sys", true},
                                                           {"/dev", true},
                                                           {"/etc/resolv.conf", false},
                                                           {"/etc/hosts", false}};
    for (const auto& [path, dir] : kPoints) {
      IMGFS_ASSIGN_OR_RETURN(std::string in_root, ResolveInRoot(rootfs(), path));
      struct stat st {};
      if (::lstat(in_root.c_str(), &st) == 0) continue;  // the image has it
      // Entries of the upper this creates: the path and any parent not copied up yet (when
      // the path went through a symlink of the image, what it creates stays).
      std::string rel = path;
      for (size_t pos = rel.size();
           in_root == rootfs() + path && pos != std::string::npos && pos > 0;
           pos = rel.rfind('/', pos - 1)) {
        std::string prefix = rel.substr(0, pos);
        if (::lstat((upper() + prefix).c_str(), &st) != 0) created_in_upper_.push_back(prefix);
      }
      if (dir) {
        IMGFS_RETURN_IF_ERROR(MakeDirs(in_root, 0755));
      } else {
        IMGFS_RETURN_IF_ERROR(EnsureFile(in_root));
      }
    }
    // Deepest first.
    std::sort(created_in_upper_.begin(), created_in_upper_.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    return Status::Ok();
  }

  // After the daemon exited: removes what MakeMountpoints put into the upper (empty
  // directories and empty files only: what the command wrote there stays).
  void RemoveMountpointsFromUpper() {
    for (const std::string& rel : created_in_upper_) {
      std::string path = upper() + rel;
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        ::rmdir(path.c_str());  // fails when not empty: then it is the command's
      } else if (S_ISREG(st.st_mode) && st.st_size == 0) {
        ::unlink(path.c_str());
      }
    }
    created_in_upper_.clear();
  }

  Status MountSystem() {
    const std::string root = rootfs();
    // Targets are resolved inside the image (its /sys may be a symlink). /proc is mounted by
    // the command's init, inside its PID namespace (RunInit).
    IMGFS_ASSIGN_OR_RETURN(std::string sys, ResolveInRoot(root, "/sys"));
    IMGFS_RETURN_IF_ERROR(MakeDirs(sys));
    if (!Mount("sysfs", sys, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC).ok()) {
      IMGFS_RETURN_IF_ERROR(Bind("/sys", sys, true));
    }
    IMGFS_ASSIGN_OR_RETURN(std::string dev, ResolveInRoot(root, "/dev"));
    IMGFS_RETURN_IF_ERROR(MakeDirs(dev));
    IMGFS_RETURN_IF_ERROR(MountDev(dev));
    for (const char* f : {"/etc/resolv.conf", "/etc/hosts"}) {
      struct stat st {};
      if (::stat(f, &st) != 0 || !S_ISREG(st.st_mode)) continue;
      IMGFS_ASSIGN_OR_RETURN(std::string target, ResolveInRoot(root, f));
      IMGFS_RETURN_IF_ERROR(EnsureFile(target));
      IMGFS_RETURN_IF_ERROR(Bind(f, target, true));
    }
    return Status::Ok();
  }

  // A minimal /dev: tmpfs with the usual nodes (mknod, or the host's node bound onto an
  // empty file where mknod is not allowed), devpts, shm and the /proc/self/fd links.
  static Status MountDev(const std::string& dev) {
    IMGFS_RETURN_IF_ERROR(
        Mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"));
    struct Node {
      const char* name;
      unsigned major;
      unsigned minor;
    };
    static const Node kNodes[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                                  {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    for (const Node& n : kNodes) {
      std::string path = dev + "/" + n.name;
      if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)) == 0) {
        ::chmod(path.c_str(), 0666);  // not reduced by the umask
        continue;
      }
      IMGFS_RETURN_IF_ERROR(EnsureFile(path));
      IMGFS_RETURN_IF_ERROR(Bind(std::string("/dev/") + n.name, path, false));
    }
    IMGFS_RETURN_IF_ERROR(MakeDirs(dev + "/pts", 0755));
    if (!Mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620")
             .ok()) {
      IMGFS_RETURN_IF_ERROR(Bind("/dev/pts", dev + "/pts", false));
    }
    IMGFS_RETURN_IF_ERROR(MakeDirs(dev + "/shm", 01777));
    IMGFS_RETURN_IF_ERROR(Mount("shm", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                "mode=1777,size=65536k"));
    static const std::pair<const char*, const char*> kLinks[] = {
        {"ptmx", "pts/ptmx"},          {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
    };
    for (const auto& [name, target] : kLinks) {
      std::string path = dev + "/" + name;
      if (::symlink(target, path.c_str()) != 0) return Status::FromErrno(errno, "symlink " + path);
    }
    return Status::Ok();
  }

  static std::vector<VolumeSpec> SortedVolumes(std::vector<VolumeSpec> volumes) {
    // Parents before children (docker sorts mounts by path depth).
    std::stable_sort(volumes.begin(), volumes.end(), [](const VolumeSpec& a, const VolumeSpec& b) {
      return std::count(a.target.begin(), a.target.end(), '/') <
             std::count(b.target.begin(), b.target.end(), '/');
    });
    return volumes;
  }

  Status MountVolume(const VolumeSpec& v) {
    struct stat st {};
    if (::stat(v.host.c_str(), &st) != 0) {
      if (errno != ENOENT) return Status::FromErrno(errno, "volume source " + v.host);
      IMGFS_RETURN_IF_ERROR(MakeDirs(v.host));  // docker -v creates a missing host directory
      if (::stat(v.host.c_str(), &st) != 0) return Status::FromErrno(errno, v.host);
    }
    IMGFS_ASSIGN_OR_RETURN(std::string target, ResolveInRoot(rootfs(), v.target));
    if (S_ISDIR(st.st_mode)) {
      IMGFS_RETURN_IF_ERROR(MakeDirs(target));
    } else {
      IMGFS_RETURN_IF_ERROR(EnsureFile(target));
    }
    return Bind(v.host, target, v.read_only).WithContext("volume " + v.host + ":" + v.target);
  }

  std::string dir_;
  std::string root_flag_;
  pid_t daemon_pid_ = -1;
  bool rootfs_mounted_ = false;
  bool fuse_rw_ = false;
  std::vector<std::string> created_in_upper_;  // FUSE driver: relative paths, deepest first
};

// Signals forwarded to the command.
const int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

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

// Everything the command's process needs, prepared before any fork (the forked children
// only make system calls and write an error line).
struct ExecPlan {
  std::string rootfs;
  std::string proc;  // the image's /proc, resolved inside the rootfs
  std::string file;
  std::vector<std::string> candidates;  // paths to try, in PATH order
  std::vector<std::string> argv_storage;
  std::vector<std::string> env_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
  std::string workdir;
  ExecUser user;
};

// The command's side of the fork: chroot, credentials, chdir, exec. Never returns; a
// failure is written to `err_fd` as "CODE\tmessage" and is the exit status.
[[noreturn]] void ExecCommand(const ExecPlan& plan, int err_fd) {
  auto fail = [&](int code, const std::string& message) {
    std::string line = std::to_string(code) + "\t" + message;
    ssize_t ignored = ::write(err_fd, line.data(), line.size());
    (void)ignored;
    ::_exit(code);
  };
  for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::chdir(plan.rootfs.c_str()) != 0 || ::chroot(".") != 0) {
    fail(kExitRunError, "chroot " + plan.rootfs + ": " + ErrnoText(errno));
  }
  if (::setgroups(plan.user.groups.size(), plan.user.groups.data()) != 0) {
    fail(kExitRunError, "setgroups: " + ErrnoText(errno));
  }
  if (::setgid(plan.user.gid) != 0) fail(kExitRunError, "setgid: " + ErrnoText(errno));
  if (::setuid(plan.user.uid) != 0) fail(kExitRunError, "setuid: " + ErrnoText(errno));
  if (::chdir(plan.workdir.c_str()) != 0) {
    fail(kExitRunError, "chdir to the working directory " + plan.workdir + ": " + ErrnoText(errno));
  }
  int denied = 0;
  int last = ENOENT;
  for (const std::string& c : plan.candidates) {
    ::execve(c.c_str(), plan.argv.data(), plan.envp.data());
    last = errno;
    if (errno == EACCES || errno == ENOEXEC || errno == EISDIR) denied = errno;
  }
  if (denied != 0) {
    fail(kExitNotExecutable, "exec: \"" + plan.file + "\": " + ErrnoText(denied));
  }
  if (plan.file.find('/') != std::string::npos) {
    fail(kExitNotFound, "exec: \"" + plan.file + "\": " + ErrnoText(last));
  }
  fail(kExitNotFound, "exec: \"" + plan.file + "\": executable file not found in $PATH");
  ::_exit(kExitNotFound);  // not reached: fail() exits
}

// pid 1 of the command's PID namespace (like docker run --init): mounts the namespace's
// /proc, forks the command, forwards signals to it, reaps orphans, and exits with the
// command's status. When it exits, the kernel kills every process left in the namespace.
[[noreturn]] void RunInit(const ExecPlan& plan, UniqueFd err_write, const sigset_t& set) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const std::string& proc = plan.proc;
  if (!Mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC).ok() &&
      !Bind("/proc", proc, false).ok()) {
    std::string line = std::to_string(kExitRunError) + "\tmounting /proc: " + ErrnoText(errno);
    ssize_t ignored = ::write(err_write.get(), line.data(), line.size());
    (void)ignored;
    ::_exit(kExitRunError);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    std::string line = std::to_string(kExitRunError) + "\tfork: " + ErrnoText(errno);
    ssize_t ignored = ::write(err_write.get(), line.data(), line.size());
    (void)ignored;
    ::_exit(kExitRunError);
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ExecCommand(plan, err_write.get());
  }
  err_write.Close();
  ::_exit(WaitForwarding(pid, set, /*reap_all=*/true));
}

// The signals imgfs run handles itself (blocked from the container's creation on, so that a
// SIGTERM during the setup still tears everything down): those forwarded, and SIGCHLD.
sigset_t RunSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kForwardedSignals) sigaddset(&set, s);
  sigaddset(&set, SIGCHLD);
  return set;
}

// Forks the command (step 7) in a PID namespace of its own and waits for it while
// forwarding signals (step 8); RunSignals() are blocked by the caller. Returns the exit
// status to report.
int RunCommand(const std::string& rootfs, const ProcessSpec& spec, const ExecUser& user) {
  const sigset_t set = RunSignals();
  ExecPlan plan;
  plan.rootfs = rootfs;
  Result<std::string> proc = ResolveInRoot(rootfs, "/proc");
  Status made = proc.has_value() ? MakeDirs(*proc) : proc.error();
  if (!made.ok()) {
    std::cerr << "imgfs: /proc: " << made.ToString() << std::endl;
    return kExitRunError;
  }
  plan.proc = *proc;
  plan.file = spec.argv[0];
  if (plan.file.find('/') != std::string::npos) {
    plan.candidates.push_back(plan.file);
  } else {
    for (std::string dir : Split(GetEnv(spec.env, "PATH"), ':')) {
      if (dir.empty()) dir = ".";
      plan.candidates.push_back(dir + "/" + plan.file);
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
  // A fork into a new PID namespace: clone(2) with CLONE_NEWPID and no new stack behaves like
  // fork(2). (unshare(CLONE_NEWPID) would also move every later child of this process into
  // the namespace, which cannot take new processes once its init has exited.)
  pid_t pid = static_cast<pid_t>(
      ::syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
  if (pid < 0) {
    int err = errno;
    std::cerr << "imgfs: clone (new PID namespace): " << ErrnoText(err) << std::endl;
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
  int exit_code = WaitForwarding(pid, set, /*reap_all=*/false);
  if (!failure.empty()) {
    size_t tab = failure.find('\t');
    std::cerr << "imgfs: " << (tab == std::string::npos ? failure : failure.substr(tab + 1))
              << std::endl;
  }
  return exit_code;
}

Result<RunRequest> ParseRunRequest(CommandContext& ctx, int* exit_code, bool* done) {
  *done = false;
  SplitResult split = SplitRunArgs(ctx.args);
  CommandContext opts_ctx = ctx;
  opts_ctx.args = split.options;
  ParsedArgs args;
  if (!ParseCommandArgs(opts_ctx, kRunUsage, RunSpecs(), &args, exit_code)) {
    *done = true;
    return Status::InvalidArgument("usage");
  }
  ctx.global = opts_ctx.global;
  if (split.image.empty()) {
    *done = true;
    *exit_code = UsageError(ctx.name, "\"run\" requires at least 1 argument: IMAGE");
    return Status::InvalidArgument("usage");
  }
  RunRequest req;
  req.image = split.image;
  req.command = split.command;
  req.name = args.Get("name");
  req.remove = args.Has("rm");
  req.env_args = args.GetAll("env");
  req.workdir = args.Get("workdir");
  if (args.Has("user")) req.user = args.Get("user");
  if (args.Has("entrypoint")) req.entrypoint = args.Get("entrypoint");
  req.hostname = args.Get("hostname");
  std::string driver = args.Get("driver", "overlay");
  if (driver == "fuse") {
    req.driver = Driver::kFuse;
  } else if (driver != "overlay") {
    *done = true;
    *exit_code = UsageError(ctx.name, "--driver must be overlay or fuse, not \"" + driver + "\"");
    return Status::InvalidArgument("usage");
  }
  for (const std::string& v : args.GetAll("volume")) {
    Result<VolumeSpec> spec = ParseVolume(v);
    if (!spec.has_value()) {
      *done = true;
      *exit_code = UsageError(ctx.name, spec.error().message());
      return spec.error();
    }
    req.volumes.push_back(*spec);
  }
  if (args.Has("name") && !cache::IsValidContainerName(req.name)) {
    *done = true;
    *exit_code = UsageError(ctx.name, "Invalid container name (" + req.name +
                                          "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    return Status::InvalidArgument("usage");
  }
  if (args.Has("platform")) {
    Result<registry::Platform> p = registry::Platform::Parse(args.Get("platform"));
    if (!p.has_value()) {
      *done = true;
      *exit_code = UsageError(ctx.name, p.error().message());
      return p.error();
    }
    req.platform = *p;
  }
  return req;
}

int RunFail(const Status& st) {
  std::cerr << "imgfs: " << st.ToString() << std::endl;
  return kExitRunError;
}

// ---- listing ----

int64_t ParseRfc3339(const std::string& text) {
  tm t{};
  if (strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &t) == nullptr) return -1;
  return static_cast<int64_t>(timegm(&t));
}

// docker's units.HumanDuration.
std::string HumanDuration(int64_t secs) {
  auto n = [](int64_t v, const char* unit) {
    return std::to_string(v) + " " + unit + (v == 1 ? "" : "s");
  };
  if (secs < 1) return "Less than a second";
  if (secs == 1) return "1 second";
  if (secs < 60) return n(secs, "second");
  if (secs / 60 == 1) return "About a minute";
  if (secs < 3600) return n(secs / 60, "minute");
  if (secs / 3600 == 1) return "About an hour";
  if (secs < 48 * 3600) return n(secs / 3600, "hour");
  if (secs < 7 * 24 * 3600 * 2) return n(secs / 86400, "day");
  if (secs < 30 * 24 * 3600 * 3) return n(secs / (7 * 86400), "week");
  if (secs < 365 * 24 * 3600 * 2) return n(secs / (30 * 86400), "month");
  return n(secs / (365 * 86400), "year");
}

std::string Ago(const std::string& rfc3339) {
  int64_t t = ParseRfc3339(rfc3339);
  if (t < 0) return "N/A";
  int64_t now = static_cast<int64_t>(::time(nullptr));
  return HumanDuration(std::max<int64_t>(0, now - t)) + " ago";
}

std::string StatusText(const cache::ContainerInfo& c) {
  int64_t now = static_cast<int64_t>(::time(nullptr));
  if (c.running) {
    int64_t t = ParseRfc3339(c.created);
    return "Up " + (t < 0 ? std::string("N/A") : HumanDuration(std::max<int64_t>(0, now - t)));
  }
  std::string out = "Exited (" + std::to_string(c.exit_code) + ")";
  if (!c.finished.empty()) out += " " + Ago(c.finished);
  return out;
}

std::string ImageText(const cache::ContainerInfo& c) {
  if (!c.reference.empty()) {
    Result<registry::Reference> ref = registry::Reference::Parse(c.reference);
    if (ref.has_value()) return ref->FamiliarString();
    return c.reference;
  }
  return c.image_id.empty() ? c.image.Short() : c.image_id.Short();
}

int ListContainersCommand(CommandContext& ctx, std::string_view usage) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, usage, PsSpecs(), &args, &code)) return code;
  if (!args.positional().empty()) return UsageError(ctx.name, "too many arguments");
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return Fail(store.error());
  Result<int> abandoned = cache::RemoveAbandonedContainers(**store);
  if (!abandoned.has_value()) IMGFS_LOG(kWarning) << abandoned.error().ToString();
  Result<std::vector<cache::ContainerInfo>> all = cache::ListContainers(**store);
  if (!all.has_value()) return Fail(all.error());
  bool no_trunc = args.Has("no-trunc");
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"});
  for (const cache::ContainerInfo& c : *all) {
    if (!c.running && !args.Has("all")) continue;
    std::string id = no_trunc ? c.id : c.id.substr(0, 12);
    if (args.Has("quiet")) {
      std::cout << id << "\n";
      continue;
    }
    std::string command = Quote(c.command);
    if (!no_trunc && command.size() > 20) command = command.substr(0, 19) + "…";
    rows.push_back(
        {id, ImageText(c), "\"" + command + "\"", Ago(c.created), StatusText(c), c.name});
  }
  if (args.Has("quiet")) return kExitOk;
  std::vector<size_t> widths(rows[0].size(), 0);
  auto display_width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char ch : s) n += (ch & 0xc0) != 0x80 ? 1 : 0;  // UTF-8 code points
    return n;
  };
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], display_width(r[i]));
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(widths[i] - display_width(r[i]) + 3, ' ');
    }
    std::cout << line << "\n";
  }
  return kExitOk;
}

int RemoveContainersCommand(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"force", 'f', false, "", "kill and remove running containers too"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, "Usage: imgfs containers rm [OPTIONS] CONTAINER...", specs, &args,
                        &code)) {
    return code;
  }
  if (args.positional().empty()) {
    return UsageError(ctx.name, "\"containers rm\" requires at least 1 argument");
  }
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return Fail(store.error());
  int rc = kExitOk;
  for (const std::string& name : args.positional()) {
    Result<cache::ContainerInfo> removed = cache::RemoveContainer(**store, name, args.Has("force"));
    if (!removed.has_value()) {
      rc = Fail(removed.error());
      continue;
    }
    std::cout << name << std::endl;
  }
  return rc;
}

}  // namespace

int RunRun(CommandContext& ctx) {
  int exit_code = kExitOk;
  bool done = false;
  Result<RunRequest> parsed = ParseRunRequest(ctx, &exit_code, &done);
  if (done) return exit_code == kExitUsage ? kExitRunError : exit_code;
  if (!parsed.has_value()) return RunFail(parsed.error());
  RunRequest& req = *parsed;
  if (::geteuid() != 0) {
    return RunFail(
        Status::PermissionDenied("imgfs run needs root (mount namespaces, overlayfs, chroot)"));
  }

  Result<std::unique_ptr<cache::Store>> store_or = cache::Store::Open(ctx.global.root);
  if (!store_or.has_value()) {
    return RunFail(store_or.error().WithContext("opening the image store " + ctx.global.root));
  }
  cache::Store& store = **store_or;
  Result<int> abandoned = cache::RemoveAbandonedContainers(store);
  if (!abandoned.has_value()) IMGFS_LOG(kWarning) << abandoned.error().ToString();

  // 1. The image: from the store, else pulled (and indexed) like `imgfs mount` does.
  Result<cache::ResolvedImage> image = cache::ResolveImage(store, req.image);
  std::string reference;
  if (!image.has_value() && image.error().code() == StatusCode::kNotFound) {
    bool transport = req.image.starts_with("oci:") || req.image.starts_with("oci-archive:") ||
                     req.image.starts_with("docker-archive:");
    if (!transport) std::cerr << "Unable to find image '" << req.image << "' locally" << std::endl;
    fs::PrepareOptions prep;
    prep.pull.insecure_registries = ctx.global.insecure_registries;
    prep.pull.ca_files = ctx.global.ca_certs;
    prep.pull.creds = ctx.global.creds;
    if (req.platform.has_value()) {
      prep.pull.platform = *req.platform;
      prep.pull.platform_explicit = true;
    }
    Result<fs::PreparedImage> prepared = fs::PrepareImage(store, req.image, prep);
    if (!prepared.has_value()) return RunFail(prepared.error());
    reference = prepared->reference;
    image = cache::ResolveImage(store, prepared->manifest_digest.String());
  }
  if (!image.has_value()) return RunFail(image.error());
  if (reference.empty() && image->by_reference.has_value()) {
    reference = image->by_reference->reference;
  }
  if (reference.empty() && !image->records.empty()) reference = image->records[0].reference;

  Result<ProcessSpec> spec = BuildProcessSpec(req, image->config);
  if (!spec.has_value()) return RunFail(spec.error());

  // 2. The container.
  cache::ContainerInfo info;
  info.name = req.name;
  info.image = image->manifest.digest;
  info.image_id = image->id;
  info.reference = reference;
  info.command = spec->argv;
  info.auto_remove = req.name.empty() || req.remove;
  // From here on a SIGTERM or Ctrl-C waits until the command could receive it (or, during
  // the setup, ends the run before it starts), so everything is torn down in order.
  const sigset_t run_signals = RunSignals();
  sigset_t old_mask;
  ::sigprocmask(SIG_BLOCK, &run_signals, &old_mask);
  Result<cache::ContainerInfo> created = cache::CreateContainer(store, info);
  if (!created.has_value()) {
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    return RunFail(created.error());
  }
  info = *created;

  int status = kExitRunError;
  {
    // 3–6. Namespace and mounts; 7–8. the command.
    RunSession session(cache::ContainerDir(store, info.name), ctx.global.root);
    Status st = session.Setup(info.image.String(), req);
    Result<ExecUser> user = Status::Internal("not resolved");
    if (st.ok()) {
      user = ResolveUser(session.rootfs(), spec->user);
      if (!user.has_value()) st = user.error();
    }
    if (st.ok()) {
      Result<std::string> workdir = ResolveInRoot(session.rootfs(), spec->workdir);
      st = workdir.has_value() ? MakeDirs(*workdir) : workdir.error();
    }
    if (st.ok()) {
      if (!HasEnv(spec->env, "HOME")) SetEnv(&spec->env, "HOME=" + user->home);
      status = RunCommand(session.rootfs(), *spec, *user);
    } else {
      std::cerr << "imgfs: " << st.WithContext("running " + req.image).ToString() << std::endl;
    }
    session.TearDown();
    if (!info.auto_remove) session.RemoveScratch();
  }
  Status marked = cache::MarkContainerExited(store, info.name, status);
  if (!marked.ok()) IMGFS_LOG(kWarning) << "recording the exit status: " << marked.ToString();
  if (info.auto_remove) {
    Result<cache::ContainerInfo> removed = cache::RemoveContainer(store, info.name, false);
    if (!removed.has_value()) {
      IMGFS_LOG(kWarning) << "removing container " << info.name << ": "
                          << removed.error().ToString();
    }
  }
  // Signals that came after the command ended are dropped: the status is the command's.
  timespec no_wait{};
  while (::sigtimedwait(&run_signals, nullptr, &no_wait) > 0) {
  }
  ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  return status;
}

int RunPs(CommandContext& ctx) { return ListContainersCommand(ctx, kPsUsage); }

int RunContainers(CommandContext& ctx) {
  if (ctx.args.empty() || ctx.args[0] == "-h" || ctx.args[0] == "--help") {
    (ctx.args.empty() ? std::cerr : std::cout) << kContainersUsage << std::endl;
    return ctx.args.empty() ? kExitUsage : kExitOk;
  }
  std::string sub = ctx.args[0];
  ctx.args.erase(ctx.args.begin());
  ctx.name = "containers " + sub;
  if (sub == "ls" || sub == "list" || sub == "ps") {
    return ListContainersCommand(ctx, "Usage: imgfs containers ls [OPTIONS]");
  }
  if (sub == "rm" || sub == "remove") return RemoveContainersCommand(ctx);
  return UsageError("containers", "unknown command \"" + sub + "\"");
}

}  // namespace imgfs::tools
