// imgfs — the user a command of `imgfs run` runs as: docker's USER[:GROUP] rules over the
// image's /etc/passwd and /etc/group.
//
// Ids come from untrusted text (the image's files, its config's User, the -u flag). Each is
// parsed with from_chars into 32 bits and checked against kMaxId: a value that does not fit
// is an error naming it, never a value truncated to another id (4294967296 used to become
// uid 0, root). Lines of passwd/group that are not used are never interpreted, so a bad line
// fails only a run that asks for it.
//
// Thread-safety: pure functions.
#ifndef IMGFS_FS_RUN_IMAGE_USER_H_
#define IMGFS_FS_RUN_IMAGE_USER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace imgfs::fs::run {

// The largest uid/gid accepted: 2^32 - 2. (uid_t)-1 = 4294967295 means "unchanged" to
// setresuid(2)/chown(2), so it is no user either (docker/runc refuse it too).
inline constexpr uint32_t kMaxId = 4294967294u;

// A decimal id in [0, kMaxId]; InvalidArgument naming `what` otherwise (empty, signs,
// non-digits, out of range — also for 20+ digit values).
Result<uint32_t> ParseId(std::string_view text, std::string_view what);

// One line of /etc/passwd or /etc/group, fields kept as text: ids are parsed when the entry
// is used (ParseId), so that a malformed line fails only a run that selects it.
struct PasswdEntry {
  std::string name;
  std::string uid;
  std::string gid;
  std::string home;
};

struct GroupEntry {
  std::string name;
  std::string gid;
  std::vector<std::string> members;
};

// Parses the text of /etc/passwd (lines with fewer than 7 fields are skipped).
std::vector<PasswdEntry> ParsePasswd(std::string_view text);
// Parses the text of /etc/group (lines with fewer than 4 fields are skipped).
std::vector<GroupEntry> ParseGroups(std::string_view text);

// What the command runs as.
struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
  std::string home = "/";
};

// docker's rules for `spec` = USER[:GROUP] (empty: root): names are looked up in the
// image's passwd and group text, numeric ids are accepted whether listed or not;
// supplementary groups come from /etc/group when no GROUP is given. NotFound for an unknown
// name; InvalidArgument for an id out of range (in the spec or in the selected entries).
Result<ExecUser> ResolveUser(std::string_view spec, std::string_view passwd_text,
                             std::string_view group_text);

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_IMAGE_USER_H_
