// imgfs — the upper directory: its conventions and no-follow access beneath its root.
#include "fs/upper/upper_dir.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <string>

#include <linux/openat2.h>

namespace imgfs::fs {
namespace {

// openat2 answers EAGAIN when a rename raced its RESOLVE_BENEATH checks; a few retries are
// plenty (the kernel's own selftests retry the same way), after that the error stands.
constexpr int kOpenat2Retries = 8;

// Cleared once openat2 is found missing (ENOSYS: kernels before 5.6, some seccomp filters).
std::atomic<bool> openat2_usable{true};

constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

// A relative path made of plain names: not empty, not absolute, no "." or ".." or empty
// components ("." alone means the root).
bool ValidRel(std::string_view rel) {
  if (rel == ".") return true;
  if (rel.empty() || rel.front() == '/') return false;
  size_t start = 0;
  while (start <= rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    std::string_view c = rel.substr(start, end - start);
    if (c.empty() || c == "." || c == "..") return false;
    start = end + 1;
  }
  return true;
}

int Openat2(int dir, const std::string& path, uint64_t flags, uint64_t mode) {
  struct open_how how {};
  how.flags = flags;
  how.mode = mode;
  how.resolve = kResolve;
  for (int i = 0; i < kOpenat2Retries; ++i) {
    int64_t fd = syscall(SYS_openat2, dir, path.c_str(), &how, sizeof(how));
    if (fd >= 0) return static_cast<int>(fd);
    if (errno != EAGAIN && errno != EINTR) return -1;
  }
  return -1;
}

// Walks `rel` (valid, not ".") one component at a time with O_PATH|O_NOFOLLOW|O_DIRECTORY:
// a symlink component is ENOTDIR/ELOOP. Returns an O_PATH fd of the directory.
int WalkDirs(int root_fd, std::string_view rel) {
  UniqueFd cur(fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (!cur.IsValid()) return -1;
  size_t start = 0;
  while (start < rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    std::string name(rel.substr(start, end - start));
    UniqueFd next(openat(cur.get(), name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.IsValid()) return -1;
    cur = std::move(next);
    start = end + 1;
  }
  return cur.Release();
}

// An O_PATH|O_NOFOLLOW descriptor of `rel` itself (a symlink stays a symlink).
int OpenPath(int root_fd, std::string_view rel) { return OpenBeneath(root_fd, rel, O_PATH); }

std::string ProcName(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

int Errno() { return errno != 0 ? errno : EIO; }

}  // namespace

void DisableOpenat2ForTesting() { openat2_usable.store(false); }

bool IsOverlayXattr(std::string_view name) {
  return name.starts_with(kOverlayXattrPrefix) || name.starts_with(kUserOverlayXattrPrefix);
}

bool IsOpaqueXattr(std::string_view name) {
  return name == kOpaqueXattr || name == kUserOpaqueXattr;
}

bool IsRedirectOrMetacopyXattr(std::string_view name) {
  return name == kRedirectXattr || name == kMetacopyXattr || name == kUserRedirectXattr ||
         name == kUserMetacopyXattr;
}

bool IsWhiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

int OpenBeneath(int root_fd, std::string_view rel, int flags, mode_t mode) {
  if (!ValidRel(rel)) {
    errno = EINVAL;
    return -1;
  }
  flags |= O_NOFOLLOW | O_CLOEXEC;
  if (openat2_usable.load(std::memory_order_relaxed)) {
    const bool with_mode = (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
    int fd = Openat2(root_fd, std::string(rel), static_cast<uint64_t>(flags), with_mode ? mode : 0);
    if (fd >= 0 || (errno != ENOSYS && errno != EINVAL)) return fd;
    // ENOSYS: no openat2 here. EINVAL: flags openat2 refuses but open(2) ignores (FUSE
    // passes the kernel's f_flags through); the walk below is as safe, only slower.
    if (errno == ENOSYS) openat2_usable.store(false);
  }
  UniqueFd parent;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &parent, &leaf) != 0) return -1;
  return openat(parent.get(), leaf.c_str(), flags, mode);
}

int ResolveParent(int root_fd, std::string_view rel, UniqueFd* parent, std::string* leaf) {
  if (!ValidRel(rel)) {
    errno = EINVAL;
    return -1;
  }
  size_t slash = rel.rfind('/');
  std::string_view dir = slash == std::string_view::npos ? "." : rel.substr(0, slash);
  *leaf = slash == std::string_view::npos ? std::string(rel) : std::string(rel.substr(slash + 1));
  int fd = -1;
  if (dir == ".") {
    fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
  } else if (openat2_usable.load(std::memory_order_relaxed)) {
    fd = Openat2(root_fd, std::string(dir), O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0 && errno == ENOSYS) {
      openat2_usable.store(false);
      fd = WalkDirs(root_fd, dir);
    }
  } else {
    fd = WalkDirs(root_fd, dir);
  }
  if (fd < 0) return -1;
  *parent = UniqueFd(fd);
  return 0;
}

int StatBeneath(int root_fd, std::string_view rel, struct stat* out) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return fstatat(dir.get(), leaf.c_str(), out, AT_SYMLINK_NOFOLLOW);
}

int MkdirBeneath(int root_fd, std::string_view rel, mode_t mode) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return mkdirat(dir.get(), leaf.c_str(), mode);
}

int MknodBeneath(int root_fd, std::string_view rel, mode_t mode, dev_t dev) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return mknodat(dir.get(), leaf.c_str(), mode, dev);
}

int SymlinkBeneath(std::string_view target, int root_fd, std::string_view rel) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return symlinkat(std::string(target).c_str(), dir.get(), leaf.c_str());
}

int UnlinkBeneath(int root_fd, std::string_view rel, int flags) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return unlinkat(dir.get(), leaf.c_str(), flags);
}

int RenameBeneath(int old_root, std::string_view old_rel, int new_root, std::string_view new_rel,
                  unsigned flags) {
  UniqueFd a, b;
  std::string la, lb;
  if (ResolveParent(old_root, old_rel, &a, &la) != 0) return -1;
  if (ResolveParent(new_root, new_rel, &b, &lb) != 0) return -1;
  return renameat2(a.get(), la.c_str(), b.get(), lb.c_str(), flags);
}

int LinkBeneath(int old_root, std::string_view old_rel, int new_root, std::string_view new_rel) {
  UniqueFd a, b;
  std::string la, lb;
  if (ResolveParent(old_root, old_rel, &a, &la) != 0) return -1;
  if (ResolveParent(new_root, new_rel, &b, &lb) != 0) return -1;
  return linkat(a.get(), la.c_str(), b.get(), lb.c_str(), 0);
}

int ChownBeneath(int root_fd, std::string_view rel, uid_t uid, gid_t gid) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return fchownat(dir.get(), leaf.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
}

int UtimensBeneath(int root_fd, std::string_view rel, const struct timespec times[2]) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return utimensat(dir.get(), leaf.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

ssize_t ReadlinkBeneath(int root_fd, std::string_view rel, char* buf, size_t size) {
  UniqueFd dir;
  std::string leaf;
  if (ResolveParent(root_fd, rel, &dir, &leaf) != 0) return -1;
  return readlinkat(dir.get(), leaf.c_str(), buf, size);
}

int ChmodBeneath(int root_fd, std::string_view rel, mode_t mode) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return -1;
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return -1;
  if (S_ISLNK(st.st_mode)) {
    errno = EOPNOTSUPP;
    return -1;
  }
  // fchmod refuses O_PATH descriptors; the /proc name reaches the same (non-link) inode.
  return chmod(ProcName(fd.get()).c_str(), mode);
}

int DropSuidSgidFd(int fd, bool* dropped) {
  if (dropped != nullptr) *dropped = false;
  struct stat st {};
  if (fstat(fd, &st) != 0) return -1;
  if (!S_ISREG(st.st_mode)) return 0;
  const mode_t mode = st.st_mode & 07777;
  mode_t kept = mode & ~S_ISUID;
  if ((kept & S_IXGRP) != 0) kept &= ~S_ISGID;
  if (kept == mode) return 0;
  // fchmod refuses O_PATH descriptors; the /proc name reaches the same (regular) inode.
  if (chmod(ProcName(fd).c_str(), kept) != 0) return -1;
  if (dropped != nullptr) *dropped = true;
  return 0;
}

int DropSuidSgidBeneath(int root_fd, std::string_view rel) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return -1;
  return DropSuidSgidFd(fd.get());
}

int TruncateBeneath(int root_fd, std::string_view rel, off_t size) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return -1;
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return -1;
  if (!S_ISREG(st.st_mode)) {
    // Never open a device or FIFO for writing as root just to truncate it.
    errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    return -1;
  }
  UniqueFd w(open(ProcName(fd.get()).c_str(), O_WRONLY | O_CLOEXEC));
  if (!w.IsValid()) return -1;
  return ftruncate(w.get(), size);
}

int ListXattrsFd(int fd, std::vector<std::string>* names) {
  names->clear();
  const std::string path = ProcName(fd);
  std::string buf;
  for (int attempt = 0; attempt < 3; ++attempt) {
    ssize_t n = listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return errno == ENOTSUP ? 0 : Errno();
    if (n == 0) return 0;
    buf.assign(static_cast<size_t>(n), '\0');
    n = listxattr(path.c_str(), buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      size_t start = 0;
      while (start < buf.size()) {
        size_t end = buf.find('\0', start);
        if (end == std::string::npos) end = buf.size();
        if (end > start) names->emplace_back(buf.substr(start, end - start));
        start = end + 1;
      }
      return 0;
    }
    if (errno != ERANGE) return Errno();  // ERANGE: the list grew in between; ask again
  }
  return ERANGE;
}

int GetXattrFd(int fd, const std::string& name, std::string* value) {
  const std::string path = ProcName(fd);
  for (int attempt = 0; attempt < 3; ++attempt) {
    ssize_t n = getxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (n < 0) return Errno();
    value->assign(static_cast<size_t>(n), '\0');
    if (n == 0) return 0;
    n = getxattr(path.c_str(), name.c_str(), value->data(), value->size());
    if (n >= 0) {
      value->resize(static_cast<size_t>(n));
      return 0;
    }
    if (errno != ERANGE) return Errno();
  }
  return ERANGE;
}

int SetXattrFd(int fd, const std::string& name, std::string_view value, int flags) {
  return setxattr(ProcName(fd).c_str(), name.c_str(), value.data(), value.size(), flags) == 0
             ? 0
             : Errno();
}

int RemoveXattrFd(int fd, const std::string& name) {
  return removexattr(ProcName(fd).c_str(), name.c_str()) == 0 ? 0 : Errno();
}

int ListXattrsBeneath(int root_fd, std::string_view rel, std::vector<std::string>* names) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return Errno();
  return ListXattrsFd(fd.get(), names);
}

int GetXattrBeneath(int root_fd, std::string_view rel, const std::string& name,
                    std::string* value) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return Errno();
  return GetXattrFd(fd.get(), name, value);
}

int SetXattrBeneath(int root_fd, std::string_view rel, const std::string& name,
                    std::string_view value, int flags) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return Errno();
  return SetXattrFd(fd.get(), name, value, flags);
}

int RemoveXattrBeneath(int root_fd, std::string_view rel, const std::string& name) {
  UniqueFd fd(OpenPath(root_fd, rel));
  if (!fd.IsValid()) return Errno();
  return RemoveXattrFd(fd.get(), name);
}

bool IsOpaqueBeneath(int root_fd, std::string_view rel) {
  for (std::string_view name : {kOpaqueXattr, kUserOpaqueXattr}) {
    std::string v;
    if (GetXattrBeneath(root_fd, rel, std::string(name), &v) == 0 && v == "y") return true;
  }
  return false;
}

int SetOpaqueBeneath(int root_fd, std::string_view rel) {
  int r = SetXattrBeneath(root_fd, rel, std::string(kOpaqueXattr), "y", 0);
  // trusted.* needs CAP_SYS_ADMIN; an unprivileged upper takes the userxattr name.
  if (r == EPERM) r = SetXattrBeneath(root_fd, rel, std::string(kUserOpaqueXattr), "y", 0);
  return r;
}

}  // namespace imgfs::fs
