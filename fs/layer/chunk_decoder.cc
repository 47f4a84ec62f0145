// imgfs — chunk decoding and read coalescing (see chunk_decoder.h).
#include "fs/layer/chunk_decoder.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <numeric>

#include "fs/layer/gunzip.h"
#include "fs/layer/zstd_buffer.h"

namespace imgfs::fs {
namespace {

std::string FileOfChunk(const LayerIndex& index, uint32_t id) {
  for (const FileEntry& e : index.entries) {
    if (e.chunk_count != 0 && id >= e.first_chunk && id - e.first_chunk < e.chunk_count) {
      return e.path;
    }
  }
  return "?";
}

}  // namespace

Result<std::string> DecodeChunk(LayerFormat format, const Chunk& chunk, std::string_view compressed,
                                const registry::Digest& layer, std::string_view file) {
  auto where = [&] {
    return "layer " + layer.String() + ", file '" + std::string(file) + "', chunk at file offset " +
           std::to_string(chunk.file_offset);
  };
  if (chunk.size > kMaxChunkBytes) {
    return Status::Corrupt(where() + ": chunk of " + std::to_string(chunk.size) +
                           " bytes is larger than " + std::to_string(kMaxChunkBytes) +
                           " (kMaxChunkBytes)");
  }
  if (chunk.inner_offset > std::numeric_limits<uint64_t>::max() - chunk.size) {
    return Status::Corrupt(where() + ": absurd chunk offset " + std::to_string(chunk.inner_offset));
  }
  if (compressed.size() != chunk.blob_length) {
    return Status::Corrupt(where() + ": got " + std::to_string(compressed.size()) +
                           " compressed bytes, expected " + std::to_string(chunk.blob_length));
  }
  std::string out;
  const uint64_t begin = chunk.inner_offset;
  const uint64_t end = chunk.inner_offset + chunk.size;
  Status s;
  if (IsZerosChunk(chunk)) {
    if (format != LayerFormat::kZstdChunked) {
      return Status::Corrupt(where() + ": chunk without compressed bytes");
    }
    out.assign(chunk.size, '\0');
  } else {
    // No reserve(chunk.size): the size is the TOC's word; the output grows with real data.
    switch (format) {
      case LayerFormat::kEstargz:
        if (Result<GunzipResult> r = GunzipRange(compressed, begin, end, &out); !r.has_value()) {
          s = r.error();
        } else if (r->decoded < end) {
          s = Status::Corrupt("gzip data ends before the chunk's end");
        }
        break;
      case LayerFormat::kZstdChunked:
        s = UnzstdRange(compressed, begin, end, &out);
        break;
      case LayerFormat::kTar:
        if (end > compressed.size()) {
          s = Status::Corrupt("stored chunk shorter than its size");
        } else {
          out.assign(compressed.substr(begin, chunk.size));
        }
        break;
      case LayerFormat::kTarGzip:
      case LayerFormat::kTarZstd:
        return Status::Unsupported(where() + ": layer format has no per-chunk compressed ranges");
    }
  }
  if (!s.ok()) return s.WithContext(where());
  if (!chunk.digest.empty()) {
    Status v = chunk.digest.Verify(out);
    if (!v.ok()) return Status::Corrupt(where() + ": chunk digest mismatch: " + v.message());
  }
  return out;
}

std::vector<CoalescedRead> CoalesceChunkReads(const std::vector<Chunk>& chunks,
                                              uint64_t max_gap_bytes) {
  std::vector<CoalescedRead> reads;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = chunks[i];
    if (IsZerosChunk(c) || c.blob_length == 0) continue;
    if (!reads.empty()) {
      CoalescedRead& cur = reads.back();
      uint64_t cur_end = cur.range.end();
      if (c.blob_offset >= cur.range.offset &&
          (c.blob_offset <= cur_end || c.blob_offset - cur_end <= max_gap_bytes)) {
        cur.range.length = std::max(cur_end, c.blob_offset + c.blob_length) - cur.range.offset;
        cur.chunks.push_back(i);
        continue;
      }
    }
    reads.push_back(CoalescedRead{{c.blob_offset, c.blob_length}, {i}});
  }
  return reads;
}

std::string_view SliceChunk(const CoalescedRead& read, std::string_view read_bytes,
                            const Chunk& c) {
  uint64_t from = c.blob_offset - read.range.offset;
  if (from >= read_bytes.size()) return {};
  return read_bytes.substr(static_cast<size_t>(from), static_cast<size_t>(c.blob_length));
}

Result<std::vector<std::string>> ReadChunks(registry::BlobSource& source, const LayerIndex& index,
                                            const std::vector<uint32_t>& chunk_ids,
                                            uint64_t max_gap_bytes) {
  std::vector<size_t> order(chunk_ids.size());
  std::iota(order.begin(), order.end(), 0);
  for (uint32_t id : chunk_ids) {
    if (id >= index.chunks.size()) {
      return Status::InvalidArgument("chunk " + std::to_string(id) + " not in the layer index");
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return index.chunks[chunk_ids[a]].blob_offset < index.chunks[chunk_ids[b]].blob_offset;
  });
  std::vector<Chunk> sorted;
  sorted.reserve(order.size());
  for (size_t k : order) sorted.push_back(index.chunks[chunk_ids[k]]);
  std::vector<std::string> out(chunk_ids.size());
  std::vector<bool> done(chunk_ids.size(), false);
  // The file name costs a scan of the entries: it is looked up only for an error message.
  auto decode = [&](size_t pos, std::string_view compressed) -> Result<std::string> {
    Result<std::string> data =
        DecodeChunk(index.format, sorted[pos], compressed, index.layer_digest, "");
    if (data.has_value()) return data;
    return DecodeChunk(index.format, sorted[pos], compressed, index.layer_digest,
                       FileOfChunk(index, chunk_ids[order[pos]]))
        .error();
  };
  for (const CoalescedRead& read : CoalesceChunkReads(sorted, max_gap_bytes)) {
    IMGFS_ASSIGN_OR_RETURN(std::string bytes, source.ReadBlobRange(index.layer_digest, read.range));
    for (size_t pos : read.chunks) {
      IMGFS_ASSIGN_OR_RETURN(out[order[pos]], decode(pos, SliceChunk(read, bytes, sorted[pos])));
      done[order[pos]] = true;
    }
  }
  for (size_t pos = 0; pos < sorted.size(); ++pos) {
    if (done[order[pos]]) continue;
    IMGFS_ASSIGN_OR_RETURN(out[order[pos]], decode(pos, {}));
  }
  return out;
}

}  // namespace imgfs::fs
