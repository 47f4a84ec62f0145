// imgfs — zstd:chunked table of contents → LayerIndex (lazy mounting without reading the layer).
//
// A zstd:chunked blob (FORMATS.md §2.2; containers/storage pkg/chunked) is a tar+zstd stream
// in which every file payload (or content-defined chunk of it) is its own zstd frame, followed
// by skippable frames holding the zstd-compressed TOC ("manifest"), the tar-split data and a
// footer. The TOC is located from the layer descriptor's manifest-position annotation
// (`io.github.containers.zstd-chunked.manifest-position`, or the older
// `io.containers.zstd-chunked.*` prefix): "offset:compressedLen:uncompressedLen:type", and
// verified against the manifest-checksum annotation (sha256 of the *compressed* TOC bytes).
// Without the position annotation the footer at the blob end is used (one ranged read: the
// 64-byte `GNUlInUx` form or the 40-byte `GnUlInUx` form).
//
// Chunks: blob_offset = the entry's `offset`; blob_length = up to the next chunk offset of the
// same file, the last one up to the entry's `endOffset`; inner_offset = 0 (each chunk starts
// its own frame). `chunkType: "zeros"` chunks have no bytes to fetch: they are represented as
// blob_length == 0 with size > 0 (their digest is still the sha256 of the zeros); readers
// (fs/layer/chunk_decoder.h) produce zeros for them. A regular file without chunk entries is
// one chunk [offset, endOffset) whose digest is the file digest.
//
// As for eStargz: payload_offset is 0, uncompressed_size is the largest file size, no
// checkpoints, chunk_size 0, implicit parent directories are left to the overlay.
//
// Thread-safety: stateless functions; safe to call concurrently.
#ifndef IMGFS_FS_LAYER_ZSTD_CHUNKED_TOC_H_
#define IMGFS_FS_LAYER_ZSTD_CHUNKED_TOC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "registry/blob_source.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/media_types.h"

namespace imgfs::fs {

// Annotation names: registry/media_types.h (cache/ needs them too).
inline constexpr std::string_view kZstdChunkedPositionAnnotation =
    registry::media::kZstdChunkedPositionAnnotation;
inline constexpr std::string_view kZstdChunkedChecksumAnnotation =
    registry::media::kZstdChunkedChecksumAnnotation;
inline constexpr std::string_view kZstdChunkedOldPositionAnnotation =
    registry::media::kZstdChunkedOldPositionAnnotation;
inline constexpr std::string_view kZstdChunkedOldChecksumAnnotation =
    registry::media::kZstdChunkedOldChecksumAnnotation;
// Footer sizes and magics (c/storage footer, f989a95: 64 bytes; older: 40 bytes).
inline constexpr size_t kZstdChunkedFooterBytes = 64;
inline constexpr size_t kZstdChunkedOldFooterBytes = 40;
inline constexpr std::string_view kZstdChunkedFooterMagic = "GNUlInUx";
inline constexpr std::string_view kZstdChunkedOldFooterMagic = "GnUlInUx";
// The only manifest type defined (ManifestTypeCRFS).
inline constexpr uint64_t kZstdChunkedManifestType = 1;

struct ZstdChunkedTocPosition {
  uint64_t offset = 0;  // of the compressed TOC (after the skippable frame header)
  uint64_t compressed_length = 0;
  uint64_t uncompressed_length = 0;
  uint64_t type = 0;
};

// "offset:compressedLen:uncompressedLen:type". Corrupt when malformed.
Result<ZstdChunkedTocPosition> ParseZstdChunkedPosition(std::string_view annotation);
// `tail`: the last min(64, blob size) bytes of the blob. Corrupt when no footer matches.
Result<ZstdChunkedTocPosition> ParseZstdChunkedFooter(std::string_view tail);

// Builds the LayerIndex from the uncompressed TOC JSON. `data_end` bounds every chunk (the
// compressed TOC's offset: data frames sit before it).
Result<LayerIndex> BuildZstdChunkedIndexFromToc(std::string_view toc_json,
                                                const registry::Digest& layer, uint64_t blob_size,
                                                uint64_t data_end);

// Decompresses the TOC (exactly `uncompressed_length` bytes expected). Corrupt otherwise.
Result<std::string> DecompressZstdChunkedToc(std::string_view compressed,
                                             uint64_t uncompressed_length);

// The whole mount-time path: position from the annotation (else one ranged read of the
// footer), one ranged read of the compressed TOC, checksum verification (Corrupt on mismatch;
// a missing checksum annotation is Corrupt unless `allow_missing_checksum`), decompression,
// BuildZstdChunkedIndexFromToc. `layer.size` must be the blob size.
Result<LayerIndex> LoadZstdChunkedIndex(registry::BlobSource& source,
                                        const registry::Descriptor& layer,
                                        bool allow_missing_checksum);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_ZSTD_CHUNKED_TOC_H_
