// imgfs — background services of a mount daemon, started once the mount is live and stopped
// before it ends: the control socket that `imgfs stats DIR` talks to, and the enforcement of
// the store's size cap while the mount runs.
//
// Thread-safety: Start and the destructor on the daemon's main thread; the services run on
// their own threads and only read the filesystem's thread-safe counters.
#ifndef IMGFS_FS_MOUNT_SERVICES_H_
#define IMGFS_FS_MOUNT_SERVICES_H_

#include <memory>
#include <string>

#include "base/status.h"
#include "cache/store.h"
#include "fs/filesystem.h"

namespace imgfs::fs {

struct MountServicesOptions {
  cache::Store* store = nullptr;                // not owned; outlives the services
  const ImageFilesystem* filesystem = nullptr;  // not owned; the image (lower) view
  std::string lease_id;                         // the mount's lease (cache/leases.h)
  std::string mountpoint;
  std::string reference;
};

class MountServices {
 public:
  // Starts the services. A failure is reported, but a mount can live without them.
  static Result<std::unique_ptr<MountServices>> Start(const MountServicesOptions& options);
  virtual ~MountServices() = default;

 protected:
  MountServices() = default;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_MOUNT_SERVICES_H_
