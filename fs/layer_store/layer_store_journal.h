// imgfs — the numbering of an Additional Layer Store mount's directories, kept where a
// daemon that takes the mount over (fs/fuse/takeover.h) finds it again.
//
// Reference directories get 2, 3, … and layer directories slots 1, 2, … in the order they
// are first looked up (fs/fuse/layer_store_ops.h makes node ids of them). The kernel keeps
// those node ids, so the next daemon must give every name the same number: each new number
// is appended to a journal before it is handed out, and a new daemon reads the journal back
// (Load). The journal is a file the keeper holds for the life of the mount (a memfd made
// before the first daemon is forked), so it ends with the mount and leaves nothing behind.
//
// Journal lines (text, one write(2) each):
//   R <reference element>\n                     the next reference directory
//   L <reference directory> <digest element>\n  the next layer slot
// Both elements are checked as a lookup checks them (DecodeRefElement, Digest::Parse), the
// directory number must be one already recorded. A last line without its newline is what a
// daemon killed in the middle of a write leaves: it was never handed out, and is dropped.
//
// Thread-safety: every method may be called from any thread (one internal lock, held across
// the journal's write so that numbers reach the journal in order).
#ifndef IMGFS_FS_LAYER_STORE_LAYER_STORE_JOURNAL_H_
#define IMGFS_FS_LAYER_STORE_LAYER_STORE_JOURNAL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"

namespace imgfs::fs {

class LayerStoreJournal {
 public:
  // Numbers come from the journal `journal_fd` (not owned; open for reading and writing at
  // its end, or -1 for none: numbers then live in memory only).
  explicit LayerStoreJournal(int journal_fd = -1) : journal_fd_(journal_fd) {}
  LayerStoreJournal(const LayerStoreJournal&) = delete;
  LayerStoreJournal& operator=(const LayerStoreJournal&) = delete;

  // Reads the numbers the journal holds (an earlier daemon's), from its start, and leaves its
  // offset at the end of the last whole line. Corrupt for a line that is not one of the
  // above (the numbers before it are kept) or a journal over kMaxJournalBytes.
  Status Load();
  // The same from bytes (for tests and the fuzz target): what Load does after reading.
  Status LoadText(std::string_view text);

  // The number of the reference directory `element` (a name DecodeRefElement accepts),
  // recorded if new. Unavailable when too many directories, or the journal write fails.
  Result<uint64_t> RefDir(std::string_view element);
  // The element of reference directory `ino`, if recorded.
  std::optional<std::string> RefName(uint64_t ino) const;

  struct Layer {
    uint64_t ref_dir = 0;
    std::string ref_element;
    std::string digest_element;
  };
  // The slot of layer `digest_element` in reference directory `ref_dir` (recorded), new or
  // not. NotFound for an unrecorded `ref_dir`.
  Result<uint64_t> Slot(uint64_t ref_dir, std::string_view digest_element);
  std::optional<Layer> SlotAt(uint64_t slot) const;
  // The layers recorded below `ref_dir`: (slot, digest element), in slot order.
  std::vector<std::pair<uint64_t, std::string>> LayersIn(uint64_t ref_dir) const;

  size_t ref_dir_count() const;
  size_t slot_count() const;

  // More directories than fit below 2^32 node ids (fs/fuse/layer_store_ops.cc), and a
  // journal far beyond what a store's images reach (a line is at most ~1.6 KiB).
  static constexpr uint64_t kMaxRefDirs = (uint64_t{1} << 32) - 2;
  static constexpr uint64_t kMaxSlots = (uint64_t{1} << 31);
  static constexpr size_t kMaxJournalBytes = size_t{256} << 20;

 private:
  Status Append(const std::string& line) IMGFS_REQUIRES(mu_);
  Status ParseLine(std::string_view line) IMGFS_REQUIRES(mu_);

  const int journal_fd_;
  mutable Mutex mu_;
  std::map<std::string, uint64_t, std::less<>> ref_dirs_ IMGFS_GUARDED_BY(mu_);  // name → ino
  std::vector<std::string> ref_names_ IMGFS_GUARDED_BY(mu_);                     // ino - 2 → name
  // (ref dir, digest element) → slot
  std::map<std::pair<uint64_t, std::string>, uint64_t> slot_of_ IMGFS_GUARDED_BY(mu_);
  std::vector<Layer> slots_ IMGFS_GUARDED_BY(mu_);  // slot - 1
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_STORE_LAYER_STORE_JOURNAL_H_
