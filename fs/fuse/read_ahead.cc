// imgfs — the kernel's read-ahead window of a FUSE mount (see read_ahead.h).
#include "fs/fuse/read_ahead.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "base/file_util.h"
#include "base/log.h"

namespace imgfs::fs {
namespace {

// A mountinfo path with its octal escapes (\040 and the like) undone.
std::string Unescape(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '3' &&
        field[i + 2] >= '0' && field[i + 2] <= '7' && field[i + 3] >= '0' && field[i + 3] <= '7') {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                               (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> MountDeviceOf(std::string_view mountinfo, std::string_view mountpoint) {
  std::optional<std::string> found;
  size_t pos = 0;
  while (pos < mountinfo.size()) {
    size_t nl = mountinfo.find('\n', pos);
    if (nl == std::string_view::npos) nl = mountinfo.size();
    const std::string_view line = mountinfo.substr(pos, nl - pos);
    pos = nl + 1;
    // id parent MAJ:MIN root mountpoint ...
    std::vector<std::string_view> fields;
    size_t f = 0;
    while (f < line.size() && fields.size() < 5) {
      size_t sp = line.find(' ', f);
      if (sp == std::string_view::npos) sp = line.size();
      fields.push_back(line.substr(f, sp - f));
      f = sp + 1;
    }
    if (fields.size() < 5 || Unescape(fields[4]) != mountpoint) continue;
    const std::string_view dev = fields[2];
    const size_t colon = dev.find(':');
    if (colon == 0 || colon == std::string_view::npos || colon + 1 == dev.size() ||
        dev.find_first_not_of("0123456789:") != std::string_view::npos ||
        dev.find(':', colon + 1) != std::string_view::npos) {
      continue;
    }
    found = std::string(dev);
  }
  return found;
}

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
