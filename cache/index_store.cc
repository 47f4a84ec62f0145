// imgfs — IndexStore: indexes/<hex>.idx under the store root.
#include "cache/index_store.h"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "base/file_util.h"

namespace imgfs::cache {
namespace {

constexpr std::string_view kMagic = "IMGFSIDX";  // fs/layer/layer_index.h kLayerIndexMagic
constexpr size_t kChecksumBytes = 32;            // trailing raw sha256
// Prefix of the landmark side record (the version follows the tag).
constexpr std::string_view kLandmarkPrefix = "imgfs-landmark 1 ";
// A record longer than this is not ours (the longest valid one has 20 digits).
constexpr size_t kMaxLandmarkRecordBytes = 64;

std::string ToHex(std::string_view raw) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

}  // namespace

IndexStore::IndexStore(std::string root) : root_(std::move(root)) {}

std::string IndexStore::PathFor(const registry::Digest& layer) const {
  return root_ + "/indexes/" + layer.hex() + ".idx";
}

Status IndexStore::Put(const registry::Digest& layer, std::string_view encoded) const {
  if (layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  IMGFS_RETURN_IF_ERROR(MakeDirs(root_ + "/indexes", 0700));  // private: cache/store.h
  return WriteFileAtomic(PathFor(layer), encoded, 0600);
}

Result<std::string> IndexStore::Get(const registry::Digest& layer) const {
  if (layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  std::string path = PathFor(layer);
  Result<std::string> data = ReadFile(path);
  if (!data.has_value()) return data.error();
  std::string_view bytes = *data;
  if (bytes.size() < kMagic.size() + kChecksumBytes || bytes.substr(0, kMagic.size()) != kMagic) {
    return Status::Corrupt("index " + path + ": not a layer index");
  }
  std::string_view body = bytes.substr(0, bytes.size() - kChecksumBytes);
  if (registry::Digest::Sha256Of(body).hex() != ToHex(bytes.substr(body.size()))) {
    return Status::Corrupt("index " + path + ": checksum mismatch");
  }
  return data;
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

Status IndexStore::PutLandmark(const registry::Digest& layer, uint64_t blob_offset) const {
  if (layer.empty()) return Status::InvalidArgument("index store: empty layer digest");
  if (blob_offset == 0) return Status::InvalidArgument("index store: landmark offset 0");
  IMGFS_RETURN_IF_ERROR(MakeDirs(root_ + "/indexes", 0700));
  return WriteFileAtomic(LandmarkPathFor(layer),
                         std::string(kLandmarkPrefix) + std::to_string(blob_offset) + "\n", 0600);
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
