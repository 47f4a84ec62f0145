// imgfs — zstd decoding with frame-start checkpoints.
//
// A zstd stream is a series of frames (RFC 8878 section 3.1), each decodable on its own, plus
// skippable frames (magic 0x184D2A5?, section 3.1.2) that carry no tar bytes (zstd:chunked
// keeps its TOC there). Frame starts are therefore the only places decoding can begin: while
// indexing, the start of a frame becomes a checkpoint (empty window) when at least `span`
// uncompressed bytes were produced since the previous one.
//
// A layer written as one frame (what `zstd` and most tools do by default) has a single
// checkpoint at offset 0: it is not seekable, and a read anywhere in it decompresses from
// the start of the frame. LayerIndex::max_checkpoint_gap records how far a reader may have
// to decode; the per-layer span cache of LayerReader keeps sequential reads linear.
//
// Memory: one ZSTD_DCtx; its window is what the frame asks for, capped by zstd's default
// limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27, 128 MiB). Thread-safety: one decoder per thread.
#ifndef IMGFS_FS_LAYER_ZSTD_INDEX_H_
#define IMGFS_FS_LAYER_ZSTD_INDEX_H_

#include <cstdint>
#include <memory>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "fs/layer/stream_decoder.h"

namespace imgfs::fs {

// See NewStreamDecoder (fs/layer/stream_decoder.h). `start` must be a frame start (its window
// empty and bits 0); InvalidArgument otherwise.
Result<std::unique_ptr<StreamDecoder>> NewZstdDecoder(const Checkpoint& start,
                                                      CheckpointRecorder* recorder);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_ZSTD_INDEX_H_
