// imgfs — LayerIndex binary encoding.
//
// Layout (version 3; all integers little-endian, "varint" = LEB128 unsigned, "zigzag" = signed
// varint, "str" = varint length + bytes):
//   magic "IMGFSIDX" | u32 version
//   str layer_digest | str diff_id | str media_type | u8 format
//   varint compressed_size, uncompressed_size, chunk_size, checkpoint_span, max_checkpoint_gap
//   u8 provenance | str origin | str subject          (absent in version 1: kUnverified)
//   varint #entries, each: str path | u8 type | varint mode, uid, gid, size | zigzag mtime_sec |
//     varint mtime_nsec, dev_major, dev_minor | str link_target | varint #xattrs, each str name,
//     str value | varint payload_offset, first_chunk, chunk_count
//   varint #chunks, each: varint file_offset, size | u8 has_digest [+ 32 raw sha256 bytes] |
//     varint blob_offset, blob_length, inner_offset
//   varint #checkpoints, each: varint compressed_offset, uncompressed_offset | u8 bits |
//     varint window size | str window as one zstd frame (PackedWindow; version 2: str raw window)
//   32 bytes: sha256 of everything above.
#include "fs/layer/layer_index.h"

#include <zstd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <future>
#include <iterator>
#include <limits>
#include <system_error>
#include <vector>

#include "base/huge_pages.h"
#include "registry/tar_reader.h"

namespace imgfs::fs {
namespace {

constexpr size_t kChecksumBytes = 32;
// From this size on, Decode checks the checksum on a second thread (a thread costs ~50 us).
constexpr size_t kChecksumBesideParseBytes = 1 << 20;
// From this many entries on, Decode splits the entry table between two threads (a thread
// costs ~50 us; 16 384 entries take ~3 ms to decode).
constexpr size_t kEntriesInHalvesCount = 16384;
// Fast and still about a third of the raw size for the text and code of typical layers; higher
// levels gain ~5 % at several times the cost.
constexpr int kWindowZstdLevel = 1;

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      U8(static_cast<uint8_t>(v | 0x80));
      v >>= 7;
    }
    U8(static_cast<uint8_t>(v));
  }
  void Zigzag(int64_t v) {
    Varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }
  void Str(std::string_view s) {
    Varint(s.size());
    out_.append(s);
  }
  void Raw(std::string_view s) { out_.append(s); }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in, size_t pos = 0) : in_(in), pos_(pos) {}
  bool U8(uint8_t* v) {
    if (pos_ >= in_.size()) return false;
    *v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool U32(uint32_t* v) {
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      uint8_t b;
      if (!U8(&b)) return false;
      *v |= static_cast<uint32_t>(b) << (8 * i);
    }
    return true;
  }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!U8(&b)) return false;
      if (shift == 63 && b > 1) return false;  // overflows 64 bits
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool Varint32(uint32_t* v) {
    uint64_t x;
    if (!Varint(&x) || x > std::numeric_limits<uint32_t>::max()) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool Zigzag(int64_t* v) {
    uint64_t x;
    if (!Varint(&x)) return false;
    *v = static_cast<int64_t>((x >> 1) ^ (~(x & 1) + 1));
    return true;
  }
  bool Str(std::string* s) {
    uint64_t n;
    if (!Varint(&n) || n > remaining()) return false;
    s->assign(in_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool SkipStr() {
    uint64_t n;
    if (!Varint(&n) || n > remaining()) return false;
    pos_ += n;
    return true;
  }
  bool SkipVarints(int count) {
    uint64_t ignored;
    for (int i = 0; i < count; ++i) {
      if (!Varint(&ignored)) return false;
    }
    return true;
  }
  bool Raw(size_t n, std::string_view* s) {
    if (n > remaining()) return false;
    *s = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  // Reads a count of items that each take at least `min_bytes`, so a hostile count cannot
  // make the decoder allocate more than the input justifies.
  bool Count(size_t min_bytes, size_t* n) {
    uint64_t v;
    if (!Varint(&v) || v > remaining() / min_bytes) return false;
    *n = static_cast<size_t>(v);
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }
  size_t pos() const { return pos_; }
  std::string_view in() const { return in_; }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

// How many of the `n` entries that start at `r` are there in full (their framing only: the
// values are checked when they are decoded). The decoder reserves that many, so its tables
// take their final size at once and still never exceed what the input holds.
// `*split`, when not null: where entry `split_at` starts (left alone if it is not present).
// SkipEntries moves `r` past the ones present.
size_t SkipEntries(Reader* r, size_t n, size_t split_at = 0, size_t* split = nullptr) {
  uint8_t type;
  size_t nx;
  for (size_t i = 0; i < n; ++i) {
    if (i == split_at && split != nullptr) *split = r->pos();
    // path | type | mode uid gid size mtime_sec mtime_nsec dev_major dev_minor | link_target
    if (!r->SkipStr() || !r->U8(&type) || !r->SkipVarints(8) || !r->SkipStr() ||
        !r->Count(2, &nx)) {
      return i;
    }
    for (size_t x = 0; x < nx; ++x) {
      if (!r->SkipStr() || !r->SkipStr()) return i;
    }
    if (!r->SkipVarints(3)) return i;
  }
  return n;
}

size_t EntriesPresent(Reader r, size_t n, size_t split_at = 0, size_t* split = nullptr) {
  return SkipEntries(&r, n, split_at, split);
}

// The same for chunks, moving `r` past the ones present.
size_t SkipChunks(Reader* r, size_t n) {
  uint8_t has_digest;
  std::string_view raw;
  for (size_t i = 0; i < n; ++i) {
    if (!r->SkipVarints(2) || !r->U8(&has_digest) || (has_digest == 1 && !r->Raw(32, &raw)) ||
        !r->SkipVarints(3)) {
      return i;
    }
  }
  return n;
}

size_t ChunksPresent(Reader r, size_t n) { return SkipChunks(&r, n); }

Status Bad(const Reader& r, std::string_view what) {
  return Status::Corrupt("layer index: " + std::string(what) + " at byte " +
                         std::to_string(r.pos()));
}

// The 32 bytes of a sha256 digest (sha256_bytes() of a sha256 Digest).
std::string_view RawBytes(const unsigned char* sha256) {
  return std::string_view(reinterpret_cast<const char*>(sha256), kChecksumBytes);
}

bool AddOverflows(uint64_t a, uint64_t b, uint64_t* sum) {
  return __builtin_add_overflow(a, b, sum);
}

Result<registry::Digest> ParseOptionalDigest(const std::string& text) {
  if (text.empty()) return registry::Digest();
  return registry::Digest::Parse(text);
}

}  // namespace

PackedWindow PackedWindow::Pack(std::string_view raw) {
  if (raw.size() > kMaxBytes) raw.remove_prefix(raw.size() - kMaxBytes);
  PackedWindow w;
  if (raw.empty()) return w;
  w.packed_.resize(ZSTD_compressBound(raw.size()));
  size_t n =
      ZSTD_compress(w.packed_.data(), w.packed_.size(), raw.data(), raw.size(), kWindowZstdLevel);
  // Into a compressBound-sized buffer this fails only when zstd cannot allocate its context:
  // out of memory, like a failed new.
  if (ZSTD_isError(n) != 0) std::abort();
  w.packed_.resize(n);
  w.packed_.shrink_to_fit();
  w.size_ = static_cast<uint32_t>(raw.size());
  return w;
}

Result<PackedWindow> PackedWindow::FromPacked(uint32_t size, std::string packed) {
  if (size > kMaxBytes) return Status::Corrupt("checkpoint window larger than 32 KiB");
  if (size == 0) {
    if (!packed.empty()) return Status::Corrupt("checkpoint window: bytes for an empty window");
    return PackedWindow();
  }
  if (ZSTD_getFrameContentSize(packed.data(), packed.size()) != size ||
      ZSTD_findFrameCompressedSize(packed.data(), packed.size()) != packed.size()) {
    return Status::Corrupt("checkpoint window: not one zstd frame of " + std::to_string(size) +
                           " bytes");
  }
  PackedWindow w;
  w.size_ = size;
  w.packed_ = std::move(packed);
  return w;
}

Status PackedWindow::Unpack(std::string* out) const {
  out->resize(size_);
  if (size_ == 0) return Status::Ok();
  size_t n = ZSTD_decompress(out->data(), out->size(), packed_.data(), packed_.size());
  if (ZSTD_isError(n) != 0 || n != size_) {
    return Status::Corrupt("checkpoint window does not decode to its " + std::to_string(size_) +
                           " bytes");
  }
  return Status::Ok();
}

void LayerIndex::DropChunks() {
  std::vector<Chunk>().swap(chunks);  // swap, not clear(): clear() keeps the buffer
}

void LayerIndex::DropEntries() { std::vector<FileEntry>().swap(entries); }

size_t LayerIndex::CheckpointFor(uint64_t offset) const {
  auto it = std::upper_bound(
      checkpoints.begin(), checkpoints.end(), offset,
      [](uint64_t off, const Checkpoint& cp) { return off < cp.uncompressed_offset; });
  if (it == checkpoints.begin()) return 0;
  return static_cast<size_t>(it - checkpoints.begin()) - 1;
}

std::string LayerIndex::Encode() const {
  Writer w;
  w.Raw(kLayerIndexMagic);
  w.U32(kLayerIndexFormatVersion);
  w.Str(layer_digest.String());
  w.Str(diff_id.String());
  w.Str(media_type);
  w.U8(static_cast<uint8_t>(format));
  w.Varint(compressed_size);
  w.Varint(uncompressed_size);
  w.Varint(chunk_size);
  w.Varint(checkpoint_span);
  w.Varint(max_checkpoint_gap);
  w.U8(static_cast<uint8_t>(provenance));
  w.Str(origin.String());
  w.Str(subject.String());
  w.Varint(entries.size());
  for (const FileEntry& e : entries) {
    w.Str(e.path);
    w.U8(static_cast<uint8_t>(e.type));
    w.Varint(e.mode);
    w.Varint(e.uid);
    w.Varint(e.gid);
    w.Varint(e.size);
    w.Zigzag(e.mtime_sec);
    w.Varint(e.mtime_nsec);
    w.Varint(e.dev_major);
    w.Varint(e.dev_minor);
    w.Str(e.link_target);
    w.Varint(e.xattrs.size());
    for (const auto& [name, value] : e.xattrs) {
      w.Str(name);
      w.Str(value);
    }
    w.Varint(e.payload_offset);
    w.Varint(e.first_chunk);
    w.Varint(e.chunk_count);
  }
  w.Varint(chunks.size());
  for (const Chunk& c : chunks) {
    w.Varint(c.file_offset);
    w.Varint(c.size);
    const unsigned char* raw = c.digest.sha256_bytes();
    w.U8(raw != nullptr ? 1 : 0);
    if (raw != nullptr) w.Raw(RawBytes(raw));
    w.Varint(c.blob_offset);
    w.Varint(c.blob_length);
    w.Varint(c.inner_offset);
  }
  w.Varint(checkpoints.size());
  for (const Checkpoint& cp : checkpoints) {
    w.Varint(cp.compressed_offset);
    w.Varint(cp.uncompressed_offset);
    w.U8(cp.bits);
    w.Varint(cp.window.size());
    w.Str(cp.window.packed());
  }
  std::string out = std::move(w.out());
  out += RawBytes(registry::Digest::Sha256Of(out).sha256_bytes());
  return out;
}

Status CheckLazyChunkGeometry(const Chunk& c) {
  if (c.blob_length == 0) return Status::Ok();  // a zeros chunk: served in slices
  const std::string where = "chunk at file offset " + std::to_string(c.file_offset) + " of " +
                            std::to_string(c.size) + " bytes";
  if (c.size > kMaxChunkBytes) {
    return Status::Corrupt(where + " is larger than " + std::to_string(kMaxChunkBytes) +
                           " (kMaxChunkBytes)");
  }
  if (c.inner_offset > kChunkBlobSlackBytes ||
      c.blob_length > MaxChunkBlobBytes(c.size) + c.inner_offset) {
    return Status::Corrupt(where + " spans " + std::to_string(c.blob_length) +
                           " compressed bytes at inner offset " + std::to_string(c.inner_offset) +
                           ", more than the limit (MaxChunkBlobBytes: size + size/16 + " +
                           std::to_string(kChunkBlobSlackBytes) + ")");
  }
  return Status::Ok();
}

namespace {

// Decodes `count` entries from `*r` onto `*out`. Corrupt (naming the byte) on the first bad one.
Status DecodeEntries(Reader* r, size_t count, std::vector<FileEntry>* out) {
  Reader& rd = *r;
  for (size_t i = 0; i < count; ++i) {
    FileEntry& e = out->emplace_back();
    uint8_t type;
    if (!rd.Str(&e.path) || !rd.U8(&type) || !rd.Varint32(&e.mode) || !rd.Varint32(&e.uid) ||
        !rd.Varint32(&e.gid) || !rd.Varint(&e.size) || !rd.Zigzag(&e.mtime_sec) ||
        !rd.Varint32(&e.mtime_nsec) || !rd.Varint32(&e.dev_major) || !rd.Varint32(&e.dev_minor) ||
        !rd.Str(&e.link_target)) {
      return Bad(rd, "truncated entry");
    }
    if (type > static_cast<uint8_t>(EntryType::kOpaque)) return Bad(rd, "bad entry type");
    e.type = static_cast<EntryType>(type);
    if (e.path.find('\0') != std::string::npos) return Bad(rd, "NUL in path");
    if (e.mode > 07777 || e.mtime_nsec >= 1000000000) return Bad(rd, "bad entry mode or time");
    size_t nx;
    if (!rd.Count(2, &nx) || nx > registry::kMaxXattrsPerEntry) {
      return Bad(rd, "bad xattr count");
    }
    e.xattrs.resize(nx);
    for (auto& [name, value] : e.xattrs) {
      if (!rd.Str(&name) || !rd.Str(&value)) return Bad(rd, "truncated xattr");
      if (name.size() > registry::kMaxXattrNameBytes ||
          value.size() > registry::kMaxXattrValueBytes) {
        return Bad(rd, "xattr name or value too long");
      }
    }
    if (!std::is_sorted(e.xattrs.begin(), e.xattrs.end())) return Bad(rd, "xattrs not sorted");
    if (!rd.Varint(&e.payload_offset) || !rd.Varint32(&e.first_chunk) ||
        !rd.Varint32(&e.chunk_count)) {
      return Bad(rd, "truncated entry");
    }
  }
  return Status::Ok();
}

// The entry table, from `*r` (which it moves past the table). A large table is decoded in two
// halves at once, the upper one on another thread: a mount waits for its largest index, and
// while it decodes, the CPU that loaded the smaller layers is idle. The framing pass that
// counts the entries present also finds where the upper half starts; the lower half, decoded
// first in the byte order, reports the same first error a single pass would, and only when it
// decodes has the upper half started where the framing said.
Status DecodeEntryTable(Reader* r, size_t n, std::vector<FileEntry>* out) {
  const size_t half = n / 2;
  size_t split = 0;
  const size_t present = EntriesPresent(*r, n, half, &split);
  out->reserve(present);
  // Filled to its size at once: ~11 MB of fresh memory for a 75 000-entry layer.
  AdviseHugePages(out->data(), out->capacity() * sizeof(FileEntry));
  // Declared before the future, whose destructor waits for the thread: they outlive its use.
  std::vector<FileEntry> upper;
  Reader upper_reader(r->in(), split);
  std::future<Status> upper_done;
  if (present == n && n >= kEntriesInHalvesCount) {
    try {
      upper_done = std::async(std::launch::async, [&upper, &upper_reader, count = n - half] {
        upper.reserve(count);
        AdviseHugePages(upper.data(), upper.capacity() * sizeof(FileEntry));
        return DecodeEntries(&upper_reader, count, &upper);
      });
    } catch (const std::system_error&) {
      // No thread to be had: one pass, as for a small table.
    }
  }
  if (!upper_done.valid()) return DecodeEntries(r, n, out);
  Status lower = DecodeEntries(r, half, out);
  Status upper_status = upper_done.get();
  IMGFS_RETURN_IF_ERROR(lower);
  if (r->pos() != split) return Status::Internal("layer index: entry table split mid-entry");
  IMGFS_RETURN_IF_ERROR(upper_status);
  out->insert(out->end(), std::make_move_iterator(upper.begin()),
              std::make_move_iterator(upper.end()));
  *r = upper_reader;
  return Status::Ok();
}

// Everything after the magic check: `body` is the encoding without its checksum. Safe on any
// bytes (Decode may run it before the checksum is known to match).
Result<LayerIndex> DecodeBody(std::string_view body, LayerIndex::ChunkTable chunk_table,
                              LayerIndex::FileTable file_table) {
  Reader r(body.substr(kLayerIndexMagic.size()));
  uint32_t version;
  if (!r.U32(&version)) return Bad(r, "truncated header");
  if (version < kLayerIndexOldestReadableVersion || version > kLayerIndexFormatVersion) {
    return Status::Corrupt("layer index: unsupported format version " + std::to_string(version) +
                           " (this imgfs reads " +
                           std::to_string(kLayerIndexOldestReadableVersion) + " to " +
                           std::to_string(kLayerIndexFormatVersion) + ")");
  }
  LayerIndex index;
  std::string layer_digest, diff_id;
  uint8_t format;
  if (!r.Str(&layer_digest) || !r.Str(&diff_id) || !r.Str(&index.media_type) || !r.U8(&format)) {
    return Bad(r, "truncated header");
  }
  auto ld = ParseOptionalDigest(layer_digest);
  auto dd = ParseOptionalDigest(diff_id);
  if (!ld.has_value() || !dd.has_value()) return Bad(r, "bad digest");
  index.layer_digest = std::move(ld).value();
  index.diff_id = std::move(dd).value();
  if (format > static_cast<uint8_t>(LayerFormat::kZstdChunked)) return Bad(r, "bad layer format");
  index.format = static_cast<LayerFormat>(format);
  if (!r.Varint(&index.compressed_size) || !r.Varint(&index.uncompressed_size) ||
      !r.Varint(&index.chunk_size) || !r.Varint(&index.checkpoint_span) ||
      !r.Varint(&index.max_checkpoint_gap)) {
    return Bad(r, "truncated header");
  }
  if (version >= 2) {
    uint8_t provenance;
    std::string origin, subject;
    if (!r.U8(&provenance) || !r.Str(&origin) || !r.Str(&subject)) {
      return Bad(r, "truncated header");
    }
    if (provenance > static_cast<uint8_t>(IndexProvenance::kPublished)) {
      return Bad(r, "bad provenance");
    }
    index.provenance = static_cast<IndexProvenance>(provenance);
    auto od = ParseOptionalDigest(origin);
    auto sd = ParseOptionalDigest(subject);
    if (!od.has_value() || !sd.has_value()) return Bad(r, "bad provenance digest");
    index.origin = std::move(od).value();
    index.subject = std::move(sd).value();
  }

  size_t n;
  // An entry takes at least 16 bytes (one per field).
  if (!r.Count(16, &n)) return Bad(r, "bad entry count");
  if (n > kMaxIndexEntries) {
    return Status::Corrupt("layer index: " + std::to_string(n) + " entries, more than " +
                           std::to_string(kMaxIndexEntries) + " (kMaxIndexEntries)");
  }
  if (file_table == LayerIndex::FileTable::kSkip) {
    // Framing only, as for the chunk table below.
    if (SkipEntries(&r, n) != n) return Bad(r, "truncated entry");
  } else {
    // Reserved for the entries actually present, never for the count alone: memory follows
    // the input.
    IMGFS_RETURN_IF_ERROR(DecodeEntryTable(&r, n, &index.entries));
  }

  if (!r.Count(6, &n)) return Bad(r, "bad chunk count");
  if (n > kMaxIndexChunks) {
    return Status::Corrupt("layer index: " + std::to_string(n) + " chunks, more than " +
                           std::to_string(kMaxIndexChunks) + " (kMaxIndexChunks)");
  }
  const size_t chunk_count = n;
  if (chunk_table == LayerIndex::ChunkTable::kSkip) {
    // Framing only: the table is not kept, so its values are neither decoded nor checked.
    if (SkipChunks(&r, n) != n) return Bad(r, "truncated chunk");
    n = 0;
  }
  index.chunks.reserve(ChunksPresent(r, n));
  for (size_t i = 0; i < n; ++i) {
    Chunk& c = index.chunks.emplace_back();
    uint8_t has_digest;
    if (!r.Varint(&c.file_offset) || !r.Varint(&c.size) || !r.U8(&has_digest)) {
      return Bad(r, "truncated chunk");
    }
    if (has_digest > 1) return Bad(r, "bad chunk digest flag");
    if (has_digest) {
      std::string_view raw;
      if (!r.Raw(32, &raw)) return Bad(r, "truncated chunk digest");
      c.digest =
          registry::Digest::FromSha256Bytes(reinterpret_cast<const unsigned char*>(raw.data()));
    }
    if (!r.Varint(&c.blob_offset) || !r.Varint(&c.blob_length) || !r.Varint(&c.inner_offset)) {
      return Bad(r, "truncated chunk");
    }
    if (index.format == LayerFormat::kEstargz || index.format == LayerFormat::kZstdChunked) {
      Status geometry = CheckLazyChunkGeometry(c);
      if (!geometry.ok()) return geometry.WithContext("layer index");
    }
  }

  if (!r.Count(4, &n)) return Bad(r, "bad checkpoint count");
  index.checkpoints.resize(n);
  std::string window;
  for (Checkpoint& cp : index.checkpoints) {
    uint32_t window_size = 0;
    if (!r.Varint(&cp.compressed_offset) || !r.Varint(&cp.uncompressed_offset) || !r.U8(&cp.bits) ||
        (version >= 3 && !r.Varint32(&window_size)) || !r.Str(&window)) {
      return Bad(r, "truncated checkpoint");
    }
    if (cp.bits > 7) return Bad(r, "bad checkpoint");
    if (version >= 3) {
      Result<PackedWindow> packed = PackedWindow::FromPacked(window_size, std::move(window));
      if (!packed.has_value()) return Bad(r, "bad checkpoint window");
      cp.window = std::move(packed).value();
    } else {
      if (window.size() > PackedWindow::kMaxBytes) return Bad(r, "bad checkpoint");
      cp.window = PackedWindow::Pack(window);
    }
    if (cp.bits != 0 && cp.compressed_offset == 0) return Bad(r, "bad checkpoint bits");
  }
  if (r.remaining() != 0) return Bad(r, "trailing bytes");

  // Cross-checks: everything a reader will index with must stay inside its table or stream.
  for (const FileEntry& e : index.entries) {
    uint64_t end;
    if (e.chunk_count != 0 && e.type != EntryType::kRegular) {
      return Status::Corrupt("layer index: chunks on a non-regular entry " + e.path);
    }
    if (AddOverflows(e.first_chunk, e.chunk_count, &end) || end > chunk_count) {
      return Status::Corrupt("layer index: chunk range outside the chunk table for " + e.path);
    }
    if (e.type == EntryType::kRegular && e.size != 0 &&
        (AddOverflows(e.payload_offset, e.size, &end) || end > index.uncompressed_size)) {
      return Status::Corrupt("layer index: data of " + e.path + " beyond the stream");
    }
    if (chunk_table == LayerIndex::ChunkTable::kSkip) continue;
    uint64_t expect = 0;
    for (uint32_t i = e.first_chunk; i < e.first_chunk + e.chunk_count; ++i) {
      const Chunk& c = index.chunks[i];
      if (c.file_offset != expect || AddOverflows(expect, c.size, &expect) || expect > e.size) {
        return Status::Corrupt("layer index: bad chunk list for " + e.path);
      }
    }
    if (e.chunk_count != 0 && expect != e.size) {
      return Status::Corrupt("layer index: chunks do not cover " + e.path);
    }
  }
  for (size_t i = 0; i < index.checkpoints.size(); ++i) {
    const Checkpoint& cp = index.checkpoints[i];
    if (cp.uncompressed_offset > index.uncompressed_size ||
        cp.compressed_offset > index.compressed_size ||
        (i > 0 && cp.uncompressed_offset < index.checkpoints[i - 1].uncompressed_offset)) {
      return Status::Corrupt("layer index: checkpoint " + std::to_string(i) + " out of order");
    }
  }
  return index;
}

}  // namespace

registry::Digest EncodedIndexDigest(std::string_view encoded) {
  if (encoded.size() < kLayerIndexMagic.size() + 4 + kChecksumBytes) return registry::Digest();
  return registry::Digest::FromSha256Bytes(
      reinterpret_cast<const unsigned char*>(encoded.data() + encoded.size() - kChecksumBytes));
}

Result<LayerIndex> LayerIndex::Decode(std::string_view bytes, ChunkTable chunk_table,
                                      FileTable file_table) {
  if (bytes.size() < kLayerIndexMagic.size() + 4 + kChecksumBytes ||
      bytes.substr(0, kLayerIndexMagic.size()) != kLayerIndexMagic) {
    return Status::Corrupt("layer index: bad magic");
  }
  std::string_view body = bytes.substr(0, bytes.size() - kChecksumBytes);
  std::string_view sum = bytes.substr(bytes.size() - kChecksumBytes);
  auto checksum_ok = [body, sum] {
    return RawBytes(registry::Digest::Sha256Of(body).sha256_bytes()) == sum;
  };
  const Status mismatch = Status::Corrupt("layer index: checksum mismatch");
  // A mount waits for its largest index, and the checksum is a quarter of its decoding (4.5 of
  // 19 ms for a 10 MB index): a large one is checked on another thread while it is parsed,
  // and what the parse made is dropped unless the checksum matches.
  std::future<bool> checked;
  if (body.size() >= kChecksumBesideParseBytes) {
    try {
      checked = std::async(std::launch::async, checksum_ok);
    } catch (const std::system_error&) {
      // No thread to be had: check first, as for a small index.
    }
  }
  if (!checked.valid()) {
    if (!checksum_ok()) return mismatch;
    return DecodeBody(body, chunk_table, file_table);
  }
  Result<LayerIndex> index = DecodeBody(body, chunk_table, file_table);
  if (!checked.get()) return mismatch;
  return index;
}

}  // namespace imgfs::fs
