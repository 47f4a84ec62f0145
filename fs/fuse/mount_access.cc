// imgfs — what a FUSE mount needs from the host.
#include "fs/fuse/mount_access.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/unique_fd.h"

namespace imgfs::fs {
namespace {

// fuse.conf is a few lines; more than this is not a fuse.conf fusermount3 would accept either.
constexpr size_t kMaxFuseConfBytes = 64 << 10;

bool HasOption(const std::vector<std::string>& options, std::string_view name) {
  return std::find(options.begin(), options.end(), name) != options.end();
}

std::string Octal(mode_t mode) {
  char buf[16];
  snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// The first kMaxFuseConfBytes of `path`; "" when it cannot be read (fusermount3 then
// assumes no options as well).
std::string ReadFuseConf(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.IsValid()) return "";
  std::string text(kMaxFuseConfBytes, '\0');
  size_t used = 0;
  while (used < text.size()) {
    ssize_t n = ::read(fd.get(), text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<size_t>(n);
  }
  text.resize(used);
  return text;
}

}  // namespace

Status CheckDevFuse(const MountHost& host) {
  struct stat st {};
  if (::stat(host.dev_fuse.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Status::Unavailable("no " + host.dev_fuse +
                                 ": load the FUSE module (modprobe fuse), or, inside a "
                                 "container, start the container with --device /dev/fuse");
    }
    return Status::FromErrno(errno, "stat " + host.dev_fuse);
  }
  if (::faccessat(AT_FDCWD, host.dev_fuse.c_str(), R_OK | W_OK, AT_EACCESS) == 0) {
    return Status::Ok();
  }
  return Status::PermissionDenied(
      host.dev_fuse + " (mode " + Octal(st.st_mode) + ", owner uid " + std::to_string(st.st_uid) +
      " gid " + std::to_string(st.st_gid) + ") is not readable and writable by uid " +
      std::to_string(host.euid) + ": an administrator can open it to every user with `chmod 0666 " +
      host.dev_fuse +
      "` (the mode most distributions give it; a udev rule keeps it across reboots) or to a "
      "group of users with chgrp and chmod 0660; or mount as root");
}

MountHost MountHost::Current() {
  MountHost host;
  host.euid = ::geteuid();
  // libfuse (lib/mount.c exec_fusermount): FUSERMOUNT_DIR first, then execvp's $PATH search.
  host.fusermount_candidates.emplace_back("/usr/bin/fusermount3");
  const char* path = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe): read-only use
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!dirs.empty()) {
    size_t colon = dirs.find(':');
    std::string_view dir = dirs.substr(0, colon);
    host.fusermount_candidates.push_back(std::string(dir.empty() ? "." : dir) + "/fusermount3");
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return host;
}

Status CheckMountAccess(const std::vector<std::string>& mount_options, const MountHost& host) {
  Status dev = CheckDevFuse(host);
  if (!dev.ok()) return dev;
  if (host.euid == 0) return Status::Ok();
  bool found = std::any_of(
      host.fusermount_candidates.begin(), host.fusermount_candidates.end(),
      [](const std::string& candidate) { return ::access(candidate.c_str(), X_OK) == 0; });
  if (!found) {
    return Status::Unavailable(
        "fusermount3 is not installed (not in /usr/bin nor in $PATH): a user other than root "
        "mounts FUSE filesystems through it; install it (Debian: apt-get install fuse3), or "
        "mount as root");
  }
  for (std::string_view option : {"allow_other", "allow_root"}) {
    if (!HasOption(mount_options, option)) continue;
    if (FuseConfAllowsOther(ReadFuseConf(host.fuse_conf))) break;
    return Status::PermissionDenied(
        std::string(option) + " needs the line `user_allow_other` in " + host.fuse_conf +
        " when a user other than root mounts: an administrator can add it, or mount without " +
        std::string(option) + " (then only you reach the mount)");
  }
  return Status::Ok();
}

bool FuseConfAllowsOther(std::string_view text) {
  while (!text.empty()) {
    size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    line = line.substr(0, line.find('#'));
    constexpr std::string_view kSpace = " \t\r\f\v";
    size_t first = line.find_first_not_of(kSpace);
    if (first == std::string_view::npos) continue;
    line = line.substr(first, line.find_last_not_of(kSpace) - first + 1);
    if (line == "user_allow_other") return true;
  }
  return false;
}

bool KernelChecksPermissions(const std::vector<std::string>& mount_options, uid_t euid) {
  return euid == 0 || HasOption(mount_options, "allow_other");
}

bool IsPassedMountOption(std::string_view option) {
  for (std::string_view passed :
       {"allow_other", "allow_root", "dev", "suid", "nodev", "nosuid", "exec", "noexec"}) {
    if (option == passed) return true;
  }
  return false;
}

}  // namespace imgfs::fs
