// imgfs — leases: which image each live mount pins.
//
// A lease is ROOT/mounts/<id>.json:
//   {"version":1, "id":"…", "pid":1234, "pid_start":"<starttime from /proc/PID/stat>",
//    "mountpoint":"/mnt/x", "manifest":"sha256:…", "reference":"docker.io/library/x:1",
//    "started":"2026-01-01T00:00:00Z", "upper":"/path/of/the/upper/dir"}
// ("upper" only for a writable mount: the directory holding its changes.)
// While a lease is live, `imgfs rm` refuses the image (unless forced) and garbage collection
// keeps the blobs its manifest reaches. A lease is live while its process runs: a lease whose
// pid is gone — or was reused by another process (different start time) — is stale and is
// removed by ListLiveLeases.
//
// PID namespaces: "pid_ns" records the lease process's pid namespace (the link text of
// /proc/PID/ns/pid, e.g. "pid:[4026531836]"). A store shared by processes in different pid
// namespaces (containers, `unshare -p`) cannot check a foreign pid: kill(2) and /proc speak
// of another process or none. A lease from another namespace is therefore kept as live
// (remove it by id with RemoveLease / `imgfs rm -f` once its mount is gone); a lease without
// "pid_ns" (older files) is checked by pid as before.
//
// Paths that are not UTF-8: JSON holds text only, so a "mountpoint" or "upper" that is not
// valid UTF-8 is written with U+FFFD for display and its exact bytes in "mountpoint_hex" /
// "upper_hex", which readers prefer: the lease round-trips whatever bytes the path has.
//
// Leases are created under the store's exclusive index.lock (deleting one is a single
// unlink), so a GC or rm, which read leases under that lock, sees a lease either before or
// after the change, never half. Lease::Acquire fails with NotFound if the manifest blob is no
// longer in the store (a concurrent rm won), so a mount that got its lease knows its image stays.
//
// Thread-safety: a Lease object belongs to one thread at a time; the free functions may be
// called from any thread and process.
#ifndef IMGFS_CACHE_LEASES_H_
#define IMGFS_CACHE_LEASES_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/status.h"
#include "cache/store.h"
#include "registry/digest.h"

namespace imgfs::cache {

struct LeaseInfo {
  std::string id;
  pid_t pid = 0;
  std::string pid_start;  // field 22 of /proc/PID/stat when the lease was taken
  std::string mountpoint;
  registry::Digest manifest;
  std::string reference;  // full reference the mount was asked for; may be empty
  std::string started;    // RFC 3339
  std::string upper;      // writable mounts: the upper directory; "" when read-only
  std::string pid_ns;     // /proc/PID/ns/pid link text of `pid`; "" when unknown (old lease)
};

// The pid namespace of `pid` as the link text of /proc/PID/ns/pid ("pid:[…]"), or "" if
// unreadable. PidNamespaceOf(0) is the caller's own namespace.
std::string PidNamespaceOf(pid_t pid);

// RAII: the lease file exists from Acquire until Release or destruction.
class Lease {
 public:
  Lease() = default;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  ~Lease();  // Release(), errors logged

  // Writes a lease for the calling process (getpid()) pinning `manifest`. NotFound if the
  // manifest blob is not in the store.
  static Result<Lease> Acquire(const Store& store, const registry::Digest& manifest,
                               const std::string& mountpoint, const std::string& reference,
                               const std::string& upper = "");
  // Same, for another process (e.g. a daemon child that outlives the CLI); `pid` must be
  // alive.
  static Result<Lease> AcquireFor(const Store& store, pid_t pid, const registry::Digest& manifest,
                                  const std::string& mountpoint, const std::string& reference,
                                  const std::string& upper = "");

  // Deletes the lease file (idempotent).
  Status Release();
  // Forgets the lease without deleting it (it then lives as long as its pid).
  void Detach();

  bool held() const { return !path_.empty(); }
  const LeaseInfo& info() const { return info_; }

 private:
  std::string root_;
  std::string path_;
  LeaseInfo info_;
};

// True when `pid` runs and (if `pid_start` is non-empty) started at `pid_start`.
bool ProcessIsAlive(pid_t pid, const std::string& pid_start);
// Field 22 (starttime) of /proc/PID/stat, or "" if unreadable.
std::string ProcessStartTime(pid_t pid);

// Every live lease; stale and unreadable lease files are deleted (under index.lock).
Result<std::vector<LeaseInfo>> ListLiveLeases(const Store& store);
// Same, for a caller already holding index.lock; `stale_removed` counts deleted files.
Result<std::vector<LeaseInfo>> ListLiveLeasesLocked(const Store& store, int* stale_removed);

// Removes the lease file `id` (e.g. `imgfs rm -f` after unmounting). OK if absent.
Status RemoveLease(const Store& store, const std::string& id);

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_LEASES_H_
