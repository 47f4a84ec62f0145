// imgfs — fuzz target for the journal of a layer store mount's directory numbers
// (fs/layer_store/layer_store_journal.h), which a daemon taking the mount over reads back.
// Oracle: whatever loaded resolves both ways (a number's name gives the number again), and
// numbering the same names again in a fresh journal gives the same numbers.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/layer_store/layer_store_journal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using imgfs::fs::LayerStoreJournal;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  LayerStoreJournal loaded;
  (void)loaded.LoadText(in);
  LayerStoreJournal again;
  for (uint64_t ino = 2; ino < 2 + loaded.ref_dir_count(); ++ino) {
    auto name = loaded.RefName(ino);
    if (!name.has_value()) std::abort();
    auto same = loaded.RefDir(*name);
    auto fresh = again.RefDir(*name);
    if (!same.has_value() || *same != ino || !fresh.has_value() || *fresh != ino) std::abort();
  }
  for (uint64_t slot = 1; slot <= loaded.slot_count(); ++slot) {
    auto layer = loaded.SlotAt(slot);
    if (!layer.has_value()) std::abort();
    auto same = loaded.Slot(layer->ref_dir, layer->digest_element);
    auto fresh = again.Slot(layer->ref_dir, layer->digest_element);
    if (!same.has_value() || *same != slot || !fresh.has_value() || *fresh != slot) std::abort();
  }
  return 0;
}
