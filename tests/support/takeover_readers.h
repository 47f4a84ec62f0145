// imgfs tests — the threads that work on a mount while its daemon (or keeper) is killed or
// replaced, and what they record. A test starts each loop below in a thread of its own, each
// with its own slot of a ReaderLog, replaces the daemon, and then waits until every slot
// moved on (AllMovedOn): a request the old daemon read and nobody answered would keep its
// thread waiting forever. Every failed syscall or wrong byte is a failure in words.
//
// The loops run until `stop` is set; `top`, the files or listing, `stop` and the log must
// outlive the threads (the test joins them).
//
// Thread-safety: ReaderLog is thread-safe; each loop is meant for a thread of its own.
#ifndef IMGFS_TESTS_SUPPORT_TAKEOVER_READERS_H_
#define IMGFS_TESTS_SUPPORT_TAKEOVER_READERS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/tree_compare.h"

namespace imgfs::testing {

// Operations done per thread (slot) and in all, and the first failures.
class ReaderLog {
 public:
  static constexpr int kMaxSlots = 8;

  // AllMovedOn waits for slots [0, slots) (at most kMaxSlots).
  explicit ReaderLog(int slots) : slots_(slots) {}

  // The thread of `slot` finished an operation.
  void Done(int slot) {
    ++ops_;
    ++done_[slot];
  }
  // Records a failure (the first 20 are kept, in words).
  void Fail(const std::string& what);

  uint64_t ops() const { return ops_.load(); }
  uint64_t done(int slot) const { return done_[slot].load(); }
  size_t FailureCount() const;
  std::vector<std::string> Failures() const;

  // Every slot's count now, for AllMovedOn.
  std::vector<uint64_t> Snapshot() const;
  // Whether every slot finished an operation since `before` was taken.
  bool AllMovedOn(const std::vector<uint64_t>& before) const;

 private:
  const int slots_;
  std::atomic<uint64_t> ops_{0};
  std::atomic<uint64_t> done_[kMaxSlots] = {};
  mutable std::mutex mu_;
  std::vector<std::string> failures_;
};

// (path, sha256 hex) of each regular file of `listing` (a ParseListing of an expected tree).
std::vector<std::pair<std::string, std::string>> FilesOf(
    const std::map<std::string, TreeEntry>& listing);

// Whole files of `files` (path below `top`, sha256) one after the other from the
// `slot`-th on, each read from the daemon (ReadFromDaemon) and checked byte for byte.
void ReadFilesLoop(const std::string& top,
                   const std::vector<std::pair<std::string, std::string>>& files, int slot,
                   const std::atomic<bool>& stop, ReaderLog* log);

// Rounds of an lstat of every path of `listing` (below `top`; may be empty) and of a name
// that is nowhere, new each round ("/etc/missing-N": never cached, so one LOOKUP at least
// that must say ENOENT). A round is an operation.
void StatLoop(const std::string& top, const std::map<std::string, TreeEntry>& listing, int slot,
              const std::atomic<bool>& stop, ReaderLog* log);

// Walks of the whole tree below `top` (find), not below `skip` when given (a directory
// another thread changes). A walk is an operation.
void WalkLoop(const std::string& top, const std::string& skip, int slot,
              const std::atomic<bool>& stop, ReaderLog* log);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_TAKEOVER_READERS_H_
