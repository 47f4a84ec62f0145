// imgfs — what imgfs reads from and adds to the FUSE protocol's raw messages where libfuse
// 3.14 does not: FUSE_HANDLE_KILLPRIV_V2 (include/uapi/linux/fuse.h, protocol 7.33, Linux
// 5.11), which libfuse 3.14 neither negotiates nor passes on.
//
// With it the kernel marks its superblock SB_NOSEC: a write(2) asks for security.capability
// (a GETXATTR) only until the file is found clean, not before every write, and a chown sends
// no GETATTR. In exchange the daemon clears the setuid and setgid bits itself where the
// kernel asks (AsksToDropSuidSgid): libfuse does not pass those flags to the operations, so
// they are read from the raw request. security.capability is removed by the upper's own
// filesystem when the daemon writes or truncates the upper file, and by the kernel's
// file_remove_privs (a REMOVEXATTR) before a cached write.
//
// Pure functions over bytes; thread-safe.
#ifndef IMGFS_FS_FUSE_KERNEL_MESSAGES_H_
#define IMGFS_FS_FUSE_KERNEL_MESSAGES_H_

#include <sys/uio.h>

#include <cstdint>
#include <string_view>

namespace imgfs::fs {

// Whether `init_request` (fuse_in_header + fuse_init_in, as read from /dev/fuse) is an INIT
// whose flags offer FUSE_HANDLE_KILLPRIV_V2. False for anything shorter or another opcode.
bool OffersHandleKillprivV2(std::string_view init_request);

// Adds FUSE_HANDLE_KILLPRIV_V2 to the flags of the INIT reply `iov` (libfuse's: iov[0] the
// fuse_out_header, iov[1] the fuse_init_out) when it answers request `init_unique` without an
// error; the bytes are changed in place. Returns whether it did; any other reply is left alone.
bool AddHandleKillprivV2(iovec* iov, int count, uint64_t init_unique);

// Whether `request` (fuse_in_header + body) asks the daemon, under FUSE_HANDLE_KILLPRIV_V2, to
// clear the setuid bit and (when group-execute is set) the setgid bit of the file:
//   WRITE with FUSE_WRITE_KILL_SUIDGID (a writer without CAP_FSETID);
//   SETATTR with FATTR_KILL_SUIDGID (a truncate by such a caller, and any chown of a file);
//   OPEN or CREATE with FUSE_OPEN_KILL_SUIDGID (O_TRUNC by such a caller).
// False for other requests and for anything too short to hold the flag.
bool AsksToDropSuidSgid(std::string_view request);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_KERNEL_MESSAGES_H_
