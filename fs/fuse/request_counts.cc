// imgfs — FuseRequestCounts.
#include "fs/fuse/request_counts.h"

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

std::map<std::string, uint64_t> FuseRequestCounts::NonZero() const {
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i < counts_.size(); ++i) {
    uint64_t n = counts_[i].load(std::memory_order_relaxed);
    if (n != 0) out[FuseOpName(static_cast<FuseOp>(i))] = n;
  }
  return out;
}

void FuseRequestCounts::NoteReadSize(uint64_t size_bytes) {
  uint64_t seen = largest_read_.load(std::memory_order_relaxed);
  while (size_bytes > seen &&
         !largest_read_.compare_exchange_weak(seen, size_bytes, std::memory_order_relaxed)) {
  }
}

}  // namespace imgfs::fs
