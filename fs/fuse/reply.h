// imgfs — what both FUSE operations tables (fs/fuse/fuse_ops.cc, read-only, and
// fs/fuse/fuse_ops_rw.cc, writable) do the same way: count and guard a request, reply an errno
// with its log line, reply entries with their timeouts, and reply xattr values and lists.
//
// This header includes libfuse: only fs/fuse/*.cc include it.
//
// Thread-safety: stateless; each Reply* answers the request it is given, once.
#ifndef IMGFS_FS_FUSE_REPLY_H_
#define IMGFS_FS_FUSE_REPLY_H_

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/status.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/fuse/request_counts.h"

namespace imgfs::fs {

// How long the kernel may cache what never changes (image content: names, attributes,
// negative lookups). A day would do; a year costs nothing more.
inline constexpr double kImmutableTimeoutSeconds = 365.0 * 24 * 3600;

// The session's userdata (fuse_ops.h).
inline FuseContext& ContextOf(fuse_req_t req) {
  return *static_cast<FuseContext*>(fuse_req_userdata(req));
}

// Counts the request, then runs `body`, which must reply; if it throws before replying, the
// request gets ENOMEM or EIO (RunGuarded).
template <typename Body>
void Serve(fuse_req_t req, FuseOp op, Body&& body) noexcept {
  ContextOf(req).requests.Count(op);
  RunGuarded(FuseOpName(op), body, [req](int err) { fuse_reply_err(req, err); });
}

// Replies `err` (> 0); EIO is logged as an error naming `op` and `ino` (0: none).
void ReplyErrno(fuse_req_t req, const char* op, uint64_t ino, int err);

// Replies StatusToErrno(status) (not OK); logged with the Status text, EIO as an error.
void ReplyStatus(fuse_req_t req, const char* op, uint64_t ino, const Status& status);

// "No such name", cached by the kernel like a positive entry (kImmutableTimeoutSeconds): names
// change only through requests the kernel sees.
void ReplyNegativeEntry(fuse_req_t req);

// The entry `id` with `attr`: the name is cached for kImmutableTimeoutSeconds, the attributes
// for `attr_timeout_s`.
fuse_entry_param EntryParam(uint64_t id, const struct stat& attr, double attr_timeout_s);

// Replies EntryParam. Returns fuse_reply_entry's result (non-zero: the request was
// interrupted and the kernel took no lookup reference).
int ReplyEntry(fuse_req_t req, uint64_t id, const struct stat& attr, double attr_timeout_s);

// getxattr/listxattr: the length when `size` is 0, ERANGE when `size` is too small, else the
// bytes of `value`.
void ReplyXattr(fuse_req_t req, std::string_view value, size_t size);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_REPLY_H_
