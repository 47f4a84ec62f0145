// imgfs tests — small helpers the end-to-end mount tests share: whether a directory is a
// mount point, a file's content (or a readable reason) for an assertion, a keeper's daemon,
// and reads that bypass the page cache.
//
// Thread-safety: the functions are thread-safe.
#ifndef IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_
#define IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_

#include <sys/types.h>

#include <string>

namespace imgfs::testing {

// Whether `dir` (an absolute path as the kernel reports it) is a mount point of this mount
// namespace, by /proc/self/mountinfo.
bool IsMounted(const std::string& dir);

// The content of `path`, or "<unreadable: REASON>" so a failed comparison shows why.
std::string ReadAll(const std::string& path);

// The first pid in /proc/PID/task/PID/children: a keeper's daemon (0 if none).
pid_t ChildOf(pid_t pid);

// The whole content of the open file `fd`, read after dropping its cached pages (so the read
// goes to the daemon). Sets *error on a failed syscall.
std::string ReadFromDaemon(int fd, std::string* error);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_
