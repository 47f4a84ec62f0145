// imgfs — gzip decoding with random-access checkpoints (zlib examples/zran.c technique).
//
// While indexing, the decoder inflates with Z_BLOCK so it stops at every deflate block
// boundary; where at least `span` uncompressed bytes were produced since the last checkpoint
// it records {blob offset of the next input byte, the unused bits of the byte before it, the
// uncompressed offset, the last 32 KiB of output (the deflate window)}. A later reader starts
// a raw inflate there: inflatePrime() with the bits, inflateSetDictionary() with the window,
// then feeds the blob from the recorded offset.
//
// Multi-member gzip (RFC 1952 section 2.2: a gzip file is a series of members) is decoded
// member after member; each member start is a natural checkpoint with an empty window
// (decoding restarts with a fresh gzip header there). A raw inflate started inside a member
// skips that member's 8-byte trailer (CRC-32 and ISIZE, unverified on that path; the index
// pass verified them and chunk digests cover the data) and continues with the next member.
// Anything after the last member that is not another member is Corrupt.
//
// Memory: one z_stream (about 44 KiB with its window). Thread-safety: one decoder per thread.
#ifndef IMGFS_FS_LAYER_GZIP_INDEX_H_
#define IMGFS_FS_LAYER_GZIP_INDEX_H_

#include <cstdint>
#include <memory>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "fs/layer/stream_decoder.h"

namespace imgfs::fs {

// See NewStreamDecoder (fs/layer/stream_decoder.h) for the arguments.
Result<std::unique_ptr<StreamDecoder>> NewGzipDecoder(const Checkpoint& start, uint8_t prev_byte,
                                                      CheckpointRecorder* recorder);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_GZIP_INDEX_H_
