// imgfs — fuzz target for the zstd:chunked TOC reader (fs/layer/zstd_chunked_toc.h): footer
// and position-annotation parsers, bounded TOC decompression, and the TOC JSON → LayerIndex
// builder. Oracles: data chunks lie inside the data part of the blob, zeros chunks carry no
// range, chunks tile every regular file, and the index survives Encode/Decode unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/layer/chunk_decoder.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "registry/digest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imgfs::fs;  // NOLINT(google-build-using-namespace): fuzz target only
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)ParseZstdChunkedFooter(in);
  if (size < 128) (void)ParseZstdChunkedPosition(in);
  (void)DecompressZstdChunkedToc(in, 1 << 16);

  constexpr uint64_t kBlobSize = 1 << 22;
  constexpr uint64_t kDataEnd = 1 << 21;
  auto layer = imgfs::registry::Digest::Sha256Of("fuzz");
  auto index = BuildZstdChunkedIndexFromToc(in, layer, kBlobSize, kDataEnd);
  if (!index.has_value()) return 0;
  for (const FileEntry& e : index->entries) {
    if (e.type != EntryType::kRegular && e.chunk_count != 0) std::abort();
    uint64_t covered = 0;
    for (uint32_t i = 0; i < e.chunk_count; ++i) {
      const Chunk& c = index->chunks.at(e.first_chunk + i);
      if (c.file_offset != covered) std::abort();
      if (!IsZerosChunk(c) && c.blob_offset + c.blob_length > kDataEnd) std::abort();
      covered += c.size;
    }
    if (e.chunk_count != 0 && covered != e.size) std::abort();
  }
  auto again = LayerIndex::Decode(index->Encode());
  if (!again.has_value() || !(*again == *index)) std::abort();
  return 0;
}
