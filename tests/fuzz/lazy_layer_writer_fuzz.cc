// imgfs — fuzz target for the eStargz and zstd:chunked writers (fs/convert/layer_writer.h),
// with the project's readers as the round-trip oracle. Input: one byte choosing the chunk
// size (and, for zstd:chunked, fixed-size or content-defined chunks with small bounds, so that
// tiny inputs have many chunks and zero runs), then a tar. Whatever the tar reader accepts must
// convert (both formats), twice to the same bytes; the blob must carry the TOC where its descriptor
// says (eStargz footer and toc.digest, zstd:chunked position and checksum); and when the TOC reader
// builds an index, every regular file read through its chunks (decoded and digest-verified) must
// equal the file's bytes in the input.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/layer/chunk_decoder.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/layer_writer.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "registry/tar_reader.h"
#include "tests/support/fake_blob_source.h"

namespace {

using namespace imgfs;  // NOLINT(google-build-using-namespace): fuzz target only

using imgfs::testing::FakeBlobSource;

struct File {
  std::string name;
  std::string content;
};

// The regular files of the tar that the index lists as regular files (whiteout names are
// listed as whiteouts). Sets *ok false when the tar is rejected.
std::vector<File> RegularFiles(std::string_view tar, bool* ok) {
  std::vector<File> out;
  registry::StringTarInput in(tar);
  registry::TarReader reader(&in);
  *ok = false;
  while (true) {
    auto next = reader.Next();
    if (!next.has_value()) return out;
    if (!next->has_value()) break;
    const registry::TarEntry& e = **next;
    File f{e.name, {}};
    while (true) {
      auto piece = reader.ReadPayload(1 << 16);
      if (!piece.has_value()) return out;
      if (piece->empty()) break;
      f.content += *piece;
    }
    std::string_view base = e.name;
    if (auto slash = base.rfind('/'); slash != std::string_view::npos)
      base.remove_prefix(slash + 1);
    if (e.type == registry::TarEntryType::kRegular && !base.starts_with(".wh.")) {
      out.push_back(std::move(f));
    }
  }
  *ok = true;
  return out;
}

// The blob, or nullopt when the writer refused the tar as its contract says it may: an entry
// whose name, link target, owner name or xattr name is not UTF-8 (a TOC is JSON), refused as
// InvalidArgument. Any other failure of a tar the tar reader accepted is a bug.
std::optional<std::string> Write(std::string_view tar, const fs::LayerWriterOptions& options,
                                 fs::WrittenLayer* layer) {
  std::string blob;
  registry::BlobSink sink = [&blob](std::string_view piece) {
    blob.append(piece);
    return Status::Ok();
  };
  auto written = fs::WriteLazyLayer(fs::TarBytes::FromString(tar), options, sink);
  if (!written.has_value()) {
    if (written.error().code() == StatusCode::kInvalidArgument &&
        written.error().message().find("not valid UTF-8") != std::string::npos) {
      return std::nullopt;
    }
    std::abort();
  }
  *layer = *written;
  return blob;
}

void Check(std::string_view tar, const std::vector<File>& files, fs::LazyFormat format,
           uint64_t chunk, uint8_t choice) {
  fs::LayerWriterOptions options;
  options.format = format;
  options.chunk_size_bytes = chunk;
  if ((choice & 1) != 0) {
    options.zstd_chunking = fs::ZstdChunking::kFixedSize;
  } else {
    options.content_chunking.min_bytes = 1 + (choice >> 4) * 8u;
    options.content_chunking.max_bytes = std::max(options.content_chunking.min_bytes, chunk);
    options.content_chunking.split_bits = 3 + choice % 6u;
    options.content_chunking.zeros_bytes = 16;
  }
  options.compression_level = 1;
  fs::WrittenLayer layer;
  std::optional<std::string> written = Write(tar, options, &layer);
  fs::WrittenLayer again_layer;
  if (Write(tar, options, &again_layer) != written) std::abort();  // deterministic
  if (!written.has_value()) return;
  const std::string& blob = *written;
  if (layer.descriptor.digest != registry::Digest::Sha256Of(blob)) std::abort();
  if (layer.descriptor.size != static_cast<int64_t>(blob.size())) std::abort();
  FakeBlobSource source(blob);
  Result<fs::LayerIndex> index = Status::Internal("unset");
  const auto& notes = layer.descriptor.annotations;
  if (format == fs::LazyFormat::kEstargz) {
    // The footer names the TOC, whose JSON hashes to the toc.digest annotation.
    std::string_view bytes = blob;
    auto footer = fs::ParseEstargzFooter(bytes.substr(bytes.size() - fs::kEstargzFooterBytes));
    if (!footer.has_value() || footer->toc_offset != layer.toc_offset) std::abort();
    auto json = fs::ExtractEstargzTocJson(bytes.substr(
        footer->toc_offset, bytes.size() - fs::kEstargzFooterBytes - footer->toc_offset));
    if (!json.has_value()) std::abort();
    auto want = notes.find(std::string(fs::kEstargzTocDigestAnnotation));
    if (want == notes.end() || want->second != registry::Digest::Sha256Of(*json).String()) {
      std::abort();
    }
    index = fs::LoadEstargzIndex(source, layer.descriptor, false);
  } else {
    // The position annotation names the compressed TOC, which hashes to the checksum
    // annotation and decompresses to the announced length.
    auto position = notes.find(std::string(fs::kZstdChunkedPositionAnnotation));
    if (position == notes.end()) std::abort();
    auto pos = fs::ParseZstdChunkedPosition(position->second);
    if (!pos.has_value() || pos->offset + pos->compressed_length > blob.size()) std::abort();
    std::string_view toc = std::string_view(blob).substr(pos->offset, pos->compressed_length);
    auto sum = notes.find(std::string(fs::kZstdChunkedChecksumAnnotation));
    if (sum == notes.end() || sum->second != registry::Digest::Sha256Of(toc).String()) std::abort();
    if (!fs::DecompressZstdChunkedToc(toc, pos->uncompressed_length).has_value()) std::abort();
    index = fs::LoadZstdChunkedIndex(source, layer.descriptor, false);
  }
  // The TOC → index step may refuse names or entries the tar reader let through.
  if (!index.has_value()) return;
  size_t next = 0;
  for (const fs::FileEntry& e : index->entries) {
    if (e.type != fs::EntryType::kRegular) continue;
    if (next >= files.size() || files[next].name != e.path) std::abort();
    std::vector<uint32_t> ids;
    for (uint32_t c = e.first_chunk; c < e.first_chunk + e.chunk_count; ++c) ids.push_back(c);
    auto got = fs::ReadChunks(source, *index, ids);
    if (!got.has_value()) std::abort();
    std::string content;
    for (const std::string& piece : *got) content += piece;
    if (content != files[next].content) std::abort();
    ++next;
  }
  if (next != files.size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (1 << 20)) return 0;
  // Chunk sizes 1..4096: small enough that tiny inputs have many chunks.
  uint64_t chunk = 1 + static_cast<uint64_t>(data[0]) * 16;
  std::string_view tar(reinterpret_cast<const char*>(data + 1), size - 1);
  bool ok = false;
  std::vector<File> files = RegularFiles(tar, &ok);
  if (!ok) return 0;
  Check(tar, files, fs::LazyFormat::kEstargz, chunk, data[0]);
  Check(tar, files, fs::LazyFormat::kZstdChunked, chunk, data[0]);
  return 0;
}
