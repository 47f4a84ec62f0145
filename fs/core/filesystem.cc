// imgfs — ImageFilesystem: the read-only filesystem core of a mounted image.
#include "fs/core/filesystem.h"

#include "base/log.h"
#include "fs/upper/upper_dir.h"

namespace imgfs::fs {

ImageFilesystem::ImageFilesystem(NodeTable table, std::vector<MountedLayer> layers)
    : table_(std::move(table)), layers_(std::move(layers)) {
  for (uint64_t ino = 1; ino <= table_.inode_count(); ++ino) {
    const Node* node = table_.Get(ino);
    if (node == nullptr) continue;
    if (node->type == EntryType::kRegular) total_bytes_ += node->size;
    if (node->xattr_count > 0) has_xattrs_ = true;
  }
}

Result<struct stat> ImageFilesystem::Lookup(uint64_t parent, std::string_view name) const {
  IMGFS_ASSIGN_OR_RETURN(uint64_t ino, table_.Lookup(parent, name));
  return table_.GetAttr(ino);
}

Result<struct stat> ImageFilesystem::GetAttr(uint64_t ino) const { return table_.GetAttr(ino); }

Result<std::string> ImageFilesystem::Read(uint64_t ino, uint64_t offset, size_t length) const {
  IMGFS_ASSIGN_OR_RETURN(ByteSlices data, ReadSlices(ino, offset, length));
  return std::move(data).TakeString();
}

Result<ByteSlices> ImageFilesystem::ReadSlices(uint64_t ino, uint64_t offset, size_t length) const {
  const Node* node = table_.Get(ino);
  if (node == nullptr) return Status::NotFound("no inode " + std::to_string(ino));
  if (node->type != EntryType::kRegular) {
    return Status::InvalidArgument("inode " + std::to_string(ino) + " is not a regular file");
  }
  if (offset >= node->size || length == 0) return ByteSlices();
  if (node->layer >= layers_.size()) {
    return Status::Internal("inode " + std::to_string(ino) + " has no layer");
  }
  const MountedLayer& layer = layers_[node->layer];
  Result<ByteSlices> data = layer.reader->ReadSlices(
      FileRef{node->entry, node->size, node->payload_offset}, offset, length);
  if (!data.has_value()) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    // The path from the table: a local layer's index keeps no names once merged.
    Result<std::string> path = table_.PathOf(ino);
    return data.error().WithContext("reading " + (path.has_value() ? *path : "?") + " from layer " +
                                    layer.index->layer_digest.String());
  }
  bytes_read_.fetch_add(data->size(), std::memory_order_relaxed);
  return data;
}

Result<std::string_view> ImageFilesystem::ReadLink(uint64_t ino) const {
  return table_.ReadLink(ino);
}

// An image's trusted.overlay.* xattrs are not served: the mount is the lower of kernel
// overlayfs for `imgfs run`, where one would make a directory opaque or a redirect.
Result<std::vector<std::string_view>> ImageFilesystem::ListXattr(uint64_t ino) const {
  IMGFS_ASSIGN_OR_RETURN(std::vector<std::string_view> names, table_.ListXattr(ino));
  std::erase_if(names, [](std::string_view n) { return IsOverlayXattr(n); });
  return names;
}

Result<std::string_view> ImageFilesystem::GetXattr(uint64_t ino, std::string_view name) const {
  if (IsOverlayXattr(name)) return Status::NotFound("no xattr " + std::string(name));
  return table_.GetXattr(ino, name);
}

struct statvfs ImageFilesystem::StatFs() const {
  struct statvfs st {};
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_blocks = (total_bytes_ + 4095) / 4096;
  st.f_bfree = 0;
  st.f_bavail = 0;
  st.f_files = table_.inode_count();
  st.f_ffree = 0;
  st.f_favail = 0;
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  return st;
}

std::vector<LayerStats> ImageFilesystem::layer_stats() const {
  std::vector<LayerStats> out;
  out.reserve(layers_.size());
  for (const MountedLayer& layer : layers_) {
    out.push_back(layer.reader != nullptr ? layer.reader->Stats() : LayerStats{});
  }
  return out;
}

}  // namespace imgfs::fs
