// imgfs — FuseRequestCounts: how many requests of each kind the kernel sent a mount, and what
// the connection negotiated at INIT, for `imgfs stats` and the tests that check the kernel
// caches what it may (a warm `tar` of a read-only mount sends no OPEN, RELEASE or OPENDIR).
//
// Counted where the operations tables serve a request, so a request libfuse answers itself
// (an operation neither table implements, such as FLUSH on a read-only mount) is not counted.
//
// The counts of a kept mount (fs/fuse/takeover.h) outlive its daemons: the keeper creates a
// shared memfd of exactly sizeof(SharedFuseCounts), sealed against resizing
// (CreateSharedFuseCounts), that every daemon inherits (its number in kSharedCountsEnv) and
// maps; a FuseRequestCounts made in such a process counts there, so `imgfs stats` after a
// takeover goes on from where the dead daemon stopped, and the keeper counts the takeovers.
// The mapping is only used when it has exactly that size and cannot shrink; its numbers are
// only numbers.
//
// Thread-safety: Count and the setters may be called from any worker thread at once (relaxed
// atomics: each number is exact, a snapshot taken during traffic is not one instant; the
// shared ones are lock-free, so two processes may update them at once).
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

// The numbers that outlive a daemon, in a mapping shared by a keeper and its daemons.
struct SharedFuseCounts {
  std::array<std::atomic<uint64_t>, static_cast<size_t>(FuseOp::kNumKinds)> counts;
  std::atomic<uint64_t> largest_read;
  std::atomic<uint64_t> takeovers;  // daemons started to take the mount over (a death, a restart)
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared between processes");

// The environment variable naming the inherited descriptor of the shared counts.
inline constexpr char kSharedCountsEnv[] = "IMGFS_KEEPER_COUNTS_FD";

// Creates the shared counts (a memfd, zeroed, sealed at its size; not close-on-exec, so the
// daemons a keeper execs inherit it) and maps it. -1 and nullptr on failure.
int CreateSharedFuseCounts(SharedFuseCounts** mapped);

// Maps the shared counts of `fd`; nullptr unless it is a memfd of exactly
// sizeof(SharedFuseCounts) sealed against shrinking (a mapping that never faults).
SharedFuseCounts* MapSharedFuseCounts(int fd);

// This process's shared counts (kSharedCountsEnv), mapped once; nullptr when there are none
// or the descriptor is not a sealed memfd of the right size.
SharedFuseCounts* InheritedSharedFuseCounts();

class FuseRequestCounts {
 public:
  // Counts into InheritedSharedFuseCounts() when there are some.
  FuseRequestCounts();
  FuseRequestCounts(const FuseRequestCounts&) = delete;
  FuseRequestCounts& operator=(const FuseRequestCounts&) = delete;

  void Count(FuseOp op) {
    block_->counts[static_cast<size_t>(op)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t Get(FuseOp op) const {
    return block_->counts[static_cast<size_t>(op)].load(std::memory_order_relaxed);
  }
  // Takeovers of the mount so far (0 unless the counts are shared with a keeper).
  uint64_t takeovers() const { return block_->takeovers.load(std::memory_order_relaxed); }
  // The counts that are not zero, by FuseOpName.
  std::map<std::string, uint64_t> NonZero() const;

  // A read request of `size_bytes`: remembered when it is the largest so far.
  void NoteReadSize(uint64_t size_bytes);
  uint64_t largest_read_bytes() const {
    return block_->largest_read.load(std::memory_order_relaxed);
  }

  // Set at INIT: the kernel lets the filesystem answer OPEN/OPENDIR with "not needed"
  // (FUSE_CAP_NO_OPEN_SUPPORT / FUSE_CAP_NO_OPENDIR_SUPPORT) and the mount does so.
  void set_no_open(bool v) { no_open_.store(v, std::memory_order_relaxed); }
  bool no_open() const { return no_open_.load(std::memory_order_relaxed); }
  void set_no_opendir(bool v) { no_opendir_.store(v, std::memory_order_relaxed); }
  bool no_opendir() const { return no_opendir_.load(std::memory_order_relaxed); }
  // Set at INIT of a writable mount: write-only handles write past the page cache (the
  // kernel speaks FUSE 7.39, Linux 6.6, or later, and so drops what other handles cached of
  // the range a direct write changes).
  void set_direct_writes(bool v) { direct_writes_.store(v, std::memory_order_relaxed); }
  bool direct_writes() const { return direct_writes_.load(std::memory_order_relaxed); }

 private:
  SharedFuseCounts own_{};
  SharedFuseCounts* block_ = &own_;  // own_, or the keeper's shared counts
  std::atomic<bool> no_open_{false};
  std::atomic<bool> no_opendir_{false};
  std::atomic<bool> direct_writes_{false};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_REQUEST_COUNTS_H_
