// imgfs — fuzz target for LayerIndex::Decode (fs/layer/layer_index.h).
//
// Each input is decoded twice: as is (exercising the magic and checksum checks) and with a
// correct trailing sha256 appended, so the fuzzer reaches the body parser and the consistency
// checks. Oracle: whatever decodes must re-encode to bytes that decode to the same index, and
// decoding without the chunk table (ChunkTable::kSkip) must give that index with its chunks
// dropped; it may accept more (the table's values are not checked), never crash.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/layer/layer_index.h"
#include "registry/digest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using imgfs::fs::LayerIndex;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)LayerIndex::Decode(in);

  std::string sealed(in);
  std::string hex = imgfs::registry::Digest::Sha256Of(in).hex();
  for (size_t i = 0; i < hex.size(); i += 2) {
    sealed.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  auto index = LayerIndex::Decode(sealed);
  auto skipped = LayerIndex::Decode(sealed, LayerIndex::ChunkTable::kSkip);
  if (index.has_value()) {
    auto again = LayerIndex::Decode(index->Encode());
    if (!again.has_value() || !(*again == *index)) std::abort();
    index->DropChunks();
    if (!skipped.has_value() || !(*skipped == *index)) std::abort();
  }
  return 0;
}
