// imgfs — WritableFs: the copy-on-write view of a mounted image.
#include "fs/writable/writable_fs.h"

#include <dirent.h>
#include <fcntl.h>
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

namespace imgfs::fs {
namespace {

// Copy-up reads the lower file in pieces of this size (a few hundred reads for a large file;
// the lower reader decodes at least a chunk per call anyway).
constexpr size_t kCopyChunkBytes = 1 << 20;

std::string Join(const std::string& dir, std::string_view name) {
  if (dir == ".") return std::string(name);
  std::string out = dir;
  out += '/';
  out.append(name);
  return out;
}

std::string ParentOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

int Errno(int fallback = EIO) { return errno != 0 ? errno : fallback; }

// Ids to invalidate in the kernel, collected by the operations of this thread.
thread_local std::vector<uint64_t> pending_invalidations;

}  // namespace

std::vector<uint64_t> WritableFs::TakeInvalidations() {
  std::vector<uint64_t> out;
  out.swap(pending_invalidations);
  return out;
}

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

WritableFs::WritableFs(const ImageFilesystem* lower, std::string upper_path, std::string work_path)
    : lower_(lower),
      table_(lower->table()),
      upper_path_(std::move(upper_path)),
      work_path_(std::move(work_path)) {}

WritableFs::~WritableFs() {
  // Remove the work directory only if its name still holds the directory this filesystem
  // made (its parent may belong to the user who gave --upper).
  struct stat a {
  }, b{};
  bool ours = work_fd_.IsValid() && work_parent_fd_.IsValid() && fstat(work_fd_.get(), &a) == 0 &&
              fstatat(work_parent_fd_.get(), work_name_.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 &&
              a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  work_fd_.Close();
  if (!ours) return;
  Status st = RemoveTreeAt(work_parent_fd_.get(), work_name_);
  if (!st.ok()) IMGFS_LOG(kWarning) << "removing the work directory: " << st.ToString();
}

Status WritableFs::MakeWorkDir() {
  // The work directory's parent may be writable by someone else (the owner of a given
  // --upper's parent), who could swap names in it at any moment. So: one descriptor of the
  // parent, everything else relative to it without following links, and a directory that
  // is ours (made by us, owned by us, 0700) or nothing.
  const std::string& work = work_path_;
  size_t slash = work.rfind('/');
  std::string parent = slash == 0 ? "/" : work.substr(0, slash);
  work_name_ = work.substr(slash + 1);
  work_parent_fd_ = UniqueFd(open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!work_parent_fd_.IsValid()) return Status::FromErrno(errno, "opening " + parent);
  const int pfd = work_parent_fd_.get();
  const char* name = work_name_.c_str();
  struct stat st {};
  if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    // Leftovers of a killed daemon: only a directory of ours is emptied.
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
      return Status::InvalidArgument("the work directory " + work +
                                     " exists and is not a directory owned by uid " +
                                     std::to_string(geteuid()) + ": not touching it");
    }
    IMGFS_RETURN_IF_ERROR(RemoveTreeAt(pfd, work_name_).WithContext("emptying " + work));
  } else if (errno != ENOENT) {
    return Status::FromErrno(errno, "stat " + work);
  }
  if (mkdirat(pfd, name, 0700) != 0) return Status::FromErrno(errno, "mkdir " + work);
  work_fd_ = UniqueFd(openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!work_fd_.IsValid()) return Status::FromErrno(errno, "opening " + work);
  // Someone may have renamed ours away and put their own directory in its place between
  // mkdirat and openat: theirs is not owned by us.
  if (fstat(work_fd_.get(), &st) != 0) return Status::FromErrno(errno, "stat " + work);
  if (st.st_uid != geteuid()) {
    work_fd_.Close();
    return Status::InvalidArgument("the work directory " + work +
                                   " was replaced while it was created (owner uid " +
                                   std::to_string(st.st_uid) + ")");
  }
  // Exactly 0700 whatever the umask: copy-up temporaries (setuid files among them) wait here.
  if (fchmod(work_fd_.get(), 0700) != 0) return Status::FromErrno(errno, "chmod " + work);
  return Status::Ok();
}

std::string WritableFs::DefaultWorkDir(const std::string& upper_dir) {
  std::string upper = upper_dir;
  while (upper.size() > 1 && upper.back() == '/') upper.pop_back();
  size_t slash = upper.rfind('/');
  if (slash == std::string::npos || upper == "/") return "";
  std::string parent = slash == 0 ? "/" : upper.substr(0, slash);
  std::string base = upper.substr(slash + 1);
  struct stat a {
  }, b{};
  if (stat(parent.c_str(), &a) != 0 || stat(upper.c_str(), &b) != 0) return "";
  if (a.st_dev != b.st_dev) return "";
  return (parent == "/" ? "" : parent) + "/." + base + ".imgfs-work";
}

Result<std::unique_ptr<WritableFs>> WritableFs::Open(const ImageFilesystem* lower,
                                                     const std::string& upper_dir,
                                                     const std::string& work_dir) {
  char buf[PATH_MAX];
  if (realpath(upper_dir.c_str(), buf) == nullptr) {
    return Status::InvalidArgument("upper directory " + upper_dir + ": " + strerror(errno));
  }
  std::string upper = buf;
  // The work directory's absolute path: its parent resolved, its own name never (a link
  // there is refused by MakeWorkDir, not followed). The parent must exist.
  std::string work = work_dir;
  while (work.size() > 1 && work.back() == '/') work.pop_back();
  {
    size_t slash = work.rfind('/');
    std::string parent = slash == std::string::npos ? "." : work.substr(0, slash);
    if (parent.empty()) parent = "/";
    std::string name = slash == std::string::npos ? work : work.substr(slash + 1);
    if (name.empty() || name == "." || name == "..") {
      return Status::InvalidArgument("work directory " + work_dir + ": not a directory name");
    }
    if (realpath(parent.c_str(), buf) == nullptr) {
      return Status::InvalidArgument("work directory " + work_dir + ": " + strerror(errno));
    }
    std::string real_parent = buf;
    work = (real_parent == "/" ? "" : real_parent) + "/" + name;
  }
  if (work == upper || work.rfind(upper + "/", 0) == 0 || upper.rfind(work + "/", 0) == 0) {
    return Status::InvalidArgument("the work directory " + work +
                                   " must not be inside the upper directory " + upper +
                                   " (nor contain it)");
  }
  std::unique_ptr<WritableFs> fs(new WritableFs(lower, upper, work));
  fs->upper_fd_ = UniqueFd(open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fs->upper_fd_.IsValid()) return Status::FromErrno(errno, "opening " + upper);
  IMGFS_RETURN_IF_ERROR(fs->MakeWorkDir());
  struct stat ust {
  }, wst{};
  if (fstat(fs->upper_fd_.get(), &ust) != 0 || fstat(fs->work_fd_.get(), &wst) != 0) {
    return Status::FromErrno(errno, "stat " + upper);
  }
  if (ust.st_dev != wst.st_dev) {
    return Status::InvalidArgument("the work directory " + work +
                                   " is not on the filesystem of the upper directory " + upper);
  }
  if (MknodBeneath(fs->work_fd_.get(), "whiteout-probe", S_IFCHR, makedev(0, 0)) != 0) {
    return Status::InvalidArgument(
        "cannot create whiteouts (character device 0/0) in " + work + ": " + strerror(errno) +
        " (a writable mount needs CAP_MKNOD, i.e. root or a user namespace)");
  }
  UnlinkBeneath(fs->work_fd_.get(), "whiteout-probe", 0);

  const NodeTable& table = lower->table();
  MutexLock lock(&fs->mu_);
  fs->next_st_ino_ = table.inode_count() + 1;
  // A fresh upper: give it the image root's metadata (the merged root is the upper root).
  DIR* d = fdopendir(dup(fs->upper_fd_.get()));
  bool empty = true;
  if (d != nullptr) {
    while (dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
        empty = false;
        break;
      }
    }
    closedir(d);
  }
  if (empty && table.Get(NodeTable::kRootIno) != nullptr) {
    Result<struct stat> root = table.GetAttr(NodeTable::kRootIno);
    if (root.has_value()) {
      if (fchown(fs->upper_fd_.get(), root->st_uid, root->st_gid) != 0 && geteuid() == 0) {
        return Status::FromErrno(errno, "chown " + upper);
      }
      if (fchmod(fs->upper_fd_.get(), root->st_mode & 07777) != 0) {
        return Status::FromErrno(errno, "chmod " + upper);
      }
      Result<std::vector<std::string_view>> names = table.ListXattr(NodeTable::kRootIno);
      if (names.has_value()) {
        for (std::string_view n : *names) {
          Result<std::string_view> v = table.GetXattr(NodeTable::kRootIno, n);
          if (v.has_value() && !IsOverlayXattr(n)) {
            std::string name(n);
            fsetxattr(fs->upper_fd_.get(), name.c_str(), v->data(), v->size(), 0);
          }
        }
      }
      struct timespec times[2] = {root->st_mtim, root->st_mtim};
      futimens(fs->upper_fd_.get(), times);
    }
  }
  auto root = std::make_unique<Node>();
  root->id = 1;
  root->lookups = 1;
  root->state.upper = true;
  root->state.type = S_IFDIR;
  root->state.origin = static_cast<uint32_t>(NodeTable::kRootIno);
  bool is_opaque = IsOpaqueBeneath(fs->upper_fd_.get(), ".");
  root->state.lower =
      !is_opaque && table.Get(NodeTable::kRootIno) != nullptr ? NodeTable::kRootIno : 0;
  fs->nodes_.emplace(1, std::move(root));
  return fs;
}

// ---- nodes and paths -------------------------------------------------------------------

WritableFs::Node* WritableFs::GetNode(uint64_t id) const {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : it->second.get();
}

std::string WritableFs::PathOf(const Node* node) const {
  if (node->id == 1) return ".";
  std::vector<const std::string*> names;
  for (const Node* n = node; n != nullptr && n->id != 1; n = n->parent) names.push_back(&n->name);
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (!path.empty()) path += '/';
    path += **it;
  }
  return path;
}

WritableFs::Node* WritableFs::FindNode(const std::string& path) const {
  Node* node = GetNode(1);
  if (path == ".") return node;
  size_t start = 0;
  while (node != nullptr && start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view part = std::string_view(path).substr(
        start, slash == std::string::npos ? std::string::npos : slash - start);
    auto it = node->children.find(part);
    node = it == node->children.end() ? nullptr : it->second;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return node;
}

WritableFs::State WritableFs::NodeState(const Node* node) const { return node->state; }

bool WritableFs::LowerHas(const State& parent, std::string_view name, uint32_t* lower_ino) const {
  if (parent.lower == 0) return false;
  Result<uint64_t> ino = table_.Lookup(parent.lower, name);
  if (!ino.has_value()) return false;
  if (lower_ino != nullptr) *lower_ino = static_cast<uint32_t>(*ino);
  return true;
}

int WritableFs::ResolveChild(const State& parent, const std::string& parent_path,
                             std::string_view name, State* out) const {
  if (!S_ISDIR(parent.type)) return ENOTDIR;
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  uint32_t lower_ino = 0;
  bool in_lower = LowerHas(parent, name, &lower_ino);
  const fs::Node* lower_node = in_lower ? table_.Get(lower_ino) : nullptr;
  bool lower_is_dir = lower_node != nullptr && lower_node->type == EntryType::kDirectory;
  if (parent.upper) {
    std::string path = Join(parent_path, name);
    struct stat st {};
    if (StatBeneath(upper_fd_.get(), path, &st) == 0) {
      if (IsWhiteout(st)) return ENOENT;
      *out = State{};
      out->upper = true;
      out->type = st.st_mode & S_IFMT;
      if (S_ISDIR(st.st_mode)) {
        std::string v;
        bool opaque = IsOpaqueBeneath(upper_fd_.get(), path);
        out->lower = !opaque && lower_is_dir ? lower_ino : 0;
        out->origin = lower_is_dir ? lower_ino : 0;
      } else {
        out->origin = in_lower && !lower_is_dir ? lower_ino : 0;
        out->lower = out->origin;
      }
      return 0;
    }
    if (errno != ENOENT) return Errno();
  }
  if (!in_lower || lower_node == nullptr) return ENOENT;
  *out = State{};
  out->lower = lower_ino;
  out->origin = lower_ino;
  switch (lower_node->type) {
    case EntryType::kDirectory:
      out->type = S_IFDIR;
      break;
    case EntryType::kSymlink:
      out->type = S_IFLNK;
      break;
    case EntryType::kChar:
      out->type = S_IFCHR;
      break;
    case EntryType::kBlock:
      out->type = S_IFBLK;
      break;
    case EntryType::kFifo:
      out->type = S_IFIFO;
      break;
    default:
      out->type = S_IFREG;
      break;
  }
  return 0;
}

int WritableFs::ResolvePath(const std::string& path, State* out) const {
  State state = GetNode(1)->state;
  std::string at = ".";
  if (path != ".") {
    size_t start = 0;
    for (;;) {
      size_t slash = path.find('/', start);
      std::string part =
          path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      State next;
      int r = ResolveChild(state, at, part, &next);
      if (r != 0) return r;
      state = next;
      at = Join(at, part);
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
  }
  *out = state;
  return 0;
}

uint64_t WritableFs::UpperIno(ino_t upper_ino, uint32_t origin) {
  auto it = upper_inos_.find(upper_ino);
  if (it != upper_inos_.end()) return it->second;
  uint64_t v = origin != 0 && claimed_inos_.count(origin) == 0 ? origin : next_st_ino_++;
  upper_inos_.emplace(upper_ino, v);
  claimed_inos_.emplace(v, upper_ino);
  return v;
}

void WritableFs::ForgetUpperIno(ino_t upper_ino) {
  auto it = upper_inos_.find(upper_ino);
  if (it == upper_inos_.end()) return;
  claimed_inos_.erase(it->second);
  upper_inos_.erase(it);
}

int WritableFs::StatState(const State& state, const std::string& path, struct stat* out) {
  if (state.upper) {
    if (StatBeneath(upper_fd_.get(), path, out) != 0) return Errno();
    out->st_ino = UpperIno(out->st_ino, state.origin);
    // A merged directory's subdirectories are not all in the upper: like overlayfs, report
    // nlink 1, which tells find(1) and fts not to count on it.
    if (S_ISDIR(out->st_mode) && state.lower != 0) out->st_nlink = 1;
    return 0;
  }
  Result<struct stat> st = table_.GetAttr(state.lower);
  if (!st.has_value()) return EIO;
  *out = *st;
  return 0;
}

int WritableFs::StatNode(Node* node, struct stat* out) {
  if (node->deleted) {
    if (node->orphan.IsValid()) {
      if (fstat(node->orphan.get(), out) != 0) return Errno();
      out->st_ino = UpperIno(out->st_ino, node->state.origin);
      node->last = *out;
      return 0;
    }
    *out = node->last;
    return out->st_mode != 0 ? 0 : ENOENT;
  }
  int r = StatState(node->state, PathOf(node), out);
  if (r == 0) node->last = *out;
  return r;
}

bool WritableFs::Cacheable(const Node* node) const {
  if (node->state.upper || node->deleted) return false;
  if (node->state.type != S_IFREG) return true;
  const fs::Node* ln = table_.Get(node->state.lower);
  return ln != nullptr && ln->nlink <= 1;
}

int WritableFs::MakeEntry(Node* parent, std::string_view name, const State& state, Entry* out) {
  Node* node = nullptr;
  auto it = parent->children.find(name);
  if (it != parent->children.end()) {
    node = it->second;
    node->state = state;
  } else {
    auto fresh = std::make_unique<Node>();
    fresh->id = next_id_++;
    fresh->parent = parent;
    fresh->name = std::string(name);
    fresh->state = state;
    node = fresh.get();
    parent->children.emplace(node->name, node);
    nodes_.emplace(node->id, std::move(fresh));
  }
  int r = StatNode(node, &out->attr);
  if (r != 0) {
    MaybeErase(node);
    return r;
  }
  node->lookups++;
  out->id = node->id;
  out->cacheable = Cacheable(node);
  return 0;
}

void WritableFs::Detach(Node* node) {
  if (node == nullptr || node->id == 1) return;
  Node* parent = node->parent;
  if (parent != nullptr) parent->children.erase(node->name);
  node->parent = nullptr;
  node->deleted = true;
  if (node->lookups == 0) nodes_.erase(node->id);
  if (parent != nullptr) MaybeErase(parent);
}

void WritableFs::MaybeErase(Node* node) {
  while (node != nullptr && node->id != 1 && node->lookups == 0 && node->children.empty()) {
    Node* parent = node->parent;
    if (parent != nullptr) parent->children.erase(node->name);
    nodes_.erase(node->id);
    node = parent;
  }
}

void WritableFs::MarkSubtreeUpper(Node* node) {
  for (auto& [name, child] : node->children) {
    child->state.upper = true;
    if (S_ISDIR(child->state.type)) {
      child->state.lower = 0;
      MarkSubtreeUpper(child);
    }
  }
}

std::string WritableFs::TempName() {
  return "tmp-" + std::to_string(getpid()) + "-" + std::to_string(++temp_counter_);
}

int WritableFs::Merged(const State& state, const std::string& path,
                       std::vector<MergedDirEntry>* out) {
  std::map<std::string, MergedDirEntry> names;
  std::vector<std::string> hidden;
  if (state.upper) {
    int fd = OpenBeneath(upper_fd_.get(), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno();
    DIR* d = fdopendir(fd);
    if (d == nullptr) {
      close(fd);
      return Errno();
    }
    errno = 0;
    while (dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      std::string name = e->d_name;
      hidden.push_back(name);
      State child;
      if (ResolveChild(state, path, name, &child) != 0) continue;  // a whiteout
      struct stat st {};
      if (StatState(child, Join(path, name), &st) != 0) continue;
      names[name] = MergedDirEntry{name, st.st_ino, child.type};
    }
    closedir(d);
  }
  if (state.lower != 0) {
    Result<std::vector<DirEntry>> lower = table_.ReadDir(state.lower);
    if (lower.has_value()) {
      std::sort(hidden.begin(), hidden.end());
      for (const DirEntry& e : *lower) {
        std::string name(e.name);
        if (std::binary_search(hidden.begin(), hidden.end(), name)) continue;
        State child;
        if (ResolveChild(state, path, name, &child) != 0) continue;
        names[name] = MergedDirEntry{name, e.ino, child.type};
      }
    }
  }
  out->clear();
  for (auto& [name, e] : names) out->push_back(std::move(e));
  return 0;
}

// ---- copy-up ---------------------------------------------------------------------------

int WritableFs::CopyLowerTo(uint32_t lower_ino, int dir_fd, const std::string& dir_path,
                            const std::string& name, bool with_data, bool with_xattrs) {
  const fs::Node* ln = table_.Get(lower_ino);
  Result<struct stat> st = table_.GetAttr(lower_ino);
  if (ln == nullptr || !st.has_value()) return EIO;
  const char* nm = name.c_str();
  std::string abs = dir_path + "/" + name;
  bool is_link = false;
  switch (ln->type) {
    case EntryType::kDirectory:
      if (MkdirBeneath(dir_fd, nm, 0700) != 0) return Errno();
      break;
    case EntryType::kSymlink: {
      Result<std::string_view> target = table_.ReadLink(lower_ino);
      if (!target.has_value()) return EIO;
      if (SymlinkBeneath(std::string(*target), dir_fd, nm) != 0) return Errno();
      is_link = true;
      break;
    }
    case EntryType::kChar:
    case EntryType::kBlock:
    case EntryType::kFifo:
      if (MknodBeneath(dir_fd, nm, (st->st_mode & S_IFMT) | 0600, st->st_rdev) != 0) return Errno();
      break;
    default: {
      UniqueFd fd(OpenBeneath(dir_fd, nm, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
      if (!fd.IsValid()) return Errno();
      if (with_data) {
        uint64_t offset = 0;
        for (;;) {
          Result<std::string> data = lower_->Read(lower_ino, offset, kCopyChunkBytes);
          if (!data.has_value()) {
            IMGFS_LOG(kError) << "copy-up of " << abs << ": " << data.error().ToString();
            UnlinkBeneath(dir_fd, nm, 0);
            return EIO;
          }
          if (data->empty()) break;
          size_t done = 0;
          while (done < data->size()) {
            ssize_t n = pwrite(fd.get(), data->data() + done, data->size() - done,
                               static_cast<off_t>(offset + done));
            if (n < 0) {
              if (errno == EINTR) continue;
              int err = Errno();
              UnlinkBeneath(dir_fd, nm, 0);
              return err;
            }
            done += static_cast<size_t>(n);
          }
          offset += data->size();
        }
      }
      break;
    }
  }
  auto fail = [&](int err) {
    if (ln->type == EntryType::kDirectory) {
      UnlinkBeneath(dir_fd, nm, AT_REMOVEDIR);
    } else {
      UnlinkBeneath(dir_fd, nm, 0);
    }
    return err;
  };
  if (ChownBeneath(dir_fd, nm, st->st_uid, st->st_gid) != 0 && geteuid() == 0) {
    return fail(Errno());
  }
  if (!is_link && ChmodBeneath(dir_fd, nm, st->st_mode & 07777) != 0) return fail(Errno());
  if (with_xattrs) {
    Result<std::vector<std::string_view>> names = table_.ListXattr(lower_ino);
    if (names.has_value()) {
      for (std::string_view n : *names) {
        Result<std::string_view> v = table_.GetXattr(lower_ino, n);
        if (!v.has_value()) continue;
        std::string xname(n);
        // The image's own overlay xattrs would make the copy opaque (or a redirect, which
        // commit refuses): they are never copied into the upper.
        if (IsOverlayXattr(xname)) continue;
        if (int err = SetXattrBeneath(dir_fd, name, xname, *v, 0); err != 0) {
          if (err == ENOSPC || err == EDQUOT) return fail(ENOSPC);
          IMGFS_LOG(kWarning) << "copy-up of " << abs << ": xattr " << xname << ": "
                              << strerror(err);
        }
      }
    }
  }
  struct timespec times[2] = {st->st_mtim, st->st_mtim};
  UtimensBeneath(dir_fd, nm, times);
  return 0;
}

int WritableFs::EnsureUpperDir(const std::string& path) {
  if (path == ".") return 0;
  State st;
  int r = ResolvePath(path, &st);
  if (r != 0) return r;
  if (!S_ISDIR(st.type)) return ENOTDIR;
  if (st.upper) return 0;
  r = EnsureUpperDir(ParentOf(path));
  if (r != 0) return r;
  return CopyUpPath(path, st, false);
}

int WritableFs::CopyUpPath(const std::string& path, const State& state, bool with_data) {
  if (state.upper) return 0;
  std::string parent = ParentOf(path);
  int r = EnsureUpperDir(parent);
  if (r != 0) return r;
  struct stat pst {};
  bool have_parent = StatBeneath(upper_fd_.get(), parent, &pst) == 0;
  std::string tmp = TempName();
  r = CopyLowerTo(state.lower, work_fd_.get(), work_path_, tmp, with_data, true);
  if (r != 0) return r;
  if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path) != 0) {
    int err = Errno();
    RemoveTreeAt(work_fd_.get(), tmp).ok();
    return err;
  }
  if (have_parent) {
    struct timespec times[2] = {pst.st_atim, pst.st_mtim};
    UtimensBeneath(upper_fd_.get(), parent, times);
  }
  struct stat ust {};
  if (StatBeneath(upper_fd_.get(), path, &ust) == 0) {
    ForgetUpperIno(ust.st_ino);  // a fresh inode; its number may have been used before
    UpperIno(ust.st_ino, state.origin != 0 ? state.origin : state.lower);
  }
  if (Node* n = FindNode(path); n != nullptr) {
    n->state.upper = true;
    copy_ups_.fetch_add(1, std::memory_order_release);
  }
  const fs::Node* ln = table_.Get(state.lower);
  if (S_ISREG(state.type) && ln != nullptr && ln->nlink > 1) return LinkGroup(path, state.lower);
  return 0;
}

int WritableFs::CopyUp(Node* node, bool with_data) {
  if (node->state.upper) return 0;
  if (node->deleted) return ENOENT;
  return CopyUpPath(PathOf(node), node->state, with_data);
}

int WritableFs::LinkGroup(const std::string& path, uint32_t lower_ino) {
  if (!lower_links_built_) {
    lower_links_built_ = true;
    for (uint64_t ino = 1; ino <= table_.inode_count(); ++ino) {
      const fs::Node* n = table_.Get(ino);
      if (n == nullptr || n->type != EntryType::kDirectory) continue;
      Result<std::vector<DirEntry>> entries = table_.ReadDir(ino);
      if (!entries.has_value()) continue;
      for (const DirEntry& e : *entries) {
        const fs::Node* c = table_.Get(e.ino);
        if (c != nullptr && c->type == EntryType::kRegular && c->nlink > 1) {
          lower_links_[static_cast<uint32_t>(e.ino)].emplace_back(static_cast<uint32_t>(ino),
                                                                  std::string(e.name));
        }
      }
    }
  }
  auto it = lower_links_.find(lower_ino);
  if (it == lower_links_.end()) return 0;
  for (const auto& [dir, name] : it->second) {
    Result<std::string> dir_path = table_.PathOf(dir);
    if (!dir_path.has_value()) continue;
    std::string rel = *dir_path == "/" ? "." : dir_path->substr(1);
    std::string other = Join(rel, name);
    if (other == path) continue;
    State st;
    if (ResolvePath(other, &st) != 0 || st.upper || st.lower != lower_ino) continue;
    std::string parent = ParentOf(other);
    int r = EnsureUpperDir(parent);
    if (r != 0) return r;
    struct stat pst {};
    bool have_parent = StatBeneath(upper_fd_.get(), parent, &pst) == 0;
    std::string tmp = TempName();
    if (LinkBeneath(upper_fd_.get(), path, work_fd_.get(), tmp) != 0) {
      return Errno();
    }
    if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), other) != 0) {
      int err = Errno();
      UnlinkBeneath(work_fd_.get(), tmp, 0);
      return err;
    }
    if (have_parent) {
      struct timespec times[2] = {pst.st_atim, pst.st_mtim};
      UtimensBeneath(upper_fd_.get(), parent, times);
    }
    if (Node* n = FindNode(other); n != nullptr) {
      n->state.upper = true;
      copy_ups_.fetch_add(1, std::memory_order_release);
    }
  }
  return 0;
}

int WritableFs::CopyUpperTree(const std::string& src_path, const std::string& dst_work_path) {
  // A directory of the upper copied (its own metadata) into the work dir; children are
  // handled by CopyMergedTree.
  struct stat st {};
  if (StatBeneath(upper_fd_.get(), src_path, &st) != 0) return Errno();
  const char* nm = dst_work_path.c_str();
  if (MkdirBeneath(work_fd_.get(), nm, 0700) != 0) return Errno();
  if (ChownBeneath(work_fd_.get(), nm, st.st_uid, st.st_gid) != 0 && geteuid() == 0) {
    return Errno();
  }
  if (ChmodBeneath(work_fd_.get(), nm, st.st_mode & 07777) != 0) return Errno();
  std::vector<std::string> names;
  ListXattrsBeneath(upper_fd_.get(), src_path, &names);
  for (const std::string& x : names) {
    if (IsOverlayXattr(x)) continue;
    std::string v;
    if (GetXattrBeneath(upper_fd_.get(), src_path, x, &v) != 0) continue;
    if (SetXattrBeneath(work_fd_.get(), dst_work_path, x, v, 0) == ENOSPC) return ENOSPC;
  }
  return 0;
}

int WritableFs::CopyMergedTree(const State& state, const std::string& src_path,
                               const std::string& dst_name,
                               std::unordered_map<uint32_t, std::string>* copied) {
  int r = state.upper ? CopyUpperTree(src_path, dst_name)
                      : CopyLowerTo(state.lower, work_fd_.get(), work_path_, dst_name, false, true);
  if (r != 0) return r;
  std::vector<MergedDirEntry> entries;
  r = Merged(state, src_path, &entries);
  if (r != 0) return r;
  for (const MergedDirEntry& e : entries) {
    State child;
    if (ResolveChild(state, src_path, e.name, &child) != 0) continue;
    std::string child_src = Join(src_path, e.name);
    std::string child_dst = dst_name + "/" + e.name;
    if (S_ISDIR(child.type)) {
      r = CopyMergedTree(child, child_src, child_dst, copied);
    } else if (child.upper) {
      r = LinkBeneath(upper_fd_.get(), child_src, work_fd_.get(), child_dst) == 0 ? 0 : Errno();
    } else if (auto done = copied->find(child.lower); done != copied->end()) {
      // Another name of a lower hardlink group already copied into this tree.
      r = LinkBeneath(work_fd_.get(), done->second, work_fd_.get(), child_dst) == 0 ? 0 : Errno();
    } else {
      r = CopyLowerTo(child.lower, work_fd_.get(), work_path_, child_dst, true, true);
      if (r == 0 && S_ISREG(child.type)) copied->emplace(child.lower, child_dst);
      struct stat ust {};
      if (r == 0 && StatBeneath(work_fd_.get(), child_dst, &ust) == 0) {
        ForgetUpperIno(ust.st_ino);
        UpperIno(ust.st_ino, child.origin);
      }
    }
    if (r != 0) return r;
  }
  // Creating the children moved the directory's times: give it its source's times back.
  struct stat src {};
  if (StatState(state, src_path, &src) == 0) {
    struct timespec times[2] = {src.st_atim, src.st_mtim};
    UtimensBeneath(work_fd_.get(), dst_name, times);
  }
  return 0;
}

int WritableFs::PlaceFromWork(const std::string& tmp, const std::string& path) {
  struct stat dst {
  }, src{};
  if (StatBeneath(work_fd_.get(), tmp, &src) != 0) return Errno();
  if (StatBeneath(upper_fd_.get(), path, &dst) != 0) {
    if (errno != ENOENT) return Errno();
    if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path) != 0) return Errno();
    return 0;
  }
  if (!S_ISDIR(dst.st_mode) && !S_ISDIR(src.st_mode)) {
    if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path) != 0) return Errno();
    return 0;
  }
  // A directory on either side: swap atomically, then remove what was there.
  if (RenameBeneath(work_fd_.get(), tmp, upper_fd_.get(), path, RENAME_EXCHANGE) != 0) {
    return Errno();
  }
  Status st = RemoveTreeAt(work_fd_.get(), tmp);
  if (!st.ok()) IMGFS_LOG(kWarning) << st.ToString();
  return 0;
}

int WritableFs::MakeWhiteout(const std::string& path, bool replace) {
  if (!replace) {
    return MknodBeneath(upper_fd_.get(), path, S_IFCHR, makedev(0, 0)) == 0 ? 0 : Errno();
  }
  std::string tmp = TempName();
  if (MknodBeneath(work_fd_.get(), tmp, S_IFCHR, makedev(0, 0)) != 0) return Errno();
  int r = PlaceFromWork(tmp, path);
  if (r != 0) UnlinkBeneath(work_fd_.get(), tmp, 0);
  return r;
}

// ---- name operations -------------------------------------------------------------------

int WritableFs::Lookup(uint64_t parent, std::string_view name, Entry* out) {
  MutexLock lock(&mu_);
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return ENOENT;
  State st;
  int r = ResolveChild(dir->state, PathOf(dir), name, &st);
  if (r != 0) return r;
  return MakeEntry(dir, name, st, out);
}

void WritableFs::Forget(uint64_t id, uint64_t nlookup) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || id == 1) return;
  node->lookups -= std::min(node->lookups, nlookup);
  if (node->lookups == 0) {
    if (node->deleted) {
      nodes_.erase(id);
    } else {
      MaybeErase(node);
    }
  }
}

int WritableFs::GetAttr(uint64_t id, struct stat* out, bool* cacheable) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  int r = StatNode(node, out);
  if (cacheable != nullptr) *cacheable = Cacheable(node);
  return r;
}

int WritableFs::SetAttr(uint64_t id, const SetAttrRequest& req, uint64_t fh, struct stat* out) {
  std::shared_ptr<Handle> handle = fh != 0 ? GetHandle(fh) : nullptr;
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  // A symlink's mode means nothing; overlayfs answers EOPNOTSUPP and so do we (a chmod that
  // reached the link's target would change a host file as root). Before any copy-up.
  if (req.set_mode && S_ISLNK(node->state.type)) return EOPNOTSUPP;
  int fd = -1;
  if (handle != nullptr && handle->id == id) {
    MutexLock hl(&handle->mu);
    fd = handle->fd.get();
  }
  if (node->deleted) {
    if (fd < 0) return ENOENT;
  } else {
    int r = CopyUp(node, !(req.set_size && req.size == 0));
    if (r != 0) return r;
  }
  std::string path = node->deleted ? "" : PathOf(node);
  if (req.set_uid || req.set_gid) {
    uid_t uid = req.set_uid ? req.uid : static_cast<uid_t>(-1);
    gid_t gid = req.set_gid ? req.gid : static_cast<gid_t>(-1);
    int rc = node->deleted ? fchown(fd, uid, gid) : ChownBeneath(upper_fd_.get(), path, uid, gid);
    if (rc != 0) return Errno();
  }
  if (req.set_mode) {
    int rc = node->deleted ? fchmod(fd, req.mode & 07777)
                           : ChmodBeneath(upper_fd_.get(), path, req.mode & 07777);
    if (rc != 0) return Errno();
  }
  if (req.set_size) {
    int rc = 0;
    if (fd >= 0 && handle->writable) {
      rc = ftruncate(fd, req.size);
    } else if (node->deleted) {
      return EBADF;
    } else {
      rc = TruncateBeneath(upper_fd_.get(), path, req.size);
    }
    if (rc != 0) return Errno();
  }
  if (req.set_atime || req.set_mtime) {
    struct timespec times[2];
    times[0].tv_sec = 0;
    times[0].tv_nsec = !req.set_atime ? UTIME_OMIT : req.atime_now ? UTIME_NOW : 0;
    if (req.set_atime && !req.atime_now) times[0] = req.atime;
    times[1].tv_sec = 0;
    times[1].tv_nsec = !req.set_mtime ? UTIME_OMIT : req.mtime_now ? UTIME_NOW : 0;
    if (req.set_mtime && !req.mtime_now) times[1] = req.mtime;
    int rc = node->deleted ? futimens(fd, times) : UtimensBeneath(upper_fd_.get(), path, times);
    if (rc != 0) return Errno();
  }
  if (node->deleted) {
    if (fstat(fd, out) != 0) return Errno();
    out->st_ino = UpperIno(out->st_ino, node->state.origin);
    return 0;
  }
  return StatNode(node, out);
}

int WritableFs::ReadLink(uint64_t id, std::string* target) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || node->deleted) return ENOENT;
  if (!S_ISLNK(node->state.type)) return EINVAL;
  if (!node->state.upper) {
    Result<std::string_view> t = table_.ReadLink(node->state.lower);
    if (!t.has_value()) return EIO;
    *target = std::string(*t);
    return 0;
  }
  char buf[PATH_MAX + 1];
  ssize_t n = ReadlinkBeneath(upper_fd_.get(), PathOf(node), buf, sizeof(buf));
  if (n < 0) return Errno();
  target->assign(buf, static_cast<size_t>(n));
  return 0;
}

int WritableFs::ParentForCreate(uint64_t parent, std::string_view name, Node** dir,
                                State* dir_state, bool* over_whiteout) {
  *dir = GetNode(parent);
  if (*dir == nullptr || (*dir)->deleted) return ENOENT;
  if (!S_ISDIR((*dir)->state.type)) return ENOTDIR;
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  std::string dir_path = PathOf(*dir);
  State child;
  int r = ResolveChild((*dir)->state, dir_path, name, &child);
  if (r == 0) return EEXIST;
  if (r != ENOENT) return r;
  r = EnsureUpperDir(dir_path);
  if (r != 0) return r;
  (*dir)->state.upper = true;
  *dir_state = (*dir)->state;
  struct stat st {};
  *over_whiteout = StatBeneath(upper_fd_.get(), Join(dir_path, name), &st) == 0;
  return 0;
}

// Ownership and mode of a just created entry `nm` in `dir_fd` (the mode is set exactly: the
// kernel already applied the caller's umask). A setgid parent passes on its group (and, to
// directories, the setgid bit), as POSIX filesystems do.
namespace {
int SetNewOwner(int dir_fd, const char* nm, int parent_fd, const std::string& parent_path,
                const Caller& caller, mode_t type, mode_t* mode) {
  struct stat pst {};
  gid_t gid = caller.gid;
  if (StatBeneath(parent_fd, parent_path, &pst) == 0 && (pst.st_mode & S_ISGID) != 0) {
    gid = pst.st_gid;
    if (S_ISDIR(type)) *mode |= S_ISGID;
  }
  if (ChownBeneath(dir_fd, nm, caller.uid, gid) != 0 && geteuid() == 0) {
    return Errno();
  }
  if (!S_ISLNK(type) && ChmodBeneath(dir_fd, nm, *mode & 07777) != 0) return Errno();
  return 0;
}
}  // namespace

int WritableFs::PrepareCreate(uint64_t parent, std::string_view name, CreateSite* site) {
  State dir_state;
  int r = ParentForCreate(parent, name, &site->dir, &dir_state, &site->over_whiteout);
  if (r != 0) return r;
  site->dir_path = PathOf(site->dir);
  if (site->over_whiteout) {
    site->tmp = TempName();
    site->at = work_fd_.get();
    site->name_at = site->tmp;
  } else {
    site->at = upper_fd_.get();
    site->name_at = Join(site->dir_path, name);
  }
  return 0;
}

int WritableFs::FinishCreate(const CreateSite& site, std::string_view name, mode_t mode,
                             Entry* out) {
  Node* dir = site.dir;
  std::string path = Join(site.dir_path, name);
  if (site.over_whiteout) {
    int r = PlaceFromWork(site.tmp, path);
    if (r != 0) {
      RemoveTreeAt(work_fd_.get(), site.tmp).ok();
      return r;
    }
  }
  State st;
  st.upper = true;
  st.type = mode & S_IFMT;
  if (Node* old = FindNode(path); old != nullptr) Detach(old);
  return MakeEntry(dir, name, st, out);
}

int WritableFs::Mknod(uint64_t parent, std::string_view name, mode_t mode, dev_t rdev,
                      const Caller& caller, Entry* out) {
  MutexLock lock(&mu_);
  CreateSite site;
  int r = PrepareCreate(parent, name, &site);
  if (r != 0) return r;
  const int at = site.at;
  const std::string& nm = site.name_at;
  if (S_ISREG(mode)) {
    int fd = OpenBeneath(at, nm, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return Errno();
    close(fd);
  } else if (MknodBeneath(at, nm, (mode & S_IFMT) | 0600, rdev) != 0) {
    return Errno();
  }
  mode_t m = mode;
  r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, mode & S_IFMT, &m);
  if (r != 0) {
    UnlinkBeneath(at, nm, 0);
    return r;
  }
  return FinishCreate(site, name, mode, out);
}

int WritableFs::Mkdir(uint64_t parent, std::string_view name, mode_t mode, const Caller& caller,
                      Entry* out) {
  MutexLock lock(&mu_);
  CreateSite site;
  int r = PrepareCreate(parent, name, &site);
  if (r != 0) return r;
  const int at = site.at;
  const std::string& nm = site.name_at;
  if (MkdirBeneath(at, nm, 0700) != 0) return Errno();
  mode_t m = (mode & 07777) | S_IFDIR;
  r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, S_IFDIR, &m);
  if (r == 0 && site.over_whiteout) {
    // Created over a whiteout: whatever the lower had there stays hidden.
    r = SetXattrBeneath(work_fd_.get(), site.tmp, std::string(kOpaqueXattr), "y", 0);
  }
  if (r != 0) {
    UnlinkBeneath(at, nm, AT_REMOVEDIR);
    return r;
  }
  return FinishCreate(site, name, S_IFDIR | m, out);
}

int WritableFs::Symlink(std::string_view target, uint64_t parent, std::string_view name,
                        const Caller& caller, Entry* out) {
  MutexLock lock(&mu_);
  CreateSite site;
  int r = PrepareCreate(parent, name, &site);
  if (r != 0) return r;
  const int at = site.at;
  const std::string& nm = site.name_at;
  if (SymlinkBeneath(std::string(target), at, nm) != 0) return Errno();
  mode_t m = S_IFLNK | 0777;
  r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, S_IFLNK, &m);
  if (r != 0) {
    UnlinkBeneath(at, nm, 0);
    return r;
  }
  return FinishCreate(site, name, S_IFLNK, out);
}

int WritableFs::Unlink(uint64_t parent, std::string_view name) {
  MutexLock lock(&mu_);
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return ENOENT;
  std::string dir_path = PathOf(dir);
  State st;
  int r = ResolveChild(dir->state, dir_path, name, &st);
  if (r != 0) return r;
  if (S_ISDIR(st.type)) return EISDIR;
  bool need_whiteout = LowerHas(dir->state, name, nullptr);
  std::string path = Join(dir_path, name);
  Node* node = FindNode(path);
  const fs::Node* ln = st.upper ? nullptr : table_.Get(st.lower);
  if (ln != nullptr && ln->type == EntryType::kRegular && ln->nlink > 1) {
    // One name of a lower hardlink group: copy the group up first, so the names that stay
    // are one upper inode whose link count drops (overlayfs' index does the same).
    r = CopyUpPath(path, st, true);
    if (r != 0) return r;
    st.upper = true;
  }
  if (st.upper) {
    struct stat ust {};
    if (StatBeneath(upper_fd_.get(), path, &ust) != 0) return Errno();
    if (node != nullptr) {
      StatNode(node, &node->last);
      node->orphan = UniqueFd(OpenBeneath(upper_fd_.get(), path, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    r = need_whiteout ? MakeWhiteout(path, true)
                      : (UnlinkBeneath(upper_fd_.get(), path, 0) == 0 ? 0 : Errno());
    if (r != 0) {
      if (node != nullptr) node->orphan.Close();
      return r;
    }
    if (ust.st_nlink <= 1 && (node == nullptr || !node->orphan.IsValid())) {
      ForgetUpperIno(ust.st_ino);
    }
  } else {
    if (node != nullptr) StatNode(node, &node->last);
    r = EnsureUpperDir(dir_path);
    if (r != 0) return r;
    r = MakeWhiteout(path, false);
    if (r != 0) return r;
  }
  dir->state.upper = true;
  Detach(node);
  return 0;
}

int WritableFs::Rmdir(uint64_t parent, std::string_view name) {
  MutexLock lock(&mu_);
  Node* dir = GetNode(parent);
  if (dir == nullptr || dir->deleted) return ENOENT;
  std::string dir_path = PathOf(dir);
  State st;
  int r = ResolveChild(dir->state, dir_path, name, &st);
  if (r != 0) return r;
  if (!S_ISDIR(st.type)) return ENOTDIR;
  std::string path = Join(dir_path, name);
  std::vector<MergedDirEntry> entries;
  r = Merged(st, path, &entries);
  if (r != 0) return r;
  if (!entries.empty()) return ENOTEMPTY;
  bool need_whiteout = LowerHas(dir->state, name, nullptr);
  if (st.upper) {
    if (need_whiteout) {
      r = MakeWhiteout(path, true);
    } else {
      std::string tmp = TempName();
      r = RenameBeneath(upper_fd_.get(), path, work_fd_.get(), tmp) == 0 ? 0 : Errno();
      if (r == 0) RemoveTreeAt(work_fd_.get(), tmp).ok();
    }
  } else {
    r = EnsureUpperDir(dir_path);
    if (r == 0) r = MakeWhiteout(path, false);
  }
  if (r != 0) return r;
  dir->state.upper = true;
  Node* node = FindNode(path);
  if (node != nullptr) StatNode(node, &node->last);
  Detach(node);
  return 0;
}

int WritableFs::Rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                       std::string_view new_name, unsigned flags) {
  if ((flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) != 0) return EINVAL;
  MutexLock lock(&mu_);
  Node* p1 = GetNode(parent);
  Node* p2 = GetNode(new_parent);
  if (p1 == nullptr || p2 == nullptr || p1->deleted || p2->deleted) return ENOENT;
  if (!S_ISDIR(p2->state.type)) return ENOTDIR;
  if (new_name.size() > NAME_MAX) return ENAMETOOLONG;
  std::string src_path = Join(PathOf(p1), name);
  std::string dst_path = Join(PathOf(p2), new_name);
  State s, d;
  int r = ResolveChild(p1->state, PathOf(p1), name, &s);
  if (r != 0) return r;
  r = ResolveChild(p2->state, PathOf(p2), new_name, &d);
  bool dst_exists = r == 0;
  if (r != 0 && r != ENOENT) return r;
  if (src_path == dst_path) return 0;
  if (S_ISDIR(s.type) && (dst_path.rfind(src_path + "/", 0) == 0)) return EINVAL;
  if (dst_exists) {
    if ((flags & RENAME_NOREPLACE) != 0) return EEXIST;
    if (S_ISDIR(s.type) && !S_ISDIR(d.type)) return ENOTDIR;
    if (!S_ISDIR(s.type) && S_ISDIR(d.type)) return EISDIR;
    if (S_ISDIR(d.type)) {
      std::vector<MergedDirEntry> entries;
      r = Merged(d, dst_path, &entries);
      if (r != 0) return r;
      if (!entries.empty()) return ENOTEMPTY;
    }
    // Two names of one file: rename(2) does nothing.
    if (!s.upper && !d.upper && s.lower == d.lower && !S_ISDIR(s.type)) return 0;
    if (s.upper && d.upper && !S_ISDIR(s.type)) {
      struct stat a {
      }, b{};
      if (StatBeneath(upper_fd_.get(), src_path, &a) == 0 &&
          StatBeneath(upper_fd_.get(), dst_path, &b) == 0 && a.st_ino == b.st_ino) {
        return 0;
      }
    }
  }
  r = EnsureUpperDir(PathOf(p1));
  if (r == 0) r = EnsureUpperDir(PathOf(p2));
  if (r != 0) return r;
  p1->state.upper = true;
  p2->state.upper = true;
  bool src_whiteout = LowerHas(p1->state, name, nullptr);
  uint32_t dst_lower = 0;
  bool dst_lower_dir = LowerHas(p2->state, new_name, &dst_lower) &&
                       table_.Get(dst_lower)->type == EntryType::kDirectory;
  Node* snode = FindNode(src_path);
  Node* dnode = dst_exists ? FindNode(dst_path) : nullptr;
  if (dst_exists && !d.upper && S_ISREG(d.type)) {
    const fs::Node* dl = table_.Get(d.lower);
    if (dl != nullptr && dl->nlink > 1) {
      r = CopyUpPath(dst_path, d, true);  // the names that stay keep a true link count
      if (r != 0) return r;
      d.upper = true;
    }
  }
  if (dnode != nullptr && d.upper && !S_ISDIR(d.type)) {
    StatNode(dnode, &dnode->last);
    dnode->orphan =
        UniqueFd(OpenBeneath(upper_fd_.get(), dst_path, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  } else if (dnode != nullptr) {
    StatNode(dnode, &dnode->last);
  }

  if (!S_ISDIR(s.type)) {
    r = CopyUpPath(src_path, s, true);
    if (r != 0) return r;
    if (RenameBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path) != 0) {
      return Errno();
    }
    if (src_whiteout) {
      r = MakeWhiteout(src_path, false);
      if (r != 0) return r;
    }
  } else if (s.lower != 0) {
    // A directory with lower content: no redirects, so the merged tree is copied up whole
    // (upper files hard-linked) under the new name and made opaque.
    std::string tmp = TempName();
    std::unordered_map<uint32_t, std::string> copied;
    r = CopyMergedTree(s, src_path, tmp, &copied);
    if (r == 0) {
      r = SetXattrBeneath(work_fd_.get(), tmp, std::string(kOpaqueXattr), "y", 0);
    }
    if (r == 0) r = PlaceFromWork(tmp, dst_path);
    if (r != 0) {
      RemoveTreeAt(work_fd_.get(), tmp).ok();
      return r;
    }
    if (s.upper) {
      if (src_whiteout) {
        r = MakeWhiteout(src_path, true);
      } else {
        std::string gone = TempName();
        r = RenameBeneath(upper_fd_.get(), src_path, work_fd_.get(), gone) == 0 ? 0 : Errno();
        if (r == 0) RemoveTreeAt(work_fd_.get(), gone).ok();
      }
    } else if (src_whiteout) {
      r = MakeWhiteout(src_path, false);
    }
    if (r != 0) return r;
  } else {
    // An upper-only directory: a plain rename in the upper.
    if (dst_lower_dir) {
      r = SetXattrBeneath(upper_fd_.get(), src_path, std::string(kOpaqueXattr), "y", 0);
      if (r != 0) return r;
    }
    struct stat dst {};
    bool dst_upper = StatBeneath(upper_fd_.get(), dst_path, &dst) == 0;
    if (dst_upper && !S_ISDIR(dst.st_mode)) {
      // A whiteout there: swap, and the source name gets the whiteout (or nothing).
      if (RenameBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path, RENAME_EXCHANGE) !=
          0) {
        return Errno();
      }
      if (!src_whiteout) UnlinkBeneath(upper_fd_.get(), src_path, 0);
    } else {
      if (dst_upper) {
        // An empty merged directory whose upper holds only whiteouts: clear it first.
        std::vector<std::string> names;
        UniqueFd dst_dir(OpenBeneath(upper_fd_.get(), dst_path, O_RDONLY | O_DIRECTORY));
        int fd = dst_dir.IsValid() ? fcntl(dst_dir.get(), F_DUPFD_CLOEXEC, 0) : -1;
        if (fd >= 0) {
          DIR* dd = fdopendir(fd);
          if (dd != nullptr) {
            while (dirent* e = readdir(dd)) {
              if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                names.emplace_back(e->d_name);
              }
            }
            closedir(dd);
          } else {
            close(fd);
          }
        }
        for (const std::string& n : names) {
          RemoveTreeAt(dst_dir.get(), n).ok();
        }
      }
      if (RenameBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path) != 0) {
        return Errno();
      }
      if (src_whiteout) {
        r = MakeWhiteout(src_path, false);
        if (r != 0) return r;
      }
    }
  }

  if (dnode != nullptr && dnode != snode) Detach(dnode);
  if (snode != nullptr) {
    snode->parent->children.erase(snode->name);
    snode->parent = p2;
    snode->name = std::string(new_name);
    p2->children[snode->name] = snode;
    snode->state.upper = true;
    if (S_ISDIR(s.type)) {
      snode->state.lower = 0;
      if (s.lower != 0) MarkSubtreeUpper(snode);
    }
    copy_ups_.fetch_add(1, std::memory_order_release);
    MaybeErase(p1);
  }
  return 0;
}

int WritableFs::Link(uint64_t id, uint64_t new_parent, std::string_view new_name, Entry* out) {
  MutexLock lock(&mu_);
  Node* src = GetNode(id);
  if (src == nullptr || src->deleted) return ENOENT;
  if (S_ISDIR(src->state.type)) return EPERM;
  Node* dir = nullptr;
  State ds;
  bool over = false;
  int r = ParentForCreate(new_parent, new_name, &dir, &ds, &over);
  if (r != 0) return r;
  // The kernel may cache the source's attributes and pages for long: from now on they
  // change through the new name too.
  if (Cacheable(src)) pending_invalidations.push_back(src->id);
  r = CopyUp(src, true);
  if (r != 0) return r;
  std::string src_path = PathOf(src);
  std::string dst_path = Join(PathOf(dir), new_name);
  std::string tmp;
  if (over) {
    tmp = TempName();
    if (LinkBeneath(upper_fd_.get(), src_path, work_fd_.get(), tmp) != 0) {
      return Errno();
    }
  } else if (LinkBeneath(upper_fd_.get(), src_path, upper_fd_.get(), dst_path) != 0) {
    return Errno();
  }
  State st = src->state;
  st.upper = true;
  if (over) {
    r = PlaceFromWork(tmp, dst_path);
    if (r != 0) {
      UnlinkBeneath(work_fd_.get(), tmp, 0);
      return r;
    }
  }
  if (Node* old = FindNode(dst_path); old != nullptr) Detach(old);
  return MakeEntry(dir, new_name, st, out);
}

// ---- files -----------------------------------------------------------------------------

std::shared_ptr<WritableFs::Handle> WritableFs::GetHandle(uint64_t fh) const {
  MutexLock lock(&handles_mu_);
  auto it = handles_.find(fh);
  return it == handles_.end() ? nullptr : it->second;
}

int WritableFs::Open(uint64_t id, int flags, uint64_t* fh, bool* cacheable) {
  auto handle = std::make_shared<Handle>();
  {
    MutexLock lock(&mu_);
    MutexLock hl(&handle->mu);  // not shared yet; held for the lock analysis (order: mu_, then it)
    Node* node = GetNode(id);
    if (node == nullptr || node->deleted) return ENOENT;
    if (S_ISDIR(node->state.type)) return EISDIR;
    bool write = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0;
    if (write) {
      int r = CopyUp(node, (flags & O_TRUNC) == 0);
      if (r != 0) return r;
    }
    handle->id = id;
    handle->writable = (flags & O_ACCMODE) != O_RDONLY;
    if (node->state.upper) {
      int open_flags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)) | O_CLOEXEC;
      handle->fd = UniqueFd(OpenBeneath(upper_fd_.get(), PathOf(node), open_flags));
      if (!handle->fd.IsValid()) return Errno();
    } else {
      handle->lower = node->state.lower;
      handle->copy_ups_seen = copy_ups_.load(std::memory_order_acquire);
    }
    *cacheable = Cacheable(node);
  }
  MutexLock lock(&handles_mu_);
  *fh = next_fh_++;
  handles_.emplace(*fh, std::move(handle));
  return 0;
}

int WritableFs::Create(uint64_t parent, std::string_view name, mode_t mode, int flags,
                       const Caller& caller, Entry* out, uint64_t* fh) {
  auto handle = std::make_shared<Handle>();
  {
    MutexLock lock(&mu_);
    MutexLock hl(&handle->mu);  // not shared yet; held for the lock analysis (order: mu_, then it)
    CreateSite site;
    int r = PrepareCreate(parent, name, &site);
    if (r != 0) return r;
    const int at = site.at;
    const std::string& nm = site.name_at;
    int open_flags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_DIRECT)) | O_CREAT |
                     O_EXCL | O_CLOEXEC;
    handle->fd = UniqueFd(OpenBeneath(at, nm, open_flags, 0600));
    if (!handle->fd.IsValid()) return Errno();
    mode_t m = (mode & 07777) | S_IFREG;
    r = SetNewOwner(at, nm.c_str(), upper_fd_.get(), site.dir_path, caller, S_IFREG, &m);
    if (r != 0) {
      UnlinkBeneath(at, nm, 0);
      return r;
    }
    r = FinishCreate(site, name, S_IFREG | m, out);
    if (r != 0) return r;
    handle->id = out->id;
    handle->writable = (flags & O_ACCMODE) != O_RDONLY;
  }
  MutexLock lock(&handles_mu_);
  *fh = next_fh_++;
  handles_.emplace(*fh, std::move(handle));
  return 0;
}

int WritableFs::Read(uint64_t fh, uint64_t offset, size_t size, std::string* out) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  int fd = -1;
  uint32_t lower = 0;
  bool check_upper = false;
  {
    MutexLock hl(&h->mu);
    fd = h->fd.get();
    lower = h->lower;
    uint64_t now = copy_ups_.load(std::memory_order_acquire);
    check_upper = fd < 0 && now != h->copy_ups_seen;
    h->copy_ups_seen = now;
  }
  if (check_upper) {
    // Opened while the file was in the lower: once it has been copied up (through another
    // handle), read the copy, which may have changed.
    UniqueFd opened;
    {
      MutexLock lock(&mu_);
      Node* node = GetNode(h->id);
      if (node != nullptr && !node->deleted && node->state.upper) {
        opened = UniqueFd(OpenBeneath(upper_fd_.get(), PathOf(node), O_RDONLY | O_CLOEXEC));
      }
    }
    if (opened.IsValid()) {
      MutexLock hl(&h->mu);
      if (!h->fd.IsValid()) h->fd = std::move(opened);
      fd = h->fd.get();
    }
  }
  if (fd >= 0) {
    out->resize(size);
    ssize_t n;
    do {
      n = pread(fd, out->data(), size, static_cast<off_t>(offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Errno();
    out->resize(static_cast<size_t>(n));
    return 0;
  }
  Result<std::string> data = lower_->Read(lower, offset, size);
  if (!data.has_value()) return EIO;
  *out = std::move(*data);
  return 0;
}

int WritableFs::Write(uint64_t fh, uint64_t offset, const char* data, size_t size,
                      size_t* written) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  int fd;
  {
    MutexLock hl(&h->mu);
    fd = h->writable ? h->fd.get() : -1;
  }
  if (fd < 0) return EBADF;
  ssize_t n;
  do {
    n = pwrite(fd, data, size, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Errno();
  *written = static_cast<size_t>(n);
  return 0;
}

int WritableFs::Fsync(uint64_t fh, bool datasync) {
  std::shared_ptr<Handle> h = GetHandle(fh);
  if (h == nullptr) return EBADF;
  MutexLock hl(&h->mu);
  if (!h->fd.IsValid()) return 0;
  int rc = datasync ? fdatasync(h->fd.get()) : fsync(h->fd.get());
  return rc == 0 ? 0 : Errno();
}

void WritableFs::Release(uint64_t fh) {
  std::shared_ptr<Handle> h;
  {
    MutexLock lock(&handles_mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    h = std::move(it->second);
    handles_.erase(it);
  }
}

int WritableFs::ReadDir(uint64_t id, std::vector<MergedDirEntry>* out, uint64_t* parent_st_ino) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  if (!S_ISDIR(node->state.type)) return ENOTDIR;
  if (node->deleted) {
    out->clear();
    *parent_st_ino = node->last.st_ino;
    return 0;
  }
  int r = Merged(node->state, PathOf(node), out);
  if (r != 0) return r;
  Node* parent = node->parent != nullptr ? node->parent : node;
  struct stat st {};
  *parent_st_ino = StatNode(parent, &st) == 0 ? st.st_ino : 1;
  return 0;
}

int WritableFs::StatFs(struct statvfs* out) {
  return fstatvfs(upper_fd_.get(), out) == 0 ? 0 : Errno();
}

// ---- xattrs ----------------------------------------------------------------------------

int WritableFs::SetXattr(uint64_t id, std::string_view name, std::string_view value, int flags) {
  if (IsOverlayXattr(name)) return EPERM;
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || node->deleted) return ENOENT;
  int r = CopyUp(node, true);
  if (r != 0) return r;
  return SetXattrBeneath(upper_fd_.get(), PathOf(node), std::string(name), value, flags);
}

int WritableFs::GetXattr(uint64_t id, std::string_view name, std::string* value) {
  if (IsOverlayXattr(name)) return ENODATA;
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  if (node->deleted && !node->orphan.IsValid()) return ENODATA;
  if (node->state.upper) {
    if (node->deleted) return GetXattrFd(node->orphan.get(), std::string(name), value);
    return GetXattrBeneath(upper_fd_.get(), PathOf(node), std::string(name), value);
  }
  Result<std::string_view> v = table_.GetXattr(node->state.lower, name);
  if (!v.has_value()) return v.error().code() == StatusCode::kNotFound ? ENODATA : EIO;
  *value = std::string(*v);
  return 0;
}

int WritableFs::ListXattr(uint64_t id, std::vector<std::string>* names) {
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr) return ENOENT;
  names->clear();
  if (node->deleted) return 0;
  if (node->state.upper) {
    std::vector<std::string> all;
    ListXattrsBeneath(upper_fd_.get(), PathOf(node), &all);
    for (std::string& n : all) {
      if (!IsOverlayXattr(n)) names->push_back(std::move(n));
    }
    return 0;
  }
  Result<std::vector<std::string_view>> list = table_.ListXattr(node->state.lower);
  if (!list.has_value()) return EIO;
  for (std::string_view n : *list) {
    if (!IsOverlayXattr(n)) names->emplace_back(n);
  }
  return 0;
}

int WritableFs::RemoveXattr(uint64_t id, std::string_view name) {
  if (IsOverlayXattr(name)) return ENODATA;
  MutexLock lock(&mu_);
  Node* node = GetNode(id);
  if (node == nullptr || node->deleted) return ENOENT;
  if (!node->state.upper && !table_.GetXattr(node->state.lower, name).has_value()) {
    return ENODATA;
  }
  int r = CopyUp(node, true);
  if (r != 0) return r;
  return RemoveXattrBeneath(upper_fd_.get(), PathOf(node), std::string(name));
}

size_t WritableFs::node_count() const {
  MutexLock lock(&mu_);
  return nodes_.size();
}

}  // namespace imgfs::fs
