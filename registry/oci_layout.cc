// imgfs — oci-layout and index.json (see oci_layout.h).
#include "registry/oci_layout.h"

#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/media_types.h"

namespace imgfs::registry {
namespace {

std::string PathIn(const std::string& dir, std::string_view name) {
  return dir + "/" + std::string(name);
}

// `path` with `content` unless the file exists.
Status CreateIfMissing(const std::string& path, std::string_view content) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return Status::Ok();
  if (errno != ENOENT) return Status::FromErrno(errno, "stat " + path);
  return WriteFileAtomic(path, content);
}

// DIR/NAME, refused unread when larger than kMaxOciIndexBytes.
Result<std::string> ReadBounded(const std::string& dir, std::string_view name) {
  const std::string path = PathIn(dir, name);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > kMaxOciIndexBytes) {
    return Status::Corrupt(path + ": not a regular file of at most " +
                           std::to_string(kMaxOciIndexBytes) + " bytes");
  }
  return ReadFile(path);
}

}  // namespace

std::string EncodeOciLayoutFile() { return R"({"imageLayoutVersion":"1.0.0"})"; }

Status CheckOciLayoutFile(std::string_view bytes) {
  if (bytes.size() > kMaxOciIndexBytes) return Status::Corrupt("oci-layout: too large");
  nlohmann::json doc = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Corrupt("oci-layout: not a JSON object");
  }
  auto version = doc.find("imageLayoutVersion");
  if (version == doc.end() || !version->is_string() || version->get<std::string>().empty()) {
    return Status::Corrupt("oci-layout: no imageLayoutVersion");
  }
  return Status::Ok();
}

Result<Index> DecodeOciIndex(std::string_view bytes) {
  if (bytes.size() > kMaxOciIndexBytes) {
    return Status::Corrupt("index.json: larger than " + std::to_string(kMaxOciIndexBytes) +
                           " bytes");
  }
  Result<Index> index = DecodeIndex(bytes);
  if (!index.has_value()) {
    return Status::Corrupt("index.json: " + index.error().message());
  }
  return index;
}

std::string EncodeOciIndex(Index index) {
  if (index.media_type.empty()) index.media_type = std::string(media::kOciIndex);
  return EncodeIndex(index) + "\n";
}

void NameInOciIndex(Index* index, Descriptor manifest, const std::string& ref_name) {
  const std::string key(kRefNameAnnotation);
  if (!ref_name.empty()) {
    std::erase_if(index->manifests, [&](const Descriptor& d) {
      auto it = d.annotations.find(key);
      return it != d.annotations.end() && it->second == ref_name;
    });
    manifest.annotations[key] = ref_name;
  }
  index->manifests.push_back(std::move(manifest));
}

Status InitOciLayout(const std::string& dir) {
  const std::string layout_path = PathIn(dir, kOciLayoutFile);
  IMGFS_RETURN_IF_ERROR(CreateIfMissing(layout_path, EncodeOciLayoutFile()));
  IMGFS_ASSIGN_OR_RETURN(std::string layout, ReadBounded(dir, kOciLayoutFile));
  IMGFS_RETURN_IF_ERROR(CheckOciLayoutFile(layout).WithContext(dir));
  return CreateIfMissing(PathIn(dir, kOciIndexFile), EncodeOciIndex(Index{}));
}

Result<Index> ReadOciIndex(const std::string& dir) {
  Result<std::string> bytes = ReadBounded(dir, kOciIndexFile);
  if (!bytes.has_value()) return bytes.error();
  Result<Index> index = DecodeOciIndex(*bytes);
  if (!index.has_value()) return index.error().WithContext(dir);
  return index;
}

Status WriteOciIndex(const std::string& dir, Index index) {
  return WriteFileAtomic(PathIn(dir, kOciIndexFile), EncodeOciIndex(std::move(index)));
}

}  // namespace imgfs::registry
