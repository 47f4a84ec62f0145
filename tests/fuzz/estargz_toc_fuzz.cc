// imgfs — fuzz target for the eStargz TOC reader (fs/layer/estargz_toc.h): the footer parser
// on the input's tail, the TOC member extractor (gzip + tar) and the TOC JSON → LayerIndex
// builder on the whole input. Oracles: a built index only points inside the data part of
// the blob, its chunks tile every regular file, and it survives Encode/Decode unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/layer/estargz_toc.h"
#include "registry/digest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imgfs::fs;  // NOLINT(google-build-using-namespace): fuzz target only
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto footer = ParseEstargzFooter(in);
  if (footer.has_value() && footer->footer_bytes != kEstargzFooterBytes &&
      footer->footer_bytes != kEstargzLegacyFooterBytes) {
    std::abort();
  }
  (void)ExtractEstargzTocJson(in);

  constexpr uint64_t kBlobSize = 1 << 20;
  constexpr uint64_t kTocOffset = 1 << 19;
  auto layer = imgfs::registry::Digest::Sha256Of("fuzz");
  auto index = BuildEstargzIndexFromToc(in, layer, kBlobSize, kTocOffset);
  if (!index.has_value()) return 0;
  for (const FileEntry& e : index->entries) {
    if (e.type != EntryType::kRegular && e.chunk_count != 0) std::abort();
    uint64_t covered = 0;
    for (uint32_t i = 0; i < e.chunk_count; ++i) {
      const Chunk& c = index->chunks.at(e.first_chunk + i);
      if (c.file_offset != covered || c.blob_length == 0 ||
          c.blob_offset + c.blob_length > kTocOffset) {
        std::abort();
      }
      covered += c.size;
    }
    if (e.chunk_count != 0 && covered != e.size) std::abort();
  }
  auto again = LayerIndex::Decode(index->Encode());
  if (!again.has_value() || !(*again == *index)) std::abort();
  return 0;
}
