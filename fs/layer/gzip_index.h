// imgfs — gzip decoding with random-access checkpoints (zlib examples/zran.c technique).
//
// While indexing, the decoder inflates with zlib's Z_BLOCK so it stops at every deflate block
// boundary; where at least `span` uncompressed bytes were produced since the last checkpoint
// it records {blob offset of the next input byte, the unused bits of the byte before it, the
// uncompressed offset, the last 32 KiB of output (the deflate window)}. A later reader starts
// a raw inflate there, primed with the bits and the window, then feeds the blob from the
// recorded offset.
//
// Two engines. Indexing (a recorder given) uses zlib: it is the one that can stop at block
// boundaries (Intel ISA-L's isal_inflate decodes block after block until its input or output
// runs out, and says nothing about where a block ended). Everything else, in particular the
// reads that serve a mount from checkpoints, uses ISA-L's inflate, 2.1-2.3 times zlib's speed
// on layer data here (tests/bench/inflate_bench.cc; scripts/bench.sh prints the ratios); it
// starts from the same checkpoints (the bits go into its bit buffer, the window becomes its
// dictionary) and gives the same bytes. On a cut-short stream ISA-L may stop a few bytes
// earlier than zlib (it decodes a symbol once it sees all the bits of the table entry holding
// it, which can pack several), and it may see an invalid block header before zlib does.
// Both run under one member framing (member starts, headers, trailers, offsets); an engine
// only starts members and inflates.
//
// Multi-member gzip (RFC 1952 section 2.2: a gzip file is a series of members) is decoded
// member after member; each member start is a natural checkpoint with an empty window
// (decoding restarts with a fresh gzip header there). A raw inflate started inside a member
// skips that member's 8-byte trailer (CRC-32 and ISIZE, unverified on that path; the index
// pass verified them and chunk digests cover the data) and continues with the next member,
// whose trailer is verified. Anything after the last member that is not another member is
// Corrupt, as are bad headers, bad deflate data and bad trailers (never a crash: each engine
// reads only the input it is given and writes only the output room it is given).
//
// Memory: zlib, one z_stream (about 44 KiB with its window); ISA-L, one inflate_state (about
// 86 KiB: its Huffman tables and a 64 KiB output history). Thread-safety: one decoder per
// thread.
#ifndef IMGFS_FS_LAYER_GZIP_INDEX_H_
#define IMGFS_FS_LAYER_GZIP_INDEX_H_

#include <cstdint>
#include <memory>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "fs/layer/stream_decoder.h"

namespace imgfs::fs {

// See NewStreamDecoder (fs/layer/stream_decoder.h) for the arguments. zlib when `recorder` is
// given, ISA-L otherwise.
Result<std::unique_ptr<StreamDecoder>> NewGzipDecoder(const Checkpoint& start, uint8_t prev_byte,
                                                      CheckpointRecorder* recorder);

// The same with zlib whatever `recorder` is: the reference the tests and the inflate bench
// compare ISA-L with.
Result<std::unique_ptr<StreamDecoder>> NewZlibGzipDecoder(const Checkpoint& start,
                                                          uint8_t prev_byte,
                                                          CheckpointRecorder* recorder);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_GZIP_INDEX_H_
