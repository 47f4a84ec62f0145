// imgfs — fuzz target for base/mountinfo.h MountDeviceOf: /proc/self/mountinfo carries
// mount points that other local users chose (fusermount3 mounts). Oracle: a device found is
// MAJ:MIN in decimal digits, so it never names another sysfs path.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/mountinfo.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (std::string_view mountpoint : {"/mnt/x", "/", "/tmp/with space"}) {
    auto dev = imgfs::MountDeviceOf(in, mountpoint);
    if (!dev.has_value()) continue;
    const size_t colon = dev->find(':');
    if (colon == 0 || colon == std::string::npos || colon + 1 == dev->size() ||
        dev->find_first_not_of("0123456789:") != std::string::npos ||
        dev->find(':', colon + 1) != std::string::npos) {
      std::abort();
    }
  }
  return 0;
}
