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
// Thread-safety: immutable after construction (DropChunks and DropEntries aside, which run before
// the index is shared); safe to share between threads.
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

  bool operator==(const FileEntry&) const = default;
};

// A piece of a regular file's content.
struct Chunk {
  uint64_t file_offset = 0;  // where the chunk starts inside its file
  uint64_t size = 0;         // uncompressed bytes
  registry::Digest digest;   // sha256 of the uncompressed chunk bytes (may be empty when the
                             // format has none: then the layer digest vouches for it)
  // Format-specific location of the compressed bytes: for eStargz / zstd:chunked the
  // blob offset of the compressed member/frame and its compressed length, and the offset of
  // the chunk's bytes inside that member's decompressed output. Plain tar layers: the chunk's
  // bytes themselves (blob_offset = payload_offset + file_offset, blob_length = size).
  // tar+gzip / tar+zstd: all 0 (read through the checkpoints).
  uint64_t blob_offset = 0;
  uint64_t blob_length = 0;
  uint64_t inner_offset = 0;

  bool operator==(const Chunk&) const = default;
};

// The up to 32 KiB of output before a gzip checkpoint (the deflate dictionary), kept
// zstd-compressed: an index holds one per checkpoint span (4 MiB) of layer, and packed they
// take about a third (7.8 MB of windows of a 900 MB image become 2.6 MB), in memory and in
// the stored index. Unpacked only when a reader starts there.
class PackedWindow {
 public:
  static constexpr size_t kMaxBytes = 32 * 1024;  // deflate's window (RFC 1951 section 2)

  PackedWindow() = default;  // empty: no window (a member or frame start)
  // Packs `raw` (at most kMaxBytes; longer input keeps its last kMaxBytes, which is all a
  // dictionary uses).
  static PackedWindow Pack(std::string_view raw);
  // A window as an index stores it: `size` bytes unpacked, `packed` one zstd frame. Corrupt
  // when the frame does not say it holds exactly `size` bytes (size 0 needs an empty frame) or
  // size exceeds kMaxBytes; a frame that lies about its size fails at Unpack.
  static Result<PackedWindow> FromPacked(uint32_t size, std::string packed);

  bool empty() const { return size_ == 0; }
  uint32_t size() const { return size_; }  // unpacked bytes
  const std::string& packed() const { return packed_; }
  // The raw bytes into `out` (resized to size()). Corrupt if the frame does not decode to
  // exactly size() bytes.
  Status Unpack(std::string* out) const;

  bool operator==(const PackedWindow&) const = default;

 private:
  uint32_t size_ = 0;
  std::string packed_;
};

// A place where decompression can start. An empty `window` means decompression starts a new
// gzip member (its header is at compressed_offset) or a new zstd frame there; a non-empty one
// is a zlib zran.c-style point inside a deflate stream: raw inflate primed with `bits` bits of
// the byte before compressed_offset and `window` as dictionary.
struct Checkpoint {
  uint64_t compressed_offset = 0;    // byte offset in the blob (gzip: of the next input byte)
  uint64_t uncompressed_offset = 0;  // position in the tar stream
  uint8_t bits = 0;                  // gzip: bits of the byte before compressed_offset to use
  PackedWindow window;               // gzip: up to 32 KiB of preceding output; zstd: empty

  bool operator==(const Checkpoint&) const = default;
};

// Where an index came from, which decides what it may be used for (docs/SECURITY.md). An
// index whose file table did not come from the layer's own verified bytes is trusted only for
// lazy mounts of the image it was found for, never for another image sharing the layer digest
// and never once the layer's blob is in the store (cache/index_store.h keeps the kinds apart).
// The value travels with the index (Encode/Decode) so a lookup can check it; it is set by the
// code that made or found the index, never taken from bytes received over the network (a
// published index says whatever its publisher wrote: fs/mount.cc restamps it).
enum class IndexProvenance : uint8_t {
  // Unknown (the default, and every version-1 encoding): trusted for nothing stored.
  kUnverified = 0,
  // One pass over the layer's blob, whose sha256 matched layer_digest (LoadOrBuildIndex):
  // true for every image with that layer.
  kLayerBlob = 1,
  // The layer's eStargz / zstd:chunked TOC read from a registry and verified against the TOC
  // digest `origin` that the image manifest's layer annotation names. Range reads of the blob
  // are not checked against layer_digest, so only a layer descriptor with that same
  // (layer digest, TOC digest) pair may use it.
  kToc = 2,
  // An imgfs index published in a registry as artifact `origin` for image manifest `subject`
  // (fs/convert/index_publish.h): nothing binds its file table to the layer's bytes, so only
  // lazy mounts of that manifest may use it.
  kPublished = 3,
};

// Version of the Encode() format. Bump it whenever the encoding changes (the golden test in
// tests/fs/layer_index_test.cc fails otherwise); Decode rejects other versions as Corrupt, and
// callers rebuild the index. Version 1 (without provenance) is still decoded, as kUnverified:
// published indexes made by older imgfs stay usable, stored ones are rebuilt.
// Version 2 stored checkpoint windows raw; they are packed when decoded.
inline constexpr uint32_t kLayerIndexFormatVersion = 3;
inline constexpr uint32_t kLayerIndexOldestReadableVersion = 1;
inline constexpr std::string_view kLayerIndexMagic = "IMGFSIDX";

// Chunk geometry of lazily mountable layers (eStargz, zstd:chunked), enforced where such an
// index is assembled from a TOC and where one is decoded: the memory of one chunk fetch.
// Decoded bytes of one chunk that has compressed bytes (zeros chunks are served in slices
// and only bounded by the file size). eStargz writers cut files into 4 MiB chunks and
// zstd:chunked ones into ~64 KiB pieces; 64 MiB leaves room for writers configured with
// larger chunks while bounding what one fetch decodes in memory.
inline constexpr uint64_t kMaxChunkBytes = 64ull << 20;
// Compressed bytes one chunk may span beyond its decoded size: gzip members of eStargz also
// hold the tar headers of the entries written after the chunk (directories, links and the
// next file's header go into the open member), and codecs add framing. 16 MiB covers the
// headers of ~100k such entries; together with kMaxChunkBytes it bounds one fetch at
// size + size/16 + 16 MiB, so a TOC cannot make a one-byte read download the whole blob.
inline constexpr uint64_t kChunkBlobSlackBytes = 16ull << 20;
// The largest blob_length accepted for a chunk of `size` decoded bytes (see above).
inline constexpr uint64_t MaxChunkBlobBytes(uint64_t size) {
  return size + size / 16 + kChunkBlobSlackBytes;
}
// OK when chunk `c` of an eStargz / zstd:chunked index respects the bounds above (zeros
// chunks, with no compressed bytes, only need a size); else Corrupt naming the limit.
Status CheckLazyChunkGeometry(const Chunk& c);

// Entries and chunks one decoded index may hold: Decode sizes its tables by the entries whose
// bytes are actually present (a count alone reserves nothing) and stops at these, so a small
// hostile index cannot make it allocate ~10× its size (an entry takes 16 encoded bytes but
// ~150 in memory). 2M each: twice the
// files of the largest layers seen, and 2M chunks are 128 GiB of 64 KiB zstd:chunked chunks.
inline constexpr size_t kMaxIndexEntries = 2u << 20;
inline constexpr size_t kMaxIndexChunks = 2u << 20;

struct LayerIndex {
  registry::Digest layer_digest;  // the blob digest
  std::string media_type;
  LayerFormat format = LayerFormat::kTar;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  std::vector<FileEntry> entries;  // tar order
  std::vector<Chunk> chunks;
  std::vector<Checkpoint> checkpoints;  // sorted by uncompressed_offset

  registry::Digest diff_id;      // sha256 of the uncompressed tar stream (empty if unknown)
  uint64_t chunk_size = 0;       // the fixed chunk size used for tar layers (0: format chunks)
  uint64_t checkpoint_span = 0;  // requested distance between checkpoints (uncompressed bytes)
  // Largest uncompressed distance between two consecutive checkpoints (or the last one and
  // the end of the stream): the worst-case amount a reader decompresses to reach a byte.
  // Larger than checkpoint_span when the blob gives no earlier place to start, e.g. a tar+zstd
  // layer written as one huge zstd frame: such a layer is not seekable inside the frame and a
  // read there decompresses from the frame start.
  uint64_t max_checkpoint_gap = 0;

  // Where the file table came from (see IndexProvenance). `origin`: the TOC digest (kToc) or
  // the published artifact's manifest digest (kPublished), else empty; `subject`: the image
  // manifest a published index was found for (kPublished), else empty.
  IndexProvenance provenance = IndexProvenance::kUnverified;
  registry::Digest origin;
  registry::Digest subject;

  // For an index whose files are read through the checkpoints alone (a local layer's
  // LayerReader::Read/ReadFile; ReadChunk then finds no chunk): a mount drops the file table of
  // each local layer's index, which the merged NodeTable replaces. Encode no longer gives the
  // layer's file table afterwards. Not thread-safe: call them before the index is shared.
  //
  // DropChunks frees `chunks` (~100 bytes per chunk; the entries' chunk ranges then point into
  // nothing): what a local layer's mount wants, as the merge does not read chunks either (a
  // stored index is decoded so at once: ChunkTable::kSkip).
  void DropChunks();
  // DropEntries frees `entries` (~230 bytes per entry with its path): a mount does it once the
  // layers are merged, as each merged node keeps its names, attributes and where its bytes are
  // (Node::payload_offset).
  void DropEntries();

  // Index of the checkpoint with the largest uncompressed_offset <= `offset` (0 if none).
  size_t CheckpointFor(uint64_t offset) const;

  // Binary encoding: magic, format version, body, trailing sha256 of everything before it.
  std::string Encode() const;
  // Whether Decode keeps the chunk table. kSkip decodes the index as DropChunks leaves it:
  // `chunks` empty, the entries' chunk ranges checked against the encoded table's size only.
  // For the index of a local layer's mount, which reads through the checkpoints alone: ~100
  // bytes a chunk never allocated, and a quarter of the decoding saved.
  enum class ChunkTable : uint8_t { kKeep, kSkip };
  // Whether Decode keeps the file table. kSkip decodes the index as DropEntries leaves it:
  // `entries` empty, the encoded table framed but its values not decoded. For a local layer's
  // mount whose merged tree is stored (fs/tree/stored_tree.h): the tree replaces the table.
  enum class FileTable : uint8_t { kKeep, kSkip };
  // Corrupt on bad magic, unknown version, checksum mismatch or inconsistent contents
  // (chunk ranges outside the chunk table, offsets beyond the sizes, ...). Never crashes on
  // arbitrary bytes.
  static Result<LayerIndex> Decode(std::string_view bytes,
                                   ChunkTable chunk_table = ChunkTable::kKeep,
                                   FileTable file_table = FileTable::kKeep);

  bool operator==(const LayerIndex&) const = default;
};

// The checksum an encoding (LayerIndex::Encode) ends with, the sha256 of everything before
// it: it names those exact bytes, so a merged tree records the indexes it was merged from by
// it (fs/tree/stored_tree.h). Not checked here (Decode does); empty when `encoded` is shorter
// than a magic, a version and a checksum.
registry::Digest EncodedIndexDigest(std::string_view encoded);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_LAYER_INDEX_H_
