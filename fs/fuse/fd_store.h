// imgfs — systemd's file-descriptor store, so that a killed keeper (fs/fuse/takeover.h) is
// survivable when imgfs runs as a service.
//
// The service manager speaks two small protocols, implemented here without libsystemd:
//   - sd_notify(3): datagrams to the AF_UNIX socket named by NOTIFY_SOCKET (a path, or an
//     abstract address written "@name"): "READY=1", and "FDSTORE=1\nFDNAME=<name>" with
//     descriptors beside it (SCM_RIGHTS), which the manager keeps for the service (up to its
//     FileDescriptorStoreMax=) across restarts of the service's process; "FDSTOREREMOVE=1\n
//     FDNAME=<name>" drops them.
//   - sd_listen_fds(3): a process the manager starts again gets them back from descriptor 3 on,
//     announced by LISTEN_PID (its pid), LISTEN_FDS (how many) and LISTEN_FDNAMES (their names,
//     separated by ':').
//
// A keeper stores the /dev/fuse descriptor (kFuseFdName), a memfd holding the state a takeover
// needs (kStateFdName: EncodeKeptState: the mountpoint, what the mount serves, the pinned image,
// the INIT bytes, the lease), the request counts it shares with its daemons (kCountsFdName),
// and its KeeperOptions::kept_fds under their own names.
// What comes back is hostile input: the names and the state are parsed bounded, and a
// connection is only taken over when the state names this mountpoint and the connection is
// alive (ConnectionGone false). The keeper started again then serves what the state says it
// served (fs/fuse/kept_config.h), whatever its own command line says; a state of format 1
// (written by an imgfs before KeptConfig: the mountpoint alone) is still taken over, with the
// command line's configuration as then.
//
// Thread-safety: the functions read and change the environment (LISTEN_*): call them from one
// thread, before any other thread runs (the keeper and `imgfs mount` are single-threaded
// there).
#ifndef IMGFS_FS_FUSE_FD_STORE_H_
#define IMGFS_FS_FUSE_FD_STORE_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "fs/fuse/kept_config.h"
#include "fs/fuse/takeover.h"

namespace imgfs::fs {

// The names of a kept mount's entries in the store.
inline constexpr std::string_view kFuseFdName = "imgfs-fuse";
inline constexpr std::string_view kStateFdName = "imgfs-state";
// The request counts the keeper shares with its daemons (fs/fuse/request_counts.h).
inline constexpr std::string_view kCountsFdName = "imgfs-counts";

// At most this many descriptors are taken from LISTEN_FDS.
inline constexpr size_t kMaxListenFds = 64;
// The largest state memfd read back.
inline constexpr size_t kMaxKeptStateBytes = 64 * 1024;

// The service manager's socket (NOTIFY_SOCKET), "" when not run by one.
std::string ServiceManagerSocket();

// Sends `state` (newline-separated assignments) to the manager at `socket` (a path or
// "@abstract"), with `fds` beside it (SCM_RIGHTS). InvalidArgument for an unusable address.
Status NotifyServiceManager(const std::string& socket, std::string_view state,
                            const std::vector<int>& fds = {});

// Whether `name` is a name the manager accepts for a stored descriptor: 1 to 255 printable
// ASCII characters, no ':' (LISTEN_FDNAMES separates with it).
bool ValidFdName(std::string_view name);

// LISTEN_FDNAMES for `count` descriptors: exactly `count` valid names separated by ':'.
// Corrupt on anything else (at most kMaxListenFds names).
Result<std::vector<std::string>> ParseListenFdNames(std::string_view names, size_t count);

// The descriptors the manager passed this process (LISTEN_PID == getpid()): each with its
// name, close-on-exec from now on; the LISTEN_* variables are removed. Empty when none were
// passed (no LISTEN_PID, or another process's). Corrupt when the variables are malformed.
Result<std::vector<std::pair<std::string, UniqueFd>>> TakeListenFds();

// A kept mount's state, as read back from the store.
struct KeptState {
  std::string mountpoint;
  // What the mount serves; nullopt for a state of format 1, which an imgfs before this one
  // wrote with the mountpoint alone (the keeper started again serves its command line's
  // configuration then, as that imgfs did).
  std::optional<KeptConfig> config;
  Handover handover;  // its fuse_fd is fuse_fd.get()
  UniqueFd fuse_fd;
};

// The state memfd's content, format 2: "IMGFS-KEPT 2\n", "CONFIG <n>\n" and the n bytes of
// EncodeKeptConfig(config), then a start record (EncodeStartRecord) whose configuration is the
// mountpoint and whose handover is `handover` (its fuse_fd unused). InvalidArgument when
// ParseKeptState would refuse it: `config` does not encode, handover.image is not pinned by a
// manifest digest (IsPinnedImage), or the whole exceeds kMaxKeptStateBytes.
Result<std::string> EncodeKeptState(std::string_view mountpoint, const KeptConfig& config,
                                    const Handover& handover);
// The inverse, its handover referring to `fuse_fd`; also of format 1: "IMGFS-KEPT 1\n" and
// the start record alone (config nullopt). Corrupt on anything else: another tag, a start
// record that is not a takeover's, a configuration ParseKeptConfig refuses, in format 2 an
// image not pinned, more than kMaxKeptStateBytes.
Result<KeptState> ParseKeptState(std::string_view text, UniqueFd fuse_fd);

// Whether `image` (Handover::image) names an image by its manifest digest: "sha256:<hex>", or
// a reference with "@sha256:<hex>" (a tag beside it is only a name).
bool IsPinnedImage(std::string_view image);

// A memfd holding `text` (sealed against writes: the store's copy cannot change).
Result<UniqueFd> KeptStateMemfd(std::string_view text);

// What a keeper the manager started again takes over.
struct StoredConnection {
  KeptState state;  // state.handover refers to state.fuse_fd, the live /dev/fuse descriptor
  UniqueFd counts;  // kCountsFdName (KeeperOptions::resume_counts_fd); may be absent
  std::vector<std::pair<std::string, UniqueFd>> extra;  // the other stored descriptors
  // Not OK when the connection is live but its state is missing, unreadable or malformed: no
  // daemon can serve it (ServeUnusableConnection). Then only state.fuse_fd and
  // state.mountpoint (the caller's) are set.
  Status unusable;
  std::vector<std::string> names;  // every entry the manager passed, to drop them at the end
};

// The live connection of `mountpoint` the manager passed back (TakeListenFds), nullopt when it
// passed none (or when the connection has ended or belongs to another mountpoint: then the
// manager is told to drop the entries, and the caller mounts anew). A live connection whose
// state is missing or malformed comes back with `unusable` set. Corrupt when a state came
// without its connection.
Result<std::optional<StoredConnection>> RecoverStoredConnection(const std::string& mountpoint);

// A connection RecoverStoredConnection found unusable: the service tells the manager READY=1
// (it runs, and the store keeps the connection meanwhile), logs why, and answers every request
// with EIO until the mount is unmounted (`imgfs umount DIR`) or the service is stopped
// (ServeErrorsUntilUnmounted), never leaving readers waiting; then the store's entries are
// dropped. Returns kKeeperFailed.
int ServeUnusableConnection(StoredConnection stored);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_FD_STORE_H_
