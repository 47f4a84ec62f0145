// imgfs — background services of a mount daemon (see mount_services.h).
#include "fs/mount_services.h"

namespace imgfs::fs {
namespace {

class NoServices : public MountServices {};

}  // namespace

Result<std::unique_ptr<MountServices>> MountServices::Start(const MountServicesOptions& options) {
  (void)options;
  return std::unique_ptr<MountServices>(new NoServices());
}

}  // namespace imgfs::fs
