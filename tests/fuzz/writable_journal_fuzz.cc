// imgfs — fuzz target for the journal of a writable mount (fs/writable/writable_journal.h),
// which a daemon taking the mount over reads back from the mount's work directory.
// Oracle: whatever loaded is consistent (every attached id's parent is recorded, every handle's
// id is), and its snapshot loads again into the same snapshot.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/writable/writable_journal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using imgfs::fs::WritableJournal;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  WritableJournal loaded;
  (void)loaded.LoadText(in);
  for (const auto& [id, rec] : loaded.nodes()) {
    if (id < 2 || id >= loaded.next_id()) std::abort();
    if (rec.parent > 1 && !loaded.nodes().contains(rec.parent)) std::abort();
    if (rec.name.empty() || rec.name.find('/') != std::string::npos) std::abort();
  }
  for (const auto& [fh, h] : loaded.handles()) {
    if (fh == 0 || fh >= loaded.next_fh() || !loaded.nodes().contains(h.id)) std::abort();
  }
  const std::string snapshot = loaded.Snapshot();
  WritableJournal again;
  if (!again.LoadText(snapshot).ok()) std::abort();
  if (again.Snapshot() != snapshot) std::abort();
  return 0;
}
