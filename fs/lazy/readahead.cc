// imgfs — ReadAheadWindow (see readahead.h).
#include "fs/lazy/readahead.h"

#include <algorithm>

namespace imgfs::fs {

bool ReadAheadWindow::Record(uint32_t first, uint32_t last, const Length& length) {
  const bool sequential =
      have_last_ && first + kSequentialSlack >= last_ && first <= std::max(last_ + 1, ahead_end_);
  if (sequential) {
    if (last > last_) {
      if (window_bytes_ >= max_bytes_) {
        for (uint32_t p = last_ + 1; p <= last; ++p) at_cap_bytes_ += length(p);
        if (at_cap_bytes_ >= max_bytes_) {
          at_cap_bytes_ = 0;
          ++full_windows_;
        }
      }
      window_bytes_ = std::min(window_bytes_ * 2, max_bytes_);
    }
  } else {
    window_bytes_ = min_bytes_;
    at_cap_bytes_ = 0;
    full_windows_ = 0;
    ahead_end_ = last + 1;  // a seek: what read-ahead fetched before no longer counts
  }
  if (!sequential || last > last_) last_ = last;
  have_last_ = true;
  return sequential;
}

bool ReadAheadWindow::Ahead(uint32_t last, uint32_t count, const Length& length, uint32_t* from,
                            uint32_t* to) {
  *from = std::max(last + 1, ahead_end_);
  *to = *from;
  // Top up only once less than half a window is scheduled ahead of the read: a reader that
  // advances one small chunk at a time must not cost one small request per chunk.
  uint64_t scheduled = 0;
  for (uint32_t p = last + 1; p < ahead_end_ && p < count; ++p) {
    scheduled += length(p);
    if (scheduled >= window_bytes_ / 2) return false;
  }
  uint64_t budget = 0;
  uint32_t end = last + 1;
  while (end < count) {
    const uint64_t len = length(end);
    if (end > last + 1 && budget + len > window_bytes_) break;
    budget += len;
    ++end;
  }
  *to = end;
  if (end <= *from) return false;
  ahead_end_ = end;
  return true;
}

}  // namespace imgfs::fs
