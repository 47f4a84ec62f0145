// imgfs — reading /proc/self/mountinfo, the one parser of it.
//
// Its text is hostile input: mount points come from other local users (fusermount3 mounts)
// and escape space, tab, newline and backslash in octal ("\040"). Each line is
// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS";
// a line that does not have that shape is skipped.
//
// Thread-safety: stateless functions.
#ifndef IMGFS_BASE_MOUNTINFO_H_
#define IMGFS_BASE_MOUNTINFO_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imgfs {

struct MountInfoEntry {
  std::string device;         // "MAJ:MIN" as written (see MountDeviceOf for a checked one)
  std::string root;           // unescaped
  std::string mountpoint;     // unescaped
  std::string options;        // per-mount options ("rw,nosuid,…")
  std::string fstype;         // "" when the line has no " - " part
  std::string source;         // unescaped
  std::string super_options;  // per-superblock options ("ro,user_id=0,…")
};

// The entries of `mountinfo`, in its order (later entries are mounted over earlier ones at
// the same mount point).
std::vector<MountInfoEntry> ParseMountInfo(std::string_view mountinfo);

// The entries of this process's mount namespace; empty when /proc/self/mountinfo can't be read.
std::vector<MountInfoEntry> ReadMountInfo();

// The device ("0:52") of the last mount at `mountpoint` in `mountinfo`, or nothing when there
// is none or its device field is not MAJ:MIN in decimal digits (so it never names another
// sysfs path).
std::optional<std::string> MountDeviceOf(std::string_view mountinfo, std::string_view mountpoint);

// Whether `path` (absolute, as the kernel reports it) is a mount point of this namespace.
bool IsMountPoint(std::string_view path);

}  // namespace imgfs

#endif  // IMGFS_BASE_MOUNTINFO_H_
