// imgfs — FuseSession: mounts an ImageFilesystem with libfuse's low-level API and serves it
// with worker threads (ServeLowLevel, fs/fuse/lowlevel.h) until it is unmounted or the process
// gets SIGTERM/SIGINT/SIGHUP.
//
// Mount options: `ro` (or `rw` when SessionOptions::writable is set), `default_permissions` (the
// kernel checks modes against the image's owners) for root's mounts and mounts with
// allow_other (fs/fuse/mount_access.h says why a user's private mount goes without),
// fsname = the image reference, subtype `imgfs`; `allow_other`, `dev`, `suid` (and any other
// option libfuse accepts) only when asked — libfuse mounts nodev,nosuid by default, as mount(8)
// users expect of FUSE.
//
// Without root: libfuse mounts through the setuid fusermount3; Mount checks first what that
// needs (CheckMountAccess) and fails with what to do when something is missing.
//
// Thread-safety: Mount and Run on one thread; RequestExit from any thread or signal context.
#ifndef IMGFS_FS_FUSE_SESSION_H_
#define IMGFS_FS_FUSE_SESSION_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "fs/core/filesystem.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/fuse/request_counts.h"
#include "fs/fuse/takeover.h"

struct fuse_session;

namespace imgfs::fs {

struct SessionOptions {
  std::string fsname = "imgfs";
  // Extra -o options (allow_other, dev, suid, ...). "ro"/"rw" are handled by the caller.
  std::vector<std::string> mount_options;
  // Worker threads at most (ServeLowLevel; hp's default is 10; reads may block on I/O).
  unsigned max_threads = 16;
  bool debug = false;  // libfuse -d
  // Called once the kernel's INIT request has been handled: the mount answers requests.
  std::function<void()> on_ready;
  // A writable (copy-on-write) mount: served by this view over the filesystem passed to
  // Mount (its lower) with the operations of fs/fuse_ops_rw.cc. Not owned; outlives the
  // session. nullptr: the read-only mount.
  WritableFs* writable = nullptr;
  // Mounts kept by a keeper (fs/fuse/takeover.h), read-only only:
  // Called with the /dev/fuse descriptor and the bytes of the kernel's INIT request once it
  // has arrived and before it is answered (the first daemon hands both to its keeper).
  std::function<void(int fuse_fd, std::string_view init_request)> on_connection;
  // A takeover: Mount serves the live connection of this handover (not owned; outlives the
  // session) instead of mounting, and Run answers its INIT again, asks the kernel to resend
  // what the previous daemon left unanswered, serves, and unmounts (lazily) when a signal
  // ends it. The mountpoint given to Mount must then be canonical: resolving it would ask
  // the mount, which nobody serves yet.
  const Handover* handover = nullptr;
};

class FuseSession {
 public:
  // Creates the session and mounts it at `mountpoint`. `filesystem` is not owned and must
  // outlive the session. InvalidArgument for bad options; CheckMountAccess's error when the
  // host lacks what the mount needs; Io (with libfuse's last error) when the mount fails.
  static Result<std::unique_ptr<FuseSession>> Mount(ImageFilesystem* filesystem,
                                                    const std::string& mountpoint,
                                                    SessionOptions options);
  ~FuseSession();  // unmounts (if still mounted) and destroys the session
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;

  // Serves requests until unmounted or a termination signal arrives. Installs the signal
  // handlers for its duration.
  Status Run();

  // The requests the kernel sent so far and what INIT negotiated (thread-safe to read while
  // Run serves).
  const FuseRequestCounts& request_counts() const { return context_.requests; }

 private:
  FuseSession() = default;
  // Has the kernel's INIT request answered (read, or for a takeover replayed), before the loop.
  Status ServeInit();

  struct SessionDeleter {
    void operator()(fuse_session* se) const;
  };
  std::unique_ptr<fuse_session, SessionDeleter> session_;
  FuseContext context_;
  SessionOptions options_;
  std::string mountpoint_;
  bool mounted_ = false;
};

// Unmounts `mountpoint` (umount2 as root, else `fusermount3 -u`). EINVAL's Status (as umount2
// gives) when `mountpoint` is not a mount point, Unavailable when fusermount3 is missing, Io
// with the reason otherwise.
Status Unmount(const std::string& mountpoint, bool lazy);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_SESSION_H_
