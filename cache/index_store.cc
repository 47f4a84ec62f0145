// imgfs — IndexStore: indexes/<hex>.idx under the store root.
#include "cache/index_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace imgfs::cache {
namespace {

constexpr std::string_view kMagic = "IMGFSIDX";  // fs/layer/layer_index.h kLayerIndexMagic
constexpr size_t kChecksumBytes = 32;            // trailing raw sha256
// Prefix of the landmark side record (the version follows the tag).
constexpr std::string_view kLandmarkPrefix = "imgfs-landmark 1 ";
// A record longer than this is not ours (the longest valid one has 20 digits).
constexpr size_t kMaxLandmarkRecordBytes = 64;

// File-name infixes of the network-derived namespaces (index_store.h).
constexpr std::string_view kTocInfix = ".toc-";
constexpr std::string_view kImageInfix = ".image-";
constexpr std::string_view kIndexSuffix = ".idx";
constexpr std::string_view kTreeSuffix = ".tree";
constexpr size_t kHexDigits = 64;  // a sha256 digest in hex

bool IsLowerHex64(std::string_view s) {
  if (s.size() != kHexDigits) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Status CheckKey(const IndexKey& key) {
  if (key.layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  if (key.kind == IndexKey::Kind::kTree && key.layer.algorithm() != "sha256") {
    return Status::InvalidArgument("index store: a tree needs a sha256 manifest digest");
  }
  if (key.kind != IndexKey::Kind::kLayerBlob && key.kind != IndexKey::Kind::kTree &&
      key.origin.algorithm() != "sha256") {
    // The file name carries the origin's hex, which garbage collection parses as sha256.
    return Status::InvalidArgument("index store: a network-derived index needs a sha256 origin");
  }
  return Status::Ok();
}

}  // namespace

IndexStore::IndexStore(std::string root) : root_(std::move(root)) {}

std::string IndexStore::PathFor(const IndexKey& key) const {
  std::string name = key.layer.hex();
  switch (key.kind) {
    case IndexKey::Kind::kLayerBlob:
      break;
    case IndexKey::Kind::kToc:
      name += std::string(kTocInfix) + key.origin.hex();
      break;
    case IndexKey::Kind::kImage:
      name += std::string(kImageInfix) + key.origin.hex();
      break;
    case IndexKey::Kind::kTree:
      return root_ + "/indexes/" + name + std::string(kTreeSuffix);
  }
  return root_ + "/indexes/" + name + std::string(kIndexSuffix);
}

std::string IndexStore::PathFor(const registry::Digest& layer) const {
  return PathFor(IndexKey::LayerBlob(layer));
}

std::optional<IndexKey> IndexStore::KeyOfFileName(std::string_view name) {
  if (name.size() == kHexDigits + kTreeSuffix.size() && name.ends_with(kTreeSuffix) &&
      IsLowerHex64(name.substr(0, kHexDigits))) {
    auto manifest = registry::Digest::Parse("sha256:" + std::string(name.substr(0, kHexDigits)));
    if (!manifest.has_value()) return std::nullopt;
    return IndexKey::Tree(std::move(manifest).value());
  }
  if (!name.ends_with(kIndexSuffix)) return std::nullopt;
  name.remove_suffix(kIndexSuffix.size());
  if (name.size() < kHexDigits || !IsLowerHex64(name.substr(0, kHexDigits))) return std::nullopt;
  auto layer = registry::Digest::Parse("sha256:" + std::string(name.substr(0, kHexDigits)));
  if (!layer.has_value()) return std::nullopt;
  std::string_view rest = name.substr(kHexDigits);
  if (rest.empty()) return IndexKey::LayerBlob(*layer);
  IndexKey::Kind kind;
  if (rest.starts_with(kTocInfix)) {
    kind = IndexKey::Kind::kToc;
    rest.remove_prefix(kTocInfix.size());
  } else if (rest.starts_with(kImageInfix)) {
    kind = IndexKey::Kind::kImage;
    rest.remove_prefix(kImageInfix.size());
  } else {
    return std::nullopt;
  }
  if (!IsLowerHex64(rest)) return std::nullopt;
  auto origin = registry::Digest::Parse("sha256:" + std::string(rest));
  if (!origin.has_value()) return std::nullopt;
  return IndexKey{std::move(layer).value(), kind, std::move(origin).value()};
}

Status IndexStore::Put(const IndexKey& key, std::string_view encoded, Durability durability) const {
  IMGFS_RETURN_IF_ERROR(CheckKey(key));
  IMGFS_RETURN_IF_ERROR(MakeDirs(root_ + "/indexes", 0700));  // private: cache/store.h
  return WriteFileAtomic(PathFor(key), encoded, 0600, durability);
}

Status IndexStore::Put(const registry::Digest& layer, std::string_view encoded) const {
  return Put(IndexKey::LayerBlob(layer), encoded);
}

Result<std::string> IndexStore::Get(const registry::Digest& layer) const {
  return Get(IndexKey::LayerBlob(layer));
}

Result<std::string> IndexStore::Get(const IndexKey& key) const {
  IMGFS_RETURN_IF_ERROR(CheckKey(key));
  std::string path = PathFor(key);
  Result<std::string> data = ReadFile(path);
  if (!data.has_value()) return data.error();
  std::string_view bytes = *data;
  if (bytes.size() < kMagic.size() + kChecksumBytes || bytes.substr(0, kMagic.size()) != kMagic) {
    return Status::Corrupt("index " + path + ": not a layer index");
  }
  return data;
}

Result<MappedFile> IndexStore::Map(const registry::Digest& layer) const {
  return Map(IndexKey::LayerBlob(layer));
}

Result<MappedFile> IndexStore::Map(const IndexKey& key) const {
  IMGFS_RETURN_IF_ERROR(CheckKey(key));
  std::string path = PathFor(key);
  Result<MappedFile> mapped = MappedFile::Open(path);
  if (!mapped.has_value() || key.kind == IndexKey::Kind::kTree) return mapped;
  std::string_view bytes = mapped->bytes();
  if (bytes.size() < kMagic.size() + kChecksumBytes || bytes.substr(0, kMagic.size()) != kMagic) {
    return Status::Corrupt("index " + path + ": not a layer index");
  }
  return mapped;
}

Status IndexStore::Remove(const IndexKey& key) const {
  IMGFS_RETURN_IF_ERROR(CheckKey(key));
  const std::string path = PathFor(key);
  if (std::remove(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove " + path);
  }
  return Status::Ok();
}

Status IndexStore::Remove(const registry::Digest& layer) const {
  if (layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  for (const std::string& path : {PathFor(layer), LandmarkPathFor(layer)}) {
    if (std::remove(path.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "remove " + path);
    }
  }
  return Status::Ok();
}

std::string IndexStore::LandmarkPathFor(const registry::Digest& layer) const {
  return root_ + "/indexes/" + layer.hex() + ".landmark";
}

Status IndexStore::PutLandmark(const registry::Digest& layer, uint64_t blob_offset,
                               Durability durability) const {
  if (layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  if (blob_offset == 0) return Status::InvalidArgument("index store: landmark offset 0");
  IMGFS_RETURN_IF_ERROR(MakeDirs(root_ + "/indexes", 0700));
  return WriteFileAtomic(LandmarkPathFor(layer),
                         std::string(kLandmarkPrefix) + std::to_string(blob_offset) + "\n", 0600,
                         durability);
}

Status IndexStore::Sync(const std::string& path) const {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.IsValid()) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, "open " + path);
  }
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + path);
  return SyncParentDir(path);
}

Result<uint64_t> IndexStore::GetLandmark(const registry::Digest& layer) const {
  if (layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  const std::string path = LandmarkPathFor(layer);
  Result<std::string> data = ReadFile(path);
  if (!data.has_value()) return data.error();
  std::string_view text = *data;
  auto corrupt = [&path] { return Status::Corrupt("landmark record " + path + ": malformed"); };
  if (text.size() > kMaxLandmarkRecordBytes || !text.starts_with(kLandmarkPrefix) ||
      !text.ends_with('\n')) {
    return corrupt();
  }
  std::string_view digits = text.substr(kLandmarkPrefix.size());
  digits.remove_suffix(1);
  uint64_t offset = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), offset);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || offset == 0) {
    return corrupt();
  }
  return offset;
}

}  // namespace imgfs::cache
