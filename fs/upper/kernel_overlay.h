// imgfs — mounting the kernel's overlayfs over an upper directory: the one place that builds
// its options (`imgfs run`'s root, `imgfs mount --rw --driver overlay`).
//
// The options are docker's for its overlay2 driver: redirect_dir=off, index=off and
// metacopy=off keep the upper in the plain conventions of upper_dir.h (no redirect or metacopy
// xattrs, no index), so commit and imgfs's own writable filesystem read it the same; the cost
// is that rename(2) of a directory that comes from a lower layer fails with EXDEV (tools such
// as mv then copy). A kernel that refuses one of them (an old one, or a module parameter
// forbidding it) gets a second try with its default options.
//
// Thread-safety: free functions, safe from any thread.
#ifndef IMGFS_FS_UPPER_KERNEL_OVERLAY_H_
#define IMGFS_FS_UPPER_KERNEL_OVERLAY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace imgfs::fs {

struct KernelOverlay {
  std::vector<std::string> lower_dirs;  // topmost first; at least one
  std::string upper_dir;
  std::string work_dir;  // an empty directory on the upper's filesystem, outside it
  // In a user namespace (rootless): overlayfs keeps its markers in user.overlay.* and takes
  // redirect_dir=nofollow only (what "off" means without redirect_always_follow).
  bool userxattr = false;
  uint64_t flags = 0;  // mount(2) flags (MS_NODEV, ...)
};

// Escapes an overlayfs option value: ',' ':' and '\' are special there.
std::string EscapeOverlayOption(const std::string& value);

// The option string of `overlay` (without the fallback: with docker's options).
std::string KernelOverlayOptions(const KernelOverlay& overlay, bool kernel_defaults = false);

// Mounts `overlay` at `target` (docker's options, else the kernel's defaults; logged).
// InvalidArgument for an empty lower list; the mount(2) error otherwise.
Status MountKernelOverlay(const KernelOverlay& overlay, const std::string& target);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_UPPER_KERNEL_OVERLAY_H_
