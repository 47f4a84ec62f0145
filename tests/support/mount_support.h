// imgfs tests — small helpers the end-to-end mount tests share: whether a directory is a
// mount point, and a file's content (or a readable reason) for an assertion.
//
// Thread-safety: the functions are thread-safe.
#ifndef IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_
#define IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_

#include <string>

namespace imgfs::testing {

// Whether `dir` (an absolute path as the kernel reports it) is a mount point of this mount
// namespace, by /proc/self/mountinfo.
bool IsMounted(const std::string& dir);

// The content of `path`, or "<unreadable: REASON>" so a failed comparison shows why.
std::string ReadAll(const std::string& path);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_MOUNT_SUPPORT_H_
