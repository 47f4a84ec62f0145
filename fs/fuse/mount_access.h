// imgfs — what a FUSE mount needs from the host, checked before mounting so that a missing
// piece is reported with what to do about it instead of libfuse's bare "mount failed".
//
// Every mount needs /dev/fuse readable and writable by the caller (libfuse opens it before
// anything else). A user other than root cannot call mount(2), so libfuse hands the mount to
// the setuid helper fusermount3 (/usr/bin/fusermount3, else the one in $PATH; it opens
// /dev/fuse with the user's rights too), which accepts allow_other and allow_root only when
// /etc/fuse.conf holds the line `user_allow_other`.
//
// Thread-safety: the functions are thread-safe.
#ifndef IMGFS_FS_FUSE_MOUNT_ACCESS_H_
#define IMGFS_FS_FUSE_MOUNT_ACCESS_H_

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace imgfs::fs {

// The host's FUSE pieces as libfuse finds them; tests replace them.
struct MountHost {
  uid_t euid = 0;
  std::string dev_fuse = "/dev/fuse";
  // Where libfuse looks for fusermount3, in its order.
  std::vector<std::string> fusermount_candidates;
  std::string fuse_conf = "/etc/fuse.conf";

  // This process's host: its euid, /usr/bin/fusermount3 and then each $PATH directory.
  static MountHost Current();
};

// OK when nothing known stands in the way of a mount with `mount_options` (the -o list,
// "allow_other", …) by host.euid; otherwise the reason and what to do:
//   Unavailable       /dev/fuse is missing, or (not root) no fusermount3 was found;
//   PermissionDenied  /dev/fuse is not readable and writable by this process, or (not root)
//                     allow_other/allow_root is asked while fuse.conf lacks user_allow_other.
Status CheckMountAccess(const std::vector<std::string>& mount_options,
                        const MountHost& host = MountHost::Current());

// OK when /dev/fuse (host.dev_fuse) exists and this process can read and write it; otherwise
// the first check of CheckMountAccess's errors (Unavailable, PermissionDenied) and what to do.
Status CheckDevFuse(const MountHost& host = MountHost::Current());

// Whether fuse.conf text holds `user_allow_other`, read as fusermount3 reads it: '#' starts a
// comment, each line is trimmed of white space and must then be exactly the option.
bool FuseConfAllowsOther(std::string_view text);

// Whether a mount with `mount_options` by host.euid gets `default_permissions` (the kernel
// checks modes against the owners the image stores). Root's mounts do. A user's mount
// without allow_other does not: only that user (and, with allow_root, root) can reach it,
// and that user owns the store holding every byte of the image, so the checks would protect
// nothing and only hide the image's root-only files from the user who pulled it. The user
// acts as the image's root, as in podman's user namespace. With allow_other they do.
bool KernelChecksPermissions(const std::vector<std::string>& mount_options, uid_t euid);

// Whether `option` is one of the -o options imgfs passes on to the kernel mount (through
// libfuse): allow_other, allow_root, dev, suid, nodev, nosuid, exec, noexec.
bool IsPassedMountOption(std::string_view option);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_MOUNT_ACCESS_H_
