// imgfs — writing lazily mountable layers: eStargz and zstd:chunked, from an uncompressed tar.
//
// WriteLazyLayer reads a layer's tar (FORMATS.md §2.1, §2.2) and writes a blob that any
// runtime can pull as an ordinary tar+gzip / tar+zstd layer and that lazy readers
// (fs/layer/estargz_toc.h, fs/layer/zstd_chunked_toc.h, stargz-snapshotter, containers/storage)
// can mount chunk by chunk:
//
//  eStargz (spec: stargz-snapshotter docs/estargz.md; layout as `ctr-remote images convert`
//  writes it): the tar entries of the input, byte for byte (headers copied, not re-encoded),
//  with a gzip member boundary before every payload chunk of a regular file (files larger than
//  `chunk_size_bytes` are cut into chunks, each its own member; the padding and following
//  headers continue that member). First entry `.no.prefetch.landmark` (1 byte 0x0f), or, when
//  `prioritized_files` name files of this layer, those files (and their parent directory
//  entries) first, then `.prefetch.landmark`. Last: one gzip member holding the tar entry
//  `stargz.index.json` (the TOC JSON, tab-indented like the Go writer) and the end-of-archive
//  blocks; then the 51-byte footer naming the TOC offset. Annotations:
//  `containerd.io/snapshot/stargz/toc.digest` = sha256 of the TOC JSON and
//  `io.containers.estargz.uncompressed-size`.
//
//  zstd:chunked (containers/storage pkg/chunked/compressor): the tar entries byte for byte, a
//  zstd frame boundary before every payload chunk and after it (headers and padding are in
//  frames of their own); then skippable frames with the zstd-compressed TOC
//  ({"version":1,"entries":[…],"tarSplitDigest":…}), the zstd-compressed tar-split stream
//  (JSON lines, vbatts/tar-split storage.Entry; file payload checksums are CRC-64/ISO) and the
//  64-byte footer (`GNUlInUx`). Annotations:
//  `io.github.containers.zstd-chunked.manifest-checksum` (sha256 of the compressed TOC),
//  `…manifest-position` (offset:length:uncompressedLength:1) and `…tarsplit-position`.
//  File payloads are cut at content-defined boundaries (fs/convert/content_chunker.h: the
//  rolling checksum of containers/storage, 64 KiB average, bounded by `content_chunking`;
//  runs of >= 1 KiB zeros are chunks of their own with `chunkType: "zeros"`), so that an
//  insertion in a file changes only the chunks around it and the others keep their digests
//  (dedup across image versions); `zstd_chunking = kFixedSize` cuts `chunk_size_bytes`
//  chunks instead. TOC records as containers/storage writes them: a file of one chunk is one
//  `reg` entry (offset/endOffset of its frame); a file of several has `chunkSize`,
//  `chunkDigest` (and `chunkType` for zeros) in its `reg` entry (which keeps offset/endOffset
//  of the whole file) and one `chunk` entry per further chunk (offset of its own frame,
//  chunkSize, chunkOffset, chunkDigest, chunkType) right after it. `prioritized_files` are
//  moved to the front of the layer in the given order, each preceded by those of its parent
//  directory entries not already written (the format has no landmarks: being together at
//  the start of the blob is what helps a lazy reader: few range requests for them, and a
//  background fetch in blob order brings them first). Only names that are regular files and
//  occur once in the layer move; other names are ignored.
//
// The root entries `stargz.index.json`, `.prefetch.landmark` and `.no.prefetch.landmark` of
// the input (an eStargz layer converted again) are dropped: the writer adds its own.
// The tar end (zero blocks, padding) of the input is replaced by the writer's own two zero
// blocks, so the uncompressed stream (diff_id) differs from the input's: the result reports
// it. Global PAX headers stay in front of the entry that follows them. Output is
// deterministic: the same input and options give the same bytes.
//
// Thread-safety: stateless functions; one call per thread (the sink is called on the
// caller's thread).
#ifndef IMGFS_FS_LAYER_LAYER_WRITER_H_
#define IMGFS_FS_LAYER_LAYER_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "fs/layer/content_chunker.h"
#include "registry/blob_source.h"
#include "registry/digest.h"
#include "registry/manifest.h"

namespace imgfs::fs {

enum class LazyFormat { kEstargz, kZstdChunked };

// Default chunk size: 4 MiB, the eStargz default of ctr-remote / estargz.WithChunkSize.
inline constexpr uint64_t kDefaultConvertChunkBytes = 4ull << 20;
// Media types of the written layers (OCI image-spec layer.md).
inline constexpr std::string_view kOciLayerGzipMediaType =
    "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstdMediaType =
    "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kZstdChunkedTarSplitAnnotation =
    "io.github.containers.zstd-chunked.tarsplit-position";

enum class ZstdChunking { kContentDefined, kFixedSize };

struct LayerWriterOptions {
  LazyFormat format = LazyFormat::kEstargz;
  // eStargz chunks; zstd:chunked chunks with kFixedSize. > 0.
  uint64_t chunk_size_bytes = kDefaultConvertChunkBytes;
  // zstd:chunked: how file payloads are cut (content_chunking must be valid with
  // kContentDefined).
  ZstdChunking zstd_chunking = ZstdChunking::kContentDefined;
  ContentChunking content_chunking;
  // Paths of files to place first (as in the image: "etc/passwd" or "/etc/passwd"). eStargz:
  // in layer order, then `.prefetch.landmark`; zstd:chunked: in this order.
  std::vector<std::string> prioritized_files;
  // 0: the format's default (gzip 6, zstd 3).
  int compression_level = 0;
};

// The uncompressed tar to convert: bytes in memory or a file (read with pread; not owned;
// must stay open and unchanged during the call).
struct TarBytes {
  static TarBytes FromString(std::string_view data) { return TarBytes{-1, data, data.size()}; }
  static TarBytes FromFd(int fd, uint64_t size) { return TarBytes{fd, {}, size}; }
  int fd = -1;
  std::string_view data;
  uint64_t size = 0;
};

struct WrittenLayer {
  // mediaType, digest (sha256 of the blob), size and the format's annotations: the layer
  // descriptor for the new manifest.
  registry::Descriptor descriptor;
  registry::Digest diff_id;  // sha256 of the blob's uncompressed tar stream
  uint64_t uncompressed_size = 0;
  // eStargz: sha256 of the TOC JSON (= toc.digest annotation); zstd:chunked: sha256 of the
  // compressed TOC (= manifest-checksum annotation).
  registry::Digest toc_digest;
  uint64_t toc_offset = 0;  // eStargz: the TOC member; zstd:chunked: the compressed TOC
  size_t files = 0;         // regular files with data
  size_t chunks = 0;        // payload chunks written
  size_t zeros_chunks = 0;  // zstd:chunked: of which "zeros" chunks
  // eStargz: a `.prefetch.landmark` was written; zstd:chunked: files were moved first.
  bool prioritized = false;
};

// Converts `tar` and streams the blob to `sink`. Corrupt for a malformed tar (the message
// names the entry), InvalidArgument for bad options, the sink's error if it fails.
Result<WrittenLayer> WriteLazyLayer(const TarBytes& tar, const LayerWriterOptions& options,
                                    const registry::BlobSink& sink);

// Convenience: converts the tar file `tar_path` into `blob_path` (written atomically: a
// temporary file renamed into place only on success).
Result<WrittenLayer> WriteLazyLayerFile(const std::string& tar_path, const std::string& blob_path,
                                        const LayerWriterOptions& options);

// "estargz" / "zstd:chunked" (also "zstd-chunked", "zstdchunked") → format; InvalidArgument
// otherwise.
Result<LazyFormat> ParseLazyFormat(std::string_view text);
std::string_view LazyFormatName(LazyFormat format);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_LAYER_WRITER_H_
