// imgfs — the user namespace of a rootless `imgfs run`, made as podman and rootlesskit make
// theirs: the caller becomes root (uid and gid 0) of a new user namespace, and the
// subordinate ranges /etc/subuid and /etc/subgid give them (subid.h) become ids 1..N, so
// that an image's other users (daemon, _apt, nobody) exist there and `chown`, `apt-get` and
// setuid work inside the container on files the caller owns on the host.
//
// Only root may write a uid_map with more than the caller's own id, so the maps are written
// by the setuid helpers newuidmap and newgidmap (the uidmap package), which check the ranges
// against the same files. The sequence: a helper process is forked first (it stays in the
// caller's namespace, where the setuid bit of newuidmap counts), then this process unshares
// CLONE_NEWUSER and tells the helper through a pipe, the helper runs
// `newuidmap PID 0 UID 1 1 START COUNT ...` and `newgidmap` likewise on this process's pid and
// exits, and this process, now uid 0 with every capability inside the namespace, carries on:
// whatever it mounts or starts afterwards (the mount namespace, the image's FUSE daemon,
// overlayfs, the container's init) belongs to that namespace.
//
// What the namespace confines: its capabilities count only for what it owns (its mount,
// PID, network, IPC and UTS namespaces and the file systems mounted in them); on the
// host's files it is the caller, and ids outside the maps show as nobody (65534).
//
// Thread-safety: EnterUserNamespace must be called while the process has one thread
// (unshare(CLONE_NEWUSER) refuses a threaded process); the rest are pure or read files.
#ifndef IMGFS_FS_RUN_USERNS_H_
#define IMGFS_FS_RUN_USERNS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "fs/run/subid.h"

namespace imgfs::fs::run {

// One line of a uid_map or gid_map: ids [inside, inside + count) are [outside, ...) outside.
struct IdMapping {
  uint32_t inside = 0;
  uint32_t outside = 0;
  uint32_t count = 0;

  bool operator==(const IdMapping&) const = default;
};

// The caller's id as 0, then the ranges one after the other from 1 on; a range that would
// reach past the largest id is cut (the rest dropped).
std::vector<IdMapping> RootlessMappings(uint32_t caller,
                                        const std::vector<SubordinateRange>& ranges);

// The host as the rootless run sees it; tests replace the paths.
struct RootlessHost {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string user_name;  // the login name of uid ("" when the passwd database has none)
  std::string subuid = "/etc/subuid";
  std::string subgid = "/etc/subgid";
  std::string newuidmap = "/usr/bin/newuidmap";
  std::string newgidmap = "/usr/bin/newgidmap";
  std::string max_user_namespaces = "/proc/sys/user/max_user_namespaces";
  // Debian's switch for unprivileged user namespaces (absent on other kernels).
  std::string unprivileged_userns_clone = "/proc/sys/kernel/unprivileged_userns_clone";

  // This process's real ids and name, the standard paths (newuidmap and newgidmap are looked
  // up in /usr/bin, then /bin, where the uidmap package puts them).
  static RootlessHost Current();
};

// The maps for `host`, or what is missing and what to do about it:
//   Unsupported       user namespaces are disabled (max_user_namespaces 0, Debian's switch 0);
//   Unavailable       newuidmap or newgidmap is not installed;
//   PermissionDenied  the user has no range in subuid or subgid.
struct RootlessMaps {
  std::vector<IdMapping> uids;
  std::vector<IdMapping> gids;
};
Result<RootlessMaps> PlanRootlessMaps(const RootlessHost& host);

// Moves this process into a new user namespace with `maps` (see the overview). On success the
// process is uid and gid 0 there; on failure it may be in a namespace without maps and must
// not go on (the error says what newuidmap or newgidmap printed).
Status EnterUserNamespace(const RootlessHost& host, const RootlessMaps& maps);

// Whether this process is in the host's (initial) user namespace: its uid_map maps all ids to
// themselves. Inside another, overlayfs needs the `userxattr` option.
bool InInitialUserNamespace();

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_USERNS_H_
