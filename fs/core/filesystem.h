// imgfs — ImageFilesystem: the read-only filesystem core of a mounted image.
//
// Owns what a mount serves: the merged NodeTable (metadata, inode numbers) and one
// LayerReader per layer (file data from the layer blobs in the store). The FUSE adapter
// (fs/fuse_ops.cc) is a thin shell that turns these calls into replies; everything here is
// plain C++ that tests drive without a kernel.
//
// Errors: NotFound only for names absent from the merged tree; a file whose data cannot be
// read (blob missing or corrupt) is kCorrupt/kIo — EIO at the FUSE boundary, never ENOENT.
//
// Thread-safety: immutable after construction apart from the LayerReaders' internal caches,
// which are internally synchronised; every method may be called from any number of threads.
#ifndef IMGFS_FS_CORE_FILESYSTEM_H_
#define IMGFS_FS_CORE_FILESYSTEM_H_

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_slices.h"
#include "base/status.h"
#include "fs/layer/file_data_source.h"
#include "fs/layer/layer_index.h"
#include "fs/tree/node_table.h"

namespace imgfs::fs {

// One layer of a mounted image: its index and where its file data comes from.
struct MountedLayer {
  std::shared_ptr<const LayerIndex> index;
  std::unique_ptr<FileDataSource> reader;
};

class ImageFilesystem {
 public:
  // `layers` bottom first, in the positions MergeLayers numbered them (Node::layer).
  ImageFilesystem(NodeTable table, std::vector<MountedLayer> layers);
  ImageFilesystem(const ImageFilesystem&) = delete;
  ImageFilesystem& operator=(const ImageFilesystem&) = delete;

  const NodeTable& table() const { return table_; }
  // False when no file of the image has an extended attribute: the FUSE adapter then tells
  // the kernel the filesystem has no xattr support, which spares a round trip per
  // getxattr(2) (ls -l asks three per file, exec asks for security.capability).
  bool has_xattrs() const { return has_xattrs_; }
  size_t layer_count() const { return layers_.size(); }

  // stat(2) attributes of the name `name` in directory `parent`.
  Result<struct stat> Lookup(uint64_t parent, std::string_view name) const;
  Result<struct stat> GetAttr(uint64_t ino) const;
  // Up to `length` bytes of regular file `ino` from `offset` ("" at or past the end).
  // InvalidArgument for non-regular files.
  Result<std::string> Read(uint64_t ino, uint64_t offset, size_t length) const;
  // The same bytes in place in the layer reader's buffers (a FUSE reply writes them from
  // there, without gathering them into one string).
  Result<ByteSlices> ReadSlices(uint64_t ino, uint64_t offset, size_t length) const;
  Result<std::string_view> ReadLink(uint64_t ino) const;
  // Xattrs of `ino`, without trusted.overlay.* (kernel overlayfs' own: never served).
  Result<std::vector<std::string_view>> ListXattr(uint64_t ino) const;
  Result<std::string_view> GetXattr(uint64_t ino, std::string_view name) const;
  // statvfs for the mount: block size 4096, blocks = apparent size of all files, no free
  // space, files = inode count, name max 255, read-only.
  struct statvfs StatFs() const;

  // Counters for `imgfs stats` and tests.
  uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }
  uint64_t read_errors() const { return read_errors_.load(std::memory_order_relaxed); }
  // One entry per layer, bottom first.
  std::vector<LayerStats> layer_stats() const;

 private:
  NodeTable table_;
  std::vector<MountedLayer> layers_;
  uint64_t total_bytes_ = 0;
  bool has_xattrs_ = false;
  mutable std::atomic<uint64_t> bytes_read_{0};
  mutable std::atomic<uint64_t> read_errors_{0};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_CORE_FILESYSTEM_H_
