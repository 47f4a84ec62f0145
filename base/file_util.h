// imgfs — small file helpers every module needs: read a whole file, write one atomically,
// create directories.
//
// WriteFileAtomic writes to a temporary file in the same directory, fsyncs it, renames it
// over the target and fsyncs the directory: a crash leaves the old file or the new one,
// never a mix. With Durability::kUnsynced it skips both fsyncs: readers still never see a
// partly written file, but after a crash (power loss, not a process crash) the file may be
// missing or truncated — only for files whose readers verify them (the chunk store).
// Thread-safety: stateless; safe from any thread.
#ifndef IMGFS_BASE_FILE_UTIL_H_
#define IMGFS_BASE_FILE_UTIL_H_

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/status.h"
#include "base/unique_fd.h"

namespace imgfs {

// Reads the whole file at `path`. NotFound if it does not exist.
Result<std::string> ReadFile(const std::string& path);

enum class Durability { kSynced, kUnsynced };

// Atomically replaces `path` with `data` (mode `mode`, before umask).
Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644,
                       Durability durability = Durability::kSynced);

// mkdir -p. OK if the directory already exists.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

// Opens `path` with open(2) flags; the error names the path.
Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0644);

// Writes all of `data` to `fd`, retrying on EINTR and short writes.
Status WriteAll(int fd, std::string_view data);

// Reads exactly `length` bytes at `offset` (fewer only at end of file) with pread(2).
Result<std::string> PreadAll(int fd, uint64_t offset, size_t length);

// fsyncs the directory containing `path` so a rename into it is durable.
Status SyncParentDir(const std::string& path);

// rm -rf; OK if `path` does not exist. Does not follow symlinks.
Status RemoveTree(const std::string& path);

}  // namespace imgfs

#endif  // IMGFS_BASE_FILE_UTIL_H_
