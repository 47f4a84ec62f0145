// imgfs — the upper directory: its conventions and the only ways imgfs touches it.
//
// An upper directory (of `imgfs mount --rw`, of a container) follows the kernel overlayfs
// conventions (Documentation/filesystems/overlayfs.rst), the contract between the writable
// filesystem (fs/writable_fs.h), `imgfs run` and commit (fs/commit.h):
//   - a whiteout is a character device 0/0 named like the deleted entry;
//   - an opaque directory carries trusted.overlay.opaque = "y";
//   - every other trusted.overlay.* xattr (redirect, metacopy, origin, ...) belongs to the
//     kernel; imgfs never writes them, never copies them from an image and never serves them.
// Without root, trusted.* xattrs cannot be set (EPERM: they need CAP_SYS_ADMIN). There the
// upper uses the names of overlayfs's `userxattr` mode (Linux 5.11, for user namespaces):
// user.overlay.opaque = "y" marks an opaque directory; SetOpaqueBeneath writes it when
// trusted.* is refused, and every reader accepts both names. user.overlay.* is reserved like
// trusted.overlay.* (IsOverlayXattr): never served, copied up or settable by a mount's user,
// so neither an image nor a user can make an upper directory opaque behind imgfs's back.
// Whiteouts need no privilege (Linux 5.8 lets anyone mknod a 0/0 character device).
//
// Host paths. An upper (and its work directory) can be changed under imgfs by someone else:
// a container on kernel overlayfs, the owner of a user-given --upper. A directory replaced
// by a symlink must never lead imgfs — which runs as root — outside. So every access to an
// entry of an upper goes through a directory descriptor of its root and a path *relative*
// to it ("." or "a/b/c", no "..", no empty components), resolved with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) — or, on kernels
// before 5.6, one openat(O_PATH | O_NOFOLLOW | O_DIRECTORY) per component — and the final
// operation runs on the resolved parent with a no-follow *at call. A symlink anywhere on the
// way is ELOOP (or ENOTDIR), never followed. Operations on xattrs and modes that have no
// no-follow *at form go through an O_PATH | O_NOFOLLOW descriptor of the entry and its
// /proc/self/fd/N name (what libfuse's passthrough_hp does): that name reaches exactly the
// inode the descriptor holds, never a link target.
//
// The functions below mirror their syscalls: 0 (or a count) on success, -1 with errno set on
// failure, so call sites read like the syscall they replace.
//
// Thread-safety: stateless; safe from any thread.
#ifndef IMGFS_FS_UPPER_UPPER_DIR_H_
#define IMGFS_FS_UPPER_UPPER_DIR_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"

namespace imgfs::fs {

// Prefix of the xattrs overlayfs reserves (hidden from and refused to users).
inline constexpr std::string_view kOverlayXattrPrefix = "trusted.overlay.";
// Marks an upper directory opaque: lower entries below it are hidden.
inline constexpr std::string_view kOpaqueXattr = "trusted.overlay.opaque";
// Kernel overlay features the contract excludes (commit refuses uppers carrying them).
inline constexpr std::string_view kRedirectXattr = "trusted.overlay.redirect";
inline constexpr std::string_view kMetacopyXattr = "trusted.overlay.metacopy";
// The same in overlayfs's userxattr mode (uppers written without root).
inline constexpr std::string_view kUserOverlayXattrPrefix = "user.overlay.";
inline constexpr std::string_view kUserOpaqueXattr = "user.overlay.opaque";
inline constexpr std::string_view kUserRedirectXattr = "user.overlay.redirect";
inline constexpr std::string_view kUserMetacopyXattr = "user.overlay.metacopy";

// True for trusted.overlay.* and user.overlay.* names.
bool IsOverlayXattr(std::string_view name);
// True for the opaque marker under either name.
bool IsOpaqueXattr(std::string_view name);
// True for redirect or metacopy under either name.
bool IsRedirectOrMetacopyXattr(std::string_view name);
// True for an overlayfs whiteout: a character device 0/0.
bool IsWhiteout(const struct stat& st);

// ---- resolution beneath a root ----

// Opens `rel` below `root_fd` with open(2) `flags` (and `mode` with O_CREAT) without
// following any symlink, the last component included (O_NOFOLLOW is implied). Returns the fd,
// or -1 with errno (ELOOP for a symlink, EXDEV/EINVAL for a path that would leave the root).
int OpenBeneath(int root_fd, std::string_view rel, int flags, mode_t mode = 0);

// The parent directory of `rel` resolved beneath `root_fd` as above (an O_PATH descriptor)
// and the last component of `rel`; for "." the root itself (a duplicate) and ".".
// Returns 0, or -1 with errno.
int ResolveParent(int root_fd, std::string_view rel, UniqueFd* parent, std::string* leaf);

// The *at calls on `rel` below `root_fd`: the parent is resolved by ResolveParent and the
// call never follows the last component (AT_SYMLINK_NOFOLLOW where the call has the flag).
int StatBeneath(int root_fd, std::string_view rel, struct stat* out);
int MkdirBeneath(int root_fd, std::string_view rel, mode_t mode);
int MknodBeneath(int root_fd, std::string_view rel, mode_t mode, dev_t dev);
int SymlinkBeneath(std::string_view target, int root_fd, std::string_view rel);
int UnlinkBeneath(int root_fd, std::string_view rel, int flags);
int RenameBeneath(int old_root, std::string_view old_rel, int new_root, std::string_view new_rel,
                  unsigned flags = 0);
// linkat without AT_SYMLINK_FOLLOW: links the entry itself.
int LinkBeneath(int old_root, std::string_view old_rel, int new_root, std::string_view new_rel);
int ChownBeneath(int root_fd, std::string_view rel, uid_t uid, gid_t gid);
int UtimensBeneath(int root_fd, std::string_view rel, const struct timespec times[2]);
ssize_t ReadlinkBeneath(int root_fd, std::string_view rel, char* buf, size_t size);
// chmod of the entry itself; a symlink is EOPNOTSUPP (as overlayfs and fchmodat(2) with
// AT_SYMLINK_NOFOLLOW answer): its mode means nothing and changing "it" must never reach
// its target.
int ChmodBeneath(int root_fd, std::string_view rel, mode_t mode);
// truncate of a regular file (anything else: EISDIR/EINVAL), opened without following.
int TruncateBeneath(int root_fd, std::string_view rel, off_t size);
// What a write or truncate by a caller without CAP_FSETID clears (the kernel's FUSE rule, and
// FUSE_HANDLE_KILLPRIV_V2's): the setuid bit, and the setgid bit when group-execute is set, of
// a regular file. Anything else, or a file without them, is left alone. On the inode `fd`
// holds (O_PATH included), or on `rel` below `root_fd` without following. 0, or -1 with errno;
// `*dropped` (if given) says whether the mode changed.
int DropSuidSgidFd(int fd, bool* dropped = nullptr);
int DropSuidSgidBeneath(int root_fd, std::string_view rel);

// ---- xattrs ----
// On the inode `fd` holds (any kind of descriptor, O_PATH included; a symlink's own xattrs
// for an O_PATH|O_NOFOLLOW descriptor of a symlink). Errors: the errno (positive), 0 on
// success — these serve WritableFs, whose operations answer errnos.
int ListXattrsFd(int fd, std::vector<std::string>* names);
int GetXattrFd(int fd, const std::string& name, std::string* value);
int SetXattrFd(int fd, const std::string& name, std::string_view value, int flags);
int RemoveXattrFd(int fd, const std::string& name);

// The same on `rel` below `root_fd` (opened O_PATH without following). 0 or the errno.
int ListXattrsBeneath(int root_fd, std::string_view rel, std::vector<std::string>* names);
int GetXattrBeneath(int root_fd, std::string_view rel, const std::string& name, std::string* value);
int SetXattrBeneath(int root_fd, std::string_view rel, const std::string& name,
                    std::string_view value, int flags);
int RemoveXattrBeneath(int root_fd, std::string_view rel, const std::string& name);

// True when the directory `rel` below `root_fd` carries trusted.overlay.opaque = "y" or
// user.overlay.opaque = "y".
bool IsOpaqueBeneath(int root_fd, std::string_view rel);
// Marks the directory `rel` below `root_fd` opaque: trusted.overlay.opaque = "y", or, where
// trusted.* xattrs are refused with EPERM (not root), user.overlay.opaque = "y". 0 or the
// errno of the last attempt.
int SetOpaqueBeneath(int root_fd, std::string_view rel);

// Makes this process use the per-component fallback instead of openat2 (tests of the
// fallback, which kernels before 5.6 take).
void DisableOpenat2ForTesting();

}  // namespace imgfs::fs

#endif  // IMGFS_FS_UPPER_UPPER_DIR_H_
