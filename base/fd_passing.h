// imgfs — one message on a Unix socket with descriptors beside it (SCM_RIGHTS).
//
// The keeper hands the /dev/fuse descriptor to its daemons this way (fs/fuse/takeover.h) and
// a service manager's descriptor store receives it this way (fs/fuse/fd_store.h); both ends
// go through these two functions so the control-message arithmetic is written once.
//
// Thread-safety: none needed (no state); concurrent calls on one socket interleave messages
// as sendmsg/recvmsg do.
#ifndef IMGFS_BASE_FD_PASSING_H_
#define IMGFS_BASE_FD_PASSING_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"

namespace imgfs {

// The most descriptors one message carries either way.
inline constexpr size_t kMaxPassedFds = 64;

// Sends `bytes` as one message on `sock`, to `to` (`to_len` bytes) when `to` is given (an
// unconnected datagram socket), with `fds` beside it unless empty. Never raises SIGPIPE;
// retries EINTR. InvalidArgument for more than kMaxPassedFds descriptors; else errno's Status
// named by `what`.
Status SendWithFds(int sock, std::string_view bytes, std::span<const int> fds, const char* what,
                   const sockaddr* to = nullptr, socklen_t to_len = 0);

// Receives one message of at most `max_bytes` into `*bytes`, and the descriptors that came
// beside it into `*fds` (close-on-exec; at most kMaxPassedFds). Returns what recvmsg(2)
// returns: the byte count, 0 at the end of a stream, or -1 with errno (EINTR and, with
// MSG_DONTWAIT in `flags`, EAGAIN as recvmsg gives them). A message or control data that did
// not fit is -1 with EMSGSIZE, and the descriptors that did arrive are closed: a peer cannot
// make the receiver act on part of a message.
ssize_t ReceiveWithFds(int sock, size_t max_bytes, std::string* bytes, std::vector<UniqueFd>* fds,
                       int flags = 0);

}  // namespace imgfs

#endif  // IMGFS_BASE_FD_PASSING_H_
