// imgfs — MappedFile: a whole file mapped read-only, the one owner of the mapping.
//
// For files read once from start to end and dropped (a stored layer index, decoded at mount):
// mapped, their page-cache pages are read where they are, while a copy into a fresh buffer
// first page-faults and clears that buffer, then copies every byte (a third of the time a
// mount spent on a 10 MB index before decoding it). Large files read in parts (a layer blob
// decoded by LayerReader) are mapped without reading them in, and the parts read are dropped
// from the process again (DropPages) so that its RSS does not grow with what it read.
// The file must not shrink while it is mapped (reading a page past its new end raises
// SIGBUS): use it for files that are replaced by rename only, never rewritten in place.
//
// Move-only; unmaps in its destructor. Thread-compatible; the bytes may be read, and
// DropPages called, from any thread while it lives.
#ifndef IMGFS_BASE_MAPPED_FILE_H_
#define IMGFS_BASE_MAPPED_FILE_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "base/status.h"

namespace imgfs {

class MappedFile {
 public:
  MappedFile() = default;  // empty: no bytes
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept;
  ~MappedFile() { Unmap(); }

  // Maps the regular file at `path` whole, its pages read in now. NotFound when it is absent,
  // Io on other failures (not a regular file included). An empty file maps to no bytes.
  static Result<MappedFile> Open(const std::string& path);

  // Maps the first `size` bytes of the open regular file `fd` (it may be closed afterwards)
  // without reading them in: pages are faulted in as they are read. Io on failure.
  static Result<MappedFile> MapLazily(int fd, size_t size);

  // Unmaps the pages that hold [offset, offset + length) from this process (the kernel may
  // unmap a large folio around them whole): they leave its RSS (and stay in the page cache)
  // and are faulted in again when read. The bytes do not change.
  void DropPages(size_t offset, size_t length) const;

  std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

 private:
  void Unmap();

  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace imgfs

#endif  // IMGFS_BASE_MAPPED_FILE_H_
