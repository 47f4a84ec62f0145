// imgfs — the subordinate id ranges of /etc/subuid and /etc/subgid (subuid(5)), which a
// user without root maps into the user namespace of a rootless `imgfs run` with newuidmap
// and newgidmap.
//
// Each line is `owner:start:count`, owner a login name or a decimal uid; '#' starts a
// comment line and blank lines are skipped, as shadow's newuidmap reads the file. The file is
// edited by administrators and tools, and read here before anything privileged happens, so
// it is treated as hostile: at most kMaxSubordinateFileBytes are read, numbers are decimal
// digits parsed with overflow checks, a range must hold at least one id and end within 32
// bits (below the invalid id 4294967295). A line that breaks a rule is skipped (newuidmap
// refuses such a range too), never fatal for the other lines.
//
// Thread-safety: pure functions (ReadSubordinateRanges reads a file).
#ifndef IMGFS_FS_RUN_SUBID_H_
#define IMGFS_FS_RUN_SUBID_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace imgfs::fs::run {

// The largest subuid/subgid file read (a line per user; a site with 10k users holds a few
// hundred KiB).
inline constexpr size_t kMaxSubordinateFileBytes = 4 << 20;
// The most ranges of one owner kept: the kernel takes at most 340 lines in a uid_map, one of
// which maps the caller.
inline constexpr size_t kMaxSubordinateRanges = 339;

// One range of ids [start, start + count), count > 0, start + count <= 4294967295.
struct SubordinateRange {
  uint32_t start = 0;
  uint32_t count = 0;

  bool operator==(const SubordinateRange&) const = default;
};

// The ranges of the owner named `user_name` or numbered `user_id` in the file's text, in file
// order, at most kMaxSubordinateRanges (an empty `user_name` matches by number only).
std::vector<SubordinateRange> ParseSubordinateRanges(std::string_view text,
                                                     std::string_view user_name, uint32_t user_id);

// ParseSubordinateRanges over the file at `path`. NotFound when it does not exist,
// InvalidArgument when it is larger than kMaxSubordinateFileBytes, errno-based otherwise.
Result<std::vector<SubordinateRange>> ReadSubordinateRanges(const std::string& path,
                                                            std::string_view user_name,
                                                            uint32_t user_id);

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_SUBID_H_
