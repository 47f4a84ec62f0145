// imgfs tests — small helpers the end-to-end mount tests share: whether a directory is a
// mount point, a file's content (or a readable reason) for an assertion, a keeper's daemon,
// reads that bypass the page cache, and the directory names of a layer store.
//
// Thread-safety: the functions are thread-safe.
#ifndef IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_
#define IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_

#include <sys/types.h>

#include <string>
#include <string_view>

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

// Standard base64 of `in`, with padding: the name a layer store gives the directory of an
// image reference (fs/layer_store/layer_store.h).
std::string Base64(std::string_view in);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_
