// imgfs — zstd:chunked TOC reader (see zstd_chunked_toc.h).
#include "fs/layer/zstd_chunked_toc.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "fs/layer/estargz_toc.h"
#include "fs/layer/zstd_buffer.h"

namespace imgfs::fs {
namespace {

std::string LayerWhat(const registry::Digest& layer) {
  return layer.empty() ? "zstd:chunked layer" : "zstd:chunked layer " + layer.String();
}

uint64_t Le64(std::string_view b, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(b[at + i])) << (8 * i);
  return v;
}

const std::string* Annotation(const registry::Descriptor& d, std::string_view a,
                              std::string_view b) {
  auto it = d.annotations.find(std::string(a));
  if (it != d.annotations.end()) return &it->second;
  it = d.annotations.find(std::string(b));
  if (it != d.annotations.end()) return &it->second;
  return nullptr;
}

}  // namespace

Result<ZstdChunkedTocPosition> ParseZstdChunkedPosition(std::string_view annotation) {
  uint64_t v[4] = {0, 0, 0, 0};
  size_t field = 0;
  bool digit = false;
  for (char c : annotation) {
    if (c == ':') {
      if (!digit || ++field >= 4)
        return Status::Corrupt("bad zstd:chunked manifest position '" + std::string(annotation) +
                               "'");
      digit = false;
      continue;
    }
    if (c < '0' || c > '9' || v[field] > (UINT64_MAX - 9) / 10) {
      return Status::Corrupt("bad zstd:chunked manifest position '" + std::string(annotation) +
                             "'");
    }
    v[field] = v[field] * 10 + static_cast<uint64_t>(c - '0');
    digit = true;
  }
  if (field != 3 || !digit) {
    return Status::Corrupt("bad zstd:chunked manifest position '" + std::string(annotation) + "'");
  }
  return ZstdChunkedTocPosition{v[0], v[1], v[2], v[3]};
}

Result<ZstdChunkedTocPosition> ParseZstdChunkedFooter(std::string_view tail) {
  if (tail.size() >= kZstdChunkedFooterBytes &&
      tail.substr(tail.size() - 8) == kZstdChunkedFooterMagic) {
    std::string_view f = tail.substr(tail.size() - kZstdChunkedFooterBytes);
    return ZstdChunkedTocPosition{Le64(f, 0), Le64(f, 8), Le64(f, 16), Le64(f, 24)};
  }
  if (tail.size() >= kZstdChunkedOldFooterBytes &&
      tail.substr(tail.size() - 8) == kZstdChunkedOldFooterMagic) {
    std::string_view f = tail.substr(tail.size() - kZstdChunkedOldFooterBytes);
    return ZstdChunkedTocPosition{Le64(f, 0), Le64(f, 8), Le64(f, 16), Le64(f, 24)};
  }
  return Status::Corrupt("no zstd:chunked footer at the end of the blob");
}

Result<std::string> DecompressZstdChunkedToc(std::string_view compressed,
                                             uint64_t uncompressed_length) {
  if (uncompressed_length > kMaxTocUncompressedBytes) {
    return Status::Corrupt("zstd:chunked TOC of " + std::to_string(uncompressed_length) +
                           " bytes is larger than " + std::to_string(kMaxTocUncompressedBytes) +
                           " (kMaxTocUncompressedBytes)");
  }
  // The output grows with what really decompresses (the announced length is the blob's
  // word: no allocation of it up front); a TOC longer than announced is refused at once.
  IMGFS_ASSIGN_OR_RETURN(std::string out,
                         UnzstdAll(compressed, uncompressed_length, "zstd:chunked TOC"));
  if (out.size() != uncompressed_length) {
    return Status::Corrupt("zstd:chunked TOC decompresses to " + std::to_string(out.size()) +
                           " bytes, announced " + std::to_string(uncompressed_length));
  }
  return out;
}

Result<LayerIndex> BuildZstdChunkedIndexFromToc(std::string_view toc_json,
                                                const registry::Digest& layer, uint64_t blob_size,
                                                uint64_t data_end) {
  const std::string what = LayerWhat(layer);
  if (data_end > blob_size) return Status::Corrupt(what + ": TOC offset beyond the blob");
  IMGFS_ASSIGN_OR_RETURN(std::vector<toc_internal::TocRecord> records,
                         toc_internal::ParseTocJson(toc_json, what));
  // For each record: the end of its frame(s) = the next larger chunk offset of the same
  // file, else the file's endOffset.
  // owner[i]: the record of the file a chunk record belongs to (the preceding non-chunk).
  std::vector<size_t> owner(records.size(), 0);
  for (size_t i = 0; i < records.size(); ++i) {
    owner[i] = records[i].type == "chunk" && i > 0 ? owner[i - 1] : i;
  }
  std::vector<uint64_t> ends(records.size(), 0);
  for (size_t i = records.size(); i-- > 0;) {
    if (records[i].type != "reg" && records[i].type != "chunk") continue;
    size_t reg = owner[i];
    bool last = i + 1 == records.size() || records[i + 1].type != "chunk";
    if (last) {
      ends[i] = records[reg].end_offset;
    } else {
      ends[i] = records[i + 1].offset > records[i].offset ? records[i + 1].offset : ends[i + 1];
    }
  }
  auto place = [&](size_t i) -> Result<toc_internal::ChunkPlace> {
    const auto& r = records[i];
    toc_internal::ChunkPlace p;
    if (r.chunk_type == "zeros") return p;  // no bytes to fetch
    if (!r.chunk_type.empty()) {
      return Status::Corrupt("unknown chunk type '" + r.chunk_type + "'");
    }
    // The reg record of this chunk's file carries endOffset; a chunk record does not.
    size_t reg = owner[i];
    if (!r.has_offset || !records[reg].has_end_offset) {
      return Status::Corrupt("chunk without offset/endOffset");
    }
    if (ends[i] <= r.offset || ends[i] > data_end) {
      return Status::Corrupt("chunk bytes [" + std::to_string(r.offset) + ", " +
                             std::to_string(ends[i]) + ") outside the data part of the blob (" +
                             std::to_string(data_end) + " bytes)");
    }
    p.blob_offset = r.offset;
    p.blob_length = ends[i] - r.offset;
    return p;
  };
  auto skip = [](const toc_internal::TocRecord&) { return false; };
  IMGFS_ASSIGN_OR_RETURN(LayerIndex index, toc_internal::AssembleIndex(records, what, place, skip));
  index.layer_digest = layer;
  index.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
  index.format = LayerFormat::kZstdChunked;
  index.compressed_size = blob_size;
  return index;
}

Result<LayerIndex> LoadZstdChunkedIndex(registry::BlobSource& source,
                                        const registry::Descriptor& layer,
                                        bool allow_missing_checksum) {
  const std::string what = LayerWhat(layer.digest);
  if (layer.size <= 0) return Status::Corrupt(what + ": unknown blob size");
  const uint64_t blob_size = static_cast<uint64_t>(layer.size);
  registry::Digest want;
  if (const std::string* sum =
          Annotation(layer, kZstdChunkedChecksumAnnotation, kZstdChunkedOldChecksumAnnotation)) {
    Result<registry::Digest> d = registry::Digest::Parse(*sum);
    if (!d.has_value()) return Status::Corrupt(what + ": bad manifest-checksum annotation");
    want = *d;
  } else if (!allow_missing_checksum) {
    return Status::Corrupt(what + ": no manifest-checksum annotation to verify the TOC against");
  }
  ZstdChunkedTocPosition pos;
  if (const std::string* p =
          Annotation(layer, kZstdChunkedPositionAnnotation, kZstdChunkedOldPositionAnnotation)) {
    Result<ZstdChunkedTocPosition> parsed = ParseZstdChunkedPosition(*p);
    if (!parsed.has_value()) return parsed.error().WithContext(what);
    pos = *parsed;
  } else {
    uint64_t tail_len = std::min<uint64_t>(blob_size, kZstdChunkedFooterBytes);
    IMGFS_ASSIGN_OR_RETURN(std::string tail,
                           source.ReadBlobRange(layer.digest, {blob_size - tail_len, tail_len}));
    if (tail.size() != tail_len) return Status::Corrupt(what + ": short read of the footer");
    Result<ZstdChunkedTocPosition> parsed = ParseZstdChunkedFooter(tail);
    if (!parsed.has_value()) return parsed.error().WithContext(what);
    pos = *parsed;
  }
  if (pos.type != kZstdChunkedManifestType) {
    return Status::Corrupt(what + ": unsupported TOC type " + std::to_string(pos.type));
  }
  if (pos.compressed_length == 0 || pos.offset > blob_size ||
      pos.compressed_length > blob_size - pos.offset) {
    return Status::Corrupt(what + ": TOC [" + std::to_string(pos.offset) + ", +" +
                           std::to_string(pos.compressed_length) + ") outside the blob of " +
                           std::to_string(blob_size) + " bytes");
  }
  if (pos.compressed_length > kMaxTocCompressedBytes) {
    return Status::Corrupt(what + ": TOC of " + std::to_string(pos.compressed_length) +
                           " bytes is larger than " + std::to_string(kMaxTocCompressedBytes) +
                           " (kMaxTocCompressedBytes)");
  }
  IMGFS_ASSIGN_OR_RETURN(std::string compressed,
                         source.ReadBlobRange(layer.digest, {pos.offset, pos.compressed_length}));
  if (compressed.size() != pos.compressed_length) {
    return Status::Corrupt(what + ": short read of the TOC");
  }
  if (!want.empty()) {
    Status v = want.Verify(compressed);
    if (!v.ok()) return Status::Corrupt(what + ": TOC checksum mismatch: " + v.message());
  }
  Result<std::string> toc = DecompressZstdChunkedToc(compressed, pos.uncompressed_length);
  if (!toc.has_value()) return toc.error().WithContext(what);
  IMGFS_ASSIGN_OR_RETURN(LayerIndex index,
                         BuildZstdChunkedIndexFromToc(*toc, layer.digest, blob_size, pos.offset));
  if (!layer.media_type.empty()) index.media_type = layer.media_type;
  return index;
}

}  // namespace imgfs::fs
