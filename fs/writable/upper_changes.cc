// imgfs — the changes of an upper directory (see upper_changes.h).
#include "fs/writable/upper_changes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "base/unique_fd.h"
#include "fs/upper/upper_dir.h"

namespace imgfs::fs {
namespace {

// No lower directory: the upper directory being walked is added (or replaced a non-directory).
constexpr uint64_t kNoLower = 0;

std::string Join(const std::string& rel, std::string_view name) {
  return rel == "." ? std::string(name) : rel + "/" + std::string(name);
}

// rel ("." or "a/b") as a path of the merged tree ("/" or "/a/b").
std::string Absolute(const std::string& rel) { return rel == "." ? "/" : "/" + rel; }

Status Changed(const std::string& rel, int err) {
  return Status::FromErrno(err, Absolute(rel))
      .WithContext("the upper changed while it was being read");
}

class Walker {
 public:
  Walker(int root_fd, const NodeTable& lower) : root_fd_(root_fd), lower_(lower) {}

  std::vector<UpperChange>& changes() { return changes_; }

  // Reports the entries of the upper directory `rel`; `lower_dir` is the lower directory at
  // the same path, kNoLower when there is none.
  Status WalkDir(const std::string& rel, uint64_t lower_dir, int depth) {
    if (depth > kMaxUpperDepth) {
      return Status::Unsupported("the upper nests directories deeper than " +
                                 std::to_string(kMaxUpperDepth) + " levels at " + Absolute(rel));
    }
    IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadNames(rel));
    for (const std::string& name : names) {
      std::string child = Join(rel, name);
      struct stat st {};
      if (StatBeneath(root_fd_, child, &st) != 0) return Changed(child, errno);
      if (IsWhiteout(st)) {
        changes_.push_back({ChangeKind::kDeleted, Absolute(child)});
        continue;
      }
      uint64_t lower_child = kNoLower;
      if (lower_dir != kNoLower) {
        Result<uint64_t> found = lower_.Lookup(lower_dir, name);
        if (found.has_value()) lower_child = *found;
      }
      changes_.push_back(
          {lower_child != kNoLower ? ChangeKind::kChanged : ChangeKind::kAdded, Absolute(child)});
      if (!S_ISDIR(st.st_mode)) continue;
      const Node* node = lower_.Get(lower_child);
      if (node == nullptr || node->type != EntryType::kDirectory) lower_child = kNoLower;
      if (lower_child != kNoLower && IsOpaqueBeneath(root_fd_, child)) {
        IMGFS_RETURN_IF_ERROR(HiddenByOpaque(child, lower_child));
      }
      IMGFS_RETURN_IF_ERROR(WalkDir(child, lower_child, depth + 1));
    }
    return Status::Ok();
  }

 private:
  // The names in the upper directory `rel`, sorted. The directory is opened without following
  // a symlink on the way or at its end.
  Result<std::vector<std::string>> ReadNames(const std::string& rel) {
    int fd = OpenBeneath(root_fd_, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Changed(rel, errno);
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), &::closedir);
    if (!dir) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "opendir " + Absolute(rel));
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* d = ::readdir(dir.get())) {
      std::string_view name = d->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
      errno = 0;
    }
    if (errno != 0) return Status::FromErrno(errno, "readdir " + Absolute(rel));
    std::sort(names.begin(), names.end());
    return names;
  }

  // D for each child of the lower directory `lower_dir` that the opaque upper directory `rel`
  // does not name (those it names are reported by the walk itself).
  Status HiddenByOpaque(const std::string& rel, uint64_t lower_dir) {
    IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadNames(rel));
    std::unordered_set<std::string_view> in_upper(names.begin(), names.end());
    IMGFS_ASSIGN_OR_RETURN(std::vector<DirEntry> lower_children, lower_.ReadDir(lower_dir));
    for (const DirEntry& e : lower_children) {
      if (in_upper.count(e.name) == 0) {
        changes_.push_back({ChangeKind::kDeleted, Absolute(Join(rel, e.name))});
      }
    }
    return Status::Ok();
  }

  int root_fd_;
  const NodeTable& lower_;
  std::vector<UpperChange> changes_;
};

}  // namespace

char ChangeLetter(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kAdded:
      return 'A';
    case ChangeKind::kChanged:
      return 'C';
    case ChangeKind::kDeleted:
      return 'D';
  }
  return '?';
}

std::string FormatUpperChange(const UpperChange& change) {
  return std::string(1, ChangeLetter(change.kind)) + " " + change.path;
}

Result<std::vector<UpperChange>> ListUpperChanges(const std::string& upper_dir,
                                                  const NodeTable& lower) {
  UniqueFd root(::open(upper_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.IsValid()) return Status::FromErrno(errno, "open upper directory " + upper_dir);
  if (lower.Get(NodeTable::kRootIno) == nullptr) {
    return Status::InvalidArgument("the lower tree has no root");
  }
  Walker walker(root.get(), lower);
  IMGFS_RETURN_IF_ERROR(walker.WalkDir(".", NodeTable::kRootIno, 0));
  std::vector<UpperChange>& changes = walker.changes();
  std::sort(changes.begin(), changes.end(),
            [](const UpperChange& a, const UpperChange& b) { return a.path < b.path; });
  return std::move(changes);
}

}  // namespace imgfs::fs
