// imgfs tests — mount test helpers (see mount_support.h).
#include "tests/support/mount_support.h"

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "base/status.h"

namespace imgfs::testing {

bool IsMounted(const std::string& dir) { return IsMountPoint(dir); }

std::string ReadAll(const std::string& path) {
  Result<std::string> r = ReadFile(path);
  return r.has_value() ? *r : std::string("<unreadable: ") + r.error().ToString() + ">";
}

}  // namespace imgfs::testing
