// imgfs — fuzz target for fs/layer/gunzip.h. The input is gzip data (the corpus holds real
// members). Oracles: output never passes the bound; when both the fast path (libdeflate, with
// its zlib fallback) and zlib alone accept the input, they give the same bytes; a range read
// is a prefix-consistent slice of the whole.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/layer/gunzip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  constexpr uint64_t kBound = 1 << 20;
  auto fast = imgfs::fs::GunzipAll(in, kBound, "input");
  auto slow = imgfs::fs::GunzipAllWithZlib(in, kBound);
  if (fast.has_value() && fast->size() > kBound) std::abort();
  if (fast.has_value() && slow.has_value() && *fast != *slow) std::abort();
  std::string part;
  auto r = imgfs::fs::GunzipRange(in, 7, 4096, &part);
  if (r.has_value()) {
    if (r->decoded > 4096 || part.size() > 4096 - 7) std::abort();
    if (slow.has_value() && part != slow->substr(std::min<size_t>(7, slow->size()), part.size())) {
      std::abort();
    }
  }
  return 0;
}
