// imgfs — FuseRequestCounts: how many requests of each kind the kernel sent a mount, and what
// the connection negotiated at INIT, for `imgfs stats` and the tests that check the kernel
// caches what it may (a warm `tar` of a read-only mount sends no OPEN, RELEASE or OPENDIR).
//
// Counted where the operations tables serve a request, so a request libfuse answers itself
// (an operation neither table implements, such as FLUSH on a read-only mount) is not counted.
//
// Thread-safety: Count and the setters may be called from any worker thread at once (relaxed
// atomics: each number is exact, a snapshot taken during traffic is not one instant).
#ifndef IMGFS_FS_FUSE_REQUEST_COUNTS_H_
#define IMGFS_FS_FUSE_REQUEST_COUNTS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace imgfs::fs {

// The requests the operations tables serve, in the order of struct fuse_lowlevel_ops.
enum class FuseOp : uint8_t {
  kInit,
  kLookup,
  kForget,
  kGetattr,
  kSetattr,
  kReadlink,
  kMknod,
  kMkdir,
  kUnlink,
  kRmdir,
  kSymlink,
  kRename,
  kLink,
  kOpen,
  kRead,
  kWrite,
  kFlush,
  kRelease,
  kFsync,
  kOpendir,
  kReaddir,
  kReleasedir,
  kFsyncdir,
  kStatfs,
  kSetxattr,
  kGetxattr,
  kListxattr,
  kRemovexattr,
  kAccess,
  kCreate,
  kForgetMulti,
  kReaddirplus,
  kNumKinds,  // how many kinds there are; not a request
};

// Lower-case name of the request ("open", "readdirplus", ...), as in the logs and stats.
const char* FuseOpName(FuseOp op);

class FuseRequestCounts {
 public:
  FuseRequestCounts() = default;
  FuseRequestCounts(const FuseRequestCounts&) = delete;
  FuseRequestCounts& operator=(const FuseRequestCounts&) = delete;

  void Count(FuseOp op) {
    counts_[static_cast<size_t>(op)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t Get(FuseOp op) const {
    return counts_[static_cast<size_t>(op)].load(std::memory_order_relaxed);
  }
  // The counts that are not zero, by FuseOpName.
  std::map<std::string, uint64_t> NonZero() const;

  // A read request of `size_bytes`: remembered when it is the largest so far.
  void NoteReadSize(uint64_t size_bytes);
  uint64_t largest_read_bytes() const { return largest_read_.load(std::memory_order_relaxed); }

  // Set at INIT: the kernel lets the filesystem answer OPEN/OPENDIR with "not needed"
  // (FUSE_CAP_NO_OPEN_SUPPORT / FUSE_CAP_NO_OPENDIR_SUPPORT) and the mount does so.
  void set_no_open(bool v) { no_open_.store(v, std::memory_order_relaxed); }
  bool no_open() const { return no_open_.load(std::memory_order_relaxed); }
  void set_no_opendir(bool v) { no_opendir_.store(v, std::memory_order_relaxed); }
  bool no_opendir() const { return no_opendir_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, static_cast<size_t>(FuseOp::kNumKinds)> counts_{};
  std::atomic<uint64_t> largest_read_{0};
  std::atomic<bool> no_open_{false};
  std::atomic<bool> no_opendir_{false};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_REQUEST_COUNTS_H_
