// imgfs tests — mount test helpers (see mount_support.h).
#include "tests/support/mount_support.h"

#include <fstream>

#include "base/file_util.h"
#include "base/status.h"

namespace imgfs::testing {

bool IsMounted(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + dir + " ") != std::string::npos) return true;
  }
  return false;
}

std::string ReadAll(const std::string& path) {
  Result<std::string> r = ReadFile(path);
  return r.has_value() ? *r : std::string("<unreadable: ") + r.error().ToString() + ">";
}

}  // namespace imgfs::testing
