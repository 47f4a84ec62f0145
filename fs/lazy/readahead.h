// imgfs — ReadAheadWindow: sequential-read detection and the read-ahead window of a lazily
// read layer, shared by fs/fetcher.h (eStargz / zstd:chunked chunks) and
// fs/indexed_fetcher.h (checkpoint pieces of plain layers).
//
// Positions are the reader's fetch units in blob order (chunks or pieces); `length(p)` gives
// position p's compressed bytes. A read of positions [first, last] is sequential when it
// starts at most kSequentialSlack positions before the furthest position read so far and not
// after what read-ahead already scheduled (the kernel's read-ahead and several FUSE threads
// deliver a sequential reader's requests slightly out of order). A sequential read that goes
// further doubles the window, from `min_bytes` up to `max_bytes` (after mountpoint-s3's
// prefetcher); any other read resets it. Once at the cap, every `max_bytes` read sequentially
// counts one full window (full_windows()): the readers' signal to switch to streaming.
//
// Thread-safety: none; the owning reader calls it under its own lock.
#ifndef IMGFS_FS_LAZY_READAHEAD_H_
#define IMGFS_FS_LAZY_READAHEAD_H_

#include <cstdint>
#include <functional>

namespace imgfs::fs {

class ReadAheadWindow {
 public:
  using Length = std::function<uint64_t(uint32_t position)>;
  static constexpr uint32_t kSequentialSlack = 8;

  ReadAheadWindow(uint64_t min_bytes, uint64_t max_bytes)
      : min_bytes_(min_bytes), max_bytes_(max_bytes), window_bytes_(min_bytes) {}

  // Records a read of positions [first, last]; returns whether it was sequential.
  bool Record(uint32_t first, uint32_t last, const Length& length);

  // For a sequential read that ended at `last`: positions [*from, *to) to fetch ahead — the
  // window's worth of bytes after `last` (at least one position; `count` positions in all),
  // less what was scheduled before. Nothing while at least half a window is still scheduled
  // ahead of `last`, so each top-up is at least half a window (small chunks would otherwise
  // cost a request each). Marks them scheduled. false when there is nothing new.
  bool Ahead(uint32_t last, uint32_t count, const Length& length, uint32_t* from, uint32_t* to);

  int full_windows() const { return full_windows_; }
  // Read-ahead was scheduled up to (excluding) this position.
  uint32_t ahead_end() const { return ahead_end_; }

 private:
  uint64_t min_bytes_;
  uint64_t max_bytes_;
  uint32_t last_ = 0;  // the furthest position read sequentially
  bool have_last_ = false;
  uint64_t window_bytes_;
  uint32_t ahead_end_ = 0;
  int full_windows_ = 0;
  uint64_t at_cap_bytes_ = 0;  // bytes read sequentially since the window reached its cap
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_READAHEAD_H_
