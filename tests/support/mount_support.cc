// imgfs tests — mount test helpers (see mount_support.h).
#include "tests/support/mount_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
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

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (unsigned char c : in) {
    bits = (bits << 8) | c;
    count += 8;
    while (count >= 6) {
      count -= 6;
      out += kAlphabet[(bits >> count) & 63];
    }
  }
  if (count > 0) out += kAlphabet[(bits << (6 - count)) & 63];
  while (out.size() % 4 != 0) out += '=';
  return out;
}

}  // namespace imgfs::testing
