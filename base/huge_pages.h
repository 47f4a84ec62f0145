// imgfs — AdviseHugePages: back a large, long-lived block with transparent huge pages.
//
// Fresh memory costs a page fault per 4 KiB page (~1.2 us here, a quarter of a mount's CPU
// time); a 2 MiB huge page costs one. With transparent huge pages in "madvise" mode (the usual
// default) the kernel uses them only where asked. Asking for the whole 2 MiB pages inside a
// block never makes it take more memory than its own bytes, as long as the caller fills it
// (a reserved table filled to its size): use it for such blocks only.
//
// Thread-safe (a system call on the caller's own memory).
#ifndef IMGFS_BASE_HUGE_PAGES_H_
#define IMGFS_BASE_HUGE_PAGES_H_

#include <cstddef>

namespace imgfs {

// Asks for huge pages for the 2 MiB-aligned pages wholly inside [data, data + bytes) that are
// not touched yet. A hint: does nothing when the block holds no such page or the kernel says
// no.
void AdviseHugePages(const void* data, size_t bytes);

}  // namespace imgfs

#endif  // IMGFS_BASE_HUGE_PAGES_H_
