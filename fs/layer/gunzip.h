// imgfs — whole-buffer gunzip of one or more gzip members, for eStargz chunks and TOCs.
//
// The members are in memory (a fetched chunk, a TOC member), so they are decoded with
// libdeflate, about twice zlib's speed here (scripts/bench.sh prints the ratio on the
// machine it runs on). libdeflate needs room for a whole member's output; a member whose
// output would pass what the caller wants (or `kMaxGunzipStep`) is decoded with ISA-L's
// streaming inflate instead (fs/layer/gzip_index.h), so memory stays bounded by what the
// caller asked for whatever the member claims.
//
// Thread-safety: stateless functions; safe to call concurrently.
#ifndef IMGFS_FS_LAYER_GUNZIP_H_
#define IMGFS_FS_LAYER_GUNZIP_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace imgfs::fs {

// What GunzipRange decoded.
struct GunzipResult {
  uint64_t decoded = 0;      // output positions passed (≤ `end`; decoding stops there)
  bool input_ended = false;  // every input byte consumed, ending on a member's end
};

// Decodes the members in `in` from the first on and appends the output at stream positions
// [begin, end) to *out, stopping as soon as position `end` is reached (bytes after it are not
// decoded). Corrupt on bad gzip data or a member cut short before `end`; a short stream (all
// members end before `end`) is not an error: `decoded` says how far it went.
Result<GunzipResult> GunzipRange(std::string_view in, uint64_t begin, uint64_t end,
                                 std::string* out);

// The whole of `in` decoded, at most `max_out` bytes: Corrupt when it decodes to more, when a
// member is cut short, or on bad data. `what` names the data in the error ("TOC").
Result<std::string> GunzipAll(std::string_view in, uint64_t max_out, std::string_view what);

// GunzipAll with zlib alone (no fast path): the bench's and the fuzz target's comparison.
Result<std::string> GunzipAllWithZlib(std::string_view in, uint64_t max_out);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_GUNZIP_H_
