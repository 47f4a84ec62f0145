// imgfs — the journal of what the kernel holds of a WritableFs, kept where a daemon that takes
// a `--rw --driver fuse` mount over (fs/fuse/takeover.h) finds it again.
//
// The kernel keeps node ids, lookup counts and open file handles across a daemon's death; a
// WritableFs allocates all three as it goes (fs/writable/writable_fs.h), and numbers the
// upper's inodes (st_ino) in the order it first sees them. So every change of that state is
// appended to this journal before the reply that hands it to the kernel, and a new daemon
// reads it back (Resume) and opens its WritableFs with the same ids, counts, handles and
// st_ino numbers. The journal holds the node table (id → parent id and name, moved by rename,
// detached by unlink), not the state of each name: that is in the upper, read again.
//
// The journal is the file "journal" of the mount's work directory (0700, private to the mount,
// on the upper's filesystem, emptied only when a mount starts afresh). It grows by one line per
// event and is compacted — a snapshot of the state written to "journal.new" and renamed over
// it — when it has grown well beyond its last snapshot, so its size follows the state's.
//
// Lines (text, one write(2) each; numbers decimal; NAME is the name's bytes in lowercase hex;
// [R]: the unique of the kernel request that counted or opened it, when known):
//   V 3                                   the format (first line; a journal without one is
//                                         format 1, written before requests were recorded,
//                                         and loads the same, as does format 2; any other:
//                                         Corrupt). 3: the same lines as 2, from a daemon
//                                         whose kernel may leave clearing setuid bits to it
//                                         (FUSE_HANDLE_KILLPRIV_V2): an imgfs that reads
//                                         only up to 2 would not clear them, and must not
//                                         take the mount over
//   S <next id> <next fh> <next st_ino>   counters (first line of a snapshot; only raise them)
//   N <id> <parent> <lookups> <NAME> [R]  a new id, child NAME of parent (0: a deleted name)
//   A <id> <parent> <lookups> <NAME> [R]  the same, for a name the request created
//   L <id> [R]                            one more kernel lookup
//   F <id> <n>                            n lookups forgotten
//   M <id> <parent> <NAME>                renamed
//   D <id>                                its name deleted (the id lives while looked up)
//   O <id> / Q <id>                       the data of deleted id kept in the work directory
//                                         as OrphanName(id) for open handles / removed
//   I <upper st_ino> <st_ino>             the number shown for an upper inode
//   J <upper st_ino>                      that number forgotten (the inode is gone)
//   H <fh> <id> <flags> <lower> [R]       a handle opened with open(2) flags (lower: the
//                                         image inode it reads while not copied up, or 0)
//   C <fh>                                a handle released
//   U <R> <id> <fh>                       request R done (unlink, rmdir, rename: 0 0), or, in
//                                         a snapshot, what it was answered with (0: nothing)
//   E 0                                   the end of a snapshot
// Requests: the kernel numbers each request (fuse_in_header.unique) and, when a daemon that
// read it died before answering, sends it again with the same number (FUSE_NOTIFY_RESEND,
// fs/fuse/takeover.h). The number on the line that counts a lookup or opens a handle — the
// same write — and the U line of a name change let the next daemon answer it from here
// (FindRequest) instead of counting or doing it twice. The last kRecentRequests numbers are
// kept (and carried into snapshots): a request is in flight from its line to its reply, and
// at most one per worker thread is.
// An id is freed as the WritableFs frees it: when nothing looks it up and nothing lives below
// it (nor is open: the kernel releases a file before it forgets it). A last line without its
// newline is what a daemon killed in the middle of a write leaves: its reply never reached the
// kernel; it is dropped.
//
// The file is treated as hostile on load (another process of the mount's owner could have
// written it): bounded size, every field checked, names checked as a lookup checks them, ids
// referring only to recorded ones, no cycles; Corrupt otherwise.
//
// Room: a full filesystem must not cut the journal short. The file keeps kReserveBytes
// allocated ahead of its end (fallocate, its size unchanged), topped up by Reserve, which the
// WritableFs calls before each request that journals: one that makes something (and needs
// room anyway) is refused with ENOSPC unless half the reserve can be kept, while lookups,
// opens, unlinks and what the kernel sends without waiting for an answer (forget, release)
// write into the reserve — so `rm` still frees space on a full filesystem. A compaction that
// finds no room keeps the old file and tries again once it has grown as much again.
// A write that fails all the same (the reserve used up, an I/O error, a filesystem that can't
// allocate ahead) makes the journal useless: it is removed, so a later takeover fails (the
// mount then answers EIO, fs/fuse/takeover.h) rather than serve wrong ids.
//
// Thread-safety: the recording methods may be called from any thread (one internal lock,
// held across the write so that events reach the file in order). The read accessors (nodes(),
// handles(), ...) are for the WritableFs that restores itself, before it is shared.
#ifndef IMGFS_FS_WRITABLE_WRITABLE_JOURNAL_H_
#define IMGFS_FS_WRITABLE_WRITABLE_JOURNAL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace imgfs::fs {

class WritableJournal {
 public:
  struct NodeRecord {
    uint64_t parent = 0;  // 0: deleted (detached)
    std::string name;
    uint64_t lookups = 0;
    uint64_t children = 0;  // live ids whose parent this is
    uint64_t handles = 0;   // open handles of it (an id is not freed while open)
  };
  struct HandleRecord {
    uint64_t id = 0;
    int flags = 0;
    uint64_t lower = 0;
  };

  // A journal in memory only (tests, the fuzz target).
  WritableJournal();
  ~WritableJournal();
  WritableJournal(const WritableJournal&) = delete;
  WritableJournal& operator=(const WritableJournal&) = delete;

  // A fresh journal in the directory `dir_fd` (not owned; outlives this): "journal" created
  // or truncated. Io when it cannot be written.
  static Result<std::unique_ptr<WritableJournal>> Create(int dir_fd);
  // The journal an earlier daemon left in `dir_fd`, read back (an unfinished last line is cut
  // off). NotFound when there is none, Corrupt when it does not load.
  static Result<std::unique_ptr<WritableJournal>> Resume(int dir_fd);

  // What Resume does after reading (tests, fuzz target): applies the lines of `text`.
  Status LoadText(std::string_view text);

  // Events. Each is checked as a loaded line is (Internal when it does not apply: a bug of
  // the caller), applied, and written. `unique` (0: none) is the kernel request it answers
  // (without the resend bit), recorded on the same line.
  // `created`: the name was made by the request (A line), not found by a lookup (N line).
  Status NewNode(uint64_t id, uint64_t parent, std::string_view name, bool created = false,
                 uint64_t unique = 0);
  Status Lookup(uint64_t id, uint64_t unique = 0);
  Status Forget(uint64_t id, uint64_t nlookup);
  // `id` gets the name `name` in `parent`; also an id whose name was deleted (a takeover found
  // it gone from the upper, and the kernel then sent again the rename that had moved it).
  Status Move(uint64_t id, uint64_t parent, std::string_view name);
  Status Deleted(uint64_t id);
  Status Orphan(uint64_t id, bool kept);
  Status UpperIno(uint64_t upper_ino, uint64_t st_ino);
  Status ForgetUpperIno(uint64_t upper_ino);
  Status Opened(uint64_t fh, uint64_t id, int flags, uint64_t lower, uint64_t unique = 0);
  Status Released(uint64_t fh);
  // Request `unique` (not 0) is done and hands out nothing (unlink, rmdir, rename).
  Status Done(uint64_t unique);
  // Request `unique` (not 0), which makes a name (mknod, mkdir, symlink, link, create), found
  // the name free and is about to make it: the same line as Done (a record with no id and no
  // handle), journaled before the change. Sent again after a takeover, such a request whose
  // name exists was made by the dead daemon; its entry line then records the id as usual.
  Status Started(uint64_t unique) { return Done(unique); }

  // What request `unique` was answered with, as far as journaled: the id whose lookup it
  // counted (0: none), the handle it opened (0: none). nullopt when it is not recorded (never
  // journaled, or older than the last kRecentRequests). Thread-safe.
  struct RequestRecord {
    uint64_t id = 0;
    uint64_t fh = 0;
  };
  std::optional<RequestRecord> FindRequest(uint64_t unique) const;
  // Requests remembered. A request still unanswered when its record is dropped would need
  // this many later ones journaled meanwhile, while at most one per worker thread (16 by
  // default, fs/fuse/session.h) is between its line and its reply; ~30 bytes each in a
  // snapshot.
  static constexpr size_t kRecentRequests = 4096;
  static constexpr int kFormat = 3;

  // The state (root, id 1, is implied and not listed).
  const std::map<uint64_t, NodeRecord>& nodes() const IMGFS_NO_THREAD_SAFETY_ANALYSIS {
    return nodes_;
  }
  const std::map<uint64_t, HandleRecord>& handles() const IMGFS_NO_THREAD_SAFETY_ANALYSIS {
    return handles_;
  }
  const std::map<uint64_t, uint64_t>& upper_inos() const IMGFS_NO_THREAD_SAFETY_ANALYSIS {
    return upper_inos_;
  }
  const std::set<uint64_t>& orphans() const IMGFS_NO_THREAD_SAFETY_ANALYSIS { return orphans_; }
  uint64_t next_id() const;
  uint64_t next_fh() const;
  uint64_t next_st_ino() const;

  // Keeps kReserveBytes allocated ahead of the journal's end where it can (see the top of
  // the file); NoSpace when fewer than `bytes` are there. Ok for a journal in memory, a
  // broken one, or a filesystem without fallocate.
  Status Reserve(size_t bytes);

  // The state as snapshot lines (what compaction writes; loading it gives the same state).
  std::string Snapshot() const;

  // The work-directory name of a deleted id's data kept for open handles.
  static std::string OrphanName(uint64_t id) { return "orphan-" + std::to_string(id); }

  static constexpr char kFileName[] = "journal";
  static constexpr size_t kMaxJournalBytes = size_t{64} << 20;
  // Compaction once the file is this large and twice its last snapshot.
  static constexpr size_t kCompactBytes = size_t{1} << 20;
  static constexpr size_t kReserveBytes = size_t{1} << 20;

 private:
  explicit WritableJournal(int dir_fd, UniqueFd fd);
  Status Record(const std::string& line) IMGFS_EXCLUDES(mu_);
  Status ParseLine(std::string_view line) IMGFS_REQUIRES(mu_);
  Status Compact() IMGFS_REQUIRES(mu_);
  std::string SnapshotLocked() const IMGFS_REQUIRES(mu_);
  void MaybeFree(uint64_t id) IMGFS_REQUIRES(mu_);
  bool Live(uint64_t id) const IMGFS_REQUIRES(mu_);      // recorded (or the root)
  bool Attached(uint64_t id) const IMGFS_REQUIRES(mu_);  // recorded with a name
  void Break(const Status& why) IMGFS_REQUIRES(mu_);
  // Merges what request `unique` handed out into its record (0: nothing new).
  void RememberRequest(uint64_t unique, uint64_t id, uint64_t fh) IMGFS_REQUIRES(mu_);

  const int dir_fd_ = -1;
  mutable Mutex mu_;
  UniqueFd fd_ IMGFS_GUARDED_BY(mu_);
  bool broken_ IMGFS_GUARDED_BY(mu_) = false;
  size_t bytes_ IMGFS_GUARDED_BY(mu_) = 0;
  size_t snapshot_bytes_ IMGFS_GUARDED_BY(mu_) = 0;
  size_t allocated_ IMGFS_GUARDED_BY(mu_) = 0;   // the file's blocks reach this offset
  bool allocates_ IMGFS_GUARDED_BY(mu_) = true;  // the filesystem allocates ahead (fallocate)
  size_t compact_at_ IMGFS_GUARDED_BY(mu_) = 0;  // a compaction that found no room: not before
  std::map<uint64_t, NodeRecord> nodes_ IMGFS_GUARDED_BY(mu_);
  std::map<std::pair<uint64_t, std::string>, uint64_t, std::less<>> names_ IMGFS_GUARDED_BY(mu_);
  std::map<uint64_t, HandleRecord> handles_ IMGFS_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> upper_inos_ IMGFS_GUARDED_BY(mu_);  // upper ino → st_ino
  std::set<uint64_t> claimed_ IMGFS_GUARDED_BY(mu_);               // st_inos given
  std::set<uint64_t> orphans_ IMGFS_GUARDED_BY(mu_);
  uint64_t next_id_ IMGFS_GUARDED_BY(mu_) = 2;
  uint64_t next_fh_ IMGFS_GUARDED_BY(mu_) = 1;
  uint64_t next_st_ino_ IMGFS_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, RequestRecord> requests_ IMGFS_GUARDED_BY(mu_);  // by unique
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_WRITABLE_WRITABLE_JOURNAL_H_
