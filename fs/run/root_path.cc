// imgfs — paths inside a container's root, resolved through directory file descriptors.
#include "fs/run/root_path.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <vector>

#include <linux/openat2.h>

namespace imgfs::fs::run {
namespace {

// Pushes the components of `path` onto `todo` so that the first is on top ("" and "."
// dropped).
void PushComponents(std::string_view path, std::vector<std::string>* todo) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t pos = path.find('/', start);
    if (pos == std::string_view::npos) pos = path.size();
    std::string_view c = path.substr(start, pos - start);
    if (!c.empty() && c != ".") parts.emplace_back(c);
    start = pos + 1;
  }
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo->push_back(std::move(*it));
}

}  // namespace

Result<UniqueFd> OpenInRoot(int root_fd, std::string_view path, Create create, mode_t mode,
                            bool* followed_symlink) {
  if (followed_symlink != nullptr) *followed_symlink = false;
  std::vector<std::string> todo;
  PushComponents(path, &todo);
  std::vector<UniqueFd> stack;     // the directories walked below the root
  std::vector<std::string> names;  // their names, for messages
  int links = 0;
  auto where = [&]() {
    std::string out;
    for (const std::string& n : names) out += "/" + n;
    return out.empty() ? std::string("/") : out;
  };
  while (!todo.empty()) {
    std::string comp = std::move(todo.back());
    todo.pop_back();
    if (comp == "..") {
      if (!stack.empty()) {
        stack.pop_back();
        names.pop_back();
      }
      continue;
    }
    const int dir = stack.empty() ? root_fd : stack.back().get();
    const bool last = todo.empty();
    UniqueFd fd(::openat(dir, comp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.IsValid() && errno == ENOENT && create != Create::kNothing) {
      int rc = 0;
      if (!last || create == Create::kDirectory) {
        rc = ::mkdirat(dir, comp.c_str(), last ? mode : 0755);
      } else {
        rc =
            ::openat(dir, comp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (rc >= 0) rc = ::close(rc);
      }
      if (rc != 0 && errno != EEXIST) {
        return Status::FromErrno(errno, "creating " + where() + "/" + comp + " in the container");
      }
      fd = UniqueFd(::openat(dir, comp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    if (!fd.IsValid()) {
      return Status::FromErrno(errno, "resolving " + std::string(path) + " in the container (at " +
                                          where() + "/" + comp + ")");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + comp);
    if (S_ISLNK(st.st_mode)) {
      if (++links > kMaxSymlinks) {
        return Status::InvalidArgument("too many levels of symbolic links in " + std::string(path));
      }
      char buf[PATH_MAX];
      ssize_t n = ::readlinkat(fd.get(), "", buf, sizeof(buf));
      if (n < 0) return Status::FromErrno(errno, "readlink " + where() + "/" + comp);
      if (static_cast<size_t>(n) >= sizeof(buf)) {
        return Status::InvalidArgument("symlink " + where() + "/" + comp + " is too long");
      }
      std::string_view target(buf, static_cast<size_t>(n));
      if (!target.empty() && target[0] == '/') {
        stack.clear();
        names.clear();
      }
      PushComponents(target, &todo);
      if (followed_symlink != nullptr) *followed_symlink = true;
      continue;
    }
    if (!last && !S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("resolving " + std::string(path) + " in the container: " +
                                     where() + "/" + comp + " is not a directory");
    }
    stack.push_back(std::move(fd));
    names.push_back(comp);
  }
  if (!stack.empty()) return std::move(stack.back());
  UniqueFd self(::openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!self.IsValid()) return Status::FromErrno(errno, "opening the container's root");
  return self;
}

Result<std::string> ReadFileInRoot(int root_fd, std::string_view path, size_t max_bytes) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  std::string p(path);
  UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, root_fd, p.c_str(), &how, sizeof(how))));
  if (!fd.IsValid()) return Status::FromErrno(errno, "opening " + p + " in the container");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + p);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(p + " is not a regular file");
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading " + p);
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return Status::InvalidArgument(p + " in the container is larger than the limit of " +
                                     std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string FdPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Status MountOnFd(const std::string& source, int target_fd, const char* type, unsigned long flags,
                 const std::string& data) {
  std::string target = FdPath(target_fd);
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) !=
      0) {
    return Status::FromErrno(errno, "mounting " + source);
  }
  return Status::Ok();
}

Status BindInRoot(int root_fd, std::string_view target, const std::string& source,
                  unsigned long flags, Create create) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd at, OpenInRoot(root_fd, target, create));
  IMGFS_RETURN_IF_ERROR(MountOnFd(source, at.get(), nullptr, MS_BIND | MS_REC)
                            .WithContext("at " + std::string(target)));
  if (flags == 0) return Status::Ok();
  IMGFS_ASSIGN_OR_RETURN(UniqueFd mounted, OpenInRoot(root_fd, target));
  return MountOnFd("none", mounted.get(), nullptr, MS_REMOUNT | MS_BIND | flags)
      .WithContext("remounting " + std::string(target));
}

}  // namespace imgfs::fs::run
