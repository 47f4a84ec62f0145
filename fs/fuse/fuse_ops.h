// imgfs — the libfuse low-level operations that serve an ImageFilesystem.
//
// Every callback is noexcept, calls the ImageFilesystem core, and replies exactly once; an
// exception never unwinds into libfuse (bad_alloc → ENOMEM, anything else → EIO, logged).
// Status → errno is one switch (StatusToErrno). The content of a mounted image never
// changes, so entries, attributes and pages may be cached by the kernel for as long as it
// likes (long timeouts, keep_cache); negative lookups are cached too.
//
// The session's userdata must be the FuseContext. This header does not include libfuse: only
// fs/fuse_ops.cc, fs/fuse_ops_rw.cc and fs/session.cc do.
#ifndef IMGFS_FS_FUSE_FUSE_OPS_H_
#define IMGFS_FS_FUSE_FUSE_OPS_H_

#include <exception>
#include <functional>
#include <new>
#include <string>

#include "base/log.h"
#include "base/status.h"
#include "fs/fuse/request_counts.h"

struct fuse_lowlevel_ops;
struct fuse_session;

namespace imgfs::fs {

// errno for a non-OK Status (EIO for data errors: a file whose bytes cannot be fetched or
// verified reads as EIO, never ENOENT).
int StatusToErrno(const Status& status);

// The operations table (static storage).
const fuse_lowlevel_ops& ImageFilesystemOps();
// The operations table of a writable (copy-on-write) mount, fs/fuse_ops_rw.cc: the userdata's
// `writable` serves every request.
const fuse_lowlevel_ops& WritableFilesystemOps();

// Userdata handed to fuse_session_new: the filesystem plus a hook called once the kernel's
// INIT request has been answered (the mount then serves requests).
class ImageFilesystem;
class WritableFs;
struct FuseContext {
  ImageFilesystem* filesystem = nullptr;
  WritableFs* writable = nullptr;   // set for writable mounts (then the lower is `filesystem`)
  fuse_session* session = nullptr;  // for kernel cache invalidations of writable mounts
  std::function<void()> on_init;
  std::string mountpoint;  // absolute; INIT raises its read-ahead (fs/fuse/read_ahead.h)
  // Every request either operations table serves, and what INIT negotiated.
  FuseRequestCounts requests;
};

// Calls the FuseContext's on_init hook (userdata of the INIT callback), if any; an exception
// is logged, never passed on. Both operation tables' Init call it last.
void RunInitHook(void* userdata) noexcept;

// Runs `body`, which must reply to its request; if it throws before replying, `reply_err`
// replies ENOMEM (bad_alloc) or EIO (anything else), logged with `op`. Every callback of both
// operation tables runs through this, so no exception unwinds into libfuse.
template <typename Body, typename ReplyErr>
void RunGuarded(const char* op, Body&& body, ReplyErr&& reply_err) noexcept {
  try {
    body();
  } catch (const std::bad_alloc&) {
    IMGFS_LOG(kError) << op << ": out of memory";
    reply_err(ENOMEM);
  } catch (const std::exception& e) {
    IMGFS_LOG(kError) << op << ": unexpected exception: " << e.what();
    reply_err(EIO);
  } catch (...) {
    IMGFS_LOG(kError) << op << ": unexpected exception";
    reply_err(EIO);
  }
}

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_FUSE_OPS_H_
