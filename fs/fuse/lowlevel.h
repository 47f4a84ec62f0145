// imgfs — the libfuse plumbing every imgfs FUSE mount shares: the image mounts
// (fs/fuse/session.h) and the Additional Layer Store (fs/fuse/layer_store_ops.h).
//
// Thread-safety: MountLowLevel and ServeLowLevel on the thread that owns the session;
// libfuse's log messages may come from any thread (kept under a lock); CurrentRequest from
// any thread (it answers for the calling one).
#ifndef IMGFS_FS_FUSE_LOWLEVEL_H_
#define IMGFS_FS_FUSE_LOWLEVEL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "base/status.h"

struct fuse_session;
struct fuse_lowlevel_ops;

namespace imgfs::fs {

// Creates a libfuse session answering with `ops` (`userdata` is their fuse_req_userdata)
// under the mount options `options` ("ro,subtype=imgfs,…"; `debug`: libfuse's -d) and mounts
// it at `target`: a directory, or "/dev/fd/N" to serve a connection that is mounted already.
// The caller owns the session (fuse_session_destroy). The session reads and writes /dev/fuse
// through imgfs's own calls (fuse_session_custom_io: plain read(2) and writev(2), and the
// INIT reply's addition of ServeInitRequest). InvalidArgument when libfuse refuses
// the options; Io naming `mountpoint` and what libfuse logged when the mount fails. libfuse's
// messages go to imgfs's log from the first call on.
Result<fuse_session*> MountLowLevel(const fuse_lowlevel_ops& ops, void* userdata,
                                    const std::string& options, bool debug,
                                    const std::string& target, const std::string& mountpoint);

// Serves `se` with worker threads (started as requests find none idle, at most
// `max_threads`; libfuse's multi-threaded loop made the same way, see the .cc) until it is
// unmounted or exits (fuse_session_exit, from a termination signal or any thread); 0, or
// -errno when reading /dev/fuse failed. Every worker reads the one /dev/fuse descriptor: a
// cloned one (FUSE_DEV_IOC_CLONE) is a file of its own whose unanswered requests the kernel
// fails when the process dies, which a takeover (fs/fuse/takeover.h) could not resend. Each
// request's header is read before libfuse handles it: CurrentRequest. READ replies come from
// the heap: see the .cc.
int ServeLowLevel(fuse_session* se, unsigned max_threads);

// FUSE_UNIQUE_RESEND (include/uapi/linux/fuse.h, Linux 6.9): bit 63 of fuse_in_header.unique
// in a request the kernel sends again after FUSE_NOTIFY_RESEND; the rest is its first unique.
inline constexpr uint64_t kFuseUniqueResend = uint64_t{1} << 63;

// The request being answered: the `unique` of its fuse_in_header without kFuseUniqueResend
// (the kernel's number for it, never reused on the connection while the mount lives, the
// same when sent again), and whether the bit was set.
struct FuseRequestId {
  uint64_t unique = 0;  // 0: not inside a request (or a request whose header was not seen)
  bool resent = false;
  // The kernel asks the daemon to clear the file's setuid bit, and its setgid bit when
  // group-execute is set (fs/fuse/kernel_messages.h: a WRITE, SETATTR, OPEN or CREATE with its
  // kill flag). Set by the kernel where FUSE_HANDLE_KILLPRIV_V2 was negotiated (and on an
  // O_DIRECT write whatever was), read on every session.
  bool drop_suid_sgid = false;
};

// The request the calling thread answers: set by ServeLowLevel's workers for the duration of
// each operation callback (fuse_session_process_buf), on that thread only; {0, false}
// elsewhere (ServeInitRequest, notifications, other threads). A callback that hands work to
// another thread passes it along itself.
FuseRequestId CurrentRequest();

struct Handover;

// Before ServeLowLevel: the kernel's INIT request. Read from `se` and handed to
// `on_connection` (may be empty: a kept mount passes it to its keeper) before libfuse answers
// it; or, for a takeover (`handover` set, fs/fuse/takeover.h), the first daemon's INIT bytes
// fed to libfuse again, and every request that daemon left unanswered asked for again
// (NotifyResend; a kernel without it is logged). OK too when the mount ended meanwhile.
// `handle_killpriv_v2`: the reply takes FUSE_HANDLE_KILLPRIV_V2 when the kernel offers it
// (fs/fuse/kernel_messages.h), and from then on the filesystem must clear setuid and setgid
// bits where FuseRequestId::drop_suid_sgid says. A takeover serves whatever the first
// daemon negotiated: the kernel's requests carry the flags or not.
Status ServeInitRequest(
    fuse_session* se, const Handover* handover,
    const std::function<void(int fuse_fd, std::string_view init_request)>& on_connection,
    bool handle_killpriv_v2);

// Inside the filesystem's init callback, which ServeInitRequest has libfuse call: whether the
// INIT reply takes FUSE_HANDLE_KILLPRIV_V2 (asked for, and offered by the kernel; for a
// takeover, what the first daemon's INIT got). False anywhere else.
bool NegotiatingHandleKillprivV2();

// ",", "\" escaped the way libfuse's option parser wants a value (fsname=…).
std::string EscapeFuseOption(const std::string& value);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_LOWLEVEL_H_
