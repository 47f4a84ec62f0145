// imgfs — fuzz target for the gzip checkpoint decoder (fs/layer/gzip_index.h).
//
// The input is fed as a gzip blob in pieces whose sizes come from its first byte, with
// checkpoint recording on (small span): zlib, the indexing engine. Then decoding restarts from
// every recorded checkpoint with the serving engine (ISA-L): on a complete stream its output
// must equal the corresponding part of the first pass's; on a cut-short one it must be a
// prefix of it (ISA-L may hold back the last symbols whose bits it cannot all see yet) or an
// error (ISA-L sees some invalid block headers before zlib does: a lit/len code set without
// an end-of-block code once the lengths pass 256). Nothing may crash, hang or read out of
// bounds on any input.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/layer/gzip_index.h"

namespace {

constexpr size_t kMaxOutput = 4 << 20;  // bound the work per input (gzip bombs)

bool DecodeFrom(imgfs::fs::StreamDecoder& d, std::string_view blob, size_t pos, size_t piece,
                std::string* out) {
  std::string buf(4096, '\0');
  while (out->size() < kMaxOutput) {
    std::string_view in = blob.substr(pos, std::min(piece, blob.size() - pos));
    size_t consumed = 0;
    size_t produced = 0;
    if (!d.Decode(in, &consumed, buf.data(), buf.size(), &produced).ok()) return false;
    pos += consumed;
    out->append(buf, 0, produced);
    if (consumed == 0 && produced == 0) break;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t piece = 1 + data[0] % 64;
  std::string_view blob(reinterpret_cast<const char*>(data + 1), size - 1);
  imgfs::fs::CheckpointRecorder recorder(1024);
  auto d = imgfs::fs::NewGzipDecoder(imgfs::fs::Checkpoint{}, 0, &recorder);
  if (!d.has_value()) std::abort();
  std::string full;
  bool ok = DecodeFrom(**d, blob, 0, piece, &full);
  if (!ok || full.size() >= kMaxOutput) return 0;
  const bool complete = (*d)->AtEnd();
  for (const auto& cp : recorder.points()) {
    if (cp.compressed_offset > blob.size() || cp.uncompressed_offset > full.size()) std::abort();
    uint8_t prev =
        cp.compressed_offset > 0 ? static_cast<uint8_t>(blob[cp.compressed_offset - 1]) : 0;
    auto r = imgfs::fs::NewGzipDecoder(cp, prev, nullptr);
    if (!r.has_value()) std::abort();
    std::string part;
    const bool part_ok = DecodeFrom(**r, blob, cp.compressed_offset, 4096, &part);
    if (complete && !part_ok) std::abort();
    const std::string_view expect = std::string_view(full).substr(cp.uncompressed_offset);
    if (complete ? part != expect : !expect.starts_with(part)) std::abort();
  }
  return 0;
}
