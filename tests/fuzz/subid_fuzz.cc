// imgfs — fuzz target for fs/run/subid.h ParseSubordinateRanges: /etc/subuid and /etc/subgid
// are read before a rootless run maps them into its user namespace. Oracles: every range is
// non-empty and ends below the invalid id 4294967295, at most kMaxSubordinateRanges are
// kept, and the maps built from them are contiguous from 0 on, never past the largest id.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/run/subid.h"
#include "fs/run/userns.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using imgfs::fs::run::SubordinateRange;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (std::string_view name : {"nobody", "alice", ""}) {
    for (uint32_t id : {0u, 1000u, 65534u}) {
      auto ranges = imgfs::fs::run::ParseSubordinateRanges(in, name, id);
      if (ranges.size() > imgfs::fs::run::kMaxSubordinateRanges) std::abort();
      for (const SubordinateRange& r : ranges) {
        if (r.count == 0 || uint64_t{r.start} + r.count > 4294967295u) std::abort();
      }
      auto maps = imgfs::fs::run::RootlessMappings(id, ranges);
      uint64_t next = 0;
      for (const auto& m : maps) {
        if (m.inside != next || m.count == 0) std::abort();
        next += m.count;
      }
      if (next > 4294967295u) std::abort();
    }
  }
  return 0;
}
