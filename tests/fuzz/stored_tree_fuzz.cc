// imgfs — fuzz target for DecodeStoredTree and NodeTable::Adopt (fs/tree/stored_tree.h).
//
// Each input is decoded twice, for the manifest its header names: as is (the magic, sizes and
// checksum checks) and with its checksum made right, so the fuzzer reaches the record checks.
// Oracle: a tree that decodes answers every query on every inode without reading out of
// bounds (ASan) or looping, each name of a directory looks up to the inode it names, and it
// encodes back to the bytes it was decoded from.
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fs/tree/stored_tree.h"
#include "registry/digest.h"

namespace {

// Header offsets of the version-2 encoding (fs/tree/stored_tree.cc).
constexpr size_t kManifestAt = 32;
constexpr size_t kCrcAt = 136;
constexpr size_t kHeaderBytes = 176;

void Exercise(const std::string& bytes) {
  using imgfs::fs::NodeTable;
  if (bytes.size() < kHeaderBytes) {
    auto held = std::make_shared<std::string>(bytes);
    (void)imgfs::fs::DecodeStoredTree(*held, held, imgfs::registry::Digest::Sha256Of(""));
    return;
  }
  const auto manifest = imgfs::registry::Digest::FromSha256Bytes(
      reinterpret_cast<const unsigned char*>(bytes.data() + kManifestAt));
  auto held = std::make_shared<std::string>(bytes);  // operator new: 16-byte aligned
  auto tree = imgfs::fs::DecodeStoredTree(*held, held, manifest);
  if (!tree.has_value()) return;
  const NodeTable& t = tree->table;
  for (uint64_t ino = 1; ino <= t.inode_count(); ++ino) {
    (void)t.GetAttr(ino);
    (void)t.PathOf(ino);
    (void)t.ReadLink(ino);
    auto names = t.ListXattr(ino);
    if (names.has_value()) {
      for (std::string_view n : *names) (void)t.GetXattr(ino, n);
    }
    auto listing = t.ReadDir(ino);
    if (!listing.has_value()) continue;
    for (const imgfs::fs::DirEntry& e : *listing) {
      auto found = t.Lookup(ino, e.name);
      if (!found.has_value() || *found != e.ino) std::abort();
    }
  }
  // The layers as a mount may open them: local ones (by stream size), and lazy ones whose
  // readers look files up by entry (a few, whatever the nodes name).
  std::vector<imgfs::fs::FileEntry> entries(4);
  entries[1].size = 1;
  std::vector<imgfs::fs::TreeLayer> layers(tree->info.layer_count % 64);
  (void)imgfs::fs::CheckTreeData(t, layers);
  for (imgfs::fs::TreeLayer& l : layers) {
    l.stream_size = 1 << 20;
    l.entries = &entries;
  }
  (void)imgfs::fs::CheckTreeData(t, layers);
  auto again = imgfs::fs::EncodeStoredTree(t.records(), tree->info);
  if (!again.has_value() || *again != bytes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  Exercise(in);
  if (size < kHeaderBytes) return 0;
  std::memset(in.data() + kCrcAt, 0, 4);
  uLong crc = crc32_z(0, reinterpret_cast<const Bytef*>(in.data()), in.size());
  const uint32_t sum = static_cast<uint32_t>(crc);
  std::memcpy(in.data() + kCrcAt, &sum, 4);
  Exercise(in);
  return 0;
}
