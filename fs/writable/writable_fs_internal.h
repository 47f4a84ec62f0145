// imgfs — WritableFs internals shared by its source files: writable_fs.cc (set-up, nodes and
// paths), copy_up.cc, names.cc (name operations), files.cc (file handles, directories, xattrs).
// Only fs/writable/*.cc include it.
#ifndef IMGFS_FS_WRITABLE_WRITABLE_FS_INTERNAL_H_
#define IMGFS_FS_WRITABLE_WRITABLE_FS_INTERNAL_H_

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <utility>

#include "base/file_util.h"
#include "base/log.h"
#include "fs/upper/upper_dir.h"
#include "fs/writable/writable_fs.h"

namespace imgfs::fs {
namespace writable_internal {

// Copy-up reads the lower file in pieces of this size (a few hundred reads for a large file;
// the lower reader decodes at least a chunk per call anyway).
constexpr size_t kCopyChunkBytes = 1 << 20;

inline std::string Join(const std::string& dir, std::string_view name) {
  if (dir == ".") return std::string(name);
  std::string out = dir;
  out += '/';
  out.append(name);
  return out;
}

inline std::string ParentOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

inline int Errno(int fallback = EIO) { return errno != 0 ? errno : fallback; }

// The work directory's whiteout that every whiteout of the upper is a link of.
inline constexpr char kSharedWhiteout[] = "whiteout";

// Ids to invalidate in the kernel, collected by the operations of this thread.
inline thread_local std::vector<uint64_t> pending_invalidations;

// Ownership and mode of a just created entry `nm` in `dir_fd` (the mode is set exactly: the
// kernel already applied the caller's umask). A setgid parent passes on its group (and, to
// directories, the setgid bit), as POSIX filesystems do.
int SetNewOwner(int dir_fd, const char* nm, int parent_fd, const std::string& parent_path,
                const Caller& caller, mode_t type, mode_t* mode);

}  // namespace writable_internal

struct WritableFs::State {
  bool upper = false;   // an entry (not a whiteout) exists in the upper
  mode_t type = 0;      // S_IFMT bits
  uint32_t lower = 0;   // !upper: the lower inode; directories: the lower dir merged in
  uint32_t origin = 0;  // the lower inode this entry came from (st_ino), 0 if none
};

struct WritableFs::Node {
  uint64_t id = 0;
  Node* parent = nullptr;  // nullptr for the root and for detached (deleted) nodes
  std::string name;
  uint64_t lookups = 0;
  State state;
  bool deleted = false;
  UniqueFd orphan;  // deleted upper file: an O_PATH descriptor, for getattr of open files
  bool orphan_in_work = false;  // its data is the work directory's OrphanName(id)
  struct stat last {};
  std::map<std::string, Node*, std::less<>> children;
};

struct WritableFs::Handle {
  uint64_t id = 0;
  uint32_t lower = 0;
  bool writable = false;
  Mutex mu;
  UniqueFd fd IMGFS_GUARDED_BY(mu);
  uint64_t copy_ups_seen IMGFS_GUARDED_BY(mu) = 0;  // WritableFs::copy_ups_ when last checked
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_WRITABLE_WRITABLE_FS_INTERNAL_H_
