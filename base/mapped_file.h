// imgfs — MappedFile: a whole file mapped read-only, the one owner of the mapping.
//
// For files read once from start to end and dropped (a stored layer index, decoded at mount):
// mapped, their page-cache pages are read where they are, while a copy into a fresh buffer
// first page-faults and clears that buffer, then copies every byte (a third of the time a
// mount spent on a 10 MB index before decoding it). The file must not shrink while it is
// mapped (reading a page past its new end raises SIGBUS): use it for files that are replaced
// by rename only, never rewritten in place.
//
// Move-only; unmaps in its destructor. Thread-compatible; the bytes may be read from any
// thread while it lives.
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

  std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

 private:
  void Unmap();

  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace imgfs

#endif  // IMGFS_BASE_MAPPED_FILE_H_
