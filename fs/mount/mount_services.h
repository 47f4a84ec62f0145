// imgfs — background services of a mount daemon, started once the mount is live and stopped
// before it ends:
//  - last use: the image's manifest blob is touched at start (cache/usage.h orders images
//    by it for `imgfs cache prune`);
//  - the control socket STORE/control/<lease id>.sock that `imgfs stats DIR` talks to (the
//    CLI finds it through the lease whose mountpoint is DIR). Protocol: the client connects
//    and sends one line, "stats\n"; the daemon answers with one JSON object and closes:
//      {"version":1, "mountpoint":"/mnt/x", "reference":"…", "lease":"…", "pid":1234,
//       "manifest":"sha256:…", "tree":"stored"|"merged", "bytes_read":N, "read_errors":N,
//       "layers":[{"digest":"sha256:…", "size":N (from the manifest), "lazy":bool,
//                  "bytes_fetched":N, "requests":N, "chunks_fetched":N, "cache_hits":N,
//                  "errors":N}, …bottom first],
//       "fuse":{"requests":{"lookup":N, "read":N, …non-zero only}, "no_open":bool,
//               "no_opendir":bool, "largest_read_bytes":N}}
//    The socket's file is removed when the services stop; a crashed daemon's is removed by
//    garbage collection (it names no live lease);
//  - the size cap: when STORE/config.json has "max_size" (`imgfs cache set --max-size`),
//    every "prune_interval_seconds" (default 60) the store size is measured and, when above
//    the cap, cache::Prune brings it under (never touching what a live mount pins). The
//    config is re-read on every check and checked at once when config.json changes (the
//    thread looks at its mtime every second), so a change applies to running mounts. A
//    round is skipped (not waited for) while a pull or collection holds gc.lock.
//
// Thread-safety: Start and the destructor on the daemon's main thread; the services run on
// their own threads and only read the filesystem's thread-safe counters.
#ifndef IMGFS_FS_MOUNT_MOUNT_SERVICES_H_
#define IMGFS_FS_MOUNT_MOUNT_SERVICES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/status.h"
#include "cache/store.h"
#include "cache/usage.h"
#include "fs/core/filesystem.h"

namespace imgfs::fs {

// What the FUSE session reports of itself (fs/fuse/request_counts.h): requests by kind
// ("open", "read", …; non-zero counts only) and what INIT negotiated.
struct FuseSessionStats {
  std::map<std::string, uint64_t> requests;
  bool no_open = false;
  bool no_opendir = false;
  uint64_t largest_read_bytes = 0;
  uint64_t takeovers = 0;  // of a kept mount: daemons that took it over (request_counts.h)
};

struct MountServicesOptions {
  cache::Store* store = nullptr;                // not owned; outlives the services
  const ImageFilesystem* filesystem = nullptr;  // not owned; the image (lower) view
  std::string lease_id;                         // the mount's lease (cache/leases.h)
  std::string mountpoint;
  std::string reference;
  // The merged tree came from the store (PreparedImage::tree_stored): stats say "tree":"stored",
  // else "merged" (merged when the mount started).
  bool tree_stored = false;
  // The session's numbers for "fuse" in stats (thread-safe; called from the services'
  // threads). Empty: stats have no "fuse".
  std::function<FuseSessionStats()> fuse_stats;
};

class MountServices {
 public:
  // Starts the services. A failure is reported, but a mount can live without them.
  static Result<std::unique_ptr<MountServices>> Start(const MountServicesOptions& options);
  virtual ~MountServices() = default;

 protected:
  MountServices() = default;
};

// STORE/control/<lease id>.sock
std::string ControlSocketPath(const cache::Store& store, const std::string& lease_id);

// Sends "stats" to a daemon's control socket and returns its JSON reply. Unavailable when
// nothing answers within `timeout_ms`.
Result<std::string> RequestMountStats(const std::string& socket_path, int timeout_ms = 5000);

// The cache::IndexChunkLister that decodes stored layer indexes (fs/layer/layer_index.h):
// what `imgfs cache du|gc|prune` and the size cap use to know which chunks are referenced.
cache::IndexChunkLister LayerIndexChunkLister();

}  // namespace imgfs::fs

#endif  // IMGFS_FS_MOUNT_MOUNT_SERVICES_H_
