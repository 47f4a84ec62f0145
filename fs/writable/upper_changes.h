// imgfs — what an upper directory changes in the image below it, as `docker diff` shows it.
//
// The upper follows the overlayfs conventions of fs/upper/upper_dir.h. Its entries are
// classified the way docker's overlay driver does (`docker diff`):
//   - a whiteout (char device 0/0)                       → D /path
//   - an entry whose path exists in the lower image       → C /path (a directory copied up
//     because something below it changed is C too, as docker shows `C /etc`)
//   - an entry whose path the lower does not have         → A /path, and so is everything
//     below an added directory (also below a directory that replaced a lower non-directory)
//   - an opaque directory (trusted. or user.overlay.opaque="y"), a directory in the lower
//                                                          → C /dir, plus D /dir/x for every
//     lower child x the upper does not have (the opaque directory hides them)
// The upper root itself is never listed. The result is sorted by path (bytewise).
//
// The upper may be changed by a running container while it is read: the walk resolves every
// entry below a descriptor of the upper root without following any symlink (OpenBeneath /
// StatBeneath), so a directory swapped for a symlink to a host directory is reported as the
// symlink it now is, never walked into. An entry that vanishes or changes kind between being
// listed and being read fails the walk ("changed while it was being read").
//
// Thread-safety: stateless; safe from any thread. `lower` is only read.
#ifndef IMGFS_FS_WRITABLE_UPPER_CHANGES_H_
#define IMGFS_FS_WRITABLE_UPPER_CHANGES_H_

#include <string>
#include <vector>

#include "base/status.h"
#include "fs/tree/node_table.h"

namespace imgfs::fs {

enum class ChangeKind { kAdded, kChanged, kDeleted };

struct UpperChange {
  ChangeKind kind = ChangeKind::kAdded;
  std::string path;  // "/a/b": absolute in the merged tree

  bool operator==(const UpperChange&) const = default;
};

// `docker diff`'s letter of `kind`: 'A', 'C' or 'D'.
char ChangeLetter(ChangeKind kind);
// "A /path" (no newline).
std::string FormatUpperChange(const UpperChange& change);

// The changes `upper_dir` makes to `lower` (the merged tree of the image below it), sorted by
// path. NotFound / an errno status when `upper_dir` cannot be opened; Unavailable when the
// upper changes under the walk; Unsupported for a directory deeper than kMaxUpperDepth.
Result<std::vector<UpperChange>> ListUpperChanges(const std::string& upper_dir,
                                                  const NodeTable& lower);

// Nesting limit of the walk: it recurses once per level, and a hostile container can nest
// directories far deeper than any image does (paths below the root are resolved relative to
// it, so PATH_MAX does not stop it).
inline constexpr int kMaxUpperDepth = 1024;

}  // namespace imgfs::fs

#endif  // IMGFS_FS_WRITABLE_UPPER_CHANGES_H_
