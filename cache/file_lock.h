// imgfs — FileLock: an advisory flock(2) lock on a file, held for the lifetime of the object.
//
// Several imgfs processes share one store without a daemon; they coordinate with flock(2)
// locks on small files beside the data (ROOT/index.lock, ROOT/gc.lock). A lock belongs to the
// open file description, so two FileLock objects on the same path conflict even inside one
// process (and between threads): never try to take a lock the calling thread already holds
// in a conflicting mode — that deadlocks.
//
// Thread-safety: a FileLock object is used by one thread at a time; distinct objects may be
// used from any threads.
#ifndef IMGFS_CACHE_FILE_LOCK_H_
#define IMGFS_CACHE_FILE_LOCK_H_

#include <optional>
#include <string>

#include "base/status.h"
#include "base/unique_fd.h"

namespace imgfs::cache {

class FileLock {
 public:
  enum class Mode { kShared, kExclusive };

  FileLock() = default;  // holds nothing
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  ~FileLock() = default;  // closing the descriptor releases the lock

  // Opens (creating it, mode 0644) `path` and blocks until the lock is granted. EINTR is
  // retried. Io error naming the path on failure.
  static Result<FileLock> Acquire(const std::string& path, Mode mode);
  // Like Acquire, but never blocks: std::nullopt when another holder conflicts.
  static Result<std::optional<FileLock>> TryAcquire(const std::string& path, Mode mode);

  bool held() const { return fd_.IsValid(); }
  // Releases the lock now (idempotent).
  void Unlock() { fd_.Close(); }

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_FILE_LOCK_H_
