// imgfs — where `imgfs mount --restart DIR` finds the keeper (fs/fuse/takeover.h) of a mount
// that has no mount lease naming it: a layer store (`imgfs layer-store DIR`).
//
// The keeper writes STORE/layer-stores/<sha256(DIR) prefix>.keeper ("<pid> <pid start
// time>\n<DIR>") while it runs and removes it when it ends; a record whose process is gone (a
// killed keeper) or whose start time differs (a reused pid) is ignored. The record only says
// where to send the signal: kill(2)'s permission rule stays the only authorisation.
//
// Thread-safety: the functions are thread-safe (files are replaced atomically).
#ifndef IMGFS_FS_FUSE_KEEPER_RECORD_H_
#define IMGFS_FS_FUSE_KEEPER_RECORD_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "cache/store.h"

namespace imgfs::fs {

struct KeeperRecord {
  pid_t pid = 0;
  std::string pid_start;  // cache::ProcessStartTime of pid
  std::string mountpoint;
};

// The record's path for the mount at `mountpoint`.
std::string KeeperRecordPath(const cache::Store& store, const std::string& mountpoint);

// Records the calling process as the keeper of `mountpoint`.
Status WriteKeeperRecord(const cache::Store& store, const std::string& mountpoint);
// Removes the record of `mountpoint` when it names the calling process.
void RemoveKeeperRecord(const cache::Store& store, const std::string& mountpoint);

// The record's text, and its inverse (Corrupt on anything else; at most 4 KiB).
std::string EncodeKeeperRecord(const KeeperRecord& record);
Result<KeeperRecord> ParseKeeperRecord(std::string_view text);

// The live keeper of `mountpoint`, nullopt when none is recorded (or it is gone).
std::optional<KeeperRecord> FindKeeperRecord(const cache::Store& store,
                                             const std::string& mountpoint);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_KEEPER_RECORD_H_
