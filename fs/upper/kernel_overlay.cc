// imgfs — mounting the kernel's overlayfs over an upper directory.
#include "fs/upper/kernel_overlay.h"

#include <sys/mount.h>

#include <cerrno>

#include "base/log.h"

namespace imgfs::fs {

std::string EscapeOverlayOption(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == ',' || c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string KernelOverlayOptions(const KernelOverlay& overlay, bool kernel_defaults) {
  std::string options = "lowerdir=";
  for (size_t i = 0; i < overlay.lower_dirs.size(); ++i) {
    if (i > 0) options += ':';
    options += EscapeOverlayOption(overlay.lower_dirs[i]);
  }
  options += ",upperdir=" + EscapeOverlayOption(overlay.upper_dir) +
             ",workdir=" + EscapeOverlayOption(overlay.work_dir);
  if (overlay.userxattr) options += ",userxattr";
  if (!kernel_defaults) {
    options += overlay.userxattr ? ",redirect_dir=nofollow" : ",redirect_dir=off";
    options += ",index=off,metacopy=off";
  }
  return options;
}

Status MountKernelOverlay(const KernelOverlay& overlay, const std::string& target) {
  if (overlay.lower_dirs.empty()) return Status::InvalidArgument("an overlay needs a lower layer");
  auto mount = [&](bool kernel_defaults) {
    const std::string options = KernelOverlayOptions(overlay, kernel_defaults);
    if (::mount("overlay", target.c_str(), "overlay", overlay.flags, options.c_str()) != 0) {
      return Status::FromErrno(errno, "mounting overlay at " + target);
    }
    return Status::Ok();
  };
  Status st = mount(false);
  if (!st.ok()) {
    IMGFS_LOG(kInfo) << st.ToString() << "; retrying with the kernel's default options";
    st = mount(true);
  }
  return st;
}

}  // namespace imgfs::fs
