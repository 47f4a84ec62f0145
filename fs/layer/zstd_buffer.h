// imgfs — whole-buffer zstd: bounded decoding (zstd:chunked chunks and TOCs, published
// indexes) and encoding (published indexes).
//
// The input is in memory (a fetched chunk, a TOC, an index blob) and hostile: a frame may
// announce any content size, or none, and a small input may decode to gigabytes. So output
// grows with what really decodes, never with what a header says, and decoding stops at the
// caller's bound.
//
// Thread-safety: stateless functions; safe to call concurrently.
#ifndef IMGFS_FS_LAYER_ZSTD_BUFFER_H_
#define IMGFS_FS_LAYER_ZSTD_BUFFER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace imgfs::fs {

// Decodes the frames in `in` from the first on and appends the output at stream positions
// [begin, end) to *out, stopping once position `end` is reached. Corrupt on bad zstd data or
// when the frames end before `end`.
Status UnzstdRange(std::string_view in, uint64_t begin, uint64_t end, std::string* out);

// The whole of `in` (one or more frames) decoded, at most `max_out` bytes: Corrupt when it
// decodes to more, when a frame is cut short, or on bad data. `what` names the data in the
// error ("zstd:chunked TOC").
Result<std::string> UnzstdAll(std::string_view in, uint64_t max_out, std::string_view what);

// `in` as one zstd frame at `level` (its content size recorded). Internal on a zstd failure.
Result<std::string> ZstdAll(std::string_view in, int level);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_ZSTD_BUFFER_H_
