// imgfs tests — mount test helpers (see mount_support.h).
#include "tests/support/mount_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "base/status.h"

namespace imgfs::testing {

bool IsMounted(const std::string& dir) { return IsMountPoint(dir); }

std::string ReadAll(const std::string& path) {
  Result<std::string> r = ReadFile(path);
  return r.has_value() ? *r : std::string("<unreadable: ") + r.error().ToString() + ">";
}

pid_t ChildOf(pid_t pid) {
  std::istringstream in(
      ReadAll("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children"));
  pid_t child = 0;
  in >> child;
  return child;
}

std::string ReadFromDaemon(int fd, std::string* error) {
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::string out;
  char buf[1 << 16];
  for (off_t off = 0;;) {
    const ssize_t n = pread(fd, buf, sizeof(buf), off);
    if (n < 0) {
      *error = std::string("pread: ") + strerror(errno);
      return out;
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
}

}  // namespace imgfs::testing
