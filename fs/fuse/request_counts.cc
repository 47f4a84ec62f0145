// imgfs — FuseRequestCounts.
#include "fs/fuse/request_counts.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <new>
#include <string_view>

namespace imgfs::fs {

const char* FuseOpName(FuseOp op) {
  switch (op) {
    case FuseOp::kInit:
      return "init";
    case FuseOp::kLookup:
      return "lookup";
    case FuseOp::kForget:
      return "forget";
    case FuseOp::kGetattr:
      return "getattr";
    case FuseOp::kSetattr:
      return "setattr";
    case FuseOp::kReadlink:
      return "readlink";
    case FuseOp::kMknod:
      return "mknod";
    case FuseOp::kMkdir:
      return "mkdir";
    case FuseOp::kUnlink:
      return "unlink";
    case FuseOp::kRmdir:
      return "rmdir";
    case FuseOp::kSymlink:
      return "symlink";
    case FuseOp::kRename:
      return "rename";
    case FuseOp::kLink:
      return "link";
    case FuseOp::kOpen:
      return "open";
    case FuseOp::kRead:
      return "read";
    case FuseOp::kWrite:
      return "write";
    case FuseOp::kFlush:
      return "flush";
    case FuseOp::kRelease:
      return "release";
    case FuseOp::kFsync:
      return "fsync";
    case FuseOp::kOpendir:
      return "opendir";
    case FuseOp::kReaddir:
      return "readdir";
    case FuseOp::kReleasedir:
      return "releasedir";
    case FuseOp::kFsyncdir:
      return "fsyncdir";
    case FuseOp::kStatfs:
      return "statfs";
    case FuseOp::kSetxattr:
      return "setxattr";
    case FuseOp::kGetxattr:
      return "getxattr";
    case FuseOp::kListxattr:
      return "listxattr";
    case FuseOp::kRemovexattr:
      return "removexattr";
    case FuseOp::kAccess:
      return "access";
    case FuseOp::kCreate:
      return "create";
    case FuseOp::kForgetMulti:
      return "forget_multi";
    case FuseOp::kReaddirplus:
      return "readdirplus";
    case FuseOp::kNumKinds:
      break;
  }
  return "unknown";
}

int CreateSharedFuseCounts(SharedFuseCounts** mapped) {
  *mapped = nullptr;
  const int fd = ::memfd_create("imgfs-counts", MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  void* addr = MAP_FAILED;
  if (::ftruncate(fd, sizeof(SharedFuseCounts)) == 0 &&
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0) {
    addr = ::mmap(nullptr, sizeof(SharedFuseCounts), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (addr == MAP_FAILED) {
    ::close(fd);
    return -1;
  }
  *mapped = new (addr) SharedFuseCounts{};
  return fd;
}

SharedFuseCounts* MapSharedFuseCounts(int fd) {
  struct stat st {};
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size != static_cast<off_t>(sizeof(SharedFuseCounts)) || seals < 0 ||
      (seals & F_SEAL_SHRINK) == 0) {
    return nullptr;
  }
  void* addr = ::mmap(nullptr, sizeof(SharedFuseCounts), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return addr == MAP_FAILED ? nullptr : static_cast<SharedFuseCounts*>(addr);
}

SharedFuseCounts* InheritedSharedFuseCounts() {
  static SharedFuseCounts* const shared = []() -> SharedFuseCounts* {
    const char* text = std::getenv(kSharedCountsEnv);
    if (text == nullptr) return nullptr;
    const std::string_view s(text);
    int fd = -1;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), fd);
    if (ec != std::errc() || end != s.data() + s.size() || fd < 3) return nullptr;
    SharedFuseCounts* mapped = MapSharedFuseCounts(fd);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // not passed on further
    return mapped;
  }();
  return shared;
}

FuseRequestCounts::FuseRequestCounts() {
  if (SharedFuseCounts* shared = InheritedSharedFuseCounts()) block_ = shared;
}

std::map<std::string, uint64_t> FuseRequestCounts::NonZero() const {
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i < block_->counts.size(); ++i) {
    uint64_t n = block_->counts[i].load(std::memory_order_relaxed);
    if (n != 0) out[FuseOpName(static_cast<FuseOp>(i))] = n;
  }
  return out;
}

void FuseRequestCounts::NoteReadSize(uint64_t size_bytes) {
  uint64_t seen = block_->largest_read.load(std::memory_order_relaxed);
  while (size_bytes > seen &&
         !block_->largest_read.compare_exchange_weak(seen, size_bytes, std::memory_order_relaxed)) {
  }
}

}  // namespace imgfs::fs
