// imgfs — AdviseHugePages.
#include "base/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

namespace imgfs {
namespace {

// The size of a transparent huge page on x86-64 and arm64 with 4 KiB pages (a PMD).
constexpr uintptr_t kHugePageBytes = uintptr_t{2} << 20;

}  // namespace

void AdviseHugePages(const void* data, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t last = (begin + bytes) & ~(kHugePageBytes - 1);
  if (bytes < kHugePageBytes || first >= last) return;
  // Errors (no THP support, EINVAL on an old kernel) leave the block as it was.
  (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

}  // namespace imgfs
