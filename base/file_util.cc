// imgfs — small file helpers.
#include "base/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "base/random.h"

namespace imgfs {
namespace {

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// A random suffix from getrandom(2): unlike a PRNG seeded once, it differs in processes
// forked from one parent, so two of them writing the same path never share a temp name.
std::string TempSuffix() { return ".tmp-" + RandomHex(8); }

}  // namespace

Result<std::string> ReadFile(const std::string& path) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_CLOEXEC));
  // Read in place, sized by fstat (one byte more, for the read that sees the end): growing by
  // appends copied a many-MB file several times over, each time into fresh pages.
  struct stat st {};
  size_t size = 64 * 1024;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    size = static_cast<size_t>(st.st_size) + 1;
  }
  std::string data(size, '\0');
  size_t used = 0;
  for (;;) {
    if (used == data.size()) data.resize(data.size() * 2);  // grew since the fstat
    ssize_t n = ::read(fd.get(), data.data() + used, data.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + path);
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  data.resize(used);
  return data;
}

Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  return UniqueFd(fd);
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Result<std::string> PreadAll(int fd, uint64_t offset, size_t length) {
  std::string out(length, '\0');
  IMGFS_ASSIGN_OR_RETURN(const size_t done, PreadInto(fd, offset, out.data(), length));
  out.resize(done);
  return out;
}

Result<size_t> PreadInto(int fd, uint64_t offset, char* out, size_t length) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pread");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status SyncParentDir(const std::string& path) {
  int fd = ::open(Dirname(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open directory of " + path);
  UniqueFd dir(fd);
  if (::fsync(dir.get()) != 0) return Status::FromErrno(errno, "fsync directory of " + path);
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode,
                       Durability durability) {
  const bool sync = durability == Durability::kSynced;
  std::string tmp = path + TempSuffix();
  {
    IMGFS_ASSIGN_OR_RETURN(UniqueFd fd,
                           OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    Status st = WriteAll(fd.get(), data);
    if (st.ok() && sync && ::fsync(fd.get()) != 0) st = Status::FromErrno(errno, "fsync " + tmp);
    if (st.ok() && fd.Close() != 0) st = Status::FromErrno(errno, "close " + tmp);
    if (!st.ok()) {
      ::unlink(tmp.c_str());
      return st.WithContext("writing " + path);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = Status::FromErrno(errno, "rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return st;
  }
  return sync ? SyncParentDir(path) : Status::Ok();
}

Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return Status::InvalidArgument("mkdir: empty path");
  // Each prefix ending before a '/' (and the whole path), shortest first.
  size_t pos = path.find_first_not_of('/');
  while (pos != std::string::npos) {
    size_t end = path.find('/', pos);
    std::string prefix = path.substr(0, end);
    if (::mkdir(prefix.c_str(), mode) != 0) {
      int err = errno;
      struct stat st {};
      if (err != EEXIST || ::stat(prefix.c_str(), &st) != 0) {
        return Status::FromErrno(err, "mkdir " + prefix);
      }
      if (!S_ISDIR(st.st_mode)) return Status::FromErrno(ENOTDIR, "mkdir " + prefix);
    }
    pos = end == std::string::npos ? end : path.find_first_not_of('/', end);
  }
  return Status::Ok();
}

Status RemoveTree(const std::string& path) {
  std::string clean = path;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  size_t slash = clean.rfind('/');
  std::string parent = Dirname(clean);
  std::string name = slash == std::string::npos ? clean : clean.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return Status::InvalidArgument("refusing to remove " + path);
  }
  UniqueFd dir(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir.IsValid()) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, "remove " + path);
  }
  return RemoveTreeAt(dir.get(), name).WithContext("remove " + path);
}

Status RemoveTreeAt(int dir_fd, const std::string& name) {
  struct stat top {};
  if (::fstatat(dir_fd, name.c_str(), &top, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, "stat " + name);
  }
  if (!S_ISDIR(top.st_mode)) {
    if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "unlink " + name);
    }
    return Status::Ok();
  }
  // Depth-first without recursion: `cur` is the directory being emptied, `names` the path of
  // names from dir_fd down to it and `ids` the (dev, ino) of each directory on that path.
  UniqueFd cur(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!cur.IsValid()) {
    if (errno == ENOENT) return Status::Ok();
    if (errno == ENOTDIR || errno == ELOOP) {  // swapped for a non-directory since the stat
      if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
        return Status::FromErrno(errno, "unlink " + name);
      }
      return Status::Ok();
    }
    return Status::FromErrno(errno, "open " + name);
  }
  std::vector<std::string> names{name};
  std::vector<std::pair<dev_t, ino_t>> ids;
  struct stat st {};
  if (::fstat(cur.get(), &st) != 0) return Status::FromErrno(errno, "stat " + name);
  ids.emplace_back(st.st_dev, st.st_ino);
  for (;;) {
    // Unlink the non-directories of `cur`; stop at its first subdirectory.
    std::string subdir;
    {
      int fd = ::openat(cur.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) return Status::FromErrno(errno, "open " + names.back());
      std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(fd), &::closedir);
      if (!d) {
        ::close(fd);
        return Status::FromErrno(errno, "opendir " + names.back());
      }
      errno = 0;
      while (struct dirent* e = ::readdir(d.get())) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        struct stat cst {};
        if (::fstatat(cur.get(), e->d_name, &cst, AT_SYMLINK_NOFOLLOW) != 0) {
          if (errno == ENOENT) continue;
          return Status::FromErrno(errno, std::string("stat ") + e->d_name);
        }
        if (S_ISDIR(cst.st_mode)) {
          subdir = e->d_name;
          break;
        }
        if (::unlinkat(cur.get(), e->d_name, 0) != 0 && errno != ENOENT) {
          return Status::FromErrno(errno, std::string("unlink ") + e->d_name);
        }
        errno = 0;
      }
      if (subdir.empty() && errno != 0) return Status::FromErrno(errno, "readdir");
    }
    if (!subdir.empty()) {
      UniqueFd next(
          ::openat(cur.get(), subdir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next.IsValid()) {
        if (errno == ENOENT) continue;
        // Swapped for a non-directory since the stat: remove it as such.
        if (errno == ENOTDIR || errno == ELOOP) {
          if (::unlinkat(cur.get(), subdir.c_str(), 0) != 0 && errno != ENOENT) {
            return Status::FromErrno(errno, "unlink " + subdir);
          }
          continue;
        }
        return Status::FromErrno(errno, "open " + subdir);
      }
      if (::fstat(next.get(), &st) != 0) return Status::FromErrno(errno, "stat " + subdir);
      names.push_back(subdir);
      ids.emplace_back(st.st_dev, st.st_ino);
      cur = std::move(next);
      continue;
    }
    // `cur` is empty: climb to its parent and remove it there.
    if (names.size() == 1) {
      cur.Close();
      if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return Status::FromErrno(errno, "rmdir " + name);
      }
      return Status::Ok();
    }
    UniqueFd up(::openat(cur.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!up.IsValid()) return Status::FromErrno(errno, "open .. of " + names.back());
    if (::fstat(up.get(), &st) != 0) return Status::FromErrno(errno, "stat ..");
    if (std::make_pair(st.st_dev, st.st_ino) != ids[ids.size() - 2]) {
      // Someone moved the directory while it was being emptied: stop rather than remove
      // entries of a directory this walk did not come from.
      return Status::Unavailable("directory " + names.back() + " moved during removal");
    }
    if (::unlinkat(up.get(), names.back().c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "rmdir " + names.back());
    }
    names.pop_back();
    ids.pop_back();
    cur = std::move(up);
  }
}

}  // namespace imgfs
