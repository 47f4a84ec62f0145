// imgfs — fuzz target for a layer store keeper's record in the store (fs/fuse/keeper_record.h
// ParseKeeperRecord), which `imgfs mount --restart` reads. Oracle: a record that parses is
// exactly what EncodeKeeperRecord makes of it (one encoding per content).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/fuse/keeper_record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto record = imgfs::fs::ParseKeeperRecord(in);
  if (!record.has_value()) return 0;
  if (record->pid < 1 || record->mountpoint.empty() || record->mountpoint[0] != '/') std::abort();
  if (imgfs::fs::EncodeKeeperRecord(*record) != in) std::abort();
  return 0;
}
