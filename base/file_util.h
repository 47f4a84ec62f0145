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

// mkdir -p. Every directory it creates (intermediate ones too) is created with `mode`, less
// the umask as with mkdir(2), so it never gets more than `mode`. Directories that already
// exist are left as they are (mode and owner untouched): a caller that needs an existing
// directory private tightens it itself (Store::Open does). OK if the directory exists;
// an existing non-directory on the way is an error.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

// Opens `path` with open(2) flags; the error names the path.
Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0644);

// Writes all of `data` to `fd`, retrying on EINTR and short writes.
Status WriteAll(int fd, std::string_view data);

// Reads exactly `length` bytes at `offset` (fewer only at end of file) with pread(2).
Result<std::string> PreadAll(int fd, uint64_t offset, size_t length);
// The same into `out` (`length` bytes of room); the number of bytes read.
Result<size_t> PreadInto(int fd, uint64_t offset, char* out, size_t length);

// fsyncs the directory containing `path` so a rename into it is durable.
Status SyncParentDir(const std::string& path);

// rm -rf; OK if `path` does not exist. Does not follow symlinks: the directories above the
// last component are resolved once, everything below is removed through RemoveTreeAt.
Status RemoveTree(const std::string& path);

// rm -rf of the entry `name` of the directory `dir_fd`, through directory descriptors opened
// with O_NOFOLLOW: a directory swapped for a symlink while it runs is unlinked as the link,
// never followed, so nothing outside the tree is removed. Holds a constant number of
// descriptors whatever the depth (it climbs back with "..", checked against the inode it
// came from). OK if `name` does not exist.
Status RemoveTreeAt(int dir_fd, const std::string& name);

}  // namespace imgfs

#endif  // IMGFS_BASE_FILE_UTIL_H_
