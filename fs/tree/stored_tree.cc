// imgfs — the stored merged tree: encoding, decoding in place, the data check.
#include "fs/tree/stored_tree.h"

#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>

#include <isa-l/crc.h>

namespace imgfs::fs {

namespace {

constexpr char kMagic[8] = {'I', 'M', 'G', 'F', 'S', 'T', 'R', 'E'};
constexpr uint32_t kOrderMark = 0x01020304;

// The fixed header; every field explicit, so that it has no padding bytes.
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t order_mark;
  uint32_t node_bytes;  // sizeof(Node), sizeof(Dirent), sizeof(Xattr) of the writer
  uint32_t dirent_bytes;
  uint32_t xattr_bytes;
  uint32_t layer_count;
  unsigned char manifest[32];
  uint64_t nodes;
  uint64_t dirents;
  uint64_t xattrs;
  uint64_t arena_bytes;
  uint64_t stats[5];  // MergeStats: entries, invalid_paths, bad_hardlinks, shadowed, landmarks
  uint32_t crc;       // CRC-32 of the header (this field zero) and every byte after it
  uint32_t reserved;
  unsigned char sources[32];  // StoredTreeSources of the layers it was merged from
};
static_assert(std::has_unique_object_representations_v<Header> && sizeof(Header) % 8 == 0);
static_assert(std::endian::native == std::endian::little, "stored trees are little-endian");

constexpr uint64_t AlignUp(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// Section offsets of a tree with these counts; false when they overflow.
struct Layout {
  uint64_t nodes = 0, dirents = 0, xattrs = 0, arena = 0, end = 0;
};
bool LayoutOf(const Header& h, Layout* out) {
  // Counts are bounded before they are multiplied: below 2^32 each (NodeTable's limits).
  constexpr uint64_t kMax = std::numeric_limits<uint32_t>::max();
  if (h.nodes > kMax || h.dirents > kMax || h.xattrs > kMax || h.arena_bytes > kMax) return false;
  out->nodes = sizeof(Header);
  out->dirents = AlignUp(out->nodes + h.nodes * sizeof(Node));
  out->xattrs = AlignUp(out->dirents + h.dirents * sizeof(NodeTable::Dirent));
  out->arena = AlignUp(out->xattrs + h.xattrs * sizeof(NodeTable::Xattr));
  out->end = out->arena + h.arena_bytes;
  return true;
}

// CRC-32 (gzip's, zlib's crc32) of the header (its crc field zero) and of the records after
// it. ISA-L's, with carry-less multiplication: ~0.3 ms for a 10 MB tree, against 2.5 ms for
// zlib's on the path of every mount.
uint32_t Crc(Header h, std::string_view records) {
  h.crc = 0;
  uint32_t crc = crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(&h), sizeof(h));
  return crc32_gzip_refl(crc, reinterpret_cast<const unsigned char*>(records.data()),
                         records.size());
}

void Put(std::string* out, uint64_t at, const void* data, size_t size) {
  if (size != 0) std::memcpy(out->data() + at, data, size);
}

}  // namespace

registry::Digest StoredTreeSources(std::span<const std::string> layer_sources) {
  registry::Sha256 hash;
  for (const std::string& s : layer_sources) {
    const uint64_t size = s.size();
    hash.Update(std::string_view(reinterpret_cast<const char*>(&size), sizeof(size)));
    hash.Update(s);
  }
  return hash.Finish();
}

Result<std::string> EncodeStoredTree(const NodeTable::Records& r, const StoredTreeInfo& info) {
  const unsigned char* manifest = info.manifest.sha256_bytes();
  const unsigned char* sources = info.sources.sha256_bytes();
  if (manifest == nullptr || sources == nullptr) {
    return Status::InvalidArgument("stored tree: the manifest or sources digest is not sha256");
  }
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kStoredTreeVersion;
  h.order_mark = kOrderMark;
  h.node_bytes = sizeof(Node);
  h.dirent_bytes = sizeof(NodeTable::Dirent);
  h.xattr_bytes = sizeof(NodeTable::Xattr);
  h.layer_count = info.layer_count;
  std::memcpy(h.manifest, manifest, sizeof(h.manifest));
  std::memcpy(h.sources, sources, sizeof(h.sources));
  h.nodes = r.nodes.size();
  h.dirents = r.dirents.size();
  h.xattrs = r.xattrs.size();
  h.arena_bytes = r.arena.size();
  h.stats[0] = info.stats.entries;
  h.stats[1] = info.stats.invalid_paths;
  h.stats[2] = info.stats.bad_hardlinks;
  h.stats[3] = info.stats.shadowed;
  h.stats[4] = info.stats.landmarks;
  Layout at;
  if (!LayoutOf(h, &at)) return Status::Unsupported("stored tree: the table is too large");
  std::string out(at.end, '\0');
  Put(&out, at.nodes, r.nodes.data(), r.nodes.size_bytes());
  Put(&out, at.dirents, r.dirents.data(), r.dirents.size_bytes());
  Put(&out, at.xattrs, r.xattrs.data(), r.xattrs.size_bytes());
  Put(&out, at.arena, r.arena.data(), r.arena.size());
  h.crc = Crc(h, std::string_view(out).substr(sizeof(Header)));
  Put(&out, 0, &h, sizeof(h));
  return out;
}

Result<StoredTree> DecodeStoredTree(std::string_view bytes, std::shared_ptr<const void> owner,
                                    const registry::Digest& manifest) {
  auto bad = [](const std::string& what) { return Status::Corrupt("stored tree: " + what); };
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(Node) != 0) {
    return bad("bytes not 8-byte aligned");
  }
  Header h;
  if (bytes.size() < sizeof(h)) return bad("truncated header");
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) return bad("bad magic");
  if (h.version != kStoredTreeVersion) {
    return bad("version " + std::to_string(h.version) + ", this imgfs reads " +
               std::to_string(kStoredTreeVersion));
  }
  if (h.order_mark != kOrderMark || h.node_bytes != sizeof(Node) ||
      h.dirent_bytes != sizeof(NodeTable::Dirent) || h.xattr_bytes != sizeof(NodeTable::Xattr)) {
    return bad("written by a machine of another byte order or record layout");
  }
  const unsigned char* want = manifest.sha256_bytes();
  if (want == nullptr || std::memcmp(h.manifest, want, sizeof(h.manifest)) != 0) {
    return bad("not the tree of " + manifest.String());
  }
  Layout at;
  if (!LayoutOf(h, &at) || at.end != bytes.size()) return bad("sizes do not match the file");
  // Nothing the encoder would not write: a reserved field and the alignment gaps are zero.
  auto zeros = [bytes](uint64_t from, uint64_t to) {
    return bytes.substr(from, to - from).find_first_not_of('\0') == std::string_view::npos;
  };
  if (h.reserved != 0 || !zeros(at.nodes + h.nodes * sizeof(Node), at.dirents) ||
      !zeros(at.dirents + h.dirents * sizeof(NodeTable::Dirent), at.xattrs) ||
      !zeros(at.xattrs + h.xattrs * sizeof(NodeTable::Xattr), at.arena)) {
    return bad("reserved bytes not zero");
  }
  if (Crc(h, bytes.substr(sizeof(Header))) != h.crc) return bad("checksum mismatch");
  NodeTable::Records r;
  r.nodes = {reinterpret_cast<const Node*>(bytes.data() + at.nodes), h.nodes};
  r.dirents = {reinterpret_cast<const NodeTable::Dirent*>(bytes.data() + at.dirents), h.dirents};
  r.xattrs = {reinterpret_cast<const NodeTable::Xattr*>(bytes.data() + at.xattrs), h.xattrs};
  r.arena = bytes.substr(at.arena, h.arena_bytes);
  StoredTree out;
  IMGFS_ASSIGN_OR_RETURN(out.table, NodeTable::Adopt(r, std::move(owner)));
  out.info.manifest = manifest;
  out.info.layer_count = h.layer_count;
  out.info.sources = registry::Digest::FromSha256Bytes(h.sources);
  out.info.stats = MergeStats{h.stats[0], h.stats[1], h.stats[2], h.stats[3], h.stats[4]};
  return out;
}

Status CheckTreeData(const NodeTable& table, std::span<const TreeLayer> layers) {
  const NodeTable::Records r = table.records();
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    const Node& n = r.nodes[i];
    if (n.layer == Node::kNoLayer) continue;
    auto at = [i] { return "stored tree: inode " + std::to_string(i + 1); };
    if (n.layer >= layers.size()) return Status::Corrupt(at() + ": no such layer");
    const TreeLayer& layer = layers[n.layer];
    if (layer.entries != nullptr) {
      if (n.entry >= layer.entries->size()) return Status::Corrupt(at() + ": no such entry");
      const FileEntry& e = (*layer.entries)[n.entry];
      const bool file = n.type == EntryType::kRegular;
      const bool device = n.type == EntryType::kChar || n.type == EntryType::kBlock;
      bool other_target = false;
      if (n.type == EntryType::kSymlink) {
        const Result<std::string_view> target = table.ReadLink(i + 1);
        other_target = !target.has_value() || *target != e.link_target;
      }
      if (e.type != n.type || (e.mode & 07777) != n.mode || e.uid != n.uid || e.gid != n.gid ||
          e.mtime_sec != n.mtime_sec || e.mtime_nsec != n.mtime_nsec ||
          (file && (e.size != n.size || e.payload_offset != n.payload_offset)) || other_target ||
          (device && (e.dev_major != n.dev_major || e.dev_minor != n.dev_minor))) {
        return Status::Corrupt(at() + ": not what its layer's entry says");
      }
      continue;  // its data is where the entry says, which its index's decoder checked
    }
    if (n.type != EntryType::kRegular) continue;
    uint64_t end;
    if (__builtin_add_overflow(n.payload_offset, n.size, &end) || end > layer.stream_size) {
      return Status::Corrupt(at() + ": data beyond its layer's stream");
    }
  }
  return Status::Ok();
}

}  // namespace imgfs::fs
