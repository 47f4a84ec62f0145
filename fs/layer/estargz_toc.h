// imgfs — eStargz table of contents → LayerIndex (lazy mounting without reading the layer).
//
// An eStargz blob (FORMATS.md §2.1; spec: stargz-snapshotter docs/estargz.md, code
// estargz/types.go) is a valid tar.gz whose last gzip members hold the TOC (a tar with one
// member `stargz.index.json`) and a 51-byte footer naming the TOC's blob offset. Mounting
// costs exactly two ranged reads: the footer (last 51 bytes; the 47-byte legacy stargz footer
// is its suffix, so it needs no extra read) and [toc_offset, blob_size - footer). The TOC
// JSON is verified against the layer descriptor's `containerd.io/snapshot/stargz/toc.digest`
// annotation, then turned into a LayerIndex whose chunks point at the gzip members holding
// each file's bytes (blob_offset/blob_length = the member(s), inner_offset = `innerOffset`,
// digest = `chunkDigest`). fs/layer/chunk_decoder.h decodes and verifies such chunks.
//
// Differences from a tar-pass index of the same blob: the two landmark files
// (`.prefetch.landmark`, `.no.prefetch.landmark`) and the TOC itself are not entries;
// `payload_offset` is 0 (the TOC does not say where a payload sits in the tar stream: data
// is reached through the chunks only); `uncompressed_size` is the
// `io.containers.estargz.uncompressed-size` annotation or, without it, the largest file size;
// there are no checkpoints and `chunk_size` is 0 (format chunks). Implicit parent
// directories are not synthesised (the overlay merge does that).
//
// The parsing functions are pure (no I/O) so they can be fuzzed; every malformed input is a
// Corrupt status naming the layer and, where it applies, the entry. Nothing here throws.
//
// Thread-safety: stateless functions; safe to call concurrently (the BlobSource must be
// thread-safe, which the BlobSource contract guarantees).
#ifndef IMGFS_FS_LAYER_ESTARGZ_TOC_H_
#define IMGFS_FS_LAYER_ESTARGZ_TOC_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "fs/layer/layer_index.h"
#include "registry/blob_source.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/media_types.h"

namespace imgfs::fs {

// Footer sizes (estargz/types.go: FooterSize, legacyFooterSize).
inline constexpr size_t kEstargzFooterBytes = 51;
inline constexpr size_t kEstargzLegacyFooterBytes = 47;
// Layer descriptor annotations (toc.digest: registry/media_types.h; containers/storage).
inline constexpr std::string_view kEstargzTocDigestAnnotation =
    registry::media::kEstargzTocDigestAnnotation;
inline constexpr std::string_view kEstargzUncompressedSizeAnnotation =
    "io.containers.estargz.uncompressed-size";
// Name of the TOC tar member and of the landmark files (estargz/types.go).
inline constexpr std::string_view kEstargzTocName = "stargz.index.json";
inline constexpr std::string_view kEstargzPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kEstargzNoPrefetchLandmark = ".no.prefetch.landmark";
// Bounds against absurd inputs: a 100k-file TOC is ~30 MB of JSON.
inline constexpr uint64_t kMaxTocCompressedBytes = 64ull << 20;
inline constexpr uint64_t kMaxTocUncompressedBytes = 256ull << 20;
// Entries (files and chunk records) of one TOC. The TOC is read by a streaming parser into
// records of ~300 bytes each, so this bounds the parse at ~300 MB whatever the JSON holds
// (tiny `{}` entries could otherwise number 80 million in kMaxTocUncompressedBytes). 1M:
// a layer of 500k files with their chunk records; real TOCs of 100k files have ~150k.
inline constexpr size_t kMaxTocEntries = 1u << 20;
// Chunk geometry bounds (kMaxChunkBytes, MaxChunkBlobBytes) are in layer_index.h.

struct EstargzFooter {
  uint64_t toc_offset = 0;
  size_t footer_bytes = 0;  // 51, or 47 for the legacy form
};

// Parses the last bytes of a blob (`tail`: the last min(51, blob size) bytes). Tries the
// 51-byte footer, then the 47-byte legacy footer (the last 47 bytes of `tail`). Corrupt if
// neither matches. Does not check the offset against the blob size.
Result<EstargzFooter> ParseEstargzFooter(std::string_view tail);

// Builds the LayerIndex from the TOC JSON. `toc_offset` is where the TOC's gzip member starts
// (the end of the last data member); every `offset` must be below it. `layer` names the
// layer in errors and becomes index.layer_digest; `blob_size` becomes compressed_size.
// `*landmark` (when given) gets the blob offset of the `.prefetch.landmark` entry, 0 when the
// TOC has none.
Result<LayerIndex> BuildEstargzIndexFromToc(std::string_view toc_json,
                                            const registry::Digest& layer, uint64_t blob_size,
                                            uint64_t toc_offset,
                                            uint64_t uncompressed_size_hint = 0,
                                            uint64_t* landmark = nullptr);

// Extracts the TOC JSON from the bytes [toc_offset, blob_size - footer): one gzip member
// holding a tar with the single member `stargz.index.json`.
Result<std::string> ExtractEstargzTocJson(std::string_view toc_member);

// What LoadEstargzIndex read from its source.
struct EstargzTocLoad {
  uint64_t landmark = 0;  // blob offset of `.prefetch.landmark`, 0 when the layer has none
  uint64_t bytes = 0;     // bytes read
  uint64_t requests = 0;  // ranged reads
};

// The blob's last bytes the first read of LoadEstargzIndex asks for: the footer and, in one
// request, the TOC of a layer of up to about a thousand files (a larger TOC takes a second
// read). One round trip saved per layer costs at most 64 KiB more per layer.
inline constexpr uint64_t kEstargzTailReadBytes = 64 << 10;

// The whole mount-time path: one ranged read of the blob's tail (footer, and the TOC when it
// lies in it; a second read for the rest of a larger TOC), verification against the
// toc.digest annotation of `layer` (Corrupt on mismatch; when the annotation is missing:
// Corrupt unless `allow_missing_toc_digest`), then BuildEstargzIndexFromToc. `layer.size`
// must be the blob size. `*load` (when given) says what was read.
Result<LayerIndex> LoadEstargzIndex(registry::BlobSource& source, const registry::Descriptor& layer,
                                    bool allow_missing_toc_digest, EstargzTocLoad* load = nullptr);

namespace toc_internal {
// Helpers shared by the TOC readers (estargz_toc.cc, zstd_chunked_toc.cc); not an API.

// One TOC entry, format-neutral (eStargz and zstd:chunked share the field names).
struct TocRecord {
  std::string name;  // as in the TOC
  std::string type;  // dir|reg|symlink|hardlink|char|block|fifo|chunk
  std::string link_name;
  uint64_t size = 0;
  int64_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string modtime;
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // decoded, sorted
  std::string digest;
  uint64_t offset = 0;
  bool has_offset = false;
  uint64_t end_offset = 0;
  bool has_end_offset = false;
  uint64_t inner_offset = 0;
  uint64_t chunk_offset = 0;
  uint64_t chunk_size = 0;
  std::string chunk_digest;
  std::string chunk_type;
};

// Parses {"version":1,"entries":[…]} into records with a streaming (SAX) parser: no JSON
// DOM is built, unknown keys are skipped whatever they hold. Corrupt on malformed JSON,
// fields of the wrong type, text over kMaxTocUncompressedBytes or more than kMaxTocEntries
// entries (refused while parsing, before more records are made).
Result<std::vector<TocRecord>> ParseTocJson(std::string_view json, const std::string& what);

// Where a chunk's compressed bytes are; filled per format.
struct ChunkPlace {
  uint64_t blob_offset = 0;
  uint64_t blob_length = 0;  // 0 with size > 0: a zeros chunk (zstd:chunked)
  uint64_t inner_offset = 0;
};

// Assembles the LayerIndex from records: entries in TOC order (names normalised like
// registry::NormalizeTarPath, whiteouts mapped as the tar index builder does), chunks of
// each regular file from its `reg` and following `chunk` records, located by `place`
// (called with the index of the record of the chunk). Validates chunk contiguity and
// coverage. Records for which `skip` returns true (landmarks) are left out. The xattrs and
// link names of `records` are moved into the index (`place` must not need them).
Result<LayerIndex> AssembleIndex(std::vector<TocRecord>& records, const std::string& what,
                                 const std::function<Result<ChunkPlace>(size_t record)>& place,
                                 const std::function<bool(const TocRecord&)>& skip);
}  // namespace toc_internal

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_ESTARGZ_TOC_H_
