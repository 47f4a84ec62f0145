// imgfs — LayerIndex: the file table of one image layer and where each file's bytes live.
//
// Built once per layer digest by one streaming pass over the layer (fs/layer/index_builder.h)
// or, for lazily mountable formats, from the layer's table of contents; stored in the cache's
// indexes/ directory in a compact, versioned, checksummed binary encoding (Encode/Decode) and
// reused by every later mount. Everything the overlay merge and the FUSE server need about a
// layer is here; file *data* is read through a LayerReader (fs/layer/layer_reader.h).
//
// Entries keep tar order, including duplicates (the overlay applies "last wins") and
// whiteouts (`.wh.NAME` → kWhiteout with the hidden name in `path`, `.wh..wh..opq` →
// kOpaque with the directory in `path`), so the merge can apply OCI semantics exactly.
//
// Data location: a regular file's bytes are [payload_offset, payload_offset + size) of the
// layer's *uncompressed* tar stream. For compressed layers, `checkpoints` let a reader start
// decompressing near any uncompressed offset (gzip: inflate state + 32 KiB window; zstd:
// frame starts). Files are also cut into chunks (fixed size for tar layers; the format's own
// chunks for eStargz/zstd:chunked) whose sha256 digests key the deduplicated chunk store.
//
// Thread-safety: immutable after construction; safe to share between threads.
#ifndef IMGFS_FS_LAYER_LAYER_INDEX_H_
#define IMGFS_FS_LAYER_LAYER_INDEX_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "registry/digest.h"

namespace imgfs::fs {

enum class EntryType : uint8_t {
  kRegular = 0,
  kDirectory = 1,
  kSymlink = 2,
  kHardlink = 3,  // link_target = path of the linked entry in the same layer
  kChar = 4,
  kBlock = 5,
  kFifo = 6,
  kWhiteout = 7,  // hides `path` (and its subtree) in lower layers
  kOpaque = 8,    // directory `path` hides all lower-layer children
};

// How a layer blob is encoded.
enum class LayerFormat : uint8_t {
  kTar = 0,
  kTarGzip = 1,
  kTarZstd = 2,
  kEstargz = 3,
  kZstdChunked = 4,
};

struct FileEntry {
  std::string path;  // normalised, "" = root, "a/b"
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;  // permission bits (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;  // regular files: bytes; symlinks: 0 (use link_target.size())
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::string link_target;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name
  uint64_t payload_offset = 0;  // in the uncompressed tar stream (regular files)
  uint32_t first_chunk = 0;     // index into LayerIndex::chunks
  uint32_t chunk_count = 0;
};

// A piece of a regular file's content.
struct Chunk {
  uint64_t file_offset = 0;  // where the chunk starts inside its file
  uint64_t size = 0;         // uncompressed bytes
  registry::Digest digest;   // sha256 of the uncompressed chunk bytes (may be empty when the
                             // format has none: then the layer digest vouches for it)
  // Format-specific location of the compressed bytes: for eStargz / zstd:chunked the
  // blob offset of the compressed member/frame and its compressed length, and the offset of
  // the chunk's bytes inside that member's decompressed output.
  uint64_t blob_offset = 0;
  uint64_t blob_length = 0;
  uint64_t inner_offset = 0;
};

// A place where decompression can start.
struct Checkpoint {
  uint64_t compressed_offset = 0;    // byte offset in the blob (gzip: of the next input byte)
  uint64_t uncompressed_offset = 0;  // position in the tar stream
  uint8_t bits = 0;                  // gzip: bits of the byte before compressed_offset to use
  std::string window;                // gzip: up to 32 KiB of preceding output; zstd: empty
};

struct LayerIndex {
  registry::Digest layer_digest;  // the blob digest
  std::string media_type;
  LayerFormat format = LayerFormat::kTar;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  std::vector<FileEntry> entries;  // tar order
  std::vector<Chunk> chunks;
  std::vector<Checkpoint> checkpoints;  // sorted by uncompressed_offset

  // Binary encoding: magic, format version, body, trailing sha256 of everything before it.
  std::string Encode() const;
  // Corrupt on bad magic, unknown version, checksum mismatch or inconsistent contents
  // (chunk ranges outside the chunk table, offsets beyond the sizes, ...). Never crashes on
  // arbitrary bytes.
  static Result<LayerIndex> Decode(std::string_view bytes);
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_LAYER_INDEX_H_
