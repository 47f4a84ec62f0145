// imgfs — IndexStore: indexes/<hex>.idx under the store root.
#include "cache/index_store.h"

#include <cerrno>
#include <cstdio>
#include <string>
#include <utility>

#include "base/file_util.h"

namespace imgfs::cache {
namespace {

constexpr std::string_view kMagic = "IMGFSIDX";  // fs/layer/layer_index.h kLayerIndexMagic
constexpr size_t kChecksumBytes = 32;            // trailing raw sha256

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
  IMGFS_RETURN_IF_ERROR(MakeDirs(root_ + "/indexes"));
  return WriteFileAtomic(PathFor(layer), encoded);
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
  std::string path = PathFor(layer);
  if (std::remove(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove " + path);
  }
  return Status::Ok();
}

}  // namespace imgfs::cache
