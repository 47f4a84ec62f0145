// imgfs — containers: named writable upper layers kept in the store, and their state.
//
// A container is what `imgfs run` leaves behind: ROOT/containers/<name>/ holding
//   container.json   the record below (replaced atomically on every change)
//   upper/           the writable layer, in the kernel overlayfs conventions (a whiteout is
//                    a character device 0/0, an opaque directory has the xattr
//                    trusted.overlay.opaque="y"), so `mount -t overlay` and commit read it
//   work/ rootfs/ …  scratch directories of a live run (overlayfs work dir, mountpoints)
// container.json:
//   {"version":1, "name":"t1", "id":"<64 hex>", "image":"sha256:<manifest digest>",
//    "image_id":"sha256:<config digest>", "reference":"docker.io/library/debian:12",
//    "created":"2026-01-01T00:00:00Z", "command":["sh","-c","…"],
//    "status":"running"|"exited", "exit_code":3, "finished":"…",
//    "pid":1234, "pid_start":"<field 22 of /proc/PID/stat>", "auto_remove":false}
// "pid"/"pid_start" name the `imgfs run` process while the container runs (absent once it
// exited). "image" is the manifest digest exactly as in index.json: the image's blobs are
// kept by `imgfs rm` and garbage collection for as long as the container exists.
//
// Names follow docker's rule [a-zA-Z0-9][a-zA-Z0-9_.-]* and are unique: CreateContainer
// claims the name with mkdir(2), which is atomic, so two concurrent runs with one name
// cannot both get it. A container recorded as running whose process is gone (imgfs run was
// killed) reads as exited with status 137 (its command was killed with it). Removal first
// renames the directory to a hidden name (".rm-…"), so a half-removed container is never
// listed, then deletes it.
//
// Owners and abandoned directories. Every directory in ROOT/containers/ gets an `owner` file
// ({"pid":1234,"pid_start":"<field 22 of /proc/PID/stat>"}) right after it is created, before
// anything else is put in it: CreateContainer writes the claiming `imgfs run` process, and a
// writable mount without --upper writes its daemon into its temporary mount-<16 hex>/ (see
// WriteContainerOwner). A directory without container.json is abandoned — garbage collection
// deletes it — when
//   * its owner process is gone (or its pid was reused: different start time) and no live
//     lease names an upper directory inside it; the owner cannot come back, so this is
//     race-free against a mount or run that is starting; or
//   * it has no readable owner file and was last modified more than kOwnerlessGraceSeconds
//     ago (directories of older imgfs versions, or a process killed in the instant between
//     mkdir and writing the owner file); or
//   * it is a hidden ".rm-…" directory (an interrupted removal) changed more than
//     kOwnerlessGraceSeconds ago.
// A directory with container.json is a container and is never abandoned (`imgfs rm` removes
// it; auto-remove ones go with RemoveAbandonedContainers).
//
// Thread-safety: stateless functions over a Store; safe from any thread and process. One
// container is written by the one `imgfs run` process that owns it (and by removal).
#ifndef IMGFS_CACHE_CONTAINERS_H_
#define IMGFS_CACHE_CONTAINERS_H_

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "registry/digest.h"

namespace imgfs::cache {

inline constexpr int kContainerFormatVersion = 1;

// Exit status recorded for a container whose `imgfs run` process died without recording one
// (it was killed; its command was killed with SIGKILL: 128 + 9).
inline constexpr int kExitStatusKilled = 137;

struct ContainerInfo {
  std::string name;
  std::string id;                    // 64 lower-case hex digits
  registry::Digest image;            // manifest digest
  registry::Digest image_id;         // config digest
  std::string reference;             // what the image was named by (full reference), may be empty
  std::string created;               // RFC 3339 UTC
  std::vector<std::string> command;  // the argv that was run
  bool running = false;
  int exit_code = 0;         // when not running
  std::string finished;      // RFC 3339 when not running; may be empty
  pid_t pid = 0;             // the `imgfs run` process while running
  std::string pid_start;     // its start time (ProcessStartTime)
  bool auto_remove = false;  // removed when the run ends (no --name, or --rm)
};

// True when `name` matches docker's container name rule [a-zA-Z0-9][a-zA-Z0-9_.-]*
// (and is at most 128 characters).
bool IsValidContainerName(std::string_view name);

// ROOT/containers/<name>, and its upper/ directory.
std::string ContainerDir(const Store& store, std::string_view name);
std::string ContainerUpperDir(const Store& store, std::string_view name);

// Creates the container: claims the name, creates upper/ and writes container.json with a
// fresh random id, `created` = now, running = true, pid = the caller (getpid()). An empty
// info.name gets a generated name ("run_" + 12 hex digits). InvalidArgument for a bad name;
// InvalidArgument "Conflict. The container name "/NAME" is already in use by container
// "ID". …" (docker's message) when the name exists. Returns the record as written.
Result<ContainerInfo> CreateContainer(const Store& store, ContainerInfo info);

// Replaces container.json of info.name (atomic). NotFound if the container is gone.
Status WriteContainer(const Store& store, const ContainerInfo& info);

// Marks the container exited with `exit_code` (clears pid; sets finished = now).
Status MarkContainerExited(const Store& store, std::string_view name, int exit_code);

// Reads one container by exact name. NotFound ("No such container: NAME"); Corrupt if its
// container.json does not parse. A running record whose process is gone reads as exited
// (kExitStatusKilled).
Result<ContainerInfo> ReadContainer(const Store& store, std::string_view name);

// Finds a container by exact name, else by full or unique prefix of its id (docker's
// lookup). NotFound "No such container: TEXT"; InvalidArgument when a prefix is ambiguous.
Result<ContainerInfo> FindContainer(const Store& store, std::string_view text);

// Every container, newest first. Directories without a readable container.json (a run that
// is being created, or debris) are skipped.
Result<std::vector<ContainerInfo>> ListContainers(const Store& store);

// Removes the container `text` (name or id) with its upper layer. A running container is
// refused (InvalidArgument "You cannot remove a running container ID. Stop the container
// before attempting removal or force remove") unless `force`: then its `imgfs run` process
// is killed (SIGKILL; its mounts and command go with it) and waited for, up to 10 s.
// Returns the removed record.
Result<ContainerInfo> RemoveContainer(const Store& store, std::string_view text, bool force);

// Removes auto-remove containers whose `imgfs run` process died without removing them (it
// was killed). Returns how many were removed.
Result<int> RemoveAbandonedContainers(const Store& store);

// The owner file of a directory in ROOT/containers/, and how old a directory without one
// must be before it counts as abandoned.
inline constexpr std::string_view kContainerOwnerFile = "owner";
inline constexpr int kOwnerlessGraceSeconds = 60;

// Writes DIR/owner naming the calling process (getpid() and its start time), atomically.
// Call it right after creating DIR, before anything else goes in.
Status WriteContainerOwner(const std::string& dir);

struct AbandonedContainerDir {
  std::string name;    // the entry's name in ROOT/containers/
  std::string path;    // ROOT/containers/<name>
  std::string reason;  // "owner 1234 is gone", "no owner, idle 75 s", "interrupted removal"
};

// The abandoned directories of ROOT/containers/ (rules in the file comment). `live_leases`
// are the live leases (ListLiveLeases); a directory holding one's upper is kept.
std::vector<AbandonedContainerDir> ListAbandonedContainerDirs(
    const Store& store, const std::vector<LeaseInfo>& live_leases);

// Deletes the abandoned directories (each renamed to a hidden ".rm-" name first, so it
// vanishes atomically, then removed). Returns how many were deleted; failures are logged.
int RemoveAbandonedContainerDirs(const Store& store, const std::vector<LeaseInfo>& live_leases);

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_CONTAINERS_H_
