// imgfs — MappedFile.
#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace imgfs {

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Result<MappedFile> MappedFile::Open(const std::string& path) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  if (!S_ISREG(st.st_mode)) return Status::Io(path + ": not a regular file");
  MappedFile out;
  if (st.st_size == 0) return out;
  // MAP_POPULATE: the pages are mapped in one call rather than faulted in a few at a time
  // while the caller reads them.
  void* data = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ,
                      MAP_PRIVATE | MAP_POPULATE, fd.get(), 0);
  if (data == MAP_FAILED) return Status::FromErrno(errno, "mmap " + path);
  out.data_ = data;
  out.size_ = static_cast<size_t>(st.st_size);
  return out;
}

void MappedFile::Unmap() {
  if (data_ != nullptr) ::munmap(std::exchange(data_, nullptr), std::exchange(size_, 0));
}

}  // namespace imgfs
