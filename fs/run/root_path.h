// imgfs — paths inside a container's root, resolved through directory file descriptors.
//
// `imgfs run` prepares mountpoints (/proc, /sys, /dev, /etc/resolv.conf, /etc/hosts, -v
// targets) inside a tree an image controls: any component may be a symlink, absolute or
// with "..", meant to point the mount at a host directory. OpenInRoot walks the path one
// component at a time from a directory fd with O_NOFOLLOW, and follows a symlink by reading
// it and continuing inside the root (as RESOLVE_IN_ROOT does: an absolute target starts
// again at the root, ".." never climbs above it). Nothing is ever resolved by the kernel
// from a path string, so swapping a directory for a symlink between two steps reaches
// nothing outside. Mounting then happens on /proc/self/fd/N of the O_PATH fd obtained.
// ReadFileInRoot uses openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) where nothing is
// created.
//
// Thread-safety: functions over caller-owned descriptors; no shared state.
#ifndef IMGFS_FS_RUN_ROOT_PATH_H_
#define IMGFS_FS_RUN_ROOT_PATH_H_

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/status.h"
#include "base/unique_fd.h"

namespace imgfs::fs::run {

// Linux's limit on symlinks followed while resolving one path (MAXSYMLINKS).
inline constexpr int kMaxSymlinks = 40;

// What OpenInRoot creates when a component is missing.
enum class Create {
  kNothing,    // NotFound
  kDirectory,  // every missing component becomes a directory (mode `mode`)
  kFile,       // missing parents become directories (0755), the last an empty file (0644)
};

// Resolves `path` (absolute or relative, both taken from `root_fd`) inside `root_fd` and
// returns an O_PATH descriptor of what it names (a directory fd of the root itself for "/").
// Symlinks are followed inside the root, at most kMaxSymlinks (then InvalidArgument).
// `*followed_symlink` (optional) tells whether one was followed. NotFound when something is
// missing and `create` is kNothing; a non-directory in the middle is InvalidArgument.
Result<UniqueFd> OpenInRoot(int root_fd, std::string_view path, Create create = Create::kNothing,
                            mode_t mode = 0755, bool* followed_symlink = nullptr);

// Reads the regular file `path` inside `root_fd` (openat2 RESOLVE_IN_ROOT |
// RESOLVE_NO_MAGICLINKS), at most `max_bytes` (over it: InvalidArgument naming the limit).
Result<std::string> ReadFileInRoot(int root_fd, std::string_view path, size_t max_bytes);

// "/proc/self/fd/N": a path the kernel resolves to the object `fd` refers to, without
// walking any name (for mount(2), which takes no descriptor).
std::string FdPath(int fd);

// mount(2) onto what `target_fd` refers to.
Status MountOnFd(const std::string& source, int target_fd, const char* type, unsigned long flags,
                 const std::string& data = "");

// Bind-mounts `source` (recursively; a host path, or FdPath of a descriptor) at `target`
// inside `root_fd` (OpenInRoot with `create`), then applies `flags` (MS_RDONLY, MS_NODEV,
// MS_NOSUID, MS_NOEXEC) by a bind remount when there are any. The remount needs a
// descriptor of the new mount, not of the directory it covers: the target is resolved
// again after the bind (openat crosses into the mount).
Status BindInRoot(int root_fd, std::string_view target, const std::string& source,
                  unsigned long flags, Create create = Create::kNothing);

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_ROOT_PATH_H_
