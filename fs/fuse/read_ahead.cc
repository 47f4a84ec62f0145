// imgfs — the kernel's read-ahead window of a FUSE mount (see read_ahead.h).
#include "fs/fuse/read_ahead.h"

#include <fcntl.h>
#include <unistd.h>

#include "base/file_util.h"
#include "base/log.h"
#include "base/mountinfo.h"

namespace imgfs::fs {
uint32_t RaiseMountReadAhead(const std::string& mountpoint, uint32_t kib, uint32_t offered) {
  if (::geteuid() != 0) return offered;
  Result<std::string> mountinfo = ReadFile("/proc/self/mountinfo");
  if (!mountinfo.has_value()) {
    IMGFS_LOG(kDebug) << "read-ahead left at the default: " << mountinfo.error().ToString();
    return offered;
  }
  std::optional<std::string> dev = MountDeviceOf(*mountinfo, mountpoint);
  if (!dev.has_value()) {
    IMGFS_LOG(kDebug) << "read-ahead left at the default: " << mountpoint
                      << " not in /proc/self/mountinfo";
    return offered;
  }
  const std::string path = "/sys/class/bdi/" + *dev + "/read_ahead_kb";
  Result<UniqueFd> fd = OpenFile(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  Status written = fd.has_value() ? WriteAll(fd->get(), std::to_string(kib)) : fd.error();
  if (!written.ok()) {
    IMGFS_LOG(kDebug) << "read-ahead left at the default: " << written.ToString();
    return offered;
  }
  return kib * 1024;
}

}  // namespace imgfs::fs
