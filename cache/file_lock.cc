// imgfs — FileLock: flock(2) locks held by RAII objects.
#include "cache/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "base/file_util.h"

namespace imgfs::cache {
namespace {

int FlockOp(FileLock::Mode mode) { return mode == FileLock::Mode::kShared ? LOCK_SH : LOCK_EX; }

const char* ModeName(FileLock::Mode mode) {
  return mode == FileLock::Mode::kShared ? "shared" : "exclusive";
}

}  // namespace

Result<FileLock> FileLock::Acquire(const std::string& path, Mode mode) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  while (::flock(fd.get(), FlockOp(mode)) != 0) {
    if (errno == EINTR) continue;
    return Status::FromErrno(errno, std::string("flock (") + ModeName(mode) + ") " + path);
  }
  return FileLock(std::move(fd));
}

Result<std::optional<FileLock>> FileLock::TryAcquire(const std::string& path, Mode mode) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  while (::flock(fd.get(), FlockOp(mode) | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return std::optional<FileLock>();
    return Status::FromErrno(errno, std::string("flock (") + ModeName(mode) + ") " + path);
  }
  return std::optional<FileLock>(FileLock(std::move(fd)));
}

}  // namespace imgfs::cache
